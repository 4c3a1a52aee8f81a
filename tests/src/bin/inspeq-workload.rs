//! `inspeq-workload`: deterministic process workloads for the integration tests and
//! benchmarks — allocate and free memory, fork storms, sequences of exits. With
//! `INSPEQ_JOIN_CGROUP=DIR[:DIR...]` it first moves itself into those cgroups:
//! joining after exec, rather than between fork and exec, keeps the spawning
//! process's address space (and RSS) out of the watched cgroup.
//!
//! Usage:
//!   inspeq-workload alloc MIB HOLD_MS AFTER_MS   touch MIB of anonymous memory, hold, free, linger
//!   inspeq-workload storm SECS                   fork + child _exit(0) + waitpid in a loop; prints forks/s
//!   inspeq-workload storm-n N                    the same, N times
//!   inspeq-workload exits N GAP_US               N children exiting with code i % 256, GAP_US apart;
//!                                                prints "pid status" per child
//!   inspeq-workload exit-after MS CODE           sleeps MS milliseconds, then exits with CODE (a service
//!                                                that keeps crashing)
//!   inspeq-workload thread-exit CODE             a thread that ends (its own exit, not exit_group), then
//!                                                the process exits with CODE after 100 ms
//!   inspeq-workload leader-exit CODE             the main thread ends with SYS_exit while another thread
//!                                                runs on for 200 ms, then calls _exit(CODE) (exit_group)
//!   inspeq-workload statuses N                   after a line on stdin, N children ending as child i of
//!                                                the kernel tests' sequence does (exit codes, signals),
//!                                                each reaped at once; prints "pid status" per child
//!   inspeq-workload puma MARKS [PERCENT]         a master and two workers; SIGUSR1 replaces the workers
//!                                                (Puma's phased restart) and marks `WORKERS pid pid`; with
//!                                                PERCENT each worker spends that share of a core in user mode
//!   inspeq-workload demo-service                 a long-running service for `cargo xtask demo`: SIGUSR1
//!                                                makes it bloat by 96 MiB, SIGHUP (reload) frees that
//!   inspeq-workload demo                         the misbehaving service of `cargo xtask demo`: a crash,
//!                                                SIGTERM, SIGKILL, a 64 MiB bloat, and (with
//!                                                INSPEQ_OOM_CGROUP=DIR, a memory-limited cgroup) an OOM kill
//!   inspeq-workload listen IP BACKLOG            a TCP listener on IP (127.0.0.1, ::1) and a free port,
//!                                                with that backlog, never accepting; prints the port, then
//!                                                closes the socket at a `close` line on stdin (prints
//!                                                `closed`) and exits at the end of stdin
//!   inspeq-workload serve MARKS                  a long-running server for the daemon tests: appends
//!                                                `START pid`, then `HUP pid` per SIGHUP (it survives reloads)
//!                                                to MARKS; on SIGUSR1 it grows by 96 MiB of touched memory
//!                                                and appends `GREW pid`

use std::{
    io::Write as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// The signals `statuses` kills every fifth child with, in turn.
const STATUS_SIGNALS: [libc::c_int; 8] = [
    libc::SIGTERM,
    libc::SIGKILL,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGABRT,
    libc::SIGQUIT,
    libc::SIGPIPE,
];

fn join_cgroup() {
    if let Ok(dirs) = std::env::var("INSPEQ_JOIN_CGROUP") {
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            std::fs::write(format!("{dir}/cgroup.procs"), "0").unwrap_or_else(|e| panic!("joining cgroup {dir}: {e}"));
        }
    }
}

fn alloc(mib: usize, hold: Duration, after: Duration) {
    let len = mib << 20;
    // SAFETY: anonymous private mapping, checked for failure, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap of {mib} MiB failed");
    let page = 4096;
    for off in (0..len).step_by(page) {
        // SAFETY: off < len, inside the mapping.
        unsafe { (p as *mut u8).add(off).write_volatile(1) };
    }
    std::thread::sleep(hold);
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, len) };
    std::thread::sleep(after);
}

fn fork_exit() {
    // SAFETY: the child only calls _exit.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => unsafe { libc::_exit(0) },
        p if p > 0 => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(p, &mut status, 0) };
        }
        _ => panic!("fork failed: {}", std::io::Error::last_os_error()),
    }
}

/// Runs `child` in a forked process and waits for it; returns the wait status.
fn in_child(child: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `child` and exits without returning.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child();
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

fn demo() {
    // The pause comes first, so what inspeq printed about the last step shows before the next.
    let step = |text: &str| {
        std::thread::sleep(Duration::from_millis(400));
        eprintln!("demo: {text}");
    };
    step("a worker crashes with exit code 3");
    in_child(|| unsafe { libc::_exit(3) });
    step("a worker is terminated by SIGTERM");
    in_child(|| unsafe {
        libc::raise(libc::SIGTERM);
    });
    step("a hung worker is killed with SIGKILL");
    // SAFETY: the child only pauses; the parent kills and reaps it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            unsafe { libc::pause() };
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    unsafe { libc::kill(pid, libc::SIGKILL) };
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    step("a worker bloats to 64 MiB (the threshold is 32 MiB), then frees it");
    in_child(|| alloc(64, Duration::from_millis(300), Duration::from_millis(300)));
    if let Ok(dir) = std::env::var("INSPEQ_OOM_CGROUP") {
        step("a worker runs into its cgroup's 16 MiB memory limit and is OOM-killed");
        in_child(|| {
            std::fs::write(format!("{dir}/cgroup.procs"), "0").expect("joining the memory-limited cgroup");
            alloc(128, Duration::ZERO, Duration::ZERO);
        });
    }
    step("the service exits cleanly");
    std::thread::sleep(Duration::from_millis(100));
}

static BLOAT: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomics here: a signal handler may do nothing else safely.
    match signal {
        libc::SIGUSR1 => BLOAT.store(true, Ordering::SeqCst),
        _ => RELOAD.store(true, Ordering::SeqCst),
    }
}

/// Runs until killed; bloats on SIGUSR1, frees on SIGHUP.
fn demo_service() {
    use std::sync::atomic::Ordering::SeqCst;
    for signal in [libc::SIGUSR1, libc::SIGHUP] {
        // SAFETY: installs an async-signal-safe handler.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let mut bloat: Vec<u8> = Vec::new();
    loop {
        if BLOAT.swap(false, SeqCst) {
            eprintln!("demo-service: bloating by 96 MiB");
            // Touch every page so it is resident, not just reserved.
            bloat = vec![1u8; 96 << 20];
            for i in (0..bloat.len()).step_by(4096) {
                bloat[i] = (i % 251) as u8;
            }
        }
        if RELOAD.swap(false, SeqCst) {
            eprintln!("demo-service: reload: freeing {} MiB", bloat.len() >> 20);
            bloat = Vec::new();
        }
        std::hint::black_box(&bloat);
        std::thread::sleep(Duration::from_millis(20));
    }
}

static GOT_HUP: AtomicBool = AtomicBool::new(false);
static GOT_USR1: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    GOT_HUP.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr1(_: libc::c_int) {
    GOT_USR1.store(true, Ordering::SeqCst);
}

fn mark(marks: &str, what: &str) {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(marks).unwrap_or_else(|e| panic!("{marks}: {e}"));
    writeln!(file, "{what} {}", std::process::id()).unwrap();
}

/// Runs until killed. The handlers only set flags (async-signal-safe); the loop
/// does the work, so a test sees each signal's effect within a few milliseconds.
fn serve(marks: &str) -> ! {
    // SAFETY: the handlers only store to atomics.
    unsafe {
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t);
    }
    // Page-by-page growth, as on hosts without transparent huge pages (or when
    // none is free): RSS then passes every page-aligned threshold exactly on it,
    // the case a `> 64m` rule must still catch at the crossing.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    mark(marks, "START");
    // The grown memory stays mapped until the process dies.
    let mut grown: Vec<Vec<u8>> = Vec::new();
    loop {
        if GOT_HUP.swap(false, Ordering::SeqCst) {
            mark(marks, "HUP");
        }
        if GOT_USR1.swap(false, Ordering::SeqCst) {
            // Non-zero bytes, so every page is really touched and counted in RSS.
            grown.push(vec![1u8; 96 << 20]);
            std::hint::black_box(&grown);
            mark(marks, "GREW");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A listening socket on `ip` and a port the kernel picks, with `backlog`, by
/// hand: std's `TcpListener` always asks for a backlog of 128. Returns the
/// socket and its port.
fn listener(ip: std::net::IpAddr, backlog: i32) -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let family = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2), checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: both address structs are plain data; zeroed is valid for either.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            size_of::<libc::sockaddr_in>()
        }
        std::net::IpAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = v6.octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    let mut len = len as libc::socklen_t;
    // SAFETY: storage holds a valid address of `len` bytes; listen and getsockname on our socket.
    unsafe {
        assert_eq!(
            libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::listen(fd.as_raw_fd(), backlog), 0, "listen: {}", std::io::Error::last_os_error());
        assert_eq!(libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len), 0);
    }
    // The port sits at the same offset (after the family) in both structs, in network order.
    // SAFETY: storage holds at least a sockaddr_in now.
    let port = u16::from_be(unsafe { (*(&raw const storage).cast::<libc::sockaddr_in>()).sin_port });
    (fd, port)
}

fn listen(ip: &str, backlog: i32) {
    let ip: std::net::IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    let (fd, port) = listener(ip, backlog);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{port}").unwrap();
    out.flush().unwrap();
    let mut fd = Some(fd);
    for line in std::io::stdin().lines() {
        if line.unwrap().trim() == "close" {
            drop(fd.take());
            writeln!(out, "closed").unwrap();
            out.flush().unwrap();
        }
    }
}

/// This process's CPU time so far.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spends `percent` of a core in user mode, in 10 ms periods, until killed. The
/// spin is measured in CPU time, so on a loaded machine the share drops rather
/// than rises; the clock (a system call) is read only every few thousand rounds of
/// arithmetic, so the time is user time.
fn busy(percent: u64) -> ! {
    let period = Duration::from_millis(10);
    let spin = period * percent.min(100) as u32 / 100;
    let mut x = 1u64;
    loop {
        let start = cpu_time();
        while cpu_time() - start < spin {
            for _ in 0..20_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        std::thread::sleep(period - spin);
    }
}

/// A Puma-like server: a master with two workers; SIGUSR1 (its reload) is a
/// phased restart that stops every worker and forks new ones. The master marks
/// `WORKERS pid pid` each time it has a full set. Workers idle, or spend
/// `percent` of a core each.
fn puma(marks: &str, percent: u64) -> ! {
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let spawn = || -> Vec<i32> {
        (0..2)
            .map(|_| {
                // SAFETY: the child only sleeps (or spins) until killed.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    if percent > 0 {
                        busy(percent);
                    }
                    loop {
                        unsafe { libc::pause() };
                    }
                }
                pid
            })
            .collect()
    };
    let mut workers = spawn();
    mark(marks, &format!("WORKERS {} {}", workers[0], workers[1]));
    loop {
        if GOT_USR1.swap(false, Ordering::SeqCst) {
            mark(marks, "PHASED");
            for pid in &workers {
                // SAFETY: our own children.
                unsafe {
                    libc::kill(*pid, libc::SIGTERM);
                    libc::waitpid(*pid, std::ptr::null_mut(), 0);
                }
            }
            workers = spawn();
            mark(marks, &format!("WORKERS {} {}", workers[0], workers[1]));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A thread that ends by returning (glibc ends it with the thread-only `exit`
/// syscall), then, 100 ms later, the process's `exit_group(code)`.
fn thread_exit(code: i32) -> ! {
    std::thread::spawn(|| std::hint::black_box(())).join().expect("the thread panicked");
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The thread-group leader leaves first (`SYS_exit`, the thread-only exit); the
/// other thread runs on for 200 ms and ends the process with `_exit(code)`.
fn leader_exit(code: i32) -> ! {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(code) }
    });
    // SAFETY: ends only the calling (main) thread; the process lives on in the
    // other one, which owns nothing of this thread's stack.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("SYS_exit returned")
}

fn main() {
    join_cgroup();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("argument {i} missing or not a number"))
    };
    match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("demo-service") => demo_service(),
        Some("serve") => serve(args.get(1).expect("serve MARKS")),
        Some("puma") => puma(args.get(1).expect("puma MARKS"), if args.len() > 2 { num(2) } else { 0 }),
        Some("exit-after") => {
            std::thread::sleep(Duration::from_millis(num(1)));
            std::process::exit(num(2) as i32)
        }
        Some("thread-exit") => thread_exit(num(1) as i32),
        Some("leader-exit") => leader_exit(num(1) as i32),
        Some("listen") => listen(args.get(1).expect("listen IP BACKLOG"), num(2) as i32),
        Some("alloc") => alloc(num(1) as usize, Duration::from_millis(num(2)), Duration::from_millis(num(3))),
        Some("storm") => {
            let secs = Duration::from_secs(num(1));
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < secs {
                fork_exit();
                n += 1;
            }
            let elapsed = start.elapsed().as_secs_f64();
            println!("{{\"forks\":{n},\"secs\":{elapsed},\"per_sec\":{}}}", n as f64 / elapsed);
        }
        Some("storm-n") => {
            for _ in 0..num(1) {
                fork_exit();
            }
        }
        Some("exits") => {
            let gap = Duration::from_micros(num(2));
            let mut out = std::io::stdout().lock();
            for i in 0..num(1) {
                // SAFETY: the child only calls _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    unsafe { libc::_exit((i % 256) as i32) };
                }
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                writeln!(out, "{pid} {status}").unwrap();
                std::thread::sleep(gap);
            }
        }
        Some("statuses") => {
            // The caller watches this process before it forks anything.
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            let mut out = std::io::stdout().lock();
            for i in 0..num(1) as usize {
                let signal = (i % 5 == 4).then(|| STATUS_SIGNALS[i / 5 % STATUS_SIGNALS.len()]);
                // SAFETY: the child only calls async-signal-safe functions, then _exit.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    unsafe {
                        if let Some(signal) = signal {
                            // Rust ignores SIGPIPE; every signal here must kill by default.
                            libc::signal(signal, libc::SIG_DFL);
                            libc::kill(libc::getpid(), signal);
                        }
                        libc::_exit(((i * 37) % 256) as i32);
                    }
                }
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                writeln!(out, "{pid} {status}").unwrap();
            }
        }
        _ => {
            eprintln!(
                "usage: inspeq-workload alloc MIB HOLD_MS AFTER_MS | storm SECS | storm-n N | exits N GAP_US | statuses N | thread-exit CODE | leader-exit CODE | listen IP BACKLOG | demo | serve MARKS"
            );
            std::process::exit(2);
        }
    }
}
