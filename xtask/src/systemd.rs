//! A real `systemd --user` manager for xtask's demo and end-to-end benchmark, on
//! machines where PID 1 is not systemd: it runs in a private mount namespace (as
//! the tests' manager does) inside its own cgroup, and everything it started is
//! stopped and removed when it is dropped.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A `systemd --user` manager in a private mount namespace, and everything it
/// needs; stopped and removed when dropped.
pub struct UserManager {
    child: Child,
    /// The temporary directory holding its runtime dir, units and logs (removed on drop).
    pub base: PathBuf,
    /// Its `XDG_RUNTIME_DIR`: whoever talks to it (systemctl, inspeqd) needs this one.
    pub runtime_dir: PathBuf,
    cgroups: Vec<PathBuf>,
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
    })
}

/// Removes a cgroup directory and its children, deepest first; the kernel refuses
/// a cgroup until its killed processes are gone, hence the retries.
pub fn remove_cgroup(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl UserManager {
    /// Starts a manager whose temp dir and cgroup are named after `tag`; its unit
    /// files go in [`UserManager::units_dir`].
    pub fn start(tag: &str) -> anyhow::Result<Self> {
        let base = std::env::temp_dir().join(format!("inspeq-{tag}-{}", std::process::id()));
        let (runtime_dir, config, units, empty) =
            (base.join("rt"), base.join("config"), base.join("units"), base.join("empty"));
        for dir in [&runtime_dir, &config, &units, &empty] {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700))?;
        // systemd wants its own cgroup subtree: cgroup2, and on hybrid hosts its v1 named hierarchy.
        let mut cgroups = vec![cgroup2_root().context("no cgroup2 mount")?.join(format!("inspeq-{tag}"))];
        if Path::new("/sys/fs/cgroup/systemd/cgroup.procs").exists() {
            cgroups.push(PathBuf::from(format!("/sys/fs/cgroup/systemd/inspeq-{tag}")));
        }
        let mut join = String::new();
        for dir in &cgroups {
            std::fs::create_dir_all(dir)?;
            join.push_str(&format!("echo $$ > {}/cgroup.procs && ", dir.display()));
        }
        // /run/systemd/system must exist for `systemd --user`; a private mount
        // namespace keeps the host from looking systemd-booted.
        let script = format!(
            "{join}exec unshare --mount --propagation private /bin/sh -c 'mount -t tmpfs inspeq-{tag} /run/systemd && mkdir /run/systemd/system && exec /lib/systemd/systemd --user --log-target=console'"
        );
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("XDG_CONFIG_HOME", &config)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .env("SYSTEMD_GENERATOR_PATH", &empty)
            .env("SYSTEMD_ENVIRONMENT_GENERATOR_PATH", &empty)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(base.join("manager.log"))?)
            .stderr(std::fs::File::create(base.join("manager.err"))?)
            .spawn()
            .context("starting systemd --user")?;
        let manager = Self { child, base, runtime_dir, cgroups };
        let started = Instant::now();
        while !(manager.runtime_dir.join("bus").exists() && manager.systemctl(&["show", "-P", "Version"]).is_ok()) {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("the systemd user manager did not start (see {})", manager.base.join("manager.err").display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(manager)
    }

    /// Where unit files go (then `systemctl daemon-reload`).
    pub fn units_dir(&self) -> PathBuf {
        self.base.join("units")
    }

    pub fn systemctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out =
            Command::new("systemctl").arg("--user").args(args).env("XDG_RUNTIME_DIR", &self.runtime_dir).output()?;
        if !out.status.success() {
            bail!("systemctl --user {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        self.systemctl(&["show", "-P", "MainPID", unit]).ok()?.parse().ok().filter(|p| *p != 0)
    }

    /// The unit's cgroup v2 directory, whether or not it exists right now.
    pub fn unit_cgroup(&self, unit: &str) -> anyhow::Result<PathBuf> {
        let relative = self.systemctl(&["show", "-P", "ControlGroup", unit])?;
        if relative.is_empty() {
            bail!("{unit} has no cgroup (is it running?)");
        }
        Ok(cgroup2_root().context("no cgroup2 mount")?.join(relative.trim_start_matches('/')))
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child; SIGTERM makes systemd stop its units and exit in order.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        for dir in self.cgroups.iter().rev() {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            remove_cgroup(dir);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
