//! One inspeqd per state directory: an exclusive `flock` on `STATE/inspeqd.lock`,
//! held for the process's life, taken before anything in the directory is read.
//!
//! Two daemons on one outbox would each deliver every pending alert (a second
//! inspeqd started by hand, with another socket, beside the packaged one). The
//! kernel drops the lock when the process dies however it dies, so a stale
//! file never blocks a start; the pid inside is only there to name the holder
//! in the error.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "inspeqd.lock";

/// Holds the state directory until dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "state directory {} is in use by another inspeqd{} (it holds {}); give each inspeqd its own --state-dir",
        dir.display(),
        pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
        dir.join(LOCK_FILE).display()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
}

impl StateLock {
    /// Creates `dir` if need be and locks it, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LockError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(LOCK_FILE);
        // Not truncated at open: until the lock is ours, the pid in it is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse { dir: dir.to_owned(), pid });
            }
            return Err(LockError::Io { path, source: err });
        }
        let write_pid = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(io_err(&path))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let scratch = tempfile::tempdir().unwrap();
        // A directory the lock creates, as the daemon's state_dir may not exist yet.
        let dir = scratch.path().join("state");
        let first = StateLock::acquire(&dir).unwrap();
        let err = StateLock::acquire(&dir).unwrap_err();
        assert!(matches!(err, LockError::InUse { pid: Some(pid), .. } if pid == std::process::id()), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("state directory {} is in use by another inspeqd, pid ", dir.display())),
            "{text}"
        );
        drop(first);
        let _again = StateLock::acquire(&dir).expect("free once the holder is gone");
    }
}
