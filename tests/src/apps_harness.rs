//! The real apps as units of a real systemd user manager: Puma 5 in cluster mode
//! serving a small Rack app, Redis 7, and Sidekiq 6 working off that Redis, each
//! run from its Debian package (`cargo xtask setup` installs them), the way a
//! Rails shop runs them under systemd. [`Apps`] writes the app, the configs and the
//! units into a scratch directory, with free loopback ports, and the whole manager
//! goes when it is dropped.
//!
//! The Rack app (`config.ru`) answers `/` with `ok PID`, `/health` with `healthy` (or a 500 while a file `sick`
//! is beside it), and `/bloat?mb=N` by
//! allocating and touching N MiB in the worker that serves the request, which
//! keeps it: the one way to make one Puma worker grow on demand. Sidekiq loads
//! `worker.rb`, whose `Bloat` job does the same inside Sidekiq.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use crate::{
    cgroup2_root,
    init_harness::{Scratch, UserManager, wait_for},
};

/// What the apps need installed: the systemd user manager and its bus (as in the
/// daemon tests), the apps, `redis-cli`, and Rack (which `config.ru` requires).
pub const PROGRAMS: &[&str] = &[
    "/lib/systemd/systemd",
    "/usr/bin/dbus-daemon",
    "/usr/lib/systemd/user/dbus.socket",
    "/usr/bin/puma",
    "/usr/bin/sidekiq",
    "/usr/bin/redis-server",
    "/usr/bin/redis-cli",
    RACK,
];

/// Debian's ruby-rack: `config.ru` requires the library; this is the one file of
/// the package whose path does not name its version.
pub const RACK: &str = "/usr/bin/rackup";

/// Hang guard for an app to start or to be replaced: Ruby boots in well under a
/// second here, but two cores are shared with other builds.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// Puma's workers (`workers 2` in `puma.rb`).
pub const PUMA_WORKERS: usize = 2;

/// The Rack app. `"x" * n` writes every byte, so the pages are touched (resident),
/// and the string is kept in `$hoard` for the life of the worker.
const CONFIG_RU: &str = r#"require "rack"

$hoard = []

run lambda { |env|
  request = Rack::Request.new(env)
  case request.path_info
  when "/"
    [200, { "content-type" => "text/plain" }, ["ok #{Process.pid}\n"]]
  when "/health"
    # `sick` in its directory (the working directory) makes it answer 500, as an app whose database went away does.
    if File.exist?("sick")
      [500, { "content-type" => "text/plain" }, ["sick\n"]]
    else
      [200, { "content-type" => "text/plain" }, ["healthy\n"]]
    end
  when "/bloat"
    mb = Integer(request.params.fetch("mb"))
    $hoard << ("x" * (mb * 1024 * 1024))
    [200, { "content-type" => "text/plain" }, ["bloated #{Process.pid} #{mb}\n"]]
  else
    [404, { "content-type" => "text/plain" }, ["not found\n"]]
  end
}
"#;

/// Sidekiq's job file: a `Bloat` job grows the Sidekiq process by `mb` MiB and
/// keeps it, as a leaking job would.
const WORKER_RB: &str = r#"require "sidekiq"

$hoard = []

class Bloat
  include Sidekiq::Worker
  sidekiq_options retry: false

  def perform(mb)
    $hoard << ("x" * (mb * 1024 * 1024))
  end
end
"#;

/// Puma, Redis and Sidekiq as units of one user manager. Nothing is started until
/// a test asks.
pub struct Apps {
    // First: dropping the manager stops the units while their files still exist.
    pub manager: UserManager,
    pub puma_port: u16,
    pub redis_port: u16,
    /// The apps' files and logs (`puma.log`, `redis.log`, `sidekiq.log`).
    pub dir: PathBuf,
    _scratch: Scratch,
}

impl Apps {
    /// A user manager with `puma.service`, `redis.service` and `sidekiq.service`
    /// loaded (none started); `name` keeps directories and cgroups apart.
    pub fn new(name: &str) -> Self {
        let manager = UserManager::start(&format!("apps-{name}"));
        let scratch = Scratch::new(&format!("apps-{name}"));
        let dir = scratch.dir.clone();
        let [puma_port, redis_port] = free_ports();
        let d = dir.display();

        std::fs::write(dir.join("config.ru"), CONFIG_RU).unwrap();
        std::fs::write(dir.join("worker.rb"), WORKER_RB).unwrap();
        std::fs::write(
            dir.join("puma.rb"),
            format!(
                "# Cluster mode, as production runs Puma: a master and its forked workers.\n\
                 workers {PUMA_WORKERS}\n\
                 # No preload_app!: each worker loads the app itself, which is what lets\n\
                 # USR1 (the unit's reload) replace the workers one by one (a phased restart).\n\
                 directory \"{d}\"\n\
                 rackup \"{d}/config.ru\"\n\
                 environment \"production\"\n\
                 bind \"tcp://127.0.0.1:{puma_port}\"\n"
            ),
        )
        .unwrap();

        // No `Restart=` anywhere: bringing a service back is inspeq's job in these
        // tests, so systemd must not do it behind inspeq's back. The manager has no
        // journal, so each app logs to a file the tests show when they fail.
        // TimeoutStopSec bounds a stop that hangs (systemd's default is 90 s).
        manager.add_unit(
            "puma.service",
            &format!(
                "[Unit]\nDescription=Puma (inspeq apps test)\n\n[Service]\nWorkingDirectory={d}\n\
                 ExecStart=/usr/bin/puma -C {d}/puma.rb\n\
                 # Puma's phased restart: the master stays, the workers are replaced.\n\
                 ExecReload=/bin/kill -USR1 $MAINPID\n\
                 StandardOutput=append:{d}/puma.log\nStandardError=append:{d}/puma.log\nTimeoutStopSec=30\n"
            ),
        );
        manager.add_unit(
            "redis.service",
            &format!(
                "[Unit]\nDescription=Redis (inspeq apps test)\n\n[Service]\nWorkingDirectory={d}\n\
                 # No persistence (nothing outlives the test); DEBUG (POPULATE) from loopback only.\n\
                 ExecStart=/usr/bin/redis-server --port {redis_port} --bind 127.0.0.1 --daemonize no \
                 --save \"\" --appendonly no --dir {d} --enable-debug-command local\n\
                 StandardOutput=append:{d}/redis.log\nStandardError=append:{d}/redis.log\nTimeoutStopSec=30\n"
            ),
        );
        manager.add_unit(
            "sidekiq.service",
            &format!(
                "[Unit]\nDescription=Sidekiq (inspeq apps test)\n\n[Service]\nWorkingDirectory={d}\n\
                 Environment=REDIS_URL=redis://127.0.0.1:{redis_port}/0\n\
                 # -t 5: a TERM waits at most 5 s for running jobs (Sidekiq's default is 25).\n\
                 ExecStart=/usr/bin/sidekiq -r ./worker.rb -c 2 -t 5\n\
                 StandardOutput=append:{d}/sidekiq.log\nStandardError=append:{d}/sidekiq.log\nTimeoutStopSec=30\n"
            ),
        );
        Self { manager, puma_port, redis_port, dir, _scratch: scratch }
    }

    /// Starts Puma and waits until it is ready (see [`Self::wait_puma_ready`]);
    /// returns the master's pid.
    pub fn start_puma(&self) -> u32 {
        self.manager.systemctl_ok(&["start", "puma.service"]);
        self.wait_puma_ready()
    }

    /// Waits until the unit has a master with [`PUMA_WORKERS`] workers and a worker
    /// answers `/`, the master the same before and after those checks; returns it.
    /// Whichever master that is: after a restart inspeq may have restarted it once
    /// more, and the test asserts on that, not this wait.
    pub fn wait_puma_ready(&self) -> u32 {
        wait_for(&format!("puma to run a master with {PUMA_WORKERS} workers and answer"), START_LIMIT, || {
            let master = self.main_pid("puma.service");
            let workers = self.puma_workers_of(master);
            let answers = self.http_get("/").is_some_and(|(code, body)| code == 200 && body.starts_with("ok "));
            (master != 0 && workers.len() == PUMA_WORKERS && answers && self.main_pid("puma.service") == master)
                .then_some(master)
        })
    }

    /// Waits until Puma runs [`PUMA_WORKERS`] workers, none of them in `old`, and
    /// answers `/`; returns them.
    pub fn wait_puma_workers_replaced(&self, old: &[u32]) -> Vec<u32> {
        wait_for(&format!("puma to replace its workers {old:?}"), START_LIMIT, || {
            let workers = self.puma_workers();
            let fresh = workers.len() == PUMA_WORKERS && workers.iter().all(|w| !old.contains(w));
            (fresh && self.http_get("/").is_some_and(|(code, _)| code == 200)).then_some(workers)
        })
    }

    /// Puma's workers: the processes of the unit's cgroup whose parent is the main
    /// pid (the master). Other members, such as ExecReload's `kill`, are children
    /// of the manager.
    pub fn puma_workers(&self) -> Vec<u32> {
        self.puma_workers_of(self.main_pid("puma.service"))
    }

    fn puma_workers_of(&self, master: u32) -> Vec<u32> {
        if master == 0 {
            return Vec::new();
        }
        let mut workers: Vec<u32> =
            self.unit_procs("puma.service").into_iter().filter(|&pid| parent_pid(pid) == Some(master)).collect();
        workers.sort_unstable();
        workers
    }

    /// `GET /bloat?mb=MB`: the worker that serves it grows by `mb` MiB (allocated,
    /// touched and kept) before it answers; returns that worker's pid.
    pub fn bloat_puma_worker(&self, mb: u32) -> u32 {
        let (code, body) = self.http_get(&format!("/bloat?mb={mb}")).expect("puma answers /bloat");
        assert_eq!(code, 200, "/bloat?mb={mb}: {body}");
        let mut words = body.split_whitespace();
        assert_eq!(words.next(), Some("bloated"), "/bloat?mb={mb}: {body}");
        words.next().and_then(|pid| pid.parse().ok()).unwrap_or_else(|| panic!("/bloat?mb={mb}: no pid in {body:?}"))
    }

    /// A plain HTTP/1.0 GET of `path` from Puma: `(status code, body)`, or `None`
    /// when nothing answers (yet).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.puma_port)).ok()?;
        // A hang guard: the bloat endpoint answers after its allocation.
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }

    /// Starts Redis and waits until it answers PING; returns its pid.
    pub fn start_redis(&self) -> u32 {
        self.manager.systemctl_ok(&["start", "redis.service"]);
        wait_for("redis to answer PING", START_LIMIT, || {
            let out = self.redis_cli_output(&["PING"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "PONG").then_some(())
        });
        self.main_pid("redis.service")
    }

    /// `redis-cli -p PORT ARGS` against the test's Redis, which must succeed;
    /// returns its output (`--raw`: one value a line).
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = self.redis_cli_output(args);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // redis-cli exits 0 on an error reply too; it prints `ERR ...` then.
        assert!(
            out.status.success() && !stdout.starts_with("ERR"),
            "redis-cli {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn redis_cli_output(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.redis_port.to_string(), "--raw"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running redis-cli {args:?}: {e}"))
    }

    /// Starts Sidekiq (Redis must be up) and waits for its heartbeat; returns its pid.
    pub fn start_sidekiq(&self) -> u32 {
        self.manager.systemctl_ok(&["start", "sidekiq.service"]);
        let pid = self.main_pid("sidekiq.service");
        self.wait_sidekiq_beating(pid);
        pid
    }

    /// Waits until a Sidekiq with `pid` has registered its heartbeat in Redis (it
    /// does so when it has connected and started fetching jobs).
    pub fn wait_sidekiq_beating(&self, pid: u32) {
        wait_for(&format!("sidekiq {pid} to beat in redis"), START_LIMIT, || {
            self.sidekiq_pids().contains(&pid).then_some(())
        });
    }

    /// The pids of the Sidekiq processes with a heartbeat in Redis: the members of
    /// its `processes` set are identities `HOSTNAME:PID:NONCE`.
    pub fn sidekiq_pids(&self) -> Vec<u32> {
        let members = self.redis_cli(&["SMEMBERS", "processes"]);
        members.lines().filter_map(|identity| identity.rsplit(':').nth(1)?.parse().ok()).collect()
    }

    /// Pushes one `Bloat` job for `mb` MiB onto Sidekiq's `default` queue, in the
    /// JSON a Ruby client's `Bloat.perform_async(mb)` would push.
    pub fn enqueue_sidekiq_bloat(&self, mb: u32) {
        let job = format!(
            r#"{{"class":"Bloat","args":[{mb}],"retry":false,"queue":"default","jid":"0123456789abcdef01234567","created_at":1700000000.0,"enqueued_at":1700000000.0}}"#
        );
        self.redis_cli(&["SADD", "queues", "default"]);
        self.redis_cli(&["LPUSH", "queue:default", &job]);
    }

    /// The unit's main pid (0 when it has none).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.manager.systemctl_ok(&["show", "-P", "MainPID", unit]).parse().unwrap()
    }

    /// The unit's `ActiveState` (`active`, `inactive`, `failed`, ...).
    pub fn active_state(&self, unit: &str) -> String {
        self.manager.systemctl_ok(&["show", "-P", "ActiveState", unit])
    }

    /// The processes in the unit's cgroup (its cgroup2 directory on the host).
    pub fn unit_procs(&self, unit: &str) -> Vec<u32> {
        let cgroup = self.manager.systemctl_ok(&["show", "-P", "ControlGroup", unit]);
        if cgroup.is_empty() {
            return Vec::new();
        }
        let procs = cgroup2_root().expect("cgroup2 mount").join(cgroup.trim_start_matches('/')).join("cgroup.procs");
        std::fs::read_to_string(procs).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
    }

    /// What an app wrote to its log (`puma`, `redis` or `sidekiq`), for failure messages.
    pub fn log(&self, app: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{app}.log"))).unwrap_or_default()
    }
}

/// A process's resident set (`VmRSS:`) in bytes, if it still exists.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Two distinct loopback ports nothing listens on: the kernel picks them, and both
/// listeners are held until both are known so the two differ.
fn free_ports() -> [u16; 2] {
    let listeners = [(); 2].map(|()| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a loopback port"));
    listeners.map(|l| l.local_addr().unwrap().port())
}

/// `PPid:` of a process, if it still exists.
fn parent_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse().ok()
}
