//! API samples → per-VM utilisation over the policy window.
//!
//! Utilisation is computed against the VM's size *now*: busy cores and used bytes are
//! averaged over the window (each sample weighted by the size the VM had then), then divided
//! by the current vCPUs and memory. A VM resized inside the window is thus judged on what it
//! actually used. Missing or impossible samples are dropped, never read as 0.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::policy::fmt_duration;
use crate::pve::types::{MetricSample, RrdPoint};

const MIB: f64 = crate::units::MIB as f64;

/// Above this a CPU figure is not a measurement. Proxmox's `cpu` (qemu-server `vmstatus`) is
/// the CPU time of the whole QEMU process (vCPU threads, I/O threads, vhost workers) over
/// elapsed time × vCPUs, with no cap: a VM saturated with I/O reads above 1, but 64 times its
/// vCPUs is more than any host could give it.
const ABSURD_CPU_FRACTION: f64 = 64.0;

/// A CPU sample as a fraction of the VM's vCPUs, or `None` where it cannot be a measurement
/// (negative, NaN, absurd). Plausible values above 1 are a saturated VM: 1.0, never dropped.
pub fn cpu_fraction_sample(value: f64) -> Option<f64> {
    (value.is_finite() && (0.0..=ABSURD_CPU_FRACTION).contains(&value)).then(|| value.min(1.0))
}

/// One sample of one resource: what was in use (busy cores, or MiB) and the size the VM had
/// then (vCPUs, or MiB; `None` where the source did not say).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizedSample {
    /// The end of the interval the sample covers (Proxmox's figures are averages over the
    /// `step` seconds before their timestamp).
    pub t: u64,
    pub used: f64,
    pub size: Option<f64>,
}

/// Average use of one VM over the window, in absolute units, and the samples behind it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmUsage {
    /// Average busy vCPUs.
    pub busy_cpus: Option<f64>,
    /// Number of CPU samples behind `busy_cpus`.
    pub cpu_samples: u32,
    /// Average memory in use, MiB.
    pub used_mib: Option<f64>,
    /// Number of memory samples behind `used_mib`.
    pub mem_samples: u32,
    /// Every CPU sample read (which may reach further back than the window), oldest first.
    pub cpu_series: Vec<SizedSample>,
    /// Every memory sample read (MiB), oldest first.
    pub mem_series: Vec<SizedSample>,
    /// Seconds between the source's samples (10 for the export, 60 for rrddata).
    pub step_secs: u64,
    /// Where the window read starts (the policy's, or wider for a sparse source).
    pub window_start: u64,
}

impl VmUsage {
    /// Whether the source had any sample of this VM in the window.
    pub fn has_samples(&self) -> bool {
        self.cpu_samples > 0 || self.mem_samples > 0
    }

    /// The newest sample of either resource.
    pub fn newest(&self) -> Option<u64> {
        let last = |series: &[SizedSample]| series.last().map(|s| s.t);
        last(&self.cpu_series).max(last(&self.mem_series))
    }

    /// CPU as a fraction of `vcpus` (the VM's current count).
    pub fn cpu_fraction(&self, vcpus: u64) -> Option<f64> {
        let busy = self.busy_cpus?;
        (vcpus > 0).then(|| busy / vcpus as f64)
    }

    /// Memory as a fraction of `memory_mib` (the VM's current memory).
    pub fn memory_fraction(&self, memory_mib: u64) -> Option<f64> {
        let used = self.used_mib?;
        (memory_mib > 0).then(|| used / memory_mib as f64)
    }
}

/// What one VM's samples add up to. Kept small (running sums, and one entry per timestamp
/// for CPU): the aggregator holds one for each of thousands of VMs.
#[derive(Debug, Default)]
struct Accumulator {
    /// Per timestamp: `cpu_current` and `cpu_max` (NaN until seen), so that pairs can be
    /// matched. Samples come sorted by timestamp, so the entry wanted is almost always the
    /// last one.
    cpu: Vec<(u64, f64, f64)>,
    /// Per timestamp: `mem_used` and `mem_total` (bytes; NaN until seen).
    mem: Vec<(u64, f64, f64)>,
}

impl Accumulator {
    fn cpu_entry(&mut self, timestamp: u64) -> &mut (u64, f64, f64) {
        let index = match self.cpu.iter().rposition(|(t, _, _)| *t == timestamp) {
            Some(index) => index,
            None => {
                self.cpu.push((timestamp, f64::NAN, f64::NAN));
                self.cpu.len() - 1
            }
        };
        &mut self.cpu[index]
    }

    fn mem_entry(&mut self, timestamp: u64) -> &mut (u64, f64, f64) {
        let index = match self.mem.iter().rposition(|(t, _, _)| *t == timestamp) {
            Some(index) => index,
            None => {
                self.mem.push((timestamp, f64::NAN, f64::NAN));
                self.mem.len() - 1
            }
        };
        &mut self.mem[index]
    }
}

/// Collects `metrics/export` samples of the VMs we manage inside `[start, end]`, and the
/// nodes that sent any. The window's averages cover `[window_start, end]`; the series keep
/// every sample from `start` (earlier when the last run's samples are further back).
#[derive(Debug)]
pub struct WindowAggregator {
    start: u64,
    window_start: u64,
    end: u64,
    vms: HashMap<u32, Accumulator>,
    nodes: BTreeSet<String>,
}

impl WindowAggregator {
    /// Only samples of the VMs in `managed` are kept (the answer holds every guest).
    pub fn new(start: u64, end: u64, managed: impl IntoIterator<Item = u32>) -> Self {
        WindowAggregator {
            start,
            window_start: start,
            end,
            vms: managed
                .into_iter()
                .map(|id| (id, Accumulator::default()))
                .collect(),
            nodes: BTreeSet::new(),
        }
    }

    /// Averages over `[window_start, end]` only; samples before it still go into the series.
    pub fn with_window_start(mut self, window_start: u64) -> Self {
        self.window_start = window_start.max(self.start);
        self
    }

    /// The nodes whose own metrics (`node/NAME`) were in the window. The export leaves out,
    /// silently, every node it could not ask (no answer, or older than PVE 8.2.5): their VMs
    /// are missing too.
    pub fn nodes_seen(&self) -> &BTreeSet<String> {
        &self.nodes
    }

    pub fn add(&mut self, sample: &MetricSample) {
        if sample.timestamp < self.start || sample.timestamp > self.end {
            return;
        }
        if let Some(node) = sample.id.strip_prefix("node/") {
            if !self.nodes.contains(node) {
                self.nodes.insert(node.to_string());
            }
            return;
        }
        // VMs and containers share one id space (a vmid is unique cluster-wide), and
        // PullMetric.pm sends the same metric names for both.
        let Some(vmid) = sample
            .id
            .strip_prefix("qemu/")
            .or_else(|| sample.id.strip_prefix("lxc/"))
            .and_then(|id| id.parse::<u32>().ok())
        else {
            return;
        };
        let Some(acc) = self.vms.get_mut(&vmid) else {
            return;
        };
        let value = sample.value;
        if !value.is_finite() || value < 0.0 {
            return;
        }
        match sample.metric.as_str() {
            // A fraction of cpu_max, above 1 when QEMU's I/O threads add to busy vCPUs.
            "cpu_current" => {
                if let Some(fraction) = cpu_fraction_sample(value) {
                    acc.cpu_entry(sample.timestamp).1 = fraction;
                }
            }
            "cpu_max" if value >= 1.0 => {
                acc.cpu_entry(sample.timestamp).2 = value;
            }
            "mem_used" => {
                acc.mem_entry(sample.timestamp).1 = value;
            }
            "mem_total" if value > 0.0 => {
                acc.mem_entry(sample.timestamp).2 = value;
            }
            _ => {}
        }
    }

    pub fn finish(self) -> HashMap<u32, VmUsage> {
        let window_start = self.window_start;
        self.vms
            .into_iter()
            .map(|(vmid, acc)| {
                let known = |v: f64| (!v.is_nan()).then_some(v);
                let cpu_series: Vec<SizedSample> = acc
                    .cpu
                    .iter()
                    .filter(|(_, fraction, max)| !fraction.is_nan() && !max.is_nan())
                    .map(|&(t, fraction, max)| SizedSample {
                        t,
                        used: fraction * max,
                        size: Some(max),
                    })
                    .collect();
                let mem_series: Vec<SizedSample> = acc
                    .mem
                    .iter()
                    .filter(|(_, used, _)| !used.is_nan())
                    .map(|&(t, used, total)| SizedSample {
                        t,
                        used: used / MIB,
                        size: known(total).map(|b| b / MIB),
                    })
                    .collect();
                (vmid, usage_of(cpu_series, mem_series, window_start, 10))
            })
            .collect()
    }
}

/// The window's averages (from `window_start`) and the series.
fn usage_of(
    mut cpu_series: Vec<SizedSample>,
    mut mem_series: Vec<SizedSample>,
    window_start: u64,
    step_secs: u64,
) -> VmUsage {
    cpu_series.sort_by_key(|s| s.t);
    mem_series.sort_by_key(|s| s.t);
    let in_window = |series: &[SizedSample]| -> Vec<f64> {
        series
            .iter()
            .filter(|s| s.t >= window_start)
            .map(|s| s.used)
            .collect()
    };
    let busy = in_window(&cpu_series);
    let used = in_window(&mem_series);
    VmUsage {
        busy_cpus: mean(&busy),
        cpu_samples: busy.len() as u32,
        used_mib: mean(&used),
        mem_samples: used.len() as u32,
        cpu_series,
        mem_series,
        step_secs,
        window_start,
    }
}

/// Where a run's samples come from, by how far apart its points are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `cluster/metrics/export`: one point per pvestatd loop, every 10 s.
    Export,
    /// `rrddata` (timeframe hour): one averaged point a minute.
    Rrddata,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Export => "metrics/export",
            Source::Rrddata => "rrddata",
        }
    }

    fn step_secs(self) -> u64 {
        match self {
            Source::Export => 10,
            Source::Rrddata => 60,
        }
    }

    fn spacing(self) -> &'static str {
        match self {
            Source::Export => "one point every 10s",
            Source::Rrddata => "one point a minute",
        }
    }
}

/// The window one source is averaged over: the policy's, or wider where the source's points
/// are too far apart for `min_samples` of them to fit in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub source: Source,
    /// The policy's window.
    pub configured: Duration,
    /// The window read.
    pub used: Duration,
    pub min_samples: u32,
}

impl Window {
    /// The smallest window, in whole minutes (one run a minute), that holds `min_samples`
    /// points of `source`, plus one step: the newest point may not be there yet (Proxmox
    /// drops an rrddata row that is still empty just after the minute, and pvestatd's loop
    /// drifts).
    pub fn for_source(source: Source, configured: Duration, min_samples: u32) -> Window {
        let needed = (u64::from(min_samples) + 1)
            .saturating_mul(source.step_secs())
            .div_ceil(60)
            .saturating_mul(60);
        Window {
            source,
            configured,
            used: configured.max(Duration::from_secs(needed)),
            min_samples,
        }
    }

    pub fn is_widened(&self) -> bool {
        self.used > self.configured
    }

    /// The first second of the window ending at `now`.
    pub fn start(&self, now: u64) -> u64 {
        now.saturating_sub(self.used.as_secs())
    }

    /// Why the window was widened, e.g. `window widened from 1m to 4m: rrddata has one point
    /// a minute and min_samples is 3 (the newest point may not be in yet)`.
    pub fn note(&self) -> Option<String> {
        self.is_widened().then(|| {
            format!(
                "window widened from {} to {}: {} has {} and min_samples is {} (the newest \
                 point may not be in yet)",
                fmt_duration(self.configured.as_secs()),
                fmt_duration(self.used.as_secs()),
                self.source.name(),
                self.source.spacing(),
                self.min_samples
            )
        })
    }
}

/// Usage from `rrddata` points (the fallback where `metrics/export` is missing): the
/// averages over `[window_start, end]`, the series from `start`.
pub fn usage_from_rrd(points: &[RrdPoint], start: u64, window_start: u64, end: u64) -> VmUsage {
    let mut cpu_series = Vec::new();
    let mut mem_series = Vec::new();
    for point in points {
        let Some(t) = point.time.filter(|t| *t >= start && *t <= end) else {
            continue;
        };
        if let (Some(cpu), Some(max)) = (point.cpu, point.maxcpu)
            && let Some(fraction) = cpu_fraction_sample(cpu)
            && max >= 1.0
        {
            cpu_series.push(SizedSample {
                t,
                used: fraction * max,
                size: Some(max),
            });
        }
        if let Some(mem) = point.mem.filter(|m| m.is_finite() && *m >= 0.0) {
            mem_series.push(SizedSample {
                t,
                used: mem / MIB,
                size: point.maxmem.filter(|m| *m > 0.0).map(|m| m / MIB),
            });
        }
    }
    usage_of(cpu_series, mem_series, window_start.max(start), 60)
}

/// How a resource's samples look to a decision against the VM's size now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceView {
    /// Average use / current size over the window, from samples at the current size only.
    pub long: Option<f64>,
    pub long_samples: u32,
    /// Each sample newer than `after`, oldest first, with the short view at it.
    pub points: Vec<ViewPoint>,
    /// The newest sample of any size.
    pub newest: Option<u64>,
}

pub use crate::policy::ViewPoint;

/// The view of one resource: only samples at `current` size that are newer than
/// `valid_from` count (after a resize the new size is judged on its own samples).
pub fn resource_view(
    series: &[SizedSample],
    current: f64,
    valid_from: u64,
    after: Option<u64>,
    short: u64,
    window_start: u64,
) -> ResourceView {
    let newest = series.last().map(|s| s.t);
    if current <= 0.0 {
        return ResourceView {
            newest,
            ..ResourceView::default()
        };
    }
    // A size differing by less than half a unit is the same (MiB rounding, float vCPUs).
    let own: Vec<&SizedSample> = series
        .iter()
        .filter(|s| s.t > valid_from && s.size.is_none_or(|size| (size - current).abs() < 0.5))
        .collect();
    let long: Vec<f64> = own
        .iter()
        .filter(|s| s.t >= window_start)
        .map(|s| s.used)
        .collect();
    let mut points = Vec::new();
    // No sample since the last run (a run, `status` or a dry run within the same step): the
    // newest one it saw is the view, so that a breach is judged as it stands instead of on the
    // window's average. The policy ignores it for timing (it is not after `after`).
    let newest_own = own.len().checked_sub(1);
    for (i, sample) in own.iter().enumerate() {
        let seen = after.is_some_and(|a| sample.t <= a);
        let is_newest_seen = seen && Some(i) == newest_own && after == Some(sample.t);
        if seen && !is_newest_seen {
            continue;
        }
        let from = sample.t.saturating_sub(short);
        let recent: Vec<f64> = own[..=i]
            .iter()
            .rev()
            .take_while(|s| s.t > from)
            .map(|s| s.used)
            .collect();
        if let Some(m) = mean(&recent) {
            points.push(ViewPoint {
                t: sample.t,
                sample: sample.used / current,
                short: m / current,
            });
        }
    }
    ResourceView {
        long: mean(&long).map(|m| m / current),
        long_samples: long.len() as u32,
        points,
        newest,
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts: u64, id: &str, metric: &str, value: f64) -> MetricSample {
        MetricSample {
            timestamp: ts,
            id: id.into(),
            metric: metric.into(),
            value,
        }
    }

    #[test]
    fn busy_cores_follow_the_size_at_sample_time() {
        let mut agg = WindowAggregator::new(100, 200, [101]);
        // 2 vCPUs at 100 % then 4 vCPUs at 50 %: 2 busy cores throughout.
        for (ts, frac, max) in [(110, 1.0, 2.0), (120, 0.5, 4.0)] {
            agg.add(&sample(ts, "qemu/101", "cpu_current", frac));
            agg.add(&sample(ts, "qemu/101", "cpu_max", max));
        }
        let usage = &agg.finish()[&101];
        assert_eq!(usage.busy_cpus, Some(2.0));
        assert_eq!(usage.cpu_fraction(4), Some(0.5));
        assert_eq!(usage.cpu_samples, 2);
    }

    #[test]
    fn cpu_pairs_are_matched_by_timestamp_in_any_order() {
        let mut agg = WindowAggregator::new(100, 200, [101]);
        // All fractions first, then all sizes, one size twice (the last one counts), and a
        // fraction without a size.
        for (ts, frac) in [(110, 0.5), (120, 0.25), (130, 1.0)] {
            agg.add(&sample(ts, "qemu/101", "cpu_current", frac));
        }
        agg.add(&sample(120, "qemu/101", "cpu_max", 2.0));
        agg.add(&sample(110, "qemu/101", "cpu_max", 8.0));
        agg.add(&sample(120, "qemu/101", "cpu_max", 4.0));
        let usage = &agg.finish()[&101];
        // 0.5 × 8 and 0.25 × 4: 4 and 1 busy cores.
        assert_eq!(usage.busy_cpus, Some(2.5));
        assert_eq!(usage.cpu_samples, 2);
        assert_eq!(usage.used_mib, None);
    }

    #[test]
    fn a_containers_samples_count_under_its_vmid() {
        let mut agg = WindowAggregator::new(100, 200, [200]);
        agg.add(&sample(150, "lxc/200", "mem_used", 512.0 * 1048576.0));
        agg.add(&sample(150, "qemu/201", "mem_used", 1.0));
        let usage = &agg.finish()[&200];
        assert!(usage.has_samples(), "{usage:?}");
        assert_eq!(usage.mem_series.len(), 1);
    }

    #[test]
    fn samples_outside_the_window_or_impossible_are_ignored() {
        let mut agg = WindowAggregator::new(100, 200, [101]);
        agg.add(&sample(50, "qemu/101", "mem_used", 1.0));
        agg.add(&sample(150, "qemu/101", "mem_used", f64::NAN));
        agg.add(&sample(150, "qemu/101", "cpu_current", 70.0));
        agg.add(&sample(150, "qemu/101", "cpu_max", 2.0));
        agg.add(&sample(150, "qemu/102", "mem_used", 1.0));
        agg.add(&sample(150, "lxc/102", "mem_used", 1.0));
        let usage = &agg.finish()[&101];
        assert!(!usage.has_samples(), "{usage:?}");
        assert!(usage.cpu_series.is_empty() && usage.mem_series.is_empty());
        assert_eq!(usage.cpu_fraction(2), None, "no data is unknown, not 0");
    }

    #[test]
    fn a_saturated_vm_above_one_is_saturated_not_missing() {
        // 2 vCPUs, QEMU's I/O threads on top: Proxmox reads 1.15, 1.6, 1.02.
        let mut agg = WindowAggregator::new(100, 200, [101]);
        for (ts, frac) in [(110, 1.15), (120, 1.6), (130, 1.02)] {
            agg.add(&sample(ts, "qemu/101", "cpu_current", frac));
            agg.add(&sample(ts, "qemu/101", "cpu_max", 2.0));
        }
        let usage = &agg.finish()[&101];
        assert_eq!(usage.cpu_samples, 3);
        assert_eq!(usage.cpu_fraction(2), Some(1.0));
        let point = |time, cpu| RrdPoint {
            time: Some(time),
            cpu: Some(cpu),
            maxcpu: Some(2.0),
            mem: None,
            maxmem: None,
            memhost: None,
        };
        let usage = usage_from_rrd(&[point(120, 1.3), point(180, 0.5)], 100, 100, 200);
        assert_eq!(usage.cpu_samples, 2);
        assert_eq!(usage.busy_cpus, Some(1.5));
    }

    #[test]
    fn only_impossible_cpu_figures_are_dropped() {
        for bad in [-0.1, f64::NAN, f64::INFINITY, 65.0, 1e9] {
            assert_eq!(cpu_fraction_sample(bad), None, "{bad}");
        }
        for (value, fraction) in [(0.0, 0.0), (0.4, 0.4), (1.0, 1.0), (1.05, 1.0), (3.5, 1.0)] {
            assert_eq!(cpu_fraction_sample(value), Some(fraction), "{value}");
        }
    }

    #[test]
    fn nodes_that_sent_metrics_are_noticed() {
        let mut agg = WindowAggregator::new(100, 200, [101, 102]);
        agg.add(&sample(150, "node/pve1", "cpu_current", 0.5));
        agg.add(&sample(150, "node/pve1", "mem_used", 1.0));
        agg.add(&sample(50, "node/pve3", "cpu_current", 0.5));
        agg.add(&sample(150, "qemu/101", "mem_used", 1.0));
        let nodes: Vec<&str> = agg.nodes_seen().iter().map(String::as_str).collect();
        assert_eq!(nodes, ["pve1"], "pve3 only outside the window");
        let usage = agg.finish();
        assert!(usage[&101].has_samples());
        assert!(!usage[&102].has_samples());
    }

    #[test]
    fn a_window_too_short_for_the_source_is_widened() {
        let minute = Duration::from_secs(60);
        // rrddata: a point a minute; 3 samples need 4 minutes (one for the newest point).
        let w = Window::for_source(Source::Rrddata, minute, 3);
        assert_eq!(w.used, Duration::from_secs(240));
        assert!(w.is_widened());
        assert_eq!(w.start(1000), 760);
        let note = w.note().unwrap_or_default();
        assert!(
            note.starts_with("window widened from 1m to 4m: rrddata has one point a minute"),
            "{note}"
        );
        // Long enough already: kept.
        let w = Window::for_source(Source::Rrddata, 5 * minute, 3);
        assert_eq!((w.used, w.note()), (5 * minute, None));
        // The export's 10 s points fit 3 samples in a minute, not 10.
        assert!(!Window::for_source(Source::Export, minute, 3).is_widened());
        let w = Window::for_source(Source::Export, minute, 10);
        assert_eq!(w.used, 2 * minute, "110 s, in whole minutes");
    }

    #[test]
    fn a_resized_vm_is_judged_on_its_own_samples() {
        // Pinned at 2 vCPUs until 200, then 4 vCPUs (settle until 230), still pinned.
        let series: Vec<SizedSample> = (1..=40)
            .map(|k| {
                let t = k * 10;
                let size = if t <= 200 { 2.0 } else { 4.0 };
                SizedSample {
                    t,
                    used: size,
                    size: Some(size),
                }
            })
            .collect();
        let view = resource_view(&series, 4.0, 230, None, 60, 100);
        assert_eq!(
            view.long,
            Some(1.0),
            "the old samples (50 % of 4) do not count"
        );
        assert_eq!(view.long_samples, 17, "240..=400");
        assert_eq!(view.points.first().map(|p| p.t), Some(240));
        assert!(
            view.points
                .iter()
                .all(|p| p.short == 1.0 && p.sample == 1.0)
        );
        assert_eq!(view.newest, Some(400));
        // Only samples newer than the last run's are points.
        let view = resource_view(&series, 4.0, 230, Some(380), 60, 100);
        let times: Vec<u64> = view.points.iter().map(|p| p.t).collect();
        assert_eq!(times, [390, 400]);
        assert_eq!(view.points[0].short, 1.0, "the short view still looks back");
        // Nothing new since the last run: the newest sample it saw is the view, so that a
        // breach is judged as it stands, not on the window's average.
        let view = resource_view(&series, 4.0, 230, Some(400), 60, 100);
        let times: Vec<u64> = view.points.iter().map(|p| p.t).collect();
        assert_eq!(times, [400]);
        // An older sample than the last run saw is never a point again.
        let view = resource_view(&series, 4.0, 230, Some(410), 60, 100);
        assert!(view.points.is_empty());
    }

    #[test]
    fn rrd_points_with_gaps_count_only_known_values() {
        let points = vec![
            RrdPoint {
                time: Some(120),
                cpu: Some(0.25),
                maxcpu: Some(4.0),
                mem: Some(512.0 * MIB),
                maxmem: Some(2048.0 * MIB),
                memhost: None,
            },
            RrdPoint {
                time: Some(180),
                cpu: None,
                maxcpu: None,
                mem: None,
                maxmem: None,
                memhost: None,
            },
        ];
        let usage = usage_from_rrd(&points, 100, 100, 200);
        assert_eq!(usage.busy_cpus, Some(1.0));
        assert_eq!(usage.cpu_samples, 1);
        assert_eq!(usage.used_mib, Some(512.0));
    }
}
