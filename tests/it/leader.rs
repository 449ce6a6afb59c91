//! One scaler per cluster: installed on every node, only the active one acts; the others read
//! only who acts, write nothing and exit 0. The real binary against the simulated cluster.

use std::time::Duration;

use crate::common::*;

/// A three-node cluster with a busy VM that HA manages, the HA master on pve2.
fn three_nodes() -> TestEnv {
    three_nodes_with_load(1.9)
}

/// Three nodes and VM 101 (2 of 8 vCPUs, HA-managed) wanting `cores`; the HA master on pve2.
fn three_nodes_with_load(cores: f64) -> TestEnv {
    let env = TestEnv::start(
        Sim::builder()
            .node(NodeSpec::new("pve1").cpus(32).memory_mib(131072))
            .node(NodeSpec::new("pve2").cpus(32).memory_mib(131072))
            .node(NodeSpec::new("pve3").cpus(32).memory_mib(131072))
            .token(TOKEN_ID, TOKEN_SECRET, Privs::pvescale())
            .vm(ready_vm(101, "pve1")
                .hastate("started")
                .cpu_load(busy_from_start(cores))),
        "",
    );
    env.sim.set_ha_master(Some(("pve2", env.sim.now())));
    env
}

/// The config of pvescale as installed on `node` (its own state directory).
fn as_node(env: &TestEnv, node: &str, extra: &str) -> std::path::PathBuf {
    let state = env.path(&format!("state-{node}"));
    let text = format!(
        "state_dir = \"{}\"\n\n{}local_node = \"{node}\"\n{extra}\n[select]\ntags = [\"autoscale\"]\n\
         [policy.cpu]\nup_after = \"1m\"\n",
        state.display(),
        env.cluster_toml(),
    );
    write_private(&env.config_path(), &text);
    state
}

#[test]
fn only_the_active_node_acts_and_the_others_write_nothing() {
    let env = three_nodes();
    minute(&env);
    minute(&env);
    env.sim.set_ha_master(Some(("pve2", env.sim.now() - 5)));
    let pve1 = as_node(&env, "pve1", "");
    env.sim.clear_requests();
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert_eq!(
        run.stdout.trim(),
        "standby: pve2 is the active scaler for cluster lab (the HA manager's master)"
    );
    assert!(
        !pve1.join("state.json").exists(),
        "a standby writes no state"
    );
    let paths: Vec<String> = env.sim.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/cluster/resources",
            "/cluster/status",
            "/cluster/ha/status/manager_status"
        ],
        "it reads who acts, nothing else"
    );
    assert_eq!(env.vcpus(101), 2);

    // The active node acts.
    let pve2 = as_node(&env, "pve2", "");
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert!(env.vcpus(101) > 2, "{}", run.all_output());
    assert!(pve2.join("state.json").exists());
    let status = env.run(&["status"]);
    assert!(
        status
            .stdout
            .contains("cluster lab: this node acts: the HA manager's master"),
        "{}",
        status.stdout
    );

    let check = env.run(&["check"]);
    assert!(
        check
            .stdout
            .contains("active scaler: this node (the HA manager's master)"),
        "{}",
        check.stdout
    );

    // A stale HA status (an idle manager): the lowest online node id acts: pve1.
    env.sim.set_ha_master(Some(("pve2", env.sim.now() - 600)));
    as_node(&env, "pve2", "");
    let run = env.run(&["run"]);
    assert!(
        run.stdout.contains("standby: pve1 is the active scaler")
            && run.stdout.contains("lowest node id (1)"),
        "{}",
        run.stdout
    );

    // Without quorum nothing is done anywhere.
    env.sim.set_quorate(false);
    let before = std::fs::read(pve2.join("state.json")).expect("state");
    for node in ["pve1", "pve2", "pve3"] {
        as_node(&env, node, "");
        let run = env.run(&["run"]);
        assert_eq!(run.code, 0, "{node}: {}", run.all_output());
        assert!(
            run.stdout.contains("has no quorum"),
            "{node}: {}",
            run.stdout
        );
    }
    assert_eq!(std::fs::read(pve2.join("state.json")).unwrap(), before);
}

#[test]
fn a_host_outside_the_cluster_and_active_always_act() {
    let env = three_nodes();
    minute(&env);
    minute(&env);
    // An admin machine: not one of the nodes, so no question asked.
    as_node(&env, "admin", "");
    env.sim.clear_requests();
    let run = env.run(&["run", "--dry-run"]);
    assert!(run.stdout.contains("would change"), "{}", run.all_output());
    assert_eq!(env.sim.count("GET", "/cluster/status"), 0);
    // A member with active = "always" acts too.
    as_node(&env, "pve3", "active = \"always\"\n");
    let run = env.run(&["run", "--dry-run"]);
    assert!(run.stdout.contains("would change"), "{}", run.all_output());
}

/// Two installations with their own state directories, the active node switched between runs:
/// the node taking over learns from Proxmox's task logs that the VM was just grown, and leaves
/// it alone until the cooldown is over; the node that stepped down writes nothing.
#[test]
fn the_node_taking_over_keeps_the_cooldown_of_a_change_made_by_the_other() {
    // More demand than it can ever have: every run wants to grow it.
    let env = three_nodes_with_load(16.0);
    minute(&env);
    minute(&env);
    env.sim.set_ha_master(Some(("pve2", env.sim.now() - 5)));
    let pve2 = as_node(&env, "pve2", "");
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    let grown = env.vcpus(101);
    assert!(grown > 2, "pve2 grows the VM: {}", run.all_output());
    let writes = env.sim.count("POST", "/nodes/pve1/qemu/101/config");
    assert_eq!(writes, 1);

    // pve2 fails over to pve3 a minute later; pve3 has never run.
    minute(&env);
    env.sim.set_ha_master(Some(("pve3", env.sim.now() - 5)));
    let pve2_state = std::fs::read(pve2.join("state.json")).expect("pve2's state");
    as_node(&env, "pve2", "");
    let standby = env.run(&["run"]);
    assert!(
        standby.stdout.contains("standby: pve3"),
        "{}",
        standby.stdout
    );
    assert_eq!(
        std::fs::read(pve2.join("state.json")).expect("pve2's state"),
        pve2_state,
        "the node that stepped down writes nothing"
    );

    let pve3 = as_node(&env, "pve3", "");
    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    env.sim.wait_tasks(Duration::from_secs(5));
    assert_eq!(
        env.vcpus(101),
        grown,
        "pve3 keeps the cooldown: {}",
        run.all_output()
    );
    assert_eq!(
        env.sim.count("POST", "/nodes/pve1/qemu/101/config"),
        writes,
        "no write within the cooldown"
    );
    assert!(pve3.join("state.json").exists());

    // Once the cooldown is over, pve3 grows it further.
    let mut grew = false;
    for _ in 0..10 {
        minute(&env);
        // The HA manager writes its status every few seconds.
        env.sim.set_ha_master(Some(("pve3", env.sim.now() - 5)));
        let run = env.run(&["run"]);
        assert_eq!(run.code, 0, "{}", run.all_output());
        env.sim.wait_tasks(Duration::from_secs(5));
        if env.vcpus(101) > grown {
            grew = true;
            break;
        }
    }
    assert!(grew, "pve3 acts after the cooldown ({grown} vCPUs)");
}
