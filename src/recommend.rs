//! `pvescale recommend`: right-sizing from the history Proxmox keeps. Changes nothing.
//!
//! - CPU: the busy cores of every AVERAGE point (`cpu × maxcpu`), weighted by the time the
//!   point covers; their 95th percentile `p95` is sized so that it sits at the policy's target
//!   utilisation with a margin on top:
//!   `vCPUs = ceil(p95 × (1 + margin) / target)`, then bounded by the policy's `min` and `max`
//!   and the live envelope (sockets × cores).
//! - Memory: the peak of the memory in use (MAX points) plus the policy's `memory_margin`,
//!   rounded up onto the DIMM grid, bounded by the policy's `min` and `max`. A host-side figure
//!   (no balloon statistics) is an estimate: it is never a reason to recommend less memory, and
//!   its confidence is low at best.
//! - Confidence: how much of `--since` the history covered, and how finely.

use serde::Serialize;

use crate::dimm;
use crate::guest::GuestKind;
use crate::policy::{MemorySource, Policy, ResourcePolicy};
use crate::pve::types::VmStatus;
use crate::report::{new_table, vm_label};
use crate::rrd_history::{
    ClusterHistory, Coverage, HistoryInfo, Series, VmHistory, weighted_quantile,
};

const DAY: u64 = 86_400;
/// Points coarser than this smooth short peaks away: medium confidence at best.
const FINE_ENOUGH_SECS: u64 = 1800;
/// The percentile of busy cores sized for.
pub const CPU_QUANTILE: f64 = 0.95;

/// How far a recommendation can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// No history at all.
    None,
    /// Less than a day of history, or memory from a host-side estimate.
    Low,
    /// At least a day, but less than 90 % of `--since`, or coarser than 30 minutes.
    Medium,
    /// At least 90 % of `--since` (and a day) at 30 minutes or finer.
    High,
}

impl Confidence {
    /// From how much of a window of `since` seconds a series knows.
    pub fn of(coverage: &Coverage, since: u64) -> Confidence {
        if coverage.points == 0 {
            Confidence::None
        } else if coverage.known_secs < DAY {
            Confidence::Low
        } else if coverage.known_secs.saturating_mul(10) < since.saturating_mul(9)
            || coverage.coarsest().is_some_and(|s| s > FINE_ENOUGH_SECS)
        {
            Confidence::Medium
        } else {
            Confidence::High
        }
    }

    fn word(self) -> &'static str {
        match self {
            Confidence::None => "none",
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// Saving, shortfall, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Recommended below current: this much could be freed.
    Saving,
    /// Recommended above current: the VM is short.
    Shortfall,
    RightSized,
    /// No recommendation (no history) or current size unknown.
    Unknown,
}

impl Verdict {
    fn of(current: Option<u64>, recommended: Option<u64>) -> (Option<i64>, Verdict) {
        match (current, recommended) {
            (Some(c), Some(r)) => {
                let change = r as i64 - c as i64;
                let verdict = match change {
                    0 => Verdict::RightSized,
                    x if x < 0 => Verdict::Saving,
                    _ => Verdict::Shortfall,
                };
                (Some(change), verdict)
            }
            _ => (None, Verdict::Unknown),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuRecommendation {
    /// vCPUs now.
    pub current: Option<u64>,
    pub recommended: Option<u64>,
    /// `recommended − current`: negative is a saving, positive a shortfall.
    pub change: Option<i64>,
    pub verdict: Verdict,
    /// 95th percentile of busy cores (AVERAGE points, weighted by time).
    pub p95_busy_cores: Option<f64>,
    /// Highest busy cores of any MAX point.
    pub peak_busy_cores: Option<f64>,
    /// Utilisation the p95 is sized to (percent).
    pub target_percent: f64,
    pub margin_percent: f64,
    /// `p95 × (1 + margin) / target`, before rounding up and bounds.
    pub unbounded: Option<f64>,
    /// Policy bounds and the live envelope (sockets × cores, when the config was read).
    pub min: u64,
    pub max: u64,
    pub envelope: Option<u64>,
    /// What held the recommendation: `policy min`, `policy max`, `envelope`.
    pub bound: Option<String>,
    pub confidence: Confidence,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryRecommendation {
    /// MiB now.
    pub current_mib: Option<u64>,
    pub recommended_mib: Option<u64>,
    /// `recommended − current` (MiB): negative is a saving, positive a shortfall.
    pub change_mib: Option<i64>,
    pub verdict: Verdict,
    /// Highest memory in use of any MAX point (MiB).
    pub peak_used_mib: Option<f64>,
    pub margin_percent: f64,
    /// `guest` (balloon statistics), `host` (host-side estimate) or `unknown`.
    pub source: MemorySource,
    /// Policy bounds, on the DIMM grid.
    pub min_mib: u64,
    pub max_mib: u64,
    /// What held the recommendation: `policy min`, `policy max`, `largest hotpluggable size`,
    /// `host-side estimate` (no saving is derived from one).
    pub bound: Option<String>,
    pub confidence: Confidence,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRecommendation {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    pub status: String,
    pub history: HistoryInfo,
    pub cpu: CpuRecommendation,
    pub memory: MemoryRecommendation,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterRecommendations {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub vms: Vec<VmRecommendation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendReport {
    /// Unix time of the report.
    pub time: u64,
    pub since_secs: u64,
    pub cpu_quantile: f64,
    pub clusters: Vec<ClusterRecommendations>,
}

/// Everything one VM's recommendation depends on.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub policy: &'a Policy,
    pub current_vcpus: Option<u64>,
    pub current_memory_mib: Option<u64>,
    /// sockets × cores, when known.
    pub envelope: Option<u64>,
    pub memory_source: MemorySource,
    /// VM (memory on the DIMM grid) or container (plain MiB).
    pub kind: GuestKind,
    pub average: &'a Series,
    pub max: &'a Series,
    pub since_secs: u64,
    /// CPU headroom on top of the p95 (percent).
    pub cpu_margin: f64,
}

/// `ceil(x)` tolerant of floating-point noise just above an integer.
fn ceil_units(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        (x - 1e-9).ceil() as u64
    } else {
        0
    }
}

/// The CPU recommendation.
pub fn size_cpu(inp: &Inputs<'_>) -> CpuRecommendation {
    let rp = &inp.policy.cpu;
    let target_percent = rp.target.unwrap_or((rp.low + rp.high) / 2.0);
    let target = (target_percent / 100.0).clamp(0.01, 1.0);
    let margin = inp.cpu_margin.max(0.0);
    let p95 = weighted_quantile(&inp.average.weighted(|i| i.busy), CPU_QUANTILE);
    let peak = if inp.max.is_empty() {
        inp.average.peak(|i| i.busy)
    } else {
        inp.max.peak(|i| i.busy)
    };
    let unbounded = p95.map(|p| p * (1.0 + margin / 100.0) / target);
    let (upper, upper_why) = match inp.envelope {
        Some(e) if e < rp.max => (e.max(1), "envelope"),
        _ => (rp.max.max(1), "policy max"),
    };
    let lower = rp.min.max(1).min(upper);
    let (recommended, bound) = match unbounded {
        Some(u) => {
            let wanted = ceil_units(u).max(1);
            if wanted > upper {
                (Some(upper), Some(upper_why.to_string()))
            } else if wanted < lower {
                (Some(lower), Some("policy min".to_string()))
            } else {
                (Some(wanted), None)
            }
        }
        None => (None, None),
    };
    let (change, verdict) = Verdict::of(inp.current_vcpus, recommended);
    CpuRecommendation {
        current: inp.current_vcpus,
        recommended,
        change,
        verdict,
        p95_busy_cores: p95.map(round3),
        peak_busy_cores: peak.map(round3),
        target_percent,
        margin_percent: margin,
        unbounded: unbounded.map(round3),
        min: rp.min,
        max: rp.max,
        envelope: inp.envelope,
        bound,
        confidence: Confidence::of(&inp.average.coverage(|i| i.busy), inp.since_secs),
    }
}

/// The memory recommendation.
pub fn size_memory(inp: &Inputs<'_>) -> MemoryRecommendation {
    let rp = &inp.policy.memory;
    let margin = inp.policy.memory_margin.max(0.0);
    let series = if inp.max.is_empty() {
        inp.average
    } else {
        inp.max
    };
    let peak = series.peak(|i| i.used_mib);
    let (mut recommended, mut bound, lower, upper) = match inp.kind {
        GuestKind::Vm => memory_on_grid(rp, peak, margin),
        GuestKind::Ct => memory_in_mib(rp, peak, margin),
    };
    let trusted = inp.memory_source == MemorySource::Guest;
    if !trusted
        && let (Some(r), Some(c)) = (recommended, inp.current_memory_mib)
        && r < c
    {
        recommended = Some(c);
        bound = Some("host-side estimate".to_string());
    }
    let (change_mib, verdict) = Verdict::of(inp.current_memory_mib, recommended);
    let mut confidence = Confidence::of(&series.coverage(|i| i.used_mib), inp.since_secs);
    if !trusted {
        confidence = confidence.min(Confidence::Low);
    }
    MemoryRecommendation {
        current_mib: inp.current_memory_mib,
        recommended_mib: recommended,
        change_mib,
        verdict,
        peak_used_mib: peak.map(|p| (p * 10.0).round() / 10.0),
        margin_percent: margin,
        source: inp.memory_source,
        min_mib: lower,
        max_mib: upper,
        bound,
        confidence,
    }
}

type MemorySizing = (Option<u64>, Option<String>, u64, u64);

/// A VM's memory: the peak plus the margin, on the DIMM grid within the policy's bounds.
fn memory_on_grid(rp: &ResourcePolicy, peak: Option<f64>, margin: f64) -> MemorySizing {
    let grid_max = dimm::max_on_grid();
    let upper = dimm::round_down(rp.max.min(grid_max)).unwrap_or(dimm::STATIC_MIB);
    let lower = dimm::round_up(rp.min.max(dimm::STATIC_MIB))
        .unwrap_or(grid_max)
        .min(upper);
    let (recommended, bound) = match peak {
        Some(p) => {
            let wanted = ceil_units(p * (1.0 + margin / 100.0)).max(1);
            match dimm::round_up(wanted) {
                Some(w) if w > upper => {
                    let why = if upper == grid_max {
                        "largest hotpluggable size"
                    } else {
                        "policy max"
                    };
                    (Some(upper), Some(why.to_string()))
                }
                Some(w) if w < lower => (Some(lower), Some("policy min".to_string())),
                Some(w) => (Some(w), None),
                None => (Some(upper), Some("largest hotpluggable size".to_string())),
            }
        }
        None => (None, None),
    };
    (recommended, bound, lower, upper)
}

/// A container's memory: the peak plus the margin in plain MiB (no grid), within the policy's
/// bounds.
fn memory_in_mib(rp: &ResourcePolicy, peak: Option<f64>, margin: f64) -> MemorySizing {
    let upper = rp.max;
    let lower = rp.min.max(64).min(upper);
    let (recommended, bound) = match peak {
        Some(p) => {
            let wanted = ceil_units(p * (1.0 + margin / 100.0)).max(1);
            if wanted > upper {
                (Some(upper), Some("policy max".to_string()))
            } else if wanted < lower {
                (Some(lower), Some("policy min".to_string()))
            } else {
                (Some(wanted), None)
            }
        }
        None => (None, None),
    };
    (recommended, bound, lower, upper)
}

pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One VM's recommendation from what was read about it.
pub fn recommend_vm(
    history: &VmHistory,
    policy: &Policy,
    since_secs: u64,
    cpu_margin: f64,
) -> VmRecommendation {
    let inputs = Inputs {
        policy,
        current_vcpus: history.current_vcpus(),
        current_memory_mib: history.current_memory_mib(),
        envelope: history.envelope(),
        memory_source: history.memory_source,
        kind: history.vm.kind,
        average: &history.average,
        max: &history.max,
        since_secs,
        cpu_margin,
    };
    let cpu = size_cpu(&inputs);
    let memory = size_memory(&inputs);
    let coverage = history.average.coverage(|i| i.busy);
    let info = HistoryInfo::new(&coverage, since_secs);
    let mut notes = Vec::new();
    if history.vm.status != VmStatus::Running {
        notes.push(format!(
            "VM is {} now: sized from the time it ran",
            history.vm.status.as_str()
        ));
    }
    if coverage.points == 0 {
        notes.push("no history: nothing to recommend".to_string());
    } else if coverage.known_secs < DAY {
        notes.push("less than a day of history: a daily cycle is not seen".to_string());
    }
    if let Some(coarsest) = coverage.coarsest().filter(|s| *s > FINE_ENOUGH_SECS) {
        notes.push(format!(
            "history in {} steps: short peaks are averaged away",
            crate::units::fmt_duration(std::time::Duration::from_secs(coarsest))
        ));
    }
    match &history.config {
        // A container has nothing to enable (`check` says what is limited).
        Ok(_) if history.vm.kind == GuestKind::Ct => {}
        Ok(config) => {
            if !config.cpu_hotplug() {
                notes.push("cpu hotplug is off: a new size needs a cold restart".to_string());
            }
            if !config.memory_hotplug() || !config.numa {
                notes.push(
                    "memory hotplug (with numa) is off: a new size needs a cold restart"
                        .to_string(),
                );
            }
        }
        Err(e) => notes.push(format!(
            "config not readable ({e}): the envelope (sockets × cores) is unknown"
        )),
    }
    match memory.source {
        MemorySource::Guest => {}
        MemorySource::Host => notes.push(
            "memory is a host-side estimate (no balloon statistics): it counts memory the \
             guest once touched and QEMU's own, so no saving is derived from it"
                .to_string(),
        ),
        MemorySource::Unknown => notes.push(
            "the source of the memory figure is unknown (balloon statistics?): no saving is \
             derived from it"
                .to_string(),
        ),
    }
    if !policy.cpu.enabled {
        notes.push("cpu is not managed by the policy (enabled = false)".to_string());
    }
    if !policy.memory.enabled {
        notes.push("memory is not managed by the policy (enabled = false)".to_string());
    }
    let error = (!history.errors.is_empty()).then(|| history.errors.join("; "));
    VmRecommendation {
        vmid: history.vm.vmid,
        name: history.vm.name.clone().unwrap_or_default(),
        node: history.vm.node.clone(),
        status: history.vm.status.as_str().to_string(),
        history: info,
        cpu,
        memory,
        notes,
        error,
    }
}

pub fn cluster_recommendations(
    read: ClusterHistory,
    since: u64,
    cpu_margin: f64,
) -> ClusterRecommendations {
    ClusterRecommendations {
        vms: read
            .vms
            .iter()
            .map(|(h, p)| recommend_vm(h, p, since, cpu_margin))
            .collect(),
        name: read.name,
        error: read.error,
        warnings: read.warnings,
    }
}

fn signed(change: i64) -> String {
    match change {
        0 => "±0".to_string(),
        c if c > 0 => format!("+{c}"),
        c => format!("−{}", c.unsigned_abs()),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn cpu_cell(c: &CpuRecommendation) -> String {
    let mut text = format!("{} → {}", opt(c.current), opt(c.recommended));
    if let Some(change) = c.change {
        text.push_str(&format!(" ({})", signed(change)));
    }
    if let Some(bound) = &c.bound {
        text.push_str(&format!("\nat {bound}"));
    }
    text
}

fn memory_cell(m: &MemoryRecommendation) -> String {
    let mut text = format!("{} → {} MiB", opt(m.current_mib), opt(m.recommended_mib));
    if let Some(change) = m.change_mib {
        text.push_str(&format!(" ({})", signed(change)));
    }
    if let Some(bound) = &m.bound {
        text.push_str(&format!("\nat {bound}"));
    }
    text
}

/// The table for people, and a summary line.
pub fn render(report: &RecommendReport) -> String {
    let mut table = new_table(&[
        "Cluster",
        "VM",
        "vCPUs now → rec.",
        "Busy cores p95 / peak",
        "Memory now → rec.",
        "Used peak (source)",
        "History",
        "Confidence cpu / mem",
        "Notes",
    ]);
    let mut out = String::new();
    let mut totals = Totals::default();
    for cluster in &report.clusters {
        if let Some(error) = &cluster.error {
            out.push_str(&format!("cluster {}: FAILED: {error}\n", cluster.name));
        }
        for vm in &cluster.vms {
            totals.add(vm);
            let busy = match (vm.cpu.p95_busy_cores, vm.cpu.peak_busy_cores) {
                (Some(p), Some(k)) => format!("{p:.2} / {k:.2}"),
                (Some(p), None) => format!("{p:.2} / ?"),
                _ => "?".to_string(),
            };
            let used = vm.memory.peak_used_mib.map_or_else(
                || "?".to_string(),
                |p| format!("{p:.0} MiB ({})", source_word(vm.memory.source)),
            );
            let mut notes = vm.notes.clone();
            if let Some(e) = &vm.error {
                notes.insert(0, format!("error: {e}"));
            }
            table.add_row(vec![
                cluster.name.clone(),
                vm_label(vm.vmid, &vm.name),
                cpu_cell(&vm.cpu),
                busy,
                memory_cell(&vm.memory),
                used,
                vm.history.summary(),
                format!(
                    "{} / {}",
                    vm.cpu.confidence.word(),
                    vm.memory.confidence.word()
                ),
                notes.join("\n"),
            ]);
        }
    }
    if totals.vms > 0 {
        out.push_str(&table.to_string());
        out.push('\n');
    }
    out.push_str(&totals.line(report));
    out.push('\n');
    out
}

fn source_word(source: MemorySource) -> &'static str {
    match source {
        MemorySource::Guest => "guest",
        MemorySource::Host => "host",
        MemorySource::Unknown => "unknown",
    }
}

#[derive(Default)]
struct Totals {
    vms: usize,
    cpu_saving: u64,
    cpu_shortfall: u64,
    mem_saving: u64,
    mem_shortfall: u64,
}

impl Totals {
    fn add(&mut self, vm: &VmRecommendation) {
        self.vms += 1;
        match vm.cpu.change {
            Some(c) if c < 0 => self.cpu_saving += c.unsigned_abs(),
            Some(c) => self.cpu_shortfall += c.unsigned_abs(),
            None => {}
        }
        match vm.memory.change_mib {
            Some(c) if c < 0 => self.mem_saving += c.unsigned_abs(),
            Some(c) => self.mem_shortfall += c.unsigned_abs(),
            None => {}
        }
    }

    fn line(&self, report: &RecommendReport) -> String {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{}, history of the last {} (p{:.0} of busy cores at the target utilisation; \
             memory peak + margin on the DIMM grid): {} and {} could be freed, {} and {} \
             short",
            plural(self.vms as u64, "VM", "VMs"),
            crate::units::fmt_duration(std::time::Duration::from_secs(report.since_secs)),
            report.cpu_quantile * 100.0,
            plural(self.cpu_saving, "vCPU", "vCPUs"),
            crate::units::fmt_mib(self.mem_saving),
            plural(self.cpu_shortfall, "vCPU", "vCPUs"),
            crate::units::fmt_mib(self.mem_shortfall),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rrd_history::Interval;

    fn series(values: &[(u64, u64, f64, f64)]) -> Series {
        // (start, end, busy, used MiB)
        Series {
            intervals: values
                .iter()
                .map(|&(start, end, busy, used)| Interval {
                    start,
                    end,
                    step: 60,
                    busy: Some(busy),
                    vcpus: Some(4.0),
                    used_mib: Some(used),
                    memory_mib: Some(8192.0),
                    host_mib: None,
                })
                .collect(),
        }
    }

    fn inputs<'a>(policy: &'a Policy, avg: &'a Series, max: &'a Series) -> Inputs<'a> {
        Inputs {
            policy,
            current_vcpus: Some(4),
            current_memory_mib: Some(8192),
            envelope: Some(8),
            memory_source: MemorySource::Guest,
            kind: GuestKind::Vm,
            average: avg,
            max,
            since_secs: 7 * DAY,
            cpu_margin: 10.0,
        }
    }

    #[test]
    fn cpu_sizes_the_p95_at_the_target_with_margin() {
        let policy = Policy::default(); // target (25 + 80) / 2 = 52.5 %
        // 7 days: 6.5 days at 1.0 busy core, half a day (7.1 %) at 3.0.
        let avg = series(&[(0, 561_600, 1.0, 1000.0), (561_600, 604_800, 3.0, 1000.0)]);
        let none = Series::default();
        let cpu = size_cpu(&inputs(&policy, &avg, &none));
        // p95 = 3.0 (more than 5 % of the time at 3.0): ceil(3.0 × 1.1 / 0.525) = ceil(6.29) = 7.
        assert_eq!(cpu.p95_busy_cores, Some(3.0));
        assert_eq!(cpu.recommended, Some(7));
        assert_eq!((cpu.change, cpu.verdict), (Some(3), Verdict::Shortfall));
        assert_eq!(cpu.confidence, Confidence::High);
        // The envelope holds it.
        let mut inp = inputs(&policy, &avg, &none);
        inp.envelope = Some(6);
        let cpu = size_cpu(&inp);
        assert_eq!(cpu.recommended, Some(6));
        assert_eq!(cpu.bound.as_deref(), Some("envelope"));
    }

    #[test]
    fn cpu_never_below_the_policy_minimum() {
        let mut policy = Policy::default();
        policy.cpu.min = 2;
        let avg = series(&[(0, 2 * DAY, 0.1, 1000.0)]);
        let none = Series::default();
        let cpu = size_cpu(&inputs(&policy, &avg, &none));
        // ceil(0.1 × 1.1 / 0.525) = 1, held at min 2.
        assert_eq!(cpu.recommended, Some(2));
        assert_eq!(cpu.bound.as_deref(), Some("policy min"));
        assert_eq!(cpu.verdict, Verdict::Saving);
        assert_eq!(cpu.confidence, Confidence::Medium, "2 of 7 days");
    }

    #[test]
    fn memory_is_the_peak_plus_margin_on_the_grid() {
        let policy = Policy::default(); // memory_margin 15 %
        let avg = series(&[(0, 7 * DAY, 1.0, 2000.0)]);
        let max = series(&[(0, 7 * DAY, 1.0, 3000.0)]);
        let m = size_memory(&inputs(&policy, &avg, &max));
        // 3000 × 1.15 = 3450 → 3584 (1024 + 5 × 512).
        assert_eq!(m.recommended_mib, Some(3584));
        assert_eq!(m.change_mib, Some(3584 - 8192));
        assert_eq!(m.confidence, Confidence::High);
    }

    #[test]
    fn host_side_memory_gives_no_saving_and_low_confidence() {
        let policy = Policy::default();
        let avg = series(&[(0, 7 * DAY, 1.0, 2000.0)]);
        let mut inp = inputs(&policy, &avg, &avg);
        inp.memory_source = MemorySource::Host;
        let m = size_memory(&inp);
        assert_eq!(m.recommended_mib, Some(8192));
        assert_eq!(m.bound.as_deref(), Some("host-side estimate"));
        assert_eq!(m.confidence, Confidence::Low);
    }

    #[test]
    fn no_history_is_no_recommendation() {
        let policy = Policy::default();
        let none = Series::default();
        let inp = inputs(&policy, &none, &none);
        let (cpu, mem) = (size_cpu(&inp), size_memory(&inp));
        assert_eq!((cpu.recommended, cpu.verdict), (None, Verdict::Unknown));
        assert_eq!(mem.recommended_mib, None);
        assert_eq!(cpu.confidence, Confidence::None);
    }

    #[test]
    fn less_than_a_day_is_low_confidence() {
        let policy = Policy::default();
        let avg = series(&[(0, DAY - 60, 1.0, 2000.0)]);
        let none = Series::default();
        assert_eq!(
            size_cpu(&inputs(&policy, &avg, &none)).confidence,
            Confidence::Low
        );
    }
}
