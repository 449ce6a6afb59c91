//! Containers (issue 16) end to end: the real binary against simulated LXC containers whose
//! config PUT is synchronous and whose cgroup limits change at once, as pve-container does.

use crate::common::*;
use pvesim::{Fault, VmSpec};

const BOTH: &str = "[select]\ntags = [\"autoscale\"]\ntypes = [\"vm\", \"ct\"]\n\n";

/// A running container, tagged `autoscale`: 2 cores, 4096 MiB.
fn container(vmid: u32) -> VmSpec {
    VmSpec::new(vmid, "pve1")
        .lxc()
        .name(&format!("ct{vmid}"))
        .cores(2)
        .memory_mib(4096)
        .tags(&["autoscale"])
}

fn busy_container(vmid: u32) -> VmSpec {
    container(vmid).cpu_load(busy_from_start(1.9))
}

fn cores(env: &TestEnv, vmid: u32) -> Option<String> {
    env.sim
        .vm(vmid)
        .and_then(|ct| ct.current("cores").map(str::to_string))
}

/// Config writes to containers and to VMs, and config tasks started.
fn ct_puts(env: &TestEnv) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/lxc/") && r.path.ends_with("/config"))
        .count()
}

#[test]
fn a_busy_container_gets_more_cores_live_through_the_synchronous_put() {
    let env = TestEnv::start(
        cluster().vm(busy_container(200)),
        &format!("{BOTH}[policy.cpu]\nup_after = \"1m\"\n"),
    );
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    assert_eq!(cores(&env, 200).as_deref(), Some("2"));
    let second = run_in_a_minute(&env);
    assert_eq!(second.code, 0, "{}", second.all_output());
    let now: u32 = cores(&env, 200)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("cores set:\n{}", second.all_output()));
    assert!(now > 2, "grew:\n{}", second.all_output());
    assert_eq!(ct_puts(&env), 1, "one PUT to the container's config");
    assert!(
        env.sim.tasks().is_empty(),
        "no task: the PUT is synchronous"
    );
    let ct = env.sim.vm(200).expect("container exists");
    assert!(!ct.has_pending(), "nothing left pending: {:?}", ct.pending);
    assert!(second.stdout.contains("applied"), "{}", second.stdout);
    assert!(
        second.stdout.contains("2 → 6 cores") && second.stdout.contains("1 guests managed"),
        "a container's words: {}",
        second.stdout
    );
}

#[test]
fn an_idle_container_shrinks_in_small_steps_never_below_its_use_plus_the_margin() {
    // 1024 MiB in use of 4096, target 90 %: 1138 MiB would do, but each step takes at most an
    // eighth, and never below 1024 MiB + 15 % (1178 MiB).
    let env = TestEnv::start(
        cluster().vm(container(200).mem_load(pvesim::Pattern::Constant(1024.0))),
        &format!(
            "{BOTH}[policy.memory]\nlow = 85\nhigh = 95\ndown_after = \"2m\"\n\
             cooldown_down = \"1m\"\nmax_step_down = 4096\n"
        ),
    );
    let mut sizes = vec![env.memory(200)];
    for _ in 0..40 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
        sizes.push(env.memory(200));
    }
    assert!(sizes.last() < Some(&4096), "shrank: {sizes:?}");
    for pair in sizes.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        assert!(after >= before - before / 8, "small steps: {sizes:?}");
    }
    let floor = (1024.0_f64 * 1.15).ceil() as u64;
    assert!(
        sizes.iter().all(|&s| s >= floor),
        "never below use + margin: {sizes:?}"
    );
    assert!(
        sizes.last() < Some(&(floor + floor / 8)),
        "went down to it: {sizes:?}"
    );
    let ct = env.sim.vm(200).expect("container exists");
    assert_eq!(ct.oom_kills, 0, "no OOM kill inside: {sizes:?}");
    assert!(
        sizes.iter().any(|s| s % 256 != 0),
        "plain MiB, no DIMM grid: {sizes:?}"
    );
}

#[test]
fn a_dry_run_plans_a_containers_change_and_writes_nothing() {
    let env = TestEnv::start(
        cluster().vm(busy_container(200)),
        &format!("{BOTH}[policy.cpu]\nup_after = \"1m\"\n"),
    );
    env.run(&["run"]);
    minute(&env);
    let dry = env.run(&["run", "--dry-run", "--output", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.all_output());
    let ct = vm_json(&dry.json(), 200);
    assert_eq!(ct["type"], "ct", "{ct:#}");
    assert_eq!(ct["cpu"]["action"], "up", "{ct:#}");
    assert_eq!(env.writes(), 0, "a dry run writes nothing");
    assert_eq!(cores(&env, 200).as_deref(), Some("2"));
}

#[test]
fn containers_are_left_alone_unless_types_asks_for_them() {
    let env = TestEnv::start(
        cluster().vm(busy_vm(101, "pve1")).vm(busy_container(200)),
        "[policy.cpu]\nup_after = \"1m\"\n",
    );
    env.run(&["run"]);
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(env.vcpus(101) > 2, "the VM grew:\n{}", run.all_output());
    assert_eq!(
        cores(&env, 200).as_deref(),
        Some("2"),
        "the container did not"
    );
    assert_eq!(ct_puts(&env), 0);
    assert!(run.stdout.contains("1 VMs managed"), "{}", run.stdout);
    let status = env.run(&["status", "--output", "json"]).json();
    let vms = status["clusters"][0]["vms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(vms.iter().all(|vm| vm["vmid"] != 200), "{status:#}");
}

#[test]
fn status_shows_the_guest_type() {
    let env = TestEnv::start(cluster().vm(ready_vm(101, "pve1")).vm(container(200)), BOTH);
    let json = env.run(&["status", "--output", "json"]).json();
    assert_eq!(vm_json(&json, 101)["type"], "vm");
    let ct = vm_json(&json, 200);
    assert_eq!(ct["type"], "ct", "{ct:#}");
    assert_eq!(
        ct["live_scaling"], "yes",
        "a container needs nothing enabled: {ct:#}"
    );
    let table = env.run(&["status"]);
    assert_eq!(table.code, 0, "{}", table.all_output());
    let text = squash(&table.stdout);
    assert!(text.contains("VMID Type"), "{text}");
    assert!(text.contains("200 ct ct200"), "{text}");
    assert!(text.contains("101 vm vm101"), "{text}");
}

#[test]
fn check_says_a_container_needs_nothing_enabled_and_what_is_limited() {
    let env = TestEnv::start(
        cluster()
            .vm(ready_vm(101, "pve1"))
            .vm(container(200))
            .vm(container(201).cpulimit(1.0)),
        BOTH,
    );
    let check = env.run(&["check"]);
    let out = check.all_output();
    assert!(out.contains("CT 200 ct200"), "{out}");
    assert!(out.contains("live: cores 2"), "{out}");
    assert!(out.contains("OOM-kill"), "{out}");
    assert!(
        !out.contains("VM 200"),
        "a container is not called a VM: {out}"
    );
    assert!(!out.contains("qm set 20"), "nothing to enable: {out}");
    assert!(out.contains("cpulimit 1 caps its CPU time"), "{out}");
    assert!(out.contains("pct set 201 --delete cpulimit"), "{out}");
    assert!(!out.contains("pct set 200"), "{out}");
}

#[test]
fn history_metrics_and_notifications_carry_the_guest_type() {
    let env = TestEnv::start(
        cluster().vm(busy_vm(101, "pve1")).vm(busy_container(200)),
        "",
    );
    let rx = crate::notify::Receiver::start();
    let metrics = env.path("pvescale.prom");
    env.write_config(&format!(
        "{BOTH}[policy.cpu]\nup_after = \"1m\"\n\n\
         [notify]\nmin_interval = \"0s\"\n\n[[notify.webhook]]\nurl = \"{}\"\n",
        rx.url("/hook")
    ));
    // metrics_file is a top-level key: it goes before the tables.
    let config = std::fs::read_to_string(env.config_path()).expect("config");
    write_private(
        &env.config_path(),
        &format!("metrics_file = \"{}\"\n{config}", metrics.display()),
    );
    env.run(&["run"]);
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let history = std::fs::read_to_string(env.state_dir().join("history.jsonl")).expect("history");
    let kinds: Vec<(u64, String)> = history
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| {
            (
                e["vmid"].as_u64().unwrap_or(0),
                e["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(kinds.contains(&(101, "vm".into())), "{history}");
    assert!(kinds.contains(&(200, "ct".into())), "{history}");
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        text.contains("pvescale_vm_vcpus{cluster=\"lab\",vmid=\"200\",type=\"ct\",name=\"ct200\""),
        "{text}"
    );
    let bodies: Vec<serde_json::Value> = rx
        .to("/hook")
        .iter()
        .filter_map(|r| serde_json::from_str(&r.body).ok())
        .collect();
    let all = serde_json::Value::Array(bodies).to_string();
    assert!(all.contains("\"type\":\"ct\""), "{all}");
    assert!(all.contains("lab/200 CT (ct200)"), "{all}");
}

/// A container that wants 3.8 cores on 2 (PVE `version`), after it grew once; the run's
/// stdout and the new cores.
fn stalled_container_grows(version: &str) -> (String, u32) {
    let env = TestEnv::start(
        cluster()
            .version(version)
            .vm(container(200).cpu_load(busy_from_start(3.8))),
        &format!("{BOTH}[policy.cpu]\nup_after = \"1m\"\nmax_step_up = 16\n"),
    );
    env.run(&["run"]);
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let cores = cores(&env, 200).and_then(|c| c.parse().ok()).unwrap_or(0);
    (run.stdout, cores)
}

#[test]
fn a_containers_own_pressure_tells_how_much_more_it_wants() {
    // PVE 9: the container's cgroup stalls 47 % of the time; 2 busy cores / (1 − 0.47) = 3.8.
    let (out, with_pressure) = stalled_container_grows("9.0");
    assert!(out.contains("pressure 4"), "{out}");
    // PVE 8 has no pressure figures: pinned at its size, it takes saturated_factor (3) steps.
    let (out8, without) = stalled_container_grows("8.3");
    assert!(!out8.contains("pressure"), "{out8}");
    assert_eq!(without, 6, "{out8}");
    assert!(
        with_pressure > without,
        "{with_pressure} vs {without}:\n{out}"
    );
}

#[test]
fn status_shows_a_busy_containers_pressure() {
    let env = TestEnv::start(
        cluster()
            .version("9.0")
            .vm(container(200).cpu_load(busy_from_start(3.8)))
            .vm(container(201)),
        BOTH,
    );
    let json = env.run(&["status", "--output", "json"]).json();
    let busy = vm_json(&json, 200);
    let pressure = busy["cpu_pressure_percent"].as_f64().unwrap_or(0.0);
    assert!((40.0..55.0).contains(&pressure), "{busy:#}");
    let idle = vm_json(&json, 201);
    assert!(
        idle.get("cpu_pressure_percent").is_none(),
        "not read for an idle one: {idle:#}"
    );
    let table = env.run(&["status", "-v"]);
    assert!(
        squash(&table.stdout).contains("(stall 4"),
        "{}",
        table.stdout
    );
}

#[test]
fn recommend_and_simulate_size_a_container_in_plain_mib_and_shrink_it_carefully() {
    // 0.6 busy cores of 4 and 3000 MiB of 8192 for the whole week of history.
    let env = TestEnv::start(
        cluster().version("9.1").vm(container(200)
            .cores(4)
            .memory_mib(8192)
            .cpu_load(pvesim::Pattern::Constant(0.6))
            .mem_load(pvesim::Pattern::Constant(3000.0))
            .booted_ago(std::time::Duration::from_secs(10 * 86_400))),
        &format!("{BOTH}[policy]\nwindow = \"1m\"\n"),
    );
    let run = env.run(&["recommend", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let ct = vm_json(&run.json(), 200);
    // CPU as for a VM: ceil(0.6 × 1.1 / 0.525) = 2.
    assert_eq!(ct["cpu"]["recommended"], 2, "{ct:#}");
    // Memory: 3000 × 1.15 = 3450 MiB, not rounded up onto a DIMM grid (3584).
    assert_eq!(ct["memory"]["recommended_mib"], 3450, "{ct:#}");
    assert_eq!(ct["memory"]["source"], "guest", "{ct:#}");
    assert!(!ct["notes"].to_string().contains("hotplug"), "{ct:#}");

    let run = env.run(&["simulate", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let ct = vm_json(&run.json(), 200);
    let shrinks: Vec<(u64, u64)> = ct["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["resource"] == "memory")
                .map(|c| {
                    (
                        c["from"].as_u64().unwrap_or(0),
                        c["to"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(!shrinks.is_empty(), "an idle container shrinks: {ct:#}");
    for &(from, to) in &shrinks {
        assert!(
            to < from && from - to <= from / 8,
            "an eighth at most: {shrinks:?}"
        );
        assert!(to >= 3450, "never below use + 15 %: {shrinks:?}");
    }
}

/// A busy container and a policy that grows it on the second run.
fn busy_ct_env() -> TestEnv {
    TestEnv::start(
        cluster().vm(busy_container(200)),
        &format!("{BOTH}[policy.cpu]\nup_after = \"1m\"\n"),
    )
}

#[test]
fn a_refused_container_write_is_a_failure_with_nothing_half_done() {
    let env = busy_ct_env();
    // pve-container raises its per-key hotplug errors before it writes the config.
    env.sim.add_fault(
        Fault::on("PUT", "/nodes/pve1/lxc/200/config")
            .status(400)
            .message("unable to hotplug cores: simulated")
            .times(1),
    );
    env.run(&["run"]);
    let run = run_in_a_minute(&env);
    assert_eq!(
        run.code,
        3,
        "a failed write fails the run:\n{}",
        run.all_output()
    );
    assert_eq!(cores(&env, 200).as_deref(), Some("2"), "nothing changed");
    let ct = env.sim.vm(200).expect("container exists");
    assert!(!ct.has_pending(), "nothing left pending: {:?}", ct.pending);
    assert!(run.stdout.contains("not applied"), "{}", run.stdout);
}

#[test]
fn a_container_write_whose_answer_is_lost_is_learned_from_its_config() {
    let env = busy_ct_env();
    // The PUT goes through, its answer does not (a proxy's 596).
    env.sim.add_fault(
        Fault::on("PUT", "/nodes/pve1/lxc/200/config")
            .status(596)
            .after_apply(true)
            .times(1),
    );
    env.run(&["run"]);
    let run = run_in_a_minute(&env);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(
        cores(&env, 200).as_deref(),
        Some("6"),
        "{}",
        run.all_output()
    );
    assert!(run.stdout.contains("applied"), "{}", run.stdout);
    assert_eq!(ct_puts(&env), 1, "never written twice");
}

#[test]
fn pressure_is_read_only_for_containers_at_or_near_their_size() {
    let env = TestEnv::start(
        cluster()
            .version("9.0")
            .vm(container(200).cpu_load(busy_from_start(3.8)))
            .vm(container(201)),
        BOTH,
    );
    let status_reads = |vmid: u32| {
        env.sim
            .requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path == format!("/nodes/pve1/lxc/{vmid}/status/current")
            })
            .count()
    };
    for _ in 0..3 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
    }
    assert_eq!(status_reads(200), 3, "one call a run for the busy one");
    assert_eq!(status_reads(201), 0, "none for the idle one");
}
