//! One pass over one cluster: read (`cluster/resources`, metrics), decide (pure policy),
//! and, unless told not to, apply. Shared by `run`, `run --dry-run` and `status`.
//!
//! Cost is kept near the floor: one `cluster/resources` and one `metrics/export` call per
//! cluster; a VM's config and pending changes are read only when a change is planned (or
//! for `status`, which shows every VM's readiness).

mod continuity;
mod facts;
mod outcome;
mod usage;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::apply::{self, ApplyTiming, ConfigWrite, Outcome};
use crate::config::{Activity, ClusterConfig, Config};
use crate::guest::GuestKind;
use crate::leader::{self, Role};
use crate::metrics::{VmUsage, WindowAggregator, usage_from_rrd};
use crate::onlining::{self, Confirmation};
use crate::policy::{
    self, Action, Decision, Direction, MemorySource, NodeHeadroom, Policy, Resource, Utilisation,
    VmFacts, VmStatus,
};
use crate::pve::parallel::{DEFAULT_PARALLELISM, map_bounded};
use crate::pve::types::{
    Consolidation, NodeResource, PendingItem, Resources, Timeframe, VmConfig, VmResource,
};
use crate::pve::{ApiError, ApiErrorKind, Client};
use crate::report::{ClusterReport, ResourceReport, VmReport, WidenedWindow};
use crate::state::{ConfigSignature, InFlight, KnownConfig, LearnedSource, State, VmState};
use jiff::tz::TimeZone;

use facts::*;
use outcome::*;
use usage::*;
use view::*;

/// What a pass may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide and apply; the caller saves the state.
    Apply,
    /// Decide only (reads the config of VMs that would change); no write of any kind.
    DryRun,
    /// Decide only, and show every managed VM's readiness: the config is read where what
    /// earlier runs learned of it is stale or missing.
    Status,
    /// `Status`, reading every running VM's config and pending changes (`status --refresh`).
    StatusRefresh,
}

impl Mode {
    fn writes(self) -> bool {
        self == Mode::Apply
    }

    pub fn is_status(self) -> bool {
        matches!(self, Mode::Status | Mode::StatusRefresh)
    }

    /// Status reads this VM's config: always with `--refresh`, else where nothing fresh is
    /// known of it.
    fn status_reads(self, config_known: bool) -> bool {
        self == Mode::StatusRefresh || (self == Mode::Status && !config_known)
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
            fill_traffic(&mut report, client);
            return report;
        }
    };
    match role_here(cluster, client, &resources, now) {
        Ok(None) => {}
        Ok(Some(Role::Active { why })) => report.active = Some(format!("this node acts: {why}")),
        Ok(Some(Role::Standby { active, why })) => {
            report.standby = Some(format!(
                "standby: {active} is the active scaler for cluster {name} ({why})"
            ));
            fill_traffic(&mut report, client);
            return report;
        }
        Ok(Some(Role::NoQuorum)) => {
            report.standby = Some(format!(
                "cluster {name} has no quorum: nothing is done anywhere until it has"
            ));
            fill_traffic(&mut report, client);
            return report;
        }
        Err(e) => {
            // Not knowing who acts, act nowhere: two scalers are worse than none for a run.
            report.error = Some(format!("cannot tell which node is the active scaler: {e}"));
            fill_traffic(&mut report, client);
            return report;
        }
    }
    let managed: Vec<&VmResource> = resources
        .vms
        .iter()
        .filter(|vm| config.manages(vm.kind, vm.vmid, &vm.tags, vm.pool.as_deref()))
        .collect();
    report
        .warnings
        .extend(invisible_vms(config, &resources.vms));

    let usage = read_metrics(config, client, &managed, state, &name, now, &mut report);

    if mode.writes() {
        learn_changes_after_failover(
            config,
            client,
            state,
            &name,
            &managed,
            &resources,
            now,
            &mut report,
        );
    }

    let mut pass = Pass {
        config,
        client,
        now,
        zone: schedule_zone(config, &mut report),
        mode,
        previous: state.clusters.get(&name).cloned().unwrap_or_default(),
        usage,
        nodes: resources
            .nodes
            .iter()
            .map(|n| (n.node.clone(), headroom(n)))
            .collect(),
        down: nodes_down(&resources.nodes),
        node_cpus: resources
            .nodes
            .iter()
            .filter_map(|n| Some((n.node.clone(), n.maxcpu?.round() as u32)))
            .collect(),
    };
    report
        .warnings
        .extend(skipped_on_down_nodes(&pass.down, &managed));

    let mut plans: Vec<VmPlan> = managed.iter().map(|vm| pass.plan(vm)).collect();
    pass.read_pressures(&mut plans);
    pass.refine(&mut plans);
    pass.watch_data(&mut plans);
    if mode.writes() {
        pass.apply(&mut plans, state, &name, timing, checkpoint, &mut report);
    }

    store_states(state, &name, &plans);
    mark_seen(state, &name, &resources.vms, now);
    for plan in &plans {
        report.vms.push(vm_report(&name, plan, now, mode));
    }
    fill_traffic(&mut report, client);
    report
}

/// Reads the managed VMs' usage (export or rrddata), says in the report where it came from,
/// and remembers in the state whether the cluster has `metrics/export`.
fn read_metrics(
    config: &Config,
    client: &Client,
    managed: &[&VmResource],
    state: &mut State,
    name: &str,
    now: u64,
    report: &mut ClusterReport,
) -> HashMap<u32, VmUsage> {
    let export_unavailable_since = state.metrics_export_unavailable.get(name).copied();
    // The oldest "newest sample seen" of the VMs: samples after it are read, so that none
    // goes unwatched between runs.
    let since = state.clusters.get(name).and_then(|vms| {
        managed
            .iter()
            .filter_map(|vm| vms.get(&vm.vmid))
            .flat_map(|s| [s.cpu.observed_at, s.memory.observed_at])
            .flatten()
            .min()
    });
    let read = read_usage(
        client,
        managed,
        config.policy().window,
        config.policy().min_samples,
        now,
        since,
        export_unavailable_since,
    );
    report.metrics_source = read.source;
    report.metrics_source_used = Some(read.used);
    report.export_missing_nodes = read.missing_nodes;
    report.widened_windows = read
        .widened
        .iter()
        .map(|w| WidenedWindow {
            source: w.source.name().to_string(),
            from_secs: w.configured.as_secs(),
            to_secs: w.used.as_secs(),
            reason: w.note().unwrap_or_default(),
        })
        .collect();
    match read.export {
        ExportAvailability::Available => {
            state.metrics_export_unavailable.remove(name);
        }
        ExportAvailability::Unavailable(since) => {
            state
                .metrics_export_unavailable
                .insert(name.to_string(), since);
        }
        ExportAvailability::Unknown => {}
    }
    read.usage
}

/// A warning per node that is down with managed VMs on it.
fn skipped_on_down_nodes(down: &HashMap<String, String>, managed: &[&VmResource]) -> Vec<String> {
    down.iter()
        .filter_map(|(node, status)| {
            let count = managed.iter().filter(|vm| vm.node == *node).count();
            (count > 0).then(|| {
                format!("node {node} is {status}: its {count} managed VMs are skipped this run")
            })
        })
        .collect()
}

/// Remembers every VM seen (whatever its status), so that pruning only drops gone VMs.
fn mark_seen(state: &mut State, cluster: &str, seen: &[VmResource], now: u64) {
    let cluster_state = state.clusters.entry(cluster.to_string()).or_default();
    for vm in seen {
        if let Some(entry) = cluster_state.get_mut(&vm.vmid) {
            entry.last_seen = now;
        }
    }
}

/// Who acts on this cluster, when this runs on one of its nodes (`None`: it does not, or
/// `active = "always"`: act). A host that is not a member costs no request; a member asks
/// `cluster/status`, and the HA manager's status where HA manages a guest.
pub(crate) fn role_here(
    cluster: &ClusterConfig,
    client: &Client,
    resources: &Resources,
    now: u64,
) -> Result<Option<Role>, ApiError> {
    if cluster.activity() == Activity::Always {
        return Ok(None);
    }
    let Some(local) = cluster
        .local_node()
        .map(str::to_string)
        .or_else(leader::host_node_name)
    else {
        return Ok(None);
    };
    if !resources.nodes.iter().any(|n| n.node == local) {
        return Ok(None);
    }
    let status = client.cluster_status()?;
    let ha = if resources.vms.iter().any(|vm| vm.hastate.is_some()) {
        // Refused or absent: decide by node id.
        client.ha_manager_status().ok()
    } else {
        None
    };
    Ok(Some(leader::role(&local, &status, ha.as_ref(), now)))
}

fn fill_traffic(report: &mut ClusterReport, client: &Client) {
    report.requests = client.stats().requests();
    report.bytes_received = client.stats().bytes_received();
    report.api = client.stats().api();
}

/// VMs selected by `vmids` that the API does not show.
fn invisible_vms(config: &Config, visible: &[VmResource]) -> Vec<String> {
    config
        .selection()
        .vmids()
        .iter()
        .filter(|vmid| !visible.iter().any(|vm| vm.vmid == **vmid))
        .map(|vmid| {
            format!(
                "VM {vmid} is selected by vmids but not visible: it does not exist, is a \
                 container, or the token lacks VM.Audit on /vms/{vmid}"
            )
        })
        .collect()
}

/// Where this cluster's state is missing or older than the longest cooldown (a node that has
/// just taken over, or the first run), learns the config changes made meanwhile from the nodes'
/// task indexes, so that no VM is changed again within its cooldown.
#[allow(clippy::too_many_arguments)]
fn learn_changes_after_failover(
    config: &Config,
    client: &Client,
    state: &mut State,
    name: &str,
    managed: &[&VmResource],
    resources: &Resources,
    now: u64,
    report: &mut ClusterReport,
) {
    let longest = managed
        .iter()
        .map(|vm| config.policy_for(vm.kind, vm.vmid, &vm.tags, vm.pool.as_deref()))
        .flat_map(|p| {
            [Resource::Cpu, Resource::Memory].map(|r| {
                let rp = p.resource(r);
                rp.cooldown_up.max(rp.cooldown_down)
            })
        })
        .max();
    let Some(longest) = longest else {
        return;
    };
    let cluster_state = state.clusters.entry(name.to_string()).or_default();
    if !continuity::state_is_stale(cluster_state, now, longest) {
        return;
    }
    let (changes, unread) = continuity::read_config_changes(client, &resources.nodes, now, longest);
    for node in unread {
        report.warnings.push(format!(
            "the task log of node {node} could not be read: a change made there within the \
             cooldown may be made again"
        ));
    }
    let adopted = continuity::adopt_config_changes(cluster_state, managed, &changes, now);
    if !adopted.is_empty() {
        log::info!(
            "cluster {name}: no recent state here; {} VMs were changed within the cooldown \
             (Proxmox's task logs): they wait it out",
            adopted.len()
        );
    }
}

/// Nodes that are not online, with their status: their VMs are reported and skipped.
fn nodes_down(nodes: &[NodeResource]) -> HashMap<String, String> {
    nodes
        .iter()
        .filter(|n| n.status != "online")
        .map(|n| (n.node.clone(), n.status.clone()))
        .collect()
}

/// The zone `[[schedule]]` windows are read in; UTC, with a warning, where the local one is
/// unknown (nothing to read without schedules).
fn schedule_zone(config: &Config, report: &mut ClusterReport) -> TimeZone {
    if config.schedules().is_empty() {
        return TimeZone::UTC;
    }
    crate::schedule::local_zone().unwrap_or_else(|e| {
        report
            .warnings
            .push(format!("{e}; schedule windows are read in UTC meanwhile"));
        TimeZone::UTC
    })
}

/// A container's window within this share of `high` is near its size (its pressure is read).
const NEAR: f64 = 0.75;

/// What one pass over a cluster has read, shared by its phases.
struct Pass<'a> {
    config: &'a Config,
    client: &'a Client,
    now: u64,
    /// The zone of schedule windows that set none.
    zone: TimeZone,
    mode: Mode,
    /// The VMs' states as the previous run left them.
    previous: BTreeMap<u32, VmState>,
    usage: HashMap<u32, VmUsage>,
    /// Node headroom; memory taken by this run's scale-ups is added as they are decided.
    nodes: HashMap<String, NodeHeadroom>,
    down: HashMap<String, String>,
    /// Each node's CPU count: the most cores a container on it can have.
    node_cpus: HashMap<String, u32>,
}

impl Pass<'_> {
    /// Phase 1: decide from what every run reads anyway (`cluster/resources`, metrics).
    fn plan(&self, vm: &VmResource) -> VmPlan {
        let mut policy = self
            .config
            .policy_for(vm.kind, vm.vmid, &vm.tags, vm.pool.as_deref());
        policy.windows = self.config.windows_in_force(
            vm.vmid,
            &vm.tags,
            vm.pool.as_deref(),
            self.now,
            &self.zone,
        );
        let prev = self.previous.get(&vm.vmid);
        let known = prev
            .and_then(|s| s.known_config.as_ref())
            .filter(|k| is_fresh(k, vm, self.now));
        let mut facts = facts_from_resource(vm, known);
        container_envelope(&mut facts, self.node_cpus.get(&vm.node).copied());
        facts.host_max_memory_mib = prev.and_then(|s| s.host_max_memory_mib);
        let learned = prev.and_then(|s| s.memory_source.as_ref());
        let source = memory_source(vm, known, learned, self.now);
        // Unknown source: assume the guest's figure so that a wanted change leads to phase 2,
        // where the real source is learned.
        let source_assumed = source == MemorySource::Unknown;
        let assumed = if source_assumed {
            MemorySource::Guest
        } else {
            source
        };
        let util = utilisation(self.usage.get(&vm.vmid), &facts, assumed, prev);
        let node = node_of(&self.nodes, &vm.node);
        let (mut decision, state) = policy::decide(&policy, &facts, &util, &node, prev, self.now);
        if let Some(status) = self.down.get(&vm.node) {
            decision = skip_all(
                &decision,
                &format!("node {} is {status} (unreachable): skipped", vm.node),
            );
        }
        VmPlan {
            resource: vm.clone(),
            policy,
            facts,
            util,
            source_assumed,
            config_known: known.is_some(),
            decision,
            state,
            config: None,
            error: None,
            notes: Vec::new(),
            data_age: None,
            outcome: Vec::new(),
        }
    }

    /// Phase 2: read config + pending where a change is planned, where an earlier write is
    /// unsettled, and (for status) everywhere; then decide again with the full facts.
    fn refine(&mut self, plans: &mut [VmPlan]) {
        let unsettled = |p: &VmPlan| {
            self.previous
                .get(&p.resource.vmid)
                .is_some_and(|s| s.in_flight.is_some())
        };
        let mut to_read: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.facts.status == VmStatus::Running
                    && (self.mode.status_reads(p.config_known)
                        || p.decision.has_change()
                        || unsettled(p))
            })
            .map(|(i, _)| i)
            .collect();
        // Where only memory would change and the source of its figure is not known, one
        // status call first tells whether the config is worth reading at all.
        let probes: Vec<usize> = to_read
            .iter()
            .copied()
            .filter(|&i| {
                let p = &plans[i];
                !self.mode.is_status()
                    && p.source_assumed
                    && p.decision.memory.is_change()
                    && !p.decision.cpu.is_change()
                    && !unsettled(p)
            })
            .collect();
        let probed = map_bounded(&probes, DEFAULT_PARALLELISM, |&i| {
            crate::memory_source::probe(self.client, &plans[i].resource)
        });
        for (&i, source) in probes.iter().zip(probed) {
            if source == MemorySource::Guest {
                plans[i].state.memory_source = Some(LearnedSource {
                    source,
                    at: self.now,
                });
                continue;
            }
            // Not the guest's own figure (or not known): memory stays as it is, and there is
            // nothing to read.
            to_read.retain(|&j| j != i);
            self.decide_with_source(&mut plans[i], source);
        }
        let reads = map_bounded(&to_read, DEFAULT_PARALLELISM, |&i| {
            // The memory source matters only where memory may change: learn it there (an
            // extra status call, cached for an hour).
            let plan = &plans[i];
            let (low, high) = (
                plan.policy.memory.low / 100.0,
                plan.policy.memory.high / 100.0,
            );
            let need_source =
                self.mode.is_status() || plan.util.memory.is_some_and(|m| m < low || m > high);
            // What phase 1 knew (still valid), or what the probe just learned.
            let cached = if plan.source_assumed {
                plan.state
                    .memory_source
                    .filter(|l| l.at == self.now)
                    .map(|l| l.source)
            } else {
                Some(plan.util.memory_source)
            };
            read_vm(self.client, &plan.resource, need_source, cached)
        });
        for (&i, read) in to_read.iter().zip(reads) {
            let plan = &mut plans[i];
            match read {
                Ok(read) => self.decide_with_config(plan, read),
                Err(e) => {
                    plan.error = Some(format!("reading the VM's config failed: {e}"));
                    // Without the config nothing is changed; keep the timers of phase 1.
                    plan.decision = no_change(&plan.decision, "config could not be read: keep");
                }
            }
        }
    }

    /// A running container at or near its size: a scale-up is planned, a resource is above
    /// `high` now, or its window within a quarter of it. Only there is its pressure read.
    fn near_its_size(&self, plan: &VmPlan) -> bool {
        let up = |rd: &policy::ResourceDecision| matches!(rd.action, Action::Up { .. });
        let near = |util: Option<f64>, high: f64| util.is_some_and(|u| u * 100.0 >= high * NEAR);
        let above = plan.state.cpu.above_since.is_some() || plan.state.memory.above_since.is_some();
        plan.resource.kind == GuestKind::Ct
            && plan.facts.status == VmStatus::Running
            && !self.down.contains_key(&plan.resource.node)
            && (up(&plan.decision.cpu)
                || up(&plan.decision.memory)
                || above
                || near(plan.util.cpu, plan.policy.cpu.high)
                || near(plan.util.memory, plan.policy.memory.high))
    }

    /// Phase 1b: a container at or near its size has its own cgroup's pressure read (one call
    /// each, in parallel) and is decided again with it: stalls count as the demand they hide,
    /// so they can start a scale-up, stop a shrink, and size the step.
    fn read_pressures(&self, plans: &mut [VmPlan]) {
        let near: Vec<usize> = (0..plans.len())
            .filter(|&i| self.near_its_size(&plans[i]))
            .collect();
        let read = map_bounded(&near, DEFAULT_PARALLELISM, |&i| {
            read_pressure(self.client, &plans[i].resource)
        });
        for (&i, pressure) in near.iter().zip(read) {
            let Some(pressure) = pressure else { continue };
            let plan = &mut plans[i];
            plan.facts.pressure = Some(pressure);
            let prev = self.previous.get(&plan.resource.vmid);
            let node = node_of(&self.nodes, &plan.resource.node);
            let (decision, state) =
                policy::decide(&plan.policy, &plan.facts, &plan.util, &node, prev, self.now);
            plan.decision = decision;
            plan.state = state;
        }
    }

    /// How old each running VM's newest sample is: older than `stale_after`, pvescale is
    /// blind for that VM, and the run says so as a failure (exit 3, a `failed` notification)
    /// instead of keeping it quietly.
    fn watch_data(&self, plans: &mut [VmPlan]) {
        for plan in plans {
            if plan.facts.status != VmStatus::Running || self.down.contains_key(&plan.resource.node)
            {
                continue;
            }
            let prev = self.previous.get(&plan.resource.vmid);
            let newest = self
                .usage
                .get(&plan.resource.vmid)
                .and_then(VmUsage::newest)
                .max(prev.and_then(|s| s.data_at));
            plan.state.data_at = newest;
            plan.state.no_data_since = match newest {
                Some(_) => None,
                None => Some(prev.and_then(|s| s.no_data_since).unwrap_or(self.now)),
            };
            let Some(since) = newest.or(plan.state.no_data_since) else {
                continue;
            };
            let age = self.now.saturating_sub(since);
            plan.data_age = Some(age);
            let limit = plan.policy.stale_after.as_secs();
            if age > limit && plan.error.is_none() {
                plan.error = Some(format!(
                    "no usable metrics for {} (stale_after {}): pvescale cannot see this VM's \
                     load; check the metrics source above and pvestatd on node {}",
                    policy::fmt_duration(age),
                    policy::fmt_duration(limit),
                    plan.resource.node
                ));
            }
        }
    }

    /// Decides again with the memory source now known (the config was not read).
    fn decide_with_source(&self, plan: &mut VmPlan, source: MemorySource) {
        let util = Utilisation {
            memory_source: source,
            ..plan.util.clone()
        };
        let prev = self.previous.get(&plan.resource.vmid);
        let node = node_of(&self.nodes, &plan.resource.node);
        let (decision, mut state) =
            policy::decide(&plan.policy, &plan.facts, &util, &node, prev, self.now);
        if source != MemorySource::Unknown {
            state.memory_source = Some(LearnedSource {
                source,
                at: self.now,
            });
        }
        plan.util = util;
        plan.source_assumed = false;
        plan.decision = decision;
        plan.state = state;
    }

    fn decide_with_config(&mut self, plan: &mut VmPlan, mut read: VmRead) {
        let now = self.now;
        let mut prev = self.previous.get(&plan.resource.vmid).cloned();
        if let Some(prev) = prev.as_mut() {
            settle_interrupted_write(self.client, plan, prev, &mut read, self.mode, now);
        }
        let mut facts = facts_from_config(&plan.resource, &read.config, &read.pending);
        facts.host_max_memory_mib = prev.as_ref().and_then(|s| s.host_max_memory_mib);
        if facts.balloon_mib.is_none() {
            facts.balloon_mib = read.config.balloon;
        }
        container_envelope(&mut facts, self.node_cpus.get(&plan.resource.node).copied());
        facts.pressure = plan.facts.pressure;
        let known = KnownConfig {
            max_vcpus: facts.max_vcpus.unwrap_or(facts.vcpus),
            cpu_hotplug: facts.cpu_hotplug.unwrap_or(false),
            memory_hotplug: facts.memory_hotplug.unwrap_or(false),
            numa: facts.numa.unwrap_or(false),
            windows: facts.windows.unwrap_or(false),
            guest_agent: facts.guest_agent.unwrap_or(false),
            balloon_mib: facts.balloon_mib,
            memory_source: read.memory_source,
            digest: read.config.digest.to_string(),
            learned_at: now,
        };
        let util = utilisation(
            self.usage.get(&plan.resource.vmid),
            &facts,
            read.memory_source,
            prev.as_ref(),
        );
        let node = node_of(&self.nodes, &plan.resource.node);
        let (decision, mut state) =
            policy::decide(&plan.policy, &facts, &util, &node, prev.as_ref(), now);
        state.known_config = Some(known);
        // The host guard of the next VM on this node counts what this one takes.
        if let Action::Up { from, to } = decision.memory.action
            && let Some(node) = self.nodes.get_mut(&plan.resource.node)
        {
            node.reserve_memory(to.saturating_sub(from));
        }
        plan.facts = facts;
        plan.util = util;
        plan.decision = decision;
        plan.state = state;
        plan.config = Some(read.config);
    }

    /// Phase 3: record what is about to be written (a checkpoint of the state), then write.
    fn apply(
        &self,
        plans: &mut [VmPlan],
        state: &mut State,
        cluster: &str,
        timing: ApplyTiming,
        checkpoint: Checkpoint,
        report: &mut ClusterReport,
    ) {
        let to_apply: Vec<usize> = plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.decision.has_change() && p.config.is_some())
            .map(|(i, _)| i)
            .collect();
        if to_apply.is_empty() {
            return;
        }
        for &i in &to_apply {
            let plan = &mut plans[i];
            let change = change_of(&plan.decision);
            plan.state.in_flight = Some(InFlight {
                at: self.now,
                write: change,
                vcpus_before: u64::from(plan.facts.vcpus),
                memory_mib_before: plan.facts.memory_mib,
                balloon_mib_before: plan.config.as_ref().and_then(|c| c.balloon),
            });
        }
        store_states(state, cluster, plans);
        if let Err(e) = checkpoint(state) {
            // Without a record of the write, a crash could leave it unsettled: don't write.
            report.error = Some(format!(
                "cannot save the state before writing ({e:#}); no VM was changed"
            ));
            for &i in &to_apply {
                plans[i].state.in_flight = None;
                plans[i].decision = no_change(&plans[i].decision, "state not writable: keep");
            }
            return;
        }
        let outcomes = map_bounded(&to_apply, DEFAULT_PARALLELISM, |&i| {
            let plan = &plans[i];
            // Only plans whose config was read get here (`to_apply`).
            let Some(config) = plan.config.as_ref() else {
                let why = "the VM's config was not read: next run";
                return (Outcome::Skipped(why.into()), Confirmation::NotAsked);
            };
            let (node, vmid, change) = (
                &plan.resource.node,
                plan.resource.vmid,
                change_of(&plan.decision),
            );
            if plan.resource.kind == GuestKind::Ct {
                // A container's cores and memory are its cgroup's: nothing to bring online.
                let outcome = apply::apply_container(self.client, node, vmid, config, &change);
                return (outcome, Confirmation::NotAsked);
            }
            let outcome = apply::apply(self.client, node, vmid, config, &change, timing);
            if outcome != Outcome::Applied || plan.facts.guest_agent != Some(true) {
                return (outcome, Confirmation::NotAsked);
            }
            let before = (u64::from(plan.facts.vcpus), plan.facts.memory_mib);
            onlining::check_after_write(self.client, node, vmid, &change, before, timing)
        });
        for (&i, (outcome, confirmation)) in to_apply.iter().zip(outcomes) {
            let plan = &mut plans[i];
            // A container's cores need no onlining: only a VM's unconfirmed grow is watched.
            let watch = outcome == Outcome::Applied
                && plan.resource.kind == GuestKind::Vm
                && !confirmation.confirmed(Resource::Cpu);
            record_outcome(plan, outcome, self.now);
            if let Confirmation::Asked { unconfirmed } = &confirmation {
                for (resource, why) in unconfirmed {
                    plan.notes
                        .push(format!("{resource}: not confirmed online: {why}"));
                }
            }
            if watch {
                watch_cpu_grow(plan);
            }
        }
    }
}

/// After a vCPU grow nobody could confirm online: watch the samples for the sign of a
/// guest that left the added vCPUs offline (policy::onlining).
fn watch_cpu_grow(plan: &mut VmPlan) {
    let Action::Up { from, to } = plan.decision.cpu.action else {
        return;
    };
    let newest = plan.util.cpu_view.points.last().map(|p| p.short);
    let busy_before = match (plan.util.cpu, newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    plan.state.cpu.online_watch = policy::onlining::watch_for(from, to, busy_before);
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

/// Everything known and decided about one VM in this pass.
struct VmPlan {
    resource: VmResource,
    policy: Policy,
    facts: VmFacts,
    util: Utilisation,
    /// Phase 1 took the memory figure for the guest's own without knowing.
    source_assumed: bool,
    /// What an earlier run learned of the config is still fresh (phase 1 used it).
    config_known: bool,
    decision: Decision,
    state: VmState,
    config: Option<VmConfig>,
    error: Option<String>,
    /// Things worth telling that are not a decision (an earlier write settled, ...).
    notes: Vec<String>,
    /// Seconds since the VM's newest metrics sample (running VMs).
    data_age: Option<u64>,
    /// Per resource: what happened to its change.
    outcome: Vec<(Resource, crate::record::WriteOutcome)>,
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

fn change_of(decision: &Decision) -> ConfigWrite {
    ConfigWrite {
        vcpus: decision.cpu.change().map(|(_, to)| to),
        memory_mib: decision.memory.change().map(|(_, to)| to),
        balloon_mib: decision.memory.change().and(decision.memory.balloon_mib),
    }
}
