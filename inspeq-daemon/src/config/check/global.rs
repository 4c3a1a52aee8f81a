//! The `inspeq.conf` half of the semantic pass: `set` settings and `send alerts` routes with their channels.
//!
//! Each channel has a function of its own that turns the statement's `key value` parameters into the channel's
//! part of the model, checked and parsed, so that `alert::Routes::build` has nothing left to check: every mistake
//! in a route is found here, with its file, line and column, by `inspeqctl check` and before the daemon starts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::amount::{self, parse_window};
use crate::config::ast::{self, GlobalFile, GlobalStatement, Span, Text};
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::model::{
    Alertmanager, Channel, Email, LogLevel, Mailbox, PagerDuty, RestartLimit, Route, Secret, Settings, Severity, Slack,
    Tls, Webhook,
};

use super::{Context, at, location};

const SETTINGS: &str = "cycle_time, deploy_length, log_level, expose_port, statsd_location, socket, state_dir, metrics_listen, restart_limit or restart_window";

pub fn check_global(file: &SourceFile<'_>, tree: &GlobalFile, cx: &mut Context, out: &mut Vec<Diagnostic>) {
    let mut seen_keys: BTreeSet<&str> = BTreeSet::new();
    for statement in &tree.statements {
        match statement {
            GlobalStatement::Set { key, value, .. } => {
                if !seen_keys.insert(&key.value) {
                    out.push(
                        file.warning(key.span, format!("`{}` is set more than once; the last value wins", key.value)),
                    );
                }
                set(file, key, value, &mut cx.settings, out);
            }
            GlobalStatement::SendAlerts(send) => {
                let Some(channel) = channel(file, send, out) else {
                    continue;
                };
                let name = send.route.as_ref().map(|r| r.value.clone());
                let loc = location(file, send.span);
                if let Some(previous) = cx.routes.get(&name) {
                    let what = name.as_ref().map_or("the default route".to_owned(), |n| format!("route `{n}`"));
                    let span = send.route.as_ref().map_or(send.span, |r| r.span);
                    out.push(file.error(
                        span,
                        format!(
                            "{what} is already declared at {}, expected one `send alerts` per route",
                            at(&previous.location)
                        ),
                    ));
                    continue;
                }
                cx.routes.insert(name.clone(), Route { name, channel, location: loc });
            }
        }
    }
}

fn set(file: &SourceFile<'_>, key: &Text, value: &Text, s: &mut Settings, out: &mut Vec<Diagnostic>) {
    let v = value.value.as_str();
    let seconds = |out: &mut Vec<Diagnostic>, min: u64| match v.parse::<u64>() {
        Ok(n) if n >= min => Some(Duration::from_secs(n)),
        _ => {
            out.push(file.error(
                value.span,
                format!("invalid `{}` value `{v}`, expected a whole number of seconds of at least {min}", key.value),
            ));
            None
        }
    };
    match key.value.as_str() {
        "cycle_time" => s.cycle_time = seconds(out, 1).unwrap_or(s.cycle_time),
        "deploy_length" => s.deploy_length = seconds(out, 1).unwrap_or(s.deploy_length),
        "log_level" => {
            s.log_level = match v {
                "error" => Some(LogLevel::Error),
                "warn" => Some(LogLevel::Warn),
                "info" => Some(LogLevel::Info),
                "debug" => Some(LogLevel::Debug),
                "verbose" => Some(LogLevel::Verbose),
                _ => {
                    out.push(file.error(
                        value.span,
                        format!("invalid log level `{v}`, expected error, warn, info, debug or verbose"),
                    ));
                    s.log_level
                }
            };
        }
        "expose_port" => match v.parse::<u16>() {
            Ok(0) => s.expose_port = None,
            Ok(port) => s.expose_port = Some(port),
            Err(_) => {
                out.push(file.error(value.span, format!("invalid port `{v}`, expected a number from 0 (off) to 65535")))
            }
        },
        "statsd_location" => {
            if v.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
                s.statsd_location = Some(v.to_owned());
            } else {
                out.push(file.error(value.span, format!("invalid statsd location `{v}`, expected HOST:PORT")));
            }
        }
        "restart_limit" => match v.parse::<u32>() {
            Ok(0) => s.restart_limit = None,
            Ok(count) => {
                let window = s.restart_limit.unwrap_or_default().window;
                s.restart_limit = Some(RestartLimit { count, window });
            }
            Err(_) => out.push(file.error(
                value.span,
                format!("invalid restart limit `{v}`, expected a whole number of restarts (0: no limit)"),
            )),
        },
        "restart_window" => {
            if let Some(window) = seconds(out, 1)
                && let Some(limit) = &mut s.restart_limit
            {
                limit.window = window;
            }
        }
        "socket" => s.socket = Some(v.to_owned()),
        "state_dir" => s.state_dir = Some(v.to_owned()),
        "metrics_listen" => {
            if v.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
                s.metrics_listen = Some(v.to_owned());
            } else {
                out.push(file.error(value.span, format!("invalid listen address `{v}`, expected HOST:PORT")));
            }
        }
        other => out.push(file.warning(key.span, format!("unknown setting `{other}` is ignored, expected {SETTINGS}"))),
    }
}

const CHANNELS: &str = "email, gmail, slack, webhook, pagerduty, alertmanager or log";

/// Gmail's submission server, which the `gmail` preset fixes. Google wants an app password there (not the
/// account's own) since it stopped "less secure apps" (Inspeqtor #107).
const GMAIL_SERVER: &str = "smtp.gmail.com";

/// Parameters each channel accepts; the required ones are checked by the channel's own function below.
fn channel_params(channel: &str) -> &'static [&'static str] {
    match channel {
        "email" => &[
            "smtp_server",
            "smtp_port",
            "tls_port",
            "tls",
            "username",
            "password",
            "from_email",
            "to_email",
            "tls_ca_file",
        ],
        "gmail" => &["username", "password", "from_email", "to_email"],
        "slack" => &["url", "icon_emoji", "username", "channel"],
        "webhook" => &["url", "secret"],
        "pagerduty" => &["routing_key", "url", "severity"],
        "alertmanager" => &["url", "firing_for"],
        _ => &[],
    }
}

/// The parameters of each channel whose values are secrets: never shown in diagnostics, and a file holding one
/// must not be readable by every user (`check::secrets`). A Slack incoming webhook's URL is one: it is the whole
/// credential (anyone who has it can post to the channel, and Slack says to keep it secret). A webhook's or
/// Alertmanager's URL is not: the webhook's `secret` signs, and the URL alone grants nothing by design.
pub(super) fn secret_params(channel: &str) -> &'static [&'static str] {
    match channel {
        "email" | "gmail" => &["password"],
        "slack" => &["url"],
        "webhook" => &["secret"],
        "pagerduty" => &["routing_key"],
        _ => &[],
    }
}

/// Checks one `send alerts` statement's channel and parameters into its model.
fn channel(file: &SourceFile<'_>, send: &ast::SendAlerts, out: &mut Vec<Diagnostic>) -> Option<Channel> {
    let name = send.channel.value.as_str();
    if !matches!(name, "email" | "gmail" | "slack" | "webhook" | "pagerduty" | "alertmanager" | "log") {
        let why = if matches!(name, "campfire" | "hipchat" | "flowdock") {
            "is no longer supported (the service shut down)"
        } else {
            "is unknown"
        };
        out.push(file.error(send.channel.span, format!("channel `{name}` {why}, expected {CHANNELS}")));
        return None;
    }
    let mut st = Statement::read(file, send, out);
    let channel = match name {
        "email" => email(&mut st, false).map(Channel::Email),
        "gmail" => email(&mut st, true).map(Channel::Email),
        "slack" => slack(&mut st).map(Channel::Slack),
        "webhook" => webhook(&mut st).map(Channel::Webhook),
        "pagerduty" => pagerduty(&mut st).map(Channel::PagerDuty),
        "alertmanager" => alertmanager(&mut st).map(Channel::Alertmanager),
        _ => Some(Channel::Log),
    };
    channel.filter(|_| st.ok)
}

/// One `send alerts` statement's parameters as written, and what checking them found so far.
struct Statement<'s, 'f> {
    file: &'s SourceFile<'f>,
    /// The channel word: where diagnostics about a missing parameter point.
    channel: &'s Text,
    /// Each key's value and the value's span.
    params: BTreeMap<&'s str, (String, Span)>,
    /// Keys written without a value: already an error, so not also "needs parameter".
    valueless: BTreeSet<&'s str>,
    out: &'s mut Vec<Diagnostic>,
    /// No error so far: the statement becomes a route.
    ok: bool,
}

impl<'s, 'f> Statement<'s, 'f> {
    /// Reads the `key value` groups, warning about unknown and repeated keys.
    fn read(file: &'s SourceFile<'f>, send: &'s ast::SendAlerts, out: &'s mut Vec<Diagnostic>) -> Self {
        let name = send.channel.value.as_str();
        let allowed = channel_params(name);
        let mut st = Statement {
            file,
            channel: &send.channel,
            params: BTreeMap::new(),
            valueless: BTreeSet::new(),
            out,
            ok: true,
        };
        let mut last_key: Option<&str> = None;
        for group in &send.params {
            if let Some(extra) = group.get(2) {
                // After a secret's value, the extra word is likely more of the secret: not repeated.
                let message = match group.first() {
                    Some(key) if secret_params(name).contains(&key.value.as_str()) => format!(
                        "unexpected word after the value of `{}`, expected `,` between parameters (a value with spaces needs quotes)",
                        key.value
                    ),
                    _ => format!("unexpected `{}`, expected `,` between parameters", extra.value),
                };
                st.out.push(file.error(extra.span, message));
                st.ok = false;
            }
            // A missing comma is reported once above; reading the group as pairs keeps it from causing more errors.
            for pair in group.chunks(2) {
                match pair {
                    [key, value] => {
                        if !allowed.contains(&key.value.as_str()) {
                            let expected = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
                            st.out.push(file.warning(
                                key.span,
                                format!(
                                    "unknown parameter `{}` for channel `{name}` is ignored, expected {expected}",
                                    key.value
                                ),
                            ));
                        }
                        if st.params.insert(&key.value, (value.value.clone(), value.span)).is_some() {
                            st.out.push(file.warning(
                                key.span,
                                format!("parameter `{}` is given more than once; the last value wins", key.value),
                            ));
                        }
                        last_key = Some(&key.value);
                    }
                    // The odd word out of a longer group: its missing comma is reported above.
                    [_] if group.len() > 1 => {}
                    [lone] => match last_key {
                        // Inspeqtor #131: an unquoted `to_email a@x, b@y` is a list of recipients, not a broken file.
                        Some("to_email") => {
                            if let Some((list, _)) = st.params.get_mut("to_email") {
                                list.push(',');
                                list.push_str(&lone.value);
                            }
                        }
                        _ => {
                            st.out.push(
                                file.error(lone.span, format!("expected a value after parameter `{}`", lone.value)),
                            );
                            st.valueless.insert(&lone.value);
                            st.ok = false;
                        }
                    },
                    _ => {}
                }
            }
        }
        st
    }

    fn name(&self) -> &'s str {
        &self.channel.value
    }

    fn get(&self, key: &str) -> Option<String> {
        self.params.get(key).map(|(v, _)| v.clone())
    }

    /// Where `key`'s value is, else the channel word.
    fn span(&self, key: &str) -> Span {
        self.params.get(key).map_or(self.channel.span, |(_, s)| *s)
    }

    /// An error at `key`'s value: the statement is no route.
    fn invalid(&mut self, key: &str, message: String) {
        self.out.push(self.file.error(self.span(key), message));
        self.ok = false;
    }

    fn warn(&mut self, key: &str, message: String) {
        self.out.push(self.file.warning(self.span(key), message));
    }

    /// `key`'s value, or an error saying it is needed.
    fn required(&mut self, key: &str, example: &str) -> Option<String> {
        let value = self.get(key);
        if value.is_none() && !self.valueless.contains(key) {
            let name = self.name();
            self.out.push(self.file.error(
                self.channel.span,
                format!("channel `{name}` needs parameter `{key}`, expected `with {key} {example}`"),
            ));
            self.ok = false;
        }
        value
    }

    /// `key`'s value as an `http` or `https` URL. A secret's value is not repeated in the message.
    fn url(&mut self, key: &str, text: &str) -> Option<url::Url> {
        let shown = if secret_params(self.name()).contains(&key) { "***" } else { text };
        match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            Ok(_) => {
                self.invalid(key, format!("invalid url `{shown}`, expected an http:// or https:// URL"));
                None
            }
            Err(e) => {
                self.invalid(key, format!("invalid url `{shown}` ({e}), expected an http:// or https:// URL"));
                None
            }
        }
    }

    /// The required `url`, checked.
    fn required_url(&mut self) -> Option<url::Url> {
        let text = self.required("url", "https://...")?;
        self.url("url", &text)
    }
}

fn email(st: &mut Statement<'_, '_>, gmail: bool) -> Option<Email> {
    let smtp_server =
        if gmail { Some(GMAIL_SERVER.to_owned()) } else { st.required("smtp_server", "smtp.example.com") };
    let to = st.required("to_email", "ops@example.com");
    let username = st.get("username");
    let mut password = st.get("password");
    if gmail {
        st.required("username", "you@gmail.com");
        st.required("password", "\"app password\"");
    } else if password.is_some() && username.is_none() {
        st.warn(
            "password",
            "`password` without `username` is ignored (there is nobody to log in as), expected a `username` too".into(),
        );
        password = None;
    }
    let port = match st.params.get("smtp_port").or_else(|| st.params.get("tls_port")) {
        Some((p, span)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                let message = format!("invalid port `{p}`, expected a number from 1 to 65535");
                st.out.push(st.file.error(*span, message));
                st.ok = false;
                None
            }
        },
        None => None,
    };
    let tls = match st.get("tls") {
        Some(t) => match t.as_str() {
            "starttls" => Tls::StartTls,
            "implicit" => Tls::Implicit,
            "none" => Tls::None,
            _ => {
                st.invalid("tls", format!("invalid tls mode `{t}`, expected starttls, implicit or none"));
                Tls::StartTls
            }
        },
        None => default_tls(port, gmail || username.is_some()),
    };
    let smtp_port = port.unwrap_or(match tls {
        Tls::StartTls => 587,
        Tls::Implicit => 465,
        Tls::None => 25,
    });
    let tls_ca_file = match st.get("tls_ca_file") {
        Some(_) if tls == Tls::None => {
            st.warn(
                "tls_ca_file",
                "`tls_ca_file` is ignored: this route sends in plain text, expected it with tls starttls or implicit"
                    .into(),
            );
            None
        }
        Some(path) if !path.starts_with('/') => {
            st.invalid("tls_ca_file", format!("invalid tls_ca_file `{path}`, expected an absolute path to a PEM file"));
            None
        }
        path => path,
    };
    if let Some(server) = &smtp_server
        && !valid_host(server)
    {
        st.invalid(
            "smtp_server",
            format!(
                "invalid smtp_server `{server}`, expected a host name (xn-- form if international) or an IP address"
            ),
        );
    }
    let from_email = st.get("from_email").and_then(|text| match mailbox(&text) {
        Some(from) => Some(from),
        None => {
            st.invalid("from_email", format!("invalid address `{text}` in `from_email`, expected user@domain"));
            None
        }
    });
    let mut to_email = Vec::new();
    for address in to.iter().flat_map(|to| to.split(',')).map(str::trim).filter(|a| !a.is_empty()) {
        match mailbox(address) {
            Some(mailbox) => to_email.push(mailbox),
            None => st.invalid("to_email", format!("invalid address `{address}` in `to_email`, expected user@domain")),
        }
    }
    if to.is_some() && to_email.is_empty() && st.ok {
        st.invalid("to_email", "no address in `to_email`, expected user@domain".into());
    }
    Some(Email {
        gmail,
        smtp_server: smtp_server?,
        smtp_port,
        tls,
        username,
        password: password.map(Secret::new),
        from_email,
        to_email,
        tls_ca_file,
    })
}

/// The TLS of an email route that does not say `tls`: the one place this is decided. The submission ports mean
/// what RFC 8314 and the README say whoever logs in: 465 implicit TLS, 587 STARTTLS (required, so a server that
/// does not offer it is refused rather than sent a password or an alert in plain text). On any other port, or
/// none, a route that logs in (`username`, or gmail) uses STARTTLS and one that does not is a plain local relay, as
/// in Inspeqtor (#48).
pub(super) fn default_tls(port: Option<u16>, logs_in: bool) -> Tls {
    match port {
        Some(465) => Tls::Implicit,
        Some(587) => Tls::StartTls,
        _ if logs_in => Tls::StartTls,
        _ => Tls::None,
    }
}

/// A host name of letters, digits, `-` and `_` in dot-separated labels, or an IP address (IPv6 with colons): what
/// the SMTP client can connect to and TLS can check a certificate against.
fn valid_host(host: &str) -> bool {
    let ipv6 = host.contains(':') && host.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    let name = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    !host.is_empty() && host.len() <= 253 && (ipv6 || name)
}

/// `user@domain` or `Name <user@domain>`, by the rules lettre's `Address` applies (the `email_address` crate's
/// local part and domain, or an IP literal such as `[192.0.2.1]`), so the channel builds from what passed here.
/// International domain names are taken in their `xn--` form only.
fn mailbox(text: &str) -> Option<Mailbox> {
    let (name, address) = match text.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
        Some((name, address)) => {
            let name = name.trim().trim_matches('"').trim();
            (Some(name.to_owned()).filter(|n| !n.is_empty() && !n.contains(['<', '>'])), address.trim())
        }
        None => (None, text.trim()),
    };
    let (user, domain) = address.rsplit_once('@')?;
    let literal = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']'));
    let ip_literal = literal.is_some_and(|ip| {
        let v4 = ip.split('.').count() == 4 && ip.split('.').all(|n| n.parse::<u8>().is_ok());
        let v6 = ip.contains(':') && ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        v4 || v6
    });
    let ok = email_address::EmailAddress::is_valid_local_part(user)
        && (ip_literal || (domain.is_ascii() && email_address::EmailAddress::is_valid_domain(domain)));
    ok.then(|| Mailbox { name, user: user.to_owned(), domain: domain.to_owned() })
}

fn slack(st: &mut Statement<'_, '_>) -> Option<Slack> {
    let url = st.required_url()?;
    Some(Slack {
        url: Secret::new(url),
        icon_emoji: st.get("icon_emoji"),
        username: st.get("username"),
        channel: st.get("channel"),
    })
}

fn webhook(st: &mut Statement<'_, '_>) -> Option<Webhook> {
    let url = st.required_url()?;
    Some(Webhook { url, secret: st.get("secret").map(Secret::new) })
}

fn pagerduty(st: &mut Statement<'_, '_>) -> Option<PagerDuty> {
    let routing_key = st.required("routing_key", "YOUR_INTEGRATION_KEY")?;
    let url = match st.get("url") {
        Some(text) => Some(st.url("url", &text)?),
        None => None,
    };
    let severity = match st.get("severity") {
        Some(word) => match Severity::from_name(&word) {
            Some(severity) => Some(severity),
            None => {
                st.invalid("severity", format!("invalid severity `{word}`, expected {}", Severity::NAMES));
                None
            }
        },
        None => None,
    };
    Some(PagerDuty { routing_key: Secret::new(routing_key), url, severity })
}

/// How long Alertmanager keeps a firing alert active when no recovery comes, unless `firing_for` says.
const FIRING_FOR: Duration = Duration::from_secs(24 * 3600);

fn alertmanager(st: &mut Statement<'_, '_>) -> Option<Alertmanager> {
    let url = st.required_url()?;
    let firing_for = match st.get("firing_for") {
        Some(text) => match firing_for(&text) {
            Some(d) => d,
            None => {
                st.invalid(
                    "firing_for",
                    format!("invalid firing_for `{text}`, expected a time of at least a second, like `90s`, `15m`, `24h` or `2 days`"),
                );
                FIRING_FOR
            }
        },
        None => FIRING_FOR,
    };
    Some(Alertmanager { url, firing_for })
}

/// `90s`, `15m`, `24h`, `7d`, `"5 minutes"` (the units of `within`), or a bare number of seconds as the `set`
/// settings take them. Not cycles: Alertmanager knows nothing of inspeq's cycle.
fn firing_for(text: &str) -> Option<Duration> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if let [seconds] = words[..]
        && let Ok(n) = seconds.parse::<u64>()
    {
        return (n > 0).then(|| Duration::from_secs(n));
    }
    match parse_window(&words) {
        Ok(amount::Span::Time(d)) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::model::{Channel, Email, Route, Severity, Tls};

    /// The default route of an `inspeq.conf` holding one statement, and the diagnostics, through the whole pass.
    fn route(statement: &str) -> (Option<Route>, Vec<String>) {
        let (mut config, diagnostics) = crate::config::load([("inspeq.conf", statement)]);
        (config.routes.remove(&None), diagnostics.iter().map(|d| d.short()).collect())
    }

    fn checked(statement: &str) -> Channel {
        match route(statement) {
            (Some(route), diagnostics) if diagnostics.is_empty() => route.channel,
            (_, diagnostics) => panic!("{statement}: {diagnostics:#?}"),
        }
    }

    fn email(statement: &str) -> Email {
        match checked(&format!("send alerts via email with smtp_server mail.example.com, to_email a@b.c{statement}")) {
            Channel::Email(email) => email,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn port_587_means_starttls_whoever_logs_in() {
        let without_username = email(", smtp_port 587");
        assert_eq!((without_username.tls, without_username.smtp_port), (Tls::StartTls, 587));
        let with_username = email(", tls_port 587, username u, password p");
        assert_eq!((with_username.tls, with_username.smtp_port), (Tls::StartTls, 587));
        assert_eq!(email(", smtp_port 587, tls none").tls, Tls::None, "an explicit `tls` wins");
    }

    #[test]
    fn the_other_email_tls_defaults() {
        let cases = [
            ("", (Tls::None, 25)),
            (", username u", (Tls::StartTls, 587)),
            (", smtp_port 465", (Tls::Implicit, 465)),
            (", smtp_port 465, username u", (Tls::Implicit, 465)),
            (", smtp_port 2525", (Tls::None, 2525)),
            (", smtp_port 2525, username u", (Tls::StartTls, 2525)),
            (", tls implicit", (Tls::Implicit, 465)),
            (", tls starttls", (Tls::StartTls, 587)),
        ];
        for (params, expected) in cases {
            let e = email(params);
            assert_eq!((e.tls, e.smtp_port), expected, "{params}");
        }
        let Channel::Email(gmail) = checked("send alerts via gmail with username u, password p, to_email a@b.c") else {
            panic!()
        };
        assert_eq!((gmail.smtp_server.as_str(), gmail.tls, gmail.smtp_port), ("smtp.gmail.com", Tls::StartTls, 587));
    }

    #[test]
    fn tls_ca_file_is_an_absolute_path_and_needs_tls() {
        assert_eq!(
            email(", tls starttls, tls_ca_file /etc/ssl/private-ca.pem").tls_ca_file.as_deref(),
            Some("/etc/ssl/private-ca.pem")
        );
        let (_, diagnostics) =
            route("send alerts via email with smtp_server h, to_email a@b.c, tls_ca_file ca.pem, tls implicit");
        assert_eq!(
            diagnostics,
            ["inspeq.conf:1:71: error: invalid tls_ca_file `ca.pem`, expected an absolute path to a PEM file"]
        );
        let (plain, diagnostics) =
            route("send alerts via email with smtp_server h, to_email a@b.c, tls_ca_file /ca.pem");
        assert_eq!(
            diagnostics,
            [
                "inspeq.conf:1:71: warning: `tls_ca_file` is ignored: this route sends in plain text, expected it with tls starttls or implicit"
            ]
        );
        let Some(Route { channel: Channel::Email(plain), .. }) = plain else { panic!() };
        assert_eq!(plain.tls_ca_file, None);
    }

    #[test]
    fn addresses_are_parsed() {
        let e = email(", from_email \"Inspeq <inspeq@web1.example.org>\"");
        assert_eq!(e.from_email.map(|m| m.to_string()).as_deref(), Some("Inspeq <inspeq@web1.example.org>"));
        assert_eq!(e.to_email[0].to_string(), "a@b.c");
        for bad in ["a@", "@b.c", "a b@c.d", "a@b..c", "a@b c", "a@bücher.de"] {
            let (_, diagnostics) = route(&format!("send alerts via email with smtp_server h, to_email \"{bad}\""));
            assert_eq!(diagnostics.len(), 1, "{bad}: {diagnostics:?}");
            assert!(
                diagnostics[0]
                    .ends_with(&format!("error: invalid address `{bad}` in `to_email`, expected user@domain")),
                "{diagnostics:?}"
            );
        }
        let (_, diagnostics) = route("send alerts via email with smtp_server \"mail server\", to_email a@b.c");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].contains("error: invalid smtp_server `mail server`"), "{diagnostics:?}");
    }

    #[test]
    fn pagerduty_severity_and_url() {
        let Channel::PagerDuty(pd) = checked(
            "send alerts via pagerduty with routing_key k, severity warning, url http://127.0.0.1:9/v2/enqueue",
        ) else {
            panic!()
        };
        assert_eq!(pd.severity, Some(Severity::Warning));
        assert_eq!(pd.url.map(String::from).as_deref(), Some("http://127.0.0.1:9/v2/enqueue"));
        assert_eq!(pd.routing_key.expose(), "k");
        let (_, diagnostics) = route("send alerts via pagerduty with routing_key k, url ftp://x");
        assert_eq!(
            diagnostics,
            ["inspeq.conf:1:51: error: invalid url `ftp://x`, expected an http:// or https:// URL"]
        );
    }

    #[test]
    fn alertmanager_firing_for() {
        let firing_for =
            |params: &str| match checked(&format!("send alerts via alertmanager with url http://am:9093{params}")) {
                Channel::Alertmanager(am) => am.firing_for,
                other => panic!("{other:?}"),
            };
        assert_eq!(firing_for(""), Duration::from_secs(24 * 3600), "the default");
        assert_eq!(firing_for(", firing_for 90s"), Duration::from_secs(90));
        assert_eq!(firing_for(", firing_for 2h"), Duration::from_secs(2 * 3600));
        assert_eq!(firing_for(", firing_for \"3 days\""), Duration::from_secs(3 * 86_400));
        assert_eq!(firing_for(", firing_for 300"), Duration::from_secs(300), "bare seconds, as `set` takes them");
        for bad in ["0", "0s", "10 cycles", "1w", "soon"] {
            let (_, diagnostics) =
                route(&format!("send alerts via alertmanager with url http://am:9093, firing_for \"{bad}\""));
            assert_eq!(diagnostics.len(), 1, "{bad}: {diagnostics:?}");
            assert!(
                diagnostics[0].contains(&format!("error: invalid firing_for `{bad}`, expected a time")),
                "{diagnostics:?}"
            );
        }
    }

    #[test]
    fn debug_of_the_model_shows_no_secret() {
        let conf = "send alerts via email with smtp_server h, username u, password SECRET-1, to_email a@b.c
send alerts to s via slack with url https://hooks.slack.com/services/T/B/SECRET-2
send alerts to w via webhook with url http://x/h, secret SECRET-3
send alerts to p via pagerduty with routing_key SECRET-4
";
        // A redis rule reads the password (into the model's `DaemonSource`, a `Secret` too).
        let check = "check service db with password SECRET-5, port 5432\n  if redis:used_memory > 1g then alert\n";
        let (config, diagnostics) = crate::config::load([("inspeq.conf", conf), ("services.d/db.inq", check)]);
        // Warnings only (the check's `password` is read by no collected family), and none shows a secret.
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
        assert!(!format!("{diagnostics:?}").contains("SECRET"), "{diagnostics:#?}");
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("Secret(***)") && shown.contains("\"password\": \"***\""), "{shown}");
        assert_eq!(
            config.services[0].params.get("password").map(String::as_str),
            Some("SECRET-5"),
            "kept, only hidden"
        );
    }
}
