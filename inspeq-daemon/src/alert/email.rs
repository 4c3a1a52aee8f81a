//! The `email` channel (and the `gmail` preset): SMTP through lettre on tokio,
//! over STARTTLS, implicit TLS or plain text (for a local relay), with optional
//! AUTH and any number of recipients.
//!
//! Built from the checked `config::model::Email`: the checker has parsed the
//! addresses and decided the TLS mode and the port (`check::global::default_tls`:
//! 465 implicit, 587 STARTTLS whoever logs in, else STARTTLS with a username and
//! plain without), so this file only assembles the transport. STARTTLS is
//! required once chosen: a server that does not offer it is refused, never sent
//! the alert (or the password) in plain text. Certificates are checked against
//! the bundled Mozilla roots plus the route's `tls_ca_file`, the one thing read
//! from the disk when the route is built.

use std::time::Duration;

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
        extension::ClientId,
    },
};

use super::{Alert, Channel, ConfigError, SendError, SendFuture, template};
use crate::config::model;

/// Sends each alert as one plain-text message to every recipient.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for errors.
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    hostname: String,
}

/// What the PEM file must hold: a CA file without one would add no root and fail every handshake later, far from
/// the mistake.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

impl Email {
    /// The channel of route `route` (named in errors), sending from this machine, `hostname`.
    ///
    /// # Errors
    /// [`ConfigError`] when `tls_ca_file` cannot be read or holds no certificate, or when `hostname` makes no
    /// valid default sender address.
    pub fn new(route: &str, config: &model::Email, hostname: &str) -> Result<Self, ConfigError> {
        let server = config.smtp_server.as_str();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server)
            .port(config.smtp_port)
            .hello_name(ClientId::Domain(hostname.to_owned()))
            .timeout(Some(Duration::from_secs(30)));
        if config.tls != model::Tls::None {
            let params = tls_parameters(route, config)?;
            builder = builder.tls(match config.tls {
                model::Tls::StartTls => Tls::Required(params),
                _ => Tls::Wrapper(params),
            });
        }
        if let Some(username) = &config.username {
            let password = config.password.as_ref().map_or("", |p| p.expose().as_str());
            builder = builder.credentials(Credentials::new(username.clone(), password.to_owned()));
        }
        let default_from = model::Mailbox { name: None, user: "inspeq".into(), domain: hostname.into() };
        let from = mailbox(route, config.from_email.as_ref().unwrap_or(&default_from))?;
        let to = config.to_email.iter().map(|to| mailbox(route, to)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            transport: builder.build(),
            server: format!("{server}:{}", config.smtp_port),
            from,
            to,
            hostname: hostname.to_owned(),
        })
    }

    /// The message for `alerts`: one alert, or a digest of several. The
    /// Message-ID derives from the outbox sequence, so a resend after a crash
    /// carries the same ID and mail systems can drop the copy.
    pub fn message(&self, alerts: &[Alert]) -> Result<Message, SendError> {
        let (subject, body, id, date) = match alerts {
            [alert] => (
                template::subject(alert),
                template::body(alert),
                format!("<{}.{}@{}>", alert.fingerprint(), alert.seq, self.hostname),
                alert.at,
            ),
            _ => {
                let first = alerts.first().map_or(0, |a| a.seq);
                let last = alerts.last().map_or(0, |a| a.seq);
                (
                    template::digest_subject(alerts),
                    template::digest(alerts),
                    format!("<digest.{first}-{last}@{}>", self.hostname),
                    alerts.last().map_or_else(std::time::SystemTime::now, |a| a.at),
                )
            }
        };
        let mut builder = Message::builder().from(self.from.clone());
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .subject(subject)
            .message_id(Some(id))
            .date(date)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|source| SendError::Message { source })
    }
}

impl Channel for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        Box::pin(async move {
            let message = self.message(alerts)?;
            self.transport
                .send(message)
                .await
                .map(drop)
                .map_err(|source| SendError::Smtp { server: self.server.clone(), source })
        })
    }
}

/// The TLS settings: the server's name to check the certificate against, and the route's extra CA.
fn tls_parameters(route: &str, config: &model::Email) -> Result<TlsParameters, ConfigError> {
    let server = config.smtp_server.as_str();
    let mut params = TlsParameters::builder(server.to_owned());
    if let Some(path) = &config.tls_ca_file {
        let bad = |reason: String| ConfigError::BadCaFile { route: route.to_owned(), path: path.into(), reason };
        let pem = std::fs::read(path).map_err(|source| ConfigError::ReadCaFile {
            route: route.to_owned(),
            path: path.into(),
            source,
        })?;
        if !pem.windows(PEM_CERTIFICATE.len()).any(|w| w == PEM_CERTIFICATE.as_bytes()) {
            return Err(bad(format!("no certificate in it, expected PEM ({PEM_CERTIFICATE} ...)")));
        }
        params = params.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?);
    }
    params.build_rustls().map_err(|e| ConfigError::Tls {
        route: route.to_owned(),
        server: server.to_owned(),
        reason: e.to_string(),
    })
}

/// lettre's mailbox for a checked one. The checker applied lettre's own address rules, so this fails only for the
/// default sender, whose domain is the machine's name.
fn mailbox(route: &str, mailbox: &model::Mailbox) -> Result<Mailbox, ConfigError> {
    let address = Address::new(&mailbox.user, &mailbox.domain).map_err(|e| ConfigError::Address {
        route: route.to_owned(),
        address: format!("{}@{}", mailbox.user, mailbox.domain),
        reason: e.to_string(),
    })?;
    Ok(Mailbox::new(mailbox.name.clone(), address))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The email channel of an `inspeq.conf` holding one default route, through the real checker.
    fn email(conf: &str) -> Result<Email, ConfigError> {
        let (config, diagnostics) = crate::config::load([("inspeq.conf", conf)]);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
        let Some(model::Route { channel: model::Channel::Email(model), .. }) = config.routes.get(&None) else {
            panic!("no default email route in {conf}")
        };
        Email::new("ops", model, "web1")
    }

    #[test]
    fn several_recipients_and_inspeqtor_names() {
        let email = email(
            "send alerts via email with smtp_server localhost, tls_port 2525, to_email \"a@x.org, Bee <b@y.org>\"",
        )
        .unwrap();
        assert_eq!(email.server, "localhost:2525");
        let to: Vec<String> = email.to.iter().map(ToString::to_string).collect();
        assert_eq!(to, ["a@x.org", "Bee <b@y.org>"]);
        assert_eq!(email.from.to_string(), "inspeq@web1");
    }

    #[test]
    fn a_tls_ca_file_that_cannot_be_used_names_the_route() {
        let conf = |path: &str| {
            format!(
                "send alerts via email with smtp_server mail.example.com, tls_ca_file {path}, tls starttls, to_email a@b.c"
            )
        };
        let err = email(&conf("/nonexistent/ca.pem")).err().unwrap();
        assert!(matches!(err, ConfigError::ReadCaFile { .. }), "{err:?}");
        assert!(err.to_string().starts_with("alert route ops: reading tls_ca_file /nonexistent/ca.pem: "), "{err}");
        let scratch = tempfile::tempdir().unwrap();
        let not_pem = scratch.path().join("not-a-ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let err = email(&conf(not_pem.to_str().unwrap())).err().unwrap();
        assert!(matches!(err, ConfigError::BadCaFile { .. }), "{err:?}");
        assert!(err.to_string().contains("no certificate in it"), "{err}");
    }

    /// The checker takes addresses by lettre's rules: whatever it accepts, the channel builds.
    #[test]
    fn every_address_the_checker_takes_lettre_takes() {
        for (written, sent) in [
            ("a@b.c", "a@b.c"),
            ("first.last+tag@example.co.uk", "first.last+tag@example.co.uk"),
            ("o'brien@x.org", "o'brien@x.org"),
            ("x@[192.0.2.1]", "x@[192.0.2.1]"),
            ("Ops Team <ops@example.com>", "Ops Team <ops@example.com>"),
        ] {
            let built =
                email(&format!("send alerts via email with smtp_server h, from_email \"{written}\", to_email a@b.c"))
                    .unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(built.from.to_string(), sent);
        }
    }
}
