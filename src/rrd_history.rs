//! A VM's history as Proxmox VE keeps it (`rrddata`), for `recommend` and `simulate`.
//!
//! Proxmox keeps two useful timeframes per VM: `day` and `week`, each as AVERAGE and MAX
//! consolidations. PVE 9 keeps the last day at 60 s and the last week at 30 min; PVE 8 keeps 70
//! points of each (30 min over 35 h, 3 h over 8.75 days). The two are merged into one series of
//! intervals: the finer `day` points where they exist, the `week` points before that, clipped to
//! the requested window. Each point covers the step before its time, `(time − step, time]`.
//!
//! A field Proxmox leaves out (a gap, a stopped VM) is unknown, never 0; an impossible value
//! (CPU far above 100 %, negative memory) is unknown too.

use serde::Serialize;

use crate::config::{ClusterConfig, Config};
use crate::memory_source;
use crate::policy::{MemorySource, Policy};
use crate::pve::Client;
use crate::pve::parallel::{DEFAULT_PARALLELISM, map_bounded};
use crate::pve::types::{Consolidation, RrdPoint, Timeframe, VmConfig, VmResource, VmStatus};

const MIB: f64 = crate::units::MIB as f64;

/// One history point as the time it covers, `(start, end]` (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub start: u64,
    pub end: u64,
    /// The resolution of the point it came from (seconds), before any clipping.
    pub step: u64,
    /// Busy cores: `cpu × maxcpu`.
    pub busy: Option<f64>,
    /// vCPUs the VM had (`maxcpu`).
    pub vcpus: Option<f64>,
    /// Memory in use, MiB (`mem`).
    pub used_mib: Option<f64>,
    /// Memory the VM had, MiB (`maxmem`).
    pub memory_mib: Option<f64>,
    /// Memory as the host sees it, MiB (`memhost`, PVE 9).
    pub host_mib: Option<f64>,
}

impl Interval {
    /// Seconds covered.
    pub fn secs(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the interval holds the instant `t`.
    pub fn contains(&self, t: u64) -> bool {
        self.start < t && t <= self.end
    }

    fn from_point(time: u64, step: u64, p: &RrdPoint) -> Interval {
        let busy = match (p.cpu, p.maxcpu) {
            (Some(cpu), Some(max)) if valid_vcpus(max) => {
                crate::metrics::cpu_fraction_sample(cpu).map(|fraction| fraction * max)
            }
            _ => None,
        };
        Interval {
            start: time.saturating_sub(step),
            end: time,
            step,
            busy,
            vcpus: p.maxcpu.filter(|m| valid_vcpus(*m)),
            used_mib: p
                .mem
                .filter(|m| m.is_finite() && *m >= 0.0)
                .map(|m| m / MIB),
            memory_mib: p
                .maxmem
                .filter(|m| m.is_finite() && *m > 0.0)
                .map(|m| m / MIB),
            host_mib: p
                .memhost
                .filter(|m| m.is_finite() && *m >= 0.0)
                .map(|m| m / MIB),
        }
    }
}

fn valid_vcpus(v: f64) -> bool {
    v.is_finite() && v >= 1.0
}

/// Intervals in time order, not overlapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub intervals: Vec<Interval>,
}

impl Series {
    /// `fine` (e.g. `day`) where it has points, `coarse` (e.g. `week`) before that, both
    /// clipped to `(from, to]`.
    pub fn merge(fine: &[RrdPoint], coarse: &[RrdPoint], from: u64, to: u64) -> Series {
        let fine = intervals(fine);
        let boundary = fine.first().map(|i| i.start);
        let mut out: Vec<Interval> = intervals(coarse)
            .into_iter()
            .filter_map(|mut i| match boundary {
                Some(b) if i.start >= b => None,
                Some(b) => {
                    i.end = i.end.min(b);
                    Some(i)
                }
                None => Some(i),
            })
            .collect();
        out.extend(fine);
        let intervals = out
            .into_iter()
            .filter(|i| i.end > from && i.start < to)
            .map(|mut i| {
                i.start = i.start.max(from);
                i.end = i.end.min(to);
                i
            })
            .filter(|i| i.end > i.start)
            .collect();
        Series { intervals }
    }

    /// The interval holding the instant `t`.
    pub fn at(&self, t: u64) -> Option<&Interval> {
        let idx = self.intervals.partition_point(|i| i.end < t);
        self.intervals.get(idx).filter(|i| i.contains(t))
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// `(value, seconds)` of every interval where `f` is known.
    pub fn weighted(&self, f: impl Fn(&Interval) -> Option<f64>) -> Vec<(f64, u64)> {
        self.intervals
            .iter()
            .filter_map(|i| f(i).map(|v| (v, i.secs())))
            .collect()
    }

    /// The largest known value of `f`.
    pub fn peak(&self, f: impl Fn(&Interval) -> Option<f64>) -> Option<f64> {
        self.intervals
            .iter()
            .filter_map(f)
            .fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.max(v))))
    }

    /// How much of the series is known for `f`.
    pub fn coverage(&self, f: impl Fn(&Interval) -> Option<f64>) -> Coverage {
        let known: Vec<&Interval> = self.intervals.iter().filter(|i| f(i).is_some()).collect();
        let mut steps: Vec<u64> = known.iter().map(|i| i.step).collect();
        steps.sort_unstable();
        steps.dedup();
        Coverage {
            points: known.len(),
            known_secs: known.iter().map(|i| i.secs()).sum(),
            first: known.first().map(|i| i.start),
            last: known.last().map(|i| i.end),
            steps,
        }
    }
}

/// How much of a window a series knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    /// Known points.
    pub points: usize,
    /// Seconds covered by known points.
    pub known_secs: u64,
    /// Start of the first known point.
    pub first: Option<u64>,
    /// End of the last known point.
    pub last: Option<u64>,
    /// The resolutions (seconds per point) among the known points, finest first.
    pub steps: Vec<u64>,
}

impl Coverage {
    /// From the first to the last known point.
    pub fn span_secs(&self) -> u64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        }
    }

    /// The coarsest resolution used.
    pub fn coarsest(&self) -> Option<u64> {
        self.steps.last().copied()
    }
}

/// Points as intervals, in time order; each point covers the common step before its time.
/// Fewer than two timed points give nothing: their step (and so what they cover) is unknown.
fn intervals(points: &[RrdPoint]) -> Vec<Interval> {
    let mut timed: Vec<(u64, &RrdPoint)> = points
        .iter()
        .filter_map(|p| p.time.map(|t| (t, p)))
        .collect();
    timed.sort_by_key(|(t, _)| *t);
    timed.dedup_by_key(|(t, _)| *t);
    let mut diffs: Vec<u64> = timed.windows(2).map(|w| w[1].0 - w[0].0).collect();
    if diffs.is_empty() {
        return Vec::new();
    }
    diffs.sort_unstable();
    let step = diffs[diffs.len() / 2];
    timed
        .into_iter()
        .map(|(t, p)| Interval::from_point(t, step, p))
        .collect()
}

/// What was read about one VM.
#[derive(Debug, Clone)]
pub struct VmHistory {
    pub vm: VmResource,
    /// `config?current=1`, or why it could not be read.
    pub config: Result<VmConfig, String>,
    pub memory_source: MemorySource,
    /// AVERAGE points.
    pub average: Series,
    /// MAX points (empty unless asked for).
    pub max: Series,
    /// Reads that failed.
    pub errors: Vec<String>,
}

impl VmHistory {
    /// vCPUs the VM has now: from its config, else from `cluster/resources`.
    pub fn current_vcpus(&self) -> Option<u64> {
        match &self.config {
            Ok(c) => Some(c.vcpus()),
            Err(_) => self
                .vm
                .maxcpu
                .filter(|m| valid_vcpus(*m))
                .map(|m| m.round() as u64),
        }
    }

    /// Memory the VM has now (MiB): from its config, else from `cluster/resources`.
    pub fn current_memory_mib(&self) -> Option<u64> {
        self.config
            .as_ref()
            .ok()
            .and_then(|c| c.memory)
            .or_else(|| self.vm.maxmem.map(|b| b / crate::units::MIB))
            .filter(|m| *m > 0)
    }

    /// sockets × cores, when the config was read.
    /// sockets × cores of a VM; none for a container (its node's CPUs bound it).
    pub fn envelope(&self) -> Option<u64> {
        if self.vm.kind == crate::guest::GuestKind::Ct {
            return None;
        }
        self.config.as_ref().ok().map(VmConfig::max_vcpus)
    }
}

/// What to read.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// The window `(from, to]`.
    pub from: u64,
    pub to: u64,
    /// Also read the MAX consolidation.
    pub with_max: bool,
}

/// Reads one VM's config and history: `day`, and `week` when `day` does not reach back to
/// `from`; AVERAGE, and MAX when asked.
pub fn read(client: &Client, vm: &VmResource, req: Request) -> VmHistory {
    let mut errors = Vec::new();
    let config = client
        .guest_config_current(vm.kind, &vm.node, vm.vmid)
        .map_err(|e| e.to_string());
    let mut fetch = |tf: Timeframe, cf: Consolidation| match client
        .guest_rrddata(vm.kind, &vm.node, vm.vmid, tf, cf)
    {
        Ok(points) => points,
        Err(e) => {
            errors.push(format!("rrddata {} {}: {e}", tf.as_str(), cf.as_str()));
            Vec::new()
        }
    };
    let day = fetch(Timeframe::Day, Consolidation::Average);
    let need_week = intervals(&day).first().is_none_or(|i| i.start > req.from);
    let week = if need_week {
        fetch(Timeframe::Week, Consolidation::Average)
    } else {
        Vec::new()
    };
    let (day_max, week_max) = if req.with_max {
        let day_max = fetch(Timeframe::Day, Consolidation::Max);
        let week_max = if need_week {
            fetch(Timeframe::Week, Consolidation::Max)
        } else {
            Vec::new()
        };
        (day_max, week_max)
    } else {
        (Vec::new(), Vec::new())
    };
    let average = Series::merge(&day, &week, req.from, req.to);
    let max = Series::merge(&day_max, &week_max, req.from, req.to);
    let memory_source = memory_source(client, vm, config.as_ref().ok(), &average);
    VmHistory {
        vm: vm.clone(),
        config,
        memory_source,
        average,
        max,
        errors,
    }
}

/// How much history there was, for people and programs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryInfo {
    /// Known points used.
    pub points: usize,
    /// Seconds covered by known points.
    pub known_secs: u64,
    /// From the first to the last known point.
    pub span_secs: u64,
    /// The window asked for (`--since`).
    pub since_secs: u64,
    /// `known_secs` as a percentage of `since_secs`.
    pub coverage_percent: f64,
    /// Resolutions among the known points (seconds per point), finest first.
    pub resolution_secs: Vec<u64>,
    /// Unix time of the first and last known instant.
    pub first: Option<u64>,
    pub last: Option<u64>,
}

impl HistoryInfo {
    pub fn new(coverage: &Coverage, since_secs: u64) -> HistoryInfo {
        let pct = if since_secs == 0 {
            0.0
        } else {
            coverage.known_secs as f64 * 100.0 / since_secs as f64
        };
        HistoryInfo {
            points: coverage.points,
            known_secs: coverage.known_secs,
            span_secs: coverage.span_secs(),
            since_secs,
            coverage_percent: (pct * 10.0).round() / 10.0,
            resolution_secs: coverage.steps.clone(),
            first: coverage.first,
            last: coverage.last,
        }
    }

    /// `7d, 1728 points (60s/30m), 100%`.
    pub fn summary(&self) -> String {
        if self.points == 0 {
            return "none".to_string();
        }
        let steps: Vec<String> = self
            .resolution_secs
            .iter()
            .map(|s| crate::units::fmt_duration(std::time::Duration::from_secs(*s)))
            .collect();
        format!(
            "{}, {} points ({}), {:.0}%",
            crate::units::fmt_duration(std::time::Duration::from_secs(round_minutes(
                self.known_secs
            ))),
            self.points,
            steps.join("/"),
            self.coverage_percent.min(100.0)
        )
    }
}

/// Rounds to whole minutes for display (`6d23h59m` stays exact, seconds go).
fn round_minutes(secs: u64) -> u64 {
    secs / 60 * 60
}

/// The VMs of one cluster with their history and effective policy.
#[derive(Debug)]
pub struct ClusterHistory {
    pub name: String,
    /// Why the cluster could not be read at all.
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub vms: Vec<(VmHistory, Policy)>,
}

/// Reads every managed VM of a cluster (running or not; templates are skipped), or only
/// `only` (managed or not), with bounded parallelism.
pub fn read_cluster(
    config: &Config,
    cluster: &ClusterConfig,
    only: Option<u32>,
    req: Request,
) -> ClusterHistory {
    let mut out = ClusterHistory {
        name: cluster.name().to_string(),
        error: None,
        warnings: Vec::new(),
        vms: Vec::new(),
    };
    let client = match Client::new(cluster.target_ref()) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let resources = match client.resources() {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let mut selected: Vec<&VmResource> = Vec::new();
    for vm in &resources.vms {
        let managed = config.manages(vm.kind, vm.vmid, &vm.tags, vm.pool.as_deref());
        let wanted = match only {
            Some(id) => vm.vmid == id,
            None => managed,
        };
        if !wanted {
            continue;
        }
        if vm.template {
            out.warnings
                .push(format!("VM {} is a template: not sized", vm.vmid));
            continue;
        }
        if only.is_some() && !managed {
            out.warnings.push(format!(
                "VM {} is not selected by the config ([select]); its effective policy is used anyway",
                vm.vmid
            ));
        }
        selected.push(vm);
    }
    let histories = map_bounded(&selected, DEFAULT_PARALLELISM, |vm| read(&client, vm, req));
    out.vms = histories
        .into_iter()
        .map(|h| {
            let policy = config.policy_for(h.vm.kind, h.vm.vmid, &h.vm.tags, h.vm.pool.as_deref());
            (h, policy)
        })
        .collect();
    out
}

/// Where the memory figures come from: no balloon device → host-side; PVE 9's `memhost`
/// differing from `mem` → the guest's own; else ask the running VM whether its balloon driver
/// reports statistics.
fn memory_source(
    client: &Client,
    vm: &VmResource,
    config: Option<&VmConfig>,
    series: &Series,
) -> MemorySource {
    // A container's figure is its cgroup's own, always (see `memory_source::from_resource`).
    if vm.kind == crate::guest::GuestKind::Ct {
        return MemorySource::Guest;
    }
    if let Some(source) = config.and_then(memory_source::from_config) {
        return source;
    }
    if let Some(source) = source_from_memhost(series) {
        return source;
    }
    if let Some(source) = memory_source::from_resource(vm) {
        return source;
    }
    if vm.status != VmStatus::Running {
        return MemorySource::Unknown;
    }
    memory_source::probe(client, vm)
}

/// PVE 9 points carry both figures: any point where they differ by more than 1 MiB means `mem`
/// is the guest's own figure.
pub fn source_from_memhost(series: &Series) -> Option<MemorySource> {
    let pairs: Vec<(f64, f64)> = series
        .intervals
        .iter()
        .filter_map(|i| Some((i.used_mib?, i.host_mib?)))
        .collect();
    memory_source::from_memhost_pairs(&pairs)
}

/// The `q`-quantile (0..1) of values weighted by seconds: the smallest value such that at
/// least `q` of the known time was at or below it.
pub fn weighted_quantile(values: &[(f64, u64)], q: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, u64)> = values
        .iter()
        .copied()
        .filter(|(v, w)| v.is_finite() && *w > 0)
        .collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = sorted.iter().map(|(_, w)| w).sum();
    let needed = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (v, w) in &sorted {
        seen += w;
        if seen as f64 >= needed {
            return Some(*v);
        }
    }
    sorted.last().map(|(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(time: u64, cpu: f64, maxcpu: f64, mem_mib: f64) -> RrdPoint {
        RrdPoint {
            time: Some(time),
            cpu: Some(cpu),
            maxcpu: Some(maxcpu),
            mem: Some(mem_mib * MIB),
            maxmem: Some(4096.0 * MIB),
            memhost: None,
        }
    }

    fn gap(time: u64) -> RrdPoint {
        RrdPoint {
            time: Some(time),
            cpu: None,
            maxcpu: None,
            mem: None,
            maxmem: None,
            memhost: None,
        }
    }

    #[test]
    fn fine_points_win_and_coarse_fill_in_before_them() {
        // week: 1800 s points up to 9000; day: 60 s points from 7260 on.
        let week: Vec<RrdPoint> = (1..=5).map(|k| point(k * 1800, 0.5, 2.0, 100.0)).collect();
        let day: Vec<RrdPoint> = (121..=150)
            .map(|k| point(k * 60, 0.25, 4.0, 200.0))
            .collect();
        let s = Series::merge(&day, &week, 0, 9000);
        // Week points 1800..5400 whole, 7200 clipped at 7200 (the day starts at 7200).
        let coarse: Vec<&Interval> = s.intervals.iter().filter(|i| i.step == 1800).collect();
        assert_eq!(coarse.len(), 4);
        assert_eq!(coarse.last().map(|i| (i.start, i.end)), Some((5400, 7200)));
        assert_eq!(s.intervals.iter().filter(|i| i.step == 60).count(), 30);
        assert_eq!(s.at(7200).and_then(|i| i.busy), Some(1.0));
        assert_eq!(s.at(7201).and_then(|i| i.busy), Some(1.0));
        assert_eq!(s.at(7200).map(|i| i.step), Some(1800));
        assert_eq!(s.at(7201).map(|i| i.step), Some(60));
        assert!(s.at(9001).is_none());
        let c = s.coverage(|i| i.busy);
        assert_eq!((c.known_secs, c.span_secs()), (9000, 9000));
        assert_eq!(c.steps, vec![60, 1800]);
    }

    #[test]
    fn window_clips_and_gaps_stay_unknown() {
        let day = vec![
            point(60, 0.5, 2.0, 10.0),
            gap(120),
            point(180, -0.5, 2.0, 10.0), // impossible CPU: unknown
            point(240, 0.5, 2.0, 10.0),
        ];
        let s = Series::merge(&day, &[], 90, 240);
        assert_eq!(
            s.intervals.first().map(|i| (i.start, i.end)),
            Some((90, 120))
        );
        let c = s.coverage(|i| i.busy);
        assert_eq!(c.points, 1, "only 240 is known within (90, 240]");
        assert_eq!(c.known_secs, 60);
        assert_eq!(s.coverage(|i| i.used_mib).points, 2);
        assert_eq!(s.peak(|i| i.busy), Some(1.0));
    }

    #[test]
    fn a_saturated_point_above_one_counts_as_all_vcpus_busy() {
        // QEMU's I/O threads push Proxmox's figure above 1 on a saturated VM.
        let day = vec![point(60, 1.4, 2.0, 10.0), point(120, 0.5, 2.0, 10.0)];
        let s = Series::merge(&day, &[], 0, 120);
        assert_eq!(s.coverage(|i| i.busy).points, 2);
        assert_eq!(s.peak(|i| i.busy), Some(2.0));
    }

    #[test]
    fn a_single_point_has_no_known_span() {
        assert!(Series::merge(&[point(60, 0.5, 2.0, 1.0)], &[], 0, 100).is_empty());
    }

    #[test]
    fn quantile_is_weighted_by_time() {
        // 94 s at 1, 6 s at 10: p95 is 10; 96 s at 1: p95 is 1.
        assert_eq!(weighted_quantile(&[(1.0, 94), (10.0, 6)], 0.95), Some(10.0));
        assert_eq!(weighted_quantile(&[(10.0, 4), (1.0, 96)], 0.95), Some(1.0));
        assert_eq!(weighted_quantile(&[], 0.95), None);
        assert_eq!(weighted_quantile(&[(3.0, 1)], 0.95), Some(3.0));
    }

    #[test]
    fn memhost_tells_the_source() {
        let mut p = point(60, 0.5, 2.0, 1000.0);
        p.memhost = Some(3000.0 * MIB);
        let q = RrdPoint {
            time: Some(120),
            ..p.clone()
        };
        let s = Series::merge(&[p.clone(), q.clone()], &[], 0, 200);
        assert_eq!(source_from_memhost(&s), Some(MemorySource::Guest));
        let same = |mut p: RrdPoint| {
            p.memhost = p.mem;
            p
        };
        let s = Series::merge(&[same(p), same(q)], &[], 0, 200);
        assert_eq!(source_from_memhost(&s), Some(MemorySource::Host));
        let s = Series::merge(&[gap(60), gap(120)], &[], 0, 200);
        assert_eq!(source_from_memhost(&s), None);
    }
}
