//! What is worth telling after a run, and whether to tell it now: events from the run report,
//! conditions tracked between runs, deduplication, `min_interval` and the hourly cap. Pure
//! functions of (report or events, state, settings, now); no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::guest::GuestKind;
use crate::policy::BlockedBy;
use crate::report::{ActionKind, ResourceReport, RunReport, VmReport, WriteOutcome};
use crate::state::{Notifications, NotifyCondition};

/// The kinds of event, in the order messages list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A resource was changed (or, in a dry run, would be).
    Scaled,
    /// The VM refused a live change; it was reverted.
    Refused,
    /// A change is needed but cannot be made (not hotplug-ready, host full, at the maximum).
    Blocked,
    /// An API, authentication or TLS error, for a VM or a whole cluster.
    Failed,
    /// A failure that was told about has cleared.
    Recovered,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Scaled,
        EventKind::Refused,
        EventKind::Blocked,
        EventKind::Failed,
        EventKind::Recovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scaled => "scaled",
            EventKind::Refused => "refused",
            EventKind::Blocked => "blocked",
            EventKind::Failed => "failed",
            EventKind::Recovered => "recovered",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub cluster: String,
    /// `None` for an event about the whole cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// `vm` or `ct`, where known (a recovery told from the state alone does not know).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestKind>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// `cpu` or `memory`, for events about one resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// vCPUs or MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// The reason, the refusal, the error, or (recovered) the last error.
    pub text: String,
    /// Since when the condition held (blocked, failed, recovered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

impl Event {
    fn new(kind: EventKind, cluster: &str, vm: Option<&VmReport>) -> Event {
        Event {
            kind,
            cluster: cluster.to_string(),
            vmid: vm.map(|v| v.vmid),
            guest: vm.map(|v| v.kind),
            name: vm.map(|v| v.name.clone()).unwrap_or_default(),
            node: vm.map(|v| v.node.clone()).unwrap_or_default(),
            resource: None,
            from: None,
            to: None,
            text: String::new(),
            since: None,
        }
    }

    /// `lab/101`, or `lab` for the cluster itself.
    pub fn subject(&self) -> String {
        match self.vmid {
            Some(vmid) => format!("{}/{vmid}", self.cluster),
            None => self.cluster.clone(),
        }
    }

    /// Deduplication and `min_interval` work per (VM or cluster, event kind).
    pub fn dedup_key(&self) -> String {
        format!("{} {}", self.kind, self.subject())
    }
}

/// What a run showed: events of the moment, and the conditions that hold now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `scaled` and `refused`.
    pub instant: Vec<Event>,
    /// `blocked` and `failed` conditions that hold now, by condition key, with what
    /// identifies each (a different identity is a new condition).
    pub conditions: BTreeMap<String, (String, Event)>,
    /// Clusters read this run (their VMs' conditions are known).
    pub clusters_read: BTreeSet<String>,
    /// Every cluster of the run (a condition of another one is forgotten).
    pub clusters: BTreeSet<String>,
}

/// The events and conditions of a run report. A dry run's planned changes count as `scaled`.
pub fn observe(report: &RunReport) -> Observed {
    let mut out = Observed::default();
    for cluster in &report.clusters {
        out.clusters.insert(cluster.name.clone());
        if let Some(error) = &cluster.error {
            let mut event = Event::new(EventKind::Failed, &cluster.name, None);
            event.text = error.clone();
            out.conditions
                .insert(format!("failed {}", cluster.name), (String::new(), event));
            continue;
        }
        if cluster.standby.is_some() {
            // Another node acts for it: what is known of it stays as it was.
            continue;
        }
        out.clusters_read.insert(cluster.name.clone());
        for vm in &cluster.vms {
            observe_vm(report.dry_run, &cluster.name, vm, &mut out);
        }
    }
    out
}

fn observe_vm(dry_run: bool, cluster: &str, vm: &VmReport, out: &mut Observed) {
    let mut failures = Vec::new();
    for (resource, r) in vm.resources() {
        let change = |kind| {
            let mut e = Event::new(kind, cluster, Some(vm));
            e.resource = Some(resource.to_string());
            e.from = r.from;
            e.to = r.to;
            e
        };
        match &r.outcome {
            Some(WriteOutcome::Applied) => {
                let mut e = change(EventKind::Scaled);
                e.text = r.reason.clone();
                out.instant.push(e);
            }
            Some(WriteOutcome::Refused(message)) => {
                let mut e = change(EventKind::Refused);
                e.text = message.clone();
                out.instant.push(e);
            }
            Some(written @ (WriteOutcome::Failed(_) | WriteOutcome::Unsettled(_))) => {
                failures.push(format!("{resource}: {written}"));
            }
            Some(WriteOutcome::HostLimit { .. } | WriteOutcome::Skipped(_)) => {}
            None if dry_run && r.is_change() => {
                let mut e = change(EventKind::Scaled);
                e.text = r.reason.clone();
                out.instant.push(e);
            }
            None => {}
        }
        if r.action == ActionKind::Blocked
            && let Some(identity) = blocked_identity(r, vm.size(resource))
        {
            let mut e = Event::new(EventKind::Blocked, cluster, Some(vm));
            e.resource = Some(resource.to_string());
            e.text = r.reason.clone();
            out.conditions.insert(
                format!("blocked {cluster}/{}/{resource}", vm.vmid),
                (identity, e),
            );
        }
    }
    if let Some(error) = &vm.error {
        failures.insert(0, error.clone());
    }
    if !failures.is_empty() {
        let mut e = Event::new(EventKind::Failed, cluster, Some(vm));
        e.text = failures.join("; ");
        out.conditions
            .insert(format!("failed {cluster}/{}", vm.vmid), (String::new(), e));
    }
}

/// What identifies a blocked condition: what stands in the way, at which size, so that a
/// utilisation figure that moves is not a new condition while a new obstacle or a new size
/// is. `None` for a back-off after a refusal: the refusal was told already.
pub fn blocked_identity(r: &ResourceReport, size: u64) -> Option<String> {
    let by = r.blocked_by?;
    (by != BlockedBy::Backoff).then(|| format!("{by:?} at {size}"))
}

/// The knobs of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Event kinds that are told at all (`[notify] events`).
    pub events: BTreeSet<EventKind>,
    /// Seconds between two messages about the same (VM, event kind).
    pub min_interval: u64,
    /// Messages per rolling hour, at most.
    pub max_per_hour: u32,
}

/// What to send now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The events of the message, in message order; empty when nothing goes out.
    pub events: Vec<Event>,
    /// Events the hourly cap held back before this message (the message says so).
    pub held_back: u64,
    /// Whether a message goes out at all (events, or only the held-back note).
    pub send: bool,
    /// Events left out by deduplication / `min_interval` this run.
    pub suppressed: usize,
    /// Events the hourly cap held back this run.
    pub capped: usize,
    /// The kinds of those events (a channel held back a message when it takes one of them).
    pub capped_kinds: BTreeSet<EventKind>,
}

const HOUR: u64 = 3600;

/// Decides what goes out now and the notification state after it, as if it was sent:
/// - a condition (blocked, failed) is told once, and again only when it changes; one that
///   could not be told yet (another message about the same VM and kind within
///   `min_interval`, or the hourly cap) stays pending and is told when allowed, if it still
///   holds; a failure that was told and clears is told as `recovered`;
/// - an event of the moment (scaled, refused) within `min_interval` of the last message
///   about the same (VM, kind) is dropped;
/// - when `max_per_hour` messages went out in the last hour, nothing goes out: events of the
///   moment are counted and the next message says how many were held back.
pub fn plan(
    observed: &Observed,
    state: &Notifications,
    settings: &Settings,
    now: u64,
) -> (Outbox, Notifications) {
    let mut next = state.clone();
    next.sent_at.retain(|&t| t <= now && now - t < HOUR);
    let mut candidates = track_conditions(observed, &mut next, now);
    candidates.extend(recoveries(observed, &mut next));
    candidates.extend(observed.instant.iter().cloned().map(|e| (e, None)));
    candidates.retain(|(e, _)| settings.events.contains(&e.kind));
    let mut outbox = Outbox::default();
    let go = deduplicate(candidates, &next, settings, now, &mut outbox);
    if !go.is_empty() || next.held_back > 0 {
        cap_or_send(go, &mut next, settings.max_per_hour, now, &mut outbox);
    }
    (outbox, next)
}

/// An event to tell, with the key of the condition it belongs to (none for an instant event).
type Candidate = (Event, Option<String>);

/// Conditions that hold now: new or changed ones start over; those not told yet are
/// candidates.
fn track_conditions(observed: &Observed, next: &mut Notifications, now: u64) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for (key, (identity, event)) in &observed.conditions {
        let fresh = match next.conditions.get(key) {
            Some(old) => old.identity != *identity,
            None => true,
        };
        if fresh {
            next.conditions.insert(
                key.clone(),
                NotifyCondition {
                    since: now,
                    cluster: event.cluster.clone(),
                    vmid: event.vmid,
                    name: event.name.clone(),
                    identity: identity.clone(),
                    text: event.text.clone(),
                    notified: false,
                },
            );
        } else if let Some(old) = next.conditions.get_mut(key) {
            old.text = event.text.clone();
            if !event.name.is_empty() {
                old.name = event.name.clone();
            }
        }
        if let Some(c) = next.conditions.get(key)
            && !c.notified
        {
            let mut event = event.clone();
            event.since = Some(c.since);
            candidates.push((event, Some(key.clone())));
        }
    }
    candidates
}

/// Conditions that no longer hold, where the run could see: forgotten, and a failure that
/// was told is told as recovered.
fn recoveries(observed: &Observed, next: &mut Notifications) -> Vec<Candidate> {
    let gone: Vec<String> = next
        .conditions
        .iter()
        .filter(|(key, c)| {
            !observed.conditions.contains_key(*key)
                && (!observed.clusters.contains(&c.cluster)
                    || observed.clusters_read.contains(&c.cluster))
        })
        .map(|(key, _)| key.clone())
        .collect();
    let mut candidates = Vec::new();
    for key in gone {
        let Some(c) = next.conditions.remove(&key) else {
            continue;
        };
        let known_cluster = observed.clusters.contains(&c.cluster);
        if key.starts_with("failed ") && c.notified && known_cluster {
            candidates.push((
                Event {
                    kind: EventKind::Recovered,
                    cluster: c.cluster.clone(),
                    vmid: c.vmid,
                    guest: None,
                    name: c.name.clone(),
                    node: String::new(),
                    resource: None,
                    from: None,
                    to: None,
                    text: c.text.clone(),
                    since: Some(c.since),
                },
                None,
            ));
        }
    }
    candidates
}

/// One message per (VM, kind) per `min_interval`; what goes, in the order messages list it.
/// A recovery follows a failure that was told, so it is never held back by it.
fn deduplicate(
    candidates: Vec<Candidate>,
    next: &Notifications,
    settings: &Settings,
    now: u64,
    outbox: &mut Outbox,
) -> Vec<Candidate> {
    let allowed = |e: &Event| {
        e.kind == EventKind::Recovered
            || next
                .last_sent
                .get(&e.dedup_key())
                .is_none_or(|&at| at > now || now - at >= settings.min_interval)
    };
    let (mut go, held): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(e, _)| allowed(e));
    outbox.suppressed = held.len();
    go.sort_by(|(a, _), (b, _)| {
        (a.kind, &a.cluster, a.vmid, &a.resource).cmp(&(b.kind, &b.cluster, b.vmid, &b.resource))
    });
    go
}

/// The hourly cap, then the message. When `max_per_hour` messages went out in the last hour,
/// nothing goes out: conditions stay pending, instant events are counted as held back.
/// Otherwise `go` goes out (recorded as sent), with the note of what was held back before.
fn cap_or_send(
    go: Vec<Candidate>,
    next: &mut Notifications,
    max_per_hour: u32,
    now: u64,
    outbox: &mut Outbox,
) {
    if next.sent_at.len() >= max_per_hour as usize {
        let instant = go.iter().filter(|(_, key)| key.is_none()).count();
        outbox.capped = go.len();
        outbox.capped_kinds = go.iter().map(|(e, _)| e.kind).collect();
        next.held_back = next.held_back.saturating_add(instant as u64);
        return;
    }
    for (event, key) in &go {
        next.last_sent.insert(event.dedup_key(), now);
        if let Some(c) = key.as_ref().and_then(|k| next.conditions.get_mut(k)) {
            c.notified = true;
        }
    }
    next.sent_at.push(now);
    outbox.held_back = next.held_back;
    next.held_back = 0;
    outbox.events = go.into_iter().map(|(e, _)| e).collect();
    outbox.send = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            events: EventKind::ALL.into_iter().collect(),
            min_interval: 3600,
            max_per_hour: 10,
        }
    }

    fn scaled(vmid: u32) -> Event {
        Event {
            kind: EventKind::Scaled,
            cluster: "lab".into(),
            vmid: Some(vmid),
            guest: Some(GuestKind::Vm),
            name: format!("vm{vmid}"),
            node: "pve1".into(),
            resource: Some("cpu".into()),
            from: Some(2),
            to: Some(4),
            text: "cpu 95% > 80% for 2m (needs 2m): 2 → 4 vCPUs".into(),
            since: None,
        }
    }

    fn failed(vmid: Option<u32>, text: &str) -> (String, (String, Event)) {
        let mut e = scaled(vmid.unwrap_or(0));
        e.kind = EventKind::Failed;
        e.vmid = vmid;
        e.resource = None;
        e.from = None;
        e.to = None;
        e.text = text.into();
        let key = format!("failed {}", e.subject());
        (key, (String::new(), e))
    }

    fn blocked_report(by: BlockedBy, reason: &str) -> ResourceReport {
        ResourceReport {
            action: ActionKind::Blocked,
            blocked_by: Some(by),
            from: None,
            to: None,
            reason: reason.into(),
            outcome: None,
            wait: None,
            window: None,
        }
    }

    /// A blocked condition as `observe_vm` makes it: what blocks, at 8 vCPUs.
    fn blocked(vmid: u32, reason: &str) -> (String, (String, Event)) {
        let by = if reason.contains("host guard") {
            BlockedBy::HostGuard
        } else {
            BlockedBy::Limit
        };
        let mut e = scaled(vmid);
        e.kind = EventKind::Blocked;
        e.from = None;
        e.to = None;
        e.text = reason.into();
        (
            format!("blocked lab/{vmid}/cpu"),
            (
                blocked_identity(&blocked_report(by, reason), 8).unwrap_or_default(),
                e,
            ),
        )
    }

    fn run(instant: Vec<Event>, conditions: Vec<(String, (String, Event))>) -> Observed {
        Observed {
            instant,
            conditions: conditions.into_iter().collect(),
            clusters_read: ["lab".to_string()].into(),
            clusters: ["lab".to_string()].into(),
        }
    }

    fn kinds(o: &Outbox) -> Vec<(EventKind, Option<u32>)> {
        o.events.iter().map(|e| (e.kind, e.vmid)).collect()
    }

    #[test]
    fn all_events_of_a_run_go_out_together() {
        let obs = run(
            vec![scaled(101), scaled(102)],
            vec![failed(Some(103), "timeout")],
        );
        let (out, _) = plan(&obs, &Notifications::default(), &settings(), 1000);
        assert!(out.send);
        assert_eq!(
            kinds(&out),
            vec![
                (EventKind::Scaled, Some(101)),
                (EventKind::Scaled, Some(102)),
                (EventKind::Failed, Some(103))
            ]
        );
    }

    #[test]
    fn same_vm_and_kind_within_min_interval_is_dropped() {
        let s = settings();
        let (_, state) = plan(
            &run(vec![scaled(101)], vec![]),
            &Notifications::default(),
            &s,
            0,
        );
        let (out, state) = plan(&run(vec![scaled(101), scaled(102)], vec![]), &state, &s, 60);
        assert_eq!(kinds(&out), vec![(EventKind::Scaled, Some(102))]);
        assert_eq!(out.suppressed, 1);
        let (out, _) = plan(&run(vec![scaled(101)], vec![]), &state, &s, 3600);
        assert_eq!(
            kinds(&out),
            vec![(EventKind::Scaled, Some(101))],
            "after 1h"
        );
    }

    #[test]
    fn a_condition_is_told_once_until_it_changes() {
        let s = settings();
        let at_max = "cpu 95% > 80% for 5m (needs 2m), but already at max 8 vCPUs: blocked";
        let at_max_later = "cpu 97% > 80% for 9m (needs 2m), but already at max 8 vCPUs: blocked";
        let (out, state) = plan(
            &run(vec![], vec![blocked(101, at_max)]),
            &Notifications::default(),
            &s,
            0,
        );
        assert_eq!(kinds(&out), vec![(EventKind::Blocked, Some(101))]);
        // Hours later, still the same condition (figures moved): nothing.
        let (out, state) = plan(
            &run(vec![], vec![blocked(101, at_max_later)]),
            &state,
            &s,
            5 * 3600,
        );
        assert!(!out.send && out.events.is_empty());
        // It clears, then comes back: a new condition, told again (min_interval passed).
        let (out, state) = plan(&run(vec![], vec![]), &state, &s, 6 * 3600);
        assert!(!out.send);
        let (out, _) = plan(
            &run(vec![], vec![blocked(101, at_max)]),
            &state,
            &s,
            7 * 3600,
        );
        assert_eq!(kinds(&out), vec![(EventKind::Blocked, Some(101))]);
    }

    #[test]
    fn a_changed_condition_waits_for_min_interval_then_goes_out_if_it_still_holds() {
        let s = settings();
        let host = "cpu 95% > 80% for 5m (needs 2m), but host guard: node pve1 memory would be 93% > 90%: blocked";
        let max = "cpu 95% > 80% for 5m (needs 2m), but already at max 8 vCPUs: blocked";
        let (_, state) = plan(
            &run(vec![], vec![blocked(101, host)]),
            &Notifications::default(),
            &s,
            0,
        );
        let (out, state) = plan(&run(vec![], vec![blocked(101, max)]), &state, &s, 600);
        assert!(!out.send, "within min_interval of the last blocked message");
        assert_eq!(out.suppressed, 1);
        let (out, _) = plan(&run(vec![], vec![blocked(101, max)]), &state, &s, 3600);
        assert_eq!(
            kinds(&out),
            vec![(EventKind::Blocked, Some(101))],
            "still pending"
        );
    }

    #[test]
    fn failure_then_recovery() {
        let s = settings();
        let (out, state) = plan(
            &run(vec![], vec![failed(None, "401")]),
            &Notifications::default(),
            &s,
            0,
        );
        assert_eq!(kinds(&out), vec![(EventKind::Failed, None)]);
        let (out, state) = plan(
            &run(vec![], vec![failed(None, "401 again")]),
            &state,
            &s,
            60,
        );
        assert!(!out.send, "told once");
        let (out, state) = plan(&run(vec![], vec![]), &state, &s, 120);
        assert_eq!(kinds(&out), vec![(EventKind::Recovered, None)]);
        assert_eq!(out.events[0].since, Some(0));
        assert_eq!(out.events[0].text, "401 again");
        assert!(state.conditions.is_empty());
    }

    #[test]
    fn a_failure_never_told_recovers_silently() {
        let s = settings();
        let (_, state) = plan(
            &run(vec![], vec![failed(Some(101), "a")]),
            &Notifications::default(),
            &s,
            0,
        );
        let (_, state) = plan(&run(vec![], vec![]), &state, &s, 60);
        // Fails again within min_interval: pending, not told...
        let (out, state) = plan(&run(vec![], vec![failed(Some(101), "b")]), &state, &s, 120);
        assert!(!out.send);
        // ...and clears: no recovery for a failure nobody heard of.
        let (out, state) = plan(&run(vec![], vec![]), &state, &s, 180);
        assert!(!out.send, "{out:?}");
        assert!(state.conditions.is_empty());
    }

    #[test]
    fn a_vm_condition_stays_while_its_cluster_cannot_be_read() {
        let s = settings();
        let (_, state) = plan(
            &run(vec![], vec![failed(Some(101), "x")]),
            &Notifications::default(),
            &s,
            0,
        );
        let mut down = run(vec![], vec![failed(None, "unreachable")]);
        down.clusters_read.clear();
        let (out, state) = plan(&down, &state, &s, 60);
        assert_eq!(kinds(&out), vec![(EventKind::Failed, None)]);
        assert!(state.conditions.contains_key("failed lab/101"));
        let (out, _) = plan(&run(vec![], vec![]), &state, &s, 120);
        assert_eq!(
            kinds(&out),
            vec![
                (EventKind::Recovered, None),
                (EventKind::Recovered, Some(101))
            ]
        );
    }

    #[test]
    fn the_hourly_cap_holds_back_and_the_next_message_says_so() {
        let mut s = settings();
        s.max_per_hour = 2;
        s.min_interval = 0;
        let mut state = Notifications::default();
        let mut sent = Vec::new();
        for minute in 0..5u64 {
            let (out, next) = plan(&run(vec![scaled(101)], vec![]), &state, &s, minute * 60);
            sent.push(out.send);
            state = next;
        }
        assert_eq!(sent, vec![true, true, false, false, false]);
        assert_eq!(state.held_back, 3);
        // An hour after the first message, one more may go; it carries the count.
        let (out, state) = plan(&run(vec![scaled(102)], vec![]), &state, &s, 3600);
        assert!(out.send);
        assert_eq!(out.held_back, 3);
        assert_eq!(state.held_back, 0);
    }

    #[test]
    fn a_condition_held_by_the_cap_goes_out_later() {
        let mut s = settings();
        s.max_per_hour = 1;
        let (_, state) = plan(
            &run(vec![scaled(101)], vec![]),
            &Notifications::default(),
            &s,
            0,
        );
        let (out, state) = plan(&run(vec![], vec![failed(Some(102), "x")]), &state, &s, 60);
        assert!(!out.send);
        assert_eq!(out.capped, 1);
        assert_eq!(
            state.held_back, 0,
            "a condition is not lost, so not counted"
        );
        let (out, _) = plan(&run(vec![], vec![failed(Some(102), "x")]), &state, &s, 3600);
        assert_eq!(kinds(&out), vec![(EventKind::Failed, Some(102))]);
    }

    #[test]
    fn the_event_filter_applies() {
        let mut s = settings();
        s.events = [EventKind::Failed].into();
        let (out, _) = plan(
            &run(vec![scaled(101)], vec![failed(Some(102), "x")]),
            &Notifications::default(),
            &s,
            0,
        );
        assert_eq!(kinds(&out), vec![(EventKind::Failed, Some(102))]);
    }

    #[test]
    fn conditions_of_a_cluster_no_longer_configured_are_forgotten() {
        let s = settings();
        let (_, state) = plan(
            &run(vec![], vec![failed(Some(101), "x")]),
            &Notifications::default(),
            &s,
            0,
        );
        let mut other = run(vec![], vec![]);
        other.clusters = ["other".to_string()].into();
        other.clusters_read = other.clusters.clone();
        let (out, state) = plan(&other, &state, &s, 60);
        assert!(!out.send);
        assert!(state.conditions.is_empty());
    }

    #[test]
    fn blocked_identity_is_what_blocks_at_which_size_and_not_a_backoff() {
        let guard = blocked_report(BlockedBy::HostGuard, "cpu 95.5% > 80%, but node pve1 …");
        let guard_later = blocked_report(BlockedBy::HostGuard, "cpu 99% > 80%, but node pve1 …");
        assert_eq!(
            blocked_identity(&guard, 4),
            blocked_identity(&guard_later, 4)
        );
        assert_ne!(blocked_identity(&guard, 4), blocked_identity(&guard, 6));
        let limit = blocked_report(BlockedBy::Limit, "already at max 8 vCPUs");
        assert_ne!(blocked_identity(&guard, 8), blocked_identity(&limit, 8));
        let backoff = blocked_report(BlockedBy::Backoff, "backing off");
        assert_eq!(blocked_identity(&backoff, 8), None);
    }
}
