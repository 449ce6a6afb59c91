//! What a run or `status` tells a person: tables and summary lines (comfy-table), and JSON,
//! all rendered from the typed run record (`crate::record`).

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use crate::guest::GuestKind;
use crate::policy::{ByWindow, Resource, WindowInForce};

mod status_table;
pub use status_table::render_status;

pub use crate::record::{
    ActionKind, ClusterReport, MemorySourceShown, MetricsSourceKind, MetricsSourceReason,
    MetricsSourceUsed, ResourceReport, RunReport, Summary, UnsettledWrites, VmReport,
    WidenedWindow, WriteOutcome,
};

/// The run summary for people: what changed or was planned, and why.
pub fn render_run(report: &RunReport) -> String {
    if report.all_standby() {
        return standby_lines(report);
    }
    let mut table = new_table(&[
        "Cluster", "VM", "Node", "Resource", "Action", "Reason", "Result",
    ]);
    let mut rows = 0;
    for cluster in &report.clusters {
        for vm in &cluster.vms {
            for (name, r) in vm.resources() {
                // A real run lists what it did or could not do; a dry run shows the whole plan.
                let interesting = report.dry_run
                    || r.is_change()
                    || r.action == ActionKind::Blocked
                    || r.outcome.is_some();
                if !interesting {
                    continue;
                }
                rows += 1;
                table.add_row(vec![
                    cluster.name.clone(),
                    vm_label(vm.vmid, &vm.name),
                    vm.node.clone(),
                    name.to_string(),
                    action_label(r, name, vm.kind),
                    r.reason.clone(),
                    match &r.outcome {
                        Some(written) => written.to_string(),
                        None if report.dry_run && r.is_change() => {
                            "dry run: not applied".to_string()
                        }
                        None => String::new(),
                    },
                ]);
            }
            for note in &vm.notes {
                rows += 1;
                table.add_row(vec![
                    cluster.name.clone(),
                    vm_label(vm.vmid, &vm.name),
                    vm.node.clone(),
                    "-".to_string(),
                    "note".to_string(),
                    note.clone(),
                    String::new(),
                ]);
            }
            if let Some(error) = &vm.error {
                rows += 1;
                table.add_row(vec![
                    cluster.name.clone(),
                    vm_label(vm.vmid, &vm.name),
                    vm.node.clone(),
                    "-".to_string(),
                    "error".to_string(),
                    error.clone(),
                    "failed".to_string(),
                ]);
            }
        }
    }
    let mut out = cluster_failures(report);
    if rows > 0 {
        out.push_str(&table.to_string());
        out.push('\n');
    }
    out.push_str(&window_lines(report));
    out.push_str(&summary_line(report));
    out.push('\n');
    out
}

/// One line: `dry run: 12 VMs managed, 2 would change, 1 blocked, 0 failed`.
pub fn summary_line(report: &RunReport) -> String {
    let s = &report.summary;
    // "guests" once containers are among them; "VMs" as before where they are not.
    let with_containers = report
        .clusters
        .iter()
        .flat_map(|c| &c.vms)
        .any(|vm| vm.kind == GuestKind::Ct);
    let guests = if with_containers { "guests" } else { "VMs" };
    let mut line = if report.dry_run {
        format!(
            "dry run: {} {guests} managed, {} would change, {} blocked, {} failed (nothing was \
             changed)",
            s.managed, s.planned, s.blocked, s.failed
        )
    } else {
        format!(
            "{} {guests} managed, {} changed, {} blocked, {} failed",
            s.managed, s.changed, s.blocked, s.failed
        )
    };
    match s.failed_clusters {
        0 => {}
        1 => line.push_str(", 1 cluster failed"),
        n => line.push_str(&format!(", {n} clusters failed")),
    }
    match s.notify_failed {
        0 => {}
        1 => line.push_str(", 1 notification channel failed"),
        n => line.push_str(&format!(", {n} notification channels failed")),
    }
    for cluster in &report.clusters {
        if let Some(nodes) = missing_nodes(cluster) {
            line.push_str(&format!(
                "; {}: {nodes} missing from metrics/export (read through rrddata)",
                cluster.name
            ));
        }
    }
    line
}

/// `node pve2` or `nodes pve2, pve3`, when the export left any out.
fn missing_nodes(cluster: &ClusterReport) -> Option<String> {
    match cluster.export_missing_nodes.as_slice() {
        [] => None,
        [one] => Some(format!("node {one}")),
        many => Some(format!("nodes {}", many.join(", "))),
    }
}

/// Per cluster read: where its metrics came from (with any widened window and any node
/// missing from the export).
fn metrics_lines(report: &RunReport) -> String {
    let mut out = standby_lines(report);
    for c in &report.clusters {
        if let Some(active) = &c.active {
            out.push_str(&format!("cluster {}: {active}\n", c.name));
        }
        if c.error.is_none() && !c.metrics_source.is_empty() {
            out.push_str(&format!(
                "cluster {}: metrics from {}\n",
                c.name, c.metrics_source
            ));
        }
    }
    out
}

/// The `status` table: one row per managed VM.
/// `status -v`: every reason in full, wrapped where it must.
pub fn render_status_detailed(report: &RunReport) -> String {
    let mut table = new_table(&[
        "Cluster",
        "Node",
        "VMID",
        "Type",
        "Name",
        "vCPUs",
        "CPU %",
        "Memory",
        "Mem %",
        "Mem from",
        "Live scaling",
        "Next run",
        "Wait",
    ]);
    for cluster in &report.clusters {
        for vm in &cluster.vms {
            let vcpus = match vm.max_vcpus {
                Some(max) => format!("{} / {max}", vm.vcpus),
                None => vm.vcpus.to_string(),
            };
            let next = vm
                .resources()
                .iter()
                .map(|(_, r)| r.reason.clone())
                .collect::<Vec<_>>()
                .join("\n");
            let wait = vm
                .resources()
                .iter()
                .filter_map(|(name, r)| r.wait.as_ref().map(|w| format!("{name}: {w}")))
                .collect::<Vec<_>>()
                .join("\n");
            table.add_row(vec![
                cluster.name.clone(),
                vm.node.clone(),
                vm.vmid.to_string(),
                vm.kind.to_string(),
                vm.name.clone(),
                vcpus,
                with_stall(percent(vm.cpu_percent), vm.cpu_pressure_percent),
                format!("{} MiB", vm.memory_mib),
                with_stall(percent(vm.memory_percent), vm.memory_pressure_percent),
                vm.memory_source.to_string(),
                vm.readiness.clone(),
                vm.error.clone().unwrap_or(next),
                wait,
            ]);
        }
    }
    let mut out = cluster_failures(report);
    out.push_str(&metrics_lines(report));
    out.push_str(&table.to_string());
    out.push('\n');
    out
}

/// One line per `[[schedule]]` window in force: what it does, until when, for how many VMs,
/// and the changes it prevented this run.
fn window_lines(report: &RunReport) -> String {
    const SHOWN: usize = 5;
    let mut out = String::new();
    for cluster in &report.clusters {
        let mut windows: Vec<(&WindowInForce, usize, Vec<String>)> = Vec::new();
        for vm in &cluster.vms {
            for w in &vm.windows {
                match windows.iter_mut().find(|(seen, ..)| seen.name == w.name) {
                    Some(entry) => entry.1 += 1,
                    None => windows.push((w, 1, Vec::new())),
                }
            }
            for (resource, r) in vm.resources() {
                if let Some(ByWindow::Prevented {
                    window, from, to, ..
                }) = &r.window
                    && let Some(entry) = windows.iter_mut().find(|(w, ..)| &w.name == window)
                {
                    let unit = if resource == Resource::Memory {
                        " MiB"
                    } else {
                        ""
                    };
                    entry
                        .2
                        .push(format!("VM {} {resource} {from}→{to}{unit}", vm.vmid));
                }
            }
        }
        for (w, vms, prevented) in windows {
            out.push_str(&format!(
                "cluster {}: {} in force until {}: {} for {vms} VM{}",
                cluster.name,
                w.label(),
                w.until_local,
                w.effect,
                if vms == 1 { "" } else { "s" }
            ));
            if !prevented.is_empty() {
                let more = prevented.len().saturating_sub(SHOWN);
                out.push_str(&format!(
                    "; prevented {}",
                    prevented[..prevented.len().min(SHOWN)].join(", ")
                ));
                if more > 0 {
                    out.push_str(&format!(" and {more} more"));
                }
            }
            out.push('\n');
        }
    }
    out
}

/// One line per cluster this run left to another node (or that has no quorum).
fn standby_lines(report: &RunReport) -> String {
    report
        .clusters
        .iter()
        .filter_map(|c| c.standby.as_ref())
        .map(|line| format!("{line}\n"))
        .collect()
}

/// One line per cluster that could not be read at all.
fn cluster_failures(report: &RunReport) -> String {
    report
        .clusters
        .iter()
        .filter_map(|c| {
            c.error
                .as_ref()
                .map(|e| format!("cluster {}: FAILED: {e}\n", c.name))
        })
        .collect()
}

/// The look of every table pvescale prints.
pub fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(180)
        .set_header(header.to_vec());
    table
}

/// `101 (web1)`, or `101` for a VM without a name.
pub(crate) fn vm_label(vmid: u32, name: &str) -> String {
    if name.is_empty() {
        vmid.to_string()
    } else {
        format!("{vmid} ({name})")
    }
}

/// Pretty JSON with a final newline, for `--output json`.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String, crate::error::Failure> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::Failure::Runtime(anyhow::anyhow!("cannot encode JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

fn action_label(r: &ResourceReport, resource: Resource, kind: GuestKind) -> String {
    let unit = match (resource, kind) {
        (Resource::Cpu, GuestKind::Vm) => " vCPUs",
        (Resource::Cpu, GuestKind::Ct) => " cores",
        (Resource::Memory, _) => " MiB",
    };
    match (r.from, r.to) {
        (Some(from), Some(to)) => format!("{} {from} → {to}{unit}", r.action),
        _ => r.action.to_string(),
    }
}

/// `97 (stall 47)`: a container's own pressure beside its utilisation, where read.
fn with_stall(cell: String, pressure: Option<f64>) -> String {
    match pressure {
        Some(p) => format!("{cell} (stall {p:.0})"),
        None => cell,
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_string(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_nodes_missing_from_the_export() {
        let mut lab = ClusterReport::new("lab");
        lab.export_missing_nodes = vec!["pve2".into(), "pve3".into()];
        let mut other = ClusterReport::new("other");
        other.export_missing_nodes = vec!["b1".into()];
        let report = RunReport::new(false, 0, vec![lab, ClusterReport::new("ok"), other]);
        assert_eq!(
            summary_line(&report),
            "0 VMs managed, 0 changed, 0 blocked, 0 failed; lab: nodes pve2, pve3 missing from \
             metrics/export (read through rrddata); other: node b1 missing from metrics/export \
             (read through rrddata)"
        );
    }
}
