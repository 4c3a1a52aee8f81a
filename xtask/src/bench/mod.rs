//! `cargo xtask bench NAME`: benchmarks that print a table and write
//! `target/bench/NAME.json`. Figures are measured, never asserted: a benchmark
//! reports misses against its targets, it does not fail on them.

mod e2e;
mod kernel;
mod serving;

use std::path::PathBuf;

use crate::command::workspace_root;

#[derive(clap::Subcommand)]
pub enum Which {
    /// Exit → observation latency, fork/exit storms, daemon CPU, RSS and start-up.
    Kernel {
        /// Exits to time (at least 500 for the reported percentiles).
        #[arg(long, default_value_t = 1000)]
        exits: u32,
        /// Seconds per storm run.
        #[arg(long, default_value_t = 3)]
        storm_secs: u32,
        /// Interleaved storm rounds (no daemon, watched, unwatched); medians are reported.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// inspeqd against Monit on a systemd user manager's services: kill -9 → alert,
    /// idle CPU/RSS/forks, memory bloat → alert.
    E2e {
        #[command(flatten)]
        options: e2e::Options,
    },
    /// How fast a service that stops serving is seen: a listener's close → alert, a first queued connection →
    /// the accept-queue alert; and the probes' CPU per probe per cycle.
    Serving {
        #[command(flatten)]
        options: serving::Options,
    },
}

pub fn run(which: Which) -> anyhow::Result<()> {
    crate::setup::run()?;
    match which {
        Which::Kernel { exits, storm_secs, rounds } => kernel::run(exits, storm_secs, rounds),
        Which::E2e { options } => e2e::run(&options),
        Which::Serving { options } => serving::run(&options),
    }
}

/// Where a benchmark writes its JSON.
fn output_path(name: &str) -> PathBuf {
    workspace_root().join("target/bench").join(format!("{name}.json"))
}

/// Writes `report` to `target/bench/NAME.json`, prints it with `table`, and says where it went.
fn write_report(name: &str, report: &serde_json::Value, table: fn(&serde_json::Value)) -> anyhow::Result<()> {
    let path = output_path(name);
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    std::fs::write(&path, serde_json::to_string_pretty(report)?)?;
    table(report);
    println!("\nwritten to {}", path.display());
    Ok(())
}

/// A figure for a table: whole above 100, two decimals below, `-` for none.
fn figure(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

/// The `q` quantile (0..=1) of sorted `values`, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A description of the machine, written beside the figures.
fn machine() -> serde_json::Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    serde_json::json!({
        "kernel": kernel.trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
    })
}
