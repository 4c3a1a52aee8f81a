//! The durable outbox: every alert is on disk before anyone is told it was
//! raised, and leaves the disk only when its channel has taken it.
//!
//! [`Outbox::raise`] never waits: it picks the route and hands the alert to a
//! writer thread. The writer group-commits what has piled up (one file per route
//! per batch, one `fsync` each: a flood of a thousand alerts costs a few dozen
//! syncs, not a thousand) and passes the alerts on to the route's worker, a tokio
//! task that delivers them in order. A delivered alert is struck from its file
//! (the file is rewritten, or removed when empty) before the next send, so after
//! a SIGKILL the restarted daemon sends exactly what had not been taken. The one
//! window left is between the server's acceptance and that strike; a crash there
//! resends once, with the same email Message-ID and the same dedup keys.
//!
//! Failures are retried forever with exponential backoff and jitter, or when the
//! service's `Retry-After` says; nothing is dropped. A channel with a published
//! rate limit waits between messages, and a backlog of [`OutboxConfig::flood`]
//! or more alerts goes out as one digest (or one native batch) instead of a
//! storm.
//!
//! Layout: `DIR/<route>/<first seq>.json`, each a JSON array of alerts.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc as tokio_mpsc, oneshot, watch};

use super::{
    Alert, Batching, SendError,
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
        source: io::Error,
    },
    #[error("alert outbox: starting the writer thread: {0}")]
    Thread(#[source] io::Error),
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
    /// Files in the outbox that could not be read back (kept as `*.bad`).
    pub unreadable: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    digests: AtomicU64,
    failed_sends: AtomicU64,
    unpersisted: AtomicU64,
    unreadable: AtomicU64,
}

struct Shared {
    routes: Routes,
    counters: Counters,
    /// Alerts raised and not yet delivered.
    pending: watch::Sender<usize>,
}

enum Command {
    Raise(RouteName, Box<Alert>),
    Sync(oneshot::Sender<()>),
}

/// A handle to the outbox; cheap to clone. The writer thread stops when the
/// last handle is dropped; the workers when they have nothing left to send.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// Opens (or creates) the outbox, queues what a previous run left in it and
    /// starts delivering. Must be called inside a tokio runtime.
    pub fn start(config: OutboxConfig, routes: Routes) -> Result<Self, OutboxError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OutboxError::Io { path, source }
        };
        fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
        let home = routes.select(Target::default()).expect("the default target always has a route").name.clone();
        adopt_orphans(&config.dir, &routes, &home).map_err(io_err(&config.dir))?;

        let (pending, _) = watch::channel(0);
        let shared = Arc::new(Shared { routes, counters: Counters::default(), pending });
        let mut workers = BTreeMap::new();
        let mut max_seq = 0;
        let mut total = 0;
        for route in shared.routes.all() {
            let dir = config.dir.join(route.name.dir_name());
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let queue = load(&dir, &shared.counters).map_err(io_err(&dir))?;
            max_seq = queue.iter().map(|q| q.alert.seq).fold(max_seq, u64::max);
            total += queue.len();
            let (tx, rx) = tokio_mpsc::unbounded_channel();
            workers.insert(route.name.clone(), (dir, tx));
            tokio::spawn(worker(route.clone(), queue, rx, shared.clone(), config.clone()));
        }
        shared.pending.send_replace(total);

        // Sequence numbers only grow, also across restarts that emptied the
        // outbox: a Message-ID built from one is never reused.
        let now_micros = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros();
        let next_seq = (max_seq + 1).max(u64::try_from(now_micros).unwrap_or(u64::MAX));
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("inspeq-outbox".into())
            .spawn(move || writer(rx, workers, next_seq, &writer_shared))
            .map_err(OutboxError::Thread)?;
        Ok(Self { tx, shared })
    }

    /// Queues `alert` for the route `target` selects. Never blocks: the alert is
    /// written to disk and sent by other threads. The only error is an `alert
    /// NAME` naming no configured route.
    pub fn raise(&self, alert: Alert, target: Target<'_>) -> Result<(), NoSuchRoute> {
        let route = self.shared.routes.select(target)?.name.clone();
        self.shared.pending.send_modify(|n| *n += 1);
        // The writer lives as long as any handle, so this cannot fail.
        let _ = self.tx.send(Command::Raise(route, Box::new(alert)));
        Ok(())
    }

    /// Returns once every alert raised before the call is on disk.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Sync(tx)).is_ok() {
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
        }
    }

    pub fn routes(&self) -> &Routes {
        &self.shared.routes
    }
}

/// One outbox file and the alerts in it not yet delivered.
struct Segment {
    path: PathBuf,
    alerts: Mutex<Vec<Alert>>,
}

/// An alert waiting in a worker's queue; `segment` is `None` when it could not
/// be written to disk.
struct Queued {
    alert: Alert,
    segment: Option<Arc<Segment>>,
}

/// Moves files of routes no longer configured to `home`'s directory, so a
/// route removed from the config does not strand its alerts.
fn adopt_orphans(dir: &Path, routes: &Routes, home: &RouteName) -> io::Result<()> {
    let known: Vec<String> = routes.all().map(|r| r.name.dir_name()).collect();
    let home_dir = dir.join(home.dir_name());
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() || known.contains(&name) {
            continue;
        }
        fs::create_dir_all(&home_dir)?;
        for file in fs::read_dir(entry.path())? {
            let file = file?;
            if file.path().extension().is_some_and(|e| e == "json") {
                ::tracing::warn!("alert outbox: route {name} is gone; its pending alerts go to route {home}");
                fs::rename(file.path(), home_dir.join(file.file_name()))?;
            }
        }
        let _ = fs::remove_dir(entry.path());
    }
    Ok(())
}

/// Reads a route directory left by an earlier run, oldest first.
fn load(dir: &Path, counters: &Counters) -> io::Result<VecDeque<Queued>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            // Never acknowledged to anyone: the raise did not finish.
            Some("tmp") => {
                let _ = fs::remove_file(&path);
            }
            Some("json") => match fs::read(&path).map(|bytes| serde_json::from_slice::<Vec<Alert>>(&bytes)) {
                Ok(Ok(alerts)) if alerts.is_empty() => {
                    let _ = fs::remove_file(&path);
                }
                Ok(Ok(alerts)) => segments.push(Arc::new(Segment { path, alerts: Mutex::new(alerts) })),
                Ok(Err(e)) => {
                    ::tracing::error!("alert outbox: {} is unreadable ({e}); kept as .bad", path.display());
                    counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    let _ = fs::rename(&path, path.with_extension("bad"));
                }
                Err(e) => return Err(e),
            },
            _ => {}
        }
    }
    let mut queue: Vec<Queued> = segments
        .iter()
        .flat_map(|segment| {
            let alerts = segment.alerts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            alerts.into_iter().map(|alert| Queued { alert, segment: Some(segment.clone()) })
        })
        .collect();
    queue.sort_by_key(|q| q.alert.seq);
    Ok(queue.into())
}

/// Writes `alerts` to `path` atomically and durably.
fn write_segment(path: &Path, alerts: &[Alert]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(alerts).map_err(io::Error::other)?;
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is.
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// The writer thread: group-commits raised alerts and feeds the workers.
fn writer(
    rx: mpsc::Receiver<Command>,
    workers: BTreeMap<RouteName, (PathBuf, tokio_mpsc::UnboundedSender<Queued>)>,
    mut next_seq: u64,
    shared: &Shared,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(10_000));
        let mut by_route: BTreeMap<RouteName, Vec<Alert>> = BTreeMap::new();
        let mut syncs = Vec::new();
        for command in batch {
            match command {
                Command::Raise(route, alert) => {
                    let mut alert = *alert;
                    alert.seq = next_seq;
                    next_seq += 1;
                    by_route.entry(route).or_default().push(alert);
                }
                Command::Sync(done) => syncs.push(done),
            }
        }
        for (route, alerts) in by_route {
            let Some((dir, tx)) = workers.get(&route) else { continue };
            let path = dir.join(format!("{:020}.json", alerts[0].seq));
            let segment = match write_segment(&path, &alerts) {
                Ok(()) => Some(Arc::new(Segment { path, alerts: Mutex::new(alerts.clone()) })),
                Err(e) => {
                    ::tracing::error!("alert outbox: writing {}: {e}; sending without a durable copy", path.display());
                    shared.counters.unpersisted.fetch_add(alerts.len() as u64, Ordering::Relaxed);
                    None
                }
            };
            for alert in alerts {
                let _ = tx.send(Queued { alert, segment: segment.clone() });
            }
        }
        for done in syncs {
            let _ = done.send(());
        }
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

/// How many queued alerts the next message carries.
fn batch_size(route: &Route, queued: usize, config: &OutboxConfig) -> usize {
    match route.channel.batching() {
        Batching::Native => queued.min(config.max_batch),
        Batching::Digest if queued >= config.flood => queued,
        Batching::Digest => 1,
    }
}

/// Strikes delivered alerts from their files: rewritten with what is left, or
/// removed when nothing is.
fn strike(delivered: &[Queued]) {
    let mut segments: Vec<&Arc<Segment>> = Vec::new();
    for q in delivered {
        if let Some(segment) = &q.segment {
            if !segments.iter().any(|s| Arc::ptr_eq(s, segment)) {
                segments.push(segment);
            }
        }
    }
    for segment in segments {
        let mut alerts = segment.alerts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        alerts.retain(|a| !delivered.iter().any(|d| d.alert.seq == a.seq));
        let result = if alerts.is_empty() {
            fs::remove_file(&segment.path)
                .and_then(|()| File::open(segment.path.parent().unwrap_or(Path::new(".")))?.sync_all())
        } else {
            write_segment(&segment.path, &alerts)
        };
        if let Err(e) = result {
            // The alert would be sent again after a restart; nothing else is lost.
            ::tracing::error!("alert outbox: striking delivered alerts from {}: {e}", segment.path.display());
        }
    }
}

/// One route's delivery loop.
async fn worker(
    route: Route,
    mut queue: VecDeque<Queued>,
    mut rx: tokio_mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
    config: OutboxConfig,
) {
    let mut attempt = 0u32;
    let mut next_send: Option<tokio::time::Instant> = None;
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(q) => queue.push_back(q),
                None => return,
            }
        }
        if let Some(at) = next_send.take() {
            tokio::time::sleep_until(at).await;
        }
        while let Ok(q) = rx.try_recv() {
            queue.push_back(q);
        }

        let n = batch_size(&route, queue.len(), &config);
        let alerts: Vec<Alert> = queue.iter().take(n).map(|q| q.alert.clone()).collect();
        let result = match tokio::time::timeout(config.send_timeout, route.channel.send(&alerts)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(config.send_timeout)),
        };
        match result {
            Ok(()) => {
                let delivered: Vec<Queued> = queue.drain(..n).collect();
                strike(&delivered);
                let c = &shared.counters;
                c.delivered.fetch_add(n as u64, Ordering::Relaxed);
                if n > 1 && route.channel.batching() == Batching::Digest {
                    c.digests.fetch_add(1, Ordering::Relaxed);
                }
                shared.pending.send_modify(|p| *p = p.saturating_sub(n));
                attempt = 0;
                next_send = route.channel.min_interval().map(|i| tokio::time::Instant::now() + i);
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                shared.counters.failed_sends.fetch_add(1, Ordering::Relaxed);
                let wait = e.retry_after().unwrap_or_else(|| backoff(config.first_retry, config.max_retry, attempt));
                ::tracing::warn!(
                    "alert route {} ({}): {e}; {} pending, retry {attempt} in {:.1}s",
                    route.name,
                    route.channel.kind(),
                    queue.len(),
                    wait.as_secs_f64()
                );
                next_send = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::alert::{Channel, Event, SendFuture};

    /// A channel that fails its first `fail` sends and records the rest.
    struct Recorder {
        fail: AtomicUsize,
        sent: Mutex<Vec<Vec<u64>>>,
        batching: Batching,
        interval: Option<Duration>,
    }

    impl Recorder {
        fn new(fail: usize, batching: Batching, interval: Option<Duration>) -> Arc<Self> {
            Arc::new(Self { fail: AtomicUsize::new(fail), sent: Mutex::new(Vec::new()), batching, interval })
        }
        fn messages(&self) -> Vec<Vec<u64>> {
            self.sent.lock().unwrap().clone()
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

    fn config(dir: &Path) -> OutboxConfig {
        OutboxConfig {
            first_retry: Duration::from_millis(10),
            max_retry: Duration::from_millis(40),
            ..OutboxConfig::new(dir)
        }
    }

    fn alert(i: u32) -> Alert {
        Alert::new("web1", format!("svc{i}"), Event::ProcessDown, SystemTime::UNIX_EPOCH)
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inspeq-outbox-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn files(dir: &Path) -> usize {
        fs::read_dir(dir.join("default")).map(|d| d.count()).unwrap_or(0)
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
        let dir = tempdir("retry");
        let channel = Recorder::new(3, Batching::Digest, None);
        let outbox = Outbox::start(config(&dir), routes(channel.clone())).unwrap();
        for i in 0..3 {
            outbox.raise(alert(i), Target::default()).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), outbox.wait_idle()).await.unwrap();
        let messages = channel.messages();
        assert_eq!(messages.len(), 3, "one message per alert below the flood size: {messages:?}");
        assert!(messages.windows(2).all(|w| w[0][0] < w[1][0]), "in order: {messages:?}");
        assert_eq!(outbox.stats().failed_sends, 3);
        assert_eq!(outbox.stats().delivered, 3);
        assert_eq!(files(&dir), 0, "delivered alerts leave the disk");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn pending_alerts_survive_a_restart() {
        let dir = tempdir("restart");
        {
            let never = Recorder::new(usize::MAX, Batching::Digest, None);
            let outbox = Outbox::start(config(&dir), routes(never)).unwrap();
            for i in 0..4 {
                outbox.raise(alert(i), Target::default()).unwrap();
            }
            outbox.sync().await;
            assert_eq!(outbox.pending(), 4);
        }
        assert!(files(&dir) >= 1);
        let channel = Recorder::new(0, Batching::Digest, None);
        let outbox = Outbox::start(config(&dir), routes(channel.clone())).unwrap();
        assert_eq!(outbox.pending(), 4, "found on disk");
        tokio::time::timeout(Duration::from_secs(10), outbox.wait_idle()).await.unwrap();
        let seqs: Vec<u64> = channel.messages().concat();
        assert_eq!(seqs.len(), 4);
        outbox.raise(alert(9), Target::default()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), outbox.wait_idle()).await.unwrap();
        let newest = *channel.messages().concat().last().unwrap();
        assert!(seqs.iter().all(|s| *s < newest), "sequence numbers keep growing across restarts");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_partly_delivered_file_keeps_only_the_rest() {
        let dir = tempdir("partial");
        // Never sends, so the four alerts share one file.
        {
            let never = Recorder::new(usize::MAX, Batching::Digest, None);
            let outbox = Outbox::start(config(&dir), routes(never)).unwrap();
            for i in 0..4 {
                outbox.raise(alert(i), Target::default()).unwrap();
            }
            outbox.sync().await;
        }
        let queue = load(&dir.join("default"), &Counters::default()).unwrap();
        let first_two: Vec<Queued> = queue.into_iter().take(2).collect();
        strike(&first_two);
        let rest = load(&dir.join("default"), &Counters::default()).unwrap();
        let left: Vec<String> = rest.iter().map(|q| q.alert.service.clone()).collect();
        assert_eq!(left.len(), 2);
        assert!(!left.contains(&first_two[0].alert.service) && !left.contains(&first_two[1].alert.service));
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_flood_becomes_a_digest() {
        let dir = tempdir("flood");
        let channel = Recorder::new(0, Batching::Digest, Some(Duration::from_millis(300)));
        let outbox = Outbox::start(config(&dir), routes(channel.clone())).unwrap();
        for i in 0..200 {
            outbox.raise(alert(i), Target::default()).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), outbox.wait_idle()).await.unwrap();
        let messages = channel.messages();
        assert!(messages.len() <= 3, "{} messages", messages.len());
        assert_eq!(messages.concat().len(), 200);
        assert!(outbox.stats().digests >= 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn alerts_of_a_removed_route_go_to_the_default_route() {
        let dir = tempdir("orphan");
        {
            let never = Recorder::new(usize::MAX, Batching::Digest, None);
            let named = Routes::from_routes([Route { name: RouteName::Named("ops".into()), channel: never }]).unwrap();
            let outbox = Outbox::start(config(&dir), named).unwrap();
            outbox.raise(alert(1), Target { route: Some("ops"), owner: None }).unwrap();
            outbox.sync().await;
        }
        let channel = Recorder::new(0, Batching::Digest, None);
        let outbox = Outbox::start(config(&dir), routes(channel.clone())).unwrap();
        tokio::time::timeout(Duration::from_secs(10), outbox.wait_idle()).await.unwrap();
        assert_eq!(channel.messages().len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
