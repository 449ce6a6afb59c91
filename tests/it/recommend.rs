//! `pvescale recommend` and `pvescale simulate` end to end: the real binary against the
//! simulated cluster, with load patterns whose history is known, and the expected
//! recommendations and changes worked out by hand below.
//!
//! How the simulator's history looks (tests/pvesim/src/metrics.rs), PVE 9 layout:
//! - `day`: 1440 points of 60 s; the point at time T averages (AVERAGE) or takes the highest
//!   (MAX) of 6 samples at T−50, T−40, …, T. So a point holds the load of the minute before T.
//! - `week`: 336 points of 30 min; the point at T uses 60 samples at T−1770, T−1740, …, T.
//! - `cpu` is busy/vCPUs and `maxcpu` the vCPUs, so `cpu × maxcpu` is the busy cores; the load
//!   a pattern asks for is capped at the VM's size (so every VM here is big enough).
//! - The clock starts at S = 2026-01-01 00:00 UTC (a multiple of a day); pattern times are
//!   relative to S. Each VM is booted 10 days before S, so a week of history is complete.
//!
//! Recommendation (default policy: cpu low 25 %, high 80 % → target 52.5 %; memory_margin 15 %;
//! `--cpu-margin` 10 %): vCPUs = ceil(p95 busy × 1.1 / 0.525); memory = peak used × 1.15 rounded
//! up onto the DIMM grid (1024 + k·512 below 17 GiB).
//!
//! Simulation: one decision a minute at S − since + 60 s, …, S. Every test uses
//! `window = "1m"`, so each decision sees exactly the history point of its minute.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const DAY: u64 = 86_400;
const S: u64 = pvesim::DEFAULT_START as u64;

/// A VM big enough that its history shows the whole demand, booted 10 days ago.
fn vm(vmid: u32, vcpus: u32, cores: u32, memory_mib: u64) -> VmSpec {
    ready_vm(vmid, "pve1")
        .cores(cores)
        .vcpus(vcpus)
        .memory_mib(memory_mib)
        .booted_ago(Duration::from_secs(10 * DAY))
}

fn pve9() -> SimBuilder {
    cluster().version("9.1")
}

const ONE_MINUTE_WINDOW: &str = "[policy]\nwindow = \"1m\"\n";

fn ok_json(env: &TestEnv, args: &[&str]) -> Value {
    let run = env.run(args);
    assert_eq!(run.code, 0, "{args:?}\n{}", run.all_output());
    run.json()
}

fn vm_of(report: &Value, vmid: u64) -> &Value {
    report["clusters"][0]["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["vmid"] == vmid))
        .unwrap_or_else(|| panic!("VM {vmid} in {report:#}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// `(time − S, resource, from, to)` of every simulated change.
fn changes(vm: &Value) -> Vec<(i64, String, u64, u64)> {
    vm["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        u(&c["time"]) as i64 - S as i64,
                        c["resource"].as_str().unwrap_or("").to_string(),
                        u(&c["from"]),
                        u(&c["to"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn counts(resource: &Value) -> (u64, u64, u64) {
    (
        u(&resource["changes_up"]),
        u(&resource["changes_down"]),
        u(&resource["flaps"]),
    )
}

#[test]
fn constant_load() {
    let env = TestEnv::start(
        pve9()
            // 0.6 busy cores of 4, 3000 MiB used of 8192, balloon statistics on.
            .vm(vm(101, 4, 8, 8192)
                .cpu_load(Pattern::Constant(0.6))
                .mem_load(Pattern::Constant(3000.0)))
            // 1 busy core of 2; no balloon statistics: memory is the host-side estimate,
            // which the simulator puts at max(use, 92 % of the memory) = 0.92 × 4096 = 3768.32.
            .vm(vm(102, 2, 4, 4096)
                .balloon_stats(false)
                .cpu_load(Pattern::Constant(1.0))
                .mem_load(Pattern::Constant(1000.0))),
        ONE_MINUTE_WINDOW,
    );

    let report = ok_json(&env, &["recommend", "--output", "json"]);
    assert_eq!(u(&report["since_secs"]), 7 * DAY, "--since defaults to 7d");
    let a = vm_of(&report, 101);
    // CPU: p95 = 0.6; ceil(0.6 × 1.1 / 0.525) = ceil(1.257) = 2 → a saving of 2 vCPUs.
    assert_eq!(f(&a["cpu"]["p95_busy_cores"]), 0.6);
    assert_eq!(u(&a["cpu"]["recommended"]), 2);
    assert_eq!(a["cpu"]["change"], -2);
    assert_eq!(a["cpu"]["verdict"], "saving");
    // Memory: 3000 × 1.15 = 3450 → 3584 (1024 + 5 × 512): 4608 MiB could go.
    assert_eq!(f(&a["memory"]["peak_used_mib"]), 3000.0);
    assert_eq!(u(&a["memory"]["recommended_mib"]), 3584);
    assert_eq!(a["memory"]["change_mib"], -4608);
    assert_eq!(a["memory"]["source"], "guest");
    // A full week: 1 day of 60 s points (1440) + 6 days of 30 min points (288).
    assert_eq!(u(&a["history"]["points"]), 1728);
    assert_eq!(u(&a["history"]["known_secs"]), 7 * DAY);
    assert_eq!(
        a["history"]["resolution_secs"],
        serde_json::json!([60, 1800])
    );
    assert_eq!(a["cpu"]["confidence"], "high");
    assert_eq!(a["memory"]["confidence"], "high");

    let b = vm_of(&report, 102);
    // CPU: ceil(1.0 × 1.1 / 0.525) = ceil(2.095) = 3: one vCPU short.
    assert_eq!(u(&b["cpu"]["recommended"]), 3);
    assert_eq!(b["cpu"]["verdict"], "shortfall");
    // Memory: host-side 3768.32 × 1.15 = 4333.6 → 4608; flagged, and low confidence.
    assert_eq!(b["memory"]["source"], "host");
    assert_eq!(u(&b["memory"]["recommended_mib"]), 4608);
    assert_eq!(b["memory"]["confidence"], "low");
    assert!(
        b["notes"].to_string().contains("host-side estimate"),
        "{b:#}"
    );

    let sim = ok_json(&env, &["simulate", "--output", "json"]);
    let a = vm_of(&sim, 101);
    let w0 = -(7 * DAY as i64);
    // CPU: 0.6 / 4 = 15 % < 25 %. The first decision (W0 + 1m) starts the breach; after
    // down_after = 15m (W0 + 16m) 4 → 3 (max_step_down 1). 0.6 / 3 = 20 %: the breach restarts
    // at W0 + 17m, 15 minutes later (W0 + 32m; the 15 min cooldown ended at W0 + 31m) 3 → 2.
    // 0.6 / 2 = 30 %: in the band for the rest of the week.
    // Memory: 3000 / 8192 = 36.6 % < 40 %, guest figures: after down_after = 30m (W0 + 31m)
    // down by max_step_down 1 GiB to 7168 (in use + 15 % needs only 3584); 3000 / 7168 = 41.9 %:
    // in the band.
    assert_eq!(
        changes(a),
        vec![
            (w0 + 16 * 60, "cpu".to_string(), 4, 3),
            (w0 + 31 * 60, "memory".to_string(), 8192, 7168),
            (w0 + 32 * 60, "cpu".to_string(), 3, 2),
        ]
    );
    assert_eq!(counts(&a["cpu"]), (0, 2, 0));
    assert_eq!(counts(&a["memory"]), (0, 1, 0));
    // 10080 decisions: 16 minutes at 4 vCPUs, 16 at 3, 10048 at 2:
    // (64 + 48 + 20096) / 10080 = 2.00476.
    assert_eq!(f(&a["cpu"]["average_actual"]), 4.0);
    assert_eq!(f(&a["cpu"]["average_simulated"]), 2.005);
    // Memory: 31 minutes at 8192, 10049 at 7168: 72285184 / 10080 = 7171.149.
    assert_eq!(f(&a["memory"]["average_simulated"]), 7171.149);
    assert_eq!(u(&a["cpu"]["above_high_actual_secs"]), 0);
    assert_eq!(u(&a["cpu"]["above_high_simulated_secs"]), 0);

    let b = vm_of(&sim, 102);
    // CPU 1 / 2 = 50 %: nothing. Memory 3768.32 / 4096 = 92 % > 85 %, but the figure is
    // host-side (no balloon statistics): the policy neither grows nor shrinks on it, since a
    // host-side figure follows every increase. No change all week.
    assert!(changes(b).is_empty(), "{b:#}");
    // Above high the whole week, with pvescale or without.
    assert_eq!(u(&b["memory"]["above_high_actual_secs"]), 7 * DAY);
    assert_eq!(u(&b["memory"]["above_high_simulated_secs"]), 7 * DAY);
}

/// Changes to the maximum in one step, so that each change goes straight to the size the
/// policy aims at (default steps are 2 up, 1 down).
const BIG_STEPS: &str =
    "[policy]\nwindow = \"1m\"\n\n[policy.cpu]\nmax_step_up = 8\nmax_step_down = 8\n";

#[test]
fn daily_cycle() {
    // busy(t) = 2 + 1.6 sin(2π t / 1 day): 0.4 at 18:00, 3.6 at 06:00, 2.0 at 00:00 rising.
    let env = TestEnv::start(
        pve9().vm(vm(103, 4, 8, 4096)
            .cpu_load(Pattern::Periodic {
                base: 2.0,
                amplitude: 1.6,
                period: DAY as i64,
            })
            .mem_load(Pattern::Constant(2400.0))),
        BIG_STEPS,
    );

    let report = ok_json(&env, &["recommend", "--since", "7d", "--output", "json"]);
    let v = vm_of(&report, 103);
    // The p95 of a sine is at sin(0.45π) = 0.98769: 2 + 1.6 × 0.98769 = 3.580. Six of the
    // seven days are 30-minute averages, whose third-highest point of a day (the 95th
    // percentile of 48) is centred 45 minutes from the peak: 2 + 1.6 × 0.9803 = 3.568.
    // ceil(3.57 × 1.1 / 0.525) = ceil(7.48) = 8: four vCPUs short.
    let p95 = f(&v["cpu"]["p95_busy_cores"]);
    assert!((3.56..3.58).contains(&p95), "p95 {p95}");
    assert_eq!(u(&v["cpu"]["recommended"]), 8);
    assert_eq!(v["cpu"]["change"], 4);
    assert!(f(&v["cpu"]["peak_busy_cores"]) > 3.59, "{v:#}");
    // Memory: 2400 × 1.15 = 2760 → 3072.
    assert_eq!(u(&v["memory"]["recommended_mib"]), 3072);

    // One day, 60 s points. At 4 vCPUs (the VM's size at S − 1 day, 00:00):
    // - 03:14 busy > 3.2 (sin > 0.75, 80 % of 4): 2 minutes later up to ceil(3.21 / 0.525) = 7.
    // - 06:00 peak 3.6 / 7 = 51 %. 12:36 busy < 1.75 (25 % of 7), 15 minutes later (busy 1.65)
    //   down to ceil(1.65 / 0.525) = 4 (41 %).
    // - 14:35 busy < 1.0 (25 % of 4), 15 minutes later (0.92) down to ceil(0.92 / 0.525) = 2.
    // - 16:38 busy < 0.5 (25 % of 2), 15 minutes later (0.46) down to 1 (46 %); trough 0.4.
    // - 20:46 busy > 0.8 (80 % of 1): up to ceil(0.81 / 0.525) = 2 (40 %).
    // - 23:03 busy > 1.6 (80 % of 2): up to ceil(1.61 / 0.525) = 4 (40 %), and 2.0 / 4 at the
    //   end of the day. So 3 up and 3 down, none reversed within the hour.
    let sim = ok_json(&env, &["simulate", "--since", "1d", "--output", "json"]);
    let v = vm_of(&sim, 103);
    let steps: Vec<(u64, u64)> = changes(v).iter().map(|c| (c.2, c.3)).collect();
    assert_eq!(
        steps,
        vec![(4, 7), (7, 4), (4, 2), (2, 1), (1, 2), (2, 4)],
        "{v:#}"
    );
    assert_eq!(counts(&v["cpu"]), (3, 3, 0));
    assert_eq!(counts(&v["memory"]), (0, 0, 0));
    let hours: Vec<f64> = changes(v)
        .iter()
        .map(|c| (c.0 + DAY as i64) as f64 / 3600.0)
        .collect();
    for (got, want) in hours.iter().zip([3.27, 12.85, 14.85, 16.9, 20.8, 23.1]) {
        assert!(
            (got - want).abs() < 0.1,
            "change at {got:.2}h, expected about {want}h"
        );
    }
    // Without pvescale, 4 vCPUs are above 80 % while sin > 0.75: (π − 2 asin 0.75) / 2π of the
    // day = 23.0 % = 331 minutes (332 one-minute points). With pvescale, each scale-up comes
    // after 2 minutes above (the breach starts with the first minute above, as `run` measures
    // it on the samples' timestamps, then 2 minutes of up_after): 6 min.
    let above = u(&v["cpu"]["above_high_actual_secs"]);
    assert!((330 * 60..=333 * 60).contains(&above), "{above}");
    assert_eq!(u(&v["cpu"]["above_high_simulated_secs"]), 6 * 60);
}

#[test]
fn spikes() {
    // 0.8 busy cores, 3.0 for the first 10 minutes of every hour, on 4 of at most 6 vCPUs.
    let env = TestEnv::start(
        pve9().vm(vm(104, 4, 6, 4096)
            .cpu_load(Pattern::Spikes {
                base: 0.8,
                peak: 3.0,
                every: 3600,
                duration: 600,
            })
            .mem_load(Pattern::Constant(2400.0))),
        // The step of 2 keeps the arithmetic below (a saturated VM wants × 3, bounded by it).
        "[policy]\nwindow = \"1m\"\n\n[policy.cpu]\nmin = 2\nmax_step_up = 2\n",
    );

    // The minute points of an hour H (samples T−50..T): T = H holds one spike sample
    // (3.0 + 5 × 0.8) / 6 = 1.167; H+1m … H+9m are 3.0; H+10m holds 5 of 6: 2.633; the other
    // 49 are 0.8. The 30 minute points: (H, H+30m] holds 19 spike samples of 60:
    // (19 × 3 + 41 × 0.8) / 60 = 1.497; (H−30m, H] one: 0.837.
    //
    // 7 days = 10080 minutes; the top 5 % is 504 minutes. Above 1.497 there are only the
    // last day's 24 × 9 = 216 minutes at 3.0 and 24 at 2.633, so p95 = 1.497 (6 days × 24 ×
    // 30 minutes at that value): ceil(1.497 × 1.1 / 0.525) = ceil(3.14) = 4, the size it has.
    let week = ok_json(&env, &["recommend", "--output", "json"]);
    let v = vm_of(&week, 104);
    assert_eq!(f(&v["cpu"]["p95_busy_cores"]), 1.497);
    assert_eq!(u(&v["cpu"]["recommended"]), 4);
    assert_eq!(v["cpu"]["verdict"], "right-sized");
    assert_eq!(
        f(&v["cpu"]["peak_busy_cores"]),
        3.0,
        "MAX points keep the spike"
    );
    // One day of minute points: 9 of 60 minutes (15 %) at 3.0, so p95 = 3.0:
    // ceil(3.0 × 1.1 / 0.525) = ceil(6.29) = 7, held at sockets × cores = 6.
    let day = ok_json(&env, &["recommend", "--since", "1d", "--output", "json"]);
    let v = vm_of(&day, 104);
    assert_eq!(f(&v["cpu"]["p95_busy_cores"]), 3.0);
    assert_eq!(u(&v["cpu"]["recommended"]), 6);
    assert_eq!(v["cpu"]["bound"], "envelope");
    assert_eq!(u(&v["cpu"]["envelope"]), 6);
    assert_eq!(u(&v["history"]["points"]), 1440);

    // Replay of the last day, hour by hour (H0 = S − 1 day; min = 2, default steps 2 up,
    // 1 down; up_after 2m, down_after 15m, cooldowns 3m up / 15m down):
    // Hour 0 at 4 vCPUs: the spike is 3.0 / 4 = 75 %, in the band; from H0+11m 0.8 / 4 = 20 %:
    //   at H0+26m down to 3 (max step 1). 0.8 / 3 = 26.7 %: in the band.
    // Every later hour H at 3 vCPUs: H+1m, +2m at 3.0 / 3 = 100 %; the breach starts with the
    //   first of them (its minute: H), as `run` measures it on the samples' timestamps: at
    //   H+2m up, saturated: × 3 = 9, by at most 2: 5. 3.0 / 5 = 60 %, 2.633 / 5 = 53 %.
    //   From H+11m 0.8 / 5 = 16 %: at H+26m down to 4 (target 2, step 1); 0.8 / 4 = 20 %:
    //   the breach restarts at H+27m, at H+42m down to 3.
    // So 23 hours × (1 up, 2 down) + 1 down: 23 up, 47 down. Flaps (a change reversed by the
    // next one within an hour): each up follows a down by 20 min (H−18m → H+2m) and is followed
    // by one 24 min later: 46.
    let sim = ok_json(&env, &["simulate", "--since", "1d", "--output", "json"]);
    let v = vm_of(&sim, 104);
    assert_eq!(counts(&v["cpu"]), (23, 47, 46));
    let h0 = -(DAY as i64);
    let first: Vec<(i64, u64, u64)> = changes(v)
        .iter()
        .take(4)
        .map(|c| (c.0 - h0, c.2, c.3))
        .collect();
    assert_eq!(
        first,
        vec![
            (26 * 60, 4, 3),
            (3600 + 2 * 60, 3, 5),
            (3600 + 26 * 60, 5, 4),
            (3600 + 42 * 60, 4, 3),
        ]
    );
    // Without pvescale 75 % at most: never above 80 %. With: 2 minutes an hour at 3 vCPUs in
    // hours 1..23: 46 minutes.
    assert_eq!(u(&v["cpu"]["above_high_actual_secs"]), 0);
    assert_eq!(u(&v["cpu"]["above_high_simulated_secs"]), 46 * 60);
    // Average vCPUs with pvescale: hour 0: 26 minutes at 4 and 34 at 3 = 206; each later
    // hour: 2 minutes at 3, 24 at 5, 16 at 4, 18 at 3 = 244; (206 + 23 × 244) / 1440 = 4.04.
    assert_eq!(f(&v["cpu"]["average_actual"]), 4.0);
    assert_eq!(f(&v["cpu"]["average_simulated"]), 4.04);
    assert_eq!(counts(&v["memory"]), (0, 0, 0));

    // The same minute by minute, as CSV.
    let run = env.run(&[
        "simulate", "--since", "1d", "--vm", "104", "--output", "csv",
    ]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "time,busy_cores,actual_vcpus,simulated_vcpus,used_mib,actual_memory_mib,\
         simulated_memory_mib,action"
    );
    assert_eq!(lines.len(), 1 + 1440, "one row a minute");
    for line in &lines[1..] {
        assert_eq!(line.split(',').count(), 8, "{line}");
    }
    // S − 1 day + 1 minute: the first spike minute.
    assert_eq!(lines[1], "2025-12-31T00:01:00Z,3,4,4,2400,4096,4096,");
    assert_eq!(
        lines[26],
        "2025-12-31T00:26:00Z,0.8,4,4,2400,4096,4096,cpu down 4 -> 3"
    );
    assert_eq!(lines[27], "2025-12-31T00:27:00Z,0.8,4,3,2400,4096,4096,");
    let actions = lines[1..].iter().filter(|l| !l.ends_with(',')).count();
    assert_eq!(actions, 23 + 47);
}

#[test]
fn growth() {
    // CPU grows linearly from 0.6 to 3.4 busy cores over the week; memory from 2800 to 3400 MiB.
    let week = 7 * DAY as i64;
    let env = TestEnv::start(
        pve9().vm(vm(105, 4, 8, 4096)
            .cpu_load(Pattern::Ramp {
                from: 0.6,
                to: 3.4,
                start: -week,
                end: 0,
            })
            .mem_load(Pattern::Ramp {
                from: 2800.0,
                to: 3400.0,
                start: -week,
                end: 0,
            })),
        BIG_STEPS,
    );

    // p95 of a linear ramp is 95 % of the way: 0.6 + 0.95 × 2.8 = 3.26 (the top 5 % is the
    // last 8.4 hours, all minute points): ceil(3.26 × 1.1 / 0.525) = ceil(6.83) = 7.
    // Memory: the peak is the last MAX point, 3400: 3400 × 1.15 = 3910 → 4096, as it is.
    let report = ok_json(&env, &["recommend", "--output", "json"]);
    let v = vm_of(&report, 105);
    let p95 = f(&v["cpu"]["p95_busy_cores"]);
    assert!((3.258..3.262).contains(&p95), "{p95}");
    assert_eq!(u(&v["cpu"]["recommended"]), 7);
    assert_eq!(f(&v["memory"]["peak_used_mib"]), 3400.0);
    assert_eq!(u(&v["memory"]["recommended_mib"]), 4096);
    assert_eq!(v["memory"]["verdict"], "right-sized");

    // Replay of the week (W0 = S − 7 days). The first six days are 30 minute points: the point
    // ending at T averages the ramp over samples T−1770 … T, i.e. its value at T − 885 s.
    // - W0+1m: 0.604 / 4 = 15 % < 25 %: at W0+16m down to ceil(0.604 / 0.525) = 2 (30 %).
    // - busy / 2 > 80 % needs busy > 1.6, reached 2.5 days in; the first point above it ends
    //   at W0+217800 s: 0.6 + 2.8 × (217800 − 885) / 604800 = 1.6042. The breach starts with
    //   it (W0+216000 s); two minutes later (W0+216120 s) up to ceil(1.6042 / 0.525) = 4 (40 %).
    // - busy / 4 > 80 % needs busy > 3.2, reached 6.5 days in, within the last day (minute
    //   points, ramp value at T − 25 s): first at W0+561660 s (covering the minute before),
    //   up at W0+561720 s to
    //   ceil(3.2007 / 0.525) = 7 (46 %, 49 % at the end).
    let sim = ok_json(&env, &["simulate", "--output", "json"]);
    let v = vm_of(&sim, 105);
    let w0 = -week;
    assert_eq!(
        changes(v),
        vec![
            (w0 + 16 * 60, "cpu".to_string(), 4, 2),
            (w0 + 216_120, "cpu".to_string(), 2, 4),
            (w0 + 561_720, "cpu".to_string(), 4, 7),
        ]
    );
    assert_eq!(counts(&v["cpu"]), (2, 1, 0));
    // Memory 2800..3400 of 4096 is 68..83 %: in the band, no change.
    assert_eq!(counts(&v["memory"]), (0, 0, 0));
    // Without pvescale 4 vCPUs are above 80 % from W0+561660 s to the end: 720 minutes.
    // With: 2 minutes at 2 vCPUs and 2 at 4.
    assert_eq!(u(&v["cpu"]["above_high_actual_secs"]), 720 * 60);
    assert_eq!(u(&v["cpu"]["above_high_simulated_secs"]), 4 * 60);
    // Minutes at each size: 16 at 4, 3586 at 2, 5760 at 4, 718 at 7:
    // (64 + 7172 + 23040 + 5026) / 10080 = 3.502.
    assert_eq!(f(&v["cpu"]["average_simulated"]), 3.502);
    assert_eq!(u(&v["cpu"]["simulated_end"]), 7);
}

#[test]
fn little_history_is_low_confidence_and_coarse_history_medium() {
    let env = TestEnv::start(
        cluster()
            .version("8.4")
            .vm(vm(106, 4, 8, 4096).cpu_load(Pattern::Constant(1.0)))
            .vm(vm(107, 4, 8, 4096)
                .created_ago(Duration::from_secs(12 * 3600))
                .booted_ago(Duration::from_secs(12 * 3600))
                .cpu_load(Pattern::Constant(1.0)))
            .vm(vm(108, 2, 4, 2048).running(false)),
        ONE_MINUTE_WINDOW,
    );
    let report = ok_json(&env, &["recommend", "--output", "json"]);
    // PVE 8 keeps 70 points: 30 minutes over 35 hours, 3 hours over 8.75 days. A week is
    // 35 h of 30 min points and the 133 h before in 3 h points (44 points, the last one cut
    // at the 35 h mark): known, but coarse: medium.
    let a = vm_of(&report, 106);
    assert_eq!(
        a["history"]["resolution_secs"],
        serde_json::json!([1800, 10800])
    );
    assert_eq!(u(&a["history"]["known_secs"]), 7 * DAY);
    assert_eq!(a["cpu"]["confidence"], "medium");
    assert!(a["notes"].to_string().contains("3h steps"), "{a:#}");
    // ceil(1.0 × 1.1 / 0.525) = 3 either way.
    assert_eq!(u(&a["cpu"]["recommended"]), 3);
    // 12 hours of history: low.
    let b = vm_of(&report, 107);
    assert_eq!(u(&b["history"]["known_secs"]), 12 * 3600);
    assert_eq!(b["cpu"]["confidence"], "low");
    assert!(b["notes"].to_string().contains("less than a day"), "{b:#}");
    // A VM stopped for all of it: listed, nothing to recommend.
    let c = vm_of(&report, 108);
    assert_eq!(c["cpu"]["confidence"], "none");
    assert_eq!(c["cpu"]["recommended"], Value::Null);
    assert_eq!(c["cpu"]["verdict"], "unknown");
    assert!(c["notes"].to_string().contains("stopped"), "{c:#}");

    // The table says the same to a person.
    let run = env.run(&["recommend"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    for text in [
        "106 (vm106)",
        "4 → 3 (−1)",
        "medium",
        "low",
        "none",
        "stopped",
    ] {
        assert!(run.stdout.contains(text), "{text:?} in\n{}", run.stdout);
    }
}

#[test]
fn one_vm_and_errors() {
    let env = TestEnv::start(
        pve9()
            .vm(vm(101, 4, 8, 4096).cpu_load(Pattern::Constant(1.0)))
            .vm(vm(150, 2, 4, 2048)
                .tags(&["other"])
                .cpu_load(Pattern::Constant(1.0))),
        ONE_MINUTE_WINDOW,
    );
    // --vm also takes a VM the config does not select (with a warning).
    let run = env.run(&["recommend", "--vm", "150", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let vms = run.json()["clusters"][0]["vms"].clone();
    assert_eq!(vms.as_array().map(Vec::len), Some(1));
    assert_eq!(vms[0]["vmid"], 150);
    assert!(run.stderr.contains("not selected"), "{}", run.stderr);
    // An unknown VM is an error.
    let run = env.run(&["simulate", "--vm", "999"]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(run.stderr.contains("VM 999"), "{}", run.stderr);
    // CSV needs a VM: a usage error.
    let run = env.run(&["simulate", "--output", "csv"]);
    assert_eq!(run.code, 2, "{}", run.all_output());
    // A bad duration is a usage error too.
    let run = env.run(&["recommend", "--since", "7"]);
    assert_eq!(run.code, 2, "{}", run.all_output());
    // A history read that fails: the VM is reported with the error, exit 3.
    env.sim
        .add_fault(Fault::on("GET", "/nodes/pve1/qemu/101/rrddata").status(500));
    let run = env.run(&["recommend", "--output", "json"]);
    assert_eq!(run.code, 3, "{}", run.all_output());
    let v = run.json();
    assert!(
        vm_of(&v, 101)["error"].to_string().contains("rrddata"),
        "{v:#}"
    );
    // Each timeframe read once per consolidation, no more (the fault answers every retry).
    env.sim.clear_faults();
    env.sim.clear_requests();
    let run = env.run(&["recommend", "--vm", "101", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let rrd: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/rrddata"))
        .map(|r| {
            format!(
                "{} {}",
                r.param("timeframe").unwrap_or(""),
                r.param("cf").unwrap_or("")
            )
        })
        .collect();
    assert_eq!(rrd.len(), 4, "{rrd:?}");
    for want in ["day AVERAGE", "day MAX", "week AVERAGE", "week MAX"] {
        assert!(rrd.iter().any(|r| r == want), "{want} in {rrd:?}");
    }
}
