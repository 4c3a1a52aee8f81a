//! The `log` channel: one line per alert on standard output, where journald (or
//! whoever started inspeq) keeps it. It is also where alerts go when no route is
//! configured, so a machine without a mail server still records them.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use super::{Alert, Batching, Channel, SendError, SendFuture, template};

/// Writes `alert: ...` lines to a sink, standard output by default.
pub struct Log {
    sink: Arc<Mutex<dyn Write + Send>>,
}

impl Log {
    pub fn stdout() -> Self {
        Self { sink: Arc::new(Mutex::new(std::io::stdout())) }
    }

    /// A log channel writing to `sink` (tests, or a file).
    pub fn to_writer(sink: Arc<Mutex<dyn Write + Send>>) -> Self {
        Self { sink }
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
        let result = (|| {
            let mut sink = self.sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for alert in alerts {
                writeln!(sink, "{}", Self::line(alert))?;
            }
            sink.flush()
        })();
        Box::pin(std::future::ready(result.map_err(|source| SendError::Log { source })))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::alert::Event;

    #[tokio::test]
    async fn one_line_per_alert() {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let log = Log::to_writer(buffer.clone());
        let alerts = [
            Alert::new("web1", "nginx", Event::ProcessDown, SystemTime::UNIX_EPOCH),
            Alert::new("web1", "nginx", Event::ProcessUp { pid: Some(9) }, SystemTime::UNIX_EPOCH),
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
}
