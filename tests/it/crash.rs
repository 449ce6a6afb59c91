//! Crash safety: a run killed (SIGKILL) at any point leaves a valid state file, and whatever
//! of ours it left pending on a VM is found and cleaned up by the next run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn spawn_run(env: &TestEnv) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pvescale"))
        .args(["run", "--config"])
        .arg(env.config_path())
        .env("PVESCALE_NOW", env.sim.now().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pvescale")
}

/// Waits until the simulator has seen a request matching `what`, then kills the run.
fn kill_when(env: &TestEnv, child: &mut Child, what: impl Fn(&pvesim::Recorded) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.sim.requests().iter().any(&what) {
        assert!(
            Instant::now() < deadline,
            "the run never reached the kill point"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before the kill point");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the request be handled, then kill without warning.
    std::thread::sleep(Duration::from_millis(200));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

fn state_json(env: &TestEnv) -> serde_json::Value {
    let text = std::fs::read_to_string(env.state_file()).expect("a state file exists");
    serde_json::from_str(&text).expect("the state file is valid JSON")
}

/// A VM with more memory than it uses whose guest refuses to give memory back.
fn shrinking_env() -> TestEnv {
    TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .memory_mib(8192)
            .mem_load(Pattern::Constant(1000.0))
            .refuse_mem_unplug(0)),
        "[policy.memory]\ndown_after = \"1m\"\n",
    )
}

#[test]
fn killed_while_waiting_for_the_task_the_next_run_reverts_what_was_left_pending() {
    let env = shrinking_env();
    advance_until_a_change_is_due(&env);
    // The task status never answers: the run hangs there, after its write.
    env.sim
        .add_fault(Fault::on_prefix("GET", "/nodes/pve1/tasks").hang(Duration::from_secs(60)));
    let mut child = spawn_run(&env);
    kill_when(&env, &mut child, |r| {
        r.is("POST", "/nodes/pve1/qemu/101/config")
    });
    env.sim.clear_faults();
    env.sim.wait_tasks(Duration::from_secs(10));

    let state = state_json(&env);
    let in_flight = &state["clusters"]["lab"]["101"]["in_flight"];
    assert!(
        in_flight.is_object(),
        "the write was recorded before it was sent: {state}"
    );
    let vm = env.sim.vm(101).expect("vm");
    assert!(
        vm.pending.contains_key("memory"),
        "the refused unplug left memory pending: {:?}",
        vm.pending
    );

    minute(&env);
    let next = env.run(&["run", "--output", "json"]);
    let notes = next.json()["clusters"][0]["vms"][0]["notes"].to_string();
    assert!(
        notes.contains("reverted memory left pending by an interrupted earlier write"),
        "the next run says what it cleaned up:\n{}",
        next.all_output()
    );
    let vm = env.sim.vm(101).expect("vm");
    assert!(
        vm.pending.is_empty(),
        "nothing of ours is left pending: {:?}",
        vm.pending
    );
    let state = state_json(&env);
    assert!(
        state["clusters"]["lab"]["101"]["in_flight"].is_null(),
        "settled: {state}"
    );
    assert!(
        state["clusters"]["lab"]["101"]["memory"]["backoff_down"].is_object(),
        "a write that stayed pending counts as refused: backed off: {state}"
    );
    assert_eq!(
        env.sim.count("POST", "/nodes/pve1/qemu/101/config"),
        1,
        "no new attempt while backed off"
    );
}

#[test]
fn the_settling_run_reverts_only_its_own_value_and_sends_the_digest() {
    let env = shrinking_env();
    advance_until_a_change_is_due(&env);
    env.sim
        .add_fault(Fault::on_prefix("GET", "/nodes/pve1/tasks").hang(Duration::from_secs(60)));
    let mut child = spawn_run(&env);
    kill_when(&env, &mut child, |r| {
        r.is("POST", "/nodes/pve1/qemu/101/config")
    });
    env.sim.clear_faults();
    env.sim.wait_tasks(Duration::from_secs(10));
    // Before the next run, an admin sets memory for the next reboot: a pending value of the
    // same key that is not pvescale's.
    assert!(env.sim.update_vm(101, |vm| {
        vm.pending.insert("memory".into(), "16384".into());
    }));
    env.sim.clear_requests();
    minute(&env);
    let next = env.run(&["run", "--output", "json"]);
    assert_eq!(
        env.sim.vm(101).unwrap().pending_value("memory"),
        Some("16384"),
        "the admin's pending value is left alone:\n{}",
        next.all_output()
    );
    assert_eq!(
        env.sim.count("PUT", "/nodes/pve1/qemu/101/config"),
        0,
        "nothing of ours to revert: no write"
    );
    let notes = next.json()["clusters"][0]["vms"][0]["notes"].to_string();
    assert!(
        notes.contains("memory pending with a value that is not pvescale's"),
        "{}",
        next.all_output()
    );

    // Where the pending value is ours, the revert carries the config's digest.
    let env = shrinking_env();
    advance_until_a_change_is_due(&env);
    env.sim
        .add_fault(Fault::on_prefix("GET", "/nodes/pve1/tasks").hang(Duration::from_secs(60)));
    let mut child = spawn_run(&env);
    kill_when(&env, &mut child, |r| {
        r.is("POST", "/nodes/pve1/qemu/101/config")
    });
    env.sim.clear_faults();
    env.sim.wait_tasks(Duration::from_secs(10));
    env.sim.clear_requests();
    run_in_a_minute(&env);
    let reverts: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.param("revert").is_some())
        .collect();
    assert_eq!(reverts.len(), 1, "{reverts:#?}");
    assert!(
        reverts[0].param("digest").is_some_and(|d| d.len() == 40),
        "a revert is a write too: it carries the digest: {:?}",
        reverts[0].form
    );
}

#[test]
fn killed_after_a_write_that_went_live_the_next_run_records_the_change() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1").cpu_load(busy_from_start(1.95))),
        "[policy.cpu]\nup_after = \"1m\"\ncooldown_up = \"10m\"\n",
    );
    advance_until_a_change_is_due(&env);
    assert_eq!(env.vcpus(101), 2, "not yet");
    env.sim
        .add_fault(Fault::on_prefix("GET", "/nodes/pve1/tasks").hang(Duration::from_secs(60)));
    let mut child = spawn_run(&env);
    kill_when(&env, &mut child, |r| {
        r.is("POST", "/nodes/pve1/qemu/101/config")
    });
    env.sim.clear_faults();
    env.sim.wait_tasks(Duration::from_secs(10));
    assert!(env.vcpus(101) > 2, "the write went live before the kill");

    minute(&env);
    let writes_before = env.writes();
    let next = env.run(&["run"]);
    assert_eq!(next.code, 0, "{}", next.all_output());
    assert_eq!(
        env.writes(),
        writes_before,
        "the cooldown from the recorded change holds"
    );
    let state = state_json(&env);
    let change = &state["clusters"]["lab"]["101"]["cpu"]["last_change"];
    assert!(
        change.is_object(),
        "the change that went live is recorded: {state}"
    );
}

#[test]
fn killed_while_reading_the_state_file_stays_valid_and_unchanged() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.0))),
        "",
    );
    assert_eq!(run_in_a_minute(&env).code, 0);
    let before = std::fs::read(env.state_file()).expect("state");
    minute(&env);
    env.sim
        .add_fault(Fault::on("GET", "/cluster/metrics/export").hang(Duration::from_secs(60)));
    let mut child = spawn_run(&env);
    kill_when(&env, &mut child, |r| r.path == "/cluster/metrics/export");
    let after = std::fs::read(env.state_file()).expect("state");
    assert_eq!(
        before, after,
        "a run killed before its end leaves the old state"
    );
    env.sim.clear_faults();
    assert_eq!(env.run(&["run"]).code, 0, "and the next run works");
}
