//! The guest's initramfs: busybox, the guest `/init` (init.sh), and the binaries
//! the kernel tests run, each at the absolute path it has on this machine (the test
//! binary finds `inspeq-workload` through a path baked in at compile time and
//! `inspeqd` beside itself), without debug info, with their shared libraries and
//! dynamic loader. Built once per change of its inputs (`initramfs.cpio`, its
//! inputs listed in `initramfs.key`); each run appends a small archive holding
//! only the job, `/inspeq/job.sh`, and the few kernel modules the tests need.

use std::{
    collections::BTreeSet,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::cpio;
use crate::command::{output, succeeds};

const INIT: &str = include_str!("init.sh");

/// Where a static busybox may be (busybox-static installs `/bin/busybox`).
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// The archive in `dir` holding `binaries`, rebuilt when one of them, a library
/// they load, busybox or init.sh changed.
pub fn base(dir: &Path, binaries: &[&Path]) -> anyhow::Result<PathBuf> {
    let busybox = BUSYBOX.iter().map(Path::new).find(|p| p.exists()).context("no busybox: install busybox-static")?;
    if output(Command::new("ldd").arg(busybox)).is_some() {
        bail!("{} is not static: install busybox-static", busybox.display());
    }
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        libraries.extend(shared_libraries(binary)?);
    }
    let inputs: Vec<&Path> =
        [busybox].into_iter().chain(binaries.iter().copied()).chain(libraries.iter().map(PathBuf::as_path)).collect();
    let key = key(&inputs)?;
    let (archive, key_file) = (dir.join("initramfs.cpio"), dir.join("initramfs.key"));
    if archive.exists() && std::fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(archive);
    }
    eprintln!("xtask: building the guest initramfs ({})", archive.display());
    std::fs::create_dir_all(dir)?;
    let partial = dir.join("initramfs.cpio.partial");
    let mut cpio = cpio::Writer::new(std::io::BufWriter::new(std::fs::File::create(&partial)?));
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "sbin", "usr/bin", "usr/sbin", "var"] {
        cpio.dir(dir)?;
    }
    cpio.char_device("dev/console", 5, 1)?;
    cpio.char_device("dev/null", 1, 3)?;
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.file("etc/group", 0o644, b"root:x:0:\n")?;
    cpio.symlink("etc/mtab", "/proc/self/mounts")?;
    cpio.file("bin/busybox", 0o755, &std::fs::read(busybox)?)?;
    cpio.file("init", 0o755, INIT.as_bytes())?;
    for library in &libraries {
        let data = std::fs::read(library).with_context(|| format!("reading {}", library.display()))?;
        cpio.file(&library.to_string_lossy(), 0o755, &data)?;
    }
    for binary in binaries {
        cpio.file(&binary.to_string_lossy(), 0o755, &without_debug_info(binary, dir)?)?;
    }
    cpio.finish()?;
    std::fs::rename(&partial, &archive)?;
    std::fs::write(&key_file, key)?;
    Ok(archive)
}

/// `base` followed by an archive holding `job` as `/inspeq/job.sh` and each
/// kernel's modules (release, files in load order) as
/// `/lib/modules/RELEASE/NAME.ko`, with their order in
/// `/lib/modules/RELEASE/inspeq-load` for init.sh, written to `out`. One archive
/// serves every kernel: each guest loads the modules of its own `uname -r`.
pub fn with_job(base: &Path, job: &str, modules: &[&(String, Vec<PathBuf>)], out: &Path) -> anyhow::Result<()> {
    std::fs::copy(base, out).with_context(|| format!("copying {} to {}", base.display(), out.display()))?;
    let file = std::fs::OpenOptions::new().append(true).open(out)?;
    let mut cpio = cpio::Writer::new(std::io::BufWriter::new(file));
    cpio.file("inspeq/job.sh", 0o755, job.as_bytes())?;
    for (release, files) in modules {
        let mut order = String::new();
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).context("a module file without a name")?;
            let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            cpio.file(&format!("lib/modules/{release}/{name}"), 0o644, &data)?;
            order.push_str(name.trim_end_matches(".ko"));
            order.push('\n');
        }
        cpio.file(&format!("lib/modules/{release}/inspeq-load"), 0o644, order.as_bytes())?;
    }
    cpio.finish()?.flush()?;
    Ok(())
}

/// The libraries `binary` loads, the dynamic loader among them (`ldd`'s absolute paths).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing =
        output(Command::new("ldd").arg(binary)).with_context(|| format!("ldd {} failed", binary.display()))?;
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
    Ok(listing
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// `binary` without its debug info (a tenth of a debug build's size: the guest
/// unpacks the initramfs into its memory), or as it is when objcopy fails.
fn without_debug_info(binary: &Path, scratch: &Path) -> anyhow::Result<Vec<u8>> {
    let stripped = scratch.join("stripped.tmp");
    let data = if succeeds(Command::new("objcopy").arg("--strip-debug").arg(binary).arg(&stripped)) {
        std::fs::read(&stripped)?
    } else {
        eprintln!("xtask: warning: objcopy --strip-debug {} failed; keeping its debug info", binary.display());
        std::fs::read(binary)?
    };
    let _ = std::fs::remove_file(&stripped);
    Ok(data)
}

/// What the archive depends on: every input's path, size and modification time,
/// and init.sh itself.
fn key(inputs: &[&Path]) -> anyhow::Result<String> {
    let mut key = String::from("inspeq initramfs v1\n");
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        key.push_str(&format!("{} {} {}.{}\n", input.display(), meta.len(), meta.mtime(), meta.mtime_nsec()));
    }
    key.push_str(INIT);
    Ok(key)
}
