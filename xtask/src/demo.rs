//! `cargo xtask demo`: the README's first command. On a machine where PID 1 is
//! not systemd it builds inspeq, starts a real systemd user manager (in a private
//! mount namespace, as the tests do) running a small demo service, runs `inspeqd`
//! on the bundled `examples/` configuration (alerts to the log), then crashes the
//! service and makes it bloat, showing the alerts and restarts as they happen with
//! the measured detection time. It cleans up after itself.
//!
//! Without root (no eBPF, no systemd manager) it runs `inspeqd trace` on a
//! misbehaving workload instead, through a tier without eBPF (process connector, pidfds or /proc polling).

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    command::{self, cargo, is_root, workspace_root},
    systemd::UserManager,
};

const UNIT: &str = "inspeq-demo.service";

/// inspeqd's output lines, as they come, each with the instant it arrived.
fn lines(child: &mut Child) -> mpsc::Receiver<(Instant, &'static str, String)> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), "out", line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((Instant::now(), "log", line));
        }
    });
    rx
}

/// Prints inspeqd's lines until one contains `wanted`; returns when it arrived.
fn until(
    rx: &mpsc::Receiver<(Instant, &'static str, String)>,
    wanted: &str,
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, stream, line) =
            rx.recv_timeout(left).with_context(|| format!("inspeqd said nothing containing `{wanted}`"))?;
        let shown = line.trim_start_matches("inspeqd: ");
        println!("  inspeqd {stream} │ {shown}");
        if line.contains(wanted) {
            return Ok(at);
        }
    }
}

fn say(text: &str) {
    println!("\n▶ {text}");
}

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    command::run(cargo().args(["build", "--release", "-p", "inspeq-daemon", "-p", "tests", "--bins"]))?;
    let release = workspace_root().join("target/release");
    if !is_root() || !Path::new("/lib/systemd/systemd").exists() {
        eprintln!(
            "xtask: the full demo needs root and systemd's binaries; showing `inspeqd trace` on a workload instead"
        );
        return trace_demo(&release);
    }

    say("starting a systemd user manager (PID 1 here is not systemd) with the demo service");
    let manager = UserManager::start("demo")?;
    let unit = format!(
        "[Unit]\nDescription=inspeq demo service\n\n[Service]\nExecStart={} demo-service\nExecReload=/bin/kill -HUP $MAINPID\nRestart=no\n",
        release.join("inspeq-workload").display()
    );
    std::fs::write(manager.units_dir().join(UNIT), unit)?;
    manager.systemctl(&["daemon-reload"])?;
    manager.systemctl(&["start", UNIT])?;
    let first = manager.main_pid(UNIT).context("the demo service did not start")?;
    println!("  {UNIT} runs as pid {first}");

    let examples = workspace_root().join("examples");
    say(&format!("starting inspeqd on {}", examples.display()));
    let state = manager.base.join("state");
    let mut inspeqd = Command::new(release.join("inspeqd"))
        .arg("--config-dir")
        .arg(&examples)
        .arg("--socket")
        .arg(manager.base.join("inspeq.sock"))
        .arg("--state-dir")
        .arg(&state)
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting inspeqd")?;
    let rx = lines(&mut inspeqd);
    let result = (|| -> anyhow::Result<()> {
        until(&rx, "up, pid", Duration::from_secs(20))?;

        say(&format!("crash: kill -9 {first}"));
        let killed = Instant::now();
        command::run(Command::new("kill").args(["-9", &first.to_string()]))?;
        let alerted = until(&rx, "event=crashed", Duration::from_secs(10))?;
        let crash_latency = alerted.saturating_duration_since(killed);
        until(&rx, "restart done", Duration::from_secs(30))?;
        until(&rx, "up, pid", Duration::from_secs(30))?;
        let second = manager.main_pid(UNIT).context("no new pid after the restart")?;

        say(&format!("bloat: the service (pid {second}) grows past the 64 MiB rule"));
        let signalled = Instant::now();
        command::run(Command::new("kill").args(["-USR1", &second.to_string()]))?;
        let bloat_alerted = until(&rx, "event=rule_failed", Duration::from_secs(10))?;
        let bloat_latency = bloat_alerted.saturating_duration_since(signalled);
        until(&rx, "reload done", Duration::from_secs(30))?;

        say("inspeqctl status");
        let status = Command::new(release.join("inspeqctl"))
            .arg("--socket")
            .arg(manager.base.join("inspeq.sock"))
            .arg("status")
            .output()?;
        print!("{}", String::from_utf8_lossy(&status.stdout));

        say("measured");
        println!(
            "  kill -9 → crash alert:      {:>8.1} ms (Monit at its fastest 1 s cycle: ~500 ms median)",
            crash_latency.as_secs_f64() * 1000.0
        );
        println!(
            "  SIGUSR1 → memory alert:     {:>8.1} ms (includes the service allocating and touching 96 MiB)",
            bloat_latency.as_secs_f64() * 1000.0
        );
        println!("  the service was restarted by systemd at inspeq's request: pid {first} → {second}");
        Ok(())
    })();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(inspeqd.id() as i32, libc::SIGTERM) };
    let _ = inspeqd.wait();
    drop(manager);
    result?;
    println!("\nxtask: demo done and cleaned up. Next: `cargo xtask test` runs the whole suite.");
    Ok(())
}

/// The demo for machines without root or systemd: `inspeqd trace` watching a
/// misbehaving workload (through a tier without eBPF when eBPF is unavailable).
fn trace_demo(release: &Path) -> anyhow::Result<()> {
    let mut trace = Command::new(release.join("inspeqd"));
    trace.args(["trace", "--rss-threshold", "32m", "--poll-ms", "100", "--pid", &std::process::id().to_string()]);
    let mut tracer = trace.stdin(Stdio::null()).spawn().context("starting inspeqd")?;
    std::thread::sleep(Duration::from_millis(500));
    let status =
        Command::new(release.join("inspeq-workload")).arg("demo").status().context("running the demo workload")?;
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) };
    tracer.wait()?;
    eprintln!("\nxtask: demo workload ended ({status}).");
    Ok(())
}
