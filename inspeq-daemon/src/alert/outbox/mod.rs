//! The durable outbox: every alert goes to disk as it goes to its channel (the
//! sync never delays a delivery), and leaves the disk only when its channel has
//! taken it.
//!
//! [`Outbox::raise`] never waits: it picks the route and hands the alert to the
//! writer thread (`writer.rs`), the outbox's one owner, which group-commits
//! alerts to disk (`store.rs`, in `segment.rs`'s format) and passes them to the
//! route's worker (`worker.rs`), a tokio task that delivers them in order. A
//! delivered alert is struck from its file before the next send, so after a
//! SIGKILL the restarted daemon sends exactly what had not been taken. The one
//! window left is between the server's acceptance and that strike; a crash
//! there resends once, with the same email Message-ID and the same dedup keys.
//!
//! Failures are retried forever with exponential backoff and jitter, or when the
//! service's `Retry-After` says; nothing is dropped. A channel with a published
//! rate limit waits between messages, and a backlog of [`OutboxConfig::flood`]
//! or more alerts goes out as one digest (or one native batch) instead of a
//! storm.
//!
//! A reload hands the running outbox its new routes ([`Outbox::set_routes`],
//! which never waits): kept routes keep their queues, removed routes give
//! theirs to the default route. There is never a second outbox on a directory
//! in one process, and the daemon's state-directory lock keeps other processes
//! off it, so each alert is delivered once however many reloads it waits
//! through. When the last handle is dropped the workers stop after what they
//! are sending; what is left stays on disk.
//!
//! Layout: `DIR/<route>/<first seq>.jsonl`, one record per line.

mod segment;
mod store;
mod worker;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use tokio::sync::{oneshot, watch};

use self::{store::Segment, writer::Writer};
use super::{
    Alert,
    route::{NoSuchRoute, Route, RouteName, Routes, Target},
};

/// How the outbox stores and retries.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// The state directory's outbox, e.g. `/var/lib/inspeq/outbox`.
    pub dir: PathBuf,
    /// The wait after the first failure; it doubles per failure up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// A send that takes longer has failed (and is retried).
    pub send_timeout: Duration,
    /// A backlog this long goes out as one digest on channels that send one
    /// alert per message.
    pub flood: usize,
    /// The most alerts in one native batch (webhook, Alertmanager).
    pub max_batch: usize,
}

impl OutboxConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
            flood: 10,
            max_batch: 100,
        }
    }
}

/// The outbox directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("alert outbox {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alert outbox: starting the writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters, for `/metrics` and `inspeqctl status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Alerts a channel took.
    pub delivered: u64,
    /// Messages that carried several alerts as a digest.
    pub digests: u64,
    /// Failed sends (each is retried).
    pub failed_sends: u64,
    /// Alerts that could not be written to disk (they are still delivered, but
    /// would not survive a restart).
    pub unpersisted: u64,
    /// Records in the outbox that could not be read back (their bytes are kept
    /// as `*.bad`), and entries that are not segment files.
    pub unreadable: u64,
    /// Route changes not yet in force: while above 0, a removed route's queue
    /// is on its way to the route that takes it over.
    pub handing_over: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    digests: AtomicU64,
    failed_sends: AtomicU64,
    unpersisted: AtomicU64,
    unreadable: AtomicU64,
    handing_over: AtomicU64,
}

/// What the handles, the writer and the workers share.
struct Shared {
    /// The routes in force for new raises.
    routes: Mutex<Arc<Routes>>,
    counters: Counters,
    /// Alerts raised and not yet delivered.
    pending: watch::Sender<usize>,
}

/// An alert waiting in a worker's queue; `segment` is `None` when it could not
/// be written to disk.
struct Queued {
    alert: Alert,
    segment: Option<Arc<Segment>>,
}

/// What the writer thread is asked, in order.
enum Command {
    Raise(RouteName, Box<Alert>),
    /// Answered once everything raised before it is on disk.
    Sync(oneshot::Sender<()>),
    SetRoutes(Arc<Routes>),
    /// A worker's delivered alerts; answered once they are off the disk.
    Strike(Vec<Queued>, oneshot::Sender<()>),
    /// A retired worker's queue.
    Retired(RouteName, std::collections::VecDeque<Queued>),
    /// The last handle is gone.
    Close,
}

/// What a worker is told between sends.
enum ToWorker {
    Alert(Queued),
    /// The route's new channel (a reload).
    Route(Route),
    /// The route is gone: hand the queue back to the writer and end.
    Retire,
    /// The outbox is closed: end, leaving the queue on disk.
    Stop,
}

/// Tells the writer when the last [`Outbox`] is dropped.
struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Close);
    }
}

/// A handle to the outbox; cheap to clone. When the last one is dropped the
/// workers stop after their current send and the writer thread ends.
#[derive(Clone)]
pub struct Outbox {
    handle: Arc<Handle>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// Opens (or creates) the outbox, queues what a previous run left in it and
    /// starts delivering. Must be called inside a tokio runtime. Only an outbox
    /// directory that cannot be created or listed is an error: damaged files and
    /// strangers in route directories are counted and skipped.
    pub fn start(config: OutboxConfig, routes: Routes) -> Result<Self, OutboxError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OutboxError::Io { path, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
        let routes = Arc::new(routes);
        let known: Vec<String> = routes.all().map(|r| r.name.dir_name()).collect();
        let home = config.dir.join(writer::home(&routes).dir_name());
        store::adopt_orphans(&config.dir, &known, &home).map_err(io_err(&config.dir))?;

        let (pending, _) = watch::channel(0);
        let shared = Arc::new(Shared { routes: Mutex::new(routes.clone()), counters: Counters::default(), pending });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::new(config, shared.clone(), routes, tx.clone());
        let found = writer.open();
        shared.pending.send_replace(found);
        std::thread::Builder::new()
            .name("inspeq-outbox".into())
            .spawn(move || writer.run(rx))
            .map_err(OutboxError::Thread)?;
        Ok(Self { handle: Arc::new(Handle { tx }), shared })
    }

    fn routes_in_force(&self) -> std::sync::MutexGuard<'_, Arc<Routes>> {
        self.shared.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `alert` for the route `target` selects. Never blocks: the alert is
    /// written to disk and sent by other threads. The only error is an `alert
    /// NAME` naming no configured route.
    pub fn raise(&self, alert: Alert, target: Target<'_>) -> Result<(), NoSuchRoute> {
        // Held while sending, so that the writer sees raises and route changes
        // in the order the routes were used.
        let routes = self.routes_in_force();
        let route = routes.select(target)?.name.clone();
        self.shared.pending.send_modify(|n| *n += 1);
        // The writer lives as long as any handle, so this cannot fail.
        let _ = self.handle.tx.send(Command::Raise(route, Box::new(alert)));
        Ok(())
    }

    /// Puts `routes` in force: new raises use them at once; the writer hands
    /// them to the running workers. Never waits (the event loop calls it):
    /// [`OutboxStats::handing_over`] is 0 again once the change is complete.
    ///
    /// A route of the same name keeps its worker and its queue and sends with
    /// its new channel from its next send on (a send in flight finishes on the
    /// old one; a route waiting out a failure's backoff tries at once). A new
    /// route gets a worker. A removed route's pending alerts, files included,
    /// go to the route alerts without a target take (the default route, else
    /// the log), as they would at start.
    pub fn set_routes(&self, routes: Routes) {
        let mut in_force = self.routes_in_force();
        *in_force = Arc::new(routes);
        self.shared.counters.handing_over.fetch_add(1, Ordering::Relaxed);
        let _ = self.handle.tx.send(Command::SetRoutes(in_force.clone()));
    }

    /// Returns once every alert raised before the call is on disk.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.handle.tx.send(Command::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Alerts raised (or found on disk) and not yet delivered.
    pub fn pending(&self) -> usize {
        *self.shared.pending.borrow()
    }

    /// Returns once nothing is pending.
    pub async fn wait_idle(&self) {
        let mut rx = self.shared.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn stats(&self) -> OutboxStats {
        let c = &self.shared.counters;
        OutboxStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            digests: c.digests.load(Ordering::Relaxed),
            failed_sends: c.failed_sends.load(Ordering::Relaxed),
            unpersisted: c.unpersisted.load(Ordering::Relaxed),
            unreadable: c.unreadable.load(Ordering::Relaxed),
            handing_over: c.handing_over.load(Ordering::Relaxed),
        }
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes_in_force().clone()
    }
}

/// The wait before retry number `attempt` (1-based): doubling from `first`,
/// capped at `max`, then drawn uniformly from its upper half so that many
/// daemons failing together do not retry together.
pub fn backoff(first: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, time::SystemTime};

    use super::*;
    use crate::alert::{AlertKind, Batching, Channel, SendError, SendFuture};

    /// A channel that fails its first `fail` sends and records the rest.
    struct Recorder {
        fail: AtomicUsize,
        attempts: AtomicUsize,
        sent: Mutex<Vec<Vec<u64>>>,
        batching: Batching,
        interval: Option<Duration>,
    }

    impl Recorder {
        fn new(fail: usize, batching: Batching, interval: Option<Duration>) -> Arc<Self> {
            Arc::new(Self {
                fail: AtomicUsize::new(fail),
                attempts: AtomicUsize::new(0),
                sent: Mutex::new(Vec::new()),
                batching,
                interval,
            })
        }
        fn failing() -> Arc<Self> {
            Self::new(usize::MAX, Batching::Native, None)
        }
        fn working() -> Arc<Self> {
            Self::new(0, Batching::Native, None)
        }
        fn messages(&self) -> Vec<Vec<u64>> {
            self.sent.lock().unwrap().clone()
        }
        fn attempts(&self) -> usize {
            self.attempts.load(Ordering::SeqCst)
        }
    }

    impl Channel for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        fn batching(&self) -> Batching {
            self.batching
        }
        fn min_interval(&self) -> Option<Duration> {
            self.interval
        }
        fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1)).is_ok();
            if !fail {
                self.sent.lock().unwrap().push(alerts.iter().map(|a| a.seq).collect());
            }
            Box::pin(std::future::ready(if fail { Err(SendError::Timeout(Duration::ZERO)) } else { Ok(()) }))
        }
    }

    fn routes(channel: Arc<Recorder>) -> Routes {
        Routes::from_routes([Route { name: RouteName::Default, channel }]).unwrap()
    }

    fn with_ops(default: Arc<Recorder>, ops: Arc<Recorder>) -> Routes {
        Routes::from_routes([
            Route { name: RouteName::Default, channel: default },
            Route { name: RouteName::Named("ops".into()), channel: ops },
        ])
        .unwrap()
    }

    const OPS: Target<'static> = Target { route: Some("ops"), owner: None };

    fn config(dir: &Path) -> OutboxConfig {
        OutboxConfig {
            first_retry: Duration::from_millis(10),
            max_retry: Duration::from_millis(40),
            ..OutboxConfig::new(dir)
        }
    }

    fn alert(i: u32) -> Alert {
        Alert::new("web1", format!("svc{i}"), AlertKind::ProcessDown, SystemTime::UNIX_EPOCH)
    }

    fn tempdir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("inspeq-outbox-{name}-")).tempdir().unwrap()
    }

    /// Segment files in the route directory `route`.
    fn files(dir: &Path, route: &str) -> usize {
        std::fs::read_dir(dir.join(route))
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "jsonl")).count())
            .unwrap_or(0)
    }

    async fn idle(outbox: &Outbox) {
        tokio::time::timeout(Duration::from_secs(10), outbox.wait_idle()).await.expect("pending alerts delivered");
    }

    /// Polls until `check` holds (a hang guard of 10 s).
    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..1000 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for attempt in 1..=30 {
            let exp = Duration::from_secs(1 << (attempt - 1).min(20)).min(max);
            let wait = backoff(first, max, attempt);
            assert!(wait >= exp / 2 && wait <= exp, "attempt {attempt}: {wait:?} not in [{:?}, {exp:?}]", exp / 2);
        }
    }

    #[tokio::test]
    async fn failures_are_retried_and_delivered_once_in_order() {
        let scratch = tempdir("retry");
        let dir = scratch.path();
        let channel = Recorder::new(3, Batching::Digest, None);
        let outbox = Outbox::start(config(dir), routes(channel.clone())).unwrap();
        for i in 0..3 {
            outbox.raise(alert(i), Target::default()).unwrap();
        }
        idle(&outbox).await;
        let messages = channel.messages();
        assert_eq!(messages.len(), 3, "one message per alert below the flood size: {messages:?}");
        assert!(messages.windows(2).all(|w| w[0][0] < w[1][0]), "in order: {messages:?}");
        assert_eq!(outbox.stats().failed_sends, 3);
        assert_eq!(outbox.stats().delivered, 3);
        until("the last strike", || files(dir, "default") == 0).await;
    }

    #[tokio::test]
    async fn pending_alerts_survive_a_restart() {
        let scratch = tempdir("restart");
        let dir = scratch.path();
        let never = Recorder::failing();
        {
            let outbox = Outbox::start(config(dir), routes(never.clone())).unwrap();
            for i in 0..4 {
                outbox.raise(alert(i), Target::default()).unwrap();
            }
            outbox.sync().await;
            assert_eq!(outbox.pending(), 4);
        }
        assert!(files(dir, "default") >= 1);
        let channel = Recorder::working();
        let outbox = Outbox::start(config(dir), routes(channel.clone())).unwrap();
        assert_eq!(outbox.pending(), 4, "found on disk");
        idle(&outbox).await;
        let seqs: Vec<u64> = channel.messages().concat();
        assert_eq!(seqs.len(), 4);
        outbox.raise(alert(9), Target::default()).unwrap();
        idle(&outbox).await;
        let newest = *channel.messages().concat().last().unwrap();
        assert!(seqs.iter().all(|s| *s < newest), "sequence numbers keep growing across restarts");
        // The first outbox's worker stopped with its last handle: it tries no more.
        let tried = never.attempts();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(never.attempts(), tried, "a dropped outbox keeps no worker");
    }

    #[tokio::test]
    async fn a_flood_becomes_a_digest() {
        let scratch = tempdir("flood");
        let dir = scratch.path();
        let channel = Recorder::new(0, Batching::Digest, Some(Duration::from_millis(300)));
        let outbox = Outbox::start(config(dir), routes(channel.clone())).unwrap();
        for i in 0..200 {
            outbox.raise(alert(i), Target::default()).unwrap();
        }
        idle(&outbox).await;
        let messages = channel.messages();
        assert!(messages.len() <= 3, "{} messages", messages.len());
        assert_eq!(messages.concat().len(), 200);
        assert!(outbox.stats().digests >= 1);
    }

    #[tokio::test]
    async fn alerts_of_a_route_removed_while_stopped_go_to_the_default_route() {
        let scratch = tempdir("orphan");
        let dir = scratch.path();
        {
            let named =
                Routes::from_routes([Route { name: RouteName::Named("ops".into()), channel: Recorder::failing() }])
                    .unwrap();
            let outbox = Outbox::start(config(dir), named).unwrap();
            outbox.raise(alert(1), OPS).unwrap();
            outbox.sync().await;
        }
        let channel = Recorder::working();
        let outbox = Outbox::start(config(dir), routes(channel.clone())).unwrap();
        idle(&outbox).await;
        assert_eq!(channel.messages().len(), 1);
    }

    #[tokio::test]
    async fn route_changes_while_alerts_wait_deliver_each_alert_once() {
        let scratch = tempdir("reload");
        let dir = scratch.path();
        let first = Recorder::failing();
        let outbox = Outbox::start(config(dir), routes(first.clone())).unwrap();
        for i in 0..3 {
            outbox.raise(alert(i), Target::default()).unwrap();
        }
        until("a failed send", || first.attempts() > 0).await;
        // Three reloads that rebuild the default route while the alerts wait.
        let others: Vec<Arc<Recorder>> = (0..2).map(|_| Recorder::failing()).collect();
        for other in &others {
            outbox.set_routes(routes(other.clone()));
        }
        let last = Recorder::working();
        outbox.set_routes(routes(last.clone()));
        idle(&outbox).await;
        assert_eq!(outbox.stats().handing_over, 0);
        let mut delivered = last.messages().concat();
        delivered.sort_unstable();
        delivered.dedup();
        assert_eq!(last.messages().concat().len(), 3, "{:?}", last.messages());
        assert_eq!(delivered.len(), 3);
        // An alert raised after the change goes the new way too; the replaced
        // channels are never tried again.
        let tried: Vec<usize> = std::iter::once(&first).chain(&others).map(|c| c.attempts()).collect();
        outbox.raise(alert(3), Target::default()).unwrap();
        idle(&outbox).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(last.messages().concat().len(), 4);
        assert_eq!(std::iter::once(&first).chain(&others).map(|c| c.attempts()).collect::<Vec<_>>(), tried);
        assert_eq!(outbox.stats().delivered, 4);
    }

    #[tokio::test]
    async fn a_route_given_a_new_channel_tries_it_at_once_not_after_its_backoff() {
        let scratch = tempdir("backoff");
        let dir = scratch.path();
        let slow = OutboxConfig {
            first_retry: Duration::from_secs(3600),
            max_retry: Duration::from_secs(3600),
            ..config(dir)
        };
        let broken = Recorder::failing();
        let outbox = Outbox::start(slow, routes(broken.clone())).unwrap();
        outbox.raise(alert(1), Target::default()).unwrap();
        until("the first failure", || broken.attempts() == 1).await;
        let fixed = Recorder::working();
        outbox.set_routes(routes(fixed.clone()));
        idle(&outbox).await;
        assert_eq!((fixed.messages().len(), broken.attempts()), (1, 1));
    }

    #[tokio::test]
    async fn a_removed_routes_alerts_and_files_go_to_the_default_route() {
        let scratch = tempdir("removed");
        let dir = scratch.path();
        let (default, ops) = (Recorder::failing(), Recorder::failing());
        let outbox = Outbox::start(config(dir), with_ops(default.clone(), ops.clone())).unwrap();
        outbox.raise(alert(1), OPS).unwrap();
        outbox.raise(alert(2), OPS).unwrap();
        outbox.sync().await;
        assert_eq!(files(dir, "to-ops"), 1);

        outbox.set_routes(routes(default.clone()));
        until("the hand-over", || outbox.stats().handing_over == 0).await;
        assert_eq!((files(dir, "to-ops"), files(dir, "default")), (0, 1), "the file moved with its alerts");
        assert!(!dir.join("to-ops").exists(), "the empty directory is gone");
        assert_eq!(outbox.pending(), 2);
        let tried = ops.attempts();

        let fixed = Recorder::working();
        outbox.set_routes(routes(fixed.clone()));
        idle(&outbox).await;
        assert_eq!(fixed.messages().concat().len(), 2);
        assert_eq!(ops.attempts(), tried, "the removed route's channel is not tried again");
        until("the strike", || files(dir, "default") == 0).await;
    }

    #[tokio::test]
    async fn a_route_removed_and_added_back_keeps_its_alerts() {
        let scratch = tempdir("readded");
        let dir = scratch.path();
        let default = Recorder::failing();
        let outbox = Outbox::start(config(dir), with_ops(default.clone(), Recorder::failing())).unwrap();
        outbox.raise(alert(1), OPS).unwrap();
        outbox.sync().await;
        outbox.set_routes(routes(default.clone()));
        let ops = Recorder::working();
        outbox.set_routes(with_ops(default.clone(), ops.clone()));
        until("the hand-overs", || outbox.stats().handing_over == 0).await;
        // Either way the alert is delivered once: by ops if the hand-back came
        // after ops returned, else it waits with the (failing) default route.
        if outbox.pending() == 0 {
            assert_eq!(ops.messages().concat().len(), 1);
        } else {
            assert_eq!(files(dir, "default"), 1);
        }
    }

    #[tokio::test]
    async fn a_new_route_gets_a_worker() {
        let scratch = tempdir("added");
        let dir = scratch.path();
        let outbox = Outbox::start(config(dir), routes(Recorder::working())).unwrap();
        assert!(outbox.raise(alert(1), OPS).is_err(), "no route ops yet");
        let ops = Recorder::working();
        outbox.set_routes(with_ops(Recorder::working(), ops.clone()));
        outbox.raise(alert(1), OPS).unwrap();
        idle(&outbox).await;
        assert_eq!(ops.messages().concat().len(), 1);
    }

    #[tokio::test]
    async fn damaged_and_strange_files_are_counted_and_the_rest_delivered() {
        let scratch = tempdir("damaged");
        let dir = scratch.path();
        {
            let outbox = Outbox::start(config(dir), routes(Recorder::failing())).unwrap();
            for i in 0..3 {
                outbox.raise(alert(i), Target::default()).unwrap();
            }
            outbox.sync().await;
        }
        std::fs::create_dir(dir.join("default/x.json")).unwrap();
        let segment = std::fs::read_dir(dir.join("default"))
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            .unwrap()
            .path();
        let mut file = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
        std::io::Write::write_all(&mut file, b"garbage\n").unwrap();
        drop(file);
        let channel = Recorder::working();
        let outbox = Outbox::start(config(dir), routes(channel.clone())).unwrap();
        idle(&outbox).await;
        assert_eq!(channel.messages().concat().len(), 3);
        assert_eq!(outbox.stats().unreadable, 2, "the garbage line and the directory");
    }
}
