//! Finding a cluster's token secret or password: the configured file, the inline value, the
//! systemd credential `$CREDENTIALS_DIRECTORY/<cluster>.<token|password>`, then the environment
//! variable `PVESCALE_TOKEN_SECRET_<CLUSTER>` / `PVESCALE_PASSWORD_<CLUSTER>`. Messages name the
//! places looked at, never a value.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::paths::Env;
use crate::secret::Secret;

/// Where a cluster's secret came from (for `check` and debug output; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `token_secret_file` / `password_file`.
    File(PathBuf),
    /// `token_secret` / `password` in the config file.
    Inline,
    /// A systemd credential (`LoadCredential=`): `$CREDENTIALS_DIRECTORY/<name>.token` or `.password`.
    Credential(PathBuf),
    /// An environment variable, by name.
    EnvVar(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Inline => f.write_str("the config file"),
            SecretSource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            SecretSource::EnvVar(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// Token secret or password: names of the keys, credential suffix and variable prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    TokenSecret,
    Password,
    /// `[notify.email] password`: credential `smtp.password`, `PVESCALE_SMTP_PASSWORD`.
    SmtpPassword,
    /// `[notify.gotify] token`: credential `gotify.token`, `PVESCALE_GOTIFY_TOKEN`.
    GotifyToken,
}

impl SecretKind {
    pub fn file_key(self) -> &'static str {
        match self {
            SecretKind::TokenSecret => "token_secret_file",
            SecretKind::Password | SecretKind::SmtpPassword => "password_file",
            SecretKind::GotifyToken => "token_file",
        }
    }

    pub fn inline_key(self) -> &'static str {
        match self {
            SecretKind::TokenSecret => "token_secret",
            SecretKind::Password | SecretKind::SmtpPassword => "password",
            SecretKind::GotifyToken => "token",
        }
    }

    /// Sent in an HTTP header (`Authorization`, `X-Gotify-Key`), where only visible ASCII,
    /// space and tab may go; a password goes in a form body or SMTP AUTH, where anything may.
    fn goes_in_a_header(self) -> bool {
        matches!(self, SecretKind::TokenSecret | SecretKind::GotifyToken)
    }

    fn what(self) -> &'static str {
        match self {
            SecretKind::TokenSecret => "API token secret",
            SecretKind::Password => "password",
            SecretKind::SmtpPassword => "SMTP password",
            SecretKind::GotifyToken => "Gotify application token",
        }
    }

    fn credential_name(self, cluster: &str) -> String {
        match self {
            SecretKind::TokenSecret => format!("{cluster}.token"),
            SecretKind::Password => format!("{cluster}.password"),
            SecretKind::SmtpPassword => "smtp.password".to_string(),
            SecretKind::GotifyToken => "gotify.token".to_string(),
        }
    }

    /// `PVESCALE_TOKEN_SECRET_<NAME>` with the name uppercased and every other character than
    /// ASCII letters and digits turned into `_`.
    pub fn env_var(self, cluster: &str) -> String {
        let prefix = match self {
            SecretKind::TokenSecret => "PVESCALE_TOKEN_SECRET_",
            SecretKind::Password => "PVESCALE_PASSWORD_",
            SecretKind::SmtpPassword => return "PVESCALE_SMTP_PASSWORD".to_string(),
            SecretKind::GotifyToken => return "PVESCALE_GOTIFY_TOKEN".to_string(),
        };
        format!("{prefix}{}", env_suffix(cluster))
    }
}

/// The cluster name as it appears in environment variable names.
pub(crate) fn env_suffix(cluster: &str) -> String {
    cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Resolves a secret. `file` is already resolved against the config's directory; setting both
/// `file` and `inline` is refused earlier by validation. Errors are complete sentences that
/// name the key, file or variable, never the value.
pub(crate) fn resolve(
    kind: SecretKind,
    cluster: &str,
    file: Option<&Path>,
    inline: Option<&Secret>,
    env: &dyn Env,
) -> Result<(Secret, SecretSource), String> {
    let (secret, source) = find(kind, cluster, file, inline, env)?;
    // Refused here, at load time, rather than as a retried "failed to parse header value" on
    // every request. The value is never shown, only where it came from.
    if kind.goes_in_a_header() && !secret.expose().chars().all(header_safe) {
        return Err(format!(
            "the {} from {source} holds a control character or a non-ASCII character, which \
             cannot go in an HTTP header: it is not the value Proxmox VE or Gotify showed \
             (copy it again)",
            kind.what()
        ));
    }
    Ok((secret, source))
}

/// What may go in an HTTP header value (RFC 9110 field-vchar, space, tab).
fn header_safe(c: char) -> bool {
    c == '\t' || (' '..='~').contains(&c)
}

/// A warning for a secret with leading or trailing whitespace (a copy and paste that took too
/// much, usually; an HTTP header loses it on the way), naming its source, never its value.
pub(crate) fn whitespace_warning(secret: &Secret, source: &SecretSource) -> Option<String> {
    let value = secret.expose();
    (value.trim() != value).then(|| {
        format!(
            "the secret from {source} begins or ends with whitespace, which is kept as part of \
             it; remove it unless it belongs to the secret"
        )
    })
}

fn find(
    kind: SecretKind,
    cluster: &str,
    file: Option<&Path>,
    inline: Option<&Secret>,
    env: &dyn Env,
) -> Result<(Secret, SecretSource), String> {
    if let Some(path) = file {
        let secret = read_secret_file(path)
            .map_err(|why| format!("{} {}: {why}", kind.file_key(), path.display()))?;
        return Ok((secret, SecretSource::File(path.to_path_buf())));
    }
    if let Some(secret) = inline {
        if secret.expose().is_empty() {
            return Err(format!("{} is empty", kind.inline_key()));
        }
        return Ok((secret.clone(), SecretSource::Inline));
    }
    let credential_name = kind.credential_name(cluster);
    let credential_place = match env.non_empty_var("CREDENTIALS_DIRECTORY") {
        Some(dir) => {
            let path = PathBuf::from(dir).join(&credential_name);
            match read_secret_file(&path) {
                Ok(secret) => return Ok((secret, SecretSource::Credential(path))),
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    format!("{} (not found)", path.display())
                }
                Err(why) => return Err(format!("credential {}: {why}", path.display())),
            }
        }
        None => {
            format!("$CREDENTIALS_DIRECTORY/{credential_name} (CREDENTIALS_DIRECTORY is not set)")
        }
    };
    let var = kind.env_var(cluster);
    let var_place = match env.var_os(&var) {
        Some(value) if !value.is_empty() => {
            let value = value
                .into_string()
                .map_err(|_| format!("environment variable {var} is not valid UTF-8"))?;
            return Ok((Secret::new(value), SecretSource::EnvVar(var)));
        }
        Some(_) => format!("environment variable {var} (empty)"),
        None => format!("environment variable {var} (not set)"),
    };
    let whose = match kind {
        SecretKind::TokenSecret | SecretKind::Password => format!("cluster {cluster:?}"),
        SecretKind::SmtpPassword | SecretKind::GotifyToken => cluster.to_string(),
    };
    Err(format!(
        "no {} for {whose}; looked at: {} (not set), {} (not set), {credential_place}, {var_place}",
        kind.what(),
        kind.file_key(),
        kind.inline_key(),
    ))
}

pub(crate) enum ReadError {
    Io(io::Error),
    Invalid(&'static str),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Invalid(why) => f.write_str(why),
        }
    }
}

/// Reads a secret file: UTF-8, trailing newlines (`\n`, `\r\n`) removed, one line, not empty.
pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, ReadError> {
    let bytes = fs::read(path).map_err(ReadError::Io)?;
    let text = String::from_utf8(bytes).map_err(|_| ReadError::Invalid("is not valid UTF-8"))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(ReadError::Invalid("is empty"));
    }
    if value.contains(['\n', '\r']) {
        return Err(ReadError::Invalid(
            "has more than one line (it must hold only the secret)",
        ));
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::paths::FakeEnv;

    #[test]
    fn env_names() {
        assert_eq!(
            SecretKind::TokenSecret.env_var("lab-1.b"),
            "PVESCALE_TOKEN_SECRET_LAB_1_B"
        );
        assert_eq!(SecretKind::Password.env_var("Lab"), "PVESCALE_PASSWORD_LAB");
    }

    #[test]
    fn secret_files_lose_trailing_newlines_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        fs::write(&p, "  abc def \r\n\n").unwrap();
        assert_eq!(read_secret_file(&p).ok().unwrap().expose(), "  abc def ");
        fs::write(&p, "\n").unwrap();
        assert_eq!(read_secret_file(&p).err().unwrap().to_string(), "is empty");
        fs::write(&p, "a\nb\n").unwrap();
        assert!(
            read_secret_file(&p)
                .err()
                .unwrap()
                .to_string()
                .contains("more than one line")
        );
    }

    #[test]
    fn order_file_inline_credential_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.secret");
        fs::write(&file, "from-file\n").unwrap();
        let creds = dir.path().join("creds");
        fs::create_dir(&creds).unwrap();
        fs::write(creds.join("lab.token"), "from-credential\n").unwrap();
        let env = FakeEnv::new()
            .var("CREDENTIALS_DIRECTORY", creds.as_os_str())
            .var("PVESCALE_TOKEN_SECRET_LAB", "from-env");
        let inline = Secret::new("from-inline");
        let k = SecretKind::TokenSecret;
        let get = |file: Option<&Path>, inline: Option<&Secret>, env: &FakeEnv| {
            let (s, src) = resolve(k, "lab", file, inline, env).ok().unwrap();
            (s.expose().to_owned(), src)
        };
        assert_eq!(
            get(Some(&file), None, &env),
            ("from-file".into(), SecretSource::File(file.clone()))
        );
        assert_eq!(
            get(None, Some(&inline), &env),
            ("from-inline".into(), SecretSource::Inline)
        );
        assert_eq!(
            get(None, None, &env),
            (
                "from-credential".into(),
                SecretSource::Credential(creds.join("lab.token"))
            )
        );
        let env_only = FakeEnv::new()
            .var(
                "CREDENTIALS_DIRECTORY",
                dir.path().join("nothing-here").as_os_str(),
            )
            .var("PVESCALE_TOKEN_SECRET_LAB", "from-env");
        assert_eq!(
            get(None, None, &env_only),
            (
                "from-env".into(),
                SecretSource::EnvVar("PVESCALE_TOKEN_SECRET_LAB".into())
            )
        );
    }

    #[test]
    fn missing_secret_names_every_place() {
        let dir = tempfile::tempdir().unwrap();
        let env = FakeEnv::new().var("CREDENTIALS_DIRECTORY", dir.path().as_os_str());
        let err = resolve(SecretKind::Password, "lab", None, None, &env).unwrap_err();
        assert!(err.contains("password_file (not set)"), "{err}");
        assert!(err.contains("password (not set)"), "{err}");
        assert!(
            err.contains(&format!(
                "{} (not found)",
                dir.path().join("lab.password").display()
            )),
            "{err}"
        );
        assert!(err.contains("PVESCALE_PASSWORD_LAB (not set)"), "{err}");
        let err = resolve(SecretKind::TokenSecret, "lab", None, None, &FakeEnv::new()).unwrap_err();
        assert!(err.contains("CREDENTIALS_DIRECTORY is not set"), "{err}");
    }

    #[test]
    fn a_configured_file_that_is_missing_is_an_error_not_a_fallthrough() {
        let env = FakeEnv::new().var("PVESCALE_TOKEN_SECRET_LAB", "from-env");
        let err = resolve(
            SecretKind::TokenSecret,
            "lab",
            Some(Path::new("/nonexistent/lab.secret")),
            None,
            &env,
        )
        .unwrap_err();
        assert!(
            err.contains("token_secret_file /nonexistent/lab.secret"),
            "{err}"
        );
        assert!(!err.contains("from-env"));
    }
}
