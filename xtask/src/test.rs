//! `cargo xtask test`: the whole suite, as CI runs it. Builds every binary first
//! (the integration tests start the real `inspeqd`), then runs all tests of the
//! workspace, one test at a time: the kernel tests share kernel state (tracepoints,
//! cgroups) and their figures are steadier alone. Then the kernel tests once more
//! on Debian's kernels in qemu (`cargo xtask kernels`; this machine's kernel has
//! just run them). Ends with one `summary:` line adding up every test binary's
//! result and each kernel × case of the matrix.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::{
    command::{self, cargo, describe, is_root},
    kernels,
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !is_root() {
        eprintln!("xtask: not root: the kernel tests will skip (they fail instead when CI is set)");
    }
    command::run(cargo().args(["build", "--workspace", "--exclude", "inspeq-ebpf", "--bins"]))?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "inspeq-ebpf", "--lib", "--bins", "--tests", "--no-fail-fast"])
        .args(["--", "--test-threads=1"])
        .args(args)
        .stdout(Stdio::piped());
    eprintln!("xtask: running {}", describe(&test));
    let mut child = test.spawn().context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        writeln!(stdout, "{line}")?;
        if let Some(result) = line.strip_prefix("test result: ") {
            // "ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 5.64s"
            for part in result.split([';', '.']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    drop(stdout);
    let matrix = kernel_matrix(args);
    if let Ok(summary) = &matrix {
        passed += summary.passed;
        failed += summary.failed;
        ignored += summary.skipped;
    }
    writeln!(std::io::stdout(), "summary: {passed} passed, {failed} failed, {ignored} skipped")?;
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    let matrix = matrix.context("the kernel matrix could not run")?;
    if matrix.failed > 0 {
        bail!("the kernel matrix failed: {} kernel × case results", matrix.failed);
    }
    Ok(())
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
