//! A stand-in for the daemon in the alert durability test: opens an outbox with
//! one email route, raises alerts, and keeps delivering until it is killed or,
//! with `--exit-when-idle`, until nothing is pending.
//!
//! `inspeq-alert-probe OUTBOX_DIR SMTP_PORT RAISE [--exit-when-idle]`
//! prints `persisted N pending P` once the raised alerts are on disk, and
//! `idle delivered D` before exiting when idle.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use inspeq_daemon::alert::{Alert, AlertKind, ExitStatus, Outbox, OutboxConfig, Target};
use tests::alert_harness::routes_from_conf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, port, raise, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: inspeq-alert-probe OUTBOX_DIR SMTP_PORT RAISE [--exit-when-idle]");
    };
    let raise: u32 = raise.parse().context("RAISE")?;
    let exit_when_idle = rest.iter().any(|a| a == "--exit-when-idle");
    let port: u16 = port.parse().context("SMTP_PORT")?;
    let routes = routes_from_conf(
        &format!(
            "send alerts via email with smtp_server 127.0.0.1, smtp_port {port}, tls none,
               from_email inspeq@web1.example.org, to_email \"ops@example.org, dev@example.org\""
        ),
        "web1",
    );
    // Quick retries, so the test does not wait long once the server is up.
    let config = OutboxConfig {
        first_retry: Duration::from_millis(100),
        max_retry: Duration::from_millis(400),
        ..OutboxConfig::new(dir)
    };
    let outbox = Outbox::start(config, routes)?;
    for i in 0..raise {
        let event = AlertKind::Crashed { pid: 1000 + i, exit: ExitStatus::Code(i32::try_from(i)?) };
        outbox.raise(Alert::new("web1", format!("svc{i}"), event, SystemTime::now()), Target::default())?;
    }
    outbox.sync().await;
    println!("persisted {raise} pending {}", outbox.pending());
    if exit_when_idle {
        outbox.wait_idle().await;
        println!("idle delivered {}", outbox.stats().delivered);
        return Ok(());
    }
    std::future::pending::<()>().await;
    Ok(())
}
