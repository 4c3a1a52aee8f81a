//! Man pages and shell completions, generated from the binaries' own argument
//! definitions so they never drift: `inspeqd generate-assets DIR` and
//! `inspeqctl generate-assets DIR` write `man/NAME.SECTION` and
//! `completions/{bash,zsh,fish}/...` below DIR (for `cargo xtask install`).

use std::path::Path;

use clap_complete::Shell;

/// Writes the man page (in `section`) and completions of `command` below `dir`.
pub fn generate(mut command: clap::Command, section: &str, dir: &Path) -> std::io::Result<()> {
    let name = command.get_name().to_owned();
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).section(section).render(&mut page)?;
    std::fs::write(man_dir.join(format!("{name}.{section}")), page)?;
    for (shell, file) in
        [(Shell::Bash, name.clone()), (Shell::Zsh, format!("_{name}")), (Shell::Fish, format!("{name}.fish"))]
    {
        let shell_dir = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&shell_dir)?;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, &name, &mut script);
        std::fs::write(shell_dir.join(file), script)?;
    }
    Ok(())
}
