//! Alert routes: which channel an alert goes to.
//!
//! Inspeqtor's model: `send alerts via CH with ...` is the default route, `send
//! alerts to NAME via CH with ...` a named one, one channel per route. A rule's
//! `alert NAME` picks route NAME; a bare `alert` (and the process up/down and job
//! events) picks the check's `owner` route, else the default. Unlike Inspeqtor
//! (#149), a machine with no route still runs: its alerts go to the log.

use std::{collections::BTreeMap, fmt, sync::Arc};

use super::{Channel, ConfigError, build_channel, log::Log};

/// One `send alerts [to NAME] via CHANNEL with k v, ...` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// `None` for the default route.
    pub name: Option<String>,
    pub channel: String,
    pub params: BTreeMap<String, String>,
}

impl RouteConfig {
    pub fn new<'a>(name: Option<&str>, channel: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            name: name.map(str::to_owned),
            channel: channel.to_owned(),
            params: params.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        }
    }
}

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
    /// Builds every route's channel, checking its parameters.
    pub fn build(configs: &[RouteConfig], http: &reqwest::Client, hostname: &str) -> Result<Self, ConfigError> {
        let mut routes = Vec::new();
        for config in configs {
            let name = match &config.name {
                None => RouteName::Default,
                Some(name) => RouteName::Named(name.clone()),
            };
            let channel = build_channel(&name.to_string(), &config.channel, &config.params, http, hostname)?;
            routes.push(Route { name, channel });
        }
        Self::from_routes(routes)
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

    fn routes(configs: &[RouteConfig]) -> Routes {
        Routes::build(configs, &crate::alert::http_client(), "web1").unwrap()
    }

    fn log(name: Option<&str>) -> RouteConfig {
        RouteConfig::new(name, "log", [])
    }

    #[test]
    fn alert_name_beats_owner_beats_default() {
        let r = routes(&[log(None), log(Some("ops")), log(Some("dev"))]);
        let pick = |route, owner| r.select(Target { route, owner }).unwrap().name.clone();
        assert_eq!(pick(Some("dev"), Some("ops")), RouteName::Named("dev".into()));
        assert_eq!(pick(None, Some("ops")), RouteName::Named("ops".into()));
        assert_eq!(pick(None, None), RouteName::Default);
        assert_eq!(pick(None, Some("nobody")), RouteName::Default, "an owner without a route gets the default");
    }

    #[test]
    fn an_unknown_alert_route_is_an_error() {
        let r = routes(&[log(None)]);
        let err = r.select(Target { route: Some("ops"), owner: None }).err().unwrap();
        assert_eq!(err.to_string(), "no such alert route: ops");
    }

    #[test]
    fn without_routes_alerts_go_to_the_log() {
        let r = routes(&[]);
        let route = r.select(Target::default()).unwrap();
        assert_eq!(route.name, RouteName::Fallback);
        assert_eq!(route.channel.kind(), "log");
        assert_eq!(r.iter().count(), 1, "test-alert still has the log to try");
    }

    #[test]
    fn owner_without_default_goes_to_the_log() {
        let r = routes(&[log(Some("ops"))]);
        assert_eq!(r.select(Target::default()).unwrap().name, RouteName::Fallback);
    }

    #[test]
    fn duplicate_routes_are_rejected() {
        let err =
            Routes::build(&[log(Some("ops")), log(Some("ops"))], &crate::alert::http_client(), "h").err().unwrap();
        assert_eq!(err.to_string(), "duplicate alert config for ops");
    }

    #[test]
    fn unknown_channels_and_params_are_rejected() {
        let http = crate::alert::http_client();
        let err = Routes::build(&[RouteConfig::new(None, "campfire", [])], &http, "h").err().unwrap();
        assert!(matches!(err, ConfigError::UnknownChannel { .. }), "{err}");
        let err = Routes::build(&[RouteConfig::new(None, "slack", [("ur", "http://x")])], &http, "h").err().unwrap();
        assert!(matches!(err, ConfigError::UnknownParam { .. }), "{err}");
        let err = Routes::build(&[RouteConfig::new(None, "slack", [])], &http, "h").err().unwrap();
        assert_eq!(err.to_string(), "alert route default: slack needs the parameter url");
    }

    #[test]
    fn route_directories_are_distinct() {
        assert_eq!(RouteName::Named("ops team/x".into()).dir_name(), "to-ops%20team%2Fx");
        assert_ne!(RouteName::Named("default".into()).dir_name(), RouteName::Default.dir_name());
    }
}
