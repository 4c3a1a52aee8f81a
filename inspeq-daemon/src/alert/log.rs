//! The `log` channel: one line per alert on standard output, where journald (or
//! whoever started inspeq) keeps it. It is also where alerts go when no route is
//! configured, so a machine without a mail server still records them.
//!
//! The lines are written by a thread of their own, never by the route's task:
//! the daemon runs one tokio thread, and a write(2) to a pipe nobody reads
//! blocks until someone does, which from a task would stop the event loop with
//! it. The task hands the lines over through a short bounded queue and waits
//! for the thread's answer; a full queue is a failed send (retried by the
//! outbox), so alerts wait on disk, not in memory, while standard output is
//! stuck. A send that timed out is still written when the pipe moves again; the
//! thread remembers which alerts it wrote, so the retry does not write them a
//! second time.

use std::{
    collections::{HashSet, VecDeque},
    io::{self, Write},
    sync::{Arc, LazyLock, Mutex, PoisonError, mpsc},
};

use tokio::sync::oneshot;

use super::{Alert, Batching, Channel, SendError, SendFuture, template};

/// Writes waiting for the thread; more is a failed send.
const QUEUE: usize = 16;
/// Alerts the thread remembers having written.
const REMEMBERED: usize = 10_000;

/// One send: its alerts' lines, each with the alert's sequence number.
struct Job {
    lines: Vec<(u64, String)>,
    done: oneshot::Sender<io::Result<()>>,
}

/// A sink and the thread that writes to it, started at the first send and
/// ended (after what is queued) when the last channel using it is dropped.
struct Output {
    sink: Arc<Mutex<dyn Write + Send>>,
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
}

/// Standard output's writer, shared by every log channel: one thread, and one
/// memory of what was written, whichever route wrote it.
static STDOUT: LazyLock<Arc<Output>> = LazyLock::new(|| Arc::new(Output::new(Arc::new(Mutex::new(io::stdout())))));

impl Output {
    fn new(sink: Arc<Mutex<dyn Write + Send>>) -> Self {
        Self { sink, jobs: Mutex::new(None) }
    }

    /// Queues `job`, starting the thread if it is not running.
    fn submit(&self, job: Job) -> io::Result<()> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if jobs.is_none() {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let sink = self.sink.clone();
            std::thread::Builder::new().name("inspeq-alert-log".into()).spawn(move || write_jobs(&rx, &sink))?;
            *jobs = Some(tx);
        }
        let tx = jobs.as_ref().expect("started above");
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(_)) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("nobody reads standard output: {QUEUE} writes are waiting"),
            )),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                // The thread is gone (it panicked): the next send starts another.
                *jobs = None;
                Err(io::Error::other("the alert log's writer thread stopped"))
            }
        }
    }
}

/// The thread: writes each job's lines not written before, and answers.
fn write_jobs(rx: &mpsc::Receiver<Job>, sink: &Mutex<dyn Write + Send>) {
    let mut written: HashSet<u64> = HashSet::new();
    let mut order: VecDeque<u64> = VecDeque::new();
    for job in rx {
        let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
        let mut result = Ok(());
        for (seq, line) in &job.lines {
            // 0: not from the outbox (a test alert), never a retry.
            if *seq != 0 && written.contains(seq) {
                continue;
            }
            result = writeln!(sink, "{line}").and_then(|()| sink.flush());
            if result.is_err() {
                break;
            }
            if *seq != 0 {
                written.insert(*seq);
                order.push_back(*seq);
                if order.len() > REMEMBERED {
                    if let Some(old) = order.pop_front() {
                        written.remove(&old);
                    }
                }
            }
        }
        let _ = job.done.send(result);
    }
}

/// Writes `alert: ...` lines to a sink, standard output by default.
pub struct Log {
    output: Arc<Output>,
}

impl Log {
    pub fn stdout() -> Self {
        Self { output: STDOUT.clone() }
    }

    /// A log channel writing to `sink` (tests, or a file), from a thread of its own.
    pub fn to_writer(sink: Arc<Mutex<dyn Write + Send>>) -> Self {
        Self { output: Arc::new(Output::new(sink)) }
    }

    /// The line written for `alert`.
    pub fn line(alert: &Alert) -> String {
        format!(
            "alert: {} service={} event={} fingerprint={}: {}",
            alert.event.status().as_str(),
            alert.service,
            alert.event.kind(),
            alert.fingerprint(),
            template::chat(alert)
        )
    }
}

impl Channel for Log {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn batching(&self) -> Batching {
        Batching::Native
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a> {
        let (done, answer) = oneshot::channel();
        let job = Job { lines: alerts.iter().map(|a| (a.seq, Self::line(a))).collect(), done };
        let submitted = self.output.submit(job);
        Box::pin(async move {
            submitted.map_err(|source| SendError::Log { source })?;
            match answer.await {
                Ok(result) => result.map_err(|source| SendError::Log { source }),
                Err(_) => Err(SendError::Log { source: io::Error::other("the alert log's writer thread stopped") }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::alert::AlertKind;

    #[tokio::test]
    async fn one_line_per_alert() {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let log = Log::to_writer(buffer.clone());
        let alerts = [
            Alert::new("web1", "nginx", AlertKind::ProcessDown, SystemTime::UNIX_EPOCH),
            Alert::new("web1", "nginx", AlertKind::ProcessUp { pid: Some(9) }, SystemTime::UNIX_EPOCH),
        ];
        log.send(&alerts).await.unwrap();
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let fp = alerts[0].fingerprint();
        assert_eq!(
            text,
            format!(
                "alert: firing service=nginx event=process_down fingerprint={fp}: nginx on web1 is down: no process is running.\n\
                 alert: resolved service=nginx event=process_up fingerprint={fp}: nginx on web1 is running again (pid 9).\n"
            )
        );
    }

    /// A sink that blocks every write until `open` is set, like a pipe nobody reads.
    struct Stuck {
        open: Arc<std::sync::atomic::AtomicBool>,
        text: Arc<Mutex<String>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while !self.open.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.text.lock().unwrap().push_str(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_sink_blocks_no_task_and_a_retry_is_not_written_twice() {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let text = Arc::new(Mutex::new(String::new()));
        let log = Log::to_writer(Arc::new(Mutex::new(Stuck { open: open.clone(), text: text.clone() })));
        let mut alert = Alert::new("web1", "nginx", AlertKind::ProcessDown, SystemTime::UNIX_EPOCH);
        alert.seq = 7;
        let alerts = [alert];
        // The send waits (this task only; the runtime goes on) and times out, as
        // the outbox's send timeout would.
        let first = tokio::time::timeout(Duration::from_millis(50), log.send(&alerts)).await;
        assert!(first.is_err(), "the write is stuck");
        // Enough retries fill the queue: they fail at once instead of piling up.
        let mut refused = None;
        for _ in 0..=QUEUE {
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(10), log.send(&alerts)).await {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("a full queue refuses the send");
        assert!(refused.to_string().contains("nobody reads standard output"), "{refused}");
        // The pipe moves: a retry succeeds once the queue has drained, and the
        // alert was written once.
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut retries = 0;
        while log.send(&alerts).await.is_err() {
            retries += 1;
            assert!(retries < 500, "the queue never drained");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(text.lock().unwrap().matches("alert: firing service=nginx").count(), 1);
    }
}
