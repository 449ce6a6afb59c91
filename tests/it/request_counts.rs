//! What one run costs the Proxmox API, counted (never timed): a run reads the cluster with the
//! fewest requests possible, and only the VMs that change cost more.
//!
//! The floor of one run is one `GET /cluster/resources` and one `GET /cluster/metrics/export`
//! per cluster; a VM about to change adds `GET config?current=1` and `GET pending`, and, when
//! it is written, one `POST config`, the task polls and a `GET pending` re-read. Without
//! `metrics/export` (PVE < 8.2.5, or a token without `Sys.Audit`) every managed running VM costs
//! one `rrddata` call instead, made in parallel. A run without a recent state (the first, or
//! after a failover) reads each online node's config tasks once. Timings belong to `examples/bench.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::*;
use pvesim::Recorded;

const VMS: u32 = 50;
const FIRST: u32 = 1000;

/// `GET cluster/resources`, `GET qemu/config?current=1`, `POST qemu/config`, ...
fn endpoint(r: &Recorded) -> String {
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let name = match segs.as_slice() {
        ["nodes", _, "qemu", _, rest @ ..] => format!("qemu/{}", rest.join("/")),
        ["nodes", _, "tasks", _, rest @ ..] => format!("tasks/{}", rest.join("/")),
        other => other.join("/"),
    };
    let current = if r.param("current") == Some("1") {
        "?current=1"
    } else {
        ""
    };
    format!("{} {name}{current}", r.method)
}

fn by_endpoint(requests: &[Recorded]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts.entry(endpoint(r)).or_insert(0) += 1;
    }
    counts
}

/// The VM a per-VM request is about.
fn vmid_of(r: &Recorded) -> Option<u32> {
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["nodes", _, "qemu", vmid, ..] => vmid.parse().ok(),
        // UPID:node:pid:pstart:starttime:type:vmid:user:
        ["nodes", _, "tasks", upid, ..] => upid.split(':').nth(6).and_then(|v| v.parse().ok()),
        _ => None,
    }
}

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), *n))
        .collect()
}

/// 50 VMs ready for live scaling on two nodes (2 of 8 vCPUs, 4 GiB), every load inside its
/// band (CPU 50 %, memory 60 %), plus what a run must not spend requests on: VMs outside the
/// selection, stopped, locked, a template and a container.
fn calm_cluster(version: &str, privs: Privs) -> SimBuilder {
    let mut builder = Sim::builder()
        .version(version)
        .node(NodeSpec::new("pve1").cpus(256).memory_mib(1 << 20))
        .node(NodeSpec::new("pve2").cpus(256).memory_mib(1 << 20))
        .token(TOKEN_ID, TOKEN_SECRET, privs)
        // Requests in flight at once land on separate connections.
        .latency(Duration::from_millis(3));
    for i in 0..VMS {
        let node = if i % 2 == 0 { "pve1" } else { "pve2" };
        builder = builder.vm(ready_vm(FIRST + i, node)
            .cpu_load(Pattern::Constant(1.0))
            .mem_load(Pattern::Constant(2458.0)));
    }
    builder
        .vm(VmSpec::new(2000, "pve1").name("unmanaged").cores(2))
        .vm(ready_vm(2001, "pve1").running(false))
        .vm(ready_vm(2002, "pve2").lock("backup"))
        .vm(ready_vm(2003, "pve2").template(true).running(false))
        .vm(VmSpec::new(300, "pve1").lxc().tags(&["autoscale"]))
}

/// Managed VMs that are running: the 50, and the locked one (its metrics are read, it is
/// skipped by the policy).
const MANAGED_RUNNING: usize = VMS as usize + 1;

/// Changes as soon as a VM is over `high`, so that a busy VM changes in the run that sees it.
const EAGER: &str = "[policy.cpu]\nup_after = \"0s\"\n\n[policy.memory]\nup_after = \"0s\"\n";

fn start(builder: SimBuilder) -> TestEnv {
    let env = TestEnv::start(builder, EAGER);
    // A full window of history.
    env.sim.advance(Duration::from_secs(1800));
    env
}

/// Runs pvescale with JSON output; returns its report and the requests it made.
fn run(env: &TestEnv, args: &[&str]) -> (serde_json::Value, Vec<Recorded>) {
    env.sim.clear_requests();
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = env.run(&all);
    assert!(
        out.code == 0,
        "pvescale {args:?} failed:\n{}",
        out.all_output()
    );
    // Let the simulator's task bookkeeping settle before reading its log.
    env.sim.wait_tasks(Duration::from_secs(10));
    (out.json(), env.sim.requests())
}

/// The client's own counters agree with what the server saw.
fn assert_traffic_matches(report: &serde_json::Value, requests: &[Recorded]) {
    let cluster = &report["clusters"][0];
    assert_eq!(
        cluster["requests"],
        requests.len(),
        "client vs server count"
    );
    let bodies: u64 = requests.iter().map(|r| r.response_bytes as u64).sum();
    let received = cluster["bytes_received"].as_u64().expect("bytes_received");
    // Plaintext HTTP received: every body, plus status line and headers (well under 1 KiB).
    assert!(
        received >= bodies && received <= bodies + 1024 * requests.len() as u64,
        "received {received} bytes for {bodies} bytes of bodies in {} responses",
        requests.len()
    );
}

#[test]
fn a_dry_run_with_nothing_due_makes_exactly_two_requests() {
    let env = start(calm_cluster("8.4", Privs::pvescale()));
    let (report, requests) = run(&env, &["run", "--dry-run"]);
    assert_eq!(
        by_endpoint(&requests),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1)
        ]),
        "{requests:#?}"
    );
    assert_traffic_matches(&report, &requests);
    // Only the policy window is asked for, with its history.
    let export = requests
        .iter()
        .find(|r| r.path == "/cluster/metrics/export")
        .expect("export");
    let now = env.sim.now() as u64;
    assert_eq!(export.param("history"), Some("1"));
    assert_eq!(
        export.param("start-time"),
        Some((now - 300).to_string().as_str()),
        "start-time = now - window (5m)"
    );
    let source = report["clusters"][0]["metrics_source"].as_str().unwrap();
    assert!(source.starts_with("metrics/export"), "{source}");
    // The 50, and the stopped, locked and template ones (shown, skipped).
    assert_eq!(report["summary"]["managed"], VMS + 3);
}

#[test]
fn a_dry_run_reads_config_and_pending_only_of_the_vms_that_would_change() {
    let env = start(calm_cluster("8.4", Privs::pvescale()));
    // Three busy VMs (CPU at 100 %); one of them also has idle memory (below `low`).
    let busy = [FIRST + 3, FIRST + 20, FIRST + 41];
    for vmid in busy {
        env.sim
            .update_vm(vmid, |vm| vm.cpu_load = Pattern::Constant(2.0));
    }
    env.sim
        .update_vm(FIRST + 41, |vm| vm.mem_load = Pattern::Constant(800.0));
    let (report, requests) = run(&env, &["run", "--dry-run"]);
    assert_eq!(
        by_endpoint(&requests),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1),
            ("GET qemu/config?current=1", 3),
            ("GET qemu/pending", 3),
            // Memory below `low` may lead to a scale-down, which needs to know whether the
            // figure comes from the guest: on PVE < 9 only `status/current` tells (once an
            // hour per VM in a real run, where it is remembered; a dry run saves no state).
            ("GET qemu/status/current", 1),
        ]),
        "{requests:#?}"
    );
    let touched: BTreeSet<u32> = requests.iter().filter_map(vmid_of).collect();
    assert_eq!(touched, busy.into_iter().collect());
    let status = requests
        .iter()
        .find(|r| r.path.ends_with("/status/current"))
        .expect("status/current");
    assert_eq!(vmid_of(status), Some(FIRST + 41));
    assert_traffic_matches(&report, &requests);
    assert_eq!(report["summary"]["planned"], 3);

    // PVE 9 tells the memory source in cluster/resources (`memhost`): no status call.
    let env = start(calm_cluster("9.1", Privs::pvescale()));
    for vmid in busy {
        env.sim
            .update_vm(vmid, |vm| vm.cpu_load = Pattern::Constant(2.0));
    }
    env.sim
        .update_vm(FIRST + 41, |vm| vm.mem_load = Pattern::Constant(800.0));
    let (_, requests) = run(&env, &["run", "--dry-run"]);
    assert_eq!(
        by_endpoint(&requests),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1),
            ("GET qemu/config?current=1", 3),
            ("GET qemu/pending", 3),
        ]),
        "{requests:#?}"
    );
}

#[test]
fn a_run_with_k_changes_costs_the_floor_plus_a_write_cycle_per_changed_vm() {
    for version in ["9.1", "8.4"] {
        run_with_k_changes(version);
    }
}

fn run_with_k_changes(version: &str) {
    let env = start(calm_cluster(version, Privs::pvescale()));
    // Two CPU-bound and two memory-bound VMs.
    let cpu_busy = [FIRST + 4, FIRST + 17];
    let mem_busy = [FIRST + 30, FIRST + 45];
    for vmid in cpu_busy {
        env.sim
            .update_vm(vmid, |vm| vm.cpu_load = Pattern::Constant(2.0));
    }
    // 88 % of 4 GiB: over `high`, and below the simulator's host-side view of a guest
    // (92 %), so that PVE 9 tells the figure is the guest's.
    for vmid in mem_busy {
        env.sim
            .update_vm(vmid, |vm| vm.mem_load = Pattern::Constant(3600.0));
    }
    let changed: BTreeSet<u32> = cpu_busy.into_iter().chain(mem_busy).collect();
    let k = changed.len();

    let (report, requests) = run(&env, &["run"]);
    assert_eq!(report["summary"]["changed"], k, "PVE {version}: {report:#}");
    let counts = by_endpoint(&requests);
    let polls = counts.get("GET tasks/status").copied().unwrap_or_default();
    assert!(polls >= k, "at least one task poll per write: {counts:?}");
    // PVE 9 tells in cluster/resources whether a memory figure is the guest's (`memhost`);
    // before that, a VM whose memory is about to change may cost one `status/current` to
    // learn it (remembered for an hour).
    let status = counts
        .get("GET qemu/status/current")
        .copied()
        .unwrap_or_default();
    if version.starts_with('9') {
        assert_eq!(status, 0, "PVE {version}: {counts:?}");
    } else {
        assert!(status <= mem_busy.len(), "PVE {version}: {counts:?}");
        for r in requests
            .iter()
            .filter(|r| r.path.ends_with("/status/current"))
        {
            let vmid = vmid_of(r).expect("vmid");
            assert!(mem_busy.contains(&vmid), "status/current of VM {vmid}");
        }
    }
    assert_eq!(
        counts,
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1),
            ("GET qemu/config?current=1", k),
            // Read before the write, re-read after it.
            ("GET qemu/pending", 2 * k),
            ("GET qemu/status/current", status),
            ("POST qemu/config", k),
            ("GET tasks/status", polls),
            // A first run (no state) learns the changes made within the cooldown.
            ("GET nodes/pve1/tasks", 1),
            ("GET nodes/pve2/tasks", 1),
        ]),
        "PVE {version}: {requests:#?}"
    );
    // Per changed VM: exactly one read cycle and one write cycle, and nothing for the others.
    for &vmid in &changed {
        let kinds: Vec<String> = requests
            .iter()
            .filter(|r| vmid_of(r) == Some(vmid))
            .map(endpoint)
            .collect();
        let n = |e: &str| kinds.iter().filter(|k| *k == e).count();
        assert_eq!(n("GET qemu/config?current=1"), 1, "VM {vmid}: {kinds:?}");
        assert_eq!(n("GET qemu/pending"), 2, "VM {vmid}: {kinds:?}");
        assert_eq!(n("POST qemu/config"), 1, "VM {vmid}: {kinds:?}");
        assert!(n("GET tasks/status") >= 1, "VM {vmid}: {kinds:?}");
        // Read first (after the status probe that learns the memory source, where one was
        // needed), re-read last.
        let reads: Vec<&String> = kinds
            .iter()
            .filter(|k| *k != "GET qemu/status/current")
            .collect();
        assert_eq!(
            reads.first().map(|k| k.as_str()),
            Some("GET qemu/config?current=1")
        );
        assert_eq!(kinds.last().map(String::as_str), Some("GET qemu/pending"));
    }
    let touched: BTreeSet<u32> = requests.iter().filter_map(vmid_of).collect();
    assert_eq!(touched, changed, "PVE {version}");
    assert_traffic_matches(&report, &requests);
    for vmid in cpu_busy {
        // Pinned at 2 vCPUs: saturated, × 3 (within the default step of 4).
        assert_eq!(env.vcpus(vmid), 6, "PVE {version}: VM {vmid}");
    }
    for vmid in mem_busy {
        assert!(env.memory(vmid) > 4096, "PVE {version}: VM {vmid}");
    }

    // The next minute: the changed VMs are inside their band again and in cooldown. Back to
    // the floor.
    minute(&env);
    let (report, requests) = run(&env, &["run"]);
    assert_eq!(
        by_endpoint(&requests),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1)
        ]),
        "PVE {version}: {requests:#?}"
    );
    assert_eq!(report["summary"]["changed"], 0);
}

#[test]
fn without_metrics_export_rrddata_is_read_once_per_managed_running_vm_in_parallel() {
    let no_sys_audit = Privs::new(&["VM.Audit", "VM.Config.CPU", "VM.Config.Memory"]);
    for (version, privs, why) in [
        ("8.2.4", Privs::pvescale(), "PVE older than 8.2.5"),
        ("8.4", no_sys_audit, "Sys.Audit"),
    ] {
        let env = start(calm_cluster(version, privs));
        let (report, requests) = run(&env, &["run", "--dry-run"]);
        let m = MANAGED_RUNNING;
        assert_eq!(
            by_endpoint(&requests),
            expect(&[
                ("GET cluster/resources", 1),
                // The probe that tells the export is missing (501) or refused (403). A dry
                // run keeps no state, so it asks every time; a real run remembers (below).
                ("GET cluster/metrics/export", 1),
                ("GET qemu/rrddata", m),
            ]),
            "PVE {version}: {requests:#?}"
        );
        let export = requests
            .iter()
            .find(|r| r.path == "/cluster/metrics/export")
            .expect("probe");
        assert_eq!(export.status, if version == "8.2.4" { 501 } else { 403 });
        // Every managed running VM once, nothing for the others.
        let rrd: Vec<&Recorded> = requests
            .iter()
            .filter(|r| r.path.ends_with("/rrddata"))
            .collect();
        let vms: BTreeSet<u32> = rrd.iter().filter_map(|r| vmid_of(r)).collect();
        let mut want: BTreeSet<u32> = (FIRST..FIRST + VMS).collect();
        want.insert(2002);
        assert_eq!(vms, want, "PVE {version}");
        for r in &rrd {
            assert_eq!(r.param("timeframe"), Some("hour"));
            assert_eq!(r.param("cf"), Some("AVERAGE"));
        }
        // In parallel, bounded: several connections, never more than 8 (one per worker).
        let conns: BTreeSet<u64> = rrd.iter().map(|r| r.conn).collect();
        assert!(
            conns.len() > 1 && conns.len() <= 8,
            "PVE {version}: rrddata over {} connections",
            conns.len()
        );
        let all_conns: BTreeSet<u64> = requests.iter().map(|r| r.conn).collect();
        assert!(
            all_conns.len() <= 8,
            "PVE {version}: {} connections",
            all_conns.len()
        );
        assert_traffic_matches(&report, &requests);
        let source = report["clusters"][0]["metrics_source"].as_str().unwrap();
        assert!(
            source.starts_with("rrddata") && source.contains(why),
            "PVE {version}: {source}"
        );

        // A real run probes once and remembers: the runs after it make 1 + M requests.
        let (_, first) = run(&env, &["run"]);
        assert_eq!(count(&first, "/cluster/metrics/export"), 1, "PVE {version}");
        minute(&env);
        let (report, next) = run(&env, &["run"]);
        assert_eq!(
            by_endpoint(&next),
            expect(&[("GET cluster/resources", 1), ("GET qemu/rrddata", m)]),
            "PVE {version}: the export is not asked again within the hour: {next:#?}"
        );
        let source = report["clusters"][0]["metrics_source"].as_str().unwrap();
        assert!(source.contains("checked again hourly"), "{source}");
        // After an hour it is asked again (the server may have been upgraded).
        env.sim.advance(Duration::from_secs(3600));
        let (_, later) = run(&env, &["run"]);
        assert_eq!(count(&later, "/cluster/metrics/export"), 1, "PVE {version}");
    }
}

#[test]
fn a_node_missing_from_the_export_adds_one_rrddata_per_running_managed_vm_of_it() {
    // pve2 cannot be asked by the node serving the export: its guests are missing from the
    // answer, and only they are read another way.
    let builder = calm_cluster("8.4", Privs::pvescale()).node(
        NodeSpec::new("pve2")
            .cpus(256)
            .memory_mib(1 << 20)
            .export_unreachable(true),
    );
    let env = start(builder);
    let (report, requests) = run(&env, &["run", "--dry-run"]);
    // The 25 of the 50 on pve2, and the locked VM there (running; skipped by the policy).
    let mut on_pve2: BTreeSet<u32> = (FIRST..FIRST + VMS).filter(|v| v % 2 == 1).collect();
    on_pve2.insert(2002);
    assert_eq!(
        by_endpoint(&requests),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1),
            ("GET qemu/rrddata", on_pve2.len()),
        ]),
        "{requests:#?}"
    );
    let rrd: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.path.ends_with("/rrddata"))
        .collect();
    let vms: BTreeSet<u32> = rrd.iter().filter_map(|r| vmid_of(r)).collect();
    assert_eq!(vms, on_pve2);
    assert!(rrd.iter().all(|r| r.path.starts_with("/nodes/pve2/")));
    let conns: BTreeSet<u64> = requests.iter().map(|r| r.conn).collect();
    assert!(conns.len() <= 8, "{} connections", conns.len());
    assert_traffic_matches(&report, &requests);
    assert_eq!(
        report["clusters"][0]["export_missing_nodes"],
        serde_json::json!(["pve2"])
    );
    assert_eq!(report["summary"]["planned"], 0, "{report:#}");

    // The same in a real run, every run: the export is still there for the others.
    let (_, requests) = run(&env, &["run"]);
    assert_eq!(count(&requests, "/cluster/metrics/export"), 1);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.path.ends_with("/rrddata"))
            .count(),
        on_pve2.len()
    );
}

fn count(requests: &[Recorded], path: &str) -> usize {
    requests.iter().filter(|r| r.path == path).count()
}

#[test]
fn a_host_side_memory_figure_costs_one_status_call_an_hour_and_no_config_read() {
    // Three VMs without balloon statistics: their host-side memory figure is above `high`,
    // which pvescale does not act on. Learning that takes one status call per VM, not a
    // config read, and is remembered.
    let mut builder = calm_cluster("8.4", Privs::pvescale());
    for vmid in [3001, 3002, 3003] {
        builder = builder.vm(ready_vm(vmid, "pve1").balloon_stats(false));
    }
    let env = start(builder);
    let (_, first) = run(&env, &["run"]);
    assert_eq!(
        by_endpoint(&first),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1),
            ("GET qemu/status/current", 3),
            // No state yet: the changes made within the cooldown, from each node's tasks.
            ("GET nodes/pve1/tasks", 1),
            ("GET nodes/pve2/tasks", 1),
        ]),
        "{first:#?}"
    );
    for minute in 0..10 {
        env.sim.advance(Duration::from_secs(60));
        let (report, next) = run(&env, &["run"]);
        assert_eq!(
            by_endpoint(&next),
            expect(&[
                ("GET cluster/resources", 1),
                ("GET cluster/metrics/export", 1)
            ]),
            "minute {minute}: the source is remembered: {next:#?}"
        );
        let vm = vm_json(&report, 3001);
        assert_eq!(vm["memory_source"], "host", "{vm:#}");
        assert!(
            vm["memory"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("host-side"),
            "{vm:#}"
        );
    }
    // PVE 9 tells by `memhost`: no status call at all.
    let mut builder = calm_cluster("9.1", Privs::pvescale());
    for vmid in [3001, 3002, 3003] {
        builder = builder.vm(ready_vm(vmid, "pve1").balloon_stats(false));
    }
    let env = start(builder);
    let (_, first) = run(&env, &["run"]);
    assert_eq!(
        by_endpoint(&first),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1),
            ("GET nodes/pve1/tasks", 1),
            ("GET nodes/pve2/tasks", 1),
        ]),
        "{first:#?}"
    );
}

/// `status` reads the config (and pending changes) only of VMs whose config pvescale has not
/// learned recently, and keeps what it read in the runs' state; `--refresh` reads them all.
#[test]
fn status_reads_only_what_is_not_known_and_refresh_reads_everything() {
    let env = start(calm_cluster("9.0", Privs::pvescale()));
    // A run makes the state in which status keeps what it learns.
    let (_, requests) = run(&env, &["run"]);
    // The floor, and (no state yet) each node's config tasks.
    assert_eq!(requests.len(), 4, "{:?}", by_endpoint(&requests));
    let reads_everything = expect(&[
        ("GET cluster/resources", 1),
        ("GET cluster/metrics/export", 1),
        ("GET qemu/config?current=1", MANAGED_RUNNING),
        ("GET qemu/pending", MANAGED_RUNNING),
    ]);

    let (report, requests) = run(&env, &["status"]);
    assert_eq!(by_endpoint(&requests), reads_everything, "first status");
    assert_traffic_matches(&report, &requests);
    let ready = report["clusters"][0]["vms"]
        .as_array()
        .expect("vms")
        .iter()
        .filter(|vm| vm["readiness"] == "yes")
        .count();
    assert_eq!(ready, VMS as usize + 1, "{report:#}");

    // The same knowledge, now from the state: the two requests of a run.
    minute(&env);
    let (again, requests) = run(&env, &["status"]);
    assert_eq!(
        by_endpoint(&requests),
        expect(&[
            ("GET cluster/resources", 1),
            ("GET cluster/metrics/export", 1)
        ]),
        "second status"
    );
    assert_eq!(
        again["clusters"][0]["vms"]
            .as_array()
            .expect("vms")
            .iter()
            .filter(|vm| vm["readiness"] == "yes")
            .count(),
        ready,
        "what status shows from the state is what it read"
    );

    let (_, requests) = run(&env, &["status", "--refresh"]);
    assert_eq!(by_endpoint(&requests), reads_everything, "status --refresh");
}
