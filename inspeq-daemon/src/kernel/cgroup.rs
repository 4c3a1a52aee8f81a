//! cgroup v2 paths and ids. A cgroup's id (what `bpf_get_current_cgroup_id` returns)
//! is the inode number of its directory in the cgroup2 mount, which is
//! `/sys/fs/cgroup` on a pure v2 host and `/sys/fs/cgroup/unified` on a hybrid one.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Why a cgroup could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system is mounted")]
    NoCgroup2,
    #[error("cgroup {path} does not exist")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not inside the cgroup2 mount {root}")]
    Outside { path: PathBuf, root: PathBuf },
}

/// Where cgroup2 is mounted, from `/proc/self/mounts`.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        // Prefer the canonical locations when cgroup2 is mounted twice.
        .min_by_key(|dir| !(dir.starts_with("/sys/fs/cgroup")))
        .ok_or(CgroupError::NoCgroup2)
}

/// Resolves a user-given cgroup: an absolute path inside the cgroup2 mount, or a
/// path relative to it (`system.slice/nginx.service`).
pub fn resolve(path: &Path) -> Result<PathBuf, CgroupError> {
    let root = cgroup2_root()?;
    let full = if path.is_absolute() { path.to_path_buf() } else { root.join(path) };
    if !full.starts_with(&root) {
        return Err(CgroupError::Outside { path: full, root });
    }
    Ok(full)
}

/// The id of the cgroup at `dir` (an absolute path in the cgroup2 mount).
pub fn id_of(dir: &Path) -> Result<u64, CgroupError> {
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Missing { path: dir.to_path_buf(), source })
}

/// The directory of the cgroup with `id`, found by walking the cgroup2 tree (only
/// the /proc fallback needs this, once per watch).
pub fn path_of(id: u64) -> Option<PathBuf> {
    let root = cgroup2_root().ok()?;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        if id_of(&dir).ok() == Some(id) {
            return Some(dir);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    None
}

/// The pids in the cgroup at `dir` and its descendants.
pub fn procs_recursive(dir: &Path, out: &mut Vec<u32>) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
}
