//! Issue 17: the QEMU guest agent endpoints (`agent/get-vcpus`, `get-memory-blocks`,
//! `get-memory-block-info`), guests that leave hot-added vCPUs or memory offline, and Windows
//! guests that never give vCPUs or DIMMs back.

use std::time::Duration;

use crate::common::{Api, SECRET, TOKEN_ID, num};
use pvesim::{Fault, NodeSpec, Pattern, Privs, Sim, VmSpec};
use serde_json::Value;

fn sim_with(version: &str, privs: Privs, vms: Vec<VmSpec>) -> Sim {
    let mut b = Sim::builder()
        .version(version)
        .token(TOKEN_ID, SECRET, privs)
        .node(NodeSpec::new("pve1"))
        .unplug_refusal_delay(Duration::from_millis(20));
    for v in vms {
        b = b.vm(v);
    }
    b.start().expect("start")
}

/// pvescale's privileges plus the agent's on PVE 9.
fn agent_privs() -> Privs {
    Privs::pvescale().with("VM.GuestAgent.Audit")
}

fn live(vmid: u32) -> VmSpec {
    VmSpec::new(vmid, "pve1")
        .cores(4)
        .vcpus(2)
        .memory_mib(4096)
        .live_scalable()
        .agent(true)
}

fn agent(api: &mut Api, vmid: u32, cmd: &str) -> Value {
    let r = api.get(&format!("/nodes/pve1/qemu/{vmid}/agent/{cmd}"));
    assert_eq!(r.status, 200, "{cmd}: {} {}", r.reason, r.text());
    r.data()["result"].clone()
}

/// The `online` flags of an agent answer, in order.
fn online_flags(v: &Value) -> Vec<bool> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| e["online"].as_bool().expect("online"))
        .collect()
}

fn count(flags: &[bool], online: bool) -> usize {
    flags.iter().filter(|f| **f == online).count()
}

#[test]
fn agent_shows_what_an_onlining_and_a_non_onlining_guest_did_with_a_live_grow() {
    let sim = sim_with(
        "9.1",
        agent_privs(),
        vec![live(101), live(102).onlines(false, false)],
    );
    let mut api = Api::token(&sim);

    // Before: both guests have what they booted with, all online, none offlinable but cpu1+.
    for vmid in [101, 102] {
        let cpus = agent(&mut api, vmid, "get-vcpus");
        assert_eq!(
            cpus[0],
            serde_json::json!({"logical-id": 0, "online": true, "can-offline": false})
        );
        assert_eq!(online_flags(&cpus), vec![true, true]);
        let blocks = agent(&mut api, vmid, "get-memory-blocks");
        let b = blocks.as_array().unwrap();
        assert_eq!(b.len(), 32, "4096 MiB in 128 MiB blocks");
        assert!(
            b.iter()
                .all(|e| e["online"] == true && e["can-offline"] == false)
        );
        assert_eq!(b[5]["phys-index"], 5);
        assert_eq!(
            agent(&mut api, vmid, "get-memory-block-info"),
            serde_json::json!({"size": 134217728})
        );
    }

    // A live grow through the API, as pvescale makes it.
    for vmid in [101, 102] {
        let (_, exit) = api.post_config_wait("pve1", vmid, "vcpus=4&memory=6144");
        assert_eq!(exit, "OK");
        assert_eq!(api.config("pve1", vmid, true)["vcpus"], 4);
        assert_eq!(api.config("pve1", vmid, true)["memory"], "6144");
    }

    // The onlining guest uses everything.
    assert_eq!(
        online_flags(&agent(&mut api, 101, "get-vcpus")),
        vec![true; 4]
    );
    let blocks = agent(&mut api, 101, "get-memory-blocks");
    let flags = online_flags(&blocks);
    assert_eq!((flags.len(), count(&flags, true)), (48, 48));
    // Boot memory cannot go offline, the hot-plugged DIMMs can.
    assert_eq!(blocks[31]["can-offline"], false);
    assert_eq!(blocks[32]["can-offline"], true);
    assert_eq!(sim.online_vcpus(101), Some(4));
    assert_eq!(sim.online_memory_mib(101), Some(6144));

    // The other one has them, but offline.
    let cpus = agent(&mut api, 102, "get-vcpus");
    assert_eq!(online_flags(&cpus), vec![true, true, false, false]);
    assert_eq!(cpus[3]["logical-id"], 3);
    assert_eq!(cpus[3]["can-offline"], true);
    let flags = online_flags(&agent(&mut api, 102, "get-memory-blocks"));
    assert_eq!(flags.len(), 48);
    assert!(flags[..32].iter().all(|f| *f) && flags[32..].iter().all(|f| !*f));
    assert_eq!(sim.online_vcpus(102), Some(2));
    assert_eq!(sim.online_memory_mib(102), Some(4096));

    // An unplug takes the offline vCPUs first, then online ones.
    api.post_config_wait("pve1", 102, "vcpus=3");
    assert_eq!(sim.online_vcpus(102), Some(2));
    assert_eq!(
        online_flags(&agent(&mut api, 102, "get-vcpus")),
        vec![true, true, false]
    );
    api.post_config_wait("pve1", 102, "vcpus=1");
    assert_eq!(sim.online_vcpus(102), Some(1));
    // ... and memory likewise.
    api.post_config_wait("pve1", 102, "memory=3072");
    assert_eq!(sim.online_memory_mib(102), Some(3072));
    let flags = online_flags(&agent(&mut api, 102, "get-memory-blocks"));
    assert_eq!((flags.len(), count(&flags, true)), (24, 24));

    // The admin onlines them by hand.
    sim.update_vm(102, |v| v.onlines_mem = true);
    api.post_config_wait("pve1", 102, "memory=4096");
    assert_eq!(sim.online_memory_mib(102), Some(4096));
    assert_eq!(sim.online_vcpus(102), Some(1));

    // A guest that onlines CPUs only.
    sim.add_vm(live(103).onlines(true, false));
    api.post_config_wait("pve1", 103, "vcpus=3&memory=5120");
    assert_eq!(sim.online_vcpus(103), Some(3));
    assert_eq!(sim.online_memory_mib(103), Some(4096));

    // Every agent call is in the request log.
    assert_eq!(sim.count("GET", "/nodes/pve1/qemu/102/agent/"), 7);
    assert_eq!(sim.count("GET", "/nodes/pve1/qemu/101/agent/get-vcpus"), 2);
}

#[test]
fn a_guest_that_does_not_online_reads_busy_only_on_its_old_vcpus() {
    // Demand: 4 busy cores and 6000 MiB, on 2 vCPUs and 4096 MiB.
    let load = |v: VmSpec| {
        v.cpu_load(Pattern::Constant(4.0))
            .mem_load(Pattern::Constant(6000.0))
    };
    let sim = sim_with(
        "9.1",
        agent_privs(),
        vec![load(live(101)), load(live(102)).onlines(false, false)],
    );
    let mut api = Api::token(&sim);
    sim.advance(Duration::from_secs(60));
    for vmid in [101, 102] {
        let row = api.resource_row(vmid);
        assert!((num(&row["cpu"]) - 1.0).abs() < 1e-9, "{row}");
        assert_eq!(row["mem"], 4096u64 << 20, "{row}");
        api.post_config_wait("pve1", vmid, "vcpus=4&memory=6144");
    }
    sim.advance(Duration::from_secs(120));
    let t = sim.now();

    // Onlining: it gets the 4 cores and its 6000 MiB.
    let row = api.resource_row(101);
    assert!((num(&row["cpu"]) - 1.0).abs() < 1e-9, "{row}");
    assert_eq!(row["maxcpu"], 4);
    assert_eq!(row["mem"], 6000u64 << 20, "{row}");

    // Not onlining: still 2 busy cores, now out of 4 (50 %), and still 4096 MiB in use.
    let row = api.resource_row(102);
    assert!((num(&row["cpu"]) - 0.5).abs() < 1e-9, "{row}");
    assert_eq!(row["maxcpu"], 4);
    assert_eq!(row["mem"], 4096u64 << 20, "{row}");
    assert_eq!(row["maxmem"], 6144u64 << 20);
    // The same figure in status/current (after its first, zero reading), rrddata and export.
    api.get("/nodes/pve1/qemu/102/status/current");
    let st = api.get("/nodes/pve1/qemu/102/status/current").data();
    assert!((num(&st["cpu"]) - 0.5).abs() < 1e-9, "{st}");
    assert_eq!(st["cpus"], 4);
    let rrd = api
        .get("/nodes/pve1/qemu/102/rrddata?timeframe=hour")
        .data();
    let last = rrd
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.get("cpu").is_some())
        .unwrap()
        .clone();
    assert!((num(&last["cpu"]) - 0.5).abs() < 1e-6, "{last}");
    let export = api.get("/cluster/metrics/export").data();
    let cpu = export["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "qemu/102" && r["metric"] == "cpu_current")
        .unwrap()
        .clone();
    assert!((num(&cpu["value"]) - 0.5).abs() < 1e-9, "{cpu}");

    // The demand, the ground truth, is unchanged.
    let d = sim.demand(102, t).unwrap();
    assert_eq!((d.cpu_cores, d.memory_mib), (4.0, 6000.0));
}

#[test]
fn agent_privileges_by_version() {
    let path = "/nodes/pve1/qemu/101/agent/get-vcpus";
    // PVE 8: VM.Monitor.
    let sim = sim_with("8.4", Privs::pvescale(), vec![live(101)]);
    let mut api = Api::token(&sim);
    let r = api.get(path);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.reason, "Permission check failed (/vms/101, VM.Monitor)");
    sim.set_token(TOKEN_ID, SECRET, Privs::pvescale().with("VM.Monitor"));
    assert_eq!(Api::token(&sim).get(path).status, 200);
    // The agent privileges of 9.0 do not exist there.
    sim.set_token(
        TOKEN_ID,
        SECRET,
        Privs::pvescale().with("VM.GuestAgent.Audit"),
    );
    assert_eq!(Api::token(&sim).get(path).status, 403);

    // PVE 9: VM.GuestAgent.Audit or VM.GuestAgent.Unrestricted, VM.Monitor is not enough.
    let sim = sim_with(
        "9.0",
        Privs::pvescale().with("VM.Monitor"),
        vec![live(101), live(102)],
    );
    let r = Api::token(&sim).get(path);
    assert_eq!(r.status, 403);
    let msg = "Permission check failed (/vms/101, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)";
    assert_eq!(r.reason, msg);
    assert_eq!(r.json()["message"], format!("{msg}\n"));
    for privs in [
        Privs::pvescale().with("VM.GuestAgent.Audit"),
        Privs::pvescale().with("VM.GuestAgent.Unrestricted"),
        Privs::pvescale().on("/vms/101", &["VM.GuestAgent.Audit"]),
    ] {
        sim.set_token(TOKEN_ID, SECRET, privs);
        let mut api = Api::token(&sim);
        for cmd in ["get-vcpus", "get-memory-blocks", "get-memory-block-info"] {
            let r = api.get(&format!("/nodes/pve1/qemu/101/agent/{cmd}"));
            assert_eq!(r.status, 200, "{cmd}: {}", r.text());
        }
    }
    // The grant on /vms/101 does not cover 102.
    let r = Api::token(&sim).get("/nodes/pve1/qemu/102/agent/get-vcpus");
    assert_eq!(r.status, 403);
}

#[test]
fn agent_not_configured_not_running_and_other_errors() {
    let sim = sim_with(
        "9.1",
        agent_privs(),
        vec![
            live(101).agent(false),
            live(102).running(false),
            live(103).agent_running(false),
            live(104).agent(false).config("agent", "type=virtio"),
            live(105)
                .agent(false)
                .config("agent", "enabled=1,fstrim_cloned_disks=1"),
            live(106).agent(false).config("agent", "0"),
            live(107).status(pvesim::VmStatus::Paused),
        ],
    );
    let mut api = Api::token(&sim);
    let err = |api: &mut Api, vmid: u32| {
        let r = api.get(&format!("/nodes/pve1/qemu/{vmid}/agent/get-vcpus"));
        let msg = if r.body.is_empty() {
            String::new()
        } else {
            r.json()["message"].as_str().unwrap_or("").to_string()
        };
        (r.status, msg)
    };
    assert_eq!(
        err(&mut api, 101),
        (500, "No QEMU guest agent configured\n".into())
    );
    assert_eq!(err(&mut api, 102), (500, "VM 102 is not running\n".into()));
    assert_eq!(
        err(&mut api, 103),
        (500, "QEMU guest agent is not running\n".into())
    );
    // Defined but not enabled: no agent channel, so the ping fails.
    assert_eq!(
        err(&mut api, 104),
        (500, "QEMU guest agent is not running\n".into())
    );
    assert_eq!(err(&mut api, 105).0, 200);
    // status/current says `agent: 1` only when enabled.
    for (vmid, agent) in [(101, None), (103, Some(1)), (104, None), (105, Some(1))] {
        let st = api
            .get(&format!("/nodes/pve1/qemu/{vmid}/status/current"))
            .data();
        assert_eq!(st["agent"].as_i64(), agent, "{vmid}: {st}");
    }
    assert_eq!(
        err(&mut api, 106),
        (500, "QEMU guest agent is not running\n".into())
    );
    assert_eq!(
        err(&mut api, 107),
        (500, "QEMU guest agent is not running\n".into())
    );
    let r = api.get("/nodes/pve1/qemu/199/agent/get-vcpus");
    assert_eq!(r.status, 500);
    assert!(
        r.reason.contains("199.conf' does not exist"),
        "{}",
        r.reason
    );
    // Only these commands are simulated; a POST is not a method of them.
    assert_eq!(
        api.post("/nodes/pve1/qemu/105/agent/get-vcpus", "").status,
        501
    );

    // The agent can be stopped and started in a running simulation.
    sim.update_vm(103, |v| v.agent_running = true);
    assert_eq!(err(&mut api, 103).0, 200);

    // Faults match the agent paths like any other.
    sim.add_fault(
        Fault::on("GET", "/api2/json/nodes/pve1/qemu/105/agent/get-vcpus")
            .status(596)
            .times(1),
    );
    assert_eq!(err(&mut api, 105).0, 596);
    assert_eq!(err(&mut api, 105).0, 200);
}

#[test]
fn windows_takes_hot_added_vcpus_and_memory_but_never_gives_them_back() {
    let sim = sim_with(
        "8.4",
        Privs::pvescale().with("VM.Monitor"),
        vec![live(101).ostype("win11"), live(102).ostype("w2k8").vcpus(4)],
    );
    let mut api = Api::token(&sim);
    assert_eq!(api.config("pve1", 101, true)["ostype"], "win11");
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=4&memory=6144");
    assert_eq!(exit, "OK");
    assert_eq!(sim.online_vcpus(101), Some(4));
    assert_eq!(sim.online_memory_mib(101), Some(6144));

    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=2");
    assert!(exit.contains("error unplugging cpu4"), "{exit}");
    assert_eq!(api.config("pve1", 101, true)["vcpus"], 4);
    api.post_config_wait("pve1", 101, "revert=vcpus");
    let (_, exit) = api.post_config_wait("pve1", 101, "memory=4096");
    assert!(exit.contains("error unplug memory module"), "{exit}");
    assert_eq!(api.config("pve1", 101, true)["memory"], "6144");
    assert_eq!(sim.online_memory_mib(101), Some(6144));

    let (_, exit) = api.post_config_wait("pve1", 102, "vcpus=3");
    assert!(exit.contains("error unplugging cpu4"), "{exit}");

    // A Linux guest gives them back.
    sim.add_vm(live(103).vcpus(4));
    let (_, exit) = api.post_config_wait("pve1", 103, "vcpus=2");
    assert_eq!(exit, "OK");
}
