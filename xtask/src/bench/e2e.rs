//! `cargo xtask bench e2e`: inspeqd against Monit 5.33, side by side in one run,
//! on N demo services run by a real systemd user manager.
//!
//! Both monitors watch the same services for the whole run with the seed's
//! rules: inspeqd (`set cycle_time 1`, `if crashed then alert, restart`, `if
//! memory:rss > 64m then alert`, `if cpu:total_user > 90% then alert`, `if
//! memory:total_rss > 1g then alert`, alerts to the log channel on its stdout)
//! and Monit (`set daemon 1`, `check process ... matching`, `if does not exist`,
//! `if memory > 64 MB`, `if totalcpu > 90%`, `if totalmem > 1024 MB then exec` a
//! script that appends `date +%s.%N` to a file).
//!
//! inspeqd runs with `--timing`, so each kill's way is broken into stages
//! (CLOCK_MONOTONIC, the clock of the kill's instant): the exit tracepoint, the
//! record received by the loop, systemd's answer, the alert raised, handed to
//! the channel, persisted in the outbox, and the restart decision. Each monitor runs in a cgroup of
//! its own, so its CPU (cgroup `cpu.stat`, children included) and its forks (an
//! `inspeqd trace` on that cgroup) are its whole process tree's.
//!
//! 1. Idle: a window of `--idle-secs` with nothing happening, then another with
//!    `--extra-procs` unmonitored `sleep` processes on the host (Monit rescans all
//!    of /proc every cycle).
//! 2. Crashes: the units have `Restart=always` with `RestartSec=2`, so systemd
//!    restarts them itself and neither monitor's reaction is part of the other's
//!    measurement; the 2 s dead time lets Monit's 1 s cycle see every death. Kills
//!    go round-robin over the services, 100-200 ms apart (uniform phase against
//!    Monit's cycle), never to a service killed in the last 4 s (so Monit has seen
//!    it running again). Latency = alert line read from inspeqd's stdout (or the
//!    Monit script's timestamp) − the instant just before kill(2).
//! 3. Memory: SIGUSR1 makes a service touch 96 MiB; xtask polls its VmRSS every
//!    ~0.2 ms to time the 64 MiB crossing; latency = alert − crossing. SIGHUP frees
//!    the memory, and the next repetition waits until Monit can have seen that.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    kernel::{Binaries, Cgroup, Tracer, vm_rss_kib},
    machine, output_path, quantile,
};
use crate::{
    command::{self, cargo, is_root, workspace_root},
    systemd::UserManager,
};

/// What this benchmark installs beyond the test suite's packages.
const BENCH_APT_PACKAGES: &[(&str, &str)] = &[("monit", "/usr/bin/monit")];

/// The memory rule's threshold in both monitors: 64 MiB (Monit's "MB" is 1024 kB).
const THRESHOLD_KIB: u64 = 64 * 1024;

#[derive(clap::Args, Clone)]
pub struct Options {
    /// Demo services run by the user manager and watched by both monitors.
    #[arg(long, default_value_t = 50)]
    pub services: u32,
    /// kill -9s to time (each is seen by both monitors).
    #[arg(long, default_value_t = 200)]
    pub kills: u32,
    /// Length of each idle window in seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// Unmonitored idle processes added for the second idle window (0: no second window).
    #[arg(long, default_value_t = 500)]
    pub extra_procs: u32,
    /// Memory bloats to time.
    #[arg(long, default_value_t = 10)]
    pub bloats: u32,
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Guarded(Child);

impl Guarded {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: plain kill(2) of our own, unreaped child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        for _ in 0..100 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` inside `cgroup` (the shell joins it, then execs), so the
/// child's pid is the program's and everything it forks is in the cgroup.
fn spawn_in(cgroup: &Path, program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"", cgroup.display()))
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Lines of a child's output, each stamped with the instant it was read.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

fn collect(stream: impl std::io::Read + Send + 'static, into: &Lines) {
    let into = into.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push((Instant::now(), line));
        }
    });
}

fn count_lines(lines: &Lines, needle: &str) -> usize {
    lines.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).count()
}

/// A monitor's process tree, as one cgroup sees it.
struct Usage {
    cpu_usec: u64,
    ticks_secs: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn usage(cgroup: &Path, pid: i32) -> Usage {
    let cpu_usec = std::fs::read_to_string(cgroup.join("cpu.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14-17 of stat; `fields` starts at field 3.
    let ticks: f64 = fields.get(11..15).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Usage { cpu_usec, ticks_secs: ticks / hz, rss_kib: kib("VmRSS:"), hwm_kib: kib("VmHWM:") }
}

fn host_processes() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count())
        .unwrap_or(0)
}

/// Both monitors, their cgroups and their fork tracers.
struct Monitors {
    inspeqd: Guarded,
    inspeqd_cg: Cgroup,
    inspeqd_lines: Lines,
    inspeqd_forks: Tracer,
    monit: Guarded,
    monit_cg: Cgroup,
    monit_forks: Tracer,
    monit_det: PathBuf,
}

/// One idle window: CPU, RSS and forks of each monitor over `secs`.
fn idle_window(m: &Monitors, secs: u64, label: &str) -> Value {
    eprintln!("xtask: idle window `{label}`: {secs} s, {} processes on the host", host_processes());
    m.inspeqd_forks.drain();
    m.monit_forks.drain();
    let (i0, m0) = (usage(&m.inspeqd_cg.0, m.inspeqd.pid()), usage(&m.monit_cg.0, m.monit.pid()));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let wall = started.elapsed().as_secs_f64();
    let (i1, m1) = (usage(&m.inspeqd_cg.0, m.inspeqd.pid()), usage(&m.monit_cg.0, m.monit.pid()));
    let forks = |t: &Tracer| t.drain().iter().filter(|v| v["kind"] == "forked").count();
    let (inspeq_forks, monit_forks) = (forks(&m.inspeqd_forks), forks(&m.monit_forks));
    let one = |a: &Usage, b: &Usage, forks: usize| {
        let cpu = (b.cpu_usec - a.cpu_usec) as f64 / 1e6;
        json!({
            "cpu_secs": cpu,
            "cpu_pct": cpu / wall * 100.0,
            "proc_stat_cpu_secs": b.ticks_secs - a.ticks_secs,
            "rss_kib": b.rss_kib,
            "hwm_kib": b.hwm_kib,
            "forks": forks,
        })
    };
    let inspeq = one(&i0, &i1, inspeq_forks);
    let monit = one(&m0, &m1, monit_forks);
    let ratio = monit["cpu_secs"].as_f64().unwrap_or(0.0) / inspeq["cpu_secs"].as_f64().unwrap_or(0.0);
    json!({ "label": label, "secs": wall, "host_processes": host_processes(), "inspeq": inspeq, "monit": monit, "cpu_ratio": ratio })
}

/// Monit's script's lines: (unix time, service, event).
fn monit_detections(path: &Path) -> Vec<(f64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some((f.next()?.parse().ok()?, f.next()?.to_owned(), f.next().unwrap_or("").to_owned()))
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The first inspeqd line (stdout or log) after `since` that contains all of `needles`.
fn first_line(lines: &Lines, since: Instant, needles: &[&str]) -> Option<Instant> {
    lines
        .lock()
        .unwrap()
        .iter()
        .find(|(at, l)| *at >= since && needles.iter().all(|n| l.contains(n)))
        .map(|(at, _)| *at)
}

/// The first inspeqd alert line for `service` with `event` after `since`.
fn inspeq_alert(lines: &Lines, service: &str, event: &str, since: Instant) -> Option<Instant> {
    first_line(lines, since, &["alert: firing", &format!("service={service} "), &format!("event={event}")])
}

/// The first Monit detection of `service` whose event contains `event` after `since` (unix time).
fn monit_alert(det: &[(f64, String, String)], service: &str, event: &str, since: f64) -> Option<f64> {
    det.iter().find(|(t, s, e)| *t >= since && s == service && e.contains(event)).map(|(t, _, _)| *t)
}

/// Latencies in ms: percentiles, and how many were missed.
fn summary(mut ms: Vec<f64>, attempts: usize) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "missed": attempts - ms.len(),
        "min_ms": ms.first().copied().unwrap_or(f64::NAN),
        "p50_ms": quantile(&ms, 0.5),
        "p90_ms": quantile(&ms, 0.9),
        "p99_ms": quantile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

/// A small xorshift: the kill gaps need to be irregular, not cryptographic.
struct Jitter(u64);

impl Jitter {
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

fn service(i: u32) -> String {
    format!("e2e-s{i}")
}

/// The service's main process: the one process in its unit's cgroup (cheaper
/// and less disturbing than asking systemctl before every kill).
fn main_pid(cgroup: &Path) -> Option<i32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs")).ok()?.lines().next()?.trim().parse().ok()
}

fn crashes(m: &Monitors, cgroups: &[PathBuf], opts: &Options) -> anyhow::Result<Value> {
    eprintln!("xtask: {} kill -9s over {} services, 100-200 ms apart", opts.kills, opts.services);
    let mut jitter = Jitter(Instant::now().elapsed().as_nanos() as u64 | unix_now().to_bits() | 1);
    let mut last: Vec<Option<(i32, Instant)>> = vec![None; cgroups.len()];
    let mut kills: Vec<(u32, Instant, f64, u64)> = Vec::new();
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30 + opts.kills as u64);
    while kills.len() < opts.kills as usize {
        if Instant::now() > deadline {
            eprintln!("xtask: warning: only {} kills before the deadline (services not coming back?)", kills.len());
            break;
        }
        std::thread::sleep(Duration::from_millis(jitter.between(100, 200)));
        let i = next % cgroups.len();
        next += 1;
        let Some(pid) = main_pid(&cgroups[i]) else { continue };
        if last[i].is_some_and(|(p, at)| p == pid || at.elapsed() < Duration::from_secs(4)) {
            continue;
        }
        let (at, unix, mono) = (Instant::now(), unix_now(), monotonic_us());
        // SAFETY: kill(2) of the service's main process, read from its cgroup just now.
        if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            kills.push((i as u32, at, unix, mono));
            last[i] = Some((pid, at));
        }
    }
    // Monit's last detections land up to a cycle (plus its check walk) later.
    std::thread::sleep(Duration::from_millis(2500));
    let det = monit_detections(&m.monit_det);
    let (mut inspeq_ms, mut monit_ms, mut observed_ms) = (Vec::new(), Vec::new(), Vec::new());
    let stamps = timing_stamps(&m.inspeqd_lines);
    let mut stage_ms: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut raw = Vec::new();
    for (i, at, unix, mono) in &kills {
        let name = service(*i);
        let inspeq = inspeq_alert(&m.inspeqd_lines, &name, "crashed", *at)
            .filter(|t| t.duration_since(*at) < Duration::from_secs(3))
            .map(|t| t.duration_since(*at).as_secs_f64() * 1000.0);
        let monit = monit_alert(&det, &name, "exist", *unix).filter(|t| t - unix < 3.0).map(|t| (t - unix) * 1000.0);
        // Where the time goes: the daemon logs the exit before the alert goes
        // through the durable outbox (fsync) to the channel.
        let observed = first_line(&m.inspeqd_lines, *at, &[&format!("service `{name}`: main process"), "exited"])
            .filter(|t| t.duration_since(*at) < Duration::from_secs(3))
            .map(|t| t.duration_since(*at).as_secs_f64() * 1000.0);
        inspeq_ms.extend(inspeq);
        monit_ms.extend(monit);
        observed_ms.extend(observed);
        let stages: Vec<Option<f64>> =
            STAGES.iter().map(|(stage, _)| stage_after(&stamps, &name, stage, *mono)).collect();
        for (into, ms) in stage_ms.iter_mut().zip(&stages) {
            into.extend(*ms);
        }
        raw.push(json!({ "service": name, "inspeq_ms": inspeq, "inspeq_exit_logged_ms": observed, "monit_ms": monit, "stages_ms": stages }));
    }
    let stages: Vec<Value> = STAGES
        .iter()
        .zip(stage_ms)
        .map(|((stage, what), ms)| json!({ "stage": stage, "what": what, "summary": summary(ms, kills.len()) }))
        .collect();
    Ok(json!({
        "kills": kills.len(),
        "inspeq_stages": stages,
        "inspeq": summary(inspeq_ms, kills.len()),
        "inspeq_exit_logged": summary(observed_ms, kills.len()),
        "monit": summary(monit_ms, kills.len()),
        "raw": raw,
    }))
}

/// The stages of a kill's way through inspeqd that `--timing` stamps, in order.
const STAGES: &[(&str, &str)] = &[
    ("kernel", "exit tracepoint fires (kernel clock)"),
    ("exit_received", "the loop has the exit record"),
    ("init_answered", "systemd's word on it is in the loop"),
    ("alert_raised", "the engine's alert is raised"),
    ("restart_decided", "the restart is issued or left to systemd"),
    ("alert_committed", "the outbox's writer hands it to the route"),
    ("alert_accepted", "the channel took the alert"),
    ("alert_persisted", "its outbox segment is synced"),
];

/// CLOCK_MONOTONIC now, in microseconds: the clock of inspeqd's `timing:` lines.
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// inspeqd's `timing: STAGE service=NAME at_us=N [kernel_us=K]` lines as
/// (stage, service, µs); an exit's kernel time becomes a `kernel` stage.
fn timing_stamps(lines: &Lines) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for (_, line) in lines.lock().unwrap().iter() {
        let Some(rest) = line.split_once("timing: ").map(|(_, r)| r) else { continue };
        let mut words = rest.split_whitespace();
        let Some(stage) = words.next() else { continue };
        let (mut service, mut at, mut kernel) = (None, None, None);
        for word in words {
            match word.split_once('=') {
                Some(("service", v)) => service = Some(v.to_owned()),
                Some(("at_us", v)) => at = v.parse::<u64>().ok(),
                Some(("kernel_us", v)) => kernel = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        let (Some(service), Some(at)) = (service, at) else { continue };
        if let Some(kernel) = kernel {
            out.push(("kernel".to_owned(), service.clone(), kernel));
        }
        out.push((stage.to_owned(), service, at));
    }
    out
}

/// Milliseconds from the kill at `kill_us` to `service`'s first `stage` stamp after it (within 3 s).
fn stage_after(stamps: &[(String, String, u64)], service: &str, stage: &str, kill_us: u64) -> Option<f64> {
    stamps
        .iter()
        .find(|(s, name, at)| s == stage && name == service && *at >= kill_us && *at - kill_us < 3_000_000)
        .map(|(_, _, at)| (*at - kill_us) as f64 / 1000.0)
}

fn bloats(m: &Monitors, cgroups: &[PathBuf], opts: &Options) -> anyhow::Result<Value> {
    eprintln!("xtask: {} memory bloats past 64 MiB", opts.bloats);
    let (mut inspeq_ms, mut monit_ms, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    for rep in 0..opts.bloats {
        let i = (rep as usize) % cgroups.len();
        let name = service(i as u32);
        let Some(pid) = main_pid(&cgroups[i]) else {
            eprintln!("xtask: warning: {name} is not running; bloat {rep} skipped");
            continue;
        };
        if vm_rss_kib(pid) >= THRESHOLD_KIB {
            bail!("{name} is already above 64 MiB");
        }
        // A random phase against Monit's cycle, as for the kills.
        std::thread::sleep(Duration::from_millis(Jitter(unix_now().to_bits() | 1).between(0, 1000)));
        let signalled = Instant::now();
        // SAFETY: kill(2) of the service's main process: SIGUSR1 makes it bloat.
        unsafe { libc::kill(pid, libc::SIGUSR1) };
        // Poll tightly: the crossing instant is the reference both latencies are taken from.
        let crossed = loop {
            let rss = vm_rss_kib(pid);
            if rss > THRESHOLD_KIB {
                break Some((Instant::now(), unix_now()));
            }
            if signalled.elapsed() > Duration::from_secs(5) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let Some((at, unix)) = crossed else {
            eprintln!("xtask: warning: {name} did not cross 64 MiB within 5 s");
            continue;
        };
        done += 1;
        std::thread::sleep(Duration::from_millis(1500));
        let det = monit_detections(&m.monit_det);
        // The alert may be read a hair before the poll saw VmRSS move: count from the signal.
        let inspeq = inspeq_alert(&m.inspeqd_lines, &name, "rule_failed", signalled).map(|t| {
            t.checked_duration_since(at).map_or_else(|| -(at.duration_since(t).as_secs_f64()), |d| d.as_secs_f64())
                * 1000.0
        });
        let monit = monit_alert(&det, &name, "esource", unix - 0.05).map(|t| (t - unix) * 1000.0);
        inspeq_ms.extend(inspeq);
        monit_ms.extend(monit);
        raw.push(json!({
            "service": name,
            "signal_to_crossing_ms": at.duration_since(signalled).as_secs_f64() * 1000.0,
            "inspeq_ms": inspeq,
            "monit_ms": monit,
        }));
        // SAFETY: SIGHUP (reload) frees the 96 MiB.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        // Both must see the service below the threshold again before it may bloat again.
        std::thread::sleep(Duration::from_millis(1500));
    }
    Ok(json!({
        "bloats": done,
        "inspeq": summary(inspeq_ms, done),
        "monit": summary(monit_ms, done),
        "raw": raw,
    }))
}

fn start_monitors(bin: &Binaries, manager: &UserManager, work: &Path, services: u32) -> anyhow::Result<Monitors> {
    // inspeqd: alerts to the log channel (stdout), the same cycle as Monit's shortest.
    let conf = work.join("inspeq");
    std::fs::create_dir_all(conf.join("services.d"))?;
    std::fs::write(conf.join("inspeq.conf"), "# cargo xtask bench e2e\nset cycle_time 1\n")?;
    let mut inq = String::new();
    let mut monitrc = format!(
        "set daemon 1\nset logfile {w}/monit.log\nset pidfile {w}/monit.pid\nset idfile {w}/monit.id\nset statefile {w}/monit.state\n",
        w = work.display()
    );
    let det = work.join("det.sh");
    let det_log = work.join("det.log");
    for i in 0..services {
        let name = service(i);
        inq.push_str(&format!(
            "check service {name} with scope user\n  if crashed then alert, restart\n  if memory:rss > 64m then alert\n  if cpu:total_user > 90% then alert\n  if memory:total_rss > 1g then alert\n\n"
        ));
        monitrc.push_str(&format!(
            "check process {name} matching \"demo-service {name}$\"\n  if does not exist then exec \"{d}\"\n  if memory > 64 MB then exec \"{d}\"\n  if totalcpu > 90% then exec \"{d}\"\n  if totalmem > 1024 MB then exec \"{d}\"\n",
            d = det.display()
        ));
    }
    std::fs::write(conf.join("services.d/e2e.inq"), inq)?;
    // The action stamps first, so its own start-up (sh, then date) is the only cost after Monit's decision.
    std::fs::write(
        &det,
        format!("#!/bin/sh\necho \"$(date +%s.%N) $MONIT_SERVICE $MONIT_EVENT\" >> {}\n", det_log.display()),
    )?;
    std::fs::set_permissions(&det, std::fs::Permissions::from_mode(0o755))?;
    let rc = work.join("monitrc");
    std::fs::write(&rc, monitrc)?;
    // Monit refuses a control file readable by others.
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o700))?;
    command::run(Command::new("/usr/bin/monit").arg("-t").arg("-c").arg(&rc))?;

    let inspeqd_cg = Cgroup::new("e2e-inspeqd")?;
    let monit_cg = Cgroup::new("e2e-monit")?;
    // The tracers start first so that they see the monitors' every fork.
    let inspeqd_forks = Tracer::start(bin, &inspeqd_cg.0, false)?;
    let monit_forks = Tracer::start(bin, &monit_cg.0, false)?;

    let (socket, state) = (work.join("inspeq.sock"), work.join("state"));
    let mut child = spawn_in(
        &inspeqd_cg.0,
        &bin.inspeqd,
        &[
            "--config-dir",
            &conf.to_string_lossy(),
            "--socket",
            &socket.to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
            "--timing",
        ],
    )
    .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .context("starting inspeqd")?;
    let inspeqd_lines: Lines = Arc::default();
    collect(child.stdout.take().unwrap(), &inspeqd_lines);
    collect(child.stderr.take().unwrap(), &inspeqd_lines);
    let inspeqd = Guarded(child);
    let started = Instant::now();
    while count_lines(&inspeqd_lines, ": up, pid") < services as usize {
        if started.elapsed() > Duration::from_secs(30) {
            let tail: Vec<String> =
                inspeqd_lines.lock().unwrap().iter().rev().take(20).map(|(_, l)| l.clone()).collect();
            bail!("inspeqd did not see all {services} services up within 30 s; its last lines:\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("xtask: inspeqd watches {services} services ({:.1} s after exec)", started.elapsed().as_secs_f64());

    let monit = Guarded(
        spawn_in(&monit_cg.0, Path::new("/usr/bin/monit"), &["-I", "-c", &rc.to_string_lossy()])
            .stdout(std::fs::File::create(work.join("monit.out"))?)
            .stderr(std::fs::File::create(work.join("monit.err"))?)
            .spawn()
            .context("starting monit")?,
    );
    Ok(Monitors { inspeqd, inspeqd_cg, inspeqd_lines, inspeqd_forks, monit, monit_cg, monit_forks, monit_det: det_log })
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !is_root() || !Path::new("/lib/systemd/systemd").exists() {
        bail!(
            "the end-to-end benchmark runs a systemd user manager and loads eBPF programs: run it as root with systemd installed"
        );
    }
    crate::setup::install_missing(BENCH_APT_PACKAGES)?;
    command::run(cargo().args(["build", "--release", "-p", "inspeq-daemon", "-p", "tests", "--bins"]))?;
    let release = workspace_root().join("target/release");
    let bin = Binaries { inspeqd: release.join("inspeqd"), workload: release.join("inspeq-workload") };

    eprintln!("xtask: starting a systemd user manager with {} demo services", opts.services);
    let manager = UserManager::start("bench-e2e")?;
    let work = manager.base.join("bench");
    std::fs::create_dir_all(&work)?;
    let names: Vec<String> = (0..opts.services).map(service).collect();
    for name in &names {
        // The name as an argument lets Monit's `matching` tell the services apart.
        let unit = format!(
            "[Unit]\nDescription=inspeq e2e bench service\nStartLimitIntervalSec=0\n\n[Service]\nExecStart={} demo-service {name}\nExecReload=/bin/kill -HUP $MAINPID\nRestart=always\nRestartSec=2\n",
            bin.workload.display()
        );
        std::fs::write(manager.units_dir().join(format!("{name}.service")), unit)?;
    }
    manager.systemctl(&["daemon-reload"])?;
    let units: Vec<String> = names.iter().map(|n| format!("{n}.service")).collect();
    let mut args = vec!["start"];
    args.extend(units.iter().map(String::as_str));
    manager.systemctl(&args)?;
    let cgroups: Vec<PathBuf> = units.iter().map(|u| manager.unit_cgroup(u)).collect::<anyhow::Result<_>>()?;

    let monitors = start_monitors(&bin, &manager, &work, opts.services)?;
    // Both settle: Monit's first cycles, inspeqd's first samples.
    std::thread::sleep(Duration::from_secs(5));
    let mut idle = vec![idle_window(&monitors, opts.idle_secs, "idle")];
    if opts.extra_procs > 0 {
        let extra: Vec<Guarded> = (0..opts.extra_procs)
            .map(|_| Command::new("sleep").arg("100000").stdin(Stdio::null()).spawn().map(Guarded))
            .collect::<Result<_, _>>()?;
        std::thread::sleep(Duration::from_secs(3));
        idle.push(idle_window(&monitors, opts.idle_secs, &format!("idle, +{} host processes", opts.extra_procs)));
        drop(extra);
    }
    let crashes = crashes(&monitors, &cgroups, opts)?;
    let bloats = bloats(&monitors, &cgroups, opts)?;
    let monit_version = command::output(Command::new("/usr/bin/monit").arg("-V")).unwrap_or_default();
    let report = json!({
        "machine": machine(),
        "monit_version": monit_version.lines().next().unwrap_or("").trim(),
        "options": { "services": opts.services, "kills": opts.kills, "idle_secs": opts.idle_secs, "extra_procs": opts.extra_procs, "bloats": opts.bloats },
        "idle": idle,
        "crashes": crashes,
        "bloats": bloats,
    });
    let path = output_path("e2e");
    std::fs::create_dir_all(path.parent().unwrap())?;
    // The monitors' own words, kept beside the figures (their work dir goes with the manager).
    let log: String = monitors.inspeqd_lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(path.with_file_name("e2e-inspeqd.log"), log)?;
    let _ = std::fs::copy(work.join("monit.log"), path.with_file_name("e2e-monit.log"));
    drop(monitors);
    drop(manager);

    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    print_table(&report);
    println!("\nwritten to {}", path.display());
    Ok(())
}

fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0} ms"),
        Some(x) => format!("{x:.2} ms"),
        None => "-".into(),
    }
}

fn print_table(r: &Value) {
    let m = &r["machine"];
    println!(
        "\ninspeq vs {} — Linux {}, {} CPUs ({}), {} services",
        r["monit_version"].as_str().unwrap_or("Monit"),
        m["kernel"].as_str().unwrap_or("?"),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        r["options"]["services"]
    );
    println!("{:<52} {:>16} {:>16} {:>12}", "figure", "inspeq", "Monit", "target");
    let row = |name: &str, a: String, b: String, target: &str| println!("{name:<52} {a:>16} {b:>16} {target:>12}");
    for (key, what, target) in
        [("crashes", "kill -9 → alert line read", "p99 < 2 ms"), ("bloats", "RSS crosses 64 MiB → alert", "")]
    {
        let (i, mo) = (&r[key]["inspeq"], &r[key]["monit"]);
        let n = format!("{} ({}/{} seen)", what, i["n"], mo["n"]);
        row(&n, String::new(), String::new(), "");
        for q in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            row(
                &format!("  {}", q.trim_end_matches("_ms")),
                ms(&i[q]),
                ms(&mo[q]),
                if q == "p99_ms" { target } else { "" },
            );
        }
        row("  missed", i["missed"].to_string(), mo["missed"].to_string(), "0");
    }
    let logged = &r["crashes"]["inspeq_exit_logged"];
    row(
        "kill -9 → inspeqd logs the exit (before the outbox), p50/p99",
        format!("{} / {}", ms(&logged["p50_ms"]), ms(&logged["p99_ms"])),
        String::new(),
        "",
    );
    row("kill -9 → each stage in inspeqd (--timing), p50/p99/max", String::new(), String::new(), "");
    for stage in r["crashes"]["inspeq_stages"].as_array().into_iter().flatten() {
        let s = &stage["summary"];
        row(
            &format!("  {} ({}/{})", stage["what"].as_str().unwrap_or(""), s["n"], r["crashes"]["kills"]),
            format!("{} / {} / {}", ms(&s["p50_ms"]), ms(&s["p99_ms"]), ms(&s["max_ms"])),
            String::new(),
            if stage["stage"] == "alert_accepted" || stage["stage"] == "restart_decided" { "p99 < 2 ms" } else { "" },
        );
    }
    for w in r["idle"].as_array().into_iter().flatten() {
        let (i, mo) = (&w["inspeq"], &w["monit"]);
        row(
            &format!(
                "{} ({:.0} s, {} host procs)",
                w["label"].as_str().unwrap_or(""),
                w["secs"].as_f64().unwrap_or(0.0),
                w["host_processes"]
            ),
            String::new(),
            String::new(),
            "",
        );
        let pct = |v: &Value| format!("{:.3} %", v["cpu_pct"].as_f64().unwrap_or(f64::NAN));
        row("  CPU, whole tree (% of a core)", pct(i), pct(mo), "≥ 10× less");
        row(
            "  CPU seconds (cgroup) / (proc stat)",
            format!(
                "{:.3}/{:.2}",
                i["cpu_secs"].as_f64().unwrap_or(0.0),
                i["proc_stat_cpu_secs"].as_f64().unwrap_or(0.0)
            ),
            format!(
                "{:.3}/{:.2}",
                mo["cpu_secs"].as_f64().unwrap_or(0.0),
                mo["proc_stat_cpu_secs"].as_f64().unwrap_or(0.0)
            ),
            "",
        );
        row(
            "  Monit CPU ÷ inspeq CPU",
            format!("{:.1}×", w["cpu_ratio"].as_f64().unwrap_or(f64::NAN)),
            String::new(),
            "≥ 10×",
        );
        let mib = |v: &Value| format!("{:.1} MiB", v["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0);
        row("  RSS (VmRSS)", mib(i), mib(mo), "≤ Monit");
        row("  processes spawned", i["forks"].to_string(), mo["forks"].to_string(), "0");
    }
}
