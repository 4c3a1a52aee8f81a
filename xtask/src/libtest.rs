//! Reads a libtest run's plain output (run with `--show-output`): each case's
//! result, a skip told apart from a pass by the tests' own `skipped NAME: reason`
//! line, and what a failing case printed.
//!
//! The output may come through a serial console, with other programs' lines in
//! between: a result line interrupted by a child's output is still found, and the
//! closing `successes:`/`failures:` lists settle what the result lines left open.

use std::collections::BTreeMap;

/// How one case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// It ran and printed why it did not test anything.
    Skip(String),
    /// What it printed (the panic message among it).
    Fail(String),
}

/// Every case `lines` reports, by name.
pub fn parse(lines: &[String]) -> BTreeMap<String, Outcome> {
    let mut results = BTreeMap::new();
    // A `test NAME ... ` line whose result has not come yet.
    let mut pending: Option<String> = None;
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut list: Option<bool> = None;
    for raw in lines {
        let line = raw.trim_end_matches(['\r', '\n']);
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.split_once(" ... ")
            && !name.contains(' ')
        {
            pending = None;
            match result_word(result) {
                Some(outcome) => {
                    results.insert(name.to_owned(), outcome);
                }
                None => pending = Some(name.to_owned()),
            }
            continue;
        }
        if let Some(name) = &pending
            && let Some(outcome) = result_word(line.trim())
        {
            results.insert(name.clone(), outcome);
            pending = None;
            continue;
        }
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            section = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        if line == "successes:" || line == "failures:" {
            section = None;
            list = Some(line == "successes:");
            continue;
        }
        if line.starts_with("test result: ") {
            section = None;
            list = None;
            continue;
        }
        if let Some(name) = &section {
            sections.get_mut(name).unwrap().push(line.to_owned());
        } else if let Some(passed) = list
            && let Some(name) = line.strip_prefix("    ")
            && !name.contains(' ')
        {
            let outcome = if passed { Outcome::Pass } else { Outcome::Fail(String::new()) };
            results.entry(name.to_owned()).or_insert(outcome);
        }
    }
    for (name, output) in sections {
        let text = output.join("\n").trim().to_owned();
        match results.get_mut(&name) {
            Some(Outcome::Fail(failure)) => *failure = text,
            Some(outcome @ Outcome::Pass) => {
                let marker = format!("skipped {name}: ");
                if let Some(reason) = output.iter().find_map(|l| l.strip_prefix(&marker)) {
                    *outcome = Outcome::Skip(reason.to_owned());
                }
            }
            _ => {}
        }
    }
    results
}

/// The case that was running when `lines` end: its `test NAME ... ` line came
/// and its result did not.
pub fn unfinished(lines: &[String]) -> Option<String> {
    let mut running = None;
    for line in lines {
        if let Some((name, result)) = line.strip_prefix("test ").and_then(|rest| rest.split_once(" ..."))
            && !name.contains(' ')
        {
            running = result_word(result).is_none().then(|| name.to_owned());
        } else if running.is_some() && result_word(line).is_some() {
            running = None;
        }
    }
    running
}

/// `ok`, `FAILED`, `ignored` or `ignored, REASON` (libtest's words).
fn result_word(text: &str) -> Option<Outcome> {
    match text.trim() {
        "ok" => Some(Outcome::Pass),
        "FAILED" => Some(Outcome::Fail(String::new())),
        "ignored" => Some(Outcome::Skip("ignored".to_owned())),
        other => other.strip_prefix("ignored, ").map(|reason| Outcome::Skip(reason.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(|l| format!("{l}\r")).collect()
    }

    #[test]
    fn results_skips_and_failure_output() {
        let output = lines(
            "running 4 tests
test a ... ok
test b ... FAILED
test c ... ignored, needs a disk
test d ... 2026-12-01 INFO a child wrote here
ok

successes:

---- d stdout ----
skipped d: not root


successes:
    a
    d

failures:

---- b stdout ----
thread 'b' panicked at tests/tests/kernel.rs:40:5:
eBPF did not start

failures:
    b

test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out",
        );
        let results = parse(&output);
        assert_eq!(results["a"], Outcome::Pass);
        assert_eq!(
            results["b"],
            Outcome::Fail("thread 'b' panicked at tests/tests/kernel.rs:40:5:\neBPF did not start".into())
        );
        assert_eq!(results["c"], Outcome::Skip("needs a disk".into()));
        assert_eq!(results["d"], Outcome::Skip("not root".into()));
        assert_eq!(results.len(), 4);
    }

    #[test]
    fn a_result_lost_in_noise_is_taken_from_the_closing_list() {
        let output = lines(
            "test a ... [   12.3] some kernel line
test b ... ok

failures:
    a

test result: FAILED. 1 passed; 1 failed",
        );
        let results = parse(&output);
        assert_eq!(results["a"], Outcome::Fail(String::new()));
        assert_eq!(results["b"], Outcome::Pass);
    }

    #[test]
    fn the_case_a_run_stopped_in() {
        assert_eq!(unfinished(&lines("test a ... ok\ntest b ... ")), Some("b".into()));
        assert_eq!(unfinished(&lines("test a ... ok\ntest b ... noise\nok")), None);
        assert_eq!(unfinished(&lines("test a ... ok")), None);
    }
}
