//! Runs a child with its output captured line by line (standard output and error,
//! in arrival order) into a log file and handed to a callback, until the child
//! exits or a deadline passes; the callback may move the deadline (a guest that
//! has booted gets longer than one still booting).

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::command::describe;

/// How the child's run ended.
pub enum Ended {
    Exited(ExitStatus),
    /// Killed at the deadline.
    TimedOut,
}

pub struct Captured {
    /// Every line, without its line end.
    pub lines: Vec<String>,
    pub ended: Ended,
    pub elapsed: Duration,
}

/// Runs `command` with its output into `log` (replaced) and `on_line`, killing it
/// at `deadline` or at the deadline `on_line` last returned.
pub fn capture(
    command: &mut Command,
    log: &Path,
    deadline: Instant,
    mut on_line: impl FnMut(&str) -> Option<Instant>,
) -> anyhow::Result<Captured> {
    let started = Instant::now();
    let mut log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", describe(command)))?;
    let (send, receive) = mpsc::channel::<String>();
    let readers = [reader(child.stdout.take().unwrap(), send.clone()), reader(child.stderr.take().unwrap(), send)];
    let mut deadline = deadline;
    let mut lines = Vec::new();
    let ended = loop {
        match receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                writeln!(log_file, "{line}")?;
                if let Some(later) = on_line(&line) {
                    deadline = later;
                }
                lines.push(line);
            }
            // Both pipes closed: the child is gone (or closed them and exits now).
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ended::Exited(child.wait()?),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                child.wait()?;
                // What was still in the pipes, the unfinished last line among it
                // (a test's name, printed before its result).
                while let Ok(line) = receive.recv_timeout(Duration::from_millis(500)) {
                    writeln!(log_file, "{line}")?;
                    on_line(&line);
                    lines.push(line);
                }
                writeln!(log_file, "xtask: killed after {:?}", started.elapsed())?;
                break Ended::TimedOut;
            }
        }
    };
    drop(receive);
    // After a kill, a grandchild may still hold the pipes: leave those readers be.
    if matches!(ended, Ended::Exited(_)) {
        for reader in readers {
            let _ = reader.join();
        }
    }
    log_file.flush()?;
    Ok(Captured { lines, ended, elapsed: started.elapsed() })
}

/// A thread sending `pipe`'s lines (lossily decoded, line ends trimmed) to `send`.
fn reader(pipe: impl Read + Send + 'static, send: mpsc::Sender<String>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match pipe.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    if send.send(line.trim_end_matches(['\n', '\r']).to_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    })
}
