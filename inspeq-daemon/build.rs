//! Builds the eBPF programs (`inspeq-ebpf`) for the BPF target with aya-build and
//! leaves the object in `OUT_DIR`, where `kernel::load` embeds it: `inspeqd` is one
//! self-contained binary.
//!
//! The eBPF toolchain is the one building this crate unless `INSPEQ_BPF_TOOLCHAIN`
//! names another; `-Z build-std=core` needs `rust-src` on it and either a nightly
//! compiler or `RUSTC_BOOTSTRAP=1` (`cargo xtask` sets both up).

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=INSPEQ_BPF_TOOLCHAIN");
    let toolchain = std::env::var("INSPEQ_BPF_TOOLCHAIN").ok();
    let toolchain = match toolchain.as_deref() {
        Some(name) if !name.is_empty() => Toolchain::Custom(name),
        _ => Toolchain::Custom("stable"),
    };
    // The inner build needs `-Z build-std=core`, which stable cargo accepts only with
    // RUSTC_BOOTSTRAP=1; setting it here keeps a plain `cargo build` working. The
    // build script is single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let metadata = cargo_metadata_root().context("locating the eBPF crate")?;
    let package = Package {
        name: "inspeq-ebpf",
        root_dir: &metadata,
        ..Default::default()
    };
    aya_build::build_ebpf([package], toolchain)
        .map_err(|e| anyhow!("building the eBPF programs failed (run `cargo xtask setup` for bpf-linker and rust-src): {e:#}"))
}

/// `inspeq-ebpf`'s directory: a sibling of this crate in the workspace.
fn cargo_metadata_root() -> anyhow::Result<String> {
    let here = std::env::var("CARGO_MANIFEST_DIR")?;
    let dir = std::path::Path::new(&here)
        .parent()
        .ok_or_else(|| anyhow!("{here} has no parent"))?
        .join("inspeq-ebpf");
    Ok(dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", dir.display()))?.to_owned())
}
