//! The `slack` channel: a Slack incoming webhook, built from the checked
//! `config::model::Slack`. The URL is the secret: errors show its host only.
//!
//! `username` defaults to `inspeq`, `icon_emoji` to `:rotating_light:`,
//! `channel` to the webhook's own. Slack allows about one message per second
//! per webhook, so a flood becomes one digest message.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Alert, Channel, Endpoint, SendFuture, post_json, template};
use crate::config::model;

pub struct Slack {
    http: reqwest::Client,
    endpoint: Endpoint,
    username: String,
    icon_emoji: String,
    channel: Option<String>,
}

impl Slack {
    pub fn new(config: &model::Slack, http: reqwest::Client) -> Self {
        Self {
            http,
            endpoint: Endpoint::secret(config.url.expose().clone()),
            username: config.username.clone().unwrap_or_else(|| "inspeq".to_owned()),
            icon_emoji: config.icon_emoji.clone().unwrap_or_else(|| ":rotating_light:".to_owned()),
            channel: config.channel.clone(),
        }
    }

    /// The message for one alert, or a digest of several.
    pub fn payload(&self, alerts: &[Alert]) -> Value {
        let text = match alerts {
            [alert] => template::chat(alert),
            _ => format!("*{}*\n{}", template::digest_subject(alerts), template::digest(alerts)),
        };
        let mut body = json!({ "text": text, "username": self.username, "icon_emoji": self.icon_emoji });
        if let Some(channel) = &self.channel {
            body["channel"] = channel.clone().into();
        }
        body
    }
}

impl Channel for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn min_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        let body = serde_json::to_vec(&self.payload(alerts)).expect("JSON values serialise");
        Box::pin(post_json(&self.http, &self.endpoint, body, &[]))
    }
}
