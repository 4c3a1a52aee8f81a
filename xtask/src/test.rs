//! `cargo xtask test`: the whole suite, as CI runs it. Builds every binary first
//! (the integration tests start the real `inspeqd`), then runs all tests of the
//! workspace, one test at a time: the kernel tests share kernel state (tracepoints,
//! cgroups) and their figures are steadier alone. Ends with one `summary:` line
//! adding up every test binary's result.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::command::{self, cargo, describe, is_root};

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
    writeln!(stdout, "summary: {passed} passed, {failed} failed, {ignored} skipped")?;
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}
