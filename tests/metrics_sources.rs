//! Where a run's metrics come from on real Proxmox VE: `metrics/export` from pve-manager 8.2.5,
//! `rrddata` before.

mod common;

use std::time::Duration;

use common::*;

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
