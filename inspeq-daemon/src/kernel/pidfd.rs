//! The pidfd tier, for hosts where neither eBPF nor the process connector can
//! be used (no CAP_NET_ADMIN, say) but the kernel has `pidfd_open` (Linux 5.3).
//!
//! Membership comes from the /proc scan of [`ProcMonitor`], once per cycle; for
//! every process that scan knows (up to [`MAX_PIDFDS`], oldest pids first, so a
//! service's main process is among them) this tier holds a pidfd, which becomes
//! readable the moment the process exits. The exit is reported then, not at the
//! next scan. Its status is known only if the process is still a zombie when
//! inspeq looks (its parent has not reaped it yet); otherwise it is
//! [`ExitStatus::Unknown`]: a pidfd of a process that is not inspeq's child
//! cannot be waited on. Processes that live less than a cycle are never seen.

use std::{
    collections::HashMap,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    task::Poll,
};

use tokio::io::{Interest, unix::AsyncFd};

use super::{
    KernelError, KernelStats, Options,
    fallback::{ProcMonitor, zombie_status},
    observation::{ExitStatus, Observation, WatchId},
    pidns::PidNamespace,
    watch::{WatchSettings, WatchTarget},
};

/// At most this many pidfds are held (each is a file descriptor, and a daemon
/// under systemd has a soft limit of 1024); processes beyond it are left to the
/// cycle's scan.
pub const MAX_PIDFDS: usize = 256;

/// Why pidfds cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    #[error("pidfd_open is not available (Linux 5.3 or later)")]
    Unsupported(#[source] io::Error),
    /// Its scans read /proc, whose pids must be inspeqd's.
    #[error("{0}")]
    ForeignProc(String),
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(pid, flags) has no memory arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub struct PidfdMonitor {
    proc: ProcMonitor,
    pidfds: HashMap<u32, AsyncFd<OwnedFd>>,
}

impl PidfdMonitor {
    pub fn start(options: &Options, pid_ns: &PidNamespace) -> Result<Self, KernelError> {
        if let Some(why) = pid_ns.proc_refusal() {
            return Err(KernelError::Pidfd(PidfdError::ForeignProc(why)));
        }
        // Probe with our own pid: ENOSYS on kernels before 5.3, EPERM under some
        // seccomp policies.
        pidfd_open(std::process::id()).map_err(|e| KernelError::Pidfd(PidfdError::Unsupported(e)))?;
        Ok(Self { proc: ProcMonitor::new(options), pidfds: HashMap::new() })
    }

    pub fn watch(&mut self, id: WatchId, target: &WatchTarget, settings: WatchSettings) -> Result<(), KernelError> {
        self.proc.watch(id, target, settings)?;
        self.sync();
        Ok(())
    }

    pub fn unwatch(&mut self, id: WatchId) {
        self.proc.unwatch(id);
        self.sync();
    }

    /// Holds a pidfd for each process the scan knows (up to the limit), and
    /// drops those of processes it no longer knows.
    fn sync(&mut self) {
        let mut known: Vec<(u32, WatchId)> = self.proc.known().collect();
        known.sort_unstable();
        self.pidfds.retain(|pid, _| known.binary_search_by_key(pid, |(p, _)| *p).is_ok());
        for (pid, _) in known {
            if self.pidfds.len() >= MAX_PIDFDS {
                break;
            }
            if self.pidfds.contains_key(&pid) {
                continue;
            }
            // Gone already (ESRCH): the next scan reports it.
            let Ok(fd) = pidfd_open(pid) else { continue };
            // SAFETY: the AsyncFd owns the descriptor, which stays open as long as it.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                Ok(fd) => {
                    self.pidfds.insert(pid, fd);
                }
                Err(err) => tracing::warn!("kernel: cannot register a pidfd with tokio: {err}"),
            }
        }
    }

    /// Waits for exits (pidfds) and the cycle's scan; returns when `out` is not empty.
    pub async fn next_batch(&mut self, out: &mut Vec<Observation>) -> Result<(), KernelError> {
        loop {
            let Self { proc, pidfds } = self;
            let exited = std::future::poll_fn(|cx| {
                // Every pidfd registers the waker; the ready ones are returned.
                let ready: Vec<u32> =
                    pidfds.iter().filter(|(_, fd)| fd.poll_read_ready(cx).is_ready()).map(|(pid, _)| *pid).collect();
                if ready.is_empty() { Poll::Pending } else { Poll::Ready(ready) }
            });
            tokio::select! {
                pids = exited => {
                    for pid in pids {
                        self.pidfds.remove(&pid);
                        // Readable means exited; a zombie still has its status.
                        let status = zombie_status(pid).unwrap_or(ExitStatus::Unknown);
                        if let Some(o) = self.proc.exited(pid, status) {
                            out.push(o);
                        }
                    }
                }
                () = proc.tick(out) => self.sync(),
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    pub fn stats(&self) -> KernelStats {
        self.proc.stats()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pidfd_of_ourselves_opens() {
        // Every kernel inspeq supports has pidfd_open (5.3+).
        super::pidfd_open(std::process::id()).expect("pidfd_open");
    }
}
