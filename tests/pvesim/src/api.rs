//! The API: state, authentication, routing and the endpoint handlers.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::config::{self, PType, Update};
use crate::fault::{Fault, FaultKind};
use crate::http::{Reply, Request, Response, parse_form, percent_decode, sleep_unless};
use crate::metrics::{self, Noise};
use crate::model::{self, Kind, Node, Privs, Version, Vm, VmStatus};
use crate::{AuthKind, Recorded};

#[path = "lxc.rs"]
mod lxc;

pub(crate) struct User {
    pub password: String,
    pub privs: Privs,
    pub tfa: bool,
}

pub(crate) struct Ticket {
    pub user: String,
    pub created: i64,
    pub csrf: String,
    pub tfa_pending: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TaskState {
    Running,
    Stopped(String),
}

pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub vmid: u32,
    pub user: String,
    pub starttime: i64,
    pub pid: u32,
    pub pstart: u32,
    /// When the work is done (None: never).
    pub due: Option<Instant>,
    pub update: Option<Update>,
    /// After the work: when the task reports stopped (a refused unplug takes a while).
    pub finish: Option<(Instant, String)>,
    pub state: TaskState,
    pub log: Vec<String>,
    /// Ends with `WARNINGS: n` instead of `OK`.
    pub warnings: Option<u32>,
    /// The digest the write was sent with; the worker checks it again under the lock.
    pub digest: Option<String>,
    /// Someone else's edit that lands before the worker runs (a fault).
    pub edit_first: Option<(String, String)>,
}

pub(crate) struct World {
    pub version: Version,
    pub start: i64,
    pub offset: i64,
    pub nodes: Vec<Node>,
    pub vms: BTreeMap<u32, Vm>,
    pub tokens: HashMap<String, (String, Privs)>,
    pub users: HashMap<String, User>,
    pub tickets: HashMap<String, Ticket>,
    pub tasks: BTreeMap<String, Task>,
    pub task_seq: u32,
    pub noise: Noise,
    pub cluster_name: String,
    /// corosync quorum (`cluster/status`, HA `quorum`).
    pub quorate: bool,
    /// The HA manager's status file: master node and its last timestamp (None: HA never used).
    pub ha_master: Option<(String, i64)>,
}

impl World {
    pub fn now(&self) -> i64 {
        self.start + self.offset
    }

    /// Runs the tasks whose time has come.
    pub fn process_tasks(&mut self, refusal_delay: Duration) {
        let now_i = Instant::now();
        let now = self.now();
        let due: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                t.state == TaskState::Running
                    && (t.due.is_some_and(|d| d <= now_i)
                        || t.finish.as_ref().is_some_and(|(f, _)| *f <= now_i))
            })
            .map(|t| t.upid.clone())
            .collect();
        for upid in due {
            let Some(task) = self.tasks.get_mut(&upid) else {
                continue;
            };
            if let Some((f, exit)) = &task.finish {
                if *f <= now_i {
                    task.log.push(if exit == "OK" {
                        "TASK OK".to_string()
                    } else {
                        format!("TASK ERROR: {exit}")
                    });
                    task.state = TaskState::Stopped(exit.clone());
                    task.finish = None;
                }
                continue;
            }
            task.due = None;
            let upd = task.update.take().unwrap_or_default();
            let exit;
            let mut refused = false;
            let version = self.version;
            let host_bits = self
                .nodes
                .iter()
                .find(|n| n.name == task.node)
                .map_or(46, |n| n.phys_bits);
            match self.vms.get_mut(&task.vmid) {
                Some(vm) if vm.node == task.node && vm.kind == Kind::Qemu => {
                    if let Some((key, value)) = task.edit_first.take() {
                        vm.conf.insert(key, value);
                        vm.touch(now);
                    }
                    // qemu-server update_vm_api: the worker loads the config under its lock
                    // and checks the digest again before anything is written.
                    if task
                        .digest
                        .as_ref()
                        .is_some_and(|d| !d.is_empty() && *d != vm.digest)
                    {
                        let text = digest_conflict(version);
                        task.log.push(format!("TASK ERROR: {text}"));
                        task.state = TaskState::Stopped(text);
                        continue;
                    }
                    let out = config::run_update(vm, &upd, now, host_bits);
                    task.log.extend(out.log.iter().cloned());
                    refused = out.refused;
                    exit = match (out.task_error(), task.warnings) {
                        (Some(e), _) => e,
                        (None, Some(n)) => {
                            for i in 0..n {
                                task.log.push(format!("WARN: simulated warning {}", i + 1));
                            }
                            format!("WARNINGS: {n}")
                        }
                        (None, None) => "OK".to_string(),
                    };
                }
                _ => {
                    exit = format!(
                        "Configuration file 'nodes/{}/qemu-server/{}.conf' does not exist",
                        task.node, task.vmid
                    );
                }
            }
            let delay = if refused {
                refusal_delay
            } else {
                Duration::ZERO
            };
            if delay.is_zero() {
                task.log.push(if exit == "OK" {
                    "TASK OK".to_string()
                } else {
                    format!("TASK ERROR: {exit}")
                });
                task.state = TaskState::Stopped(exit);
            } else {
                task.finish = Some((now_i + delay, exit));
            }
        }
    }

    fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// qemu-server's answer to a write whose digest is not the config's (API2/Qemu.pm,
/// update_vm_api): spelled "missmatch" until the typo fix of October 2024 (qemu-server 8.2.5,
/// first shipped with PVE 8.3).
pub(crate) fn digest_conflict(v: Version) -> String {
    let word = if v.at_least(8, 3) {
        "mismatch"
    } else {
        "missmatch"
    };
    format!("checksum {word} (file change by other user?)")
}

pub(crate) struct FaultSlot {
    pub fault: Fault,
    pub seen: u32,
    pub used: u32,
}

pub(crate) struct Shared {
    pub world: Mutex<World>,
    pub log: Mutex<Vec<Recorded>>,
    pub faults: Mutex<Vec<FaultSlot>>,
    pub seq: AtomicU64,
    pub latency: Duration,
    pub auth_delay: Duration,
    pub task_duration: Duration,
    pub refusal_delay: Duration,
    pub proxy_timeout: Duration,
    pub shutdown: Arc<AtomicBool>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------------------------
// Errors and answers

#[derive(Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
    pub empty_body: bool,
}

impl ApiError {
    fn new(code: u16, msg: impl Into<String>) -> Self {
        let mut message: String = msg.into();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        ApiError {
            code,
            message,
            errors: None,
            empty_body: false,
        }
    }
    fn param(errors: BTreeMap<String, String>) -> Self {
        ApiError {
            errors: Some(errors),
            ..ApiError::new(400, "Parameter verification failed.")
        }
    }
    fn param1(key: &str, msg: impl Into<String>) -> Self {
        let mut e = BTreeMap::new();
        e.insert(key.to_string(), msg.into());
        ApiError::param(e)
    }
    fn perm(path: &str, privs: &str) -> Self {
        ApiError::new(403, format!("Permission check failed ({path}, {privs})"))
    }
    fn auth(reason: &str) -> Self {
        ApiError {
            empty_body: true,
            ..ApiError::new(401, reason)
        }
    }
    fn no_method(method: &str, path: &str) -> Self {
        ApiError::new(501, format!("Method '{method} {path}' not implemented"))
    }
}

enum Body {
    Json(Value),
    /// A full response body (already wrapped in `{"data": ...}`).
    Raw(Vec<u8>),
    /// Computed after the state lock is released.
    Later(Box<dyn FnOnce() -> Value + Send>),
}

type ApiResult = Result<Body, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(Body::Json(v))
}

fn error_response(e: &ApiError, version: Version) -> Response {
    let reason = e.message.lines().next().unwrap_or("").to_string();
    let body = if e.empty_body {
        Vec::new()
    } else {
        let mut m = Map::new();
        m.insert("data".into(), Value::Null);
        if version.has_error_message() {
            m.insert("message".into(), Value::from(e.message.clone()));
        }
        if let Some(errs) = &e.errors {
            m.insert(
                "errors".into(),
                Value::Object(
                    errs.iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                        .collect(),
                ),
            );
        }
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    };
    Response {
        status: e.code,
        reason,
        body,
        close: false,
    }
}

// ------------------------------------------------------------------------------------------
// Parameters

#[derive(Default)]
struct Params {
    list: Vec<(String, String)>,
}

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        self.get(k) == Some("1")
    }
}

/// Checks parameters against `spec` (name → type, optional); unknown ones are errors.
fn validate(
    params: &Params,
    spec: &dyn Fn(&str) -> Option<(PType, bool)>,
    required: &[&str],
    version: Version,
) -> Result<(), ApiError> {
    let mut errors = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (k, v) in &params.list {
        if !seen.insert(k.clone()) {
            errors.insert(k.clone(), "duplicate parameter (not allowed)".to_string());
            continue;
        }
        match spec(k) {
            None => {
                errors.insert(
                    k.clone(),
                    "property is not defined in schema and the schema does not allow additional properties"
                        .to_string(),
                );
            }
            Some((t, _)) => {
                if let Err(msg) = config::check_value(t, v, version) {
                    errors.insert(k.clone(), msg);
                }
            }
        }
    }
    for r in required {
        if !seen.contains(*r) && !errors.contains_key(*r) {
            errors.insert(
                r.to_string(),
                "property is missing and it is not optional".to_string(),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::param(errors))
    }
}

fn node_param(k: &str) -> Option<(PType, bool)> {
    match k {
        "node" => Some((PType::Node, false)),
        _ => None,
    }
}

fn vm_params(k: &str) -> Option<(PType, bool)> {
    match k {
        "node" => Some((PType::Node, false)),
        "vmid" => Some((PType::Vmid, false)),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// Authentication

#[derive(Clone)]
struct Principal {
    /// `user@realm` or `user@realm!token`.
    name: String,
    privs: Privs,
    kind: AuthKind,
}

fn cookie_ticket(req: &Request) -> Option<String> {
    let cookies = req.header("cookie")?;
    for c in cookies.split(';') {
        let c = c.trim();
        if let Some(v) = c.strip_prefix("PVEAuthCookie=") {
            return Some(percent_decode(v, false).unwrap_or_else(|_| v.to_string()));
        }
    }
    None
}

fn authenticate(world: &World, req: &Request) -> Result<Principal, ApiError> {
    if let Some(h) = req.header("authorization") {
        let Some(rest) = h
            .strip_prefix("PVEAPIToken=")
            .or_else(|| h.strip_prefix("PVEAPIToken "))
        else {
            return Err(ApiError::auth("authentication failure"));
        };
        let Some((id, secret)) = rest.rsplit_once('=') else {
            return Err(ApiError::auth("authentication failure"));
        };
        return match world.tokens.get(id) {
            Some((s, privs)) if s == secret => Ok(Principal {
                name: id.to_string(),
                privs: privs.clone(),
                kind: AuthKind::Token(id.to_string()),
            }),
            _ => Err(ApiError::auth("authentication failure")),
        };
    }
    let Some(ticket) = cookie_ticket(req) else {
        return Err(ApiError::auth("No ticket"));
    };
    let Some(t) = world.tickets.get(&ticket) else {
        return Err(ApiError::auth("permission denied - invalid PVE ticket"));
    };
    if t.tfa_pending || world.now() - t.created > 7200 || world.now() < t.created - 300 {
        return Err(ApiError::auth("permission denied - invalid PVE ticket"));
    }
    let Some(user) = world.users.get(&t.user) else {
        return Err(ApiError::auth("permission denied - invalid PVE ticket"));
    };
    if req.method != "GET" && req.header("csrfpreventiontoken") != Some(t.csrf.as_str()) {
        return Err(ApiError::auth("Permission denied - invalid csrf token"));
    }
    Ok(Principal {
        name: t.user.clone(),
        privs: user.privs.clone(),
        kind: AuthKind::Ticket(t.user.clone()),
    })
}

fn hexhash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------------------------------
// Dispatch

/// Handles one request: faults, auth, routing, recording.
pub(crate) fn handle(shared: &Shared, req: Request) -> Reply {
    if !shared.latency.is_zero() {
        sleep_unless(&shared.shutdown, shared.latency);
    }
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let version = lock(&shared.world).version;
    let (raw_path, raw_query) = match req.target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (req.target.clone(), String::new()),
    };
    let rel = raw_path
        .strip_prefix("/api2/json")
        .filter(|r| r.is_empty() || r.starts_with('/'));
    let decoded_path: Result<Vec<String>, String> = rel
        .unwrap_or(&raw_path)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let segs = decoded_path.unwrap_or_default();
    let path = format!("/{}", segs.join("/"));
    let mut rec = Recorded {
        seq,
        conn: req.conn,
        method: req.method.clone(),
        path: path.clone(),
        query: Vec::new(),
        form: Vec::new(),
        status: 0,
        response_bytes: 0,
        request_bytes: req.body.len(),
        auth: AuthKind::None,
        csrf_token: req.header("csrfpreventiontoken").is_some(),
        content_type: req.header("content-type").map(|s| s.to_string()),
        fault: None,
        sim_time: lock(&shared.world).now(),
    };

    let mut params = Params::default();
    let mut body_error = None;
    match parse_form(&raw_query) {
        Ok(q) => {
            rec.query = redact(&q);
            params.list.extend(q);
        }
        Err(e) => body_error = Some(e),
    }
    if !req.body.is_empty() {
        let ct = req.header("content-type").unwrap_or("");
        let parsed = if ct.starts_with("application/json") {
            parse_json_body(&req.body)
        } else {
            match std::str::from_utf8(&req.body) {
                Ok(s) => parse_form(s),
                Err(_) => Err("invalid UTF-8 in request body".to_string()),
            }
        };
        match parsed {
            Ok(f) => {
                rec.form = redact(&f);
                params.list.extend(f);
            }
            Err(e) => body_error = Some(e),
        }
    }

    // Faults (the first active one that matches applies).
    let mut post_fault: Option<FaultKind> = None;
    let mut pre_fault: Option<FaultKind> = None;
    let mut latency: Option<Duration> = None;
    let mut never_finish = false;
    let mut task_warnings = None;
    let mut edit_before: Option<(String, String)> = None;
    let mut edit_in_task: Option<(String, String)> = None;
    {
        let mut faults = lock(&shared.faults);
        for slot in faults.iter_mut() {
            if !slot.fault.matches(&req.method, &path) {
                continue;
            }
            slot.seen += 1;
            if slot.seen <= slot.fault.skip {
                continue;
            }
            if let Some(n) = slot.fault.times
                && slot.used >= n
            {
                continue;
            }
            slot.used += 1;
            match (&slot.fault.kind, slot.fault.after_apply) {
                (FaultKind::TaskNeverFinishes, _) => never_finish = true,
                (FaultKind::TaskWarnings(n), _) => task_warnings = Some(*n),
                (FaultKind::Latency(d), _) => latency = Some(*d),
                (FaultKind::ConcurrentEdit { key, value }, false) => {
                    edit_before = Some((key.clone(), value.clone()))
                }
                (FaultKind::ConcurrentEdit { key, value }, true) => {
                    edit_in_task = Some((key.clone(), value.clone()))
                }
                (k @ FaultKind::Status { .. }, false)
                | (k @ FaultKind::Hang(_), _)
                | (k @ FaultKind::Close, _) => pre_fault = Some(k.clone()),
                (k, _) => post_fault = Some(k.clone()),
            }
            break;
        }
    }
    if let Some(d) = latency {
        rec.fault = Some("latency".into());
        sleep_unless(&shared.shutdown, d);
    }
    if never_finish {
        rec.fault = Some("task never finishes".into());
    }
    if let Some(k) = pre_fault {
        return finish_fault(shared, rec, k, None, version);
    }

    let delay_after = Cell::new(Duration::ZERO);
    let result = (|| -> ApiResult {
        let mut world = lock(&shared.world);
        world.process_tasks(shared.refusal_delay);
        if let Some((key, value)) = edit_before.take()
            && let Some(vmid) = vm_of_path(&segs)
        {
            let now = world.now();
            if let Some(vm) = world.vms.get_mut(&vmid) {
                vm.conf.insert(key, value);
                vm.touch(now);
            }
        }
        let is_ticket_call = segs.len() == 2 && segs[0] == "access" && segs[1] == "ticket";
        let principal = if is_ticket_call {
            None
        } else {
            match authenticate(&world, &req) {
                Ok(p) => Some(p),
                Err(e) => {
                    rec.auth =
                        if req.header("authorization").is_some() || cookie_ticket(&req).is_some() {
                            AuthKind::Invalid
                        } else {
                            AuthKind::None
                        };
                    drop(world);
                    if !shared.auth_delay.is_zero() {
                        sleep_unless(&shared.shutdown, shared.auth_delay);
                    }
                    return Err(e);
                }
            }
        };
        if let Some(p) = &principal {
            rec.auth = p.kind.clone();
        }
        if rel.is_none() {
            return Err(ApiError::no_method(&req.method, &raw_path));
        }
        if let Some(e) = body_error {
            return Err(ApiError::param1("body", e));
        }
        let ctx = Ctx {
            shared,
            method: req.method.as_str(),
            path: &path,
            params: &params,
            never_finish,
            task_warnings,
            edit_in_task: edit_in_task.take(),
            apply_now: post_fault.is_some(),
            delay_after: &delay_after,
        };
        route(ctx, world, &segs, principal)
    })();

    let d = delay_after.get();
    if !d.is_zero() {
        if d >= shared.proxy_timeout {
            // The proxy gives up after its timeout: 596, outcome unknown to the client.
            sleep_unless(&shared.shutdown, shared.proxy_timeout);
            return finish_fault(
                shared,
                rec,
                FaultKind::Status {
                    code: 596,
                    message: Some("Connection timed out".into()),
                },
                None,
                version,
            );
        }
        sleep_unless(&shared.shutdown, d);
    }
    let result = match result {
        Ok(Body::Later(f)) => Ok(Body::Json(f())),
        other => other,
    };
    let resp = match result {
        Ok(Body::Json(v)) => Response {
            status: 200,
            reason: "OK".into(),
            body: serde_json::to_vec(&json!({ "data": v })).unwrap_or_default(),
            close: false,
        },
        Ok(Body::Raw(b)) => Response {
            status: 200,
            reason: "OK".into(),
            body: b,
            close: false,
        },
        Ok(Body::Later(_)) => Response {
            status: 500,
            reason: "Internal Server Error".into(),
            body: Vec::new(),
            close: false,
        },
        Err(e) => error_response(&e, version),
    };
    if let Some(k) = post_fault {
        return finish_fault(shared, rec, k, Some(resp), version);
    }
    rec.status = resp.status;
    rec.response_bytes = resp.body.len();
    lock(&shared.log).push(rec);
    Reply::Send(resp)
}

fn finish_fault(
    shared: &Shared,
    mut rec: Recorded,
    kind: FaultKind,
    real: Option<Response>,
    version: Version,
) -> Reply {
    let reply = match kind {
        FaultKind::Status { code, message } => {
            let msg = message.unwrap_or_else(|| default_reason(code).to_string());
            let empty = code == 401 || (595..=599).contains(&code);
            let e = ApiError {
                empty_body: empty,
                ..ApiError::new(code, msg)
            };
            rec.fault = Some(format!("status {code}"));
            Reply::Send(error_response(&e, version))
        }
        FaultKind::Hang(d) => {
            rec.fault = Some("hang".into());
            Reply::Hang(d)
        }
        FaultKind::Close => {
            rec.fault = Some("close".into());
            Reply::Close
        }
        FaultKind::MalformedJson => {
            rec.fault = Some("malformed json".into());
            let mut body = real.map(|r| r.body).unwrap_or_default();
            let cut = body.len() / 2;
            body.truncate(cut);
            body.extend_from_slice(b"{\"data\":[{\"vmid\":");
            Reply::Send(Response {
                status: 200,
                reason: "OK".into(),
                body,
                close: false,
            })
        }
        FaultKind::WrongTypes => {
            rec.fault = Some("wrong types".into());
            let body = real.map(|r| r.body).unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let data = v.get("data").cloned().unwrap_or(Value::Null);
            let data = crate::fault::wrong_types(data, true);
            Reply::Send(Response {
                status: 200,
                reason: "OK".into(),
                body: serde_json::to_vec(&json!({ "data": data })).unwrap_or_default(),
                close: false,
            })
        }
        FaultKind::HugeBody { mib } => {
            rec.fault = Some("huge body".into());
            let body = real.map(|r| r.body).unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let data = v.get("data").cloned().unwrap_or(Value::Null);
            let mut out = serde_json::to_vec(&json!({ "data": data })).unwrap_or_default();
            out.pop(); // '}'
            out.extend_from_slice(b",\"padding\":\"");
            out.resize(out.len() + mib * 1024 * 1024, b'x');
            out.extend_from_slice(b"\"}");
            Reply::Send(Response {
                status: 200,
                reason: "OK".into(),
                body: out,
                close: false,
            })
        }
        FaultKind::Latency(_)
        | FaultKind::TaskNeverFinishes
        | FaultKind::TaskWarnings(_)
        | FaultKind::ConcurrentEdit { .. } => match real {
            Some(r) => Reply::Send(r),
            None => Reply::Close,
        },
    };
    match &reply {
        Reply::Send(r) => {
            rec.status = r.status;
            rec.response_bytes = r.body.len();
        }
        _ => rec.status = 0,
    }
    lock(&shared.log).push(rec);
    reply
}

/// The VM a `/nodes/{node}/qemu/{vmid}/...` path is about.
fn vm_of_path(segs: &[String]) -> Option<u32> {
    match segs {
        [nodes, _, qemu, vmid, ..] if nodes == "nodes" && qemu == "qemu" => vmid.parse().ok(),
        _ => None,
    }
}

fn default_reason(code: u16) -> &'static str {
    match code {
        400 => "Parameter verification failed.",
        401 => "authentication failure",
        403 => "Permission check failed",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        595 => "Errors during connection establishment, proxy handshake: No route to host",
        596 => "Connection timed out",
        597 => "Connection timed out",
        _ => "Error",
    }
}

fn redact(list: &[(String, String)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| {
            let secret = matches!(
                k.as_str(),
                "password" | "otp" | "tfa-challenge" | "cipassword" | "new-password"
            );
            (
                k.clone(),
                if secret {
                    "<redacted>".to_string()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

fn parse_json_body(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let Value::Object(o) = v else {
        return Err("JSON body is not an object".into());
    };
    let mut out = Vec::new();
    for (k, v) in o {
        let s = match v {
            Value::Null => continue,
            Value::Bool(b) => (if b { "1" } else { "0" }).to_string(),
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.push((k, s));
    }
    Ok(out)
}

struct Ctx<'a> {
    shared: &'a Shared,
    method: &'a str,
    path: &'a str,
    params: &'a Params,
    never_finish: bool,
    task_warnings: Option<u32>,
    /// Someone else's edit to land before the worker of this write runs.
    edit_in_task: Option<(String, String)>,
    /// The answer will be replaced by a fault "after the change was applied": an asynchronous
    /// write is carried out before answering, so the change is visible by then.
    apply_now: bool,
    delay_after: &'a Cell<Duration>,
}

fn route(
    ctx: Ctx<'_>,
    mut world: MutexGuard<'_, World>,
    segs: &[String],
    principal: Option<Principal>,
) -> ApiResult {
    let s: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    let m = ctx.method;
    let v = world.version;
    let Some(p) = principal else {
        // Only the ticket call comes here without a principal.
        return match m {
            "POST" => create_ticket(&ctx, &mut world),
            "GET" => ok(Value::Null),
            _ => Err(ApiError::no_method(m, ctx.path)),
        };
    };
    let with = |name: &str, value: &str| {
        let mut list = ctx.params.list.clone();
        list.push((name.to_string(), value.to_string()));
        list
    };
    match (m, s.as_slice()) {
        ("GET", ["version"]) => {
            validate(ctx.params, &|_| None, &[], v)?;
            ok(json!({
                "release": v.to_string(),
                "version": v.full_version(),
                "repoid": if v.is_pve9() { "5a7b1c2d3e4f5a6b" } else { "2a5fa54a8503f96d" },
                "console": "html5",
            }))
        }
        ("GET", ["access", "permissions"]) => {
            validate(
                ctx.params,
                &|k| match k {
                    "path" => Some((PType::Str { max_len: Some(64) }, true)),
                    "userid" => Some((PType::Str { max_len: Some(64) }, true)),
                    _ => None,
                },
                &[],
                v,
            )?;
            let mut out = Map::new();
            let paths: Vec<String> = match ctx.params.get("path") {
                Some(path) => vec![path.to_string()],
                None => {
                    let mut v = p.privs.acl_paths();
                    for extra in ["/access", "/nodes", "/pool", "/sdn", "/storage", "/vms"] {
                        if !v.iter().any(|x| x == extra) {
                            v.push(extra.to_string());
                        }
                    }
                    v
                }
            };
            for path in paths {
                // Values are propagate flags (pve-access-control RPCEnvironment.pm).
                let flags = p.privs.effective_flags(&path);
                if flags.is_empty() {
                    continue;
                }
                out.insert(
                    path,
                    Value::Object(
                        flags
                            .into_iter()
                            .map(|(k, propagate)| (k, Value::from(u8::from(propagate))))
                            .collect(),
                    ),
                );
            }
            ok(Value::Object(out))
        }
        ("GET", ["cluster", "resources"]) => {
            validate(
                ctx.params,
                &|k| match k {
                    "type" => Some((PType::Enum(&["vm", "storage", "node", "sdn"]), true)),
                    _ => None,
                },
                &[],
                v,
            )?;
            ok(cluster_resources(&world, &p, ctx.params.get("type")))
        }
        ("GET", ["cluster", "status"]) => {
            validate(ctx.params, &|_| None, &[], v)?;
            if !p.privs.has("/", "Sys.Audit") {
                return Err(ApiError::perm("/", "Sys.Audit"));
            }
            let mut rows = vec![json!({
                "id": "cluster", "type": "cluster", "name": world.cluster_name,
                "nodes": world.nodes.len(), "quorate": u8::from(world.quorate),
                "version": world.nodes.len() + 3,
            })];
            for (i, n) in world.nodes.iter().enumerate() {
                rows.push(json!({
                    "id": format!("node/{}", n.name), "type": "node", "name": n.name,
                    "nodeid": i + 1, "online": if n.online { 1 } else { 0 },
                    "local": if i == 0 { 1 } else { 0 }, "ip": format!("192.0.2.{}", i + 11),
                    "level": "",
                }));
            }
            ok(Value::Array(rows))
        }
        ("GET", ["cluster", "ha", "status", "manager_status"]) => {
            // pve-ha-manager src/PVE/API2/HA/Status.pm `manager_status`: the manager's status
            // file as it is (empty where HA was never used), and this node's quorum.
            validate(ctx.params, &|_| None, &[], v)?;
            if !p.privs.has("/", "Sys.Audit") {
                return Err(ApiError::perm("/", "Sys.Audit"));
            }
            let status = match &world.ha_master {
                Some((node, timestamp)) => json!({
                    "master_node": node, "timestamp": timestamp,
                    "node_status": world.nodes.iter()
                        .map(|n| (n.name.clone(), json!(if n.online { "online" } else { "unknown" })))
                        .collect::<Map<String, Value>>(),
                    "service_status": {},
                }),
                None => json!({}),
            };
            let local = world
                .nodes
                .first()
                .map(|n| n.name.clone())
                .unwrap_or_default();
            ok(json!({
                "manager_status": status,
                "quorum": { "node": local, "quorate": u8::from(world.quorate) },
                "lrm_status": {},
            }))
        }
        ("GET", ["cluster", "metrics", "export"]) if v.has_metrics_export() => {
            validate(
                ctx.params,
                &|k| match k {
                    "history" | "local-only" => Some((PType::Bool, true)),
                    "start-time" => Some((
                        PType::Int {
                            min: None,
                            max: None,
                        },
                        true,
                    )),
                    "node-list" => Some((PType::Str { max_len: None }, true)),
                    _ => None,
                },
                &[],
                v,
            )?;
            if !p.privs.has("/", "Sys.Audit") {
                return Err(ApiError::perm("/", "Sys.Audit"));
            }
            metrics_export(ctx.params, world)
        }
        ("GET", ["nodes"]) => {
            validate(ctx.params, &|_| None, &[], v)?;
            let now = world.now();
            let samples = metrics::node_samples(
                &world.nodes,
                world.vms.values(),
                now - now % 10,
                world.start,
                world.noise,
            );
            let rows: Vec<Value> = world
                .nodes
                .iter()
                .zip(samples.iter())
                .map(|(n, ns)| {
                    let mut r = json!({
                        "node": n.name, "id": format!("node/{}", n.name), "type": "node",
                        "status": if n.online { "online" } else { "offline" }, "level": "",
                        "ssl_fingerprint": "",
                    });
                    if n.online && p.privs.has(&format!("/nodes/{}", n.name), "Sys.Audit") {
                        node_stats(&mut r, n, ns, now - world.start);
                    }
                    r
                })
                .collect();
            ok(Value::Array(rows))
        }
        (_, ["nodes", node, rest @ ..]) => {
            // Everything under a node is proxied to that node.
            let node = node.to_string();
            if config::valid_node_name(&node) {
                match world.node(&node) {
                    None => {
                        return Err(ApiError::new(
                            500,
                            format!(
                                "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
                            ),
                        ));
                    }
                    Some(n) if !n.online => {
                        return Err(ApiError {
                            empty_body: true,
                            ..ApiError::new(
                                595,
                                "Errors during connection establishment, proxy handshake: No route to host",
                            )
                        });
                    }
                    _ => {}
                }
            }
            let nodeparams = Params {
                list: with("node", &node),
            };
            match (m, rest) {
                ("GET", ["status"]) => {
                    validate(&nodeparams, &node_param, &["node"], v)?;
                    let npath = format!("/nodes/{node}");
                    if !p.privs.has(&npath, "Sys.Audit") {
                        return Err(ApiError::perm(&npath, "Sys.Audit"));
                    }
                    ok(node_status(&world, &node))
                }
                ("GET", ["tasks"]) => {
                    let int = || {
                        Some((
                            PType::Int {
                                min: Some(0),
                                max: None,
                            },
                            true,
                        ))
                    };
                    validate(
                        &nodeparams,
                        &|k| match k {
                            "start" | "limit" | "since" | "until" => int(),
                            "typefilter" | "userfilter" => {
                                Some((PType::Str { max_len: None }, true))
                            }
                            "vmid" => Some((PType::Vmid, true)),
                            other => node_param(other),
                        },
                        &["node"],
                        v,
                    )?;
                    ok(task_list(&world, &p, &node, &nodeparams))
                }
                ("GET", ["qemu"]) => {
                    validate(
                        &nodeparams,
                        &|k| match k {
                            "full" => Some((PType::Bool, true)),
                            other => node_param(other),
                        },
                        &["node"],
                        v,
                    )?;
                    ok(qemu_list(&world, &p, &node))
                }
                (_, ["qemu", vmid, sub @ ..]) => {
                    let mut list = nodeparams.list.clone();
                    list.push(("vmid".to_string(), vmid.to_string()));
                    let vparams = Params { list };
                    vm_route(&ctx, &mut world, &p, &node, vmid, sub, vparams)
                }
                (_, ["lxc", vmid, sub @ ..]) => {
                    let mut list = nodeparams.list.clone();
                    list.push(("vmid".to_string(), vmid.to_string()));
                    let vparams = Params { list };
                    lxc::route(&ctx, &mut world, &p, &node, vmid, sub, vparams)
                }
                (_, ["tasks", upid, sub @ ..]) => {
                    let mut list = nodeparams.list.clone();
                    list.push(("upid".to_string(), upid.to_string()));
                    let tparams = Params { list };
                    task_route(&ctx, &mut world, &p, &node, upid, sub, tparams)
                }
                _ => Err(ApiError::no_method(m, ctx.path)),
            }
        }
        _ => Err(ApiError::no_method(m, ctx.path)),
    }
}

fn create_ticket(ctx: &Ctx<'_>, world: &mut World) -> ApiResult {
    let v = world.version;
    validate(
        ctx.params,
        &|k| match k {
            "username" => Some((PType::Str { max_len: Some(64) }, false)),
            "password" => Some((PType::Str { max_len: None }, false)),
            "realm" => Some((PType::Str { max_len: Some(32) }, true)),
            "otp" | "tfa-challenge" => Some((PType::Str { max_len: None }, true)),
            "path" | "privs" => Some((PType::Str { max_len: Some(64) }, true)),
            "new-format" => Some((PType::Bool, true)),
            _ => None,
        },
        &["username", "password"],
        v,
    )?;
    let mut username = ctx.params.get("username").unwrap_or("").to_string();
    if !username.contains('@')
        && let Some(realm) = ctx.params.get("realm")
    {
        username = format!("{username}@{realm}");
    }
    let password = ctx.params.get("password").unwrap_or("");
    let now = world.now();
    let renew = world
        .tickets
        .get(password)
        .is_some_and(|t| t.user == username && !t.tfa_pending && now - t.created <= 7200);
    let Some(user) = world.users.get(&username) else {
        return Err(ApiError::auth("authentication failure"));
    };
    if !(renew || user.password == password) {
        return Err(ApiError::auth("authentication failure"));
    }
    let tfa = user.tfa && !renew;
    let stamp = format!("{:08X}", now);
    let sig = hexhash(&[
        &username,
        &stamp,
        &world.task_seq.to_string(),
        password.len().to_string().as_str(),
    ]);
    world.task_seq = world.task_seq.wrapping_add(1);
    let ticket = if tfa {
        format!("PVE:!tfa!{username}:{stamp}::{}", &sig[..43])
    } else {
        format!("PVE:{username}:{stamp}::{}", &sig[..43])
    };
    let csrf = format!("{stamp}:{}", &sig[20..63]);
    world.tickets.insert(
        ticket.clone(),
        Ticket {
            user: username.clone(),
            created: now,
            csrf: csrf.clone(),
            tfa_pending: tfa,
        },
    );
    let mut data = json!({
        "username": username,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "clustername": world.cluster_name,
        "cap": {},
    });
    if tfa {
        data["NeedTFA"] = json!(1);
    }
    ok(data)
}

fn vm_visible(p: &Principal, vm: &Vm) -> bool {
    p.privs.has(&format!("/vms/{}", vm.vmid), "VM.Audit")
        || vm
            .pool
            .as_ref()
            .is_some_and(|pool| p.privs.has(&format!("/pool/{pool}"), "VM.Audit"))
}

fn node_stats(r: &mut Value, n: &Node, ns: &metrics::NodeSample, rel_now: i64) {
    r["cpu"] = json!(metrics::node_cpu(n, ns));
    r["maxcpu"] = json!(n.cpus);
    r["mem"] = json!(metrics::node_mem_used(n, ns));
    r["maxmem"] = json!(n.memory_mib << 20);
    r["disk"] = json!(12u64 << 30);
    r["maxdisk"] = json!(100u64 << 30);
    r["uptime"] = json!((rel_now + 40 * 86400).max(0));
}

fn cluster_resources(world: &World, p: &Principal, ty: Option<&str>) -> Value {
    let now = world.now();
    let t = now - now.rem_euclid(10);
    let v = world.version;
    let mut rows = Vec::new();
    let want = |x: &str| ty.is_none() || ty == Some(x);
    if want("vm") {
        for vm in world.vms.values() {
            if !vm_visible(p, vm) {
                continue;
            }
            let online = world.node(&vm.node).is_some_and(|n| n.online);
            let mut r = json!({
                "id": format!("{}/{}", vm.kind.as_str(), vm.vmid),
                "type": vm.kind.as_str(),
                "vmid": vm.vmid,
                "node": vm.node,
                "name": vm.name(),
                "template": if vm.template() { 1 } else { 0 },
            });
            let sample = metrics::vm_sample(vm, t, world.start, world.noise);
            match sample {
                Some(s) if online && vm.status != VmStatus::Unknown => {
                    r["status"] = json!(vm.status.as_str());
                    r["maxcpu"] = json!(s.vcpus);
                    r["maxmem"] = json!(s.mem_total);
                    r["maxdisk"] = json!(vm.maxdisk);
                    r["disk"] = json!(0);
                    if !s.blind {
                        r["cpu"] = json!(s.cpu);
                        r["mem"] = json!(s.mem_used);
                    }
                    r["uptime"] = json!(s.uptime);
                    r["netin"] = json!(s.netin);
                    r["netout"] = json!(s.netout);
                    r["diskread"] = json!(s.diskread);
                    r["diskwrite"] = json!(s.diskwrite);
                    if v.is_pve9() && vm.kind == Kind::Qemu && s.live() {
                        r["memhost"] = json!(s.mem_host);
                    }
                }
                _ => {
                    r["status"] = json!("unknown");
                }
            }
            if let Some(tags) = vm.tags() {
                r["tags"] = json!(tags);
            }
            if let Some(pool) = &vm.pool {
                r["pool"] = json!(pool);
            }
            if let Some(l) = vm.lock() {
                r["lock"] = json!(l);
            }
            if let Some(h) = &vm.hastate {
                r["hastate"] = json!(h);
            }
            rows.push(r);
        }
    }
    if want("node") {
        let samples = metrics::node_samples(
            &world.nodes,
            world.vms.values(),
            t,
            world.start,
            world.noise,
        );
        for (n, ns) in world.nodes.iter().zip(samples.iter()) {
            let mut r = json!({
                "id": format!("node/{}", n.name), "type": "node", "node": n.name,
                "status": if n.online { "online" } else { "offline" }, "level": "",
                "cgroup-mode": 2,
            });
            if n.online && p.privs.has(&format!("/nodes/{}", n.name), "Sys.Audit") {
                node_stats(&mut r, n, ns, now - world.start);
            }
            rows.push(r);
        }
    }
    if want("storage") {
        for n in &world.nodes {
            for (st, plugin, content) in [
                ("local", "dir", "iso,vztmpl,backup"),
                ("local-lvm", "lvmthin", "images,rootdir"),
            ] {
                if !p.privs.has(&format!("/storage/{st}"), "Datastore.Audit")
                    && !p
                        .privs
                        .has(&format!("/storage/{st}"), "Datastore.AllocateSpace")
                {
                    continue;
                }
                rows.push(json!({
                    "id": format!("storage/{}/{st}", n.name), "type": "storage", "storage": st,
                    "node": n.name, "status": if n.online { "available" } else { "unknown" },
                    "plugintype": plugin, "content": content, "shared": 0,
                    "disk": 20u64 << 30, "maxdisk": 400u64 << 30,
                }));
            }
        }
    }
    if want("sdn") {
        for n in &world.nodes {
            rows.push(json!({
                "id": format!("sdn/{}/localnetwork", n.name), "type": "sdn",
                "sdn": "localnetwork", "node": n.name, "status": "ok",
            }));
        }
    }
    if ty.is_none() {
        let pools: BTreeSet<&String> = world.vms.values().filter_map(|v| v.pool.as_ref()).collect();
        for pool in pools {
            if p.privs.has(&format!("/pool/{pool}"), "Pool.Audit") {
                rows.push(json!({ "id": format!("/pool/{pool}"), "type": "pool", "pool": pool }));
            }
        }
    }
    Value::Array(rows)
}

/// Old generations pvestatd's metrics cache keeps besides the newest one: 180 × 10 s, half an
/// hour (pve-manager PVE/PullMetric.pm, OLD_GENERATIONS).
const EXPORT_OLD_GENERATIONS: i64 = 180;

/// `GET /cluster/metrics/export` as pve-manager's PVE/API2/Cluster/MetricServer.pm serves it:
/// the answering node's own metrics, then every other online node's (asked with
/// `local-only=1`), skipping silently any that cannot be reached.
fn metrics_export(params: &Params, world: MutexGuard<'_, World>) -> ApiResult {
    let now = world.now();
    let history = params.flag("history");
    let start_time: Option<i64> = params.get("start-time").and_then(|s| s.parse().ok());
    let node_list: Option<Vec<String>> = params
        .get("node-list")
        .map(config::split_list)
        .filter(|l| !l.is_empty());
    if let Some(list) = &node_list {
        let unknown: Vec<&str> = list
            .iter()
            .filter(|n| world.node(n).is_none())
            .map(|n| n.as_str())
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::new(
                500,
                format!(
                    "Requested node-list contains unknown nodes - {}",
                    unknown.join(", ")
                ),
            ));
        }
    }
    // Generations of pvestatd's 10 s loop: the newest, plus `(now - start-time) / 10` old
    // ones with history (all it keeps without start-time), then only those newer than
    // start-time.
    let latest = now - now.rem_euclid(10);
    let old = match (history, start_time) {
        (false, _) => 0,
        (true, Some(start)) => ((now - start) / 10).clamp(0, EXPORT_OLD_GENERATIONS),
        (true, None) => EXPORT_OLD_GENERATIONS,
    };
    let timestamps: Vec<i64> = (0..=old)
        .rev()
        .map(|i| latest - i * 10)
        .filter(|t| start_time.is_none_or(|s| *t > s))
        .collect();
    // The first node answers the API. Its own metrics come unless a node-list leaves it
    // out; the others are asked unless local-only (without a node-list) says not to, and
    // only when online and reachable.
    let local = world.nodes.first().map(|n| n.name.clone());
    let listed = |name: &str| {
        node_list
            .as_ref()
            .is_none_or(|l| l.iter().any(|n| n == name))
    };
    let fan_out = !params.flag("local-only") || node_list.is_some();
    let nodes: Vec<Node> = world
        .nodes
        .iter()
        .filter(|n| {
            if Some(&n.name) == local.as_ref() {
                listed(&n.name)
            } else {
                fan_out && listed(&n.name) && n.online && !n.export_unreachable
            }
        })
        .cloned()
        .collect();
    let vms: Vec<Vm> = world
        .vms
        .values()
        .filter(|v| nodes.iter().any(|n| n.name == v.node))
        .cloned()
        .collect();
    let (start, noise) = (world.start, world.noise);
    drop(world);
    Ok(Body::Raw(metrics::export(
        &nodes,
        &vms,
        &timestamps,
        start,
        noise,
    )))
}

fn node_status(world: &World, node: &str) -> Value {
    let now = world.now();
    let Some(n) = world.node(node) else {
        return Value::Null;
    };
    let samples = metrics::node_samples(
        std::slice::from_ref(n),
        world.vms.values(),
        now - now.rem_euclid(10),
        world.start,
        world.noise,
    );
    let ns = samples.first().copied().unwrap_or_default();
    let total = n.memory_mib << 20;
    let used = metrics::node_mem_used(n, &ns);
    let cpu = metrics::node_cpu(n, &ns);
    json!({
        "cpu": cpu,
        "wait": 0.001,
        "idle": 0,
        "uptime": (now - world.start + 40 * 86400).max(0),
        "loadavg": [format!("{:.2}", cpu * n.cpus as f64), format!("{:.2}", cpu * n.cpus as f64 * 0.9), format!("{:.2}", cpu * n.cpus as f64 * 0.8)],
        "cpuinfo": {
            "cpus": n.cpus, "cores": (n.cpus / 2).max(1), "sockets": 1,
            "model": "Simulated CPU @ 3.00GHz", "mhz": "3000.000", "hvm": "1", "user_hz": 100,
            "flags": "fpu vme de pse tsc msr pae mce cx8 apic",
        },
        "memory": { "total": total, "used": used, "free": total - used, "available": total - used },
        "swap": { "total": 8u64 << 30, "used": 0, "free": 8u64 << 30 },
        "rootfs": { "total": 100u64 << 30, "used": 12u64 << 30, "free": 88u64 << 30, "avail": 83u64 << 30 },
        "ksm": { "shared": 0 },
        "kversion": "Linux 6.8.12-4-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-4",
        "pveversion": format!("pve-manager/{}/sim", world.version.full_version()),
        "boot-info": { "mode": "efi", "secureboot": 0 },
        "current-kernel": { "sysname": "Linux", "release": "6.8.12-4-pve", "machine": "x86_64", "version": "#1 SMP PREEMPT_DYNAMIC" },
    })
}

fn vm_status_fields(world: &World, vm: &Vm, r: &mut Value, first_read: bool) {
    let now = world.now();
    let t = now - now.rem_euclid(10);
    let v = world.version;
    let s = metrics::vm_sample(vm, t, world.start, world.noise);
    let live = vm.status.is_live();
    r["status"] = json!(if live { "running" } else { "stopped" });
    r["name"] = json!(vm.name());
    r["cpus"] = json!(vm.vcpus());
    r["maxmem"] = json!(vm.mem_mib() << 20);
    r["maxdisk"] = json!(vm.maxdisk);
    r["disk"] = json!(0);
    match s {
        Some(s) if live => {
            r["cpu"] = json!(if first_read { 0.0 } else { s.cpu });
            r["mem"] = json!(s.mem_used);
            r["uptime"] = json!(s.uptime);
            r["netin"] = json!(s.netin);
            r["netout"] = json!(s.netout);
            r["diskread"] = json!(s.diskread);
            r["diskwrite"] = json!(s.diskwrite);
            r["pid"] = json!(10_000 + vm.vmid % 50_000);
            if v.is_pve9() {
                r["memhost"] = json!(s.mem_host);
                // The kernel's avg10, in percent (pve-common ProcFSTools `parse_pressure`).
                r["pressurecpusome"] = json!(s.cpu_pressure * 100.0);
                r["pressurecpufull"] = json!(s.cpu_pressure * 50.0);
                r["pressureiosome"] = json!(0);
                r["pressureiofull"] = json!(0);
                r["pressurememorysome"] = json!(s.mem_pressure * 100.0);
                r["pressurememoryfull"] = json!(s.mem_pressure * 50.0);
            }
            if vm.balloon_device() && vm.kind == Kind::Qemu {
                let max = vm.mem_mib() << 20;
                r["balloon"] = json!(max);
                let mut bi = json!({ "actual": max, "max_mem": max, "last_update": t });
                if vm.balloon_stats {
                    let free = max.saturating_sub(s.mem_used);
                    bi["total_mem"] = json!(max);
                    bi["free_mem"] = json!(free);
                    bi["mem_swapped_in"] = json!(0);
                    bi["mem_swapped_out"] = json!(0);
                    bi["major_page_faults"] = json!(120);
                    bi["minor_page_faults"] = json!(45_000);
                    r["freemem"] = json!(free);
                }
                r["ballooninfo"] = bi;
            }
        }
        _ => {
            r["cpu"] = json!(0);
            r["mem"] = json!(0);
            r["uptime"] = json!(0);
        }
    }
    if let Some(tags) = vm.tags() {
        r["tags"] = json!(tags);
    }
    if let Some(l) = vm.lock() {
        r["lock"] = json!(l);
    }
}

/// `GET /nodes/{node}/tasks` as pve-manager PVE/API2/Tasks.pm `node_tasks` answers it from
/// the archive (the default `source`): finished tasks, newest first, filtered by type, user
/// (a case-insensitive substring), VM and start time, at most `limit` (50); without
/// `Sys.Audit` on the node only the caller's own tasks.
fn task_list(world: &World, p: &Principal, node: &str, params: &Params) -> Value {
    let int = |k: &str| params.get(k).and_then(|v| v.parse::<i64>().ok());
    let limit = int("limit").unwrap_or(50).max(0) as usize;
    let start = int("start").unwrap_or(0).max(0) as usize;
    let auditor = p.privs.has(&format!("/nodes/{node}"), "Sys.Audit");
    let userfilter = params.get("userfilter").map(str::to_lowercase);
    let mut tasks: Vec<&Task> = world
        .tasks
        .values()
        .filter(|t| t.node == node && matches!(t.state, TaskState::Stopped(_)))
        .filter(|t| auditor || t.user == p.name)
        .filter(|_| params.get("typefilter").is_none_or(|f| f == "qmconfig"))
        .filter(|t| {
            userfilter
                .as_ref()
                .is_none_or(|f| t.user.to_lowercase().contains(f.as_str()))
        })
        .filter(|t| params.get("vmid").is_none_or(|v| v == t.vmid.to_string()))
        .filter(|t| int("since").is_none_or(|since| t.starttime >= since))
        .filter(|t| int("until").is_none_or(|until| t.starttime <= until))
        .collect();
    tasks.sort_by(|a, b| b.starttime.cmp(&a.starttime).then(b.upid.cmp(&a.upid)));
    let rows: Vec<Value> = tasks
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|t| {
            let status = match &t.state {
                TaskState::Stopped(exit) => exit.clone(),
                TaskState::Running => "RUNNING".to_string(),
            };
            json!({
                "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                "starttime": t.starttime, "type": "qmconfig", "id": t.vmid.to_string(),
                "user": t.user, "endtime": t.starttime, "status": status,
            })
        })
        .collect();
    Value::Array(rows)
}

fn qemu_list(world: &World, p: &Principal, node: &str) -> Value {
    let rows: Vec<Value> = world
        .vms
        .values()
        .filter(|vm| vm.node == node && vm.kind == Kind::Qemu && vm_visible(p, vm))
        .map(|vm| {
            let mut r = json!({ "vmid": vm.vmid });
            vm_status_fields(world, vm, &mut r, false);
            if vm.template() {
                r["template"] = json!(1);
            }
            r
        })
        .collect();
    Value::Array(rows)
}

fn missing_conf(node: &str, vmid: &str) -> ApiError {
    ApiError::new(
        500,
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

fn config_json(vm: &Vm, current: bool, v: Version) -> Value {
    let mut conf = vm.conf.clone();
    if !current {
        for k in &vm.pending_delete {
            conf.remove(k);
        }
        for (k, val) in &vm.pending {
            conf.insert(k.clone(), val.clone());
        }
    }
    let mut m: Map<String, Value> = conf
        .iter()
        .map(|(k, val)| (k.clone(), config::config_value_json(k, val, v)))
        .collect();
    m.insert("digest".into(), json!(vm.digest));
    Value::Object(m)
}

fn pending_json(vm: &Vm, v: Version) -> Value {
    let keys: BTreeSet<&String> = vm
        .conf
        .keys()
        .chain(vm.pending.keys())
        .chain(vm.pending_delete.iter())
        .collect();
    let mut rows = Vec::new();
    for k in keys {
        let mut r = json!({ "key": k });
        if let Some(val) = vm.conf.get(k) {
            r["value"] = config::config_value_json(k, val, v);
        }
        if let Some(val) = vm.pending.get(k) {
            r["pending"] = config::config_value_json(k, val, v);
        }
        if vm.pending_delete.contains(k) {
            r["delete"] = json!(1);
        }
        rows.push(r);
    }
    rows.push(json!({ "key": "digest", "value": vm.digest }));
    Value::Array(rows)
}

fn vm_route(
    ctx: &Ctx<'_>,
    world: &mut MutexGuard<'_, World>,
    p: &Principal,
    node: &str,
    vmid_s: &str,
    sub: &[&str],
    params: Params,
) -> ApiResult {
    let m = ctx.method;
    let v = world.version;
    let vmpath = format!("/vms/{vmid_s}");
    let audit = |p: &Principal| -> Result<(), ApiError> {
        if p.privs.has(&vmpath, "VM.Audit") {
            Ok(())
        } else {
            Err(ApiError::perm(&vmpath, "VM.Audit"))
        }
    };
    let vmid: u32 = vmid_s.parse().unwrap_or(0);
    match (m, sub) {
        ("GET", ["status", "current"]) => {
            validate(&params, &vm_params, &["node", "vmid"], v)?;
            audit(p)?;
            let world = &mut **world;
            let vm = match world.vms.get_mut(&vmid) {
                Some(vm) if vm.node == node && vm.kind == Kind::Qemu => vm,
                _ => return Err(missing_conf(node, vmid_s)),
            };
            vm.status_reads += 1;
            let first = vm.status_reads == 1;
            let vm = vm.clone();
            let mut r = json!({ "vmid": vm.vmid, "ha": { "managed": if vm.hastate.is_some() { 1 } else { 0 } } });
            vm_status_fields(world, &vm, &mut r, first);
            r["qmpstatus"] = json!(match vm.status {
                VmStatus::Running => "running",
                VmStatus::Paused => "paused",
                _ => "stopped",
            });
            if vm.status.is_live() {
                r["running-qemu"] = json!("9.0.2");
                r["running-machine"] = json!("pc-i440fx-9.0+pve0");
            }
            if vm.template() {
                r["template"] = json!(1);
            }
            // qemu-server API2/Qemu.pm `vm_status`: `agent: 1` when enabled in the config.
            if vm
                .conf
                .get("agent")
                .is_some_and(|a| model::agent_enabled(a))
            {
                r["agent"] = json!(1);
            }
            ok(r)
        }
        ("GET", ["config"]) => {
            validate(
                &params,
                &|k| match k {
                    "current" => Some((PType::Bool, true)),
                    "snapshot" => Some((PType::Str { max_len: Some(40) }, true)),
                    other => vm_params(other),
                },
                &["node", "vmid"],
                v,
            )?;
            audit(p)?;
            let vm = match world.vms.get(&vmid) {
                Some(vm) if vm.node == node && vm.kind == Kind::Qemu => vm,
                _ => return Err(missing_conf(node, vmid_s)),
            };
            if let Some(snap) = params.get("snapshot") {
                return Err(ApiError::new(
                    500,
                    format!("snapshot '{snap}' does not exist"),
                ));
            }
            ok(config_json(vm, params.flag("current"), v))
        }
        ("GET", ["pending"]) => {
            validate(&params, &vm_params, &["node", "vmid"], v)?;
            audit(p)?;
            let vm = match world.vms.get(&vmid) {
                Some(vm) if vm.node == node && vm.kind == Kind::Qemu => vm,
                _ => return Err(missing_conf(node, vmid_s)),
            };
            ok(pending_json(vm, v))
        }
        ("GET", ["rrddata"]) => {
            validate(
                &params,
                &|k| match k {
                    "timeframe" => Some((
                        PType::Enum(&["hour", "day", "week", "month", "year"]),
                        false,
                    )),
                    "cf" => Some((PType::Enum(&["AVERAGE", "MAX"]), true)),
                    other => vm_params(other),
                },
                &["node", "vmid", "timeframe"],
                v,
            )?;
            audit(p)?;
            let Some(vm) = world.vms.get(&vmid).filter(|vm| vm.kind == Kind::Qemu) else {
                let dir = if v.is_pve9() { "pve-vm-9.0" } else { "pve2-vm" };
                return Err(ApiError::new(
                    500,
                    format!(
                        "RRD error: opening '/var/lib/rrdcached/db/{dir}/{vmid_s}': No such file or directory"
                    ),
                ));
            };
            let vm = vm.clone();
            let (now, start, noise) = (world.now(), world.start, world.noise);
            let tf = params.get("timeframe").unwrap_or("hour").to_string();
            let max_cf = params.get("cf") == Some("MAX");
            // Computed once the state lock is released.
            Ok(Body::Later(Box::new(move || {
                Value::Array(metrics::rrddata(&vm, now, start, v, &tf, max_cf, noise))
            })))
        }
        ("POST", ["config"]) | ("PUT", ["config"]) => {
            update_config(ctx, world, p, node, vmid_s, vmid, params)
        }
        (
            "GET",
            [
                "agent",
                cmd @ ("get-vcpus" | "get-memory-blocks" | "get-memory-block-info"),
            ],
        ) => {
            validate(&params, &vm_params, &["node", "vmid"], v)?;
            // qemu-server API2/Qemu/Agent.pm `register_command`: VM.GuestAgent.Audit or
            // VM.GuestAgent.Unrestricted since 9.0 (commit b92a40ce), VM.Monitor before.
            let privs: &[&str] = if v.is_pve9() {
                &["VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted"]
            } else {
                &["VM.Monitor"]
            };
            if !privs
                .iter()
                .any(|privilege| p.privs.has(&vmpath, privilege))
            {
                // RPCEnvironment.pm `check_any`: the list joined with `|`.
                return Err(ApiError::perm(&vmpath, &privs.join("|")));
            }
            let vm = match world.vms.get(&vmid) {
                Some(vm) if vm.node == node && vm.kind == Kind::Qemu => vm,
                _ => return Err(missing_conf(node, vmid_s)),
            };
            agent_answer(vm, cmd).map(|result| Body::Json(json!({ "result": result })))
        }
        _ => Err(ApiError::no_method(m, ctx.path)),
    }
}

/// Linux's memory block size on x86-64 (below 64 GiB of memory), as
/// `guest-get-memory-block-info` reports it.
const MEMORY_BLOCK_MIB: u64 = 128;

/// A guest agent command (qemu-server QemuServer/Agent.pm `assert_agent_available`, then the
/// QGA answer from the guest model).
fn agent_answer(vm: &Vm, cmd: &str) -> Result<Value, ApiError> {
    if !vm.conf.contains_key("agent") {
        return Err(ApiError::new(500, "No QEMU guest agent configured\n"));
    }
    if !vm.status.is_live() {
        return Err(ApiError::new(
            500,
            format!("VM {} is not running\n", vm.vmid),
        ));
    }
    if !vm.agent_answers() {
        return Err(ApiError::new(500, "QEMU guest agent is not running\n"));
    }
    Ok(match cmd {
        "get-vcpus" => Value::Array(
            (0..vm.vcpus())
                .map(|i| {
                    json!({
                        "logical-id": i,
                        "online": i < vm.online_vcpus,
                        "can-offline": i > 0,
                    })
                })
                .collect(),
        ),
        "get-memory-blocks" => Value::Array(
            (0..vm.mem_mib() / MEMORY_BLOCK_MIB)
                .map(|i| {
                    let at = i * MEMORY_BLOCK_MIB;
                    json!({
                        "phys-index": i,
                        "online": at < vm.online_mem_mib,
                        "can-offline": at >= vm.boot_mem_mib,
                    })
                })
                .collect(),
        ),
        _ => json!({ "size": MEMORY_BLOCK_MIB << 20 }),
    })
}

fn update_config(
    ctx: &Ctx<'_>,
    world: &mut MutexGuard<'_, World>,
    p: &Principal,
    node: &str,
    vmid_s: &str,
    vmid: u32,
    params: Params,
) -> ApiResult {
    let v = world.version;
    let is_post = ctx.method == "POST";
    let spec = |k: &str| -> Option<(PType, bool)> {
        match k {
            "node" => Some((PType::Node, false)),
            "vmid" => Some((PType::Vmid, false)),
            "digest" => Some((PType::Str { max_len: Some(40) }, true)),
            "delete" | "revert" => Some((PType::ConfigIdList, true)),
            "skiplock" | "force" | "freeze" => Some((PType::Bool, true)),
            "background_delay" if is_post => Some((
                PType::Int {
                    min: Some(1),
                    max: Some(30),
                },
                true,
            )),
            "import-working-storage" if is_post && v.at_least(8, 2) => {
                Some((PType::Str { max_len: None }, true))
            }
            other => config::config_key_type(other, v).map(|t| (t, true)),
        }
    };
    validate(&params, &spec, &["node", "vmid"], v)?;
    let vmpath = format!("/vms/{vmid_s}");
    let any_config = [
        "VM.Config.Disk",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.HWType",
        "VM.Config.Options",
        "VM.Config.Cloudinit",
    ];
    if !any_config.iter().any(|x| p.privs.has(&vmpath, x)) {
        return Err(ApiError::perm(&vmpath, &any_config.join(" | ")));
    }
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    for (k, val) in &params.list {
        if matches!(
            k.as_str(),
            "node"
                | "vmid"
                | "digest"
                | "delete"
                | "revert"
                | "skiplock"
                | "force"
                | "freeze"
                | "background_delay"
                | "import-working-storage"
        ) {
            continue;
        }
        let k = if k == "cdrom" {
            "ide2".to_string()
        } else {
            k.clone()
        };
        set.insert(k, val.clone());
    }
    let digest = params.get("digest").map(|s| s.to_string());
    let skiplock = params.flag("skiplock");
    if skiplock && p.name != "root@pam" {
        return Err(ApiError::param1(
            "skiplock",
            "Only root may use this option.",
        ));
    }
    let mut revert = Vec::new();
    for key in config::split_list(params.get("revert").unwrap_or("")) {
        if config::config_key_type(&key, v).is_none() {
            return Err(ApiError::param1(
                "revert",
                format!("unknown option '{key}'"),
            ));
        }
        if set.contains_key(&key) {
            return Err(ApiError::param1(
                "delete",
                format!("you can't use '-{key}' and -revert {key}' at the same time"),
            ));
        }
        revert.push(key);
    }
    let mut delete = Vec::new();
    for key in config::split_list(params.get("delete").unwrap_or("")) {
        let key = if key == "cdrom" {
            "ide2".to_string()
        } else {
            key
        };
        if set.contains_key(&key) {
            return Err(ApiError::param1(
                "delete",
                format!("you can't use '-{key}' and -delete {key}' at the same time"),
            ));
        }
        if revert.contains(&key) {
            return Err(ApiError::param1(
                "revert",
                format!("you can't use '-delete {key}' and -revert {key}' at the same time"),
            ));
        }
        if config::config_key_type(&key, v).is_none() {
            return Err(ApiError::param1(
                "delete",
                format!("unknown option '{key}'"),
            ));
        }
        delete.push(key);
    }
    // Per-key privileges.
    for key in delete.iter().chain(set.keys()) {
        match config::key_privilege(key) {
            None => {
                if p.name != "root@pam" {
                    return Err(ApiError::new(
                        500,
                        format!("only root can set '{key}' config"),
                    ));
                }
            }
            Some(priv_) => {
                if !p.privs.has(&vmpath, priv_) {
                    return Err(ApiError::perm(&vmpath, priv_));
                }
            }
        }
    }
    if params.get("freeze").is_some() && !p.privs.has(&vmpath, "VM.PowerMgmt") {
        return Err(ApiError::perm(&vmpath, "VM.PowerMgmt"));
    }
    let now = world.now();
    let vm = match world.vms.get(&vmid) {
        Some(vm) if vm.node == node && vm.kind == Kind::Qemu => vm,
        _ => return Err(missing_conf(node, vmid_s)),
    };
    if let Some(d) = &digest
        && !d.is_empty()
        && *d != vm.digest
    {
        return Err(ApiError::new(500, digest_conflict(v)));
    }
    if !skiplock && let Some(l) = vm.lock() {
        return Err(ApiError::new(500, format!("VM is locked ({l})")));
    }
    for key in &revert {
        if let Some(cur) = vm.conf.get(key) {
            set.insert(key.clone(), cur.clone());
        } else if vm.pending.contains_key(key) {
            delete.push(key.clone());
        }
    }
    if set.contains_key("memory") || set.contains_key("balloon") {
        let maxmem = set
            .get("memory")
            .or_else(|| vm.pending.get("memory"))
            .or_else(|| vm.conf.get("memory"))
            .and_then(|m| crate::model::parse_memory(m))
            .unwrap_or(512);
        let balloon = match set.get("balloon") {
            Some(b) => b.parse::<u64>().unwrap_or(0),
            None => vm
                .pending
                .get("balloon")
                .or_else(|| vm.conf.get("balloon"))
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0),
        };
        if balloon > 0 && balloon > maxmem {
            return Err(ApiError::new(
                500,
                "balloon value too large (must be smaller than assigned memory)",
            ));
        }
    }
    let upd = Update { set, delete };
    let mut logline = format!("update VM {vmid}:");
    for (k, val) in &upd.set {
        let shown = if k == "cipassword" {
            "<hidden>"
        } else {
            val.as_str()
        };
        logline.push_str(&format!(" -{k} {shown}"));
    }
    if !upd.delete.is_empty() {
        logline.push_str(&format!(" -delete {}", upd.delete.join(",")));
    }
    if is_post {
        world.task_seq = world.task_seq.wrapping_add(1);
        let seq = world.task_seq;
        let pid = 0x1000 + seq;
        let pstart = 0x0100_0000 + seq * 17;
        let upid = format!(
            "UPID:{node}:{pid:08X}:{pstart:08X}:{now:08X}:qmconfig:{vmid}:{}:",
            p.name
        );
        let due = if ctx.never_finish {
            None
        } else if ctx.apply_now {
            Some(Instant::now())
        } else {
            Some(Instant::now() + ctx.shared.task_duration)
        };
        world.tasks.insert(
            upid.clone(),
            Task {
                upid: upid.clone(),
                node: node.to_string(),
                vmid,
                user: p.name.clone(),
                starttime: now,
                pid,
                pstart,
                due,
                update: if ctx.never_finish { None } else { Some(upd) },
                finish: None,
                state: TaskState::Running,
                log: vec![logline],
                warnings: ctx.task_warnings,
                digest: digest.clone(),
                edit_first: ctx.edit_in_task.clone(),
            },
        );
        if ctx.apply_now {
            world.process_tasks(ctx.shared.refusal_delay);
        }
        ok(Value::from(upid))
    } else {
        let host_bits = world.node(node).map_or(46, |n| n.phys_bits);
        let Some(vm) = world.vms.get_mut(&vmid) else {
            return Err(missing_conf(node, vmid_s));
        };
        let out = config::run_update(vm, &upd, now, host_bits);
        if out.refused {
            // The real server takes seconds here; wait after releasing the state lock.
            ctx.delay_after.set(ctx.shared.refusal_delay);
        }
        if out.errors.is_empty() {
            ok(Value::Null)
        } else {
            Err(ApiError::param(out.errors))
        }
    }
}

fn task_route(
    ctx: &Ctx<'_>,
    world: &mut MutexGuard<'_, World>,
    p: &Principal,
    node: &str,
    upid: &str,
    sub: &[&str],
    params: Params,
) -> ApiResult {
    let v = world.version;
    let spec_status = |k: &str| match k {
        "node" => Some((PType::Node, false)),
        "upid" => Some((PType::Str { max_len: None }, false)),
        _ => None,
    };
    let check = |world: &World| -> Result<(), ApiError> {
        if !upid.starts_with("UPID:") || upid.split(':').count() < 9 {
            return Err(ApiError::param1(
                "upid",
                format!("unable to parse worker upid '{upid}'"),
            ));
        }
        let Some(task) = world.tasks.get(upid).filter(|t| t.node == node) else {
            return Err(ApiError::param1("upid", "no such task"));
        };
        if task.user != p.name && !p.privs.has(&format!("/nodes/{node}"), "Sys.Audit") {
            return Err(ApiError::perm(&format!("/nodes/{node}"), "Sys.Audit"));
        }
        Ok(())
    };
    match (ctx.method, sub) {
        ("GET", ["status"]) => {
            validate(&params, &spec_status, &["node", "upid"], v)?;
            check(world)?;
            let Some(t) = world.tasks.get(upid) else {
                return Err(ApiError::param1("upid", "no such task"));
            };
            let mut r = json!({
                "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                "starttime": t.starttime, "type": "qmconfig", "id": t.vmid.to_string(),
                "user": t.user,
            });
            match &t.state {
                TaskState::Running => r["status"] = json!("running"),
                TaskState::Stopped(exit) => {
                    r["status"] = json!("stopped");
                    r["exitstatus"] = json!(exit);
                }
            }
            ok(r)
        }
        ("GET", ["log"]) => {
            validate(
                &params,
                &|k| match k {
                    "start" | "limit" => Some((
                        PType::Int {
                            min: Some(0),
                            max: None,
                        },
                        true,
                    )),
                    "download" => Some((PType::Bool, true)),
                    other => spec_status(other),
                },
                &["node", "upid"],
                v,
            )?;
            check(world)?;
            let Some(t) = world.tasks.get(upid) else {
                return Err(ApiError::param1("upid", "no such task"));
            };
            let start: usize = params
                .get("start")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let limit: usize = params
                .get("limit")
                .and_then(|s| s.parse().ok())
                .unwrap_or(50);
            let rows: Vec<Value> = t
                .log
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, l)| json!({ "n": i + 1, "t": l }))
                .collect();
            ok(Value::Array(rows))
        }
        _ => Err(ApiError::no_method(ctx.method, ctx.path)),
    }
}
