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

/// Where cgroup2 is mounted and visible, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    visible_cgroup2(&mountinfo).ok_or(CgroupError::NoCgroup2)
}

/// One line of mountinfo, as far as visibility goes.
struct Mount {
    id: u32,
    parent: u32,
    point: PathBuf,
    cgroup2: bool,
}

/// The cgroup2 mount a path lookup reaches, from mountinfo text. A mount is
/// hidden by one stacked on its mount point (whose parent is then that mount),
/// by one on a directory above it in the same parent mount (made later, or it
/// would be the parent), and with any mount above it that is hidden. A systemd in
/// a cgroup namespace shows why: its `/sys/fs/cgroup` gets a fresh cgroup2 mount
/// over the host's tmpfs, which hides the host's `/sys/fs/cgroup/unified` still
/// listed before it. Reasoned on the mount tree rather than the order of the
/// lines, which is not always the order of mounting (`mount --move` keeps a
/// mount's place). Among visible cgroup2 mounts the canonical `/sys/fs/cgroup…`
/// one wins.
pub fn visible_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    let mounts: Vec<Mount> = mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // Optional fields end at "-"; the file system type follows it.
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Mount {
                id: fields.first()?.parse().ok()?,
                parent: fields.get(1)?.parse().ok()?,
                point: unescape(fields.get(4)?),
                cgroup2: *fields.get(dash + 1)? == "cgroup2",
            })
        })
        .collect();
    let by_id = |id: u32| mounts.iter().find(|m| m.id == id);
    let covered = |m: &Mount| mounts.iter().any(|x| x.parent == m.id && x.id != m.id && x.point == m.point);
    // Whether a lookup of `m`'s mount point gets to `m` (or to what is stacked on it).
    let reached = |m: &Mount| {
        let mut m = m;
        // Bounded: a malformed table could hold a cycle.
        for _ in 0..mounts.len() {
            let Some(parent) = by_id(m.parent).filter(|p| p.id != m.id) else { return true };
            // The parent itself is no sibling (an initramfs's rootfs is its own parent).
            let shadowed = mounts.iter().any(|x| {
                x.parent == parent.id
                    && x.id != m.id
                    && x.id != parent.id
                    && x.point != m.point
                    && m.point.starts_with(&x.point)
            });
            if shadowed || (m.point != parent.point && covered(parent)) {
                return false;
            }
            m = parent;
        }
        false
    };
    mounts
        .iter()
        .filter(|m| m.cgroup2 && !covered(m) && reached(m))
        .map(|m| m.point.clone())
        .min_by_key(|point| !point.starts_with("/sys/fs/cgroup"))
}

/// A mountinfo path with the kernel's octal escapes (`\040` for a space, ...) undone.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
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
    std::fs::metadata(dir).map(|m| m.ino()).map_err(|source| CgroupError::Missing { path: dir.to_path_buf(), source })
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

/// The ids of the cgroup at `dir` and of every cgroup below it.
pub fn ids_below(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        ids.push(meta.ino());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
    }
    ids
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference VM's host (hybrid: cgroup2 at /sys/fs/cgroup/unified).
    const HOST: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
";

    /// The kernel matrix's guest (Debian's 6.1 under qemu): an initramfs whose
    /// rootfs is its own parent.
    const INITRAMFS: &str = "\
1 1 0:2 / / rw - rootfs rootfs rw,size=465108k,nr_inodes=116277,inode64
22 1 0:20 / /proc rw,relatime - proc proc rw
23 1 0:21 / /sys rw,relatime - sysfs sysfs rw
24 1 0:5 / /dev rw,relatime - devtmpfs devtmpfs rw,size=465108k,nr_inodes=116277,mode=755,inode64
25 1 0:22 / /tmp rw,relatime - tmpfs tmpfs rw,inode64
26 23 0:12 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
27 23 0:7 / /sys/kernel/debug rw,relatime - debugfs debugfs rw
28 23 0:23 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw
29 23 0:24 / /sys/fs/bpf rw,relatime - bpf bpf rw
";

    #[test]
    fn the_only_cgroup2_mount_is_found() {
        assert_eq!(visible_cgroup2(INITRAMFS), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(visible_cgroup2(HOST), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(visible_cgroup2(""), None);
    }

    #[test]
    fn a_later_mount_on_a_parent_hides_an_earlier_cgroup2() {
        // A systemd system manager's namespace (init-systems.md §1b): the host's
        // mounts were copied, then cgroup2 mounted over the tmpfs at /sys/fs/cgroup.
        let manager = format!(
            "{HOST}612 31 0:38 /inspeq-test-x /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate\n"
        );
        assert_eq!(visible_cgroup2(&manager), Some(PathBuf::from("/sys/fs/cgroup")));
        // A tmpfs over the parent alone leaves no cgroup2 visible.
        let hidden = format!("{HOST}613 23 0:99 / /sys/fs rw - tmpfs tmpfs rw\n");
        assert_eq!(visible_cgroup2(&hidden), None);
        // A mount below the cgroup2 one hides nothing.
        let below = format!("{HOST}614 41 0:99 / /sys/fs/cgroup/unified/x rw - tmpfs tmpfs rw\n");
        assert_eq!(visible_cgroup2(&below), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn a_later_mount_on_the_same_point_hides_and_a_remount_shows_again() {
        let over = format!("{HOST}615 41 0:99 / /sys/fs/cgroup/unified rw - tmpfs tmpfs rw\n");
        assert_eq!(visible_cgroup2(&over), None);
        let again = format!("{over}616 615 0:38 / /sys/fs/cgroup/unified rw shared:9 master:3 - cgroup2 cgroup2 rw\n");
        assert_eq!(visible_cgroup2(&again), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn the_canonical_location_wins_and_escapes_are_undone() {
        let two =
            "30 1 0:5 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n31 1 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(visible_cgroup2(two), Some(PathBuf::from("/sys/fs/cgroup")));
        let one = "30 1 0:5 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(visible_cgroup2(one), Some(PathBuf::from("/mnt/my cg")));
    }
}
