//! Installing and packaging: `cargo xtask install` into a temporary prefix gives
//! working binaries, man pages, completions, a unit pointing at the installed
//! `inspeqd`, and a configuration skeleton that `inspeqctl check` accepts; the
//! Debian package carries the same and unpacks into a working tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tests::inspeqd;

/// A binary of the workspace built beside `inspeqd` (same profile).
fn sibling(name: &str) -> PathBuf {
    inspeqd().with_file_name(name)
}

/// A scratch directory named after the test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("inspeq-install-{name}-")).tempdir().unwrap()
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_files(root: &Path, files: &[&str]) {
    for file in files {
        assert!(root.join(file).is_file(), "{} missing", root.join(file).display());
    }
}

/// `cargo xtask install` below `dir`, with the binaries in `bins`.
fn install(dir: &Path, bins: &Path) {
    run(Command::new(sibling("xtask"))
        .arg("install")
        .arg("--prefix")
        .arg(dir.join("usr"))
        .arg("--sysconfdir")
        .arg(dir.join("etc"))
        .arg("--unitdir")
        .arg(dir.join("units"))
        .arg("--from")
        .arg(bins));
}

#[test]
fn install_into_a_prefix_gives_a_working_daemon_layout() {
    let scratch = scratch("prefix");
    let dir = scratch.path();
    let bins = inspeqd().parent().unwrap().to_path_buf();
    install(dir, &bins);
    assert_files(
        dir,
        &[
            "usr/bin/inspeqd",
            "usr/bin/inspeqctl",
            "usr/share/man/man8/inspeqd.8",
            "usr/share/man/man1/inspeqctl.1",
            "usr/share/bash-completion/completions/inspeqctl",
            "usr/share/zsh/site-functions/_inspeqctl",
            "usr/share/fish/vendor_completions.d/inspeqctl.fish",
            "units/inspeqd.service",
            "etc/inspeq/inspeq.conf",
            "etc/inspeq/host.inq",
            "etc/inspeq/services.d/example.inq",
        ],
    );
    let unit = std::fs::read_to_string(dir.join("units/inspeqd.service")).unwrap();
    assert!(unit.contains(&format!("ExecStart={}", dir.join("usr/bin/inspeqd").display())), "{unit}");
    assert!(
        unit.contains("Type=notify") && unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict")
    );
    // Above the 1024 default: the control socket's connections and the pidfds must fit with room to spare.
    assert!(unit.contains("\nLimitNOFILE=4096\n"), "{unit}");
    let check = run(Command::new(dir.join("usr/bin/inspeqctl")).arg("check").arg(dir.join("etc/inspeq")));
    assert!(check.contains(": ok"), "{check}");

    // A second install keeps what the operator changed.
    std::fs::write(dir.join("etc/inspeq/host.inq"), "check host\n  if load:1 > 3 then alert\n").unwrap();
    install(dir, &bins);
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/inspeq/host.inq")).unwrap(),
        "check host\n  if load:1 > 3 then alert\n"
    );
}

#[test]
fn the_debian_package_carries_the_same_and_enables_the_service() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        tests::cannot_run("the_debian_package_carries_the_same_and_enables_the_service", "dpkg-deb is not installed");
        return;
    }
    let bins = inspeqd().parent().unwrap().to_path_buf();
    run(Command::new(sibling("xtask")).arg("deb").arg("--from").arg(&bins));
    let deb = std::fs::read_dir(bins.parent().unwrap().join("debian"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in target/debian");
    assert_eq!(run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Package")).trim(), "inspeq");
    let scratch = scratch("deb");
    let dir = scratch.path();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir));
    assert_files(
        dir,
        &[
            "usr/bin/inspeqd",
            "usr/bin/inspeqctl",
            "lib/systemd/system/inspeqd.service",
            "usr/share/man/man8/inspeqd.8",
            "etc/inspeq/inspeq.conf",
        ],
    );
    let unit = std::fs::read_to_string(dir.join("lib/systemd/system/inspeqd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/inspeqd"), "{unit}");
    let control = dir.join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemctl enable --now inspeqd.service"), "{postinst}");
    assert!(std::fs::read_to_string(control.join("conffiles")).unwrap().contains("/etc/inspeq/inspeq.conf"));
    let check = run(Command::new(dir.join("usr/bin/inspeqctl")).arg("check").arg(dir.join("etc/inspeq")));
    assert!(check.contains(": ok"), "{check}");
}
