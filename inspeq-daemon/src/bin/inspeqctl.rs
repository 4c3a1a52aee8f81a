//! `inspeqctl`: talks to a running `inspeqd` over its control socket, and checks
//! configuration directories without one. Parsing arguments is all it does
//! before handing over to the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use inspeq_daemon::{
    config,
    control::{
        client,
        protocol::{Request, Response, RuleStatus, Status},
    },
};

#[derive(Parser)]
#[command(name = "inspeqctl", version, about = "Control a running inspeqd, or check its configuration")]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, default_value = "/run/inspeq.sock")]
    socket: PathBuf,
    /// Seconds to wait for the daemon's answer [default: 30; 300 for test-alert, which waits on every route].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Services, rules, jobs and the kernel path's health.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Everything `status` has, with the latest metric values, as JSON.
    Export,
    /// `start deploy`: silence alerts and actions for `deploy_length`.
    Start {
        #[arg(value_parser = ["deploy"])]
        what: String,
    },
    /// `finish deploy`: end the silence (one grace cycle follows).
    Finish {
        #[arg(value_parser = ["deploy"])]
        what: String,
    },
    /// The recent values of one metric: min, max, average and a sparkline.
    Show {
        /// `host` or a service name.
        target: String,
        /// A metric, e.g. `memory:rss` or `load:1`.
        metric: String,
    },
    /// Record that a job ran.
    #[command(name = "job_done", alias = "job-done")]
    JobDone { job: String },
    /// Reload the daemon's configuration (as SIGHUP does).
    Reload,
    /// Send a test alert through every route, or through ROUTE alone.
    TestAlert { route: Option<String> },
    /// Act on an unmonitored service again.
    Remonitor { service: String },
    /// Write the man page and shell completions below DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
    /// Check a configuration directory and print every problem, compiler-style.
    Check {
        #[arg(default_value = "/etc/inspeq")]
        dir: PathBuf,
    },
}

/// `  [ok] memory:rss > 64m — 12.1m`: the rule, its state and its value (or why it has none).
fn print_rule(rule: &RuleStatus) {
    if rule.value_text.is_empty() {
        // A daemon from before rules had values.
        println!("  [{}] {}", rule.state, rule.rule);
    } else {
        println!("  [{}] {} — {}", rule.state, rule.rule, rule.value_text);
    }
}

fn print_status(status: &Status) {
    println!(
        "{} — inspeq {} — up {}s, cycle {}s",
        status.hostname, status.version, status.uptime_secs, status.cycle_secs
    );
    if let Some(secs) = status.silenced_for_secs {
        println!("deploy in progress: alerts and actions silenced for {secs}s more");
    }
    let k = &status.kernel;
    let tier = match k.mode.as_str() {
        "ebpf" => "eBPF",
        "proc_connector" => "netlink process connector",
        "pidfd" => "pidfds and /proc scans",
        "proc" => "/proc polling",
        other => other,
    };
    println!(
        "kernel: {tier}, {} observations; records emitted (exit/fork/rss) {:?}, dropped {:?}",
        k.observations, k.emitted, k.dropped
    );
    if let Some(reason) = &k.fallback_reason {
        println!("kernel: not eBPF: {reason}");
    }
    if !k.blind_spots.is_empty() {
        println!("kernel: this tier cannot see: {}", k.blind_spots.join("; "));
    }
    if !k.missing_tracepoints.is_empty() {
        println!("kernel: not attached: {}", k.missing_tracepoints.join(", "));
    }
    let a = &status.alerts;
    println!(
        "alerts: {} raised, {} delivered, {} pending, {} failed attempts",
        a.raised, a.delivered, a.pending, a.failed_attempts
    );
    if a.unpersisted > 0 {
        println!("alerts: {} could not be written to the outbox (they would not survive a restart)", a.unpersisted);
    }
    if a.unreadable > 0 {
        println!(
            "alerts: {} outbox record(s) could not be read back at start (see the log; damaged bytes kept as .bad)",
            a.unreadable
        );
    }
    if status.log.dropped_lines > 0 {
        println!("log: {} line(s) dropped because standard error was not being read", status.log.dropped_lines);
    }
    if !status.host.is_empty() {
        println!("\nhost");
        print_probes(&status.host_probes);
        for rule in &status.host {
            print_rule(rule);
        }
    }
    for s in &status.services {
        let pid = s.pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "no pid".into());
        let how = s.watched_by.as_deref().map(|w| format!(", watched by {w}")).unwrap_or_default();
        let workers = match s.workers.crashed {
            0 => String::new(),
            n => format!(", {n} worker(s) died ({} OOM-killed)", s.workers.oom_killed),
        };
        println!(
            "\n{} ({}) {} {pid}, {} process(es), {} restart(s){workers}{how}",
            s.name,
            if s.init.is_empty() { "?" } else { &s.init },
            s.state,
            s.processes,
            s.restarts
        );
        if let Some(w) = &s.wrapper {
            println!("  note: the main pid is a wrapper ({w}); the whole tree/cgroup is watched");
        }
        for c in &s.collections {
            let when = |secs: Option<u64>| secs.map_or_else(|| "never".to_owned(), |s| format!("{s}s ago"));
            match &c.error {
                None => println!("  {} at {}: collected {}", c.family, c.address, when(c.last_success_secs_ago)),
                Some(error) => println!(
                    "  {} at {}: unreachable: {error} (last answered {})",
                    c.family,
                    c.address,
                    when(c.last_success_secs_ago)
                ),
            }
        }
        print_probes(&s.probes);
        for l in &s.listeners {
            println!("  listening on {}: {} waiting for accept (backlog {})", l.address, l.accept_queue, l.backlog);
        }
        for rule in &s.rules {
            print_rule(rule);
        }
    }
    for j in &status.jobs {
        println!("\njob {} every {}s{}", j.name, j.every_secs, if j.overdue { " OVERDUE" } else { "" });
    }
}

/// `  http http://127.0.0.1:8080/health: answered in 3.1 ms 0s ago`, or why it fails.
fn print_probes(probes: &[inspeq_daemon::control::protocol::ProbeStatus]) {
    let when = |secs: Option<u64>| secs.map_or_else(|| "never".to_owned(), |s| format!("{s}s ago"));
    for p in probes {
        match (&p.error, p.last_time_ms) {
            (Some(error), _) => {
                println!("  {}: fails: {error} (last answered {})", p.probe, when(p.last_success_secs_ago))
            }
            (None, Some(ms)) => println!("  {}: answered in {ms:.1} ms {}", p.probe, when(p.last_success_secs_ago)),
            (None, None) => println!("  {}: not probed yet", p.probe),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let request = match cli.command {
        Command::GenerateAssets { dir } => {
            return match inspeq_daemon::assets::generate(<Cli as clap::CommandFactory>::command(), "1", &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("inspeqctl: writing assets to {}: {err}", dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        Command::Check { dir } => {
            let (_, diagnostics) = config::load_dir(&dir);
            if diagnostics.is_empty() {
                println!("{}: ok", dir.display());
                return ExitCode::SUCCESS;
            }
            print!("{}", config::render(&diagnostics));
            return if diagnostics.iter().any(config::Diagnostic::is_error) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Command::Status { json: false } => Request::Status,
        Command::Status { json: true } | Command::Export => Request::Export,
        Command::Start { .. } => Request::StartDeploy,
        Command::Finish { .. } => Request::FinishDeploy,
        Command::Show { target, metric } => Request::Show { target, metric },
        Command::JobDone { job } => Request::JobDone { job },
        Command::Reload => Request::Reload,
        Command::TestAlert { route } => Request::TestAlert { route },
        Command::Remonitor { service } => Request::Remonitor { service },
    };
    let json = matches!(request, Request::Export);
    // The daemon gives each route 15 s in a test; other requests are answered from memory.
    let default_timeout = if matches!(request, Request::TestAlert { .. }) { 300 } else { 30 };
    let timeout = Duration::from_secs(cli.timeout.unwrap_or(default_timeout));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(err) => {
            eprintln!("inspeqctl: {err}");
            return ExitCode::FAILURE;
        }
    };
    let response = match runtime.block_on(client::send(&cli.socket, request, timeout)) {
        Ok(r) => r,
        Err(err) => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("inspeqctl: {text}");
            return ExitCode::FAILURE;
        }
    };
    match response {
        Response::Ok { message } => println!("{message}"),
        Response::Status(status) if json => println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default()),
        Response::Status(status) => print_status(&status),
        Response::Show(show) => {
            if show.values.is_empty() {
                println!("{} {}: no values yet", show.target, show.metric);
            } else {
                let (min, max, avg) = (show.min.unwrap_or(0.0), show.max.unwrap_or(0.0), show.avg.unwrap_or(0.0));
                println!(
                    "{} {}  min {}  max {}  avg {}",
                    show.target,
                    show.metric,
                    show.format(min),
                    show.format(max),
                    show.format(avg)
                );
                println!("{}", show.sparkline());
            }
        }
        Response::TestAlert { routes } => {
            let mut failed = false;
            for r in routes {
                match r.error {
                    None => println!("{} ({}): sent", r.route, r.channel),
                    Some(e) => {
                        failed = true;
                        println!("{} ({}): FAILED: {e}", r.route, r.channel);
                    }
                }
            }
            if failed {
                return ExitCode::FAILURE;
            }
        }
        Response::Error { message } => {
            eprintln!("inspeqctl: {message}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
