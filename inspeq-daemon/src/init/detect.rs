//! Which init systems a host runs, in the order services are resolved.
//!
//! An explicit `with init X` on a service wins over all of this. Otherwise the
//! order is:
//! 1. the manager running as PID 1: systemd when `/run/systemd/system` exists
//!    (`sd_booted()`'s test) or PID 1 is `systemd`; upstart when PID 1 is `init`
//!    and `/sbin/initctl` and `/etc/init/*.conf` exist;
//! 2. runit, when `/etc/service` or `/service` holds a `*/run` (runit usually
//!    runs beside another PID 1);
//! 3. leftovers of managers not running: upstart job files, then init.d scripts.
//!
//! Inspeqtor checked for files in a fixed order, so the `/etc/init/*.conf` left on
//! Ubuntu 16.04 made it pick upstart on a systemd host (its issues #135, #130).
//! Detection reads below a root directory so tests can point it at a fixture tree.

use std::path::{Path, PathBuf};

use super::InitKind;

/// One init system found on the host, with where it keeps its services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub kind: InitKind,
    /// systemd: none; upstart: the job dir; runit: the service dir; init.d: the script dir.
    pub dir: Option<PathBuf>,
    /// It is the running PID 1 (or runit's supervision tree), not just files on disk.
    pub running: bool,
}

fn has_entry(dir: &Path, wanted: impl Fn(&Path) -> bool) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| wanted(&e.path()))
}

/// Detects init systems under `root` (`/` on a real host), in resolution order.
pub fn detect(root: &Path) -> Vec<Detected> {
    let pid1 = std::fs::read_to_string(root.join("proc/1/comm")).unwrap_or_default();
    let pid1 = pid1.trim();
    let job_dir = root.join("etc/init");
    let upstart_jobs = has_entry(&job_dir, |p| p.extension().is_some_and(|e| e == "conf"));
    let mut found = Vec::new();

    let systemd_running = root.join("run/systemd/system").is_dir() || pid1 == "systemd";
    if systemd_running {
        found.push(Detected { kind: InitKind::Systemd, dir: None, running: true });
    }
    let upstart_running = !systemd_running && pid1 == "init" && root.join("sbin/initctl").exists() && upstart_jobs;
    if upstart_running {
        found.push(Detected { kind: InitKind::Upstart, dir: Some(job_dir.clone()), running: true });
    }
    for dir in [root.join("etc/service"), root.join("service")] {
        if has_entry(&dir, |p| p.join("run").exists()) {
            found.push(Detected { kind: InitKind::Runit, dir: Some(dir), running: true });
            break;
        }
    }
    if upstart_jobs && !upstart_running {
        found.push(Detected { kind: InitKind::Upstart, dir: Some(job_dir), running: false });
    }
    let initd = root.join("etc/init.d");
    if has_entry(&initd, Path::is_file) {
        found.push(Detected { kind: InitKind::InitD, dir: Some(initd), running: false });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root file system to detect init systems in, removed when dropped.
    struct Tree(tempfile::TempDir);
    impl Tree {
        fn new(name: &str) -> Self {
            Self(tempfile::Builder::new().prefix(&format!("inspeq-detect-{name}-")).tempdir().unwrap())
        }
        fn file(&self, path: &str, text: &str) -> &Self {
            let path = self.0.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
            self
        }
        fn dir(&self, path: &str) -> &Self {
            std::fs::create_dir_all(self.0.path().join(path)).unwrap();
            self
        }
        fn kinds(&self) -> Vec<(InitKind, bool)> {
            detect(self.0.path()).into_iter().map(|d| (d.kind, d.running)).collect()
        }
    }

    #[test]
    fn leftover_upstart_jobs_do_not_beat_a_running_systemd() {
        // Ubuntu 16.04: systemd is PID 1 and /etc/init still has upstart's jobs.
        let tree = Tree::new("xenial");
        tree.dir("run/systemd/system")
            .file("proc/1/comm", "systemd\n")
            .file("etc/init/ssh.conf", "")
            .file("etc/init.d/ssh", "");
        assert_eq!(tree.kinds(), [(InitKind::Systemd, true), (InitKind::Upstart, false), (InitKind::InitD, false)]);
    }

    #[test]
    fn upstart_as_pid_1_comes_first() {
        let tree = Tree::new("trusty");
        tree.file("proc/1/comm", "init\n")
            .file("sbin/initctl", "")
            .file("etc/init/puma.conf", "")
            .file("etc/init.d/x", "");
        assert_eq!(tree.kinds(), [(InitKind::Upstart, true), (InitKind::InitD, false)]);
    }

    #[test]
    fn runit_beside_sysv_init() {
        let tree = Tree::new("runit");
        tree.file("proc/1/comm", "init\n").file("etc/service/web/run", "").file("etc/init.d/cron", "");
        assert_eq!(tree.kinds(), [(InitKind::Runit, true), (InitKind::InitD, false)]);
        assert_eq!(detect(tree.0.path())[0].dir.as_deref(), Some(tree.0.path().join("etc/service").as_path()));
    }

    #[test]
    fn an_empty_host_has_no_init_system() {
        let tree = Tree::new("empty");
        tree.dir("etc/init.d");
        assert_eq!(tree.kinds(), []);
    }
}
