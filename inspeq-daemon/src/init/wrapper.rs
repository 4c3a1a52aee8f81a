//! Is the main pid the server, or something in front of it? Inspeqtor tracked the
//! wrong pid behind upstart's `sh -c` and behind `server | logger` (its issue #100,
//! sidekiq#2610): the shell outlives a crashed server, so the crash went unseen.
//! inspeq reports the wrapper in `status` and watches the whole tree or cgroup.

use std::path::Path;

/// What stands in front of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrapper {
    /// The main process is a shell; `server` is its first child that is not
    /// `logger`, when it has one.
    Shell { shell: String, server: Option<u32> },
    /// The main process is a shell running `server | logger`.
    LoggerPipeline { shell: String, server: Option<u32>, logger: u32 },
    /// The main process is `logger` itself (a pidfile or an `exec` got the last
    /// element of a pipeline).
    Logger,
}

impl Wrapper {
    /// The process that is most likely the real server.
    pub fn server_pid(&self) -> Option<u32> {
        match self {
            Self::Shell { server, .. } | Self::LoggerPipeline { server, .. } => *server,
            Self::Logger => None,
        }
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        match self {
            Self::Shell { shell, server: Some(pid) } => format!("main pid is a {shell} wrapper; server is pid {pid}"),
            Self::Shell { shell, server: None } => format!("main pid is a {shell} wrapper"),
            Self::LoggerPipeline { shell, server, logger } => match server {
                Some(pid) => {
                    format!("main pid is a {shell} running a pipeline into logger (pid {logger}); server is pid {pid}")
                }
                None => format!("main pid is a {shell} running a pipeline into logger (pid {logger})"),
            },
            Self::Logger => "main pid is logger, not the server".to_owned(),
        }
    }
}

const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"];

/// The program a process runs: the file name of `/proc/PID/exe`, else its comm.
fn program(pid: u32) -> Option<String> {
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(name) = exe.file_name() {
            return Some(name.to_string_lossy().trim_end_matches(" (deleted)").to_owned());
        }
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_owned())
}

/// The children of `pid`, oldest first.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    out
}

/// Checks whether `pid` is a wrapper rather than the server. `None` when it is
/// not (or is gone).
pub fn detect_wrapper(pid: u32) -> Option<Wrapper> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    let name = program(pid)?;
    if name == "logger" {
        return Some(Wrapper::Logger);
    }
    if !SHELLS.contains(&name.as_str()) {
        return None;
    }
    let kids: Vec<(u32, Option<String>)> = children(pid).into_iter().map(|c| (c, program(c))).collect();
    let logger = kids.iter().find(|(_, p)| p.as_deref() == Some("logger")).map(|(c, _)| *c);
    let server = kids.iter().find(|(_, p)| p.as_deref() != Some("logger")).map(|(c, _)| *c);
    Some(match logger {
        Some(logger) => Wrapper::LoggerPipeline { shell: name, server, logger },
        None => Wrapper::Shell { shell: name, server },
    })
}

#[cfg(test)]
mod tests {
    use std::{process::Command, time::Duration};

    use super::*;

    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let pid = self.0.id();
            for c in children(pid) {
                unsafe { libc::kill(c as i32, libc::SIGKILL) };
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Waits until `pid` has `kids` children that have exec'd their programs
    /// (a forked child runs as the shell until then).
    fn settle(pid: u32, kids: usize) {
        let shell = program(pid);
        for _ in 0..200 {
            let ready = children(pid).into_iter().filter(|c| program(*c) != shell).count();
            if ready >= kids {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_server_is_not_a_wrapper() {
        let child = Killed(Command::new("sleep").arg("10").spawn().unwrap());
        assert_eq!(detect_wrapper(child.0.id()), None);
    }

    #[test]
    fn a_shell_running_server_piped_into_logger_is_reported_with_both_pids() {
        let child = Killed(
            Command::new("/bin/sh").args(["-c", "sleep 10 | logger -t inspeq-wrapper-test; true"]).spawn().unwrap(),
        );
        let pid = child.0.id();
        settle(pid, 2);
        match detect_wrapper(pid) {
            Some(Wrapper::LoggerPipeline { server: Some(server), logger, .. }) => {
                assert_eq!(program(server).as_deref(), Some("sleep"));
                assert_eq!(program(logger).as_deref(), Some("logger"));
            }
            other => panic!("expected a logger pipeline, got {other:?}"),
        }
    }

    #[test]
    fn a_shell_in_front_of_a_server_is_reported() {
        let child = Killed(Command::new("/bin/sh").args(["-c", "sleep 10; true"]).spawn().unwrap());
        let pid = child.0.id();
        settle(pid, 1);
        let wrapper = detect_wrapper(pid).expect("a shell is a wrapper");
        assert_eq!(program(wrapper.server_pid().unwrap()).as_deref(), Some("sleep"));
    }
}
