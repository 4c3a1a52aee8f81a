//! The `email` channel: SMTP through lettre on tokio, over STARTTLS (587),
//! implicit TLS (465) or plain text (25, for a local relay), with optional AUTH
//! and any number of recipients.
//!
//! Parameters: `smtp_server` (required), `smtp_port` (`tls_port` is Inspeqtor's
//! name for it), `tls` (`starttls`, `implicit` or `none`), `username`,
//! `password`, `from_email`, `to_email` (required; several addresses separated
//! by commas), `tls_ca_file` (a PEM file of extra trusted CAs, for a relay with
//! a private CA). Left out, `tls` follows the port (465 implicit, 587 STARTTLS)
//! and, like Inspeqtor (#48), is STARTTLS with a username and plain without; the
//! port follows `tls`.

use std::{collections::BTreeMap, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
        extension::ClientId,
    },
};

use super::{Alert, Channel, ConfigError, Params, SendError, SendFuture, template};

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text, then `STARTTLS`; refuses to go on without it.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plain text throughout: only for a relay on the same machine or network.
    None,
}

pub const PARAMS: &[&str] =
    &["smtp_server", "smtp_port", "tls_port", "tls", "username", "password", "from_email", "to_email", "tls_ca_file"];

/// Sends each alert as one plain-text message to every recipient.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for errors.
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    hostname: String,
}

impl Email {
    pub fn from_params(route: &str, map: &BTreeMap<String, String>, hostname: &str) -> Result<Self, ConfigError> {
        let p = Params::new(route, "email", map, PARAMS)?;
        Self::build(&p, p.require("smtp_server")?, hostname)
    }

    /// Builds the channel with `server` as the SMTP server (the gmail preset
    /// fixes it).
    pub(super) fn build(p: &Params<'_>, server: &str, hostname: &str) -> Result<Self, ConfigError> {
        let port = match p.get("smtp_port").or_else(|| p.get("tls_port")) {
            Some(port) => Some(port.parse::<u16>().map_err(|e| p.bad("smtp_port", port, e))?),
            None => None,
        };
        let username = p.get("username");
        let tls = match p.get("tls") {
            Some("starttls") => TlsMode::StartTls,
            Some("implicit") => TlsMode::Implicit,
            Some("none") => TlsMode::None,
            Some(other) => return Err(p.bad("tls", other, "expected starttls, implicit or none")),
            None if port == Some(465) => TlsMode::Implicit,
            None if username.is_some() || port == Some(587) => TlsMode::StartTls,
            None => TlsMode::None,
        };
        let port = port.unwrap_or(match tls {
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        });

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server)
            .port(port)
            .hello_name(ClientId::Domain(hostname.to_owned()))
            .timeout(Some(Duration::from_secs(30)));
        if tls != TlsMode::None {
            let mut params = TlsParameters::builder(server.to_owned());
            if let Some(path) = p.get("tls_ca_file") {
                let pem = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
                    route: p.route.to_owned(),
                    path: path.into(),
                    source,
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| p.bad("tls_ca_file", path, e))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| p.bad("tls", "", e))?;
            builder = builder.tls(match tls {
                TlsMode::StartTls => Tls::Required(params),
                _ => Tls::Wrapper(params),
            });
        }
        if let Some(username) = username {
            let password = p.get("password").unwrap_or_default();
            builder = builder.credentials(Credentials::new(username.to_owned(), password.to_owned()));
        }

        let default_from = format!("inspeq@{hostname}");
        let from_text = p.get("from_email").unwrap_or(&default_from);
        let from = from_text.parse::<Mailbox>().map_err(|e| p.bad("from_email", from_text, e))?;
        let to_text = p.require("to_email")?;
        let to = to_text
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| a.parse::<Mailbox>().map_err(|e| p.bad("to_email", a, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(p.bad("to_email", to_text, "no address"));
        }
        Ok(Self {
            transport: builder.build(),
            server: format!("{server}:{port}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn several_recipients_and_inspeqtor_names() {
        let email = Email::from_params(
            "ops",
            &params(&[("smtp_server", "localhost"), ("tls_port", "2525"), ("to_email", "a@x.org, b@y.org")]),
            "web1",
        )
        .unwrap();
        assert_eq!(email.server, "localhost:2525");
        assert_eq!(email.to.len(), 2);
        assert_eq!(email.from.to_string(), "inspeq@web1");
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = Email::from_params("ops", &params(&[("smtp_server", "h"), ("to_email", "not an address")]), "w")
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("alert route ops: email to_email \"not an address\""), "{err}");
        let err =
            Email::from_params("ops", &params(&[("smtp_server", "h"), ("to_email", "a@b.c"), ("tls", "ssl")]), "w")
                .err()
                .unwrap();
        assert!(err.to_string().contains("expected starttls, implicit or none"), "{err}");
        let err = Email::from_params("ops", &params(&[("to_email", "a@b.c")]), "w").err().unwrap();
        assert_eq!(err.to_string(), "alert route ops: email needs the parameter smtp_server");
    }
}
