//! Real servers for the daemon-metric tests (`tests/tests/daemons.rs`): Debian's `redis-server`, `memcached`,
//! `nginx` (nginx-light), `mariadbd` (mariadb-server) and `postgres` (postgresql), each started by the test on a
//! free loopback port with a directory of its own (its configuration or data, pid file, socket, logs), as root
//! where it allows that (PostgreSQL does not: it runs as Debian's `postgres` user), and stopped when dropped. Plus
//! the load the tests send: a few protocol lines written by hand like the collectors themselves, and the
//! databases' own command-line clients.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::init_harness::{Scratch, wait_for};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const MEMCACHED: &str = "/usr/bin/memcached";
pub const NGINX: &str = "/usr/sbin/nginx";
/// Certificates for the TLS probes' tests.
pub const OPENSSL: &str = "/usr/bin/openssl";
/// A Go program that serves `expvar`'s `/debug/vars` (on its client port), for `memstats:*`.
pub const ETCD: &str = "/usr/bin/etcd";
pub const MARIADBD: &str = "/usr/sbin/mariadbd";
pub const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
pub const MARIADB: &str = "/usr/bin/mariadb";
/// Debian's PostgreSQL (bookworm's 15; trixie's 17 is found the same way by [`postgres_bin`]).
pub const POSTGRES_LIB: &str = "/usr/lib/postgresql";
pub const PSQL: &str = "/usr/bin/psql";

/// How long a server may take to accept connections (a hang guard, not a timing assertion).
const START_LIMIT: Duration = Duration::from_secs(20);

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process the test started, stopped and reaped when dropped (or by [`Server::stop`]).
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// Its directory: configuration, pid file, socket.
    pub dir: PathBuf,
    /// The pid file the test writes for inspeq's `check process ... with pidfile`.
    pub pidfile: PathBuf,
}

impl Server {
    fn spawn(mut command: Command, port: u16, dir: &Path, what: &str) -> Self {
        // Its own log, beside its files: etcd logs a page at start.
        let log = std::fs::File::create(dir.join(format!("{what}.log"))).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let pidfile = dir.join(format!("{what}.test.pid"));
        std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        wait_for(&format!("{what} to listen on 127.0.0.1:{port}"), START_LIMIT, || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Self { child: Some(child), port, dir: dir.to_owned(), pidfile }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Sends `signal` to the server (SIGSTOP to make it hang, SIGCONT to let it go on).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the child this guard started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, signal) }, 0, "kill -{signal} {}", self.pid());
    }

    /// Stops the server (SIGTERM, which nginx's master passes to its workers; SIGKILL after 10 s, a hang guard)
    /// and reaps it. A SIGKILLed nginx master would leave its worker serving the port.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signalling the child this guard started and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-server` on `port` (and a Unix socket in `dir`), requiring `password`, saving nothing.
pub fn redis(scratch: &Scratch, port: u16, password: &str) -> Server {
    let dir = scratch.dir.join("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("redis.conf");
    let socket = dir.join("redis.sock");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\ndir {}\nsave \"\"\nappendonly no\n\
             unixsocket {}\nunixsocketperm 700\nrequirepass \"{password}\"\nlogfile \"\"\ndaemonize no\n",
            dir.display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut command = Command::new(REDIS_SERVER);
    command.arg(&conf);
    Server::spawn(command, port, &dir, "redis")
}

/// `memcached` on loopback `port`, 64 MiB, no UDP; `-u root` because it refuses to run as root without it.
pub fn memcached(scratch: &Scratch, port: u16) -> Server {
    let dir = scratch.dir.join("memcached");
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(MEMCACHED);
    command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0", "-m", "64", "-c", "64"]);
    if unsafe { libc::geteuid() } == 0 {
        command.args(["-u", "root"]);
    }
    Server::spawn(command, port, &dir, "memcached")
}

/// `nginx` in the foreground on loopback `port`, with its `stub_status` page at `/nginx_status` and every other
/// path answering `ok`; its temporary files and logs in `dir`.
pub fn nginx(scratch: &Scratch, port: u16) -> Server {
    nginx_with(scratch, port, "")
}

/// [`nginx`] with more `http` configuration (another `server` block).
pub fn nginx_with(scratch: &Scratch, port: u16, more: &str) -> Server {
    let (dir, conf) = nginx_conf(scratch, port, more);
    let mut command = Command::new(NGINX);
    // `-e`: its first error log, before the configuration names one, goes here too, not to /var/log/nginx.
    command.arg("-c").arg(&conf).arg("-p").arg(&dir).arg("-e").arg(dir.join("error.log"));
    Server::spawn(command, port, &dir, "nginx")
}

/// nginx's directory and configuration (foreground, one worker, `ok` at every path but `/missing` and the
/// `stub_status` page), for [`nginx_with`] or a unit: `(dir, nginx.conf)`.
pub fn nginx_conf(scratch: &Scratch, port: u16, more: &str) -> (PathBuf, PathBuf) {
    let dir = scratch.dir.join("nginx");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
               fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
               keepalive_requests 1000000;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location = /nginx_status {{ stub_status; }}\n\
                 location = /missing {{ return 404 \"gone\\n\"; }}\n\
                 location / {{ return 200 \"ok\\n\"; }}\n  }}\n{more}}}\n"
        ),
    )
    .unwrap();
    (dir, conf)
}

/// A server certificate for `localhost` and 127.0.0.1 that ends in `days` days, signed by a CA made for it, by
/// `openssl` in `dir`: the CA's certificate (what a probe's `ca_file` names), the server's certificate and key,
/// and a second certificate for the same key, signed by the same CA, that ended in February 2024.
pub struct Certificate {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub expired: PathBuf,
}

pub fn certificate(dir: &Path, days: u32) -> Certificate {
    std::fs::create_dir_all(dir.join("issued")).unwrap();
    let file = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new(OPENSSL).args(args).current_dir(dir).output().expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // `openssl ca` takes any validity, in the past too; the CA's spans every certificate it signs here, as a real
    // CA's spans its certificates'.
    std::fs::write(file("index.txt"), "").unwrap();
    std::fs::write(file("serial"), "1000\n").unwrap();
    std::fs::write(
        file("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = issued\nserial = serial\n\
         certificate = ca.pem\nprivate_key = ca.key\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n\
         [authority]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[&["req", "-new"][..], &ec, &["-subj", "/CN=inspeq test CA", "-keyout", "ca.key", "-out", "ca.csr"]].concat(),
    );
    let sign = ["ca", "-config", "ca.cnf", "-batch", "-notext"];
    openssl(
        &[
            &sign[..],
            &["-selfsign", "-startdate", "20230101000000Z", "-enddate", "20360101000000Z"],
            &["-extensions", "authority", "-in", "ca.csr", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[&["req", "-new"][..], &ec, &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"]].concat(),
    );
    let days = days.to_string();
    openssl(&[&sign[..], &["-days", &days, "-extensions", "server", "-in", "server.csr", "-out", "cert.pem"]].concat());
    openssl(
        &[
            &sign[..],
            &["-startdate", "20240101000000Z", "-enddate", "20240201000000Z"],
            &["-extensions", "server", "-in", "server.csr", "-out", "expired.pem"],
        ]
        .concat(),
    );
    Certificate { ca: file("ca.pem"), cert: file("cert.pem"), key: file("key.pem"), expired: file("expired.pem") }
}

/// `etcd` alone (a one-member cluster) with its client URL on loopback `port` and its peer URL on another free
/// port, its data in `dir`.
pub fn etcd(scratch: &Scratch, port: u16) -> Server {
    let dir = scratch.dir.join("etcd");
    std::fs::create_dir_all(&dir).unwrap();
    let client = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut command = Command::new(ETCD);
    command
        .arg("--name")
        .arg("inspeq-test")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .arg("--initial-cluster")
        .arg(format!("inspeq-test={peer}"));
    Server::spawn(command, port, &dir, "etcd")
}

/// MariaDB's `mariadbd` on loopback `port` and on `dir/mysqld.sock`, its data made afresh by
/// `mariadb-install-db` in `dir/data` (root may log in over the socket by `unix_socket` authentication, as on a
/// Debian install), with `user`@127.0.0.1 identified by `password`, and no replication.
pub fn mariadb(scratch: &Scratch, port: u16, user: &str, password: &str) -> Server {
    let dir = scratch.dir.join("mariadb");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let install = Command::new(MARIADB_INSTALL_DB)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"])
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {MARIADB_INSTALL_DB}: {e}"));
    assert!(install.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&install.stderr));
    let init = dir.join("init.sql");
    let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
    std::fs::write(&init, format!("CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{quoted}';\n")).unwrap();
    let mut command = Command::new(MARIADBD);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--user=root")
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg(format!("--init-file={}", init.display()))
        .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M", "--skip-name-resolve"]);
    Server::spawn(command, port, &dir, "mariadb")
}

/// `sql` through the `mariadb` client as root over the server's socket (its load: each statement a query).
pub fn mariadb_sql(server: &Server, sql: &str) {
    let output = Command::new(MARIADB)
        .arg("--no-defaults")
        .arg(format!("--socket={}", server.dir.join("mysqld.sock").display()))
        .args(["--user=root", "--batch", "--execute", sql])
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {MARIADB}: {e}"));
    assert!(output.status.success(), "mariadb: {}", String::from_utf8_lossy(&output.stderr));
}

/// The directory of the newest Debian PostgreSQL's programs (`/usr/lib/postgresql/15/bin`).
pub fn postgres_bin() -> Option<PathBuf> {
    let versions = std::fs::read_dir(POSTGRES_LIB).ok()?;
    let mut found: Vec<(u32, PathBuf)> = versions
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The uid and gid of Debian's `postgres` user: PostgreSQL refuses to run as root.
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the entry is read at once, before any other call could reuse it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "the postgresql package creates the user `postgres`");
    // SAFETY: checked non-null above.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// PostgreSQL's `postgres` on loopback `port` and with its socket in `dir` (`dir/.s.PGSQL.PORT`), a cluster made
/// afresh by `initdb` in `dir/data`, run as the `postgres` user: local (socket) logins are trusted, TCP ones need
/// the superuser `postgres`'s `password` (SCRAM-SHA-256).
pub fn postgres(scratch: &Scratch, port: u16, password: &str) -> Server {
    let bin = postgres_bin().expect("a Debian PostgreSQL in /usr/lib/postgresql");
    let (uid, gid) = postgres_user();
    let dir = scratch.dir.join("postgres");
    std::fs::create_dir_all(&dir).unwrap();
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, format!("{password}\n")).unwrap();
    for path in [&dir, &pwfile] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let initdb = Command::new(bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-N"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .uid(uid)
        .gid(gid)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running initdb: {e}"));
    assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&dir)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .args(["-c", "shared_buffers=16MB", "-c", "max_connections=20"])
        .uid(uid)
        .gid(gid)
        .current_dir(&dir);
    Server::spawn(command, port, &dir, "postgres")
}

/// `sql` through `psql` as `postgres` over the server's socket (its load), from a file, so that each statement is
/// a transaction of its own (`-c` would send them as one).
pub fn psql(server: &Server, sql: &str) {
    let file = server.dir.join("load.sql");
    std::fs::write(&file, sql).unwrap();
    let output = Command::new(PSQL)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-h"])
        .arg(&server.dir)
        .args(["-p", &server.port.to_string(), "-f"])
        .arg(&file)
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {PSQL}: {e}"));
    assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
}

/// A RESP connection to a Redis, for load.
pub struct RedisClient {
    stream: BufReader<TcpStream>,
}

impl RedisClient {
    /// Connects to `port` and authenticates with `password`.
    pub fn connect(port: u16, password: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut client = Self { stream: BufReader::new(stream) };
        let reply = client.call(&[b"AUTH", password.as_bytes()]);
        assert_eq!(reply, "+OK", "AUTH");
        client
    }

    fn encode(words: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
            out.extend_from_slice(w);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Sends one command, returns the first line of its reply (a bulk reply's content is skipped).
    pub fn call(&mut self, words: &[&[u8]]) -> String {
        self.stream.get_mut().write_all(&Self::encode(words)).unwrap();
        self.read_reply()
    }

    fn read_reply(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let line = line.trim_end().to_owned();
        if let Some(len) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            let mut skip = vec![0; len + 2];
            self.stream.read_exact(&mut skip).unwrap();
        }
        line
    }

    /// Sends `count` copies of `words` at once, then reads their replies.
    pub fn pipeline(&mut self, words: &[&[u8]], count: usize) {
        let one = Self::encode(words);
        let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * count).collect();
        self.stream.get_mut().write_all(&all).unwrap();
        for _ in 0..count {
            self.read_reply();
        }
    }
}

/// `count` `set` commands with `noreply` to a memcached on `port`, keys `prefix0..`, then a `version` to wait for
/// them to be done.
pub fn memcached_sets(port: u16, prefix: &str, count: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut batch = Vec::new();
    for i in 0..count {
        batch.extend_from_slice(format!("set {prefix}{i} 0 0 5 noreply\r\nhello\r\n").as_bytes());
    }
    batch.extend_from_slice(b"version\r\n");
    stream.write_all(&batch).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    assert!(line.starts_with("VERSION"), "memcached answered {line:?}");
}

/// `count` keep-alive `GET /` requests to an nginx on `port`, pipelined on one connection.
pub fn http_gets(port: u16, count: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let all: Vec<u8> = request.iter().copied().cycle().take(request.len() * count).collect();
    stream.write_all(&all).unwrap();
    // Each answer ends with the body `ok\n`; count them.
    let mut reader = BufReader::new(stream);
    let mut seen = 0;
    let mut line = String::new();
    while seen < count {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line == "ok\n" {
            seen += 1;
        }
    }
    assert_eq!(seen, count, "nginx answered {seen} of {count} requests");
}

/// `GET path` on loopback `port`: the whole answer, for a test's own look at a page; `None` when the connection
/// failed (the caller's wait loop tries again).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}
