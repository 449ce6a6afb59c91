//! `pvescale run` when things go wrong: concurrent config edits (digest), 596 on a write,
//! failing metric reads, a bad token, a held lock, a corrupt state file, missing privileges.
//! The real binary against the simulated cluster over HTTPS.

use std::time::Duration;

use crate::common::*;
use pvesim::Recorded;

/// qemu-server's answer to a write with a stale digest (API2/Qemu.pm, update_vm_api).
const DIGEST_MISMATCH: &str = "checksum mismatch (file change by other user?)";

fn config_path(vmid: u32) -> String {
    format!("/nodes/pve1/qemu/{vmid}/config")
}

/// Config writes (POST/PUT) to one VM's config recorded so far.
fn writes_to(env: &TestEnv, vmid: u32) -> Vec<Recorded> {
    let path = config_path(vmid);
    env.sim
        .requests()
        .into_iter()
        .filter(|r| (r.method == "POST" || r.method == "PUT") && r.path == path)
        .collect()
}

/// Runs pvescale in a thread; once a recorded request matches `trigger`, calls `then` while
/// pvescale is still running (a latency fault on a later request keeps it there).
fn run_and_intervene(
    env: &TestEnv,
    args: &[&str],
    trigger: impl Fn(&Recorded) -> bool,
    then: impl FnOnce(),
) -> Run {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| env.run(args));
        let mut then = Some(then);
        while !handle.is_finished() {
            if then.is_some()
                && env.sim.requests().iter().any(&trigger)
                && let Some(f) = then.take()
            {
                f();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let run = handle.join().expect("pvescale thread");
        assert!(
            then.is_none(),
            "the trigger request never came:\n{}",
            run.all_output()
        );
        run
    })
}

// --- 1. digest conflict -------------------------------------------------------------------

#[test]
fn digest_conflict_changes_nothing_and_the_next_run_applies() {
    let env = busy_env();
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    minute(&env);
    // Someone else's edit lands between pvescale's read and its write.
    env.sim.add_fault(
        Fault::on("POST", &config_path(101))
            .status(500)
            .message(DIGEST_MISMATCH)
            .times(1),
    );
    env.sim.clear_requests();
    let conflict = env.run(&["run"]);
    // A concurrent edit is not a failure: the change is left for the next run (exit 0).
    assert_eq!(conflict.code, 0, "{}", conflict.all_output());
    assert_eq!(env.vcpus(101), 2, "no change on a digest conflict");
    let writes = writes_to(&env, 101);
    assert_eq!(writes.len(), 1, "one write attempt, no retry: {writes:#?}");
    assert!(
        writes[0].param("digest").is_some_and(|d| !d.is_empty()),
        "the write carries the digest: {:?}",
        writes[0].form
    );
    assert!(
        conflict.stdout.contains("changed meanwhile"),
        "the output says the config changed:\n{}",
        conflict.all_output()
    );
    assert!(conflict.stdout.contains("0 changed"), "{}", conflict.stdout);

    env.sim.clear_faults();
    let next = run_in_a_minute(&env);
    assert_eq!(next.code, 0, "{}", next.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert!(
        env.vcpus(101) > 2,
        "the next run applies it:\n{}",
        next.all_output()
    );
    assert!(next.stdout.contains("applied"), "{}", next.stdout);
}

#[test]
fn real_concurrent_edit_between_read_and_write_is_a_digest_conflict() {
    let env = busy_env();
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    // Hold pvescale between its config read and its write, and edit the VM meanwhile.
    env.sim.add_fault(
        Fault::on("GET", "/nodes/pve1/qemu/101/pending")
            .latency(Duration::from_secs(3))
            .times(1),
    );
    let run = run_and_intervene(
        &env,
        &["run", "--output", "json"],
        |r| r.method == "GET" && r.path == config_path(101),
        || {
            assert!(env.sim.update_vm(101, |vm| {
                vm.config
                    .insert("description".into(), "edited by an admin".into());
            }));
        },
    );
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(env.vcpus(101), 2, "the stale write was refused");
    assert_eq!(
        env.sim.vm(101).unwrap().current("description"),
        Some("edited by an admin"),
        "the admin's edit survives"
    );
    let vm = vm_json(&run.json(), 101);
    let outcome = vm["cpu"]["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome.contains("changed meanwhile"),
        "outcome {outcome:?}:\n{}",
        run.stdout
    );
    assert_eq!(vm["failed"], false, "{vm:#}");

    let next = run_in_a_minute(&env);
    assert_eq!(next.code, 0, "{}", next.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert!(env.vcpus(101) > 2, "{}", next.all_output());
}

#[test]
fn a_concurrent_edit_seen_by_the_task_is_changed_meanwhile_not_a_failure() {
    // The edit lands after the POST was accepted: qemu-server's worker checks the digest
    // again under the config lock, and the task ends with the mismatch as its exitstatus.
    // PVE 8.2 and older spell it "missmatch".
    for version in ["8.4", "8.2"] {
        let env = TestEnv::start(
            cluster().version(version).vm(busy_vm(101, "pve1")),
            "[policy.cpu]\nup_after = \"1m\"\n",
        );
        assert_eq!(env.run(&["run"]).code, 0);
        minute(&env);
        env.sim.add_fault(
            Fault::on("POST", &config_path(101))
                .concurrent_edit("description", "edited by an admin")
                .after_apply(true)
                .times(1),
        );
        let run = env.run(&["run", "--output", "json"]);
        assert_eq!(
            run.code,
            0,
            "{version}: not a failure\n{}",
            run.all_output()
        );
        let task = env
            .sim
            .tasks()
            .into_iter()
            .find(|t| t.vmid == 101)
            .expect("the config task");
        assert!(
            task.exitstatus
                .as_deref()
                .is_some_and(|e| e.contains("file change by other user")),
            "{version}: the task ended with the digest conflict: {task:?}"
        );
        assert_eq!(env.vcpus(101), 2, "{version}: nothing written");
        assert_eq!(
            env.sim.vm(101).unwrap().current("description"),
            Some("edited by an admin"),
            "{version}: the admin's edit survives"
        );
        let vm = vm_json(&run.json(), 101);
        assert_eq!(vm["failed"], false, "{version}: {vm:#}");
        assert!(
            vm["cpu"]["outcome"]
                .as_str()
                .is_some_and(|o| o.contains("changed meanwhile")),
            "{version}: {vm:#}"
        );
        assert_eq!(run_in_a_minute(&env).code, 0);
        env.sim.wait_tasks(Duration::from_secs(5));
        assert!(env.vcpus(101) > 2, "{version}: retried next run");
    }
}

// --- 2. 596 on a write after the change was applied ---------------------------------------

#[test]
fn write_596_after_apply_rereads_and_never_writes_twice() {
    let env = busy_env();
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    env.sim.add_fault(
        Fault::on("POST", &config_path(101))
            .status(596)
            .after_apply(true)
            .times(1),
    );
    env.sim.clear_requests();
    let run = env.run(&["run", "--output", "json"]);
    env.sim.wait_tasks(Duration::from_secs(5));
    let writes = writes_to(&env, 101);
    assert_eq!(
        writes.len(),
        1,
        "exactly one write in the run (no retry, no revert): {writes:#?}\n{}",
        run.all_output()
    );
    assert_eq!(writes[0].status, 596);
    let requests = env.sim.requests();
    let write_seq = writes[0].seq;
    assert!(
        requests.iter().any(|r| r.method == "GET"
            && r.seq > write_seq
            && r.path.starts_with("/nodes/pve1/qemu/101/")),
        "pvescale re-reads the VM after the 596: {requests:#?}"
    );
    assert!(env.vcpus(101) > 2, "the change was applied by the server");
    let vm = vm_json(&run.json(), 101);
    let outcome = vm["cpu"]["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        outcome == "applied" || outcome.starts_with("unsettled"),
        "the outcome is reported as applied or unknown, not {outcome:?}:\n{}",
        run.all_output()
    );
    if outcome == "applied" {
        assert_eq!(run.code, 0, "{}", run.all_output());
        // Recorded as a change: the cooldown runs, nothing is written again next run.
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
        assert_eq!(
            state["clusters"]["lab"]["101"]["cpu"]["last_change"]["to"],
            env.vcpus(101),
            "{state:#}"
        );
        minute(&env);
        env.sim.clear_requests();
        let next = env.run(&["run"]);
        assert_eq!(next.code, 0, "{}", next.all_output());
        assert!(writes_to(&env, 101).is_empty(), "{}", next.all_output());
    } else {
        assert_eq!(run.code, 3, "{}", run.all_output());
    }
}

#[test]
fn write_596_before_apply_rereads_reports_it_and_the_next_run_applies() {
    let env = busy_env();
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    // The node was unreachable: the write never happened.
    env.sim
        .add_fault(Fault::on("POST", &config_path(101)).status(596).times(1));
    env.sim.clear_requests();
    let run = env.run(&["run", "--output", "json"]);
    env.sim.wait_tasks(Duration::from_secs(5));
    assert_eq!(writes_to(&env, 101).len(), 1, "{}", run.all_output());
    assert_eq!(env.vcpus(101), 2, "nothing changed");
    let vm = vm_json(&run.json(), 101);
    let outcome = vm["cpu"]["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(outcome, "applied", "{vm:#}");
    assert!(
        outcome.contains("not applied") || outcome.starts_with("unsettled"),
        "the outcome says it did not (or may not) apply: {outcome:?}"
    );
    assert_eq!(vm["failed"], true, "{vm:#}");
    assert_eq!(run.code, 3, "{}", run.all_output());

    let next = run_in_a_minute(&env);
    assert_eq!(next.code, 0, "{}", next.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert!(
        env.vcpus(101) > 2,
        "the next run applies it:\n{}",
        next.all_output()
    );
}

// --- 3. transient 500 on reads ------------------------------------------------------------

#[test]
fn failing_metric_reads_mean_no_scale_down() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .vcpus(4)
            .cpu_load(Pattern::Constant(0.1))),
        "[policy.cpu]\ndown_after = \"2m\"\n",
    );
    for _ in 0..2 {
        let run = env.run(&["run"]);
        assert_eq!(run.code, 0, "{}", run.all_output());
        minute(&env);
    }
    assert_eq!(env.vcpus(101), 4, "not yet: down_after is 2m");
    // Low for 2m now; but every metrics source fails.
    env.sim
        .add_fault(Fault::on("GET", "/cluster/metrics/export").status(500));
    env.sim
        .add_fault(Fault::on("GET", "/nodes/pve1/qemu/101/rrddata").status(500));
    env.sim.clear_requests();
    let blind = env.run(&["run", "--output", "json"]);
    assert_eq!(blind.code, 0, "{}", blind.all_output());
    assert_eq!(env.vcpus(101), 4, "no scale-down without data");
    assert_eq!(env.writes(), 0, "no write without data");
    assert!(
        env.sim.count("GET", "/nodes/pve1/qemu/101/rrddata") >= 1,
        "rrddata was tried after metrics/export failed"
    );
    let report = blind.json();
    let vm = vm_json(&report, 101);
    assert_eq!(vm["cpu"]["action"], "keep", "{vm:#}");
    assert!(
        vm["cpu"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no data")),
        "the reason says the data is unknown: {vm:#}"
    );
    assert!(vm["cpu_percent"].is_null(), "unknown, never 0: {vm:#}");
    let source = report["clusters"][0]["metrics_source"]
        .as_str()
        .unwrap_or_default();
    assert!(
        source.contains("metrics/export failed"),
        "the report says why: {source:?}"
    );

    // Control: once the data is back the scale-down happens (after down_after again).
    env.sim.clear_faults();
    let mut scaled = false;
    for _ in 0..4 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
        env.sim.wait_tasks(Duration::from_secs(5));
        if env.vcpus(101) < 4 {
            scaled = true;
            break;
        }
    }
    assert!(scaled, "with data back, the VM is scaled down");
}

#[test]
fn a_transient_500_on_cluster_resources_is_retried() {
    let env = busy_env();
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    env.sim
        .add_fault(Fault::on("GET", "/cluster/resources").status(500).times(1));
    env.sim.clear_requests();
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let reads: Vec<Recorded> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/cluster/resources")
        .collect();
    assert_eq!(reads.len(), 2, "one failure, one retry: {reads:#?}");
    assert_eq!(reads[0].status, 500);
    assert_eq!(reads[1].status, 200);
    env.sim.wait_tasks(Duration::from_secs(5));
    assert!(
        env.vcpus(101) > 2,
        "the run went on and scaled:\n{}",
        run.all_output()
    );
    assert!(run.stdout.contains("1 changed"), "{}", run.stdout);
}

// --- 4. bad token -------------------------------------------------------------------------

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !run.all_output().contains(secret),
            "secret {secret:?} in the output:\n{}",
            run.all_output()
        );
    }
}

fn assert_clear_auth_message(run: &Run) {
    let err = run.stderr.to_lowercase();
    assert!(
        err.contains("token") && (err.contains("refused") || err.contains("authentication")),
        "stderr explains the authentication failure:\n{}",
        run.all_output()
    );
    assert!(
        run.stderr.contains(TOKEN_ID),
        "names the token:\n{}",
        run.stderr
    );
}

#[test]
fn wrong_secret_in_the_secret_file_fails_clearly_without_leaking_it() {
    const WRONG: &str = "0badc0de-1111-4222-8333-944445555666";
    let env = busy_env();
    // After TestEnv::start (which wrote the right secret).
    write_private(&env.path("lab.secret"), WRONG);
    for args in [&["run"][..], &["run", "-v"], &["run", "-vv"]] {
        let run = env.run(args);
        assert_eq!(
            run.code,
            1,
            "{args:?}: no cluster usable:\n{}",
            run.all_output()
        );
        assert_clear_auth_message(&run);
        assert_no_secret(&run, &[WRONG, TOKEN_SECRET]);
    }
    let check = env.run(&["check", "-v"]);
    assert_eq!(check.code, 1, "{}", check.all_output());
    assert!(
        check.all_output().contains("refused"),
        "{}",
        check.all_output()
    );
    assert_no_secret(&check, &[WRONG, TOKEN_SECRET]);
    assert_eq!(env.writes(), 0);
    assert_eq!(env.vcpus(101), 2);
}

#[test]
fn token_secret_changed_on_the_server_fails_clearly_without_leaking_ours() {
    const SERVER_SIDE: &str = "77777777-8888-4999-aaaa-bbbbbbbbbbbb";
    let env = busy_env();
    env.sim.set_token(TOKEN_ID, SERVER_SIDE, Privs::pvescale());
    for args in [&["run"][..], &["run", "-v"], &["status", "-v"]] {
        let run = env.run(args);
        assert_eq!(run.code, 1, "{args:?}:\n{}", run.all_output());
        assert_clear_auth_message(&run);
        assert_no_secret(&run, &[TOKEN_SECRET, SERVER_SIDE]);
    }
    assert_eq!(env.writes(), 0);
}

// --- 6. two concurrent runs ---------------------------------------------------------------

#[test]
fn a_held_lock_makes_the_run_exit_75_and_touch_nothing() {
    let env = busy_env();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let lock_path = env.state_dir().join("pvescale.lock");
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .unwrap();
    holder.try_lock().expect("the test takes the lock");
    let blocked = run_in_a_minute(&env);
    assert_eq!(blocked.code, 75, "{}", blocked.all_output());
    assert!(
        env.sim.requests().is_empty(),
        "not a single API request while another run holds the lock: {:#?}",
        env.sim.requests()
    );
    assert!(!env.state_file().exists(), "no state written");
    assert!(blocked.stdout.is_empty(), "{}", blocked.stdout);

    drop(holder);
    let next = env.run(&["run"]);
    assert_eq!(next.code, 0, "{}", next.all_output());
    assert!(env.state_file().exists());
}

// --- 7. corrupt state file ----------------------------------------------------------------

#[test]
fn a_corrupt_state_file_is_set_aside_with_a_warning_and_the_run_works() {
    const GARBAGE: &str = "{\"version\": 1, \"clusters\": {\"lab\": [garbage";
    let env = busy_env();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::write(env.state_file(), GARBAGE).unwrap();
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr.contains("warning")
            && run.stderr.contains(&env.state_file().display().to_string()),
        "a warning naming the state file:\n{}",
        run.stderr
    );
    let aside: Vec<_> = std::fs::read_dir(env.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one copy kept aside");
    assert_eq!(
        aside[0].file_name().to_string_lossy(),
        format!("state.json.corrupt-{}", env.sim.now()),
        "the copy is named by the run's one clock (PVESCALE_NOW), not the system clock"
    );
    assert_eq!(
        std::fs::read_to_string(aside[0].path()).unwrap(),
        GARBAGE,
        "the copy is the old file"
    );
    assert!(
        run.stderr
            .contains(&*aside[0].file_name().to_string_lossy()),
        "the warning says where the copy is:\n{}",
        run.stderr
    );
    let fresh: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap())
            .expect("a valid new state file");
    assert_eq!(fresh["version"], 1);
    assert!(
        fresh["clusters"]["lab"]["101"].is_object(),
        "the new state holds this run: {fresh:#}"
    );

    // And the state works from there on: the breach started in that run is carried over.
    let next = run_in_a_minute(&env);
    assert_eq!(next.code, 0, "{}", next.all_output());
    assert!(!next.stderr.contains("warning"), "{}", next.stderr);
    env.sim.wait_tasks(Duration::from_secs(5));
    assert!(env.vcpus(101) > 2, "{}", next.all_output());
}

// --- 11. locked mid-run -------------------------------------------------------------------

#[test]
fn a_vm_locked_between_read_and_write_is_left_for_the_next_run() {
    let env = busy_env();
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    // The backup starts after pvescale read the config: the write answers "VM is locked".
    env.sim.add_fault(
        Fault::on("POST", &config_path(101))
            .status(500)
            .message("VM is locked (backup)")
            .times(1),
    );
    env.sim.clear_requests();
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(writes_to(&env, 101).len(), 1, "one attempt, no retry");
    assert_eq!(env.vcpus(101), 2);
    assert!(run.stdout.contains("locked"), "{}", run.stdout);
    assert!(run.stdout.contains("not applied"), "{}", run.stdout);
}

// --- 12. a token lacking VM.Config.Memory -------------------------------------------------

#[test]
fn missing_memory_privilege_fails_that_vm_and_handles_the_others() {
    let builder = Sim::builder()
        .node(NodeSpec::new("pve1").cpus(32).memory_mib(131072))
        .token(
            TOKEN_ID,
            TOKEN_SECRET,
            Privs::pvescale().without("VM.Config.Memory"),
        )
        // 101: memory 95 % used, CPU comfortable (50 %) → a memory scale-up only.
        .vm(ready_vm(101, "pve1")
            .cpu_load(Pattern::Constant(1.0))
            .mem_load(Pattern::Step {
                before: 2000.0,
                after: 3900.0,
                at: 0,
            }))
        // 102: CPU 95 % → a CPU scale-up, which the token may do.
        .vm(busy_vm(102, "pve1"));
    let env = TestEnv::start(
        builder,
        "[policy.cpu]\nup_after = \"1m\"\n\n[policy.memory]\nup_after = \"1m\"\n",
    );
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    let run = env.run(&["run", "--output", "json"]);
    assert_eq!(run.code, 3, "partial failure:\n{}", run.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert_eq!(env.memory(101), 4096, "memory unchanged");
    assert!(env.vcpus(102) > 2, "the other VM was handled");
    let report = run.json();
    let vm101 = vm_json(&report, 101);
    assert_eq!(vm101["failed"], true, "{vm101:#}");
    assert_eq!(vm101["memory"]["action"], "up", "{vm101:#}");
    let outcome = vm101["memory"]["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome.contains("Permission check failed") && outcome.contains("VM.Config.Memory"),
        "names the missing privilege: {outcome:?}"
    );
    let vm102 = vm_json(&report, 102);
    assert_eq!(vm102["failed"], false, "{vm102:#}");
    assert_eq!(vm102["cpu"]["outcome"], "applied", "{vm102:#}");
    assert_eq!(report["summary"]["failed"], 1);
    assert_eq!(report["summary"]["changed"], 1);

    // The table says it too.
    let table = run_in_a_minute(&env);
    assert_eq!(table.code, 3, "{}", table.all_output());
    assert!(
        squash(&table.stdout).contains("Permission check failed (/vms/101, VM.Config.Memory)"),
        "{}",
        table.stdout
    );
}

// --- going blind ---------------------------------------------------------------------------

#[test]
fn a_vm_without_metrics_for_longer_than_stale_after_fails_the_run_until_data_is_back() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.0))),
        "",
    );
    assert_eq!(env.run(&["run"]).code, 0);
    // Every metrics source fails from now on: the export (gone, as on an older node) and
    // rrddata.
    env.sim
        .add_fault(Fault::on("GET", "/cluster/metrics/export").status(501));
    env.sim
        .add_fault(Fault::on("GET", "/nodes/pve1/qemu/101/rrddata").status(500));
    let mut first_failed = None;
    for minute_no in 1..=12 {
        minute(&env);
        let run = env.run(&["run", "--output", "json"]);
        if run.code == 3 && first_failed.is_none() {
            first_failed = Some((minute_no, run));
        } else if first_failed.is_none() {
            assert_eq!(run.code, 0, "minute {minute_no}: {}", run.all_output());
        }
    }
    let (minute_no, run) = first_failed.expect("the run says it went blind");
    assert_eq!(minute_no, 11, "after stale_after (10m), not before");
    let vm = vm_json(&run.json(), 101);
    assert_eq!(vm["failed"], true, "{vm:#}");
    assert!(
        vm["error"]
            .as_str()
            .is_some_and(|e| e.contains("no usable metrics for 11m (stale_after 10m)")),
        "{vm:#}"
    );
    assert!(
        vm["data_age_secs"].as_u64().is_some_and(|a| a > 600),
        "{vm:#}"
    );
    let history = env.run(&["history", "--output", "json"]).json();
    assert!(
        history
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["outcome"] == "failed"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("no usable metrics")))),
        "{history:#}"
    );
    // Data back: the failure clears.
    env.sim.clear_faults();
    minute(&env);
    let run = env.run(&["run", "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let vm = vm_json(&run.json(), 101);
    assert!(
        vm["data_age_secs"].as_u64().is_some_and(|a| a <= 60),
        "{vm:#}"
    );
}
