//! One message for a run: a title, plain-text lines, and the events as data; and how each
//! channel wants it (email text, Gotify, JSON, Slack, Discord, ntfy).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::events::{Event, EventKind};
use crate::guest::GuestKind;
use crate::units::fmt_duration;

/// At most this many event lines in a message; the rest is counted.
pub const MAX_LINES: usize = 50;

/// What one run tells (the same for every channel, before each channel's event filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub events: Vec<Event>,
    /// Events the hourly cap held back before this message.
    pub held_back: u64,
    pub dry_run: bool,
    /// `check --notify-test`.
    pub test: bool,
    /// Unix time of the run.
    pub time: u64,
    /// Which machine sent it.
    pub host: String,
}

impl Message {
    /// The message for a channel that tells only `kinds`; `None` when nothing is left for it.
    pub fn for_kinds(&self, kinds: &BTreeSet<EventKind>) -> Option<Message> {
        let events: Vec<Event> = self
            .events
            .iter()
            .filter(|e| kinds.contains(&e.kind))
            .cloned()
            .collect();
        if events.is_empty() && self.held_back == 0 && !self.test {
            return None;
        }
        Some(Message {
            events,
            ..self.clone()
        })
    }

    /// The kinds of its events, in order.
    pub fn kinds(&self) -> Vec<EventKind> {
        let set: BTreeSet<EventKind> = self.events.iter().map(|e| e.kind).collect();
        set.into_iter().collect()
    }

    /// `pvescale: 2 scaled, 1 failed` (`pvescale (dry run): ...`).
    pub fn title(&self) -> String {
        let head = if self.dry_run {
            "pvescale (dry run)"
        } else {
            "pvescale"
        };
        if self.test {
            return format!("{head}: test message");
        }
        let counts: Vec<String> = self
            .kinds()
            .into_iter()
            .map(|k| {
                let n = self.events.iter().filter(|e| e.kind == k).count();
                format!("{n} {k}")
            })
            .collect();
        if counts.is_empty() {
            format!("{head}: {} events held back", self.held_back)
        } else {
            format!("{head}: {}", counts.join(", "))
        }
    }

    /// One line per event (at most [`MAX_LINES`]), then notes.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        if self.test {
            lines.push(format!(
                "This is a test message from pvescale on {}: this channel works.",
                self.host
            ));
        }
        for event in self.events.iter().take(MAX_LINES) {
            lines.push(event_line(event, self.time));
        }
        if self.events.len() > MAX_LINES {
            lines.push(format!(
                "... and {} more (see `pvescale history` or the journal)",
                self.events.len() - MAX_LINES
            ));
        }
        if self.held_back > 0 {
            lines.push(format!(
                "{} earlier events were not sent: the hourly cap ([notify] max_per_hour) was reached.",
                self.held_back
            ));
        }
        if self.dry_run {
            lines.push("Dry run: nothing was changed.".to_string());
        }
        lines
    }

    /// The plain-text body (email, Gotify, chat): the lines and a signature.
    pub fn text(&self) -> String {
        let mut text = self.lines().join("\n");
        text.push_str(&format!("\n\n-- pvescale on {}", self.host));
        text
    }

    /// pvescale's own JSON document (`format = "json"`).
    pub fn json(&self) -> Value {
        json!({
            "source": "pvescale",
            "host": self.host,
            "time": self.time,
            "dry_run": self.dry_run,
            "test": self.test,
            "title": self.title(),
            "text": self.text(),
            "held_back": self.held_back,
            "events": self.events,
        })
    }

    /// The most urgent kind in the message (for priorities).
    pub fn most_urgent(&self) -> Option<EventKind> {
        self.events
            .iter()
            .map(|e| e.kind)
            .max_by_key(|k| urgency(*k))
    }
}

fn urgency(kind: EventKind) -> u8 {
    match kind {
        EventKind::Scaled => 1,
        EventKind::Recovered => 2,
        EventKind::Blocked => 3,
        EventKind::Refused => 4,
        EventKind::Failed => 5,
    }
}

fn unit(resource: Option<&str>) -> &'static str {
    match resource {
        Some("cpu") => " vCPUs",
        Some("memory") => " MiB",
        _ => "",
    }
}

fn who(e: &Event) -> String {
    match e.vmid {
        None => format!("cluster {}", e.cluster),
        Some(vmid) => {
            let mut s = format!("{}/{vmid}", e.cluster);
            if e.guest == Some(GuestKind::Ct) {
                s.push_str(" CT");
            }
            if !e.name.is_empty() {
                s.push_str(&format!(" ({})", e.name));
            }
            if !e.node.is_empty() {
                s.push_str(&format!(" on {}", e.node));
            }
            s
        }
    }
}

/// `[scaled] lab/101 (web1) on pve1: cpu 2 → 4 vCPUs: <reason>`.
pub fn event_line(e: &Event, now: u64) -> String {
    let resource = e.resource.as_deref().unwrap_or("");
    let change = match (e.from, e.to) {
        (Some(from), Some(to)) => {
            format!("{resource} {from} → {to}{}", unit(e.resource.as_deref()))
        }
        _ => resource.to_string(),
    };
    let since = e
        .since
        .map(|s| fmt_duration(std::time::Duration::from_secs(now.saturating_sub(s))));
    let body = match e.kind {
        EventKind::Scaled => format!("{change} ({})", one_line(&e.text)),
        EventKind::Refused => format!(
            "{change} was refused by the VM and reverted: {}",
            one_line(&e.text)
        ),
        EventKind::Blocked => format!("{resource} cannot scale: {}", one_line(&e.text)),
        EventKind::Failed => one_line(&e.text),
        EventKind::Recovered => format!(
            "works again{} (last error: {})",
            since
                .map(|s| format!(" after failing for {s}"))
                .unwrap_or_default(),
            one_line(&e.text)
        ),
    };
    format!("[{}] {}: {body}", e.kind, who(e))
}

/// A message on one line, at most 500 characters.
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&flat, 500)
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The machine's host name, for signatures and the SMTP greeting.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            cluster: "lab".into(),
            vmid: Some(101),
            guest: Some(GuestKind::Vm),
            name: "web1".into(),
            node: "pve1".into(),
            resource: Some("memory".into()),
            from: Some(4096),
            to: Some(6144),
            text: "memory 91% > 85% for 2m: 4096 → 6144 MiB".into(),
            since: None,
        }
    }

    fn message(events: Vec<Event>) -> Message {
        Message {
            events,
            held_back: 0,
            dry_run: false,
            test: false,
            time: 1000,
            host: "pve-admin".into(),
        }
    }

    #[test]
    fn lines_per_kind() {
        let m = message(vec![event(EventKind::Scaled), event(EventKind::Refused)]);
        assert_eq!(m.title(), "pvescale: 1 scaled, 1 refused");
        let lines = m.lines();
        assert_eq!(
            lines[0],
            "[scaled] lab/101 (web1) on pve1: memory 4096 → 6144 MiB (memory 91% > 85% for 2m: 4096 → 6144 MiB)"
        );
        assert!(lines[1].starts_with("[refused] lab/101 (web1) on pve1: memory 4096 → 6144 MiB was refused by the VM and reverted"));
    }

    #[test]
    fn long_batches_are_cut_with_a_count() {
        let m = message(vec![event(EventKind::Scaled); MAX_LINES + 7]);
        let lines = m.lines();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert!(lines[MAX_LINES].contains("and 7 more"));
    }

    #[test]
    fn channel_filters_leave_nothing_or_the_rest() {
        let m = message(vec![event(EventKind::Scaled), event(EventKind::Failed)]);
        assert!(m.for_kinds(&[EventKind::Recovered].into()).is_none());
        let only = m
            .for_kinds(&[EventKind::Failed].into())
            .expect("failed left");
        assert_eq!(only.kinds(), vec![EventKind::Failed]);
        assert_eq!(m.most_urgent(), Some(EventKind::Failed));
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("ääää", 3), "ää…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
