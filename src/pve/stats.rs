//! Health of the API as one client saw it: every request by outcome, its time and the bytes
//! received. Counted where every request passes (`Client::send`), one entry per request that
//! went out: a retry, a re-login and a fallback URL are requests of their own.

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::error::{ApiError, ApiErrorKind};

/// How one request ended, from the typed error the client makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// A 200 whose body was what the API documents.
    Ok,
    /// A 4xx other than 401/403 (parameter verification, ...).
    ClientError,
    /// A 5xx (including 595-597 of the proxying node) or a 200 whose body was unusable.
    ServerError,
    /// No answer in time (connect or overall timeout).
    Timeout,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// 401 or 403: the token, ticket or login was refused, or a privilege is missing.
    Auth,
    /// No connection: refused, unreachable, name not found, or broken mid-answer.
    Connect,
}

impl RequestOutcome {
    /// Every outcome, in the order the metrics and JSON show them.
    pub const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Ok,
        RequestOutcome::ClientError,
        RequestOutcome::ServerError,
        RequestOutcome::Timeout,
        RequestOutcome::Tls,
        RequestOutcome::Auth,
        RequestOutcome::Connect,
    ];

    /// The label value (`ok`, `client_error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Ok => "ok",
            RequestOutcome::ClientError => "client_error",
            RequestOutcome::ServerError => "server_error",
            RequestOutcome::Timeout => "timeout",
            RequestOutcome::Tls => "tls",
            RequestOutcome::Auth => "auth",
            RequestOutcome::Connect => "connect",
        }
    }

    /// The outcome of a request that ended in `error`.
    pub fn of_error(error: &ApiError) -> RequestOutcome {
        match error.kind {
            ApiErrorKind::Auth | ApiErrorKind::NeedTfa | ApiErrorKind::Permission => {
                RequestOutcome::Auth
            }
            ApiErrorKind::BadRequest => RequestOutcome::ClientError,
            ApiErrorKind::Server
            | ApiErrorKind::NotImplemented
            | ApiErrorKind::Unreachable
            | ApiErrorKind::Decode => RequestOutcome::ServerError,
            ApiErrorKind::Status(code) if code >= 500 => RequestOutcome::ServerError,
            ApiErrorKind::Status(_) => RequestOutcome::ClientError,
            ApiErrorKind::Timeout => RequestOutcome::Timeout,
            ApiErrorKind::Tls => RequestOutcome::Tls,
            ApiErrorKind::Connect => RequestOutcome::Connect,
        }
    }

    /// The outcome of a request that ended in `result`.
    pub fn of<T>(result: &Result<T, ApiError>) -> RequestOutcome {
        match result {
            Ok(_) => RequestOutcome::Ok,
            Err(e) => RequestOutcome::of_error(e),
        }
    }
}

/// Requests per outcome; serialised with every outcome, 0 where none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts([u64; RequestOutcome::ALL.len()]);

impl OutcomeCounts {
    pub fn get(&self, outcome: RequestOutcome) -> u64 {
        self.0[outcome as usize]
    }

    fn add(&mut self, outcome: RequestOutcome) {
        self.0[outcome as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for OutcomeCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(RequestOutcome::ALL.len()))?;
        for outcome in RequestOutcome::ALL {
            map.serialize_entry(outcome.as_str(), &self.get(outcome))?;
        }
        map.end()
    }
}

/// What one client's requests came to.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApiStats {
    pub requests: OutcomeCounts,
    /// Time of all requests together, from sending to the end of the answer's body.
    #[serde(rename = "time_seconds", serialize_with = "seconds")]
    pub total: Duration,
    /// Time of the slowest request.
    #[serde(rename = "request_seconds_max", serialize_with = "seconds")]
    pub slowest: Duration,
    /// `GET /cluster/resources`: method and path (never a query or a credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_endpoint: Option<String>,
    /// Plaintext HTTP bytes received (headers and bodies, after TLS).
    pub received_bytes: u64,
}

impl ApiStats {
    /// Counts one request to `endpoint` that took `took` and ended as `outcome`.
    pub fn record(&mut self, endpoint: &str, outcome: RequestOutcome, took: Duration) {
        self.requests.add(outcome);
        self.total += took;
        if took >= self.slowest {
            self.slowest = took;
            self.slowest_endpoint = Some(endpoint.to_string());
        }
    }
}

/// A duration as seconds, to the millisecond.
fn seconds<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(millis_as_secs(*d))
}

/// A duration in seconds, rounded to the millisecond (`0.125`, never float noise).
pub fn millis_as_secs(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: ApiErrorKind) -> ApiError {
        ApiError::new(kind, "GET /x", "m")
    }

    #[test]
    fn outcomes_follow_the_typed_error() {
        use ApiErrorKind::*;
        use RequestOutcome as O;
        let cases = [
            (Auth, O::Auth),
            (NeedTfa, O::Auth),
            (Permission, O::Auth),
            (BadRequest, O::ClientError),
            (Status(404), O::ClientError),
            (Status(429), O::ClientError),
            (Server, O::ServerError),
            (NotImplemented, O::ServerError),
            (Unreachable, O::ServerError),
            (Status(502), O::ServerError),
            (Decode, O::ServerError),
            (Timeout, O::Timeout),
            (Tls, O::Tls),
            (Connect, O::Connect),
        ];
        for (kind, outcome) in cases {
            assert_eq!(
                RequestOutcome::of_error(&error(kind.clone())),
                outcome,
                "{kind:?}"
            );
        }
        assert_eq!(RequestOutcome::of(&Ok::<(), ApiError>(())), O::Ok);
    }

    #[test]
    fn every_outcome_has_its_own_slot_and_label() {
        let labels: std::collections::BTreeSet<&str> =
            RequestOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), RequestOutcome::ALL.len());
        for (i, outcome) in RequestOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?}");
        }
    }

    #[test]
    fn stats_keep_the_sum_and_the_slowest() {
        let mut stats = ApiStats::default();
        stats.record("GET /a", RequestOutcome::Ok, Duration::from_millis(80));
        stats.record(
            "GET /b",
            RequestOutcome::Timeout,
            Duration::from_millis(900),
        );
        stats.record("GET /c", RequestOutcome::Ok, Duration::from_millis(20));
        assert_eq!(stats.requests.get(RequestOutcome::Ok), 2);
        assert_eq!(stats.requests.get(RequestOutcome::Timeout), 1);
        assert_eq!(stats.requests.total(), 3);
        assert_eq!(stats.total, Duration::from_millis(1000));
        assert_eq!(stats.slowest, Duration::from_millis(900));
        assert_eq!(stats.slowest_endpoint.as_deref(), Some("GET /b"));
        let json = serde_json::to_value(&stats).expect("serialises");
        assert_eq!(json["requests"]["ok"], 2);
        assert_eq!(json["requests"]["auth"], 0);
        assert_eq!(json["time_seconds"], 1.0);
        assert_eq!(json["request_seconds_max"], 0.9);
    }
}
