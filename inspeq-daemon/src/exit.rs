//! How a process ended: one type from the kernel's record to the alert's words.
//!
//! [`ExitStatus`] is built once, where the exit is learned — the eBPF record's decode, the process connector's
//! message, a zombie's `/proc/PID/stat`, the init system's own record of its main process — and carried
//! unchanged through the engine (its input, its notices, the value `status` shows) into the alert, whose outbox
//! stores it as JSON. [`Exit`] adds what else the kernel knew at the end (the OOM killer's choice, the resident
//! memory), so an OOM alert can say how big the process was.
//!
//! Pure data, no I/O: the engine depends on it, and `tests/purity.rs` checks this file with the engine's rules.

use serde::{Deserialize, Serialize};

/// How a process ended, as `waitpid` says; or that nobody could learn it.
///
/// The serde shape is the alert outbox's on-disk format (`{"code":1}`, `{"signal":{"signal":9,"core_dumped":false}}`,
/// `"unknown"`): records written by earlier versions must keep reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal killed it.
    Signal { signal: i32, core_dumped: bool },
    /// The process is gone, but how it ended could not be learned: a tier without eBPF found it gone after its
    /// parent reaped it, or could not read its status, and the init system did not say either. Never a made-up
    /// code 0: rules judge it as unknown (see `engine::ProcessExit::crashed`).
    Unknown,
}

impl ExitStatus {
    /// Decodes a raw wait status (`(code << 8) | signal | 0x80 core`), as the kernel keeps it in
    /// `task_struct.exit_code` and `waitpid` returns it.
    #[must_use]
    pub fn from_wait_status(status: u32) -> Self {
        let signal = (status & 0x7f) as i32;
        if signal == 0 {
            Self::Code(((status >> 8) & 0xff) as i32)
        } else {
            Self::Signal { signal, core_dumped: status & 0x80 != 0 }
        }
    }

    /// The exit code, when it called `exit`.
    #[must_use]
    pub fn code(self) -> Option<i32> {
        match self {
            Self::Code(code) => Some(code),
            Self::Signal { .. } | Self::Unknown => None,
        }
    }

    /// The signal that killed it.
    #[must_use]
    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Signal { signal, .. } => Some(signal),
            Self::Code(_) | Self::Unknown => None,
        }
    }

    #[must_use]
    pub fn core_dumped(self) -> bool {
        matches!(self, Self::Signal { core_dumped: true, .. })
    }

    #[must_use]
    pub fn is_unknown(self) -> bool {
        self == Self::Unknown
    }
}

/// One process's end, as every layer above the kernel side carries it: which process, how it ended, whether the
/// OOM killer chose it, and its resident memory at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: ExitStatus,
    /// The kernel's OOM killer chose it (only the eBPF tier can tell; the others say `false`).
    pub oom_killed: bool,
    /// Resident bytes at exit, when the kernel side knew them (the eBPF record; `None` elsewhere).
    pub rss_bytes: Option<u64>,
}

impl Exit {
    /// An exit whose status is known and nothing else is: what most tests and the tiers without eBPF have.
    #[must_use]
    pub fn new(pid: u32, status: ExitStatus) -> Self {
        Exit { pid, status, oom_killed: false, rss_bytes: None }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Code(0));
        assert_eq!(ExitStatus::from_wait_status(3 << 8), ExitStatus::Code(3));
        assert_eq!(ExitStatus::from_wait_status(255 << 8), ExitStatus::Code(255));
        assert_eq!(ExitStatus::from_wait_status(9), ExitStatus::Signal { signal: 9, core_dumped: false });
        assert_eq!(ExitStatus::from_wait_status(0x80 | 11), ExitStatus::Signal { signal: 11, core_dumped: true });
    }

    #[test]
    fn the_accessors_say_nothing_they_do_not_know() {
        let unknown = ExitStatus::Unknown;
        assert_eq!((unknown.code(), unknown.signal(), unknown.core_dumped()), (None, None, false));
        assert!(unknown.is_unknown());
        let killed = ExitStatus::Signal { signal: 6, core_dumped: true };
        assert_eq!((killed.code(), killed.signal(), killed.core_dumped()), (None, Some(6), true));
        assert_eq!(ExitStatus::Code(0).code(), Some(0));
    }

    /// The outbox's records on disk: the shape `alert::Exit` had before it became this type.
    #[test]
    fn the_serde_shape_is_the_outboxs() {
        let cases = [
            (ExitStatus::Code(1), r#"{"code":1}"#),
            (ExitStatus::Signal { signal: 9, core_dumped: false }, r#"{"signal":{"signal":9,"core_dumped":false}}"#),
            (ExitStatus::Unknown, r#""unknown""#),
        ];
        for (status, json) in cases {
            assert_eq!(serde_json::to_string(&status).unwrap(), json);
            assert_eq!(serde_json::from_str::<ExitStatus>(json).unwrap(), status);
        }
    }
}
