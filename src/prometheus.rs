//! The Prometheus textfile (`metrics_file`): what the last run saw and did, for node_exporter's
//! textfile collector. Written after every run that writes (never by a dry run or `status`),
//! atomically: a temporary file in the same directory (not ending in `.prom`, so the collector
//! never reads it half-written), fsync, rename, fsync of the directory.
//!
//! Every figure is about the last run (gauges): counters would need totals kept across runs,
//! and `increase()` over gauges of one run a minute is no worse. VM sizes are after the run's
//! changes. Utilisation that is unknown is left out, never written as 0.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::policy::Resource;
use crate::pve::RequestOutcome;
use crate::pve::stats::millis_as_secs;
use crate::report::{ActionKind, ResourceReport, RunReport, VmReport};

/// One metric family: name, help, samples (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn one(name: &'static str, help: &'static str, value: f64) -> Family {
        let mut f = Family::new(name, help);
        f.add(Vec::new(), value);
        f
    }
}

/// The text of the metrics file for a run that took `duration`.
pub fn render(report: &RunReport, duration: Duration) -> String {
    let mut families = run_families(report, duration);
    families.extend(outcome_families(report));
    families.extend(vm_families(report));
    families.extend(api_families(report));
    families.extend(notify_families(report));
    families.extend(unsettled_families(report));
    write_families(families)
}

/// Per cluster: the API's health as the run saw it. Every outcome is written, 0 when none,
/// so that alerts and dashboards need no `or vector(0)`.
fn api_families(report: &RunReport) -> Vec<Family> {
    let mut requests = Family::new(
        "pvescale_api_requests",
        "API requests of the last run by outcome (ok, client_error, server_error, timeout, \
         tls, auth, connect); retries, re-logins and fallback URLs count as requests.",
    );
    // Not `_sum`: that suffix is reserved for summaries and histograms (promtool lints it).
    let mut seconds_sum = Family::new(
        "pvescale_api_time_seconds",
        "Time of all API requests of the last run together, until each answer was read.",
    );
    let mut seconds_max = Family::new(
        "pvescale_api_request_seconds_max",
        "Time of the slowest API request of the last run.",
    );
    let mut received = Family::new(
        "pvescale_api_received_bytes",
        "Bytes the API sent in the last run (HTTP headers and bodies, after TLS).",
    );
    let mut source = Family::new(
        "pvescale_metrics_source",
        "1 for the source of the cluster's utilisation in the last run: export \
         (metrics/export) or rrddata (per VM), and why.",
    );
    for c in &report.clusters {
        let cluster = || vec![("cluster", c.name.clone())];
        for outcome in RequestOutcome::ALL {
            let mut labels = cluster();
            labels.push(("outcome", outcome.as_str().to_string()));
            requests.add(labels, c.api.requests.get(outcome) as f64);
        }
        seconds_sum.add(cluster(), millis_as_secs(c.api.total));
        seconds_max.add(cluster(), millis_as_secs(c.api.slowest));
        received.add(cluster(), c.api.received_bytes as f64);
        if let Some(used) = c.metrics_source_used {
            let mut labels = cluster();
            labels.push(("source", used.source.as_str().to_string()));
            labels.push(("reason", used.reason.as_str().to_string()));
            source.add(labels, 1.0);
        }
    }
    vec![requests, seconds_sum, seconds_max, received, source]
}

/// Per notification channel: what the last run's message became, and the last success.
fn notify_families(report: &RunReport) -> Vec<Family> {
    let Some(notify) = &report.notifications else {
        return Vec::new();
    };
    let mut messages = Family::new(
        "pvescale_notify_messages",
        "Notification messages of the last run per channel: sent, failed (after the retry), \
         held (back by max_per_hour).",
    );
    let mut last_success = Family::new(
        "pvescale_notify_last_success_timestamp_seconds",
        "Unix time at which a message last reached the channel (any run; 0: never).",
    );
    for d in &notify.delivery {
        for (result, n) in [("sent", d.sent), ("failed", d.failed), ("held", d.held)] {
            messages.add(
                vec![
                    ("channel", d.channel.clone()),
                    ("result", result.to_string()),
                ],
                f64::from(n),
            );
        }
        last_success.add(
            vec![("channel", d.channel.clone())],
            d.last_success.unwrap_or(0) as f64,
        );
    }
    vec![messages, last_success]
}

/// Config writes not settled after the run (the next run settles them).
fn unsettled_families(report: &RunReport) -> Vec<Family> {
    let unsettled = &report.unsettled_writes;
    vec![
        Family::one(
            "pvescale_unsettled_writes",
            "Config writes whose outcome is not settled after the last run.",
            unsettled.count as f64,
        ),
        Family::one(
            "pvescale_unsettled_write_oldest_age_seconds",
            "Seconds since the oldest unsettled config write was started (0: none).",
            unsettled.oldest_age_secs(report.time) as f64,
        ),
    ]
}

/// The run as a whole: when, how long, whether it succeeded, how many VMs.
fn run_families(report: &RunReport, duration: Duration) -> Vec<Family> {
    vec![
        Family::one(
            "pvescale_last_run_timestamp_seconds",
            "Unix time at which the last run started.",
            report.time as f64,
        ),
        Family::one(
            "pvescale_last_run_duration_seconds",
            "How long the last run took.",
            duration.as_millis() as f64 / 1000.0,
        ),
        Family::one(
            "pvescale_last_run_success",
            "1 if the last run handled every VM of every cluster (exit code 0), else 0.",
            if report.exit() == crate::error::Exit::Ok {
                1.0
            } else {
                0.0
            },
        ),
        Family::one(
            "pvescale_managed_vms",
            "VMs the last run managed (selected and seen).",
            report.summary.managed as f64,
        ),
    ]
}

/// What the run did: changes by resource and direction, failures, clusters read.
fn outcome_families(report: &RunReport) -> Vec<Family> {
    let mut families = Vec::new();
    let mut changes = Family::new(
        "pvescale_last_run_changes",
        "Changes the last run applied, by resource and direction.",
    );
    for resource in [Resource::Cpu, Resource::Memory] {
        for direction in [ActionKind::Up, ActionKind::Down] {
            let n = vms(report)
                .filter(|vm| {
                    let r = vm.resource(resource);
                    r.action == direction && r.applied()
                })
                .count();
            changes.add(
                vec![
                    ("resource", resource.to_string()),
                    ("direction", direction.to_string()),
                ],
                n as f64,
            );
        }
    }
    families.push(changes);

    let mut failures = Family::new(
        "pvescale_last_run_failures",
        "VMs that failed (a refused, failed or unsettled change, or an error) and clusters that \
         could not be read in the last run.",
    );
    failures.add(
        vec![("scope", "vm".to_string())],
        report.summary.failed as f64,
    );
    failures.add(
        vec![("scope", "cluster".to_string())],
        report.summary.failed_clusters as f64,
    );
    families.push(failures);

    let mut cluster_up = Family::new(
        "pvescale_cluster_up",
        "1 if the last run could read the cluster, else 0.",
    );
    for c in &report.clusters {
        cluster_up.add(
            vec![("cluster", c.name.clone())],
            if c.error.is_none() { 1.0 } else { 0.0 },
        );
    }
    families.push(cluster_up);
    families
}

/// Per VM: sizes, utilisation and the age of its data.
fn vm_families(report: &RunReport) -> Vec<Family> {
    let mut vcpus = Family::new("pvescale_vm_vcpus", "vCPUs of the VM after the last run.");
    let mut max_vcpus = Family::new(
        "pvescale_vm_max_vcpus",
        "Most vCPUs the VM can have live (sockets × cores).",
    );
    let mut memory = Family::new(
        "pvescale_vm_memory_bytes",
        "Memory of the VM after the last run.",
    );
    let mut cpu_util = Family::new(
        "pvescale_vm_cpu_utilisation_ratio",
        "Average busy fraction of the VM's vCPUs over the policy window (absent when unknown).",
    );
    let mut mem_util = Family::new(
        "pvescale_vm_memory_utilisation_ratio",
        "Used / current memory of the VM over the policy window (absent when unknown).",
    );
    let mut data_age = Family::new(
        "pvescale_vm_data_age_seconds",
        "Seconds since the running VM's newest metrics sample (over stale_after: pvescale is \
         blind for it and the run fails).",
    );
    for vm in vms(report) {
        let labels = || {
            vec![
                ("cluster", vm.cluster.clone()),
                ("vmid", vm.vmid.to_string()),
                ("type", vm.kind.to_string()),
                ("name", vm.name.clone()),
                ("node", vm.node.clone()),
            ]
        };
        vcpus.add(labels(), size_after(&vm.cpu, vm.vcpus) as f64);
        if let Some(max) = vm.max_vcpus {
            max_vcpus.add(labels(), max as f64);
        }
        memory.add(
            labels(),
            size_after(&vm.memory, vm.memory_mib) as f64 * crate::units::MIB as f64,
        );
        if let Some(p) = vm.cpu_percent.filter(|p| p.is_finite()) {
            cpu_util.add(labels(), ratio(p));
        }
        if let Some(p) = vm.memory_percent.filter(|p| p.is_finite()) {
            mem_util.add(labels(), ratio(p));
        }
        if let Some(age) = vm.data_age_secs {
            data_age.add(labels(), age as f64);
        }
    }
    vec![vcpus, max_vcpus, memory, cpu_util, mem_util, data_age]
}

/// The families in the text format.
fn write_families(families: Vec<Family>) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (labels, value) in f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", inner.join(","));
            }
            let _ = writeln!(out, " {}", fmt_value(value));
        }
    }
    out
}

fn vms(report: &RunReport) -> impl Iterator<Item = &VmReport> {
    report.clusters.iter().flat_map(|c| c.vms.iter())
}

/// The size after the run: the new one when the change was applied.
fn size_after(r: &ResourceReport, before: u64) -> u64 {
    match r.to {
        Some(to) if r.applied() => to,
        _ => before,
    }
}

/// A percentage with one decimal → a ratio, without float noise (95.5 → 0.955).
fn ratio(percent: f64) -> f64 {
    (percent * 10.0).round() / 1000.0
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

/// Label values: backslash, double quote and line feed escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Writes `text` to `path` atomically, mode 0644 (node_exporter runs as another user).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    crate::atomic_file::replace(path, text.as_bytes(), 0o644)
}

/// After a run that wrote: the metrics file, if configured. A file that cannot be written is
/// logged; the run goes on.
pub fn record(config: &Config, report: &RunReport, duration: Duration) {
    let Some(path) = config.metrics_file() else {
        return;
    };
    // The directory may be node_exporter's (another user's): the write is safe there (see
    // atomic_file), but where every user may replace the file, the metrics can be forged.
    let dir = crate::atomic_file::parent_dir(path);
    if crate::fs_guard::writable_by_everyone(dir).unwrap_or(false) {
        log::warn!(
            "the metrics file's directory {} is writable by every user: anyone can replace \
             what node_exporter reads (chmod o-w, or set the sticky bit: chmod +t)",
            dir.display()
        );
    }
    if let Err(e) = write_atomic(path, &render(report, duration)) {
        log::error!("cannot write the metrics file: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn values_use_prometheus_spelling() {
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(0.955), "0.955");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(ratio(95.5), 0.955);
    }

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .collect()
    }

    #[test]
    fn unsettled_writes_are_counted_with_the_oldest_age_and_zero_when_none() {
        let mut report = RunReport::new(false, 10_000, Vec::new());
        let text = render(&report, Duration::ZERO);
        assert_eq!(
            lines_of(&text, "pvescale_unsettled_write_oldest_age_seconds"),
            vec!["pvescale_unsettled_write_oldest_age_seconds 0"]
        );
        report.unsettled_writes = crate::report::UnsettledWrites::from_times(&[6_000, 9_000]);
        let text = render(&report, Duration::ZERO);
        assert_eq!(
            lines_of(&text, "pvescale_unsettled_writes"),
            vec!["pvescale_unsettled_writes 2"]
        );
        assert_eq!(
            lines_of(&text, "pvescale_unsettled_write_oldest_age_seconds"),
            vec!["pvescale_unsettled_write_oldest_age_seconds 4000"]
        );
    }

    #[test]
    fn every_outcome_is_written_and_channel_names_are_escaped() {
        let mut cluster = crate::report::ClusterReport::new("a\"b");
        cluster.api.record(
            "GET /x",
            RequestOutcome::Timeout,
            Duration::from_millis(1500),
        );
        let mut report = RunReport::new(false, 0, vec![cluster]);
        report.set_notifications(crate::notify::NotifyReport {
            delivery: vec![crate::notify::ChannelDelivery {
                channel: "webhook:o\"ps".to_string(),
                sent: 0,
                failed: 1,
                held: 0,
                last_success: None,
            }],
            ..Default::default()
        });
        let text = render(&report, Duration::ZERO);
        let requests = lines_of(&text, "pvescale_api_requests");
        assert_eq!(requests.len(), RequestOutcome::ALL.len(), "{text}");
        assert!(requests.contains(&r#"pvescale_api_requests{cluster="a\"b",outcome="timeout"} 1"#));
        assert!(requests.contains(&r#"pvescale_api_requests{cluster="a\"b",outcome="ok"} 0"#));
        assert_eq!(
            lines_of(&text, "pvescale_api_request_seconds_max"),
            vec![r#"pvescale_api_request_seconds_max{cluster="a\"b"} 1.5"#]
        );
        assert_eq!(
            lines_of(&text, "pvescale_notify_last_success_timestamp_seconds"),
            vec![r#"pvescale_notify_last_success_timestamp_seconds{channel="webhook:o\"ps"} 0"#]
        );
        assert!(
            text.contains(r#"pvescale_notify_messages{channel="webhook:o\"ps",result="failed"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pvescale.prom");
        write_atomic(&path, "a 1\n").expect("first");
        write_atomic(&path, "a 2\n").expect("second");
        assert_eq!(fs::read_to_string(&path).expect("read"), "a 2\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
