//! Window usage of the managed VMs: `metrics/export` in one call, else `rrddata` per VM.

use std::time::Duration;

use crate::metrics::{Source, Window};
use crate::report::{MetricsSourceKind, MetricsSourceReason, MetricsSourceUsed};

use super::*;

/// How long a cluster without `metrics/export` goes before the export is probed again.
const EXPORT_REPROBE_SECS: u64 = 3600;

/// How far back samples are read at most: what `metrics/export` keeps (180 old generations
/// of pvestatd's 10 s loop). Samples older than the previous run's newest are read so that no
/// minute goes unwatched, whatever the timer's interval or jitter, up to this.
pub(super) const LOOKBACK_LIMIT_SECS: u64 = 1800;

/// The first second to read: the window, or further back to just before the samples the
/// previous run saw last (`since`, less the short view that the first new sample needs).
fn read_from(window_start: u64, since: Option<u64>, now: u64) -> u64 {
    let wanted = since.map_or(window_start, |t| {
        window_start.min(t.saturating_sub(policy::SHORT_VIEW_SECS))
    });
    wanted.max(now.saturating_sub(LOOKBACK_LIMIT_SECS))
}

/// What this run learned about the cluster's `metrics/export`.
pub(super) enum ExportAvailability {
    Available,
    /// Not there (501) or refused (403), since this time.
    Unavailable(u64),
    /// Not asked, or failed for a passing reason.
    Unknown,
}

/// What reading the usage gave.
pub(super) struct UsageRead {
    pub usage: HashMap<u32, VmUsage>,
    /// Which source was used and why, for people.
    pub source: String,
    /// The same, typed.
    pub used: MetricsSourceUsed,
    pub export: ExportAvailability,
    /// Nodes whose VMs the export left out (read through `rrddata` instead), sorted.
    pub missing_nodes: Vec<String>,
    /// The windows read that are wider than the policy's.
    pub widened: Vec<Window>,
}

/// Window usage of the managed VMs: one `metrics/export` call, else `rrddata` per VM (and
/// straight to `rrddata`, without asking, while the export is known to be unavailable).
/// Running VMs the export has no sample of (their node could not be asked) are read through
/// `rrddata` in the same run. Each source is read over `window`, or over the smallest window
/// that holds `min_samples` of its points.
pub(super) fn read_usage(
    client: &Client,
    managed: &[&VmResource],
    window: Duration,
    min_samples: u32,
    now: u64,
    since: Option<u64>,
    export_unavailable_since: Option<u64>,
) -> UsageRead {
    let running: Vec<&VmResource> = managed
        .iter()
        .copied()
        .filter(|vm| vm.status == crate::pve::types::VmStatus::Running)
        .collect();
    let mut read = UsageRead {
        usage: HashMap::new(),
        source: String::new(),
        used: MetricsSourceUsed {
            source: MetricsSourceKind::None,
            reason: MetricsSourceReason::NoRunningVm,
        },
        export: ExportAvailability::Unknown,
        missing_nodes: Vec::new(),
        widened: Vec::new(),
    };
    if running.is_empty() {
        read.source = "none needed (no managed VM running)".to_string();
        return read;
    }
    let export_window = Window::for_source(Source::Export, window, min_samples);
    let rrd_window = Window::for_source(Source::Rrddata, window, min_samples);
    let skip_export =
        export_unavailable_since.filter(|since| now.saturating_sub(*since) < EXPORT_REPROBE_SECS);
    let (reason, fallback_reason) = if let Some(since) = skip_export {
        read.export = ExportAvailability::Unavailable(since);
        (
            MetricsSourceReason::KnownUnavailable,
            "metrics/export unavailable on this cluster (checked again hourly)".to_string(),
        )
    } else {
        let window_start = export_window.start(now);
        let start = read_from(window_start, since, now);
        let mut aggregator = WindowAggregator::new(start, now, running.iter().map(|vm| vm.vmid))
            .with_window_start(window_start);
        match client.metrics_export(start, |sample| aggregator.add(&sample)) {
            Ok(count) => {
                read.export = ExportAvailability::Available;
                read.source = format!("metrics/export ({count} samples)");
                read.used = MetricsSourceUsed {
                    source: MetricsSourceKind::Export,
                    reason: MetricsSourceReason::Complete,
                };
                push_widened(&mut read, &export_window);
                let nodes_seen = aggregator.nodes_seen().clone();
                read.usage = aggregator.finish();
                fill_gaps(
                    client,
                    &running,
                    &nodes_seen,
                    &rrd_window,
                    now,
                    since,
                    &mut read,
                );
                return read;
            }
            Err(e) => {
                let (export, reason, why) = export_failure(&e, now);
                read.export = export;
                (reason, why)
            }
        }
    };
    log::info!(
        "cluster {}: {fallback_reason}: reading rrddata of {} VMs instead",
        client.cluster(),
        running.len()
    );
    read.usage = read_rrddata(client, &running, &rrd_window, now, since);
    read.source = format!("rrddata per VM ({fallback_reason})");
    read.used = MetricsSourceUsed {
        source: MetricsSourceKind::Rrddata,
        reason,
    };
    push_widened(&mut read, &rrd_window);
    read
}

/// What a failed export call tells: whether the export is there at all, and why rrddata is
/// read instead (typed, and for people).
fn export_failure(e: &ApiError, now: u64) -> (ExportAvailability, MetricsSourceReason, String) {
    match e.kind {
        ApiErrorKind::NotImplemented => (
            ExportAvailability::Unavailable(now),
            MetricsSourceReason::NotImplemented,
            "metrics/export not available (PVE older than 8.2.5)".to_string(),
        ),
        ApiErrorKind::Permission => (
            ExportAvailability::Unavailable(now),
            MetricsSourceReason::Refused,
            "metrics/export refused (the token lacks Sys.Audit on /)".to_string(),
        ),
        _ => (
            ExportAvailability::Unknown,
            MetricsSourceReason::Failed,
            format!("metrics/export failed ({e})"),
        ),
    }
}

/// The export answered, but without a sample of some running VMs: the node that served it
/// skips, silently, every node it cannot ask (no answer within its timeout, offline, or
/// older than 8.2.5). Reads those VMs through `rrddata` and names the nodes left out.
fn fill_gaps(
    client: &Client,
    running: &[&VmResource],
    nodes_seen: &BTreeSet<String>,
    rrd_window: &Window,
    now: u64,
    since: Option<u64>,
    read: &mut UsageRead,
) {
    let lacking: Vec<&VmResource> = running
        .iter()
        .copied()
        .filter(|vm| !read.usage.get(&vm.vmid).is_some_and(VmUsage::has_samples))
        .collect();
    if lacking.is_empty() {
        return;
    }
    let mut missing: Vec<String> = lacking
        .iter()
        .filter(|vm| !nodes_seen.contains(&vm.node))
        .map(|vm| vm.node.clone())
        .collect();
    missing.sort();
    missing.dedup();
    log::info!(
        "cluster {}: metrics/export has no sample of {} running VMs{}: reading their rrddata",
        client.cluster(),
        lacking.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                " (nothing at all from {}: not answering the node that served the export, \
                 or older than PVE 8.2.5)",
                missing.join(", ")
            )
        }
    );
    read.usage
        .extend(read_rrddata(client, &lacking, rrd_window, now, since));
    read.used.reason = MetricsSourceReason::GapsFilled;
    read.source.push_str(&format!(
        "; rrddata for the {} VMs it lacked",
        lacking.len()
    ));
    if !missing.is_empty() {
        read.source.push_str(&format!(
            " (nothing from {} {})",
            if missing.len() == 1 { "node" } else { "nodes" },
            missing.join(", ")
        ));
    }
    push_widened(read, rrd_window);
    read.missing_nodes = missing;
}

/// Records a widened window, and says so in the source sentence.
fn push_widened(read: &mut UsageRead, window: &Window) {
    if let Some(note) = window.note() {
        read.source.push_str(&format!("; {note}"));
        read.widened.push(window.clone());
    }
}

/// `rrddata` of each VM, 8 at a time; a VM whose read fails is left without data.
fn read_rrddata(
    client: &Client,
    vms: &[&VmResource],
    window: &Window,
    now: u64,
    since: Option<u64>,
) -> HashMap<u32, VmUsage> {
    let window_start = window.start(now);
    let start = read_from(window_start, since, now);
    let results = map_bounded(vms, DEFAULT_PARALLELISM, |vm| {
        client
            .guest_rrddata(
                vm.kind,
                &vm.node,
                vm.vmid,
                Timeframe::Hour,
                Consolidation::Average,
            )
            .map(|points| usage_from_rrd(&points, start, window_start, now))
    });
    let mut usage = HashMap::new();
    for (vm, result) in vms.iter().zip(results) {
        match result {
            Ok(u) => {
                usage.insert(vm.vmid, u);
            }
            Err(e) => log::warn!("VM {}: rrddata failed: {e}", vm.vmid),
        }
    }
    usage
}
