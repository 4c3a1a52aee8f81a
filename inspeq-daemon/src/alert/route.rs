//! Alert routes: which channel an alert goes to.
//!
//! Inspeqtor's model: `send alerts via CH with ...` is the default route, `send
//! alerts to NAME via CH with ...` a named one, one channel per route. A rule's
//! `alert NAME` picks route NAME; a bare `alert` (and the process up/down and job
//! events) picks the check's `owner` route, else the default. Unlike Inspeqtor
//! (#149), a machine with no route still runs: its alerts go to the log.
//!
//! [`Routes::build`] makes each route's channel from the checked config model's routes, so a route is exactly what
//! `inspeqctl check` accepted; [`Routes::from_routes`] takes channels made elsewhere (tests record with one).

use std::{collections::BTreeMap, fmt, sync::Arc};

use super::{Channel, ConfigError, log::Log};
use crate::config::model;

/// A route's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteName {
    Default,
    Named(String),
    /// Where alerts go when no route is configured.
    Fallback,
}

impl RouteName {
    /// The route's directory name in the outbox; distinct for distinct routes
    /// whatever characters a route name has.
    pub fn dir_name(&self) -> String {
        match self {
            RouteName::Default => "default".to_owned(),
            RouteName::Fallback => "fallback-log".to_owned(),
            RouteName::Named(name) => {
                let mut dir = String::from("to-");
                for b in name.bytes() {
                    if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                        dir.push(char::from(b));
                    } else {
                        dir.push_str(&format!("%{b:02X}"));
                    }
                }
                dir
            }
        }
    }

    /// Whether `inspeqctl test-alert NAME` means this route (`default` names
    /// the default route).
    pub fn matches(&self, name: &str) -> bool {
        match self {
            RouteName::Default => name == "default",
            RouteName::Named(n) => n == name,
            RouteName::Fallback => name == "log",
        }
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteName::Default => f.write_str("default"),
            RouteName::Named(name) => f.write_str(name),
            RouteName::Fallback => f.write_str("log (no route configured)"),
        }
    }
}

/// A route and its channel.
#[derive(Clone)]
pub struct Route {
    pub name: RouteName,
    pub channel: Arc<dyn Channel>,
}

/// Where an alert should go, as its rule and check say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// `alert NAME` in the rule.
    pub route: Option<&'a str>,
    /// The check's `owner` parameter.
    pub owner: Option<&'a str>,
}

/// A rule asked for a route that is not configured.
#[derive(Debug, thiserror::Error)]
#[error("no such alert route: {0}")]
pub struct NoSuchRoute(pub String);

/// The configured routes.
#[derive(Clone)]
pub struct Routes {
    default: Option<Route>,
    named: BTreeMap<String, Route>,
    fallback: Route,
}

impl Routes {
    /// Builds the channel of every route of a checked config (`Config::routes`, keyed by name, `None` the
    /// default route).
    ///
    /// # Errors
    /// [`ConfigError`] naming the route, for what only building can find (an unreadable CA file).
    pub fn build(
        routes: &BTreeMap<Option<String>, model::Route>,
        http: &reqwest::Client,
        hostname: &str,
    ) -> Result<Self, ConfigError> {
        let mut built = Vec::new();
        for (name, route) in routes {
            let name = match name {
                None => RouteName::Default,
                Some(name) => RouteName::Named(name.clone()),
            };
            built.push(Route { name, channel: super::channel(route, http, hostname)? });
        }
        Self::from_routes(built)
    }

    /// Routes with channels built elsewhere.
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Result<Self, ConfigError> {
        let mut this = Self { default: None, named: BTreeMap::new(), fallback: Self::fallback_route() };
        for route in routes {
            let duplicate = match &route.name {
                RouteName::Default => this.default.replace(route.clone()).is_some(),
                RouteName::Named(name) => this.named.insert(name.clone(), route.clone()).is_some(),
                RouteName::Fallback => {
                    this.fallback = route.clone();
                    false
                }
            };
            if duplicate {
                return Err(ConfigError::DuplicateRoute(route.name.to_string()));
            }
        }
        Ok(this)
    }

    fn fallback_route() -> Route {
        Route { name: RouteName::Fallback, channel: Arc::new(Log::stdout()) }
    }

    /// Inspeqtor's order: the rule's `alert NAME`, then the check's owner, then
    /// the default route; the log when none applies. An owner without a route of
    /// its own gets the default route (the config check warns about it).
    pub fn select(&self, target: Target<'_>) -> Result<&Route, NoSuchRoute> {
        if let Some(name) = target.route {
            return self.named.get(name).ok_or_else(|| NoSuchRoute(name.to_owned()));
        }
        if let Some(route) = target.owner.and_then(|owner| self.named.get(owner)) {
            return Ok(route);
        }
        Ok(self.default.as_ref().unwrap_or(&self.fallback))
    }

    /// The route called `name`, by its [`RouteName`].
    pub fn get(&self, name: &RouteName) -> Option<&Route> {
        match name {
            RouteName::Default => self.default.as_ref(),
            RouteName::Named(n) => self.named.get(n),
            RouteName::Fallback => Some(&self.fallback),
        }
    }

    /// The configured routes, default first; the log fallback when there are none.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        let none = self.default.is_none() && self.named.is_empty();
        self.default.iter().chain(self.named.values()).chain(none.then_some(&self.fallback))
    }

    /// Every route an alert can land in, the fallback included.
    pub fn all(&self) -> impl Iterator<Item = &Route> {
        self.default.iter().chain(self.named.values()).chain(std::iter::once(&self.fallback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes of an `inspeq.conf`, through the real checker.
    fn routes(conf: &str) -> Routes {
        let (config, diagnostics) = crate::config::load([("inspeq.conf", conf)]);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
        Routes::build(&config.routes, &crate::alert::http_client(), "web1").unwrap()
    }

    #[test]
    fn alert_name_beats_owner_beats_default() {
        let r = routes("send alerts via log\nsend alerts to ops via log\nsend alerts to dev via log\n");
        let pick = |route, owner| r.select(Target { route, owner }).unwrap().name.clone();
        assert_eq!(pick(Some("dev"), Some("ops")), RouteName::Named("dev".into()));
        assert_eq!(pick(None, Some("ops")), RouteName::Named("ops".into()));
        assert_eq!(pick(None, None), RouteName::Default);
        assert_eq!(pick(None, Some("nobody")), RouteName::Default, "an owner without a route gets the default");
    }

    #[test]
    fn an_unknown_alert_route_is_an_error() {
        let r = routes("send alerts via log\n");
        let err = r.select(Target { route: Some("ops"), owner: None }).err().unwrap();
        assert_eq!(err.to_string(), "no such alert route: ops");
    }

    #[test]
    fn without_routes_alerts_go_to_the_log() {
        let r = routes("");
        let route = r.select(Target::default()).unwrap();
        assert_eq!(route.name, RouteName::Fallback);
        assert_eq!(route.channel.kind(), "log");
        assert_eq!(r.iter().count(), 1, "test-alert still has the log to try");
    }

    #[test]
    fn owner_without_default_goes_to_the_log() {
        let r = routes("send alerts to ops via log\n");
        assert_eq!(r.select(Target::default()).unwrap().name, RouteName::Fallback);
    }

    #[test]
    fn every_channel_is_built_from_its_checked_route() {
        let r = routes(
            "send alerts via email with smtp_server mail.example.com, to_email ops@example.com
send alerts to me via gmail with username me@gmail.com, password p, to_email me@gmail.com
send alerts to chat via slack with url https://hooks.slack.com/services/T/B/X
send alerts to hooks via webhook with url http://127.0.0.1:9/h, secret s
send alerts to pager via pagerduty with routing_key k, severity info
send alerts to fleet via alertmanager with url http://127.0.0.1:9093, firing_for 1h
send alerts to journal via log
",
        );
        let kinds: Vec<(String, &str)> = r.iter().map(|route| (route.name.to_string(), route.channel.kind())).collect();
        assert_eq!(
            kinds,
            [
                ("default".to_owned(), "email"),
                ("chat".to_owned(), "slack"),
                ("fleet".to_owned(), "alertmanager"),
                ("hooks".to_owned(), "webhook"),
                ("journal".to_owned(), "log"),
                ("me".to_owned(), "email"),
                ("pager".to_owned(), "pagerduty"),
            ]
        );
    }

    #[test]
    fn duplicate_routes_are_rejected() {
        let log = || Route { name: RouteName::Named("ops".into()), channel: Arc::new(Log::stdout()) };
        let err = Routes::from_routes([log(), log()]).err().unwrap();
        assert_eq!(err.to_string(), "duplicate alert config for ops");
    }

    #[test]
    fn route_directories_are_distinct() {
        assert_eq!(RouteName::Named("ops team/x".into()).dir_name(), "to-ops%20team%2Fx");
        assert_ne!(RouteName::Named("default".into()).dir_name(), RouteName::Default.dir_name());
    }
}
