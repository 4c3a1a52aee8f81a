//! `cargo xtask demo`: the README's first command. Builds `inspeqd` and runs
//! `inspeqd trace` on a bundled misbehaving service (`inspeq-workload demo`):
//! a crash, signals, a memory bloat and an OOM kill, each reported the instant the
//! kernel sees it. The full daemon demo (rules, alerts, restarts) builds on this.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::command::{self, cargo, is_root, workspace_root};

/// Removes the demo's cgroups, killing what is left in them.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    command::run(cargo().args(["build", "--release", "-p", "inspeq-daemon", "-p", "tests", "--bins"]))?;
    let release = workspace_root().join("target/release");

    let mut trace = Command::new(release.join("inspeqd"));
    trace.args(["trace", "--rss-threshold", "32m"]);
    let mut service = Command::new(release.join("inspeq-workload"));
    service.arg("demo");

    let mut cgroups = Cgroups(Vec::new());
    let root_cg = if is_root() { cgroup2_root() } else { None };
    match &root_cg {
        Some(cg2) => {
            let dir = cg2.join("inspeq-demo");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            cgroups.0.push(dir.clone());
            trace.arg("--cgroup").arg(&dir);
            // The service joins the watched cgroup before it starts.
            service.env("INSPEQ_JOIN_CGROUP", &dir);
            let v1_memory = Path::new("/sys/fs/cgroup/memory");
            if v1_memory.join("memory.limit_in_bytes").exists() {
                let oom = v1_memory.join("inspeq-demo");
                std::fs::create_dir_all(&oom)?;
                std::fs::write(oom.join("memory.limit_in_bytes"), (16u64 << 20).to_string())?;
                cgroups.0.push(oom.clone());
                service.env("INSPEQ_OOM_CGROUP", &oom);
            }
        }
        None => {
            eprintln!("xtask: not root, so no eBPF: inspeqd falls back to polling /proc and sees less");
            trace.args(["--poll-ms", "100", "--pid", &std::process::id().to_string()]);
        }
    }

    eprintln!("xtask: starting inspeqd trace; the service's misdeeds follow, each line is what inspeq saw\n");
    let mut tracer = trace.stdin(Stdio::null()).spawn().context("starting inspeqd")?;
    // Give it time to load and attach (tens of milliseconds) before the service starts.
    std::thread::sleep(Duration::from_millis(500));
    let status = service.status().context("running the demo service")?;
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) };
    tracer.wait()?;
    drop(cgroups);
    eprintln!("\nxtask: demo service ended ({status}). Next: `cargo xtask test` runs the whole suite.");
    Ok(())
}
