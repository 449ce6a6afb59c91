//! Authentication, privileges, reading endpoints, error shapes, HTTP robustness.

use std::time::Duration;

use crate::common::{Api, Conn, SECRET, TOKEN_ID, num, token_header};
use pvesim::{AuthKind, NodeSpec, Pattern, Privs, Sim, VmSpec};
use sha2::{Digest, Sha256};

fn basic(version: &str) -> Sim {
    Sim::builder()
        .version(version)
        .node(NodeSpec::new("pve1").cpus(16).memory_mib(65536))
        .node(NodeSpec::new("pve2").cpus(8).memory_mib(32768))
        .vm(VmSpec::new(101, "pve1")
            .name("web1")
            .cores(4)
            .vcpus(2)
            .memory_mib(2048)
            .balloon_mib(1024)
            .live_scalable()
            .tags(&["autoscale", "web"])
            .pool("web")
            .cpu_load(Pattern::Constant(1.5))
            .mem_load(Pattern::Constant(1024.0)))
        .vm(VmSpec::new(102, "pve2").name("db1").running(false))
        .vm(VmSpec::new(103, "pve1").name("locked").lock("backup"))
        .vm(VmSpec::new(200, "pve2").lxc().name("ct1"))
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .token("audit@pve!ro", "ro-secret", Privs::new(&["Sys.Audit"]))
        .user("admin@pam", "password", Privs::all())
        .user_tfa("tfa@pam", "password", Privs::all())
        .start()
        .expect("start")
}

#[test]
fn tls_with_ureq_trusting_the_ca_and_fingerprint() {
    let sim = basic("8.4");
    let ca = ureq::tls::Certificate::from_der(sim.ca_der()).to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into();
    for _ in 0..3 {
        let mut r = agent
            .get(format!("{}/version", sim.api_url()))
            .header("Authorization", token_header())
            .call()
            .expect("call");
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
        assert_eq!(v["data"]["release"], "8.4");
        assert!(v["data"]["version"].as_str().unwrap().starts_with("8.4."));
        assert!(v["data"]["repoid"].is_string());
    }
    // The agent kept its connection alive: one connection for three requests.
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.conn == reqs[0].conn));
    // Fingerprint = SHA-256 of the leaf DER, upper case with colons.
    let d = Sha256::digest(sim.cert_der());
    let hex: Vec<String> = d.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(sim.fingerprint(), hex.join(":"));
    assert_eq!(sim.fingerprint().len(), 95);
    let dir = std::env::temp_dir().join(format!("pvesim-ca-{}", sim.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = sim.write_ca_file(&dir).unwrap();
    assert!(
        std::fs::read_to_string(&p)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn token_auth_ok_and_401_with_empty_body() {
    let sim = basic("8.4");
    let mut api = Api::token(&sim);
    assert_eq!(api.get("/version").status, 200);

    let bad = format!("PVEAPIToken={TOKEN_ID}=wrong");
    let r = Api::with_header(&sim, "Authorization", &bad).get("/version");
    assert_eq!(r.status, 401);
    assert_eq!(r.reason, "authentication failure");
    assert!(r.body.is_empty());

    // A ':' separator is not a token.
    let colon = format!("PVEAPIToken={TOKEN_ID}:{SECRET}");
    assert_eq!(
        Api::with_header(&sim, "Authorization", &colon)
            .get("/version")
            .status,
        401
    );
    // No credentials at all.
    let r = Api::anonymous(&sim).get("/cluster/resources");
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());

    let reqs = sim.requests();
    assert_eq!(reqs[0].auth, AuthKind::Token(TOKEN_ID.into()));
    assert_eq!(reqs[1].auth, AuthKind::Invalid);
    assert_eq!(reqs[3].auth, AuthKind::None);
    // The secret is never recorded.
    assert!(!format!("{reqs:?}").contains(SECRET));
}

#[test]
fn ticket_login_cookie_and_csrf() {
    let sim = basic("8.4");
    let mut anon = Api::anonymous(&sim);
    let r = anon.post("/access/ticket", "username=admin%40pam&password=nope");
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
    let r = anon.post(
        "/access/ticket",
        "username=admin&realm=pam&password=password",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.data();
    assert_eq!(d["username"], "admin@pam");
    let ticket = d["ticket"].as_str().unwrap().to_string();
    let csrf = d["CSRFPreventionToken"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("PVE:admin@pam:"));
    assert!(d.get("NeedTFA").is_none());

    let cookie = format!("PVEAuthCookie={}", ticket.replace(':', "%3A"));
    let mut api = Api::with_header(&sim, "Cookie", &cookie);
    assert_eq!(api.get("/cluster/resources").status, 200);
    // A write without the CSRF header is refused.
    let r = api.put("/nodes/pve1/qemu/101/config", "description=x");
    assert_eq!(r.status, 401);
    assert_eq!(r.reason, "Permission denied - invalid csrf token");
    assert!(sim.vm(101).unwrap().current("description").is_none());
    // With it, the write works.
    api.headers.push(("CSRFPreventionToken".into(), csrf));
    let r = api.put("/nodes/pve1/qemu/101/config", "description=x");
    assert_eq!(r.status, 200, "{} {}", r.reason, r.text());
    assert_eq!(sim.vm(101).unwrap().current("description"), Some("x"));
    // The ticket expires after two hours of simulated time.
    sim.advance(Duration::from_secs(7201));
    assert_eq!(api.get("/version").status, 401);

    // TFA users get a half ticket.
    let r = anon.post("/access/ticket", "username=tfa%40pam&password=password");
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["NeedTFA"], 1);
    let half = r.data()["ticket"].as_str().unwrap().to_string();
    let mut tfa = Api::with_header(&sim, "Cookie", &format!("PVEAuthCookie={half}"));
    assert_eq!(tfa.get("/version").status, 401);

    // Passwords are redacted in the record.
    let reqs = sim.requests();
    let login = reqs.iter().find(|r| r.path == "/access/ticket").unwrap();
    assert_eq!(login.param("password"), Some("<redacted>"));
    assert!(!format!("{reqs:?}").contains("password=password"));
}

#[test]
fn privileges_shape_what_is_visible() {
    let sim = basic("8.4");
    // Sys.Audit only: VMs are silently absent, no 403.
    let mut ro = Api::with_header(&sim, "Authorization", "PVEAPIToken=audit@pve!ro=ro-secret");
    let r = ro.get("/cluster/resources?type=vm");
    assert_eq!(r.status, 200);
    assert_eq!(r.data().as_array().unwrap().len(), 0);
    assert_eq!(ro.get("/nodes/pve1/qemu/101/config").status, 403);

    // pvescale's token sees the VMs; without Sys.Audit nodes have no metrics.
    sim.set_token("nosys@pve!t", "s", Privs::pvescale().without("Sys.Audit"));
    let mut nosys = Api::with_header(&sim, "Authorization", "PVEAPIToken=nosys@pve!t=s");
    let nodes = nosys.get("/cluster/resources?type=node").data();
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert!(nodes[0].get("cpu").is_none() && nodes[0].get("maxmem").is_none());
    let r = nosys.get("/cluster/metrics/export?history=1");
    assert_eq!(r.status, 403);
    assert_eq!(r.reason, "Permission check failed (/, Sys.Audit)");

    let mut api = Api::token(&sim);
    let nodes = api.get("/cluster/resources?type=node").data();
    assert!(nodes[0]["cpu"].is_number() && nodes[0]["maxmem"].is_number());

    // Missing VM.Config.Memory: 403 naming the privilege.
    sim.set_token("cpu@pve!t", "s", Privs::new(&["VM.Audit", "VM.Config.CPU"]));
    let mut cpu = Api::with_header(&sim, "Authorization", "PVEAPIToken=cpu@pve!t=s");
    let r = cpu.post("/nodes/pve1/qemu/101/config", "memory=4096");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.reason,
        "Permission check failed (/vms/101, VM.Config.Memory)"
    );
    assert!(r.json()["data"].is_null());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Permission check failed")
    );
    assert_eq!(
        cpu.post("/nodes/pve1/qemu/101/config", "vcpus=3").status,
        200
    );

    // Per-VM ACLs.
    sim.set_token(
        "one@pve!t",
        "s",
        Privs::none().on("/vms/101", &["VM.Audit"]),
    );
    let mut one = Api::with_header(&sim, "Authorization", "PVEAPIToken=one@pve!t=s");
    let vms = one.get("/cluster/resources?type=vm").data();
    let ids: Vec<u64> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![101]);

    // /access/permissions lists privileges per path.
    let p = api.get("/access/permissions?path=%2F").data();
    assert_eq!(p["/"]["VM.Audit"], 1);
    assert_eq!(p["/"]["VM.Config.Memory"], 1);
    assert!(p["/"].get("VM.Allocate").is_none());
    let mut admin_tok = Api::anonymous(&sim);
    let r = admin_tok.post("/access/ticket", "username=admin%40pam&password=password");
    let ticket = r.data()["ticket"].as_str().unwrap().to_string();
    let mut admin = Api::with_header(&sim, "Cookie", &format!("PVEAuthCookie={ticket}"));
    let p = admin.get("/access/permissions").data();
    assert_eq!(p["/"]["Permissions.Modify"], 1);
    assert_eq!(p["/vms"]["VM.Allocate"], 1);
}

#[test]
fn cluster_resources_rows() {
    let sim = basic("8.4");
    let mut api = Api::token(&sim);
    let all = api.get("/cluster/resources?type=vm").data();
    let rows = all.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let vm = rows.iter().find(|r| r["vmid"] == 101).unwrap();
    assert_eq!(vm["id"], "qemu/101");
    assert_eq!(vm["type"], "qemu");
    assert_eq!(vm["node"], "pve1");
    assert_eq!(vm["status"], "running");
    assert_eq!(vm["name"], "web1");
    assert_eq!(vm["maxcpu"], 2);
    assert_eq!(vm["maxmem"], 2048u64 << 20);
    assert!((num(&vm["cpu"]) - 0.75).abs() < 1e-9, "{}", vm["cpu"]);
    assert_eq!(vm["mem"], 1024u64 << 20);
    assert_eq!(vm["tags"], "autoscale;web");
    assert_eq!(vm["pool"], "web");
    assert_eq!(vm["template"], 0);
    assert!(vm.get("lock").is_none() && vm.get("hastate").is_none());
    assert!(num(&vm["uptime"]) > 0.0);
    assert!(vm.get("memhost").is_none());
    let stopped = rows.iter().find(|r| r["vmid"] == 102).unwrap();
    assert_eq!(stopped["status"], "stopped");
    assert!(stopped.get("tags").is_none() && stopped.get("pool").is_none());
    let locked = rows.iter().find(|r| r["vmid"] == 103).unwrap();
    assert_eq!(locked["lock"], "backup");
    let ct = rows.iter().find(|r| r["vmid"] == 200).unwrap();
    assert_eq!(ct["type"], "lxc");
    assert_eq!(ct["id"], "lxc/200");

    // More vCPUs: lower percentage.
    sim.update_vm(101, |v| {
        v.config.insert("vcpus".into(), "4".into());
    });
    let vm = api.get("/cluster/resources?type=vm").data()[0].clone();
    assert_eq!(vm["maxcpu"], 4);
    assert!((num(&vm["cpu"]) - 0.375).abs() < 1e-9);

    // Everything without a type: nodes, storage, sdn, pools too.
    let everything = api.get("/cluster/resources").data();
    let types: std::collections::BTreeSet<&str> = everything
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert!(types.contains("node") && types.contains("qemu") && types.contains("lxc"));

    let r = api.get("/cluster/resources?type=vms");
    assert_eq!(r.status, 400);
    assert_eq!(r.reason, "Parameter verification failed.");
    assert!(
        r.json()["errors"]["type"]
            .as_str()
            .unwrap()
            .contains("enumeration")
    );

    // PVE 9 adds memhost.
    let sim9 = basic("9.1");
    let mut api9 = Api::token(&sim9);
    let vm = api9.get("/cluster/resources?type=vm").data()[0].clone();
    assert!(vm["memhost"].is_number());
}

#[test]
fn nodes_status_qemu_list_and_status_current() {
    let sim = basic("8.4");
    let mut api = Api::token(&sim);
    let st = api.get("/nodes/pve1/status").data();
    assert_eq!(st["cpuinfo"]["cpus"], 16);
    assert_eq!(st["memory"]["total"], 65536u64 << 20);
    let used = st["memory"]["used"].as_u64().unwrap();
    assert_eq!(
        st["memory"]["free"].as_u64().unwrap() + used,
        65536u64 << 20
    );
    assert!(num(&st["cpu"]) > 0.0 && num(&st["cpu"]) < 1.0);

    let list = api.get("/nodes/pve1/qemu").data();
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![101, 103]);

    let s1 = api.get("/nodes/pve1/qemu/101/status/current").data();
    assert_eq!(s1["cpu"], 0.0, "first call reports 0");
    assert_eq!(s1["status"], "running");
    assert_eq!(s1["qmpstatus"], "running");
    assert!(s1["ballooninfo"]["free_mem"].is_number());
    let s2 = api.get("/nodes/pve1/qemu/101/status/current").data();
    assert!(num(&s2["cpu"]) > 0.5);

    // Unknown node / offline node.
    let r = api.get("/nodes/pve9/qemu/101/config");
    assert_eq!(r.status, 500);
    assert!(r.reason.starts_with("hostname lookup 'pve9' failed"));
    sim.update_node("pve2", |n| n.online = false);
    let r = api.get("/nodes/pve2/qemu/102/config");
    assert_eq!(r.status, 595);
    assert!(r.body.is_empty());
    let vm102 = api.resource_row(102);
    assert_eq!(vm102["status"], "unknown");
    assert!(vm102.get("maxmem").is_none());
}

#[test]
fn errors_unknown_path_param_and_missing_vm() {
    let sim = basic("8.4");
    let mut api = Api::token(&sim);
    let r = api.get("/foo");
    assert_eq!(r.status, 501);
    assert_eq!(r.reason, "Method 'GET /foo' not implemented");
    assert_eq!(r.json()["message"], "Method 'GET /foo' not implemented\n");
    assert_eq!(api.call_delete("/version").status, 501);

    let r = api.post("/nodes/pve1/qemu/101/config", "vcpus=2&bogus=1");
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(
        j["errors"]["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert!(j["data"].is_null());
    assert_eq!(j["message"], "Parameter verification failed.\n");
    let r = api.post("/nodes/pve1/qemu/101/config", "vcpus=two&numa=true");
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(
        j["errors"]["vcpus"],
        "type check ('integer') failed - got 'two'"
    );
    assert_eq!(
        j["errors"]["numa"],
        "type check ('boolean') failed - got 'true'"
    );
    let r = api.get("/nodes/pve1/qemu/abc/config");
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"]["vmid"].is_string());
    let r = api.get("/nodes/pve1/qemu/101/rrddata");
    assert_eq!(
        r.json()["errors"]["timeframe"],
        "property is missing and it is not optional"
    );

    let r = api.get("/nodes/pve1/qemu/999/config");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"
    );
    // A VM on another node is just as missing.
    let r = api.get("/nodes/pve1/qemu/102/config");
    assert_eq!(r.status, 500);
    // Containers have no qemu config.
    assert_eq!(api.get("/nodes/pve2/qemu/200/config").status, 500);

    // Older servers have no `message` in the body, only the status line.
    let old = basic("8.2");
    let mut api = Api::token(&old);
    let r = api.get("/foo");
    assert_eq!(r.status, 501);
    assert!(r.json().get("message").is_none());
    assert_eq!(r.reason, "Method 'GET /foo' not implemented");
}

#[test]
fn metrics_export_exists_from_pve_manager_8_2_5() {
    // pve-manager debian/changelog, 8.2.5: "api: metrics: add /cluster/metrics/export endpoint".
    for (version, full, status) in [
        ("8.2.4", "8.2.4", 501),
        ("8.2.5", "8.2.5", 200),
        ("8.1", "8.1.4", 501),
        ("8.3", "8.3.5", 200),
    ] {
        let sim = basic(version);
        let mut api = Api::token(&sim);
        let v = api.get("/version").data();
        assert_eq!(v["version"], full, "{version}");
        assert_eq!(v["release"], &full[..3], "{version}");
        let r = api.get("/cluster/metrics/export?history=1");
        assert_eq!(r.status, status, "{version}");
    }
}

trait Delete {
    fn call_delete(&mut self, path: &str) -> crate::common::Resp;
}
impl Delete for Api<'_> {
    fn call_delete(&mut self, path: &str) -> crate::common::Resp {
        let h = token_header();
        self.conn.request(
            "DELETE",
            &format!("/api2/json{path}"),
            &[("Authorization", &h)],
            None,
        )
    }
}

#[test]
fn malformed_requests_do_not_kill_the_server() {
    let sim = basic("8.4");
    let cases: Vec<&[u8]> = vec![
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"get /api2/json/version HTTP/1.1\r\n\r\n",
        b"GET /api2/json/version HTTP/9.9\r\n\r\n",
        b"GET /api2/json/version HTTP/1.1\r\nNoColonHeader\r\n\r\n",
        b"POST /api2/json/access/ticket HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /api2/json/access/ticket HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /api2/json/version\xff\xfe HTTP/1.1\r\n\r\n",
    ];
    for c in cases {
        let mut conn = Conn::open(&sim);
        conn.send_raw(c).unwrap();
        let r = conn.read_response().expect("an answer");
        assert!(
            r.status >= 400,
            "{:?} -> {}",
            String::from_utf8_lossy(c),
            r.status
        );
    }
    let mut conn = Conn::open(&sim);
    let r = conn.request(
        "POST",
        "/api2/json/access/ticket",
        &[("Transfer-Encoding", "chunked")],
        None,
    );
    assert_eq!(r.status, 501);
    // Bad percent-encoding in parameters.
    let mut api = Api::token(&sim);
    let r = api.get("/cluster/resources?type=%zz");
    assert_eq!(r.status, 400);
    let r = api.post("/nodes/pve1/qemu/101/config", "vcpus=%");
    assert_eq!(r.status, 400);
    // Huge header block.
    let mut conn = Conn::open(&sim);
    let big = format!(
        "GET /api2/json/version HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = conn.send_raw(big.as_bytes());
    if let Ok(r) = conn.read_response() {
        assert_eq!(r.status, 431);
    }
    // Still serving.
    assert_eq!(Api::token(&sim).get("/version").status, 200);
    // JSON bodies work too.
    let mut conn = Conn::open(&sim);
    let h = token_header();
    let r = conn.request(
        "PUT",
        "/api2/json/nodes/pve1/qemu/101/config",
        &[("Authorization", &h), ("Content-Type", "application/json")],
        Some("{\"vcpus\":3,\"numa\":true}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sim.vm(101).unwrap().vcpus, 3);
    let rec = sim.requests().into_iter().last().unwrap();
    assert_eq!(rec.param("vcpus"), Some("3"));
    assert_eq!(rec.param("numa"), Some("1"));
}

#[test]
fn concurrent_connections_and_recording() {
    let sim = Sim::builder()
        .generated(4, 300, 42)
        .token(TOKEN_ID, SECRET, Privs::pvescale())
        .start()
        .unwrap();
    let rows_expected = 300 + 4;
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut api = Api::token(&sim);
                for i in 0..25 {
                    let r = api.get("/cluster/resources?type=vm");
                    assert_eq!(r.status, 200);
                    assert_eq!(r.data().as_array().unwrap().len(), rows_expected);
                    let vmid = 1000 + (i * 7) % 300;
                    let node = format!("pve{}", (vmid - 1000) % 4 + 1);
                    let r = api.get(&format!("/nodes/{node}/qemu/{vmid}/config?current=1"));
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    assert_eq!(sim.count("GET", "/cluster/resources"), 200);
    assert_eq!(sim.count("GET", "/nodes/"), 200);
    let conns: std::collections::BTreeSet<u64> = sim.requests().iter().map(|r| r.conn).collect();
    assert_eq!(conns.len(), 8, "one kept-alive connection per client");
    let r = &sim.requests()[1];
    assert!(r.response_bytes > 0);
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}
