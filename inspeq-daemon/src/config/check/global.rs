//! The `inspeq.conf` half of the semantic pass: `set` settings and `send alerts` routes with their channels.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::ast::{self, GlobalFile, GlobalStatement, Span, Text};
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::model::{Channel, Email, LogLevel, RestartLimit, Route, Settings, Tls};

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

/// Parameters each channel accepts; the required ones are checked in [`channel`].
fn channel_params(channel: &str) -> &'static [&'static str] {
    match channel {
        "email" => &["smtp_server", "smtp_port", "tls_port", "tls", "username", "password", "from_email", "to_email"],
        "gmail" => &["username", "password", "from_email", "to_email"],
        "slack" => &["url", "icon_emoji", "username", "channel"],
        "webhook" => &["url", "secret"],
        "pagerduty" => &["routing_key", "url", "severity"],
        "alertmanager" => &["url"],
        _ => &[],
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one match over a closed list of words; split up, the list would be harder to read"
)]
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
    let allowed = channel_params(name);
    let mut params: BTreeMap<&str, (String, Span)> = BTreeMap::new();
    let mut last_key: Option<&str> = None;
    let mut ok = true;
    for group in &send.params {
        if let Some(extra) = group.get(2) {
            out.push(file.error(extra.span, format!("unexpected `{}`, expected `,` between parameters", extra.value)));
            ok = false;
        }
        // A missing comma is reported once above; reading the group as pairs keeps it from causing more errors.
        for pair in group.chunks(2) {
            match pair {
                [key, value] => {
                    if !allowed.contains(&key.value.as_str()) {
                        let expected = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
                        out.push(file.warning(
                            key.span,
                            format!(
                                "unknown parameter `{}` for channel `{name}` is ignored, expected {expected}",
                                key.value
                            ),
                        ));
                    }
                    if params.insert(&key.value, (value.value.clone(), value.span)).is_some() {
                        out.push(file.warning(
                            key.span,
                            format!("parameter `{}` is given more than once; the last value wins", key.value),
                        ));
                    }
                    last_key = Some(&key.value);
                }
                [lone] => match last_key {
                    // Inspeqtor #131: an unquoted `to_email a@x, b@y` is a list of recipients, not a broken file.
                    Some("to_email") => {
                        if let Some((list, _)) = params.get_mut("to_email") {
                            list.push(',');
                            list.push_str(&lone.value);
                        }
                    }
                    _ => {
                        out.push(file.error(lone.span, format!("expected a value after parameter `{}`", lone.value)));
                        params.insert(&lone.value, (String::new(), lone.span));
                        ok = false;
                    }
                },
                _ => {}
            }
        }
    }
    let missing = |out: &mut Vec<Diagnostic>, key: &str, example: &str| {
        out.push(file.error(
            send.channel.span,
            format!("channel `{name}` needs parameter `{key}`, expected `with {key} {example}`"),
        ));
    };
    let get = |key: &str| params.get(key).map(|(v, _)| v.clone());
    let channel = match name {
        "email" | "gmail" => {
            let gmail = name == "gmail";
            let smtp_server = if gmail { Some("smtp.gmail.com".to_owned()) } else { get("smtp_server") };
            let to = get("to_email");
            if smtp_server.is_none() {
                missing(out, "smtp_server", "smtp.example.com");
            }
            if to.is_none() {
                missing(out, "to_email", "ops@example.com");
            }
            if gmail && get("username").is_none() {
                missing(out, "username", "you@gmail.com");
            }
            if gmail && get("password").is_none() {
                missing(out, "password", "\"app password\"");
            }
            let (smtp_server, to) = (smtp_server?, to?);
            let mut to_email = Vec::new();
            let to_span = params.get("to_email").map_or(send.channel.span, |(_, s)| *s);
            for address in to.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                if address.contains('@') && !address.contains(char::is_whitespace) {
                    to_email.push(address.to_owned());
                } else {
                    out.push(
                        file.error(to_span, format!("invalid address `{address}` in `to_email`, expected user@domain")),
                    );
                    ok = false;
                }
            }
            let username = get("username");
            let port = match params.get("smtp_port").or_else(|| params.get("tls_port")) {
                Some((p, span)) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => {
                        out.push(file.error(*span, format!("invalid port `{p}`, expected a number from 1 to 65535")));
                        ok = false;
                        None
                    }
                },
                None => None,
            };
            let tls = match params.get("tls") {
                Some((t, span)) => match t.as_str() {
                    "starttls" => Tls::StartTls,
                    "implicit" => Tls::Implicit,
                    "none" => Tls::None,
                    _ => {
                        out.push(
                            file.error(*span, format!("invalid tls mode `{t}`, expected starttls, implicit or none")),
                        );
                        ok = false;
                        Tls::StartTls
                    }
                },
                // Inspeqtor's rules: AUTH means STARTTLS on the submission port; no AUTH means a plain local relay.
                None if gmail || username.is_some() => {
                    if port == Some(465) {
                        Tls::Implicit
                    } else {
                        Tls::StartTls
                    }
                }
                None => {
                    if port == Some(465) {
                        Tls::Implicit
                    } else {
                        Tls::None
                    }
                }
            };
            let smtp_port = port.unwrap_or(match tls {
                Tls::StartTls => 587,
                Tls::Implicit => 465,
                Tls::None => 25,
            });
            Channel::Email(Email {
                gmail,
                smtp_server,
                smtp_port,
                tls,
                username,
                password: get("password"),
                from_email: get("from_email"),
                to_email,
            })
        }
        "slack" | "webhook" | "alertmanager" => {
            let Some(url) = get("url") else {
                missing(out, "url", "https://...");
                return None;
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let span = params.get("url").map_or(send.channel.span, |(_, s)| *s);
                out.push(file.error(span, format!("invalid url `{url}`, expected an http:// or https:// URL")));
                return None;
            }
            match name {
                "slack" => Channel::Slack {
                    url,
                    icon_emoji: get("icon_emoji"),
                    username: get("username"),
                    channel: get("channel"),
                },
                "webhook" => Channel::Webhook { url, secret: get("secret") },
                _ => Channel::Alertmanager { url },
            }
        }
        "pagerduty" => {
            let Some(routing_key) = get("routing_key") else {
                missing(out, "routing_key", "YOUR_INTEGRATION_KEY");
                return None;
            };
            let severity = get("severity");
            if let Some(sev) = &severity
                && !matches!(sev.as_str(), "critical" | "error" | "warning" | "info")
            {
                let span = params.get("severity").map_or(send.channel.span, |(_, s)| *s);
                out.push(
                    file.error(span, format!("invalid severity `{sev}`, expected critical, error, warning or info")),
                );
                ok = false;
            }
            Channel::PagerDuty { routing_key, url: get("url"), severity }
        }
        _ => Channel::Log,
    };
    ok.then_some(channel)
}
