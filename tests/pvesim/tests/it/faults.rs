//! Faults on demand.

use std::time::{Duration, Instant};

use crate::common::{Api, Conn, SECRET, TOKEN_ID, encode_upid, token_header};
use pvesim::{Fault, FaultKind, Privs, Sim, VmSpec};

fn sim() -> Sim {
    Sim::builder()
        .vm(VmSpec::new(101, "pve1").cores(4).vcpus(2).live_scalable())
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap()
}

#[test]
fn status_fault_once_then_normal() {
    let sim = sim();
    sim.add_fault(
        Fault::on("GET", "/cluster/resources")
            .status(500)
            .message("something broke")
            .times(1),
    );
    let mut api = Api::token(&sim);
    let r = api.get("/cluster/resources?type=vm");
    assert_eq!(r.status, 500);
    assert_eq!(r.reason, "something broke");
    assert_eq!(r.json()["message"], "something broke\n");
    assert_eq!(api.get("/cluster/resources?type=vm").status, 200);
    // Other paths are unaffected; the /api2/json prefix is accepted in fault paths.
    sim.add_fault(Fault::on("*", "/api2/json/version").status(502).times(1));
    assert_eq!(api.get("/cluster/resources").status, 200);
    let r = api.get("/version");
    assert_eq!(r.status, 502);
    let recs = sim.requests();
    assert_eq!(recs[0].fault.as_deref(), Some("status 500"));
    assert!(recs[1].fault.is_none());
}

#[test]
fn proxy_59x_have_empty_bodies() {
    let sim = sim();
    sim.add_fault(Fault::on_prefix("GET", "/nodes/").status(595).times(1));
    sim.add_fault(Fault::on_prefix("GET", "/nodes/").status(596).times(1));
    let mut api = Api::token(&sim);
    for code in [595, 596] {
        let r = api.get("/nodes/pve1/qemu/101/config");
        assert_eq!(r.status, code);
        assert!(r.body.is_empty());
    }
    assert_eq!(api.get("/nodes/pve1/qemu/101/config").status, 200);
}

#[test]
fn write_596_after_the_change_was_applied() {
    let sim = sim();
    sim.add_fault(
        Fault::on("POST", "/nodes/pve1/qemu/101/config")
            .status(596)
            .after_apply(true)
            .times(1),
    );
    let mut api = Api::token(&sim);
    let r = api.post("/nodes/pve1/qemu/101/config", "vcpus=4");
    assert_eq!(r.status, 596);
    assert!(r.body.is_empty());
    // The change is already visible when the 596 arrives (its task ran).
    assert_eq!(api.config("pve1", 101, true)["vcpus"], 4);
    assert!(sim.tasks().iter().all(|t| !t.running));
    // PUT: applied synchronously, 596 all the same.
    sim.add_fault(
        Fault::on("PUT", "/nodes/pve1/qemu/101/config")
            .status(596)
            .after_apply(true)
            .times(1),
    );
    assert_eq!(
        api.put("/nodes/pve1/qemu/101/config", "vcpus=3").status,
        596
    );
    assert_eq!(sim.vm(101).unwrap().vcpus, 3);
    // Before-apply (default): nothing happens.
    sim.add_fault(
        Fault::on("PUT", "/nodes/pve1/qemu/101/config")
            .status(500)
            .times(1),
    );
    assert_eq!(
        api.put("/nodes/pve1/qemu/101/config", "vcpus=2").status,
        500
    );
    assert_eq!(sim.vm(101).unwrap().vcpus, 3);
}

#[test]
fn hang_holds_the_connection_silent_then_closes() {
    let sim = sim();
    sim.add_fault(
        Fault::on("GET", "/cluster/resources")
            .hang(Duration::from_millis(1500))
            .times(1),
    );
    let mut conn = Conn::open(&sim);
    conn.set_timeout(Duration::from_millis(300));
    let h = token_header();
    conn.send(
        "GET",
        "/api2/json/cluster/resources",
        &[("Authorization", &h)],
        None,
    )
    .unwrap();
    let t = Instant::now();
    let e = conn.read_response().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(250));
    // After the hang the server closes without an answer.
    conn.set_timeout(Duration::from_secs(5));
    assert!(conn.read_response().is_err());
    assert!(t.elapsed() >= Duration::from_millis(1400));
    // A new connection works.
    assert_eq!(Api::token(&sim).get("/cluster/resources").status, 200);
    assert_eq!(sim.requests()[0].status, 0);
}

#[test]
fn latency_fault_and_global_latency() {
    let sim = sim();
    sim.add_fault(
        Fault::on("GET", "/version")
            .latency(Duration::from_millis(200))
            .times(1),
    );
    let mut api = Api::token(&sim);
    let t = Instant::now();
    assert_eq!(api.get("/version").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));

    let slow = Sim::builder()
        .latency(Duration::from_millis(50))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap();
    let mut api = Api::token(&slow);
    let t = Instant::now();
    for _ in 0..4 {
        assert_eq!(api.get("/version").status, 200);
    }
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[test]
fn unauthorized_from_the_nth_request_on() {
    let sim = sim();
    sim.add_fault(Fault::any().unauthorized_from(3));
    let mut api = Api::token(&sim);
    assert_eq!(api.get("/version").status, 200);
    assert_eq!(api.get("/version").status, 200);
    for _ in 0..3 {
        let r = api.get("/version");
        assert_eq!(r.status, 401);
        assert!(r.body.is_empty());
    }
    sim.clear_faults();
    assert_eq!(api.get("/version").status, 200);
}

#[test]
fn broken_bodies() {
    let sim = sim();
    let mut api = Api::token(&sim);
    sim.add_fault(
        Fault::on("GET", "/cluster/resources")
            .malformed_json()
            .times(1),
    );
    let r = api.get("/cluster/resources?type=vm");
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());

    sim.add_fault(
        Fault::on("GET", "/cluster/resources")
            .wrong_types()
            .times(1),
    );
    let r = api.get("/cluster/resources?type=vm");
    let d = r.data();
    assert!(d.is_object(), "top-level array became an object");
    assert!(d["items"][0]["vmid"].is_string());
    assert!(d["items"][0]["node"].is_number());

    sim.add_fault(Fault::on("GET", "/version").huge_body(3).times(1));
    let r = api.get("/version");
    assert!(r.body.len() > 3 * 1024 * 1024);
    assert_eq!(r.data()["release"], "8.4");

    sim.add_fault(Fault::on("GET", "/version").close().times(1));
    let mut conn = Conn::open(&sim);
    let h = token_header();
    conn.send("GET", "/api2/json/version", &[("Authorization", &h)], None)
        .unwrap();
    assert!(conn.read_response().is_err());
}

#[test]
fn task_that_never_finishes() {
    let sim = sim();
    sim.add_fault(
        Fault::on("POST", "/nodes/pve1/qemu/101/config")
            .kind(FaultKind::TaskNeverFinishes)
            .times(1),
    );
    let mut api = Api::token(&sim);
    let r = api.post("/nodes/pve1/qemu/101/config", "vcpus=4");
    assert_eq!(r.status, 200);
    let upid = r.data().as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(200));
    let enc = encode_upid(&upid);
    let st = api.get(&format!("/nodes/pve1/tasks/{enc}/status")).data();
    assert_eq!(st["status"], "running");
    assert_eq!(sim.vm(101).unwrap().vcpus, 2);
    assert!(!sim.wait_tasks(Duration::from_millis(100)));
}

#[test]
fn skip_and_prefix_matching() {
    let sim = sim();
    sim.add_fault(
        Fault::on_prefix("GET", "/nodes/pve1/")
            .status(503)
            .skip(2)
            .times(2),
    );
    let mut api = Api::token(&sim);
    let codes: Vec<u16> = (0..6)
        .map(|_| api.get("/nodes/pve1/qemu/101/pending").status)
        .collect();
    assert_eq!(codes, vec![200, 200, 503, 503, 200, 200]);
}

#[test]
fn task_with_warnings_is_applied() {
    let sim = sim();
    sim.add_fault(
        Fault::on("POST", "/nodes/pve1/qemu/101/config")
            .task_warnings(2)
            .times(1),
    );
    let mut api = Api::token(&sim);
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=3");
    assert_eq!(exit, "WARNINGS: 2");
    assert_eq!(sim.vm(101).unwrap().vcpus, 3);
    let (_, exit) = api.post_config_wait("pve1", 101, "vcpus=4");
    assert_eq!(exit, "OK");
}

#[test]
fn slow_synchronous_unplug_hits_the_proxy_timeout() {
    let sim = Sim::builder()
        .vm(VmSpec::new(101, "pve1")
            .memory_mib(4096)
            .live_scalable()
            .refuse_mem_unplug(1))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .unplug_refusal_delay(Duration::from_millis(400))
        .proxy_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut api = Api::token(&sim);
    let t = Instant::now();
    let r = api.put("/nodes/pve1/qemu/101/config", "memory=2048");
    assert_eq!(r.status, 596);
    assert!(r.body.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(200));
    // Outcome unknown to the client; in fact one DIMM went and the target is pending.
    let v = sim.vm(101).unwrap();
    assert_eq!(v.memory_mib, 3584);
    assert_eq!(v.pending_value("memory"), Some("2048"));
}
