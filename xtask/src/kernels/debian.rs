//! Debian's cloud kernels, fetched with apt under a private sources list and state
//! directory per suite (`target/kernels/<suite>/apt/`): the machine's own apt
//! configuration and lists are never touched. Only `vmlinuz` is kept, as
//! `target/kernels/<suite>/vmlinuz`, and the few modules the kernel tests need
//! ([`GUEST_MODULES`], uncompressed, in `target/kernels/<suite>/modules/`), so a
//! second run downloads nothing.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::command::{self, output};

/// The suites of the matrix and the kernel each ships.
pub const SUITES: &[(&str, &str)] = &[("bullseye", "5.10"), ("bookworm", "6.1"), ("trixie", "6.12"), ("sid", "newest")];

/// The archive keys, given as `[signed-by=...]`. The machine's keyring
/// (debian-archive-keyring 2023.3+deb12u2 on bookworm) already holds the 2025 keys
/// trixie and sid are signed with, so no `Acquire::` override is needed; an older
/// keyring makes `apt-get update` fail on those suites with NO_PUBKEY, and the
/// cure is upgrading that package (`apt-get install debian-archive-keyring`).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Modules the kernel tests need that Debian builds as modules, in load order:
/// `inet_diag` and `tcp_diag` answer the sock_diag dump of listening sockets
/// (`kernel::sock_diag`). The guest has neither modprobe nor the package's
/// /lib/modules, so the host hands them over (see `initramfs::with_job`). A
/// kernel that builds one in ships no file for it, and needs none.
pub const GUEST_MODULES: &[&str] = &["inet_diag", "tcp_diag"];

/// A kernel ready to boot.
pub struct Kernel {
    pub suite: String,
    /// The package it came from, `name version`.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// The kernel's release (`uname -r`) and its [`GUEST_MODULES`] files, in load
    /// order; `None` when the package ships none of them.
    pub modules: Option<(String, Vec<PathBuf>)>,
}

/// The suite's kernel from `dir` (`target/kernels/<suite>`), downloaded first when
/// it is not there yet or when `refresh` asks to look for a newer one.
pub fn kernel(dir: &Path, suite: &str, refresh: bool) -> anyhow::Result<Kernel> {
    let vmlinuz = dir.join("vmlinuz");
    let package_file = dir.join("package");
    // Written last, after vmlinuz and the modules: a cache from before modules were
    // kept has none, and is fetched again.
    let modules_file = dir.join("modules.list");
    let cached = |package: String| -> anyhow::Result<Kernel> {
        let modules = read_modules(&std::fs::read_to_string(&modules_file)?, &dir.join("modules"));
        Ok(Kernel { suite: suite.to_owned(), package, vmlinuz: vmlinuz.clone(), modules })
    };
    if !refresh && vmlinuz.exists() && package_file.exists() && modules_file.exists() {
        return cached(std::fs::read_to_string(&package_file)?.trim().to_owned());
    }
    std::fs::create_dir_all(dir)?;
    let apt = Apt::new(&dir.join("apt"), suite)?;
    eprintln!("xtask: fetching {suite}'s package lists (private apt state in {})", apt.dir.display());
    command::run(apt.command("apt-get").args(["update", "-q"]))?;
    let (package, modules_package) = apt.image_package()?;
    let version = apt.field(&package, "Version")?;
    let label = format!("{package} {version}");
    if refresh
        && vmlinuz.exists()
        && modules_file.exists()
        && std::fs::read_to_string(&package_file).is_ok_and(|p| p.trim() == label)
    {
        return cached(label);
    }
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    command::run(
        apt.command("apt-get").args(["download", "-q", &package]).args(&modules_package).current_dir(&download),
    )?;
    let debs: Vec<PathBuf> = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    if debs.is_empty() {
        bail!("apt-get download {package} left no .deb in {}", download.display());
    }
    let modules = extract(&debs, &download, &vmlinuz, &dir.join("modules"))?;
    std::fs::write(&package_file, format!("{label}\n"))?;
    std::fs::write(&modules_file, modules_list(modules.as_ref()))?;
    std::fs::remove_dir_all(&download)?;
    eprintln!("xtask: {suite}: {label} → {}", vmlinuz.display());
    Ok(Kernel { suite: suite.to_owned(), package: label, vmlinuz, modules })
}

/// `modules.list`: the release on the first line, then one module per line, in
/// load order; empty when there are none.
fn modules_list(modules: Option<&(String, Vec<PathBuf>)>) -> String {
    let Some((release, files)) = modules else { return String::new() };
    let names = files.iter().filter_map(|f| f.file_stem()?.to_str().map(str::to_owned));
    std::iter::once(release.clone()).chain(names).map(|line| line + "\n").collect()
}

/// `modules.list`'s text, with each module's file in `dir`.
fn read_modules(list: &str, dir: &Path) -> Option<(String, Vec<PathBuf>)> {
    let mut lines = list.lines();
    let release = lines.next()?.to_owned();
    Some((release, lines.map(|name| dir.join(format!("{name}.ko"))).collect()))
}

/// The package file of `module` (`.../kernel/net/ipv4/inet_diag.ko`, `.ko.xz` or
/// `.ko.zst`) and the kernel release its path names (`lib/modules/RELEASE/...`).
fn module_member<'l>(paths: &[&'l str], module: &str) -> Option<(&'l str, String)> {
    paths.iter().copied().find_map(|path| {
        let name = path.rsplit('/').next()?;
        let stem = name.strip_suffix(".xz").or_else(|| name.strip_suffix(".zst")).unwrap_or(name);
        if stem != format!("{module}.ko") {
            return None;
        }
        let release = path.split("/modules/").nth(1)?.split('/').next()?;
        Some((path, release.to_owned()))
    })
}

/// Pulls the one `vmlinuz` out of `debs` (`boot/vmlinuz-*` up to trixie,
/// `usr/lib/modules/*/vmlinuz` in sid's `linux-binary-*`) into `to`, and the
/// [`GUEST_MODULES`] they ship (with the image up to trixie, in sid's
/// `linux-modules-*`), uncompressed, into `modules` (`NAME.ko`).
fn extract(
    debs: &[PathBuf],
    scratch: &Path,
    to: &Path,
    modules: &Path,
) -> anyhow::Result<Option<(String, Vec<PathBuf>)>> {
    let mut image = None;
    // (member, release, module), in GUEST_MODULES order.
    let mut wanted: Vec<(String, String, &str)> = Vec::new();
    for deb in debs {
        let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb)).context("dpkg-deb --contents")?;
        let paths: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
        let vmlinuz = paths
            .iter()
            .copied()
            .find(|path| path.rsplit('/').next().is_some_and(|name| name == "vmlinuz" || name.starts_with("vmlinuz-")));
        let found: Vec<(String, String, &str)> = GUEST_MODULES
            .iter()
            .filter_map(|module| {
                module_member(&paths, module).map(|(path, release)| (path.to_owned(), release, *module))
            })
            .collect();
        let members: Vec<&str> = vmlinuz.into_iter().chain(found.iter().map(|(path, _, _)| path.as_str())).collect();
        if members.is_empty() {
            continue;
        }
        let mut fsys = Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped()).spawn()?;
        let status = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(scratch)
            .args(&members)
            .stdin(fsys.stdout.take().unwrap())
            .status()
            .context("starting tar")?;
        let fsys_status = fsys.wait()?;
        if !status.success() || !fsys_status.success() {
            bail!("extracting {members:?} from {} failed (dpkg-deb {fsys_status}, tar {status})", deb.display());
        }
        image = image.or(vmlinuz.map(str::to_owned));
        wanted.extend(found);
    }
    let member = image.with_context(|| format!("no vmlinuz in {debs:?}"))?;
    std::fs::rename(scratch.join(&member), to).with_context(|| format!("moving {member} to {}", to.display()))?;
    wanted.sort_by_key(|(_, _, module)| GUEST_MODULES.iter().position(|m| m == module));
    let Some((_, release, _)) = wanted.first() else { return Ok(None) };
    let _ = std::fs::remove_dir_all(modules);
    std::fs::create_dir_all(modules)?;
    let mut files = Vec::new();
    for (path, _, module) in &wanted {
        let file = modules.join(format!("{module}.ko"));
        let packed = scratch.join(path);
        // The guest's busybox insmod takes plain ELF objects only.
        let data = match packed.extension().and_then(|e| e.to_str()) {
            Some("xz") => decompressed("xz", &packed),
            Some("zst") => decompressed("zstd", &packed),
            _ => std::fs::read(&packed).ok(),
        }
        .with_context(|| format!("reading {} (xz-utils and zstd unpack modules)", packed.display()))?;
        std::fs::write(&file, data)?;
        files.push(file);
    }
    Ok(Some((release.clone(), files)))
}

/// `program -dc packed`'s output, when it succeeds.
fn decompressed(program: &str, packed: &Path) -> Option<Vec<u8>> {
    let out = Command::new(program).arg("-dc").arg(packed).output().ok()?;
    out.status.success().then_some(out.stdout)
}

/// apt with a private sources list, lists and cache: `Dir::Etc::sourceparts` is
/// `/dev/null`, so the machine's own sources are not read either.
struct Apt {
    dir: PathBuf,
    options: Vec<String>,
}

impl Apt {
    fn new(dir: &Path, suite: &str) -> anyhow::Result<Self> {
        let (lists, cache) = (dir.join("lists"), dir.join("cache"));
        std::fs::create_dir_all(lists.join("partial"))?;
        std::fs::create_dir_all(cache.join("archives/partial"))?;
        if !Path::new(KEYRING).exists() {
            bail!("{KEYRING} is missing: install the debian-archive-keyring package");
        }
        let sources = dir.join("sources.list");
        std::fs::write(&sources, format!("deb [signed-by={KEYRING}] {} {suite} main\n", archive_uri()))?;
        let options = [
            format!("Dir::Etc::sourcelist={}", sources.display()),
            "Dir::Etc::sourceparts=/dev/null".to_owned(),
            format!("Dir::State::Lists={}", lists.display()),
            format!("Dir::Cache={}", cache.display()),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect();
        Ok(Self { dir: dir.to_owned(), options })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.args(&self.options);
        command
    }

    /// The package holding the kernel image: `linux-image-cloud-amd64`'s versioned
    /// `linux-image-*-cloud-amd64`, or, where that is only a shell (sid), its
    /// `linux-binary-*-cloud-amd64`; and, where the modules are a package of their
    /// own (sid's `linux-modules-*-cloud-amd64`), that one.
    fn image_package(&self) -> anyhow::Result<(String, Option<String>)> {
        let meta = "linux-image-cloud-amd64";
        let image = self
            .depends(meta)?
            .into_iter()
            .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64") && d != meta)
            .with_context(|| format!("{meta} depends on no versioned linux-image-*-cloud-amd64"))?;
        let depends = self.depends(&image)?;
        let cloud = |prefix: &str| {
            depends.iter().find(|d| d.starts_with(prefix) && d.ends_with("-cloud-amd64") && !d.contains("unsigned"))
        };
        let modules = cloud("linux-modules-").cloned();
        Ok((cloud("linux-binary-").cloned().unwrap_or(image), modules))
    }

    /// The package names `package` depends on (every alternative).
    fn depends(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let depends = self.field(package, "Depends")?;
        Ok(depends
            .split([',', '|'])
            .filter_map(|d| d.split_whitespace().next())
            .map(|name| name.split(':').next().unwrap_or(name).to_owned())
            .collect())
    }

    /// One field of `package`'s record in the private lists.
    fn field(&self, package: &str, field: &str) -> anyhow::Result<String> {
        let record = output(self.command("apt-cache").args(["show", "--no-all-versions", package]))
            .with_context(|| format!("apt-cache show {package} (in {})", self.dir.display()))?;
        let prefix = format!("{field}:");
        record
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("{package} has no {field} field"))
    }
}

/// The Debian archive this machine uses: the `URIs:` of the first deb822 entry in
/// /etc/apt/sources.list.d/ that is not the security archive.
fn archive_uri() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for stanza in text.split("\n\n") {
            let value = |key: &str| stanza.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
            let (Some(uris), Some(suites)) = (value("URIs:"), value("Suites:")) else {
                continue;
            };
            let debian = value("Signed-By:").is_some_and(|k| k.contains("debian-archive-keyring"));
            if debian && !suites.contains("-security") && !uris.contains("security") {
                if let Some(uri) = uris.split_whitespace().next() {
                    return uri.trim_end_matches('/').to_owned();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}
