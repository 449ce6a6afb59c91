//! The action history: every change, refusal and failure of a run that writes, one JSON line
//! each, appended to `history.jsonl` in the state directory (mode 0600) and rotated by size to
//! `history.jsonl.1`; read back for `pvescale history` (`commands::history`).
//!
//! A line holds what a person needs to audit a change (time, cluster, VM, resource, from, to,
//! reason, outcome) and nothing else: no tokens, no config. Dry runs and `status` add nothing.
//! (`rrd_history.rs` is something else: a VM's past load as Proxmox VE keeps it.)

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::guest::GuestKind;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Failure;
use crate::fs_guard::{Guard, Trust};
use crate::report::{RunReport, new_table, to_json, vm_label};
use crate::units::fmt_utc;

/// The history file in the state directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// Where the history file goes when it is rotated (one generation is kept).
pub const ROTATED_FILE: &str = "history.jsonl.1";

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix time of the run.
    pub time: u64,
    pub cluster: String,
    pub vmid: u32,
    /// `vm` or `ct`; lines written before containers were managed are VMs.
    #[serde(rename = "type", default)]
    pub kind: GuestKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// `cpu` (vCPUs), `memory` (MiB), or `vm` for a failure of the VM as a whole.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Why the change was decided (empty for a failure of the VM as a whole).
    #[serde(default)]
    pub reason: String,
    /// `applied`, `refused`, `blocked` (a host limit learned), `failed`, `unsettled` or
    /// `skipped` (`WriteOutcome::class`).
    pub outcome: String,
    /// What the VM or the server said, for anything but `applied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The history entries of a run: each attempted change with its outcome, and each VM that
/// failed as a whole. A dry run has none.
pub fn entries(report: &RunReport) -> Vec<Entry> {
    if report.dry_run {
        return Vec::new();
    }
    let mut out = Vec::new();
    for cluster in &report.clusters {
        for vm in &cluster.vms {
            let entry = |resource: &str| Entry {
                time: report.time,
                cluster: cluster.name.clone(),
                vmid: vm.vmid,
                kind: vm.kind,
                name: vm.name.clone(),
                node: vm.node.clone(),
                resource: resource.to_string(),
                from: None,
                to: None,
                reason: String::new(),
                outcome: String::new(),
                detail: None,
            };
            for (resource, r) in vm.resources() {
                let Some(written) = &r.outcome else { continue };
                out.push(Entry {
                    from: r.from,
                    to: r.to,
                    reason: r.reason.clone(),
                    outcome: written.class().to_string(),
                    detail: written.detail(),
                    ..entry(resource.name())
                });
            }
            if let Some(error) = &vm.error {
                out.push(Entry {
                    outcome: "failed".to_string(),
                    detail: Some(error.clone()),
                    ..entry("vm")
                });
            }
        }
    }
    out
}

/// Appends `entries` to `dir/history.jsonl` (mode 0600), first rotating the file to
/// `history.jsonl.1` when the new lines would take it past `max_bytes`. All lines of a run go
/// out in one write.
pub fn append(dir: &Path, entries: &[Entry], max_bytes: u64) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut text = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut text, entry).context("encoding a history entry")?;
        text.push(b'\n');
    }
    let path = dir.join(HISTORY_FILE);
    // Not followed if a link, and only a regular file of ours (see fs_guard).
    let open = || {
        Guard::current()
            .open(
                &path,
                OpenOptions::new().append(true).create(true).mode(0o600),
                Trust::Mine,
            )
            .context("opening the history")
    };
    let mut file = open()?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > 0 && size + text.len() as u64 > max_bytes {
        drop(file);
        let rotated = dir.join(ROTATED_FILE);
        fs::rename(&path, &rotated)
            .with_context(|| format!("rotating {} to {}", path.display(), rotated.display()))?;
        file = open()?;
    }
    // A file made by hand or by an older version may have looser permissions (set through
    // the descriptor: the file checked above, whatever the name points at by now).
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    file.write_all(&text)
        .with_context(|| format!("writing {}", path.display()))
}

/// After a run that wrote: append its entries to the history in `state_dir`. A history that
/// cannot be written is logged, and the run goes on (its exit code is about the VMs).
pub fn record(config: &Config, state_dir: &Path, report: &RunReport) {
    let entries = entries(report);
    let max = config
        .history_max_size_mib()
        .saturating_mul(crate::units::MIB);
    if let Err(e) = append(state_dir, &entries, max) {
        log::error!("cannot write the history: {e:#}");
    }
}

/// The journal's account of a run (see `run`): one line per history entry, info for an
/// applied change, warning for anything else, then the summary line at info.
pub fn log_run(report: &RunReport) {
    for e in entries(report) {
        let change = match (e.from, e.to) {
            (Some(from), Some(to)) => format!(" {from} → {to}"),
            _ => String::new(),
        };
        let mut line = format!(
            "{}/{} {}{change}: {}",
            e.cluster, e.vmid, e.resource, e.outcome
        );
        if let Some(detail) = &e.detail {
            line.push_str(&format!(": {detail}"));
        }
        if !e.reason.is_empty() {
            line.push_str(&format!(" ({})", e.reason));
        }
        if e.outcome == "applied" {
            log::info!("{line}");
        } else {
            log::warn!("{line}");
        }
    }
    log::info!("{}", crate::report::summary_line(report));
}

/// Reads the history (the rotated file first, so that the result is oldest first). Lines that
/// are not valid entries (a crash mid-write, a hand edit) are skipped and counted.
pub fn read(dir: &Path) -> Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut bad = 0;
    for name in [ROTATED_FILE, HISTORY_FILE] {
        let path = dir.join(name);
        // The service user's history may be read by root (`sudo pvescale history`).
        let file = match Guard::current().open(
            &path,
            OpenOptions::new().read(true),
            Trust::MineOrDirOwner,
        ) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e).context("opening the history"),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Entry>(&line) {
                Ok(entry) => entries.push(entry),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((entries, bad))
}

/// What `pvescale history` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub vmid: Option<u32>,
    pub cluster: Option<String>,
    /// Only entries at or after this unix time.
    pub since: Option<u64>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.vmid.is_none_or(|id| e.vmid == id)
            && self.cluster.as_deref().is_none_or(|c| e.cluster == c)
            && self.since.is_none_or(|t| e.time >= t)
    }
}

/// The cut-off time for `--since`.
pub fn since(now: u64, ago: Duration) -> u64 {
    now.saturating_sub(ago.as_secs())
}

/// How `pvescale history` shows what it found.
pub enum Shown {
    Table,
    Json,
    /// A chart of one VM's sizes up to `now`, times in `zone`.
    Chart {
        now: u64,
        zone: jiff::tz::TimeZone,
    },
}

/// The history in `dir` for people (a table, a chart) or programs (JSON).
pub fn show(dir: &Path, filter: &Filter, shown: &Shown) -> Result<String, Failure> {
    let (entries, bad) = read(dir).map_err(Failure::Runtime)?;
    if bad > 0 {
        log::warn!(
            "{bad} unreadable lines in the history in {} were skipped",
            dir.display()
        );
    }
    let matching: Vec<&Entry> = entries.iter().filter(|e| filter.matches(e)).collect();
    match shown {
        Shown::Json => to_json(&matching),
        Shown::Chart { now, zone } => Ok(render_svg(&matching, *now, zone)),
        Shown::Table if matching.is_empty() => Ok(format!(
            "no history entries{} ({})\n",
            if entries.is_empty() { "" } else { " match" },
            dir.join(HISTORY_FILE).display()
        )),
        Shown::Table => Ok(render(&matching)),
    }
}

/// The sizes pvescale set for one VM over time (a step from each applied change's `from` to
/// its `to`, held until `now`), with refusals and failures marked and their details as hover
/// titles.
pub fn render_svg(entries: &[&Entry], now: u64, zone: &jiff::tz::TimeZone) -> String {
    use crate::chart::{Chart, Mark, MarkKind, Panel, Series, Shape};
    let panel = |resource: &str, title: &str, y_label: &str, color| {
        let mut points: Vec<(u64, Option<f64>)> = Vec::new();
        let mut marks = Vec::new();
        for e in entries
            .iter()
            .filter(|e| e.resource == resource || e.resource == "vm")
        {
            let change = match (e.from, e.to) {
                (Some(from), Some(to)) => format!("{from} → {to}: "),
                _ => String::new(),
            };
            match (e.outcome.as_str(), e.from, e.to) {
                ("applied", Some(from), Some(to)) => {
                    if points.last().is_none_or(|(_, v)| *v != Some(from as f64)) {
                        points.push((e.time, Some(from as f64)));
                    }
                    points.push((e.time, Some(to as f64)));
                }
                (outcome, ..) => marks.push(Mark {
                    t: e.time,
                    kind: match outcome {
                        "refused" | "blocked" | "skipped" => MarkKind::Refused,
                        _ => MarkKind::Failed,
                    },
                    title: format!(
                        "{outcome}: {change}{}",
                        e.detail.as_deref().unwrap_or(&e.reason)
                    ),
                }),
            }
        }
        if let Some(&(t, last)) = points.last()
            && now > t
        {
            points.push((now, last));
        }
        Panel {
            title: title.to_string(),
            y_label: y_label.to_string(),
            series: vec![Series {
                id: "size",
                label: format!("{title} set by pvescale"),
                shape: Shape::Step,
                color,
                dashed: false,
                points,
            }],
            marks,
        }
    };
    let title = match entries.first() {
        Some(e) if e.name.is_empty() => format!("VM {}: pvescale history", e.vmid),
        Some(e) => format!("VM {} ({}): pvescale history", e.vmid, e.name),
        None => "pvescale history: no entries".to_string(),
    };
    crate::chart::render(&Chart {
        title,
        subtitle: format!(
            "{} entries: the sizes pvescale set, refusals and failures",
            entries.len()
        ),
        panels: vec![
            panel("cpu", "vCPUs", "vCPUs", "#16a34a"),
            panel("memory", "Memory", "MiB", "#7c3aed"),
        ],
        zone: zone.clone(),
    })
}

fn render(entries: &[&Entry]) -> String {
    let mut table = new_table(&[
        "Time (UTC)",
        "Cluster",
        "VM",
        "Resource",
        "Change",
        "Reason",
        "Outcome",
    ]);
    for e in entries {
        let unit = match e.resource.as_str() {
            "cpu" => " vCPUs",
            "memory" => " MiB",
            _ => "",
        };
        let change = match (e.from, e.to) {
            (Some(from), Some(to)) => format!("{from} → {to}{unit}"),
            _ => String::new(),
        };
        let outcome = match &e.detail {
            Some(detail) => format!("{}: {detail}", e.outcome),
            None => e.outcome.clone(),
        };
        table.add_row(vec![
            fmt_utc(e.time),
            e.cluster.clone(),
            vm_label(e.vmid, &e.name),
            e.resource.clone(),
            change,
            e.reason.clone(),
            outcome,
        ]);
    }
    let mut out = table.to_string();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: u64, vmid: u32) -> Entry {
        Entry {
            time,
            cluster: "lab".into(),
            vmid,
            kind: GuestKind::Vm,
            name: String::new(),
            node: String::new(),
            resource: "cpu".into(),
            from: Some(1),
            to: Some(2),
            reason: "r".into(),
            outcome: "applied".into(),
            detail: None,
        }
    }

    #[test]
    fn append_rotates_by_size_and_keeps_one_generation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let line_len = serde_json::to_string(&sample(1, 101)).expect("json").len() as u64 + 1;
        // Room for three lines per file.
        let max = line_len * 3;
        for t in 0..8 {
            append(dir.path(), &[sample(t, 101)], max).expect("append");
        }
        let current = fs::read_to_string(dir.path().join(HISTORY_FILE)).expect("current");
        let rotated = fs::read_to_string(dir.path().join(ROTATED_FILE)).expect("rotated");
        assert!(current.len() as u64 <= max && rotated.len() as u64 <= max);
        let (all, bad) = read(dir.path()).expect("read");
        assert_eq!(bad, 0);
        let times: Vec<u64> = all.iter().map(|e| e.time).collect();
        // 8 lines, 3 per file: lines 0-2 went with the first generation; order is kept.
        assert_eq!(times, vec![3, 4, 5, 6, 7]);
        let mode = fs::metadata(dir.path().join(HISTORY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        append(dir.path(), &[sample(1, 101)], 1 << 20).expect("append");
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(HISTORY_FILE))
            .expect("open");
        f.write_all(b"{\"time\": 2, \"clus").expect("torn write");
        drop(f);
        let (all, bad) = read(dir.path()).expect("read");
        assert_eq!((all.len(), bad), (1, 1));
    }

    #[test]
    fn a_symlinked_history_is_neither_written_nor_re_moded_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::symlink(&victim, dir.path().join(HISTORY_FILE)).expect("link");
        let err = append(dir.path(), &[sample(1, 101)], 1 << 20).expect_err("refused");
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        let err = read(dir.path()).expect_err("refused");
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        let mode = fs::metadata(&victim).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "not re-moded");
    }

    #[test]
    fn a_fifo_as_history_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        crate::fs_guard::tests::mkfifo(&dir.path().join(ROTATED_FILE));
        let err = read(dir.path()).expect_err("refused");
        assert!(format!("{err:#}").contains("FIFO"), "{err:#}");
    }

    #[test]
    fn filters_select_by_vm_cluster_and_time() {
        let e = sample(1000, 101);
        let f = Filter::default;
        assert!(f().matches(&e));
        assert!(
            Filter {
                vmid: Some(101),
                ..f()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                vmid: Some(102),
                ..f()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                cluster: Some("prod".into()),
                ..f()
            }
            .matches(&e)
        );
        assert!(
            Filter {
                since: Some(1000),
                ..f()
            }
            .matches(&e)
        );
        assert!(
            !Filter {
                since: Some(1001),
                ..f()
            }
            .matches(&e)
        );
        assert_eq!(since(100, Duration::from_secs(3600)), 0);
    }
}
