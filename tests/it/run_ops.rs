//! The everyday commands end to end: `run --dry-run`, `status` (table and JSON), `check`,
//! config errors, and the VMs a run must leave alone. The real binary against the simulated
//! cluster over HTTPS.

use std::time::Duration;

use crate::common::*;

/// API writes of any kind (POST/PUT) recorded so far.
fn api_writes(env: &TestEnv) -> Vec<pvesim::Recorded> {
    env.sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" || r.method == "PUT")
        .collect()
}

// --- 5. dry run ---------------------------------------------------------------------------

#[test]
fn dry_run_writes_nothing_and_leaves_the_state_file_alone() {
    let env = busy_env();
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    let before = std::fs::read(env.state_file()).expect("the real run wrote a state file");
    // One minute on, the VM has been busy for up_after: a change is due.
    minute(&env);
    env.sim.clear_requests();
    let dry = env.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all_output());
    assert!(
        api_writes(&env).is_empty(),
        "no POST/PUT in a dry run: {:#?}",
        api_writes(&env)
    );
    assert_eq!(
        std::fs::read(env.state_file()).unwrap(),
        before,
        "the state file is byte-identical"
    );
    assert_eq!(env.vcpus(101), 2);
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    let text = squash(&dry.stdout);
    assert!(
        text.contains("up 2 → 6 vCPUs"),
        "the planned change:\n{}",
        dry.stdout
    );
    assert!(text.contains("1 would change"), "{}", dry.stdout);

    let json = env.run(&["run", "--dry-run", "--output", "json"]);
    assert_eq!(json.code, 0, "{}", json.all_output());
    let report = json.json();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["summary"]["planned"], 1);
    assert_eq!(report["summary"]["changed"], 0);
    let vm = vm_json(&report, 101);
    assert_eq!(vm["cpu"]["action"], "up", "{vm:#}");
    assert_eq!(vm["cpu"]["to"], 6, "{vm:#}");
    assert!(vm["cpu"]["outcome"].is_null(), "nothing applied: {vm:#}");
    assert!(api_writes(&env).is_empty());
    assert_eq!(std::fs::read(env.state_file()).unwrap(), before);

    // Control: the same plan, for real, does write (and changes the state).
    let real = env.run(&["run"]);
    assert_eq!(real.code, 0, "{}", real.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert_eq!(env.vcpus(101), 6, "{}", real.all_output());
    assert!(!api_writes(&env).is_empty());
    assert_ne!(std::fs::read(env.state_file()).unwrap(), before);
}

#[test]
fn dry_run_without_a_state_file_creates_none() {
    let env = TestEnv::start(cluster().vm(busy_vm(101, "pve1")), "");
    let dry = env.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all_output());
    assert!(!env.state_file().exists(), "a dry run writes no state");
    assert!(api_writes(&env).is_empty());
}

// --- 8. status ----------------------------------------------------------------------------

fn status_env() -> TestEnv {
    TestEnv::start(
        cluster()
            // Ready, 50 % CPU of 2 vCPUs (8 possible), half its memory used.
            .vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.0)))
            // Default hotplug, numa off: not ready for live scaling.
            .vm(VmSpec::new(102, "pve1")
                .name("legacy")
                .tags(&["autoscale"])
                .cpu_load(Pattern::Constant(1.0))),
        "",
    )
}

#[test]
fn status_table_shows_each_vm_on_one_line_within_120_columns() {
    let env = TestEnv::start(
        cluster()
            // Ready, 50 % CPU of 2 vCPUs (8 possible), half its memory used.
            .vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.0)))
            // Default hotplug, numa off, a long name: not ready for live scaling.
            .vm(VmSpec::new(102, "pve1")
                .name("legacy-accounting-database-primary")
                .tags(&["autoscale"])
                .cpu_load(busy_from_start(1.9)))
            // Busy: the next run grows it.
            .vm(busy_vm(103, "pve1")),
        "[policy.cpu]\nup_after = \"0s\"\n",
    );
    env.sim.advance(Duration::from_secs(600));
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{}", status.all_output());
    let out = &status.stdout;
    for line in out.lines() {
        assert!(
            line.chars().count() <= 120,
            "{} columns:\n{out}",
            line.chars().count()
        );
    }
    let row = |vmid: &str| {
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.contains(&format!(" {vmid} ")))
            .collect();
        assert_eq!(rows.len(), 1, "one line for VM {vmid}:\n{out}");
        squash(rows[0])
    };
    for needle in ["VMID", "vCPUs", "Live", "Next"] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let row101 = row("101");
    assert!(
        row101.contains("vm101 pve1 2/8"),
        "current / max vCPUs:\n{out}"
    );
    assert!(row101.contains("4096"), "{out}");
    assert!(row101.contains("yes"), "{out}");
    let row102 = row("102");
    assert!(
        row102.contains("legacy-accounti…"),
        "a long name is cut:\n{out}"
    );
    assert!(row102.contains(" no "), "102 is shown as not ready:\n{out}");
    assert!(
        row102.contains("cpu blocked ("),
        "why 102 does not grow:\n{out}"
    );
    assert!(
        row("103").contains("cpu 2→"),
        "the next run grows 103:\n{out}"
    );

    // `-v`: the full reasons and what stands in the way.
    let detailed = env.run(&["status", "-v"]);
    assert_eq!(detailed.code, 0, "{}", detailed.all_output());
    let detailed = squash(&detailed.stdout);
    assert!(detailed.contains("Live scaling"), "{detailed}");
    assert!(detailed.contains("no hotplug"), "{detailed}");
    assert!(
        detailed.contains("qm set 102 --hotplug"),
        "the fix in full:\n{detailed}"
    );

    assert_eq!(api_writes(&env).len(), 0, "status writes nothing");
    assert!(!env.state_file().exists(), "status writes no state");
}

#[test]
fn status_json_has_the_fields_per_vm() {
    let env = status_env();
    let status = env.run(&["status", "--output", "json"]);
    assert_eq!(status.code, 0, "{}", status.all_output());
    let report = status.json();
    assert_eq!(report["clusters"][0]["name"], "lab");
    let vms = report["clusters"][0]["vms"].as_array().expect("vms");
    assert_eq!(vms.len(), 2, "{report:#}");

    let ready = vm_json(&report, 101);
    assert_eq!(ready["vmid"], 101);
    assert_eq!(ready["name"], "vm101");
    assert_eq!(ready["node"], "pve1");
    assert_eq!(ready["vcpus"], 2);
    assert_eq!(ready["max_vcpus"], 8);
    assert_eq!(ready["memory_mib"], 4096);
    let cpu = ready["cpu_percent"]
        .as_f64()
        .expect("cpu_percent is a number");
    assert!((cpu - 50.0).abs() < 2.0, "1 busy core of 2 ≈ 50 %: {cpu}");
    let mem = ready["memory_percent"].as_f64().expect("memory_percent");
    assert!((mem - 50.0).abs() < 2.0, "half the memory: {mem}");
    assert_eq!(
        ready["memory_source"], "guest",
        "balloon statistics: {ready:#}"
    );
    assert_eq!(ready["readiness"], "yes", "{ready:#}");
    assert_eq!(ready["cpu"]["action"], "keep");
    assert!(
        ready["cpu"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("50%") && r.contains("keep")),
        "{ready:#}"
    );

    let legacy = vm_json(&report, 102);
    assert_eq!(legacy["max_vcpus"], 2);
    let readiness = legacy["readiness"].as_str().unwrap_or_default();
    assert!(
        readiness.contains("cpu: no hotplug") && readiness.contains("memory: no hotplug"),
        "{legacy:#}"
    );
}

// --- 9. check -----------------------------------------------------------------------------

#[test]
fn check_says_ready_for_one_vm_and_prints_the_fix_for_the_other() {
    let env = status_env();
    let check = env.run(&["check"]);
    assert_eq!(
        check.code,
        3,
        "ready, with problems to look at:\n{}",
        check.all_output()
    );
    let out = &check.stdout;
    assert!(out.contains("authentication: ok"), "{out}");
    assert!(out.contains("Proxmox VE"), "shows the version:\n{out}");
    assert!(out.contains("privileges: ok"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    let section = |vmid: u32| -> String {
        let start = out
            .find(&format!("VM {vmid} "))
            .unwrap_or_else(|| panic!("VM {vmid} not listed:\n{out}"));
        let rest = &out[start..];
        let end = rest[1..].find("\n    VM ").map_or(rest.len(), |e| e + 1);
        rest[..end].to_string()
    };
    let ready = section(101);
    assert!(ready.contains("cpu: live"), "{ready}");
    assert!(ready.contains("memory: live"), "{ready}");
    assert!(!ready.contains("qm set"), "{ready}");
    let legacy = section(102);
    assert!(legacy.contains("NOT live"), "{legacy}");
    assert!(
        legacy.contains("qm set 102 --hotplug network,disk,usb,cpu,memory --numa 1"),
        "the exact fix:\n{legacy}"
    );
    assert!(out.contains("ready, with"), "{out}");
    assert!(api_writes(&env).is_empty(), "check writes nothing");
}

#[test]
fn check_with_only_not_ready_vms_exits_1() {
    let env = TestEnv::start(
        cluster().vm(VmSpec::new(102, "pve1").name("legacy").tags(&["autoscale"])),
        "",
    );
    let check = env.run(&["check"]);
    assert_eq!(check.code, 1, "{}", check.all_output());
    assert!(
        check.stdout.contains("qm set 102 --hotplug"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("nothing can be scaled"),
        "{}",
        check.stdout
    );
}

fn env_with_token(privs: Privs) -> TestEnv {
    TestEnv::start(
        Sim::builder()
            .node(NodeSpec::new("pve1").cpus(32).memory_mib(131072))
            .token(TOKEN_ID, TOKEN_SECRET, privs)
            .vm(ready_vm(101, "pve1")),
        "",
    )
}

#[test]
fn check_names_a_missing_privilege() {
    let env = env_with_token(Privs::pvescale().without("VM.Config.Memory"));
    let check = env.run(&["check"]);
    assert_eq!(check.code, 3, "{}", check.all_output());
    let line = check
        .stdout
        .lines()
        .find(|l| l.contains("privileges:"))
        .unwrap_or_else(|| panic!("no privileges line:\n{}", check.stdout));
    assert!(line.contains("MISSING"), "{line}");
    assert!(line.contains("VM.Config.Memory"), "{line}");
    assert!(
        !line
            .split("MISSING")
            .nth(1)
            .unwrap_or_default()
            .split(" on /")
            .next()
            .unwrap_or_default()
            .contains("VM.Config.CPU"),
        "only the missing one is named as missing: {line}"
    );
}

#[test]
fn check_warns_about_a_token_with_more_privileges_than_needed() {
    let env = env_with_token(Privs::all());
    let check = env.run(&["check"]);
    let out = &check.stdout;
    assert!(out.contains("privileges: ok"), "{out}");
    let warning = out
        .lines()
        .find(|l| l.contains("WARNING") && l.contains("more than pvescale needs"))
        .unwrap_or_else(|| panic!("no warning about extra privileges:\n{out}"));
    assert!(warning.contains("VM.PowerMgmt"), "names extras: {warning}");
    assert!(
        !warning
            .split("needs:")
            .nth(1)
            .unwrap_or_default()
            .split('(')
            .next()
            .unwrap_or_default()
            .contains("VM.Audit"),
        "a needed privilege is not an extra: {warning}"
    );
    // A warning, not a problem: the token works and the VM is ready.
    assert_eq!(check.code, 0, "{}", check.all_output());
    assert!(out.contains("result: ready"), "{out}");
}

// --- 10. config errors --------------------------------------------------------------------

#[test]
fn unknown_config_key_exits_78_with_file_line_and_key() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")),
        "[policy.cpu]\nhigh = 80\nup_aftr = \"2m\"\n",
    );
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("up_aftr"))
        .expect("the key is in the file")
        + 1;
    for args in [&["run"][..], &["run", "--dry-run"], &["status"], &["check"]] {
        let run = env.run(args);
        assert_eq!(run.code, 78, "{args:?}:\n{}", run.all_output());
        let place = format!("{}:{line}:", env.config_path().display());
        assert!(
            run.stderr.contains(&place),
            "{args:?}: file:line {place:?} in:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains("up_aftr"), "{args:?}: {}", run.stderr);
    }
    assert!(
        env.sim.requests().is_empty(),
        "nothing sent with a bad config"
    );
    assert!(
        !env.state_dir().exists(),
        "nothing written with a bad config"
    );
}

#[test]
fn missing_config_file_exits_78() {
    let env = TestEnv::start(cluster().vm(ready_vm(101, "pve1")), "");
    std::fs::remove_file(env.config_path()).unwrap();
    let run = env.run(&["run"]);
    assert_eq!(run.code, 78, "{}", run.all_output());
    assert!(
        run.stderr
            .contains(&env.config_path().display().to_string()),
        "names the file:\n{}",
        run.stderr
    );
    assert!(env.sim.requests().is_empty());
}

// --- 11. locked, template and stopped VMs -------------------------------------------------

#[test]
fn locked_template_and_stopped_vms_are_skipped() {
    let env = TestEnv::start(
        cluster()
            .vm(busy_vm(101, "pve1"))
            .vm(busy_vm(102, "pve1").template(true))
            .vm(busy_vm(103, "pve1").running(false))
            .vm(busy_vm(104, "pve1")),
        "[policy.cpu]\nup_after = \"1m\"\n",
    );
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    assert!(api_writes(&env).is_empty());
    // A backup starts on 101 between two runs.
    assert!(env.sim.update_vm(101, |vm| vm.lock = Some("backup".into())));
    minute(&env);

    let plan = env.run(&["run", "--dry-run", "--output", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.all_output());
    let report = plan.json();
    for (vmid, word) in [(101, "locked"), (102, "template"), (103, "stopped")] {
        let vm = vm_json(&report, vmid);
        for resource in ["cpu", "memory"] {
            assert_eq!(vm[resource]["action"], "skip", "{vmid} {resource}: {vm:#}");
            assert!(
                vm[resource]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(word)),
                "{vmid} {resource} says {word:?}: {vm:#}"
            );
        }
    }
    assert_eq!(vm_json(&report, 104)["cpu"]["action"], "up");

    let table = env.run(&["run", "--dry-run"]);
    let text = squash(&table.stdout);
    assert!(text.contains("VM is locked (backup)"), "{}", table.stdout);
    assert!(text.contains("VM is a template"), "{}", table.stdout);
    assert!(text.contains("VM is stopped"), "{}", table.stdout);

    env.sim.clear_requests();
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    let written: Vec<String> = api_writes(&env).into_iter().map(|r| r.path).collect();
    assert!(
        written
            .iter()
            .all(|p| p.starts_with("/nodes/pve1/qemu/104/")),
        "writes only to 104: {written:?}"
    );
    assert!(
        written.contains(&"/nodes/pve1/qemu/104/config".to_string()),
        "the control VM is scaled: {written:?}"
    );
    for vmid in [101, 102, 103] {
        assert_eq!(env.vcpus(vmid), 2, "VM {vmid} untouched");
        assert_eq!(
            env.sim
                .count("GET", &format!("/nodes/pve1/qemu/{vmid}/config")),
            0,
            "VM {vmid}: not even its config is read"
        );
    }
    assert!(env.vcpus(104) > 2);
}

#[test]
fn check_accepts_vm_privileges_granted_on_a_pool() {
    // VM.* on the pool only (Sys.Audit on /): that is enough for the VMs of that pool.
    let privs = Privs::new(&["Sys.Audit"]).on(
        "/pool/web",
        &["VM.Audit", "VM.Config.CPU", "VM.Config.Memory"],
    );
    let env = TestEnv::start(
        Sim::builder()
            .node(NodeSpec::new("pve1"))
            .token(TOKEN_ID, TOKEN_SECRET, privs)
            .vm(ready_vm(101, "pve1").pool("web")),
        "[select]\npools = [\"web\"]\n",
    );
    let run = env.run(&["check"]);
    assert!(
        run.stdout.contains("privileges: ok"),
        "pool-level VM privileges count:\n{}",
        run.all_output()
    );
    assert!(!run.stdout.contains("MISSING"), "{}", run.stdout);
}

#[test]
fn check_reads_permission_values_as_propagate_flags() {
    // `/access/permissions` lists a privilege granted without propagation with the value 0
    // (pve-access-control): Sys.Audit on / itself is what metrics/export needs.
    let privs = Privs::new(&["VM.Audit", "VM.Config.CPU", "VM.Config.Memory"])
        .on_exact("/", &["Sys.Audit"]);
    let env = TestEnv::start(
        Sim::builder()
            .node(NodeSpec::new("pve1"))
            .token(TOKEN_ID, TOKEN_SECRET, privs)
            .vm(ready_vm(101, "pve1")),
        "",
    );
    let run = env.run(&["check"]);
    assert!(
        run.stdout.contains("privileges: ok") && !run.stdout.contains("MISSING"),
        "Sys.Audit with propagate 0 is granted on /:\n{}",
        run.all_output()
    );
    assert!(
        run.stdout.contains("Sys.Audit on / does not propagate"),
        "and the hidden node figures are mentioned:\n{}",
        run.stdout
    );

    // VM privileges on / without propagation do not reach any VM.
    let privs = Privs::new(&["Sys.Audit"])
        .on_exact("/", &["VM.Audit", "VM.Config.CPU", "VM.Config.Memory"]);
    let env = TestEnv::start(
        Sim::builder()
            .node(NodeSpec::new("pve1"))
            .token(TOKEN_ID, TOKEN_SECRET, privs)
            .vm(ready_vm(101, "pve1")),
        "",
    );
    let run = env.run(&["check"]);
    assert!(
        run.stdout
            .contains("MISSING VM.Audit, VM.Config.CPU, VM.Config.Memory"),
        "{}",
        run.all_output()
    );
}

#[test]
fn dry_run_and_status_change_no_file_at_all() {
    // A state directory as a real run leaves it, with a change due, a corrupt state file (a
    // real run would set it aside) and a metrics file configured.
    let env = busy_env();
    let config = std::fs::read_to_string(env.config_path()).expect("config");
    let metrics = env.path("pvescale.prom");
    write_private(
        &env.config_path(),
        &format!("metrics_file = \"{}\"\n{config}", metrics.display()),
    );
    assert_eq!(env.run(&["run"]).code, 0);
    minute(&env);
    std::fs::write(env.state_file(), b"{ not json").expect("corrupt");
    let listing = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        files.sort();
        files
    };
    let state_before = listing(&env.state_dir());
    let top_before = listing(env.dir.path());
    env.sim.clear_requests();
    for args in [
        vec!["run", "--dry-run"],
        vec!["run", "--dry-run", "--output", "json"],
        vec!["status"],
        vec!["status", "--output", "json"],
    ] {
        let run = env.run(&args);
        assert_eq!(run.code, 0, "{args:?}\n{}", run.all_output());
    }
    assert!(api_writes(&env).is_empty(), "{:#?}", api_writes(&env));
    assert_eq!(
        listing(&env.state_dir()),
        state_before,
        "state directory untouched"
    );
    assert_eq!(
        listing(env.dir.path()),
        top_before,
        "metrics file untouched"
    );
}
