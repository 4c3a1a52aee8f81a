//! The outbox on disk: a directory per route of segment files
//! (`<route>/<first seq>.jsonl`, [`super::segment`]'s format), each written
//! atomically and durably and rewritten as its alerts are delivered.
//!
//! Reading back is tolerant: what cannot be read costs only itself. A damaged
//! record is counted and its bytes kept in `<segment>.bad`, the intact records
//! beside it are delivered; an entry that is not a regular file (a directory or
//! a symlink named like a segment) is skipped with a warning naming it. Only a
//! route directory that cannot be listed at all is an error.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use super::segment;
use crate::alert::Alert;

/// The file name of a segment whose first alert has sequence number `seq`:
/// zero-padded, so names sort as sequence numbers do.
pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:020}.jsonl")
}

/// Whether `path` names a segment: this version's `.jsonl`, or the previous
/// version's `.json`.
fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl" || e == "json")
}

/// One segment file and the alerts in it not yet delivered. Only the writer
/// thread reads or changes it; workers carry it along with their alerts.
pub(super) struct Segment {
    state: Mutex<State>,
}

struct State {
    path: PathBuf,
    alerts: Vec<Alert>,
    /// Written: the file exists. Until then striking and moving touch only memory.
    on_disk: bool,
}

impl Segment {
    /// Writes `alerts` to a new segment at `path`.
    #[cfg(test)]
    pub(super) fn create(path: PathBuf, alerts: Vec<Alert>) -> io::Result<Arc<Self>> {
        let segment = Self::pending(path, alerts);
        segment.persist()?;
        Ok(segment)
    }

    /// A segment of `alerts` at `path`, not written yet: its alerts can go to
    /// their workers while [`Self::persist`] syncs it, so a delivery never waits
    /// for the disk. Only the writer thread strikes or moves segments, after it
    /// has persisted what it handed out, so the file is there by then.
    pub(super) fn pending(path: PathBuf, alerts: Vec<Alert>) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State { path, alerts, on_disk: false }) })
    }

    /// Stamps `stage` for each of its alerts ([`crate::timing`]).
    pub(super) fn stamp(&self, stage: &str) {
        if crate::timing::enabled() {
            for alert in &self.state().alerts {
                crate::timing::stamp(stage, &alert.service, format_args!(" event={}", alert.event.kind()));
            }
        }
    }

    /// Writes the segment with the alerts not struck meanwhile (none can be: see [`Self::pending`]).
    pub(super) fn persist(&self) -> io::Result<()> {
        let mut state = self.state();
        if state.on_disk || state.alerts.is_empty() {
            return Ok(());
        }
        write_atomically(&state.path, &segment::encode(&state.alerts))?;
        state.on_disk = true;
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn path(&self) -> PathBuf {
        self.state().path.clone()
    }

    /// Removes the alerts with sequence numbers `seqs`: the file is rewritten
    /// with the rest, or removed when none is left.
    pub(super) fn strike(&self, seqs: &[u64]) -> io::Result<()> {
        let mut state = self.state();
        state.alerts.retain(|a| !seqs.contains(&a.seq));
        if !state.on_disk {
            // Never written (writing it failed): nothing on disk to change.
            return Ok(());
        }
        if state.alerts.is_empty() {
            remove_durably(&state.path)
        } else {
            write_atomically(&state.path, &segment::encode(&state.alerts))
        }
    }

    /// Moves the file into `dir` (the same file system: a rename). The caller
    /// syncs both directories once it has moved what it moves.
    pub(super) fn move_to(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        let to = dir.join(state.path.file_name().unwrap_or_default());
        if state.on_disk {
            fs::rename(&state.path, &to)?;
        }
        state.path = to;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it) and
/// durably (the file, then its directory, synced).
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is.
    sync_dir(parent(path))
}

fn remove_durably(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    sync_dir(parent(path))
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Makes renames and removals in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a route directory held.
#[derive(Default)]
pub(super) struct Loaded {
    /// Segments with alerts to deliver.
    pub segments: Vec<Arc<Segment>>,
    /// Records (and entries) that could not be read back.
    pub unreadable: u64,
}

impl Loaded {
    /// The alerts to deliver, each with its segment, oldest first.
    pub(super) fn alerts(&self) -> Vec<(Alert, Arc<Segment>)> {
        let mut all: Vec<(Alert, Arc<Segment>)> =
            self.segments.iter().flat_map(|s| s.state().alerts.clone().into_iter().map(|a| (a, s.clone()))).collect();
        all.sort_by_key(|(a, _)| a.seq);
        all
    }
}

/// Reads a route directory an earlier run left. Temporary files are removed
/// (their raise never finished, so nobody was told the alert was kept).
pub(super) fn load_route(dir: &Path) -> io::Result<Loaded> {
    let mut loaded = Loaded::default();
    for entry in fs::read_dir(dir)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!("alert outbox: listing {}: {e}; an entry is skipped", dir.display());
                loaded.unreadable += 1;
                continue;
            }
        };
        let path = entry.path();
        let tmp = path.extension().is_some_and(|e| e == "tmp");
        if !tmp && !is_segment(&path) {
            // `.bad` files, kept for the operator.
            continue;
        }
        // The entry itself, not what a symlink points to: the outbox writes
        // regular files only, so anything else was put there by someone else.
        match entry.file_type() {
            Ok(t) if t.is_file() => {}
            other => {
                let what = match other {
                    Ok(t) if t.is_dir() => "a directory".to_owned(),
                    Ok(t) if t.is_symlink() => "a symbolic link".to_owned(),
                    Ok(_) => "not a regular file".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!("alert outbox: {} is {what}, not a segment; skipped", path.display());
                if !tmp {
                    loaded.unreadable += 1;
                }
                continue;
            }
        }
        if tmp {
            let _ = fs::remove_file(&path);
            continue;
        }
        read_segment(path, &mut loaded);
    }
    Ok(loaded)
}

/// Reads one segment into `loaded`. A damaged one keeps its intact records:
/// the damaged bytes go to `<segment>.bad` and the file is rewritten without
/// them, so the next start does not count them again.
fn read_segment(path: PathBuf, loaded: &mut Loaded) {
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            // Left in place: a read error may pass (a busy NFS server).
            tracing::error!("alert outbox: reading {}: {e}; its alerts are not sent this run", path.display());
            loaded.unreadable += 1;
            return;
        }
    };
    let decoded = segment::decode(&bytes);
    if decoded.is_damaged() {
        let bad = path.with_extension("bad");
        tracing::error!(
            "alert outbox: {}: {} record(s) unreadable and lost, {} intact and kept; the damaged bytes are in {}",
            path.display(),
            decoded.lost,
            decoded.alerts.len(),
            bad.display()
        );
        loaded.unreadable += decoded.lost as u64;
        if let Err(e) = append(&bad, &decoded.damaged) {
            tracing::error!("alert outbox: keeping the damaged bytes in {}: {e}", bad.display());
        }
        let rewritten = if decoded.alerts.is_empty() {
            remove_durably(&path)
        } else {
            write_atomically(&path, &segment::encode(&decoded.alerts))
        };
        if let Err(e) = rewritten {
            tracing::error!("alert outbox: rewriting {} without its damage: {e}", path.display());
        }
    } else if decoded.alerts.is_empty() {
        let _ = fs::remove_file(&path);
    }
    if !decoded.alerts.is_empty() {
        loaded
            .segments
            .push(Arc::new(Segment { state: Mutex::new(State { path, alerts: decoded.alerts, on_disk: true }) }));
    }
}

fn append(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Moves the segments of route directories no route owns any more (`known`
/// names those that are owned) into `home`, so a route removed from the
/// configuration while inspeq was stopped does not strand its alerts. Only an
/// outbox directory that cannot be listed is an error: an orphan that cannot be
/// moved stays where it is, for the next start, and is logged.
pub(super) fn adopt_orphans(dir: &Path, known: &[String], home: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || known.contains(&name) {
            continue;
        }
        let files = match fs::create_dir_all(home).and_then(|()| fs::read_dir(entry.path())) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!("alert outbox: route {name} is gone, but its alerts stay where they are: {e}");
                continue;
            }
        };
        let mut moved = 0;
        for file in files.flatten() {
            let path = file.path();
            if !is_segment(&path) {
                continue;
            }
            if !file.file_type().is_ok_and(|t| t.is_file()) {
                tracing::warn!(
                    "alert outbox: {} is not a regular file, not a segment; left where it is",
                    path.display()
                );
                continue;
            }
            match fs::rename(&path, home.join(file.file_name())) {
                Ok(()) => moved += 1,
                Err(e) => tracing::error!("alert outbox: moving {} to {}: {e}", path.display(), home.display()),
            }
        }
        if moved > 0 {
            tracing::warn!("alert outbox: route {name} is gone; its pending alerts go to {}", home.display());
            if let Err(e) = sync_dir(home) {
                tracing::error!("alert outbox: syncing {}: {e}", home.display());
            }
        }
        // Only when empty: `.bad` files stay for the operator.
        let _ = fs::remove_dir(entry.path());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::alert::AlertKind;

    fn alert(seq: u64) -> Alert {
        let mut alert = Alert::new("web1", format!("svc{seq}"), AlertKind::ProcessDown, SystemTime::UNIX_EPOCH);
        alert.seq = seq;
        alert
    }

    fn tempdir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("inspeq-store-{name}-")).tempdir().unwrap()
    }

    fn seqs(loaded: &Loaded) -> Vec<u64> {
        loaded.alerts().iter().map(|(a, _)| a.seq).collect()
    }

    #[test]
    fn a_segment_is_struck_alert_by_alert_and_removed_when_empty() {
        let scratch = tempdir("strike");
        let dir = scratch.path();
        let segment = Segment::create(dir.join(segment_name(1)), vec![alert(1), alert(2), alert(3)]).unwrap();
        segment.strike(&[1, 3]).unwrap();
        assert_eq!(seqs(&load_route(dir).unwrap()), [2]);
        segment.strike(&[2]).unwrap();
        assert!(!segment.path().exists());
        assert_eq!(fs::read_dir(dir).unwrap().count(), 0);
    }

    #[test]
    fn damage_costs_the_damaged_records_alone_and_is_kept_for_the_operator() {
        let scratch = tempdir("damage");
        let dir = scratch.path();
        Segment::create(dir.join(segment_name(1)), vec![alert(1), alert(2), alert(3)]).unwrap();
        Segment::create(dir.join(segment_name(4)), vec![alert(4), alert(5)]).unwrap();
        // The first cut mid-way through its last record, garbage after the second.
        let first = dir.join(segment_name(1));
        let len = fs::metadata(&first).unwrap().len();
        File::options().write(true).open(&first).unwrap().set_len(len - 15).unwrap();
        let second = dir.join(segment_name(4));
        File::options().append(true).open(&second).unwrap().write_all(b"\x7fELF garbage\n").unwrap();

        let loaded = load_route(dir).unwrap();
        assert_eq!(seqs(&loaded), [1, 2, 4, 5]);
        assert_eq!(loaded.unreadable, 2);
        assert!(fs::read(first.with_extension("bad")).unwrap().starts_with(b"{\"v\":1,\"n\":2"));
        assert_eq!(fs::read(second.with_extension("bad")).unwrap(), b"\x7fELF garbage\n");
        // Rewritten without the damage: a second start counts nothing.
        let again = load_route(dir).unwrap();
        assert_eq!((seqs(&again), again.unreadable), (vec![1, 2, 4, 5], 0));
    }

    #[test]
    fn entries_that_are_not_regular_files_are_skipped_not_fatal() {
        let scratch = tempdir("entries");
        let dir = scratch.path();
        Segment::create(dir.join(segment_name(7)), vec![alert(7)]).unwrap();
        fs::create_dir(dir.join("x.json")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/inspeq", dir.join(segment_name(9))).unwrap();
        fs::write(dir.join("00000000000000000008.tmp"), b"half a raise").unwrap();
        let loaded = load_route(dir).unwrap();
        assert_eq!((seqs(&loaded), loaded.unreadable), (vec![7], 2));
        assert!(dir.join("x.json").is_dir(), "left for the operator");
        assert!(!dir.join("00000000000000000008.tmp").exists(), "an unfinished raise is removed");
    }

    #[test]
    fn the_previous_versions_files_are_read_and_rewritten_in_this_format_when_struck() {
        let scratch = tempdir("old");
        let dir = scratch.path();
        let old = dir.join("00000000000000000001.json");
        fs::write(&old, serde_json::to_vec(&[alert(1), alert(2)]).unwrap()).unwrap();
        let loaded = load_route(dir).unwrap();
        assert_eq!((seqs(&loaded), loaded.unreadable), (vec![1, 2], 0));
        loaded.segments[0].strike(&[1]).unwrap();
        assert!(fs::read(&old).unwrap().starts_with(b"{\"v\":1,"));
        assert_eq!(seqs(&load_route(dir).unwrap()), [2]);
    }

    #[test]
    fn orphaned_route_directories_are_adopted_by_home() {
        let scratch = tempdir("orphans");
        let dir = scratch.path();
        fs::create_dir_all(dir.join("to-ops")).unwrap();
        Segment::create(dir.join("to-ops").join(segment_name(3)), vec![alert(3)]).unwrap();
        adopt_orphans(dir, &["default".to_owned()], &dir.join("default")).unwrap();
        assert!(!dir.join("to-ops").exists());
        assert_eq!(seqs(&load_route(&dir.join("default")).unwrap()), [3]);
    }
}
