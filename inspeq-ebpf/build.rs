//! Makes cargo rebuild the eBPF object when `bpf-linker` changes (it links every
//! object of this crate), the trick the aya template uses.

use which::which;

fn main() {
    // Without bpf-linker the build fails later with an obscure linker error; say it here.
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!("cargo:warning=bpf-linker not found in PATH: run `cargo xtask setup` (installs bpf-linker@0.10.4)")
        }
    }
}
