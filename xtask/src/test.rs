//! `cargo xtask test`: the whole suite, as CI runs it. First the habits: `cargo fmt
//! --check` and clippy with `-D warnings` (the eBPF crate for its own target too).
//! Builds every binary (the integration tests start the real `inspeqd`), then runs all tests of the
//! workspace, one test at a time: the kernel tests share kernel state (tracepoints,
//! cgroups) and their figures are steadier alone. Then the kernel tests once more
//! on Debian's kernels in qemu (`cargo xtask kernels`; this machine's kernel has
//! just run them). Ends with one `summary:` line adding up every test binary's
//! result and each kernel × case of the matrix. A test that returned early because
//! it cannot run here (it printed `skipped NAME: reason`, see `tests::skipped`) is
//! counted as skipped, not passed.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::{
    command::{self, cargo, describe, is_root},
    kernels,
    libtest::{self, Outcome},
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !is_root() {
        eprintln!("xtask: not root: the kernel tests will skip (they fail instead when CI is set)");
    }
    lints()?;
    command::run(cargo().args(["build", "--workspace", "--exclude", "inspeq-ebpf", "--bins"]))?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "inspeq-ebpf", "--lib", "--bins", "--tests", "--no-fail-fast"])
        // `--show-output`: a skipped test's `skipped NAME: reason` line is in its captured output.
        .args(["--", "--test-threads=1", "--show-output"])
        .args(args)
        .stdout(Stdio::piped());
    eprintln!("xtask: running {}", describe(&test));
    let mut child = test.spawn().context("starting cargo test")?;
    let mut count = Count::default();
    let mut binary: Vec<String> = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        writeln!(stdout, "{line}")?;
        // Each test binary's output starts with `running N tests`: its names are its own.
        if line.starts_with("running ") && !binary.is_empty() {
            count.add(&std::mem::take(&mut binary));
        }
        binary.push(line);
    }
    count.add(&binary);
    let status = child.wait()?;
    drop(stdout);
    let Count { mut passed, mut failed, mut skipped } = count;
    let matrix = kernel_matrix(args);
    if let Ok(summary) = &matrix {
        passed += summary.passed;
        failed += summary.failed;
        skipped += summary.skipped;
    }
    writeln!(std::io::stdout(), "summary: {passed} passed, {failed} failed, {skipped} skipped")?;
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    let matrix = matrix.context("the kernel matrix could not run")?;
    if matrix.failed > 0 {
        bail!("the kernel matrix failed: {} kernel × case results", matrix.failed);
    }
    Ok(())
}

/// Formatting and lints, before anything is built for testing: a warning fails
/// CI like a failed test. The fuzzers are their own workspace; the eBPF crate only
/// builds for the BPF target (with `core` built from source, as its build does).
fn lints() -> anyhow::Result<()> {
    command::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    command::run(cargo().args(["fmt", "--manifest-path", "inspeq-daemon/fuzz/Cargo.toml", "--", "--check"]))?;
    command::run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "inspeq-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let target_dir = command::workspace_root().join("target/bpf-clippy");
    command::run(
        cargo()
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["clippy", "-p", "inspeq-ebpf", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(target_dir)
            .args(["--", "-D", "warnings"]),
    )
}

/// Results of the host's test binaries, by how each case ended.
#[derive(Default)]
struct Count {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl Count {
    /// Adds one test binary's cases (its plain output, from `running N tests`).
    /// A binary whose summary line reports more failures than cases it named
    /// failing (output it could not read) counts those too: a failure is never lost.
    fn add(&mut self, lines: &[String]) {
        let results = libtest::parse(lines);
        let mut failed = 0;
        for outcome in results.values() {
            match outcome {
                Outcome::Pass => self.passed += 1,
                Outcome::Skip(_) => self.skipped += 1,
                Outcome::Fail(_) => failed += 1,
            }
        }
        let reported = lines
            .iter()
            .filter_map(|l| l.strip_prefix("test result: "))
            .flat_map(|r| r.split([';', '.']))
            .filter_map(|part| part.trim().strip_suffix(" failed").and_then(|n| n.parse::<u64>().ok()))
            .sum::<u64>();
        self.failed += failed.max(reported);
    }
}

/// The kernel matrix on the Debian kernels (not this machine's: the suite above
/// ran those tests here). It needs root for apt; without root it skips, each
/// kernel × case counted as skipped, and fails instead under CI, like the other
/// privileged tests. Test-name filters among `args` select its cases too.
fn kernel_matrix(args: &[String]) -> anyhow::Result<kernels::Summary> {
    let suites = kernels::SUITES.iter().map(|(suite, _)| (*suite).to_owned()).collect();
    let options = kernels::Options {
        kernels: suites,
        cases: args.iter().filter(|a| !a.starts_with('-')).cloned().collect(),
        ..kernels::Options::default()
    };
    if is_root() {
        return kernels::matrix(&options);
    }
    if std::env::var_os("CI").is_some() {
        bail!("the kernel matrix cannot run under CI: not root");
    }
    let cases = kernels::cases(&options)?;
    eprintln!("skipped the kernel matrix: not root ({} kernels × {} cases)", kernels::SUITES.len(), cases);
    Ok(kernels::Summary { skipped: (kernels::SUITES.len() * cases) as u64, ..kernels::Summary::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    /// A privileged test that returned early passes as far as libtest knows: its
    /// own `skipped NAME: reason` line makes it a skip in the summary.
    #[test]
    fn a_test_that_said_it_skipped_is_counted_as_skipped_not_passed() {
        let mut count = Count::default();
        count.add(&binary(
            "running 3 tests
test kernel_exit_is_seen ... ok
test alert_goes_out ... ok
test old_kernel ... ignored

successes:

---- kernel_exit_is_seen stdout ----
skipped kernel_exit_is_seen: not root (needs root and a BPF-capable kernel)

successes:
    alert_goes_out
    kernel_exit_is_seen

test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        ));
        assert_eq!((count.passed, count.failed, count.skipped), (1, 0, 2));
    }

    #[test]
    fn a_failure_the_output_does_not_name_is_still_counted() {
        let mut count = Count::default();
        count.add(&binary("running 1 test\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured"));
        assert_eq!((count.passed, count.failed, count.skipped), (0, 1, 0));
    }
}
