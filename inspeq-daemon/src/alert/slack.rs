//! The `slack` channel: a Slack incoming webhook. The URL is the secret.
//!
//! Parameters: `url` (required), `username` (`inspeq`), `icon_emoji`
//! (`:rotating_light:`), `channel` (the webhook's own when left out). Slack
//! allows about one message per second per webhook, so a flood becomes one
//! digest message.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use super::{Alert, Channel, ConfigError, Params, SendFuture, post_json, template};

pub struct Slack {
    http: reqwest::Client,
    url: String,
    username: String,
    icon_emoji: String,
    channel: Option<String>,
}

impl Slack {
    pub fn from_params(
        route: &str,
        map: &BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let p = Params::new(route, "slack", map, &["url", "username", "icon_emoji", "channel"])?;
        Ok(Self {
            http,
            url: p.url("url", None)?.to_owned(),
            username: p.get("username").unwrap_or("inspeq").to_owned(),
            icon_emoji: p.get("icon_emoji").unwrap_or(":rotating_light:").to_owned(),
            channel: p.get("channel").map(str::to_owned),
        })
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
        Box::pin(post_json(&self.http, &self.url, body, &[]))
    }
}
