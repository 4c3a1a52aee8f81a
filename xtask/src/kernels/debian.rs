//! Debian's cloud kernels, fetched with apt under a private sources list and state
//! directory per suite (`target/kernels/<suite>/apt/`): the machine's own apt
//! configuration and lists are never touched. Only `vmlinuz` is kept, as
//! `target/kernels/<suite>/vmlinuz`, so a second run downloads nothing.

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

/// A kernel ready to boot.
pub struct Kernel {
    pub suite: String,
    /// The package it came from, `name version`.
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// The suite's kernel from `dir` (`target/kernels/<suite>`), downloaded first when
/// it is not there yet or when `refresh` asks to look for a newer one.
pub fn kernel(dir: &Path, suite: &str, refresh: bool) -> anyhow::Result<Kernel> {
    let vmlinuz = dir.join("vmlinuz");
    let package_file = dir.join("package");
    if !refresh && vmlinuz.exists() && package_file.exists() {
        let package = std::fs::read_to_string(&package_file)?.trim().to_owned();
        return Ok(Kernel { suite: suite.to_owned(), package, vmlinuz });
    }
    std::fs::create_dir_all(dir)?;
    let apt = Apt::new(&dir.join("apt"), suite)?;
    eprintln!("xtask: fetching {suite}'s package lists (private apt state in {})", apt.dir.display());
    command::run(apt.command("apt-get").args(["update", "-q"]))?;
    let package = apt.image_package()?;
    let version = apt.field(&package, "Version")?;
    let label = format!("{package} {version}");
    if refresh && vmlinuz.exists() && std::fs::read_to_string(&package_file).is_ok_and(|p| p.trim() == label) {
        return Ok(Kernel { suite: suite.to_owned(), package: label, vmlinuz });
    }
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    command::run(apt.command("apt-get").args(["download", "-q", &package]).current_dir(&download))?;
    let deb = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb in {}", download.display()))?;
    extract_vmlinuz(&deb, &download, &vmlinuz)?;
    std::fs::write(&package_file, format!("{label}\n"))?;
    std::fs::remove_dir_all(&download)?;
    eprintln!("xtask: {suite}: {label} → {}", vmlinuz.display());
    Ok(Kernel { suite: suite.to_owned(), package: label, vmlinuz })
}

/// Pulls the one `vmlinuz` out of `deb` (`boot/vmlinuz-*` up to trixie,
/// `usr/lib/modules/*/vmlinuz` in sid's `linux-binary-*`) into `to`.
fn extract_vmlinuz(deb: &Path, scratch: &Path, to: &Path) -> anyhow::Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb)).context("dpkg-deb --contents")?;
    let member = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| path.rsplit('/').next().is_some_and(|name| name == "vmlinuz" || name.starts_with("vmlinuz-")))
        .with_context(|| format!("no vmlinuz in {}", deb.display()))?
        .to_owned();
    let mut fsys = Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped()).spawn()?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(scratch)
        .arg(&member)
        .stdin(fsys.stdout.take().unwrap())
        .status()
        .context("starting tar")?;
    let fsys_status = fsys.wait()?;
    if !status.success() || !fsys_status.success() {
        bail!("extracting {member} from {} failed (dpkg-deb {fsys_status}, tar {status})", deb.display());
    }
    std::fs::rename(scratch.join(&member), to).with_context(|| format!("moving {member} to {}", to.display()))
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
    /// `linux-binary-*-cloud-amd64`.
    fn image_package(&self) -> anyhow::Result<String> {
        let meta = "linux-image-cloud-amd64";
        let image = self
            .depends(meta)?
            .into_iter()
            .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64") && d != meta)
            .with_context(|| format!("{meta} depends on no versioned linux-image-*-cloud-amd64"))?;
        let binary = self
            .depends(&image)?
            .into_iter()
            .find(|d| d.starts_with("linux-binary-") && d.ends_with("-cloud-amd64") && !d.contains("unsigned"));
        Ok(binary.unwrap_or(image))
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
