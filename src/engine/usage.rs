//! Window usage of the managed VMs: `metrics/export` in one call, else `rrddata` per VM.

use super::*;

/// How long a cluster without `metrics/export` goes before the export is probed again.
const EXPORT_REPROBE_SECS: u64 = 3600;

/// What this run learned about the cluster's `metrics/export`.
pub(super) enum ExportAvailability {
    Available,
    /// Not there (501) or refused (403), since this time.
    Unavailable(u64),
    /// Not asked, or failed for a passing reason.
    Unknown,
}

/// Window usage of the managed VMs: one `metrics/export` call, else `rrddata` per VM (and
/// straight to `rrddata`, without asking, while the export is known to be unavailable).
/// Returns the usage, a sentence saying which source was used and why, and what was learned.
pub(super) fn read_usage(
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
                    "metrics/export not available (PVE older than 8.2.5)".to_string(),
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
