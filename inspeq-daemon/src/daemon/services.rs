//! The services the daemon watches: which init system runs each, what it said
//! last, and how the kernel watches it. Also builds the init-system backends from
//! detection and the checks' `with init`/`with scope`/`with bus`/`with
//! cgroup_root` overrides: one systemd connection per distinct manager.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    config::model::{Check, CheckKind, InitKind as ConfigInit, ProcessSelector, UnitScope},
    init::{
        Argv, ChangeSubscription, InitD, InitDOptions, InitKind, InitSystem, Intent, ProcessLocator, ProcessOptions,
        ProcessService, ReloadSignal, Runit, RunitOptions, Scope, ServiceName, ServiceState, ServiceStatus, Systemd,
        SystemdOptions, Upstart, UpstartOptions, detect,
    },
    kernel::{self, WatchId},
};

/// One checked service at run time.
pub struct Service {
    pub check: Check,
    pub name: ServiceName,
    /// The init system that knows it, once found.
    pub backend: Option<Arc<dyn InitSystem>>,
    /// What that init system said last.
    pub status: Option<ServiceStatus>,
    /// The kernel watch and what it watches (`cgroup` or `tree`).
    pub watch: Option<(WatchId, &'static str)>,
    /// The files the cycle samples it from, kept open.
    pub files: crate::metrics::process::OpenFiles,
    /// Processes of the service as the kernel reported them: those at the watch's
    /// start, then forks (only reported when a `forks` rule asks) less exits. See
    /// [`Service::live_members`] for the service's processes now.
    pub members: BTreeSet<u32>,
    /// A lookup is running; don't start another.
    pub looking_up: bool,
    /// "not found" was reported already (reported once, looked up every cycle).
    pub reported_missing: bool,
    /// A restart inspeq asked for is running: the exit it causes is no crash.
    pub restarting: bool,
    /// The pid the engine was told is up, while it is.
    pub started: Option<u32>,
    /// The init system's change announcements, while the service is watched.
    pub subscription: Option<ChangeSubscription>,
    /// A main-process exit held back while the init system is asked about it.
    pub pending_exit: Option<PendingExit>,
    /// Statuses that arrived while an exit was pending, applied (latest last)
    /// once it is settled, so the engine sees the down before the next up.
    pub held: Vec<ServiceStatus>,
    /// The main pid that exited last: a lookup answered before the manager reaped
    /// it still names it as up, which is stale.
    pub last_exited: Option<u32>,
    /// The last exit was a crash the init system said it restarts by itself: if it
    /// reports the service down instead, it gave up (systemd's start limit).
    pub awaiting_init_restart: bool,
    /// Its listening sockets as the last cycle listed them, less those the kernel has seen close since.
    pub listeners: Vec<kernel::Listener>,
}

/// A main-process exit waiting for the init system's word on it.
pub struct PendingExit {
    pub exit: crate::engine::ProcessExit,
    /// What the init system said while the process ran.
    pub before: Before,
}

/// What the init system said about the service while its main process ran.
#[derive(Clone, Copy, Debug)]
pub struct Before {
    pub intent: Intent,
    pub init_restarts: Option<u32>,
    /// The init system's main pid: the process it keeps a record of, which is
    /// the wrapper when a shell runs the server.
    pub main_pid: Option<u32>,
}

impl Before {
    pub fn of(status: Option<&ServiceStatus>) -> Self {
        Self {
            intent: status.map_or(Intent::Run, |s| s.intent),
            init_restarts: status.and_then(|s| s.init_restarts),
            main_pid: status.and_then(|s| s.main_pid),
        }
    }
}

impl Service {
    pub fn new(check: Check) -> Option<Self> {
        let name = ServiceName::new(&check.name).ok()?;
        Some(Self {
            check,
            name,
            backend: None,
            status: None,
            watch: None,
            files: crate::metrics::process::OpenFiles::default(),
            members: BTreeSet::new(),
            looking_up: false,
            reported_missing: false,
            restarting: false,
            started: None,
            subscription: None,
            pending_exit: None,
            held: Vec::new(),
            last_exited: None,
            listeners: Vec::new(),
            awaiting_init_restart: false,
        })
    }

    pub fn main_pid(&self) -> Option<u32> {
        self.status.as_ref().filter(|s| s.state == ServiceState::Up).and_then(|s| s.main_pid)
    }

    /// The service's own cgroup directory: only when the kernel watches it by its cgroup (a unit's). A `check
    /// process` lives in whatever cgroup started it, with other processes, so what that cgroup holds (its sockets,
    /// its CPU) is not the service's.
    pub fn own_cgroup(&self) -> Option<&Path> {
        let cgroup = self.status.as_ref().and_then(|s| s.cgroup.as_ref())?;
        self.watch.is_some_and(|(_, how)| how == "cgroup").then_some(cgroup.path.as_path())
    }

    /// The service's processes now, read when asked (the cycle's metrics,
    /// `status`'s count): its cgroup's, from `cgroup.procs` at the path the init
    /// system gave and in the cgroups below (finding the cgroup by id would walk
    /// the whole cgroup tree); else its main process's tree, from /proc (each
    /// process's `task/*/children`) plus the processes the kernel reported in the
    /// tree, which covers a child that left it in /proc by daemonising. Never a
    /// scan of all of /proc.
    pub fn live_members(&self) -> Vec<u32> {
        let cgroup = self.status.as_ref().and_then(|s| s.cgroup.as_ref());
        let mut members = match (cgroup, self.main_pid()) {
            (Some(cgroup), _) => kernel::cgroup_members(&cgroup.path),
            (None, Some(main)) => {
                let mut tree = kernel::tree_members(main);
                tree.extend(self.members.iter().copied());
                tree
            }
            (None, None) => Vec::new(),
        };
        members.sort_unstable();
        members.dedup();
        members
    }
}

/// Which backend a check asks for. For systemd, the manager: its scope, and the
/// bus address and cgroup root given (`None`: the scope's defaults).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BackendKey {
    kind: InitKind,
    user: bool,
    bus: Option<String>,
    cgroup_root: Option<PathBuf>,
}

impl BackendKey {
    fn plain(kind: InitKind) -> Self {
        Self { kind, user: false, bus: None, cgroup_root: None }
    }
}

/// The init systems of this host, built once per (re)load.
pub struct Backends {
    /// In detection order.
    pub detected: Vec<Arc<dyn InitSystem>>,
    /// By what the checks ask for.
    by_kind: HashMap<BackendKey, Arc<dyn InitSystem>>,
}

async fn systemd(key: &BackendKey) -> Option<Arc<dyn InitSystem>> {
    let scope = if key.user { Scope::User } else { Scope::System };
    let options =
        SystemdOptions { address: key.bus.clone(), cgroup_root: key.cgroup_root.clone(), ..SystemdOptions::new(scope) };
    match Systemd::connect(options).await {
        Ok(s) => Some(Arc::new(s)),
        Err(err) => {
            let at = key.bus.as_deref().map(|b| format!(" at {b}")).unwrap_or_default();
            tracing::warn!("init: systemd {scope} scope{at} unavailable: {err}");
            None
        }
    }
}

impl Backends {
    /// The backends `options` give (a check naming an init system gets the first of them of that kind), or those
    /// detected and connected for `config`.
    pub async fn for_options(options: &super::Options, config: &crate::config::Config) -> Self {
        match &options.init_systems {
            // The injected systems stand in for connecting too: a check that names an init system gets the first
            // injected one of that kind, as it would get the one connected for it.
            Some(systems) => {
                let mut by_kind = HashMap::new();
                for key in config.services.iter().filter_map(wanted_backend) {
                    if let Some(system) = systems.iter().find(|s| s.kind() == key.kind) {
                        by_kind.entry(key).or_insert_with(|| system.clone());
                    }
                }
                Self { detected: systems.clone(), by_kind }
            }
            None => Self::build(&options.init_root, &config.services).await,
        }
    }

    /// Detects the init systems under `root` and connects to what the checks need.
    pub async fn build(root: &Path, checks: &[Check]) -> Self {
        let mut detected: Vec<Arc<dyn InitSystem>> = Vec::new();
        let mut by_kind: HashMap<BackendKey, Arc<dyn InitSystem>> = HashMap::new();
        let pidfiles: HashMap<ServiceName, PathBuf> = checks
            .iter()
            .filter(|c| c.kind == CheckKind::Service)
            .filter_map(|c| Some((ServiceName::new(&c.name).ok()?, c.params.get("pidfile")?.into())))
            .collect();
        for found in detect(root) {
            let backend: Option<Arc<dyn InitSystem>> = match found.kind {
                InitKind::Systemd => systemd(&BackendKey::plain(InitKind::Systemd)).await,
                InitKind::Upstart => Some(Arc::new(Upstart::new(UpstartOptions {
                    job_dir: found.dir.clone().unwrap_or_else(|| "/etc/init".into()),
                    ..UpstartOptions::default()
                }))),
                InitKind::Runit => Some(Arc::new(Runit::new(RunitOptions {
                    service_dir: found.dir.clone().unwrap_or_else(|| "/etc/service".into()),
                    ..RunitOptions::default()
                }))),
                InitKind::InitD => Some(Arc::new(InitD::new(InitDOptions {
                    script_dir: found.dir.clone().unwrap_or_else(|| "/etc/init.d".into()),
                    pidfiles: pidfiles.clone(),
                    ..InitDOptions::default()
                }))),
                InitKind::Process => None,
            };
            if let Some(backend) = backend {
                by_kind.insert(BackendKey::plain(found.kind), backend.clone());
                detected.push(backend);
            }
        }
        // Explicit `with init X` / `with scope user` / `with bus ...` may name systems detection skipped.
        for check in checks {
            let Some(wanted) = wanted_backend(check) else { continue };
            if by_kind.contains_key(&wanted) {
                continue;
            }
            let backend: Option<Arc<dyn InitSystem>> = match wanted.kind {
                InitKind::Systemd => systemd(&wanted).await,
                InitKind::Upstart => Some(Arc::new(Upstart::new(UpstartOptions::default()))),
                InitKind::Runit => Some(Arc::new(Runit::new(RunitOptions::default()))),
                InitKind::InitD => {
                    Some(Arc::new(InitD::new(InitDOptions { pidfiles: pidfiles.clone(), ..InitDOptions::default() })))
                }
                InitKind::Process => None,
            };
            if let Some(backend) = backend {
                by_kind.insert(wanted, backend);
            }
        }
        Self { detected, by_kind }
    }

    /// The init systems to ask about `check`, in order: the one it names, or all detected.
    pub fn candidates(&self, check: &Check) -> Vec<Arc<dyn InitSystem>> {
        if let CheckKind::Process(selector) = &check.kind {
            let locator = match selector {
                ProcessSelector::PidFile(path) => ProcessLocator::Pidfile(path.into()),
                ProcessSelector::Matching(pattern) => match ProcessLocator::matching(pattern) {
                    Ok(locator) => locator,
                    Err(_) => return Vec::new(),
                },
            };
            let options = ProcessOptions {
                locator,
                restart_command: check.restart_command.clone().and_then(Argv::new),
                reload_signal: check
                    .params
                    .get("reload_signal")
                    .and_then(|s| ReloadSignal::from_name(s))
                    .unwrap_or(ReloadSignal::Hup),
                timeouts: Default::default(),
            };
            return vec![Arc::new(ProcessService::new(options))];
        }
        match wanted_backend(check) {
            Some(key) => self.by_kind.get(&key).cloned().into_iter().collect(),
            None => self.detected.clone(),
        }
    }
}

/// The backend a check names with `with init X`, `with scope user`, `with bus
/// ADDRESS` or `with cgroup_root PATH` (the last three mean systemd), if any.
fn wanted_backend(check: &Check) -> Option<BackendKey> {
    let kind = match check.named_init()? {
        ConfigInit::Systemd => InitKind::Systemd,
        ConfigInit::Upstart => InitKind::Upstart,
        ConfigInit::Runit => InitKind::Runit,
        ConfigInit::Initd => InitKind::InitD,
    };
    if kind != InitKind::Systemd {
        return Some(BackendKey::plain(kind));
    }
    let user = check.scope == Some(UnitScope::User);
    Some(BackendKey { kind, user, bus: check.bus.clone(), cgroup_root: check.cgroup_root.as_ref().map(PathBuf::from) })
}

/// Services by name.
pub type Services = BTreeMap<String, Service>;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: &str) -> Check {
        let text = format!("check service web{params}\n  if crashed then alert\n");
        let (config, diagnostics) = crate::config::load_files(None, [("web.inq", text.as_str())]);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        config.services.into_iter().next().unwrap()
    }

    #[test]
    fn a_check_without_a_manager_of_its_own_asks_every_detected_init_system() {
        assert_eq!(wanted_backend(&check("")), None);
        assert_eq!(wanted_backend(&check(" with scope system")), None);
        assert_eq!(wanted_backend(&check(" with init systemd")), Some(BackendKey::plain(InitKind::Systemd)));
        assert_eq!(wanted_backend(&check(" with init runit")), Some(BackendKey::plain(InitKind::Runit)));
    }

    #[test]
    fn a_bus_or_a_cgroup_root_names_a_systemd_manager_of_its_own() {
        let key = wanted_backend(&check(
            r#" with scope system, bus "unix:path=/x/run/dbus/system_bus_socket", cgroup_root /sys/fs/cgroup/unified/itest"#,
        ));
        assert_eq!(
            key,
            Some(BackendKey {
                kind: InitKind::Systemd,
                user: false,
                bus: Some("unix:path=/x/run/dbus/system_bus_socket".into()),
                cgroup_root: Some("/sys/fs/cgroup/unified/itest".into()),
            })
        );
        let root_only = wanted_backend(&check(" with cgroup_root /sys/fs/cgroup/machine.slice/ct1")).unwrap();
        assert_eq!((root_only.kind, root_only.bus, root_only.user), (InitKind::Systemd, None, false));
        let user = wanted_backend(&check(r#" with scope user, bus "unix:path=/run/user/0/bus""#)).unwrap();
        assert!(user.user);
    }
}
