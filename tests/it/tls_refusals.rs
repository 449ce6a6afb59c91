//! A refused TLS handshake is explained by its cause, with the fix for that cause: an expired
//! certificate, a certificate for another name, a CA presented as a server certificate and a
//! server that speaks only TLS 1.1 are each told apart from "not signed by the CA". A pinned
//! fingerprint accepts an expired or other-name certificate, by design.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pvescale::pve::{ApiErrorKind, Auth, Client, ClusterTarget, RetryPolicy, TlsMode};
use pvescale::secret::Secret;
use pvescale::tls::certificate_fingerprint;

/// A CA, and what the test server presents.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params(), key()).expect("CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("CA file");
        Pki {
            ca,
            _dir: dir,
            ca_file,
        }
    }

    /// A server certificate for `names`, valid from `not_before` to `not_after` (years).
    fn leaf(&self, names: &[&str], years: (i32, i32)) -> Presented {
        let key = key();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let cert = params.signed_by(&key, &self.ca).expect("leaf");
        Presented {
            der: cert.der().to_vec(),
            key: key.serialize_der(),
        }
    }

    /// The CA certificate itself, as the server's.
    fn ca_itself(&self) -> Presented {
        Presented {
            der: self.ca.der().to_vec(),
            key: self.ca.key().serialize_der(),
        }
    }
}

fn key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate().expect("key")
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pvescale test CA");
    params
}

struct Presented {
    der: Vec<u8>,
    key: Vec<u8>,
}

/// Serves `presented` over TLS on 127.0.0.1, answering `/version` on each connection.
fn serve(presented: &Presented) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![presented.der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(presented.key.clone().into()),
        )
        .expect("server config");
    let config = Arc::new(config);
    listen(move |tcp| {
        let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        answer_version(&mut tls);
    })
}

/// A server that answers every TLS hello as a TLS 1.1-only server does: with a fatal
/// protocol_version alert.
fn serve_tls11_only() -> String {
    listen(|mut tcp| {
        let mut hello = [0u8; 512];
        if tcp.read(&mut hello).is_ok() {
            // Record: alert (21), version TLS 1.1, length 2; fatal (2), protocol_version (70).
            let _ = tcp.write_all(&[21, 3, 2, 0, 2, 2, 70]);
        }
    })
}

fn listen(handle: impl Fn(TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            handle(tcp);
        }
    });
    format!("https://127.0.0.1:{port}")
}

fn answer_version(stream: &mut impl ReadWrite) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let body = r#"{"data":{"release":"9.1","version":"9.1.1","repoid":"x"}}"#;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn client(url: String, tls: TlsMode) -> Client {
    let target = ClusterTarget {
        name: "lab".to_string(),
        urls: vec![url],
        auth: Auth::Token {
            id: "pvescale@pve!autoscale".to_string(),
            secret: Secret::new("00000000-0000-0000-0000-000000000000"),
        },
        tls,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        proxy: None,
    };
    let retry = RetryPolicy {
        attempts: 1,
        base_delay: Duration::from_millis(10),
    };
    Client::with_retry(&target, retry).expect("client set up")
}

/// The message of the refusal when `url` is verified against the test CA.
fn refusal(pki: &Pki, url: String) -> String {
    let err = client(url, TlsMode::CaFile(pki.ca_file.clone()))
        .version()
        .expect_err("the handshake is refused");
    assert_eq!(err.kind, ApiErrorKind::Tls, "{err}");
    let message = err.to_string();
    assert!(
        !message.contains("Other(") && !message.contains("OtherError"),
        "a debug string instead of words: {message}"
    );
    message
}

#[test]
fn a_certificate_from_the_configured_ca_is_accepted_by_the_test_server() {
    // The control for the tests below: the same server, CA and client, a good certificate.
    let pki = Pki::new();
    let url = serve(&pki.leaf(&["127.0.0.1"], (2020, 2090)));
    let version = client(url, TlsMode::CaFile(pki.ca_file.clone()))
        .version()
        .expect("accepted");
    assert_eq!(version.release, "9.1");
}

#[test]
fn an_expired_certificate_is_called_expired_with_the_date_and_the_fix() {
    let pki = Pki::new();
    let message = refusal(&pki, serve(&pki.leaf(&["127.0.0.1"], (2019, 2020))));
    assert!(
        message.contains("certificate expired on 2020-01-01 00:00:00 UTC"),
        "{message}"
    );
    assert!(message.contains("Renew it on the node"), "{message}");
    assert!(!message.contains("not signed"), "{message}");
}

#[test]
fn a_certificate_for_another_name_says_which_names_it_holds() {
    let pki = Pki::new();
    let message = refusal(&pki, serve(&pki.leaf(&["pve9.example.com"], (2020, 2090))));
    assert!(
        message.contains("not valid for this host name (it names pve9.example.com)"),
        "{message}"
    );
    assert!(message.contains("Use a URL with a name"), "{message}");
    assert!(!message.contains("not signed"), "{message}");
}

#[test]
fn a_ca_presented_as_the_server_certificate_is_named_as_such() {
    let pki = Pki::new();
    let message = refusal(&pki, serve(&pki.ca_itself()));
    assert!(
        message.contains("the server presents a CA certificate as its own")
            && message.contains("give the node its own certificate"),
        "{message}"
    );
}

#[test]
fn a_tls_1_1_server_is_told_apart_from_a_wrong_ca() {
    let pki = Pki::new();
    let message = refusal(&pki, serve_tls11_only());
    assert!(
        message.contains("speaks only TLS older than 1.2")
            && message.contains("Upgrade the server"),
        "{message}"
    );
    assert!(!message.contains("not signed"), "{message}");
}

#[test]
fn a_pinned_fingerprint_accepts_an_expired_other_name_certificate_by_design() {
    // Documented: a pin names one certificate; its dates and names are not checked.
    let pki = Pki::new();
    let presented = pki.leaf(&["pve9.example.com"], (2019, 2020));
    let pin = certificate_fingerprint(&presented.der);
    let url = serve(&presented);
    let version = client(url, TlsMode::Fingerprint(pin))
        .version()
        .expect("a pinned certificate is accepted whatever its dates and names");
    assert_eq!(version.release, "9.1");
}
