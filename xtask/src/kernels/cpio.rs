//! A writer of cpio archives in the `newc` format, the one the kernel unpacks as an
//! initramfs: directories, regular files, symlinks and device nodes, each with its
//! parent directories written first. Archives may be concatenated; the kernel
//! unpacks them in order, later entries replacing earlier ones.

use std::{collections::BTreeSet, io::Write};

pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0, next_ino: 1, dirs: BTreeSet::new() }
    }

    /// A directory (and its parents), mode 0755.
    pub fn dir(&mut self, path: &str) -> std::io::Result<()> {
        let name = relative(path);
        if name.is_empty() || self.dirs.contains(name) {
            return Ok(());
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(name.to_owned());
        self.entry(name, 0o040_755, (0, 0), b"")
    }

    /// A regular file with permission bits `perm` (0o755, 0o644).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.parent(path)?;
        self.entry(relative(path), 0o100_000 | perm, (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.parent(path)?;
        self.entry(relative(path), 0o120_777, (0, 0), target.as_bytes())
    }

    /// A character device node, mode 0600.
    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> std::io::Result<()> {
        self.parent(path)?;
        self.entry(relative(path), 0o020_600, (major, minor), b"")
    }

    /// Writes the trailer, pads to a 512-byte block, and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), b"")?;
        let pad = (512 - self.written % 512) % 512;
        self.out.write_all(&vec![0; pad as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parent(&mut self, path: &str) -> std::io::Result<()> {
        match relative(path).rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let ino = if name == "TRAILER!!!" { 0 } else { self.next_ino };
        self.next_ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the same inputs give the same archive
            u32::try_from(data.len()).map_err(|_| std::io::Error::other(format!("{name}: too large for cpio")))?,
            0, // dev major
            0, // dev minor
            rdev_major,
            rdev_minor,
            name.len() as u32 + 1,
            0, // check (unused by newc)
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.align()?;
        self.write(data)?;
        self.align()
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn align(&mut self) -> std::io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..pad as usize])
    }
}

/// Archive names are relative to the root: `bin/busybox`, not `/bin/busybox`.
fn relative(path: &str) -> &str {
    path.trim_start_matches('/').trim_end_matches('/')
}
