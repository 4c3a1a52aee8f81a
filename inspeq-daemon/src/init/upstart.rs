//! Upstart: `initctl status|restart|reload JOB`, job files in `/etc/init`.
//!
//! Formats follow upstart's `util/initctl.c` `job_status()`: `JOB GOAL/STATE`,
//! then `, process PID` for the main process, or `, (post-start) process PID` when
//! the first process listed is another one; an instance job puts ` (INST)` after
//! the name; further processes follow on `\tpost-start process N` lines.
//! Errors go to stderr with exit 1 (`status: Unknown job: foo`, `restart: Unknown
//! instance: `, ...). Inspeqtor's parser made `stop/waiting` "unknown output";
//! this one knows every goal and state.

use std::path::PathBuf;

use super::{
    Argv, CommandOutput, InitError, InitFuture, InitKind, InitSystem, Intent, ServiceName, ServiceState, ServiceStatus,
    Timeouts,
};

/// Where upstart is and how long to wait for it.
#[derive(Clone, Debug)]
pub struct UpstartOptions {
    pub initctl: PathBuf,
    /// Where job files are (`/etc/init`); a service is a job when `JOB.conf` is here.
    pub job_dir: PathBuf,
    pub timeouts: Timeouts,
}

impl Default for UpstartOptions {
    fn default() -> Self {
        Self { initctl: "/sbin/initctl".into(), job_dir: "/etc/init".into(), timeouts: Timeouts::default() }
    }
}

/// One job (instance) line of `initctl status` or `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstartStatus {
    pub job: String,
    pub instance: Option<String>,
    /// `start`, `stop` or `respawn`.
    pub goal: String,
    /// `waiting`, `starting`, ..., `running`, ..., `post-stop`.
    pub state: String,
    /// The main process, when it has one.
    pub pid: Option<u32>,
}

const GOALS: &[&str] = &["start", "stop", "respawn"];
const STATES: &[&str] = &[
    "waiting",
    "starting",
    "security-spawning",
    "security",
    "pre-starting",
    "pre-start",
    "spawning",
    "spawned",
    "post-starting",
    "post-start",
    "running",
    "pre-stopping",
    "pre-stop",
    "stopping",
    "killed",
    "post-stopping",
    "post-stop",
];

/// Parses the job lines of `initctl status|start|restart|list` output; lines
/// starting with a tab (further processes) are skipped. `None` when a job line
/// does not have the expected shape.
pub fn parse_initctl_status(output: &str) -> Option<Vec<UpstartStatus>> {
    let mut out = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('\t')) {
        out.push(parse_line(line.trim_end())?);
    }
    Some(out)
}

fn parse_line(line: &str) -> Option<UpstartStatus> {
    let (head, processes) = match line.split_once(", ") {
        Some((head, rest)) => (head, Some(rest)),
        None => (line, None),
    };
    let (name, goal_state) = head.rsplit_once(' ')?;
    let (goal, state) = goal_state.split_once('/')?;
    if !GOALS.contains(&goal) || !STATES.contains(&state) {
        return None;
    }
    let (job, instance) = match name.split_once(" (") {
        Some((job, inst)) => (job, Some(inst.strip_suffix(')')?.to_owned())),
        None => (name, None),
    };
    if job.is_empty() || job.contains(' ') {
        return None;
    }
    let pid = match processes {
        None => None,
        // Only the main process counts; `(post-start) process N` is a helper.
        Some(rest) if rest.starts_with('(') => None,
        Some(rest) => Some(rest.strip_prefix("process ")?.parse().ok()?),
    };
    Some(UpstartStatus { job: job.to_owned(), instance, goal: goal.to_owned(), state: state.to_owned(), pid })
}

impl UpstartStatus {
    fn service_status(&self) -> ServiceStatus {
        let detail = format!("{}/{}", self.goal, self.state);
        // The goal is upstart's intent: `stop` once `initctl stop` (or restart's
        // first half) was asked, before the process is signalled.
        let intent = if self.goal == "stop" { Intent::Stop } else { Intent::Run };
        match (self.goal.as_str(), self.state.as_str(), self.pid) {
            ("start" | "respawn", "running", Some(pid)) => ServiceStatus::up(pid, detail),
            ("start" | "respawn", _, pid) => {
                ServiceStatus { state: ServiceState::Starting, main_pid: pid, ..ServiceStatus::down(detail) }
            }
            (_, _, Some(pid)) => {
                ServiceStatus { state: ServiceState::Stopping, main_pid: Some(pid), ..ServiceStatus::down(detail) }
            }
            _ => ServiceStatus::down(detail),
        }
        .with_intent(intent)
    }
}

/// The error kinds of initctl's stderr, after the `PROGRAM: ` prefix.
fn error_of(out: &CommandOutput) -> &str {
    let err = out.stderr.trim();
    err.split_once(": ").map_or(err, |(_, msg)| msg)
}

pub struct Upstart {
    options: UpstartOptions,
}

impl Upstart {
    pub fn new(options: UpstartOptions) -> Self {
        Self { options }
    }

    async fn initctl(
        &self,
        verb: &str,
        service: &ServiceName,
        action: &'static str,
    ) -> Result<CommandOutput, InitError> {
        let limit = if action == "lookup" { self.options.timeouts.lookup } else { self.options.timeouts.action };
        let argv =
            Argv::new([self.options.initctl.to_string_lossy().into_owned(), verb.to_owned(), service.to_string()])
                .expect("non-empty");
        argv.run(limit).await.map_err(|source| InitError::Command {
            init: InitKind::Upstart,
            service: service.to_string(),
            action,
            source,
        })
    }

    fn failed(service: &ServiceName, action: &'static str, out: &CommandOutput) -> InitError {
        if error_of(out).starts_with("Unknown job") {
            return InitError::NotFound { init: InitKind::Upstart, service: service.to_string(), action };
        }
        InitError::Failed { init: InitKind::Upstart, service: service.to_string(), action, message: out.message() }
    }
}

impl InitSystem for Upstart {
    fn kind(&self) -> InitKind {
        InitKind::Upstart
    }

    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        Box::pin(async move {
            if !self.options.job_dir.join(format!("{service}.conf")).exists() {
                return Ok(ServiceStatus::not_found(format!("no {}/{service}.conf", self.options.job_dir.display())));
            }
            let out = self.initctl("status", service, "lookup").await?;
            if !out.success() {
                let err = error_of(&out);
                if err.starts_with("Unknown job") {
                    return Ok(ServiceStatus::not_found(err));
                }
                // A single-instance job that is not running has no instance to show.
                if err.starts_with("Unknown instance") {
                    return Ok(ServiceStatus::down("stop/waiting"));
                }
                return Err(Self::failed(service, "lookup", &out));
            }
            let lines = parse_initctl_status(&out.stdout).ok_or_else(|| InitError::Unparsable {
                init: InitKind::Upstart,
                service: service.to_string(),
                action: "lookup",
                output: out.stdout.clone(),
            })?;
            // An instance job lists each instance: the service is up while one runs.
            let best = lines
                .iter()
                .max_by_key(|l| (l.pid.is_some() && l.state == "running", l.goal != "stop"))
                .map(UpstartStatus::service_status);
            Ok(best.unwrap_or_else(|| ServiceStatus::down("no instances")))
        })
    }

    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async move {
            let mut out = self.initctl("restart", service, "restart").await?;
            // `restart` of a stopped job fails with "Unknown instance"; start it instead.
            if !out.success() && error_of(&out).starts_with("Unknown instance") {
                out = self.initctl("start", service, "restart").await?;
            }
            if !out.success() {
                return Err(Self::failed(service, "restart", &out));
            }
            match parse_initctl_status(&out.stdout).as_deref() {
                Some([status, ..]) if status.goal == "start" => Ok(()),
                _ => Err(InitError::Unparsable {
                    init: InitKind::Upstart,
                    service: service.to_string(),
                    action: "restart",
                    output: out.stdout,
                }),
            }
        })
    }

    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async move {
            let out = self.initctl("reload", service, "reload").await?;
            if !out.success() {
                return Err(Self::failed(service, "reload", &out));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(job: &str, inst: Option<&str>, goal: &str, state: &str, pid: Option<u32>) -> UpstartStatus {
        UpstartStatus { job: job.into(), instance: inst.map(Into::into), goal: goal.into(), state: state.into(), pid }
    }

    #[test]
    fn initctl_status_forms() {
        assert_eq!(
            parse_initctl_status("puma start/running, process 1234\n"),
            Some(vec![status("puma", None, "start", "running", Some(1234))])
        );
        assert_eq!(
            parse_initctl_status("puma stop/waiting\n"),
            Some(vec![status("puma", None, "stop", "waiting", None)])
        );
        assert_eq!(
            parse_initctl_status("sidekiq (2) start/running, process 77\n"),
            Some(vec![status("sidekiq", Some("2"), "start", "running", Some(77))])
        );
        assert_eq!(
            parse_initctl_status("web start/post-start, (post-start) process 90\n"),
            Some(vec![status("web", None, "start", "post-start", None)])
        );
        assert_eq!(
            parse_initctl_status("web start/running, process 88\n\tpost-start process 90\n"),
            Some(vec![status("web", None, "start", "running", Some(88))])
        );
        assert_eq!(
            parse_initctl_status("web stop/pre-stop, process 88\n"),
            Some(vec![status("web", None, "stop", "pre-stop", Some(88))])
        );
        assert_eq!(parse_initctl_status("init (upstart 1.12.1)\n"), None);
        assert_eq!(parse_initctl_status("puma start/bogus, process 1\n"), None);
    }

    #[test]
    fn goals_and_states_map_to_service_states() {
        assert_eq!(status("a", None, "start", "running", Some(5)).service_status().state, ServiceState::Up);
        assert_eq!(status("a", None, "start", "pre-start", None).service_status().state, ServiceState::Starting);
        assert_eq!(status("a", None, "stop", "waiting", None).service_status().state, ServiceState::Down);
        let stopping = status("a", None, "stop", "killed", Some(5)).service_status();
        assert_eq!((stopping.state, stopping.intent), (ServiceState::Stopping, Intent::Stop));
        assert_eq!(status("a", None, "start", "running", Some(5)).service_status().intent, Intent::Run);
    }

    #[test]
    fn error_messages_lose_their_program_prefix() {
        let out = |stderr: &str| CommandOutput { code: Some(1), stdout: String::new(), stderr: stderr.into() };
        assert_eq!(error_of(&out("status: Unknown job: foo\n")), "Unknown job: foo");
        assert_eq!(error_of(&out("initctl: Unknown instance: \n")), "Unknown instance:");
    }
}
