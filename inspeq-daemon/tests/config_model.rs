//! What a valid configuration means: the checked model the daemon and the engine run on, spelled out for the
//! fixture that uses every construct (`tests/data/config/valid/inspeq`) and for Inspeqtor's own fixtures.

use std::fs;
use std::path::Path;
use std::time::Duration;

use inspeq_daemon::config::metrics::MetricKind;
use inspeq_daemon::config::model::{
    ActionSpec, Channel, CheckKind, Condition, Config, InitKind, Mailbox, Op, ProcessSelector, Severity, Suffix, Tls,
    UnitScope, Window,
};
use inspeq_daemon::config::{load, load_files};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/config");

fn load_fixture_dir(name: &str) -> Config {
    let root = Path::new(FIXTURES).join("valid").join(name);
    let mut files = Vec::new();
    for sub in ["", "services.d", "jobs.d"] {
        let Ok(entries) = fs::read_dir(root.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push((path.display().to_string(), fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let (config, diagnostics) = load(files.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
    config
}

fn addresses(mailboxes: &[Mailbox]) -> Vec<String> {
    mailboxes.iter().map(ToString::to_string).collect()
}

#[test]
fn settings_and_every_channel() {
    let c = load_fixture_dir("inspeq");
    assert_eq!(c.settings.cycle_time, Duration::from_secs(10));
    assert_eq!(c.settings.deploy_length, Duration::from_secs(2 * 60));
    assert_eq!(c.settings.expose_port, None, "expose_port 0 turns it off");
    assert!(matches!(c.routes[&None].channel, Channel::Log));
    let Channel::Email(ops) = &c.routes[&Some("ops".into())].channel else { panic!("ops is email") };
    assert_eq!((ops.smtp_port, ops.tls), (465, Tls::Implicit));
    assert_eq!(addresses(&ops.to_email), ["ops@example.com", "oncall@example.com"]);
    assert_eq!(ops.password.as_ref().map(|p| p.expose().as_str()), Some("pa ss"));
    assert_eq!(ops.tls_ca_file.as_deref(), Some("/etc/inspeq/relay-ca.pem"));
    let Channel::PagerDuty(pager) = &c.routes[&Some("pager".into())].channel else { panic!("pager is pagerduty") };
    assert_eq!(pager.severity, Some(Severity::Critical));
    let Channel::Alertmanager(fleet) = &c.routes[&Some("fleet".into())].channel else { panic!("fleet") };
    assert_eq!(fleet.firing_for, Duration::from_secs(2 * 3600));
    let Channel::Email(relay) = &c.routes[&Some("relay".into())].channel else { panic!("relay is email") };
    assert_eq!((relay.smtp_port, relay.tls), (25, Tls::None));
    assert_eq!(
        addresses(&relay.to_email),
        ["a@example.com", "b@example.com"],
        "unquoted recipient list (Inspeqtor #131)"
    );
    let names: Vec<&str> = c.routes.values().map(|r| r.channel.name()).collect();
    for channel in ["log", "email", "slack", "webhook", "pagerduty", "alertmanager"] {
        assert!(names.contains(&channel), "{channel} in {names:?}");
    }
}

#[test]
fn services_processes_rules_and_jobs() {
    let c = load_fixture_dir("inspeq");
    let web = c.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(
        (web.init, web.scope, web.owner.as_deref()),
        (Some(InitKind::Systemd), Some(UnitScope::User), Some("chat"))
    );
    let Condition::Metric(rss) = &web.rules[0].condition else { panic!("first web rule is a metric rule") };
    assert_eq!((rss.op, rss.cycles, rss.kind), (Op::Gt, 2, MetricKind::Gauge));
    assert_eq!((rss.threshold.value, rss.threshold.suffix), (1.5 * 1024.0 * 1024.0 * 1024.0, Suffix::Binary(3)));
    assert_eq!(web.rules[0].text, "memory:rss > 1.5g for 2 cycles", "display text of a rule spanning lines");
    assert_eq!(web.rules[0].actions, [ActionSpec::Alert { route: None }, ActionSpec::Restart]);
    let conditions: Vec<&Condition> = web.rules.iter().map(|r| &r.condition).collect();
    assert!(conditions.contains(&&Condition::Signaled(Some(11))));
    assert!(conditions.contains(&&Condition::ExitCode { op: Op::Ne, code: 0 }));
    assert!(conditions.contains(&&Condition::Forks { per_sec: 100.0 }));
    assert!(conditions.contains(&&Condition::Restarts { count: 3, window: Window::Time(Duration::from_secs(5 * 60)) }));
    assert!(conditions.contains(&&Condition::Restarts { count: 9, window: Window::Cycles(20) }), ">= 10 is > 9");

    let legacy = c.services.iter().find(|s| s.name == "legacy").unwrap();
    assert_eq!(legacy.kind, CheckKind::Process(ProcessSelector::PidFile("/var/run/legacy.pid".into())));
    assert_eq!(legacy.restart_command.as_deref(), Some(&["/usr/sbin/legacyctl".to_owned(), "restart".to_owned()][..]));
    let sidekiq = c.services.iter().find(|s| s.name == "sidekiq").unwrap();
    assert!(
        matches!(&sidekiq.kind, CheckKind::Process(ProcessSelector::Matching(re)) if re == "^sidekiq [0-9.]+ app\\b")
    );
    assert!(c.services.iter().any(|s| s.name == "worker.pool"), "a quoted name");
    let api = c.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(
        (api.scope, api.bus.as_deref(), api.cgroup_root.as_deref()),
        (
            Some(UnitScope::System),
            Some("unix:path=/srv/ct1/run/dbus/system_bus_socket"),
            Some("/sys/fs/cgroup/machine.slice/ct1"),
        ),
        "the manager's bus as written; its cgroup root without the trailing slash"
    );
    assert_eq!((web.bus.as_deref(), web.cgroup_root.as_deref()), (None, None));

    let every: Vec<(&str, u64)> = c.jobs.iter().map(|j| (j.name.as_str(), j.every.as_secs())).collect();
    assert_eq!(every, [("nightly_backup", 86_400), ("rotate", 21_600), ("quoted job", 900)]);
}

#[test]
fn inspeqtor_files_mean_what_they_meant() {
    let c = load_fixture_dir("inspeqtor");
    assert_eq!(c.routes.len(), 5);
    let Channel::Email(analytics) = &c.routes[&Some("analytics".into())].channel else { panic!() };
    assert_eq!(analytics.password.as_ref().map(|p| p.expose().as_str()), Some("b!l$a%rgh^fazz\""));
    assert_eq!((analytics.tls, analytics.smtp_port), (Tls::StartTls, 587), "AUTH means STARTTLS on 587");
    let Channel::Email(local) = &c.routes[&Some("local".into())].channel else { panic!() };
    assert_eq!((local.tls, local.smtp_port), (Tls::None, 25), "no AUTH: plain local relay (Inspeqtor #48)");
    let memcached = c.services.iter().find(|s| s.name == "memcached").unwrap();
    assert_eq!(
        memcached.rules[0].actions,
        [ActionSpec::Alert { route: Some("ops".into()) }, ActionSpec::Restart, ActionSpec::Reload]
    );
    let inspeqtor = c.services.iter().find(|s| s.name == "inspeqtor").unwrap();
    assert_eq!(inspeqtor.exposes, ["memstats"]);
    let host = c.host.as_ref().unwrap();
    let Condition::Metric(cpu) = &host.rules[4].condition else { panic!() };
    assert_eq!((cpu.metric.to_string(), cpu.cycles), ("cpu:user".to_owned(), 2), "cpu(user) is cpu:user");
}

#[test]
fn a_broken_file_still_yields_its_valid_checks() {
    let text = "check service a\n  if memory:rss > then alert\n  if memory:rss > 1g then alert\ncheck service b\n  if exited then alert\n";
    let (config, diagnostics) = load_files(None, [("x.inq", text)]);
    assert_eq!(diagnostics.len(), 1);
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(config.services[0].rules.len(), 1);
}
