//! `inspeqd`: the inspeq daemon's command line. Parses arguments and hands over
//! to the library: `inspeqd [OPTIONS]` runs the daemon, `inspeqd trace` prints
//! what the kernel side sees.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use inspeq_daemon::{control::server, daemon, kernel, logging, trace};

#[derive(Parser)]
#[command(name = "inspeqd", version, about = "inspeq: event-driven service monitoring")]
struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing_subscriber::filter::LevelFilter,
    /// The configuration directory (inspeq.conf, host.inq, services.d/, jobs.d/).
    #[arg(long, default_value = "/etc/inspeq")]
    config_dir: PathBuf,
    /// The control socket [default: `set socket` in inspeq.conf, else /run/inspeq.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The group that may use the control socket (it is created mode 0660).
    #[arg(long)]
    socket_group: Option<String>,
    /// Control connections served at once; one more is answered "busy" and closed.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    control_connections: u32,
    /// Seconds a control client may take to send its request and to take the answer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    control_timeout: u64,
    /// Durable state, such as the alert outbox [default: `set state_dir`, else /var/lib/inspeq].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Do not use eBPF: the netlink process connector, else pidfds, else /proc polling.
    #[arg(long)]
    no_ebpf: bool,
    /// Do not use the process connector (with --no-ebpf: pidfds, else /proc polling).
    #[arg(long)]
    no_proc_connector: bool,
    /// Do not use pidfds (with --no-ebpf --no-proc-connector: /proc polling every cycle).
    #[arg(long)]
    no_pidfd: bool,
    /// Log a `timing:` line (CLOCK_MONOTONIC µs) at each stage of an exit's way to its alert: for benchmarks.
    #[arg(long)]
    timing: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Watch a cgroup or process tree and print what the kernel reports, live.
    Trace(trace::TraceArgs),
    /// Write the man page and shell completions below DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the cause chain on one line; rendered diagnostics keep their lines.
            eprintln!("inspeqd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Lives to the end of `run`, so the last lines (`inspeqd stopping`) are written.
    let _log = logging::init(cli.log_level);
    if cli.timing {
        inspeq_daemon::timing::enable();
    }
    // One thread: the daemon's work is I/O-bound and a single reader keeps the
    // wakeup path short.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Some(Command::Trace(args)) => runtime.block_on(trace::run(args)),
        Some(Command::GenerateAssets { dir }) => {
            Ok(inspeq_daemon::assets::generate(<Cli as clap::CommandFactory>::command(), "8", &dir)?)
        }
        None => {
            let options = daemon::Options {
                config_dir: cli.config_dir,
                socket: cli.socket,
                state_dir: cli.state_dir,
                socket_group: cli.socket_group,
                control: server::Limits {
                    max_connections: cli.control_connections as usize,
                    idle_timeout: std::time::Duration::from_secs(cli.control_timeout),
                },
                kernel: kernel::Options {
                    force_fallback: cli.no_ebpf,
                    no_proc_connector: cli.no_proc_connector,
                    no_pidfd: cli.no_pidfd,
                    ..kernel::Options::default()
                },
                ..daemon::Options::default()
            };
            runtime.block_on(daemon::run(options, std::future::pending()))
        }
    }
}
