//! The validated `[notify]` tables: which events, how often, and the channels (email, Gotify,
//! webhooks) with their secrets resolved. No `Debug` output shows a secret: passwords and
//! tokens are [`Secret`]s, webhook URLs (Slack's and Discord's are credentials) and header
//! values are shown redacted.

use crate::proxy::ProxyUrl;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;

use super::SecretSource;
use super::raw::{Dur, InlineSecret};
use crate::notify::EventKind;
use crate::secret::Secret;

/// `[notify] min_interval` when not set.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(3600);
/// `[notify] max_per_hour` when not set.
pub const DEFAULT_MAX_PER_HOUR: u32 = 12;
/// `[notify] timeout` when not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[notify]` and its channels.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Event kinds told at all.
    pub events: BTreeSet<EventKind>,
    /// Between two messages about the same VM (or cluster) and event kind.
    pub min_interval: Duration,
    /// Messages per rolling hour, at most (over all runs; one message goes to every channel).
    pub max_per_hour: u32,
    /// For one attempt on one channel (connect, TLS, send).
    pub timeout: Duration,
    pub email: Option<EmailConfig>,
    pub gotify: Option<GotifyConfig>,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            events: EventKind::ALL.into_iter().collect(),
            min_interval: DEFAULT_MIN_INTERVAL,
            max_per_hour: DEFAULT_MAX_PER_HOUR,
            timeout: DEFAULT_TIMEOUT,
            email: None,
            gotify: None,
            webhooks: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// Whether any channel is configured (without one, notifications are off).
    pub fn has_channels(&self) -> bool {
        self.email.is_some() || self.gotify.is_some() || !self.webhooks.is_empty()
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required); port 587 by default.
    StartTls,
    /// TLS from the first byte (SMTPS); port 465 by default.
    Tls,
    /// No encryption, for a relay on this machine; port 25 by default.
    None,
}

impl SmtpSecurity {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
    }
}

/// A login for the SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpLogin {
    pub user: String,
    pub password: Secret,
    /// Where the password came from (never the value).
    pub source: SecretSource,
}

/// `[notify.email]`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// Host name or IP address of the SMTP server (also the name its certificate must have).
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub login: Option<SmtpLogin>,
    /// Trust only the CA certificates in this PEM file (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Event kinds sent to this channel.
    pub events: BTreeSet<EventKind>,
}

/// `[notify.gotify]`.
#[derive(Debug, Clone)]
pub struct GotifyConfig {
    /// The server's base URL, without a trailing `/` (messages go to `<url>/message`).
    pub url: String,
    /// The application token (sent as `X-Gotify-Key`).
    pub token: Secret,
    pub token_source: SecretSource,
    pub ca_file: Option<PathBuf>,
    /// `[notify] proxy`: the HTTP CONNECT proxy to go through.
    pub proxy: Option<ProxyUrl>,
    /// Gotify priority (0-10) per event kind; a message gets that of its most urgent event.
    pub priority: BTreeMap<EventKind, u8>,
    pub events: BTreeSet<EventKind>,
}

/// Gotify priorities when not set.
pub fn default_gotify_priority(kind: EventKind) -> u8 {
    match kind {
        EventKind::Scaled => 4,
        EventKind::Recovered => 4,
        EventKind::Blocked => 5,
        EventKind::Refused => 6,
        EventKind::Failed => 8,
    }
}

/// What a webhook's JSON body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// pvescale's own document: title, text and the events as data.
    Json,
    /// `{"text": ...}`: Slack incoming webhooks and the many that copy them (Mattermost,
    /// Rocket.Chat, ...).
    Slack,
    /// `{"content": ...}` (at most 2000 characters).
    Discord,
    /// ntfy's JSON publishing: the URL names the topic (`https://ntfy.sh/mytopic`); the body
    /// goes to the server's root with `topic`, `title`, `message`, `priority`, `tags`.
    Ntfy,
}

impl WebhookFormat {
    pub const NAMES: [&'static str; 4] = ["json", "slack", "discord", "ntfy"];

    pub fn parse(text: &str) -> Option<WebhookFormat> {
        match text {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            "discord" => Some(WebhookFormat::Discord),
            "ntfy" => Some(WebhookFormat::Ntfy),
            _ => None,
        }
    }
}

/// A URL that may be a credential (Slack, Discord): `Debug` and `Display` show only
/// `scheme://host[:port]/…`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    url: Secret,
    shown: String,
}

impl SecretUrl {
    /// `url` must have been validated (see `validate::notify`).
    pub(crate) fn new(url: &str) -> SecretUrl {
        let shown = match url.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let host = rest.get(..end).unwrap_or("");
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                let tail = if end < rest.len() { "/…" } else { "" };
                format!("{scheme}://{host}{tail}")
            }
            None => "<url>".to_string(),
        };
        SecretUrl {
            url: Secret::new(url),
            shown,
        }
    }

    /// The whole URL, for the one place that sends to it.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// `https://hooks.slack.com/…`.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.shown)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// One `[[notify.webhook]]`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// For logs and the run summary (`webhook[0]` when not set).
    pub name: String,
    pub url: SecretUrl,
    pub format: WebhookFormat,
    /// Extra headers; the values are never shown.
    pub headers: Vec<(String, Secret)>,
    pub ca_file: Option<PathBuf>,
    /// `[notify] proxy`: the HTTP CONNECT proxy to go through.
    pub proxy: Option<ProxyUrl>,
    pub events: BTreeSet<EventKind>,
}

/// For `format = "ntfy"`: the server's root URL and the topic (the last path segment).
pub fn ntfy_parts(url: &str) -> Option<(String, String)> {
    let scheme_end = url.find("://")? + 3;
    let path_start = url.get(scheme_end..)?.find('/')? + scheme_end;
    let path = url.get(path_start..)?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    let (prefix, topic) = path.rsplit_once('/')?;
    let ok = !topic.is_empty()
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| {
        (
            format!("{}{prefix}/", url.get(..path_start).unwrap_or("")),
            topic.to_string(),
        )
    })
}

// ---- the TOML as written (see raw.rs; no Debug: these hold secrets) ----

/// `[notify]`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub events: Option<Vec<String>>,
    pub min_interval: Option<Dur>,
    pub max_per_hour: Option<i64>,
    pub timeout: Option<Dur>,
    pub proxy: Option<String>,
    pub email: Option<RawEmail>,
    pub gotify: Option<RawGotify>,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
}

/// `[notify.email]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    pub enabled: Option<bool>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub from: Option<String>,
    pub to: Option<OneOrMany>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password: Option<InlineSecret>,
    pub ca_file: Option<PathBuf>,
    pub events: Option<Vec<String>>,
}

/// `[notify.gotify]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGotify {
    pub enabled: Option<bool>,
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token: Option<InlineSecret>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub priority: BTreeMap<String, i64>,
    pub events: Option<Vec<String>>,
}

/// One `[[notify.webhook]]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub enabled: Option<bool>,
    pub name: Option<String>,
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub format: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, InlineSecret>,
    pub ca_file: Option<PathBuf>,
    pub events: Option<Vec<String>>,
}

/// A string or a list of strings (`to = "ops@example.com"` or `to = ["a@x", "b@x"]`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_urls_show_only_scheme_and_host() {
        let u = SecretUrl::new("https://hooks.slack.com/services/T000/B000/XXXXSECRET");
        assert_eq!(u.shown(), "https://hooks.slack.com/…");
        assert!(!format!("{u:?} {u}").contains("XXXXSECRET"));
        assert_eq!(
            SecretUrl::new("http://127.0.0.1:8080").shown(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            SecretUrl::new("https://user:pw@example.com/x?token=1").shown(),
            "https://example.com/…"
        );
    }

    #[test]
    fn ntfy_topics() {
        assert_eq!(
            ntfy_parts("https://ntfy.sh/pvescale-alerts"),
            Some((
                "https://ntfy.sh/".to_string(),
                "pvescale-alerts".to_string()
            ))
        );
        assert_eq!(
            ntfy_parts("http://127.0.0.1:8080/ntfy/alerts/"),
            Some((
                "http://127.0.0.1:8080/ntfy/".to_string(),
                "alerts".to_string()
            ))
        );
        assert_eq!(ntfy_parts("https://ntfy.sh/"), None);
        assert_eq!(ntfy_parts("https://ntfy.sh"), None);
    }
}
