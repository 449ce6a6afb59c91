//! A JSON POST for Gotify and webhooks: ureq with our rustls setup (ring; the system's roots or
//! a CA file), a timeout, no redirects, and errors that say whether a retry can help.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::SendError;
use crate::proxy::ProxyUrl;
use crate::tls::{self, TlsMode, TlsObservations, client_config};

/// POSTs `body` (JSON) to `url` with `headers`. A 2xx answer is success.
pub(super) fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
    ca_file: Option<&Path>,
    proxy: Option<&ProxyUrl>,
    timeout: Duration,
) -> Result<(), SendError> {
    let agent = agent(url, ca_file, proxy, timeout)?;
    let text = serde_json::to_string(body).map_err(|e| SendError::fatal(format!("JSON: {e}")))?;
    let mut request = agent
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(text).map_err(transport_error)?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let mut answer = String::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(2048)
        .read_to_string(&mut answer);
    let answer: String = answer.split_whitespace().collect::<Vec<_>>().join(" ");
    let answer = crate::server_text::escape(&answer);
    let answer = super::message::truncate(&answer, 200);
    let mut message = format!("the server answered HTTP {status}");
    if (300..400).contains(&status) {
        message.push_str(" (a redirect; use the final URL)");
    }
    if !answer.is_empty() {
        message.push_str(&format!(": {answer}"));
    }
    Err(SendError {
        message,
        retry: status == 408 || status == 429 || status >= 500,
    })
}

fn agent(
    url: &str,
    ca_file: Option<&Path>,
    proxy: Option<&ProxyUrl>,
    timeout: Duration,
) -> Result<ureq::Agent, SendError> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("pvescale/", env!("CARGO_PKG_VERSION")));
    if !url.to_ascii_lowercase().starts_with("https://") {
        return Ok(tls::plain_agent(config, proxy));
    }
    let mode = match ca_file {
        Some(path) => TlsMode::CaFile(path.to_path_buf()),
        None => TlsMode::SystemRoots,
    };
    let tls = client_config(&mode, Arc::new(TlsObservations::default()))
        .map_err(|e| SendError::fatal(format!("TLS setup: {e}")))?;
    Ok(tls::agent(config, proxy, tls, Arc::new(AtomicU64::new(0))))
}

fn transport_error(e: ureq::Error) -> SendError {
    if let Some(refusal) = tls::refusal_of(&e) {
        // Told by its cause, as for the API; retrying a refused certificate cannot help.
        return SendError {
            message: format!("TLS: handshake refused ({})", refusal.what()),
            retry: false,
        };
    }
    let retry = matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    );
    let message = match &e {
        ureq::Error::Timeout(_) => format!("timed out ({e})"),
        ureq::Error::HostNotFound => "host not found".to_string(),
        _ => e.to_string(),
    };
    SendError { message, retry }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_told_by_its_cause_and_not_retried() {
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let error = transport_error(ureq::Error::Rustls(expired));
        assert_eq!(
            error.message,
            "TLS: handshake refused (certificate expired)"
        );
        assert!(!error.retry);
        let old = rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion);
        let error = transport_error(ureq::Error::Rustls(old));
        assert!(
            error.message.contains("only TLS older than 1.2"),
            "{}",
            error.message
        );
        assert!(transport_error(ureq::Error::ConnectionFailed).retry);
    }
}
