//! Notifications after a run: email, Gotify and webhooks, without spam.
//!
//! After the pass, the run report becomes events (`events::observe`): `scaled` and `refused`
//! of the moment, and `blocked` and `failed` conditions that are tracked between runs (with a
//! `recovered` when a failure that was told clears). `events::plan` decides, from the state
//! file's notification records, what goes out: deduplicated per (VM, event kind) with
//! `min_interval`, capped per hour. All events of a run go out as one message per channel.
//! A channel that fails is logged, retried once and counted; it never fails the run. A dry
//! run sends nothing and shows what it would have sent.

pub mod delivery;
pub mod events;
pub mod message;

mod email;
mod gotify;
mod http;
mod webhook;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

pub use delivery::ChannelDelivery;
pub use events::{Event, EventKind, Observed, Outbox, Settings};
pub use message::Message;

use crate::config::notify::{EmailConfig, GotifyConfig, NotifyConfig, WebhookConfig};
use crate::report::RunReport;
use crate::state::Notifications;

/// Pause before the one retry of a channel.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What the notifier did after a run (part of the run report).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotifyReport {
    /// Events in the message (0 when nothing went out).
    pub events: usize,
    /// Events left out by deduplication and `min_interval`.
    pub suppressed: usize,
    /// Events held back by the hourly cap.
    pub capped: usize,
    /// One entry per channel the message went to (or, in a dry run, would have gone to).
    pub channels: Vec<ChannelResult>,
    /// One entry per configured channel, message or not: sent, failed, held, last success.
    pub delivery: Vec<ChannelDelivery>,
}

impl NotifyReport {
    /// Channels that could not be reached (after the retry).
    pub fn failed_channels(&self) -> usize {
        self.channels.iter().filter(|c| c.error.is_some()).count()
    }
}

/// How one channel fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelResult {
    /// `email smtp.example.com:587`, `gotify https://...`, `webhook ntfy (https://ntfy.sh/…)`.
    pub channel: String,
    /// `email`, `gotify`, `webhook:ntfy` (see [`Channel::id`]).
    pub id: String,
    /// 0 in a dry run.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The subject/title of the message.
    pub title: String,
    /// The text of the message (shown by a dry run; kept for the JSON output).
    pub text: String,
}

/// Why a send failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    pub retry: bool,
}

impl SendError {
    fn fatal(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            retry: false,
        }
    }
}

/// One configured channel.
#[derive(Debug, Clone, Copy)]
pub enum Channel<'a> {
    Email(&'a EmailConfig),
    Gotify(&'a GotifyConfig),
    Webhook(&'a WebhookConfig),
}

impl Channel<'_> {
    /// For logs and reports; never a secret.
    pub fn label(&self) -> String {
        match self {
            Channel::Email(c) => format!("email {}:{}", c.host, c.port),
            Channel::Gotify(c) => format!("gotify {}", c.url),
            Channel::Webhook(c) => format!("webhook {} ({})", c.name, c.url.shown()),
        }
    }

    /// Stable and secret-free, for the metrics file and the state: `email`, `gotify`,
    /// `webhook:<name>` (a URL or host may hold a secret, and may change).
    pub fn id(&self) -> String {
        match self {
            Channel::Email(_) => "email".to_string(),
            Channel::Gotify(_) => "gotify".to_string(),
            Channel::Webhook(c) => format!("webhook:{}", c.name),
        }
    }

    fn events(&self) -> &BTreeSet<EventKind> {
        match self {
            Channel::Email(c) => &c.events,
            Channel::Gotify(c) => &c.events,
            Channel::Webhook(c) => &c.events,
        }
    }

    /// Values that must never appear in a log line or a report, should a server or a
    /// library echo them in an error.
    fn secrets(&self) -> Vec<String> {
        match self {
            Channel::Email(c) => c
                .login
                .iter()
                .map(|l| l.password.expose().to_string())
                .collect(),
            Channel::Gotify(c) => vec![c.token.expose().to_string()],
            Channel::Webhook(c) => {
                let url = c.url.expose();
                let mut out = vec![url.to_string()];
                if let Some(i) = url
                    .find("://")
                    .and_then(|s| url[s + 3..].find('/').map(|p| s + 3 + p))
                {
                    out.push(url[i..].to_string());
                }
                out.extend(c.headers.iter().map(|(_, v)| v.expose().to_string()));
                out
            }
        }
    }

    fn send_once(&self, msg: &Message, timeout: Duration) -> Result<(), SendError> {
        match self {
            Channel::Email(c) => email::send(c, msg, timeout),
            Channel::Gotify(c) => gotify::send(c, msg, timeout),
            Channel::Webhook(c) => webhook::send(c, msg, timeout),
        }
    }

    /// Sends, retrying once when that can help. Never panics, never shows a secret.
    fn send(&self, msg: &Message, timeout: Duration) -> ChannelResult {
        let mut attempts = 1;
        let mut result = self.send_once(msg, timeout);
        if let Err(e) = &result
            && e.retry
        {
            std::thread::sleep(RETRY_PAUSE);
            attempts = 2;
            result = self.send_once(msg, timeout);
        }
        ChannelResult {
            channel: self.label(),
            id: self.id(),
            attempts,
            error: result.err().map(|e| scrub(&e.message, &self.secrets())),
            title: msg.title(),
            text: msg.text(),
        }
    }
}

/// Every configured channel, in a fixed order.
pub fn channels(config: &NotifyConfig) -> Vec<Channel<'_>> {
    let mut out = Vec::new();
    if let Some(c) = &config.email {
        out.push(Channel::Email(c));
    }
    if let Some(c) = &config.gotify {
        out.push(Channel::Gotify(c));
    }
    out.extend(config.webhooks.iter().map(Channel::Webhook));
    out
}

/// `text` with every secret (4 characters or more) replaced by `<redacted>`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// After a pass: events from the report, deduplicated and rate-limited through `state`,
/// sent as one message per channel (in parallel, each retried at most once). In a dry run
/// nothing is sent: the report holds what would have been. `None` when no channel is
/// configured (then `state` is not touched). `state` is updated as if the message went out,
/// whether or not every channel took it: a dead channel does not make every later run try
/// the same events again.
pub fn after_run(
    config: &NotifyConfig,
    state: &mut Notifications,
    report: &RunReport,
    now: u64,
) -> Option<NotifyReport> {
    if !config.has_channels() {
        return None;
    }
    let settings = Settings {
        events: config.events.clone(),
        min_interval: config.min_interval.as_secs(),
        max_per_hour: config.max_per_hour,
    };
    let observed = events::observe(report);
    let (outbox, next) = events::plan(&observed, state, &settings, now);
    *state = next;
    let mut result = NotifyReport {
        events: outbox.events.len(),
        suppressed: outbox.suppressed,
        capped: outbox.capped,
        channels: Vec::new(),
        delivery: Vec::new(),
    };
    if outbox.capped > 0 {
        log::warn!(
            "notifications: {} events held back: {} messages went out in the last hour \
             ([notify] max_per_hour = {})",
            outbox.capped,
            config.max_per_hour,
            config.max_per_hour
        );
    }
    let configured = channels(config);
    if outbox.send {
        let msg = Message {
            events: outbox.events,
            held_back: outbox.held_back,
            dry_run: report.dry_run,
            test: false,
            time: now,
            host: message::hostname(),
        };
        result.channels = deliver(&configured, &msg, config.timeout);
    }
    // Every configured channel, told something or not; a dry run sends nothing, so records
    // no success (and writes no state anyway).
    result.delivery = delivery::tally(
        &configured,
        &result.channels,
        &outbox.capped_kinds,
        &mut state.last_success,
        now,
    );
    Some(result)
}

/// The message to each channel that takes some of its events: sent (and logged), or in a
/// dry run only shown.
fn deliver(configured: &[Channel<'_>], msg: &Message, timeout: Duration) -> Vec<ChannelResult> {
    let targets: Vec<(Channel<'_>, Message)> = configured
        .iter()
        .filter_map(|c| msg.for_kinds(c.events()).map(|m| (*c, m)))
        .collect();
    if msg.dry_run {
        return targets
            .iter()
            .map(|(c, m)| ChannelResult {
                channel: c.label(),
                id: c.id(),
                attempts: 0,
                error: None,
                title: m.title(),
                text: m.text(),
            })
            .collect();
    }
    let results = send_all(&targets, timeout);
    for c in &results {
        match &c.error {
            None => log::info!("notification sent via {}: {}", c.channel, c.title),
            Some(e) => log::warn!(
                "notification via {} failed ({} attempts): {e}",
                c.channel,
                c.attempts
            ),
        }
    }
    results
}

/// Sends each message on its channel, all channels at once.
fn send_all(targets: &[(Channel<'_>, Message)], timeout: Duration) -> Vec<ChannelResult> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(c, m)| (c, scope.spawn(move || c.send(m, timeout))))
            .collect();
        handles
            .into_iter()
            .map(|(c, h)| {
                h.join().unwrap_or_else(|_| ChannelResult {
                    channel: c.label(),
                    id: c.id(),
                    attempts: 1,
                    error: Some("the sender panicked".to_string()),
                    title: String::new(),
                    text: String::new(),
                })
            })
            .collect()
    })
}

/// `pvescale check --notify-test`: a test message on every channel, whatever the filters,
/// deduplication and cap say. Touches no state.
pub fn send_test(config: &NotifyConfig, now: u64) -> Vec<ChannelResult> {
    let msg = Message {
        events: Vec::new(),
        held_back: 0,
        dry_run: false,
        test: true,
        time: now,
        host: message::hostname(),
    };
    let targets: Vec<(Channel<'_>, Message)> = channels(config)
        .into_iter()
        .map(|c| (c, msg.clone()))
        .collect();
    send_all(&targets, config.timeout)
}

/// For the run's table output: what went out (or, in a dry run, would have), and what failed.
pub fn render(report: &NotifyReport, dry_run: bool) -> String {
    let mut out = String::new();
    if dry_run {
        if report.channels.is_empty() {
            let _ = writeln!(out, "notifications (dry run): nothing would be sent");
            return out;
        }
        let _ = writeln!(out, "notifications (dry run, nothing was sent):");
        for c in &report.channels {
            let _ = writeln!(out, "  to {}: {}", c.channel, c.title);
            for line in c.text.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        return out;
    }
    if report.channels.is_empty() {
        return out;
    }
    let ok: Vec<&str> = report
        .channels
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| c.channel.as_str())
        .collect();
    let _ = write!(out, "notifications: {} events", report.events);
    if !ok.is_empty() {
        let _ = write!(out, ", sent via {}", ok.join(", "));
    }
    let _ = writeln!(out);
    for c in report.channels.iter().filter(|c| c.error.is_some()) {
        let _ = writeln!(
            out,
            "notifications: FAILED via {} ({} attempts): {}",
            c.channel,
            c.attempts,
            c.error.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_longest_first_and_ignores_tiny_values() {
        let secrets = vec![
            "abc".to_string(),
            "s3cret".to_string(),
            "s3cret-long".to_string(),
        ];
        assert_eq!(
            scrub("x s3cret-long y s3cret z abc", &secrets),
            "x <redacted> y <redacted> z abc"
        );
    }
}
