//! Proxmox VE API client: transport (TLS, auth, retries, errors) and typed endpoints.

use std::time::Duration;

use crate::secret::Secret;
pub use crate::tls::TlsMode;

/// Everything needed to reach and authenticate to one Proxmox VE cluster.
#[derive(Debug, Clone)]
pub struct ClusterTarget {
    /// Name from the config (`[[cluster]] name`), used in messages.
    pub name: String,
    /// Base URLs such as `https://pve1.example.com:8006`: the primary first, then fallbacks.
    pub urls: Vec<String>,
    pub auth: Auth,
    pub tls: TlsMode,
    /// Overall timeout of one request.
    pub timeout: Duration,
    /// Timeout of the TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// The HTTP CONNECT proxy to go through; none from the environment (see `crate::proxy`).
    pub proxy: Option<crate::proxy::ProxyUrl>,
}

#[derive(Debug, Clone)]
pub enum Auth {
    /// API token: `id` is `user@realm!tokenid`.
    Token { id: String, secret: Secret },
    /// Ticket login with user (`user@realm`) and password.
    Password { user: String, password: Secret },
}

pub mod api;
pub mod client;
pub mod error;
pub mod export;
pub mod parallel;
pub mod stats;
pub mod types;

pub use api::TaskOutcome;
pub use client::{Client, RetryPolicy};
pub use error::{ApiError, ApiErrorKind, ApiResult};
pub use stats::{ApiStats, RequestOutcome};
