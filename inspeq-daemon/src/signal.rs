//! Signal names and numbers from one table, nix's (Linux's own list): the rule
//! language's `signaled(KILL)`, the alerts' "killed by signal 9 (SIGKILL)" and
//! `inspeqd trace` all read it. A pure lookup: nothing here sends a signal, so the
//! rule core may use it.

use std::str::FromStr as _;

use nix::sys::signal::Signal;

/// The highest realtime signal (`SIGRTMAX`): numbers above it name no signal.
const MAX: i32 = 64;

/// `SIGKILL`, `KILL`, `kill` or `9` → 9. Realtime signals have no names in the
/// table and are written by number (`34`).
#[must_use]
pub fn number(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=MAX).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&full).ok().map(|s| s as i32)
}

/// 9 → `SIGKILL`; `None` for a realtime or unknown number.
#[must_use]
pub fn name(number: i32) -> Option<&'static str> {
    Signal::try_from(number).ok().map(Signal::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_both_ways() {
        for (text, n) in [("SIGKILL", Some(9)), ("segv", Some(11)), ("TERM", Some(15)), ("15", Some(15))] {
            assert_eq!(number(text), n, "{text}");
        }
        assert_eq!(number("34"), Some(34), "a realtime signal by number");
        for text in ["SIGNOPE", "0", "65", "-9", ""] {
            assert_eq!(number(text), None, "{text}");
        }
        assert_eq!(name(9), Some("SIGKILL"));
        assert_eq!(name(6), Some("SIGABRT"));
        assert_eq!(name(34), None);
    }
}
