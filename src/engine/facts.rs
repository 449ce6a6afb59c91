//! What a run knows about a VM: facts from `cluster/resources` or its config, the memory
//! source, utilisation against the current size, the node's headroom.

use super::*;
use crate::memory_source;
use crate::metrics::{self, SizedSample};
use crate::policy::Pressure;
use crate::policy::SampleView;
use crate::units::MIB;

/// How long what we learned from a VM's config is trusted without reading it again.
const KNOWN_CONFIG_TTL_SECS: u64 = 3600;

pub(super) struct VmRead {
    pub(super) config: VmConfig,
    pub(super) pending: Vec<PendingItem>,
    pub(super) memory_source: MemorySource,
}

/// A container's own pressure from its `status/current` (percent → fraction). Nothing where
/// the server has no figures (before PVE 9) or the read fails: the usual rules apply.
pub(super) fn read_pressure(client: &Client, vm: &VmResource) -> Option<Pressure> {
    let status = client.ct_status_current(&vm.node, vm.vmid).ok()?;
    let fraction = |p: Option<f64>| p.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v / 100.0);
    let pressure = Pressure {
        cpu_some: fraction(status.pressurecpusome),
        memory_some: fraction(status.pressurememorysome),
    };
    (pressure != Pressure::default()).then_some(pressure)
}

pub(super) fn read_vm(
    client: &Client,
    vm: &VmResource,
    need_memory_source: bool,
    cached_source: Option<MemorySource>,
) -> Result<VmRead, ApiError> {
    let config = client.guest_config_current(vm.kind, &vm.node, vm.vmid)?;
    let pending = client.guest_pending(vm.kind, &vm.node, vm.vmid)?;
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
    if let Some(source) = memory_source::from_config(config) {
        return source;
    }
    let source = memory_source(vm, None, None, 0);
    if source != MemorySource::Unknown || !ask {
        return source;
    }
    memory_source::probe(client, vm)
}

/// The memory source as far as the cheap reads tell: PVE 9's `memhost` differs from `mem`
/// exactly when `mem` comes from the guest; else what an earlier run learned (from the
/// config, or from a status probe), while it is fresh.
pub(super) fn memory_source(
    vm: &VmResource,
    known: Option<&KnownConfig>,
    learned: Option<&LearnedSource>,
    now: u64,
) -> MemorySource {
    if let Some(source) = memory_source::from_resource(vm) {
        return source;
    }
    if let Some(k) = known.filter(|k| k.memory_source != MemorySource::Unknown) {
        return k.memory_source;
    }
    match learned {
        Some(l) if still_valid(l.at, vm, now) => l.source,
        _ => MemorySource::Unknown,
    }
}

/// A cached config is trusted for an hour, and not across a restart of the VM (hotplug and
/// NUMA changes only take effect at a cold start).
pub(super) fn is_fresh(known: &KnownConfig, vm: &VmResource, now: u64) -> bool {
    still_valid(known.learned_at, vm, now)
}

/// Something learned about a VM at `learned_at` is trusted for about an hour (spread over 15
/// minutes by VMID, so that a large cluster does not re-read every VM in the same run), and
/// not across a restart.
fn still_valid(learned_at: u64, vm: &VmResource, now: u64) -> bool {
    let age = now.saturating_sub(learned_at);
    let restarted = vm.uptime.is_some_and(|up| up < age);
    let ttl = KNOWN_CONFIG_TTL_SECS + u64::from(vm.vmid.wrapping_mul(2_654_435_761) % 900);
    age < ttl && !restarted
}

pub(super) fn facts_from_resource(vm: &VmResource, known: Option<&KnownConfig>) -> VmFacts {
    let vcpus = vm.maxcpu.map(|c| c.round() as u32).unwrap_or(0);
    let memory_mib = vm.maxmem.map(|b| b / MIB).unwrap_or(0);
    let mut facts = VmFacts::new(vm.vmid, vm.node.clone(), vcpus, memory_mib);
    facts.kind = vm.kind;
    facts.status = VmStatus::from_pve(vm.status.as_str());
    facts.lock = vm.lock.clone();
    facts.template = vm.template;
    if let Some(known) = known {
        fill_from(&mut facts, known);
    }
    facts
}

/// A container has nothing to enable for live changes (pve-container applies `cores`,
/// `memory` and `swap` to a running one: LXC/Config.pm `vmconfig_hotplug_pending`), no DIMM
/// grid and no balloon; its CPUs are bounded by its node's (`node_cpus`, when known).
pub(super) fn container_envelope(facts: &mut VmFacts, node_cpus: Option<u32>) {
    if facts.kind != GuestKind::Ct {
        return;
    }
    facts.cpu_hotplug = Some(true);
    facts.memory_hotplug = Some(true);
    facts.numa = Some(true);
    facts.balloon_mib = None;
    facts.hotplug_features = None;
    facts.max_vcpus = node_cpus;
}

pub(super) fn facts_from_config(
    vm: &VmResource,
    config: &VmConfig,
    pending: &[PendingItem],
) -> VmFacts {
    // A container without `cores` sees all of its node's CPUs (`maxcpu` says how many).
    let vcpus = match (vm.kind, config.cores) {
        (GuestKind::Ct, None) => vm.maxcpu.map(|c| c.round() as u64).unwrap_or(1),
        (GuestKind::Ct, Some(cores)) => cores,
        (GuestKind::Vm, _) => config.vcpus(),
    };
    let vcpus = u32::try_from(vcpus).unwrap_or(u32::MAX);
    let memory_mib = config
        .memory
        .unwrap_or_else(|| vm.maxmem.map(|b| b / MIB).unwrap_or(0));
    let mut facts = VmFacts::new(vm.vmid, vm.node.clone(), vcpus, memory_mib);
    facts.kind = vm.kind;
    facts.status = VmStatus::from_pve(vm.status.as_str());
    facts.lock = config.lock.clone().or_else(|| vm.lock.clone());
    facts.template = config.template || vm.template;
    facts.max_vcpus = Some(u32::try_from(config.max_vcpus()).unwrap_or(u32::MAX));
    facts.cpu_hotplug = Some(config.cpu_hotplug());
    facts.memory_hotplug = Some(config.memory_hotplug());
    facts.numa = Some(config.numa);
    facts.hotplug_features = Some(config.hotplug_features());
    facts.windows = Some(config.is_windows());
    facts.guest_agent = Some(config.agent_enabled());
    facts.balloon_mib = config.balloon;
    facts.pending = Some(apply::foreign_pending(pending));
    facts.digest = Some(config.digest.to_string());
    facts
}

/// Utilisation against the VM's size now: the window's figure and the samples behind it,
/// counting only samples of the current size from `SETTLE_SECS` after the resource's last
/// change (the new size is judged on its own samples), and, for breaches, only those newer
/// than the last run observed.
pub(super) fn utilisation(
    usage: Option<&VmUsage>,
    facts: &VmFacts,
    source: MemorySource,
    prev: Option<&VmState>,
) -> Utilisation {
    let Some(usage) = usage else {
        return Utilisation {
            memory_source: source,
            ..Utilisation::unknown()
        };
    };
    let window_start = usage.window_start;
    let view = |resource: Resource, series: &[SizedSample], size: f64| {
        let rs = prev.map(|p| p.resource(resource));
        let valid_from = rs
            .and_then(|r| r.last_change.as_ref())
            .map_or(0, |c| c.at + policy::SETTLE_SECS);
        let after = rs.and_then(|r| r.observed_at);
        metrics::resource_view(
            series,
            size,
            valid_from,
            after,
            policy::SHORT_VIEW_SECS,
            window_start,
        )
    };
    let cpu = view(Resource::Cpu, &usage.cpu_series, f64::from(facts.vcpus));
    let memory = view(Resource::Memory, &usage.mem_series, facts.memory_mib as f64);
    Utilisation {
        cpu: cpu.long,
        memory: memory.long,
        memory_source: source,
        cpu_samples: cpu.long_samples,
        memory_samples: memory.long_samples,
        cpu_view: SampleView {
            points: cpu.points,
            step_secs: usage.step_secs,
        },
        memory_view: SampleView {
            points: memory.points,
            step_secs: usage.step_secs,
        },
    }
}

pub(super) fn headroom(node: &NodeResource) -> NodeHeadroom {
    NodeHeadroom {
        name: node.node.clone(),
        mem_used_mib: node.mem.map(|b| b / MIB),
        mem_total_mib: node.maxmem.map(|b| b / MIB),
        cpu: node.cpu,
    }
}

pub(super) fn node_of(nodes: &HashMap<String, NodeHeadroom>, name: &str) -> NodeHeadroom {
    nodes
        .get(name)
        .cloned()
        .unwrap_or_else(|| NodeHeadroom::unknown(name))
}

/// Fills the unknown envelope fields from what an earlier run learned (not the digest, which
/// is only valid for the config it came with).
fn fill_from(facts: &mut VmFacts, known: &KnownConfig) {
    facts.max_vcpus.get_or_insert(known.max_vcpus);
    facts.cpu_hotplug.get_or_insert(known.cpu_hotplug);
    facts.memory_hotplug.get_or_insert(known.memory_hotplug);
    facts.numa.get_or_insert(known.numa);
    facts.windows.get_or_insert(known.windows);
    facts.guest_agent.get_or_insert(known.guest_agent);
    if facts.balloon_mib.is_none() {
        facts.balloon_mib = known.balloon_mib;
    }
}
