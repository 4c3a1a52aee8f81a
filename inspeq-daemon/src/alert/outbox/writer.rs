//! The outbox's owner: one thread that does all of its disk work and decides
//! which worker has which alert.
//!
//! It group-commits raised alerts (one segment per route per batch, one
//! `fsync` each: a flood of a thousand alerts costs a few dozen syncs, not a
//! thousand; the alerts go to their workers before the sync, not after it),
//! strikes what the workers delivered, and applies route changes: a route that stays keeps its worker and queue and gets the new channel; a
//! new route gets a worker; a removed route's worker is retired and hands its
//! queue back, which goes with its files to the route of the same name if one
//! was added back meanwhile, else to the route alerts without a target take
//! (the default route, or the log), as at start. Commands are taken in the
//! order they were sent, so an alert raised before a route change is filed
//! under the routes it was raised with, and one raised after under the new.
//!
//! Everything here blocks (disk), which is why it is a thread of its own and
//! not a task on the daemon's one-threaded runtime.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering, mpsc},
};

use tokio::sync::mpsc as tokio_mpsc;

use super::{
    Command, OutboxConfig, Queued, Shared, ToWorker,
    store::{self, Segment},
    worker::Worker,
};
use crate::alert::{
    Alert,
    route::{Route, RouteName, Routes, Target},
};

/// A running worker as the writer knows it.
struct RouteWorker {
    /// Where its segments go; `None` when the directory could not be made
    /// (its alerts are still sent, without a durable copy).
    dir: Option<PathBuf>,
    tx: tokio_mpsc::UnboundedSender<ToWorker>,
}

pub(super) struct Writer {
    config: OutboxConfig,
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    workers: BTreeMap<RouteName, RouteWorker>,
    next_seq: u64,
    /// Given to each worker so it can have alerts struck and hand back its
    /// queue. Dropped at close, so that the thread ends once the workers have.
    commands: Option<mpsc::Sender<Command>>,
    runtime: tokio::runtime::Handle,
}

/// The route alerts without a target take.
pub(super) fn home(routes: &Routes) -> RouteName {
    routes.select(Target::default()).expect("the default target always has a route").name.clone()
}

impl Writer {
    /// Must be called inside a tokio runtime: workers are spawned on it.
    pub(super) fn new(
        config: OutboxConfig,
        shared: Arc<Shared>,
        routes: Arc<Routes>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            config,
            shared,
            routes,
            workers: BTreeMap::new(),
            next_seq: 0,
            commands: Some(commands),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Opens every route's directory, queues what an earlier run left there and
    /// starts the route's worker. Returns how many alerts were found. Sequence
    /// numbers continue after the highest found and never fall below the
    /// clock's microseconds, so a Message-ID built from one is never reused,
    /// also after restarts that emptied the outbox.
    pub(super) fn open(&mut self) -> usize {
        let mut max_seq = 0;
        let mut total = 0;
        let routes = self.routes.clone();
        for route in routes.all() {
            let dir = self.route_dir(&route.name);
            let loaded = match &dir {
                Some(dir) => store::load_route(dir).unwrap_or_else(|e| {
                    tracing::error!("alert outbox: reading {}: {e}; its alerts are not sent this run", dir.display());
                    store::Loaded { unreadable: 1, ..store::Loaded::default() }
                }),
                None => store::Loaded::default(),
            };
            self.shared.counters.unreadable.fetch_add(loaded.unreadable, Ordering::Relaxed);
            let queue: VecDeque<Queued> =
                loaded.alerts().into_iter().map(|(alert, segment)| Queued { alert, segment: Some(segment) }).collect();
            max_seq = queue.iter().map(|q| q.alert.seq).fold(max_seq, u64::max);
            total += queue.len();
            self.start_worker(route.clone(), dir, queue);
        }
        let now_micros =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
        self.next_seq = (max_seq + 1).max(u64::try_from(now_micros).unwrap_or(u64::MAX));
        total
    }

    /// The route's directory, created if need be.
    fn route_dir(&self, name: &RouteName) -> Option<PathBuf> {
        let dir = self.config.dir.join(name.dir_name());
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::error!(
                    "alert outbox: creating {}: {e}; alerts of route {name} will not survive a restart",
                    dir.display()
                );
                None
            }
        }
    }

    fn start_worker(&mut self, route: Route, dir: Option<PathBuf>, queue: VecDeque<Queued>) {
        let Some(writer) = self.commands.clone() else { return };
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        let name = route.name.clone();
        let worker = Worker { route, queue, rx, writer, shared: self.shared.clone(), config: self.config.clone() };
        self.runtime.spawn(worker.run());
        self.workers.insert(name, RouteWorker { dir, tx });
    }

    /// The thread's loop: until every handle and worker is gone.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut raises = Vec::new();
            let mut syncs = Vec::new();
            for command in std::iter::once(first).chain(rx.try_iter().take(10_000)) {
                match command {
                    Command::Raise(route, alert) => {
                        let mut alert = *alert;
                        alert.seq = self.next_seq;
                        self.next_seq += 1;
                        raises.push((route, alert));
                    }
                    Command::Sync(done) => syncs.push(done),
                    // New raises cannot be in the segments a strike touches.
                    Command::Strike(delivered, done) => {
                        strike(&delivered);
                        let _ = done.send(());
                    }
                    // Raised before the change: filed under the routes they were raised with.
                    Command::SetRoutes(routes) => {
                        self.commit(&mut raises);
                        self.set_routes(routes);
                    }
                    Command::Retired(name, queue) => {
                        self.commit(&mut raises);
                        self.retired(&name, queue);
                    }
                    Command::Close => {
                        self.commit(&mut raises);
                        self.close();
                    }
                }
            }
            self.commit(&mut raises);
            for done in syncs {
                let _ = done.send(());
            }
        }
    }

    /// Writes `raises` (one segment per route) and hands them to their workers.
    fn commit(&mut self, raises: &mut Vec<(RouteName, Alert)>) {
        if raises.is_empty() {
            return;
        }
        let home = home(&self.routes);
        let mut by_route: BTreeMap<RouteName, Vec<Alert>> = BTreeMap::new();
        for (route, alert) in raises.drain(..) {
            // Named under routes a later change removed before this commit.
            let route = if self.workers.contains_key(&route) { route } else { home.clone() };
            by_route.entry(route).or_default().push(alert);
        }
        // Handed to the workers first and persisted after: a delivery does not
        // wait for the disk (an fsync here takes up to 10 ms). Nothing is lost by
        // the order: a crash before the file is written loses only alerts that
        // were raised within that moment, as a crash before the raise would, and
        // one after it resends what was not struck, as before.
        let mut written = Vec::new();
        for (route, alerts) in by_route {
            let Some(worker) = self.workers.get(&route) else { continue };
            let segment = worker
                .dir
                .as_ref()
                .map(|dir| Segment::pending(dir.join(store::segment_name(alerts[0].seq)), alerts.clone()));
            match &segment {
                Some(segment) => written.push((segment.clone(), alerts.len())),
                None => {
                    self.shared.counters.unpersisted.fetch_add(alerts.len() as u64, Ordering::Relaxed);
                }
            }
            for alert in alerts {
                crate::timing::stamp("alert_committed", &alert.service, format_args!(" event={}", alert.event.kind()));
                let _ = worker.tx.send(ToWorker::Alert(Queued { alert, segment: segment.clone() }));
            }
        }
        for (segment, count) in written {
            match segment.persist() {
                Ok(()) => segment.stamp("alert_persisted"),
                Err(e) => {
                    tracing::error!(
                        "alert outbox: writing {}: {e}; sending without a durable copy",
                        segment.path().display()
                    );
                    self.shared.counters.unpersisted.fetch_add(count as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn set_routes(&mut self, routes: Arc<Routes>) {
        self.routes = routes.clone();
        for route in routes.all() {
            match self.workers.get(&route.name) {
                Some(worker) => {
                    let _ = worker.tx.send(ToWorker::Route(route.clone()));
                }
                None => {
                    // A directory left with files can only hold alerts a
                    // retired worker is handing back right now: not read here,
                    // or they would be queued twice.
                    let dir = self.route_dir(&route.name);
                    self.start_worker(route.clone(), dir, VecDeque::new());
                }
            }
        }
        let gone: Vec<RouteName> = self.workers.keys().filter(|name| routes.get(name).is_none()).cloned().collect();
        let counters = &self.shared.counters;
        for name in gone {
            if let Some(worker) = self.workers.remove(&name) {
                if worker.tx.send(ToWorker::Retire).is_ok() {
                    counters.handing_over.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // This change's own count, taken by `Outbox::set_routes`.
        counters.handing_over.fetch_sub(1, Ordering::Relaxed);
    }

    /// A retired worker's queue: to the route of the same name if it is back,
    /// else to home, its files moved along.
    fn retired(&mut self, name: &RouteName, queue: VecDeque<Queued>) {
        self.hand_over(name, queue);
        // Only now, with the files moved and the queue forwarded: `handing_over`
        // at 0 says the change is complete, on disk too.
        self.shared.counters.handing_over.fetch_sub(1, Ordering::Relaxed);
    }

    fn hand_over(&mut self, name: &RouteName, queue: VecDeque<Queued>) {
        let target = if self.workers.contains_key(name) { name.clone() } else { home(&self.routes) };
        // Closed meanwhile: the alerts stay on disk for the next start.
        let Some(worker) = self.workers.get(&target) else { return };
        if &target != name {
            tracing::warn!(
                "alert outbox: route {name} is gone; its {} pending alert(s) go to route {target}",
                queue.len()
            );
            if let Some(to) = &worker.dir {
                move_segments(&queue, to);
            }
        }
        for queued in queue {
            let _ = worker.tx.send(ToWorker::Alert(queued));
        }
    }

    /// The last handle is gone: workers stop after what they are sending.
    fn close(&mut self) {
        for worker in self.workers.values() {
            let _ = worker.tx.send(ToWorker::Stop);
        }
        self.workers.clear();
        self.commands = None;
    }
}

/// Moves the files of `queue`'s segments into `to`, so that the disk says what
/// the queues say: after a restart the alerts are still the new route's.
fn move_segments(queue: &VecDeque<Queued>, to: &Path) {
    let mut segments: Vec<&Arc<Segment>> = Vec::new();
    for segment in queue.iter().filter_map(|q| q.segment.as_ref()) {
        if !segments.iter().any(|s| Arc::ptr_eq(s, segment)) {
            segments.push(segment);
        }
    }
    let mut from_dirs: Vec<PathBuf> = Vec::new();
    for segment in segments {
        let from = segment.path();
        if let Err(e) = segment.move_to(to) {
            // Still struck where it is; only a restart would send it by its old directory.
            tracing::error!("alert outbox: moving {} to {}: {e}", from.display(), to.display());
            continue;
        }
        if let Some(dir) = from.parent() {
            if !from_dirs.iter().any(|d| d == dir) {
                from_dirs.push(dir.to_owned());
            }
        }
    }
    for dir in std::iter::once(to).chain(from_dirs.iter().map(PathBuf::as_path)) {
        if let Err(e) = store::sync_dir(dir) {
            tracing::error!("alert outbox: syncing {}: {e}", dir.display());
        }
    }
    for dir in &from_dirs {
        // Only when empty: `.bad` files stay for the operator.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Strikes delivered alerts from their segments.
fn strike(delivered: &[Queued]) {
    let mut segments: Vec<(&Arc<Segment>, Vec<u64>)> = Vec::new();
    for q in delivered {
        let Some(segment) = &q.segment else { continue };
        match segments.iter_mut().find(|(s, _)| Arc::ptr_eq(s, segment)) {
            Some((_, seqs)) => seqs.push(q.alert.seq),
            None => segments.push((segment, vec![q.alert.seq])),
        }
    }
    for (segment, seqs) in segments {
        if let Err(e) = segment.strike(&seqs) {
            // The alerts would be sent again after a restart; nothing else is lost.
            tracing::error!("alert outbox: striking delivered alerts from {}: {e}", segment.path().display());
        }
    }
}
