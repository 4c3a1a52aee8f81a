//! The semantic pass: turns syntax trees into the checked [`model`](crate::config::model), reporting every problem
//! with its location and what was expected. [`global`] checks `inspeq.conf` (settings and alert routes),
//! [`checks`] the `*.inq` files (checks, rules, actions, jobs); [`secrets`] finds the secrets in both, so that
//! no diagnostic quotes one and a file every user can read is warned about. This file holds what they share.
//!
//! Problems that make a rule or a check meaningless are errors; problems Inspeqtor tolerated (unknown `set` keys,
//! unknown parameters, rules that can never fire) are warnings, so that Inspeqtor files keep loading unchanged.

mod checks;
mod global;
mod probes;
pub mod secrets;

use std::collections::{BTreeMap, HashMap};

use crate::config::ast::Span;
use crate::config::diagnostic::SourceFile;
use crate::config::model::{Check, Job, Location, Route, Settings};

pub use checks::check_checks;
pub use global::check_global;

/// What the files checked so far have declared, for the checks that span files.
#[derive(Default)]
pub struct Context {
    pub settings: Settings,
    pub routes: BTreeMap<Option<String>, Route>,
    pub host: Option<Check>,
    pub services: Vec<Check>,
    pub jobs: Vec<Job>,
    /// Where each service and job name is in `services` and `jobs`: a duplicate is found without a scan of all
    /// the earlier ones, which made loading quadratic (40,000 checks took 23 s).
    pub(super) service_index: HashMap<String, usize>,
    pub(super) job_index: HashMap<String, usize>,
}

pub(super) fn location(file: &SourceFile<'_>, span: Span) -> Location {
    let d = file.error(span, "");
    Location { path: d.path, line: d.line, column: d.column }
}

pub(super) fn at(loc: &Location) -> String {
    format!("{}:{}", loc.path, loc.line)
}

pub(super) fn route_known(cx: &Context, route: &str) -> bool {
    cx.routes.contains_key(&Some(route.to_owned()))
}

pub(super) fn unknown_route(cx: &Context, route: &str) -> String {
    let named: Vec<&str> = cx.routes.keys().flatten().map(String::as_str).collect();
    if named.is_empty() {
        format!(
            "unknown route `{route}`, expected a route declared in inspeq.conf with `send alerts to {route} via ...`"
        )
    } else {
        format!("unknown route `{route}`, expected one of {}", named.join(", "))
    }
}
