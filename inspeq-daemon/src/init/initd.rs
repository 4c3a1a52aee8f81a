//! SysV init.d scripts: a service is `DIR/NAME` (DIR is `/etc/init.d` unless
//! configured), driven with `DIR/NAME restart|reload`. The script says nothing
//! machine-readable about its process, so the pid comes from a pidfile: the
//! service's `with pidfile PATH`, else `RUN/NAME.pid`, else `RUN/NAME/NAME.pid`
//! (RUN is `/var/run`), checked for liveness and staleness.

use std::{collections::HashMap, path::PathBuf};

use super::{
    Argv, InitError, InitFuture, InitKind, InitSystem, ServiceName, ServiceStatus, Timeouts,
    pidfile::{PidfileState, read_pidfile},
};

/// Where init.d scripts and their pidfiles are.
#[derive(Clone, Debug)]
pub struct InitDOptions {
    pub script_dir: PathBuf,
    pub run_dir: PathBuf,
    /// `with pidfile PATH`, per service.
    pub pidfiles: HashMap<ServiceName, PathBuf>,
    pub timeouts: Timeouts,
}

impl Default for InitDOptions {
    fn default() -> Self {
        Self {
            script_dir: "/etc/init.d".into(),
            run_dir: "/var/run".into(),
            pidfiles: HashMap::new(),
            timeouts: Timeouts::default(),
        }
    }
}

pub struct InitD {
    options: InitDOptions,
}

impl InitD {
    pub fn new(options: InitDOptions) -> Self {
        Self { options }
    }

    fn candidates(&self, service: &ServiceName) -> Vec<PathBuf> {
        if let Some(path) = self.options.pidfiles.get(service) {
            return vec![path.clone()];
        }
        let run = &self.options.run_dir;
        vec![run.join(format!("{service}.pid")), run.join(service.as_str()).join(format!("{service}.pid"))]
    }

    async fn action(&self, service: &ServiceName, action: &'static str) -> Result<(), InitError> {
        let script = self.options.script_dir.join(service.as_str());
        if !script.is_file() {
            return Err(InitError::NotFound { init: InitKind::InitD, service: service.to_string(), action });
        }
        let argv = Argv::new([script.to_string_lossy().into_owned(), action.to_owned()]).expect("two arguments");
        let out = argv.run(self.options.timeouts.action).await.map_err(|source| InitError::Command {
            init: InitKind::InitD,
            service: service.to_string(),
            action,
            source,
        })?;
        if !out.success() {
            return Err(InitError::Failed {
                init: InitKind::InitD,
                service: service.to_string(),
                action,
                message: format!("exit {:?}: {}", out.code, out.message()),
            });
        }
        Ok(())
    }
}

impl InitSystem for InitD {
    fn kind(&self) -> InitKind {
        InitKind::InitD
    }

    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        Box::pin(async move {
            if !self.options.script_dir.join(service.as_str()).is_file() {
                return Ok(ServiceStatus::not_found(format!("no {}/{service}", self.options.script_dir.display())));
            }
            let mut stale = None;
            for path in self.candidates(service) {
                match read_pidfile(&path) {
                    PidfileState::Live(pid) => {
                        return Ok(ServiceStatus::up(pid, format!("pid {pid} from {}", path.display())));
                    }
                    PidfileState::Stale(pid) => stale = Some((path, pid)),
                    PidfileState::Missing | PidfileState::Empty => {}
                }
            }
            Ok(match stale {
                Some((path, pid)) => {
                    ServiceStatus::down(format!("stale pidfile {} (pid {pid} is not running it)", path.display()))
                }
                None => ServiceStatus::down("no pidfile"),
            })
        })
    }

    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(self.action(service, "restart"))
    }

    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(self.action(service, "reload"))
    }
}
