//! What alerts say: one-line text for chat and logs, a subject and body for
//! email, digests for floods, and the labels, annotations, timestamps and
//! fingerprint that the structured formats (webhook, PagerDuty, Alertmanager)
//! share.
//!
//! Every sentence names the host and the service, says what happened and what
//! inspeq did, so a message read alone on a phone is enough to act on.

use std::{fmt::Write as _, time::SystemTime};

use serde_json::{Map, Value, json};

use super::{Alert, AlertKind, Comparison, ExitStatus, Response, RuleState};

/// `service on host` (or just the host for the host check).
fn target(alert: &Alert) -> String {
    if alert.service == "host" || alert.service == alert.hostname {
        alert.hostname.clone()
    } else {
        format!("{} on {}", alert.service, alert.hostname)
    }
}

/// What happened, one sentence without the final period.
fn what(alert: &Alert) -> String {
    let t = target(alert);
    match &alert.event {
        AlertKind::ProcessDown => format!("{t} is down: no process is running"),
        AlertKind::ProcessUp { pid: Some(pid) } => format!("{t} is running again (pid {pid})"),
        AlertKind::ProcessUp { pid: None } => format!("{t} is running again"),
        AlertKind::Crashed { pid, exit } => format!("{t} crashed: pid {pid} {}", exit_text(*exit)),
        AlertKind::OomKilled { pid, rss_bytes } => match rss_bytes {
            Some(rss) => format!("{t} was killed by the OOM killer: pid {pid}, {} resident", bytes(*rss)),
            None => format!("{t} was killed by the OOM killer: pid {pid}"),
        },
        AlertKind::RestartFailed { reason } => format!("{t} is down and its restart failed: {reason}"),
        AlertKind::WorkerCrashed { pid, exit } => format!("a worker of {t} died: pid {pid} {}", exit_text(*exit)),
        AlertKind::WorkerOomKilled { pid, rss_bytes: Some(rss) } => {
            format!("a worker of {t} was killed by the OOM killer: pid {pid}, {} resident", bytes(*rss))
        }
        AlertKind::WorkerOomKilled { pid, rss_bytes: None } => {
            format!("a worker of {t} was killed by the OOM killer: pid {pid}")
        }
        AlertKind::WorkerDeaths { deaths, within_secs } => {
            format!("{t} is losing workers: {deaths} died within {}", duration(*within_secs))
        }
        AlertKind::RuleFailed(rule) => {
            let mut s = format!("{t}: {} is {}, {} {}", rule.metric, rule.value, comparison(rule), rule.threshold);
            if let Some(secs) = rule.for_secs {
                let _ = write!(s, " for {}", duration(secs));
            }
            s
        }
        AlertKind::RuleRecovered(rule) => format!(
            "{t}: {} has recovered: {} is no longer {} {}",
            rule.metric,
            rule.value,
            comparison(rule),
            rule.threshold
        ),
        AlertKind::Unreachable { daemon, error, .. } => format!("{t}: {daemon} is unreachable: {error}"),
        AlertKind::Reachable { daemon, for_secs, .. } => {
            format!("{t}: {daemon} answers again, after {} unreachable", duration(*for_secs))
        }
        AlertKind::ProbeFailed { probe, error, .. } => format!("{t}: {probe} fails: {error}"),
        AlertKind::ProbeAnswers { probe, for_secs, .. } => {
            format!("{t}: {probe} answers again, after {} failing", duration(*for_secs))
        }
        AlertKind::ListenerStopped { port, address, pid, .. } => match (address, pid) {
            (Some(address), Some(pid)) => format!("{t} stopped listening on port {port}: pid {pid} closed {address}"),
            _ => format!("{t} stopped listening on port {port}"),
        },
        AlertKind::Listening { port, for_secs, .. } => {
            format!("{t} listens on port {port} again, after {}", duration(*for_secs))
        }
        AlertKind::Restarted { pid: Some(pid) } => format!("{t} was restarted (new pid {pid})"),
        AlertKind::Restarted { pid: None } => format!("{t} was restarted"),
        AlertKind::FlapDetected { restarts, within_secs } => {
            format!("{t} is flapping: {restarts} restarts within {}", duration(*within_secs))
        }
        AlertKind::Unmonitored { reason } => format!("inspeq stopped monitoring {t}: {reason}"),
        AlertKind::JobOverdue { job, every_secs } => {
            format!("recurring job {job} on {} is overdue (it runs every {})", alert.hostname, duration(*every_secs))
        }
        AlertKind::JobRan { job } => format!("overdue job {job} on {} just ran", alert.hostname),
        AlertKind::Test => format!("test alert from inspeq on {}: this route works", alert.hostname),
    }
}

fn comparison(rule: &RuleState) -> &'static str {
    match rule.comparison {
        Comparison::Above => "above",
        Comparison::Below => "below",
        Comparison::Within => "within",
    }
}

/// What inspeq did, as a sentence (empty when it did nothing), then who
/// brings the service back when its init system does that by itself.
fn did(alert: &Alert) -> String {
    let mut init = None;
    let parts: Vec<String> = alert
        .actions
        .iter()
        .filter_map(|a| match a {
            Response::Restart => Some("restarting it".to_owned()),
            Response::Reload => Some("reloading it".to_owned()),
            Response::Unmonitor => Some("no longer monitoring it".to_owned()),
            Response::Exec(cmd) => Some(format!("running `{cmd}`")),
            Response::InitRestarts { init: name } => {
                init = Some(name.as_str());
                None
            }
        })
        .collect();
    let mut s = if parts.is_empty() { String::new() } else { format!("inspeq is {}.", parts.join(", then ")) };
    if let Some(init) = init {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "{init} is restarting it.");
    }
    s
}

/// One line for chat and logs.
pub fn chat(alert: &Alert) -> String {
    let did = did(alert);
    if did.is_empty() { format!("{}.", what(alert)) } else { format!("{}. {did}", what(alert)) }
}

/// The email subject.
pub fn subject(alert: &Alert) -> String {
    let prefix = match alert.event.status() {
        super::Status::Firing => "[inspeq]",
        super::Status::Resolved => "[inspeq] resolved:",
    };
    format!("{prefix} {}", what(alert))
}

/// The email body: the sentence, then every fact on its own line.
pub fn body(alert: &Alert) -> String {
    let mut s = chat(alert);
    s.push_str("\n\n");
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(s, "{k:<10} {v}");
    };
    line("Host:", &alert.hostname);
    line("Service:", &alert.service);
    line("AlertKind:", alert.event.kind());
    line("Status:", alert.event.status().as_str());
    for (k, v) in details(alert) {
        line(&format!("{}:", capitalise(&k)), &v);
    }
    line("Time:", &rfc3339(alert.at));
    line("Key:", &alert.fingerprint());
    s.push_str("\n-- \ninspeq\n");
    s
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The event's own facts as `(name, value)` pairs, for bodies and annotations.
pub fn details(alert: &Alert) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| d.push((k.to_owned(), v));
    match &alert.event {
        AlertKind::ProcessUp { pid: Some(pid) } | AlertKind::Restarted { pid: Some(pid) } => {
            add("pid", pid.to_string())
        }
        AlertKind::Crashed { pid, exit } => {
            add("pid", pid.to_string());
            add("exit", exit_text(*exit));
        }
        AlertKind::OomKilled { pid, rss_bytes } | AlertKind::WorkerOomKilled { pid, rss_bytes } => {
            add("pid", pid.to_string());
            if let Some(rss) = rss_bytes {
                add("rss", bytes(*rss));
            }
        }
        AlertKind::RuleFailed(rule) | AlertKind::RuleRecovered(rule) => {
            add("rule", rule.rule.clone());
            add("metric", rule.metric.clone());
            add("value", rule.value.clone());
            add("threshold", format!("{} {}", comparison(rule), rule.threshold));
            if let Some(secs) = rule.for_secs {
                add("for", duration(secs));
            }
        }
        AlertKind::Unreachable { rule, daemon, error } => {
            add("rule", rule.clone());
            add("daemon", daemon.clone());
            add("error", error.clone());
        }
        AlertKind::Reachable { rule, daemon, for_secs } => {
            add("rule", rule.clone());
            add("daemon", daemon.clone());
            add("for", duration(*for_secs));
        }
        AlertKind::ProbeFailed { rule, probe, error } => {
            add("rule", rule.clone());
            add("probe", probe.clone());
            add("error", error.clone());
        }
        AlertKind::ProbeAnswers { rule, probe, for_secs } => {
            add("rule", rule.clone());
            add("probe", probe.clone());
            add("for", duration(*for_secs));
        }
        AlertKind::ListenerStopped { rule, port, address, pid } => {
            add("rule", rule.clone());
            add("port", port.to_string());
            if let Some(address) = address {
                add("address", address.clone());
            }
            if let Some(pid) = pid {
                add("pid", pid.to_string());
            }
        }
        AlertKind::Listening { rule, port, for_secs } => {
            add("rule", rule.clone());
            add("port", port.to_string());
            add("for", duration(*for_secs));
        }
        AlertKind::FlapDetected { restarts, within_secs } => {
            add("restarts", restarts.to_string());
            add("within", duration(*within_secs));
        }
        AlertKind::Unmonitored { reason } | AlertKind::RestartFailed { reason } => add("reason", reason.clone()),
        AlertKind::WorkerCrashed { pid, exit } => {
            add("pid", pid.to_string());
            add("exit", exit_text(*exit));
        }
        AlertKind::WorkerDeaths { deaths, within_secs } => {
            add("deaths", deaths.to_string());
            add("within", duration(*within_secs));
        }
        AlertKind::JobOverdue { job, every_secs } => {
            add("job", job.clone());
            add("every", duration(*every_secs));
        }
        AlertKind::JobRan { job } => add("job", job.clone()),
        AlertKind::ProcessDown
        | AlertKind::ProcessUp { pid: None }
        | AlertKind::Restarted { pid: None }
        | AlertKind::Test => {}
    }
    let did = did(alert);
    if !did.is_empty() {
        add("action", did);
    }
    d
}

/// The subject of a digest of `alerts` (more than one).
pub fn digest_subject(alerts: &[Alert]) -> String {
    let hosts = distinct(alerts.iter().map(|a| a.hostname.as_str()));
    format!("[inspeq] {} alerts on {}", alerts.len(), hosts.join(", "))
}

/// A digest: the count, then up to `DIGEST_LINES` alerts one per line, then how
/// many more there were.
pub fn digest(alerts: &[Alert]) -> String {
    const DIGEST_LINES: usize = 20;
    let services = distinct(alerts.iter().map(|a| a.service.as_str()));
    let mut s = format!("{} alerts (too many to send one by one) for {}:\n", alerts.len(), services.join(", "));
    for alert in alerts.iter().take(DIGEST_LINES) {
        let _ = writeln!(s, "• {} {}", rfc3339(alert.at), chat(alert));
    }
    if alerts.len() > DIGEST_LINES {
        let _ = writeln!(s, "… and {} more.", alerts.len() - DIGEST_LINES);
    }
    s
}

fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// Alertmanager-style labels: identical for the firing and the resolved alert
/// of one condition.
pub fn labels(alert: &Alert) -> Map<String, Value> {
    let condition = alert.event.condition();
    let mut m = Map::new();
    m.insert("alertname".into(), condition.name.into());
    m.insert("host".into(), alert.hostname.clone().into());
    m.insert("service".into(), alert.service.clone().into());
    m.insert("condition".into(), condition.key.into());
    m.insert("severity".into(), condition.severity.as_str().into());
    m
}

/// Annotations: the sentence, the event kind and the event's facts.
pub fn annotations(alert: &Alert) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("summary".into(), chat(alert).into());
    m.insert("event".into(), alert.event.kind().into());
    for (k, v) in details(alert) {
        m.insert(k, v.into());
    }
    m
}

/// The alert as one structured object, in the webhook's per-alert shape.
pub fn structured(alert: &Alert) -> Value {
    let status = alert.event.status();
    let (starts, ends) = match (status, &alert.event) {
        (super::Status::Resolved, AlertKind::RuleRecovered(RuleState { for_secs: Some(secs), .. }))
        | (
            super::Status::Resolved,
            AlertKind::Reachable { for_secs: secs, .. }
            | AlertKind::ProbeAnswers { for_secs: secs, .. }
            | AlertKind::Listening { for_secs: secs, .. },
        ) => (alert.at - std::time::Duration::from_secs(*secs), rfc3339(alert.at)),
        (super::Status::Resolved, _) => (alert.at, rfc3339(alert.at)),
        // Alertmanager's webhook marks "not ended" with the zero time.
        (super::Status::Firing, _) => (alert.at, "0001-01-01T00:00:00Z".to_owned()),
    };
    json!({
        "status": status.as_str(),
        "labels": labels(alert),
        "annotations": annotations(alert),
        "startsAt": rfc3339(starts),
        "endsAt": ends,
        "generatorURL": "",
        "fingerprint": alert.fingerprint(),
    })
}

/// A stable key for one condition of one service on one host: the first 16 hex
/// digits of SHA-256 over the three, like Alertmanager's fingerprints.
pub fn fingerprint(hostname: &str, service: &str, condition: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [hostname, service, condition] {
        ctx.update(part.as_bytes());
        // A separator that cannot occur in names keeps ("ab","c") != ("a","bc").
        ctx.update(&[0]);
    }
    hex(&ctx.finish().as_ref()[..8])
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `exited with code 3`, `was killed by signal 9 (SIGKILL), core dumped`,
/// `exited with an unknown status` (alerts and `status` both say it so).
pub fn exit_text(exit: ExitStatus) -> String {
    match exit {
        ExitStatus::Code(code) => format!("exited with code {code}"),
        ExitStatus::Unknown => "exited with an unknown status".to_owned(),
        ExitStatus::Signal { signal, core_dumped } => {
            let name = crate::signal::name(signal).map(|n| format!(" ({n})")).unwrap_or_default();
            let core = if core_dumped { ", core dumped" } else { "" };
            format!("was killed by signal {signal}{name}{core}")
        }
    }
}

/// `512.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `45s`, `5m`, `1h30m`, `2d`.
pub fn duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut s = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            let _ = write!(s, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    s
}

/// RFC 3339 in UTC with milliseconds (`2026-03-01T12:00:00.250Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rule(value: &str) -> RuleState {
        RuleState {
            rule: "memory:rss > 500m".into(),
            metric: "memory:rss".into(),
            comparison: Comparison::Above,
            value: value.into(),
            threshold: "500m".into(),
            for_secs: Some(90),
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400) + Duration::from_millis(250)), "2000-02-29T00:00:00.250Z");
        assert_eq!(rfc3339(at(1_772_366_400)), "2026-03-01T12:00:00.000Z");
    }

    #[test]
    fn chat_lines_say_host_service_what_and_what_inspeq_did() {
        let failed =
            Alert::new("web1", "nginx", AlertKind::RuleFailed(rule("612m")), at(0)).with_actions([Response::Restart]);
        assert_eq!(chat(&failed), "nginx on web1: memory:rss is 612m, above 500m for 1m30s. inspeq is restarting it.");
        let crashed = Alert::new(
            "web1",
            "nginx",
            AlertKind::Crashed { pid: 42, exit: ExitStatus::Signal { signal: 9, core_dumped: false } },
            at(0),
        );
        assert_eq!(chat(&crashed), "nginx on web1 crashed: pid 42 was killed by signal 9 (SIGKILL).");
        let code = Alert::new("web1", "nginx", AlertKind::Crashed { pid: 42, exit: ExitStatus::Code(3) }, at(0));
        assert_eq!(chat(&code), "nginx on web1 crashed: pid 42 exited with code 3.");
        let oom = Alert::new("web1", "db", AlertKind::OomKilled { pid: 7, rss_bytes: Some(512 << 20) }, at(0));
        assert_eq!(chat(&oom), "db on web1 was killed by the OOM killer: pid 7, 512.0 MiB resident.");
        let worker = AlertKind::WorkerOomKilled { pid: 8, rss_bytes: Some(64 << 20) };
        assert_eq!(
            chat(&Alert::new("web1", "db", worker, at(0))),
            "a worker of db on web1 was killed by the OOM killer: pid 8, 64.0 MiB resident."
        );
        let unknown = Alert::new("web1", "db", AlertKind::Crashed { pid: 9, exit: ExitStatus::Unknown }, at(0));
        assert_eq!(chat(&unknown), "db on web1 crashed: pid 9 exited with an unknown status.");
        let host = Alert::new(
            "web1",
            "host",
            AlertKind::RuleFailed(RuleState { metric: "disk:/".into(), ..rule("93%") }),
            at(0),
        );
        assert!(chat(&host).starts_with("web1: disk:/ is 93%"), "{}", chat(&host));
        let job = Alert::new("web1", "jobs", AlertKind::JobOverdue { job: "backup".into(), every_secs: 7200 }, at(0));
        assert_eq!(chat(&job), "recurring job backup on web1 is overdue (it runs every 2h).");
    }

    #[test]
    fn email_subject_and_body() {
        let recovered = Alert::new("web1", "nginx", AlertKind::RuleRecovered(rule("300m")), at(1_772_366_400));
        assert_eq!(
            subject(&recovered),
            "[inspeq] resolved: nginx on web1: memory:rss has recovered: 300m is no longer above 500m"
        );
        let body = body(&recovered);
        assert!(body.contains("\nHost:      web1\n"), "{body}");
        assert!(body.contains("\nThreshold: above 500m\n"), "{body}");
        assert!(body.contains("\nTime:      2026-03-01T12:00:00.000Z\n"), "{body}");
    }

    #[test]
    fn fingerprints_pair_failure_and_recovery_and_nothing_else() {
        let failed = Alert::new("web1", "nginx", AlertKind::RuleFailed(rule("612m")), at(0));
        let recovered = Alert::new("web1", "nginx", AlertKind::RuleRecovered(rule("300m")), at(60));
        assert_eq!(failed.fingerprint(), recovered.fingerprint());
        assert_eq!(failed.fingerprint().len(), 16);
        assert_eq!(labels(&failed), labels(&recovered), "Alertmanager pairs by the label set");
        let other_host = Alert::new("web2", "nginx", AlertKind::RuleFailed(rule("612m")), at(0));
        assert_ne!(failed.fingerprint(), other_host.fingerprint());
        let down = Alert::new("web1", "nginx", AlertKind::ProcessDown, at(0));
        let up = Alert::new("web1", "nginx", AlertKind::ProcessUp { pid: Some(3) }, at(0));
        assert_eq!(down.fingerprint(), up.fingerprint());
        assert_ne!(down.fingerprint(), failed.fingerprint());
        assert_ne!(fingerprint("ab", "c", "x"), fingerprint("a", "bc", "x"));
    }

    #[test]
    fn digests_name_the_count() {
        let alerts: Vec<Alert> = (0..25)
            .map(|i| Alert::new("web1", "nginx", AlertKind::Crashed { pid: i, exit: ExitStatus::Code(1) }, at(0)))
            .collect();
        let d = digest(&alerts);
        assert!(d.starts_with("25 alerts (too many to send one by one) for nginx:\n"), "{d}");
        assert!(d.ends_with("… and 5 more.\n"), "{d}");
        assert_eq!(digest_subject(&alerts), "[inspeq] 25 alerts on web1");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncated("abc", 5), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aé", 3), "aé");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(172_800), "2d");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
