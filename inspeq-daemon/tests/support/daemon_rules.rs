//! Engines with rules on daemon metric families that `check` still refuses (mysql's, #14 part 2), built by hand
//! with the catalogue's kind and unit: the engine's arithmetic is the same for every family (the collected ones
//! are written as rules in `a_failed_collection_leaves_the_familys_rules_unknown_and_trips_is_unreachable` and
//! tests/tests/daemons.rs). For the engine's specifications (`engine_scenarios.rs`,
//! `engine_values.rs` include this file with `#[path]`: each test file is its own crate).

use inspeq_daemon::config::amount::parse_amount;
use inspeq_daemon::config::load;
use inspeq_daemon::config::metrics::{Scope, lookup};
use inspeq_daemon::config::model::{Condition, MetricName, MetricRule, Op, Rule};
use inspeq_daemon::engine::{EngineState, Timestamp};

/// `service` with one `... then alert` rule per `rules` entry (`mysql:Queries > 1k/sec`), each built by hand.
pub fn daemon_rules(service: &str, rules: &[&str]) -> EngineState {
    let text = format!("check service {service}\n  if memory:rss > 1 then alert\n");
    let (mut config, diagnostics) = load([("services.d/daemon.inq", text.as_str())]);
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
    let template = config.services[0].rules.remove(0);
    config.services[0].rules = rules
        .iter()
        .map(|text| {
            let (metric, threshold) = text.split_once(" > ").unwrap();
            let (family, name) = metric.split_once(':').unwrap();
            let resolved = lookup(family, Some(name), Scope::Process).unwrap();
            let condition = Condition::Metric(MetricRule {
                metric: MetricName::new(family, Some(name)),
                kind: resolved.kind,
                unit: resolved.unit,
                op: Op::Gt,
                threshold: parse_amount(threshold).unwrap(),
                cycles: 1,
            });
            Rule { condition, text: (*text).to_owned(), ..template.clone() }
        })
        .collect();
    EngineState::new(&config, Timestamp::ZERO)
}
