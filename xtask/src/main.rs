//! `cargo xtask`: what cargo alone cannot do for inspeq. Each subcommand first
//! installs what is missing (`setup`), then builds with cargo.
//!
//! - `setup`: rust-src, bpf-linker, apt packages the tests need, tracefs.
//! - `demo`: the README's first command — inspeq on a bundled example workload.
//! - `test`: the README's second command — the whole test suite (what CI runs).
//! - `bench kernel`: the kernel pipeline's latency, throughput and cost.
//! - `bench e2e`: inspeqd against Monit on a systemd user manager's services.
//! - `kernels`: the kernel tests on Debian's 5.10, 6.1, 6.12 and newest kernels in
//!   qemu and on this machine's kernel, as one table.
//! - `install`, `deb`: install inspeq like a Linux daemon, or package it.

mod bench;
mod command;
mod demo;
mod install;
mod kernels;
mod libtest;
mod setup;
mod systemd;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need and is missing.
    Setup,
    /// Build inspeq and run it on the bundled example workload.
    Demo,
    /// Run the whole test suite, privileged tests included.
    Test {
        /// Extra arguments for the test binaries (a name filter, --nocapture, ...).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Install inspeqd, inspeqctl, the systemd unit, man pages, completions and /etc/inspeq.
    Install {
        #[command(flatten)]
        layout: install::Layout,
    },
    /// Build a Debian package (target/debian/inspeq_VERSION_ARCH.deb) that installs the same and enables the service.
    Deb {
        /// Take the binaries from this directory instead of building them (release).
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
    /// Run the kernel tests on Debian's kernels in qemu and on this machine's kernel;
    /// print one table and write target/bench/kernels.json.
    Kernels {
        #[command(flatten)]
        options: kernels::Options,
    },
    /// Run a benchmark, print its table and write target/bench/NAME.json.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Demo => demo::run(),
        Command::Test { args } => test::run(&args),
        Command::Kernels { options } => kernels::run(&options),
        Command::Bench { which } => bench::run(which),
        Command::Install { layout } => install::install(&layout),
        Command::Deb { from } => install::deb(from).map(|_| ()),
    }
}
