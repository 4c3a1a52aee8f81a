//! The `pagerduty` channel: PagerDuty's Events API v2. A firing alert triggers
//! an incident, its recovery resolves it: both carry the condition's
//! fingerprint as `dedup_key`.
//!
//! Parameters: `routing_key` (required, the integration key), `url`
//! (`https://events.pagerduty.com/v2/enqueue`). PagerDuty takes about 120 events
//! a minute per key and answers 429 past it; floods become one digest incident.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use super::{Alert, Channel, ConfigError, Params, SendFuture, Severity, Status, post_json, template};

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct PagerDuty {
    http: reqwest::Client,
    url: String,
    routing_key: String,
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
    pub fn from_params(
        route: &str,
        map: &BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let p = Params::new(route, "pagerduty", map, &["routing_key", "url"])?;
        Ok(Self {
            http,
            url: p.url("url", Some(DEFAULT_URL))?.to_owned(),
            routing_key: p.require("routing_key")?.to_owned(),
        })
    }

    /// The event for one alert, or a digest trigger for several.
    pub fn payload(&self, alerts: &[Alert]) -> Value {
        match alerts {
            [alert] if alert.event.status() == Status::Resolved => json!({
                "routing_key": self.routing_key,
                "event_action": "resolve",
                "dedup_key": alert.fingerprint(),
            }),
            [alert] => json!({
                "routing_key": self.routing_key,
                "event_action": "trigger",
                "dedup_key": alert.fingerprint(),
                "client": "inspeq",
                "payload": {
                    "summary": summary(template::chat(alert)),
                    "source": alert.hostname,
                    "severity": alert.event.condition().severity.as_str(),
                    "timestamp": template::rfc3339(alert.at),
                    "component": alert.service,
                    "class": alert.event.kind(),
                    "custom_details": template::annotations(alert),
                },
            }),
            _ => {
                let host = alerts.first().map(|a| a.hostname.as_str()).unwrap_or_default();
                let severity = alerts
                    .iter()
                    .map(|a| a.event.condition().severity)
                    .min_by_key(|s| match s {
                        Severity::Critical => 0,
                        Severity::Error => 1,
                        Severity::Warning => 2,
                        Severity::Info => 3,
                    })
                    .unwrap_or(Severity::Info);
                let lines: Vec<String> = alerts.iter().take(100).map(template::chat).collect();
                json!({
                    "routing_key": self.routing_key,
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
        Box::pin(post_json(&self.http, &self.url, body, &[]))
    }
}
