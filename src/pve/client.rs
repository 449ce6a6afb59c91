//! HTTP transport to one cluster: connection pool, authentication, timeouts, retries of
//! reads, fallback URLs, and Proxmox's error shapes turned into [`ApiError`].

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiErrorKind, ApiResult};
use super::stats::{ApiStats, RequestOutcome};
use super::{Auth, ClusterTarget, TlsMode};
use crate::secret::Secret;
use crate::tls::{self, Refusal, TlsObservations};

/// Largest body read by default. Bigger answers (metrics of thousands of VMs) pass their
/// own limit; anything over a limit is an error, never an unbounded allocation.
pub const DEFAULT_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Largest error body we read (Proxmox's are tiny).
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// How reads are retried: `attempts` tries in all, waiting `base_delay`, then twice that, ...
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based): `base_delay`, then doubling.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.base_delay * 2u32.saturating_pow(attempt.saturating_sub(1))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(250),
        }
    }
}

/// Counters of one client's traffic, for run summaries and benchmarks.
#[derive(Debug, Default)]
pub struct TrafficStats {
    bytes_received: Arc<AtomicU64>,
    api: Mutex<ApiStats>,
}

impl TrafficStats {
    /// Requests sent, whatever their outcome (each is recorded in `api`).
    pub fn requests(&self) -> u64 {
        self.api
            .lock()
            .map(|s| s.requests.total())
            .unwrap_or_default()
    }

    /// Requests by outcome, their time, and the bytes received so far.
    pub fn api(&self) -> ApiStats {
        let mut stats = self.api.lock().map(|s| s.clone()).unwrap_or_default();
        stats.received_bytes = self.bytes_received();
        stats
    }

    fn record(&self, endpoint: &str, outcome: RequestOutcome, took: Duration) {
        if let Ok(mut stats) = self.api.lock() {
            stats.record(endpoint, outcome, took);
        }
    }

    /// Plaintext HTTP bytes received (headers and bodies, after TLS).
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::Relaxed)
    }
}

struct Session {
    ticket: Secret,
    csrf: Secret,
}

/// A connection to one Proxmox VE cluster. Cheap to share between threads.
pub struct Client {
    cluster: String,
    bases: Vec<String>,
    preferred: AtomicUsize,
    agent: ureq::Agent,
    auth: Auth,
    session: Mutex<Option<Session>>,
    observations: Arc<TlsObservations>,
    tls_mode: TlsMode,
    warnings: Vec<String>,
    retry: RetryPolicy,
    stats: TrafficStats,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster", &self.cluster)
            .field("bases", &self.bases)
            .finish_non_exhaustive()
    }
}

/// Query or form parameters of one call.
pub type Params<'a> = [(&'a str, String)];

impl Client {
    /// Sets up the client (no request is made yet). Fails on unusable TLS settings.
    pub fn new(target: &ClusterTarget) -> ApiResult<Client> {
        Self::with_retry(target, RetryPolicy::default())
    }

    pub fn with_retry(target: &ClusterTarget, retry: RetryPolicy) -> ApiResult<Client> {
        let setup_error =
            |message: String| ApiError::new(ApiErrorKind::Tls, target.name.clone(), message);
        if target.urls.is_empty() {
            return Err(ApiError::new(
                ApiErrorKind::Connect,
                target.name.clone(),
                "no URL configured",
            ));
        }
        let observations = Arc::new(TlsObservations::default());
        let tls_config = tls::client_config(&target.tls, observations.clone())
            .map_err(|e| setup_error(format!("TLS setup: {e}")))?;
        let stats = TrafficStats::default();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(target.timeout))
            .timeout_connect(Some(target.connect_timeout))
            .max_idle_connections(32)
            .max_idle_connections_per_host(16)
            .user_agent(concat!("pvescale/", env!("CARGO_PKG_VERSION")));
        let agent = tls::agent(
            config,
            target.proxy.as_ref(),
            tls_config,
            stats.bytes_received.clone(),
        );
        let mut warnings = Vec::new();
        if target.tls == TlsMode::Insecure {
            warnings.push(format!(
                "cluster {}: TLS certificate verification is OFF (insecure = true): anyone on \
                 the network path can impersonate the server and steal the credentials; set \
                 ca_file = \"/etc/pve/pve-root-ca.pem\" or fingerprint = \"...\" instead",
                target.name
            ));
        }
        let bases = target
            .urls
            .iter()
            .map(|u| format!("{}/api2/json", u.trim_end_matches('/')))
            .collect();
        Ok(Client {
            cluster: target.name.clone(),
            bases,
            preferred: AtomicUsize::new(0),
            agent,
            auth: target.auth.clone(),
            session: Mutex::new(None),
            observations,
            tls_mode: target.tls.clone(),
            warnings,
            retry,
            stats,
        })
    }

    /// Name of the cluster in the config.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Warnings about the connection settings (e.g. `insecure`), to show on every run.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn stats(&self) -> &TrafficStats {
        &self.stats
    }

    /// GET returning the envelope's `data`, typed.
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &Params) -> ApiResult<T> {
        self.get_with(path, query, DEFAULT_BODY_LIMIT, |reader| {
            decode_envelope(reader)
        })
    }

    /// GET with a custom body parser (streaming) and body limit.
    pub fn get_with<R>(
        &self,
        path: &str,
        query: &Params,
        limit: u64,
        parse: impl Fn(&mut dyn Read) -> Result<R, String>,
    ) -> ApiResult<R> {
        let mut attempt = 1;
        loop {
            match self.call(Method::Get, path, query, limit, &parse) {
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let wait = self.retry.delay(attempt);
                    log::debug!("{e}; retrying in {} ms", wait.as_millis());
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// POST (form-encoded) returning the envelope's `data`. Never retried: on a
    /// timeout or 59x the error says `outcome_unknown`, and the caller must re-read.
    pub fn post<T: DeserializeOwned>(&self, path: &str, form: &Params) -> ApiResult<T> {
        self.call(Method::Post, path, form, DEFAULT_BODY_LIMIT, &|reader| {
            decode_envelope(reader)
        })
    }

    /// PUT (form-encoded); same rules as [`Client::post`].
    pub fn put<T: DeserializeOwned>(&self, path: &str, form: &Params) -> ApiResult<T> {
        self.call(Method::Put, path, form, DEFAULT_BODY_LIMIT, &|reader| {
            decode_envelope(reader)
        })
    }

    /// One call, with authentication (and one re-login when a ticket expired).
    fn call<R>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        limit: u64,
        parse: &dyn Fn(&mut dyn Read) -> Result<R, String>,
    ) -> ApiResult<R> {
        let result = self.call_once(method, path, params, limit, parse);
        match (&result, &self.auth) {
            (Err(e), Auth::Password { .. }) if e.kind == ApiErrorKind::Auth => {
                // The ticket may have expired (2 h): log in again, once.
                self.clear_session();
                self.call_once(method, path, params, limit, parse)
            }
            _ => result,
        }
    }

    fn call_once<R>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        limit: u64,
        parse: &dyn Fn(&mut dyn Read) -> Result<R, String>,
    ) -> ApiResult<R> {
        let auth_headers = self.auth_headers(method)?;
        self.send(method, path, params, &auth_headers, limit, parse)
    }

    /// Sends one request, trying the URLs in order (the last one that worked first) while
    /// the connection itself fails. A request that may have reached the server is never
    /// sent again here.
    fn send<R>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        headers: &[(&'static str, String)],
        limit: u64,
        parse: &dyn Fn(&mut dyn Read) -> Result<R, String>,
    ) -> ApiResult<R> {
        let endpoint = format!("{} {}", method.as_str(), path);
        let first = self.preferred.load(Ordering::Relaxed) % self.bases.len();
        let mut failures: Vec<ApiError> = Vec::new();
        for i in 0..self.bases.len() {
            let index = (first + i) % self.bases.len();
            let url = format!("{}{}", self.bases[index], path);
            let begun = Instant::now();
            // Every request is counted and timed here, whatever becomes of it (see `stats`).
            match self.dispatch(method, &url, params, headers) {
                Ok(response) => {
                    if index != first {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    let result = self.handle_response(method, &endpoint, response, limit, parse);
                    let outcome = RequestOutcome::of(&result);
                    self.stats.record(&endpoint, outcome, begun.elapsed());
                    return result;
                }
                Err(e) => {
                    let error = self.transport_error(method, &endpoint, &url, e);
                    let outcome = RequestOutcome::of_error(&error);
                    self.stats.record(&endpoint, outcome, begun.elapsed());
                    // Only a failure to connect proves the request never left: then another
                    // node may take it. Anything else on a write: outcome unknown, stop.
                    let never_sent = method == Method::Get || !error.outcome_unknown;
                    failures.push(error);
                    if !never_sent {
                        break;
                    }
                }
            }
        }
        // `Client::new` refuses a cluster without URLs, so there is a first failure; should
        // that ever change, this says so instead of panicking.
        if failures.is_empty() {
            return Err(ApiError::new(
                ApiErrorKind::Connect,
                endpoint,
                "no URL to send the request to".to_string(),
            ));
        }
        let mut error = failures.remove(0);
        if !failures.is_empty() {
            let others: Vec<String> = failures.iter().map(|f| f.message.clone()).collect();
            error.message = format!(
                "{}; fallback URLs failed too: {}",
                error.message,
                others.join("; ")
            );
        }
        Err(error)
    }

    /// Sends one request to `url`: GET with `params` as the query, POST/PUT as a form.
    fn dispatch(
        &self,
        method: Method,
        url: &str,
        params: &Params,
        headers: &[(&'static str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        match method {
            Method::Get => {
                let mut req = self.agent.get(url);
                for (name, value) in headers {
                    req = req.header(*name, value);
                }
                for (name, value) in params {
                    req = req.query(*name, value);
                }
                req.call()
            }
            Method::Post | Method::Put => {
                let mut req = if method == Method::Post {
                    self.agent.post(url)
                } else {
                    self.agent.put(url)
                };
                for (name, value) in headers {
                    req = req.header(*name, value);
                }
                req.send_form(params.iter().map(|(k, v)| (*k, v.as_str())))
            }
        }
    }

    fn handle_response<R>(
        &self,
        method: Method,
        endpoint: &str,
        mut response: ureq::http::Response<ureq::Body>,
        limit: u64,
        parse: &dyn Fn(&mut dyn Read) -> Result<R, String>,
    ) -> ApiResult<R> {
        let status = response.status().as_u16();
        let reason = tls::take_last_reason_phrase();
        if status == 200 {
            let mut reader = response.body_mut().with_config().limit(limit).reader();
            return parse(&mut reader).map_err(|why| {
                let message = if why.contains("body size") || why.contains("limit") {
                    format!("answer larger than {} bytes: {why}", limit)
                } else {
                    format!("unexpected answer: {why}")
                };
                ApiError::new(ApiErrorKind::Decode, endpoint, message)
            });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_string()
            .unwrap_or_default();
        // Not escaped here: Proxmox ends its messages with a line feed, trimmed first;
        // ApiError::new escapes the message, and the parameter errors are escaped below.
        let parsed: ErrorBody = serde_json::from_str(&body).unwrap_or_default();
        let mut message = parsed
            .message
            .map(|m| m.trim_end().to_string())
            .filter(|m| !m.is_empty())
            .or(reason)
            .unwrap_or_else(|| canonical_reason(status).to_string());
        let kind = match status {
            400 => ApiErrorKind::BadRequest,
            401 => ApiErrorKind::Auth,
            403 => ApiErrorKind::Permission,
            500 => ApiErrorKind::Server,
            501 => ApiErrorKind::NotImplemented,
            595..=597 => ApiErrorKind::Unreachable,
            other => ApiErrorKind::Status(other),
        };
        if kind == ApiErrorKind::Auth {
            message = self.explain_auth_failure(&message);
        }
        let mut error = ApiError::new(kind, endpoint, format!("{status} {message}"));
        if let Some(serde_json::Value::Object(map)) = parsed.errors {
            error.param_errors = map
                .into_iter()
                .map(|(k, v)| {
                    let why = v.as_str().map(str::to_string).unwrap_or(v.to_string());
                    let why = crate::server_text::escape(why.trim_end()).into_owned();
                    (crate::server_text::escape(&k).into_owned(), why)
                })
                .collect();
            error.param_errors.sort();
        }
        error.outcome_unknown = method != Method::Get && (595..=599).contains(&status);
        Err(error)
    }

    fn explain_auth_failure(&self, message: &str) -> String {
        match &self.auth {
            Auth::Token { id, .. } => format!(
                "{message}: the API token {id} was refused (wrong secret, token deleted or \
                 expired, or user disabled); check token and token_secret_file"
            ),
            Auth::Password { user, .. } => format!(
                "{message}: login as {user} was refused (wrong password or realm, or account \
                 disabled)"
            ),
        }
    }

    fn transport_error(
        &self,
        method: Method,
        endpoint: &str,
        url: &str,
        error: ureq::Error,
    ) -> ApiError {
        let host = url.split("/api2/json").next().unwrap_or(url).to_string();
        let (kind, message, unknown) = match &error {
            ureq::Error::Timeout(which) => {
                let connecting = matches!(which, ureq::Timeout::Connect | ureq::Timeout::Resolve);
                (
                    ApiErrorKind::Timeout,
                    format!("{host}: no answer in time ({which:?} timeout)"),
                    !connecting,
                )
            }
            ureq::Error::HostNotFound => (
                ApiErrorKind::Connect,
                format!("{host}: host name not found"),
                false,
            ),
            ureq::Error::ConnectionFailed => (
                ApiErrorKind::Connect,
                format!("{host}: connection refused or unreachable"),
                false,
            ),
            ureq::Error::Io(io) if never_connected(io.kind()) => {
                (ApiErrorKind::Connect, format!("{host}: {io}"), false)
            }
            _ => match tls::refusal_of(&error) {
                Some(reason) => (
                    ApiErrorKind::Tls,
                    self.explain_tls_failure(&host, &reason),
                    false,
                ),
                None => (
                    ApiErrorKind::Connect,
                    format!("{host}: {}", describe_io(&error)),
                    true,
                ),
            },
        };
        let mut api_error = ApiError::new(kind, endpoint, message);
        // An I/O error or timeout after the connection was made: a GET is retried by the
        // caller; a write may have been applied.
        api_error.outcome_unknown = method != Method::Get && unknown;
        api_error
    }

    fn explain_tls_failure(&self, host: &str, refusal: &Refusal) -> String {
        let what = refusal.what();
        if let Refusal::FingerprintMismatch(_) = refusal {
            return format!("{host}: TLS: {what}");
        }
        let presented = self
            .observations
            .last_presented_fingerprint()
            .map(|fp| format!(" The server presented a certificate with SHA-256 fingerprint {fp}."))
            .unwrap_or_default();
        let hint = self.tls_hint(refusal);
        format!("{host}: TLS: handshake refused ({what}).{presented}{hint}")
    }

    /// What to do about a refusal, by its cause and by how the cluster is verified.
    fn tls_hint(&self, refusal: &Refusal) -> String {
        const RENEW: &str = " Renew it on the node (Node > System > Certificates, or \
             `pvecm updatecerts --force`), and check that this machine's clock is right.";
        match refusal {
            Refusal::UnknownIssuer => match &self.tls_mode {
                TlsMode::CaFile(path) => {
                    format!(" It is not signed by the CA in {}.", path.display())
                }
                TlsMode::SystemRoots => " It is not trusted by the system's root \
                     certificates: set ca_file = \"/etc/pve/pve-root-ca.pem\" (copied from a \
                     node), or pin fingerprint = \"...\" after checking it in the Proxmox GUI \
                     (Node > System > Certificates)."
                    .to_string(),
                _ => String::new(),
            },
            Refusal::Expired { .. } | Refusal::NotYetValid { .. } => RENEW.to_string(),
            Refusal::WrongHost { .. } => " Use a URL with a name the certificate holds, \
                 or add this name to the node's certificate."
                .to_string(),
            Refusal::CaAsServerCertificate => " A CA certificate may sign server \
                 certificates but not be one: give the node its own certificate signed by that \
                 CA (`pvecm updatecerts --force`), or pin the presented fingerprint."
                .to_string(),
            Refusal::OldProtocol => " Upgrade the server (or the proxy in front of it) \
                 to TLS 1.2 or 1.3; Proxmox VE itself speaks both."
                .to_string(),
            Refusal::FingerprintMismatch(_) | Refusal::Other(_) => String::new(),
        }
    }

    fn clear_session(&self) {
        if let Ok(mut guard) = self.session.lock() {
            *guard = None;
        }
    }

    fn auth_headers(&self, method: Method) -> ApiResult<Vec<(&'static str, String)>> {
        match &self.auth {
            Auth::Token { id, secret } => Ok(vec![(
                "Authorization",
                format!("PVEAPIToken={id}={}", secret.expose()),
            )]),
            Auth::Password { user, password } => {
                let mut guard = self.session.lock().map_err(|_| {
                    ApiError::new(ApiErrorKind::Auth, "login", "session lock poisoned")
                })?;
                if guard.is_none() {
                    *guard = Some(self.login(user, password)?);
                }
                let Some(session) = guard.as_ref() else {
                    return Err(ApiError::new(ApiErrorKind::Auth, "login", "no session"));
                };
                let mut headers = vec![(
                    "Cookie",
                    format!("PVEAuthCookie={}", session.ticket.expose()),
                )];
                if method != Method::Get {
                    headers.push(("CSRFPreventionToken", session.csrf.expose().to_string()));
                }
                Ok(headers)
            }
        }
    }

    fn login(&self, user: &str, password: &Secret) -> ApiResult<Session> {
        #[derive(Deserialize)]
        struct Ticket {
            ticket: Option<String>,
            #[serde(rename = "CSRFPreventionToken")]
            csrf: Option<String>,
            #[serde(
                rename = "NeedTFA",
                default,
                deserialize_with = "super::types::de_flag"
            )]
            need_tfa: bool,
        }
        let form = [
            ("username", user.to_string()),
            ("password", password.expose().to_string()),
        ];
        let mut attempt = 1;
        let answer: Ticket = loop {
            match self.send(
                Method::Post,
                "/access/ticket",
                &form,
                &[],
                DEFAULT_BODY_LIMIT,
                &|r| decode_envelope(r),
            ) {
                // Logging in changes nothing on the server, so it may be retried.
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    std::thread::sleep(self.retry.delay(attempt));
                    attempt += 1;
                }
                other => break other?,
            }
        };
        if answer.need_tfa {
            return Err(ApiError::new(
                ApiErrorKind::NeedTfa,
                "POST /access/ticket",
                format!(
                    "user {user} has two-factor authentication, which a timer-driven tool \
                     cannot answer: create an API token instead (pveum user token add ...) \
                     and set token + token_secret_file"
                ),
            ));
        }
        match (answer.ticket, answer.csrf) {
            (Some(ticket), Some(csrf)) => Ok(Session {
                ticket: Secret::new(ticket),
                csrf: Secret::new(csrf),
            }),
            _ => Err(ApiError::new(
                ApiErrorKind::Decode,
                "POST /access/ticket",
                "login answer without ticket or CSRFPreventionToken",
            )),
        }
    }
}

/// I/O errors that prove the connection never came up, so nothing was sent.
fn never_connected(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
    )
}

fn describe_io(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) => format!("connection error: {io}"),
        other => format!("connection error: {other}"),
    }
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    message: Option<String>,
    errors: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

/// Reads `{"data": ...}` into `T`, with every string in it escaped for display first
/// (`server_text`: a VM name or tag must not carry terminal or journal control codes).
pub fn decode_envelope<T: DeserializeOwned>(reader: &mut dyn Read) -> Result<T, String> {
    let mut value: serde_json::Value =
        serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|e| e.to_string())?;
    crate::server_text::escape_json(&mut value);
    let envelope: Envelope<T> = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(envelope.data)
}

fn canonical_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "authentication failure",
        403 => "Forbidden",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        595 => "No route to host (node unreachable)",
        596 => "Connection timed out (proxy)",
        597 => "Connection error",
        _ => "unexpected status",
    }
}
