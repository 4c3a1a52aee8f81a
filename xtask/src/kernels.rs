//! `cargo xtask kernels`: the kernel tests (`tests/tests/kernel.rs`) on the kernels
//! production runs — Debian's cloud kernels of bullseye (5.10), bookworm (6.1),
//! trixie (6.12) and sid (the newest), each booted in qemu — and on this machine's
//! own kernel. Prints one table (cases × kernels: pass, FAIL, skip) and which mode
//! loaded on each kernel, writes `target/bench/kernels.json`, and fails when a case
//! failed anywhere or a kernel did not boot. `--shell-cmd` runs a command in the
//! guests instead, for debugging.
//!
//! Kernels are cached in `target/kernels/<suite>/`, the initramfs is rebuilt only
//! when its inputs change, so a second run goes straight to booting.

mod console;
mod cpio;
mod debian;
mod initramfs;
mod qemu;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::command::{self, cargo, describe, is_root, workspace_root};
use crate::libtest::{self, Outcome};
pub use debian::SUITES;

/// The row of this machine's kernel.
const HOST: &str = "host";

/// What the matrix needs from Debian (name, a file it installs).
const PACKAGES: &[(&str, &str)] =
    &[("qemu-system-x86", "/usr/bin/qemu-system-x86_64"), ("busybox-static", "/bin/busybox")];

#[derive(clap::Args)]
pub struct Options {
    /// A kernel to run on: bullseye, bookworm, trixie, sid, or `host` (this machine's
    /// kernel); repeat for several. Default: all of them.
    #[arg(long = "kernel", value_name = "SUITE")]
    pub kernels: Vec<String>,
    /// Only the cases whose name contains FILTER (libtest's filter); repeatable.
    #[arg(long = "case", value_name = "FILTER")]
    pub cases: Vec<String>,
    /// Run this shell command (busybox sh) in each guest instead of the tests and
    /// print its output. `$INSPEQ_TESTS`, `$INSPEQD` and `$INSPEQ_WORKLOAD` name the
    /// binaries, e.g. `--shell-cmd '$INSPEQD trace --cgroup /sys/fs/cgroup --duration 1'`.
    #[arg(long, value_name = "COMMAND")]
    pub shell_cmd: Option<String>,
    /// Seconds a guest may run before it is killed. Default: 30 per case, at least 300 (a guest
    /// under TCG runs the 19 cases in 150-230 s, more on a loaded machine: a fixed 300 was
    /// once outrun by a healthy guest two cases before the end).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// The guest's memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Ask the archive for newer kernels than the cached ones.
    #[arg(long)]
    pub refresh: bool,
}

impl Options {
    /// How long a guest (or the host run) of `cases` cases may take.
    fn timeout_for(&self, cases: usize) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or_else(|| (30 * cases as u64).max(300)))
    }
}

impl Default for Options {
    /// What `cargo xtask kernels` runs with no options.
    fn default() -> Self {
        Self { kernels: Vec::new(), cases: Vec::new(), shell_cmd: None, timeout: None, memory: 1024, refresh: false }
    }
}

/// The matrix's count, each kernel × case one test.
#[derive(Default)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// `cargo xtask kernels`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let summary = matrix(options)?;
    if summary.failed > 0 {
        bail!("{} kernel × case results failed", summary.failed);
    }
    Ok(())
}

/// Runs the matrix (setup done) and prints its table; `cargo xtask test` adds the
/// summary to its own.
pub fn matrix(options: &Options) -> anyhow::Result<Summary> {
    let kernels = selected(&options.kernels)?;
    crate::setup::install_missing(PACKAGES)?;
    for (package, file) in PACKAGES {
        if !Path::new(file).exists() {
            bail!("{file} is missing: install {package} (as root, cargo xtask kernels does)");
        }
    }
    let binaries = build()?;
    let cases = list_cases(&binaries.tests, &options.cases)?;
    if options.shell_cmd.is_none() && cases.is_empty() {
        eprintln!("xtask: no kernel test case matches {:?}", options.cases);
        return Ok(Summary::default());
    }
    let root = workspace_root().join("target/kernels");
    let guests: Vec<&str> = kernels.iter().copied().filter(|k| *k != HOST).collect();
    let mut fetched = Vec::new();
    for suite in &guests {
        fetched.push(debian::kernel(&root.join(suite), suite, options.refresh)?);
    }
    let initrd = root.join("initrd.cpio");
    if !guests.is_empty() {
        let base = initramfs::base(&root, &[&binaries.tests, &binaries.workload, &binaries.inspeqd])?;
        let modules: Vec<&(String, Vec<PathBuf>)> = fetched.iter().filter_map(|k| k.modules.as_ref()).collect();
        initramfs::with_job(&base, &guest_job(options, &binaries), &modules, &initrd)?;
    }
    let timeout = options.timeout_for(cases.len());
    let settings = qemu::Settings { memory_mib: options.memory, timeout };
    let mut rows = Vec::new();
    for name in &kernels {
        let row = if *name == HOST {
            on_host(options, &binaries, &root.join(HOST), timeout)?
        } else {
            let kernel = fetched.iter().find(|k| k.suite == *name).unwrap();
            in_guest(kernel, &initrd, &root.join(name), &settings, options.shell_cmd.is_some())?
        };
        rows.push(row.settle(&cases));
    }
    if options.shell_cmd.is_some() {
        return Ok(shell_summary(&rows));
    }
    let summary = report(&rows, &cases);
    let path = workspace_root().join("target/bench/kernels.json");
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(&path, serde_json::to_string_pretty(&json_of(&rows, &cases, &summary))?)?;
    println!(
        "kernels: {} passed, {} failed, {} skipped; wrote {}",
        summary.passed,
        summary.failed,
        summary.skipped,
        path.display()
    );
    Ok(summary)
}

/// How many cases `options` select (building the test binary if needed).
pub fn cases(options: &Options) -> anyhow::Result<usize> {
    Ok(list_cases(&build()?.tests, &options.cases)?.len())
}

/// The kernels asked for, in the matrix's order; all of them when none was named.
fn selected(asked: &[String]) -> anyhow::Result<Vec<&'static str>> {
    let all: Vec<&'static str> = SUITES.iter().map(|(suite, _)| *suite).chain([HOST]).collect();
    if let Some(unknown) = asked.iter().find(|a| !all.contains(&a.as_str())) {
        bail!("unknown kernel {unknown:?}: the matrix has {}", all.join(", "));
    }
    Ok(all.into_iter().filter(|k| asked.is_empty() || asked.iter().any(|a| a == k)).collect())
}

/// The binaries the guest runs, at the paths cargo built them.
struct Binaries {
    tests: PathBuf,
    workload: PathBuf,
    inspeqd: PathBuf,
}

/// Builds `inspeqd` and the kernel test binary (with `inspeq-workload`), reading
/// their paths from cargo's JSON messages (so `CARGO_TARGET_DIR` is respected).
fn build() -> anyhow::Result<Binaries> {
    let daemon = artifacts(cargo().args(["build", "-p", "inspeq-daemon", "--bin", "inspeqd"]))?;
    let tests = artifacts(cargo().args(["test", "-p", "tests", "--test", "kernel", "--no-run"]))?;
    let find = |artifacts: &[serde_json::Value], name: &str, kind: &str| {
        artifacts
            .iter()
            .find(|a| {
                a["target"]["name"] == name
                    && a["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == kind))
            })
            .and_then(|a| a["executable"].as_str())
            .map(PathBuf::from)
            .with_context(|| format!("cargo reported no executable for the {kind} {name}"))
    };
    Ok(Binaries {
        tests: find(&tests, "kernel", "test")?,
        workload: find(&tests, "inspeq-workload", "bin")?,
        inspeqd: find(&daemon, "inspeqd", "bin")?,
    })
}

/// Runs a cargo build with JSON messages and returns its `compiler-artifact`s
/// (diagnostics are rendered on standard error as usual).
fn artifacts(cargo: &mut Command) -> anyhow::Result<Vec<serde_json::Value>> {
    cargo.arg("--message-format=json-render-diagnostics").stderr(Stdio::inherit());
    eprintln!("xtask: running {}", describe(cargo));
    let out = cargo.output().with_context(|| format!("starting {}", describe(cargo)))?;
    if !out.status.success() {
        bail!("{} failed: {}", describe(cargo), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect())
}

/// The cases `filters` select, from the test binary's own `--list`.
fn list_cases(tests: &Path, filters: &[String]) -> anyhow::Result<Vec<String>> {
    let listing = command::output(Command::new(tests).args(["--list", "--format", "terse"]).args(filters))
        .with_context(|| format!("{} --list failed", tests.display()))?;
    Ok(listing.lines().filter_map(|l| l.strip_suffix(": test")).map(str::to_owned).collect())
}

/// `text` in single quotes for sh.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The arguments the test binary runs with, here and in the guests.
fn test_args(options: &Options) -> Vec<String> {
    ["--test-threads=1", "--show-output"].into_iter().map(str::to_owned).chain(options.cases.iter().cloned()).collect()
}

/// The mode probe: a short `inspeqd trace`, whose first lines say whether eBPF
/// loaded and, if not, why.
fn mode_probe(inspeqd: &Path, cgroup2: &Path) -> Command {
    let mut trace = Command::new(inspeqd);
    trace.args(["trace", "--json", "--duration", "0.2", "--cgroup"]).arg(cgroup2);
    trace
}

/// The mode `inspeqd trace`'s output says loaded: `ebpf`, or `fallback (why)`.
fn mode_of<'l>(lines: impl IntoIterator<Item = &'l str>) -> String {
    let mut mode = None;
    for line in lines {
        if let Some(at) = line.find("eBPF unavailable (") {
            let why = &line[at + "eBPF unavailable (".len()..];
            return format!("fallback ({})", why.split("); ").next().unwrap_or(why).trim_end_matches(')'));
        }
        if line.contains(r#""mode":"ebpf""#) {
            mode = Some("ebpf".to_owned());
        } else if line.contains(r#""mode":"fallback""#) {
            mode = Some("fallback".to_owned());
        }
    }
    mode.unwrap_or_else(|| "unknown".to_owned())
}

/// The guest's /inspeq/job.sh: the tests (CI=true, one at a time), or `--shell-cmd`.
fn guest_job(options: &Options, binaries: &Binaries) -> String {
    let mut job = format!(
        "export CI=true INSPEQ_KERNEL_MATRIX=1 INSPEQ_TESTS={} INSPEQD={} INSPEQ_WORKLOAD={}\n",
        quoted(&binaries.tests.to_string_lossy()),
        quoted(&binaries.inspeqd.to_string_lossy()),
        quoted(&binaries.workload.to_string_lossy()),
    );
    match &options.shell_cmd {
        Some(shell) => {
            job.push_str(shell);
            job.push('\n');
        }
        None => {
            let args: Vec<String> = test_args(options).iter().map(|a| quoted(a)).collect();
            job.push_str(&format!(
                "\"$INSPEQD\" trace --json --duration 0.2 --cgroup /sys/fs/cgroup 2>&1 | head -n 5 | sed 's/^/inspeq-mode: /'\n\
                 \"$INSPEQ_TESTS\" {} 2>/tmp/tests.stderr\n\
                 rc=$?\n\
                 echo \"---- what the tests' children wrote on standard error ----\"\n\
                 cat /tmp/tests.stderr\n\
                 exit $rc\n",
                args.join(" ")
            ));
        }
    }
    job
}

/// How a kernel's run went.
enum Run {
    /// Its job ran: to its end with an exit code, or not (why).
    Ran {
        rc: Option<i32>,
        stopped: Option<String>,
    },
    DidNotBoot(String),
}

/// One kernel's row of the matrix.
struct Row {
    name: String,
    package: Option<String>,
    uname: Option<String>,
    mode: Option<String>,
    run: Run,
    results: BTreeMap<String, Outcome>,
    /// The case running when the output ended, if one was.
    unfinished: Option<String>,
    boot_time: Option<Duration>,
    elapsed: Duration,
    attempts: u32,
}

impl Row {
    /// Every case of `cases` the run left without a result failed: the guest
    /// stopped before or while it ran.
    fn settle(mut self, cases: &[String]) -> Self {
        if let Run::Ran { rc, stopped } = &self.run {
            let (running, later) = match (rc, stopped) {
                (_, Some(stopped)) => (
                    format!("the guest stopped while this case ran ({stopped}); see console.log"),
                    format!("not run: the guest stopped before this case ({stopped}); see console.log"),
                ),
                (rc, None) => (
                    format!("the test binary ended ({rc:?}) while this case ran; see console.log"),
                    format!("not run: the test binary ended ({rc:?}) before this case; see console.log"),
                ),
            };
            for case in cases {
                let why = if self.unfinished.as_ref() == Some(case) { &running } else { &later };
                self.results.entry(case.clone()).or_insert_with(|| Outcome::Fail(why.clone()));
            }
        }
        self
    }
}

fn in_guest(
    kernel: &debian::Kernel,
    initrd: &Path,
    dir: &Path,
    settings: &qemu::Settings,
    shell: bool,
) -> anyhow::Result<Row> {
    eprintln!(
        "xtask: booting {} ({}) in qemu (TCG); console in {}",
        kernel.suite,
        kernel.package,
        dir.join("console.log").display()
    );
    let label = kernel.suite.clone();
    let mut echo = |line: &str| {
        if shell || line.starts_with("test ") {
            eprintln!("[{label}] {line}");
        }
    };
    let guest = qemu::boot(&kernel.vmlinuz, initrd, dir, settings, &mut echo)?;
    let run = match guest.outcome {
        qemu::Outcome::Finished(rc) => Run::Ran { rc: Some(rc), stopped: None },
        qemu::Outcome::Stopped(why) => Run::Ran { rc: None, stopped: Some(why) },
        qemu::Outcome::DidNotBoot(why) => Run::DidNotBoot(why),
    };
    let mode_lines = guest.lines.iter().filter_map(|l| l.strip_prefix("inspeq-mode: "));
    let mode = (!shell && matches!(run, Run::Ran { .. })).then(|| mode_of(mode_lines));
    Ok(Row {
        name: kernel.suite.clone(),
        package: Some(kernel.package.clone()),
        uname: guest.uname,
        mode,
        results: if shell { BTreeMap::new() } else { libtest::parse(&guest.lines) },
        unfinished: libtest::unfinished(&guest.lines),
        run,
        boot_time: guest.boot_time,
        elapsed: guest.elapsed,
        attempts: guest.attempts,
    })
}

/// The same tests (or command) on this machine's kernel.
fn on_host(options: &Options, binaries: &Binaries, dir: &Path, timeout: Duration) -> anyhow::Result<Row> {
    std::fs::create_dir_all(dir)?;
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_owned();
    let mut run = match &options.shell_cmd {
        Some(shell) => {
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c").arg(shell);
            sh
        }
        None => {
            let mut tests = Command::new(&binaries.tests);
            tests.args(test_args(options));
            tests
        }
    };
    run.env("INSPEQ_TESTS", &binaries.tests)
        .env("INSPEQD", &binaries.inspeqd)
        .env("INSPEQ_WORKLOAD", &binaries.workload);
    let mode = match crate::systemd::cgroup2_root() {
        _ if options.shell_cmd.is_some() => None,
        Some(cgroup2) if is_root() => {
            let out = mode_probe(&binaries.inspeqd, &cgroup2).output()?;
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            Some(mode_of(text.lines()))
        }
        _ => Some("unknown (not root)".to_owned()),
    };
    eprintln!("xtask: running on this machine's kernel ({uname}): {}", describe(&run));
    let shell = options.shell_cmd.is_some();
    let deadline = Instant::now() + timeout;
    let captured = console::capture(&mut run, &dir.join("console.log"), deadline, |line| {
        if shell || line.starts_with("test ") {
            eprintln!("[{HOST}] {line}");
        }
        None
    })?;
    let run = match captured.ended {
        console::Ended::Exited(status) => Run::Ran { rc: Some(status.code().unwrap_or(-1)), stopped: None },
        console::Ended::TimedOut => {
            Run::Ran { rc: None, stopped: Some(format!("killed after {}s", timeout.as_secs())) }
        }
    };
    Ok(Row {
        name: uname.clone(),
        package: None,
        uname: Some(uname),
        mode,
        results: if shell { BTreeMap::new() } else { libtest::parse(&captured.lines) },
        unfinished: libtest::unfinished(&captured.lines),
        run,
        boot_time: None,
        elapsed: captured.elapsed,
        attempts: 1,
    })
}

/// `--shell-cmd`'s end: each kernel's exit code; a kernel whose command failed or
/// did not run counts as failed.
fn shell_summary(rows: &[Row]) -> Summary {
    let mut summary = Summary::default();
    for row in rows {
        let (ok, what) = match &row.run {
            Run::Ran { rc: Some(rc), .. } => (*rc == 0, format!("exit {rc}")),
            Run::Ran { stopped, .. } => (false, format!("stopped: {}", stopped.as_deref().unwrap_or("?"))),
            Run::DidNotBoot(why) => (false, format!("did not boot: {why}")),
        };
        println!(
            "{:<10} {:<32} {what} ({:.1}s)",
            row.name,
            row.uname.as_deref().unwrap_or("?"),
            row.elapsed.as_secs_f64()
        );
        if ok {
            summary.passed += 1;
        } else {
            summary.failed += 1;
        }
    }
    summary
}

fn cell(row: &Row, case: &str) -> &'static str {
    match (&row.run, row.results.get(case)) {
        (Run::DidNotBoot(_), _) => "no boot",
        (_, Some(Outcome::Pass)) => "pass",
        (_, Some(Outcome::Skip(_))) => "skip",
        (_, Some(Outcome::Fail(_)) | None) => "FAIL",
    }
}

/// Prints the table (cases × kernels) and one line per kernel; returns the count.
fn report(rows: &[Row], cases: &[String]) -> Summary {
    let width = cases.iter().map(String::len).max().unwrap_or(4).max(4);
    let widths: Vec<usize> = rows.iter().map(|r| r.name.len().max(7)).collect();
    let mut header = format!("{:<width$}", "case");
    for (row, w) in rows.iter().zip(&widths) {
        header.push_str(&format!("  {:<w$}", row.name));
    }
    println!("\n{}", header.trim_end());
    let mut summary = Summary::default();
    for case in cases {
        let mut line = format!("{case:<width$}");
        for (row, w) in rows.iter().zip(&widths) {
            let cell = cell(row, case);
            match cell {
                "pass" => summary.passed += 1,
                "skip" => summary.skipped += 1,
                _ => summary.failed += 1,
            }
            line.push_str(&format!("  {cell:<w$}"));
        }
        println!("{}", line.trim_end());
    }
    println!();
    for row in rows {
        let version = match (&row.package, &row.uname) {
            (None, _) => "this machine's kernel".to_owned(),
            (Some(package), Some(uname)) => format!("{uname} ({package})"),
            (Some(package), None) => format!("? ({package})"),
        };
        let timing = match row.boot_time {
            Some(boot) => format!("booted in {:.1}s, {:.1}s in all", boot.as_secs_f64(), row.elapsed.as_secs_f64()),
            None => format!("{:.1}s", row.elapsed.as_secs_f64()),
        };
        let retried = if row.attempts > 1 { ", booted twice" } else { "" };
        let state = match &row.run {
            Run::DidNotBoot(why) => format!("DID NOT BOOT (twice): {why}"),
            Run::Ran { stopped: Some(why), .. } => {
                format!("mode {}; STOPPED during the tests: {why}", row.mode.as_deref().unwrap_or("?"))
            }
            Run::Ran { .. } => format!("mode {}", row.mode.as_deref().unwrap_or("?")),
        };
        println!("{:<10} {version}: {state} ({timing}{retried})", row.name);
    }
    // Each kernel's failures, those with the same message together.
    for row in rows {
        let mut by_gist: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for case in cases {
            if let Some(Outcome::Fail(output)) = row.results.get(case) {
                by_gist.entry(gist(output)).or_default().push(case);
            }
        }
        for (gist, failed) in by_gist {
            let which = match failed.as_slice() {
                [one] => (*one).to_owned(),
                many if many.len() <= 3 => many.join(", "),
                many => format!("{} cases", many.len()),
            };
            println!("  {} FAIL {which}: {gist}", row.name);
        }
    }
    summary
}

/// What a failure's output says went wrong: the panic message (the line after
/// "panicked at", with an assertion's `left:` value), else its first line.
fn gist(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let Some(at) = lines.iter().position(|l| l.contains("panicked at")) else {
        return lines.first().copied().unwrap_or("").to_owned();
    };
    let message = lines.get(at + 1).copied().unwrap_or("");
    match lines.get(at + 2).filter(|l| l.starts_with("left:")) {
        Some(left) => format!("{message} ({left})"),
        None => message.to_owned(),
    }
}

fn json_of(rows: &[Row], cases: &[String], summary: &Summary) -> serde_json::Value {
    let kernels: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let results: serde_json::Map<String, serde_json::Value> = cases
                .iter()
                .map(|case| {
                    let value = match (&row.run, row.results.get(case)) {
                        (Run::DidNotBoot(_), _) => json!({ "result": "did not boot" }),
                        (_, Some(Outcome::Pass)) => json!({ "result": "pass" }),
                        (_, Some(Outcome::Skip(why))) => json!({ "result": "skip", "reason": why }),
                        (_, Some(Outcome::Fail(output))) => {
                            json!({ "result": "fail", "output": output })
                        }
                        (_, None) => json!({ "result": "fail", "output": "no result" }),
                    };
                    (case.clone(), value)
                })
                .collect();
            let (booted, exit_code, stopped, boot_error) = match &row.run {
                Run::Ran { rc, stopped } => (true, *rc, stopped.clone(), None),
                Run::DidNotBoot(why) => (false, None, None, Some(why.clone())),
            };
            json!({
                "name": row.name,
                "package": row.package,
                "version": row.uname,
                "guest": row.package.is_some(),
                "booted": booted,
                "boot_error": boot_error,
                "attempts": row.attempts,
                "mode": row.mode,
                "exit_code": exit_code,
                "stopped": stopped,
                "boot_seconds": row.boot_time.map(|d| d.as_secs_f64()),
                "seconds": row.elapsed.as_secs_f64(),
                "cases": results,
            })
        })
        .collect();
    json!({
        "cases": cases,
        "kernels": kernels,
        "summary": { "passed": summary.passed, "failed": summary.failed, "skipped": summary.skipped },
    })
}
