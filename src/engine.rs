//! One pass over one cluster: read (`cluster/resources`, metrics), decide (pure policy),
//! and, unless told not to, apply. Shared by `run`, `run --dry-run` and `status`.
//!
//! Cost is kept near the floor: one `cluster/resources` and one `metrics/export` call per
//! cluster; a VM's config and pending changes are read only when a change is planned (or
//! for `status`, which shows every VM's readiness).

use std::collections::HashMap;

use crate::apply::{self, ApplyTiming, Change, Outcome};
use crate::config::{ClusterConfig, Config};
use crate::metrics::{VmUsage, WindowAggregator, usage_from_rrd};
use crate::policy::{
    self, Action, Decision, Direction, MemorySource, NodeHeadroom, Policy, Resource, Utilisation,
    VmFacts, VmStatus,
};
use crate::pve::parallel::{DEFAULT_PARALLELISM, map_bounded};
use crate::pve::types::{
    Consolidation, NodeResource, PendingItem, Timeframe, VmConfig, VmResource,
};
use crate::pve::{ApiError, ApiErrorKind, Client};
use crate::report::{ClusterReport, ResourceReport, VmReport};
use crate::state::{ConfigSignature, InFlight, KnownConfig, State, VmState};

const MIB: u64 = 1024 * 1024;
/// How long what we learned from a VM's config is trusted without reading it again.
const KNOWN_CONFIG_TTL_SECS: u64 = 3600;

/// What a pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide and apply; the caller saves the state.
    Apply,
    /// Decide only (reads the config of VMs that would change); no write of any kind.
    DryRun,
    /// Decide only, and read every managed VM's config to show its readiness.
    Status,
}

impl Mode {
    fn writes(self) -> bool {
        self == Mode::Apply
    }
}

/// Saves the state in the middle of a pass (before config writes), so that a run killed
/// while writing leaves a record of what it was doing.
pub type Checkpoint<'a> = &'a mut dyn FnMut(&State) -> anyhow::Result<()>;

/// Runs one pass over one cluster, updating `state` (the caller saves it at the end). In
/// `Mode::Apply`, `checkpoint` is called once before the first config write.
#[allow(clippy::too_many_arguments)]
pub fn process_cluster(
    config: &Config,
    cluster: &ClusterConfig,
    client: &Client,
    state: &mut State,
    now: u64,
    mode: Mode,
    timing: ApplyTiming,
    checkpoint: Checkpoint,
) -> ClusterReport {
    let name = cluster.name().to_string();
    let mut report = ClusterReport::new(&name);
    let resources = match client.resources() {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e.to_string());
            report.metrics_source = "none (cluster/resources failed)".to_string();
            report.requests = client.stats().requests();
            report.bytes_received = client.stats().bytes_received();
            return report;
        }
    };
    let managed: Vec<&VmResource> = resources
        .vms
        .iter()
        .filter(|vm| config.manages(vm.vmid, &vm.tags, vm.pool.as_deref()))
        .collect();
    for vmid in config.selection().vmids() {
        if !resources.vms.iter().any(|vm| vm.vmid == *vmid) {
            report.warnings.push(format!(
                "VM {vmid} is selected by vmids but not visible: it does not exist, is a \
                 container, or the token lacks VM.Audit on /vms/{vmid}"
            ));
        }
    }
    let window = config.policy().window.as_secs();
    let start = now.saturating_sub(window);
    let export_unavailable_since = state.metrics_export_unavailable.get(&name).copied();
    let (usage, source, export) =
        read_usage(client, &managed, start, now, export_unavailable_since);
    report.metrics_source = source;
    match export {
        ExportAvailability::Available => {
            state.metrics_export_unavailable.remove(&name);
        }
        ExportAvailability::Unavailable(since) => {
            state.metrics_export_unavailable.insert(name.clone(), since);
        }
        ExportAvailability::Unknown => {}
    }
    let mut nodes: HashMap<String, NodeHeadroom> = resources
        .nodes
        .iter()
        .map(|n| (n.node.clone(), headroom(n)))
        .collect();
    let previous = state.clusters.get(&name).cloned().unwrap_or_default();
    // Nodes that do not answer: their VMs are reported and skipped, the rest goes on.
    let down: HashMap<&str, &str> = resources
        .nodes
        .iter()
        .filter(|n| n.status != "online")
        .map(|n| (n.node.as_str(), n.status.as_str()))
        .collect();
    for (node, status) in &down {
        let count = managed.iter().filter(|vm| vm.node == *node).count();
        if count > 0 {
            report.warnings.push(format!(
                "node {node} is {status}: its {count} managed VMs are skipped this run"
            ));
        }
    }

    // Phase 1: decide from what every run reads anyway.
    let mut plans: Vec<VmPlan> = managed
        .iter()
        .map(|vm| {
            let policy = config.policy_for(vm.vmid, &vm.tags, vm.pool.as_deref());
            let prev = previous.get(&vm.vmid);
            let known = prev
                .and_then(|s| s.known_config.as_ref())
                .filter(|k| is_fresh(k, vm, now));
            let facts = facts_from_resource(vm, known);
            let (source, _) = memory_source(vm, known);
            // Unknown source: assume the guest's figure so that a wanted scale-down leads to
            // reading the config, where the real source is learned (phase 2).
            let assumed = if source == MemorySource::Unknown {
                MemorySource::Guest
            } else {
                source
            };
            let util = utilisation(usage.get(&vm.vmid), &facts, assumed);
            let node = node_of(&nodes, &vm.node);
            let (mut decision, new_state) =
                policy::decide(&policy, &facts, &util, &node, prev, now);
            if let Some(status) = down.get(vm.node.as_str()) {
                decision = skip_all(
                    &decision,
                    &format!("node {} is {status} (unreachable): skipped", vm.node),
                );
            }
            VmPlan {
                resource: (*vm).clone(),
                policy,
                facts,
                util,
                decision,
                state: new_state,
                config: None,
                error: None,
                notes: Vec::new(),
                outcome: Vec::new(),
            }
        })
        .collect();

    // Phase 2: read config + pending where a change is planned, where an earlier write is
    // unsettled, and (for status) everywhere.
    let to_read: Vec<usize> = plans
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let unsettled = previous
                .get(&p.resource.vmid)
                .is_some_and(|s| s.in_flight.is_some());
            p.facts.status == VmStatus::Running
                && (mode == Mode::Status || p.decision.has_change() || unsettled)
        })
        .map(|(i, _)| i)
        .collect();
    let reads = map_bounded(&to_read, DEFAULT_PARALLELISM, |&i| {
        // The memory source matters only where memory may change: learn it there (an
        // extra status call, cached for an hour).
        let plan = &plans[i];
        let (low, high) = (
            plan.policy.memory.low / 100.0,
            plan.policy.memory.high / 100.0,
        );
        let need_source =
            mode == Mode::Status || plan.util.memory.is_some_and(|m| m < low || m > high);
        let cached = previous
            .get(&plan.resource.vmid)
            .and_then(|s| s.known_config.as_ref())
            .map(|k| k.memory_source);
        read_vm(client, &plan.resource, need_source, cached)
    });
    for (&i, read) in to_read.iter().zip(reads) {
        let plan = &mut plans[i];
        let mut read = match read {
            Ok(read) => read,
            Err(e) => {
                plan.error = Some(format!("reading the VM's config failed: {e}"));
                // Without the config nothing is changed; keep the timers of phase 1.
                plan.decision = no_change(&plan.decision, "config could not be read: keep");
                continue;
            }
        };
        let mut prev = previous.get(&plan.resource.vmid).cloned();
        if let Some(prev) = prev.as_mut() {
            settle_interrupted_write(client, plan, prev, &mut read, mode, now);
        }
        let mut facts = facts_from_config(&plan.resource, &read.config, &read.pending);
        if facts.balloon_mib.is_none() {
            facts.balloon_mib = read.config.balloon;
        }
        let known = KnownConfig {
            max_vcpus: facts.max_vcpus.unwrap_or(facts.vcpus),
            cpu_hotplug: facts.cpu_hotplug.unwrap_or(false),
            memory_hotplug: facts.memory_hotplug.unwrap_or(false),
            numa: facts.numa.unwrap_or(false),
            balloon_mib: facts.balloon_mib,
            memory_source: read.memory_source,
            digest: read.config.digest.clone(),
            learned_at: now,
        };
        let util = utilisation(usage.get(&plan.resource.vmid), &facts, read.memory_source);
        let node = node_of(&nodes, &plan.resource.node);
        let (decision, mut new_state) =
            policy::decide(&plan.policy, &facts, &util, &node, prev.as_ref(), now);
        new_state.known_config = Some(known);
        // The host guard of the next VM on this node counts what this one takes.
        if let Action::Up { from, to } = decision.memory.action
            && let Some(node) = nodes.get_mut(&plan.resource.node)
        {
            node.reserve_memory(to.saturating_sub(from));
        }
        plan.facts = facts;
        plan.util = util;
        plan.decision = decision;
        plan.state = new_state;
        plan.config = Some(read.config);
    }

    // Phase 3: apply, after recording what is about to be written.
    if mode.writes() {
        let to_apply: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.decision.has_change() && p.config.is_some())
            .map(|(i, _)| i)
            .collect();
        if !to_apply.is_empty() {
            for &i in &to_apply {
                let plan = &mut plans[i];
                let change = change_of(&plan.decision);
                plan.state.in_flight = Some(InFlight {
                    at: now,
                    vcpus: change.vcpus,
                    memory_mib: change.memory_mib,
                    balloon_mib: change.balloon_mib,
                    vcpus_before: u64::from(plan.facts.vcpus),
                    memory_mib_before: plan.facts.memory_mib,
                });
            }
            store_states(state, &name, &plans);
            if let Err(e) = checkpoint(state) {
                // Without a record of the write, a crash could leave it unsettled: don't write.
                report.error = Some(format!(
                    "cannot save the state before writing ({e:#}); no VM was changed"
                ));
                for &i in &to_apply {
                    plans[i].state.in_flight = None;
                    plans[i].decision = no_change(&plans[i].decision, "state not writable: keep");
                }
            } else {
                let outcomes = map_bounded(&to_apply, DEFAULT_PARALLELISM, |&i| {
                    let plan = &plans[i];
                    let change = change_of(&plan.decision);
                    let config = plan.config.clone().unwrap_or_default();
                    apply::apply(
                        client,
                        &plan.resource.node,
                        plan.resource.vmid,
                        &config,
                        &change,
                        timing,
                    )
                });
                for (&i, outcome) in to_apply.iter().zip(outcomes) {
                    record_outcome(&mut plans[i], outcome, now);
                }
            }
        }
    }

    store_states(state, &name, &plans);
    let cluster_state = state.clusters.entry(name.clone()).or_default();
    // Remember every VM seen (whatever its status) so that pruning only drops gone VMs.
    for vm in &resources.vms {
        if let Some(entry) = cluster_state.get_mut(&vm.vmid) {
            entry.last_seen = now;
        }
    }
    for plan in &plans {
        report.vms.push(vm_report(&name, plan, now, mode));
    }
    report.requests = client.stats().requests();
    report.bytes_received = client.stats().bytes_received();
    report
}

/// Writes the plans' VM states into the state.
fn store_states(state: &mut State, cluster: &str, plans: &[VmPlan]) {
    let cluster_state = state.clusters.entry(cluster.to_string()).or_default();
    for plan in plans {
        if plan.state != VmState::default() {
            cluster_state.insert(plan.resource.vmid, plan.state.clone());
        }
    }
}

/// An earlier run started a write and did not see it end (killed, or the task outlived
/// its wait). What went live is recorded as a change; what was left pending is reverted,
/// so that nothing of ours waits for the VM's next reboot.
fn settle_interrupted_write(
    client: &Client,
    plan: &mut VmPlan,
    prev: &mut VmState,
    read: &mut VmRead,
    mode: Mode,
    now: u64,
) {
    let Some(in_flight) = prev.in_flight.clone() else {
        return;
    };
    let vmid = plan.resource.vmid;
    let stuck: Vec<&str> = in_flight
        .keys()
        .into_iter()
        .filter(|key| read.pending.iter().any(|p| p.key == *key && p.is_pending()))
        .collect();
    if !stuck.is_empty() {
        if mode.writes() {
            match client.vm_revert(&plan.resource.node, vmid, &stuck, None) {
                Ok(()) => {
                    plan.notes.push(format!(
                        "reverted {} left pending by an interrupted earlier write",
                        stuck.join(", ")
                    ));
                    read.pending.retain(|p| !stuck.contains(&p.key.as_str()));
                    // The revert changed the digest: a write in this run needs the new one.
                    match client.vm_config_current(&plan.resource.node, vmid) {
                        Ok(config) => read.config = config,
                        Err(e) => {
                            plan.error = Some(format!("re-reading the config failed: {e}"));
                            return;
                        }
                    }
                }
                Err(e) => {
                    plan.error = Some(format!(
                        "could not revert {} left pending by an earlier write: {e}",
                        stuck.join(", ")
                    ));
                    return;
                }
            }
        } else {
            plan.notes.push(format!(
                "{} left pending by an interrupted earlier write: the next run reverts it",
                stuck.join(", ")
            ));
            // Ours, not someone else's: don't let it block the plan.
            read.pending.retain(|p| !stuck.contains(&p.key.as_str()));
        }
    }
    let went_live = [
        (
            Resource::Cpu,
            in_flight.vcpus,
            in_flight.vcpus_before,
            read.config.vcpus(),
        ),
        (
            Resource::Memory,
            in_flight.memory_mib,
            in_flight.memory_mib_before,
            read.config.memory.unwrap_or(in_flight.memory_mib_before),
        ),
    ];
    for (resource, target, before, now_value) in went_live {
        if target.is_some() && now_value != before {
            let direction = if now_value > before {
                Direction::Up
            } else {
                Direction::Down
            };
            prev.record_change(resource, direction, before, now_value, in_flight.at);
            plan.notes.push(format!(
                "an interrupted earlier write did go live: {resource} {before} → {now_value}"
            ));
        }
    }
    // A key that stayed pending was not taken live: back off as after any refusal.
    for (resource, key, target, before) in [
        (
            Resource::Cpu,
            "vcpus",
            in_flight.vcpus,
            in_flight.vcpus_before,
        ),
        (
            Resource::Memory,
            "memory",
            in_flight.memory_mib,
            in_flight.memory_mib_before,
        ),
    ] {
        let Some(target) = target else { continue };
        if stuck.contains(&key) && target != before {
            let direction = if target > before {
                Direction::Up
            } else {
                Direction::Down
            };
            let signature = ConfigSignature {
                vcpus: u32::try_from(read.config.vcpus()).unwrap_or(u32::MAX),
                memory_mib: read.config.memory.unwrap_or(before),
                digest: None,
            };
            prev.record_refusal(
                resource,
                direction,
                now,
                plan.policy.backoff,
                signature,
                format!("{key} stayed pending after an interrupted write (not applied live)"),
            );
        }
    }
    if mode.writes() {
        prev.in_flight = None;
    }
}

/// Everything known and decided about one VM in this pass.
struct VmPlan {
    resource: VmResource,
    policy: Policy,
    facts: VmFacts,
    util: Utilisation,
    decision: Decision,
    state: VmState,
    config: Option<VmConfig>,
    error: Option<String>,
    /// Things worth telling that are not a decision (an earlier write settled, ...).
    notes: Vec<String>,
    /// Per resource: what happened to its change.
    outcome: Vec<(Resource, String, bool)>,
}

struct VmRead {
    config: VmConfig,
    pending: Vec<PendingItem>,
    memory_source: MemorySource,
}

fn read_vm(
    client: &Client,
    vm: &VmResource,
    need_memory_source: bool,
    cached_source: Option<MemorySource>,
) -> Result<VmRead, ApiError> {
    let config = client.vm_config_current(&vm.node, vm.vmid)?;
    let pending = client.vm_pending(&vm.node, vm.vmid)?;
    let learned = match cached_source {
        // A source learned earlier stays valid while the balloon device does.
        Some(source) if source != MemorySource::Unknown && config.balloon != Some(0) => source,
        _ => learn_memory_source(client, vm, &config, need_memory_source),
    };
    let memory_source = learned;
    Ok(VmRead {
        config,
        pending,
        memory_source,
    })
}

/// Where the VM's memory figure comes from. No balloon device: host-side for sure. PVE 9
/// tells by `memhost`. Otherwise ask the runtime status whether the guest reports balloon
/// statistics, but only when it matters (a scale-down is considered, or `status`).
fn learn_memory_source(
    client: &Client,
    vm: &VmResource,
    config: &VmConfig,
    ask: bool,
) -> MemorySource {
    if config.balloon == Some(0) {
        return MemorySource::Host;
    }
    let (source, _) = memory_source(vm, None);
    if source != MemorySource::Unknown || !ask {
        return source;
    }
    match client.vm_status_current(&vm.node, vm.vmid) {
        Ok(status) if status.has_guest_memory_stats() => MemorySource::Guest,
        Ok(_) => MemorySource::Host,
        Err(e) => {
            log::debug!("VM {}: status/current failed: {e}", vm.vmid);
            MemorySource::Unknown
        }
    }
}

/// The memory source as far as the cheap reads tell: PVE 9's `memhost` differs from `mem`
/// exactly when `mem` comes from the guest; else what an earlier run learned.
fn memory_source(vm: &VmResource, known: Option<&KnownConfig>) -> (MemorySource, bool) {
    if let (Some(mem), Some(memhost)) = (vm.mem, vm.memhost) {
        let source = if mem != memhost {
            MemorySource::Guest
        } else {
            MemorySource::Host
        };
        return (source, true);
    }
    match known {
        Some(k) => (k.memory_source, true),
        None => (MemorySource::Unknown, false),
    }
}

/// A cached config is trusted for an hour, and not across a restart of the VM (hotplug and
/// NUMA changes only take effect at a cold start).
fn is_fresh(known: &KnownConfig, vm: &VmResource, now: u64) -> bool {
    let age = now.saturating_sub(known.learned_at);
    let restarted = vm.uptime.is_some_and(|up| up < age);
    // Spread the expiry over 15 minutes by VMID, so that a large cluster does not re-read
    // every config in the same run.
    let ttl = KNOWN_CONFIG_TTL_SECS + u64::from(vm.vmid.wrapping_mul(2_654_435_761) % 900);
    age < ttl && !restarted
}

fn facts_from_resource(vm: &VmResource, known: Option<&KnownConfig>) -> VmFacts {
    let vcpus = vm.maxcpu.map(|c| c.round() as u32).unwrap_or(0);
    let memory_mib = vm.maxmem.map(|b| b / MIB).unwrap_or(0);
    let mut facts = VmFacts::new(vm.vmid, vm.node.clone(), vcpus, memory_mib);
    facts.status = VmStatus::from_pve(vm.status.as_str());
    facts.lock = vm.lock.clone();
    facts.template = vm.template;
    if let Some(known) = known {
        facts.fill_from(known);
    }
    facts
}

fn facts_from_config(vm: &VmResource, config: &VmConfig, pending: &[PendingItem]) -> VmFacts {
    let vcpus = u32::try_from(config.vcpus()).unwrap_or(u32::MAX);
    let memory_mib = config
        .memory
        .unwrap_or_else(|| vm.maxmem.map(|b| b / MIB).unwrap_or(0));
    let mut facts = VmFacts::new(vm.vmid, vm.node.clone(), vcpus, memory_mib);
    facts.status = VmStatus::from_pve(vm.status.as_str());
    facts.lock = config.lock.clone().or_else(|| vm.lock.clone());
    facts.template = config.template || vm.template;
    facts.max_vcpus = Some(u32::try_from(config.max_vcpus()).unwrap_or(u32::MAX));
    facts.cpu_hotplug = Some(config.cpu_hotplug());
    facts.memory_hotplug = Some(config.memory_hotplug());
    facts.numa = Some(config.numa);
    facts.balloon_mib = config.balloon;
    facts.pending = Some(apply::foreign_pending(pending));
    facts.digest = Some(config.digest.clone());
    facts
}

fn utilisation(usage: Option<&VmUsage>, facts: &VmFacts, source: MemorySource) -> Utilisation {
    let Some(usage) = usage else {
        return Utilisation {
            memory_source: source,
            ..Utilisation::unknown()
        };
    };
    Utilisation {
        cpu: usage.cpu_fraction(u64::from(facts.vcpus)),
        memory: usage.memory_fraction(facts.memory_mib),
        memory_source: source,
        cpu_samples: usage.cpu_samples,
        memory_samples: usage.mem_samples,
    }
}

fn headroom(node: &NodeResource) -> NodeHeadroom {
    NodeHeadroom {
        name: node.node.clone(),
        mem_used_mib: node.mem.map(|b| b / MIB),
        mem_total_mib: node.maxmem.map(|b| b / MIB),
        cpu: node.cpu,
    }
}

fn node_of(nodes: &HashMap<String, NodeHeadroom>, name: &str) -> NodeHeadroom {
    nodes
        .get(name)
        .cloned()
        .unwrap_or_else(|| NodeHeadroom::unknown(name))
}

/// How long a cluster without `metrics/export` goes before the export is probed again.
const EXPORT_REPROBE_SECS: u64 = 3600;

/// What this run learned about the cluster's `metrics/export`.
enum ExportAvailability {
    Available,
    /// Not there (501) or refused (403), since this time.
    Unavailable(u64),
    /// Not asked, or failed for a passing reason.
    Unknown,
}

/// Window usage of the managed VMs: one `metrics/export` call, else `rrddata` per VM (and
/// straight to `rrddata`, without asking, while the export is known to be unavailable).
/// Returns the usage, a sentence saying which source was used and why, and what was learned.
fn read_usage(
    client: &Client,
    managed: &[&VmResource],
    start: u64,
    now: u64,
    export_unavailable_since: Option<u64>,
) -> (HashMap<u32, VmUsage>, String, ExportAvailability) {
    let running: Vec<&VmResource> = managed
        .iter()
        .copied()
        .filter(|vm| vm.status == crate::pve::types::VmStatus::Running)
        .collect();
    if running.is_empty() {
        return (
            HashMap::new(),
            "none needed (no managed VM running)".to_string(),
            ExportAvailability::Unknown,
        );
    }
    let skip_export =
        export_unavailable_since.filter(|since| now.saturating_sub(*since) < EXPORT_REPROBE_SECS);
    let (fallback_reason, availability) = if let Some(since) = skip_export {
        (
            "metrics/export unavailable on this cluster (checked again hourly)".to_string(),
            ExportAvailability::Unavailable(since),
        )
    } else {
        let mut aggregator = WindowAggregator::new(start, now, running.iter().map(|vm| vm.vmid));
        match client.metrics_export(start, |sample| aggregator.add(&sample)) {
            Ok(count) => {
                return (
                    aggregator.finish(),
                    format!("metrics/export ({count} samples)"),
                    ExportAvailability::Available,
                );
            }
            Err(e) => match e.kind {
                ApiErrorKind::NotImplemented => (
                    "metrics/export not available (PVE older than 8.3)".to_string(),
                    ExportAvailability::Unavailable(now),
                ),
                ApiErrorKind::Permission => (
                    "metrics/export refused (the token lacks Sys.Audit on /)".to_string(),
                    ExportAvailability::Unavailable(now),
                ),
                _ => (
                    format!("metrics/export failed ({e})"),
                    ExportAvailability::Unknown,
                ),
            },
        }
    };
    log::info!(
        "cluster {}: {fallback_reason}: reading rrddata of {} VMs instead",
        client.cluster(),
        running.len()
    );
    let results = map_bounded(&running, DEFAULT_PARALLELISM, |vm| {
        client
            .rrddata(&vm.node, vm.vmid, Timeframe::Hour, Consolidation::Average)
            .map(|points| usage_from_rrd(&points, start, now))
    });
    let mut usage = HashMap::new();
    for (vm, result) in running.iter().zip(results) {
        match result {
            Ok(u) => {
                usage.insert(vm.vmid, u);
            }
            Err(e) => log::warn!("VM {}: rrddata failed: {e}", vm.vmid),
        }
    }
    (
        usage,
        format!("rrddata per VM ({fallback_reason})"),
        availability,
    )
}

/// The same decision with both resources skipped for `why`.
fn skip_all(decision: &Decision, why: &str) -> Decision {
    let mut decision = decision.clone();
    for rd in [&mut decision.cpu, &mut decision.memory] {
        rd.action = Action::Skip;
        rd.reason = why.to_string();
        rd.balloon_mib = None;
    }
    decision
}

/// The same decision with every change turned into keep (the reason says why).
fn no_change(decision: &Decision, why: &str) -> Decision {
    let mut decision = decision.clone();
    for rd in [&mut decision.cpu, &mut decision.memory] {
        if rd.is_change() {
            rd.action = Action::Keep;
            rd.reason = format!("{}: {why}", rd.resource);
            rd.balloon_mib = None;
        }
    }
    decision
}

fn change_of(decision: &Decision) -> Change {
    Change {
        vcpus: decision.cpu.change().map(|(_, to)| to),
        memory_mib: decision.memory.change().map(|(_, to)| to),
        balloon_mib: decision.memory.change().and(decision.memory.balloon_mib),
    }
}

fn key_of(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "vcpus",
        Resource::Memory => "memory",
    }
}

/// Writes what happened into the VM's state and report.
fn record_outcome(plan: &mut VmPlan, outcome: Outcome, now: u64) {
    // Settled one way or another, except a task still running: the next run settles that.
    if !matches!(outcome, Outcome::Unsettled(_)) {
        plan.state.in_flight = None;
    }
    let changes: Vec<(Resource, Direction, u64, u64)> = plan
        .decision
        .changes()
        .filter_map(|d| {
            let (from, to) = d.change()?;
            Some((d.resource, d.direction()?, from, to))
        })
        .collect();
    for (resource, direction, from, to) in changes {
        let (text, failed) = match &outcome {
            Outcome::Applied => {
                plan.state.record_change(resource, direction, from, to, now);
                ("applied".to_string(), false)
            }
            Outcome::Refused { keys, message } => {
                let refused = keys.iter().any(|k| k == key_of(resource))
                    || (resource == Resource::Memory && keys.iter().any(|k| k == "balloon"));
                if refused {
                    // The signature of the config after the revert: the sizes the VM has
                    // now, no digest (the revert changed it).
                    let signature = ConfigSignature {
                        vcpus: plan.facts.vcpus,
                        memory_mib: plan.facts.memory_mib,
                        digest: None,
                    };
                    plan.state.record_refusal(
                        resource,
                        direction,
                        now,
                        plan.policy.backoff,
                        signature,
                        message.clone(),
                    );
                    (format!("refused by the VM: {message}"), true)
                } else {
                    plan.state.record_change(resource, direction, from, to, now);
                    ("applied".to_string(), false)
                }
            }
            Outcome::Skipped(why) => (format!("not applied: {why}"), false),
            Outcome::Unsettled(why) => {
                plan.state.record_error(resource, now, why.clone());
                (format!("unsettled: {why}"), true)
            }
            Outcome::Failed(why) => {
                plan.state.record_error(resource, now, why.clone());
                (format!("failed: {why}"), true)
            }
        };
        plan.outcome.push((resource, text, failed));
    }
}

fn vm_report(cluster: &str, plan: &VmPlan, now: u64, mode: Mode) -> VmReport {
    let resource_report = |resource: Resource| {
        let decision = plan.decision.resource(resource);
        let (from, to) = decision
            .change()
            .map_or((None, None), |(f, t)| (Some(f), Some(t)));
        let outcome = plan
            .outcome
            .iter()
            .find(|(r, _, _)| *r == resource)
            .map(|(_, text, _)| text.clone());
        ResourceReport {
            action: action_word(&decision.action).to_string(),
            from,
            to,
            reason: decision.reason.clone(),
            outcome,
            wait: wait_left(plan, resource, now),
        }
    };
    let failed = plan.error.is_some() || plan.outcome.iter().any(|(_, _, failed)| *failed);
    VmReport {
        cluster: cluster.to_string(),
        node: plan.resource.node.clone(),
        vmid: plan.resource.vmid,
        name: plan.resource.name.clone().unwrap_or_default(),
        status: plan.resource.status.as_str().to_string(),
        vcpus: u64::from(plan.facts.vcpus),
        max_vcpus: plan.facts.max_vcpus.map(u64::from),
        memory_mib: plan.facts.memory_mib,
        cpu_percent: plan.util.cpu.map(|c| round1(c * 100.0)),
        memory_percent: plan.util.memory.map(|m| round1(m * 100.0)),
        memory_source: match plan.util.memory_source {
            MemorySource::Guest if plan.config.is_some() || mode == Mode::Status => "guest",
            MemorySource::Guest => "guest?",
            MemorySource::Host => "host",
            MemorySource::Unknown => "unknown",
        }
        .to_string(),
        readiness: readiness(plan),
        cpu: resource_report(Resource::Cpu),
        memory: resource_report(Resource::Memory),
        error: plan.error.clone(),
        notes: plan.notes.clone(),
        failed,
    }
}

fn action_word(action: &Action) -> &'static str {
    match action {
        Action::Keep => "keep",
        Action::Up { .. } => "up",
        Action::Down { .. } => "down",
        Action::Blocked(_) => "blocked",
        Action::Skip => "skip",
    }
}

/// Live-scaling readiness from the config, when it was read (or cached): `yes`, or what
/// stands in the way.
fn readiness(plan: &VmPlan) -> String {
    let f = &plan.facts;
    let mut problems = Vec::new();
    match f.cpu_hotplug {
        Some(false) => problems.push("cpu: no hotplug"),
        None => problems.push("cpu: ?"),
        Some(true) => {}
    }
    match (f.memory_hotplug, f.numa) {
        (Some(false), _) => problems.push("memory: no hotplug"),
        (_, Some(false)) => problems.push("memory: no numa"),
        (None, _) | (_, None) => problems.push("memory: ?"),
        _ => {}
    }
    if problems.is_empty() {
        "yes".to_string()
    } else {
        problems.join("; ")
    }
}

/// Cooldown or back-off still running for a resource, e.g. `cooldown: up 1m, down 9m`.
fn wait_left(plan: &VmPlan, resource: Resource, now: u64) -> Option<String> {
    let rs = plan.state.resource(resource);
    let rp = plan.policy.resource(resource);
    let mut parts = Vec::new();
    if let Some(change) = &rs.last_change {
        let left = |cooldown: std::time::Duration| {
            (change.at + cooldown.as_secs())
                .checked_sub(now)
                .filter(|left| *left > 0)
        };
        let cooldowns: Vec<String> = [
            ("up", left(rp.cooldown_up)),
            ("down", left(rp.cooldown_down)),
        ]
        .into_iter()
        .filter_map(|(dir, left)| left.map(|l| format!("{dir} {}", policy::fmt_duration(l))))
        .collect();
        if !cooldowns.is_empty() {
            parts.push(format!("cooldown: {}", cooldowns.join(", ")));
        }
    }
    for (direction, backoff) in [
        (Direction::Up, rs.backoff_up.as_ref()),
        (Direction::Down, rs.backoff_down.as_ref()),
    ] {
        if let Some(b) = backoff.filter(|b| b.until > now) {
            parts.push(format!(
                "back-off ({direction}) {}",
                policy::fmt_duration(b.until - now)
            ));
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
