//! Which pid namespace inspeqd runs in, and whether its /proc is that namespace's.
//!
//! Every pid inspeq handles is a number in its own pid namespace: `cgroup.procs`
//! lists the reader's numbers, `kill` and `pidfd_open` take them, and the kernel
//! side reports them (the eBPF programs translate when inspeqd is not in the
//! initial namespace). Two things depend on more than that: the netlink process
//! connector speaks only initial-namespace pids (and ignores listeners outside the
//! initial pid and user namespaces), and everything read from /proc — the pidfd and
//! /proc tiers' scans, a process tree's members, RSS seeds — names processes by the
//! numbers of the namespace /proc was mounted for, which is inspeqd's only when its
//! /proc is (`unshare --pid --fork` without `--mount-proc` leaves the parent's).

use std::os::unix::fs::MetadataExt as _;

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, fixed since 3.8).
pub const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;
/// The inode of the initial user namespace (`PROC_USER_INIT_INO`).
pub const INITIAL_USER_NS: u64 = 0xEFFF_FFFD;

/// inspeqd's pid namespace as far as the kernel side cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidNamespace {
    /// The inode number of `/proc/self/ns/pid` (the namespace's `ns.inum`).
    pub inode: u64,
    /// Whether the user namespace is the initial one too.
    pub initial_user: bool,
    /// `/proc/self` names inspeqd by its own pid, so /proc speaks its numbers.
    /// `None` when /proc could not be read at all.
    pub proc_is_ours: Option<bool>,
}

impl PidNamespace {
    /// The namespace of the calling process. An unreadable `/proc/self/ns/pid`
    /// (no /proc) is taken as the initial namespace: nothing can tell otherwise,
    /// and the tiers that read /proc will say what fails.
    pub fn current() -> Self {
        let inode = |path: &str, initial| std::fs::metadata(path).map(|m| m.ino()).unwrap_or(initial);
        let proc_is_ours = std::fs::read_link("/proc/self")
            .ok()
            .map(|link| link.to_str().and_then(|s| s.parse::<u32>().ok()) == Some(std::process::id()));
        Self {
            inode: inode("/proc/self/ns/pid", INITIAL_PID_NS),
            initial_user: inode("/proc/self/ns/user", INITIAL_USER_NS) == INITIAL_USER_NS,
            proc_is_ours,
        }
    }

    /// The initial pid namespace: kernel pids are inspeqd's pids.
    pub fn is_initial(&self) -> bool {
        self.inode == INITIAL_PID_NS
    }

    /// Why the process connector cannot serve here, if it cannot: it reports
    /// initial-namespace pids and the kernel ignores listeners outside the initial
    /// pid and user namespaces.
    pub fn proc_connector_refusal(&self) -> Option<String> {
        if self.is_initial() && self.initial_user {
            return None;
        }
        let which = if self.is_initial() { "user namespace" } else { "pid namespace" };
        Some(format!(
            "inspeqd runs outside the initial {which} (pid:[{}]), and the process connector serves only listeners in the initial pid and user namespaces, with their pids",
            self.inode
        ))
    }

    /// Why /proc cannot be trusted to name processes by inspeqd's numbers, if so.
    pub fn proc_refusal(&self) -> Option<String> {
        match self.proc_is_ours {
            Some(true) => None,
            Some(false) => Some(format!(
                "/proc is not mounted for inspeqd's pid namespace (pid:[{}]; /proc/self is not pid {}), so the pids it lists name other processes; mount a proc for this namespace (unshare --mount-proc, a container's own /proc)",
                self.inode,
                std::process::id()
            )),
            None => Some("/proc/self is not readable".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespaces_need_no_refusal() {
        let ns = PidNamespace { inode: INITIAL_PID_NS, initial_user: true, proc_is_ours: Some(true) };
        assert!(ns.is_initial());
        assert_eq!(ns.proc_connector_refusal(), None);
        assert_eq!(ns.proc_refusal(), None);
    }

    #[test]
    fn a_child_namespace_refuses_the_process_connector_and_a_foreign_proc() {
        let ns = PidNamespace { inode: 4_026_532_179, initial_user: true, proc_is_ours: Some(false) };
        assert!(!ns.is_initial());
        assert!(ns.proc_connector_refusal().unwrap().contains("pid:[4026532179]"));
        assert!(ns.proc_refusal().unwrap().contains("/proc is not mounted for inspeqd's pid namespace"));
        let user = PidNamespace { inode: INITIAL_PID_NS, initial_user: false, proc_is_ours: Some(true) };
        assert!(user.proc_connector_refusal().unwrap().contains("user namespace"));
    }

    #[test]
    fn this_process_reads_its_own_namespace() {
        let ns = PidNamespace::current();
        // The test runs wherever cargo runs it; /proc is its own namespace's there.
        assert_eq!(ns.proc_is_ours, Some(true));
    }
}
