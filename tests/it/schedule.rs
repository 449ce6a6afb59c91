//! `[[schedule]]` windows through the real binary against the simulated cluster: a freeze holds
//! a busy VM until the window ends, a floor raises an idle one at once, and `run --dry-run` and
//! `status` say which window is in force and what it prevented. Windows are read in the zone
//! `TZ` names, as on a host.

use crate::common::*;

/// Saturday 5 December 2026, 00:00 in Berlin (4 December, 23:00 UTC).
const SATURDAY_MIDNIGHT_BERLIN: i64 = 1_796_425_200;
const BERLIN: &[(&str, &str)] = &[("TZ", "Europe/Berlin")];

fn env_at_saturday_midnight(vm: VmSpec, schedule: &str) -> TestEnv {
    TestEnv::start(
        cluster().start_time(SATURDAY_MIDNIGHT_BERLIN).vm(vm),
        &format!("[policy.cpu]\nup_after = \"1m\"\n\n{schedule}"),
    )
}

fn run_in_berlin(env: &TestEnv, args: &[&str]) -> Run {
    env.run_with_env(args, BERLIN)
}

#[test]
fn a_freeze_holds_a_busy_vm_until_the_window_ends() {
    let env = env_at_saturday_midnight(
        busy_vm(101, "pve1"),
        "[[schedule]]\nname = \"backup\"\nwhen = \"Sat 00:00..00:04\"\nfreeze = \"all\"\n",
    );
    for _ in 0..2 {
        minute(&env);
        let run = run_in_berlin(&env, &["run"]);
        assert_eq!(run.code, 0, "{}", run.all_output());
    }
    assert_eq!(env.writes(), 0, "nothing is written in the window");
    assert_eq!(env.vcpus(101), 2);

    // 00:03: what a dry run and status say (before that minute's run).
    minute(&env);
    let dry = run_in_berlin(&env, &["run", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("cluster lab: window \"backup\" (Sat 00:00..00:04) in force until 00:04: freeze for 1 VM; prevented VM 101 cpu 2→"),
        "{}",
        dry.all_output()
    );
    assert!(
        squash(&dry.stdout).contains("freezes all changes until 00:04: keep"),
        "{}",
        dry.stdout
    );

    let status = run_in_berlin(&env, &["status", "--output", "json"]);
    let vm = vm_json(&status.json(), 101);
    assert_eq!(vm["windows"][0]["name"], "backup", "{vm}");
    assert_eq!(vm["windows"][0]["effect"]["kind"], "freeze", "{vm}");
    assert_eq!(vm["cpu"]["window"]["kind"], "prevented", "{vm}");
    assert_eq!(vm["cpu"]["window"]["direction"], "up", "{vm}");
    let table = run_in_berlin(&env, &["status"]);
    assert!(table.stdout.contains("frozen"), "{}", table.stdout);
    let run = run_in_berlin(&env, &["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(env.writes(), 0, "nothing is written in the window");

    // 00:04: the window is over and the breach, measured all along, acts at once.
    minute(&env);
    let after = run_in_berlin(&env, &["run"]);
    assert_eq!(after.code, 0, "{}", after.all_output());
    assert!(env.vcpus(101) > 2, "{}", after.all_output());
}

#[test]
fn the_window_is_read_in_the_local_time_zone() {
    let env = env_at_saturday_midnight(
        busy_vm(101, "pve1"),
        "[[schedule]]\nname = \"backup\"\nwhen = \"Sat 00:00..00:04\"\nfreeze = \"all\"\n",
    );
    minute(&env);
    // 23:01 on Friday in UTC: no window.
    let utc = env.run_with_env(&["status", "--output", "json"], &[("TZ", "UTC")]);
    let vm = vm_json(&utc.json(), 101);
    assert!(vm.get("windows").is_none(), "{vm}");
    let berlin = run_in_berlin(&env, &["status", "--output", "json"]);
    assert_eq!(vm_json(&berlin.json(), 101)["windows"][0]["name"], "backup");
    // check says which zone and which windows are in force.
    let check = run_in_berlin(&env, &["check"]);
    assert!(
        check.stdout.contains(
            "schedules: 1, local time Europe/Berlin; in force now: window \"backup\" \
             (Sat 00:00..00:04) until 00:04"
        ),
        "{}",
        check.all_output()
    );
    let check = env.run_with_env(&["check"], &[("TZ", "UTC")]);
    assert!(
        check
            .stdout
            .contains("schedules: 1, local time UTC; none in force now"),
        "{}",
        check.all_output()
    );
}

#[test]
fn a_floor_raises_an_idle_vm_at_once_and_says_why() {
    let env = env_at_saturday_midnight(
        ready_vm(101, "pve1"),
        "[[schedule]]\nname = \"morning\"\nwhen = \"Sat 00:00..06:00\"\nvmids = [101]\n\
         floor = { cpu = 4, memory = \"8GiB\" }\n",
    );
    minute(&env);
    let dry = run_in_berlin(&env, &["run", "--dry-run"]);
    assert!(
        squash(&dry.stdout).contains(
            "window \"morning\" (Sat 00:00..06:00) sets a floor of 4 vCPUs until 06:00: 2 → 4 vCPUs"
        ),
        "{}",
        dry.stdout
    );
    assert_eq!(env.writes(), 0);
    let run = run_in_berlin(&env, &["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(env.vcpus(101), 4, "{}", run.all_output());
    assert_eq!(env.memory(101), 8192, "{}", run.all_output());
}
