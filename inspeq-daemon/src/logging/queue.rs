//! The log's way to standard error: formatted lines go into a bounded queue
//! and a thread of its own writes them, so that a write(2) that blocks (the
//! reader of the pipe stopped reading) blocks that thread alone. When the
//! queue is full a line is dropped and counted; once the thread has caught up
//! it logs how many were lost, and the count stays in `status` and `/metrics`.
//!
//! Where the thread cannot be started, lines are written directly, as before.

use std::{
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the thread: about 100 KiB of ordinary lines, a few
/// minutes of a busy daemon's log.
const QUEUE: usize = 1024;
/// How long [`Flush`] waits for the queue to drain at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Lines dropped because the queue was full, since the start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped because standard error was not taking them.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Item {
    Line(Vec<u8>),
    /// Answered once everything before it is written.
    Flush(mpsc::Sender<()>),
}

/// The `MakeWriter` the subscriber formats into.
#[derive(Clone)]
pub struct QueueWriter {
    tx: Option<mpsc::SyncSender<Item>>,
}

/// Writes what is queued when dropped, bounded by a second so that a stuck
/// standard error cannot hold up the exit.
pub struct Flush {
    tx: Option<mpsc::SyncSender<Item>>,
}

/// The queue and its thread, writing to standard error.
pub fn stderr() -> (QueueWriter, Flush) {
    spawn(io::stderr())
}

fn spawn(mut sink: impl io::Write + Send + 'static) -> (QueueWriter, Flush) {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let started = std::thread::Builder::new().name("inspeq-log".into()).spawn(move || write_lines(&rx, &mut sink));
    let tx = started.is_ok().then_some(tx);
    (QueueWriter { tx: tx.clone() }, Flush { tx })
}

fn write_lines(rx: &mpsc::Receiver<Item>, sink: &mut impl io::Write) {
    let mut reported = 0;
    loop {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(mpsc::TryRecvError::Empty) => {
                // Caught up, so there is room again: say what was lost, through
                // the log itself so that the line looks like any other.
                let dropped = DROPPED.load(Ordering::Relaxed);
                if dropped > reported {
                    tracing::warn!(
                        "log: {} line(s) dropped because standard error was not being read ({dropped} since the start)",
                        dropped - reported
                    );
                    reported = dropped;
                }
                match rx.recv() {
                    Ok(item) => item,
                    Err(_) => return,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
        };
        match item {
            // Nobody to tell of a failed write but standard error itself.
            Item::Line(line) => {
                let _ = sink.write_all(&line);
            }
            Item::Flush(done) => {
                let _ = sink.flush();
                let _ = done.send(());
            }
        }
    }
}

/// One event's writer: the subscriber formats the whole line and writes it
/// with one `write_all`.
pub struct Line<'a> {
    tx: Option<&'a mpsc::SyncSender<Item>>,
}

impl io::Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tx {
            Some(tx) => {
                if let Err(mpsc::TrySendError::Full(_) | mpsc::TrySendError::Disconnected(_)) =
                    tx.try_send(Item::Line(buf.to_vec()))
                {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let _ = io::stderr().write_all(buf);
            }
        }
        // A log line never fails the code that logs it.
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { tx: self.tx.as_ref() }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let deadline = Instant::now() + FLUSH_WAIT;
        let (done, written) = mpsc::channel();
        let mut item = Item::Flush(done);
        // The queue may be full: retry until the deadline, never block on it.
        loop {
            match tx.try_send(item) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) if Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// A sink that takes nothing until `open` is set, like a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Pipe {
        open: Arc<std::sync::atomic::AtomicBool>,
        text: Arc<Mutex<Vec<u8>>>,
    }

    impl io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.text.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_costs_counted_lines_never_a_blocked_writer() {
        let pipe = Pipe::default();
        let (writer, flush) = spawn(pipe.clone());
        let before = dropped_lines();
        let started = Instant::now();
        for i in 0..QUEUE + 100 {
            writer.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "logging waited for the sink");
        // One is in the thread's hands, QUEUE wait; the rest were dropped (other
        // tests may log meanwhile, so at least).
        assert!(dropped_lines() - before >= 99, "{} dropped", dropped_lines() - before);
        pipe.open.store(true, Ordering::SeqCst);
        drop(flush);
        let text = String::from_utf8(pipe.text.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("line 0\nline 1\n"), "{}", &text[..40]);
        assert!(text.lines().count() >= QUEUE, "the queued lines are written once the sink moves");
    }
}
