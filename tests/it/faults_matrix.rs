//! Server faults on every endpoint a run uses: never a panic, never a VM left half-changed,
//! always a valid state file, and the exit code says what happened.

use std::time::Duration;

use crate::common::*;

const BUSY_VM: u32 = 101;
const IDLE_VM: u32 = 102;

/// Two VMs, each needing a change on the next run: one up (CPU), one down (memory).
fn env_with_changes_due() -> TestEnv {
    let env = TestEnv::start(
        cluster()
            // Busy from 90 s on: the setup run sees 30 s of it (< up_after), the next 90 s.
            .vm(ready_vm(BUSY_VM, "pve1").cpu_load(Pattern::Step {
                before: 0.5,
                after: 1.95,
                at: 90,
            }))
            .vm(ready_vm(IDLE_VM, "pve1")
                .memory_mib(8192)
                .mem_load(Pattern::Constant(1000.0))),
        "[policy.cpu]\nup_after = \"1m\"\n[policy.memory]\ndown_after = \"1m\"\n",
    );
    for _ in 0..2 {
        minute(&env);
        assert_eq!(env.run(&["run", "--dry-run"]).code, 0);
    }
    // One real run starts the breach timers (the busy VM's from its samples); the next acts.
    env.run(&["run"]);
    minute(&env);
    env
}

/// Every fault kind the simulator can inject on a path, with a label.
fn faults_for(method: &str, path: &str) -> Vec<(String, Fault)> {
    let mut out = Vec::new();
    for code in [500u16, 502, 595, 596] {
        out.push((
            format!("{code} on {method} {path}"),
            Fault::on_prefix(method, path).status(code),
        ));
    }
    if method == "GET" {
        out.push((
            format!("malformed JSON on {path}"),
            Fault::on_prefix(method, path).malformed_json(),
        ));
        out.push((
            format!("wrong types on {path}"),
            Fault::on_prefix(method, path).wrong_types(),
        ));
    }
    out
}

fn assert_sane(env: &TestEnv, label: &str, run: &Run) {
    let out = run.all_output();
    assert!(!out.contains("panicked"), "{label}: a panic\n{out}");
    assert!(
        [0, 1, 3].contains(&run.code),
        "{label}: exit code {}\n{out}",
        run.code
    );
    for vmid in [BUSY_VM, IDLE_VM] {
        let vm = env.sim.vm(vmid).expect("vm");
        assert!(
            vm.pending.is_empty() && vm.pending_delete.is_empty(),
            "{label}: VM {vmid} left with pending changes {:?}\n{out}",
            vm.pending
        );
    }
    let state = std::fs::read_to_string(env.state_file()).expect("state file");
    serde_json::from_str::<serde_json::Value>(&state)
        .unwrap_or_else(|e| panic!("{label}: state file is not valid JSON ({e})"));
}

#[test]
fn every_endpoint_and_fault_ends_cleanly() {
    let endpoints = [
        ("GET", "/cluster/resources"),
        ("GET", "/cluster/metrics/export"),
        ("GET", "/nodes/pve1/qemu/101/config"),
        ("GET", "/nodes/pve1/qemu/102/pending"),
        ("POST", "/nodes/pve1/qemu/101/config"),
        ("POST", "/nodes/pve1/qemu/102/config"),
        ("GET", "/nodes/pve1/tasks"),
    ];
    let mut cases = 0;
    for (method, path) in endpoints {
        for (label, fault) in faults_for(method, path) {
            let env = env_with_changes_due();
            env.sim.add_fault(fault);
            let run = env.run(&["run"]);
            assert_sane(&env, &label, &run);
            // And once the fault is gone, the next run does its job.
            env.sim.clear_faults();
            env.sim.wait_tasks(Duration::from_secs(5));
            let next = run_in_a_minute(&env);
            assert_sane(&env, &format!("{label}, then no fault"), &next);
            assert_eq!(
                next.code,
                0,
                "{label}: the run after the fault\n{}",
                next.all_output()
            );
            cases += 1;
        }
    }
    assert!(cases >= 30, "{cases} cases");
}

#[test]
fn a_huge_answer_is_an_error_not_an_allocation() {
    let env = env_with_changes_due();
    // 40 MiB of padding on a config read: over the client's 16 MiB limit for such answers.
    env.sim
        .add_fault(Fault::on("GET", "/nodes/pve1/qemu/101/config").huge_body(40));
    let run = env.run(&["run", "--output", "json"]);
    assert_sane(&env, "huge body", &run);
    assert_eq!(
        run.code, 3,
        "that VM failed, the other was handled\n{}",
        run.stderr
    );
    let vm = vm_json(&run.json(), BUSY_VM);
    assert!(
        vm["error"].as_str().unwrap_or("").contains("larger than"),
        "the error says the answer was too large: {vm:#}"
    );
}

#[test]
fn a_401_in_the_middle_of_a_run_fails_cleanly_without_the_secret() {
    let env = env_with_changes_due();
    // The first two requests (resources, metrics) pass; everything after is refused.
    env.sim.add_fault(Fault::any().unauthorized_from(3));
    let run = env.run(&["run", "-v"]);
    assert_sane(&env, "401 mid-run", &run);
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert!(run.all_output().contains("401"), "{}", run.all_output());
    assert!(!run.all_output().contains(TOKEN_SECRET));
}

#[test]
fn an_unreachable_node_skips_its_vms_and_the_rest_is_scaled() {
    let env = TestEnv::start(
        cluster()
            .node(NodeSpec::new("pve2").cpus(32).memory_mib(131072))
            .vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.95)))
            .vm(ready_vm(201, "pve2").cpu_load(Pattern::Constant(1.95))),
        "[policy.cpu]\nup_after = \"1m\"\n",
    );
    env.sim.update_node("pve2", |n| n.online = false);
    let mut last = None;
    for _ in 0..3 {
        minute(&env);
        last = Some(env.run(&["run", "--output", "json"]));
    }
    let last = last.expect("ran");
    assert_eq!(last.code, 0, "{}", last.all_output());
    assert!(env.vcpus(101) > 2, "the reachable node's VM was scaled");
    assert_eq!(env.vcpus(201), 2);
    let vm = vm_json(&last.json(), 201);
    assert!(
        vm["cpu"]["reason"].as_str().unwrap_or("").contains("pve2"),
        "the reason names the node: {vm:#}"
    );
}

#[test]
fn a_vm_migrated_between_read_and_write_is_left_for_the_next_run() {
    let env = TestEnv::start(
        cluster()
            .node(NodeSpec::new("pve2").cpus(32).memory_mib(131072))
            .vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.95))),
        "[policy.cpu]\nup_after = \"1m\"\n",
    );
    advance_until_a_change_is_due(&env);
    assert_eq!(env.vcpus(101), 2, "set-up: not changed yet");
    // The VM moves to pve2 right after pvescale read its pending changes on pve1; the
    // write is held back long enough for the move to happen first.
    env.sim.add_fault(
        Fault::on("POST", "/nodes/pve1/qemu/101/config")
            .latency(Duration::from_millis(800))
            .times(1),
    );
    env.sim.clear_requests();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pvescale"))
        .args(["run", "--output", "json", "--config"])
        .arg(env.config_path())
        .env("PVESCALE_NOW", env.sim.now().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while env.sim.count("GET", "/nodes/pve1/qemu/101/pending") == 0 {
        assert!(std::time::Instant::now() < deadline, "never read pending");
        std::thread::sleep(Duration::from_millis(5));
    }
    env.sim.update_vm(101, |vm| vm.node = "pve2".to_string());
    let out = child.wait_with_output().expect("run ends");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let vm = vm_json(&report, 101);
    let outcome = vm["cpu"]["outcome"].as_str().unwrap_or("").to_string();
    assert!(
        outcome.contains("not applied") && outcome.contains("migrated or deleted"),
        "{vm:#}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "not a failure: the next run handles it"
    );
    let next = run_in_a_minute(&env);
    assert_eq!(next.code, 0, "{}", next.all_output());
    assert!(env.vcpus(101) > 2, "scaled on its new node");
    assert!(env.sim.count("POST", "/nodes/pve2/qemu/101/config") >= 1);
}

#[test]
fn a_guest_refusing_cpu_unplug_is_reverted_and_backed_off() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .vcpus(6)
            .cpu_load(Pattern::Constant(0.2))
            .refuse_cpu_unplug(0)),
        "[policy.cpu]\ndown_after = \"2m\"\ncooldown_down = \"1m\"\n",
    );
    let mut refused = false;
    for _ in 0..8 {
        let run = run_in_a_minute(&env);
        assert!(!run.all_output().contains("panicked"));
        if run.stdout.contains("refused") {
            refused = true;
            break;
        }
    }
    assert!(refused, "the unplug was attempted and refused");
    let vm = env.sim.vm(101).expect("vm");
    assert!(vm.pending.is_empty(), "reverted: {:?}", vm.pending);
    let writes = env.writes();
    env.run_every_minute(5);
    assert_eq!(env.writes(), writes, "backed off: no new attempt");
}

#[test]
fn a_task_that_never_finishes_is_waited_for_boundedly_and_settled_next_run() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(BUSY_VM, "pve1").cpu_load(Pattern::Constant(1.95))),
        "[policy.cpu]\nup_after = \"1m\"\n",
    );
    // A short task_timeout for the test; the default is 60s.
    let config = std::fs::read_to_string(env.config_path()).expect("config");
    let config = config.replace(
        "timeout = \"5s\"\n",
        "timeout = \"5s\"\ntask_timeout = \"2s\"\n",
    );
    write_private(&env.config_path(), &config);
    advance_until_a_change_is_due(&env);
    env.sim
        .add_fault(Fault::on("POST", "/nodes/pve1/qemu/101/config").task_never_finishes());
    let run = env.run(&["run", "--output", "json"]);
    assert_eq!(
        run.code, 3,
        "an unsettled write counts as a failure\n{}",
        run.stderr
    );
    let vm = vm_json(&run.json(), BUSY_VM);
    assert!(
        vm["cpu"]["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("unsettled"),
        "{vm:#}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).expect("state"))
            .expect("json");
    assert!(
        state["clusters"]["lab"]["101"]["in_flight"].is_object(),
        "{state}"
    );

    env.sim.clear_faults();
    let next = run_in_a_minute(&env);
    assert_eq!(next.code, 0, "{}", next.all_output());
    assert!(
        env.vcpus(BUSY_VM) > 2,
        "the change is made once the server behaves"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).expect("state"))
            .expect("json");
    assert!(
        state["clusters"]["lab"]["101"]["in_flight"].is_null(),
        "{state}"
    );
}

#[test]
fn a_hung_read_times_out_and_is_retried() {
    let env = env_with_changes_due();
    // Silent for longer than the 5s request timeout of the test config, once.
    env.sim.add_fault(
        Fault::on("GET", "/nodes/pve1/qemu/101/config")
            .hang(Duration::from_secs(30))
            .times(1),
    );
    let run = env.run(&["run"]);
    assert_sane(&env, "hung read", &run);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        env.vcpus(BUSY_VM) > 2,
        "the retry read the config and the change was made"
    );
    assert_eq!(env.sim.count("GET", "/nodes/pve1/qemu/101/config"), 2);
}
