//! metrics/export, rrddata and load patterns over simulated time.

use std::time::Duration;

use crate::common::{Api, SECRET, TOKEN_ID, num};
use pvesim::{NodeSpec, Pattern, Privs, Sim, VmSpec};
use serde_json::Value;

fn sim(version: &str) -> Sim {
    Sim::builder()
        .version(version)
        .node(NodeSpec::new("pve1"))
        .vm(VmSpec::new(101, "pve1")
            .cores(4)
            .vcpus(2)
            .memory_mib(4096)
            .live_scalable()
            .cpu_load(Pattern::Constant(1.0))
            .mem_load(Pattern::Constant(1024.0)))
        .vm(VmSpec::new(102, "pve1").running(false))
        .vm(VmSpec::new(103, "pve1")
            .memory_mib(2048)
            .balloon_stats(false)
            .mem_load(Pattern::Constant(100.0)))
        .vm(VmSpec::new(104, "pve1")
            .created_ago(Duration::from_secs(1800))
            .booted_ago(Duration::from_secs(1800)))
        .vm(VmSpec::new(105, "pve1").cpu_load(Pattern::Spikes {
            base: 0.1,
            peak: 2.0,
            every: 3600,
            duration: 300,
        }))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap()
}

fn rows_of(v: &Value) -> Vec<Value> {
    v["data"]["data"].as_array().cloned().unwrap_or_default()
}

#[test]
fn export_is_nested_windowed_and_sorted() {
    let sim = sim("8.4");
    let mut api = Api::token(&sim);
    let now = sim.now();
    let r = api.get(&format!(
        "/cluster/metrics/export?history=1&start-time={}",
        now - 300
    ));
    assert_eq!(r.status, 200);
    let j = r.json();
    assert!(j["data"]["data"].is_array(), "doubly nested");
    let rows = rows_of(&j);
    let ts: Vec<i64> = rows
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "sorted by timestamp");
    assert!(
        ts.iter()
            .all(|t| *t > now - 300 && *t <= now && t % 10 == 0)
    );
    let distinct: std::collections::BTreeSet<i64> = ts.iter().copied().collect();
    assert_eq!(distinct.len(), 30);
    let of = |id: &str, metric: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r["id"] == id && r["metric"] == metric)
            .map(|r| num(&r["value"]))
            .collect()
    };
    let cpu = of("qemu/101", "cpu_current");
    assert_eq!(cpu.len(), 30);
    assert!(cpu.iter().all(|c| (c - 0.5).abs() < 1e-9));
    assert!(of("qemu/101", "cpu_max").iter().all(|c| *c == 2.0));
    assert!(
        of("qemu/101", "mem_used")
            .iter()
            .all(|m| *m == (1024u64 << 20) as f64)
    );
    assert!(
        of("qemu/101", "mem_total")
            .iter()
            .all(|m| *m == (4096u64 << 20) as f64)
    );
    // Stopped: no cpu_current / mem_used, but the maxima.
    assert!(of("qemu/102", "cpu_current").is_empty());
    assert!(of("qemu/102", "mem_used").is_empty());
    assert_eq!(of("qemu/102", "cpu_max").len(), 30);
    // Nodes are there.
    assert_eq!(of("node/pve1", "cpu_current").len(), 30);
    let row = &rows[0];
    for k in ["id", "metric", "timestamp", "type", "value"] {
        assert!(row.get(k).is_some(), "{k}");
    }

    // At most 30 minutes back: the newest generation and 180 old ones of pvestatd's 10 s
    // loop (PVE/PullMetric.pm), whether the history is asked for whole, from long ago, or
    // from 45 minutes ago.
    for query in [
        "history=1".to_string(),
        "history=1&start-time=0".to_string(),
        format!("history=1&start-time={}", now - 2700),
    ] {
        let all = rows_of(&api.get(&format!("/cluster/metrics/export?{query}")).json());
        let distinct: std::collections::BTreeSet<i64> = all
            .iter()
            .map(|r| r["timestamp"].as_i64().unwrap())
            .collect();
        assert_eq!(distinct.len(), 181, "{query}");
        assert_eq!(distinct.first(), Some(&(now - 1800)), "{query}");
        assert_eq!(distinct.last(), Some(&now), "{query}");
    }
    // Without history: only the latest sample.
    let latest = rows_of(&api.get("/cluster/metrics/export").json());
    assert!(latest.iter().all(|r| r["timestamp"] == now));
    // Nothing newer than now.
    let none = rows_of(
        &api.get(&format!(
            "/cluster/metrics/export?history=1&start-time={now}"
        ))
        .json(),
    );
    assert!(none.is_empty());
}

/// The `node/...` and guest ids of an export answer.
fn ids_of(rows: &[Value]) -> std::collections::BTreeSet<String> {
    rows.iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn export_leaves_out_the_nodes_it_cannot_ask() {
    let sim = Sim::builder()
        .node(NodeSpec::new("pve1"))
        .node(NodeSpec::new("pve2").export_unreachable(true))
        .node(NodeSpec::new("pve3"))
        .vm(VmSpec::new(101, "pve1"))
        .vm(VmSpec::new(102, "pve2"))
        .vm(VmSpec::new(103, "pve3"))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let ids = |api: &mut Api, query: &str| {
        let r = api.get(&format!("/cluster/metrics/export?{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        ids_of(&rows_of(&r.json()))
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect();
    // pve2 does not answer: no error, its metrics and its guests' are simply missing.
    assert_eq!(
        ids(&mut api, "history=1"),
        set(&["node/pve1", "node/pve3", "qemu/101", "qemu/103"])
    );
    // Reachable again: back. An offline node is skipped too.
    assert!(sim.set_export_unreachable("pve2", false));
    sim.update_node("pve3", |n| n.online = false);
    assert_eq!(
        ids(&mut api, "history=1"),
        set(&["node/pve1", "node/pve2", "qemu/101", "qemu/102"])
    );
    // The node answering the API (the first) reads its own metrics, whatever the flag says.
    sim.set_export_unreachable("pve1", true);
    assert!(ids(&mut api, "").contains("node/pve1"));
    // local-only: the answering node alone; node-list: those nodes (and asks them even
    // with local-only, as the server does when it fans out).
    assert_eq!(
        ids(&mut api, "local-only=1"),
        set(&["node/pve1", "qemu/101"])
    );
    assert_eq!(
        ids(&mut api, "node-list=pve2&local-only=1"),
        set(&["node/pve2", "qemu/102"])
    );
    let r = api.get("/cluster/metrics/export?node-list=pve2,pve9");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Requested node-list contains unknown nodes - pve9"
    );
}

#[test]
fn a_metrics_gap_leaves_the_guest_running_without_figures() {
    let sim = Sim::builder()
        .node(NodeSpec::new("pve1"))
        .vm(VmSpec::new(101, "pve1").metrics_gap(-600, 600))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let r = api.get("/cluster/resources?type=vm");
    let row = &r.json()["data"][0];
    assert_eq!(row["status"], "running");
    assert!(row["cpu"].is_null() && row["mem"].is_null(), "{row}");
    let since = sim.now() - 300;
    let r = api.get(&format!(
        "/cluster/metrics/export?history=1&start-time={since}"
    ));
    let metrics: Vec<String> = rows_of(&r.json())
        .iter()
        .filter(|m| m["id"] == "qemu/101")
        .map(|m| m["metric"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        metrics.contains(&"cpu_max".to_string()),
        "{}",
        metrics.len()
    );
    assert!(
        !metrics
            .iter()
            .any(|m| m == "cpu_current" || m == "mem_used"),
        "figures within the gap"
    );
    let r = api.get("/nodes/pve1/qemu/101/rrddata?timeframe=hour&cf=AVERAGE");
    let rows = r.json()["data"].as_array().cloned().unwrap_or_default();
    assert!(rows.iter().rev().take(5).all(|p| p["cpu"].is_null()));
    // After the gap, figures again.
    sim.advance(Duration::from_secs(700));
    let r = api.get("/cluster/resources?type=vm");
    assert!(r.json()["data"][0]["cpu"].is_number());
}

#[test]
fn past_samples_use_the_size_the_vm_had() {
    let sim = sim("8.4");
    let mut api = Api::token(&sim);
    sim.advance(Duration::from_secs(300));
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=4");
    assert_eq!(exit, "OK");
    let change = sim.now();
    sim.advance(Duration::from_secs(300));
    let rows = rows_of(
        &api.get(&format!(
            "/cluster/metrics/export?history=1&start-time={}",
            sim.now() - 600
        ))
        .json(),
    );
    for r in rows
        .iter()
        .filter(|r| r["id"] == "qemu/101" && r["metric"] == "cpu_current")
    {
        let t = r["timestamp"].as_i64().unwrap();
        let expect = if t < change { 0.5 } else { 0.25 };
        assert!(
            (num(&r["value"]) - expect).abs() < 1e-9,
            "t={t} {}",
            r["value"]
        );
    }
    // cluster/resources shows the new size and the lower percentage.
    let vm = api.get("/cluster/resources?type=vm").data()[0].clone();
    assert_eq!(vm["maxcpu"], 4);
    assert!((num(&vm["cpu"]) - 0.25).abs() < 1e-9);
}

#[test]
fn memory_without_balloon_stats_is_a_host_estimate() {
    let sim = sim("8.4");
    let mut api = Api::token(&sim);
    let vm = api.resource_row(103);
    assert!(num(&vm["mem"]) >= 0.9 * num(&vm["maxmem"]));
    let st = api.get("/nodes/pve1/qemu/103/status/current").data();
    assert!(st["ballooninfo"].get("free_mem").is_none());
    assert!(st["ballooninfo"]["max_mem"].is_number());
}

#[test]
fn rrddata_points_per_version() {
    for (v, tf, count, step) in [
        ("8.4", "hour", 70, 60),
        ("8.4", "day", 70, 1800),
        ("8.4", "week", 70, 10800),
        ("9.1", "hour", 60, 60),
        ("9.1", "day", 1440, 60),
        ("9.1", "week", 336, 1800),
    ] {
        let sim = sim(v);
        let mut api = Api::token(&sim);
        let r = api.get(&format!(
            "/nodes/pve1/qemu/101/rrddata?timeframe={tf}&cf=AVERAGE"
        ));
        assert_eq!(r.status, 200);
        let pts = r.data().as_array().cloned().unwrap();
        assert_eq!(pts.len(), count, "{v} {tf}");
        let times: Vec<i64> = pts.iter().map(|p| p["time"].as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == step), "{v} {tf}");
        assert!(*times.last().unwrap() <= sim.now());
        let last = pts.last().unwrap();
        assert!((num(&last["cpu"]) - 0.5).abs() < 1e-9, "{v} {tf} {last}");
        assert_eq!(num(&last["maxcpu"]), 2.0);
        assert_eq!(num(&last["maxmem"]), (4096u64 << 20) as f64);
        assert_eq!(last.get("memhost").is_some(), v == "9.1");
        assert_eq!(last.get("pressurecpusome").is_some(), v == "9.1");
        // A stopped VM: only `time`.
        let pts = api
            .get(&format!("/nodes/pve1/qemu/102/rrddata?timeframe={tf}"))
            .data();
        assert!(
            pts.as_array()
                .unwrap()
                .iter()
                .all(|p| p.as_object().unwrap().len() == 1)
        );
    }
    // A VM created 30 minutes ago has gaps before that.
    let sim = sim("8.4");
    let mut api = Api::token(&sim);
    let pts = api
        .get("/nodes/pve1/qemu/104/rrddata?timeframe=hour")
        .data();
    let pts = pts.as_array().unwrap();
    let created = sim.now() - 1800;
    for p in pts {
        let t = p["time"].as_i64().unwrap();
        if t <= created {
            assert!(p.get("cpu").is_none(), "t={t}");
        } else if t > created + 60 {
            assert!(p.get("cpu").is_some(), "t={t}");
        }
    }
    // MAX is at least AVERAGE for spiky load.
    let avg = api
        .get("/nodes/pve1/qemu/105/rrddata?timeframe=day&cf=AVERAGE")
        .data();
    let max = api
        .get("/nodes/pve1/qemu/105/rrddata?timeframe=day&cf=MAX")
        .data();
    let sum = |v: &Value, f: fn(f64, f64) -> f64| {
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.get("cpu").map(num))
            .fold(0.0, f)
    };
    assert!(sum(&max, |a, b| a + b) > sum(&avg, |a, b| a + b));
    assert_eq!(sum(&max, f64::max), 1.0);
    // Missing VM.
    let r = api.get("/nodes/pve1/qemu/999/rrddata?timeframe=hour");
    assert_eq!(r.status, 500);
    assert!(r.reason.starts_with("RRD error"));
}

#[test]
fn patterns_follow_simulated_time() {
    let p = Pattern::Step {
        before: 1.0,
        after: 3.0,
        at: 600,
    };
    assert_eq!(p.at(0), 1.0);
    assert_eq!(p.at(600), 3.0);
    let r = Pattern::Ramp {
        from: 0.0,
        to: 10.0,
        start: 0,
        end: 100,
    };
    assert_eq!(r.at(50), 5.0);
    assert_eq!(r.at(1000), 10.0);
    let per = Pattern::Periodic {
        base: 2.0,
        amplitude: 1.0,
        period: 86400,
    };
    assert!((per.at(21600) - 3.0).abs() < 1e-9);
    let s = Pattern::Series {
        start: 0,
        step: 60,
        values: vec![1.0, 2.0, 4.0],
    };
    assert_eq!(s.at(-5), 1.0);
    assert_eq!(s.at(61), 2.0);
    assert_eq!(s.at(9999), 4.0);

    let sim = Sim::builder()
        .vm(VmSpec::new(101, "pve1").vcpus(2).cores(2).cpu_load(p))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let cpu = |api: &mut Api| num(&api.get("/cluster/resources?type=vm").data()[0]["cpu"]);
    assert!((cpu(&mut api) - 0.5).abs() < 1e-9);
    sim.advance(Duration::from_secs(600));
    // Demand 3 cores on 2 vCPUs: saturated.
    assert!((cpu(&mut api) - 1.0).abs() < 1e-9);
}

#[test]
fn noise_is_small_and_deterministic() {
    let mk = || {
        Sim::builder()
            .noise(0.02, 7)
            .vm(VmSpec::new(101, "pve1")
                .vcpus(4)
                .cores(4)
                .cpu_load(Pattern::Constant(2.0)))
            .token(TOKEN_ID, SECRET, Privs::pvescale())
            .start()
            .unwrap()
    };
    let (a, b) = (mk(), mk());
    let ra = rows_of(
        &Api::token(&a)
            .get("/cluster/metrics/export?history=1")
            .json(),
    );
    let rb = rows_of(
        &Api::token(&b)
            .get("/cluster/metrics/export?history=1")
            .json(),
    );
    assert_eq!(ra, rb);
    let cpus: Vec<f64> = ra
        .iter()
        .filter(|r| r["id"] == "qemu/101" && r["metric"] == "cpu_current")
        .map(|r| num(&r["value"]))
        .collect();
    assert!(cpus.iter().all(|c| (c - 0.5).abs() <= 0.5 * 0.02 + 1e-9));
    assert!(cpus.iter().any(|c| (c - 0.5).abs() > 1e-6));
}

#[test]
fn generated_cluster_exports_quickly() {
    let sim = Sim::builder()
        .version("9.1")
        .generated(8, 1000, 1)
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let rows = api.get("/cluster/resources?type=vm").data();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1008);
    assert_eq!(rows.iter().filter(|r| r["type"] == "lxc").count(), 8);
    assert!(rows.iter().any(|r| r["template"] == 1));
    assert!(rows.iter().any(|r| r.get("lock").is_some()));
    assert!(rows.iter().any(|r| r["status"] == "stopped"));
    let tagged = rows
        .iter()
        .filter(|r| r["tags"].as_str().is_some_and(|t| t.contains("autoscale")))
        .count();
    assert!(tagged > 700 && tagged < 950, "{tagged}");
    let r = api.get(&format!(
        "/cluster/metrics/export?history=1&start-time={}",
        sim.now() - 60
    ));
    assert_eq!(r.status, 200);
    let n = rows_of(&r.json()).len();
    assert!(n > 1000 * 6 * 6, "{n}");
    // Deterministic for a seed.
    let again = Sim::builder().generated(8, 1000, 1).start().unwrap();
    assert_eq!(sim.vm(1234).unwrap().config, again.vm(1234).unwrap().config);
}
