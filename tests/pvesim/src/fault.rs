//! Faults injected on demand.

use std::time::Duration;

/// What a fault does to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this status and an optional message (first line = reason phrase). 401 and
    /// 59x answer with an empty body, others with the usual error envelope.
    Status { code: u16, message: Option<String> },
    /// Wait this long, then handle the request normally.
    Latency(Duration),
    /// Keep the connection silent for this long, then close it without an answer.
    Hang(Duration),
    /// Close the connection at once without an answer.
    Close,
    /// 200 with a truncated, unparsable JSON body.
    MalformedJson,
    /// 200 with the real answer whose JSON types are wrong (numbers as strings, strings as
    /// numbers, a top-level array wrapped into an object).
    WrongTypes,
    /// 200 with the real answer padded to about this many MiB (still valid JSON).
    HugeBody { mib: usize },
    /// An asynchronous write returns its UPID, but the task stays `running` forever and the
    /// change is never applied.
    TaskNeverFinishes,
    /// An asynchronous write is applied, but its task ends with `WARNINGS: n` instead of `OK`
    /// (still a success for PVE).
    TaskWarnings(u32),
    /// Someone else (an admin) writes `key = value` into the config of the request's VM:
    /// before the request is handled, or with `.after_apply(true)` after an asynchronous
    /// write was accepted and before its worker runs (the digest check then fails in the task,
    /// as qemu-server's worker re-checks it under the config lock).
    ConcurrentEdit { key: String, value: String },
}

/// How the path of a fault is matched (paths without the `/api2/json` prefix).
#[derive(Clone, Debug, PartialEq)]
pub enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
}

/// A fault: which requests it hits, what it does, how often.
///
/// ```text
/// sim.add_fault(Fault::on("POST", "/nodes/pve1/qemu/101/config").status(596).after_apply(true).times(1));
/// sim.add_fault(Fault::any().unauthorized_from(5)); // 401 for the 5th request on, forever
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub(crate) method: Option<String>,
    pub(crate) path: PathMatch,
    pub(crate) kind: FaultKind,
    pub(crate) after_apply: bool,
    /// None = forever.
    pub(crate) times: Option<u32>,
    /// Matching requests to let through before the fault starts.
    pub(crate) skip: u32,
}

fn strip_prefix(p: &str) -> String {
    let p = p.strip_prefix("/api2/json").unwrap_or(p);
    if p.is_empty() {
        "/".to_string()
    } else {
        p.to_string()
    }
}

impl Fault {
    /// An admin's edit of `key = value` on the request's VM (see [`FaultKind::ConcurrentEdit`]).
    pub fn concurrent_edit(mut self, key: &str, value: &str) -> Self {
        self.kind = FaultKind::ConcurrentEdit {
            key: key.to_string(),
            value: value.to_string(),
        };
        self
    }

    /// Requests with this method (`"*"` = any) and exactly this path.
    pub fn on(method: &str, path: &str) -> Self {
        Fault {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            path: PathMatch::Exact(strip_prefix(path)),
            kind: FaultKind::Status {
                code: 500,
                message: None,
            },
            after_apply: false,
            times: None,
            skip: 0,
        }
    }

    /// Requests with this method (`"*"` = any) whose path starts with `prefix`.
    pub fn on_prefix(method: &str, prefix: &str) -> Self {
        let mut f = Fault::on(method, "/");
        f.path = PathMatch::Prefix(strip_prefix(prefix));
        f
    }

    /// Every request.
    pub fn any() -> Self {
        let mut f = Fault::on("*", "/");
        f.path = PathMatch::Any;
        f
    }

    pub fn status(mut self, code: u16) -> Self {
        let message = match &self.kind {
            FaultKind::Status { message, .. } => message.clone(),
            _ => None,
        };
        self.kind = FaultKind::Status { code, message };
        self
    }

    /// Message for a status fault (sets the kind to a status fault, 500 unless set).
    pub fn message(mut self, msg: &str) -> Self {
        let code = match &self.kind {
            FaultKind::Status { code, .. } => *code,
            _ => 500,
        };
        self.kind = FaultKind::Status {
            code,
            message: Some(msg.to_string()),
        };
        self
    }

    pub fn latency(mut self, d: Duration) -> Self {
        self.kind = FaultKind::Latency(d);
        self
    }

    pub fn hang(mut self, d: Duration) -> Self {
        self.kind = FaultKind::Hang(d);
        self
    }

    pub fn close(mut self) -> Self {
        self.kind = FaultKind::Close;
        self
    }

    pub fn malformed_json(mut self) -> Self {
        self.kind = FaultKind::MalformedJson;
        self
    }

    pub fn wrong_types(mut self) -> Self {
        self.kind = FaultKind::WrongTypes;
        self
    }

    pub fn huge_body(mut self, mib: usize) -> Self {
        self.kind = FaultKind::HugeBody { mib };
        self
    }

    pub fn task_warnings(mut self, n: u32) -> Self {
        self.kind = FaultKind::TaskWarnings(n);
        self
    }

    pub fn task_never_finishes(mut self) -> Self {
        self.kind = FaultKind::TaskNeverFinishes;
        self
    }

    pub fn kind(mut self, kind: FaultKind) -> Self {
        self.kind = kind;
        self
    }

    /// Handle the request first (the change is made), then answer with the fault.
    pub fn after_apply(mut self, yes: bool) -> Self {
        self.after_apply = yes;
        self
    }

    /// Hit only this many requests (default: forever).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    pub fn forever(mut self) -> Self {
        self.times = None;
        self
    }

    /// Let this many matching requests through first.
    pub fn skip(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// 401 (empty body) for every matching request from the `n`th (1-based) on.
    pub fn unauthorized_from(self, n: u32) -> Self {
        let mut f = self.status(401).skip(n.saturating_sub(1)).forever();
        f.kind = FaultKind::Status {
            code: 401,
            message: Some("authentication failure".into()),
        };
        f
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        if let Some(m) = &self.method
            && m != method
        {
            return false;
        }
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// Turns JSON types upside down.
pub(crate) fn wrong_types(v: serde_json::Value, top: bool) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => Value::String(format!("{n}x")),
        Value::String(s) => Value::from(s.len() as i64 * 7 + 1),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Array(a) => {
            let inner: Vec<Value> = a.into_iter().map(|x| wrong_types(x, false)).collect();
            if top {
                serde_json::json!({ "items": inner })
            } else {
                Value::Array(inner)
            }
        }
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k, wrong_types(x, false)))
                .collect(),
        ),
        Value::Null => Value::from(0),
    }
}
