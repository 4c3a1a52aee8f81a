//! The `alertmanager` channel: pushes alerts to a Prometheus Alertmanager's
//! `POST /api/v2/alerts`, the way a fleet of machines sends its alerts to one
//! place to be grouped, silenced and routed. A recovery is the same label set
//! with `endsAt` set to when it recovered, which resolves the alert.
//!
//! Built from the checked `config::model::Alertmanager`: `url`, the
//! Alertmanager's base URL (e.g. `http://alertmanager:9093`), and `firing_for`
//! (24 hours unless configured): a firing alert's `endsAt` is set that far
//! ahead, which is how long Alertmanager treats it as firing if no recovery
//! comes (inspeq sends once, unlike Prometheus, which re-sends each evaluation).
//! Alerts no event resolves (restarts, tests) end after an hour.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Alert, AlertKind, Batching, Channel, Endpoint, RuleState, SendFuture, Status, post_json, template};
use crate::config::model;

pub struct Alertmanager {
    http: reqwest::Client,
    /// `{url}/api/v2/alerts`.
    endpoint: Endpoint,
    firing_for: Duration,
}

const ONE_SHOT_FOR: Duration = Duration::from_secs(3600);

impl Alertmanager {
    pub fn new(config: &model::Alertmanager, http: reqwest::Client) -> Self {
        let mut url = config.url.clone();
        // The API under the base URL's path (an Alertmanager behind a prefix keeps it).
        let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Self { http, endpoint: Endpoint::new(url), firing_for: config.firing_for }
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
                            AlertKind::RuleRecovered(RuleState { for_secs: Some(secs), .. })
                            | AlertKind::Reachable { for_secs: secs, .. }
                            | AlertKind::ProbeAnswers { for_secs: secs, .. }
                            | AlertKind::Listening { for_secs: secs, .. } => alert.at - Duration::from_secs(*secs),
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
