//! Email through lettre's blocking SMTP transport: STARTTLS (required, not opportunistic),
//! implicit TLS, or plain for a relay on this machine; an optional login; rustls with the
//! system's roots or the CA certificates of `ca_file`.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{SmtpTransport, Transport};

use super::SendError;
use super::message::Message;
use crate::config::notify::{EmailConfig, SmtpSecurity};

/// The mail as it goes out (also what a dry run shows).
pub(super) fn build(cfg: &EmailConfig, msg: &Message) -> Result<lettre::Message, SendError> {
    let mut builder = lettre::Message::builder()
        .from(cfg.from.clone())
        .subject(msg.title())
        .message_id(Some(format!(
            "<pvescale.{}.{}@{}>",
            msg.time,
            std::process::id(),
            msg.host
        )))
        .header(ContentType::TEXT_PLAIN);
    for to in &cfg.to {
        builder = builder.to(to.clone());
    }
    builder
        .body(msg.text())
        .map_err(|e| SendError::fatal(format!("cannot build the mail: {e}")))
}

fn tls_parameters(cfg: &EmailConfig) -> Result<TlsParameters, SendError> {
    let mut builder = TlsParameters::builder(cfg.host.clone());
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            SendError::fatal(format!("cannot read ca_file {}: {e}", path.display()))
        })?;
        let certs = Certificate::from_pem(&pem)
            .map_err(|e| SendError::fatal(format!("ca_file {}: {e}", path.display())))?;
        builder = builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(certs);
    }
    builder
        .build_rustls()
        .map_err(|e| SendError::fatal(format!("TLS setup: {e}")))
}

pub(super) fn send(cfg: &EmailConfig, msg: &Message, timeout: Duration) -> Result<(), SendError> {
    let mail = build(cfg, msg)?;
    let tls = match cfg.security {
        SmtpSecurity::StartTls => Tls::Required(tls_parameters(cfg)?),
        SmtpSecurity::Tls => Tls::Wrapper(tls_parameters(cfg)?),
        SmtpSecurity::None => Tls::None,
    };
    let mut builder = SmtpTransport::builder_dangerous(cfg.host.clone())
        .port(cfg.port)
        .tls(tls)
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain(msg.host.clone()));
    if let Some(login) = &cfg.login {
        builder = builder.credentials(Credentials::new(
            login.user.clone(),
            login.password.expose().to_string(),
        ));
    }
    builder
        .build()
        .send(&mail)
        .map(|_| ())
        .map_err(|e| SendError {
            retry: !e.is_permanent() && !e.is_tls(),
            // lettre's error holds the SMTP server's reply.
            message: crate::server_text::escape(&e.to_string()).into_owned(),
        })
}
