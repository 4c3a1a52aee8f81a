//! `inspeqd trace`: watch one cgroup or process tree and print every observation
//! as it arrives, one line each (human text, or one JSON object with `--json`).
//! For operators checking what inspeq sees, and for tests and benchmarks.

use std::{io::Write as _, path::PathBuf, time::Duration};

use serde_json::json;

use crate::kernel::{
    ExitStatus, KernelError, Monitor, Observation, Options, RssLimits, WatchSettings, WatchTarget, monotonic_ns,
};

/// What `inspeqd trace` was asked to do.
#[derive(Clone, Debug, clap::Args)]
pub struct TraceArgs {
    /// Watch this cgroup v2 directory and its descendants (absolute, or relative
    /// to the cgroup2 mount).
    #[arg(long, required_unless_present = "pid", conflicts_with = "pid")]
    pub cgroup: Option<PathBuf>,
    /// Watch this process and every process it forks.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Report when a process's RSS reaches this size (k, m, g suffixes: powers of 1024).
    #[arg(long, value_parser = parse_size)]
    pub rss_threshold: Option<u64>,
    /// Report whenever a process's RSS moved by this much.
    #[arg(long, value_parser = parse_size)]
    pub rss_delta: Option<u64>,
    /// Report when the watch's total RSS (all its processes) reaches this size.
    #[arg(long, value_parser = parse_size)]
    pub rss_total_threshold: Option<u64>,
    /// One JSON object per line; the first line is `{"kind":"ready",...}`.
    #[arg(long)]
    pub json: bool,
    /// Add `received_ns` (CLOCK_MONOTONIC when the daemon had the record) to JSON lines.
    #[arg(long)]
    pub timing: bool,
    /// Print no observations, only the closing counts (for benchmarks).
    #[arg(long)]
    pub quiet: bool,
    /// Do not use eBPF: the process connector, else pidfds, else /proc polling.
    #[arg(long)]
    pub no_ebpf: bool,
    /// Do not use the netlink process connector (with --no-ebpf: pidfds, else /proc).
    #[arg(long)]
    pub no_proc_connector: bool,
    /// Do not use pidfds (with --no-ebpf --no-proc-connector: /proc polling).
    #[arg(long)]
    pub no_pidfd: bool,
    /// The period of the /proc scans without eBPF, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Ring-buffer size in bytes (power of two, at least the page size).
    #[arg(long)]
    pub ring_bytes: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
}

/// Parses `32m`, `1.5g`, `4096`: sizes with powers-of-1024 suffixes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_lowercase().trim_end_matches(['b', 'i']) {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("unknown size unit `{unit}` (use k, m, g or t)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a size"))?;
    // Also rejects NaN, which compares false to everything.
    if value.is_nan() || value < 0.0 || value.is_infinite() {
        return Err(format!("`{text}` is not a size"));
    }
    Ok((value * (1u64 << shift) as f64) as u64)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// One observation as a JSON object (the `--json` format documented in the README).
pub fn to_json(o: &Observation) -> serde_json::Value {
    match o {
        Observation::ProcessExited(e) => json!({
            "kind": "exited",
            "pid": e.pid,
            "exit_code": e.status.code(),
            "signal": e.status.signal(),
            "core_dumped": e.status.core_dumped(),
            "oom_killed": e.oom_killed,
            "rss_bytes": e.rss_bytes,
            "cgroup_id": e.cgroup_id,
            "ktime_ns": e.ktime_ns,
        }),
        Observation::ProcessForked { parent, child, cgroup_id, ktime_ns, .. } => json!({
            "kind": "forked",
            "pid": child,
            "parent_pid": parent,
            "cgroup_id": cgroup_id,
            "ktime_ns": ktime_ns,
        }),
        Observation::RssCrossed { pid, direction, rss_bytes, threshold_bytes, cgroup_id, ktime_ns, .. } => json!({
            "kind": "rss",
            "pid": pid,
            "direction": direction.to_string(),
            "rss_bytes": rss_bytes,
            "threshold_bytes": threshold_bytes,
            "cgroup_id": cgroup_id,
            "ktime_ns": ktime_ns,
        }),
        Observation::RssTotalCrossed { pid, direction, total_bytes, threshold_bytes, ktime_ns, .. } => json!({
            "kind": "rss_total",
            "pid": pid,
            "direction": direction.to_string(),
            "total_bytes": total_bytes,
            "threshold_bytes": threshold_bytes,
            "ktime_ns": ktime_ns,
        }),
        Observation::ListenerClosed { pid, addr, cgroup_id, ktime_ns, .. } => json!({
            "kind": "listener_closed",
            "pid": pid,
            "address": addr.ip().to_string(),
            "port": addr.port(),
            "cgroup_id": cgroup_id,
            "ktime_ns": ktime_ns,
        }),
        Observation::EventsLost { kind, count } => json!({ "kind": "lost", "record": kind, "count": count }),
    }
}

/// One observation as a line for people.
pub fn to_text(o: &Observation) -> String {
    match o {
        Observation::ProcessExited(e) => {
            let how = match e.status {
                ExitStatus::Code(code) => format!("code={code}"),
                ExitStatus::Signal { signal, core_dumped } => {
                    format!(
                        "signal={signal} ({}){}",
                        crate::signal::name(signal).unwrap_or("signal"),
                        if core_dumped { " core dumped" } else { "" }
                    )
                }
                ExitStatus::Unknown => "status=unknown".to_owned(),
            };
            let oom = if e.oom_killed { " OOM-killed" } else { "" };
            let rss = e.rss_bytes.map(|b| format!(" rss={}", mib(b))).unwrap_or_default();
            format!("exited  pid={} comm={} {how}{oom}{rss} ppid={} cgroup={}", e.pid, e.comm, e.ppid, e.cgroup_id)
        }
        Observation::ProcessForked { parent, child, cgroup_id, .. } => {
            format!("forked  pid={child} parent={parent} cgroup={cgroup_id}")
        }
        Observation::RssCrossed { pid, direction, rss_bytes, threshold_bytes, .. } => {
            format!("rss     pid={pid} {direction} rss={} threshold={}", mib(*rss_bytes), mib(*threshold_bytes))
        }
        Observation::RssTotalCrossed { pid, direction, total_bytes, threshold_bytes, .. } => {
            format!("total   {direction} total={} threshold={} (pid={pid})", mib(*total_bytes), mib(*threshold_bytes))
        }
        Observation::ListenerClosed { pid, addr, cgroup_id, .. } => {
            format!("closed  pid={pid} listener={addr} cgroup={cgroup_id}")
        }
        Observation::EventsLost { kind, count } => format!("lost    {count} {kind} records (ring buffer full)"),
    }
}

/// The first line: which tier runs and how the kernel looked (JSON), or a line on stderr.
fn ready(monitor: &Monitor, target: &WatchTarget, json: bool, stdout: &mut impl std::io::Write) -> std::io::Result<()> {
    let mode = monitor.mode().name();
    let attach_us = monitor.attach_time().map(|d| d.as_micros() as u64);
    if json {
        let programs: serde_json::Map<String, serde_json::Value> =
            monitor.program_ids().iter().map(|(name, id)| ((*name).to_owned(), (*id).into())).collect();
        writeln!(
            stdout,
            "{}",
            json!({
                "kind": "ready",
                "mode": mode,
                "reason": monitor.mode().reason(),
                "blind_spots": monitor.blind_spots(),
                "attach_us": attach_us,
                "missing": monitor.missing_tracepoints(),
                "programs": programs,
                "layout": monitor.layout().map(|l| json!({
                    "exit": if l.exit_group_dead { "group_dead" } else { "signal_live" },
                    "rss_counters": if l.rss_percpu { "percpu" } else { "atomic" },
                    "rss_split": l.rss_split,
                    "cgroup_ancestors": l.cgroup_ancestors,
                    "pids": if l.pids_translated { "translated" } else { "initial" },
                })),
            })
        )?;
    } else {
        eprintln!("inspeqd trace: watching {target:?} ({mode}); Ctrl-C stops");
    }
    Ok(())
}

/// Runs `inspeqd trace` until SIGINT/SIGTERM or `--duration`.
pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let options = Options {
        force_fallback: args.no_ebpf,
        no_proc_connector: args.no_proc_connector,
        no_pidfd: args.no_pidfd,
        ring_bytes: args.ring_bytes,
        cycle: Duration::from_millis(args.poll_ms.max(1)),
    };
    let mut monitor = Monitor::start(&options);
    let target = match (&args.cgroup, args.pid) {
        (Some(path), _) => WatchTarget::Cgroup(path.clone()),
        (None, Some(pid)) => WatchTarget::Tree(pid),
        (None, None) => anyhow::bail!("give --cgroup PATH or --pid PID"),
    };
    let rss = match (args.rss_threshold, args.rss_delta) {
        (None, None) => None,
        (threshold, delta) => {
            Some(RssLimits { delta: delta.unwrap_or(0), ..RssLimits::threshold(threshold.unwrap_or(0)) })
        }
    };
    monitor
        .watch(&target, WatchSettings { forks: true, rss, total_rss: args.rss_total_threshold, listeners: true })
        .map_err(|e: KernelError| anyhow::Error::new(e).context(format!("cannot watch {target:?}")))?;

    let mut stdout = std::io::stdout().lock();
    ready(&monitor, &target, args.json, &mut stdout)?;
    stdout.flush()?;

    let deadline = args.duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut batch = Vec::new();
    // Observations received per kind (exit, fork, rss, listener closes), and records lost.
    let mut received = [0u64; 4];
    let mut lost = 0;
    loop {
        batch.clear();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = monitor.next_batch(&mut batch) => result?,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = sleep => break,
        }
        let received_ns = monotonic_ns();
        for o in &batch {
            match o {
                Observation::ProcessExited(_) => received[0] += 1,
                Observation::ProcessForked { .. } => received[1] += 1,
                Observation::RssCrossed { .. } | Observation::RssTotalCrossed { .. } => received[2] += 1,
                Observation::ListenerClosed { .. } => received[3] += 1,
                Observation::EventsLost { count, .. } => lost += count,
            }
            if args.quiet {
                continue;
            }
            if args.json {
                let mut value = to_json(o);
                if args.timing {
                    value["received_ns"] = received_ns.into();
                }
                writeln!(stdout, "{value}")?;
            } else {
                writeln!(stdout, "{}", to_text(o))?;
            }
        }
        stdout.flush()?;
    }
    let stats = monitor.stats();
    if args.json {
        writeln!(
            stdout,
            "{}",
            json!({
                "kind": "stats",
                "received": received,
                "lost": lost,
                "emitted": stats.emitted,
                "dropped": stats.dropped,
                "listen_emitted": stats.listen_emitted,
                "listen_dropped": stats.listen_dropped,
                "undecodable": stats.undecodable,
            })
        )?;
    } else {
        eprintln!(
            "inspeqd trace: observations received (exits, forks, rss, listener closes) {received:?}, lost {lost}; kernel counters: emitted {:?} and {} listener closes, dropped {:?} and {}",
            stats.emitted, stats.listen_emitted, stats.dropped, stats.listen_dropped
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("32m"), Ok(32 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert!(parse_size("12q").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("-1m").is_err());
    }

    #[test]
    fn exit_json_has_the_documented_fields() {
        let o = Observation::ProcessExited(crate::kernel::ProcessExited {
            watch: crate::kernel::WatchId(1),
            pid: 10,
            ppid: 1,
            status: ExitStatus::Signal { signal: 9, core_dumped: false },
            oom_killed: true,
            rss_bytes: Some(8192),
            cgroup_id: 77,
            comm: "x".into(),
            ktime_ns: 5,
        });
        assert_eq!(
            to_json(&o),
            json!({"kind": "exited", "pid": 10, "exit_code": null, "signal": 9, "core_dumped": false,
                   "oom_killed": true, "rss_bytes": 8192, "cgroup_id": 77, "ktime_ns": 5})
        );
    }

    #[test]
    fn listener_json_and_text() {
        let o = Observation::ListenerClosed {
            watch: crate::kernel::WatchId(1),
            pid: 10,
            addr: "[::1]:8080".parse().unwrap(),
            cgroup_id: 77,
            ktime_ns: 5,
        };
        assert_eq!(
            to_json(&o),
            json!({"kind": "listener_closed", "pid": 10, "address": "::1", "port": 8080, "cgroup_id": 77, "ktime_ns": 5})
        );
        assert_eq!(to_text(&o), "closed  pid=10 listener=[::1]:8080 cgroup=77");
    }
}
