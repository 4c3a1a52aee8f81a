//! The `alertmanager` channel: pushes alerts to a Prometheus Alertmanager's
//! `POST /api/v2/alerts`, the way a fleet of machines sends its alerts to one
//! place to be grouped, silenced and routed. A recovery is the same label set
//! with `endsAt` set to when it recovered, which resolves the alert.
//!
//! Parameters: `url` (required, the Alertmanager's base URL, e.g.
//! `http://alertmanager:9093`), `firing_for` (`24h`; how long a firing alert
//! stays active without a recovery: inspeq sends once, unlike Prometheus, which
//! re-sends each evaluation). Alerts no event resolves (restarts, tests) end
//! after an hour.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use super::{
    Alert, AlertKind, Batching, Channel, ConfigError, Params, RuleState, SendFuture, Status, post_json, template,
};

pub struct Alertmanager {
    http: reqwest::Client,
    /// `{url}/api/v2/alerts`.
    endpoint: String,
    firing_for: Duration,
}

const ONE_SHOT_FOR: Duration = Duration::from_secs(3600);

/// `90s`, `15m`, `24h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(scale)?))
}

impl Alertmanager {
    pub fn from_params(
        route: &str,
        map: &BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let p = Params::new(route, "alertmanager", map, &["url", "firing_for"])?;
        let url = p.url("url", None)?;
        let firing_for = match p.get("firing_for") {
            Some(text) => {
                parse_duration(text).ok_or_else(|| p.bad("firing_for", text, "expected e.g. 90s, 15m, 24h"))?
            }
            None => Duration::from_secs(86_400),
        };
        Ok(Self { http, endpoint: format!("{}/api/v2/alerts", url.trim_end_matches('/')), firing_for })
    }

    /// The body: one postable alert per alert.
    pub fn payload(&self, alerts: &[Alert]) -> Value {
        let items: Vec<Value> = alerts
            .iter()
            .map(|alert| {
                let condition = alert.event.condition();
                let (starts, ends) = match alert.event.status() {
                    Status::Resolved => {
                        let started = match &alert.event {
                            AlertKind::RuleRecovered(RuleState { for_secs: Some(secs), .. }) => {
                                alert.at - Duration::from_secs(*secs)
                            }
                            _ => alert.at,
                        };
                        (started, alert.at)
                    }
                    Status::Firing if condition.one_shot => (alert.at, alert.at + ONE_SHOT_FOR),
                    Status::Firing => (alert.at, alert.at + self.firing_for),
                };
                json!({
                    "labels": template::labels(alert),
                    "annotations": template::annotations(alert),
                    "startsAt": template::rfc3339(starts),
                    "endsAt": template::rfc3339(ends),
                })
            })
            .collect();
        Value::Array(items)
    }
}

impl Channel for Alertmanager {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn batching(&self) -> Batching {
        Batching::Native
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        let body = serde_json::to_vec(&self.payload(alerts)).expect("JSON values serialise");
        Box::pin(post_json(&self.http, &self.endpoint, body, &[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1w"), None);
    }
}
