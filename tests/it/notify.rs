//! Notifications: email (a small SMTP server with STARTTLS and implicit TLS on 127.0.0.1),
//! Gotify and webhooks (a small HTTP receiver on 127.0.0.1), all inside this test; then the
//! real binary against the simulated cluster for the scaled, refused, failed and recovered
//! paths, dry run, `check --notify-test`, a dead channel and secrets.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use pvescale::config::{self, FakeEnv};
use pvescale::notify::{self, NotifyReport};
use pvescale::policy::BlockedBy;
use pvescale::policy::readiness::LiveScaling;
use pvescale::report::{
    ActionKind, ClusterReport, MemorySourceShown, ResourceReport, RunReport, VmReport, WriteOutcome,
};
use pvescale::state::{Notifications, State};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// An HTTP receiver: records every request, answers with a settable status.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub(crate) struct Receiver {
    pub(crate) port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    pub(crate) status: Arc<AtomicU16>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (r, s) = (requests.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve_http(stream, &r, &s);
                });
            }
        });
        Receiver {
            port,
            requests,
            status,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    pub(crate) fn to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

fn read_line(stream: &mut impl Read) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn serve_http(
    mut stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    status: &AtomicU16,
) -> io::Result<()> {
    let first = read_line(&mut stream)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let line = read_line(&mut stream)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    requests.lock().expect("lock").push(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let code = status.load(Ordering::SeqCst);
    let text = format!("status {code}");
    write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// A port where nothing listens.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// An SMTP server: plain, STARTTLS or implicit TLS; records each mail and the login.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
    /// `user:password` of the AUTH, if any.
    login: Option<String>,
    /// The mail came over TLS.
    tls: bool,
}

#[derive(Clone)]
enum SmtpMode {
    Plain,
    StartTls(Arc<rustls::ServerConfig>),
    Implicit(Arc<rustls::ServerConfig>),
}

struct SmtpServer {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn tls_conn(config: &Arc<rustls::ServerConfig>, tcp: TcpStream) -> io::Result<Conn> {
    let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

impl SmtpServer {
    fn start(mode: SmtpMode) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = mails.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (m, mode) = (m.clone(), mode.clone());
                std::thread::spawn(move || {
                    let _ = serve_smtp(stream, &mode, &m);
                });
            }
        });
        SmtpServer { port, mails }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }
}

fn serve_smtp(tcp: TcpStream, mode: &SmtpMode, mails: &Mutex<Vec<Mail>>) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = match mode {
        SmtpMode::Implicit(config) => tls_conn(config, tcp)?,
        _ => Conn::Plain(tcp),
    };
    let reply = |conn: &mut Conn, text: &str| -> io::Result<()> {
        conn.write_all(text.as_bytes())?;
        conn.flush()
    };
    reply(&mut conn, "220 test.invalid ESMTP\r\n")?;
    let mut login = None;
    let mut from = String::new();
    let mut to = Vec::new();
    loop {
        let line = read_line(&mut conn)?;
        if line.is_empty() {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let tls = matches!(conn, Conn::Tls(_));
        if upper.starts_with("EHLO") {
            let mut text = String::from("250-test.invalid\r\n");
            if matches!(mode, SmtpMode::StartTls(_)) && !tls {
                text.push_str("250-STARTTLS\r\n");
            }
            text.push_str("250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
            reply(&mut conn, &text)?;
        } else if upper.starts_with("STARTTLS") {
            let SmtpMode::StartTls(config) = mode else {
                reply(&mut conn, "502 no\r\n")?;
                continue;
            };
            reply(&mut conn, "220 go ahead\r\n")?;
            let Conn::Plain(tcp) = conn else {
                return Ok(());
            };
            conn = tls_conn(config, tcp)?;
        } else if upper.starts_with("AUTH PLAIN") {
            let b64 = match cmd.split_whitespace().nth(2) {
                Some(b) => b.to_string(),
                None => {
                    reply(&mut conn, "334 \r\n")?;
                    read_line(&mut conn)?.trim().to_string()
                }
            };
            let decoded = String::from_utf8_lossy(&b64_decode(&b64)).into_owned();
            let parts: Vec<&str> = decoded.split('\0').collect();
            login = Some(format!(
                "{}:{}",
                parts.get(1).unwrap_or(&""),
                parts.get(2).unwrap_or(&"")
            ));
            reply(&mut conn, "235 ok\r\n")?;
        } else if upper.starts_with("AUTH LOGIN") {
            reply(&mut conn, "334 VXNlcm5hbWU6\r\n")?;
            let user = b64_decode(read_line(&mut conn)?.trim());
            reply(&mut conn, "334 UGFzc3dvcmQ6\r\n")?;
            let pass = b64_decode(read_line(&mut conn)?.trim());
            login = Some(format!(
                "{}:{}",
                String::from_utf8_lossy(&user),
                String::from_utf8_lossy(&pass)
            ));
            reply(&mut conn, "235 ok\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_string();
            reply(&mut conn, "250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(cmd[8..].trim().to_string());
            reply(&mut conn, "250 ok\r\n")?;
        } else if upper == "DATA" {
            reply(&mut conn, "354 go\r\n")?;
            let mut data = String::new();
            loop {
                let l = read_line(&mut conn)?;
                if l.is_empty() || l == ".\r\n" {
                    break;
                }
                data.push_str(&l);
            }
            mails.lock().expect("lock").push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
                login: login.clone(),
                tls,
            });
            reply(&mut conn, "250 queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            reply(&mut conn, "221 bye\r\n")?;
            return Ok(());
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            reply(&mut conn, "250 ok\r\n")?;
        } else {
            reply(&mut conn, "502 unknown\r\n")?;
        }
    }
}

/// The body of a mail, decoded from quoted-printable or base64 if it is.
fn mail_body(data: &str) -> String {
    let (head, body) = data.split_once("\r\n\r\n").unwrap_or((data, ""));
    let head = head.to_ascii_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        String::from_utf8_lossy(&b64_decode(body)).into_owned()
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    } else {
        body.to_string()
    }
}

fn b64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A test CA (its PEM) and a server config for 127.0.0.1 / localhost signed by it.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pvescale test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (ca.pem(), Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// Helpers for the library-level tests.
// ---------------------------------------------------------------------------------------------

fn load(dir: &Path, toml: &str) -> config::Config {
    let path = dir.join("pvescale.toml");
    let text = format!(
        "[[cluster]]\nname = \"lab\"\nurl = \"https://pve.example.com\"\ntoken = \"{TOKEN_ID}\"\n\
         token_secret = \"x\"\n\n[select]\ntags = [\"autoscale\"]\n\n{toml}"
    );
    std::fs::write(&path, &text).expect("write config");
    match config::parse_str(&text, &path, &FakeEnv::new()) {
        Ok((c, _)) => c,
        Err(e) => panic!("config does not load:\n{e}\n{text}"),
    }
}

fn load_err(dir: &Path, toml: &str) -> String {
    let path = dir.join("pvescale.toml");
    let text = format!(
        "[[cluster]]\nname = \"lab\"\nurl = \"https://pve.example.com\"\ntoken = \"{TOKEN_ID}\"\n\
         token_secret = \"x\"\n\n[select]\ntags = [\"autoscale\"]\n\n{toml}"
    );
    match config::parse_str(&text, &path, &FakeEnv::new()) {
        Ok(_) => panic!("config should not load:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn resource(action: ActionKind) -> ResourceReport {
    ResourceReport {
        action,
        blocked_by: None,
        from: None,
        to: None,
        reason: "cpu 50% within 20%..80%: keep".to_string(),
        outcome: None,
        wait: None,
        window: None,
    }
}

fn vm(vmid: u32) -> VmReport {
    VmReport {
        cluster: "lab".to_string(),
        node: "pve1".to_string(),
        vmid,
        kind: pvescale::guest::GuestKind::Vm,
        name: format!("vm{vmid}"),
        status: "running".to_string(),
        vcpus: 2,
        max_vcpus: Some(8),
        memory_mib: 4096,
        cpu_percent: Some(50.0),
        memory_percent: Some(50.0),
        memory_source: MemorySourceShown::Guest,
        cpu_pressure_percent: None,
        memory_pressure_percent: None,
        readiness: "yes".to_string(),
        live_scaling: LiveScaling::Yes,
        cpu: resource(ActionKind::Keep),
        memory: resource(ActionKind::Keep),
        error: None,
        data_age_secs: Some(20),
        notes: Vec::new(),
        windows: Vec::new(),
        failed: false,
    }
}

fn scaled_vm(vmid: u32) -> VmReport {
    let mut v = vm(vmid);
    v.cpu = ResourceReport {
        action: ActionKind::Up,
        blocked_by: None,
        from: Some(2),
        to: Some(4),
        reason: "cpu 95% > 80% for 2m (needs 2m): 2 → 4 vCPUs".to_string(),
        outcome: Some(WriteOutcome::Applied),
        wait: None,
        window: None,
    };
    v
}

fn refused_vm(vmid: u32) -> VmReport {
    let mut v = vm(vmid);
    v.memory = ResourceReport {
        action: ActionKind::Down,
        blocked_by: None,
        from: Some(8192),
        to: Some(4096),
        reason: "memory 12% < 40% for 10m (needs 10m): 8192 → 4096 MiB".to_string(),
        outcome: Some(WriteOutcome::Refused(
            "unplugging DIMM dimm3 failed".to_string(),
        )),
        wait: None,
        window: None,
    };
    v.failed = true;
    v
}

fn blocked_vm(vmid: u32, figure: u32) -> VmReport {
    let mut v = vm(vmid);
    v.cpu = ResourceReport {
        action: ActionKind::Blocked,
        blocked_by: Some(BlockedBy::Limit),
        from: None,
        to: None,
        reason: format!(
            "cpu {figure}% > 80% for 5m (needs 2m), but already at max 8 vCPUs: blocked"
        ),
        outcome: None,
        wait: None,
        window: None,
    };
    v
}

fn failed_vm(vmid: u32) -> VmReport {
    let mut v = vm(vmid);
    v.error = Some("reading the VM's config failed: HTTP 500 internal error".to_string());
    v.failed = true;
    v
}

/// A run over cluster `lab` (these VMs) and cluster `other` (no VMs; failing if `other_down`).
fn report(dry_run: bool, vms: Vec<VmReport>, other_down: bool) -> RunReport {
    let mut lab = ClusterReport::new("lab");
    lab.vms = vms;
    let mut other = ClusterReport::new("other");
    if other_down {
        other.error = Some("authentication failed: 401 invalid token".to_string());
    }
    RunReport::new(dry_run, 1_000_000, vec![lab, other])
}

fn send(
    config: &config::Config,
    state: &mut Notifications,
    r: &RunReport,
    now: u64,
) -> NotifyReport {
    notify::after_run(config.notify(), state, r, now).expect("channels configured")
}

// ---------------------------------------------------------------------------------------------
// Content, batching, dedup, rate limit (library level).
// ---------------------------------------------------------------------------------------------

#[test]
fn each_event_kind_has_its_content_and_a_run_is_one_message_per_channel() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!(
            "[notify]\nmin_interval = \"1h\"\n\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{}\"\n\n\
             [[notify.webhook]]\nname = \"chat\"\nurl = \"{}\"\nformat = \"slack\"\n",
            rx.url("/hook"),
            rx.url("/chat")
        ),
    );
    let mut state = Notifications::default();
    let r = report(
        false,
        vec![
            scaled_vm(101),
            refused_vm(102),
            blocked_vm(103, 95),
            failed_vm(104),
        ],
        true,
    );
    let sent = send(&config, &mut state, &r, 1000);
    assert_eq!(sent.failed_channels(), 0, "{sent:?}");
    assert_eq!(sent.events, 5);
    let hook = rx.to("/hook");
    assert_eq!(hook.len(), 1, "one message for the whole run: {hook:?}");
    assert_eq!(rx.to("/chat").len(), 1, "and one per channel");
    assert_eq!(hook[0].method, "POST");
    assert_eq!(
        hook[0].headers.get("content-type").map(String::as_str),
        Some("application/json; charset=utf-8")
    );
    let doc = hook[0].json();
    assert_eq!(doc["source"], "pvescale");
    assert_eq!(
        doc["title"],
        "pvescale: 1 scaled, 1 refused, 1 blocked, 2 failed"
    );
    let events = doc["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["scaled", "refused", "blocked", "failed", "failed"]);
    // scaled: resource, from → to, reason.
    assert_eq!(events[0]["vmid"], 101);
    assert_eq!(events[0]["resource"], "cpu");
    assert_eq!(events[0]["from"], 2);
    assert_eq!(events[0]["to"], 4);
    let text = doc["text"].as_str().expect("text");
    for line in [
        "[scaled] lab/101 (vm101) on pve1: cpu 2 → 4 vCPUs (cpu 95% > 80% for 2m (needs 2m): 2 → 4 vCPUs)",
        "[refused] lab/102 (vm102) on pve1: memory 8192 → 4096 MiB was refused by the VM and reverted: unplugging DIMM dimm3 failed",
        "[blocked] lab/103 (vm103) on pve1: cpu cannot scale: cpu 95% > 80% for 5m (needs 2m), but already at max 8 vCPUs: blocked",
        "[failed] lab/104 (vm104) on pve1: reading the VM's config failed: HTTP 500 internal error",
        "[failed] cluster other: authentication failed: 401 invalid token",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let chat = rx.to("/chat")[0].json();
    let chat_text = chat["text"].as_str().expect("slack text");
    assert!(chat_text.starts_with("*pvescale: 1 scaled"), "{chat_text}");
    assert!(
        chat_text.contains("2 → 4 vCPUs") && chat_text.contains("&gt; 80%"),
        "{chat_text}"
    );

    // Recovered: the failures clear in the next run (and nothing else is new).
    let r = report(
        false,
        vec![vm(101), vm(102), blocked_vm(103, 97), vm(104)],
        false,
    );
    let sent = send(&config, &mut state, &r, 1060);
    assert_eq!(sent.events, 2, "{sent:?}");
    let doc = rx.to("/hook")[1].json();
    let text = doc["text"].as_str().expect("text");
    assert!(
        text.contains("[recovered] lab/104 (vm104): works again after failing for 1m (last error: reading the VM's config failed"),
        "{text}"
    );
    assert!(
        text.contains("[recovered] cluster other: works again after failing for 1m"),
        "{text}"
    );
    assert!(
        !text.contains("[blocked]"),
        "a blocked VM is told once: {text}"
    );
}

#[test]
fn dedup_and_min_interval_hold_across_runs_through_the_state_file() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!("[[notify.webhook]]\nurl = \"{}\"\n", rx.url("/h")),
    );
    let path = dir.path().join("state.json");
    let run = |r: &RunReport, now: u64| {
        let (mut state, _) = State::load(&path, 0);
        let sent = send(&config, &mut state.notifications, r, now);
        state.save(&path).expect("save");
        sent
    };
    assert_eq!(
        run(&report(false, vec![scaled_vm(101)], false), 0).events,
        1
    );
    // Next minute: VM 101 scaled again (within min_interval 1h), VM 102 scaled: only 102.
    let sent = run(
        &report(false, vec![scaled_vm(101), scaled_vm(102)], false),
        60,
    );
    assert_eq!((sent.events, sent.suppressed), (1, 1));
    let last = rx.requests().last().expect("a message").json();
    assert_eq!(last["events"][0]["vmid"], 102);
    // Nothing new: no message at all.
    run(&report(false, vec![vm(101)], false), 120);
    assert_eq!(rx.requests().len(), 2);
    // An hour after the first message about it, VM 101 may be told again.
    assert_eq!(
        run(&report(false, vec![scaled_vm(101)], false), 3600).events,
        1
    );
    assert_eq!(rx.requests().len(), 3);
    // The records are in the state file.
    let text = std::fs::read_to_string(&path).expect("state");
    assert!(text.contains("\"scaled lab/101\": 3600"), "{text}");
}

#[test]
fn the_hourly_cap_limits_messages_and_the_next_one_says_how_many_were_held_back() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!(
            "[notify]\nmin_interval = \"0s\"\nmax_per_hour = 2\n\n[[notify.webhook]]\nurl = \"{}\"\n",
            rx.url("/h")
        ),
    );
    let mut state = Notifications::default();
    let mut capped = Vec::new();
    for minute in 0..5u64 {
        let r = report(false, vec![scaled_vm(101)], false);
        capped.push(send(&config, &mut state, &r, minute * 60).capped);
    }
    assert_eq!(rx.requests().len(), 2, "at most 2 an hour");
    assert_eq!(capped, vec![0, 0, 1, 1, 1]);
    let sent = send(
        &config,
        &mut state,
        &report(false, vec![scaled_vm(102)], false),
        3600,
    );
    assert_eq!(sent.events, 1);
    let text = rx.requests()[2].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains(
            "3 earlier events were not sent: the hourly cap ([notify] max_per_hour) was reached."
        ),
        "{text}"
    );
}

#[test]
fn the_last_success_is_kept_per_channel_and_forgotten_with_the_channel() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let hook = |name: &str| {
        format!(
            "[[notify.webhook]]\nname = \"{name}\"\nurl = \"{}\"\n",
            rx.url("/h")
        )
    };
    let both = load(dir.path(), &format!("{}\n{}", hook("ops"), hook("chat")));
    let mut state = Notifications::default();
    let sent = send(
        &both,
        &mut state,
        &report(false, vec![scaled_vm(101)], false),
        100,
    );
    assert_eq!(sent.delivery.len(), 2);
    assert!(
        sent.delivery
            .iter()
            .all(|d| d.sent == 1 && d.last_success == Some(100))
    );
    // A quiet run keeps both; then "chat" leaves the config and is forgotten.
    let quiet = send(&both, &mut state, &report(false, vec![], false), 160);
    assert!(
        quiet
            .delivery
            .iter()
            .all(|d| d.sent == 0 && d.last_success == Some(100))
    );
    let one = load(dir.path(), &hook("ops"));
    send(&one, &mut state, &report(false, vec![], false), 220);
    assert_eq!(
        state.last_success.keys().collect::<Vec<_>>(),
        vec!["webhook:ops"]
    );
}

#[test]
fn a_dead_channel_is_retried_once_and_does_not_stop_the_others() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!(
            "[[notify.webhook]]\nname = \"dead\"\nurl = \"http://127.0.0.1:{}/x\"\n\n\
             [[notify.webhook]]\nname = \"alive\"\nurl = \"{}\"\n",
            dead_port(),
            rx.url("/h")
        ),
    );
    let mut state = Notifications::default();
    let sent = send(
        &config,
        &mut state,
        &report(false, vec![scaled_vm(101)], false),
        0,
    );
    assert_eq!(sent.failed_channels(), 1);
    let dead = &sent.channels[0];
    assert!(dead.channel.starts_with("webhook dead"), "{dead:?}");
    assert_eq!(dead.attempts, 2, "retried once");
    assert_eq!(sent.channels[1].error, None);
    assert_eq!(rx.requests().len(), 1);
    // A 4xx answer is not retried (it would not change); a 5xx is.
    rx.status.store(404, Ordering::SeqCst);
    let sent = send(
        &config,
        &mut state,
        &report(false, vec![scaled_vm(102)], false),
        60,
    );
    assert_eq!(sent.channels[1].attempts, 1);
    assert!(
        sent.channels[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("HTTP 404"),
        "{sent:?}"
    );
    rx.status.store(503, Ordering::SeqCst);
    let sent = send(
        &config,
        &mut state,
        &report(false, vec![scaled_vm(103)], false),
        120,
    );
    assert_eq!(sent.channels[1].attempts, 2);
}

#[test]
fn a_dry_run_sends_nothing_and_keeps_what_it_would_have_sent() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!("[[notify.webhook]]\nurl = \"{}\"\n", rx.url("/h")),
    );
    let mut planned = vm(101);
    planned.cpu = ResourceReport {
        action: ActionKind::Up,
        blocked_by: None,
        from: Some(2),
        to: Some(4),
        reason: "cpu 95% > 80% for 2m (needs 2m): 2 → 4 vCPUs".to_string(),
        outcome: None,
        wait: None,
        window: None,
    };
    let mut state = Notifications::default();
    let sent = send(&config, &mut state, &report(true, vec![planned], false), 0);
    assert!(rx.requests().is_empty(), "nothing sent");
    assert_eq!(sent.channels.len(), 1);
    assert_eq!(sent.channels[0].attempts, 0);
    assert_eq!(sent.channels[0].title, "pvescale (dry run): 1 scaled");
    assert!(
        sent.channels[0].text.contains("[scaled] lab/101"),
        "{sent:?}"
    );
    assert!(
        sent.channels[0]
            .text
            .contains("Dry run: nothing was changed.")
    );
}

#[test]
fn gotify_ntfy_and_discord_get_their_own_shapes() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("gotify.token"), "AbCdEf-gotify-token\n").expect("token");
    let config = load(
        dir.path(),
        &format!(
            "[notify.gotify]\nurl = \"{}\"\ntoken_file = \"gotify.token\"\npriority = {{ failed = 9 }}\n\n\
             [[notify.webhook]]\nname = \"ntfy\"\nurl = \"{}\"\nformat = \"ntfy\"\n\
             headers = {{ Authorization = \"Bearer tk_ntfy_secret\" }}\n\n\
             [[notify.webhook]]\nname = \"discord\"\nurl = \"{}\"\nformat = \"discord\"\n\
             events = [\"failed\"]\n",
            rx.url("/gotify/"),
            rx.url("/ntfy/pvescale-alerts"),
            rx.url("/api/webhooks/1/SECRET"),
        ),
    );
    let mut state = Notifications::default();
    let mut many = vec![failed_vm(100)];
    many.extend((101..=180).map(scaled_vm));
    let sent = send(&config, &mut state, &report(false, many, false), 0);
    assert_eq!(sent.failed_channels(), 0, "{sent:?}");

    let gotify = rx.to("/gotify/message");
    assert_eq!(gotify.len(), 1);
    assert_eq!(
        gotify[0].headers.get("x-gotify-key").map(String::as_str),
        Some("AbCdEf-gotify-token")
    );
    let g = gotify[0].json();
    assert_eq!(g["priority"], 9, "the most urgent event's priority");
    assert_eq!(g["title"], "pvescale: 80 scaled, 1 failed");
    assert!(
        g["message"]
            .as_str()
            .unwrap_or_default()
            .contains("... and 31 more")
    );

    let ntfy = rx.to("/ntfy/");
    assert_eq!(
        ntfy.len(),
        1,
        "JSON goes to the server's root: {:?}",
        rx.requests()
    );
    let n = ntfy[0].json();
    assert_eq!(n["topic"], "pvescale-alerts");
    assert_eq!(n["priority"], 4);
    assert_eq!(
        ntfy[0].headers.get("authorization").map(String::as_str),
        Some("Bearer tk_ntfy_secret")
    );

    let discord = rx.to("/api/webhooks/1/SECRET");
    assert_eq!(discord.len(), 1);
    let d = discord[0].json();
    let content = d["content"].as_str().expect("content");
    assert!(
        content.starts_with("**pvescale: 1 failed**"),
        "only its events: {content}"
    );
    assert!(content.chars().count() <= 2000);
    assert_eq!(d["allowed_mentions"]["parse"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------------
// Email.
// ---------------------------------------------------------------------------------------------

fn email_config(
    dir: &Path,
    port: u16,
    security: &str,
    ca: Option<&str>,
    login: bool,
) -> config::Config {
    let mut toml = format!(
        "[notify.email]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"{security}\"\n\
         from = \"pvescale <pvescale@example.com>\"\nto = [\"ops@example.com\", \"Oncall <oncall@example.com>\"]\n"
    );
    if let Some(pem) = ca {
        std::fs::write(dir.join("ca.pem"), pem).expect("ca");
        toml.push_str("ca_file = \"ca.pem\"\n");
    }
    if login {
        std::fs::write(dir.join("smtp.password"), "p@ss-W0rd-smtp\n").expect("password");
        toml.push_str("user = \"pvescale\"\npassword_file = \"smtp.password\"\n");
    }
    load(dir, &toml)
}

#[test]
fn email_over_starttls_with_a_login_trusts_the_configured_ca() {
    let (ca, server_config) = test_pki();
    let smtp = SmtpServer::start(SmtpMode::StartTls(server_config));
    let dir = tempfile::tempdir().expect("dir");
    let config = email_config(dir.path(), smtp.port, "starttls", Some(&ca), true);
    let mut state = Notifications::default();
    let sent = send(
        &config,
        &mut state,
        &report(false, vec![scaled_vm(101), failed_vm(102)], false),
        0,
    );
    assert_eq!(sent.failed_channels(), 0, "{sent:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "one mail for the run");
    let mail = &mails[0];
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.login.as_deref(), Some("pvescale:p@ss-W0rd-smtp"));
    assert!(
        mail.from.starts_with("<pvescale@example.com>"),
        "{}",
        mail.from
    );
    assert_eq!(mail.to, ["<ops@example.com>", "<oncall@example.com>"]);
    assert!(
        mail.data.contains("Subject: pvescale: 1 scaled, 1 failed"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Content-Type: text/plain"),
        "{}",
        mail.data
    );
    let body = mail_body(&mail.data);
    assert!(
        body.contains("[failed] lab/102 (vm102) on pve1: reading"),
        "{body}"
    );
    assert!(
        body.contains("[scaled] lab/101 (vm101) on pve1: cpu 2 → 4 vCPUs"),
        "{body}"
    );
    assert!(!mail.data.contains("p@ss-W0rd-smtp") && !body.contains("p@ss-W0rd-smtp"));
}

#[test]
fn email_over_implicit_tls() {
    let (ca, server_config) = test_pki();
    let smtp = SmtpServer::start(SmtpMode::Implicit(server_config));
    let dir = tempfile::tempdir().expect("dir");
    let config = email_config(dir.path(), smtp.port, "tls", Some(&ca), false);
    let results = notify::send_test(config.notify(), 0);
    assert_eq!(results[0].error, None, "{results:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls && mails[0].login.is_none());
    assert!(mails[0].data.contains("Subject: pvescale: test message"));
}

#[test]
fn email_refuses_a_certificate_it_does_not_trust_and_never_shows_the_password() {
    let (_, server_config) = test_pki();
    let smtp = SmtpServer::start(SmtpMode::StartTls(server_config));
    let dir = tempfile::tempdir().expect("dir");
    // No ca_file: the system roots do not know the test CA.
    let config = email_config(dir.path(), smtp.port, "starttls", None, true);
    let results = notify::send_test(config.notify(), 0);
    let error = results[0].error.clone().expect("refused");
    assert!(!error.contains("p@ss-W0rd-smtp"), "{error}");
    assert!(smtp.mails().is_empty(), "no mail without trusted TLS");
    assert!(!format!("{config:?}").contains("p@ss-W0rd-smtp"));
}

#[test]
fn email_to_a_plain_local_relay() {
    let smtp = SmtpServer::start(SmtpMode::Plain);
    let dir = tempfile::tempdir().expect("dir");
    let config = email_config(dir.path(), smtp.port, "none", None, false);
    let results = notify::send_test(config.notify(), 0);
    assert_eq!(results[0].error, None, "{results:?}");
    assert!(!smtp.mails()[0].tls);
}

// ---------------------------------------------------------------------------------------------
// Config validation.
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_urls_addresses_and_names_are_refused_at_load() {
    let dir = tempfile::tempdir().expect("dir");
    let err = load_err(
        dir.path(),
        "[notify]\nevents = [\"scaled\", \"exploded\"]\nmax_per_hour = 0\n\n\
         [notify.email]\nhost = \"smtp://x\"\nfrom = \"not an address\"\nto = [\"a@b\", \"@@\"]\n\
         security = \"ssl\"\n\n\
         [notify.gotify]\nurl = \"gotify.example.com\"\ntoken = \"t\"\n\n\
         [[notify.webhook]]\nurl = \"ftp://hooks.example.com/SECRETPART\"\n\n\
         [[notify.webhook]]\nurl = \"https://ntfy.sh\"\nformat = \"ntfy\"\n\n\
         [[notify.webhook]]\nurl = \"https://x.example.com\"\nformat = \"teams\"\n\
         headers = { \"Bad Header\" = \"v\" }\n",
    );
    for expected in [
        "notify.events[1]: unknown event \"exploded\"",
        "notify.max_per_hour: must be at least 1",
        "notify.email.host: must be the SMTP server's host name",
        "notify.email.from: \"not an address\" is not an email address",
        "notify.email.to[1]: \"@@\" is not an email address",
        "notify.email.security: \"ssl\" is not one of",
        "notify.gotify.url: must be an http:// or https:// URL",
        "notify.webhook[0].url: must be an http:// or https:// URL (value not shown)",
        "notify.webhook[1].url: with format = \"ntfy\" the URL names the topic",
        "notify.webhook[2].format: \"teams\" is not one of",
        "notify.webhook[2].headers.\"Bad Header\": is not a valid HTTP header name",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        !err.contains("SECRETPART"),
        "a webhook URL is never quoted:\n{err}"
    );
}

#[test]
fn secrets_come_from_files_env_or_credentials_and_a_login_needs_tls_off_this_machine() {
    let dir = tempfile::tempdir().expect("dir");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).expect("dir");
    std::fs::write(creds.join("smtp.password"), "from-credential\n").expect("cred");
    let path = dir.path().join("pvescale.toml");
    let text = format!(
        "[[cluster]]\nname = \"lab\"\nurl = \"https://pve.example.com\"\ntoken = \"{TOKEN_ID}\"\n\
         token_secret = \"x\"\n\n[select]\ntags = [\"a\"]\n\n\
         [notify.email]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\nto = \"b@example.com\"\n\
         user = \"u\"\n\n[notify.gotify]\nurl = \"https://gotify.example.com\"\n"
    );
    let env = FakeEnv::new()
        .var("CREDENTIALS_DIRECTORY", creds.as_os_str())
        .var("PVESCALE_GOTIFY_TOKEN", "from-env");
    let (c, _) = config::parse_str(&text, &path, &env).expect("loads");
    let email = c.notify().email.as_ref().expect("email");
    assert_eq!(
        email.login.as_ref().map(|l| l.password.expose()),
        Some("from-credential")
    );
    assert_eq!(email.port, 587);
    let gotify = c.notify().gotify.as_ref().expect("gotify");
    assert_eq!(gotify.token.expose(), "from-env");
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("from-credential") && !debug.contains("from-env"),
        "{debug}"
    );

    let err = load_err(
        dir.path(),
        "[notify.email]\nhost = \"smtp.example.com\"\nsecurity = \"none\"\nfrom = \"a@example.com\"\n\
         to = \"b@example.com\"\nuser = \"u\"\npassword = \"pw-inline\"\n",
    );
    assert!(
        err.contains("would send the password in clear text"),
        "{err}"
    );
    assert!(!err.contains("pw-inline"), "{err}");
    let err = load_err(
        dir.path(),
        "[notify.gotify]\nurl = \"https://gotify.example.com\"\n",
    );
    assert!(
        err.contains("no Gotify application token for [notify.gotify]"),
        "{err}"
    );
    assert!(err.contains("PVESCALE_GOTIFY_TOKEN (not set)"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// End to end: the real binary against the simulated cluster.
// ---------------------------------------------------------------------------------------------

fn hook_toml(rx: &Receiver) -> String {
    format!(
        "[notify]\nmin_interval = \"1h\"\n\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{}\"\n",
        rx.url("/hook")
    )
}

fn texts(rx: &Receiver) -> Vec<String> {
    rx.to("/hook")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn e2e_a_scale_up_is_told_once_and_a_dry_run_only_shows_it() {
    let rx = Receiver::start();
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1").cpu_load(busy_from_start(1.95))),
        &format!(
            "[policy.cpu]\nup_after = \"1m\"\n\n[policy.memory]\nenabled = false\n\n{}",
            hook_toml(&rx)
        ),
    );
    // First run starts the breach.
    let first = env.run(&["run"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    minute(&env);
    // A dry run now would scale: it prints the message and sends nothing.
    let dry = env.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all_output());
    assert!(rx.requests().is_empty(), "a dry run sends nothing");
    assert!(
        dry.stdout
            .contains("notifications (dry run, nothing was sent):")
            && dry.stdout.contains("to webhook hook (http://127.0.0.1:")
            && dry.stdout.contains("pvescale (dry run): 1 scaled")
            && dry
                .stdout
                .contains("[scaled] lab/101 (vm101) on pve1: cpu 2 →"),
        "{}",
        dry.stdout
    );
    let json = env.run(&["run", "--dry-run", "--output", "json"]).json();
    assert_eq!(json["notifications"]["channels"][0]["attempts"], 0);
    assert!(rx.requests().is_empty());

    let run = env.run(&["run"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(env.vcpus(101) > 2, "scaled:\n{}", run.stdout);
    let sent = texts(&rx);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("[scaled] lab/101 (vm101) on pve1: cpu 2 →"),
        "{}",
        sent[0]
    );
    assert!(
        run.stdout
            .contains("notifications: 1 events, sent via webhook hook"),
        "{}",
        run.stdout
    );
    // More changes within min_interval: no more messages about VM 101.
    for _ in 0..5 {
        assert_eq!(run_in_a_minute(&env).code, 0);
    }
    assert_eq!(texts(&rx).len(), 1, "{:?}", texts(&rx));
}

#[test]
fn e2e_a_refused_unplug_is_told() {
    let rx = Receiver::start();
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .memory_mib(8192)
            .mem_load(Pattern::Constant(1000.0))
            .refuse_mem_unplug(0)),
        &format!(
            "[policy.cpu]\nenabled = false\n\n[policy.memory]\ndown_after = \"2m\"\ncooldown_down = \"1m\"\n\n{}",
            hook_toml(&rx)
        ),
    );
    let mut refused = false;
    for _ in 0..6 {
        let run = run_in_a_minute(&env);
        if run.stdout.contains("refused") {
            refused = true;
            break;
        }
    }
    assert!(refused, "a scale-down was refused");
    let sent = texts(&rx);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("[refused] lab/101 (vm101) on pve1: memory 8192 →")
            && sent[0].contains("was refused by the VM and reverted"),
        "{}",
        sent[0]
    );
    // Backed off afterwards: blocked by the back-off is not told again.
    env.run_every_minute(5);
    assert_eq!(texts(&rx).len(), 1, "{:?}", texts(&rx));
}

#[test]
fn e2e_an_auth_failure_is_told_once_and_its_recovery_too() {
    let rx = Receiver::start();
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")),
        &format!(
            "[policy.cpu]\nenabled = false\n\n[policy.memory]\nenabled = false\n\n{}",
            hook_toml(&rx)
        ),
    );
    assert_eq!(env.run(&["run"]).code, 0);
    assert!(rx.requests().is_empty(), "nothing to tell");
    env.sim.remove_token(TOKEN_ID);
    for _ in 0..3 {
        let run = run_in_a_minute(&env);
        assert_ne!(run.code, 0);
    }
    let sent = texts(&rx);
    assert_eq!(sent.len(), 1, "told once: {sent:?}");
    assert!(sent[0].contains("[failed] cluster lab: "), "{}", sent[0]);
    assert!(!sent[0].contains(TOKEN_SECRET));
    env.sim.set_token(TOKEN_ID, TOKEN_SECRET, Privs::pvescale());
    assert_eq!(run_in_a_minute(&env).code, 0);
    let sent = texts(&rx);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].contains("[recovered] cluster lab: works again after failing for 3m"),
        "{}",
        sent[1]
    );
}

#[test]
fn e2e_a_dead_channel_never_fails_the_run_and_no_secret_shows_anywhere() {
    let rx = Receiver::start();
    let dead = dead_port();
    let smtp = SmtpServer::start(SmtpMode::Plain);
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1").cpu_load(busy_from_start(1.95))),
        "",
    );
    write_private(&env.path("smtp.password"), "Smtp-Pa55word-xyz\n");
    write_private(
        &env.path("slack.url"),
        &format!("http://127.0.0.1:{dead}/services/T0/B0/SlackPathSecret\n"),
    );
    env.write_config(&format!(
        "[policy.cpu]\nup_after = \"1m\"\n\n\
         [notify.email]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         from = \"pvescale@example.com\"\nto = \"ops@example.com\"\nuser = \"pvescale\"\n\
         password_file = \"{}\"\n\n\
         [notify.gotify]\nurl = \"http://127.0.0.1:{dead}\"\ntoken = \"Gotify-Token-Secret-1\"\n\n\
         [[notify.webhook]]\nname = \"slack\"\nurl_file = \"{}\"\nformat = \"slack\"\n\n\
         [[notify.webhook]]\nname = \"hook\"\nurl = \"{}\"\n\
         headers = {{ Authorization = \"Bearer Header-Secret-42\" }}\n",
        smtp.port,
        env.path("smtp.password").display(),
        env.path("slack.url").display(),
        rx.url("/hook"),
    ));
    let secrets = [
        "Smtp-Pa55word-xyz",
        "Gotify-Token-Secret-1",
        "SlackPathSecret",
        "Header-Secret-42",
        TOKEN_SECRET,
    ];
    let mut outputs = Vec::new();
    let first = env.run_with_env(&["run", "-vv"], &[]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    outputs.push(first.all_output());
    minute(&env);
    let run = env.run_with_env(&["run", "-vv"], &[]);
    assert_eq!(
        run.code,
        0,
        "dead channels do not fail the run:\n{}",
        run.all_output()
    );
    assert!(env.vcpus(101) > 2);
    assert!(
        run.stdout.contains("2 notification channels failed"),
        "counted in the summary:\n{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("notification via gotify http://127.0.0.1:")
            && run.stderr.contains("failed (2 attempts)"),
        "logged:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("webhook slack (http://127.0.0.1:"),
        "{}",
        run.stderr
    );
    outputs.push(run.all_output());
    let json = env.run(&["run", "--output", "json"]);
    outputs.push(json.all_output());
    assert_eq!(rx.to("/hook").len(), 1, "the live webhook got the message");
    assert_eq!(smtp.mails().len(), 1, "and the mail went out");
    assert_eq!(
        smtp.mails()[0].login.as_deref(),
        Some("pvescale:Smtp-Pa55word-xyz")
    );
    let check = env.run(&["check", "--notify-test"]);
    assert_eq!(check.code, 1, "{}", check.all_output());
    outputs.push(check.all_output());
    let bad = {
        env.write_config(&format!(
            "[notify.email]\nhost = \"smtp.example.com\"\nsecurity = \"none\"\n\
             from = \"pvescale@example.com\"\nto = \"ops@example.com\"\nuser = \"pvescale\"\n\
             password_file = \"{}\"\n",
            env.path("smtp.password").display()
        ));
        env.run(&["run"])
    };
    assert_eq!(bad.code, 78, "{}", bad.all_output());
    outputs.push(bad.all_output());
    let mut messages: Vec<String> = rx.requests().iter().map(|r| r.body.clone()).collect();
    messages.extend(smtp.mails().iter().map(|m| m.data.clone()));
    for secret in secrets {
        for out in &outputs {
            assert!(!out.contains(secret), "{secret} in output:\n{out}");
        }
        for m in &messages {
            assert!(!m.contains(secret), "{secret} in a message:\n{m}");
        }
    }
}

#[test]
fn e2e_check_notify_test_sends_a_test_message_on_every_channel() {
    let rx = Receiver::start();
    let (ca, server_config) = test_pki();
    let smtp = SmtpServer::start(SmtpMode::StartTls(server_config));
    let env = TestEnv::start(cluster().vm(ready_vm(101, "pve1")), "");
    std::fs::write(env.path("ca.pem"), ca).expect("ca");
    env.write_config(&format!(
        "[notify]\nevents = [\"failed\"]\n\n\
         [notify.email]\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"{}\"\n\
         from = \"pvescale@example.com\"\nto = \"ops@example.com\"\n\n\
         [notify.gotify]\nurl = \"{}\"\ntoken = \"tok-123456\"\n\n\
         [[notify.webhook]]\nurl = \"{}\"\n",
        smtp.port,
        env.path("ca.pem").display(),
        rx.url(""),
        rx.url("/hook"),
    ));
    let check = env.run(&["check", "--notify-test"]);
    assert_eq!(check.code, 0, "{}", check.all_output());
    assert!(
        check
            .stdout
            .contains("result: every notification channel works"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("email 127.0.0.1:"),
        "{}",
        check.stdout
    );
    assert_eq!(smtp.mails().len(), 1);
    assert!(smtp.mails()[0].tls, "STARTTLS is the default");
    assert_eq!(rx.to("/message").len(), 1);
    let hook = rx.to("/hook");
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].json()["test"], true);
    assert!(env.sim.requests().is_empty(), "the test touches no cluster");
    // Nothing to send to: exit 1 with a hint.
    env.write_config("");
    let none = env.run(&["check", "--notify-test"]);
    assert_eq!(none.code, 1);
    assert!(
        none.stdout.contains("no channel is configured"),
        "{}",
        none.stdout
    );
}

#[test]
fn old_state_files_without_the_new_records_still_load() {
    let dir = tempfile::tempdir().expect("dir");
    let path: PathBuf = dir.path().join("state.json");
    std::fs::write(
        &path,
        r#"{"version": 1, "clusters": {}, "notifications": {"last_sent": {"scaled lab/101": 5}}}"#,
    )
    .expect("write");
    let (state, warnings) = State::load(&path, 0);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        state.notifications.last_sent.get("scaled lab/101"),
        Some(&5)
    );
    assert!(state.notifications.conditions.is_empty());
}

#[test]
fn a_channel_that_is_off_needs_no_secret_and_gets_nothing() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    let config = load(
        dir.path(),
        &format!(
            "[notify.gotify]\nenabled = false\nurl = \"{}\"\n\n\
             [notify.email]\nenabled = false\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\n\
             to = \"b@example.com\"\nuser = \"u\"\npassword_file = \"/nonexistent/smtp.password\"\n\n\
             [[notify.webhook]]\nurl = \"{}\"\n\n\
             [[notify.webhook]]\nenabled = false\nurl = \"{}\"\n",
            rx.url("/gotify"),
            rx.url("/on"),
            rx.url("/off"),
        ),
    );
    assert!(config.notify().gotify.is_none() && config.notify().email.is_none());
    assert_eq!(config.notify().webhooks.len(), 1);
    let mut state = Notifications::default();
    send(
        &config,
        &mut state,
        &report(false, vec![scaled_vm(101)], false),
        0,
    );
    let paths: Vec<String> = rx.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/on"]);
    // Off, but still checked: a bad URL is an error all the same.
    let err = load_err(
        dir.path(),
        "[notify.gotify]\nenabled = false\nurl = \"nope\"\n",
    );
    assert!(err.contains("notify.gotify.url"), "{err}");
}

#[test]
fn the_readme_examples_load() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let start = readme
        .find("## Notifications")
        .expect("a Notifications section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(
        blocks.len() >= 2,
        "TOML examples in the section: {}",
        blocks.len()
    );
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path().display().to_string();
    for (name, content) in [
        ("smtp.password", "example-password\n"),
        ("gotify.token", "example-token\n"),
        (
            "slack.url",
            "https://hooks.slack.com/services/T0/B0/example\n",
        ),
        (
            "discord.url",
            "https://discord.com/api/webhooks/1/example\n",
        ),
    ] {
        std::fs::write(dir.path().join(name), content).expect("write");
    }
    let toml = blocks.concat().replace("/etc/pvescale/", &format!("{d}/"));
    let config = load(dir.path(), &toml);
    let n = config.notify();
    assert!(n.email.is_some() && n.gotify.is_some());
    let names: Vec<&str> = n.webhooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["ntfy", "slack", "discord", "alertmanager-bridge"]);
}
