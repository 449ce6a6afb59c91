//! Config reads and writes: current vs pending, digest, hotplug rules, DIMM grid, refusals, tasks.

use std::time::Duration;

use crate::common::{Api, SECRET, TOKEN_ID, encode_upid};
use pvesim::{NodeSpec, Privs, Sim, VmSpec, VmStatus};
use serde_json::Value;

fn sim_with(version: &str, vms: Vec<VmSpec>) -> Sim {
    let mut b = Sim::builder()
        .version(version)
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .user("root@pam", "rootpw", Privs::all())
        .node(NodeSpec::new("pve1"))
        .node(NodeSpec::new("pve2"))
        .unplug_refusal_delay(Duration::from_millis(50));
    for v in vms {
        b = b.vm(v);
    }
    b.start().expect("start")
}

fn live(vmid: u32) -> VmSpec {
    VmSpec::new(vmid, "pve1")
        .cores(4)
        .vcpus(2)
        .memory_mib(4096)
        .live_scalable()
}

fn digest(api: &mut Api, vmid: u32) -> String {
    api.config("pve1", vmid, true)["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn memory_json_type_depends_on_version() {
    for (v, is_string) in [("8.0", false), ("8.1", true), ("8.4", true), ("9.1", true)] {
        let sim = sim_with(v, vec![live(101).cpulimit(1.5)]);
        let mut api = Api::token(&sim);
        let c = api.config("pve1", 101, true);
        assert_eq!(c["memory"].is_string(), is_string, "{v}: {}", c["memory"]);
        assert_eq!(c["cores"], 4, "integers are numbers");
        assert_eq!(c["numa"], 1, "booleans are 0/1 numbers");
        assert_eq!(c["cpulimit"], "1.5", "numbers are strings");
        assert_eq!(c["digest"].as_str().unwrap().len(), 40);
    }
    // A `current=` form is returned as stored.
    let sim = sim_with("8.4", vec![live(101).config("memory", "current=4096")]);
    let mut api = Api::token(&sim);
    assert_eq!(api.config("pve1", 101, true)["memory"], "current=4096");
    assert_eq!(sim.vm(101).unwrap().memory_mib, 4096);
}

#[test]
fn vcpus_live_with_cpu_hotplug_pending_without() {
    let sim = sim_with(
        "8.4",
        vec![
            live(101),
            VmSpec::new(102, "pve1").cores(4).vcpus(2).memory_mib(4096),
        ],
    );
    let mut api = Api::token(&sim);
    let d = digest(&mut api, 101);
    let (_, exit) = api.post_config_wait("pve1", 101, &format!("vcpus=3&digest={d}"));
    assert_eq!(exit, "OK");
    assert_eq!(api.config("pve1", 101, true)["vcpus"], 3);
    assert!(api.pending_keys("pve1", 101).is_empty());
    assert_ne!(digest(&mut api, 101), d, "digest changes on every write");

    // Without cpu hotplug: accepted, but left pending; the merged config shows the new value.
    let (_, exit) = api.post_config_wait("pve1", 102, "vcpus=3");
    assert_eq!(exit, "OK");
    assert_eq!(api.config("pve1", 102, true)["vcpus"], 2);
    assert_eq!(api.config("pve1", 102, false)["vcpus"], 3);
    assert_eq!(api.pending_keys("pve1", 102), vec!["vcpus"]);
    let row = api
        .pending("pve1", 102)
        .into_iter()
        .find(|r| r["key"] == "vcpus")
        .unwrap();
    assert_eq!(row["value"], 2);
    assert_eq!(row["pending"], 3);
    // revert drops it.
    let (_, exit) = api.post_config_wait("pve1", 102, "revert=vcpus");
    assert_eq!(exit, "OK");
    assert!(api.pending_keys("pve1", 102).is_empty());

    // More than sockets × cores: the task fails, the value stays pending.
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=5");
    assert!(exit.contains("hotplug problem"), "{exit}");
    assert!(
        exit.contains("you can't add more vcpus than maxcpus"),
        "{exit}"
    );
    assert_eq!(api.pending_keys("pve1", 101), vec!["vcpus"]);
    api.post_config_wait("pve1", 101, "revert=vcpus");
    // The synchronous call answers 400 with the key in `errors`.
    let r = api.put("/nodes/pve1/qemu/101/config", "vcpus=5");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["errors"]["vcpus"]
            .as_str()
            .unwrap()
            .contains("maxcpus")
    );
    // A failed hotplug stays pending and would fail every later write: revert it.
    assert_eq!(api.pending_keys("pve1", 101), vec!["vcpus"]);
    api.post_config_wait("pve1", 101, "revert=vcpus");

    // cores/sockets/numa on a running VM stay pending.
    let (_, exit) = api.post_config_wait("pve1", 101, "cores=8&numa=0");
    assert_eq!(exit, "OK");
    let mut keys = api.pending_keys("pve1", 101);
    keys.sort();
    assert!(keys.contains(&"cores".to_string()) && keys.contains(&"numa".to_string()));
    assert_eq!(api.config("pve1", 101, true)["cores"], 4);
}

#[test]
fn hotplug_list_is_split_on_commas_semicolons_and_spaces() {
    // qemu-server parse_hotplug_features takes pve-common split_list items.
    for list in ["disk;cpu", "disk cpu", "network, cpu"] {
        let sim = sim_with(
            "8.4",
            vec![
                VmSpec::new(101, "pve1")
                    .cores(4)
                    .vcpus(2)
                    .memory_mib(4096)
                    .hotplug(list),
            ],
        );
        let mut api = Api::token(&sim);
        let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=3");
        assert_eq!(exit, "OK", "{list}");
        assert_eq!(api.config("pve1", 101, true)["vcpus"], 3, "{list}: live");
        assert!(api.pending_keys("pve1", 101).is_empty(), "{list}");
    }
}

#[test]
fn digest_conflict_is_spelled_by_version_and_checked_again_in_the_task() {
    for (version, text) in [
        ("8.2", "checksum missmatch (file change by other user?)"),
        ("8.3", "checksum mismatch (file change by other user?)"),
    ] {
        let sim = sim_with(version, vec![live(101)]);
        let mut api = Api::token(&sim);
        let d = digest(&mut api, 101);
        sim.update_vm(101, |v| {
            v.config.insert("description".into(), "edited".into());
        });
        let r = api.post(
            "/nodes/pve1/qemu/101/config",
            &format!("vcpus=3&digest={d}"),
        );
        assert_eq!((r.status, r.reason.as_str()), (500, text), "{version}");
        // An edit between the accepted POST and its worker: the task fails the same way.
        let d = digest(&mut api, 101);
        sim.add_fault(
            pvesim::Fault::on("POST", "/nodes/pve1/qemu/101/config")
                .concurrent_edit("description", "edited again")
                .after_apply(true)
                .times(1),
        );
        let (_, exit) = api.post_config_wait("pve1", 101, &format!("vcpus=3&digest={d}"));
        assert_eq!(exit, text, "{version}");
        assert_eq!(sim.vm(101).unwrap().vcpus, 2, "{version}: nothing written");
    }
}

#[test]
fn hotplug_tries_only_the_keys_of_the_request() {
    // qemu-server passes `$modified` as the selection: an earlier refused value waits.
    let sim = sim_with("8.4", vec![live(101).refuse_mem_unplug(0)]);
    let mut api = Api::token(&sim);
    let (_, exit) = api.post_config_wait("pve1", 101, "memory=2048");
    assert!(exit.contains("error unplug memory module"), "{exit}");
    assert_eq!(api.pending_keys("pve1", 101), vec!["memory"]);
    sim.update_vm(101, |v| v.refuse_mem_unplug = None);
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=3");
    assert_eq!(exit, "OK");
    assert_eq!(api.pending_keys("pve1", 101), vec!["memory"], "not retried");
    assert_eq!(sim.vm(101).unwrap().memory_mib, 4096);
}

#[test]
fn stopped_vm_applies_everything() {
    let sim = sim_with("8.4", vec![live(101).running(false)]);
    let mut api = Api::token(&sim);
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=4&memory=3000");
    assert_eq!(exit, "OK");
    let c = api.config("pve1", 101, true);
    assert_eq!(c["vcpus"], 4);
    assert_eq!(c["memory"], "3000", "no grid rounding when stopped");
    assert!(api.pending_keys("pve1", 101).is_empty());
}

#[test]
fn memory_hotplug_follows_the_dimm_grid() {
    let sim = sim_with(
        "8.4",
        vec![
            live(101).memory_mib(2048),
            VmSpec::new(102, "pve1")
                .memory_mib(2048)
                .hotplug("network,disk,usb,cpu"),
            VmSpec::new(103, "pve1")
                .memory_mib(2048)
                .hotplug("network,disk,usb,cpu,memory"),
        ],
    );
    let mut api = Api::token(&sim);
    // Adding rounds up.
    let (_, exit) = api.post_config_wait("pve1", 101, "memory=3000");
    assert_eq!(exit, "OK");
    assert_eq!(api.config("pve1", 101, true)["memory"], "3072");
    assert!(api.pending_keys("pve1", 101).is_empty());
    // Removing rounds down.
    let (_, exit) = api.post_config_wait("pve1", 101, "memory=2000");
    assert_eq!(exit, "OK");
    assert_eq!(api.config("pve1", 101, true)["memory"], "1536");
    // Past the 512 MiB DIMMs the steps are 1024.
    let (_, exit) = api.post_config_wait("pve1", 101, "memory=17500");
    assert_eq!(exit, "OK");
    assert_eq!(api.config("pve1", 101, true)["memory"], "18432");
    // Below the static memory: fails.
    let (_, exit) = api.post_config_wait("pve1", 101, "memory=512");
    assert!(
        exit.contains("memory can't be lower than 1024 MB"),
        "{exit}"
    );
    assert_eq!(api.pending_keys("pve1", 101), vec!["memory"]);
    api.post_config_wait("pve1", 101, "revert=memory");

    // No memory hotplug, or no numa: pending.
    for vmid in [102, 103] {
        let (_, exit) = api.post_config_wait("pve1", vmid, "memory=4096");
        assert_eq!(exit, "OK");
        assert_eq!(api.config("pve1", vmid, true)["memory"], "2048");
        assert_eq!(api.pending_keys("pve1", vmid), vec!["memory"]);
    }
}

#[test]
fn refused_unplug_leaves_partial_progress_and_pending() {
    let sim = sim_with(
        "8.4",
        vec![
            live(101).memory_mib(4096).refuse_mem_unplug(1),
            live(102).cores(8).vcpus(6).refuse_cpu_unplug(2),
        ],
    );
    let mut api = Api::token(&sim);
    let (upid, exit) = api.post_config_wait("pve1", 101, "memory=2048");
    assert!(exit.contains("hotplug problem"), "{exit}");
    assert!(exit.contains("error unplug memory module"), "{exit}");
    // One DIMM went (4096 -> 3584), then the guest refused.
    assert_eq!(api.config("pve1", 101, true)["memory"], "3584");
    let p = api.pending("pve1", 101);
    let row = p.iter().find(|r| r["key"] == "memory").unwrap();
    assert_eq!(row["pending"], "2048");
    let log = api.get(&format!("/nodes/pve1/tasks/{}/log", encode_upid(&upid)));
    assert!(log.text().contains("TASK ERROR"), "{}", log.text());
    // revert=memory leaves the partial state, nothing pending.
    let (_, exit) = api.post_config_wait("pve1", 101, "revert=memory");
    assert_eq!(exit, "OK");
    assert!(api.pending_keys("pve1", 101).is_empty());
    assert_eq!(sim.vm(101).unwrap().memory_mib, 3584);

    // CPUs: two go, the third is refused.
    let (_, exit) = api.post_config_wait("pve1", 102, "vcpus=2");
    assert!(exit.contains("error unplugging cpu4"), "{exit}");
    assert_eq!(api.config("pve1", 102, true)["vcpus"], 4);
    assert_eq!(api.pending_keys("pve1", 102), vec!["vcpus"]);
    // PUT: 400 after the refusal delay.
    api.post_config_wait("pve1", 102, "revert=vcpus");
    let t = std::time::Instant::now();
    let r = api.put("/nodes/pve1/qemu/102/config", "vcpus=1");
    assert_eq!(r.status, 400);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(
        r.json()["errors"]["vcpus"]
            .as_str()
            .unwrap()
            .contains("hotplug problem")
    );
}

#[test]
fn balloon_rules() {
    let sim = sim_with(
        "8.4",
        vec![
            live(101).memory_mib(4096).balloon_mib(2048),
            live(102).balloon_mib(0),
        ],
    );
    let mut api = Api::token(&sim);
    let r = api.post("/nodes/pve1/qemu/101/config", "balloon=8192");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "balloon value too large (must be smaller than assigned memory)"
    );
    // Lowering balloon and memory together is fine.
    let (_, exit) = api.post_config_wait("pve1", 101, "balloon=1024&memory=3072");
    assert_eq!(exit, "OK");
    let c = api.config("pve1", 101, true);
    assert_eq!(c["balloon"], 1024);
    assert_eq!(c["memory"], "3072");
    // Enabling the balloon device on a running VM stays pending.
    let (_, exit) = api.post_config_wait("pve1", 102, "balloon=1024");
    assert_eq!(exit, "OK");
    assert_eq!(api.pending_keys("pve1", 102), vec!["balloon"]);
}

#[test]
fn digest_lock_missing_and_template() {
    let sim = sim_with(
        "8.4",
        vec![
            live(101),
            live(102).lock("backup"),
            VmSpec::new(103, "pve1").template(true),
        ],
    );
    let mut api = Api::token(&sim);
    let d = digest(&mut api, 101);
    sim.update_vm(101, |v| {
        v.config.insert("description".into(), "edited".into());
    });
    let r = api.post(
        "/nodes/pve1/qemu/101/config",
        &format!("vcpus=3&digest={d}"),
    );
    assert_eq!(r.status, 500);
    // qemu-server API2/Qemu.pm update_vm_api (the early check, before the worker forks).
    assert_eq!(r.reason, "checksum mismatch (file change by other user?)");
    assert_eq!(sim.vm(101).unwrap().vcpus, 2);

    let r = api.post("/nodes/pve1/qemu/102/config", "vcpus=3");
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "VM is locked (backup)");
    assert_eq!(r.json()["message"], "VM is locked (backup)\n");
    let c = api.config("pve1", 102, true);
    assert_eq!(c["lock"], "backup");

    // Lock set during a run.
    sim.update_vm(101, |v| v.lock = Some("migrate".into()));
    let r = api.put("/nodes/pve1/qemu/101/config", "vcpus=3");
    assert_eq!(r.reason, "VM is locked (migrate)");
    sim.update_vm(101, |v| v.lock = None);

    let r = api.post("/nodes/pve1/qemu/999/config", "vcpus=3");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"
    );
    // Migrated away: the old node no longer has it.
    sim.update_vm(101, |v| v.node = "pve2".into());
    assert_eq!(
        api.post("/nodes/pve1/qemu/101/config", "vcpus=3").status,
        500
    );
    let (_, exit) = api.post_config_wait("pve2", 101, "vcpus=3");
    assert_eq!(exit, "OK");

    // Templates are flagged, stopped, and applied like stopped VMs.
    let c = api.config("pve1", 103, true);
    assert_eq!(c["template"], 1);
    let t = api.resource_row(103);
    assert_eq!(t["template"], 1);
    assert_eq!(t["status"], "stopped");
    // Root-only keys.
    let r = api.post("/nodes/pve2/qemu/101/config", "args=-foo");
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "only root can set 'args' config");
}

#[test]
fn tasks_are_asynchronous_and_recorded_writes_carry_digest() {
    let sim = Sim::builder()
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .task_duration(Duration::from_millis(300))
        .vm(live(101))
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let d = digest(&mut api, 101);
    let r = api.post(
        "/nodes/pve1/qemu/101/config",
        &format!("vcpus=4&digest={d}"),
    );
    let upid = r.data().as_str().unwrap().to_string();
    assert!(upid.starts_with("UPID:pve1:"));
    assert!(upid.contains(":qmconfig:101:pvescale@pve!autoscale:"));
    // Not applied before the task finished.
    assert_eq!(api.config("pve1", 101, true)["vcpus"], 2);
    let enc = encode_upid(&upid);
    let st = api.get(&format!("/nodes/pve1/tasks/{enc}/status")).data();
    assert_eq!(st["status"], "running");
    assert!(st.get("exitstatus").is_none());
    assert_eq!(st["type"], "qmconfig");
    let exit = api.wait_task("pve1", &upid);
    assert_eq!(exit, "OK");
    assert_eq!(api.config("pve1", 101, true)["vcpus"], 4);
    // Raw (unencoded) UPIDs in the path work too; garbage does not.
    let st = api.get(&format!("/nodes/pve1/tasks/{upid}/status"));
    assert_eq!(st.status, 200);
    let r = api.get("/nodes/pve1/tasks/nonsense/status");
    assert_eq!(r.status, 400);

    let writes: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].param("digest"), Some(d.as_str()));
    assert_eq!(writes[0].param("vcpus"), Some("4"));
    assert_eq!(writes[0].path, "/nodes/pve1/qemu/101/config");
    assert_eq!(
        writes[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let tasks = sim.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].exitstatus.as_deref(), Some("OK"));
}

#[test]
fn size_history_and_status_changes() {
    let sim = sim_with("8.4", vec![live(101)]);
    let t0 = sim.now();
    sim.advance(Duration::from_secs(60));
    let mut api = Api::token(&sim);
    api.post_config_wait("pve1", 101, "vcpus=4");
    let v = sim.vm(101).unwrap();
    let last = v.history.last().unwrap();
    assert_eq!(last.vcpus, 4);
    assert_eq!(last.at, t0 + 60);
    sim.update_vm(101, |v| v.status = VmStatus::Stopped);
    let v = sim.vm(101).unwrap();
    assert_eq!(v.history.last().unwrap().status, VmStatus::Stopped);
    let rows: Value = api.get("/cluster/resources?type=vm").data();
    assert_eq!(rows[0]["status"], "stopped");
    sim.update_vm(101, |v| v.remove = true);
    assert!(sim.vm(101).is_none());
}

#[test]
fn the_schema_is_there_where_required() {
    // With PVESCALE_REQUIRE_SCHEMA=1 (CI), the check below must not skip.
    pvesim::schema::assert_present_where_required();
}

#[test]
fn every_schema_parameter_is_known() {
    // The official schema (read at run time, never copied) lists the config write parameters;
    // none of them may be rejected as unknown by the 9.1 simulator.
    let Some(schema) = pvesim::schema::load("schema.json") else {
        pvesim::schema::skipped(
            "the simulator's check of every schema parameter",
            "schema.json",
        );
        return;
    };
    let sim = sim_with("9.1", vec![live(101)]);
    let mut api = Api::token(&sim);
    for method in ["POST", "PUT"] {
        let props = schema["endpoints"][format!("{method} /nodes/{{node}}/qemu/{{vmid}}/config")]
            ["parameters"]["properties"]
            .as_object()
            .unwrap()
            .clone();
        let mut form = Vec::new();
        for k in props.keys() {
            if k == "node" || k == "vmid" {
                continue;
            }
            let k = k.replace("[n]", "0");
            form.push(format!("{k}=%01"));
        }
        form.push("surely-not-a-key=1".into());
        let r = if method == "POST" {
            api.post("/nodes/pve1/qemu/101/config", &form.join("&"))
        } else {
            api.put("/nodes/pve1/qemu/101/config", &form.join("&"))
        };
        assert_eq!(r.status, 400, "{}", r.text());
        let errors = r.json()["errors"].as_object().unwrap().clone();
        for (k, msg) in &errors {
            let unknown = msg.as_str().unwrap().contains("not defined in schema");
            assert_eq!(unknown, k == "surely-not-a-key", "{method} {k}: {msg}");
        }
    }
}

#[test]
fn the_node_task_list_holds_finished_config_tasks_newest_first_with_filters() {
    let sim = Sim::builder()
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .vm(live(101))
        .vm(live(102))
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let (first, _) = api.post_config_wait("pve1", 101, "vcpus=3");
    sim.advance(Duration::from_secs(120));
    let since = sim.now();
    let (second, _) = api.post_config_wait("pve1", 102, "vcpus=3");
    // A synchronous write leaves no task.
    let r = api.put("/nodes/pve1/qemu/101/config", "vcpus=4");
    assert_eq!(r.status, 200);

    let list = api.get("/nodes/pve1/tasks?typefilter=qmconfig").data();
    let upids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["upid"].as_str().unwrap())
        .collect();
    assert_eq!(upids, [second.as_str(), first.as_str()], "newest first");
    let newest = &list[0];
    assert_eq!(newest["status"], "OK");
    assert_eq!(newest["id"], "102");
    assert_eq!(newest["type"], "qmconfig");
    assert!(newest["endtime"].as_i64().unwrap() >= newest["starttime"].as_i64().unwrap());

    let recent = api.get(&format!("/nodes/pve1/tasks?since={since}")).data();
    assert_eq!(recent.as_array().unwrap().len(), 1);
    let other = api.get("/nodes/pve1/tasks?typefilter=vzdump").data();
    assert_eq!(other.as_array().unwrap().len(), 0);
    let limited = api.get("/nodes/pve1/tasks?limit=1").data();
    assert_eq!(limited[0]["upid"], second.as_str());
    let by_vm = api.get("/nodes/pve1/tasks?vmid=101").data();
    assert_eq!(by_vm.as_array().unwrap().len(), 1);
    let bad = api.get("/nodes/pve1/tasks?since=yesterday");
    assert_eq!(bad.status, 400);
}
