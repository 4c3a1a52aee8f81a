//! The values the daemon validates again where it uses them, each by one function that `check` calls too: a
//! service name that reaches an init system ([`ServiceName`]), a `matching` pattern ([`process_pattern`]) and an
//! `http` probe's `body` pattern ([`body_pattern`]).
//!
//! They live here, in the pure half, so that `inspeqctl check` refuses at the value's file:line:col exactly
//! what the daemon would refuse later (and used to log without a location, leaving the service unwatched). The
//! init systems re-export [`ServiceName`]; a second copy of either rule would drift.

use std::fmt;

/// A service name that is safe to hand to any init system: it becomes an argv element, a file name under a
/// service directory, or a D-Bus unit name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(String);

/// Why a service name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid service name {name:?}: {reason}")]
pub struct InvalidServiceName {
    pub name: String,
    pub reason: &'static str,
}

/// The characters a service name may hold besides ASCII letters and digits.
const SERVICE_NAME_PUNCTUATION: &str = "@._-:+";

impl ServiceName {
    /// Letters, digits and `@ . _ - : +` only, at most 255 bytes, not starting with `-` or `.`: no path
    /// separators, no shell metacharacters, never read as an option by `sv` or `initctl`, never `.` or `..`.
    ///
    /// # Errors
    /// [`InvalidServiceName`] with the first reason the name fails.
    pub fn new(name: &str) -> Result<Self, InvalidServiceName> {
        let refuse = |reason| Err(InvalidServiceName { name: name.to_owned(), reason });
        if name.is_empty() {
            return refuse("empty");
        }
        if name.len() > 255 {
            return refuse("longer than 255 bytes");
        }
        if name.starts_with('-') {
            return refuse("starts with '-' (it would be read as an option)");
        }
        if name.starts_with('.') {
            return refuse("starts with '.'");
        }
        if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || SERVICE_NAME_PUNCTUATION.contains(*c))) {
            return refuse(if c == '/' {
                "contains a path separator"
            } else if c.is_whitespace() {
                "contains whitespace"
            } else {
                "contains a character other than letters, digits and @._-:+"
            });
        }
        Ok(Self(name.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compiled-size cap for `matching` patterns: a pattern that needs more is a mistake, and the cap keeps a hostile
/// pattern from stalling `inspeqctl check` (and the daemon's reload).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A `check process ... matching "REGEX"` pattern, compiled as the daemon matches command lines with it.
///
/// # Errors
/// The regex crate's error: a syntax error, or a pattern over [`REGEX_SIZE_LIMIT`] compiled.
pub fn process_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build()
}

/// An `http` probe's `body "REGEX"`, compiled as the daemon matches answers with it (same size cap).
///
/// # Errors
/// The regex crate's error: a syntax error, or a pattern over [`REGEX_SIZE_LIMIT`] compiled.
pub fn body_pattern(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_that_reach_commands_are_plain() {
        for ok in ["nginx", "puma@1", "demo-http.service", "a_b:c+d", "sidekiq.2"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in ["", "../etc/passwd", "a/b", "-f", ".", "..", "a b", "x;rm", "$(id)", "a`b`", "a|b", "a\nb", "é"] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ServiceName::new(&"a".repeat(256)).is_err());
    }

    #[test]
    fn a_pattern_is_refused_for_its_syntax_and_for_its_size() {
        assert!(process_pattern("^sidekiq [0-9.]+").is_ok());
        assert!(process_pattern("(unclosed").is_err());
        // Each `\w` is a Unicode class of hundreds of ranges: a thousand of them compile to far more than 1 MiB.
        assert!(process_pattern(&"\\w".repeat(1000)).is_err());
    }
}
