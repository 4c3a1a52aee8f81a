//! Probe rules: `port 8080 is closed`, `http "URL" fails`, `http "URL" time > 500ms`, `tls "host:443" expires
//! within 14 days`, and the kernel's `listening 8080 stopped`.
//!
//! Each active probe a check's rules name is checked here into a [`Probe`] and kept once in `Check::probes`
//! (two rules on the same probe share its answer, so a cycle sends one request); a rule refers to it by
//! [`ProbeId`]. What this accepts the daemon probes as written: a URL it can request, a body pattern it can
//! compile, an address it can connect to.

use std::time::Duration;

use crate::config::amount::{self, parse_short_duration, parse_window};
use crate::config::ast::{self, Span, Text};
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::model::{
    Check, CheckKind, Condition, DaemonAddress, HttpProbe, Op, Probe, ProbeId, ProbeTarget, ProbeTest, TlsProbe,
};
use crate::config::names;

use super::checks::cycle_count;

/// How long a probe may take when its rule gives no `timeout` (Monit's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const KINDS: &str = "port, http, tls or listening";

/// The condition of a probe rule, its probe added to `check.probes` unless an equal one is there.
pub(super) fn probe_condition(
    file: &SourceFile<'_>,
    (kind, target, params, test): (&Text, &Text, &[(Text, Text)], &ast::ProbeTest),
    check: &mut Check,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    if kind.value == "listening" {
        return listening(file, target, params, test, check, out);
    }
    let probe_target = match kind.value.as_str() {
        "port" => port_target(file, target, out),
        "http" => http_target(file, target, params, out),
        "tls" => tls_target(file, target, params, out),
        _ => {
            out.push(file.error(kind.span, format!("unknown probe `{}`, expected {KINDS}", kind.value)));
            return None;
        }
    };
    let options = options(file, &kind.value, params, out);
    let test = probe_test(file, &kind.value, test, out);
    let (target, (timeout, interval), test) = (probe_target?, options?, test?);
    let probe = Probe { target, timeout: timeout.unwrap_or(DEFAULT_TIMEOUT), interval };
    let id = match check.probes.iter().position(|p| *p == probe) {
        Some(i) => i,
        None => {
            check.probes.push(probe);
            check.probes.len() - 1
        }
    };
    Some(Condition::Probe { probe: ProbeId(u32::try_from(id).ok()?), test })
}

/// `listening PORT stopped`: a service's own listening socket, seen by the kernel; no options, no cycles.
fn listening(
    file: &SourceFile<'_>,
    target: &Text,
    params: &[(Text, Text)],
    test: &ast::ProbeTest,
    check: &Check,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    if check.kind == CheckKind::Host {
        out.push(file.error(
            target.span,
            "`listening` is about a service's own sockets, expected it in the `check service` or `check process` that listens",
        ));
        return None;
    }
    let port = port_number(file, target, out);
    if let Some((key, _)) = params.first() {
        out.push(file.error(key.span, format!("unexpected `with {}`: `listening` takes no options", key.value)));
        return None;
    }
    let stopped =
        match test {
            ast::ProbeTest::Verb { verb, for_cycles: None } if verb.value == "stopped" => true,
            ast::ProbeTest::Verb { verb, for_cycles: Some((n, _)) } if verb.value == "stopped" => {
                out.push(file.error(
                    n.span,
                    "`listening N stopped` fires the moment the socket closes, expected no `for N cycles`",
                ));
                false
            }
            _ => {
                out.push(file.error(test_span(test), "expected `stopped`, like `listening 8080 stopped`"));
                false
            }
        };
    let port = port?;
    stopped.then_some(Condition::ListenerStopped { port })
}

fn port_number(file: &SourceFile<'_>, target: &Text, out: &mut Vec<Diagnostic>) -> Option<u16> {
    match target.value.parse::<u16>() {
        Ok(port) if port > 0 && !target.quoted => Some(port),
        _ => {
            out.push(
                file.error(target.span, format!("invalid port `{}`, expected a number from 1 to 65535", target.value)),
            );
            None
        }
    }
}

/// `port 8080` (localhost), `port "127.0.0.1:8080"`, `port "[::1]:8080"`, `port "db:5432"`, `port "/run/app.sock"`.
fn port_target(file: &SourceFile<'_>, target: &Text, out: &mut Vec<Diagnostic>) -> Option<ProbeTarget> {
    if !target.quoted {
        let port = port_number(file, target, out)?;
        return Some(ProbeTarget::Port(DaemonAddress::Tcp { host: "localhost".to_owned(), port }));
    }
    if target.value.starts_with('/') {
        return Some(ProbeTarget::Port(DaemonAddress::Unix(target.value.clone())));
    }
    let (host, port) = host_port(file, target, None, out)?;
    Some(ProbeTarget::Port(DaemonAddress::Tcp { host, port }))
}

/// `HOST:PORT`, `[V6]:PORT`, or `HOST` alone when a default port is given.
fn host_port(
    file: &SourceFile<'_>,
    target: &Text,
    default_port: Option<u16>,
    out: &mut Vec<Diagnostic>,
) -> Option<(String, u16)> {
    let text = target.value.as_str();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => (host, port.strip_prefix(':').map(Some).unwrap_or(Some(""))),
            None => ("", None),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => ("", None),
            None => (text, None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p > 0),
        (None, default) => default,
    };
    let valid_host = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    match port {
        Some(port) if valid_host => Some((host.to_owned(), port)),
        _ => {
            let expected = if default_port.is_some() {
                "HOST[:PORT] (`example.com`, `127.0.0.1:8443`, `[::1]:443`)"
            } else {
                "HOST:PORT (`127.0.0.1:8080`, `[::1]:8080`) or a Unix socket's absolute path"
            };
            out.push(file.error(target.span, format!("invalid address `{text}`, expected {expected}")));
            None
        }
    }
}

fn http_target(
    file: &SourceFile<'_>,
    target: &Text,
    params: &[(Text, Text)],
    out: &mut Vec<Diagnostic>,
) -> Option<ProbeTarget> {
    let url = match url::Url::parse(&target.value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(url) => {
            out.push(file.error(
                target.span,
                format!("unsupported URL scheme `{}`, expected http:// or https://", url.scheme()),
            ));
            None
        }
        Err(err) => {
            out.push(file.error(target.span, format!("invalid URL `{}`: {err}", target.value)));
            None
        }
    };
    let mut probe = HttpProbe { url: url?, status: None, body: None, ca_file: None };
    let mut ok = true;
    for (key, value) in params {
        match key.value.as_str() {
            "status" => match value.value.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => probe.status = Some(code),
                _ => {
                    out.push(file.error(
                        value.span,
                        format!("invalid status `{}`, expected an HTTP status from 100 to 599", value.value),
                    ));
                    ok = false;
                }
            },
            "body" => match names::body_pattern(&value.value) {
                Ok(_) => probe.body = Some(value.value.clone()),
                Err(err) => {
                    // The regex crate's message is a multi-line rendering of the pattern; its last line is the reason.
                    let text = err.to_string();
                    let reason = text.lines().last().unwrap_or("invalid").trim().trim_start_matches("error: ");
                    out.push(file.error(value.span, format!("invalid body pattern: {reason}")));
                    ok = false;
                }
            },
            "ca_file" => {
                ok &= ca_file(file, value, out);
                if probe.url.scheme() == "http" {
                    out.push(file.warning(key.span, "`ca_file` is ignored: the URL is http://, not https://"));
                }
                probe.ca_file = Some(value.value.clone());
            }
            _ => {}
        }
    }
    ok.then_some(ProbeTarget::Http(probe))
}

fn tls_target(
    file: &SourceFile<'_>,
    target: &Text,
    params: &[(Text, Text)],
    out: &mut Vec<Diagnostic>,
) -> Option<ProbeTarget> {
    if !target.quoted {
        out.push(file.error(target.span, "expected a quoted address, like `tls \"example.com:443\"`"));
        return None;
    }
    let (host, port) = host_port(file, target, Some(443), out)?;
    let mut probe = TlsProbe { server_name: host.clone(), host, port, ca_file: None };
    let mut ok = true;
    for (key, value) in params {
        match key.value.as_str() {
            "server_name" => {
                if certificate_name(&value.value) {
                    probe.server_name = value.value.clone();
                } else {
                    out.push(file.error(
                        value.span,
                        format!("invalid server name `{}`, expected a DNS name or an IP address", value.value),
                    ));
                    ok = false;
                }
            }
            "ca_file" => {
                ok &= ca_file(file, value, out);
                probe.ca_file = Some(value.value.clone());
            }
            _ => {}
        }
    }
    if ok && !certificate_name(&probe.server_name) {
        out.push(file.error(
            target.span,
            format!("`{}` cannot be a certificate's name, expected a DNS name or an IP address", probe.server_name),
        ));
        ok = false;
    }
    ok.then_some(ProbeTarget::Tls(probe))
}

/// Whether TLS can check a certificate against `name`: a DNS name or an IP address.
fn certificate_name(name: &str) -> bool {
    name.parse::<core::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

fn ca_file(file: &SourceFile<'_>, value: &Text, out: &mut Vec<Diagnostic>) -> bool {
    if value.value.starts_with('/') {
        return true;
    }
    out.push(file.error(value.span, format!("invalid ca_file `{}`, expected an absolute path", value.value)));
    false
}

/// The options every probe takes (`timeout`, `interval`), and an error for a key no probe of this kind reads.
fn options(
    file: &SourceFile<'_>,
    kind: &str,
    params: &[(Text, Text)],
    out: &mut Vec<Diagnostic>,
) -> Option<(Option<Duration>, Option<Duration>)> {
    let own: &[&str] = match kind {
        "http" => &["status", "body", "ca_file"],
        "tls" => &["server_name", "ca_file"],
        _ => &[],
    };
    let (mut timeout, mut interval, mut ok) = (None, None, true);
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in params {
        if seen.contains(&key.value.as_str()) {
            out.push(file.error(key.span, format!("`{}` is given twice, expected it once", key.value)));
            ok = false;
            continue;
        }
        seen.push(&key.value);
        let slot = match key.value.as_str() {
            "timeout" => &mut timeout,
            "interval" => &mut interval,
            k if own.contains(&k) => continue,
            k => {
                let mut takes: Vec<&str> = own.to_vec();
                takes.extend(["timeout", "interval"]);
                out.push(file.error(
                    key.span,
                    format!("unknown option `{k}` of a `{kind}` probe, expected {}", or_list(&takes)),
                ));
                ok = false;
                continue;
            }
        };
        match parse_short_duration(&[value.value.as_str()]) {
            Ok(d) => *slot = Some(d),
            Err(err) => {
                out.push(file.error(value.span, err.to_string()));
                ok = false;
            }
        }
    }
    ok.then_some((timeout, interval))
}

fn probe_test(
    file: &SourceFile<'_>,
    kind: &str,
    test: &ast::ProbeTest,
    out: &mut Vec<Diagnostic>,
) -> Option<ProbeTest> {
    let failing = match kind {
        "port" => "is closed",
        "http" | "tls" => "fails",
        _ => "fails",
    };
    let expected = match kind {
        "tls" => format!("`{failing}`, `expires within DURATION` or `time > DURATION`"),
        _ => format!("`{failing}` or `time > DURATION`"),
    };
    match test {
        ast::ProbeTest::State { is, state, for_cycles } if kind == "port" && is.value == "is" => {
            if state.value != "closed" {
                out.push(file.error(state.span, format!("unknown state `{}`, expected `closed`", state.value)));
                return None;
            }
            Some(ProbeTest::Fails { cycles: cycle_count(file, for_cycles.as_ref(), out)? })
        }
        ast::ProbeTest::Verb { verb, for_cycles } if kind != "port" && verb.value == "fails" => {
            Some(ProbeTest::Fails { cycles: cycle_count(file, for_cycles.as_ref(), out)? })
        }
        ast::ProbeTest::Within { verb, within } if kind == "tls" && verb.value == "expires" => {
            let words: Vec<&str> = within.iter().map(|w| w.value.as_str()).collect();
            let span = Span::new(within[0].span.start, within[within.len() - 1].span.end);
            match parse_window(&words) {
                Ok(amount::Span::Time(within)) => Some(ProbeTest::Expires { within }),
                Ok(amount::Span::Cycles(_)) => {
                    out.push(file.error(span, "expected a time span like `14 days`, not cycles"));
                    None
                }
                Err(err) => {
                    out.push(file.error(span, err.to_string()));
                    None
                }
            }
        }
        ast::ProbeTest::Compare { measure, op: (op, _), amount, for_cycles } if measure.value == "time" => {
            let millis = match parse_short_duration(&[amount.value.as_str()]) {
                Ok(d) => d.as_secs_f64() * 1000.0,
                Err(err) => {
                    out.push(file.error(amount.span, err.to_string()));
                    return None;
                }
            };
            if matches!(op, Op::Eq | Op::Ne) {
                out.push(file.error(amount.span, "a response time is never exact, expected `>`, `>=`, `<` or `<=`"));
                return None;
            }
            Some(ProbeTest::Time { op: *op, millis, cycles: cycle_count(file, for_cycles.as_ref(), out)? })
        }
        ast::ProbeTest::Compare { measure, .. } => {
            out.push(file.error(
                measure.span,
                format!("unknown measure `{}` of a probe, expected `time`, like `time > 500ms`", measure.value),
            ));
            None
        }
        _ => {
            out.push(file.error(test_span(test), format!("expected {expected} after the `{kind}` probe")));
            None
        }
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn test_span(test: &ast::ProbeTest) -> Span {
    match test {
        ast::ProbeTest::State { is, state, .. } => Span::new(is.span.start, state.span.end),
        ast::ProbeTest::Verb { verb, .. } | ast::ProbeTest::Within { verb, .. } => verb.span,
        ast::ProbeTest::Compare { measure, amount, .. } => Span::new(measure.span.start, amount.span.end),
    }
}
