//! The scaling decision: a pure function of policy, VM facts, utilisation, state and time.
//!
//! The parameter types below are shared with `config.rs` (which fills them from TOML);
//! their field names and meanings are a contract.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dimm;
use crate::state::{ConfigSignature, KnownConfig, ResourceState, VmState};

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
    pub host: HostGuard,
}

const MIB_PER_GIB: u64 = 1024;

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
                max_step_up: 2,
                max_step_down: 1,
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
            },
            memory_margin: 15.0,
            backoff: minute(60),
            host: HostGuard {
                max_memory: 90.0,
                max_cpu: 90.0,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The decision.
//
// `decide` is called once per VM and run with what `/cluster/resources` and the metrics tell
// (the envelope fields of `VmFacts` are then `None`: unknown, so neither blocking nor bounding),
// and once more, for the VMs about to change, with the facts read from the VM's config; the
// second decision is the one applied. Both calls with the same previous state and `now` give
// the same new state.
// ---------------------------------------------------------------------------------------------

/// Utilisation figures above this are out of range (unknown). Between 1 and this they count as
/// 1 (100 %): accounting jitter makes CPU slightly exceed 1, and a host-side memory estimate
/// includes QEMU's own overhead.
pub const MAX_PLAUSIBLE_UTILISATION: f64 = 1.5;

/// A breach (above `high` / below `low`) survives a gap between two known figures of at most
/// the policy window, and at least this long (a run every minute, with some jitter). After a
/// longer gap nobody watched, so the breach starts again.
pub const MIN_BREACH_GAP_SECS: u64 = 120;

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
}

impl VmFacts {
    /// A running VM with nothing known beyond its sizes.
    pub fn new(vmid: u32, node: impl Into<String>, vcpus: u32, memory_mib: u64) -> VmFacts {
        VmFacts {
            vmid,
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

    /// Fill the unknown envelope fields from what an earlier run learned (not the digest,
    /// which is only valid for the config it came with).
    pub fn fill_from(&mut self, known: &KnownConfig) {
        self.max_vcpus.get_or_insert(known.max_vcpus);
        self.cpu_hotplug.get_or_insert(known.cpu_hotplug);
        self.memory_hotplug.get_or_insert(known.memory_hotplug);
        self.numa.get_or_insert(known.numa);
        if self.balloon_mib.is_none() {
            self.balloon_mib = known.balloon_mib;
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl fmt::Display for BlockedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockedBy::Limit => "at the maximum",
            BlockedBy::Envelope => "at the envelope",
            BlockedBy::NotLiveScalable => "not live-scalable",
            BlockedBy::HostGuard => "host guard",
            BlockedBy::Backoff => "backing off",
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
}

impl ResourceDecision {
    fn new(resource: Resource, action: Action, reason: String) -> ResourceDecision {
        ResourceDecision {
            resource,
            action,
            reason,
            balloon_mib: None,
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

/// Decide what to do with one VM, and the VM's new state.
///
/// Pure: the same inputs give the same outputs. `prev` is `None` for a VM never seen before.
/// The new state always has `last_seen = now`; for skipped VMs (and disabled resources) the
/// rest of the state is kept as it was. The apply step then calls
/// [`VmState::record_change`] or [`VmState::record_refusal`] on the new state.
pub fn decide(
    policy: &Policy,
    facts: &VmFacts,
    util: &Utilisation,
    node: &NodeHeadroom,
    prev: Option<&VmState>,
    now: u64,
) -> (Decision, VmState) {
    let mut state = prev.cloned().unwrap_or_default();
    state.last_seen = now;
    if let Some(why) = skip_reason(facts) {
        let reason = format!("{why}: skipped");
        let decision = Decision {
            cpu: ResourceDecision::new(Resource::Cpu, Action::Skip, reason.clone()),
            memory: ResourceDecision::new(Resource::Memory, Action::Skip, reason),
        };
        return (decision, state);
    }
    let mut decide_one = |res: Resource| {
        let ctx = Ctx {
            policy,
            rp: policy.resource(res),
            res,
            facts,
            util,
            node,
            now,
        };
        decide_resource(&ctx, state.resource_mut(res))
    };
    let cpu = decide_one(Resource::Cpu);
    let memory = decide_one(Resource::Memory);
    (Decision { cpu, memory }, state)
}

/// Why a VM gets no decision at all.
fn skip_reason(facts: &VmFacts) -> Option<String> {
    if facts.template {
        return Some("VM is a template".into());
    }
    match facts.status {
        VmStatus::Running => {}
        VmStatus::Stopped => return Some("VM is stopped".into()),
        VmStatus::Paused => return Some("VM is paused".into()),
        VmStatus::Unknown => return Some("VM status is unknown".into()),
    }
    if let Some(lock) = &facts.lock {
        return Some(format!("VM is locked ({lock})"));
    }
    match &facts.pending {
        Some(keys) if !keys.is_empty() => Some(format!(
            "VM config has pending changes ({}) that are not pvescale's; apply or revert them",
            keys.join(", ")
        )),
        _ => None,
    }
}

/// Everything one resource's decision looks at.
struct Ctx<'a> {
    policy: &'a Policy,
    rp: &'a ResourcePolicy,
    res: Resource,
    facts: &'a VmFacts,
    util: &'a Utilisation,
    node: &'a NodeHeadroom,
    now: u64,
}

impl Ctx<'_> {
    fn name(&self) -> &'static str {
        self.res.name()
    }

    /// Current size (vCPUs or MiB).
    fn current(&self) -> u64 {
        match self.res {
            Resource::Cpu => u64::from(self.facts.vcpus),
            Resource::Memory => self.facts.memory_mib,
        }
    }

    /// The utilisation fraction (clamped to 1), or why it is unknown.
    fn reading(&self) -> Result<f64, String> {
        let (figure, samples) = match self.res {
            Resource::Cpu => (self.util.cpu, self.util.cpu_samples),
            Resource::Memory => (self.util.memory, self.util.memory_samples),
        };
        let Some(v) = figure else {
            return Err("no data".into());
        };
        if samples < self.policy.min_samples {
            return Err(format!(
                "no data ({samples} sample{}, need {})",
                if samples == 1 { "" } else { "s" },
                self.policy.min_samples
            ));
        }
        if !v.is_finite() || !(0.0..=MAX_PLAUSIBLE_UTILISATION).contains(&v) {
            return Err(format!("figure out of range ({v})"));
        }
        Ok(v.min(1.0))
    }

    /// The utilisation to size toward, as a fraction.
    fn target(&self) -> f64 {
        let pct = self.rp.target.unwrap_or((self.rp.low + self.rp.high) / 2.0);
        (pct / 100.0).clamp(0.01, 1.0)
    }

    fn make(&self, action: Action, reason: String) -> ResourceDecision {
        ResourceDecision::new(self.res, action, reason)
    }
}

fn decide_resource(ctx: &Ctx<'_>, rs: &mut ResourceState) -> ResourceDecision {
    let name = ctx.name();
    if !ctx.rp.enabled {
        return ctx.make(
            Action::Skip,
            format!("{name}: not managed (enabled = false): skipped"),
        );
    }

    // A back-off ends at its time, or as soon as the config is no longer the one refused.
    let signature = ctx.facts.signature();
    for direction in [Direction::Up, Direction::Down] {
        let slot = rs.backoff_mut(direction);
        if slot
            .as_ref()
            .is_some_and(|b| b.until <= ctx.now || !b.signature.same_config(&signature))
        {
            *slot = None;
        }
    }

    let frac = match ctx.reading() {
        Ok(frac) => frac,
        Err(why) => {
            // Unknown data: no action, and the breach starts again once data is back.
            rs.reset_breach();
            rs.observed_at = None;
            return ctx.make(Action::Keep, format!("{name}: {why}: keep"));
        }
    };
    let gap_limit = ctx.policy.window.as_secs().max(MIN_BREACH_GAP_SECS);
    if rs
        .observed_at
        .is_some_and(|t| ctx.now.saturating_sub(t) > gap_limit)
    {
        rs.reset_breach();
    }
    rs.observed_at = Some(ctx.now);

    let pct = frac * 100.0;
    let (low, high) = (ctx.rp.low, ctx.rp.high);
    if pct > high {
        scale_up(ctx, rs, frac)
    } else if pct < low {
        scale_down(ctx, rs, frac)
    } else {
        rs.reset_breach();
        ctx.make(
            Action::Keep,
            format!(
                "{name} {}% within {}-{}%: keep",
                round_pct(pct),
                num(low),
                num(high)
            ),
        )
    }
}

/// The checks between "the breach held long enough" and sizing, the same for both
/// directions: switched off, still waiting, cooldown, back-off, not live-scalable. `Ok` is
/// the reason's head (with what the breach needs) to go on with.
fn gate(
    ctx: &Ctx<'_>,
    rs: &ResourceState,
    direction: Direction,
    head: String,
    held: u64,
) -> Result<String, ResourceDecision> {
    let (name, rp, now) = (ctx.name(), ctx.rp, ctx.now);
    let (allowed, switch, needs, cooldown, what) = match direction {
        Direction::Up => (
            rp.scale_up,
            "scaling up is off (scale_up = false)",
            rp.up_after,
            rp.cooldown_up,
            "scale-up",
        ),
        Direction::Down => (
            rp.scale_down,
            "scaling down is off (scale_down = false)",
            rp.down_after,
            rp.cooldown_down,
            "scale-down",
        ),
    };
    let needs = needs.as_secs();
    if !allowed {
        return Err(ctx.make(Action::Keep, format!("{head}, but {switch}: keep")));
    }
    if held < needs {
        return Err(ctx.make(
            Action::Keep,
            format!("{head} (needs {}): waiting", fmt_duration(needs)),
        ));
    }
    let head = format!("{head} (needs {})", fmt_duration(needs));
    if let Some(left) = cooldown_left(rs, cooldown, now) {
        return Err(ctx.make(
            Action::Keep,
            format!(
                "{head}, but {name} cooldown: {} left after the last change: waiting",
                fmt_left(left)
            ),
        ));
    }
    if let Some(b) = backoff_in_force(ctx, rs, direction) {
        return Err(ctx.make(
            Action::Blocked(BlockedBy::Backoff),
            backoff_reason(&head, what, b, now),
        ));
    }
    if let Some(fix) = not_live_scalable(ctx) {
        return Err(ctx.make(
            Action::Blocked(BlockedBy::NotLiveScalable),
            format!("{head}, but {fix}"),
        ));
    }
    Ok(head)
}

fn scale_up(ctx: &Ctx<'_>, rs: &mut ResourceState, frac: f64) -> ResourceDecision {
    let (name, rp, now) = (ctx.name(), ctx.rp, ctx.now);
    rs.below_since = None;
    if ctx.res == Resource::Memory && ctx.util.memory_source != MemorySource::Guest {
        // A host-side figure counts what the guest ever touched (page cache included): it
        // sits near the allocation and follows every increase, so growing on it never ends.
        rs.above_since = None;
        return ctx.make(
            Action::Keep,
            format!(
                "{name} {} > {}%, but {}: not scaling up",
                pct_against(frac * 100.0, rp.high),
                num(rp.high),
                untrusted_memory_source(ctx.util.memory_source)
            ),
        );
    }
    let since = *rs.above_since.get_or_insert(now);
    let held = now.saturating_sub(since);
    let head = format!(
        "{name} {} > {}% for {}",
        pct_against(frac * 100.0, rp.high),
        num(rp.high),
        fmt_duration(held)
    );
    let head = match gate(ctx, rs, Direction::Up, head, held) {
        Ok(head) => head,
        Err(decision) => return decision,
    };
    let from = ctx.current();
    let sized = match ctx.res {
        Resource::Cpu => size_cpu_up(ctx, frac),
        Resource::Memory => size_memory_up(ctx, frac),
    };
    let to = match sized {
        Ok(to) => to,
        Err((by, why)) => {
            return ctx.make(Action::Blocked(by), format!("{head}, but {why}: blocked"));
        }
    };
    if let Some(why) = host_guard(ctx, from, to) {
        return ctx.make(
            Action::Blocked(BlockedBy::HostGuard),
            format!("{head}, but {why}: blocked"),
        );
    }
    ctx.make(
        Action::Up { from, to },
        format!("{head}: {}", fmt_change(ctx.res, from, to)),
    )
}

/// Why a memory figure that is not the guest's own is not acted on.
fn untrusted_memory_source(source: MemorySource) -> &'static str {
    match source {
        MemorySource::Host => "the memory figure is a host-side estimate (no balloon statistics)",
        _ => "the source of the memory figure is unknown (no balloon statistics known)",
    }
}

fn scale_down(ctx: &Ctx<'_>, rs: &mut ResourceState, frac: f64) -> ResourceDecision {
    let (name, rp, now) = (ctx.name(), ctx.rp, ctx.now);
    rs.above_since = None;
    let pct = pct_against(frac * 100.0, rp.low);
    if ctx.res == Resource::Memory && ctx.util.memory_source != MemorySource::Guest {
        // An untrusted figure must not start (or continue) a shrink.
        rs.below_since = None;
        return ctx.make(
            Action::Keep,
            format!(
                "{name} {pct} < {}%, but {}: not scaling down",
                num(rp.low),
                untrusted_memory_source(ctx.util.memory_source)
            ),
        );
    }
    let since = *rs.below_since.get_or_insert(now);
    let held = now.saturating_sub(since);
    let head = format!("{name} {pct} < {}% for {}", num(rp.low), fmt_duration(held));
    let head = match gate(ctx, rs, Direction::Down, head, held) {
        Ok(head) => head,
        Err(decision) => return decision,
    };
    let from = ctx.current();
    let sized = match ctx.res {
        Resource::Cpu => size_cpu_down(ctx, frac),
        Resource::Memory => size_memory_down(ctx, frac),
    };
    let to = match sized {
        Ok(to) => to,
        // Nothing to shrink is not a problem: keep.
        Err(why) => return ctx.make(Action::Keep, format!("{head}, but {why}: keep")),
    };
    let mut reason = format!("{head}: {}", fmt_change(ctx.res, from, to));
    let mut balloon_mib = None;
    if ctx.res == Resource::Memory
        && let Some(balloon) = ctx.facts.balloon_mib
        && balloon > to
    {
        // `balloon` must stay <= `memory`; 0 (no balloon device) is never above.
        balloon_mib = Some(to);
        reason.push_str(&format!(", balloon {balloon} → {to} MiB"));
    }
    ResourceDecision {
        resource: ctx.res,
        action: Action::Down { from, to },
        reason,
        balloon_mib,
    }
}

/// The back-off that blocks a change in `direction`, if any. Expired back-offs and those of
/// another config were already dropped. One recorded with a digest cannot be confirmed
/// before the config (and its digest) is read: like any unknown, that does not block, and the
/// second call, with the digest, decides.
fn backoff_in_force<'a>(
    ctx: &Ctx<'_>,
    rs: &'a ResourceState,
    direction: Direction,
) -> Option<&'a crate::state::Backoff> {
    rs.backoff(direction)
        .filter(|b| b.signature.digest.is_none() || ctx.facts.digest.is_some())
}

/// Seconds of cooldown left after the resource's last change, if any.
fn cooldown_left(rs: &ResourceState, cooldown: Duration, now: u64) -> Option<u64> {
    let change = rs.last_change.as_ref()?;
    let ends = change.at.saturating_add(cooldown.as_secs());
    (now < ends).then(|| ends - now)
}

fn backoff_reason(head: &str, what: &str, b: &crate::state::Backoff, now: u64) -> String {
    let message = b.message.lines().next().unwrap_or("").trim();
    format!(
        "{head}, but the last {what} was refused ({message}): backing off, {} left or until the config changes",
        fmt_left(b.until.saturating_sub(now))
    )
}

/// What keeps the resource from being changed live, with the fix; `None` when fine or unknown.
fn not_live_scalable(ctx: &Ctx<'_>) -> Option<String> {
    let f = ctx.facts;
    let hotplug_with = |add: Resource| {
        let mut list = vec!["network", "disk", "usb"];
        if f.cpu_hotplug == Some(true) || add == Resource::Cpu {
            list.push("cpu");
        }
        if f.memory_hotplug == Some(true) || add == Resource::Memory {
            list.push("memory");
        }
        list.join(",")
    };
    match ctx.res {
        Resource::Cpu if f.cpu_hotplug == Some(false) => Some(format!(
            "cpu hotplug is off: qm set {} --hotplug {}",
            f.vmid,
            hotplug_with(Resource::Cpu)
        )),
        Resource::Cpu => None,
        Resource::Memory if f.memory_hotplug == Some(false) => Some(format!(
            "memory hotplug is off: qm set {} --hotplug {}{} (then a cold restart)",
            f.vmid,
            hotplug_with(Resource::Memory),
            if f.numa == Some(true) {
                ""
            } else {
                " --numa 1"
            }
        )),
        Resource::Memory if f.numa == Some(false) => Some(format!(
            "memory hotplug needs numa: qm set {} --numa 1 (then a cold restart)",
            f.vmid
        )),
        Resource::Memory => None,
    }
}

/// `ceil(x)` as a size, tolerant of floating-point noise just above an integer.
fn ceil_units(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // `as` saturates on overflow.
        (x - 1e-9).ceil() as u64
    } else {
        0
    }
}

type Sized<E> = Result<u64, E>;

fn size_cpu_up(ctx: &Ctx<'_>, frac: f64) -> Sized<(BlockedBy, String)> {
    let c = ctx.current();
    let mut upper = ctx.rp.max;
    let mut by = BlockedBy::Limit;
    if let Some(envelope) = ctx.facts.max_vcpus.map(u64::from)
        && envelope < upper
    {
        upper = envelope;
        by = BlockedBy::Envelope;
    }
    if c >= upper {
        let why = match by {
            BlockedBy::Envelope => format!(
                "already at sockets × cores = {} (more needs more cores or sockets, then a cold restart)",
                fmt_size(Resource::Cpu, upper)
            ),
            _ => format!(
                "already at the maximum {} (policy max)",
                fmt_size(Resource::Cpu, upper)
            ),
        };
        return Err((by, why));
    }
    let wanted = ceil_units(frac * c as f64 / ctx.target());
    let step = ctx.rp.max_step_up.max(1);
    Ok(wanted.max(c + 1).min(c.saturating_add(step)).min(upper))
}

fn size_cpu_down(ctx: &Ctx<'_>, frac: f64) -> Sized<String> {
    let c = ctx.current();
    let lower = ctx.rp.min.max(1);
    if c <= lower {
        return Err(format!(
            "already at the minimum {}",
            fmt_size(Resource::Cpu, lower)
        ));
    }
    let wanted = ceil_units(frac * c as f64 / ctx.target());
    let step = ctx.rp.max_step_down.max(1);
    Ok(wanted.max(c.saturating_sub(step)).max(lower).min(c - 1))
}

/// Memory up: toward the target, at most `max_step_up` (but at least one DIMM), at most `max`,
/// rounded up to the DIMM grid (down where rounding up would break a bound).
fn size_memory_up(ctx: &Ctx<'_>, frac: f64) -> Sized<(BlockedBy, String)> {
    let c = ctx.current();
    // The live envelope: the grid, within the host's maximum for this VM where known.
    let envelope = match ctx.facts.host_max_memory_mib {
        Some(host_max) => dimm::round_down(host_max).unwrap_or(dimm::STATIC_MIB),
        None => dimm::max_on_grid(),
    };
    let (hard, by) = if ctx.rp.max < envelope {
        (dimm::round_down(ctx.rp.max), BlockedBy::Limit)
    } else {
        (Some(envelope), BlockedBy::Envelope)
    };
    let Some(hard) = hard else {
        return Err((
            BlockedBy::Limit,
            format!(
                "the maximum {} MiB is below the smallest hotplug size {} MiB",
                ctx.rp.max,
                dimm::STATIC_MIB
            ),
        ));
    };
    if c >= hard {
        let why = match by {
            BlockedBy::Envelope => match ctx.facts.host_max_memory_mib {
                Some(host_max) => format!(
                    "already at the largest hotpluggable size {hard} MiB within the host's \
                     maximum of {host_max} MiB for this VM"
                ),
                None => format!("already at the largest hotpluggable size {hard} MiB"),
            },
            _ => format!("already at the maximum {hard} MiB (policy max)"),
        };
        return Err((by, why));
    }
    let upper = c.saturating_add(ctx.rp.max_step_up.max(1)).min(hard);
    let wanted = ceil_units(frac * c as f64 / ctx.target());
    let t = wanted.max(c + 1).min(upper);
    let mut to = match dimm::round_up(t) {
        Some(up) if up <= upper => up,
        _ => dimm::round_down(t).unwrap_or(0),
    };
    if to <= c {
        // The step is smaller than the grid's spacing here: one DIMM is the least possible.
        to = dimm::next_above(c).filter(|&n| n <= hard).unwrap_or(c);
    }
    if to <= c {
        return Err((
            by,
            format!("no larger size on the DIMM grid within {hard} MiB"),
        ));
    }
    Ok(to)
}

/// Memory down: toward the target, at most `max_step_down` (but at least one DIMM), never
/// below `min` nor below what is in use plus the margin, rounded down to the DIMM grid (up where
/// rounding down would break a bound).
fn size_memory_down(ctx: &Ctx<'_>, frac: f64) -> Sized<String> {
    let c = ctx.current();
    let in_use = frac * c as f64;
    let margin = ctx.policy.memory_margin.max(0.0);
    let with_margin = ceil_units(in_use * (1.0 + margin / 100.0));
    let policy_floor = ctx.rp.min.max(dimm::STATIC_MIB);
    let Some(lower_hard) = dimm::round_up(policy_floor.max(with_margin)) else {
        return Err(format!(
            "in use + {}% margin is above the largest hotpluggable size",
            num(margin)
        ));
    };
    if c <= lower_hard {
        return Err(if with_margin > policy_floor {
            format!(
                "{} MiB in use + {}% margin needs {lower_hard} MiB",
                in_use.round(),
                num(margin)
            )
        } else {
            format!("already at the minimum {lower_hard} MiB")
        });
    }
    let lower = c
        .saturating_sub(ctx.rp.max_step_down.max(1))
        .max(lower_hard);
    let wanted = ceil_units(in_use / ctx.target());
    let t = wanted.max(lower).min(c - 1);
    let mut to = match dimm::round_down(t) {
        Some(down) if down >= lower => down,
        _ => dimm::round_up(t).unwrap_or(c),
    };
    if to >= c {
        // The step is smaller than the grid's spacing here: one DIMM is the least possible.
        to = dimm::next_below(c)
            .filter(|&n| n >= lower_hard)
            .unwrap_or(c);
    }
    if to >= c {
        return Err("no smaller size on the DIMM grid".into());
    }
    Ok(to)
}

/// Host guard for a scale-up from `from` to `to`: why it is blocked, if it is.
///
/// A guard that cannot see its node's figures blocks (the safe side): a missing node figure is
/// usually a node that did not answer this run, and the next run retries; if it is permanent
/// (no `Sys.Audit` on `/`), `status` shows this reason on every wanted scale-up. A guard set to
/// 100 % or more is off and needs no figures.
fn host_guard(ctx: &Ctx<'_>, from: u64, to: u64) -> Option<String> {
    let guard = &ctx.policy.host;
    let node = if ctx.node.name.is_empty() {
        ctx.facts.node.as_str()
    } else {
        ctx.node.name.as_str()
    };
    match ctx.node.cpu.filter(|c| c.is_finite() && *c >= 0.0) {
        Some(cpu) if cpu * 100.0 > guard.max_cpu => {
            return Some(format!(
                "node {node} cpu is at {} (max {}%)",
                pct_against(cpu * 100.0, guard.max_cpu),
                num(guard.max_cpu)
            ));
        }
        None if guard.max_cpu < 100.0 => {
            return Some(format!(
                "node {node}'s cpu load is unknown (the host guard needs it; Sys.Audit on /?)"
            ));
        }
        _ => {}
    }
    if ctx.res == Resource::Memory {
        match (ctx.node.mem_used_mib, ctx.node.mem_total_mib) {
            (Some(used), Some(total)) if total > 0 => {
                let delta = to.saturating_sub(from);
                let after = used.saturating_add(delta) as f64 / total as f64 * 100.0;
                if after > guard.max_memory {
                    return Some(format!(
                        "node {node} would reach {} memory with +{delta} MiB (max {}%)",
                        pct_against(after, guard.max_memory),
                        num(guard.max_memory)
                    ));
                }
            }
            _ if guard.max_memory < 100.0 => {
                return Some(format!(
                    "node {node}'s memory use is unknown (the host guard needs it; Sys.Audit on /?)"
                ));
            }
            _ => {}
        }
    }
    None
}

// --- formatting ------------------------------------------------------------------------------

/// A threshold as written in the config: `80`, or `80.5`.
fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn round_pct(v: f64) -> String {
    format!("{v:.0}")
}

/// A percentage compared with a threshold: whole percent, unless rounding would make it look
/// equal to the threshold (then one decimal: `80.4% > 80%`).
fn pct_against(v: f64, threshold: f64) -> String {
    let whole = format!("{v:.0}");
    if whole == num(threshold) && v != threshold {
        format!("{v:.1}%")
    } else {
        format!("{whole}%")
    }
}

/// `1 vCPU`, `4 vCPUs`, `4096 MiB`.
fn fmt_size(res: Resource, n: u64) -> String {
    match res {
        Resource::Cpu if n == 1 => "1 vCPU".into(),
        Resource::Cpu => format!("{n} vCPUs"),
        Resource::Memory => format!("{n} MiB"),
    }
}

/// `2 → 4 vCPUs`, `4096 → 6144 MiB`.
fn fmt_change(res: Resource, from: u64, to: u64) -> String {
    match res {
        Resource::Cpu if to == 1 => format!("{from} → 1 vCPU"),
        Resource::Cpu => format!("{from} → {to} vCPUs"),
        Resource::Memory => format!("{from} → {to} MiB"),
    }
}

/// An elapsed time, rounded down: `45s`, `4m`, `2h`, `1h05m`.
pub fn fmt_duration(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs % 3600 < 60 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// A time left, rounded up to the minute above one minute (never says `0m left`).
fn fmt_left(secs: u64) -> String {
    if secs <= 60 {
        fmt_duration(secs)
    } else {
        fmt_duration(secs.div_ceil(60) * 60)
    }
}

#[cfg(test)]
mod tests;
