//! The policy's vocabulary: its parameters (filled from the config), what is known about a
//! VM, utilisation, and the decision. Pure data; `config` fills the parameter types, and
//! their field names and meanings are a contract.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::format::fmt_size;
pub use crate::guest::GuestKind;
use crate::units::MIB_PER_GIB;

/// Which resource a rule or decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Memory,
}

/// Tunables of one resource. Sizes are vCPUs for CPU and MiB for memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePolicy {
    /// Manage this resource at all.
    pub enabled: bool,
    /// Allow growing.
    pub scale_up: bool,
    /// Allow shrinking.
    pub scale_down: bool,
    /// Utilisation (percent, 0-100) above which the resource is short.
    pub high: f64,
    /// Utilisation (percent) below which the resource is wasted. Always `< high`.
    pub low: f64,
    /// Utilisation (percent) to size toward; `None` = middle of `low..high`.
    pub target: Option<f64>,
    /// Smallest size pvescale will set (vCPUs or MiB).
    pub min: u64,
    /// Largest size pvescale will set (vCPUs or MiB).
    pub max: u64,
    /// Utilisation must stay above `high` this long before growing.
    pub up_after: Duration,
    /// Utilisation must stay below `low` this long before shrinking.
    pub down_after: Duration,
    /// No growth within this time after any change of this resource.
    pub cooldown_up: Duration,
    /// No shrink within this time after any change of this resource.
    pub cooldown_down: Duration,
    /// Largest single growth (vCPUs or MiB).
    pub max_step_up: u64,
    /// Largest single shrink (vCPUs or MiB).
    pub max_step_down: u64,
    /// A resource pinned at its size (utilisation at or above [`SATURATED`]) wants more by an
    /// unknown amount: it grows by this factor (then bounded by `max_step_up`, `max` and the
    /// live envelope) instead of toward `target`.
    pub saturated_factor: f64,
}

/// Guard on the VM's own node, applied to scale-ups only.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGuard {
    /// Block a memory scale-up that would take the node's used memory above this percent.
    pub max_memory: f64,
    /// Block any scale-up while the node's CPU is above this percent.
    pub max_cpu: f64,
}

/// The effective policy of one VM (defaults, then `[policy]`, then matching overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Length of the utilisation window averaged per run.
    pub window: Duration,
    /// Fewest samples in the window for the figure to count as known.
    pub min_samples: u32,
    pub cpu: ResourcePolicy,
    pub memory: ResourcePolicy,
    /// Memory never shrinks below what is in use plus this percent.
    pub memory_margin: f64,
    /// After a VM refused a change: no new attempt in that direction for this long.
    pub backoff: Duration,
    /// A running VM without a metrics sample for longer than this is a failure of the run:
    /// pvescale has gone blind for it.
    pub stale_after: Duration,
    pub host: HostGuard,
    /// The `[[schedule]]` windows in force for this VM at the run's time (none by default):
    /// filled per run by the caller, which knows the time zone.
    pub windows: Vec<WindowInForce>,
}

/// What a schedule window does while it is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WindowEffect {
    /// No change at all.
    Freeze,
    /// No scale-down; scale-ups go on.
    FreezeScaleDown,
    /// At least these sizes (vCPUs, MiB): smaller VMs are raised, shrinks stop there.
    Floor {
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        memory_mib: Option<u64>,
    },
}

impl WindowEffect {
    /// The floor this window sets for a resource, if any.
    pub fn floor(&self, resource: Resource) -> Option<u64> {
        match (self, resource) {
            (WindowEffect::Floor { cpu, .. }, Resource::Cpu) => *cpu,
            (WindowEffect::Floor { memory_mib, .. }, Resource::Memory) => *memory_mib,
            _ => None,
        }
    }
}

impl fmt::Display for WindowEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowEffect::Freeze => f.write_str("freeze"),
            WindowEffect::FreezeScaleDown => f.write_str("freeze scale-down"),
            WindowEffect::Floor { cpu, memory_mib } => {
                let sizes: Vec<String> = [
                    cpu.map(|c| fmt_size(Resource::Cpu, c)),
                    memory_mib.map(|m| fmt_size(Resource::Memory, m)),
                ]
                .into_iter()
                .flatten()
                .collect();
                write!(f, "floor {}", sizes.join(", "))
            }
        }
    }
}

/// A schedule window in force for a VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowInForce {
    /// The schedule's `name`, or its `when` where it has none.
    pub name: String,
    /// The weekly window in force, as written (`Sat 01:00..05:00`).
    pub when: String,
    pub effect: WindowEffect,
    /// When this occurrence ends (unix seconds)...
    pub until: u64,
    /// ... in local time, for people (`05:00`, `Mon 08:00`).
    pub until_local: String,
}

impl WindowInForce {
    /// `window "backup" (Sat 01:00..05:00)`, or `window Sat 01:00..05:00` without a name.
    pub fn label(&self) -> String {
        if self.name == self.when {
            format!("window {}", self.when)
        } else {
            format!("window \"{}\" ({})", self.name, self.when)
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        let minute = |m: u64| Duration::from_secs(m * 60);
        Policy {
            window: minute(5),
            min_samples: 3,
            cpu: ResourcePolicy {
                enabled: true,
                scale_up: true,
                scale_down: true,
                high: 80.0,
                low: 25.0,
                target: None,
                min: 1,
                max: 8,
                up_after: minute(2),
                down_after: minute(15),
                cooldown_up: minute(3),
                cooldown_down: minute(15),
                // Quick up (as Kubernetes' HPA): a VM pinned at 2 vCPUs goes to 6 at once;
                // idle vCPUs cost little, a starved VM costs latency.
                max_step_up: 4,
                max_step_down: 1,
                saturated_factor: 3.0,
            },
            memory: ResourcePolicy {
                enabled: true,
                scale_up: true,
                scale_down: true,
                high: 85.0,
                low: 40.0,
                target: None,
                min: MIB_PER_GIB,
                max: 16 * MIB_PER_GIB,
                up_after: minute(1),
                down_after: minute(30),
                cooldown_up: minute(3),
                cooldown_down: minute(30),
                max_step_up: 4 * MIB_PER_GIB,
                max_step_down: MIB_PER_GIB,
                // Memory is dearer than vCPUs: half again.
                saturated_factor: 1.5,
            },
            memory_margin: 15.0,
            backoff: minute(60),
            stale_after: minute(10),
            host: HostGuard {
                max_memory: 90.0,
                max_cpu: 90.0,
            },
            windows: Vec::new(),
        }
    }
}

impl Resource {
    /// `cpu` or `memory`, as in reasons and the config.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    /// Both resources, CPU first.
    pub const ALL: [Resource; 2] = [Resource::Cpu, Resource::Memory];
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Policy {
    /// The tunables of one resource.
    pub fn resource(&self, resource: Resource) -> &ResourcePolicy {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
        }
    }
}

/// Direction of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// Run state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmStatus {
    Running,
    Stopped,
    Paused,
    Unknown,
}

impl VmStatus {
    /// From the API's `status` (or `qmpstatus`) string.
    pub fn from_pve(status: &str) -> VmStatus {
        match status {
            "running" => VmStatus::Running,
            "stopped" => VmStatus::Stopped,
            "paused" | "suspended" | "prelaunch" | "suspending" => VmStatus::Paused,
            _ => VmStatus::Unknown,
        }
    }
}

/// Where the memory utilisation figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemorySource {
    /// The guest's balloon statistics: trusted both ways.
    Guest,
    /// A host-side estimate (no balloon statistics): never a reason to shrink.
    Host,
    /// Not known: treated like `Host`.
    Unknown,
}

/// What is known about a VM. The envelope fields (`max_vcpus` to `digest`) come from its config
/// and are `None` while it has not been read: unknown means neither blocking nor bounding.
#[derive(Debug, Clone, PartialEq)]
pub struct VmFacts {
    pub vmid: u32,
    /// VM or container: a container has no DIMM grid and no hotplug prerequisites.
    pub kind: GuestKind,
    pub node: String,
    pub status: VmStatus,
    /// `lock` of the VM (backup, migrate, snapshot, ...).
    pub lock: Option<String>,
    pub template: bool,
    /// Current vCPUs (`maxcpu` in `/cluster/resources`).
    pub vcpus: u32,
    /// Current memory in MiB (`maxmem`).
    pub memory_mib: u64,
    /// sockets × cores.
    pub max_vcpus: Option<u32>,
    /// `cpu` in `hotplug`.
    pub cpu_hotplug: Option<bool>,
    /// `memory` in `hotplug`.
    pub memory_hotplug: Option<bool>,
    /// `numa: 1`.
    pub numa: Option<bool>,
    /// `balloon` in MiB (0 = no balloon device); `None` when unknown or not set.
    pub balloon_mib: Option<u64>,
    /// Pending (not yet live) changes that are not pvescale's, as shown to a person (e.g.
    /// `apply::foreign_pending`); `None` when `pending` was not read. Any makes the VM skipped.
    pub pending: Option<Vec<String>>,
    /// The config's digest, when read.
    pub digest: Option<String>,
    /// The host's memory maximum for this VM (MiB), where known: Proxmox refuses more.
    pub host_max_memory_mib: Option<u64>,
    /// The `hotplug` list, when the config was read (for the exact fix).
    pub hotplug_features: Option<Vec<String>>,
    /// A Windows guest (`ostype`): it never gives vCPUs or memory back live.
    pub windows: Option<bool>,
    /// The QEMU guest agent is enabled in the config.
    pub guest_agent: Option<bool>,
    /// A container's own pressure (PVE 9 `status/current`), read where a scale-up is wanted.
    pub pressure: Option<Pressure>,
}

/// Stall figures of a container's own cgroup (pve-container `vmstatus` via pve-common
/// `read_cgroup_pressure`: the kernel's 10 s averages), as fractions of time (0..1). Unlike a
/// VM's, they show demand beyond the container's allocation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    /// Some task waited for CPU.
    pub cpu_some: Option<f64>,
    /// Some task waited for memory (reclaim, refaults).
    pub memory_some: Option<f64>,
}

impl VmFacts {
    /// A running VM with nothing known beyond its sizes.
    pub fn new(vmid: u32, node: impl Into<String>, vcpus: u32, memory_mib: u64) -> VmFacts {
        VmFacts {
            vmid,
            kind: GuestKind::Vm,
            node: node.into(),
            status: VmStatus::Running,
            lock: None,
            template: false,
            vcpus,
            memory_mib,
            max_vcpus: None,
            cpu_hotplug: None,
            memory_hotplug: None,
            numa: None,
            balloon_mib: None,
            pending: None,
            digest: None,
            host_max_memory_mib: None,
            pressure: None,
            hotplug_features: None,
            windows: None,
            guest_agent: None,
        }
    }

    /// What identifies this config for the back-off.
    pub fn signature(&self) -> ConfigSignature {
        ConfigSignature {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            digest: self.digest.clone(),
        }
    }
}

/// Utilisation at or above this (a fraction of the size) is a resource pinned at its size.
pub const SATURATED: f64 = 0.95;

/// The short view scale-ups look at: the average of the last minute's samples.
pub const SHORT_VIEW_SECS: u64 = 60;

/// After a change, samples of the new size count from this long after it (the guest brings
/// new vCPUs and memory online).
pub const SETTLE_SECS: u64 = 30;

/// One sample as the decision sees it: its own figure and the short view at it (the last
/// minute's average), both fractions of the current size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewPoint {
    pub t: u64,
    pub sample: f64,
    pub short: f64,
}

/// A resource's samples as the decision sees them (empty where the caller has no samples,
/// only a window figure: then each call is one observation at its `now`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleView {
    /// The samples newer than the last one observed, oldest first, from samples of the
    /// current size only.
    pub points: Vec<ViewPoint>,
    /// Seconds each sample covers (10 for `metrics/export`, 60 for `rrddata`).
    pub step_secs: u64,
}

/// Utilisation over the policy window.
#[derive(Debug, Clone, PartialEq)]
pub struct Utilisation {
    /// Average busy fraction of the current vCPUs (0..1).
    pub cpu: Option<f64>,
    /// Used / current memory (0..1).
    pub memory: Option<f64>,
    pub memory_source: MemorySource,
    /// CPU samples behind `cpu`.
    pub cpu_samples: u32,
    /// Memory samples behind `memory`.
    pub memory_samples: u32,
    /// The samples behind the figures, for breaches measured on their own timestamps.
    pub cpu_view: SampleView,
    pub memory_view: SampleView,
}

impl Utilisation {
    /// No figures at all.
    pub fn unknown() -> Utilisation {
        Utilisation {
            cpu: None,
            memory: None,
            memory_source: MemorySource::Unknown,
            cpu_samples: 0,
            memory_samples: 0,
            cpu_view: SampleView::default(),
            memory_view: SampleView::default(),
        }
    }
}

/// The VM's node, for the host guard. Unknown figures are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHeadroom {
    pub name: String,
    pub mem_used_mib: Option<u64>,
    pub mem_total_mib: Option<u64>,
    /// Busy fraction of the node's CPUs (0..1).
    pub cpu: Option<f64>,
}

impl NodeHeadroom {
    /// A node nothing is known about.
    pub fn unknown(name: impl Into<String>) -> NodeHeadroom {
        NodeHeadroom {
            name: name.into(),
            mem_used_mib: None,
            mem_total_mib: None,
            cpu: None,
        }
    }

    /// Count memory a scale-up just took, so that the next VM of this run on the same node
    /// is guarded against the node as it is now.
    pub fn reserve_memory(&mut self, mib: u64) {
        if let Some(used) = self.mem_used_mib.as_mut() {
            *used = used.saturating_add(mib);
        }
    }
}

/// Why a wanted change cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedBy {
    /// Already at the policy's `max`.
    Limit,
    /// Already at the live envelope (sockets × cores, the largest hotpluggable memory).
    Envelope,
    /// Hotplug is off, or memory hotplug lacks numa: the reason says what to change.
    NotLiveScalable,
    /// The node would exceed the host guard, or its figures are unknown.
    HostGuard,
    /// The VM refused a change in this direction recently.
    Backoff,
    /// A Windows guest: it takes vCPUs and memory live but never releases them.
    GrowOnly,
}

impl fmt::Display for BlockedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockedBy::Limit => "at the maximum",
            BlockedBy::Envelope => "at the envelope",
            BlockedBy::NotLiveScalable => "not live-scalable",
            BlockedBy::HostGuard => "host guard",
            BlockedBy::Backoff => "backing off",
            BlockedBy::GrowOnly => "grow only (Windows)",
        })
    }
}

/// What to do with one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do: inside the band, waiting for the hysteresis or a cooldown, no data, at
    /// the minimum, scaling in that direction disabled.
    Keep,
    /// Grow from `from` to `to` (vCPUs or MiB).
    Up { from: u64, to: u64 },
    /// Shrink from `from` to `to` (vCPUs or MiB).
    Down { from: u64, to: u64 },
    /// A change is wanted but cannot be made; the reason says why and what would help.
    Blocked(BlockedBy),
    /// Not managed: VM not running, a template, locked, with foreign pending changes, or the
    /// resource disabled. Its state is kept as it was.
    Skip,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Keep => f.write_str("keep"),
            Action::Up { from, to } => write!(f, "up {from} → {to}"),
            Action::Down { from, to } => write!(f, "down {from} → {to}"),
            Action::Blocked(by) => write!(f, "blocked ({by})"),
            Action::Skip => f.write_str("skip"),
        }
    }
}

/// The decision for one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDecision {
    pub resource: Resource,
    pub action: Action,
    /// One line for a person, starting with the resource name.
    pub reason: String,
    /// For a memory scale-down of a VM with a balloon above the new size: the new `balloon`
    /// (MiB), to send in the same request.
    pub balloon_mib: Option<u64>,
    /// What a schedule window did to this decision, if anything.
    pub by_window: Option<ByWindow>,
}

/// What a schedule window did to a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ByWindow {
    /// A freeze stopped this change.
    Prevented {
        window: String,
        direction: Direction,
        from: u64,
        to: u64,
    },
    /// A floor raised the resource, or stopped a shrink at it (vCPUs or MiB).
    Floor { window: String, floor: u64 },
}

impl ResourceDecision {
    pub(crate) fn new(resource: Resource, action: Action, reason: String) -> ResourceDecision {
        ResourceDecision {
            resource,
            action,
            reason,
            balloon_mib: None,
            by_window: None,
        }
    }

    /// The direction of the change, if this is one.
    pub fn direction(&self) -> Option<Direction> {
        match self.action {
            Action::Up { .. } => Some(Direction::Up),
            Action::Down { .. } => Some(Direction::Down),
            _ => None,
        }
    }

    /// `(from, to)` of the change, if this is one.
    pub fn change(&self) -> Option<(u64, u64)> {
        match self.action {
            Action::Up { from, to } | Action::Down { from, to } => Some((from, to)),
            _ => None,
        }
    }

    /// Whether this is a change to apply.
    pub fn is_change(&self) -> bool {
        self.change().is_some()
    }
}

/// The decision for one VM: one per resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub cpu: ResourceDecision,
    pub memory: ResourceDecision,
}

impl Decision {
    /// The decision for one resource.
    pub fn resource(&self, resource: Resource) -> &ResourceDecision {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
        }
    }

    /// The changes to apply (zero, one or two).
    pub fn changes(&self) -> impl Iterator<Item = &ResourceDecision> {
        [&self.cpu, &self.memory]
            .into_iter()
            .filter(|d| d.is_change())
    }

    /// Whether any resource is to change.
    pub fn has_change(&self) -> bool {
        self.changes().next().is_some()
    }
}

/// What identifies a VM's config for the back-off: a different signature clears it.
///
/// The sizes are known on every run (from `/cluster/resources`); the digest only when the run
/// read the config. Record the signature of the config as it is *after* the revert of a
/// refused change (re-read it), or with `digest: None`: a digest from before the revert would
/// differ from the next one and end the back-off at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSignature {
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl ConfigSignature {
    /// Whether `other` describes the same config: same sizes, and the same digest where both
    /// are known.
    pub fn same_config(&self, other: &ConfigSignature) -> bool {
        self.vcpus == other.vcpus
            && self.memory_mib == other.memory_mib
            && match (&self.digest, &other.digest) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}
