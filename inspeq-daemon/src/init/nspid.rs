//! A manager's pids as inspeqd's. A systemd that is PID 1 of its own pid namespace
//! (a container, `systemd-nspawn`, the system-scope test harness) reports
//! `MainPID` in that namespace: 159 there may be 22518 here. Every other pid inspeq
//! handles is in its own namespace (the kernel side's exits, `cgroup.procs`, /proc),
//! so the main pid is translated on lookup.
//!
//! The rule: the main process is the member of the unit's cgroup (its
//! `cgroup.procs` and those below) whose `/proc/PID/status` `NSpid:` line (its pid
//! in each namespace from /proc's down to its own) ends with `MainPID`; when several
//! do, the one in the shallowest namespace (the shortest line), since every process
//! of the unit runs in the manager's namespace or one nested below it. When the
//! manager shares inspeqd's namespace, `MainPID` itself is such a member (its line
//! is just `MainPID`) and is taken at once.
//!
//! Limits: the unit must have a cgroup inspeq can read (the main process is found
//! among its members), inspeqd's namespace must be the manager's or an ancestor of
//! it (from inside a sibling container the manager's processes have no pid here),
//! /proc must be inspeqd's namespace's, and a main process that runs in a pid
//! namespace of its own below the manager's (systemd's `PrivatePIDs=`) is not found.

use std::path::Path;

use crate::kernel::cgroup;

/// The pids of `/proc/PID/status`'s `NSpid:` line, from /proc's namespace down to
/// the process's own.
pub fn nspid(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Option<Vec<u32>> = line.split_whitespace().map(|p| p.parse().ok()).collect();
    pids.filter(|p| !p.is_empty())
}

/// Of `members` (each with its `NSpid` list), the one whose innermost pid is
/// `manager_pid`, in the shallowest namespace; `None` when there is none, or two
/// at the same depth (no way to tell them apart).
pub fn pick(manager_pid: u32, members: impl IntoIterator<Item = (u32, Vec<u32>)>) -> Option<u32> {
    let mut best: Option<(usize, u32)> = None;
    let mut tied = false;
    for (pid, levels) in members {
        if levels.last() != Some(&manager_pid) {
            continue;
        }
        match best {
            Some((depth, _)) if depth < levels.len() => {}
            Some((depth, _)) if depth == levels.len() => tied = true,
            _ => {
                best = Some((levels.len(), pid));
                tied = false;
            }
        }
    }
    if tied { None } else { best.map(|(_, pid)| pid) }
}

fn nspid_of(pid: u32) -> Option<Vec<u32>> {
    nspid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `manager_pid` (a manager's `MainPID`) as inspeqd's pid, found among the
/// processes of the unit's cgroup at `cgroup_dir`; `None` when no member is it.
pub fn main_pid_here(manager_pid: u32, cgroup_dir: &Path) -> Option<u32> {
    let mut members = Vec::new();
    cgroup::procs_recursive(cgroup_dir, &mut members);
    // Same namespace: MainPID is a member whose only pid is MainPID.
    if members.contains(&manager_pid) && nspid_of(manager_pid).as_deref() == Some(&[manager_pid][..]) {
        return Some(manager_pid);
    }
    pick(manager_pid, members.into_iter().filter_map(|pid| Some((pid, nspid_of(pid)?))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lines_are_read_outermost_first() {
        let status = "Name:\tperl\nTgid:\t22518\nNSpid:\t22518\t159\nNSpgid:\t22518\t159\n";
        assert_eq!(nspid(status), Some(vec![22518, 159]));
        assert_eq!(nspid("Name:\tx\nNSpid:\t7\n"), Some(vec![7]));
        assert_eq!(nspid("Name:\tx\n"), None);
        assert_eq!(nspid("NSpid:\t\n"), None);
        assert_eq!(nspid("NSpid:\t1 x\n"), None);
    }

    #[test]
    fn the_member_whose_innermost_pid_is_main_pid_is_the_main_process() {
        // A manager one namespace down: its MainPID 159 is 22518 here.
        let members = [(22518, vec![22518, 159]), (22530, vec![22530, 171])];
        assert_eq!(pick(159, members.clone()), Some(22518));
        assert_eq!(pick(171, members.clone()), Some(22530));
        assert_eq!(pick(999, members), None);
        // The same namespace: MainPID is its own pid here.
        assert_eq!(pick(4242, [(4242, vec![4242]), (4250, vec![4250])]), Some(4242));
    }

    #[test]
    fn a_worker_in_a_nested_namespace_with_the_same_number_loses_to_the_shallower() {
        // The main process (159 in the manager's namespace) runs a worker that is
        // 159 in a namespace of its own, one level deeper.
        let members = [(22600, vec![22600, 160, 159]), (22518, vec![22518, 159])];
        assert_eq!(pick(159, members), Some(22518));
        // Two at the same depth cannot be told apart.
        assert_eq!(pick(159, [(1, vec![1, 159]), (2, vec![2, 159])]), None);
    }

    #[test]
    fn this_process_is_found_in_its_own_cgroup() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let (Some(relative), Ok(root)) = (text.lines().find_map(|l| l.strip_prefix("0::")), cgroup::cgroup2_root())
        else {
            eprintln!(
                "skipped init::nspid::tests::this_process_is_found_in_its_own_cgroup: no cgroup2 membership to read here"
            );
            return;
        };
        let dir = root.join(relative.trim_start_matches('/'));
        let me = std::process::id();
        assert_eq!(main_pid_here(me, &dir), Some(me), "{}", dir.display());
    }
}
