//! The daemon in process, with a fake init system, recording alert channels and
//! paused time: what each control command answers, that a broken reload keeps
//! the running configuration, that deploys silence alerts and actions, that
//! jobs go overdue and run, and that an alert reaches its rule's route or its
//! check's owner's. No root needed: the kernel side is the /proc
//! fallback, and the "service" is this test process itself.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use inspeq_daemon::{
    alert::{
        self, Alert, Batching, Channel, SendFuture,
        route::{Route, RouteName},
    },
    control::{
        client,
        protocol::{Request, Response, Unit},
    },
    daemon,
    init::{InitFuture, InitKind, InitSystem, ServiceName, ServiceStatus},
    kernel,
};
use tokio::sync::oneshot;

/// An init system that knows services by name and records what it is asked.
#[derive(Default)]
struct FakeInit {
    pids: Mutex<BTreeMap<String, u32>>,
    calls: Mutex<Vec<String>>,
}

impl InitSystem for FakeInit {
    fn kind(&self) -> InitKind {
        InitKind::Runit
    }

    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        let pid = self.pids.lock().unwrap().get(service.as_str()).copied();
        Box::pin(async move {
            Ok(match pid {
                Some(pid) => ServiceStatus::up(pid, "fake: running"),
                None => ServiceStatus::not_found("fake: unknown"),
            })
        })
    }

    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        self.calls.lock().unwrap().push(format!("restart {service}"));
        Box::pin(async { Ok(()) })
    }

    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        self.calls.lock().unwrap().push(format!("reload {service}"));
        Box::pin(async { Ok(()) })
    }
}

/// An alert channel that keeps what it is given.
#[derive(Default)]
struct Recorder(Mutex<Vec<Alert>>);

impl Channel for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }

    fn batching(&self) -> Batching {
        Batching::Native
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        self.0.lock().unwrap().extend(alerts.iter().cloned());
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    fn kinds(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|a| format!("{} {}", a.service, a.event.kind())).collect()
    }
}

struct Harness {
    dir: PathBuf,
    /// Removes `dir` when the harness goes.
    _scratch: tempfile::TempDir,
    socket: PathBuf,
    init: Arc<FakeInit>,
    /// The default route's channel.
    recorder: Arc<Recorder>,
    /// The channels of the named routes `start_routed` was given.
    named: BTreeMap<String, Arc<Recorder>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

impl Harness {
    async fn start(name: &str, files: &[(&str, &str)]) -> Self {
        Self::start_routed(name, files, &[]).await
    }

    /// Also with a recording route for each of `named`.
    async fn start_routed(name: &str, files: &[(&str, &str)], named: &[&str]) -> Self {
        let scratch = tempfile::Builder::new().prefix(&format!("inspeq-inproc-{name}-")).tempdir().unwrap();
        let dir = scratch.path().to_owned();
        write(&dir.join("conf"), files);
        let init = Arc::new(FakeInit::default());
        init.pids.lock().unwrap().insert("web".into(), std::process::id());
        let recorder = Arc::new(Recorder::default());
        let named: BTreeMap<String, Arc<Recorder>> =
            named.iter().map(|n| ((*n).to_owned(), Arc::new(Recorder::default()))).collect();
        let routes = alert::Routes::from_routes(
            std::iter::once(Route { name: RouteName::Default, channel: recorder.clone() as Arc<dyn Channel> })
                .chain(named.iter().map(|(n, r)| Route { name: RouteName::Named(n.clone()), channel: r.clone() })),
        )
        .unwrap();
        let socket = dir.join("sock");
        let options = daemon::Options {
            config_dir: dir.join("conf"),
            socket: Some(socket.clone()),
            state_dir: Some(dir.join("state")),
            // /proc polling: the same on every machine, root or not, with paused time.
            kernel: kernel::Options {
                force_fallback: true,
                no_proc_connector: true,
                no_pidfd: true,
                ..kernel::Options::default()
            },
            init_systems: Some(vec![init.clone()]),
            alert_routes: Some(routes),
            ..daemon::Options::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::run(options, async move {
            let _ = stopped.await;
        }));
        let harness = Self { dir, _scratch: scratch, socket, init, recorder, named, stop: Some(stop), task };
        harness.until(|h| h.socket.exists()).await;
        // Until the service has been looked up and is up.
        harness
            .until_async(|| async {
                matches!(client::send(&harness.socket, Request::Status, CLIENT_TIMEOUT).await,
                    Ok(Response::Status(s)) if s.services.iter().all(|svc| svc.state == "up"))
            })
            .await;
        harness
    }

    async fn ask(&self, request: Request) -> Response {
        client::send(&self.socket, request, CLIENT_TIMEOUT).await.expect("the daemon answers")
    }

    async fn until(&self, check: impl Fn(&Self) -> bool) {
        self.until_async(|| std::future::ready(check(self))).await;
    }

    /// Polls `check` every 10 ms of the paused clock, for at most [`REAL_LIMIT`] of real time. The bound must be
    /// real: the outbox writes and sends from a thread of its own, which the paused clock does not wait for, so on a
    /// loaded machine any number of virtual sleeps can pass before an alert raised long ago reaches its channel.
    async fn until_async<F: Future<Output = bool>>(&self, check: impl Fn() -> F) {
        let started = std::time::Instant::now();
        while started.elapsed() < REAL_LIMIT {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            // Lets the outbox's thread run: this runtime's one thread would otherwise spin through virtual time.
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("condition never held within {REAL_LIMIT:?}; alerts so far: {:?}", self.recorder.kinds());
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "the socket is removed on shutdown");
    }
}

/// How long, in real time, a test waits for what it expects.
const REAL_LIMIT: Duration = Duration::from_secs(60);

/// Time is paused here: a client timeout in the daemon's own clock would fire whenever the runtime idles.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

const CONF: &str = "set cycle_time 1\nset deploy_length 60\n";
const WEB: &str = "check service web\n  if memory:rss > 100g then alert\n";
const JOBS: &str = "check jobs\n  backup happens every 1 minute\n";

#[tokio::test(start_paused = true)]
async fn every_control_command_answers() {
    let h =
        Harness::start("control", &[("inspeq.conf", CONF), ("services.d/web.inq", WEB), ("jobs.d/backup.inq", JOBS)])
            .await;
    let Response::Status(status) = h.ask(Request::Status).await else { panic!("status") };
    assert_eq!(status.services.len(), 1);
    assert_eq!(status.services[0].pid, Some(std::process::id()));
    assert_eq!(status.services[0].init, "runit");
    assert_eq!(status.kernel.mode, "proc");
    assert!(!status.kernel.blind_spots.is_empty());
    assert_eq!(status.jobs[0].name, "backup");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let Response::Status(export) = h.ask(Request::Export).await else { panic!("export") };
    assert!(
        export.metrics.iter().any(|m| m.target == "web" && m.metric == "memory:rss" && m.value > 0.0),
        "{:?}",
        export.metrics
    );
    let Response::Show(show) = h.ask(Request::Show { target: "web".into(), metric: "memory:rss".into() }).await else {
        panic!("show")
    };
    assert!(!show.values.is_empty() && show.min.is_some());
    assert_eq!(show.unit, Some(Unit::Bytes));
    // The rule shows the value it compared, and the service (this test process, a tree) its processes.
    let web = &export.services[0];
    assert!(web.processes >= 1, "{web:?}");
    let rule = &web.rules[0];
    assert!(rule.value.is_some_and(|v| v > 0.0) && rule.unit == Some(Unit::Bytes), "{rule:?}");
    assert!(rule.value_text.ends_with('m') || rule.value_text.ends_with('g'), "{rule:?}");

    assert!(matches!(h.ask(Request::StartDeploy).await, Response::Ok { .. }));
    let Response::Status(status) = h.ask(Request::Status).await else { panic!("status") };
    assert!(status.silenced_for_secs.is_some_and(|s| s <= 60));
    assert!(matches!(h.ask(Request::FinishDeploy).await, Response::Ok { .. }));

    assert!(matches!(h.ask(Request::JobDone { job: "backup".into() }).await, Response::Ok { .. }));
    assert!(
        matches!(h.ask(Request::JobDone { job: "nope".into() }).await, Response::Error { message } if message.contains("nope"))
    );
    assert!(matches!(h.ask(Request::Remonitor { service: "web".into() }).await, Response::Error { .. }));
    let Response::TestAlert { routes } = h.ask(Request::TestAlert { route: None }).await else { panic!("test-alert") };
    assert!(routes.iter().any(|r| r.channel == "recorder" && r.ok), "{routes:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_broken_reload_keeps_the_running_configuration() {
    let h = Harness::start("reload", &[("inspeq.conf", CONF), ("services.d/web.inq", WEB)]).await;
    write(&h.dir.join("conf"), &[("services.d/web.inq", "check service web\n  if memory:rsss > 1g then alert\n")]);
    let Response::Error { message } = h.ask(Request::Reload).await else { panic!("a broken reload must fail") };
    assert!(message.contains("web.inq:2:6"), "{message}");
    let Response::Status(status) = h.ask(Request::Status).await else { panic!("status") };
    assert_eq!(status.services[0].rules[0].rule, "memory:rss > 100g", "the old rules stay");

    write(&h.dir.join("conf"), &[("services.d/web.inq", "check service web\n  if memory:rss > 200g then alert\n")]);
    assert!(matches!(h.ask(Request::Reload).await, Response::Ok { .. }));
    let Response::Status(status) = h.ask(Request::Status).await else { panic!("status") };
    assert_eq!(status.services[0].rules[0].rule, "memory:rss > 200g");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn jobs_go_overdue_and_run_and_deploys_silence_them() {
    let conf = "set cycle_time 1\nset deploy_length 300\n";
    let h = Harness::start("jobs", &[("inspeq.conf", conf), ("services.d/web.inq", WEB), ("jobs.d/backup.inq", JOBS)])
        .await;
    // Every minute plus a minute's grace: overdue after two.
    tokio::time::sleep(Duration::from_secs(150)).await;
    h.until(|h| h.recorder.kinds().iter().any(|k| k.ends_with("job_overdue"))).await;
    assert!(matches!(h.ask(Request::JobDone { job: "backup".into() }).await, Response::Ok { .. }));
    h.until(|h| h.recorder.kinds().iter().any(|k| k.ends_with("job_ran"))).await;
    let overdue = h.recorder.kinds().iter().filter(|k| k.ends_with("job_overdue")).count();
    assert_eq!(overdue, 1, "one alert per episode: {:?}", h.recorder.kinds());

    // While a deploy runs, the job going overdue again stays silent...
    assert!(matches!(h.ask(Request::StartDeploy).await, Response::Ok { .. }));
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert_eq!(h.recorder.kinds().iter().filter(|k| k.ends_with("job_overdue")).count(), 1, "{:?}", h.recorder.kinds());
    // ... and once the deploy is over, the overdue job is alerted after all.
    assert!(matches!(h.ask(Request::FinishDeploy).await, Response::Ok { .. }));
    tokio::time::sleep(Duration::from_secs(150)).await;
    h.until(|h| h.recorder.kinds().iter().filter(|k| k.ends_with("job_overdue")).count() == 2).await;
    assert!(h.init.calls.lock().unwrap().is_empty(), "nothing restarted or reloaded");
    h.stop().await;
}

/// The engine hands the rule's `alert NAME` and the check's owner over apart, and the outbox picks: the rule's
/// route, else the owner's, else the default.
#[tokio::test(start_paused = true)]
async fn an_alert_goes_to_its_rules_route_else_to_its_checks_owner() {
    let conf = "set cycle_time 1\nset deploy_length 60\nsend alerts via log\nsend alerts to ops via log\n\
                send alerts to dev via log\n";
    // This test process is `web`: its RSS is above 1 KiB.
    let web = "check service web with owner ops\n  if memory:rss > 1k then alert dev\n";
    let jobs = "check jobs with owner ops\n  backup happens every 1 minute\n";
    let files = [("inspeq.conf", conf), ("services.d/web.inq", web), ("jobs.d/backup.inq", jobs)];
    let h = Harness::start_routed("routes", &files, &["ops", "dev"]).await;
    tokio::time::sleep(Duration::from_secs(150)).await;
    h.until(|h| !h.named["dev"].kinds().is_empty() && !h.named["ops"].kinds().is_empty()).await;
    assert_eq!(h.named["dev"].kinds(), ["web rule_failed"], "the rule names its route");
    assert_eq!(h.named["ops"].kinds(), ["host job_overdue"], "a bare alert goes to the check's owner");
    assert!(h.recorder.kinds().is_empty(), "nothing for the default route: {:?}", h.recorder.kinds());
    h.stop().await;
}
