//! `[notify]`, `[notify.email]`, `[notify.gotify]`, `[[notify.webhook]]` → [`NotifyConfig`]:
//! event names, durations, the cap, URLs, addresses, headers and secrets, checked at load.
//! No message quotes a secret, a webhook URL (Slack's and Discord's are credentials) or a
//! header value.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;

use super::super::locate::KeyPath;
use super::super::notify::{
    EmailConfig, GotifyConfig, NotifyConfig, RawEmail, RawGotify, RawNotify, RawWebhook, SecretUrl,
    SmtpLogin, SmtpSecurity, WebhookConfig, WebhookFormat, default_gotify_priority, ntfy_parts,
};
use super::super::secrets::{self, SecretKind, SecretSource};
use super::{Validator, contains, root};
use crate::notify::EventKind;
use crate::units::fmt_duration;

/// Longer than this, one attempt on one channel could hold up the next run (every minute).
const LONGEST_SENSIBLE_TIMEOUT: Duration = Duration::from_secs(30);

impl Validator<'_> {
    /// The whole `[notify]` table (defaults when absent). `mode` is the config file's mode,
    /// for the warning about inline secrets in a file others can read.
    pub(super) fn notify(&mut self, raw: Option<&RawNotify>, mode: Option<u32>) -> NotifyConfig {
        let mut config = NotifyConfig::default();
        let Some(raw) = raw else {
            return config;
        };
        let key = root().key("notify");
        if let Some(events) = &raw.events {
            config.events = self.event_list(&key.key("events"), events, None);
        }
        if let Some(d) = raw.min_interval {
            config.min_interval = d.0;
        }
        match raw.max_per_hour {
            Some(n) if n < 1 => self.problem(
                &key.key("max_per_hour"),
                "must be at least 1 (to send nothing, configure no channel)",
            ),
            Some(n) => config.max_per_hour = u32::try_from(n).unwrap_or(u32::MAX),
            None => {}
        }
        if let Some(d) = raw.timeout {
            if d.0.is_zero() {
                self.problem(&key.key("timeout"), "must be more than 0s");
            } else {
                if d.0 > LONGEST_SENSIBLE_TIMEOUT {
                    self.warn(
                        &key.key("timeout"),
                        format_args!(
                            "{} per attempt (and one retry) can hold up the next run; \
                             runs come every minute",
                            fmt_duration(d.0)
                        ),
                    );
                }
                config.timeout = d.0;
            }
        }

        let proxy = self.proxy(&key.key("proxy"), raw.proxy.as_deref());

        let mut inline = Vec::new();
        if let Some(email) = &raw.email {
            let k = key.key("email");
            if email.password.is_some() {
                inline.push(k.key("password"));
            }
            config.email = self.email(&k, email, &config.events);
        }
        if let Some(gotify) = &raw.gotify {
            let k = key.key("gotify");
            if gotify.token.is_some() {
                inline.push(k.key("token"));
            }
            config.gotify = self.gotify(&k, gotify, &config.events);
        }
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, w) in raw.webhook.iter().enumerate() {
            let k = key.key("webhook").index(i);
            if w.url.is_some() {
                inline.push(k.key("url"));
            }
            if !w.headers.is_empty() {
                inline.push(k.key("headers"));
            }
            if let Some(hook) = self.webhook(&k, i, w, &config.events) {
                if let Some(first) = names.insert(hook.name.clone(), i) {
                    self.problem(
                        &k.key("name"),
                        format!(
                            "{:?} is already the name of notify.webhook[{first}]; names must be unique",
                            hook.name
                        ),
                    );
                } else {
                    config.webhooks.push(hook);
                }
            }
        }
        // The HTTP channels go through it; email (SMTP) does not.
        if let Some(gotify) = &mut config.gotify {
            gotify.proxy = proxy.clone();
        }
        for hook in &mut config.webhooks {
            hook.proxy = proxy.clone();
        }
        if !config.has_channels() && self.problems.is_empty() {
            self.warn(
                &key,
                "no channel is configured and enabled ([notify.email], [notify.gotify] or \
                 [[notify.webhook]]): nothing is sent",
            );
        }
        if let Some(mode) = mode
            && mode & 0o044 != 0
        {
            for k in inline {
                self.warn(
                    &k,
                    format_args!(
                        "the config file is readable by {} (mode {:03o}) and holds this secret \
                         inline; run `chmod 600 {}`{}",
                        if mode & 0o004 != 0 {
                            "others"
                        } else {
                            "its group"
                        },
                        mode & 0o777,
                        self.path.display(),
                        match k.to_string().rsplit('.').next() {
                            Some("password") => " or use password_file or a systemd credential",
                            Some("token") => " or use token_file or a systemd credential",
                            Some("url") => " or use url_file",
                            _ => "",
                        }
                    ),
                );
            }
        }
        config
    }

    /// A list of event names; `within` (the `[notify] events`) bounds a channel's list.
    fn event_list(
        &mut self,
        key: &KeyPath,
        names: &[String],
        within: Option<&BTreeSet<EventKind>>,
    ) -> BTreeSet<EventKind> {
        let mut out = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            match EventKind::parse(name) {
                Some(kind) if within.is_some_and(|w| !w.contains(&kind)) => self.problem(
                    &key.index(i),
                    format!("{name:?} is left out by [notify] events, so this channel would never get it"),
                ),
                Some(kind) => {
                    out.insert(kind);
                }
                None => self.problem(
                    &key.index(i),
                    format!(
                        "unknown event {name:?}; the events are {}",
                        EventKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                ),
            }
        }
        out
    }

    fn channel_events(
        &mut self,
        key: &KeyPath,
        raw: Option<&Vec<String>>,
        global: &BTreeSet<EventKind>,
    ) -> BTreeSet<EventKind> {
        match raw {
            Some(names) => self.event_list(&key.key("events"), names, Some(global)),
            None => global.clone(),
        }
    }

    /// A key the table needs: its value, or a problem and `""`.
    fn required(
        &mut self,
        key: &KeyPath,
        name: &str,
        value: Option<&str>,
        example: &str,
    ) -> String {
        match value {
            Some(v) if !v.trim().is_empty() => v.to_string(),
            Some(_) => {
                self.problem(&key.key(name), format!("is empty; e.g. {name} = {example}"));
                String::new()
            }
            None => {
                self.problem(key, format!("needs {name}, e.g. {name} = {example}"));
                String::new()
            }
        }
    }

    /// A secret file everyone can read is worth a warning.
    fn readable_secret_file(&mut self, key: &KeyPath, source: &SecretSource) {
        use std::os::unix::fs::PermissionsExt;
        if let SecretSource::File(p) = source
            && let Ok(meta) = fs::metadata(p)
            && meta.permissions().mode() & 0o004 != 0
        {
            self.warn(
                key,
                format_args!(
                    "{} is readable by everyone; run `chmod 600 {}`",
                    p.display(),
                    p.display()
                ),
            );
        }
    }

    fn ca_file(&mut self, key: &KeyPath, raw: Option<&PathBuf>) -> Option<PathBuf> {
        let path = self.resolve_path(raw?);
        match fs::read(&path) {
            Ok(pem) if contains(&pem, b"-----BEGIN CERTIFICATE-----") => {
                self.ca_file_others_could_change(key, &path);
                Some(path)
            }
            Ok(_) => {
                self.problem(
                    key,
                    format!(
                        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn email(
        &mut self,
        key: &KeyPath,
        raw: &RawEmail,
        global: &BTreeSet<EventKind>,
    ) -> Option<EmailConfig> {
        let before = self.problems.len();
        let enabled = raw.enabled != Some(false);
        let host = self.required(key, "host", raw.host.as_deref(), "\"smtp.example.com\"");
        let host = host.trim().to_string();
        if !host.is_empty() && !valid_host(&host) {
            self.problem(
                &key.key("host"),
                "must be the SMTP server's host name or IP address, e.g. \"smtp.example.com\" \
                 (no scheme, no port: set port)",
            );
        }
        let (security, port) = self.smtp_transport(key, raw);
        let (from, to) = self.mail_addresses(key, raw);
        let local = is_loopback(&host);
        let login = self.smtp_login(key, raw, security, local, enabled);
        if security == SmtpSecurity::None && !local && raw.user.is_none() {
            self.warn(
                &key.key("security"),
                format_args!("mail to {host} goes in clear text; \"none\" is meant for a relay on this machine"),
            );
        }
        let ca_file = self.ca_file(&key.key("ca_file"), raw.ca_file.as_ref());
        if raw.ca_file.is_some() && security == SmtpSecurity::None {
            self.problem(&key.key("ca_file"), "is for TLS, but security is \"none\"");
        }
        let events = self.channel_events(key, raw.events.as_ref(), global);
        if self.problems.len() > before || !enabled {
            return None;
        }
        Some(EmailConfig {
            host,
            port,
            security,
            from: from?,
            to,
            login,
            ca_file,
            events,
        })
    }

    /// `security` and `port` of `[notify.email]`.
    fn smtp_transport(&mut self, key: &KeyPath, raw: &RawEmail) -> (SmtpSecurity, u16) {
        let security = match raw.security.as_deref() {
            None if raw.port == Some(465) => SmtpSecurity::Tls,
            None | Some("starttls") => SmtpSecurity::StartTls,
            Some("tls") => SmtpSecurity::Tls,
            Some("none") => SmtpSecurity::None,
            Some(other) => {
                self.problem(
                    &key.key("security"),
                    format!(
                        "{other:?} is not one of \"starttls\" (port 587), \"tls\" (port 465) or \
                         \"none\" (a relay on this machine, port 25)"
                    ),
                );
                SmtpSecurity::StartTls
            }
        };
        let port = match raw.port {
            None => security.default_port(),
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => {
                    self.problem(&key.key("port"), "must be 1 to 65535");
                    0
                }
            },
        };
        (security, port)
    }

    /// `from` and `to` of `[notify.email]`.
    fn mail_addresses(&mut self, key: &KeyPath, raw: &RawEmail) -> (Option<Mailbox>, Vec<Mailbox>) {
        let from_text = self.required(
            key,
            "from",
            raw.from.as_deref(),
            "\"pvescale <pvescale@example.com>\"",
        );
        let from = match from_text.parse::<Mailbox>() {
            Ok(m) => Some(m),
            Err(_) if from_text.is_empty() => None,
            Err(e) => {
                self.problem(
                    &key.key("from"),
                    format!(
                        "{from_text:?} is not an email address ({e}); e.g. \"pvescale <pvescale@example.com>\""
                    ),
                );
                None
            }
        };
        let mut to = Vec::new();
        let list = match &raw.to {
            Some(super::super::notify::OneOrMany::One(s)) => vec![s.clone()],
            Some(super::super::notify::OneOrMany::Many(v)) => v.clone(),
            None => {
                self.problem(key, "needs to = [\"ops@example.com\"] (who gets the mail)");
                Vec::new()
            }
        };
        if raw.to.is_some() && list.is_empty() {
            self.problem(&key.key("to"), "needs at least one address");
        }
        for (i, addr) in list.iter().enumerate() {
            match addr.parse::<Mailbox>() {
                Ok(m) => to.push(m),
                Err(e) => self.problem(
                    &key.key("to").index(i),
                    format!("{addr:?} is not an email address ({e})"),
                ),
            }
        }
        (from, to)
    }

    /// `user` and the password of `[notify.email]`: no login, or the login with its secret
    /// (read only for a channel that is on).
    fn smtp_login(
        &mut self,
        key: &KeyPath,
        raw: &RawEmail,
        security: SmtpSecurity,
        local: bool,
        enabled: bool,
    ) -> Option<SmtpLogin> {
        match (
            &raw.user,
            raw.password_file.is_some() || raw.password.is_some(),
        ) {
            (None, false) => None,
            (None, true) => {
                let k = if raw.password.is_some() {
                    "password"
                } else {
                    "password_file"
                };
                self.problem(
                    &key.key(k),
                    "a password needs user (the SMTP login name); without user no login is made",
                );
                None
            }
            (Some(user), _) => {
                if user.trim().is_empty() || user.chars().any(char::is_control) {
                    self.problem(&key.key("user"), "must be the SMTP login name");
                }
                if security == SmtpSecurity::None && !local {
                    self.problem(
                        &key.key("security"),
                        "\"none\" would send the password in clear text to another machine; use \
                         \"starttls\" or \"tls\" (\"none\" is for a relay on this machine)",
                    );
                }
                if raw.password_file.is_some() && raw.password.is_some() {
                    self.problem(
                        &key.key("password"),
                        "set password_file or password, not both",
                    );
                    None
                } else if !enabled {
                    // A channel that is off needs no secret (and reads none).
                    None
                } else {
                    let file = raw.password_file.as_ref().map(|p| self.resolve_path(p));
                    match secrets::resolve(
                        SecretKind::SmtpPassword,
                        "[notify.email]",
                        file.as_deref(),
                        raw.password.as_ref().map(|s| &s.0),
                        self.env,
                    ) {
                        Ok((password, source)) => Some({
                            self.readable_secret_file(&key.key("password_file"), &source);
                            if let Some(warning) = secrets::whitespace_warning(&password, &source) {
                                self.warn(&key.key("password_file"), warning);
                            }
                            SmtpLogin {
                                user: user.clone(),
                                password,
                                source,
                            }
                        }),
                        Err(why) => {
                            self.problem(&key.key("password_file"), why);
                            None
                        }
                    }
                }
            }
        }
    }

    fn gotify(
        &mut self,
        key: &KeyPath,
        raw: &RawGotify,
        global: &BTreeSet<EventKind>,
    ) -> Option<GotifyConfig> {
        let before = self.problems.len();
        let enabled = raw.enabled != Some(false);
        let raw_url = self.required(
            key,
            "url",
            raw.url.as_deref(),
            "\"https://gotify.example.com\"",
        );
        let url = match check_http_url(&raw_url) {
            _ if raw_url.is_empty() => String::new(),
            Ok(url) => {
                let url = url.trim_end_matches('/').to_string();
                if url.starts_with("http://") && !is_loopback(&host_of(&url)) {
                    self.warn(
                        &key.key("url"),
                        "uses http://: the application token goes in clear text; use https://",
                    );
                }
                url
            }
            Err(why) => {
                self.problem(
                    &key.key("url"),
                    format!(
                        "{why}, e.g. \"https://gotify.example.com\" (messages go to <url>/message)"
                    ),
                );
                String::new()
            }
        };
        if raw_url.contains('?') || raw_url.contains('#') {
            self.problem(
                &key.key("url"),
                "must be the server's base URL without ?query or #fragment; put the token in \
                 token_file (it is sent in the X-Gotify-Key header)",
            );
        }
        let token = if raw.token_file.is_some() && raw.token.is_some() {
            self.problem(&key.key("token"), "set token_file or token, not both");
            None
        } else if !enabled {
            // A channel that is off needs no secret (and reads none).
            None
        } else {
            let file = raw.token_file.as_ref().map(|p| self.resolve_path(p));
            match secrets::resolve(
                SecretKind::GotifyToken,
                "[notify.gotify]",
                file.as_deref(),
                raw.token.as_ref().map(|s| &s.0),
                self.env,
            ) {
                Ok(found) => {
                    self.readable_secret_file(&key.key("token_file"), &found.1);
                    if let Some(warning) = secrets::whitespace_warning(&found.0, &found.1) {
                        self.warn(&key.key("token_file"), warning);
                    }
                    Some(found)
                }
                Err(why) => {
                    self.problem(&key.key("token_file"), why);
                    None
                }
            }
        };
        let mut priority: BTreeMap<EventKind, u8> = EventKind::ALL
            .into_iter()
            .map(|k| (k, default_gotify_priority(k)))
            .collect();
        for (name, value) in &raw.priority {
            let k = key.key("priority").key(name);
            match (EventKind::parse(name), u8::try_from(*value)) {
                (None, _) => self.problem(
                    &k,
                    format!(
                        "unknown event {name:?}; the events are {}",
                        EventKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                ),
                (Some(kind), Ok(p)) if p <= 10 => {
                    priority.insert(kind, p);
                }
                (Some(_), _) => self.problem(&k, "a Gotify priority is 0 to 10"),
            }
        }
        let ca_file = self.ca_file(&key.key("ca_file"), raw.ca_file.as_ref());
        let events = self.channel_events(key, raw.events.as_ref(), global);
        if self.problems.len() > before || !enabled {
            return None;
        }
        let (token, token_source) = token?;
        Some(GotifyConfig {
            url,
            token,
            token_source,
            ca_file,
            proxy: None,
            priority,
            events,
        })
    }

    fn webhook(
        &mut self,
        key: &KeyPath,
        index: usize,
        raw: &RawWebhook,
        global: &BTreeSet<EventKind>,
    ) -> Option<WebhookConfig> {
        let before = self.problems.len();
        let enabled = raw.enabled != Some(false);
        let name = match &raw.name {
            Some(n) if n.trim().is_empty() || n.chars().any(char::is_control) => {
                self.problem(&key.key("name"), "must be a short label such as \"ntfy\"");
                String::new()
            }
            Some(n) => n.clone(),
            None => format!("webhook[{index}]"),
        };
        let url = match (&raw.url, &raw.url_file) {
            (Some(_), Some(_)) => {
                self.problem(&key.key("url"), "set url or url_file, not both");
                None
            }
            (None, None) => {
                self.problem(
                    key,
                    "needs url (or url_file, for a URL that is itself a secret, as Slack's and \
                     Discord's are)",
                );
                None
            }
            (Some(url), None) => match check_http_url(url) {
                Ok(url) => Some(url),
                Err(why) => {
                    self.problem(&key.key("url"), format!("{why} (value not shown)"));
                    None
                }
            },
            (None, Some(_)) if !enabled => None,
            (None, Some(file)) => {
                let path = self.resolve_path(file);
                self.readable_secret_file(&key.key("url_file"), &SecretSource::File(path.clone()));
                match secrets::read_secret_file(&path) {
                    Ok(secret) => match check_http_url(secret.expose().trim()) {
                        Ok(url) => Some(url),
                        Err(why) => {
                            self.problem(
                                &key.key("url_file"),
                                format!("{}: {why} (value not shown)", path.display()),
                            );
                            None
                        }
                    },
                    Err(why) => {
                        self.problem(&key.key("url_file"), format!("{}: {why}", path.display()));
                        None
                    }
                }
            }
        };
        let format = match raw.format.as_deref() {
            None => WebhookFormat::Json,
            Some(f) => WebhookFormat::parse(f).unwrap_or_else(|| {
                self.problem(
                    &key.key("format"),
                    format!(
                        "{f:?} is not one of {}",
                        WebhookFormat::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                    ),
                );
                WebhookFormat::Json
            }),
        };
        if let Some(url) = &url {
            if format == WebhookFormat::Ntfy && ntfy_parts(url).is_none() {
                self.problem(
                    &key.key("url"),
                    "with format = \"ntfy\" the URL names the topic: \
                     https://ntfy.example.com/TOPIC (value not shown)",
                );
            }
            if url.starts_with("http://") && !is_loopback(&host_of(url)) {
                self.warn(
                    &key.key(if raw.url.is_some() { "url" } else { "url_file" }),
                    "uses http://: the message (and any header) goes in clear text; use https://",
                );
            }
        }
        let mut headers = Vec::new();
        for (hname, value) in &raw.headers {
            let k = key.key("headers").key(hname);
            if !valid_header_name(hname) {
                self.problem(&k, "is not a valid HTTP header name");
            } else if ["host", "content-length", "transfer-encoding", "connection"]
                .contains(&hname.to_ascii_lowercase().as_str())
            {
                self.problem(&k, "is set by pvescale itself");
            } else if value
                .0
                .expose()
                .chars()
                .any(|c| c.is_control() && c != '\t')
            {
                self.problem(&k, "the value must be one line (value not shown)");
            } else {
                headers.push((hname.clone(), value.0.clone()));
            }
        }
        let ca_file = self.ca_file(&key.key("ca_file"), raw.ca_file.as_ref());
        let events = self.channel_events(key, raw.events.as_ref(), global);
        if self.problems.len() > before || !enabled {
            return None;
        }
        Some(WebhookConfig {
            name,
            url: SecretUrl::new(&url?),
            format,
            headers,
            ca_file,
            proxy: None,
            events,
        })
    }
}

/// `http(s)://host[:port][/path][?query]`, scheme lowercased. Messages never quote the URL.
pub(crate) fn check_http_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") || lower.starts_with("http://") {
        let n = url.find("://").map_or(0, |i| i + 3);
        url.get(n..).unwrap_or("")
    } else {
        return Err("must be an http:// or https:// URL".to_string());
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_string());
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| "is not a valid URL".to_string())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host name".to_string());
    }
    if uri.port().is_some_and(|p| p.as_u16() == 0) {
        return Err("the port must be 1 to 65535".to_string());
    }
    let scheme = if lower.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{rest}"))
}

/// The host of a URL checked by [`check_http_url`].
pub(crate) fn host_of(url: &str) -> String {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_default()
}

fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            check_http_url("HTTPS://ntfy.sh/alerts").as_deref(),
            Ok("https://ntfy.sh/alerts")
        );
        assert!(check_http_url("ftp://x").is_err());
        assert!(check_http_url("https://").is_err());
        assert!(check_http_url("https://exa mple.com").is_err());
        assert!(check_http_url("http://127.0.0.1:0/x").is_err());
        assert_eq!(host_of("http://[::1]:8080/x"), "::1");
    }
}
