//! Errors of the Proxmox API client. Each carries the endpoint and Proxmox's own message;
//! none ever carries a credential.

use std::fmt;

/// What went wrong with one API call. Callers branch on the kind; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 401: the token or ticket was refused.
    Auth,
    /// The account needs a second factor, which a one-shot tool cannot give.
    NeedTfa,
    /// 403: a privilege is missing (Proxmox names it in the message).
    Permission,
    /// 400: parameter verification failed (`errors` names the parameters).
    BadRequest,
    /// 500: the handler died (locked VM, digest mismatch, VM missing on that node, ...).
    Server,
    /// 501: the server does not know this path (older PVE).
    NotImplemented,
    /// 595/596/597: the proxy could not reach the node or timed out.
    Unreachable,
    /// Any other HTTP status.
    Status(u16),
    /// No answer in time.
    Timeout,
    /// TLS refused (certificate not trusted, fingerprint mismatch, ...).
    Tls,
    /// TCP connection or DNS failed.
    Connect,
    /// The body was not what the API documents (malformed JSON, wrong types, too large).
    Decode,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    /// `GET /cluster/resources`, with the cluster name when known.
    pub endpoint: String,
    /// Proxmox's message, or our explanation.
    pub message: String,
    /// Per-parameter errors of a 400 answer, sorted by parameter.
    pub param_errors: Vec<(String, String)>,
    /// For writes: the request may or may not have been applied; re-read before acting.
    pub outcome_unknown: bool,
}

impl ApiError {
    pub fn new(
        kind: ApiErrorKind,
        endpoint: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        // The message may hold the server's words (a body, a reason phrase, an I/O error).
        let message = message.into();
        let message = match crate::server_text::escape(&message) {
            std::borrow::Cow::Owned(escaped) => escaped,
            std::borrow::Cow::Borrowed(_) => message,
        };
        ApiError {
            kind,
            endpoint: endpoint.into(),
            message,
            param_errors: Vec::new(),
            outcome_unknown: false,
        }
    }

    /// HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ApiErrorKind::Auth => Some(401),
            ApiErrorKind::Permission => Some(403),
            ApiErrorKind::BadRequest => Some(400),
            ApiErrorKind::Server => Some(500),
            ApiErrorKind::NotImplemented => Some(501),
            ApiErrorKind::Status(code) => Some(code),
            _ => None,
        }
    }

    /// Worth another try for a read: the server or the network had a passing problem.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ApiErrorKind::Server
                | ApiErrorKind::Unreachable
                | ApiErrorKind::Timeout
                | ApiErrorKind::Connect
        ) || matches!(self.kind, ApiErrorKind::Status(code) if code >= 500)
    }

    /// The VM's config is locked (backup, migrate, snapshot, ...).
    pub fn is_locked(&self) -> bool {
        self.kind == ApiErrorKind::Server && self.message.contains("is locked")
    }

    /// The write was refused because the config changed since we read its digest.
    pub fn is_digest_mismatch(&self) -> bool {
        self.kind == ApiErrorKind::Server && is_digest_conflict(&self.message)
    }

    /// The VM is not (or no longer) on the node we asked.
    pub fn is_missing_vm(&self) -> bool {
        self.kind == ApiErrorKind::Server && self.message.contains("does not exist")
    }
}

/// Whether an error text (a 500's message or a config task's `exitstatus`) says that the
/// config changed since its digest was read. qemu-server (API2/Qemu.pm) says `checksum
/// mismatch (file change by other user?)`, spelled `missmatch` before October 2024;
/// pve-container says `detected modified configuration - file changed by other user?`.
pub fn is_digest_conflict(text: &str) -> bool {
    text.contains("checksum mismatch (file change by other user")
        || text.contains("checksum missmatch (file change by other user")
        || text.contains("detected modified configuration")
}

/// The host's memory maximum for a VM, from qemu-server's refusal of a memory hotplug above
/// it (`you cannot add more memory than max mem 131072 MB!`, Memory.pm `get_max_mem`), in MiB.
pub fn host_max_memory_mib(text: &str) -> Option<u64> {
    const MARK: &str = "cannot add more memory than max mem ";
    let rest = &text[text.find(MARK)? + MARK.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|mib| *mib > 0)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.message.trim_end())?;
        for (param, why) in &self.param_errors {
            write!(f, "; {param}: {}", why.trim_end())?;
        }
        if self.outcome_unknown {
            f.write_str(" (outcome unknown: the change may or may not have been applied)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_conflicts_in_every_spelling() {
        for text in [
            "checksum mismatch (file change by other user?)\n",
            "checksum missmatch (file change by other user?)",
            "detected modified configuration - file changed by other user? Try again.",
        ] {
            assert!(is_digest_conflict(text), "{text}");
        }
        assert!(!is_digest_conflict("VM is locked (backup)"));
        assert!(!is_digest_conflict(
            "checksum mismatch: got 'a' != expect 'b'"
        ));
    }

    #[test]
    fn the_hosts_memory_maximum_is_read_from_the_refusal() {
        let exit = "400 Parameter verification failed. memory: hotplug problem - you cannot \
                    add more memory than max mem 131072 MB! ";
        assert_eq!(host_max_memory_mib(exit), Some(131072));
        assert_eq!(host_max_memory_mib("error unplug memory module"), None);
        assert_eq!(host_max_memory_mib("than max mem MB!"), None);
    }
}
