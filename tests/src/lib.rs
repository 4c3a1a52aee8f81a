//! The harness of inspeq's integration tests: gates for tests that need root and
//! BPF, throw-away cgroups, and children that join a cgroup before they run.
//!
//! Privileged tests fail when `CI` is set and they cannot run; elsewhere they
//! skip with a printed reason.

pub mod alert_harness;
pub mod apps_harness;
pub mod daemon_harness;
pub mod init_harness;
pub mod servers;
pub mod system_manager;

use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

/// Says that `test` returned early because it cannot run here, in the one form
/// `cargo xtask test` and the kernel matrix count as a skip rather than a pass:
/// `skipped NAME: reason`, NAME as libtest names the test.
pub fn skipped(test: &str, reason: &str) {
    eprintln!("skipped {test}: {reason}");
}

/// A test that needs something this machine lacks: fails under CI (where
/// `cargo xtask setup` has installed everything), skips elsewhere. Returns `false`.
pub fn cannot_run(test: &str, reason: &str) -> bool {
    assert!(std::env::var_os("CI").is_none(), "{test}: cannot run under CI: {reason}");
    skipped(test, reason);
    false
}

/// Whether the kernel tests can run here (root, kernel BTF, tracefs reachable).
/// Returns `false` after printing why they skip; panics under CI instead.
pub fn privileged(test: &str) -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else if cgroup2_root().is_none() {
        Some("no cgroup2 mount")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) => cannot_run(test, &format!("{reason} (needs root and a BPF-capable kernel)")),
    }
}

/// Like [`privileged`], and the programs the test drives are installed (`cargo
/// xtask test` installs them): fails under CI when not, skips elsewhere.
pub fn privileged_with(test: &str, programs: &[&str]) -> bool {
    if !privileged(test) {
        return false;
    }
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    cannot_run(test, &format!("{missing:?} not installed (cargo xtask setup installs them)"))
}

/// The cgroup2 mount (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// A cgroup created for one test and removed (after killing what is left in it)
/// when dropped.
pub struct TestCgroup {
    pub dir: PathBuf,
}

impl TestCgroup {
    /// A new cgroup under `root` (a cgroup2 or v1 controller mount).
    pub fn new_under(root: &Path, name: &str) -> Self {
        let dir = root.join(format!("inspeq-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        Self { dir }
    }

    /// A new cgroup v2 cgroup.
    pub fn new(name: &str) -> Self {
        Self::new_under(&cgroup2_root().expect("cgroup2 mount"), name)
    }

    /// A child cgroup inside this one.
    pub fn child(&self, name: &str) -> Self {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let mut pids = Vec::new();
            collect_procs(&self.dir, &mut pids);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_tree(&self.dir);
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), out);
        }
    }
}

fn remove_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Makes `command`'s child move itself into each of `cgroups` between fork and
/// exec, so everything it does is inside them.
pub fn join_cgroups<'c>(command: &'c mut Command, cgroups: &[&Path]) -> &'c mut Command {
    let paths: Vec<CString> = cgroups
        .iter()
        .map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap())
        .collect();
    // SAFETY: only async-signal-safe calls (open, write, close) run in the child.
    unsafe {
        command.pre_exec(move || {
            for path in &paths {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// Spawns `sh -c script` inside `cgroups`.
pub fn sh_in(script: &str, cgroups: &[&Path]) -> Child {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(script);
    join_cgroups(&mut command, cgroups).spawn().expect("spawning /bin/sh")
}

/// The `inspeqd` binary next to this test binary (cargo puts both in
/// `target/<profile>/`), or `$INSPEQD`.
pub fn inspeqd() -> PathBuf {
    if let Some(path) = std::env::var_os("INSPEQD") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("inspeqd");
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p inspeq-daemon` first (cargo xtask test does)",
        path.display()
    );
    path
}

/// The `inspeqctl` binary beside [`inspeqd`], or `$INSPEQCTL`.
pub fn inspeqctl() -> PathBuf {
    if let Some(path) = std::env::var_os("INSPEQCTL") {
        return PathBuf::from(path);
    }
    let path = inspeqd().with_file_name("inspeqctl");
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p inspeq-daemon` first (cargo xtask test does)",
        path.display()
    );
    path
}
