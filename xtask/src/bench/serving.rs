//! `cargo xtask bench serving`: how fast inspeqd sees a service stop serving, and what its probes cost.
//!
//! 1. Listener close → alert: `inspeq-workload listen-bench` listens on a loopback port as a `check process` with
//!    `if listening PORT stopped then alert`. Each round it closes the socket and prints CLOCK_MONOTONIC just
//!    after close(2); latency = the `listener_stopped` alert line read from inspeqd's stdout (the log channel)
//!    − that instant. The socket is opened again and the round waits for the `listening` recovery (the next
//!    cycle's listing) before the next close.
//! 2. First queued connection → accept-queue alert: the same listener never accepts; one loopback connect sits
//!    in its queue, and `if accept_queue > 0 then alert` fires at the next cycle's listing, so the latency is
//!    bounded by the cycle (1 s here). Latency = alert − the instant before connect(2); then the queue is
//!    drained and the round waits for the recovery.
//! 3. Probe cost: inspeqd's CPU (its cgroup's `cpu.stat`) over `--cost-secs` at a 1 s cycle with a host check
//!    and the listener's check only, then with 50 `port` probes, then with 50 `http` probes, both of a local
//!    nginx-light; the difference per probe per cycle.
//!
//! Figures are measured, never asserted.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    figure as f,
    kernel::{Binaries, Cgroup},
    machine, quantile,
};
use crate::command::{self, cargo, is_root, workspace_root};

const NGINX: &str = "/usr/sbin/nginx";

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Listener closes to time.
    #[arg(long, default_value_t = 30)]
    pub closes: u32,
    /// First queued connections to time (each waits for a cycle).
    #[arg(long, default_value_t = 10)]
    pub queues: u32,
    /// Seconds of each probe-cost window.
    #[arg(long, default_value_t = 30)]
    pub cost_secs: u64,
}

/// CLOCK_MONOTONIC in nanoseconds, the clock the workload prints.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Lines read so far, each with the monotonic instant it was read.
type Arrived = Mutex<Vec<(u64, String)>>;

/// Lines of a child's output, and a signal for each new one.
#[derive(Clone, Default)]
struct Lines(Arc<(Arrived, Condvar)>);

impl Lines {
    fn collect(stream: impl std::io::Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let into = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let (list, arrived) = &*into.0;
                list.lock().unwrap().push((monotonic_ns(), line));
                arrived.notify_all();
            }
        });
        lines
    }

    /// The first line after index `from` containing every one of `needles`: its index and arrival.
    fn wait(&self, from: usize, needles: &[&str], limit: Duration) -> anyhow::Result<(usize, u64)> {
        let deadline = std::time::Instant::now() + limit;
        let (list, arrived) = &*self.0;
        let mut guard = list.lock().unwrap();
        loop {
            if let Some((i, (at, _))) =
                guard.iter().enumerate().skip(from).find(|(_, (_, l))| needles.iter().all(|n| l.contains(n)))
            {
                return Ok((i, *at));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                bail!("no line with {needles:?} within {limit:?}");
            }
            guard = arrived.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn len(&self) -> usize {
        self.0.0.lock().unwrap().len()
    }
}

/// A child stopped (SIGTERM, then SIGKILL) when dropped.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The listener under test and its command line.
struct Listener {
    child: Guarded,
    stdin: ChildStdin,
    out: Lines,
    port: u16,
}

impl Listener {
    fn start(bin: &Binaries, port: u16, pidfile: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(&bin.workload)
            .args(["listen-bench", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting inspeq-workload listen-bench")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let out = Lines::collect(child.stdout.take().context("no stdout")?);
        std::fs::write(pidfile, format!("{}\n", child.id()))?;
        out.wait(0, &["open"], Duration::from_secs(10))?;
        Ok(Listener { child: Guarded(child), stdin, out, port })
    }

    /// Sends `command` and waits for its answer: the answer's text.
    fn ask(&mut self, command: &str, answer: &str) -> anyhow::Result<String> {
        let from = self.out.len();
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let (i, _) = self.out.wait(from, &[answer], Duration::from_secs(10))?;
        Ok(self.out.0.0.lock().unwrap()[i].1.clone())
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// inspeqd on `dir` in `cgroup`, its stdout (the log channel's alerts) and stderr (its log) collected.
fn inspeqd(bin: &Binaries, dir: &Path, cgroup: &Path) -> anyhow::Result<(Guarded, Lines, Lines)> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let mut child = Command::new(&bin.inspeqd)
        .arg("--config-dir")
        .arg(dir)
        .arg("--socket")
        .arg(dir.join("inspeq.sock"))
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting inspeqd")?;
    let out = Lines::collect(child.stdout.take().context("no stdout")?);
    let log = Lines::collect(child.stderr.take().context("no stderr")?);
    // Into its cgroup from here: inspeqd does not join one itself.
    std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string())?;
    Ok((Guarded(child), out, log))
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50_ms": quantile(&ms, 0.5),
        "p99_ms": quantile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

fn latencies(bin: &Binaries, opts: &Options, work: &Path) -> anyhow::Result<(Value, Value, Value)> {
    let dir = work.join("latency");
    std::fs::create_dir_all(dir.join("services.d"))?;
    let port = free_port();
    let pidfile = dir.join("listener.pid");
    let mut listener = Listener::start(bin, port, &pidfile)?;
    std::fs::write(dir.join("inspeq.conf"), "set cycle_time 1\n")?;
    std::fs::write(
        dir.join("services.d/listener.inq"),
        format!(
            "check process listener with pidfile {}\n  if listening {port} stopped then alert\n  if accept_queue > 0 then alert\n",
            pidfile.display()
        ),
    )?;
    let cgroup = Cgroup::new("serving-latency")?;
    let (_daemon, alerts, log) = inspeqd(bin, &dir, &cgroup.0)?;
    // Seen listening (a cycle's listing) before the first close can be a stop.
    std::thread::sleep(Duration::from_secs(3));

    let (mut closes, mut logged) = (Vec::new(), Vec::new());
    for round in 0..opts.closes {
        let (from, from_log) = (alerts.len(), log.len());
        let closed = listener.ask("close", "closed")?;
        let at: u64 = closed.split_whitespace().nth(1).and_then(|n| n.parse().ok()).context("closed NS")?;
        let (_, seen) = alerts.wait(from, &["event=listener_stopped"], Duration::from_secs(10))?;
        closes.push((seen.saturating_sub(at)) as f64 / 1e6);
        let (_, told) = log.wait(from_log, &["closed its listening socket"], Duration::from_secs(10))?;
        logged.push((told.saturating_sub(at)) as f64 / 1e6);
        let from = alerts.len();
        listener.ask("open", "open")?;
        alerts.wait(from, &["resolved", "event=listening"], Duration::from_secs(10))?;
        eprint!("\rxtask: listener closes {}/{}", round + 1, opts.closes);
    }
    eprintln!();

    let mut queues = Vec::new();
    for round in 0..opts.queues {
        let from = alerts.len();
        let at = monotonic_ns();
        let client = TcpStream::connect(("127.0.0.1", listener.port)).context("connecting to the listener")?;
        let (_, seen) = alerts.wait(from, &["firing", "accept_queue"], Duration::from_secs(10))?;
        queues.push((seen.saturating_sub(at)) as f64 / 1e6);
        drop(client);
        let from = alerts.len();
        listener.ask("drain", "drained")?;
        alerts.wait(from, &["resolved", "accept_queue"], Duration::from_secs(10))?;
        eprint!("\rxtask: queued connections {}/{}", round + 1, opts.queues);
    }
    eprintln!();
    drop(listener.child);
    Ok((summary(closes), summary(logged), summary(queues)))
}

/// nginx-light on `port`, answering `ok` at `/`.
fn nginx(dir: &Path, port: u16) -> anyhow::Result<Guarded> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
             scgi_temp_path {d}/tmp/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        ),
    )?;
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Guarded(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx did not listen on {port}")
}

fn cpu_usec(cgroup: &Path) -> u64 {
    std::fs::read_to_string(cgroup.join("cpu.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// inspeqd's CPU over `secs` with `checks` as its services, in µs per second.
fn window(bin: &Binaries, work: &Path, name: &str, checks: &str, secs: u64) -> anyhow::Result<f64> {
    let dir = work.join(name);
    std::fs::create_dir_all(dir.join("services.d"))?;
    std::fs::write(dir.join("inspeq.conf"), "set cycle_time 1\n")?;
    std::fs::write(dir.join("host.inq"), "check host\n  if load:1 > 100000 then alert\n")?;
    std::fs::write(dir.join("services.d/probes.inq"), checks)?;
    let cgroup = Cgroup::new(&format!("serving-{name}"))?;
    let (_daemon, _alerts, _log) = inspeqd(bin, &dir, &cgroup.0)?;
    // Started, probers built, a first round run.
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_usec(&cgroup.0);
    std::thread::sleep(Duration::from_secs(secs));
    let used = cpu_usec(&cgroup.0).saturating_sub(before);
    Ok(used as f64 / secs as f64)
}

fn probe_costs(bin: &Binaries, opts: &Options, work: &Path) -> anyhow::Result<Value> {
    const PROBES: u32 = 50;
    let port = free_port();
    let pidfile = work.join("cost-listener.pid");
    let listener = Listener::start(bin, port, &pidfile)?;
    let web = free_port();
    let _nginx = nginx(&work.join("nginx"), web)?;
    let check = |rules: String| format!("check process listener with pidfile {}\n{rules}", pidfile.display());
    // Distinct timeouts keep the probes apart: equal probes would share one run per cycle.
    // Both kinds probe nginx, which accepts: the listener accepts nothing, and its full queue would make every
    // connect wait for its timeout.
    let ports: String =
        (0..PROBES).map(|i| format!("  if port {web} with timeout {}ms is closed then alert\n", 2000 + i)).collect();
    let https: String = (0..PROBES)
        .map(|i| format!("  if http \"http://127.0.0.1:{web}/\" with timeout {}ms fails then alert\n", 2000 + i))
        .collect();
    eprintln!("xtask: probe cost, {}s windows", opts.cost_secs);
    let base = window(bin, work, "cost-none", &check("  if accept_queue > 1000 then alert\n".into()), opts.cost_secs)?;
    let tcp = window(bin, work, "cost-port", &check(ports), opts.cost_secs)?;
    let http = window(bin, work, "cost-http", &check(https), opts.cost_secs)?;
    drop(listener.child);
    let per = |with: f64| (with - base).max(0.0) / f64::from(PROBES);
    Ok(json!({
        "probes": PROBES,
        "cycle_secs": 1,
        "baseline_cpu_percent": base / 1e4,
        "port_cpu_percent": tcp / 1e4,
        "http_cpu_percent": http / 1e4,
        "port_us_per_probe": per(tcp),
        "http_us_per_probe": per(http),
    }))
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the serving benchmark loads eBPF programs: run it as root");
    }
    command::run(cargo().args(["build", "--release", "-p", "inspeq-daemon", "-p", "tests", "--bins"]))?;
    let release = workspace_root().join("target/release");
    let bin = Binaries { inspeqd: release.join("inspeqd"), workload: release.join("inspeq-workload") };
    let work = workspace_root().join("target/bench/serving");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let (closes, logged, queues) = latencies(&bin, opts, &work)?;
    let costs = probe_costs(&bin, opts, &work)?;
    let report = json!({
        "machine": machine(),
        "listener_close_to_alert": closes,
        "listener_close_to_daemon_log": logged,
        "first_queued_connection_to_alert": queues,
        "probe_costs": costs,
    });
    super::write_report("serving", &report, print_table)
}

fn print_table(r: &Value) {
    let row = |name: &str, v: &Value, target: &str| {
        println!(
            "| {name} | {} / {} / {} ms (n={}) | {target} |",
            f(&v["p50_ms"]),
            f(&v["p99_ms"]),
            f(&v["max_ms"]),
            v["n"]
        );
    };
    println!("| figure | p50 / p99 / max | target |");
    println!("|---|---|---|");
    row("listener close → alert on the log channel", &r["listener_close_to_alert"], "< 5 ms");
    row("listener close → inspeqd logs it", &r["listener_close_to_daemon_log"], "");
    row("first queued connection → accept_queue alert", &r["first_queued_connection_to_alert"], "≤ the 1 s cycle");
    let c = &r["probe_costs"];
    println!(
        "| probe cost at a 1 s cycle ({} probes) | port {} µs, http {} µs per probe per cycle | |",
        c["probes"],
        f(&c["port_us_per_probe"]),
        f(&c["http_us_per_probe"])
    );
    println!(
        "| inspeqd CPU: no probes / 50 port / 50 http | {} % / {} % / {} % of a core | |",
        f(&c["baseline_cpu_percent"]),
        f(&c["port_cpu_percent"]),
        f(&c["http_cpu_percent"])
    );
}
