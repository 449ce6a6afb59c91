//! What a run or `status` tells a person (comfy-table) or a program (JSON).

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

/// One resource of one VM: the decision, and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceReport {
    /// `keep`, `up`, `down`, `blocked` or `skip`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    pub reason: String,
    /// `applied`, `refused by the VM: ...`, `failed: ...` (runs that write only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Cooldown or back-off still running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
}

impl ResourceReport {
    fn is_change(&self) -> bool {
        self.action == "up" || self.action == "down"
    }

    fn applied(&self) -> bool {
        self.outcome.as_deref() == Some("applied")
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmReport {
    pub cluster: String,
    pub node: String,
    pub vmid: u32,
    pub name: String,
    pub status: String,
    pub vcpus: u64,
    /// sockets × cores, when the config was read (or remembered).
    pub max_vcpus: Option<u64>,
    pub memory_mib: u64,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    /// `guest` (balloon statistics), `host` (host-side estimate) or `unknown`.
    pub memory_source: String,
    pub readiness: String,
    pub cpu: ResourceReport,
    pub memory: ResourceReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Things worth telling that are not a decision (an interrupted write settled, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub failed: bool,
}

impl VmReport {
    fn resources(&self) -> [(&'static str, &ResourceReport); 2] {
        [("cpu", &self.cpu), ("memory", &self.memory)]
    }

    pub fn changed(&self) -> bool {
        self.cpu.applied() || self.memory.applied()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterReport {
    pub name: String,
    /// Why the cluster could not be read at all (then `vms` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which metrics source was used, and why.
    pub metrics_source: String,
    /// Nodes whose VMs `metrics/export` left out (the node serving the API could not ask
    /// them, or they run PVE older than 8.2.5); their VMs were read through `rrddata`.
    pub export_missing_nodes: Vec<String>,
    /// Sources read over a longer window than the policy's, because their points are too
    /// far apart for `min_samples` of them to fit.
    pub widened_windows: Vec<WidenedWindow>,
    pub warnings: Vec<String>,
    pub vms: Vec<VmReport>,
    /// API requests made and plaintext bytes received for this cluster.
    pub requests: u64,
    pub bytes_received: u64,
}

/// A source read over a longer window than the policy's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WidenedWindow {
    /// `metrics/export` or `rrddata`.
    pub source: String,
    /// The policy's window, seconds.
    pub from_secs: u64,
    /// The window read, seconds.
    pub to_secs: u64,
    /// Why, for people.
    pub reason: String,
}

impl ClusterReport {
    pub fn new(name: &str) -> ClusterReport {
        ClusterReport {
            name: name.to_string(),
            error: None,
            metrics_source: String::new(),
            export_missing_nodes: Vec::new(),
            widened_windows: Vec::new(),
            warnings: Vec::new(),
            vms: Vec::new(),
            requests: 0,
            bytes_received: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Summary {
    pub managed: usize,
    pub changed: usize,
    pub planned: usize,
    pub blocked: usize,
    pub failed: usize,
    pub failed_clusters: usize,
    /// Notification channels that failed (after their retry); they never fail the run.
    #[serde(skip_serializing_if = "is_zero")]
    pub notify_failed: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub dry_run: bool,
    /// Unix time of the run.
    pub time: u64,
    pub summary: Summary,
    pub clusters: Vec<ClusterReport>,
    /// What the notifier sent (or, in a dry run, would have); absent without channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notify::NotifyReport>,
}

impl RunReport {
    pub fn new(dry_run: bool, time: u64, clusters: Vec<ClusterReport>) -> RunReport {
        let mut summary = Summary::default();
        for cluster in &clusters {
            if cluster.error.is_some() {
                summary.failed_clusters += 1;
            }
            for vm in &cluster.vms {
                summary.managed += 1;
                if vm.changed() {
                    summary.changed += 1;
                }
                if vm.cpu.is_change() || vm.memory.is_change() {
                    summary.planned += 1;
                }
                if vm.cpu.action == "blocked" || vm.memory.action == "blocked" {
                    summary.blocked += 1;
                }
                if vm.failed {
                    summary.failed += 1;
                }
            }
        }
        RunReport {
            dry_run,
            time,
            summary,
            clusters,
            notifications: None,
        }
    }

    /// Adds what the notifier did, and counts its failed channels in the summary.
    pub fn set_notifications(&mut self, notifications: crate::notify::NotifyReport) {
        self.summary.notify_failed = notifications.failed_channels();
        self.notifications = Some(notifications);
    }

    /// Nothing changed, nothing failed: `-q` prints nothing.
    pub fn is_quiet(&self) -> bool {
        self.summary.changed == 0 && self.summary.failed == 0 && self.summary.failed_clusters == 0
    }
}

/// The run summary for people: what changed or was planned, and why.
pub fn render_run(report: &RunReport) -> String {
    let mut table = new_table(&[
        "Cluster", "VM", "Node", "Resource", "Action", "Reason", "Result",
    ]);
    let mut rows = 0;
    for cluster in &report.clusters {
        for vm in &cluster.vms {
            for (name, r) in vm.resources() {
                // A real run lists what it did or could not do; a dry run shows the whole plan.
                let interesting =
                    report.dry_run || r.is_change() || r.action == "blocked" || r.outcome.is_some();
                if !interesting {
                    continue;
                }
                rows += 1;
                table.add_row(vec![
                    cluster.name.clone(),
                    vm_label(vm.vmid, &vm.name),
                    vm.node.clone(),
                    name.to_string(),
                    action_label(r, name),
                    r.reason.clone(),
                    r.outcome.clone().unwrap_or_else(|| {
                        if report.dry_run && r.is_change() {
                            "dry run: not applied".to_string()
                        } else {
                            String::new()
                        }
                    }),
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
    out.push_str(&summary_line(report));
    out.push('\n');
    out
}

/// One line: `dry run: 12 VMs managed, 2 would change, 1 blocked, 0 failed`.
pub fn summary_line(report: &RunReport) -> String {
    let s = &report.summary;
    let mut line = if report.dry_run {
        format!(
            "dry run: {} VMs managed, {} would change, {} blocked, {} failed (nothing was changed)",
            s.managed, s.planned, s.blocked, s.failed
        )
    } else {
        format!(
            "{} VMs managed, {} changed, {} blocked, {} failed",
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
    report
        .clusters
        .iter()
        .filter(|c| c.error.is_none() && !c.metrics_source.is_empty())
        .map(|c| format!("cluster {}: metrics from {}\n", c.name, c.metrics_source))
        .collect()
}

/// The `status` table: one row per managed VM.
pub fn render_status(report: &RunReport) -> String {
    let mut table = new_table(&[
        "Cluster",
        "Node",
        "VMID",
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
                vm.name.clone(),
                vcpus,
                percent(vm.cpu_percent),
                format!("{} MiB", vm.memory_mib),
                percent(vm.memory_percent),
                vm.memory_source.clone(),
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
pub(crate) fn new_table(header: &[&str]) -> Table {
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

fn action_label(r: &ResourceReport, resource: &str) -> String {
    let unit = if resource == "cpu" { " vCPUs" } else { " MiB" };
    match (r.from, r.to) {
        (Some(from), Some(to)) => format!("{} {from} → {to}{unit}", r.action),
        _ => r.action.clone(),
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
