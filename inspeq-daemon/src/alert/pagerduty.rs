//! The `pagerduty` channel: PagerDuty's Events API v2. A firing alert triggers
//! an incident, its recovery resolves it: both carry the condition's
//! fingerprint as `dedup_key`.
//!
//! Built from the checked `config::model::PagerDuty`: `routing_key` (the
//! integration key, a secret), `url` (default [`DEFAULT_URL`]) and `severity`,
//! which, when given, is every triggered event's `payload.severity` instead of
//! each condition's own (a route for warnings only, say). PagerDuty takes about
//! 120 events a minute per key and answers 429 past it; floods become one digest
//! incident.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Alert, Channel, Endpoint, SendFuture, Severity, Status, post_json, template};
use crate::config::model;

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct PagerDuty {
    http: reqwest::Client,
    endpoint: Endpoint,
    routing_key: model::Secret,
    /// The route's `severity`, over each condition's.
    severity: Option<Severity>,
}

/// PagerDuty's limit on `payload.summary`.
const SUMMARY_MAX: usize = 1024;

fn summary(text: String) -> String {
    if text.len() <= SUMMARY_MAX {
        return text;
    }
    format!("{}...", template::truncated(&text, SUMMARY_MAX - 3))
}

impl PagerDuty {
    pub fn new(config: &model::PagerDuty, http: reqwest::Client) -> Self {
        let url = config.url.clone().unwrap_or_else(|| DEFAULT_URL.parse().expect("the default URL parses"));
        Self { http, endpoint: Endpoint::new(url), routing_key: config.routing_key.clone(), severity: config.severity }
    }

    /// The event for one alert, or a digest trigger for several.
    pub fn payload(&self, alerts: &[Alert]) -> Value {
        let routing_key = self.routing_key.expose();
        match alerts {
            [alert] if alert.event.status() == Status::Resolved => json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": alert.fingerprint(),
            }),
            [alert] => json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": alert.fingerprint(),
                "client": "inspeq",
                "payload": {
                    "summary": summary(template::chat(alert)),
                    "source": alert.hostname,
                    "severity": self.severity.unwrap_or(alert.event.condition().severity).as_str(),
                    "timestamp": template::rfc3339(alert.at),
                    "component": alert.service,
                    "class": alert.event.kind(),
                    "custom_details": template::annotations(alert),
                },
            }),
            _ => {
                let host = alerts.first().map(|a| a.hostname.as_str()).unwrap_or_default();
                // The worst of the digest's alerts.
                let worst = alerts.iter().map(|a| a.event.condition().severity).min().unwrap_or(Severity::Info);
                let severity = self.severity.unwrap_or(worst);
                let lines: Vec<String> = alerts.iter().take(100).map(template::chat).collect();
                json!({
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": template::fingerprint(host, "inspeq", "digest"),
                    "client": "inspeq",
                    "payload": {
                        "summary": summary(template::digest_subject(alerts)),
                        "source": host,
                        "severity": severity.as_str(),
                        "timestamp": template::rfc3339(alerts.last().map_or(std::time::SystemTime::now(), |a| a.at)),
                        "component": "inspeq",
                        "class": "digest",
                        "custom_details": { "count": alerts.len(), "alerts": lines },
                    },
                })
            }
        }
    }
}

impl Channel for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn min_interval(&self) -> Option<Duration> {
        // 120 a minute.
        Some(Duration::from_millis(500))
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        let body = serde_json::to_vec(&self.payload(alerts)).expect("JSON values serialise");
        Box::pin(post_json(&self.http, &self.endpoint, body, &[]))
    }
}
