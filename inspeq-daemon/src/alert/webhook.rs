//! The `webhook` channel: a generic JSON POST in Alertmanager's webhook format
//! (version 4), so receivers written for Alertmanager take inspeq's alerts too.
//!
//! Built from the checked `config::model::Webhook`: `url`, and `secret`, which
//! signs each body (the header `X-Inspeq-Signature: sha256=<hex HMAC-SHA256 of
//! the raw body>`). Pending alerts go out together in one body's `alerts` list.

use serde_json::{Map, Value, json};

use super::{Alert, Batching, Channel, Endpoint, SendFuture, Status, post_json, template};
use crate::config::model;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "X-Inspeq-Signature";

pub struct Webhook {
    http: reqwest::Client,
    endpoint: Endpoint,
    secret: Option<ring::hmac::Key>,
    receiver: String,
}

impl Webhook {
    /// The channel of route `route`, which the body names as its `receiver`.
    pub fn new(route: &str, config: &model::Webhook, http: reqwest::Client) -> Self {
        Self {
            http,
            endpoint: Endpoint::new(config.url.clone()),
            secret: config
                .secret
                .as_ref()
                .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.expose().as_bytes())),
            receiver: route.to_owned(),
        }
    }

    /// The body for `alerts`: Alertmanager's webhook document, `receiver` being
    /// the route's name.
    pub fn payload(&self, alerts: &[Alert]) -> Value {
        let items: Vec<Value> = alerts.iter().map(template::structured).collect();
        let status = if alerts.iter().any(|a| a.event.status() == Status::Firing) { "firing" } else { "resolved" };
        let common = |per: fn(&Alert) -> Map<String, Value>| {
            let mut maps = alerts.iter().map(per);
            let mut common = maps.next().unwrap_or_default();
            for m in maps {
                common.retain(|k, v| m.get(k) == Some(v));
            }
            common
        };
        let host = alerts.first().map(|a| a.hostname.clone()).unwrap_or_default();
        json!({
            "version": "4",
            "groupKey": format!("{{}}:{{host={host:?}}}"),
            "truncatedAlerts": 0,
            "status": status,
            "receiver": self.receiver,
            "groupLabels": { "host": host },
            "commonLabels": common(template::labels),
            "commonAnnotations": common(template::annotations),
            "externalURL": "",
            "alerts": items,
        })
    }
}

/// The signature header's value for `body` signed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!("sha256={}", template::hex(ring::hmac::sign(&key, body).as_ref()))
}

impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn batching(&self) -> Batching {
        Batching::Native
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        let body = serde_json::to_vec(&self.payload(alerts)).expect("JSON values serialise");
        let headers: Vec<(&'static str, String)> = self
            .secret
            .iter()
            .map(|key| (SIGNATURE_HEADER, format!("sha256={}", template::hex(ring::hmac::sign(key, &body).as_ref()))))
            .collect();
        Box::pin(async move { post_json(&self.http, &self.endpoint, body, &headers).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
