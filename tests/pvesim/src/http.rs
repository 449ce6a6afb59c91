//! A small blocking HTTP/1.1 server over rustls: one thread per connection, keep-alive,
//! Content-Length bodies only.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) struct Request {
    pub method: String,
    pub target: String,
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub conn: u64,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Response {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
    pub close: bool,
}

pub(crate) enum Reply {
    Send(Response),
    /// Stay silent this long, then close.
    Hang(Duration),
    /// Close without answering.
    Close,
}

pub(crate) type Handler = dyn Fn(Request) -> Reply + Send + Sync;

pub(crate) struct Server {
    pub addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

/// Sleeps up to `d`, returning early once `flag` is set.
pub(crate) fn sleep_unless(flag: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !flag.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

impl Server {
    pub fn start(
        tls: Arc<rustls::ServerConfig>,
        handler: Arc<Handler>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::new(Mutex::new(HashMap::new()));
        let next_id = Arc::new(AtomicU64::new(1));
        let (sd, cs) = (shutdown.clone(), conns.clone());
        let accept = std::thread::Builder::new()
            .name("pvesim-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if sd.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    if let Ok(clone) = stream.try_clone() {
                        cs.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, clone);
                    }
                    let (tls, handler, sd2, cs2) =
                        (tls.clone(), handler.clone(), sd.clone(), cs.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("pvesim-conn-{id}"))
                        .spawn(move || {
                            serve_conn(stream, tls, &*handler, &sd2, id);
                            cs2.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        });
                    if spawned.is_err() {
                        cs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    }
                }
            })?;
        Ok(Server {
            addr,
            shutdown,
            conns,
            accept: Some(accept),
        })
    }

    pub fn stop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for (_, s) in self.conns.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn write_response(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    resp: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason: String = resp
        .reason
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .take(256)
        .collect();
    let head = format!(
        "HTTP/1.1 {} {}\r\nCache-Control: max-age=0\r\nConnection: {}\r\nPragma: no-cache\r\nServer: pve-api-daemon/3.0\r\nContent-Length: {}\r\nContent-Type: application/json;charset=UTF-8\r\n\r\n",
        resp.status,
        reason,
        if keep_alive { "Keep-Alive" } else { "close" },
        resp.body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(&resp.body)?;
    tls.flush()
}

fn simple(status: u16, reason: &str) -> Response {
    Response {
        status,
        reason: reason.to_string(),
        body: Vec::new(),
        close: true,
    }
}

enum Parsed {
    Ok {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        http10: bool,
    },
    Bad(Response),
}

fn parse_head(head: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad(simple(400, "Bad Request"));
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || target.is_empty()
        || !target.starts_with('/')
    {
        return Parsed::Bad(simple(400, "Bad Request"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Parsed::Bad(simple(505, "HTTP Version Not Supported")),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad(simple(400, "Bad Request"));
        };
        if name.is_empty() || name.contains(' ') || name.contains('\t') {
            return Parsed::Bad(simple(400, "Bad Request"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Parsed::Ok {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        http10,
    }
}

fn serve_conn(
    tcp: TcpStream,
    tls_cfg: Arc<rustls::ServerConfig>,
    handler: &Handler,
    shutdown: &AtomicBool,
    id: u64,
) {
    let Ok(conn) = ServerConnection::new(tls_cfg) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return;
        }
        // Head.
        let head_end = loop {
            if let Some(p) = find_head_end(&buf) {
                break p;
            }
            if buf.len() > MAX_HEAD {
                let _ = write_response(
                    &mut tls,
                    &simple(431, "Request Header Fields Too Large"),
                    false,
                );
                return;
            }
            match tls.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        };
        let head: Vec<u8> = buf.drain(..head_end + 4).collect();
        let (method, target, headers, http10) = match parse_head(&head[..head.len() - 4]) {
            Parsed::Ok {
                method,
                target,
                headers,
                http10,
            } => (method, target, headers, http10),
            Parsed::Bad(resp) => {
                let _ = write_response(&mut tls, &resp, false);
                return;
            }
        };
        let hdr = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        if hdr("transfer-encoding").is_some() {
            let _ = write_response(
                &mut tls,
                &simple(501, "chunked transfer encoding not supported"),
                false,
            );
            return;
        }
        let len = match hdr("content-length") {
            None => 0,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) => n,
                Err(_) => {
                    let _ = write_response(&mut tls, &simple(400, "Bad Request"), false);
                    return;
                }
            },
        };
        if len > MAX_BODY {
            let _ = write_response(&mut tls, &simple(413, "Request Entity Too Large"), false);
            return;
        }
        while buf.len() < len {
            match tls.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let conn_hdr = hdr("connection").unwrap_or_default();
        let keep_alive = if http10 {
            conn_hdr.contains("keep-alive")
        } else {
            !conn_hdr.contains("close")
        };
        let req = Request {
            method,
            target,
            headers,
            body,
            conn: id,
        };
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(req)))
            .unwrap_or_else(|_| Reply::Send(simple(500, "pvesim internal error")));
        match reply {
            Reply::Send(resp) => {
                let keep = keep_alive && !resp.close;
                if write_response(&mut tls, &resp, keep).is_err() || !keep {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    return;
                }
            }
            Reply::Hang(d) => {
                sleep_unless(shutdown, d);
                let _ = tls.sock.shutdown(Shutdown::Both);
                return;
            }
            Reply::Close => {
                let _ = tls.sock.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Percent-decoding; `plus` turns `+` into a space (forms and query strings).
pub(crate) fn percent_decode(s: &str, plus: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|c| hex(*c)),
                    b.get(i + 2).and_then(|c| hex(*c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => return Err(format!("invalid percent-encoding in '{s}'")),
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "invalid UTF-8 in parameter".to_string())
}

/// `a=1&b=2` into pairs (empty pieces skipped).
pub(crate) fn parse_form(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for piece in s.split('&') {
        if piece.is_empty() {
            continue;
        }
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        out.push((percent_decode(k, true)?, percent_decode(v, true)?));
    }
    Ok(out)
}
