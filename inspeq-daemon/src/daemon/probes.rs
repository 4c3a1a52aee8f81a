//! Active probes on the loop's side: one task per check and probe (`probe::Prober`), started with the check and
//! ended with it, that probes when the cycle asks (at most once per `interval`) and reports back as
//! [`Event::Probed`]; and what the loop keeps of each (last attempt, success, time, error) for `status` and the
//! probe's alert.
//!
//! The task builds its prober off the loop (reading a CA file is disk I/O), bounds each run by the probe's
//! timeout, and is asked without queueing: a cycle that asks while a probe is still running is not queued twice,
//! so a probe that times out each time costs one task, not a backlog.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{sync::mpsc, time::Instant};

use super::{Daemon, event::Event, executor::Executor};
use crate::{
    config::model::{Probe, ProbeId},
    control::protocol::ProbeStatus,
    engine::{Input, Probed, Sample, Target, Timestamp},
    probe::{Answer, ProbeError, Prober},
};

/// What a probe task reports.
pub struct Report {
    pub target: Target,
    pub probe: ProbeId,
    /// Which task: a task of a check a reload replaced may still report once.
    pub task: u64,
    pub at: Instant,
    pub result: Result<Answer, Arc<ProbeError>>,
}

/// The loop's side of one probe task.
struct Task {
    id: u64,
    probe: Probe,
    /// Dropped with the task's entry, which ends the task.
    asks: mpsc::Sender<()>,
    last_attempt: Option<Timestamp>,
    last_success: Option<Timestamp>,
    last_time: Option<Duration>,
    error: Option<Arc<ProbeError>>,
}

/// Every probe task, by check and probe.
#[derive(Default)]
pub struct Probes {
    tasks: BTreeMap<(Target, ProbeId), Task>,
    next_id: u64,
}

impl Probes {
    /// Starts a task for each wanted probe that has none with that probe, and ends the others.
    pub fn sync<'a>(&mut self, wanted: impl IntoIterator<Item = (Target, ProbeId, &'a Probe)>, executor: &Executor) {
        let mut keep = BTreeMap::new();
        for (target, id, probe) in wanted {
            let key = (target, id);
            let task = match self.tasks.remove(&key) {
                Some(task) if task.probe == *probe => task,
                _ => {
                    self.next_id += 1;
                    start(key.0.clone(), id, probe, self.next_id, executor)
                }
            };
            keep.insert(key, task);
        }
        self.tasks = keep;
    }

    /// Asks every task for a probe (a task still probing is asked once).
    pub fn ask_all(&self) {
        for task in self.tasks.values() {
            let _ = task.asks.try_send(());
        }
    }

    /// Why the last run of `probe` of `target` failed, while it fails.
    pub fn error(&self, target: &Target, probe: ProbeId) -> Option<&ProbeError> {
        self.tasks.get(&(target.clone(), probe)).and_then(|t| t.error.as_deref())
    }

    /// What `status` shows of `target`'s probes at `now`.
    pub fn status(&self, target: &Target, now: Timestamp) -> Vec<ProbeStatus> {
        self.tasks
            .range((target.clone(), ProbeId(0))..)
            .take_while(|((t, _), _)| t == target)
            .map(|((_, id), t)| ProbeStatus {
                id: id.0,
                probe: t.probe.target.to_string(),
                last_attempt_secs_ago: t.last_attempt.map(|at| now.since(at).as_secs()),
                last_success_secs_ago: t.last_success.map(|at| now.since(at).as_secs()),
                last_time_ms: t.last_time.map(|d| d.as_secs_f64() * 1000.0),
                error: t.error.as_ref().map(ToString::to_string),
            })
            .collect()
    }
}

fn start(target: Target, id: ProbeId, probe: &Probe, task: u64, executor: &Executor) -> Task {
    let (asks, asked) = mpsc::channel(1);
    tokio::spawn(run(probe.clone(), asked, executor.events(), target, id, task));
    Task { id: task, probe: probe.clone(), asks, last_attempt: None, last_success: None, last_time: None, error: None }
}

async fn run(
    probe: Probe,
    mut asked: mpsc::Receiver<()>,
    events: mpsc::Sender<Event>,
    target: Target,
    id: ProbeId,
    task: u64,
) {
    let built = probe.clone();
    // Off the loop's thread: a CA file, the system's bundle.
    let Ok(prober) = tokio::task::spawn_blocking(move || Prober::new(&built)).await else { return };
    let mut last_run: Option<Instant> = None;
    while asked.recv().await.is_some() {
        if let (Some(interval), Some(last)) = (probe.interval, last_run)
            && last.elapsed() < interval
        {
            continue;
        }
        last_run = Some(Instant::now());
        let result = prober.run(probe.timeout).await.map_err(Arc::new);
        let report = Report { target: target.clone(), probe: id, task, at: Instant::now(), result };
        if events.send(Event::Probed(report)).await.is_err() {
            break;
        }
    }
}

impl Daemon {
    /// Starts and ends probe tasks to match the configuration's checks.
    pub(super) fn sync_probes(&mut self) {
        let checks = self.config.host.iter().map(|c| (Target::Host, c));
        let services = self.services.values().map(|s| (Target::Service(s.check.name.clone()), &s.check));
        let wanted: Vec<(Target, ProbeId, Probe)> = checks
            .chain(services)
            .flat_map(|(target, check)| {
                check
                    .probes
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (target.clone(), ProbeId(u32::try_from(i).unwrap_or(u32::MAX)), p.clone()))
            })
            .collect();
        self.probes.sync(wanted.iter().map(|(t, i, p)| (t.clone(), *i, p)), &self.executor);
    }

    /// A probe came back: what it found becomes a sample of its check, stepped through the engine.
    pub(super) fn probed(&mut self, report: Report) {
        let Report { target, probe, task, at, result } = report;
        let Some(entry) = self.probes.tasks.get_mut(&(target.clone(), probe)).filter(|t| t.id == task) else {
            return;
        };
        let now = Timestamp::from_millis(at.saturating_duration_since(self.origin).as_millis() as u64);
        entry.last_attempt = Some(now);
        let probed = match result {
            Ok(answer) => {
                entry.last_success = Some(now);
                entry.last_time = Some(answer.took);
                if entry.error.take().is_some() {
                    tracing::info!("probe: {target}: {} answers again", entry.probe.target);
                }
                Probed::Answered {
                    millis: answer.took.as_secs_f64() * 1000.0,
                    certificate_left: answer.certificate_left,
                }
            }
            Err(error) => {
                if entry.error.is_none() {
                    tracing::warn!("probe: {target}: {}: {error}", entry.probe.target);
                }
                entry.error = Some(error);
                Probed::Failed
            }
        };
        self.step(Input::Sample(Sample::new(target).probed(probe, probed)), now);
    }
}
