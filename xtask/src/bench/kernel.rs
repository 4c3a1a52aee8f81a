//! `cargo xtask bench kernel`: the kernel pipeline measured on this machine.
//!
//! - Latency: `inspeq-workload exits` forks children that exit at once, 2 ms
//!   apart, in a watched cgroup; `inspeqd trace --json --timing` stamps each exit
//!   record with CLOCK_MONOTONIC on receipt, and the kernel stamped it in the exit
//!   tracepoint with the same clock.
//! - Storms: two `inspeq-workload storm` loops (fork, child `_exit(0)`, wait), one
//!   per core, with no daemon, with the daemon watching their cgroup, and with the
//!   daemon watching another cgroup. Daemon CPU is its utime+stime over the storm.
//! - Daemon RSS after start-up, and time from exec to attached.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{figure as f, machine, quantile};
use crate::command::{self, cargo, is_root, workspace_root};

pub(super) struct Binaries {
    pub(super) inspeqd: PathBuf,
    pub(super) workload: PathBuf,
}

/// A cgroup for one scenario; what is left in it is killed and it is removed when dropped.
pub(super) struct Cgroup(pub(super) PathBuf);

impl Cgroup {
    pub(super) fn new(name: &str) -> anyhow::Result<Self> {
        let root = crate::systemd::cgroup2_root().context("no cgroup2 mount")?;
        let dir = root.join(format!("inspeq-bench-{name}"));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Whatever a scenario left behind (a monitor's stray child) must go, or the cgroup cannot.
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        crate::systemd::remove_cgroup(&self.0);
    }
}

/// A running `inspeqd trace`, its stdout lines arriving on a channel.
pub(super) struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    ready: Value,
    exec_to_ready: Duration,
}

impl Tracer {
    pub(super) fn start(bin: &Binaries, cgroup: &Path, quiet: bool) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(&bin.inspeqd)
            .args(["trace", "--json", "--timing"])
            .args(quiet.then_some("--quiet"))
            .arg("--cgroup")
            .arg(cgroup)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting inspeqd trace")?;
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(10)).context("inspeqd trace did not get ready")?;
        let exec_to_ready = started.elapsed();
        let ready: Value = serde_json::from_str(&first)?;
        if ready["mode"] != "ebpf" {
            bail!("inspeqd trace did not start eBPF: {first}");
        }
        Ok(Self { child, lines, ready, exec_to_ready })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The JSON lines printed since the last call.
    pub(super) fn drain(&self) -> Vec<Value> {
        self.lines.try_iter().filter_map(|l| serde_json::from_str(&l).ok()).collect()
    }

    /// Stops the tracer and returns every JSON line it printed.
    pub(super) fn stop(mut self) -> anyhow::Result<Vec<Value>> {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.child.wait()?;
        Ok(self.lines.try_iter().filter_map(|l| serde_json::from_str(&l).ok()).collect())
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Still running only when a scenario failed before `stop`.
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain kill(2) of our own, unreaped child.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after_comm` starts at field 3.
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

pub(super) fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

fn workload(bin: &Binaries, cgroup: &Path) -> Command {
    let mut command = Command::new(&bin.workload);
    command.env("INSPEQ_JOIN_CGROUP", cgroup);
    command
}

/// Runs two storm loops in `cgroup` for `secs`; returns total forks per second.
fn storm(bin: &Binaries, cgroup: &Path, secs: u32) -> anyhow::Result<f64> {
    let children: Vec<Child> = (0..2)
        .map(|_| workload(bin, cgroup).args(["storm", &secs.to_string()]).stdout(Stdio::piped()).spawn())
        .collect::<Result<_, _>>()?;
    let mut total = 0.0;
    for child in children {
        let out = child.wait_with_output()?;
        let v: Value = serde_json::from_slice(&out.stdout).context("storm output")?;
        total += v["per_sec"].as_f64().unwrap_or(0.0);
    }
    Ok(total)
}

fn latency(bin: &Binaries, exits: u32) -> anyhow::Result<Value> {
    let cg = Cgroup::new("latency")?;
    let tracer = Tracer::start(bin, &cg.0, false)?;
    let rss_kib = vm_rss_kib(tracer.pid());
    let attach_us = tracer.ready["attach_us"].as_u64().unwrap_or(0);
    let exec_to_ready = tracer.exec_to_ready;
    let out = workload(bin, &cg.0).args(["exits", &exits.to_string(), "2000"]).output()?;
    if !out.status.success() {
        bail!("inspeq-workload exits failed");
    }
    let children: std::collections::HashSet<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let rss_after_kib = vm_rss_kib(tracer.pid());
    let lines = tracer.stop()?;
    let mut lat_us: Vec<f64> = lines
        .iter()
        .filter(|v| v["kind"] == "exited" && v["pid"].as_u64().is_some_and(|p| children.contains(&p)))
        .map(|v| (v["received_ns"].as_u64().unwrap_or(0) as f64 - v["ktime_ns"].as_u64().unwrap_or(0) as f64) / 1000.0)
        .collect();
    lat_us.sort_by(f64::total_cmp);
    Ok(json!({
        "exits_sent": exits,
        "exits_seen": lat_us.len(),
        "p50_us": quantile(&lat_us, 0.5),
        "p90_us": quantile(&lat_us, 0.9),
        "p99_us": quantile(&lat_us, 0.99),
        "max_us": lat_us.last().copied().unwrap_or(f64::NAN),
        "daemon_rss_kib_started": rss_kib,
        "daemon_rss_kib_after_exits": rss_after_kib,
        "attach_ms": attach_us as f64 / 1000.0,
        "exec_to_ready_ms": exec_to_ready.as_secs_f64() * 1000.0,
    }))
}

/// One storm with the daemon watching `watched` (the storm's cgroup or another).
fn storm_with_daemon(bin: &Binaries, storm_cg: &Path, watched: &Path, secs: u32) -> anyhow::Result<Value> {
    // Quiet: the cost measured is the kernel path's, not printing 20k JSON lines a second.
    let tracer = Tracer::start(bin, watched, true)?;
    let cpu0 = cpu_seconds(tracer.pid());
    let started = Instant::now();
    let rate = storm(bin, storm_cg, secs)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(tracer.pid()) - cpu0;
    std::thread::sleep(Duration::from_millis(100));
    let lines = tracer.stop()?;
    let stats = lines.iter().find(|v| v["kind"] == "stats").cloned().context("no stats line from inspeqd trace")?;
    let records: u64 = stats["received"].as_array().map(|a| a.iter().filter_map(Value::as_u64).sum()).unwrap_or(0);
    Ok(json!({
        "forks_per_sec": rate,
        "records": records,
        "records_per_sec": records as f64 / wall,
        "lost": stats["lost"],
        "daemon_cpu_pct": cpu / wall * 100.0,
        "kernel_counters": stats,
    }))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    quantile(&values, 0.5)
}

/// Interleaved rounds of (no daemon, daemon watching the storm, daemon watching
/// another cgroup): the VM's fork rate drifts by ±10 % between runs, so each
/// figure is the median of its rounds and slowdowns compare medians.
fn storms(bin: &Binaries, secs: u32, rounds: u32) -> anyhow::Result<Value> {
    let storm_cg = Cgroup::new("storm")?;
    let other_cg = Cgroup::new("other")?;
    let (mut baseline, mut watched, mut unwatched) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!(
            "xtask: storm round {round}/{rounds}: no daemon, daemon watching it, daemon watching another cgroup ({secs} s each)"
        );
        baseline.push(storm(bin, &storm_cg.0, secs)?);
        watched.push(storm_with_daemon(bin, &storm_cg.0, &storm_cg.0, secs)?);
        unwatched.push(storm_with_daemon(bin, &storm_cg.0, &other_cg.0, secs)?);
    }
    let base = median(baseline.clone());
    let summary = |runs: &[Value]| -> Value {
        let field = |name: &str| median(runs.iter().filter_map(|r| r[name].as_f64()).collect());
        let rate = field("forks_per_sec");
        json!({
            "forks_per_sec": rate,
            "slowdown_pct": (1.0 - rate / base) * 100.0,
            "records_per_sec": field("records_per_sec"),
            "lost": runs.iter().filter_map(|r| r["lost"].as_u64()).sum::<u64>(),
            "daemon_cpu_pct": field("daemon_cpu_pct"),
            "runs": runs,
        })
    };
    Ok(json!({
        "baseline_forks_per_sec": base,
        "baseline_runs": baseline,
        "watched": summary(&watched),
        "unwatched": summary(&unwatched),
    }))
}

/// CPU time and wakeups of a daemon watching an empty cgroup for `secs`.
fn idle(bin: &Binaries, secs: u32) -> anyhow::Result<Value> {
    let cg = Cgroup::new("idle")?;
    let tracer = Tracer::start(bin, &cg.0, true)?;
    std::thread::sleep(Duration::from_millis(500));
    let switches = |pid: i32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    let (cpu0, sw0) = (cpu_seconds(tracer.pid()), switches(tracer.pid()));
    std::thread::sleep(Duration::from_secs(secs as u64));
    let (cpu, sw) = (cpu_seconds(tracer.pid()) - cpu0, switches(tracer.pid()) - sw0);
    let rss = vm_rss_kib(tracer.pid());
    tracer.stop()?;
    Ok(
        json!({ "secs": secs, "cpu_secs": cpu, "cpu_pct": cpu / secs as f64 * 100.0, "context_switches": sw, "rss_kib": rss }),
    )
}

/// Run time per invocation of each program (kernel BPF statistics, switched on
/// for this run only) during one watched storm.
fn program_costs(bin: &Binaries, secs: u32) -> anyhow::Result<Value> {
    let cg = Cgroup::new("cost")?;
    let stats_file = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats_file).unwrap_or_default();
    std::fs::write(stats_file, "1").context("enabling BPF statistics")?;
    let result = (|| -> anyhow::Result<Value> {
        let tracer = Tracer::start(bin, &cg.0, true)?;
        storm(bin, &cg.0, secs)?;
        // Each program fd's fdinfo carries its name's tag and run statistics.
        let mut costs = serde_json::Map::new();
        for entry in std::fs::read_dir(format!("/proc/{}/fdinfo", tracer.pid()))?.flatten() {
            let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let get =
                |key: &str| info.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok()));
            let (Some(id), Some(time), Some(count)) = (get("prog_id:"), get("run_time_ns:"), get("run_cnt:")) else {
                continue;
            };
            let name = tracer.ready["programs"]
                .as_object()
                .and_then(|p| p.iter().find(|(_, v)| v.as_u64() == Some(id)).map(|(k, _)| k.clone()))
                .unwrap_or_else(|| format!("prog {id}"));
            costs.insert(
                name,
                json!({ "runs": count, "ns_per_run": if count > 0 { time as f64 / count as f64 } else { 0.0 } }),
            );
        }
        tracer.stop()?;
        Ok(Value::Object(costs))
    })();
    std::fs::write(stats_file, before.trim())?;
    result
}

pub fn run(exits: u32, storm_secs: u32, rounds: u32) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the kernel benchmark loads eBPF programs: run it as root");
    }
    command::run(cargo().args(["build", "--release", "-p", "inspeq-daemon", "-p", "tests", "--bins"]))?;
    let release = workspace_root().join("target/release");
    let bin = Binaries { inspeqd: release.join("inspeqd"), workload: release.join("inspeq-workload") };

    eprintln!("xtask: timing {exits} exits");
    let latency = latency(&bin, exits)?;
    eprintln!("xtask: idle daemon for 10 s");
    let idle = idle(&bin, 10)?;
    let storms = storms(&bin, storm_secs, rounds)?;
    eprintln!("xtask: per-program cost during a watched storm");
    let costs = program_costs(&bin, storm_secs)?;
    let report =
        json!({ "machine": machine(), "latency": latency, "idle": idle, "storms": storms, "program_costs": costs });

    super::write_report("kernel", &report, print_table)
}

fn print_table(r: &Value) {
    let l = &r["latency"];
    let s = &r["storms"];
    let m = &r["machine"];
    println!(
        "\ninspeq kernel benchmark — Linux {}, {} CPUs ({})",
        m["kernel"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?")
    );
    println!("{:<58} {:>12} {:>14}", "figure", "measured", "target");
    let row = |name: &str, value: String, target: &str| println!("{name:<58} {value:>12} {target:>14}");
    row(&format!("exit → observation p50 (µs, {} exits)", l["exits_seen"]), f(&l["p50_us"]), "");
    row("exit → observation p90 (µs)", f(&l["p90_us"]), "");
    row("exit → observation p99 (µs)", f(&l["p99_us"]), "< 1000");
    row("exit → observation max (µs)", f(&l["max_us"]), "");
    row(
        "idle daemon: CPU (% of a core, 10 s)",
        format!("{:.3}", r["idle"]["cpu_pct"].as_f64().unwrap_or(f64::NAN)),
        "< 0.08",
    );
    row("idle daemon: context switches in 10 s", f(&r["idle"]["context_switches"]), "");
    row("storm, no daemon (forks/s, 2 loops, median)", f(&s["baseline_forks_per_sec"]), "");
    for (key, label, cpu_target, slow_target) in
        [("watched", "watched cgroup", "< 2", "< 10"), ("unwatched", "unwatched cgroup", "≈ 0", "< 5")]
    {
        let w = &s[key];
        row(&format!("storm, {label}: forks/s"), f(&w["forks_per_sec"]), "");
        row(&format!("storm, {label}: records/s to daemon"), f(&w["records_per_sec"]), "");
        row(&format!("storm, {label}: records lost"), f(&w["lost"]), if key == "watched" { "0" } else { "" });
        row(&format!("storm, {label}: daemon CPU (% of a core)"), f(&w["daemon_cpu_pct"]), cpu_target);
        row(&format!("storm, {label}: slowdown of the storm (%)"), f(&w["slowdown_pct"]), slow_target);
    }
    row(
        "daemon RSS after start (MiB)",
        format!("{:.1}", l["daemon_rss_kib_started"].as_f64().unwrap_or(0.0) / 1024.0),
        "≤ 7.6",
    );
    row(
        "daemon RSS after the exits (MiB)",
        format!("{:.1}", l["daemon_rss_kib_after_exits"].as_f64().unwrap_or(0.0) / 1024.0),
        "≤ 7.6",
    );
    row("start → attached, in-process (ms)", f(&l["attach_ms"]), "< 100");
    row("exec → ready line (ms)", f(&l["exec_to_ready_ms"]), "");
    if let Some(costs) = r["program_costs"].as_object() {
        for (name, cost) in costs {
            row(&format!("kernel cost of {name} (ns per run, watched storm)"), f(&cost["ns_per_run"]), "");
        }
    }
}
