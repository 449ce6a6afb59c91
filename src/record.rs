//! The typed record of a run (and of `status`): per cluster and VM, what was decided, why,
//! and what became of it. The engine produces it; the table, JSON, history, notifications
//! and the Prometheus file all render from these types, and none of them parses text the
//! engine wrote. The JSON shape is a contract (`--output json`), tested in this module.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::error::Exit;
use crate::guest::GuestKind;

use crate::policy::readiness::LiveScaling;
use crate::policy::{Action, BlockedBy, ByWindow, Resource, WindowInForce};

/// What was decided for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Keep,
    Up,
    Down,
    Blocked,
    Skip,
}

impl ActionKind {
    pub fn of(action: &Action) -> ActionKind {
        match action {
            Action::Keep => ActionKind::Keep,
            Action::Up { .. } => ActionKind::Up,
            Action::Down { .. } => ActionKind::Down,
            Action::Blocked(_) => ActionKind::Blocked,
            Action::Skip => ActionKind::Skip,
        }
    }

    pub fn is_change(self) -> bool {
        matches!(self, ActionKind::Up | ActionKind::Down)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::Keep => "keep",
            ActionKind::Up => "up",
            ActionKind::Down => "down",
            ActionKind::Blocked => "blocked",
            ActionKind::Skip => "skip",
        })
    }
}

/// What became of a change this run wrote. Serialised as one sentence (`applied`,
/// `refused by the VM: …`, …), as the JSON output has always had it.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Live now.
    Applied,
    /// The VM did not take it live; what was left pending was undone.
    Refused(String),
    /// Proxmox named the host's memory maximum for this VM: a limit, learned, not a failure.
    HostLimit { max_mib: u64 },
    /// Not applied for a reason that passes (the config changed meanwhile, a lock, ...).
    Skipped(String),
    /// The outcome is not known yet; the next run settles it.
    Unsettled(String),
    /// An error.
    Failed(String),
}

impl WriteOutcome {
    /// Whether it makes the VM failed for this run (exit 3, a `failed` notification).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            WriteOutcome::Refused(_) | WriteOutcome::Unsettled(_) | WriteOutcome::Failed(_)
        )
    }

    /// The history's class of the outcome.
    pub fn class(&self) -> &'static str {
        match self {
            WriteOutcome::Applied => "applied",
            WriteOutcome::Refused(_) => "refused",
            WriteOutcome::HostLimit { .. } => "blocked",
            WriteOutcome::Skipped(_) => "skipped",
            WriteOutcome::Unsettled(_) => "unsettled",
            WriteOutcome::Failed(_) => "failed",
        }
    }

    /// The detail beyond the class, for people.
    pub fn detail(&self) -> Option<String> {
        match self {
            WriteOutcome::Applied => None,
            WriteOutcome::Refused(why)
            | WriteOutcome::Skipped(why)
            | WriteOutcome::Unsettled(why)
            | WriteOutcome::Failed(why) => Some(why.clone()),
            WriteOutcome::HostLimit { max_mib } => Some(format!(
                "the host allows at most {max_mib} MiB for this VM (qemu-server max mem: \
                 2^(physical address bits − 21)); sizes stay within it from now on"
            )),
        }
    }
}

impl fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = match self {
            WriteOutcome::Applied => return f.write_str("applied"),
            WriteOutcome::Refused(_) => "refused by the VM",
            WriteOutcome::HostLimit { .. } => "blocked",
            WriteOutcome::Skipped(_) => "not applied",
            WriteOutcome::Unsettled(_) => "unsettled",
            WriteOutcome::Failed(_) => "failed",
        };
        write!(f, "{head}: {}", self.detail().unwrap_or_default())
    }
}

impl Serialize for WriteOutcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where a VM's memory figure comes from, as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemorySourceShown {
    /// The guest's own figure (balloon statistics).
    #[serde(rename = "guest")]
    Guest,
    /// Taken for the guest's own, not confirmed in this pass (its config was not read).
    #[serde(rename = "guest?")]
    GuestAssumed,
    /// A host-side estimate: never acted on.
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "unknown")]
    Unknown,
}

impl fmt::Display for MemorySourceShown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemorySourceShown::Guest => "guest",
            MemorySourceShown::GuestAssumed => "guest?",
            MemorySourceShown::Host => "host",
            MemorySourceShown::Unknown => "unknown",
        })
    }
}

/// One resource of one VM: the decision, and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceReport {
    pub action: ActionKind,
    /// What stands in the way, when `action` is `blocked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<BlockedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    pub reason: String,
    /// What became of the change (runs that write only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<WriteOutcome>,
    /// Cooldown or back-off still running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// What a schedule window did: the change it prevented, or the floor it set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<ByWindow>,
}

impl ResourceReport {
    pub fn is_change(&self) -> bool {
        self.action.is_change()
    }

    pub fn applied(&self) -> bool {
        self.outcome == Some(WriteOutcome::Applied)
    }

    /// A back-off after a refusal (told when it happened, not again as blocked).
    pub fn backing_off(&self) -> bool {
        self.blocked_by == Some(BlockedBy::Backoff)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmReport {
    pub cluster: String,
    pub node: String,
    pub vmid: u32,
    /// `vm` or `ct`.
    #[serde(rename = "type")]
    pub kind: GuestKind,
    pub name: String,
    pub status: String,
    pub vcpus: u64,
    /// sockets × cores, when the config was read (or remembered).
    pub max_vcpus: Option<u64>,
    pub memory_mib: u64,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub memory_source: MemorySourceShown,
    /// A container's own CPU and memory pressure (percent of time stalled), where read (a
    /// scale-up wanted, or `status` near the top).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_pressure_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_pressure_percent: Option<f64>,
    pub readiness: String,
    /// `readiness` in one word.
    pub live_scaling: LiveScaling,
    pub cpu: ResourceReport,
    pub memory: ResourceReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since the VM's newest metrics sample (running VMs on reachable nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_age_secs: Option<u64>,
    /// Things worth telling that are not a decision (an interrupted write settled, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The `[[schedule]]` windows in force for this VM.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowInForce>,
    pub failed: bool,
}

impl VmReport {
    pub fn resources(&self) -> [(Resource, &ResourceReport); 2] {
        [(Resource::Cpu, &self.cpu), (Resource::Memory, &self.memory)]
    }

    /// The size of a resource before this run's change: vCPUs or MiB.
    pub fn size(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Cpu => self.vcpus,
            Resource::Memory => self.memory_mib,
        }
    }

    pub fn resource(&self, resource: Resource) -> &ResourceReport {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
        }
    }

    pub fn changed(&self) -> bool {
        self.cpu.applied() || self.memory.applied()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterReport {
    pub name: String,
    /// Why the cluster could not be read at all (then `vms` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// This run did not act on the cluster: another node is its active scaler, or it has no
    /// quorum (then `vms` is empty and nothing was written for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<String>,
    /// Why this node acts, where it is one of the cluster's nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// Which metrics source was used, and why (for people).
    pub metrics_source: String,
    /// The same, typed (for the metrics file); absent where no metrics were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_source_used: Option<MetricsSourceUsed>,
    /// Nodes whose VMs `metrics/export` left out (the node serving the API could not ask
    /// them, or they run PVE older than 8.2.5); their VMs were read through `rrddata`.
    pub export_missing_nodes: Vec<String>,
    /// Sources read over a longer window than the policy's, because their points are too
    /// far apart for `min_samples` of them to fit.
    pub widened_windows: Vec<WidenedWindow>,
    pub warnings: Vec<String>,
    pub vms: Vec<VmReport>,
    /// API requests made and plaintext bytes received for this cluster.
    pub requests: u64,
    pub bytes_received: u64,
    /// The API's health as this run saw it: requests by outcome, their time, bytes.
    pub api: crate::pve::ApiStats,
}

/// Where a cluster's utilisation came from, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsSourceUsed {
    pub source: MetricsSourceKind,
    pub reason: MetricsSourceReason,
}

/// The source of the utilisation figures of a cluster's VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsSourceKind {
    /// One `cluster/metrics/export` call.
    Export,
    /// `rrddata` per VM (the fallback).
    Rrddata,
    /// Nothing read: no managed VM running.
    None,
}

/// Why that source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricsSourceReason {
    /// The export had every running VM.
    Complete,
    /// The export lacked some VMs (a node it could not ask): those were read through rrddata.
    GapsFilled,
    /// The export answered 501 (PVE older than 8.2.5).
    NotImplemented,
    /// The export was refused (403: the token lacks Sys.Audit on /).
    Refused,
    /// The export failed for a passing reason (500, timeout, ...).
    Failed,
    /// An earlier run found the export unavailable; it is probed again hourly.
    KnownUnavailable,
    /// No managed VM was running.
    NoRunningVm,
}

impl MetricsSourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsSourceKind::Export => "export",
            MetricsSourceKind::Rrddata => "rrddata",
            MetricsSourceKind::None => "none",
        }
    }
}

impl MetricsSourceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsSourceReason::Complete => "complete",
            MetricsSourceReason::GapsFilled => "gaps_filled",
            MetricsSourceReason::NotImplemented => "not_implemented",
            MetricsSourceReason::Refused => "refused",
            MetricsSourceReason::Failed => "failed",
            MetricsSourceReason::KnownUnavailable => "known_unavailable",
            MetricsSourceReason::NoRunningVm => "no_running_vm",
        }
    }
}

/// A source read over a longer window than the policy's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WidenedWindow {
    /// `metrics/export` or `rrddata`.
    pub source: String,
    /// The policy's window, seconds.
    pub from_secs: u64,
    /// The window read, seconds.
    pub to_secs: u64,
    /// Why, for people.
    pub reason: String,
}

impl ClusterReport {
    pub fn new(name: &str) -> ClusterReport {
        ClusterReport {
            name: name.to_string(),
            error: None,
            standby: None,
            active: None,
            metrics_source: String::new(),
            metrics_source_used: None,
            export_missing_nodes: Vec::new(),
            widened_windows: Vec::new(),
            warnings: Vec::new(),
            vms: Vec::new(),
            requests: 0,
            bytes_received: 0,
            api: crate::pve::ApiStats::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Summary {
    pub managed: usize,
    pub changed: usize,
    pub planned: usize,
    pub blocked: usize,
    pub failed: usize,
    pub failed_clusters: usize,
    /// Notification channels that failed (after their retry); they never fail the run.
    #[serde(skip_serializing_if = "is_zero")]
    pub notify_failed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub dry_run: bool,
    /// Unix time of the run.
    pub time: u64,
    pub summary: Summary,
    pub clusters: Vec<ClusterReport>,
    /// What the notifier sent (or, in a dry run, would have); absent without channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notify::NotifyReport>,
    /// Config writes the state holds as not settled after the run; absent when none.
    #[serde(skip_serializing_if = "UnsettledWrites::is_none")]
    pub unsettled_writes: UnsettledWrites,
}

/// Config writes whose outcome is not settled yet (the run was killed, or the task did not
/// finish in time): the next run settles them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnsettledWrites {
    pub count: usize,
    /// When the oldest of them was started (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_at: Option<u64>,
}

impl UnsettledWrites {
    /// From the start times of the writes not settled yet.
    pub fn from_times(times: &[u64]) -> UnsettledWrites {
        UnsettledWrites {
            count: times.len(),
            oldest_at: times.iter().copied().min(),
        }
    }

    pub fn is_none(&self) -> bool {
        self.count == 0
    }

    /// Seconds since the oldest was started, at `now`; 0 when there is none.
    pub fn oldest_age_secs(&self, now: u64) -> u64 {
        self.oldest_at.map_or(0, |at| now.saturating_sub(at))
    }
}

impl RunReport {
    pub fn new(dry_run: bool, time: u64, clusters: Vec<ClusterReport>) -> RunReport {
        let mut summary = Summary::default();
        for cluster in &clusters {
            if cluster.error.is_some() {
                summary.failed_clusters += 1;
            }
            for vm in &cluster.vms {
                summary.managed += 1;
                if vm.changed() {
                    summary.changed += 1;
                }
                if vm.cpu.is_change() || vm.memory.is_change() {
                    summary.planned += 1;
                }
                if vm.cpu.action == ActionKind::Blocked || vm.memory.action == ActionKind::Blocked {
                    summary.blocked += 1;
                }
                if vm.failed {
                    summary.failed += 1;
                }
            }
        }
        RunReport {
            dry_run,
            time,
            summary,
            clusters,
            notifications: None,
            unsettled_writes: UnsettledWrites::default(),
        }
    }

    /// Adds what the notifier did, and counts its failed channels in the summary.
    pub fn set_notifications(&mut self, notifications: crate::notify::NotifyReport) {
        self.summary.notify_failed = notifications.failed_channels();
        self.notifications = Some(notifications);
    }

    /// The run's exit code, by the one rule of [`Exit::of_outcome`].
    pub fn exit(&self) -> Exit {
        Exit::of_outcome(
            self.clusters.iter().map(|c| c.error.is_some()),
            self.summary.failed > 0,
        )
    }

    /// Every cluster was left to another node (or had no quorum): the run did nothing.
    pub fn all_standby(&self) -> bool {
        !self.clusters.is_empty() && self.clusters.iter().all(|c| c.standby.is_some())
    }

    /// Nothing changed, nothing failed: `-q` prints nothing.
    pub fn is_quiet(&self) -> bool {
        self.summary.changed == 0 && self.summary.failed == 0 && self.summary.failed_clusters == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_their_json_sentence_and_history_class() {
        let cases = [
            (WriteOutcome::Applied, "\"applied\"", "applied", None),
            (
                WriteOutcome::Refused("no".into()),
                "\"refused by the VM: no\"",
                "refused",
                Some("no"),
            ),
            (
                WriteOutcome::Failed("500".into()),
                "\"failed: 500\"",
                "failed",
                Some("500"),
            ),
            (
                WriteOutcome::Unsettled("task".into()),
                "\"unsettled: task\"",
                "unsettled",
                Some("task"),
            ),
            (
                WriteOutcome::Skipped("locked".into()),
                "\"not applied: locked\"",
                "skipped",
                Some("locked"),
            ),
        ];
        for (written, json, class, detail) in cases {
            assert_eq!(serde_json::to_string(&written).unwrap(), json);
            assert_eq!(written.class(), class);
            assert_eq!(written.detail().as_deref(), detail);
        }
        let limit = WriteOutcome::HostLimit { max_mib: 131072 };
        assert_eq!(limit.class(), "blocked");
        assert!(!limit.is_failure());
        assert!(
            limit
                .to_string()
                .starts_with("blocked: the host allows at most 131072 MiB")
        );
    }

    #[test]
    fn actions_and_memory_sources_keep_their_json_words() {
        let words: Vec<String> = [
            ActionKind::Keep,
            ActionKind::Up,
            ActionKind::Down,
            ActionKind::Blocked,
            ActionKind::Skip,
        ]
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
        assert_eq!(
            words,
            ["\"keep\"", "\"up\"", "\"down\"", "\"blocked\"", "\"skip\""]
        );
        let sources: Vec<String> = [
            MemorySourceShown::Guest,
            MemorySourceShown::GuestAssumed,
            MemorySourceShown::Host,
            MemorySourceShown::Unknown,
        ]
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
        assert_eq!(
            sources,
            ["\"guest\"", "\"guest?\"", "\"host\"", "\"unknown\""]
        );
        assert_eq!(
            serde_json::to_string(&BlockedBy::HostGuard).unwrap(),
            "\"host_guard\""
        );
    }
}
