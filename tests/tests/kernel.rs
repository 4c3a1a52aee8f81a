//! The kernel pipeline against the running kernel: the eBPF programs load, watch
//! what they are told to, and report exits, forks, RSS crossings, OOM kills,
//! listening sockets closing and drops exactly; the tiers without eBPF (the
//! process connector, pidfds, /proc polling) report the same exits, as far as
//! each can; the sock_diag dump lists listeners with their accept queues and
//! cgroups. Root and BTF needed (see `tests::privileged`).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Lines, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    os::unix::{fs::MetadataExt as _, process::ExitStatusExt as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use inspeq_daemon::kernel::{
    ExitStatus, Mode, Monitor, Observation, Options, ProcessExited, RssDirection, RssLimits, WatchId, WatchSettings,
    WatchTarget, listeners, monotonic_ns,
};
use tests::{TestCgroup, inspeqd, privileged, sh_in};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_inspeq-workload");

/// `inspeq-workload ARGS`, joining `cgroups` itself right after exec: a child
/// moved between fork and exec would bring a copy of this (large, multi-threaded)
/// test process's address space into the cgroup first.
fn workload(args: &[&str], cgroups: &[&Path]) -> Command {
    let mut command = Command::new(WORKLOAD);
    let joined: Vec<String> = cgroups.iter().map(|c| c.display().to_string()).collect();
    command.args(args).env("INSPEQ_JOIN_CGROUP", joined.join(":"));
    command
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn ebpf(options: Options) -> Monitor {
    let monitor = Monitor::start(&options);
    assert_eq!(monitor.mode(), &Mode::Ebpf, "eBPF did not start");
    monitor
}

/// Reads observations until `done` says so or `limit` passes (a guard against a
/// hang, not a performance assertion).
async fn collect(
    monitor: &mut Monitor,
    limit: Duration,
    mut done: impl FnMut(&[Observation]) -> bool,
) -> Vec<Observation> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&all) {
        let mut batch = Vec::new();
        match tokio::time::timeout_at(deadline, monitor.next_batch(&mut batch)).await {
            Ok(result) => result.expect("reading the kernel side"),
            Err(_) => break,
        }
        all.extend(batch);
    }
    all
}

fn exits(observations: &[Observation]) -> Vec<&ProcessExited> {
    observations
        .iter()
        .filter_map(|o| match o {
            Observation::ProcessExited(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn status_of(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal { signal, core_dumped: status.core_dumped() },
        _ => unreachable!("a waited child either exited or was signaled"),
    }
}

#[test]
fn exits_in_a_watched_cgroup_match_waitpid() {
    if !privileged("exits_in_a_watched_cgroup_match_waitpid") {
        return;
    }
    let cg = TestCgroup::new("exits");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();

        // Exit codes 0..=255 and the common signals, interleaved.
        let signals = ["TERM", "KILL", "INT", "HUP", "USR1", "ABRT", "QUIT", "PIPE"];
        let mut expected = BTreeMap::new();
        for i in 0..200 {
            let script = if i % 5 == 4 {
                format!("kill -{} $$", signals[i / 5 % signals.len()])
            } else {
                format!("exit {}", (i * 37) % 256)
            };
            let mut child = sh_in(&script, &[&cg.dir]);
            let pid = child.id();
            expected.insert(pid, status_of(child.wait().unwrap()));
        }
        let seen = collect(&mut monitor, Duration::from_secs(10), |o| exits(o).len() >= expected.len()).await;
        let mut reported = BTreeMap::new();
        for e in exits(&seen) {
            assert!(reported.insert(e.pid, e.status).is_none(), "pid {} reported twice", e.pid);
            assert!(!e.oom_killed);
            assert_eq!(
                e.cgroup_id,
                std::fs::metadata(&cg.dir).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap()
            );
        }
        assert_eq!(reported, expected, "reported exits differ from what waitpid said");
        assert!(expected.values().any(|s| matches!(s, ExitStatus::Signal { signal: 9, .. })));
    });
}

#[test]
fn an_unwatched_cgroup_produces_nothing() {
    if !privileged("an_unwatched_cgroup_produces_nothing") {
        return;
    }
    let watched = TestCgroup::new("watched");
    let other = TestCgroup::new("unwatched");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        monitor
            .watch(
                &WatchTarget::Cgroup(watched.dir.clone()),
                WatchSettings { forks: true, rss: None, total_rss: None, listeners: false },
            )
            .unwrap();
        let mut quiet = Vec::new();
        for i in 0..20 {
            let mut child = sh_in(&format!("sh -c 'exit {i}'; exit {i}"), &[&other.dir]);
            quiet.push(child.id());
            child.wait().unwrap();
        }
        // A sentinel in the watched cgroup: once it is reported, anything about
        // the other cgroup would have been too (one ring, in order per CPU).
        let mut sentinel = sh_in("exit 42", &[&watched.dir]);
        let sentinel_pid = sentinel.id();
        sentinel.wait().unwrap();
        let seen =
            collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == sentinel_pid)).await;
        assert!(exits(&seen).iter().any(|e| e.pid == sentinel_pid && e.status == ExitStatus::Code(42)));
        for o in &seen {
            let pids = match o {
                Observation::ProcessExited(e) => vec![e.pid, e.ppid],
                Observation::ProcessForked { parent, child, .. } => vec![*parent, *child],
                other => panic!("unexpected {other:?}"),
            };
            assert!(pids.iter().all(|p| !quiet.contains(p)), "unwatched process reported: {o:?}");
        }
    });
}

#[test]
fn a_watched_pid_tree_includes_children_and_grandchildren() {
    if !privileged("a_watched_pid_tree_includes_children_and_grandchildren") {
        return;
    }
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        // The root waits for a line on stdin, so the watch is in place before it forks.
        let mut root = Command::new("/bin/sh")
            .arg("-c")
            .arg("read go; ( sh -c 'exit 4'; exit 5 ); exit 6")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let root_pid = root.id();
        let id = monitor
            .watch(
                &WatchTarget::Tree(root_pid),
                WatchSettings { forks: true, rss: None, total_rss: None, listeners: false },
            )
            .unwrap();

        let mut unrelated = Command::new("/bin/sh").arg("-c").arg("exit 9").spawn().unwrap();
        let unrelated_pid = unrelated.id();
        unrelated.wait().unwrap();

        writeln!(root.stdin.take().unwrap(), "go").unwrap();
        assert_eq!(root.wait().unwrap().code(), Some(6));
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == root_pid)).await;

        let forks: Vec<(u32, u32)> = seen
            .iter()
            .filter_map(|o| match o {
                Observation::ProcessForked { parent, child, watch, .. } if *watch == id => Some((*parent, *child)),
                _ => None,
            })
            .collect();
        let codes: BTreeSet<(u32, Option<i32>)> = exits(&seen).iter().map(|e| (e.ppid, e.status.code())).collect();
        assert!(exits(&seen).iter().all(|e| e.pid != unrelated_pid), "an unrelated process was reported");
        // root forks the subshell (child), the subshell forks sh -c 'exit 4' (grandchild).
        assert_eq!(forks.len(), 2, "forks: {forks:?}");
        let (root_fork, child_fork) = (forks[0], forks[1]);
        assert_eq!(root_fork.0, root_pid);
        assert_eq!(child_fork.0, root_fork.1);
        assert!(codes.contains(&(root_fork.1, Some(4))), "grandchild exit missing: {codes:?}");
        assert!(codes.contains(&(root_pid, Some(5))), "child exit missing: {codes:?}");
        assert_eq!(exits(&seen).len(), 3);
    });
}

#[test]
fn rss_crossing_is_reported_once_each_way() {
    if !privileged("rss_crossing_is_reported_once_each_way") {
        return;
    }
    let cg = TestCgroup::new("rss");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        let settings = WatchSettings {
            forks: false,
            rss: Some(RssLimits::threshold(32 << 20)),
            total_rss: None,
            listeners: false,
        };
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), settings).unwrap();
        let mut child = workload(&["alloc", "64", "100", "100"], &[&cg.dir]).spawn().unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == pid)).await;
        let crossings: Vec<(RssDirection, u64)> = seen
            .iter()
            .filter_map(|o| match o {
                Observation::RssCrossed { pid: p, direction, rss_bytes, .. } if *p == pid => {
                    Some((*direction, *rss_bytes))
                }
                _ => None,
            })
            .collect();
        assert_eq!(crossings.len(), 2, "crossings: {crossings:?}");
        assert_eq!(crossings[0].0, RssDirection::Up);
        assert!(crossings[0].1 >= 32 << 20);
        assert_eq!(crossings[1].0, RssDirection::Down);
        assert!(crossings[1].1 < 28 << 20);
    });
}

#[test]
fn an_oom_killed_process_is_reported_as_such() {
    if !privileged("an_oom_killed_process_is_reported_as_such") {
        return;
    }
    let watched = TestCgroup::new("oom");
    // The memory limit: cgroup v1's memory controller on hybrid hosts, else v2's memory.max.
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (limit_cg, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
        (Some(TestCgroup::new_under(v1, "oom")), "memory.limit_in_bytes")
    } else {
        (None, "memory.max")
    };
    let limit_dir = limit_cg.as_ref().map(|c| c.dir.clone()).unwrap_or_else(|| watched.dir.clone());
    std::fs::write(limit_dir.join(limit_file), (16u64 << 20).to_string()).unwrap();
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        monitor.watch(&WatchTarget::Cgroup(watched.dir.clone()), WatchSettings::default()).unwrap();
        let cgroups: Vec<&Path> = if limit_cg.is_some() { vec![&watched.dir, &limit_dir] } else { vec![&watched.dir] };
        let mut child = workload(&["alloc", "128", "0", "0"], &cgroups).spawn().unwrap();
        let pid = child.id();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the workload was not OOM-killed: {status:?}");
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == pid)).await;
        let exit = exits(&seen).into_iter().find(|e| e.pid == pid).expect("exit reported");
        assert!(exit.oom_killed, "{exit:?}");
        assert_eq!(exit.status, ExitStatus::Signal { signal: 9, core_dumped: false });
    });
}

/// Runs `inspeq-workload ARGS` alone in the watched cgroup `cg` and returns its
/// pid, the status `waitpid` gave, and every exit reported from that cgroup:
/// gathered until the workload's own exit and for 300 ms more, so that a second
/// report (a thread's exit taken for the process's) would be seen too.
async fn lone_workload_exits(
    monitor: &mut Monitor,
    cg: &TestCgroup,
    args: &[&str],
) -> (u32, ExitStatus, Vec<(u32, ExitStatus)>) {
    let mut child = workload(args, &[&cg.dir]).spawn().unwrap();
    let pid = child.id();
    let status = status_of(child.wait().unwrap());
    let mut seen = collect(monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == pid)).await;
    seen.extend(collect(monitor, Duration::from_millis(300), |_| false).await);
    let reported = exits(&seen).iter().map(|e| (e.pid, e.status)).collect();
    (pid, status, reported)
}

#[test]
fn a_threads_exit_is_no_process_exit() {
    if !privileged("a_threads_exit_is_no_process_exit") {
        return;
    }
    let cg = TestCgroup::new("thread-exit");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();
        // A thread ends (the thread-only exit), then the process exits with 4.
        let (pid, status, reported) = lone_workload_exits(&mut monitor, &cg, &["thread-exit", "4"]).await;
        assert_eq!(status, ExitStatus::Code(4));
        assert_eq!(reported, vec![(pid, ExitStatus::Code(4))], "one exit, the process's, expected");
    });
}

#[test]
fn a_leader_that_exits_before_its_threads_is_reported_once_when_the_last_thread_dies() {
    if !privileged("a_leader_that_exits_before_its_threads_is_reported_once_when_the_last_thread_dies") {
        return;
    }
    let cg = TestCgroup::new("leader-exit");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();
        // The main thread calls SYS_exit; 200 ms later the other thread calls _exit(6).
        let (pid, status, reported) = lone_workload_exits(&mut monitor, &cg, &["leader-exit", "6"]).await;
        assert_eq!(status, ExitStatus::Code(6), "waitpid reports the group exit's code");
        assert_eq!(reported, vec![(pid, status)], "one exit, when the last thread died, with waitpid's status");
    });
}

#[test]
fn an_oom_kill_under_memory_max_is_reported() {
    let test = "an_oom_kill_under_memory_max_is_reported";
    if !privileged(test) {
        return;
    }
    let cg = TestCgroup::new("oom-max");
    if !cg.dir.join("memory.max").exists() {
        // Hybrid hosts keep the memory controller on cgroup v1. The kernel matrix's
        // guests (INSPEQ_KERNEL_MATRIX) enable it on cgroup2: there the test must run.
        assert!(
            std::env::var_os("INSPEQ_KERNEL_MATRIX").is_none(),
            "{test}: no memory.max in {}: the memory controller is not enabled in the parent's cgroup.subtree_control",
            cg.dir.display()
        );
        tests::skipped(
            test,
            "cgroup2 has no memory controller here (it is on cgroup v1 or not in cgroup.subtree_control)",
        );
        return;
    }
    std::fs::write(cg.dir.join("memory.max"), (16u64 << 20).to_string()).unwrap();
    // No swap to escape into (absent when the kernel has no swap accounting).
    let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();
        let mut child = workload(&["alloc", "128", "0", "0"], &[&cg.dir]).spawn().unwrap();
        let pid = child.id();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the workload was not OOM-killed: {status:?}");
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == pid)).await;
        let exit = exits(&seen).into_iter().find(|e| e.pid == pid).expect("exit reported");
        assert!(exit.oom_killed, "{exit:?}");
        assert_eq!(exit.status, ExitStatus::Signal { signal: 9, core_dumped: false });
        assert_eq!(
            exit.cgroup_id,
            std::fs::metadata(&cg.dir).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap()
        );
    });
}

#[test]
fn a_full_ring_buffer_reports_lost_events_with_the_kernel_count() {
    if !privileged("a_full_ring_buffer_reports_lost_events_with_the_kernel_count") {
        return;
    }
    let cg = TestCgroup::new("storm");
    runtime().block_on(async {
        // One page of ring, and nobody reading while the storm runs.
        let mut monitor = ebpf(Options { ring_bytes: Some(4096), ..Options::default() });
        monitor
            .watch(
                &WatchTarget::Cgroup(cg.dir.clone()),
                WatchSettings { forks: true, rss: None, total_rss: None, listeners: false },
            )
            .unwrap();
        assert!(workload(&["storm-n", "2000"], &[&cg.dir]).status().unwrap().success());

        let seen = collect(&mut monitor, Duration::from_secs(5), |o| {
            o.iter().any(|o| matches!(o, Observation::EventsLost { .. }))
        })
        .await;
        let mut lost = [0u64; 3];
        for o in &seen {
            if let Observation::EventsLost { kind, count } = o {
                lost[["exit", "fork", "rss"].iter().position(|k| k == kind).unwrap()] += count;
            }
        }
        let stats = monitor.stats();
        assert!(lost.iter().sum::<u64>() > 0, "no loss reported: {seen:?}");
        assert_eq!(lost, stats.dropped, "reported losses differ from the kernel's counters");
        // 2000 forks and 2001 exits were produced; each was either delivered or counted as dropped.
        assert_eq!(stats.emitted[1] + stats.dropped[1], 2000);
        assert_eq!(stats.emitted[0] + stats.dropped[0], 2001);
    });
}

#[test]
fn the_proc_fallback_reports_the_same_exits_within_a_cycle() {
    if !privileged("the_proc_fallback_reports_the_same_exits_within_a_cycle") {
        return;
    }
    let cg = TestCgroup::new("fallback");
    let cycle = Duration::from_millis(300);
    runtime().block_on(async {
        let options =
            Options { force_fallback: true, no_proc_connector: true, no_pidfd: true, cycle, ..Options::default() };
        let mut monitor = Monitor::start(&options);
        assert!(matches!(monitor.mode(), Mode::Fallback { .. }), "{:?}", monitor.mode());
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();
        // Children that live longer than a cycle, so polling can see them at all.
        let mut children: Vec<_> =
            (0..10).map(|i| (sh_in(&format!("exec sleep 0.{}", 4 + i % 5), &[&cg.dir]), i)).collect();
        let mut exited_at = BTreeMap::new();
        let reaper = std::thread::spawn(move || {
            for (child, _) in &mut children {
                child.wait().unwrap();
                exited_at.insert(child.id(), monotonic_ns());
            }
            exited_at
        });
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).len() >= 10).await;
        let exited_at = reaper.join().unwrap();
        let reported: BTreeMap<u32, u64> = exits(&seen).iter().map(|e| (e.pid, e.ktime_ns)).collect();
        assert_eq!(reported.keys().collect::<Vec<_>>(), exited_at.keys().collect::<Vec<_>>());
        for (pid, at) in &exited_at {
            // Reaped (hence gone) by `at`; the next poll, at most one cycle later,
            // reports it. The reaper thread may run late, hence no lower bound.
            let late = reported[pid].saturating_sub(*at);
            assert!(late <= (cycle + cycle / 2).as_nanos() as u64, "pid {pid} reported {late} ns after it was reaped");
        }
    });
}

/// The process connector tier, eBPF forced off.
fn proc_connector(cycle: Duration) -> Monitor {
    let monitor = Monitor::start(&Options { force_fallback: true, cycle, ..Options::default() });
    assert!(
        matches!(monitor.mode(), Mode::ProcConnector { .. }),
        "the process connector did not start: {:?}",
        monitor.mode()
    );
    monitor
}

#[test]
fn the_proc_connector_reports_the_same_exits_as_waitpid_also_of_processes_their_parent_reaped() {
    if !privileged("the_proc_connector_reports_the_same_exits_as_waitpid_also_of_processes_their_parent_reaped") {
        return;
    }
    let cg = TestCgroup::new("pc-exits");
    runtime().block_on(async {
        // A long cycle: every exit below must come from the connector's events.
        let mut monitor = proc_connector(Duration::from_secs(3600));
        // The workload joins the cgroup, is watched, then forks 200 children that
        // exit with codes and signals, reaping each at once as systemd does.
        let mut parent =
            workload(&["statuses", "200"], &[&cg.dir]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let parent_pid = parent.id();
        let procs = cg.dir.join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&procs).unwrap().lines().any(|l| l == parent_pid.to_string()) {
            assert!(Instant::now() < deadline, "the workload did not join {}", cg.dir.display());
            std::thread::sleep(Duration::from_millis(5));
        }
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();
        writeln!(parent.stdin.take().unwrap(), "go").unwrap();
        let mut expected = BTreeMap::new();
        for line in BufReader::new(parent.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let (pid, status) = line.split_once(' ').unwrap();
            expected.insert(pid.parse::<u32>().unwrap(), ExitStatus::from_wait_status(status.parse().unwrap()));
        }
        expected.insert(parent_pid, status_of(parent.wait().unwrap()));
        assert_eq!(expected.len(), 201);

        let seen = collect(&mut monitor, Duration::from_secs(10), |o| exits(o).len() >= expected.len()).await;
        let mut reported = BTreeMap::new();
        for e in exits(&seen) {
            assert!(reported.insert(e.pid, e.status).is_none(), "pid {} reported twice", e.pid);
        }
        assert_eq!(reported, expected, "reported exits differ from what waitpid said");
        assert!(expected.values().any(|s| matches!(s, ExitStatus::Signal { signal: 9, .. })));
        assert!(expected.values().any(|s| matches!(s, ExitStatus::Code(c) if *c > 0)));
        let children: BTreeSet<u32> = exits(&seen).iter().filter(|e| e.pid != parent_pid).map(|e| e.ppid).collect();
        assert_eq!(children, BTreeSet::from([parent_pid]), "each child's parent is the workload");
        assert!(seen.iter().all(|o| !matches!(o, Observation::EventsLost { .. })), "messages were lost");
    });
}

#[test]
fn the_proc_connector_follows_a_process_tree_and_leaves_others_alone() {
    if !privileged("the_proc_connector_follows_a_process_tree_and_leaves_others_alone") {
        return;
    }
    runtime().block_on(async {
        let mut monitor = proc_connector(Duration::from_secs(3600));
        // The root waits for a line on stdin, so the watch is in place before it
        // forks; the subshell starts a thread-free grandchild.
        let mut root = Command::new("/bin/sh")
            .arg("-c")
            .arg("read go; ( sh -c 'exit 4'; exit 5 ); exit 6")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let root_pid = root.id();
        let id = monitor
            .watch(
                &WatchTarget::Tree(root_pid),
                WatchSettings { forks: true, rss: None, total_rss: None, listeners: false },
            )
            .unwrap();
        let mut unrelated = Command::new("/bin/sh").arg("-c").arg("exit 9").spawn().unwrap();
        let unrelated_pid = unrelated.id();
        unrelated.wait().unwrap();
        writeln!(root.stdin.take().unwrap(), "go").unwrap();
        assert_eq!(root.wait().unwrap().code(), Some(6));
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == root_pid)).await;
        let forks: Vec<(u32, u32)> = seen
            .iter()
            .filter_map(|o| match o {
                Observation::ProcessForked { parent, child, watch, .. } if *watch == id => Some((*parent, *child)),
                _ => None,
            })
            .collect();
        assert_eq!(forks.len(), 2, "forks: {forks:?}");
        assert_eq!(forks[0].0, root_pid);
        assert_eq!(forks[1].0, forks[0].1);
        let codes: BTreeMap<u32, ExitStatus> = exits(&seen).iter().map(|e| (e.pid, e.status)).collect();
        assert_eq!(
            codes,
            BTreeMap::from([
                (forks[1].1, ExitStatus::Code(4)),
                (forks[0].1, ExitStatus::Code(5)),
                (root_pid, ExitStatus::Code(6))
            ])
        );
        assert!(exits(&seen).iter().all(|e| e.pid != unrelated_pid), "an unrelated process was reported");
    });
}

#[test]
fn a_proc_connector_overrun_is_reported_and_no_watched_exit_is_lost() {
    if !privileged("a_proc_connector_overrun_is_reported_and_no_watched_exit_is_lost") {
        return;
    }
    let cg = TestCgroup::new("pc-overrun");
    runtime().block_on(async {
        let mut monitor = proc_connector(Duration::from_secs(3600));
        // In the cgroup and watched before it forks: its children are members by descent.
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(format!("read go; exec {WORKLOAD} storm-n 50000")).stdin(Stdio::piped());
        let mut storm = tests::join_cgroups(&mut command, &[&cg.dir]).spawn().unwrap();
        let pid = storm.id();
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), WatchSettings::default()).unwrap();
        writeln!(storm.stdin.take().unwrap(), "go").unwrap();
        // Nobody reads while the storm runs: the socket's buffer overflows.
        assert!(storm.wait().unwrap().success());
        let seen = collect(&mut monitor, Duration::from_secs(30), |o| exits(o).iter().any(|e| e.pid == pid)).await;
        let overruns: u64 = seen
            .iter()
            .filter_map(|o| match o {
                Observation::EventsLost { kind: "overrun", count } => Some(*count),
                _ => None,
            })
            .sum();
        assert!(overruns > 0, "no overrun reported for 100000 events unread");
        // The storm's own exit is reported whether its message survived or not
        // (then without a status, found gone at the resync).
        let exit = exits(&seen).into_iter().find(|e| e.pid == pid).unwrap();
        assert!(matches!(exit.status, ExitStatus::Code(0) | ExitStatus::Unknown), "{exit:?}");
    });
}

#[test]
fn the_pidfd_tier_reports_a_killed_main_process_at_once() {
    if !privileged("the_pidfd_tier_reports_a_killed_main_process_at_once") {
        return;
    }
    runtime().block_on(async {
        // An hour between /proc scans: an exit reported below came through its pidfd.
        let options = Options {
            force_fallback: true,
            no_proc_connector: true,
            cycle: Duration::from_secs(3600),
            ..Options::default()
        };
        let mut monitor = Monitor::start(&options);
        assert!(matches!(monitor.mode(), Mode::Pidfd { .. }), "pidfds did not start: {:?}", monitor.mode());
        let mut zombie = Command::new("sleep").arg("1000").spawn().unwrap();
        let mut reaped = Command::new("sleep").arg("1000").spawn().unwrap();
        let (zombie_pid, reaped_pid) = (zombie.id(), reaped.id());
        monitor.watch(&WatchTarget::Tree(zombie_pid), WatchSettings::default()).unwrap();
        monitor.watch(&WatchTarget::Tree(reaped_pid), WatchSettings::default()).unwrap();
        // The scan timer's first tick is immediate: take it before anything exits.
        let quiet = collect(&mut monitor, Duration::from_millis(300), |_| false).await;
        assert!(exits(&quiet).is_empty(), "{quiet:?}");

        // Reaped before inspeq looks, as systemd reaps its services: no status is left.
        // SAFETY: kill(2) on children this test started.
        unsafe { libc::kill(reaped_pid as i32, libc::SIGKILL) };
        reaped.wait().unwrap();
        let seen =
            collect(&mut monitor, Duration::from_secs(30), |o| exits(o).iter().any(|e| e.pid == reaped_pid)).await;
        let exit = exits(&seen)
            .into_iter()
            .find(|e| e.pid == reaped_pid)
            .expect("the reaped process's exit, long before the next scan");
        assert_eq!(exit.status, ExitStatus::Unknown);

        // Not reaped yet: the zombie still holds its wait status.
        // SAFETY: as above.
        unsafe { libc::kill(zombie_pid as i32, libc::SIGKILL) };
        let seen =
            collect(&mut monitor, Duration::from_secs(30), |o| exits(o).iter().any(|e| e.pid == zombie_pid)).await;
        let exit = exits(&seen)
            .into_iter()
            .find(|e| e.pid == zombie_pid)
            .expect("the killed process's exit, long before the next scan");
        assert_eq!(exit.status, ExitStatus::Signal { signal: 9, core_dumped: false });
        zombie.wait().unwrap();
    });
}

#[test]
fn inspeqd_trace_names_the_tier_it_runs() {
    if !privileged("inspeqd_trace_names_the_tier_it_runs") {
        return;
    }
    let cg = TestCgroup::new("trace-tiers");
    for (flags, mode) in [
        (&[][..], "ebpf"),
        (&["--no-ebpf"][..], "proc_connector"),
        (&["--no-ebpf", "--no-proc-connector"][..], "pidfd"),
        (&["--no-ebpf", "--no-proc-connector", "--no-pidfd"][..], "proc"),
    ] {
        let mut trace = Command::new(inspeqd())
            .args(["trace", "--json", "--duration", "0.1", "--cgroup"])
            .arg(&cg.dir)
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(trace.stdout.take().unwrap()).lines();
        let ready: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(ready["mode"], mode, "{flags:?}: {ready}");
        assert_eq!(ready["blind_spots"].as_array().unwrap().is_empty(), mode == "ebpf", "{ready}");
        assert_eq!(ready["reason"].is_null(), mode == "ebpf", "{ready}");
        assert!(trace.wait().unwrap().success());
    }
}

#[test]
fn inspeqd_trace_prints_the_documented_json() {
    if !privileged("inspeqd_trace_prints_the_documented_json") {
        return;
    }
    let cg = TestCgroup::new("trace");
    let mut trace = Command::new(inspeqd())
        .args(["trace", "--json", "--cgroup"])
        .arg(&cg.dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(trace.stdout.take().unwrap()).lines();
    let ready: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ready["kind"], "ready");
    assert_eq!(ready["mode"], "ebpf");

    let mut child = sh_in("kill -TERM $$", &[&cg.dir]);
    let pid = child.id();
    child.wait().unwrap();
    let started = Instant::now();
    let exit = loop {
        let value: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if value["kind"] == "exited" && value["pid"] == pid {
            break value;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no exit line for {pid}");
    };
    unsafe { libc::kill(trace.id() as i32, libc::SIGTERM) };
    trace.wait().unwrap();
    let keys: BTreeSet<&str> = exit.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "kind",
            "pid",
            "exit_code",
            "signal",
            "core_dumped",
            "oom_killed",
            "rss_bytes",
            "cgroup_id",
            "ktime_ns"
        ])
    );
    assert_eq!(exit["exit_code"], serde_json::Value::Null);
    assert_eq!(exit["signal"], 15);
    assert_eq!(exit["core_dumped"], false);
    assert_eq!(exit["oom_killed"], false);
}

/// RSS of `pid` from /proc, in bytes.
fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

#[test]
fn a_watch_armed_on_a_process_already_above_its_threshold_reports_the_crossing_at_once() {
    if !privileged("a_watch_armed_on_a_process_already_above_its_threshold_reports_the_crossing_at_once") {
        return;
    }
    let cg = TestCgroup::new("rss-armed");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        // It grows to 64 MiB and then touches no page for 2 s: no kernel event
        // would ever tell of a crossing that happened before the watch.
        let mut child = workload(&["alloc", "64", "2000", "0"], &[&cg.dir]).spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while rss_of(pid) < 64 << 20 {
            assert!(Instant::now() < deadline, "the workload never reached 64 MiB");
            std::thread::sleep(Duration::from_millis(5));
        }
        let settings = WatchSettings { forks: false, rss: Some(RssLimits::threshold(32 << 20)), total_rss: None, listeners: false };
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), settings).unwrap();
        let seen = collect(&mut monitor, Duration::from_secs(1), |o| !o.is_empty()).await;
        let first = seen.first().expect("nothing reported at arming");
        assert!(
            matches!(first, Observation::RssCrossed { pid: p, direction: RssDirection::Up, rss_bytes, .. } if *p == pid && *rss_bytes >= 64 << 20),
            "{first:?}"
        );
        assert!(child.try_wait().unwrap().is_none(), "the crossing came only after the process ended");
        assert!(child.wait().unwrap().success());
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).iter().any(|e| e.pid == pid)).await;
        let directions: Vec<RssDirection> = seen
            .iter()
            .filter_map(|o| match o {
                Observation::RssCrossed { pid: p, direction, .. } if *p == pid => Some(*direction),
                _ => None,
            })
            .collect();
        // Once up (at arming), once down (munmap): never a second up.
        assert_eq!(directions, [RssDirection::Down]);
    });
}

#[test]
fn a_watch_total_crossing_is_reported_when_its_processes_together_cross() {
    if !privileged("a_watch_total_crossing_is_reported_when_its_processes_together_cross") {
        return;
    }
    let cg = TestCgroup::new("rss-total");
    runtime().block_on(async {
        let mut monitor = ebpf(Options::default());
        // No process alone reaches 96 MiB; two of 64 MiB together do.
        let settings = WatchSettings { forks: false, rss: None, total_rss: Some(96 << 20), listeners: false };
        monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), settings).unwrap();
        let mut first = workload(&["alloc", "64", "1500", "100"], &[&cg.dir]).spawn().unwrap();
        let mut second = workload(&["alloc", "64", "1500", "100"], &[&cg.dir]).spawn().unwrap();
        let pids = [first.id(), second.id()];
        assert!(first.wait().unwrap().success());
        assert!(second.wait().unwrap().success());
        let seen = collect(&mut monitor, Duration::from_secs(5), |o| exits(o).len() >= 2).await;
        let totals: Vec<(RssDirection, u64)> = seen
            .iter()
            .filter_map(|o| match o {
                Observation::RssTotalCrossed { direction, total_bytes, threshold_bytes, .. } => {
                    assert_eq!(*threshold_bytes, 96 << 20);
                    Some((*direction, *total_bytes))
                }
                _ => None,
            })
            .collect();
        assert_eq!(totals.len(), 2, "total crossings: {totals:?}");
        assert_eq!(totals[0].0, RssDirection::Up);
        assert!(totals[0].1 >= 96 << 20 && totals[0].1 < 160 << 20, "{totals:?}");
        assert_eq!(totals[1].0, RssDirection::Down);
        assert!(totals[1].1 < 84 << 20, "{totals:?}");
        // No per-process limit was asked for: no per-process records.
        assert!(!seen.iter().any(|o| matches!(o, Observation::RssCrossed { .. })), "{seen:?}");
        for pid in pids {
            let exit = exits(&seen).into_iter().find(|e| e.pid == pid).expect("exit reported");
            assert_eq!(exit.status, ExitStatus::Code(0));
            // The RSS at exit is known on every kernel (before 6.16, the last value the RSS program saw).
            assert!(exit.rss_bytes.is_some(), "{exit:?}");
        }
    });
}

/// What runs as PID 1 of a new pid namespace (with its own /proc) in
/// [`pids_are_those_of_the_watchers_own_pid_namespace`]: `inspeqd trace` on a
/// cgroup and on a process tree, and processes it starts, waits for and records
/// (`PID STATUS` as that namespace's `wait` gave them) in `$OUT`. Busybox `sh`
/// compatible: the kernel matrix runs it in its guests.
const IN_PID_NAMESPACE: &str = r#"
ready() { i=0; until grep -q '"kind":"ready"' "$1" 2>/dev/null; do i=$((i+1)); [ $i -lt 500 ] || exit 90; sleep 0.02; done; }
seen() { i=0; until grep -q "$2" "$1" 2>/dev/null; do i=$((i+1)); [ $i -lt 500 ] || return 1; sleep 0.02; done; }
record() { wait "$1"; echo "$1 $? $2" >> "$OUT/waited"; }

# A cgroup watch: exits (a code, a signal), an RSS crossing, a fork and a listener's close.
"$INSPEQD" trace --json --cgroup "$CG" --rss-threshold 16m > "$OUT/cgroup.jsonl" 2> "$OUT/cgroup.err" & CGTRACE=$!
ready "$OUT/cgroup.jsonl"
sh -c 'echo 0 > "$CG/cgroup.procs"; exit 7' & record $! code
sh -c 'echo 0 > "$CG/cgroup.procs"; kill -9 $$' & record $! signal
INSPEQ_JOIN_CGROUP="$CG" "$WORKLOAD" alloc 32 50 0 & record $! rss
sh -c 'echo 0 > "$CG/cgroup.procs"; sh -c "exit 5" & echo $! > "$OUT/cgroup-child"; wait $!; exit 6' & record $! parent
# A listener killed while listening (its socket closes in its exit), its stdin a
# fifo held open read-write so it never ends.
mkfifo "$OUT/listen-in"
INSPEQ_JOIN_CGROUP="$CG" "$WORKLOAD" listen 127.0.0.1 8 <> "$OUT/listen-in" > "$OUT/listen-port" & LISTENER=$!
seen "$OUT/listen-port" '[0-9]' || exit 91
kill -9 "$LISTENER"; record "$LISTENER" listener

# A process-tree watch (WATCH_TGIDS): the root waits on a fifo until watched.
mkfifo "$OUT/go"
sh -c 'read x < "$1"; sh -c "exit 3" & echo $! > "$2"; wait $!; exit 4' tree "$OUT/go" "$OUT/tree-child" & ROOT=$!
echo "$ROOT" > "$OUT/tree-root"
"$INSPEQD" trace --json --pid "$ROOT" > "$OUT/tree.jsonl" 2> "$OUT/tree.err" & TREETRACE=$!
ready "$OUT/tree.jsonl"
echo go > "$OUT/go"
record "$ROOT" tree

# Without eBPF: the process connector refuses (initial namespaces only); pidfds
# over this namespace's /proc serve.
"$INSPEQD" trace --json --no-ebpf --poll-ms 100 --cgroup "$CG" > "$OUT/pidfd.jsonl" 2> "$OUT/pidfd.err" & PIDFDTRACE=$!
ready "$OUT/pidfd.jsonl"
sh -c 'echo 0 > "$CG/cgroup.procs"; exec sleep 30' & SLEEPER=$!
sleep 0.5
kill -9 "$SLEEPER"
record "$SLEEPER" pidfd

seen "$OUT/cgroup.jsonl" '"kind":"listener_closed"' && seen "$OUT/cgroup.jsonl" "\"pid\":$(cat "$OUT/cgroup-child")," && seen "$OUT/tree.jsonl" "\"pid\":$ROOT," && seen "$OUT/pidfd.jsonl" "\"pid\":$SLEEPER,"
kill -TERM "$CGTRACE" "$TREETRACE" "$PIDFDTRACE"
wait
"#;

/// The JSON lines of one `inspeqd trace` output file.
fn trace_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()))).collect()
}

/// The `exited` line of `pid`, as (exit code, signal).
fn exit_line(lines: &[serde_json::Value], pid: u64) -> Option<(Option<i64>, Option<i64>)> {
    lines
        .iter()
        .find(|l| l["kind"] == "exited" && l["pid"] == pid)
        .map(|l| (l["exit_code"].as_i64(), l["signal"].as_i64()))
}

#[test]
fn pids_are_those_of_the_watchers_own_pid_namespace() {
    if !privileged("pids_are_those_of_the_watchers_own_pid_namespace") {
        return;
    }
    let cg = TestCgroup::new("pidns");
    let scratch = tempdir("pidns");
    let out = scratch.path();
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "/bin/sh", "-c", IN_PID_NAMESPACE])
        .env("INSPEQD", inspeqd())
        .env("WORKLOAD", WORKLOAD)
        .env("CG", &cg.dir)
        .env("OUT", out)
        .status()
        .expect("running unshare (util-linux, or busybox in the kernel matrix)");
    let file = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "the namespace's script failed ({status}):\n{}\n{}\n{}",
        file("cgroup.err"),
        file("tree.err"),
        file("pidfd.err")
    );

    // (pid, status as `wait` gave it, what it was) in the namespace.
    let waited: Vec<(u64, i64, String)> = file("waited")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].to_owned())
        })
        .collect();
    let pid_of =
        |what: &str| waited.iter().find(|w| w.2 == what).unwrap_or_else(|| panic!("no {what} in {waited:?}")).0;
    // `wait`'s $?: a code, or 128 + the signal.
    let expect = |status: i64| if status > 128 { (None, Some(status - 128)) } else { (Some(status), None) };

    let cgroup = trace_lines(&out.join("cgroup.jsonl"));
    assert_eq!(cgroup[0]["layout"]["pids"], "translated", "{}", cgroup[0]);
    for (pid, status, what) in &waited {
        let lines = match what.as_str() {
            "tree" => continue,
            "pidfd" => continue,
            _ => &cgroup,
        };
        assert_eq!(
            exit_line(lines, *pid),
            Some(expect(*status)),
            "{what}: pid {pid} as wait gave it; trace said:\n{cgroup:#?}"
        );
    }
    assert_eq!(expect(waited.iter().find(|w| w.2 == "signal").unwrap().1), (None, Some(9)));
    let rss = pid_of("rss");
    assert!(
        cgroup.iter().any(|l| l["kind"] == "rss" && l["pid"] == rss && l["direction"] == "up"),
        "no RSS crossing of {rss}: {cgroup:#?}"
    );
    let parent = pid_of("parent");
    let child: u64 = file("cgroup-child").trim().parse().unwrap();
    assert!(
        cgroup.iter().any(|l| l["kind"] == "forked" && l["pid"] == child && l["parent_pid"] == parent),
        "no fork {parent} → {child}: {cgroup:#?}"
    );
    assert_eq!(exit_line(&cgroup, child), Some((Some(5), None)));
    let listener = pid_of("listener");
    let port: u64 = file("listen-port").trim().parse().unwrap();
    assert!(
        cgroup.iter().any(|l| l["kind"] == "listener_closed"
            && l["pid"] == listener
            && l["port"] == port
            && l["address"] == "127.0.0.1"),
        "no close of {listener}'s listener on port {port}: {cgroup:#?}"
    );

    let tree = trace_lines(&out.join("tree.jsonl"));
    let root = pid_of("tree");
    assert_eq!(root, file("tree-root").trim().parse::<u64>().unwrap());
    let tree_child: u64 = file("tree-child").trim().parse().unwrap();
    assert!(
        tree.iter().any(|l| l["kind"] == "forked" && l["pid"] == tree_child && l["parent_pid"] == root),
        "{tree:#?}"
    );
    assert_eq!(exit_line(&tree, tree_child), Some((Some(3), None)), "{tree:#?}");
    assert_eq!(exit_line(&tree, root), Some((Some(4), None)), "{tree:#?}");

    let pidfd = trace_lines(&out.join("pidfd.jsonl"));
    assert_eq!(pidfd[0]["mode"], "pidfd", "{}", pidfd[0]);
    assert!(pidfd[0]["reason"].as_str().unwrap().contains("outside the initial pid namespace"), "{}", pidfd[0]);
    let sleeper = pid_of("pidfd");
    let (code, signal) = exit_line(&pidfd, sleeper).unwrap_or_else(|| panic!("no exit of {sleeper}: {pidfd:#?}"));
    // Seen while still a zombie (SIGKILL), or after `wait` reaped it (unknown).
    assert!(code.is_none() && matches!(signal, Some(9) | None), "{code:?} {signal:?}");
    let _ = std::fs::remove_dir_all(out);
}

/// A fresh directory under the temporary directory, named after the test, removed when dropped.
fn tempdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("inspeq-kernel-{name}-")).tempdir().unwrap()
}

/// A TCP listener `inspeq-workload listen` holds, never accepting.
struct Listening {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
}

impl Listening {
    /// Listens on `ip` and a free port with `backlog`, in `cgroups` (none: where this test runs).
    fn start(ip: &str, backlog: u32, cgroups: &[&Path]) -> Self {
        let mut child = workload(&["listen", ip, &backlog.to_string()], cgroups)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines.next().expect("the listener's port").unwrap().parse().unwrap();
        let addr = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port);
        Self { child, stdin, lines, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the listening socket (the process lives on) and waits until it has.
    fn close(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "close").unwrap();
        assert_eq!(self.lines.next().unwrap().unwrap(), "closed");
    }

    /// Kills the process with SIGKILL while it listens, and reaps it.
    fn kill(&mut self) {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.pid() as i32, libc::SIGKILL) };
        assert_eq!(self.child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    /// Ends the process (after `close`) and reaps it.
    fn end(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The listener closes among `observations`: (watch, pid, address).
fn listener_closes(observations: &[Observation]) -> Vec<(WatchId, u32, SocketAddr)> {
    observations
        .iter()
        .filter_map(|o| match o {
            Observation::ListenerClosed { watch, pid, addr, .. } => Some((*watch, *pid, *addr)),
            _ => None,
        })
        .collect()
}

/// The cgroup id of the cgroup directory `dir`.
fn cgroup_id(dir: &Path) -> u64 {
    std::fs::metadata(dir).unwrap().ino()
}

const LISTENERS: WatchSettings = WatchSettings { forks: false, rss: None, total_rss: None, listeners: true };

/// eBPF, with the listener program attached: every kernel of the matrix has its tracepoint.
fn ebpf_with_listeners() -> Monitor {
    let monitor = ebpf(Options::default());
    assert!(
        monitor.program_ids().iter().any(|(name, _)| *name == "inspeq_listen"),
        "the listener program did not attach: missing {:?}",
        monitor.missing_tracepoints()
    );
    monitor
}

/// Observations until each of `pids` has exited and `closes` listener closes were
/// reported, and for 300 ms more, so that a second report would be seen too.
async fn until_closed(monitor: &mut Monitor, pids: &[u32], closes: usize) -> Vec<Observation> {
    let mut seen = collect(monitor, Duration::from_secs(5), |o| {
        listener_closes(o).len() >= closes && pids.iter().all(|p| exits(o).iter().any(|e| e.pid == *p))
    })
    .await;
    seen.extend(collect(monitor, Duration::from_millis(300), |_| false).await);
    seen
}

#[test]
fn a_listener_closed_or_killed_in_a_watched_cgroup_is_reported_once() {
    if !privileged("a_listener_closed_or_killed_in_a_watched_cgroup_is_reported_once") {
        return;
    }
    let cg = TestCgroup::new("listen-cgroup");
    runtime().block_on(async {
        let mut monitor = ebpf_with_listeners();
        let id = monitor.watch(&WatchTarget::Cgroup(cg.dir.clone()), LISTENERS).unwrap();
        // (a) close(2) on the listener, the process living on; (b) SIGKILL while listening,
        // the socket closed by the dying process's exit.
        let mut closed = Listening::start("127.0.0.1", 8, &[&cg.dir]);
        let mut killed = Listening::start("::1", 8, &[&cg.dir]);
        closed.close();
        killed.kill();
        let (closed_pid, closed_addr, killed_pid, killed_addr) = (closed.pid(), closed.addr, killed.pid(), killed.addr);
        closed.end();
        let seen = until_closed(&mut monitor, &[closed_pid, killed_pid], 2).await;
        assert_eq!(
            listener_closes(&seen),
            vec![(id, closed_pid, closed_addr), (id, killed_pid, killed_addr)],
            "one close each, in order: {seen:?}"
        );
        for o in &seen {
            if let Observation::ListenerClosed { cgroup_id: cg_id, .. } = o {
                assert_eq!(*cg_id, cgroup_id(&cg.dir), "{o:?}");
            }
        }
    });
}

#[test]
fn a_listener_closed_or_killed_in_a_watched_process_tree_is_reported_once() {
    if !privileged("a_listener_closed_or_killed_in_a_watched_process_tree_is_reported_once") {
        return;
    }
    runtime().block_on(async {
        let mut monitor = ebpf_with_listeners();
        let mut closed = Listening::start("::1", 8, &[]);
        let mut killed = Listening::start("127.0.0.1", 8, &[]);
        let closed_id = monitor.watch(&WatchTarget::Tree(closed.pid()), LISTENERS).unwrap();
        let killed_id = monitor.watch(&WatchTarget::Tree(killed.pid()), LISTENERS).unwrap();
        closed.close();
        // Its exit takes it out of WATCH_TGIDS before its files close: the close must
        // still be found to be this watch's.
        killed.kill();
        let (closed_pid, closed_addr, killed_pid, killed_addr) = (closed.pid(), closed.addr, killed.pid(), killed.addr);
        closed.end();
        let seen = until_closed(&mut monitor, &[closed_pid, killed_pid], 2).await;
        assert_eq!(
            listener_closes(&seen),
            vec![(closed_id, closed_pid, closed_addr), (killed_id, killed_pid, killed_addr)],
            "one close each, in order: {seen:?}"
        );
    });
}

#[test]
fn listener_closes_of_unwatched_processes_and_of_watches_not_asking_are_not_reported() {
    if !privileged("listener_closes_of_unwatched_processes_and_of_watches_not_asking_are_not_reported") {
        return;
    }
    let asking = TestCgroup::new("listen-asking");
    let not_asking = TestCgroup::new("listen-not-asking");
    let unwatched = TestCgroup::new("listen-unwatched");
    runtime().block_on(async {
        let mut monitor = ebpf_with_listeners();
        let id = monitor.watch(&WatchTarget::Cgroup(asking.dir.clone()), LISTENERS).unwrap();
        monitor.watch(&WatchTarget::Cgroup(not_asking.dir.clone()), WatchSettings::default()).unwrap();
        let mut tree = Listening::start("127.0.0.1", 8, &[]);
        monitor.watch(&WatchTarget::Tree(tree.pid()), WatchSettings::default()).unwrap();
        for dir in [&not_asking.dir, &unwatched.dir] {
            let mut closed = Listening::start("127.0.0.1", 8, &[dir]);
            let mut killed = Listening::start("::1", 8, &[dir]);
            closed.close();
            killed.kill();
            closed.end();
        }
        tree.kill();
        // A sentinel in the watch that asks: once its close is reported, the
        // others' would have been too (one ring, in order per CPU).
        let mut sentinel = Listening::start("127.0.0.1", 8, &[&asking.dir]);
        sentinel.close();
        let (pid, addr) = (sentinel.pid(), sentinel.addr);
        sentinel.end();
        let seen = until_closed(&mut monitor, &[pid], 1).await;
        assert_eq!(listener_closes(&seen), vec![(id, pid, addr)], "only the sentinel's close: {seen:?}");
    });
}

#[test]
fn sock_diag_lists_a_listener_with_its_accept_queue_backlog_and_cgroup() {
    if !privileged("sock_diag_lists_a_listener_with_its_accept_queue_backlog_and_cgroup") {
        return;
    }
    let cg = TestCgroup::new("sock-diag");
    let mut v4 = Listening::start("127.0.0.1", 8, &[&cg.dir]);
    let v6 = Listening::start("::1", 4, &[&cg.dir]);
    // Connections the listener never accepts: they wait in its accept queue
    // (within its backlog of 8, so none is refused).
    const CONNECTIONS: u32 = 5;
    let clients: Vec<TcpStream> = (0..CONNECTIONS).map(|_| TcpStream::connect(v4.addr).unwrap()).collect();
    // The handshake's last ACK may still be on its way when connect returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let all = listeners().expect("the sock_diag dump");
        let found = all.iter().find(|l| l.addr == v4.addr).cloned();
        if found.as_ref().is_some_and(|l| l.accept_queue == CONNECTIONS) || Instant::now() > deadline {
            break (found, all);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (Some(listener), all) = found else { panic!("no listener on {} in {:#?}", v4.addr, found.1) };
    assert_eq!(listener.accept_queue, CONNECTIONS, "{listener:?}");
    assert_eq!(listener.backlog, 8, "{listener:?}");
    assert_eq!(listener.uid, 0, "{listener:?}");
    // INET_DIAG_CGROUP_ID: every kernel of the matrix (5.10+) sends it.
    assert_eq!(listener.cgroup_id, Some(cgroup_id(&cg.dir)), "{listener:?}");
    // Its inode is the socket the workload holds.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", v4.pid()))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    assert!(fds.contains(&format!("socket:[{}]", listener.inode)), "{listener:?} not among {fds:?}");

    let listener6 = all.iter().find(|l| l.addr == v6.addr).unwrap_or_else(|| panic!("no {} in {all:#?}", v6.addr));
    assert_eq!((listener6.accept_queue, listener6.backlog), (0, 4), "{listener6:?}");
    assert_eq!(listener6.cgroup_id, Some(cgroup_id(&cg.dir)), "{listener6:?}");
    // The connections themselves are no listeners.
    let ports: BTreeSet<u16> = clients.iter().map(|c| c.local_addr().unwrap().port()).chain([v4.addr.port()]).collect();
    assert_eq!(all.iter().filter(|l| ports.contains(&l.addr.port())).count(), 1, "{all:#?}");

    v4.close();
    let after = listeners().expect("the sock_diag dump");
    assert!(!after.iter().any(|l| l.addr == v4.addr), "{} still listed after close: {after:#?}", v4.addr);
    assert!(after.iter().any(|l| l.addr == v6.addr));
    v4.end();
}
