//! Installs what building and testing inspeq need and a fresh machine lacks, and
//! says what it installs: `rust-src` (the eBPF crate builds `core` itself),
//! `rustfmt` and `clippy` (the test command's first gate),
//! `bpf-linker`, the Debian packages the tests use, and a mounted tracefs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::command::{self, is_root, output, succeeds};

/// bpf-linker's version: its LLVM (22) must match the Rust toolchain's, and newer
/// releases need LLVM 23 (see docs/toolchain in the README).
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the test suite needs (binaries the tests run for real).
const APT_PACKAGES: &[(&str, &str)] = &[
    // The alert tests' SMTP server (tests/fixtures/smtp_recorder.py runs it with
    // Debian's /usr/bin/python3), their Alertmanager, and the CLI that makes
    // their test CA and checks webhook signatures.
    ("python3-aiosmtpd", "/usr/lib/python3/dist-packages/aiosmtpd/__init__.py"),
    ("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager"),
    ("openssl", "/usr/bin/openssl"),
    // The init tests (tests/tests/init.rs): a systemd user manager with the user
    // bus its stock dbus.socket starts, and runit.
    ("systemd", "/lib/systemd/systemd"),
    ("dbus-daemon", "/usr/bin/dbus-daemon"),
    ("dbus-user-session", "/usr/lib/systemd/user/dbus.socket"),
    ("runit", "/usr/bin/runsvdir"),
    // The metrics test: a real Prometheus scrapes inspeqd's /metrics.
    ("prometheus", "/usr/bin/prometheus"),
    // The apps tests (tests/tests/apps.rs): the real Puma, Sidekiq and Redis as
    // user units, and Rack for the test app (no binary of its own but rackup).
    // The tests run their own Redis on a free port; the test VMs' policy-rc.d
    // (exit 101) keeps redis-server's postinst from starting one on the host.
    ("puma", "/usr/bin/puma"),
    ("ruby-sidekiq", "/usr/bin/sidekiq"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-cli"),
    ("ruby-rack", "/usr/bin/rackup"),
    // The daemon-metric tests (tests/tests/daemons.rs): the real servers whose
    // stats inspeq collects (Redis is above). Started by the tests on free
    // loopback ports, so a copy a postinst starts on its default port is no
    // matter.
    ("memcached", "/usr/bin/memcached"),
    ("nginx-light", "/usr/sbin/nginx"),
    // A real Go program serving expvar's /debug/vars, for memstats:*.
    ("etcd-server", "/usr/bin/etcd"),
    // MariaDB and PostgreSQL for mysql:* and postgresql:*, with their clients for the tests' load.
    ("mariadb-server", "/usr/sbin/mariadbd"),
    ("mariadb-client", "/usr/bin/mariadb"),
    ("postgresql", "/usr/bin/psql"),
];

pub fn run() -> anyhow::Result<()> {
    cargo_bin_on_path();
    rust_src()?;
    lint_tools()?;
    bpf_linker()?;
    apt_packages()?;
    tracefs();
    eprintln!("xtask: setup complete");
    Ok(())
}

/// The toolchain cargo builds with (the eBPF build uses the same one).
fn toolchain_sysroot() -> anyhow::Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Ok(output(Command::new(rustc).args(["--print", "sysroot"]))
        .context("running rustc --print sysroot")?
        .trim()
        .to_owned())
}

fn rust_src() -> anyhow::Result<()> {
    let sysroot = toolchain_sysroot()?;
    let src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if src.exists() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src (the eBPF crate builds `core` for the BPF target)");
    if succeeds(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "stable"])) && src.exists()
    {
        return Ok(());
    }
    // rustup could not download it: use the copy kept beside the repository, if
    // it matches this compiler.
    let copy = command::workspace_root().join("../shared/toolchain/rust-src-1.95.0.tar.xz");
    let version = output(Command::new("rustc").arg("--version")).unwrap_or_default();
    if copy.exists() && version.starts_with("rustc 1.95.0") {
        eprintln!("xtask: rustup could not add rust-src; unpacking {}", copy.display());
        command::run(
            Command::new("tar").arg("-xJf").arg(&copy).arg("-C").arg(Path::new(&sysroot).join("lib/rustlib")),
        )?;
        if src.exists() {
            return Ok(());
        }
    }
    bail!("rust-src is missing and could not be installed: run `rustup component add rust-src --toolchain stable`")
}

/// rustfmt and clippy, which `cargo xtask test` runs before any test.
fn lint_tools() -> anyhow::Result<()> {
    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if succeeds(command::cargo().args([probe, "--version"])) {
            continue;
        }
        eprintln!("xtask: installing {component} (cargo xtask test checks formatting and lints first)");
        if !succeeds(Command::new("rustup").args(["component", "add", component, "--toolchain", "stable"])) {
            bail!("{component} is missing and could not be installed: run `rustup component add {component}`");
        }
    }
    Ok(())
}

/// `cargo install`'s directory.
fn cargo_bin() -> PathBuf {
    std::env::var("CARGO_HOME")
        .map(|h| Path::new(&h).join("bin"))
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo/bin"))
}

/// Puts `cargo install`'s directory on PATH for every command xtask starts: the
/// eBPF build finds bpf-linker there, also on machines whose PATH lacks it.
fn cargo_bin_on_path() {
    let dir = cargo_bin();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == dir) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: xtask is single-threaded while it sets up.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

fn bpf_linker() -> anyhow::Result<()> {
    let installed = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if installed.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (links the eBPF object; about a minute)");
    command::run(Command::new("cargo").args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"]))
}

fn apt_packages() -> anyhow::Result<()> {
    install_missing(APT_PACKAGES)
}

/// Installs those of `packages` (name, a file it installs) whose file is missing;
/// benchmarks use it for their own packages too.
pub fn install_missing(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> =
        packages.iter().filter(|(_, binary)| !Path::new(binary).exists()).map(|(package, _)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!("xtask: not root; skipping apt packages {missing:?} (the tests that need them will say so)");
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    command::run(Command::new("apt-get").arg("update").arg("-q"))?;
    command::run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing))
}

fn tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir() || !is_root() {
        return;
    }
    eprintln!("xtask: mounting tracefs at /sys/kernel/tracing (tracepoints are found through it)");
    if let Err(e) = command::run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])) {
        eprintln!("xtask: warning: {e:#}");
    }
}
