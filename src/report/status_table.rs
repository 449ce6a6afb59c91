//! The `status` table: one line per VM within 120 columns, so that a cluster of hundreds of
//! VMs reads in a terminal. The reasons in full are in `status -v` and in JSON.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};

use super::{RunReport, VmReport, cluster_failures, metrics_lines, percent, window_lines};
use crate::policy::readiness::LiveScaling;
use crate::policy::{ByWindow, Resource};
use crate::record::{ActionKind, ResourceReport};

/// The widest a status line may be.
pub const STATUS_WIDTH: usize = 120;
const NAME_WIDTH: usize = 16;
const NODE_WIDTH: usize = 10;
const CLUSTER_WIDTH: usize = 8;

/// `pvescale status`: sizes, utilisation, readiness and a short next action, one line a VM.
pub fn render_status(report: &RunReport) -> String {
    let many_clusters = report.clusters.len() > 1;
    let mut header = Vec::new();
    if many_clusters {
        header.push("Cluster");
    }
    header.extend([
        "VMID", "Type", "Name", "Node", "vCPUs", "CPU%", "MiB", "Mem%", "Live", "Next",
    ]);
    let mut rows = Vec::new();
    for cluster in &report.clusters {
        for vm in &cluster.vms {
            let mut row = Vec::new();
            if many_clusters {
                row.push(clip(&cluster.name, CLUSTER_WIDTH));
            }
            row.extend([
                vm.vmid.to_string(),
                vm.kind.to_string(),
                clip(&vm.name, NAME_WIDTH),
                clip(&vm.node, NODE_WIDTH),
                match vm.max_vcpus {
                    Some(max) => format!("{}/{max}", vm.vcpus),
                    None => vm.vcpus.to_string(),
                },
                percent(vm.cpu_percent),
                vm.memory_mib.to_string(),
                percent(vm.memory_percent),
                live_short(vm.live_scaling).to_string(),
            ]);
            rows.push((row, next_short(vm)));
        }
    }
    // The last column takes what the others leave: each column costs its width, a space
    // either side and a separator (blank in this preset); the outer borders two more.
    let used: usize = (0..header.len() - 1)
        .map(|i| {
            rows.iter()
                .map(|(row, _)| row[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
                + 3
        })
        .sum();
    let next_width = STATUS_WIDTH.saturating_sub(used + 2 + 2).max(8);
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for (mut row, next) in rows {
        row.push(clip(&next, next_width));
        table.add_row(row);
    }
    let mut out = cluster_failures(report);
    out.push_str(&metrics_lines(report));
    out.push_str(&window_lines(report));
    out.push_str(&table.to_string());
    out.push('\n');
    out
}

/// `yes`, `no`, or `?` (the config was not read); `status -v` says what is missing.
fn live_short(live: LiveScaling) -> &'static str {
    match live {
        LiveScaling::Yes => "yes",
        LiveScaling::No => "no",
        LiveScaling::Unknown => "?",
    }
}

/// What the next run would do, in a few words: `cpu 2→4`, `memory blocked (host guard)`,
/// `keep (cooldown)`, or the failure.
fn next_short(vm: &VmReport) -> String {
    if let Some(error) = &vm.error {
        return format!("FAILED: {error}");
    }
    let parts: Vec<String> = vm
        .resources()
        .iter()
        .filter_map(|(resource, r)| resource_short(*resource, r))
        .collect();
    if !parts.is_empty() {
        return parts.join(", ");
    }
    if vm.cpu.action == ActionKind::Skip && vm.memory.action == ActionKind::Skip {
        // Both skipped for one reason (stopped, node down, excluded): say it.
        return format!("skip: {}", vm.cpu.reason);
    }
    if vm.cpu.wait.is_some() || vm.memory.wait.is_some() {
        return "keep (cooldown)".to_string();
    }
    "keep".to_string()
}

fn resource_short(resource: Resource, r: &ResourceReport) -> Option<String> {
    let name = match resource {
        Resource::Cpu => "cpu",
        Resource::Memory => "mem",
    };
    let floor = matches!(r.window, Some(ByWindow::Floor { .. }));
    match (r.action, r.from, r.to) {
        (ActionKind::Up | ActionKind::Down, Some(from), Some(to)) if floor => {
            Some(format!("{name} {from}→{to} (floor)"))
        }
        (ActionKind::Up | ActionKind::Down, Some(from), Some(to)) => {
            Some(format!("{name} {from}→{to}"))
        }
        (ActionKind::Keep, _, _) => match &r.window {
            Some(ByWindow::Prevented { from, to, .. }) => {
                Some(format!("{name} {from}→{to} frozen"))
            }
            _ => None,
        },
        (ActionKind::Blocked, _, _) => Some(match r.blocked_by {
            Some(by) => format!("{name} blocked ({by})"),
            None => format!("{name} blocked"),
        }),
        _ => None,
    }
}

/// `text` cut to `width` characters, ending in `…` where it was cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::GuestKind;
    use crate::record::{ClusterReport, MemorySourceShown};

    fn keep(reason: &str) -> ResourceReport {
        ResourceReport {
            action: ActionKind::Keep,
            blocked_by: None,
            from: None,
            to: None,
            reason: reason.to_string(),
            outcome: None,
            wait: None,
            window: None,
        }
    }

    /// Every column at its widest: long cluster, node and VM names, nine-digit VM ids, big
    /// sizes, and a failure of several hundred characters.
    fn widest_vm(cluster: &str, vmid: u32) -> VmReport {
        VmReport {
            cluster: cluster.to_string(),
            node: "node-with-a-very-long-host-name".to_string(),
            vmid,
            kind: GuestKind::Vm,
            name: "a-guest-whose-name-goes-on-and-on".to_string(),
            status: "running".to_string(),
            vcpus: 512,
            max_vcpus: Some(512),
            memory_mib: 4_194_304,
            cpu_percent: Some(100.0),
            memory_percent: Some(100.0),
            memory_source: MemorySourceShown::Guest,
            cpu_pressure_percent: None,
            memory_pressure_percent: None,
            readiness: "cpu: no hotplug; memory: no numa".to_string(),
            live_scaling: LiveScaling::No,
            cpu: keep(&"a very long reason ".repeat(20)),
            memory: keep("keep"),
            error: Some("reading the VM's config failed: ".repeat(10)),
            data_age_secs: None,
            notes: Vec::new(),
            windows: Vec::new(),
            failed: true,
        }
    }

    #[test]
    fn the_widest_rows_stay_within_the_width_on_one_line_each() {
        let clusters: Vec<ClusterReport> = ["production-east", "lab"]
            .iter()
            .map(|name| {
                let mut cluster = ClusterReport::new(name);
                cluster.vms = vec![widest_vm(name, 999_999_999), widest_vm(name, 100)];
                cluster
            })
            .collect();
        let report = RunReport::new(false, 0, clusters);
        let out = render_status(&report);
        let rows: Vec<&str> = out.lines().filter(|l| l.contains("FAILED")).collect();
        assert_eq!(rows.len(), 4, "one line per VM:\n{out}");
        for line in out.lines() {
            assert!(line.chars().count() <= STATUS_WIDTH, "{line}");
        }
        assert!(rows[0].contains("product…"), "{out}");
        assert!(rows[0].contains("512/512"), "{out}");
        assert!(
            rows[0].contains('…'),
            "the failure is cut, not wrapped:\n{out}"
        );
    }

    #[test]
    fn clip_keeps_short_text_and_marks_a_cut() {
        assert_eq!(clip("web1", 16), "web1");
        assert_eq!(clip("abcdefghij", 5), "abcd…");
        assert_eq!(clip("abcdefghij", 5).chars().count(), 5);
    }
}
