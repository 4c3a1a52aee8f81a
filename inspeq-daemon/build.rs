//! Generates the rule-language parsers (LALRPOP grammars under `src/config/`) and
//! builds the eBPF programs (`inspeq-ebpf`) for the BPF target with aya-build,
//! leaving the object in `OUT_DIR`, where `kernel::ebpf` embeds it: `inspeqd` is
//! one self-contained binary.
//!
//! `AYA_BUILD_SKIP=1` embeds an empty placeholder instead (for the fuzzers and
//! quick checks); such an `inspeqd` falls back to /proc polling.
//!
//! The eBPF toolchain is the one building this crate unless `INSPEQ_BPF_TOOLCHAIN`
//! names another; `-Z build-std=core` needs `rust-src` on it and either a nightly
//! compiler or `RUSTC_BOOTSTRAP=1` (`cargo xtask` sets both up).

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // Cargo conventions: grammars under src/, parsers into OUT_DIR, so nothing
    // generated lands in the tree and `parse.rs` includes `/config/checks.rs`.
    lalrpop::Configuration::new()
        .use_cargo_dir_conventions()
        .process()
        .map_err(|e| anyhow!("LALRPOP grammar failed to compile: {e}"))?;

    // Once a build script prints any `rerun-if`, cargo reruns it only for what
    // it names: the grammars must be named, or an edited grammar is not regenerated.
    for grammar in ["src/config/checks.lalrpop", "src/config/global.lalrpop"] {
        println!("cargo:rerun-if-changed={grammar}");
    }
    println!("cargo:rerun-if-env-changed=INSPEQ_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("inspeq");
        std::fs::write(&out, [])?;
        println!("cargo:warning=AYA_BUILD_SKIP is set: inspeqd embeds no eBPF object and will poll /proc");
        return Ok(());
    }
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
    let package = Package { name: "inspeq-ebpf", root_dir: &metadata, ..Default::default() };
    aya_build::build_ebpf([package], toolchain).map_err(|e| {
        anyhow!("building the eBPF programs failed (run `cargo xtask setup` for bpf-linker and rust-src): {e:#}")
    })
}

/// `inspeq-ebpf`'s directory: a sibling of this crate in the workspace.
fn cargo_metadata_root() -> anyhow::Result<String> {
    let here = std::env::var("CARGO_MANIFEST_DIR")?;
    let dir = std::path::Path::new(&here).parent().ok_or_else(|| anyhow!("{here} has no parent"))?.join("inspeq-ebpf");
    Ok(dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", dir.display()))?.to_owned())
}
