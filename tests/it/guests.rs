//! Guests that do not do what a live change asks of them (issue 17): Windows, which takes
//! vCPUs and memory live and never gives them back.

use crate::common::*;

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
