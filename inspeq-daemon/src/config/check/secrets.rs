//! Secrets in configuration files: where they are written, so that no diagnostic shows one and a file holding one
//! is not left readable by every user.
//!
//! The secrets are the values of the parameters [`global::secret_params`] names for each channel (an email
//! password, a webhook's signing secret, a PagerDuty routing key, a Slack webhook URL) and a check's `with
//! password` ([`CheckParams::SECRETS`]). Pure like the rest of the pass: a file's mode comes in as a number from
//! `load_dir`, the one reader of the disk.

use crate::config::ast::{ChecksFile, GlobalFile, GlobalStatement, Span};
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::model::CheckParams;

use super::global;

/// One secret value in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretAt {
    /// The value as written (with its quotes, if quoted).
    pub span: Span,
    /// What it is, for people: "the `password` of route `ops`".
    pub what: String,
}

/// The secrets of an `inspeq.conf`.
#[must_use]
pub fn in_global(tree: &GlobalFile) -> Vec<SecretAt> {
    let mut found = Vec::new();
    for statement in &tree.statements {
        let GlobalStatement::SendAlerts(send) = statement else { continue };
        let keys = global::secret_params(&send.channel.value);
        let route = send.route.as_ref().map_or("the default route".to_owned(), |r| format!("route `{}`", r.value));
        for group in &send.params {
            // A group is `key value`; words beyond (a missing comma, an unquoted value with spaces) that follow a
            // secret's value are taken for more of it.
            let mut secret_key: Option<&str> = None;
            for (i, word) in group.iter().enumerate() {
                if i % 2 == 0 && keys.contains(&word.value.as_str()) {
                    secret_key = Some(&word.value);
                } else if let Some(key) = secret_key {
                    found.push(SecretAt { span: word.span, what: format!("the `{key}` of {route}") });
                }
            }
        }
    }
    found
}

/// The secrets of a check file.
#[must_use]
pub fn in_checks(tree: &ChecksFile) -> Vec<SecretAt> {
    let mut found = Vec::new();
    for block in &tree.checks {
        let check = block.name.as_ref().map_or_else(|| block.kind.value.clone(), |n| n.value.clone());
        for (key, value) in &block.params {
            if CheckParams::SECRETS.contains(&key.value.as_str()) {
                found.push(SecretAt { span: value.span, what: format!("the `{}` of check `{check}`", key.value) });
            }
        }
    }
    found
}

/// The warning for a file that holds `secrets` while its `mode` lets every user read it, pointing at the first
/// secret. Group-readable is fine: `chmod 640` with the file's group the daemon's is the usual way to share it
/// with `inspeqctl check` run by an operator.
#[must_use]
pub fn readable_by_others(file: &SourceFile<'_>, secrets: &[SecretAt], mode: u32) -> Option<Diagnostic> {
    let first = secrets.first()?;
    if mode & 0o004 == 0 {
        return None;
    }
    let what = match secrets.len() {
        1 => first.what.clone(),
        n => format!("{} and {} more secret{}", first.what, n - 1, if n == 2 { "" } else { "s" }),
    };
    let path = file.path;
    Some(file.warning(
        first.span,
        format!(
            "{path} holds {what} and is readable by every user (mode {:04o}), expected it readable by its owner \
             and group only: run `chmod 640 {path}` (or `chmod 600 {path}`)",
            mode & 0o7777
        ),
    ))
}

/// Hides the secrets in the source lines that `diagnostics` of `file` quote: each of their characters becomes
/// `*`, so the caret under the line still points where it did. A diagnostic's message never quotes a secret (the
/// checker words them so); its source line would.
pub fn mask(file: &SourceFile<'_>, secrets: &[SecretAt], diagnostics: &mut [Diagnostic]) {
    // (line, first column, width), 1-based as diagnostics count them.
    let spots: Vec<(usize, usize, usize)> = secrets
        .iter()
        .map(|s| {
            let d = file.error(s.span, "");
            (d.line, d.column, d.width)
        })
        .collect();
    for d in diagnostics.iter_mut().filter(|d| d.path == file.path) {
        for &(_, column, width) in spots.iter().filter(|(line, _, _)| *line == d.line) {
            let hidden = column..column + width;
            d.source_line = d
                .source_line
                .chars()
                .enumerate()
                .map(|(i, c)| if hidden.contains(&(i + 1)) { '*' } else { c })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load::{Source, load_sources};

    fn conf(text: &str, mode: u32) -> Vec<String> {
        let (_, diagnostics) = load_sources([Source { path: "/etc/inspeq/inspeq.conf", text, mode: Some(mode) }]);
        diagnostics.iter().map(|d| format!("{}\n{}", d.short(), d.source_line)).collect()
    }

    const EMAIL: &str = "send alerts to ops via email with smtp_server mail.example.com, username a, password \"s3cr\\\"t\", to_email o@example.com\n";

    #[test]
    fn a_secret_readable_by_every_user_is_warned_about_with_the_fix() {
        let diagnostics = conf(EMAIL, 0o100_644);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let first = diagnostics[0].lines().next().unwrap();
        assert_eq!(
            first,
            "/etc/inspeq/inspeq.conf:1:86: warning: /etc/inspeq/inspeq.conf holds the `password` of route `ops` and \
             is readable by every user (mode 0644), expected it readable by its owner and group only: run \
             `chmod 640 /etc/inspeq/inspeq.conf` (or `chmod 600 /etc/inspeq/inspeq.conf`)"
        );
        assert!(!diagnostics[0].contains("s3cr"), "the quoted line hides the password: {}", diagnostics[0]);
        assert!(diagnostics[0].ends_with("password *********, to_email o@example.com"), "{}", diagnostics[0]);
    }

    #[test]
    fn owner_and_group_only_files_and_files_without_secrets_are_fine() {
        assert!(conf(EMAIL, 0o100_640).is_empty());
        assert!(conf(EMAIL, 0o100_600).is_empty());
        assert!(
            conf("send alerts via slack with url https://example.com/x\nsend alerts to a via log\n", 0o640).is_empty()
        );
        assert!(conf("send alerts via log\nsend alerts to h via webhook with url http://x/h\n", 0o644).is_empty());
    }

    #[test]
    fn every_kind_of_secret_counts() {
        for (statement, what) in [
            ("send alerts via webhook with url http://x/h, secret k", "the `secret` of the default route"),
            ("send alerts via pagerduty with routing_key k", "the `routing_key` of the default route"),
            ("send alerts via slack with url https://hooks.slack.com/services/T/B/X", "the `url` of the default route"),
            (
                "send alerts via gmail with username u, password p, to_email a@b.c",
                "the `password` of the default route",
            ),
        ] {
            let diagnostics = conf(&format!("{statement}\n"), 0o604);
            assert_eq!(diagnostics.len(), 1, "{statement}: {diagnostics:#?}");
            assert!(
                diagnostics[0].contains(&format!("holds {what} and is readable by every user (mode 0604)")),
                "{diagnostics:?}"
            );
        }
        let two = conf(
            "send alerts via pagerduty with routing_key k\nsend alerts to x via webhook with url http://x, secret s\n",
            0o644,
        );
        assert!(two[0].contains("holds the `routing_key` of the default route and 1 more secret and"), "{two:?}");
    }

    #[test]
    fn a_check_files_password_counts_too() {
        let text = "check service mysql with password \"hunter2\", port 3306\n  if mysql:Queries > 1k/sec then alert\n";
        let (_, diagnostics) = load_sources([Source { path: "services.d/mysql.inq", text, mode: Some(0o644) }]);
        let warning = diagnostics.iter().find(|d| d.message.contains("readable by every user")).expect("a warning");
        assert_eq!((warning.line, warning.column), (1, 35));
        assert!(
            warning.message.starts_with("services.d/mysql.inq holds the `password` of check `mysql` and"),
            "{warning}"
        );
        assert!(diagnostics.iter().all(|d| !d.source_line.contains("hunter2")), "{diagnostics:#?}");
        let (_, quiet) = load_sources([Source { path: "services.d/mysql.inq", text, mode: Some(0o640) }]);
        assert!(quiet.iter().all(|d| !d.message.contains("readable by every user")), "{quiet:#?}");
    }

    #[test]
    fn no_diagnostic_quotes_a_secret() {
        // Errors on the very lines that hold secrets: the quoted source lines are masked, the messages never name
        // the values.
        let text = "send alerts via slack with url hooks.slack.com/services/T/B/SECRET1, colour red\n\
                    send alerts to m via email with smtp_server \"bad host\", password SECRET2, to_email a@b.c\n\
                    send alerts to n via webhook with url http://x/h, secret SECRET3 SECRET4\n";
        let (_, diagnostics) = load_sources([Source { path: "inspeq.conf", text, mode: None }]);
        assert!(diagnostics.len() >= 3, "{diagnostics:#?}");
        for d in &diagnostics {
            let shown = crate::config::render(std::slice::from_ref(d));
            assert!(!shown.contains("SECRET"), "{shown}");
        }
    }
}
