//! Prometheus `/metrics` against a real Prometheus (Debian's `prometheus`): a
//! running `inspeqd` with `set metrics_listen` is scraped, and its series are
//! found through Prometheus's own query API.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tests::{inspeqd, privileged};

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` on loopback `port`; the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// A child killed (and reaped) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A scratch directory named after the test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("inspeq-metrics-{name}-")).tempdir().unwrap()
}

fn prometheus(dir: &Path, target_port: u16) -> (Running, u16) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: inspeq\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("starting prometheus");
    (Running(child), port)
}

#[test]
fn a_real_prometheus_scrapes_the_daemons_series() {
    if !privileged("a_real_prometheus_scrapes_the_daemons_series") {
        return;
    }
    if !Path::new("/usr/bin/prometheus").exists() {
        tests::cannot_run(
            "a_real_prometheus_scrapes_the_daemons_series",
            "/usr/bin/prometheus is not installed (cargo xtask setup installs it)",
        );
        return;
    }
    let scratch = scratch("prometheus");
    let dir = scratch.path();
    let config = dir.join("conf");
    std::fs::create_dir_all(&config).unwrap();
    let metrics_port = free_port();
    std::fs::write(
        config.join("inspeq.conf"),
        format!("set cycle_time 1\nset metrics_listen 127.0.0.1:{metrics_port}\n"),
    )
    .unwrap();
    std::fs::write(config.join("host.inq"), "check host\n  if load:1 > 1000 then alert\n").unwrap();
    let _daemon = Running(
        Command::new(inspeqd())
            .arg("--config-dir")
            .arg(&config)
            .arg("--socket")
            .arg(dir.join("sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("inspeqd.log")).unwrap())
            .spawn()
            .expect("starting inspeqd"),
    );
    // The page itself, straight from inspeqd, once a cycle has run.
    let page = wait_for("inspeqd's /metrics", Duration::from_secs(20), || {
        get(metrics_port, "/metrics").filter(|p| p.contains("inspeq_metric{target=\"host\",metric=\"load:1\"}"))
    });
    assert!(page.contains("# TYPE inspeq_kernel_records_total counter"), "{page}");
    assert!(page.contains("inspeq_rule_triggered{target=\"host\",rule=\"load:1 > 1000\"} 0"), "{page}");

    // And through a real Prometheus.
    let (_prometheus, prometheus_port) = prometheus(dir, metrics_port);
    for query in [
        "inspeq_metric%7Btarget%3D%22host%22%2Cmetric%3D%22load%3A1%22%7D",
        "inspeq_kernel_ebpf",
        "up%7Bjob%3D%22inspeq%22%7D",
    ] {
        let answer = wait_for(&format!("Prometheus to have {query}"), Duration::from_secs(60), || {
            let body = get(prometheus_port, &format!("/api/v1/query?query={query}"))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let result = v["data"]["result"].as_array()?;
            (!result.is_empty()).then(|| result[0].clone())
        });
        if query.starts_with("up") {
            assert_eq!(answer["value"][1], "1", "Prometheus could not scrape inspeqd: {answer}");
        }
        if query == "inspeq_kernel_ebpf" {
            assert_eq!(answer["value"][1], "1", "{answer}");
        }
    }
}
