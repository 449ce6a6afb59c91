//! Guests that do not do what a live change asks of them (issue 17): Windows, which takes
//! vCPUs and memory live and never gives them back.

use crate::common::*;
use pvesim::{NodeSpec, Privs, Sim, SimBuilder, VmSpec};

#[test]
fn an_idle_windows_guest_is_never_shrunk_and_status_and_check_say_why() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .vcpus(4)
            .memory_mib(8192)
            .config("ostype", "win11")
            .cpu_load(Pattern::Constant(0.1))),
        "[policy.cpu]\nmin = 1\ndown_after = \"5m\"\ncooldown_down = \"1m\"\n",
    );
    let mut last = None;
    for _ in 0..12 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
        last = Some(run);
    }
    assert_eq!(env.vcpus(101), 4, "a Windows guest keeps its vCPUs");
    assert_eq!(env.memory(101), 8192, "and its memory");
    assert_eq!(
        env.writes(),
        0,
        "no write to a Windows guest that would shrink"
    );
    let last = last.expect("runs");
    assert!(
        last.stdout
            .contains("blocked: Windows does not unplug vCPUs"),
        "{}",
        last.stdout
    );
    let status = env.run(&["status"]);
    assert!(
        squash(&status.stdout).contains("grow only (Windows)"),
        "{}",
        status.stdout
    );
    let json = env.run(&["status", "--output", "json"]).json();
    let vm = vm_json(&json, 101);
    assert_eq!(vm["cpu"]["action"], "blocked", "{vm:#}");
    let check = env.run(&["check"]);
    assert!(
        check
            .stdout
            .contains("guest: Windows (ostype win11): grow only"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_busy_windows_guest_grows() {
    let env = TestEnv::start(
        cluster().vm(busy_vm(101, "pve1").config("ostype", "win10")),
        "",
    );
    for _ in 0..4 {
        assert_eq!(run_in_a_minute(&env).code, 0);
    }
    assert!(env.vcpus(101) > 2, "a busy Windows guest grows");
}

// --- guests that leave added vCPUs or memory offline --------------------------------------------

/// The cluster with the token allowed to ask the guest agent (PVE 9's privilege).
fn agent_cluster(vm: VmSpec) -> SimBuilder {
    agent_cluster_on("9.1", "VM.GuestAgent.Audit", vm)
}

/// A cluster of Proxmox VE `version` whose token holds `privilege` besides pvescale's own.
fn agent_cluster_on(version: &str, privilege: &str, vm: VmSpec) -> SimBuilder {
    Sim::builder()
        .version(version)
        .node(NodeSpec::new("pve1").cpus(32).memory_mib(131072))
        .token(TOKEN_ID, TOKEN_SECRET, Privs::pvescale().with(privilege))
        .vm(vm)
}

fn agent_requests(env: &TestEnv, command: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/agent/{command}")))
        .count()
}

/// Runs a minute apart until the VM's vCPUs change or `limit` runs pass; returns the runs.
fn runs_until_written(env: &TestEnv, limit: usize) -> Vec<Run> {
    let mut runs = Vec::new();
    let writes = env.writes();
    while runs.len() < limit && env.writes() == writes {
        runs.push(run_in_a_minute(env));
    }
    runs
}

#[test]
fn added_vcpus_the_guest_leaves_offline_are_taken_back_and_the_grow_blocked_with_the_fix() {
    let env = TestEnv::start(
        agent_cluster(busy_vm(101, "pve1").agent(true).onlines(false, true)),
        "",
    );
    let runs = runs_until_written(&env, 6);
    let run = runs.last().expect("runs");
    // A refusal the admin has to fix inside the guest: the run reports it (exit 3).
    assert_eq!(run.code, 3, "{}", run.all_output());
    assert_eq!(env.vcpus(101), 2, "taken back:\n{}", run.all_output());
    assert_eq!(env.sim.online_vcpus(101), Some(2));
    assert!(agent_requests(&env, "get-vcpus") >= 1);
    let all = squash(&run.all_output());
    assert!(
        all.contains("the guest left the added vCPUs offline (2 of")
            && all.contains("ATTR{online}=\"1\"")
            && all.contains("taken back"),
        "{all}"
    );
    // Blocked: still saturated, no new grow for the rest of the hour.
    let writes = env.writes();
    for _ in 0..30 {
        assert_eq!(run_in_a_minute(&env).code, 0);
    }
    assert_eq!(env.writes(), writes, "the grow is not retried");
    let status = env.run(&["status", "-v"]);
    assert!(status.stdout.contains("ATTR{online}"), "{}", status.stdout);
}

#[test]
fn a_guest_that_onlines_what_it_is_given_keeps_it_and_the_agent_is_asked_once_per_grow() {
    let env = TestEnv::start(agent_cluster(busy_vm(101, "pve1").agent(true)), "");
    runs_until_written(&env, 6);
    let grown = env.vcpus(101);
    assert!(grown > 2, "grown");
    assert_eq!(env.sim.online_vcpus(101), Some(grown));
    assert_eq!(
        agent_requests(&env, "get-vcpus"),
        1,
        "asked once, right after the grow"
    );
    assert_eq!(
        agent_requests(&env, "get-memory-blocks"),
        0,
        "memory did not grow"
    );
}

#[test]
fn added_memory_the_guest_leaves_offline_is_taken_back() {
    let env = TestEnv::start(
        // Proxmox VE 8: the agent needs VM.Monitor there.
        agent_cluster_on(
            "8.4",
            "VM.Monitor",
            ready_vm(101, "pve1")
                .agent(true)
                .onlines(true, false)
                .cpu_load(Pattern::Constant(1.0))
                .mem_load(Pattern::Constant(3900.0)),
        ),
        "[policy.memory]\nup_after = \"1m\"\n",
    );
    let runs = runs_until_written(&env, 8);
    let all: String = runs.iter().map(|r| r.all_output()).collect();
    assert_eq!(env.memory(101), 4096, "taken back:\n{all}");
    assert!(
        all.contains("the guest left the added memory offline")
            && all.contains("memhp_default_state=online"),
        "{all}"
    );
    assert!(agent_requests(&env, "get-memory-blocks") >= 1);
}

#[test]
fn without_the_agent_privilege_a_grow_is_trusted_and_the_run_says_what_would_confirm_it() {
    let env = TestEnv::start(
        cluster()
            .version("9.1")
            .vm(busy_vm(101, "pve1").agent(true).onlines(false, true)),
        "",
    );
    let runs = runs_until_written(&env, 6);
    let all = runs.last().expect("runs").all_output();
    assert!(env.vcpus(101) > 2, "trusted as before:\n{all}");
    assert!(all.contains("VM.GuestAgent.Audit"), "{all}");
    let check = env.run(&["check"]);
    assert!(
        check.stdout.contains("optional: VM.GuestAgent.Audit"),
        "{}",
        check.stdout
    );
}

#[test]
fn without_an_agent_a_grow_read_pinned_at_the_old_share_is_taken_back() {
    // 4 cores of demand on 2 vCPUs; the guest onlines nothing it is given.
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .onlines(false, true)
            .cpu_load(busy_from_start(4.0))),
        "[policy.cpu]\nup_after = \"1m\"\nmax_step_up = 2\n",
    );
    let mut sizes = vec![env.vcpus(101)];
    let mut outputs = String::new();
    for _ in 0..40 {
        let run = run_in_a_minute(&env);
        assert_eq!(run.code, 0, "{}", run.all_output());
        outputs.push_str(&run.stdout);
        sizes.push(env.vcpus(101));
    }
    assert!(sizes.contains(&4), "grown once: {sizes:?}");
    assert_eq!(sizes.last(), Some(&2), "taken back: {sizes:?}");
    let changes = sizes.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(
        changes, 2,
        "one grow, one take-back, no flapping: {sizes:?}"
    );
    assert!(
        outputs.contains("the guest did not bring the added vCPUs online"),
        "{outputs}"
    );
}

#[test]
fn check_says_in_advance_when_the_guest_left_vcpus_offline() {
    // The token may not ask the agent at first: pvescale grows the VM and trusts it.
    let env = TestEnv::start(
        cluster()
            .version("9.1")
            .vm(busy_vm(101, "pve1").agent(true).onlines(false, true)),
        "",
    );
    env.sim.set_token(
        TOKEN_ID,
        TOKEN_SECRET,
        Privs::pvescale().with("VM.GuestAgent.Audit"),
    );
    let before = env.run(&["check"]);
    assert!(
        before
            .stdout
            .contains("guest agent: all 2 vCPUs and all memory online"),
        "{}",
        before.stdout
    );
    env.sim.set_token(TOKEN_ID, TOKEN_SECRET, Privs::pvescale());
    runs_until_written(&env, 6);
    let grown = env.vcpus(101);
    assert!(grown > 2, "grown");
    env.sim.set_token(
        TOKEN_ID,
        TOKEN_SECRET,
        Privs::pvescale().with("VM.GuestAgent.Audit"),
    );
    let check = env.run(&["check"]);
    assert!(
        check.stdout.contains(&format!(
            "{} of {grown} vCPUs OFFLINE in the guest",
            grown - 2
        )),
        "{}",
        check.stdout
    );
}

#[test]
fn a_dry_run_neither_writes_nor_asks_the_agent() {
    let env = TestEnv::start(agent_cluster(busy_vm(101, "pve1").agent(true)), "");
    for _ in 0..4 {
        minute(&env);
        let run = env.run(&["run", "--dry-run"]);
        assert_eq!(run.code, 0, "{}", run.all_output());
    }
    let dry = env.run(&["run", "--dry-run"]);
    assert!(
        dry.stdout.contains("1 would change") && squash(&dry.stdout).contains("up 2 →"),
        "a grow is due:\n{}",
        dry.stdout
    );
    assert_eq!(env.writes(), 0);
    assert_eq!(agent_requests(&env, "get-vcpus"), 0);
}
