//! `cargo xtask install` and `cargo xtask deb`: put inspeq where a Linux daemon
//! lives — `inspeqd` and `inspeqctl`, the systemd unit, man pages, shell
//! completions and a commented `/etc/inspeq` skeleton (never overwriting an
//! existing configuration) — or pack the same tree into a Debian package with
//! `dpkg-deb`, which enables the service on install.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::command::{self, cargo, workspace_root};

/// Where things go.
#[derive(clap::Args, Clone, Debug)]
pub struct Layout {
    /// Binaries go to PREFIX/bin, man pages and completions to PREFIX/share.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// The configuration skeleton goes to SYSCONFDIR/inspeq.
    #[arg(long, default_value = "/etc")]
    sysconfdir: PathBuf,
    /// The systemd unit goes here.
    #[arg(long, default_value = "/etc/systemd/system")]
    unitdir: PathBuf,
    /// Take the binaries from this directory instead of building them (release).
    #[arg(long)]
    from: Option<PathBuf>,
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Installs everything below `root` (`/` for a real install, a staging dir for
/// the package) following `layout`; `bin_path` is where the unit finds inspeqd.
fn install_into(root: &Path, layout: &Layout) -> anyhow::Result<()> {
    let under = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let bins = match &layout.from {
        Some(dir) => dir.clone(),
        None => {
            command::run(cargo().args(["build", "--release", "-p", "inspeq-daemon", "--bins"]))?;
            workspace_root().join("target/release")
        }
    };
    let prefix = under(&layout.prefix);
    for bin in ["inspeqd", "inspeqctl"] {
        copy(&bins.join(bin), &prefix.join("bin").join(bin), 0o755)?;
    }
    // Man pages and completions come from the binaries themselves.
    let assets = tempdir("assets")?;
    for bin in ["inspeqd", "inspeqctl"] {
        command::run(Command::new(bins.join(bin)).arg("generate-assets").arg(&assets))?;
    }
    for (file, section) in [("inspeqd.8", "man8"), ("inspeqctl.1", "man1")] {
        copy(&assets.join("man").join(file), &prefix.join("share/man").join(section).join(file), 0o644)?;
    }
    for (shell, dest) in [
        ("bash", "share/bash-completion/completions"),
        ("zsh", "share/zsh/site-functions"),
        ("fish", "share/fish/vendor_completions.d"),
    ] {
        for entry in std::fs::read_dir(assets.join("completions").join(shell))? {
            let entry = entry?;
            copy(&entry.path(), &prefix.join(dest).join(entry.file_name()), 0o644)?;
        }
    }
    let _ = std::fs::remove_dir_all(&assets);

    let dist = workspace_root().join("dist");
    let unit = std::fs::read_to_string(dist.join("inspeqd.service"))?
        .replace("/usr/bin/inspeqd", &layout.prefix.join("bin/inspeqd").display().to_string());
    let unit_path = under(&layout.unitdir).join("inspeqd.service");
    std::fs::create_dir_all(unit_path.parent().unwrap())?;
    std::fs::write(&unit_path, unit)?;

    // The skeleton never replaces what an operator wrote.
    let etc = under(&layout.sysconfdir).join("inspeq");
    let skeleton = dist.join("etc/inspeq");
    for rel in ["inspeq.conf", "host.inq", "services.d/example.inq", "jobs.d/example.inq"] {
        let target = etc.join(rel);
        if target.exists() {
            eprintln!("xtask: keeping the existing {}", target.display());
            continue;
        }
        copy(&skeleton.join(rel), &target, 0o644)?;
    }
    Ok(())
}

fn tempdir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("inspeq-xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `cargo xtask install`.
pub fn install(layout: &Layout) -> anyhow::Result<()> {
    install_into(Path::new("/"), layout)?;
    eprintln!(
        "xtask: installed inspeqd and inspeqctl in {}, the unit in {}, configuration in {}/inspeq",
        layout.prefix.join("bin").display(),
        layout.unitdir.display(),
        layout.sysconfdir.display()
    );
    Ok(())
}

/// `cargo xtask deb`: writes `target/debian/inspeq_VERSION_ARCH.deb`.
pub fn deb(from: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        bail!("dpkg-deb is needed to build the package (Debian's dpkg)");
    }
    let layout =
        Layout { prefix: "/usr".into(), sysconfdir: "/etc".into(), unitdir: "/lib/systemd/system".into(), from };
    let stage = workspace_root().join("target/debian/root");
    let _ = std::fs::remove_dir_all(&stage);
    install_into(&stage, &layout)?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = command::output(Command::new("dpkg").arg("--print-architecture")).unwrap_or_else(|| "amd64".into());
    let arch = arch.trim();
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: inspeq\nVersion: {version}\nArchitecture: {arch}\nMaintainer: inspeq developers <inspeq@example.invalid>\nSection: admin\nPriority: optional\nDepends: libc6\nDescription: event-driven service monitor\n inspeq watches the services an init system runs, alerts when one crashes,\n runs out of memory or breaks a rule, and asks the init system to restart or\n reload it. It learns of trouble from the kernel (eBPF) the instant it happens.\n"
        ),
    )?;
    std::fs::write(
        debian.join("conffiles"),
        "/etc/inspeq/inspeq.conf\n/etc/inspeq/host.inq\n/etc/inspeq/services.d/example.inq\n/etc/inspeq/jobs.d/example.inq\n",
    )?;
    let script = |name: &str, body: &str| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = debian.join(name);
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    // Enable and start only where systemd runs (a container build root has none).
    script(
        "postinst",
        "if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then\n  systemctl daemon-reload\n  systemctl enable --now inspeqd.service\nfi\n",
    )?;
    script("prerm", "if [ -d /run/systemd/system ]; then\n  systemctl disable --now inspeqd.service || true\nfi\n")?;
    let out = workspace_root().join(format!("target/debian/inspeq_{version}_{arch}.deb"));
    command::run(Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&stage).arg(&out))?;
    eprintln!("xtask: built {}", out.display());
    Ok(out)
}
