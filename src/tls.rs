//! TLS for every HTTPS connection pvescale makes (the Proxmox API and the notification
//! channels): system roots, a CA file, a pinned certificate fingerprint, or (warned about)
//! no verification at all. Shared infrastructure: it knows nothing of Proxmox or of
//! notifications.
//!
//! ureq's built-in rustls connector cannot take a custom certificate verifier, so we plug
//! our own connector into ureq's connector chain. It records the fingerprint of every
//! certificate a server presents, so that a refusal can tell the admin exactly what the
//! server showed and what to pin.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};
use sha2::{Digest, Sha256};

use crate::proxy::ProxyUrl;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// How a server's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Verify against the system's root certificates.
    SystemRoots,
    /// Verify against the CA certificates in this PEM file (e.g. `/etc/pve/pve-root-ca.pem`).
    CaFile(std::path::PathBuf),
    /// Accept only a server certificate with this SHA-256 fingerprint
    /// (64 hex digits, any case, colons optional, as the Proxmox GUI shows it).
    Fingerprint(String),
    /// No verification at all (warned about on every run).
    Insecure,
}

/// Why a TLS handshake was refused, told apart so that the admin gets the fix for that
/// cause (an expired certificate is not a wrong CA, and an old server is neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not signed by a CA we trust (or by the configured one).
    UnknownIssuer,
    /// Past its end of validity, at this machine's time.
    Expired { not_after: Option<u64> },
    /// Not valid yet, at this machine's time.
    NotYetValid { not_before: Option<u64> },
    /// Valid, but for other names than the one in the URL.
    WrongHost { names: Vec<String> },
    /// The server presents a CA certificate as its own.
    CaAsServerCertificate,
    /// The server speaks only a TLS version older than 1.2.
    OldProtocol,
    /// The certificate does not match the pinned fingerprint.
    FingerprintMismatch(String),
    /// Anything else, in rustls's words.
    Other(String),
}

impl Refusal {
    pub fn from_rustls(error: &rustls::Error) -> Refusal {
        use rustls::{AlertDescription, CertificateError, Error, PeerIncompatible};
        match error {
            Error::AlertReceived(AlertDescription::ProtocolVersion)
            | Error::PeerIncompatible(
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => Refusal::OldProtocol,
            Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => Refusal::UnknownIssuer,
                CertificateError::Expired => Refusal::Expired { not_after: None },
                CertificateError::ExpiredContext { not_after, .. } => Refusal::Expired {
                    not_after: Some(not_after.as_secs()),
                },
                CertificateError::NotValidYet => Refusal::NotYetValid { not_before: None },
                CertificateError::NotValidYetContext { not_before, .. } => Refusal::NotYetValid {
                    not_before: Some(not_before.as_secs()),
                },
                CertificateError::NotValidForName => Refusal::WrongHost { names: Vec::new() },
                CertificateError::NotValidForNameContext { presented, .. } => Refusal::WrongHost {
                    names: presented.iter().map(|n| plain_name(n)).collect(),
                },
                CertificateError::Other(other)
                    if let Some(mismatch) = other.0.downcast_ref::<FingerprintMismatch>() =>
                {
                    Refusal::FingerprintMismatch(mismatch.to_string())
                }
                CertificateError::Other(other)
                    if matches!(
                        other.0.downcast_ref::<webpki::Error>(),
                        Some(webpki::Error::CaUsedAsEndEntity)
                    ) =>
                {
                    Refusal::CaAsServerCertificate
                }
                other => Refusal::Other(Error::InvalidCertificate(other.clone()).to_string()),
            },
            other => Refusal::Other(other.to_string()),
        }
    }

    /// What was wrong, in a phrase (no fix).
    pub fn what(&self) -> String {
        match self {
            Refusal::UnknownIssuer => "certificate not signed by a trusted CA".to_string(),
            Refusal::Expired { not_after } => match not_after {
                Some(t) => format!("certificate expired on {}", utc_date(*t)),
                None => "certificate expired".to_string(),
            },
            Refusal::NotYetValid { not_before } => match not_before {
                Some(t) => format!("certificate not valid before {}", utc_date(*t)),
                None => "certificate not valid yet".to_string(),
            },
            Refusal::WrongHost { names } if names.is_empty() => {
                "certificate not valid for this host name".to_string()
            }
            Refusal::WrongHost { names } => format!(
                "certificate not valid for this host name (it names {})",
                names.join(", ")
            ),
            Refusal::CaAsServerCertificate => {
                "the server presents a CA certificate as its own".to_string()
            }
            Refusal::OldProtocol => {
                "the server speaks only TLS older than 1.2, which pvescale does not accept"
                    .to_string()
            }
            Refusal::FingerprintMismatch(text) | Refusal::Other(text) => text.clone(),
        }
    }
}

/// Why a request's TLS handshake failed, if that is what failed.
pub fn refusal_of(error: &ureq::Error) -> Option<Refusal> {
    match error {
        ureq::Error::Rustls(e) => Some(Refusal::from_rustls(e)),
        ureq::Error::Tls(e) => Some(Refusal::Other((*e).to_string())),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(Refusal::from_rustls),
        _ => None,
    }
}

/// `pve1.example.com` from the verifier's `DnsName("pve1.example.com")` (and likewise
/// `IpAddress(...)`), so that the admin reads names, not Rust.
fn plain_name(shown: &str) -> String {
    shown
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map(|inner| inner.trim_matches('"').to_string())
        .unwrap_or_else(|| shown.to_string())
}

/// `2026-12-05 11:00:00 UTC` from seconds since the epoch.
fn utc_date(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{seconds} s after 1970"))
}

/// Formats a SHA-256 digest the way the Proxmox GUI shows certificate fingerprints.
pub fn format_fingerprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    format_fingerprint(&Sha256::digest(der))
}

/// Parses a fingerprint given with or without colons (any case) into 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "fingerprint must be 64 hex digits (SHA-256), with or without colons; got {} characters",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "fingerprint contains a non-hex digit".to_string())?;
    }
    Ok(out)
}

/// What the verifier saw during the last handshake, to explain a refusal.
#[derive(Debug, Default)]
pub struct TlsObservations {
    last_presented: Mutex<Option<String>>,
}

impl TlsObservations {
    pub fn last_presented_fingerprint(&self) -> Option<String> {
        self.last_presented.lock().ok().and_then(|g| g.clone())
    }

    fn record(&self, der: &[u8]) {
        if let Ok(mut guard) = self.last_presented.lock() {
            *guard = Some(certificate_fingerprint(der));
        }
    }
}

/// Builds the rustls configuration for a TLS mode. Fails with a message an admin can act on.
pub fn client_config(
    mode: &TlsMode,
    observations: Arc<TlsObservations>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let inner: Arc<dyn ServerCertVerifier> = match mode {
        TlsMode::SystemRoots => {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err("no usable system root certificates found (install the \
                     ca-certificates package, or set ca_file or fingerprint)"
                    .to_string());
            }
            webpki_verifier(roots, &provider)?
        }
        TlsMode::CaFile(path) => webpki_verifier(load_ca_file(path)?, &provider)?,
        TlsMode::Fingerprint(text) => Arc::new(PinnedVerifier {
            pinned: Some(parse_fingerprint(text)?),
            algorithms,
        }),
        TlsMode::Insecure => Arc::new(PinnedVerifier {
            pinned: None,
            algorithms,
        }),
    };
    let verifier = Arc::new(RecordingVerifier {
        inner,
        observations,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn webpki_verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    Ok(verifier)
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: CertificateDer<'static> =
            cert.map_err(|e| format!("ca_file {} is not valid PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {}: unusable certificate: {e}", path.display()))?;
        found += 1;
    }
    if found == 0 {
        return Err(format!(
            "ca_file {} contains no certificate (expected PEM, e.g. /etc/pve/pve-root-ca.pem)",
            path.display()
        ));
    }
    Ok(roots)
}

/// Records the presented certificate, then lets the real verifier decide.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    observations: Arc<TlsObservations>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.observations.record(end_entity);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The pinned verifier's refusal, as a type the refusal's classification can recognise.
#[derive(Debug)]
struct FingerprintMismatch {
    presented: String,
    pinned: String,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: server presented {}, config pins {}",
            self.presented, self.pinned
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Accepts exactly one certificate (by SHA-256 of its DER) or, with `pinned = None`
/// (`insecure = true`), any certificate. Either way the handshake signature is checked, so
/// the server must hold the private key of the certificate it shows.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pinned) = self.pinned else {
            return Ok(ServerCertVerified::assertion());
        };
        let presented: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if presented == pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = FingerprintMismatch {
                presented: format_fingerprint(&presented),
                pinned: format_fingerprint(&pinned),
            };
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A ureq agent whose HTTPS goes through our rustls configuration (`bytes_received` counts
/// the plaintext read on its connections), through `proxy` (a CONNECT tunnel) when one is
/// configured, and never through a proxy from the environment (see `crate::proxy`).
pub fn agent(
    config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    proxy: Option<&ProxyUrl>,
    tls: Arc<ClientConfig>,
    bytes_received: Arc<AtomicU64>,
) -> ureq::Agent {
    // The tunnel comes first: ureq runs the whole chain again to reach the proxy itself (plain
    // TCP, `http://`), then our TLS goes over the tunnel to the real host.
    let connector =
        ().chain(ureq::unversioned::transport::ConnectProxyConnector::default())
            .chain(ureq::unversioned::transport::TcpConnector::default())
            .chain(PveTlsConnector::new(tls, bytes_received));
    ureq::Agent::with_parts(
        config.proxy(proxy.map(ProxyUrl::ureq)).build(),
        connector,
        ureq::unversioned::resolver::DefaultResolver::default(),
    )
}

/// A ureq agent for plain `http://` (a webhook on this machine), with the same proxy rule.
pub fn plain_agent(
    config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    proxy: Option<&ProxyUrl>,
) -> ureq::Agent {
    let connector = ()
        .chain(ureq::unversioned::transport::ConnectProxyConnector::default())
        .chain(ureq::unversioned::transport::TcpConnector::default());
    ureq::Agent::with_parts(
        config.proxy(proxy.map(ProxyUrl::ureq)).build(),
        connector,
        ureq::unversioned::resolver::DefaultResolver::default(),
    )
}

/// ureq connector that wraps the TCP transport in rustls with our configuration.
pub struct PveTlsConnector {
    config: Arc<ClientConfig>,
    bytes_received: Arc<AtomicU64>,
}

impl PveTlsConnector {
    /// `bytes_received` counts the plaintext bytes read on every connection.
    pub fn new(config: Arc<ClientConfig>, bytes_received: Arc<AtomicU64>) -> Self {
        PveTlsConnector {
            config,
            bytes_received,
        }
    }
}

impl fmt::Debug for PveTlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveTlsConnector").finish()
    }
}

impl<In: Transport> Connector<In> for PveTlsConnector {
    type Out = Either<In, PveTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .ok_or(ureq::Error::Tls("URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("URL host is not a valid TLS server name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PveTlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
            awaiting_status_line: false,
            bytes_received: self.bytes_received.clone(),
        })))
    }
}

pub struct PveTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
    /// A request went out; the next input starts with the status line.
    awaiting_status_line: bool,
    bytes_received: Arc<AtomicU64>,
}

thread_local! {
    /// Reason phrase of the last response received on this thread.
    static LAST_REASON_PHRASE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Takes the HTTP reason phrase of the last response received on this thread.
///
/// Older PVE 8 servers put their error message only in the status line, and ureq does not
/// keep the reason phrase. ureq runs a request on the calling thread, so the transport can
/// hand it over through a thread-local.
pub fn take_last_reason_phrase() -> Option<String> {
    LAST_REASON_PHRASE.with(|slot| slot.borrow_mut().take())
}

fn parse_reason_phrase(input: &[u8]) -> Option<Option<String>> {
    let end = input.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&input[..end]);
    // "HTTP/1.1 500 VM is locked (backup)"
    let mut parts = line.splitn(3, ' ');
    let _version = parts.next();
    let _code = parts.next();
    Some(
        parts
            .next()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty()),
    )
}

impl fmt::Debug for PveTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PveTlsTransport").finish()
    }
}

impl Transport for PveTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        self.awaiting_status_line = true;
        LAST_REASON_PHRASE.with(|slot| slot.borrow_mut().take());
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        self.bytes_received
            .fetch_add(amount as u64, Ordering::Relaxed);
        if self.awaiting_status_line
            && let Some(reason) = parse_reason_phrase(self.buffers.input())
        {
            self.awaiting_status_line = false;
            LAST_REASON_PHRASE.with(|slot| *slot.borrow_mut() = reason);
        }
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_and_without_colons() {
        let colon = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let plain = colon.replace(':', "").to_lowercase();
        let a = parse_fingerprint(colon).expect("colon form");
        let b = parse_fingerprint(&plain).expect("plain form");
        assert_eq!(a, b);
        assert_eq!(format_fingerprint(&a), colon);
    }

    #[test]
    fn reason_phrase_is_read_from_the_status_line() {
        let got =
            parse_reason_phrase(b"HTTP/1.1 500 VM is locked (backup)\r\nContent-Length: 0\r\n");
        assert_eq!(got, Some(Some("VM is locked (backup)".to_string())));
        assert_eq!(parse_reason_phrase(b"HTTP/1.1 200"), None);
        assert_eq!(parse_reason_phrase(b"HTTP/1.1 401\r\n"), Some(None));
    }

    #[test]
    fn bad_fingerprints_are_refused() {
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"G".repeat(64)).is_err());
    }
}
