//! Prometheus `/metrics` (text exposition format 0.0.4) when `set metrics_listen
//! ADDR:PORT` is configured: every sampled host and service metric, rule states,
//! service states and restarts, alerts per outcome, what the outbox could not
//! write or read back, log lines dropped, and the kernel path's records and
//! drops per kind. All names start with `inspeq_`. Metric values are those
//! `show` draws, in the catalogue's units (CPU in percent, counters per second).
//!
//! The daemon loop renders the page after each cycle and hands it over through a
//! `watch` channel; the listener only serves the latest page, so a slow scraper
//! never touches the loop.

use std::fmt::Write as _;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::watch,
};

/// What one page says; the daemon fills it from its state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// (target, metric, value): `host` or a service, `memory:rss`, ...
    pub metrics: Vec<(String, String, f64)>,
    /// (target, rule text, triggered)
    pub rules: Vec<(String, String, bool)>,
    /// (service, up, restarts)
    pub services: Vec<(String, bool, u64)>,
    pub alerts_raised: u64,
    pub alerts_delivered: u64,
    pub alert_send_failures: u64,
    pub alerts_pending: u64,
    pub alerts_unpersisted: u64,
    pub outbox_unreadable: u64,
    pub log_dropped_lines: u64,
    /// Per record kind (exit, fork, rss).
    pub kernel_emitted: [u64; 3],
    pub kernel_dropped: [u64; 3],
    pub kernel_ebpf: bool,
}

/// Escapes a label value as the exposition format wants.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the page.
#[expect(clippy::too_many_lines, reason = "a table of metric families, one block each, read top to bottom")]
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let add = |out: &mut String, name: &str, kind: &str, help: &str, lines: Vec<String>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    };
    add(
        &mut out,
        "inspeq_metric",
        "gauge",
        "The latest value of each metric inspeq collects, by target and metric name, as rules compare it: CPU in percent, counters per second, memory in bytes.",
        s.metrics
            .iter()
            .map(|(t, m, v)| format!("inspeq_metric{{target=\"{}\",metric=\"{}\"}} {v}", label(t), label(m)))
            .collect(),
    );
    add(
        &mut out,
        "inspeq_rule_triggered",
        "gauge",
        "1 while a rule is failing.",
        s.rules
            .iter()
            .map(|(t, r, on)| {
                format!("inspeq_rule_triggered{{target=\"{}\",rule=\"{}\"}} {}", label(t), label(r), u8::from(*on))
            })
            .collect(),
    );
    add(
        &mut out,
        "inspeq_service_up",
        "gauge",
        "1 while the service's main process runs.",
        s.services
            .iter()
            .map(|(n, up, _)| format!("inspeq_service_up{{service=\"{}\"}} {}", label(n), u8::from(*up)))
            .collect(),
    );
    add(
        &mut out,
        "inspeq_service_restarts_total",
        "counter",
        "Starts of the service after its first, whoever asked for them.",
        s.services
            .iter()
            .map(|(n, _, r)| format!("inspeq_service_restarts_total{{service=\"{}\"}} {r}", label(n)))
            .collect(),
    );
    add(
        &mut out,
        "inspeq_alerts_total",
        "counter",
        "Alerts raised, delivered and failed delivery attempts (each retried).",
        vec![
            format!("inspeq_alerts_total{{outcome=\"raised\"}} {}", s.alerts_raised),
            format!("inspeq_alerts_total{{outcome=\"delivered\"}} {}", s.alerts_delivered),
            format!("inspeq_alerts_total{{outcome=\"send_failed\"}} {}", s.alert_send_failures),
        ],
    );
    add(
        &mut out,
        "inspeq_alerts_pending",
        "gauge",
        "Alerts waiting in the outbox.",
        vec![format!("inspeq_alerts_pending {}", s.alerts_pending)],
    );
    add(
        &mut out,
        "inspeq_alerts_unpersisted_total",
        "counter",
        "Alerts that could not be written to the outbox: sent, but lost to a restart.",
        vec![format!("inspeq_alerts_unpersisted_total {}", s.alerts_unpersisted)],
    );
    add(
        &mut out,
        "inspeq_outbox_unreadable_total",
        "counter",
        "Outbox records that could not be read back at start (damaged, kept as .bad), and entries there that are not segment files.",
        vec![format!("inspeq_outbox_unreadable_total {}", s.outbox_unreadable)],
    );
    add(
        &mut out,
        "inspeq_log_dropped_lines_total",
        "counter",
        "Log lines dropped because standard error was not taking them.",
        vec![format!("inspeq_log_dropped_lines_total {}", s.log_dropped_lines)],
    );
    let kinds = ["exit", "fork", "rss"];
    add(
        &mut out,
        "inspeq_kernel_records_total",
        "counter",
        "Records the eBPF programs handed to the daemon, by kind.",
        kinds
            .iter()
            .zip(s.kernel_emitted)
            .map(|(k, n)| format!("inspeq_kernel_records_total{{kind=\"{k}\"}} {n}"))
            .collect(),
    );
    add(
        &mut out,
        "inspeq_kernel_dropped_total",
        "counter",
        "Records lost because the ring buffer was full, by kind.",
        kinds
            .iter()
            .zip(s.kernel_dropped)
            .map(|(k, n)| format!("inspeq_kernel_dropped_total{{kind=\"{k}\"}} {n}"))
            .collect(),
    );
    add(
        &mut out,
        "inspeq_kernel_ebpf",
        "gauge",
        "1 when the eBPF path runs, 0 in the /proc fallback.",
        vec![format!("inspeq_kernel_ebpf {}", u8::from(s.kernel_ebpf))],
    );
    out
}

/// Binds `address` (`127.0.0.1:9101`).
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves the latest page from `pages` to every `GET /metrics`; 404 elsewhere.
pub async fn serve(listener: TcpListener, pages: watch::Receiver<String>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let page = pages.borrow().clone();
        tokio::spawn(async move {
            let mut request = [0u8; 2048];
            // The request line is all that matters; a scraper sends it in the first segment.
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&request[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let response = if head.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        let page = render(&Snapshot {
            metrics: vec![("host".into(), "load:1".into(), 0.5), ("web".into(), "memory:rss".into(), 1048576.0)],
            rules: vec![("web".into(), "memory:rss > 64m".into(), true)],
            services: vec![("web".into(), true, 2)],
            alerts_raised: 3,
            outbox_unreadable: 2,
            log_dropped_lines: 40,
            kernel_emitted: [5, 6, 7],
            kernel_ebpf: true,
            ..Snapshot::default()
        });
        for line in [
            "# TYPE inspeq_metric gauge",
            "inspeq_metric{target=\"host\",metric=\"load:1\"} 0.5",
            "inspeq_metric{target=\"web\",metric=\"memory:rss\"} 1048576",
            "inspeq_rule_triggered{target=\"web\",rule=\"memory:rss > 64m\"} 1",
            "inspeq_service_up{service=\"web\"} 1",
            "inspeq_service_restarts_total{service=\"web\"} 2",
            "inspeq_alerts_total{outcome=\"raised\"} 3",
            "inspeq_alerts_unpersisted_total 0",
            "inspeq_outbox_unreadable_total 2",
            "inspeq_log_dropped_lines_total 40",
            "inspeq_kernel_records_total{kind=\"rss\"} 7",
            "inspeq_kernel_ebpf 1",
        ] {
            assert!(page.lines().any(|l| l == line), "missing `{line}` in:\n{page}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[tokio::test]
    async fn serves_the_latest_page_over_http() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel("first\n".to_owned());
        tokio::spawn(serve(listener, rx));
        tx.send_replace("inspeq_kernel_ebpf 1\n".to_owned());
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.ends_with("\r\n\r\ninspeq_kernel_ebpf 1\n"), "{text}");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }
}
