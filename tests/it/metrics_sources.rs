//! Where a run's metrics come from on real Proxmox VE: `metrics/export` from pve-manager 8.2.5,
//! `rrddata` before, the VMs of a node the export left out, and a window too short for
//! `rrddata`'s one point a minute.

use std::time::Duration;

use crate::common::*;

/// The first cluster of a `--output json` report.
fn cluster_json(run: &Run) -> serde_json::Value {
    run.json()["clusters"][0].clone()
}

#[test]
fn metrics_export_is_used_from_pve_manager_8_2_5_and_not_before() {
    for (version, export) in [("8.2.5", true), ("8.2.4", false)] {
        let env = TestEnv::start(
            cluster()
                .version(version)
                .vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.0))),
            "",
        );
        env.sim.advance(Duration::from_secs(600));
        let run = env.run(&["run", "--dry-run", "--output", "json"]);
        assert_eq!(run.code, 0, "{}", run.all_output());
        let source = cluster_json(&run)["metrics_source"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let check = env.run(&["check"]).stdout;
        if export {
            assert!(
                source.starts_with("metrics/export ("),
                "{version}: {source}"
            );
            assert!(
                check.contains("metrics: cluster/metrics/export (one call per run)"),
                "{version}:\n{check}"
            );
        } else {
            assert_eq!(
                source, "rrddata per VM (metrics/export not available (PVE older than 8.2.5))",
                "{version}"
            );
            assert!(
                check.contains(
                    "metrics: rrddata per VM (Proxmox VE 8.2.4 has no cluster/metrics/export; \
                     8.2.5 and later have)"
                ),
                "{version}:\n{check}"
            );
        }
    }
}

#[test]
fn vms_of_a_node_missing_from_the_export_are_read_through_rrddata_reported_and_scaled() {
    // pve2 does not answer the node serving the export (or is older than 8.2.5): the export
    // succeeds without a word, and without pve2's VMs.
    let env = TestEnv::start(
        cluster()
            .node(
                NodeSpec::new("pve2")
                    .cpus(32)
                    .memory_mib(131072)
                    .export_unreachable(true),
            )
            .vm(ready_vm(101, "pve1").cpu_load(Pattern::Constant(1.0)))
            .vm(busy_vm(102, "pve2")),
        "",
    );
    env.sim.advance(Duration::from_secs(600));

    let status = env.run(&["status", "--output", "json"]);
    assert_eq!(status.code, 0, "{}", status.all_output());
    let report = status.json();
    let vm = vm_json(&report, 102);
    let cpu = vm["cpu_percent"].as_f64().unwrap_or(-1.0);
    assert!(
        (90.0..=100.0).contains(&cpu),
        "read through rrddata: {vm:#}"
    );
    // pve1's VM comes from the export, and the node serving it is never missing.
    assert!(vm_json(&report, 101)["cpu_percent"].is_number());
    let cluster = cluster_json(&status);
    assert_eq!(cluster["export_missing_nodes"], serde_json::json!(["pve2"]));

    let table = squash(&env.run(&["status"]).stdout);
    assert!(
        table.contains("cluster lab: metrics from metrics/export (")
            && table.contains("rrddata for the 1 VMs it lacked (nothing from node pve2)"),
        "{table}"
    );

    // The log of a run (-v) and its summary say so too.
    minute(&env);
    let run = env.run(&["run", "-v"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(
        run.stderr
            .contains("metrics/export has no sample of 1 running VMs (nothing at all from pve2"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("; lab: node pve2 missing from metrics/export (read through rrddata)"),
        "{}",
        run.stdout
    );
    // And its busy VM is scaled like any other (up_after 2m).
    env.run_every_minute(2);
    assert!(env.vcpus(102) > 2, "VM 102 has {} vCPUs", env.vcpus(102));

    // Back in the export: nothing missing.
    env.sim.set_export_unreachable("pve2", false);
    let cluster = cluster_json(&env.run(&["status", "--output", "json"]));
    assert_eq!(cluster["export_missing_nodes"], serde_json::json!([]));
}

#[test]
fn with_rrddata_a_one_minute_window_is_widened_so_that_a_busy_vm_is_scaled() {
    // PVE 8.0 has no metrics/export, and rrddata has one point a minute: a 1m window holds
    // one or two, fewer than min_samples (3).
    let env = TestEnv::start(
        cluster().version("8.0").vm(busy_vm(101, "pve1")),
        "[policy]\nwindow = \"1m\"\n",
    );
    let runs = env.run_every_minute(5);
    assert!(
        env.vcpus(101) > 2,
        "never scaled:\n{}",
        runs.last().map(Run::all_output).unwrap_or_default()
    );

    // status and check say why the window is not the policy's.
    let note = "window widened from 1m to 4m: rrddata has one point a minute and min_samples \
                is 3 (the newest point may not be in yet)";
    let table = squash(&env.run(&["status"]).stdout);
    assert!(table.contains(note), "{table}");
    let status = env.run(&["status", "--output", "json"]);
    let widened = &cluster_json(&status)["widened_windows"][0];
    assert_eq!(widened["source"], "rrddata", "{status:?}");
    assert_eq!(
        (widened["from_secs"].as_u64(), widened["to_secs"].as_u64()),
        (Some(60), Some(240))
    );
    let check = env.run(&["check"]).stdout;
    assert!(check.contains(note), "{check}");
}
