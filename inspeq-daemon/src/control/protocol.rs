//! The control protocol: one JSON request line, one JSON response line. Versioned
//! so a newer `inspeqctl` can tell an older daemon apart. Engine types never
//! derive `Serialize`; the daemon converts its state into these at the edge.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Services, rules, jobs, kernel health.
    Status,
    /// Everything `status` has plus the latest metric values.
    Export,
    /// Silence alerts and actions for `deploy_length`.
    StartDeploy,
    /// End the deploy window (one grace cycle follows).
    FinishDeploy,
    /// The recent history of one metric of one target (`host` or a service name).
    Show { target: String, metric: String },
    /// A job ran (for `jobs.d` checks).
    JobDone { job: String },
    /// Reload the configuration (as SIGHUP does).
    Reload,
    /// Send a test alert through every route, or through `route` alone.
    TestAlert { route: Option<String> },
    /// Act on an unmonitored service again.
    Remonitor { service: String },
}

/// The envelope of every request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// Done; a line for people.
    Ok { message: String },
    Status(Status),
    Show(Show),
    TestAlert { routes: Vec<RouteOutcome> },
    /// The request could not be carried out; the daemon is unaffected.
    Error { message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub hostname: String,
    pub version: String,
    pub uptime_secs: u64,
    pub cycle_secs: u64,
    /// Set while a deploy silences alerts and actions.
    pub silenced_for_secs: Option<u64>,
    pub kernel: KernelHealth,
    pub services: Vec<ServiceStatus>,
    pub host: Vec<RuleStatus>,
    pub jobs: Vec<JobStatus>,
    /// Latest values per target (only in `export`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricValue>,
    pub alerts: AlertHealth,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelHealth {
    /// The kernel tier: `ebpf`, `proc_connector`, `pidfd` or `proc` (polling),
    /// with `fallback_reason` saying why it is not eBPF.
    pub mode: String,
    pub fallback_reason: Option<String>,
    /// What the running tier cannot see (empty for eBPF).
    #[serde(default)]
    pub blind_spots: Vec<String>,
    /// Records emitted and dropped by the kernel, per kind (exit, fork, rss).
    pub emitted: [u64; 3],
    pub dropped: [u64; 3],
    pub observations: u64,
    pub missing_tracepoints: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `systemd`, `runit`, ... or `process` for `check process`.
    pub init: String,
    /// `up`, `down`, `not_found`, `unmonitored`, `starting`, `stopping`.
    pub state: String,
    pub pid: Option<u32>,
    pub cgroup: Option<String>,
    /// How the kernel watches it: `cgroup` or `tree`.
    pub watched_by: Option<String>,
    /// Set when the main pid is a wrapper (a shell, a `logger` pipeline): the
    /// whole cgroup or tree is watched so the real server's crash is still seen.
    pub wrapper: Option<String>,
    pub processes: usize,
    /// New main processes after the first, as the init system confirmed them
    /// (inspeq's restarts, the init system's own, an operator's).
    pub restarts: u64,
    /// Deaths of the service's other processes by a signal or the OOM killer.
    #[serde(default)]
    pub workers: WorkerCounts,
    pub rules: Vec<RuleStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// Killed by a signal other than a stop signal (`TERM`, `INT`, `HUP`,
    /// `PIPE`), dumped core, or OOM-killed.
    pub crashed: u64,
    /// Of those, chosen by the OOM killer.
    pub oom_killed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// The rule as written.
    pub rule: String,
    /// `ok`, `triggered`, `recovered`, `pending`.
    pub state: String,
    pub value: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    pub every_secs: u64,
    pub last_run_secs_ago: Option<u64>,
    pub overdue: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub target: String,
    pub metric: String,
    pub value: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertHealth {
    pub raised: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub pending: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Show {
    pub target: String,
    pub metric: String,
    /// Oldest first, one per cycle.
    pub values: Vec<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
}

impl Show {
    /// Fills min/max/avg from `values`.
    pub fn new(target: String, metric: String, values: Vec<f64>) -> Self {
        let min = values.iter().copied().reduce(f64::min);
        let max = values.iter().copied().reduce(f64::max);
        let avg = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        Self { target, metric, values, min, max, avg }
    }

    /// The values as a one-line sparkline (▁▂▃▄▅▆▇█).
    pub fn sparkline(&self) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let (Some(min), Some(max)) = (self.min, self.max) else { return String::new() };
        let span = max - min;
        self.values
            .iter()
            .map(|v| if span > 0.0 { BARS[(((v - min) / span) * 7.0).round() as usize] } else { BARS[3] })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteOutcome {
    pub route: String,
    pub channel: String,
    pub ok: bool,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_flat_json_lines() {
        let line = RequestLine { version: VERSION, request: Request::Show { target: "nginx".into(), metric: "memory:rss".into() } };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text, r#"{"version":1,"command":"show","target":"nginx","metric":"memory:rss"}"#);
        assert_eq!(serde_json::from_str::<RequestLine>(&text).unwrap(), line);
        let status: RequestLine = serde_json::from_str(r#"{"version":1,"command":"status"}"#).unwrap();
        assert_eq!(status.request, Request::Status);
        assert!(serde_json::from_str::<RequestLine>(r#"{"version":1,"command":"format_disk"}"#).is_err());
    }

    #[test]
    fn show_summarises_and_draws() {
        let show = Show::new("host".into(), "load:1".into(), vec![1.0, 2.0, 3.0, 8.0]);
        assert_eq!((show.min, show.max, show.avg), (Some(1.0), Some(8.0), Some(3.5)));
        assert_eq!(show.sparkline(), "▁▂▃█");
        assert_eq!(Show::new("h".into(), "m".into(), vec![]).sparkline(), "");
        assert_eq!(Show::new("h".into(), "m".into(), vec![5.0, 5.0]).sparkline(), "▄▄");
    }
}
