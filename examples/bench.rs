//! Cost per run at scale: pvescale's real pipeline against a large simulated cluster.
//!
//! `cargo run --release --example bench -- --vms 10,100,1000,5000 --nodes 8 --latency-ms 5 --runs 3`
//!
//! For each size it starts a generated simulated cluster (`Sim::builder().generated(..)`, every
//! request delayed by `--latency-ms`), writes a config selecting the VMs tagged `autoscale`, and
//! measures, as the median of `--runs` runs:
//!
//! - **dry-run**: `pvescale run --dry-run` on a cluster where nothing is due (every VM's load
//!   inside its band): the request floor;
//! - **run**: `pvescale run` where about `--change-percent` % of the VMs are busy (CPU or
//!   memory at 100 %) and get one more vCPU or DIMM, with `up_after = "0s"`;
//! - **export**: the `metrics/export` call alone: body size, transfer time, and the cost of
//!   parsing it (streaming, as the pipeline does, and from memory, to separate parsing from
//!   transfer).
//!
//! Every measured run is a **child process** (this example re-executed with `--child`) that
//! loads the config and calls `pvescale::commands::run::pass`, like one `pvescale run` started by the
//! timer: its peak RSS (`VmHWM`) and CPU time (`/proc/self/stat`) are the pipeline's own, not
//! the simulator's, which runs in this (parent) process and whose CPU time is shown apart
//! (`sim cpu`: TLS and JSON on the server side, which on a real cluster is not on the machine
//! that runs pvescale). Request counts per endpoint come from the simulator's log.
//!
//! `--version 8.0` (no `metrics/export`) or `--no-sys-audit` (export refused) show the
//! `rrddata` fallback. Figures are printed, never asserted (`tests/it/request_counts.rs` asserts
//! the request counts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use pvescale::engine::Mode;
use pvescale::metrics::WindowAggregator;
use pvescale::pve::Client;
use pvesim::{Kind, Pattern, Privs, Recorded, Sim, VmStatus};
use serde_json::{Value, json};

const TOKEN: &str = "pvescale@pve!autoscale";
const SECRET: &str = "bench-secret-not-a-real-one";
/// The default policy window (`[policy] window = "5m"`): what `metrics/export` is asked for.
const WINDOW_SECS: u64 = 300;

#[derive(Parser, Debug)]
#[command(about = "pvescale's cost per run against a simulated cluster")]
struct Args {
    /// Cluster sizes (QEMU VMs), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,5000")]
    vms: Vec<usize>,
    /// Nodes in the simulated cluster.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Latency added to every request by the simulator, in ms.
    #[arg(long, default_value_t = 5)]
    latency_ms: u64,
    /// Runs per measurement; the median is shown.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Simulated PVE release: 8.2.5 or newer has `metrics/export`; 8.0 shows the rrddata
    /// fallback.
    #[arg(long, default_value = "8.4")]
    version: String,
    /// Give the token no `Sys.Audit`: `metrics/export` answers 403 (rrddata fallback).
    #[arg(long)]
    no_sys_audit: bool,
    /// Share of the VMs made busy before each real run, in percent.
    #[arg(long, default_value_t = 2.0)]
    change_percent: f64,
    /// Seed of the generated cluster.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `[policy.memory] high` of the bench config, in percent (the default policy has 85).
    #[arg(long, default_value_t = 95.0)]
    memory_high: f64,
    /// Skip the real run (only dry-run and export).
    #[arg(long)]
    no_apply: bool,
    /// Internal: run one measurement in this process and print it as JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    config: Option<PathBuf>,
    #[arg(long, hide = true)]
    now: Option<u64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(what) = &args.child {
        let config = args.config.as_deref().ok_or("--child needs --config")?;
        let now = args.now.ok_or("--child needs --now")?;
        let out = child(what, config, now)?;
        println!("{out}");
        return Ok(());
    }
    parent(&args)
}

// ---- the parent: simulator, scenario, table ------------------------------------------------

fn parent(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let runs = args.runs.max(1);
    println!(
        "pvescale bench: simulated PVE {}{}, {} nodes, {} ms latency per request, median of {runs} \
         runs",
        args.version,
        if args.no_sys_audit {
            " (token without Sys.Audit)"
        } else {
            ""
        },
        args.nodes,
        args.latency_ms
    );
    println!("machine: {}", machine());
    println!(
        "each run is a child process (like one `pvescale run` from the timer): wall, cpu and peak \
         RSS are the pipeline's own; `sim cpu` is the simulated server's (this process)\n"
    );
    for &vms in &args.vms {
        bench_size(args, vms, runs)?;
    }
    Ok(())
}

/// One measurement: what the child reported plus what the simulator saw.
struct Sample {
    child: Value,
    /// Wall time of the whole child process (start, config, pass, exit).
    process_wall: Duration,
    sim_cpu: Duration,
    requests: Vec<Recorded>,
}

fn bench_size(args: &Args, vms: usize, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let privs = if args.no_sys_audit {
        Privs::new(&["VM.Audit", "VM.Config.CPU", "VM.Config.Memory"])
    } else {
        Privs::pvescale()
    };
    let sim = Sim::builder()
        .version(&args.version)
        .generated(args.nodes, vms, args.seed)
        .latency(Duration::from_millis(args.latency_ms))
        .token(TOKEN, SECRET, privs)
        .start()?;
    // Half an hour of history, so that the window is full.
    sim.advance(Duration::from_secs(1800));
    calm_everything(&sim);
    let dir = tempfile::tempdir()?;
    let config = write_config(&sim, dir.path(), args.memory_high)?;
    let views = sim.vms();
    let qemu: Vec<_> = views.iter().filter(|v| v.kind == Kind::Qemu).collect();
    let managed = qemu.iter().filter(|v| tagged(v)).count();
    let running = qemu
        .iter()
        .filter(|v| tagged(v) && v.status == VmStatus::Running)
        .count();
    println!(
        "== {vms} VMs ({managed} managed, {running} of them running), {} nodes; load average {}",
        args.nodes,
        load_average()
    );

    // Dry-run: nothing is due. The floor.
    let dry: Vec<Sample> = (0..runs)
        .map(|_| {
            sim.advance(Duration::from_secs(60));
            measure(&sim, "dry-run", &config)
        })
        .collect::<Result<_, _>>()?;
    print_sample("dry-run", &dry);

    // Real run: ~2 % of the VMs busy, a different set every run.
    if !args.no_apply {
        let k = ((vms as f64 * args.change_percent / 100.0).round() as usize).max(1);
        let mut applied = Vec::new();
        for run in 0..runs {
            // VMs that can still grow, a different set every run (wrapping around).
            let candidates = busy_candidates(&sim);
            let set: Vec<u32> = candidates
                .iter()
                .cycle()
                .skip(run * k % candidates.len().max(1))
                .take(k.min(candidates.len()))
                .copied()
                .collect();
            make_busy(&sim, &set);
            // Past the scale-up cooldowns (3 minutes), so that a small cluster's few
            // candidates can change again.
            sim.advance(Duration::from_secs(240));
            applied.push(measure(&sim, "run", &config)?);
            sim.wait_tasks(Duration::from_secs(30));
            calm(&sim, &set);
        }
        print_sample(&format!("run, {k} busy"), &applied);
    }

    // `status`: the first reads the config of every running VM the runs have not learned
    // (and keeps it in their state), the next only what is stale; `--refresh` reads all.
    for (label, what) in [
        ("status, first", "status"),
        ("status, again", "status"),
        ("status --refresh", "status-refresh"),
    ] {
        sim.advance(Duration::from_secs(60));
        print_sample(label, &[measure(&sim, what, &config)?]);
    }

    // metrics/export alone: body size, transfer, parse.
    if sim.version().has_metrics_export() {
        let export: Vec<Sample> = (0..runs)
            .map(|_| measure(&sim, "export", &config))
            .collect::<Result<_, _>>()?;
        print_export(&export);
    }
    println!();
    Ok(())
}

fn tagged(v: &pvesim::VmView) -> bool {
    v.current("tags")
        .is_some_and(|t| t.split([';', ',', ' ']).any(|t| t == "autoscale"))
}

/// Every guest's load inside its band (CPU 50 %, memory 60 %), and nodes big enough that the
/// host guard stays out of the way: nothing is due, whatever the generated patterns were.
fn calm_everything(sim: &Sim) {
    let views = sim.vms();
    let ids: Vec<u32> = views.iter().map(|v| v.vmid).collect();
    calm(sim, &ids);
    let mut per_node: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for v in &views {
        let e = per_node.entry(v.node.clone()).or_default();
        e.0 += u64::from(v.maxcpus.max(v.vcpus));
        e.1 += v.memory_mib;
    }
    for (node, (cpus, mem)) in per_node {
        sim.update_node(&node, |n| {
            n.cpus = n.cpus.max((cpus * 2).min(u64::from(u32::MAX)) as u32);
            n.memory_mib = n.memory_mib.max(mem * 3);
        });
    }
}

fn calm(sim: &Sim, vmids: &[u32]) {
    for &vmid in vmids {
        let Some(v) = sim.vm(vmid) else { continue };
        sim.update_vm(vmid, |e| {
            e.cpu_load = Pattern::Constant(f64::from(v.vcpus) * 0.5);
            e.mem_load = Pattern::Constant(v.memory_mib as f64 * 0.6);
        });
    }
}

/// Managed, running, unlocked VMs ready for live scaling with room to grow (the default
/// policy's max: 8 vCPUs, 16 GiB).
fn busy_candidates(sim: &Sim) -> Vec<u32> {
    sim.vms()
        .iter()
        .filter(|v| {
            v.kind == Kind::Qemu
                && tagged(v)
                && v.status == VmStatus::Running
                && v.lock.is_none()
                && !v.template
                && v.current("numa") == Some("1")
                && v.current("hotplug")
                    .is_some_and(|h| h.contains("cpu") && h.contains("memory"))
                && v.vcpus < v.maxcpus.min(8)
                && (1024..16384).contains(&v.memory_mib)
        })
        .map(|v| v.vmid)
        .collect()
}

/// Half of the set CPU-bound, the other half memory-bound (those with a balloon device,
/// whose guest reports its memory: pvescale grows memory only on the guest's own figure).
fn make_busy(sim: &Sim, vmids: &[u32]) {
    for (i, &vmid) in vmids.iter().enumerate() {
        let Some(v) = sim.vm(vmid) else { continue };
        sim.update_vm(vmid, |e| {
            if i % 2 == 0 || v.balloon_mib == Some(0) {
                e.cpu_load = Pattern::Constant(f64::from(v.vcpus));
            } else {
                e.balloon_stats = true;
                e.mem_load = Pattern::Constant(v.memory_mib as f64 * 1.2);
            }
        });
    }
}

fn write_config(
    sim: &Sim,
    dir: &Path,
    memory_high: f64,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("bench.secret");
    std::fs::write(&secret, SECRET)?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let ca = sim.write_ca_file(dir)?;
    let path = dir.join("pvescale.toml");
    // Default policy except: changes as soon as a VM is over `high` (so that the busy VMs of
    // a run change in that run), and memory `high` (`--memory-high`, 95 % unless told): the
    // simulator's host-side memory figure (VMs without balloon statistics) is 92 %, over the
    // default 85 %, which on PVE < 9 makes every such VM look like a memory scale-up until a
    // `status/current` shows the figure is the host's (config, pending and status/current
    // per VM, again whenever that knowledge expires): see `--memory-high 85`.
    std::fs::write(
        &path,
        format!(
            r#"state_dir = "{state}"

[[cluster]]
name = "bench"
url = "{url}"
token = "{TOKEN}"
token_secret_file = "{secret}"
ca_file = "{ca}"
timeout = "60s"

[select]
tags = ["autoscale"]

[policy.cpu]
up_after = "0s"

[policy.memory]
up_after = "0s"
high = {memory_high}
"#,
            state = dir.join("state").display(),
            url = sim.url(),
            secret = secret.display(),
            ca = ca.display(),
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn measure(sim: &Sim, what: &str, config: &Path) -> Result<Sample, Box<dyn std::error::Error>> {
    sim.clear_requests();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", what, "--config"])
        .arg(config)
        .args(["--now", &sim.now().to_string()])
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()?;
    let process_wall = started.elapsed();
    let sim_cpu = cpu_time().saturating_sub(cpu_before);
    if !out.status.success() {
        return Err(format!("child {what} failed: {}", out.status).into());
    }
    let child: Value = serde_json::from_slice(&out.stdout)?;
    Ok(Sample {
        child,
        process_wall,
        sim_cpu,
        requests: sim.requests(),
    })
}

/// `GET cluster/resources`, `GET qemu/config?current=1`, `POST qemu/config`, ...
fn endpoint(r: &Recorded) -> String {
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let name = match segs.as_slice() {
        ["nodes", _, "qemu", _, rest @ ..] => format!("qemu/{}", rest.join("/")),
        ["nodes", _, "tasks", _, rest @ ..] => format!("tasks/{}", rest.join("/")),
        other => other.join("/"),
    };
    let current = if r.param("current") == Some("1") {
        "?current=1"
    } else {
        ""
    };
    format!("{} {name}{current}", r.method)
}

/// Requests, response bytes and distinct connections per endpoint.
fn by_endpoint(requests: &[Recorded]) -> BTreeMap<String, (usize, usize, usize)> {
    let mut map: BTreeMap<String, (usize, usize, std::collections::BTreeSet<u64>)> =
        BTreeMap::new();
    for r in requests {
        let e = map.entry(endpoint(r)).or_default();
        e.0 += 1;
        e.1 += r.response_bytes;
        e.2.insert(r.conn);
    }
    map.into_iter()
        .map(|(k, (n, b, c))| (k, (n, b, c.len())))
        .collect()
}

fn median_of<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

fn field(sample: &Sample, name: &str) -> f64 {
    sample.child[name].as_f64().unwrap_or(f64::NAN)
}

fn print_sample(label: &str, samples: &[Sample]) {
    let med = |name: &str| median_of(samples.iter().map(|s| field(s, name)).collect());
    let last = &samples[samples.len() - 1];
    let counts: Vec<usize> = samples.iter().map(|s| s.requests.len()).collect();
    let same = counts.iter().all(|c| *c == counts[0]);
    println!(
        "  {label:<14} {} requests{}  received {}  wall {:.3} s (+render {:.3} s, process {:.3} s)  \
         cpu {:.2} s  peak RSS {} ({} before rendering)  sim cpu {:.2} s",
        median_of(counts.clone()),
        if same {
            String::new()
        } else {
            format!(" {counts:?}")
        },
        mib(med("bytes_received")),
        med("pass_ms") / 1000.0,
        med("render_ms") / 1000.0,
        median_of(
            samples
                .iter()
                .map(|s| s.process_wall.as_secs_f64())
                .collect()
        ),
        med("cpu_ms") / 1000.0,
        mib(med("peak_rss_kib") * 1024.0),
        mib(med("pass_peak_rss_kib") * 1024.0),
        median_of(samples.iter().map(|s| s.sim_cpu.as_secs_f64()).collect()),
    );
    for (name, (n, bytes, conns)) in by_endpoint(&last.requests) {
        println!(
            "      {n:>6} × {name:<28} {:>11} response, {conns} connection{}",
            mib(bytes as f64),
            if conns == 1 { "" } else { "s" }
        );
    }
    println!(
        "      metrics: {}; managed {}, planned {}, changed {}, failed {}",
        last.child["metrics_source"].as_str().unwrap_or("?"),
        last.child["managed"],
        last.child["planned"],
        last.child["changed"],
        last.child["failed"],
    );
}

fn print_export(samples: &[Sample]) {
    let med = |name: &str| median_of(samples.iter().map(|s| field(s, name)).collect());
    let last = &samples[samples.len() - 1];
    println!(
        "  {:<14} body {} ({} samples, window {} s)",
        "export",
        mib(med("body_bytes")),
        last.child["samples"],
        WINDOW_SECS
    );
    println!(
        "      streamed + aggregated (as the pipeline): wall {:.3} s, cpu {:.2} s, peak RSS {}",
        med("stream_ms") / 1000.0,
        med("stream_cpu_ms") / 1000.0,
        mib(med("stream_peak_rss_kib") * 1024.0),
    );
    println!(
        "      transfer only (body read into memory):   wall {:.3} s, cpu {:.2} s",
        med("transfer_ms") / 1000.0,
        med("transfer_cpu_ms") / 1000.0,
    );
    println!(
        "      parse + aggregate from memory:           wall {:.3} s ({:.0} MB/s, {:.0} ns/sample)",
        med("parse_ms") / 1000.0,
        med("body_bytes") / 1e6 / (med("parse_ms") / 1000.0),
        med("parse_ms") * 1e6 / field(last, "samples").max(1.0),
    );
    println!(
        "        of which parsing alone:                  wall {:.3} s ({:.0} ns/sample)",
        med("parse_only_ms") / 1000.0,
        med("parse_only_ms") * 1e6 / field(last, "samples").max(1.0),
    );
}

fn mib(bytes: f64) -> String {
    if bytes < 1024.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    }
}

/// `/proc/loadavg`'s first three figures: other work on the machine skews wall times.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = status_field("/proc/meminfo", "MemTotal:")
        .map(|kib| format!("{:.0} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} CPUs available ({model}), {mem}, Linux {kernel}")
}

// ---- the child: one run, measured from inside -----------------------------------------------

fn child(what: &str, config_path: &Path, now: u64) -> Result<Value, Box<dyn std::error::Error>> {
    let (config, _warnings) = pvescale::config::load(config_path)?;
    match what {
        "dry-run" | "run" | "status" | "status-refresh" => {
            let mode = match what {
                "run" => Mode::Apply,
                "status" => Mode::Status,
                "status-refresh" => Mode::StatusRefresh,
                _ => Mode::DryRun,
            };
            let cpu = cpu_time();
            let started = Instant::now();
            let report = pvescale::commands::run::pass(&config, mode, now)?;
            let pass = started.elapsed();
            let cpu = cpu_time().saturating_sub(cpu);
            let pass_peak = status_field("/proc/self/status", "VmHWM:");
            let rendered = Instant::now();
            let text = if mode.is_status() {
                pvescale::report::render_status(&report)
            } else {
                pvescale::report::render_run(&report)
            };
            let render = rendered.elapsed();
            let cluster = report.clusters.first();
            Ok(json!({
                "pass_ms": pass.as_secs_f64() * 1000.0,
                "render_ms": render.as_secs_f64() * 1000.0,
                "render_bytes": text.len(),
                "cpu_ms": cpu.as_secs_f64() * 1000.0,
                "peak_rss_kib": status_field("/proc/self/status", "VmHWM:"),
                "pass_peak_rss_kib": pass_peak,
                "requests": cluster.map(|c| c.requests),
                "bytes_received": cluster.map(|c| c.bytes_received),
                "metrics_source": cluster.map(|c| c.metrics_source.clone()),
                "error": cluster.and_then(|c| c.error.clone()),
                "managed": report.summary.managed,
                "planned": report.summary.planned,
                "changed": report.summary.changed,
                "failed": report.summary.failed,
            }))
        }
        "export" => {
            let cluster = config
                .clusters()
                .first()
                .ok_or("no cluster in the config")?;
            let client = Client::new(cluster.target_ref())?;
            let resources = client.resources()?;
            let running: Vec<u32> = resources
                .vms
                .iter()
                .filter(|vm| vm.status == pvescale::pve::types::VmStatus::Running)
                .map(|vm| vm.vmid)
                .collect();
            let start = now - WINDOW_SECS;

            // As the pipeline does it: streamed into the window aggregator.
            let cpu = cpu_time();
            let started = Instant::now();
            let mut aggregator = WindowAggregator::new(start, now, running.iter().copied());
            let samples = client.metrics_export(start, |s| aggregator.add(&s))?;
            let usage = aggregator.finish();
            let stream = started.elapsed();
            let stream_cpu = cpu_time().saturating_sub(cpu);
            let stream_peak = status_field("/proc/self/status", "VmHWM:");
            drop(usage);

            // The same body read into memory: transfer cost alone ...
            let query = [
                ("history", "1".to_string()),
                ("start-time", start.to_string()),
            ];
            let cpu = cpu_time();
            let started = Instant::now();
            let body = client.get_with(
                "/cluster/metrics/export",
                &query,
                pvescale::pve::api::METRICS_BODY_LIMIT,
                |reader| {
                    let mut body = Vec::new();
                    reader
                        .read_to_end(&mut body)
                        .map_err(|e| e.to_string())
                        .map(|_| body)
                },
            )?;
            let transfer = started.elapsed();
            let transfer_cpu = cpu_time().saturating_sub(cpu);

            // ... parsing alone ...
            let started = Instant::now();
            pvescale::pve::api::parse_metrics_export(&mut body.as_slice(), &mut |_| {})?;
            let parse_only = started.elapsed();

            // ... and parsing + aggregating.
            let started = Instant::now();
            let mut aggregator = WindowAggregator::new(start, now, running.iter().copied());
            pvescale::pve::api::parse_metrics_export(&mut body.as_slice(), &mut |s| {
                aggregator.add(&s)
            })?;
            let usage = aggregator.finish();
            let parse = started.elapsed();
            Ok(json!({
                "samples": samples,
                "vms_with_usage": usage.len(),
                "body_bytes": body.len(),
                "stream_ms": stream.as_secs_f64() * 1000.0,
                "stream_cpu_ms": stream_cpu.as_secs_f64() * 1000.0,
                "stream_peak_rss_kib": stream_peak,
                "transfer_ms": transfer.as_secs_f64() * 1000.0,
                "transfer_cpu_ms": transfer_cpu.as_secs_f64() * 1000.0,
                "parse_ms": parse.as_secs_f64() * 1000.0,
                "parse_only_ms": parse_only.as_secs_f64() * 1000.0,
            }))
        }
        other => Err(format!("unknown child mode {other}").into()),
    }
}

/// User + system CPU time of this process (all threads, including finished ones), from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux architecture pvescale targets.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A `Key:   value kB` line of a /proc file, in KiB.
fn status_field(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
