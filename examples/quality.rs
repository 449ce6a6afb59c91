//! Decision quality: load traces against the simulated cluster, one `pvescale run` pass per
//! simulated minute, measured against each VM's true demand.
//!
//! `cargo run --release --example quality`
//!
//! The simulated VM keeps its true demand (the trace's pattern) as ground truth; pvescale sees
//! only what Proxmox shows of a VM: a CPU figure pinned near (or, with I/O, above) 100 % of its
//! size, never the demand beyond it. The figures are measured against that demand as the
//! simulator computes it (`Sim::demand`: the pattern with the simulator's noise), every 10 s.
//! Every trace runs with `window = "5m"`, `up_after = "2m"` for CPU and the other defaults, on
//! a VM at 2 of 8 possible vCPUs (4 GiB, memory hotplug ready, balloon statistics, 10 % of I/O
//! on top of its CPU figure), on a host big enough that the host guard never blocks. The
//! traces are deterministic (fixed seeds), so two runs on the same decisions print the same.

use std::time::{Duration, Instant};

use pvescale::engine::Mode;
use pvescale::report::new_table;
use pvesim::{NodeSpec, Pattern, Privs, Sim, VmSpec};

const TOKEN: &str = "pvescale@pve!autoscale";
const SECRET: &str = "quality-secret-not-a-real-one";
const MIN: i64 = 60;
const VMID: u32 = 101;
/// The CPU the VM's I/O threads add to its figure (Proxmox counts the whole QEMU process).
const IO_OVERHEAD: f64 = 0.1;
/// The policy defaults the traces are built around (`[policy.cpu] high`, `down_after` of CPU
/// and memory).
const CPU_HIGH: f64 = 0.80;
const CPU_DOWN_AFTER: i64 = 15 * MIN;
const MEMORY_DOWN_AFTER: i64 = 30 * MIN;

/// One load trace.
struct Trace {
    name: &'static str,
    minutes: i64,
    cpu: Pattern,
    memory: Pattern,
    /// vCPUs at the start (of 8 possible).
    vcpus: u32,
    /// A demand step (seconds after the start), for the reaction figures.
    step_at: Option<i64>,
    /// Seconds after the start without any metrics sample of the VM.
    gap: Option<(i64, i64)>,
    /// Relative noise on the demand (the simulator's).
    noise: f64,
    /// The guest brings hot-added vCPUs and memory online (most do; minimal images may not).
    onlines: bool,
}

/// What one trace gave.
#[derive(Debug, Default)]
struct TraceResult {
    changes: usize,
    flaps: usize,
    unmet_core_minutes: f64,
    memory_saturated_minutes: f64,
    average_vcpus: f64,
    average_memory_mib: f64,
    /// Minutes from the step to the first scale-up, and to 5 vCPUs or more.
    first_up_after_step: Option<f64>,
    five_after_step: Option<f64>,
    /// Scale-downs (CPU or memory) during a metrics gap or within the resource's `down_after`
    /// after it: no decision may count missing minutes as low ones.
    downs_on_missing_data: usize,
    pending_left: bool,
    /// The size after each change (seconds after the start, vCPUs, MiB), for `--changes`.
    timeline: Vec<(i64, u32, u64)>,
}

/// A change pvescale made: when, which resource, up or down.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Change {
    t: i64,
    cpu: bool,
    up: bool,
}

fn traces() -> Vec<Trace> {
    // Memory in the band (50 % of 4 GiB): the CPU traces change CPU only.
    let quiet = Pattern::Constant(2048.0);
    vec![
        Trace {
            name: "step 1 → 5 cores",
            minutes: 60,
            cpu: Pattern::Step {
                before: 1.0,
                after: 5.0,
                at: 20 * MIN,
            },
            memory: quiet.clone(),
            vcpus: 2,
            step_at: Some(20 * MIN),
            gap: None,
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "slow ramp up and down",
            minutes: 150,
            cpu: Pattern::Series {
                start: 10 * MIN,
                step: 5 * MIN,
                values: (0..=12)
                    .chain((0..12).rev())
                    .map(|k| 0.5 + f64::from(k) * 0.5)
                    .collect(),
            },
            memory: quiet.clone(),
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "short spikes (1m every 15m)",
            minutes: 120,
            cpu: Pattern::Spikes {
                base: 0.6,
                peak: 4.0,
                every: 15 * MIN,
                duration: MIN,
            },
            memory: quiet.clone(),
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "daily cycle, noisy (day = 4h)",
            minutes: 240,
            cpu: Pattern::Periodic {
                base: 2.5,
                amplitude: 2.0,
                period: 240 * MIN,
            },
            memory: quiet.clone(),
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.15,
            onlines: true,
        },
        Trace {
            name: "hovering at high (75-85 %)",
            minutes: 120,
            cpu: hovering(CPU_HIGH, 0.05, 2, 120, 14),
            memory: quiet.clone(),
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "metrics gap while idle",
            minutes: 100,
            cpu: Pattern::Constant(0.2),
            memory: quiet.clone(),
            vcpus: 6,
            step_at: None,
            gap: Some((35 * MIN, 55 * MIN)),
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "metrics gap while busy",
            minutes: 100,
            // Pinned at 2 vCPUs, then about 73 % of 6 during the gap.
            cpu: Pattern::Constant(4.0),
            memory: quiet.clone(),
            vcpus: 2,
            step_at: None,
            gap: Some((10 * MIN, 30 * MIN)),
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "memory growing",
            minutes: 100,
            cpu: Pattern::Constant(0.8),
            memory: Pattern::Ramp {
                from: 1500.0,
                to: 9000.0,
                start: 10 * MIN,
                end: 70 * MIN,
            },
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.0,
            onlines: true,
        },
        Trace {
            name: "memory hovering high",
            minutes: 120,
            cpu: Pattern::Constant(0.8),
            memory: Pattern::Periodic {
                base: 0.85 * 4096.0,
                amplitude: 150.0,
                period: 10 * MIN,
            },
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.0,
            onlines: true,
        },
        Trace {
            // 4 cores of demand on 2 vCPUs, and a guest that onlines nothing it is given (no
            // agent to ask): it reads pinned at 2 of whatever it gets.
            name: "guest onlines nothing",
            minutes: 120,
            cpu: Pattern::Constant(4.0),
            memory: quiet,
            vcpus: 2,
            step_at: None,
            gap: None,
            noise: 0.0,
            onlines: false,
        },
    ]
}

/// CPU demand whose figure at `vcpus` (with the I/O on top, as pvescale sees it) hovers around
/// `high`: a new level every 30 s, uniform within `high ± spread`, from a fixed seed.
fn hovering(high: f64, spread: f64, vcpus: u32, minutes: i64, seed: u64) -> Pattern {
    let mut x = seed;
    let values = (0..minutes * 2)
        .map(|_| {
            // splitmix64: a fixed, portable sequence.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (high + spread * u) * f64::from(vcpus) / (1.0 + IO_OVERHEAD)
        })
        .collect();
    Pattern::Series {
        start: 0,
        step: 30,
        values,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let show_changes = std::env::args().skip(1).any(|a| a == "--changes");
    self_check();
    let results: Vec<(Trace, TraceResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = traces()
            .into_iter()
            .map(|trace| {
                scope.spawn(move || {
                    let result = run_trace(&trace).map_err(|e| e.to_string());
                    (trace, result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok((trace, Ok(r))) => Ok((trace, r)),
                Ok((trace, Err(e))) => Err(format!("{}: {e}", trace.name)),
                Err(_) => Err("a trace panicked".to_string()),
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    // Unmet: core-minutes of CPU demand above the vCPUs; mem sat: minutes of memory demand
    // above the memory; up / ≥5: minutes from the step to the first scale-up and to 5 vCPUs;
    // downs gap: scale-downs during a metrics gap or within down_after after it.
    let mut table = new_table(&[
        "Trace",
        "Changes",
        "Flaps",
        "Unmet",
        "Mem sat",
        "vCPUs",
        "MiB",
        "Up",
        "≥5",
        "Downs gap",
        "Pending",
    ]);
    let minutes = |m: Option<f64>| m.map_or_else(|| "-".to_string(), |m| format!("{m:.0}m"));
    for (trace, r) in &results {
        table.add_row(vec![
            trace.name.to_string(),
            r.changes.to_string(),
            r.flaps.to_string(),
            format!("{:.1}", r.unmet_core_minutes),
            format!("{:.0}", r.memory_saturated_minutes),
            format!("{:.2}", r.average_vcpus),
            format!("{:.0}", r.average_memory_mib),
            minutes(r.first_up_after_step),
            minutes(r.five_after_step),
            r.downs_on_missing_data.to_string(),
            if r.pending_left { "yes" } else { "no" }.to_string(),
        ]);
    }
    println!("{table}");
    if show_changes {
        for (trace, r) in &results {
            let steps: Vec<String> = r
                .timeline
                .iter()
                .map(|(t, vcpus, mib)| format!("{}m {vcpus}/{mib}", t / MIN))
                .collect();
            println!("  {:<32} {}", trace.name, steps.join(", "));
        }
    }
    println!("\ntargets:");
    for (trace, r) in &results {
        for (target, met) in targets(trace, r) {
            println!(
                "  {:<32} {target:<48} {}",
                trace.name,
                if met { "met" } else { "MISSED" }
            );
        }
    }
    println!(
        "\n{} traces, {} simulated minutes, in {:.1} s",
        results.len(),
        results.iter().map(|(t, _)| t.minutes).sum::<i64>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The issue's targets that apply to a trace, each with whether it was met.
fn targets(trace: &Trace, r: &TraceResult) -> Vec<(&'static str, bool)> {
    let mut out = vec![("nothing left pending", !r.pending_left)];
    if trace.step_at.is_some() {
        out.push((
            "first scale-up ≤ up_after + one run (3 min)",
            r.first_up_after_step.is_some_and(|m| m <= 3.0),
        ));
        out.push((
            "≥ 5 vCPUs within 10 min",
            r.five_after_step.is_some_and(|m| m <= 10.0),
        ));
        out.push(("unmet demand ≤ 6 core-minutes", r.unmet_core_minutes <= 6.0));
    }
    if !trace.onlines {
        out.push((
            "grow taken back once, no flapping (≤ 2 changes)",
            r.changes <= 2 && r.average_vcpus < 2.5,
        ));
    }
    if trace.name.starts_with("short spikes") {
        out.push(("0 changes on short spikes", r.changes == 0));
    }
    if trace.name.starts_with("hovering") {
        out.push(("0 flaps on hovering load", r.flaps == 0));
    }
    if trace.gap.is_some() {
        out.push((
            "0 scale-downs on missing data",
            r.downs_on_missing_data == 0,
        ));
    }
    out
}

fn run_trace(trace: &Trace) -> Result<TraceResult, Box<dyn std::error::Error>> {
    let mut vm = VmSpec::new(VMID, "pve1")
        .name("vm101")
        .sockets(1)
        .cores(8)
        .vcpus(trace.vcpus)
        .memory_mib(4096)
        .numa(true)
        .hotplug("network,disk,usb,cpu,memory")
        .tags(&["autoscale"])
        .io_overhead(IO_OVERHEAD)
        .cpu_load(trace.cpu.clone())
        .mem_load(trace.memory.clone());
    if let Some((from, to)) = trace.gap {
        vm = vm.metrics_gap(from, to);
    }
    if !trace.onlines {
        vm = vm.onlines(false, false);
    }
    let mut builder = Sim::builder()
        .version("8.4")
        .node(NodeSpec::new("pve1").cpus(64).memory_mib(1_048_576))
        .token(TOKEN, SECRET, Privs::pvescale())
        .vm(vm);
    if trace.noise > 0.0 {
        builder = builder.noise(trace.noise, 7);
    }
    let sim = builder.start()?;
    let dir = tempfile::tempdir()?;
    let config = write_config(&sim, dir.path())?;
    let start = sim.now();

    // The size in force during each minute: `sizes[m]` from m to m + 1 minutes after the
    // start (a change made by the pass at m minutes applies from then). And the changes made.
    let mut sizes: Vec<(u32, u64)> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut timeline = Vec::new();
    let mut last = current_size(&sim);
    for _ in 0..trace.minutes {
        sizes.push(last);
        sim.advance(Duration::from_secs(60));
        pvescale::commands::run::pass(&config, Mode::Apply, sim.now() as u64)?;
        sim.wait_tasks(Duration::from_secs(10));
        let now = current_size(&sim);
        let t = sim.now() - start;
        if now.0 != last.0 {
            changes.push(Change {
                t,
                cpu: true,
                up: now.0 > last.0,
            });
        }
        if now.1 != last.1 {
            changes.push(Change {
                t,
                cpu: false,
                up: now.1 > last.1,
            });
        }
        if now != last {
            timeline.push((t, now.0, now.1));
        }
        last = now;
    }
    let pending_left = sim.vm(VMID).is_some_and(|vm| vm.has_pending());
    let demand = |rel: i64| {
        sim.demand(VMID, start + rel)
            .map_or((0.0, 0.0), |d| (d.cpu_cores, d.memory_mib))
    };
    Ok(TraceResult {
        timeline,
        ..measure(trace, &demand, &sizes, &changes, pending_left)
    })
}

fn current_size(sim: &Sim) -> (u32, u64) {
    sim.vm(VMID).map_or((0, 0), |vm| (vm.vcpus, vm.memory_mib))
}

/// The figures of one trace from the VM's true demand (cores, MiB at seconds after the start),
/// the sizes in force each minute and the changes made.
fn measure(
    trace: &Trace,
    demand: &dyn Fn(i64) -> (f64, f64),
    sizes: &[(u32, u64)],
    changes: &[Change],
    pending_left: bool,
) -> TraceResult {
    let mut unmet = 0.0;
    let mut saturated = 0.0;
    for (m, &(vcpus, memory)) in sizes.iter().enumerate() {
        // Ten-second steps through the minute ending at (m + 1) × 60, each taken at its
        // middle.
        for k in 1..=6 {
            let (cores, mib) = demand(m as i64 * MIN + k * 10 - 5);
            unmet += (cores - f64::from(vcpus)).max(0.0) / 6.0;
            if mib > memory as f64 {
                saturated += 1.0 / 6.0;
            }
        }
    }
    let n = sizes.len().max(1) as f64;
    let step = trace.step_at;
    let after_step = |pred: &dyn Fn(&Change) -> bool| {
        step.and_then(|s| {
            changes
                .iter()
                .find(|c| c.t > s && pred(c))
                .map(|c| (c.t - s) as f64 / 60.0)
        })
    };
    // The vCPUs after each change, to find when 5 were reached.
    let five_after_step = step.and_then(|s| {
        sizes
            .iter()
            .enumerate()
            .skip(1)
            .find(|(m, (vcpus, _))| *vcpus >= 5 && (*m as i64) * MIN > s)
            .map(|(m, _)| (m as i64 * MIN - s) as f64 / 60.0)
    });
    let downs_on_missing_data = trace.gap.map_or(0, |(from, to)| {
        changes
            .iter()
            .filter(|c| down_on_missing_data(c, from, to))
            .count()
    });
    TraceResult {
        changes: changes.len(),
        flaps: flaps(changes),
        unmet_core_minutes: unmet,
        memory_saturated_minutes: saturated,
        average_vcpus: sizes.iter().map(|s| f64::from(s.0)).sum::<f64>() / n,
        average_memory_mib: sizes.iter().map(|s| s.1 as f64).sum::<f64>() / n,
        first_up_after_step: after_step(&|c: &Change| c.cpu && c.up),
        five_after_step,
        downs_on_missing_data,
        pending_left,
        timeline: Vec::new(),
    }
}

/// A scale-down within a metrics gap `from..to` or sooner after it than the resource's
/// `down_after` (which it needs of data below `low`, all of it after the gap).
fn down_on_missing_data(c: &Change, from: i64, to: i64) -> bool {
    let down_after = if c.cpu {
        CPU_DOWN_AFTER
    } else {
        MEMORY_DOWN_AFTER
    };
    !c.up && c.t > from && c.t < to + down_after
}

/// Changes reversed (same resource, the other direction) within 60 minutes.
fn flaps(changes: &[Change]) -> usize {
    changes
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            changes[i + 1..]
                .iter()
                .filter(|d| d.cpu == c.cpu)
                .take(1)
                .any(|d| d.up != c.up && d.t - c.t <= 60 * MIN)
        })
        .count()
}

/// The measurement functions on cases worked out by hand, checked before every run.
fn self_check() {
    let ch = |t: i64, up: bool| Change { t, cpu: true, up };
    assert_eq!(flaps(&[ch(0, true), ch(30 * MIN, false)]), 1);
    assert_eq!(flaps(&[ch(0, true), ch(61 * MIN, false)]), 0);
    assert_eq!(
        flaps(&[ch(0, true), ch(5 * MIN, true), ch(10 * MIN, false)]),
        1
    );
    let trace = Trace {
        name: "check",
        minutes: 3,
        cpu: Pattern::Constant(3.0),
        memory: Pattern::Constant(5000.0),
        vcpus: 2,
        step_at: None,
        gap: None,
        noise: 0.0,
        onlines: true,
    };
    let demand = |rel: i64| (trace.cpu.at(rel), trace.memory.at(rel));
    let r = measure(
        &trace,
        &demand,
        &[(2, 4096), (2, 4096), (4, 8192)],
        &[],
        false,
    );
    assert!((r.unmet_core_minutes - 2.0).abs() < 1e-9, "{r:?}");
    assert!((r.memory_saturated_minutes - 2.0).abs() < 1e-9, "{r:?}");
    assert!((r.average_vcpus - 8.0 / 3.0).abs() < 1e-9, "{r:?}");
    // A step: 1 core until 1 minute, 5 from then; 2 vCPUs, 5 from the change at 3 minutes.
    let step = Trace {
        cpu: Pattern::Step {
            before: 1.0,
            after: 5.0,
            at: MIN,
        },
        step_at: Some(MIN),
        ..trace
    };
    let demand = |rel: i64| (step.cpu.at(rel), 0.0);
    let r = measure(
        &step,
        &demand,
        &[(2, 0), (2, 0), (2, 0), (5, 0)],
        &[Change {
            t: 3 * MIN,
            cpu: true,
            up: true,
        }],
        false,
    );
    assert!((r.unmet_core_minutes - 6.0).abs() < 1e-9, "{r:?}");
    assert_eq!(r.first_up_after_step, Some(2.0));
    assert_eq!(r.five_after_step, Some(2.0));
    // Missing data (a gap from 0 to 20 minutes): a CPU scale-down 5 or 10 minutes after it
    // counts, 20 minutes after it does not; memory needs 30; a scale-up never counts.
    let down = |t: i64, cpu: bool| Change { t, cpu, up: false };
    assert!(down_on_missing_data(&down(25 * MIN, true), 0, 20 * MIN));
    assert!(down_on_missing_data(&down(30 * MIN, true), 0, 20 * MIN));
    assert!(!down_on_missing_data(&down(40 * MIN, true), 0, 20 * MIN));
    assert!(down_on_missing_data(&down(40 * MIN, false), 0, 20 * MIN));
    assert!(!down_on_missing_data(&ch(10 * MIN, true), 0, 20 * MIN));
    // The hovering load reads high ± spread at its vCPUs, with the I/O on top.
    let Pattern::Series { values, .. } = hovering(0.8, 0.05, 2, 60, 1) else {
        unreachable!()
    };
    let figures = values.iter().map(|v| v * (1.0 + IO_OVERHEAD) / 2.0);
    assert!(
        figures
            .clone()
            .all(|f| (0.75 - 1e-9..=0.85 + 1e-9).contains(&f))
    );
    assert!(figures.clone().any(|f| f > 0.8) && figures.clone().any(|f| f < 0.8));
}

fn write_config(
    sim: &Sim,
    dir: &std::path::Path,
) -> Result<pvescale::config::Config, Box<dyn std::error::Error>> {
    let secret_file = dir.join("lab.secret");
    std::fs::write(&secret_file, SECRET)?;
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let ca_file = sim.write_ca_file(dir)?;
    let config_file = dir.join("pvescale.toml");
    std::fs::write(
        &config_file,
        format!(
            r#"state_dir = "{state}"

[[cluster]]
name = "lab"
url = "{url}"
token = "{TOKEN}"
token_secret_file = "{secret}"
ca_file = "{ca}"

[select]
tags = ["autoscale"]

[policy]
window = "5m"

[policy.cpu]
up_after = "2m"
"#,
            state = dir.join("state").display(),
            url = sim.url(),
            secret = secret_file.display(),
            ca = ca_file.display(),
        ),
    )?;
    let (config, _warnings) = pvescale::config::load(&config_file)?;
    Ok(config)
}
