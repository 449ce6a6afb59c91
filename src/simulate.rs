//! `pvescale simulate`: replay a VM's history through the scaling policy — exactly
//! [`policy::decide`] — on a simulated clock, and compare what pvescale would have done with
//! what happened. Changes nothing.
//!
//! The method (also in the README):
//! - One decision per minute (what the timer does), at every whole minute of `--since`.
//! - Each decision sees the history inside the policy window as its window average: the
//!   minutes `t, t − 60 s, …` within `window`, each taking the value of the history point that
//!   covers it (60 s or 30 min points). A window with at least one known point counts as
//!   `min_samples` samples (history points are themselves averages of many samples).
//! - Utilisation is re-expressed against the *simulated* size: busy cores / simulated vCPUs,
//!   used MiB / simulated memory, each minute capped at 100 % — a VM cannot use more than it
//!   has, and demand above the size the VM really had is not in the history.
//! - A change decide() asks for is applied at once to the simulated size and recorded with
//!   [`VmState::record_change`]. Not simulated: refusals and back-off, the host guard (node
//!   history is not read), hotplug readiness (the VM is taken as live-scalable).
//! - Without pvescale = what the history shows (the VM's real size then).
//! - A flap is a change reversed by the next change of the same resource within an hour.

use std::time::Duration;

use serde::Serialize;

use crate::guest::GuestKind;
use crate::policy::{
    self, Direction, MemorySource, NodeHeadroom, Policy, Resource, SampleView, Utilisation,
    ViewPoint, VmFacts, WindowInForce,
};
use crate::recommend::round3;
use crate::report::{new_table, vm_label};
use crate::rrd_history::{HistoryInfo, Interval, Request, Series, VmHistory};
use crate::state::VmState;
use crate::units::iso8601;

/// The simulated timer: one decision a minute.
pub const TICK_SECS: u64 = 60;
/// A change reversed within this long is a flap.
pub const FLAP_SECS: u64 = 3600;

/// What the report says about its method.
pub const ASSUMPTIONS: [&str; 5] = [
    "one decision per minute on a simulated clock, with the policy's own decide()",
    "each decision sees the history points inside the policy window as its window average; \
     a window with at least one known point counts as min_samples samples",
    "utilisation is re-expressed against the simulated size (busy cores / vCPUs, used / \
     memory), capped at 100 %: demand above the size the VM really had is not in the history",
    "every change succeeds at once: no refusals or back-off, no host guard, the VM is taken \
     as live-scalable",
    "a flap is a change reversed by the next change of the same resource within an hour",
];

/// A change the simulated pvescale made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimChange {
    pub time: u64,
    pub resource: Resource,
    pub direction: Direction,
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// One resource of one VM, with and without pvescale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceBacktest {
    pub changes_up: u32,
    pub changes_down: u32,
    pub flaps: u32,
    /// Seconds with a known figure (the time the averages and percentages are over).
    pub known_secs: u64,
    /// Time above the policy's `high`: as it happened, and with pvescale.
    pub above_high_actual_secs: u64,
    pub above_high_simulated_secs: u64,
    /// Average size (vCPUs or MiB): as it was, and with pvescale.
    pub average_actual: Option<f64>,
    pub average_simulated: Option<f64>,
    /// Simulated size at the start and at the end.
    pub simulated_start: u64,
    pub simulated_end: u64,
}

/// One minute of the replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tick {
    pub time: u64,
    pub busy_cores: Option<f64>,
    pub actual_vcpus: Option<u64>,
    /// The simulated size during this minute (before this minute's decision).
    pub simulated_vcpus: u64,
    pub used_mib: Option<f64>,
    pub actual_memory_mib: Option<u64>,
    pub simulated_memory_mib: u64,
    /// The changes decided at the end of this minute, e.g. `cpu up 2 -> 4`.
    pub action: String,
}

/// The replay of one VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    pub cpu: ResourceBacktest,
    pub memory: ResourceBacktest,
    pub changes: Vec<SimChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Tick>,
}

/// The `[[schedule]]` windows in force for the replayed VM at a time (unix seconds).
pub type WindowsAt<'a> = &'a dyn Fn(u64) -> Vec<WindowInForce>;

/// No schedule windows, ever.
pub fn no_windows(_: u64) -> Vec<WindowInForce> {
    Vec::new()
}

/// Everything a replay depends on.
#[derive(Clone)]
pub struct ReplayInput<'a> {
    pub policy: &'a Policy,
    /// The schedule windows at each simulated minute, as `run` would see them then.
    pub windows: WindowsAt<'a>,
    pub vmid: u32,
    /// VM or container (replayed with a container's own sizing rules).
    pub kind: GuestKind,
    pub node: &'a str,
    /// sockets × cores, when known.
    pub envelope: Option<u64>,
    pub balloon_mib: Option<u64>,
    pub memory_source: MemorySource,
    /// AVERAGE history.
    pub series: &'a Series,
    /// The window `(from, to]`.
    pub from: u64,
    pub to: u64,
    /// Sizes to start from when the history does not tell (the VM's current sizes).
    pub fallback_vcpus: u64,
    pub fallback_memory_mib: u64,
    /// Keep the per-minute timeline.
    pub timeline: bool,
}

#[derive(Default)]
struct Tally {
    known: u64,
    above_actual: u64,
    above_sim: u64,
    sized: u64,
    alloc_actual: f64,
    alloc_sim: f64,
}

impl Tally {
    /// One minute: `use_` of `actual` and of `simulated`, against `high` (percent).
    fn add(&mut self, use_: f64, actual: Option<f64>, simulated: f64, high: f64) {
        self.known += TICK_SECS;
        if let Some(actual) = actual.filter(|a| *a > 0.0) {
            if use_ / actual * 100.0 > high {
                self.above_actual += TICK_SECS;
            }
            self.sized += TICK_SECS;
            self.alloc_actual += actual * TICK_SECS as f64;
            self.alloc_sim += simulated * TICK_SECS as f64;
        }
        if simulated > 0.0 && use_.min(simulated) / simulated * 100.0 > high {
            self.above_sim += TICK_SECS;
        }
    }

    fn finish(
        &self,
        changes: &[SimChange],
        res: Resource,
        start: u64,
        end: u64,
    ) -> ResourceBacktest {
        let mine: Vec<&SimChange> = changes.iter().filter(|c| c.resource == res).collect();
        let avg = |sum: f64| (self.sized > 0).then(|| round3(sum / self.sized as f64));
        ResourceBacktest {
            changes_up: mine.iter().filter(|c| c.direction == Direction::Up).count() as u32,
            changes_down: mine
                .iter()
                .filter(|c| c.direction == Direction::Down)
                .count() as u32,
            flaps: mine
                .windows(2)
                .filter(|w| {
                    w[0].direction != w[1].direction
                        && w[1].time.saturating_sub(w[0].time) <= FLAP_SECS
                })
                .count() as u32,
            known_secs: self.known,
            above_high_actual_secs: self.above_actual,
            above_high_simulated_secs: self.above_sim,
            average_actual: avg(self.alloc_actual),
            average_simulated: avg(self.alloc_sim),
            simulated_start: start,
            simulated_end: end,
        }
    }
}

/// The mean of `use / size` over the window's known minutes, each capped at 1, and how many.
fn window_use(values: &[f64], size: f64) -> (Option<f64>, u32) {
    if values.is_empty() || size <= 0.0 {
        return (None, 0);
    }
    let sum: f64 = values.iter().map(|v| v.min(size) / size).sum();
    (Some(sum / values.len() as f64), values.len() as u32)
}

/// The window's utilisation as a run at `t` would see it, against the simulated sizes.
fn window_utilisation(
    inp: &ReplayInput<'_>,
    t: u64,
    window_minutes: u64,
    min_samples: u32,
    (vcpus, memory_mib): (u64, u64),
) -> Utilisation {
    let in_window: Vec<&Interval> = (0..window_minutes)
        .filter_map(|k| t.checked_sub(k * TICK_SECS))
        .filter(|s| *s > inp.from)
        .filter_map(|s| inp.series.at(s))
        .collect();
    let busy_values: Vec<f64> = in_window.iter().filter_map(|i| i.busy).collect();
    let used_values: Vec<f64> = in_window.iter().filter_map(|i| i.used_mib).collect();
    let (cpu, cpu_n) = window_use(&busy_values, vcpus as f64);
    let (memory, mem_n) = window_use(&used_values, memory_mib as f64);
    // The minute point at `t` as the sample a run reads (rrddata: one a minute, which is
    // also its short view), so that breaches are measured as `run` measures them.
    let here = inp.series.at(t);
    let point = |used: Option<f64>, size: u64| {
        let fraction = (used? / size.max(1) as f64).min(1.0);
        Some(ViewPoint {
            t,
            sample: fraction,
            short: fraction,
        })
    };
    let view = |point: Option<ViewPoint>| SampleView {
        points: point.into_iter().collect(),
        step_secs: TICK_SECS,
    };
    Utilisation {
        cpu,
        memory,
        memory_source: inp.memory_source,
        cpu_samples: if cpu_n > 0 { cpu_n.max(min_samples) } else { 0 },
        memory_samples: if mem_n > 0 { mem_n.max(min_samples) } else { 0 },
        cpu_view: view(point(here.and_then(|i| i.busy), vcpus)),
        memory_view: view(point(here.and_then(|i| i.used_mib), memory_mib)),
    }
}

/// The facts `decide` sees in the replay: the simulated sizes, a VM ready for live scaling.
fn simulated_facts(
    inp: &ReplayInput<'_>,
    vcpus: u64,
    memory_mib: u64,
    balloon: Option<u64>,
) -> VmFacts {
    let mut facts = VmFacts::new(
        inp.vmid,
        inp.node,
        u32::try_from(vcpus).unwrap_or(u32::MAX),
        memory_mib,
    );
    facts.kind = inp.kind;
    facts.max_vcpus = inp.envelope.map(|e| u32::try_from(e).unwrap_or(u32::MAX));
    facts.cpu_hotplug = Some(true);
    facts.memory_hotplug = Some(true);
    facts.numa = Some(true);
    facts.balloon_mib = balloon;
    facts.pending = Some(Vec::new());
    facts
}

/// Replays the history minute by minute through [`policy::decide`].
pub fn replay(inp: &ReplayInput<'_>) -> Replay {
    let policy = inp.policy;
    let first = (inp.from / TICK_SECS + 1) * TICK_SECS;
    let last = inp.to / TICK_SECS * TICK_SECS;
    let window_minutes = (policy.window.as_secs() / TICK_SECS).max(1);
    let start_vcpus = inp
        .series
        .intervals
        .iter()
        .find_map(|i| i.vcpus)
        .map_or(inp.fallback_vcpus, |v| v.round() as u64)
        .max(1);
    let start_memory = inp
        .series
        .intervals
        .iter()
        .find_map(|i| i.memory_mib)
        .map_or(inp.fallback_memory_mib, |m| m.round() as u64);
    let (mut sim_vcpus, mut sim_memory) = (start_vcpus, start_memory);
    let mut balloon = inp.balloon_mib;
    // The host guard is not simulated: a node with room for anything.
    let node = NodeHeadroom {
        name: inp.node.to_string(),
        mem_used_mib: Some(0),
        mem_total_mib: Some(u64::MAX),
        cpu: Some(0.0),
    };
    let min_samples = policy.min_samples.max(1);
    let mut state: Option<VmState> = None;
    let mut changes: Vec<SimChange> = Vec::new();
    let mut timeline = Vec::new();
    let (mut cpu_tally, mut mem_tally) = (Tally::default(), Tally::default());
    let mut t = first;
    while first > inp.from && t <= last {
        let here: Option<&Interval> = inp.series.at(t);
        let busy = here.and_then(|i| i.busy);
        let used = here.and_then(|i| i.used_mib);
        let actual_vcpus = here.and_then(|i| i.vcpus);
        let actual_memory = here.and_then(|i| i.memory_mib);
        if let Some(b) = busy {
            cpu_tally.add(b, actual_vcpus, sim_vcpus as f64, policy.cpu.high);
        }
        if let Some(u) = used {
            mem_tally.add(u, actual_memory, sim_memory as f64, policy.memory.high);
        }
        let util = window_utilisation(inp, t, window_minutes, min_samples, (sim_vcpus, sim_memory));
        let facts = simulated_facts(inp, sim_vcpus, sim_memory, balloon);
        let windows = (inp.windows)(t);
        let windowed;
        let policy_now = if windows.is_empty() {
            policy
        } else {
            windowed = Policy {
                windows,
                ..policy.clone()
            };
            &windowed
        };
        let (decision, mut new_state) =
            policy::decide(policy_now, &facts, &util, &node, state.as_ref(), t);
        let tick_vcpus = sim_vcpus;
        let tick_memory = sim_memory;
        let mut actions = Vec::new();
        for d in decision.changes() {
            let (Some((from, to)), Some(direction)) = (d.change(), d.direction()) else {
                continue;
            };
            new_state.record_change(d.resource, direction, from, to, t);
            match d.resource {
                Resource::Cpu => sim_vcpus = to,
                Resource::Memory => {
                    sim_memory = to;
                    if d.balloon_mib.is_some() {
                        balloon = d.balloon_mib;
                    }
                }
            }
            actions.push(format!("{} {direction} {from} -> {to}", d.resource));
            changes.push(SimChange {
                time: t,
                resource: d.resource,
                direction,
                from,
                to,
                reason: d.reason.clone(),
            });
        }
        state = Some(new_state);
        if inp.timeline {
            timeline.push(Tick {
                time: t,
                busy_cores: busy.map(round3),
                actual_vcpus: actual_vcpus.map(|v| v.round() as u64),
                simulated_vcpus: tick_vcpus,
                used_mib: used.map(|u| (u * 10.0).round() / 10.0),
                actual_memory_mib: actual_memory.map(|m| m.round() as u64),
                simulated_memory_mib: tick_memory,
                action: actions.join("; "),
            });
        }
        t += TICK_SECS;
    }
    Replay {
        cpu: cpu_tally.finish(&changes, Resource::Cpu, start_vcpus, sim_vcpus),
        memory: mem_tally.finish(&changes, Resource::Memory, start_memory, sim_memory),
        changes,
        timeline,
    }
}

/// One VM's backtest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmBacktest {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub status: String,
    pub memory_source: MemorySource,
    pub history: HistoryInfo,
    pub cpu: ResourceBacktest,
    pub memory: ResourceBacktest,
    pub changes: Vec<SimChange>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The per-minute timeline (with `--vm` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<Tick>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterBacktest {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub vms: Vec<VmBacktest>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulateReport {
    pub time: u64,
    pub since_secs: u64,
    pub assumptions: Vec<String>,
    pub clusters: Vec<ClusterBacktest>,
}

/// One VM's backtest from what was read about it.
pub fn backtest_vm(
    history: &VmHistory,
    policy: &Policy,
    windows: WindowsAt<'_>,
    req: Request,
    timeline: bool,
) -> VmBacktest {
    let input = ReplayInput {
        policy,
        windows,
        vmid: history.vm.vmid,
        kind: history.vm.kind,
        node: &history.vm.node,
        envelope: history.envelope(),
        balloon_mib: history.config.as_ref().ok().and_then(|c| c.balloon),
        memory_source: history.memory_source,
        series: &history.average,
        from: req.from,
        to: req.to,
        fallback_vcpus: history.current_vcpus().unwrap_or(1),
        fallback_memory_mib: history.current_memory_mib().unwrap_or(0),
        timeline,
    };
    let r = replay(&input);
    let coverage = history.average.coverage(|i| i.busy);
    let mut notes = Vec::new();
    if coverage.points == 0 {
        notes.push("no history: nothing to replay".to_string());
    }
    if let Some(coarsest) = coverage.coarsest().filter(|s| *s > TICK_SECS) {
        notes.push(format!(
            "history in steps of up to {}: each decision sees that average",
            crate::units::fmt_duration(Duration::from_secs(coarsest))
        ));
    }
    match history.memory_source {
        MemorySource::Guest => {}
        _ => notes.push(
            "memory is a host-side estimate or of unknown source: never shrunk, as in real runs"
                .to_string(),
        ),
    }
    match &history.config {
        Ok(c) if !c.cpu_hotplug() || !c.memory_hotplug() || !c.numa => {
            notes.push("not live-scalable now (hotplug/numa): simulated as if it were".to_string())
        }
        Ok(_) => {}
        Err(e) => notes.push(format!("config not readable ({e}): envelope unknown")),
    }
    VmBacktest {
        vmid: history.vm.vmid,
        name: history.vm.name.clone().unwrap_or_default(),
        node: history.vm.node.clone(),
        status: history.vm.status.as_str().to_string(),
        memory_source: history.memory_source,
        history: HistoryInfo::new(&coverage, req.to.saturating_sub(req.from)),
        cpu: r.cpu,
        memory: r.memory,
        changes: r.changes,
        notes,
        error: (!history.errors.is_empty()).then(|| history.errors.join("; ")),
        timeline: timeline.then_some(r.timeline),
    }
}

/// The CSV header of the timeline.
pub const CSV_HEADER: &str = "time,busy_cores,actual_vcpus,simulated_vcpus,used_mib,\
actual_memory_mib,simulated_memory_mib,action";

/// The per-minute timeline of every VM in the report (with `--vm`, of that one VM).
pub fn render_csv(report: &SimulateReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v}"));
    let int = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
    for vm in report.clusters.iter().flat_map(|c| c.vms.iter()) {
        for tick in vm.timeline.iter().flatten() {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                iso8601(tick.time),
                num(tick.busy_cores),
                int(tick.actual_vcpus),
                tick.simulated_vcpus,
                num(tick.used_mib),
                int(tick.actual_memory_mib),
                tick.simulated_memory_mib,
                csv_field(&tick.action)
            ));
        }
    }
    out
}

/// The timeline of the VM given with `--vm` as a chart: busy cores against vCPUs as they were
/// and as simulated, memory used against memory likewise; the simulated changes marked, their
/// reasons as hover titles. The same figures as `render_csv`.
pub fn render_svg(report: &SimulateReport, zone: &jiff::tz::TimeZone) -> String {
    use crate::chart::{Chart, Mark, MarkKind, Panel, Series, Shape};
    let vm = report.clusters.iter().flat_map(|c| c.vms.iter()).next();
    let ticks: &[Tick] = vm.and_then(|v| v.timeline.as_deref()).unwrap_or(&[]);
    let series =
        |id, label: &str, shape, color, dashed, value: &dyn Fn(&Tick) -> Option<f64>| Series {
            id,
            label: label.to_string(),
            shape,
            color,
            dashed,
            points: ticks.iter().map(|t| (t.time, value(t))).collect(),
        };
    let marks = |resource: Resource| -> Vec<Mark> {
        vm.map(|v| v.changes.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter(|c| c.resource == resource)
            .map(|c| Mark {
                t: c.time,
                kind: MarkKind::Change,
                title: format!("{} {} → {}: {}", c.direction, c.from, c.to, c.reason),
            })
            .collect()
    };
    let cpu = Panel {
        title: "CPU".into(),
        y_label: "cores / vCPUs".into(),
        series: vec![
            series(
                "busy_cores",
                "busy cores",
                Shape::Line,
                "#2563eb",
                false,
                &|t| t.busy_cores,
            ),
            series(
                "actual_vcpus",
                "vCPUs as it happened",
                Shape::Step,
                "#9ca3af",
                true,
                &|t| t.actual_vcpus.map(|v| v as f64),
            ),
            series(
                "simulated_vcpus",
                "vCPUs with pvescale (simulated)",
                Shape::Step,
                "#16a34a",
                false,
                &|t| Some(t.simulated_vcpus as f64),
            ),
        ],
        marks: marks(Resource::Cpu),
    };
    let memory = Panel {
        title: "Memory".into(),
        y_label: "MiB".into(),
        series: vec![
            series("used_mib", "used", Shape::Line, "#7c3aed", false, &|t| {
                t.used_mib
            }),
            series(
                "actual_memory_mib",
                "memory as it happened",
                Shape::Step,
                "#9ca3af",
                true,
                &|t| t.actual_memory_mib.map(|v| v as f64),
            ),
            series(
                "simulated_memory_mib",
                "memory with pvescale (simulated)",
                Shape::Step,
                "#16a34a",
                false,
                &|t| Some(t.simulated_memory_mib as f64),
            ),
        ],
        marks: marks(Resource::Memory),
    };
    let title = match vm {
        Some(v) if v.name.is_empty() => format!("VM {}: pvescale simulate", v.vmid),
        Some(v) => format!("VM {} ({}): pvescale simulate", v.vmid, v.name),
        None => "pvescale simulate: no VM".to_string(),
    };
    crate::chart::render(&Chart {
        title,
        subtitle: format!(
            "the last {} of history replayed through the policy, one decision a minute",
            hours(report.since_secs)
        ),
        panels: vec![cpu, memory],
        zone: zone.clone(),
    })
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn hours(secs: u64) -> String {
    crate::units::fmt_duration(Duration::from_secs(secs / 60 * 60))
}

fn resource_cells(r: &ResourceBacktest, unit: &str) -> [String; 3] {
    let decimals = if unit.is_empty() { 2 } else { 0 };
    let avg = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:.decimals$}"));
    [
        format!(
            "↑{} ↓{}{}",
            r.changes_up,
            r.changes_down,
            if r.flaps > 0 {
                format!(", {} flaps", r.flaps)
            } else {
                String::new()
            }
        ),
        format!(
            "{} → {}",
            hours(r.above_high_actual_secs),
            hours(r.above_high_simulated_secs)
        ),
        format!(
            "{} → {}{unit}",
            avg(r.average_actual),
            avg(r.average_simulated)
        ),
    ]
}

/// The table for people: one row per VM; with `--vm`, the changes too.
pub fn render(report: &SimulateReport) -> String {
    let mut table = new_table(&[
        "Cluster",
        "VM",
        "CPU changes",
        "CPU > high\nwithout → with",
        "vCPUs avg\nwithout → with",
        "Memory changes",
        "Memory > high\nwithout → with",
        "Memory avg\nwithout → with",
        "History",
        "Notes",
    ]);
    let mut out = String::new();
    let mut rows = 0;
    let mut changes = new_table(&["Time (UTC)", "VM", "Resource", "Change", "Reason"]);
    let mut change_rows = 0;
    for cluster in &report.clusters {
        if let Some(error) = &cluster.error {
            out.push_str(&format!("cluster {}: FAILED: {error}\n", cluster.name));
        }
        for vm in &cluster.vms {
            rows += 1;
            let [cc, ca, cv] = resource_cells(&vm.cpu, "");
            let [mc, ma, mv] = resource_cells(&vm.memory, " MiB");
            let mut notes = vm.notes.clone();
            if let Some(e) = &vm.error {
                notes.insert(0, format!("error: {e}"));
            }
            table.add_row(vec![
                cluster.name.clone(),
                vm_label(vm.vmid, &vm.name),
                cc,
                ca,
                cv,
                mc,
                ma,
                mv,
                vm.history.summary(),
                notes.join("\n"),
            ]);
            if vm.timeline.is_some() {
                for c in &vm.changes {
                    change_rows += 1;
                    changes.add_row(vec![
                        iso8601(c.time),
                        vm_label(vm.vmid, &vm.name),
                        c.resource.to_string(),
                        format!("{} {} → {}", c.direction, c.from, c.to),
                        c.reason.clone(),
                    ]);
                }
            }
        }
    }
    if rows > 0 {
        out.push_str(&table.to_string());
        out.push('\n');
    }
    if change_rows > 0 {
        out.push_str(&changes.to_string());
        out.push('\n');
    }
    out.push_str(&format!(
        "{rows} VM{} replayed over the last {} (without = as it happened, with = what pvescale \
         would have done). Assumptions:\n",
        if rows == 1 { "" } else { "s" },
        crate::units::fmt_duration(Duration::from_secs(report.since_secs))
    ));
    for a in &report.assumptions {
        out.push_str(&format!("  - {a}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    /// One-minute intervals from `from`, one per value (busy cores, used MiB), on a VM of
    /// 4 vCPUs and 8192 MiB.
    fn minutes(from: u64, values: &[(f64, f64)]) -> Series {
        Series {
            intervals: values
                .iter()
                .enumerate()
                .map(|(k, &(busy, used))| Interval {
                    start: from + k as u64 * MIN,
                    end: from + (k as u64 + 1) * MIN,
                    step: MIN,
                    busy: Some(busy),
                    vcpus: Some(4.0),
                    used_mib: Some(used),
                    memory_mib: Some(8192.0),
                    host_mib: None,
                })
                .collect(),
        }
    }

    fn input<'a>(policy: &'a Policy, series: &'a Series, minutes: u64) -> ReplayInput<'a> {
        ReplayInput {
            policy,
            windows: &no_windows,
            vmid: 101,
            kind: GuestKind::Vm,
            node: "pve1",
            envelope: Some(8),
            balloon_mib: None,
            memory_source: MemorySource::Guest,
            series,
            from: 0,
            to: minutes * MIN,
            fallback_vcpus: 4,
            fallback_memory_mib: 8192,
            timeline: true,
        }
    }

    #[test]
    fn steady_load_in_the_band_changes_nothing() {
        let policy = Policy::default();
        // 2 busy of 4 = 50 % (25..80), 5000 of 8192 MiB = 61 % (40..85).
        let s = minutes(0, &[(2.0, 5000.0); 120]);
        let r = replay(&input(&policy, &s, 120));
        assert!(r.changes.is_empty(), "{:?}", r.changes);
        assert_eq!(r.cpu.known_secs, 120 * MIN);
        assert_eq!(r.cpu.average_actual, Some(4.0));
        assert_eq!(r.cpu.average_simulated, Some(4.0));
        assert_eq!(r.timeline.len(), 120);
    }

    #[test]
    fn low_load_steps_down_as_the_policy_allows() {
        let policy = Policy::default();
        // 0.6 busy of 4 = 15 % < 25 %: down after 15 min (t = 15 min), to 3 (max step 1);
        // 0.6 / 3 = 20 %: the breach restarts at the next minute (16 min), 15 min more → 31 min,
        // to 2; 0.6 / 2 = 30 %: in the band.
        let s = minutes(0, &[(0.6, 5000.0); 60]);
        let r = replay(&input(&policy, &s, 60));
        let times: Vec<(u64, u64, u64)> = r
            .changes
            .iter()
            .map(|c| (c.time / MIN, c.from, c.to))
            .collect();
        assert_eq!(times, vec![(16, 4, 3), (32, 3, 2)]);
        assert_eq!(
            (r.cpu.changes_down, r.cpu.changes_up, r.cpu.flaps),
            (2, 0, 0)
        );
        assert_eq!(r.cpu.simulated_end, 2);
        // The minute of a decision still has the old size.
        assert_eq!(r.timeline[15].simulated_vcpus, 4);
        assert_eq!(r.timeline[15].action, "cpu down 4 -> 3");
        assert_eq!(r.timeline[16].simulated_vcpus, 3);
    }

    #[test]
    fn demand_above_the_simulated_size_is_capped_and_counted_above_high() {
        let mut policy = Policy::default();
        policy.cpu.scale_up = false;
        policy.cpu.scale_down = false;
        // 3.9 busy of 4 (97.5 %) for 10 minutes.
        let s = minutes(0, &[(3.9, 5000.0); 10]);
        let r = replay(&input(&policy, &s, 10));
        assert_eq!(r.cpu.above_high_actual_secs, 10 * MIN);
        assert_eq!(r.cpu.above_high_simulated_secs, 10 * MIN);
        assert!(r.changes.is_empty());
    }

    #[test]
    fn a_reversal_within_the_hour_is_a_flap() {
        let changes = vec![
            SimChange {
                time: 0,
                resource: Resource::Cpu,
                direction: Direction::Up,
                from: 2,
                to: 4,
                reason: String::new(),
            },
            SimChange {
                time: 3600,
                resource: Resource::Cpu,
                direction: Direction::Down,
                from: 4,
                to: 3,
                reason: String::new(),
            },
            SimChange {
                time: 7201,
                resource: Resource::Cpu,
                direction: Direction::Up,
                from: 3,
                to: 4,
                reason: String::new(),
            },
        ];
        let r = Tally::default().finish(&changes, Resource::Cpu, 2, 4);
        assert_eq!((r.changes_up, r.changes_down, r.flaps), (2, 1, 1));
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("cpu up 2 -> 4"), "cpu up 2 -> 4");
        assert_eq!(csv_field("a, \"b\""), "\"a, \"\"b\"\"\"");
    }

    #[test]
    fn schedule_windows_are_replayed_as_run_applies_them() {
        use crate::policy::{WindowEffect, WindowInForce};
        let policy = Policy::default();
        // Busy from the start: 3.8 of 4 vCPUs.
        let s = minutes(0, &[(3.8, 5000.0); 120]);
        let until = 60 * MIN;
        let freeze_first_hour = move |t: u64| -> Vec<WindowInForce> {
            if t < until {
                vec![WindowInForce {
                    name: "backup".into(),
                    when: "Sat 01:00..02:00".into(),
                    effect: WindowEffect::Freeze,
                    until,
                    until_local: "02:00".into(),
                }]
            } else {
                Vec::new()
            }
        };
        let free = replay(&input(&policy, &s, 120));
        let first_free = free.changes.first().expect("a busy VM grows").time;
        assert!(first_free < until, "{first_free}");
        let frozen = replay(&ReplayInput {
            windows: &freeze_first_hour,
            ..input(&policy, &s, 120)
        });
        let first = frozen.changes.first().expect("it grows after the window");
        assert_eq!(first.time, until, "the breach held through the freeze");
        assert!(frozen.changes.iter().all(|c| c.time >= until));
    }
}
