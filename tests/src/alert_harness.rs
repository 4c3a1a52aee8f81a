//! Real servers on loopback for the alert tests: an SMTP server (aiosmtpd, with
//! STARTTLS, implicit TLS and AUTH), a test CA made with the `openssl` CLI, a
//! recording HTTP receiver, and Prometheus Alertmanager; and the routes of
//! `inspeq.conf` text, built as the daemon builds them.
//!
//! Servers whose binary is missing make the test fail under `CI` (xtask setup
//! installs them) and skip with a printed reason elsewhere.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

/// The alert routes of an `inspeq.conf` whose text is `conf`, on a machine called
/// `hostname`: through the real checker (which must find nothing to say: an
/// ignored parameter would make a test say less than it reads) and
/// `Routes::build`, as the daemon does.
pub fn routes_from_conf(conf: &str, hostname: &str) -> inspeq_daemon::alert::Routes {
    let (config, diagnostics) = inspeq_daemon::config::load([("inspeq.conf", conf)]);
    assert!(diagnostics.is_empty(), "checking\n{conf}\n{}", inspeq_daemon::config::render(&diagnostics));
    inspeq_daemon::alert::Routes::build(&config.routes, &inspeq_daemon::alert::http_client(), hostname)
        .unwrap_or_else(|e| panic!("building the routes of\n{conf}\n{e}"))
}

/// Debian's Python, which python3-aiosmtpd installs into (a pyenv `python3` on
/// PATH would not see it).
pub const PYTHON: &str = "/usr/bin/python3";
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
pub const OPENSSL: &str = "/usr/bin/openssl";

/// Whether `binary` exists (and, for the SMTP server, aiosmtpd imports).
/// Returns `false` after printing why the test skips; panics under CI.
pub fn have(test: &str, binary: &str) -> bool {
    let mut ok = Path::new(binary).exists();
    if ok && binary == PYTHON {
        ok = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    if ok {
        return true;
    }
    let what = if binary == PYTHON { "python3-aiosmtpd" } else { binary };
    crate::cannot_run(test, &format!("{what} is missing (cargo xtask setup installs it)"))
}

/// A fresh directory under the system temp dir, named after the test, removed when dropped.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(name: &str) -> Self {
        Self(tempfile::Builder::new().prefix(&format!("inspeq-alert-{name}-")).tempdir().unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `port` on 127.0.0.1 accepts connections.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test certificate authority and a server certificate it signed for
/// `localhost` and 127.0.0.1, made with the openssl CLI.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new(OPENSSL).args(args).current_dir(dir).output().expect("running openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=inspeq test CA"],
        ]
        .concat());
        run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat());
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
    }
}

/// How the SMTP server protects the connection.
pub enum SmtpTls<'a> {
    None,
    StartTls(&'a TestCa),
    Implicit(&'a TestCa),
}

/// One message the SMTP server accepted.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The raw message: headers, blank line, body.
    pub data: String,
    pub tls: bool,
    /// The AUTH login, when the client authenticated.
    pub auth: Option<String>,
}

impl Received {
    /// The value of header `name` (unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = &mut value {
                if line.starts_with([' ', '\t']) {
                    // Unfolding removes the line break only (RFC 5322 §2.2.3).
                    v.push_str(line);
                    continue;
                }
                break;
            }
            match line.split_once(':') {
                Some((k, v)) if k.eq_ignore_ascii_case(name) => value = Some(v.trim().to_owned()),
                _ => {}
            }
        }
        value
    }

    /// The body, with quoted-printable soft line breaks joined.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        body.replace("=\r\n", "").replace("=E2=80=A2", "•").replace("=3D", "=")
    }
}

/// aiosmtpd on 127.0.0.1, recording messages to a directory.
pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    _child: Guard,
}

impl SmtpServer {
    /// Starts the server on `port` and waits until it accepts connections.
    pub fn start(port: u16, dir: &Path, tls: SmtpTls<'_>, auth: Option<(&str, &str)>) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smtp_recorder.py");
        let mut command = Command::new(PYTHON);
        command.arg(script).arg("--port").arg(port.to_string()).arg("--dir").arg(dir);
        let ca = match tls {
            SmtpTls::None => None,
            SmtpTls::StartTls(ca) => {
                command.args(["--tls", "starttls"]);
                Some(ca)
            }
            SmtpTls::Implicit(ca) => {
                command.args(["--tls", "implicit"]);
                Some(ca)
            }
        };
        if let Some(ca) = ca {
            command.arg("--cert").arg(&ca.cert).arg("--key").arg(&ca.key);
        }
        if let Some((user, password)) = auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        // Its tracebacks for refused handshakes are expected in some tests.
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().expect("starting the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        Self { port, dir: dir.to_owned(), _child: Guard(child) }
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        read_messages(&self.dir)
    }

    /// Waits until at least `n` messages arrived, then returns all of them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The messages recorded in `dir`, in order.
pub fn read_messages(dir: &Path) -> Vec<Received> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect())
        .unwrap_or_default();
    names.sort();
    names.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
}

/// One request the HTTP receiver took.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received: Instant,
    /// The status the receiver answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Replies queued for the HTTP receiver: status and extra headers.
type Replies = Mutex<VecDeque<(u16, Vec<(String, String)>)>>;

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers with
/// the next queued reply (the default status, `200` unless set, once they run out).
pub struct HttpReceiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    replies: Arc<Replies>,
    default: Arc<AtomicU16>,
}

impl HttpReceiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies: Arc<Replies> = Arc::default();
        let default = Arc::new(AtomicU16::new(200));
        let (req, rep, def) = (requests.clone(), replies.clone(), default.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (req, rep, def) = (req.clone(), rep.clone(), def.clone());
                std::thread::spawn(move || serve(stream, &req, &rep, &def));
            }
        });
        Self { port, requests, replies, default }
    }

    /// Answers every request without a queued reply with `status` from now on
    /// (`503`: a receiver that is down).
    pub fn answer(&self, status: u16) {
        self.default.store(status, Ordering::SeqCst);
    }

    /// The requests answered with a 2xx: the deliveries.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers the next request with `status` and `headers`.
    pub fn reply_next(&self, status: u16, headers: &[(&str, &str)]) {
        let headers = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.replies.lock().unwrap().push_back((status, headers));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, then returns all of them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n || Instant::now() > deadline {
                return requests;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, replies: &Replies, default: &AtomicU16) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    // Keep-alive: one connection may carry several requests.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let length: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, extra) =
            replies.lock().unwrap().pop_front().unwrap_or_else(|| (default.load(Ordering::SeqCst), Vec::new()));
        requests.lock().unwrap().push(Request { method, path, headers, body, received: Instant::now(), status });
        let mut response = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n");
        for (k, v) in extra {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\nok");
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Prometheus Alertmanager on a loopback port, with a throw-away config and
/// storage, clustering off.
pub struct Alertmanager {
    pub port: u16,
    _dir: TempDir,
    _child: Guard,
}

impl Alertmanager {
    pub fn start() -> Self {
        let dir = TempDir::new("alertmanager");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n").unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus-alertmanager");
        let child = Guard(child);
        wait_for_port(port, Duration::from_secs(20));
        Self { port, _dir: dir, _child: child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
