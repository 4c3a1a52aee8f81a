//! One route's delivery loop, a tokio task: sends its queue in order through
//! the route's channel, one alert, a native batch or a digest at a time;
//! retries forever with backoff; has the writer strike what was delivered
//! before the next send.
//!
//! The writer talks to it between sends only, so a send in flight always
//! finishes with the channel it started on (bounded by the send timeout): a
//! new channel for the route (a reload) is used from the next send on, and a
//! failing route that gets one is tried at once instead of after its backoff.
//! Retired (its route is gone), it hands its whole queue back to the writer,
//! which gives it to the route that takes over; stopped (the outbox closed), it
//! just ends, its alerts staying on disk for the next start.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering, mpsc},
};

use tokio::{
    sync::{mpsc as tokio_mpsc, oneshot},
    time::Instant,
};

use super::{Command, OutboxConfig, Queued, Shared, ToWorker, backoff};
use crate::alert::{Alert, Batching, SendError, route::Route};

pub(super) struct Worker {
    pub route: Route,
    pub queue: VecDeque<Queued>,
    pub rx: tokio_mpsc::UnboundedReceiver<ToWorker>,
    /// The writer, which strikes delivered alerts and takes a retired queue.
    pub writer: mpsc::Sender<Command>,
    pub shared: Arc<Shared>,
    pub config: OutboxConfig,
}

/// Whether the loop goes on after a message.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// How many queued alerts the next message carries.
fn batch_size(route: &Route, queued: usize, config: &OutboxConfig) -> usize {
    match route.channel.batching() {
        Batching::Native => queued.min(config.max_batch),
        Batching::Digest if queued >= config.flood => queued,
        Batching::Digest => 1,
    }
}

impl Worker {
    pub(super) async fn run(mut self) {
        let mut attempt = 0u32;
        let mut next_send: Option<Instant> = None;
        loop {
            // Until there is something to send and its time has come; messages
            // (new alerts, a new channel, retirement) are taken meanwhile.
            while self.queue.is_empty() || next_send.is_some_and(|at| at > Instant::now()) {
                // `None`: the wait is over.
                let message = match next_send.filter(|_| !self.queue.is_empty()) {
                    Some(at) => tokio::select! {
                        () = tokio::time::sleep_until(at) => None,
                        message = self.rx.recv() => Some(message),
                    },
                    None => Some(self.rx.recv().await),
                };
                if let Some(message) = message {
                    if self.handle(message, &mut attempt, &mut next_send) == Flow::Exit {
                        return;
                    }
                }
            }
            while let Ok(message) = self.rx.try_recv() {
                if self.handle(Some(message), &mut attempt, &mut next_send) == Flow::Exit {
                    return;
                }
            }
            match self.send().await {
                Ok(()) => {
                    attempt = 0;
                    next_send = self.route.channel.min_interval().map(|i| Instant::now() + i);
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    self.shared.counters.failed_sends.fetch_add(1, Ordering::Relaxed);
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| backoff(self.config.first_retry, self.config.max_retry, attempt));
                    tracing::warn!(
                        "alert route {} ({}): {e}; {} pending, retry {attempt} in {:.1}s",
                        self.route.name,
                        self.route.channel.kind(),
                        self.queue.len(),
                        wait.as_secs_f64()
                    );
                    next_send = Some(Instant::now() + wait);
                }
            }
        }
    }

    fn handle(&mut self, message: Option<ToWorker>, attempt: &mut u32, next_send: &mut Option<Instant>) -> Flow {
        match message {
            Some(ToWorker::Alert(queued)) => self.queue.push_back(queued),
            Some(ToWorker::Route(route)) => {
                self.route = route;
                // The old channel's failures say nothing about the new one's.
                if *attempt > 0 {
                    *attempt = 0;
                    *next_send = None;
                }
            }
            Some(ToWorker::Retire) => {
                let queue = std::mem::take(&mut self.queue);
                let _ = self.writer.send(Command::Retired(self.route.name.clone(), queue));
                return Flow::Exit;
            }
            // Closed: what is queued stays on disk for the next start.
            Some(ToWorker::Stop) | None => return Flow::Exit,
        }
        Flow::Continue
    }

    /// Sends the head of the queue; on success the alerts are struck from disk
    /// before this returns.
    async fn send(&mut self) -> Result<(), SendError> {
        let n = batch_size(&self.route, self.queue.len(), &self.config);
        let alerts: Vec<Alert> = self.queue.iter().take(n).map(|q| q.alert.clone()).collect();
        let timeout = self.config.send_timeout;
        match tokio::time::timeout(timeout, self.route.channel.send(&alerts)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SendError::Timeout(timeout)),
        }
        if crate::timing::enabled() {
            for alert in &alerts {
                crate::timing::stamp("alert_accepted", &alert.service, format_args!(" event={}", alert.event.kind()));
            }
        }
        let delivered: Vec<Queued> = self.queue.drain(..n).collect();
        // So that a crash now resends at most this one message.
        let (done, struck) = oneshot::channel();
        if self.writer.send(Command::Strike(delivered, done)).is_ok() {
            let _ = struck.await;
        }
        let c = &self.shared.counters;
        c.delivered.fetch_add(n as u64, Ordering::Relaxed);
        if n > 1 && self.route.channel.batching() == Batching::Digest {
            c.digests.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.pending.send_modify(|p| *p = p.saturating_sub(n));
        Ok(())
    }
}
