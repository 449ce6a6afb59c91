//! A small raw HTTPS client for testing the simulator byte by byte.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use pvesim::Sim;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

pub const TOKEN_ID: &str = "pvescale@pve!autoscale";
pub const SECRET: &str = "8f1b6c0e-3d2a-4c5b-9e7f-0a1b2c3d4e5f";

pub fn token_header() -> String {
    format!("PVEAPIToken={TOKEN_ID}={SECRET}")
}

/// A UPID as a path segment (`:`, `!` and `@` percent-encoded, as a client sends it).
pub fn encode_upid(upid: &str) -> String {
    upid.replace(':', "%3A")
        .replace('!', "%21")
        .replace('@', "%40")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "invalid JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }
    pub fn data(&self) -> Value {
        self.json()["data"].clone()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn tls_config(sim: &Sim) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(sim.ca_der().to_vec()))
        .expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub struct Conn {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(sim: &Sim) -> Conn {
        let tcp = TcpStream::connect(("127.0.0.1", sim.port())).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = ClientConnection::new(tls_config(sim), name).expect("tls");
        Conn {
            tls: StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        }
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.tls.sock.set_read_timeout(Some(d)).ok();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<()> {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            }
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        self.send_raw(req.as_bytes())
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.tls.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    pub fn read_response(&mut self) -> std::io::Result<Resp> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let _ = parts.next();
        let status: u16 = parts.next().unwrap_or("0").parse().unwrap_or(0);
        let reason = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < len {
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed in body",
                ));
            }
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        Ok(Resp {
            status,
            reason,
            headers,
            body,
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        self.send(method, target, headers, body).expect("send");
        self.read_response().expect("response")
    }
}

/// A client with a fixed authentication, one kept-alive connection.
pub struct Api<'a> {
    pub sim: &'a Sim,
    pub conn: Conn,
    pub headers: Vec<(String, String)>,
}

impl<'a> Api<'a> {
    pub fn token(sim: &'a Sim) -> Self {
        Api {
            sim,
            conn: Conn::open(sim),
            headers: vec![("Authorization".into(), token_header())],
        }
    }
    pub fn with_header(sim: &'a Sim, k: &str, v: &str) -> Self {
        Api {
            sim,
            conn: Conn::open(sim),
            headers: vec![(k.into(), v.into())],
        }
    }
    pub fn anonymous(sim: &'a Sim) -> Self {
        Api {
            sim,
            conn: Conn::open(sim),
            headers: vec![],
        }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let target = format!("/api2/json{path}");
        let h: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.conn.send(method, &target, &h, body) {
            Ok(()) => {}
            Err(_) => {
                self.conn = Conn::open(self.sim);
                self.conn.send(method, &target, &h, body).expect("send");
            }
        }
        match self.conn.read_response() {
            Ok(r) => {
                if r.header("connection") == Some("close") {
                    self.conn = Conn::open(self.sim);
                }
                r
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }
    pub fn get(&mut self, path: &str) -> Resp {
        self.call("GET", path, None)
    }
    pub fn post(&mut self, path: &str, form: &str) -> Resp {
        self.call("POST", path, Some(form))
    }
    pub fn put(&mut self, path: &str, form: &str) -> Resp {
        self.call("PUT", path, Some(form))
    }

    /// POST a config change and wait for its task; returns (upid, exitstatus).
    pub fn post_config_wait(&mut self, node: &str, vmid: u32, form: &str) -> (String, String) {
        let r = self.post(&format!("/nodes/{node}/qemu/{vmid}/config"), form);
        assert_eq!(r.status, 200, "POST config: {} {}", r.reason, r.text());
        let upid = r.data().as_str().expect("upid").to_string();
        let exit = self.wait_task(node, &upid);
        (upid, exit)
    }

    pub fn wait_task(&mut self, node: &str, upid: &str) -> String {
        let enc = encode_upid(upid);
        for _ in 0..500 {
            let r = self.get(&format!("/nodes/{node}/tasks/{enc}/status"));
            assert_eq!(r.status, 200, "task status: {} {}", r.reason, r.text());
            let d = r.data();
            if d["status"] == "stopped" {
                return d["exitstatus"].as_str().unwrap_or("").to_string();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("task {upid} did not finish");
    }

    /// The row of guest `vmid` in `GET /cluster/resources?type=vm`.
    pub fn resource_row(&mut self, vmid: u32) -> Value {
        let rows = self.get("/cluster/resources?type=vm").data();
        rows.as_array()
            .expect("an array of rows")
            .iter()
            .find(|r| r["vmid"] == vmid)
            .unwrap_or_else(|| panic!("no row for {vmid} in {rows}"))
            .clone()
    }

    pub fn config(&mut self, node: &str, vmid: u32, current: bool) -> Value {
        let q = if current { "?current=1" } else { "" };
        let r = self.get(&format!("/nodes/{node}/qemu/{vmid}/config{q}"));
        assert_eq!(r.status, 200, "config: {} {}", r.reason, r.text());
        r.data()
    }

    pub fn pending(&mut self, node: &str, vmid: u32) -> Vec<Value> {
        let r = self.get(&format!("/nodes/{node}/qemu/{vmid}/pending"));
        assert_eq!(r.status, 200, "pending: {} {}", r.reason, r.text());
        r.data().as_array().cloned().unwrap_or_default()
    }

    /// Pending rows that really are pending (a `pending` value or a `delete`).
    pub fn pending_keys(&mut self, node: &str, vmid: u32) -> Vec<String> {
        self.pending(node, vmid)
            .into_iter()
            .filter(|r| r.get("pending").is_some() || r.get("delete").is_some())
            .filter_map(|r| r["key"].as_str().map(|s| s.to_string()))
            .collect()
    }
}

/// A number that may come as JSON number or string.
pub fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}
