//! Boots one kernel in qemu with the matrix's initramfs and reads its serial
//! console: TCG only (nested KVM fails on these machines), the console kept in
//! `<dir>/console.log`, and a guest that never reached its test driver (a panic
//! while booting, a hang) told apart from one that stopped during it. A guest that
//! did not boot is booted once more, and so is one whose kernel oopsed on an
//! `int3` at a live-patched site: TCG's emulation of a second CPU executing code
//! that `text_poke_bp` is patching (a tracepoint switched on or off while pages
//! fault) is not the kernel's or inspeq's fault, and the console says which.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use super::console::{self, Ended};

/// What the guest's /init prints around the job (see init.sh).
const BEGIN: &str = "==== inspeq-guest begin ====";
const END: &str = "==== inspeq-guest end rc=";
const UNAME: &str = "inspeq-guest: uname ";

/// How long a guest may take to reach its test driver (about 3 s when healthy).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Settings {
    pub memory_mib: u32,
    /// From start to power-off.
    pub timeout: Duration,
}

/// One guest's run.
pub struct Guest {
    /// `uname -r` as the guest said it.
    pub uname: Option<String>,
    /// The job's output: the lines between the begin and end markers.
    pub lines: Vec<String>,
    pub outcome: Outcome,
    /// From qemu's start to the begin marker.
    pub boot_time: Option<Duration>,
    pub elapsed: Duration,
    pub attempts: u32,
    /// The guest's kernel oopsed on an `int3` (see the module's doc).
    pub emulator_fault: bool,
}

/// A kernel oops on a breakpoint left by live code patching, as TCG's SMP
/// emulation produces it (seen once in 6.12's `mm_trace_rss_stat`).
fn is_emulator_fault(line: &str) -> bool {
    line.contains("Oops: int3")
}

pub enum Outcome {
    /// The job ran to its end, with this exit code.
    Finished(i32),
    /// The job began but the guest stopped before its end (why).
    Stopped(String),
    /// The guest never reached the job (why), twice.
    DidNotBoot(String),
}

/// Boots `vmlinuz` with `initrd`, handing each line of the job's output to `echo`.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    dir: &Path,
    settings: &Settings,
    echo: &mut dyn FnMut(&str),
) -> anyhow::Result<Guest> {
    let log = dir.join("console.log");
    let first = once(vmlinuz, initrd, &log, settings, echo)?;
    if let Outcome::Stopped(why) = &first.outcome
        && first.emulator_fault
    {
        eprintln!(
            "xtask: {}: the guest's kernel oopsed on an int3 at a live-patched site under TCG ({why}); running it once more",
            dir.display()
        );
        std::fs::rename(&log, dir.join("console.attempt1.log"))?;
        let mut second = once(vmlinuz, initrd, &log, settings, echo)?;
        second.attempts = 2;
        second.elapsed += first.elapsed;
        return Ok(second);
    }
    let Outcome::DidNotBoot(why) = &first.outcome else {
        return Ok(first);
    };
    eprintln!("xtask: {}: the guest did not boot ({why}); booting it once more", dir.display());
    std::fs::rename(&log, dir.join("console.attempt1.log"))?;
    let mut second = once(vmlinuz, initrd, &log, settings, echo)?;
    second.attempts = 2;
    second.elapsed += first.elapsed;
    Ok(second)
}

fn once(
    vmlinuz: &Path,
    initrd: &Path,
    log: &Path,
    settings: &Settings,
    echo: &mut dyn FnMut(&str),
) -> anyhow::Result<Guest> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-m")
        .arg(settings.memory_mib.to_string())
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 rdinit=/init panic=-1"]);
    let started = Instant::now();
    let (mut began, mut ended_rc, mut uname, mut lines) = (None, None, None, Vec::new());
    let captured = console::capture(&mut qemu, log, started + BOOT_TIMEOUT, |line| {
        if let Some(at) = line.find(END) {
            let rc = &line[at + END.len()..];
            ended_rc = rc.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok());
        } else if line.contains(BEGIN) {
            began = Some(started.elapsed());
            return Some(started + settings.timeout);
        } else if began.is_some() && ended_rc.is_none() {
            echo(line);
            lines.push(line.to_owned());
        } else if let Some(at) = line.find(UNAME) {
            uname = Some(line[at + UNAME.len()..].trim().to_owned());
        }
        None
    })?;
    let panic = captured.lines.iter().find(|l| l.contains("Kernel panic")).map(|l| l.trim().to_owned());
    let last = captured.lines.iter().rev().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or("");
    let why = match (&panic, &captured.ended) {
        (Some(panic), _) => panic.clone(),
        (None, Ended::TimedOut) => {
            let limit = if began.is_some() { settings.timeout } else { BOOT_TIMEOUT };
            format!("no power-off within {limit:?}; last line: {last}")
        }
        (None, Ended::Exited(status)) => {
            format!("qemu exited ({status}) with no end marker; last line: {last}")
        }
    };
    let outcome = match (began, ended_rc) {
        (_, Some(rc)) => Outcome::Finished(rc),
        (Some(_), None) => Outcome::Stopped(why),
        (None, None) => Outcome::DidNotBoot(why),
    };
    Ok(Guest {
        uname,
        lines,
        outcome,
        boot_time: began,
        elapsed: captured.elapsed,
        attempts: 1,
        emulator_fault: captured.lines.iter().any(|l| is_emulator_fault(l)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_int3_oops_at_a_patched_tracepoint_is_the_emulators_and_a_real_panic_is_not() {
        // From Debian's 6.12 under TCG, during the pid-namespace case.
        assert!(is_emulator_fault("[  231.459493] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"));
        assert!(!is_emulator_fault("[  231.468148] Kernel panic - not syncing: Fatal exception in interrupt"));
        assert!(!is_emulator_fault("[    3.1] Oops: general protection fault, probably for non-canonical address"));
    }
}
