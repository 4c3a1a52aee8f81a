//! `inspeqd`: the inspeq daemon's command line. Parses arguments and hands over
//! to the library.

use clap::{Parser, Subcommand};
use inspeq_daemon::{logging, trace};

#[derive(Parser)]
#[command(name = "inspeqd", version, about = "inspeq: event-driven service monitoring")]
struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch a cgroup or process tree and print what the kernel reports, live.
    Trace(trace::TraceArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_level);
    // One thread: the daemon's work is I/O-bound and a single reader keeps the
    // wakeup path short.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::Trace(args) => runtime.block_on(trace::run(args)),
    }
}
