//! Is the current task watched, and by which watch? A task is watched when its
//! tgid is in `WATCH_TGIDS` (a process tree the daemon named, children inherit at
//! fork) or when its cgroup v2 or an ancestor is in `WATCH_CGROUPS`.
//!
//! `WATCH_TGIDS` keys are pids in the daemon's pid namespace (the daemon inserts
//! what it reads from /proc; see `pidns`), so the lookup there uses the
//! translated tgid; a task that has no pid in the daemon's namespace is not
//! watched at all.

use aya_ebpf::Global;
use aya_ebpf::{helpers::generated::bpf_get_current_ancestor_cgroup_id, macros::map, maps::HashMap};
use inspeq_common::WatchConfig;

use crate::{pidns, task};

/// Deepest cgroup level looked at; systemd services sit at level 2 or 3.
const MAX_CGROUP_DEPTH: i32 = 16;

/// How ancestors are found, set by the daemon: `bpf_get_current_ancestor_cgroup_id`
/// where tracing programs may call it (6.1+), else a walk of the task's cgroup
/// through `cgroup.ancestor_ids[]` (before 6.0) or `cgroup.ancestors[]`. The value
/// sits in read-only data, so the verifier drops the branches not taken and never
/// sees a helper call the kernel does not offer.
#[unsafe(no_mangle)]
static CGROUP_WALK: Global<u32> = Global::new(WALK_HELPER);
const WALK_HELPER: u32 = inspeq_common::CGROUP_WALK_HELPER;
const WALK_ANCESTOR_IDS: u32 = inspeq_common::CGROUP_WALK_ANCESTOR_IDS;

#[map(name = "WATCH_CGROUPS")]
pub static WATCH_CGROUPS: HashMap<u64, WatchConfig> = HashMap::with_max_entries(4096, 0);

// Not preallocated: most slots stay empty, and 6.1+ kernels allow it in tracing programs.
#[map(name = "WATCH_TGIDS")]
pub static WATCH_TGIDS: HashMap<u32, WatchConfig> = HashMap::with_max_entries(65536, 1);

/// How the current task is watched.
#[derive(Clone, Copy)]
pub enum Origin {
    /// Through `WATCH_TGIDS`.
    Tree,
    /// Through `WATCH_CGROUPS`.
    Cgroup,
}

/// The watch of the current task, deepest cgroup winning over its ancestors, a
/// process-tree watch winning over both, and the task's tgid as the daemon knows
/// it. `host_tgid` is the current tgid in the initial namespace (what
/// `bpf_get_current_pid_tgid` says); outside it the tgid is translated once, and
/// only when needed: before the tree lookup when the daemon has tree watches, else
/// only for a task a cgroup watch covers.
///
/// The loop keeps the deepest watched cgroup's *id* and looks it up once more at
/// the end. Carrying the value (or its pointer) through the loop instead lets
/// LLVM merge the `None` paths into code the verifier rejects: a spill of a
/// register never written (`R9 !read_ok`, once `WatchConfig` grew to 48 bytes),
/// or an OR of two maybe-null map pointers.
#[inline(always)]
pub fn current(host_tgid: u32) -> Option<(WatchConfig, Origin, u32)> {
    let translate = pidns::translating();
    // In the daemon's namespace; 0 while not yet translated (no task there has pid 0).
    let mut tgid = if translate { 0 } else { host_tgid };
    if !translate || pidns::tree_watches() {
        if translate {
            tgid = pidns::current_tgid()?;
        }
        if let Some(cfg) = unsafe { WATCH_TGIDS.get(tgid) } {
            return Some((*cfg, Origin::Tree, tgid));
        }
    }
    let walk = CGROUP_WALK.load();
    // Without the helper: the task's cgroup2 cgroup and its depth, read once.
    let (cgroup, depth) = if walk == WALK_HELPER { (core::ptr::null(), 0) } else { task::current_cgroup()? };
    let mut found: u64 = 0;
    let mut level = 1;
    while level <= MAX_CGROUP_DEPTH {
        // Level 0 is the root; past the task's own depth the helper returns 0.
        let id = if walk == WALK_HELPER {
            unsafe { bpf_get_current_ancestor_cgroup_id(level) }
        } else if level > depth {
            0
        } else {
            task::cgroup_ancestor_id(cgroup, level, walk == WALK_ANCESTOR_IDS).unwrap_or(0)
        };
        if id == 0 {
            break;
        }
        if unsafe { WATCH_CGROUPS.get(id) }.is_some() {
            found = id;
        }
        level += 1;
    }
    if found == 0 {
        return None;
    }
    let cfg = unsafe { WATCH_CGROUPS.get(found) }?;
    if translate && tgid == 0 {
        tgid = pidns::current_tgid()?;
    }
    Some((*cfg, Origin::Cgroup, tgid))
}
