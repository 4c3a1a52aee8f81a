//! Alerts against real servers on loopback: email through aiosmtpd (plain,
//! STARTTLS with AUTH, implicit TLS, a private CA, port 587), Slack, webhook and
//! PagerDuty through a recording HTTP receiver (asserting the exact JSON), a real
//! Prometheus Alertmanager, and the outbox surviving a SIGKILL.
//!
//! Every route is written as `inspeq.conf` text and goes through the real
//! checker to `Routes::build`, as the daemon's do, so each test reads as the
//! specification of the options it uses.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use inspeq_daemon::alert::{
    Alert, AlertKind, Comparison, ExitStatus, Outbox, OutboxConfig, Response, Routes, RuleState, SendError, Target,
    template::rfc3339, test_routes, webhook::SIGNATURE_HEADER,
};
use serde_json::json;
use tests::alert_harness::{
    ALERTMANAGER, Alertmanager, HttpReceiver, OPENSSL, PYTHON, SmtpServer, SmtpTls, TempDir, TestCa, free_port, have,
    routes_from_conf,
};

/// 2026-03-01T12:00:00Z.
fn noon() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_366_400)
}

fn rss_rule(value: &str, for_secs: u64) -> RuleState {
    RuleState {
        rule: "memory:rss > 500m".into(),
        metric: "memory:rss".into(),
        comparison: Comparison::Above,
        value: value.into(),
        threshold: "500m".into(),
        for_secs: Some(for_secs),
    }
}

fn rss_failed(at: SystemTime) -> Alert {
    Alert::new("web1", "nginx", AlertKind::RuleFailed(rss_rule("612m", 90)), at).with_actions([Response::Restart])
}

/// The routes of `inspeq.conf` text on host `web1`.
fn routes(conf: &str) -> Routes {
    routes_from_conf(conf, "web1")
}

fn outbox(dir: &TempDir, routes: Routes) -> Outbox {
    let config = OutboxConfig {
        first_retry: Duration::from_millis(100),
        max_retry: Duration::from_millis(500),
        ..OutboxConfig::new(dir.path().join("outbox"))
    };
    Outbox::start(config, routes).unwrap()
}

async fn idle(outbox: &Outbox) {
    tokio::time::timeout(Duration::from_secs(30), outbox.wait_idle())
        .await
        .unwrap_or_else(|_| panic!("alerts still pending after 30 s: {:?}", outbox.stats()));
}

// ---------------------------------------------------------------- email

#[tokio::test]
async fn email_reaches_every_recipient_with_headers_and_body() {
    if !have("email_reaches_every_recipient_with_headers_and_body", PYTHON) {
        return;
    }
    let dir = TempDir::new("email-plain");
    let port = free_port();
    let server = SmtpServer::start(port, &dir.path().join("mail"), SmtpTls::None, None);
    let outbox = outbox(
        &dir,
        routes(&format!(
            "send alerts via email with smtp_server 127.0.0.1, tls_port {port}, tls none,
               from_email inspeq@web1.example.org, to_email \"ops@example.org, dev@example.org,oncall@example.org\""
        )),
    );
    let alert = rss_failed(noon());
    outbox.raise(alert.clone(), Target::default()).unwrap();
    idle(&outbox).await;

    let messages = server.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1, "one alert, one message");
    let m = &messages[0];
    assert_eq!(m.mail_from, "inspeq@web1.example.org");
    assert_eq!(m.rcpt_tos, ["ops@example.org", "dev@example.org", "oncall@example.org"], "every recipient");
    assert_eq!(m.header("From").as_deref(), Some("inspeq@web1.example.org"));
    assert_eq!(m.header("To").as_deref(), Some("ops@example.org, dev@example.org, oncall@example.org"));
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("[inspeq] nginx on web1: memory:rss is 612m, above 500m for 1m30s")
    );
    assert_eq!(m.header("Date").as_deref(), Some("Sun, 01 Mar 2026 12:00:00 +0000"));
    let id = m.header("Message-ID").unwrap();
    assert!(id.starts_with(&format!("<{}.", alert.fingerprint())) && id.ends_with("@web1>"), "{id}");
    let body = m.body();
    assert!(
        body.starts_with("nginx on web1: memory:rss is 612m, above 500m for 1m30s. inspeq is restarting it.\r\n"),
        "{body}"
    );
    for line in ["Host:      web1", "Service:   nginx", "Value:     612m", "Threshold: above 500m", "For:       1m30s"]
    {
        assert!(body.contains(&format!("\r\n{line}\r\n")), "{line:?} missing from:\n{body}");
    }
    assert!(!m.tls && m.auth.is_none());
}

#[tokio::test]
async fn email_with_starttls_and_auth_trusting_a_private_ca() {
    if !have("email_with_starttls_and_auth_trusting_a_private_ca", PYTHON) || !have("email_with_starttls", OPENSSL) {
        return;
    }
    let dir = TempDir::new("email-starttls");
    let ca = TestCa::new(dir.path());
    let port = free_port();
    let server = SmtpServer::start(port, &dir.path().join("mail"), SmtpTls::StartTls(&ca), Some(("alerts", "s3cret")));
    let ca = ca.ca.display();
    let good = routes(&format!(
        "send alerts via email with smtp_server 127.0.0.1, smtp_port {port}, tls starttls, username alerts,
           password s3cret, to_email ops@example.org, tls_ca_file \"{ca}\"
         send alerts to wrong-password via email with smtp_server 127.0.0.1, smtp_port {port}, tls starttls,
           username alerts, password guess, to_email ops@example.org, tls_ca_file \"{ca}\"
         send alerts to untrusted via email with smtp_server 127.0.0.1, smtp_port {port}, tls starttls,
           username alerts, password s3cret, to_email ops@example.org"
    ));
    let outcomes = test_routes(&good, None, "web1", Duration::from_secs(20)).await;
    let by_route =
        |name: &str| outcomes.iter().find(|o| o.route == name).unwrap_or_else(|| panic!("no outcome for {name}"));

    by_route("default").result.as_ref().unwrap_or_else(|e| panic!("STARTTLS with AUTH: {e}"));
    let wrong = by_route("wrong-password").result.as_ref().unwrap_err();
    assert!(matches!(wrong, SendError::Smtp { .. }) && wrong.to_string().contains("535"), "{wrong}");
    let untrusted = by_route("untrusted").result.as_ref().unwrap_err();
    assert!(
        matches!(untrusted, SendError::Smtp { .. }) && untrusted.to_string().to_lowercase().contains("certificate"),
        "a private CA is not trusted unless configured: {untrusted}"
    );

    let messages = server.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1, "only the good route got through");
    assert!(messages[0].tls, "sent after STARTTLS");
    assert_eq!(messages[0].auth.as_deref(), Some("alerts"));
    assert_eq!(
        messages[0].header("Subject").as_deref(),
        Some("[inspeq] test alert from inspeq on web1: this route works")
    );
}

#[tokio::test]
async fn email_over_implicit_tls() {
    if !have("email_over_implicit_tls", PYTHON) || !have("email_over_implicit_tls", OPENSSL) {
        return;
    }
    let dir = TempDir::new("email-implicit");
    let ca = TestCa::new(dir.path());
    let port = free_port();
    let server = SmtpServer::start(port, &dir.path().join("mail"), SmtpTls::Implicit(&ca), None);
    let r = routes(&format!(
        "send alerts via email with smtp_server localhost, smtp_port {port}, tls implicit,
           tls_ca_file \"{}\", to_email ops@example.org",
        ca.ca.display()
    ));
    let outcomes = test_routes(&r, None, "web1", Duration::from_secs(20)).await;
    outcomes[0].result.as_ref().unwrap_or_else(|e| panic!("implicit TLS: {e}"));
    let messages = server.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
}

/// Port 587 is the submission port: STARTTLS whether or not the route logs in
/// (a relay that takes mail without AUTH there gets it encrypted too).
#[tokio::test]
async fn email_on_port_587_without_a_username_goes_over_starttls() {
    let test = "email_on_port_587_without_a_username_goes_over_starttls";
    if !have(test, PYTHON) || !have(test, OPENSSL) {
        return;
    }
    // The port itself is the point: it must be 587, which needs root and must be free.
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:587") {
        tests::cannot_run(test, &format!("cannot listen on 127.0.0.1:587 ({e}; needs root and the port free)"));
        return;
    }
    let dir = TempDir::new("email-587");
    let ca = TestCa::new(dir.path());
    let server = SmtpServer::start(587, &dir.path().join("mail"), SmtpTls::StartTls(&ca), None);
    let r = routes(&format!(
        "send alerts via email with smtp_server localhost, smtp_port 587, tls_ca_file \"{}\", to_email ops@example.org",
        ca.ca.display()
    ));
    let outcomes = test_routes(&r, None, "web1", Duration::from_secs(20)).await;
    outcomes[0].result.as_ref().unwrap_or_else(|e| panic!("STARTTLS on 587: {e}"));
    let messages = server.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls, "sent after STARTTLS, not in plain text");
    assert_eq!(messages[0].auth, None, "no username, no AUTH");
}

// ---------------------------------------------------------------- durability

/// Starts the probe and returns it with its first line of output.
fn probe(
    outbox_dir: &std::path::Path,
    port: u16,
    raise: u32,
    exit_when_idle: bool,
) -> (std::process::Child, BufReader<std::process::ChildStdout>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inspeq-alert-probe"));
    command.arg(outbox_dir).arg(port.to_string()).arg(raise.to_string()).stdout(Stdio::piped()).stderr(Stdio::null());
    if exit_when_idle {
        command.arg("--exit-when-idle");
    }
    let mut child = command.spawn().expect("starting inspeq-alert-probe");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line.trim().to_owned())
}

/// Records in the default route's segments: one line each.
fn alerts_on_disk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("default"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum()
}

#[test]
fn alerts_survive_sigkill_and_are_delivered_exactly_once() {
    if !have("alerts_survive_sigkill_and_are_delivered_exactly_once", PYTHON) {
        return;
    }
    let dir = TempDir::new("durable");
    let outbox_dir = dir.path().join("outbox");
    let port = free_port();

    // The SMTP server is down: alerts are raised, the process is killed.
    let (mut first, _, line) = probe(&outbox_dir, port, 6, false);
    assert_eq!(line, "persisted 6 pending 6");
    std::thread::sleep(Duration::from_millis(400));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert_eq!(alerts_on_disk(&outbox_dir), 6, "all six wait on disk");

    // Restarted while the server is still down, then the server comes up.
    let (mut second, mut out, line) = probe(&outbox_dir, port, 0, true);
    assert_eq!(line, "persisted 0 pending 6", "the restarted process found them");
    std::thread::sleep(Duration::from_millis(500));
    let server = SmtpServer::start(port, &dir.path().join("mail"), SmtpTls::None, None);
    let mut done = String::new();
    out.read_line(&mut done).unwrap();
    assert_eq!(done.trim(), "idle delivered 6");
    assert!(second.wait().unwrap().success());

    // A third start finds nothing left to send.
    let (mut third, mut out, line) = probe(&outbox_dir, port, 0, true);
    assert_eq!(line, "persisted 0 pending 0");
    let mut done = String::new();
    out.read_line(&mut done).unwrap();
    assert_eq!(done.trim(), "idle delivered 0");
    third.wait().unwrap();

    std::thread::sleep(Duration::from_millis(300));
    let messages = server.messages();
    let subjects: Vec<String> = messages.iter().map(|m| m.header("Subject").unwrap()).collect();
    let expected: BTreeSet<String> =
        (0..6).map(|i| format!("[inspeq] svc{i} on web1 crashed: pid {} exited with code {i}", 1000 + i)).collect();
    assert_eq!(subjects.len(), 6, "exactly six messages, none duplicated: {subjects:#?}");
    assert_eq!(subjects.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let ids: BTreeSet<String> = messages.iter().map(|m| m.header("Message-ID").unwrap()).collect();
    assert_eq!(ids.len(), 6);
    assert!(messages.iter().all(|m| m.rcpt_tos == ["ops@example.org", "dev@example.org"]));
    assert_eq!(alerts_on_disk(&outbox_dir), 0, "delivered alerts leave the disk");
}

// ---------------------------------------------------------------- HTTP channels

#[tokio::test]
async fn slack_posts_the_exact_json() {
    let receiver = HttpReceiver::start();
    let r =
        routes(&format!("send alerts via slack with url {}, icon_emoji \":x:\"", receiver.url("/services/T0/B0/X0")));
    let route = r.iter().next().unwrap();
    route.channel.send(&[rss_failed(noon())]).await.unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/services/T0/B0/X0"));
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(
        requests[0].json(),
        json!({
            "text": "nginx on web1: memory:rss is 612m, above 500m for 1m30s. inspeq is restarting it.",
            "username": "inspeq",
            "icon_emoji": ":x:",
        })
    );
}

/// The number of alerts a Slack message carries: one, or a digest's count.
fn alerts_in(text: &str) -> usize {
    match text.strip_prefix("*[inspeq] ") {
        Some(rest) => rest.split(' ').next().unwrap().parse().unwrap(),
        None => 1,
    }
}

#[tokio::test]
async fn a_thousand_alerts_in_a_second_make_a_few_slack_messages() {
    let dir = TempDir::new("flood");
    let receiver = HttpReceiver::start();
    let outbox = outbox(&dir, routes(&format!("send alerts via slack with url {}", receiver.url("/hook"))));
    let start = std::time::Instant::now();
    for i in 0..1000u32 {
        let event = AlertKind::Crashed { pid: i, exit: ExitStatus::Signal { signal: 9, core_dumped: false } };
        outbox.raise(Alert::new("web1", "worker", event, SystemTime::now()), Target::default()).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(1), "raising never waits: {:?}", start.elapsed());
    idle(&outbox).await;

    let requests = receiver.requests();
    for pair in requests.windows(2) {
        let gap = pair[1].received - pair[0].received;
        assert!(gap >= Duration::from_millis(950), "Slack allows one message a second; two came {gap:?} apart");
    }
    let texts: Vec<String> = requests.iter().map(|r| r.json()["text"].as_str().unwrap().to_owned()).collect();
    assert!(texts.len() <= 4, "{} messages for a flood of 1000", texts.len());
    assert_eq!(texts.iter().map(|t| alerts_in(t)).sum::<usize>(), 1000, "every alert is counted: {texts:#?}");
    let digest = texts.iter().find(|t| alerts_in(t) > 1).expect("a digest");
    assert!(digest.contains(" alerts (too many to send one by one) for worker:\n"), "{digest}");
    assert!(outbox.stats().digests >= 1);
}

#[tokio::test]
async fn webhook_posts_alertmanager_json_signed_with_hmac_sha256() {
    let receiver = HttpReceiver::start();
    let r = routes(&format!("send alerts to hooks via webhook with url {}, secret hunter2", receiver.url("/inspeq")));
    let failed = rss_failed(noon());
    let recovered =
        Alert::new("web1", "nginx", AlertKind::RuleRecovered(rss_rule("300m", 120)), noon() + Duration::from_secs(300));
    let fingerprint = failed.fingerprint();
    assert_eq!(fingerprint, recovered.fingerprint(), "one condition, one fingerprint");
    assert_eq!(fingerprint.len(), 16);

    r.iter().next().unwrap().channel.send(&[failed, recovered]).await.unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "pending alerts share one body");
    let labels = json!({
        "alertname": "InspeqRuleFailed",
        "host": "web1",
        "service": "nginx",
        "condition": "rule:memory:rss > 500m",
        "severity": "error",
    });
    assert_eq!(
        requests[0].json(),
        json!({
            "version": "4",
            "groupKey": "{}:{host=\"web1\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "hooks",
            "groupLabels": { "host": "web1" },
            "commonLabels": labels,
            "commonAnnotations": { "rule": "memory:rss > 500m", "metric": "memory:rss", "threshold": "above 500m" },
            "externalURL": "",
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {
                        "summary": "nginx on web1: memory:rss is 612m, above 500m for 1m30s. inspeq is restarting it.",
                        "event": "rule_failed",
                        "rule": "memory:rss > 500m",
                        "metric": "memory:rss",
                        "value": "612m",
                        "threshold": "above 500m",
                        "for": "1m30s",
                        "action": "inspeq is restarting it.",
                    },
                    "startsAt": "2026-03-01T12:00:00.000Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": fingerprint,
                },
                {
                    "status": "resolved",
                    "labels": labels,
                    "annotations": {
                        "summary": "nginx on web1: memory:rss has recovered: 300m is no longer above 500m.",
                        "event": "rule_recovered",
                        "rule": "memory:rss > 500m",
                        "metric": "memory:rss",
                        "value": "300m",
                        "threshold": "above 500m",
                        "for": "2m",
                    },
                    "startsAt": "2026-03-01T12:03:00.000Z",
                    "endsAt": "2026-03-01T12:05:00.000Z",
                    "generatorURL": "",
                    "fingerprint": fingerprint,
                },
            ],
        })
    );

    // The signature, checked with openssl rather than with inspeq's own code.
    if !have("webhook signature check", OPENSSL) {
        return;
    }
    let mut openssl = Command::new(OPENSSL)
        .args(["dgst", "-sha256", "-hmac", "hunter2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    openssl.stdin.take().unwrap().write_all(&requests[0].body).unwrap();
    let out = String::from_utf8(openssl.wait_with_output().unwrap().stdout).unwrap();
    let hex = out.trim().rsplit(' ').next().unwrap();
    assert_eq!(requests[0].header(SIGNATURE_HEADER), Some(format!("sha256={hex}").as_str()));
}

#[tokio::test]
async fn pagerduty_triggers_and_resolves_with_one_dedup_key() {
    let receiver = HttpReceiver::start();
    let key = "0123456789abcdef0123456789abcdef";
    let r = routes(&format!("send alerts via pagerduty with routing_key {key}, url {}", receiver.url("/v2/enqueue")));
    let channel = &r.iter().next().unwrap().channel;
    let crashed = Alert::new(
        "web1",
        "nginx",
        AlertKind::Crashed { pid: 4242, exit: ExitStatus::Signal { signal: 11, core_dumped: true } },
        noon(),
    )
    .with_actions([Response::Restart]);
    let up = Alert::new("web1", "nginx", AlertKind::ProcessUp { pid: Some(4300) }, noon() + Duration::from_secs(2));
    let dedup = crashed.fingerprint();
    channel.send(std::slice::from_ref(&crashed)).await.unwrap();
    channel.send(std::slice::from_ref(&up)).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/v2/enqueue"));
    let summary =
        "nginx on web1 crashed: pid 4242 was killed by signal 11 (SIGSEGV), core dumped. inspeq is restarting it.";
    assert_eq!(
        requests[0].json(),
        json!({
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": dedup,
            "client": "inspeq",
            "payload": {
                "summary": summary,
                "source": "web1",
                "severity": "critical",
                "timestamp": "2026-03-01T12:00:00.000Z",
                "component": "nginx",
                "class": "crashed",
                "custom_details": {
                    "summary": summary,
                    "event": "crashed",
                    "pid": "4242",
                    "exit": "was killed by signal 11 (SIGSEGV), core dumped",
                    "action": "inspeq is restarting it.",
                },
            },
        })
    );
    assert_eq!(requests[1].json(), json!({ "routing_key": key, "event_action": "resolve", "dedup_key": dedup }));
}

/// `severity` is the `payload.severity` of every event the route triggers, a
/// digest's too, whatever each condition's own (a crash is critical).
#[tokio::test]
async fn pagerduty_severity_overrides_each_conditions_own() {
    let receiver = HttpReceiver::start();
    let r = routes(&format!(
        "send alerts via pagerduty with routing_key k, url {}, severity warning",
        receiver.url("/v2/enqueue")
    ));
    let channel = &r.iter().next().unwrap().channel;
    let crashed = Alert::new("web1", "nginx", AlertKind::Crashed { pid: 7, exit: ExitStatus::Code(1) }, noon());
    assert_eq!(crashed.event.condition().severity.as_str(), "critical", "the condition's own");
    channel.send(std::slice::from_ref(&crashed)).await.unwrap();
    let down = Alert::new("web1", "db", AlertKind::ProcessDown, noon());
    channel.send(&[crashed.clone(), down]).await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let summary = "nginx on web1 crashed: pid 7 exited with code 1.";
    assert_eq!(
        requests[0].json(),
        json!({
            "routing_key": "k",
            "event_action": "trigger",
            "dedup_key": crashed.fingerprint(),
            "client": "inspeq",
            "payload": {
                "summary": summary,
                "source": "web1",
                "severity": "warning",
                "timestamp": "2026-03-01T12:00:00.000Z",
                "component": "nginx",
                "class": "crashed",
                "custom_details": {
                    "summary": summary,
                    "event": "crashed",
                    "pid": "7",
                    "exit": "exited with code 1",
                },
            },
        })
    );
    let digest = requests[1].json();
    assert_eq!(digest["payload"]["class"], "digest", "{digest}");
    assert_eq!(digest["payload"]["severity"], "warning", "{digest}");
}

#[tokio::test]
async fn pagerduty_rate_limit_is_waited_out_and_nothing_is_lost() {
    let dir = TempDir::new("pd-429");
    let receiver = HttpReceiver::start();
    receiver.reply_next(429, &[("Retry-After", "1")]);
    let r = routes(&format!("send alerts via pagerduty with routing_key k, url {}", receiver.url("/v2/enqueue")));
    let outbox = outbox(&dir, r);
    outbox.raise(Alert::new("web1", "nginx", AlertKind::ProcessDown, noon()), Target::default()).unwrap();
    idle(&outbox).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "refused once, then taken");
    assert_eq!(requests[0].body, requests[1].body, "the same event again");
    assert_eq!(outbox.stats().failed_sends, 1);
    assert_eq!(outbox.stats().delivered, 1);
}

#[tokio::test]
async fn test_alert_reports_each_route() {
    let receiver = HttpReceiver::start();
    let closed = free_port();
    let r = routes(&format!(
        "send alerts via slack with url {}
         send alerts to ops via email with smtp_server 127.0.0.1, smtp_port {closed}, to_email ops@example.org",
        receiver.url("/hook")
    ));
    let outcomes = test_routes(&r, None, "web1", Duration::from_secs(10)).await;
    let summary: Vec<(String, &str, bool)> =
        outcomes.iter().map(|o| (o.route.clone(), o.channel, o.result.is_ok())).collect();
    assert_eq!(summary, [("default".to_owned(), "slack", true), ("ops".to_owned(), "email", false)]);
    assert!(matches!(outcomes[1].result, Err(SendError::Smtp { .. })), "{:?}", outcomes[1].result);
    assert_eq!(receiver.requests()[0].json()["text"], "test alert from inspeq on web1: this route works.");

    let only_ops = test_routes(&r, Some("ops"), "web1", Duration::from_secs(10)).await;
    assert_eq!(only_ops.len(), 1);
    assert_eq!(only_ops[0].route, "ops");
}

// ---------------------------------------------------------------- Alertmanager

/// The active alerts an Alertmanager reports for `service`.
async fn active_alerts(am: &Alertmanager, service: &str) -> Vec<serde_json::Value> {
    let alerts: Vec<serde_json::Value> =
        reqwest::get(format!("{}/api/v2/alerts", am.url())).await.unwrap().json().await.unwrap();
    alerts.into_iter().filter(|a| a["labels"]["service"] == service).collect()
}

#[tokio::test]
async fn alertmanager_shows_the_alert_while_firing_and_resolves_it_on_recovery() {
    if !have("alertmanager_shows_the_alert_while_firing_and_resolves_it_on_recovery", ALERTMANAGER) {
        return;
    }
    let am = Alertmanager::start();
    let dir = TempDir::new("alertmanager");
    let outbox = outbox(&dir, routes(&format!("send alerts via alertmanager with url {}", am.url())));

    let now = SystemTime::now();
    outbox.raise(rss_failed(now), Target::default()).unwrap();
    idle(&outbox).await;
    let firing = active_alerts(&am, "nginx").await;
    assert_eq!(firing.len(), 1, "{firing:#?}");
    let labels = &firing[0]["labels"];
    assert_eq!(labels["alertname"], "InspeqRuleFailed");
    assert_eq!(labels["host"], "web1");
    assert_eq!(labels["condition"], "rule:memory:rss > 500m");
    assert_eq!(
        firing[0]["annotations"]["summary"],
        "nginx on web1: memory:rss is 612m, above 500m for 1m30s. inspeq is restarting it."
    );
    assert_eq!(firing[0]["status"]["state"], "active");

    let recovered = Alert::new("web1", "nginx", AlertKind::RuleRecovered(rss_rule("300m", 5)), SystemTime::now());
    outbox.raise(recovered, Target::default()).unwrap();
    idle(&outbox).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = active_alerts(&am, "nginx").await;
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still active after recovery: {left:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(outbox.stats().delivered, 2);
}

/// The `startsAt` and `endsAt` an Alertmanager holds for the active alert of `service`.
async fn active_span(am: &Alertmanager, service: &str) -> Option<(String, String)> {
    let alerts = active_alerts(am, service).await;
    let alert = alerts.first()?;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    Some((alert["startsAt"].as_str()?.to_owned(), alert["endsAt"].as_str()?.to_owned()))
}

/// `firing_for` is how long Alertmanager treats a firing alert as firing when
/// no recovery comes: its `endsAt` is that far ahead, and once that has passed
/// the alert is no longer active. Without it, a day.
#[tokio::test]
async fn alertmanager_firing_for_is_how_long_a_firing_alert_stays_active() {
    if !have("alertmanager_firing_for_is_how_long_a_firing_alert_stays_active", ALERTMANAGER) {
        return;
    }
    let am = Alertmanager::start();
    let dir = TempDir::new("alertmanager-firing-for");
    let outbox = outbox(
        &dir,
        routes(&format!(
            "send alerts via alertmanager with url {url}, firing_for 3s
             send alerts to day via alertmanager with url {url}",
            url = am.url()
        )),
    );
    let now = SystemTime::now();
    let failed = |service: &str| Alert::new("web1", service, AlertKind::RuleFailed(rss_rule("612m", 90)), now);
    outbox.raise(failed("short"), Target::default()).unwrap();
    outbox.raise(failed("long"), Target { route: Some("day"), owner: None }).unwrap();
    idle(&outbox).await;

    let short = active_span(&am, "short").await.expect("the 3 s alert is active at first");
    assert_eq!(short, (rfc3339(now), rfc3339(now + Duration::from_secs(3))));
    let long = active_span(&am, "long").await.expect("the default alert is active");
    assert_eq!(long, (rfc3339(now), rfc3339(now + Duration::from_secs(24 * 3600))));

    // Past its endsAt, Alertmanager no longer has the 3 s alert active; the other stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while active_span(&am, "short").await.is_some() {
        assert!(std::time::Instant::now() < deadline, "still active 15 s after a 3 s firing_for");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(SystemTime::now() >= now + Duration::from_secs(3), "gone before its endsAt");
    assert!(active_span(&am, "long").await.is_some(), "a day has not passed");
}
