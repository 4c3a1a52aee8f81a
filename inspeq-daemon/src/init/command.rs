//! Running an init system's commands: always an argv, never a shell, always with
//! a timeout after which the command's whole process group is killed.
//!
//! Output is read until the command exits, then for a short grace only: an
//! init.d script or a `restart_command` may leave a daemon behind that inherited
//! its stdout, and waiting for that pipe's end would wait for the daemon's death.

use std::{fmt, process::Stdio, time::Duration};

use tokio::{io::AsyncReadExt as _, sync::watch};

/// How long output is still read after the command exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// A command and its arguments, run without a shell.
#[derive(Clone, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    /// `None` when `args` is empty.
    pub fn new<I, S>(args: I) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        (!args.is_empty()).then_some(Self(args))
    }

    pub fn program(&self) -> &str {
        &self.0[0]
    }

    pub fn args(&self) -> &[String] {
        &self.0[1..]
    }

    /// Runs the command within `limit`.
    pub async fn run(&self, limit: Duration) -> Result<CommandOutput, CommandError> {
        run(self, limit).await
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"\\$".contains(c)) {
                write!(f, "{arg:?}")?;
            } else {
                f.write_str(arg)?;
            }
        }
        Ok(())
    }
}

/// What a finished command said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stderr, else stdout, trimmed: what to show a person when it failed.
    pub fn message(&self) -> String {
        let err = self.stderr.trim();
        if err.is_empty() { self.stdout.trim().to_owned() } else { err.to_owned() }
    }
}

/// Why a command did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("starting `{argv}`")]
    Spawn {
        argv: Argv,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}` did not finish within {after:?} and was killed")]
    Timeout { argv: Argv, after: Duration },
    #[error("waiting for `{argv}`")]
    Wait {
        argv: Argv,
        #[source]
        source: std::io::Error,
    },
}

async fn run(argv: &Argv, limit: Duration) -> Result<CommandOutput, CommandError> {
    let mut command = tokio::process::Command::new(argv.program());
    command
        .args(argv.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| CommandError::Spawn { argv: argv.clone(), source })?;
    let pgid = child.id().map(|id| id as i32);
    let (exited_tx, exited_rx) = watch::channel(false);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let all = async {
        let wait = async {
            let status = child.wait().await;
            let _ = exited_tx.send(true);
            status
        };
        tokio::join!(wait, drain(stdout, exited_rx.clone()), drain(stderr, exited_rx.clone()))
    };
    match tokio::time::timeout(limit, all).await {
        Ok((status, stdout, stderr)) => {
            let status = status.map_err(|source| CommandError::Wait { argv: argv.clone(), source })?;
            Ok(CommandOutput {
                code: status.code(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            })
        }
        Err(_) => {
            if let Some(pgid) = pgid {
                // SAFETY: kill(2) with a negative pid signals the group we created.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            Err(CommandError::Timeout { argv: argv.clone(), after: limit })
        }
    }
}

/// Reads `pipe` to its end, or until the command has exited and the grace passed.
async fn drain(pipe: Option<impl tokio::io::AsyncRead + Unpin>, mut exited: watch::Receiver<bool>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else { return out };
    let grace = async move {
        let _ = exited.wait_for(|e| *e).await;
        tokio::time::sleep(OUTPUT_GRACE).await;
    };
    tokio::pin!(grace);
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            read = pipe.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            },
            () = &mut grace => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn arguments_reach_the_program_verbatim_without_a_shell() {
        let argv = Argv::new(["/bin/echo", "a b", "$(id)", ";"]).unwrap();
        let out = rt().block_on(argv.run(Duration::from_secs(5))).unwrap();
        assert_eq!(out.stdout, "a b $(id) ;\n");
        assert!(out.success());
    }

    #[test]
    fn exit_codes_and_stderr_are_reported() {
        let argv = Argv::new(["/bin/sh", "-c", "echo oops >&2; exit 3"]).unwrap();
        let out = rt().block_on(argv.run(Duration::from_secs(5))).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.message(), "oops");
    }

    #[test]
    fn a_hung_command_and_its_children_are_killed_at_the_timeout() {
        let scratch = tempfile::tempdir().unwrap();
        let marker = scratch.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let argv = Argv::new(["/bin/sh", "-c", &script]).unwrap();
        let started = Instant::now();
        let err = rt().block_on(argv.run(Duration::from_millis(300))).unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: u32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!super::super::process_alive(child), "the command's child {child} survived the timeout");
    }

    #[test]
    fn a_daemon_holding_stdout_does_not_hold_up_the_command() {
        // The daemon detaches into its own session but keeps the pipe.
        let argv = Argv::new(["/bin/sh", "-c", "echo started; setsid sleep 5 & exit 0"]).unwrap();
        let started = Instant::now();
        let out = rt().block_on(argv.run(Duration::from_secs(10))).unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert_eq!(out.stdout, "started\n");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let argv = Argv::new(["/nonexistent/initctl", "status", "x"]).unwrap();
        assert!(matches!(rt().block_on(argv.run(Duration::from_secs(1))), Err(CommandError::Spawn { .. })));
    }
}
