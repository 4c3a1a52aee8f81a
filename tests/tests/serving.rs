//! Is it serving? Active probes (`port`, `http`, `tls`) and the kernel's view of listeners against real servers:
//! Debian's nginx-light as a `check process` with TLS servers whose certificates (made by `openssl`, signed by a
//! CA made for them) end in days or have ended, and reloaded onto another port, also as a unit of a real systemd
//! user manager; and Debian's Puma as a unit of that manager (`tests::apps_harness`) that answers 500, hangs
//! under SIGSTOP with its accept queue filling, loses a worker, dies, and is stopped by an operator.
//!
//! Alerts are read on the daemon's standard output (`alert: firing service=NAME event=KIND ...`). Waits are
//! bounded (hang guards); nothing here asserts how fast anything happened.

use std::time::Duration;

use tests::{
    apps_harness::{Apps, PROGRAMS},
    daemon_harness::{Daemon, is_alert},
    init_harness::{Scratch, UserManager, kill9, wait_for},
    privileged_with,
    servers::{self, Server},
};

/// Hang guard for what takes a few one-second cycles.
const LIMIT: Duration = Duration::from_secs(60);

/// How many cycles have sampled the host (the length of `show host load:1`): a clock in cycles.
fn cycles(daemon: &Daemon) -> usize {
    let show = daemon.ctl_ok(&["show", "host", "load:1"]);
    if show.contains("no values yet") { 0 } else { show.lines().nth(1).unwrap_or("").chars().count() }
}

/// Waits until `n` more cycles have run: time for anything late to show up.
fn wait_cycles(daemon: &Daemon, n: usize) {
    let start = cycles(daemon);
    wait_for(&format!("{n} more cycles"), LIMIT, || (cycles(daemon) >= start + n).then_some(()));
}

/// A host check whose sampled load counts cycles.
const HOST: &str = "check host\n  if load:1 > 100000 then alert\n";

fn is_resolved(line: &str, service: &str, event: &str) -> bool {
    line.starts_with(&format!("alert: resolved service={service} event={event} "))
}

/// The probe `probe` of service `name` in `status --json`.
fn probe(daemon: &Daemon, name: &str, probe: &str) -> Option<serde_json::Value> {
    let service = daemon.service(name)?;
    service["probes"].as_array()?.iter().find(|p| p["probe"] == probe).cloned()
}

/// The rule `text` of service `name` in `status --json`.
fn rule(daemon: &Daemon, name: &str, text: &str) -> Option<serde_json::Value> {
    let service = daemon.service(name)?;
    service["rules"].as_array()?.iter().find(|r| r["rule"] == text).cloned()
}

/// Alert lines of `event` about `service`, firing or resolved, whose text has `with`.
fn alerts(daemon: &Daemon, service: &str, event: &str, with: &str) -> usize {
    daemon.stdout.count(|l| (is_alert(l, service, event) || is_resolved(l, service, event)) && l.contains(with))
}

/// nginx with a TLS server on `tls_port` whose certificate ends in 5 days, one on `expired_port` whose
/// certificate has ended, and a plain one on IPv6 loopback's `v6_port` and on the Unix socket `socket`.
fn nginx_tls(
    scratch: &Scratch,
    (port, tls_port, expired_port, v6_port): (u16, u16, u16, u16),
    socket: &std::path::Path,
) -> (Server, servers::Certificate) {
    let certificate = servers::certificate(&scratch.dir.join("tls"), 5);
    let server = |port: u16, cert: &std::path::Path| {
        format!(
            "  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
             \x20   location / {{ return 200 \"secure\\n\"; }}\n  }}\n",
            cert.display(),
            certificate.key.display()
        )
    };
    let plain = format!(
        "  server {{\n    listen [::1]:{v6_port};\n    listen unix:{};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n",
        socket.display()
    );
    let servers = server(tls_port, &certificate.cert) + &server(expired_port, &certificate.expired) + &plain;
    (servers::nginx_with(scratch, port, &servers), certificate)
}

/// nginx's listeners as `status` shows them, then a reload that moves the TLS server to another port: the
/// kernel reports the old listener's close, and only that port's rule fires.
fn listeners_and_a_reload_onto_another_port(daemon: &Daemon, nginx: &Server, port: u16, tls_port: u16) {
    // Its listeners, from the kernel: its four TCP ports (the probes' own connections may be waiting in them).
    let listed = wait_for("nginx's listeners in status", LIMIT, || {
        let service = daemon.service("nginx")?;
        let listeners = service["listeners"].as_array()?.clone();
        (listeners.len() == 4).then_some(listeners)
    });
    for listener in &listed {
        assert!(listener["accept_queue"].is_u64(), "{listener}");
        assert!(listener["backlog"].as_u64().unwrap() > 0, "{listener}");
    }

    // Reloaded onto another port: the old listener closes when the last process holding it (the old worker,
    // once it has finished its connections) lets go, and the kernel says so at once.
    let moved = servers::free_port();
    let conf = nginx.dir.join("nginx.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&format!("listen 127.0.0.1:{tls_port} ssl"), &format!("listen 127.0.0.1:{moved} ssl"));
    std::fs::write(&conf, text).unwrap();
    nginx.signal(libc::SIGHUP);
    let stopped = daemon.stdout.wait("the moved listener's alert", LIMIT, |l| is_alert(l, "nginx", "listener_stopped"));
    let closer: u32 = stopped
        .split(&format!("stopped listening on port {tls_port}: pid "))
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(stopped.contains(&format!("closed 127.0.0.1:{tls_port}")), "{stopped}");
    assert!(closer > 0, "{stopped}");
    assert_eq!(alerts(daemon, "nginx", "listener_stopped", &format!("port {port}")), 0, "{:#?}", daemon.stdout.all());
}

/// nginx stops: its ports are closed and its pages fail, with the system's reason; what they measured is unknown.
fn a_stopped_nginx_fails(daemon: &Daemon, nginx: &mut Server, port: u16, v6_port: u16, socket: &std::path::Path) {
    let sock = socket.display();
    nginx.stop();
    let closed = daemon.stdout.wait("the closed port's alert", LIMIT, |l| {
        is_alert(l, "nginx", "probe_failed") && l.contains(&format!("port localhost:{port} fails"))
    });
    assert!(closed.contains("refused"), "{closed}");
    let page = daemon.stdout.wait("the page's alert", LIMIT, |l| {
        is_alert(l, "nginx", "probe_failed") && l.contains(&format!("http http://127.0.0.1:{port}/ fails"))
    });
    assert!(page.contains("GET http://127.0.0.1"), "{page}");
    // Over IPv6 and the Unix socket too.
    for probe in [format!("port [::1]:{v6_port} fails"), format!("port unix:{sock} fails")] {
        daemon.stdout.wait(&probe, LIMIT, |l| is_alert(l, "nginx", "probe_failed") && l.contains(&probe));
    }
    // Without answers the time and the certificate are unknown, not zero.
    let unknown = wait_for("the time rule without a value", LIMIT, || {
        let r = rule(daemon, "nginx", &format!("http \"http://127.0.0.1:{port}/\" with body \"^ok\" time < 60s"))?;
        (r["value"].is_null() && r["value_text"].as_str()?.starts_with("fails:")).then_some(r)
    });
    assert!(unknown["value_text"].as_str().unwrap().contains("refused"), "{unknown}");
}

/// No failure alert of `nginx` names any of `texts`.
fn none_alerted(daemon: &Daemon, texts: &[String]) {
    for bad in texts {
        let seen = alerts(daemon, "nginx", "probe_failed", bad) + alerts(daemon, "nginx", "rule_failed", bad);
        assert_eq!(seen, 0, "{bad}: {:#?}", daemon.stdout.all());
    }
}

#[test]
fn nginx_is_probed_over_tcp_http_and_tls_a_certificate_days_from_its_end_is_alerted_and_a_stopped_nginx_fails() {
    let test =
        "nginx_is_probed_over_tcp_http_and_tls_a_certificate_days_from_its_end_is_alerted_and_a_stopped_nginx_fails";
    if !privileged_with(test, &[servers::NGINX, servers::OPENSSL]) {
        return;
    }
    let scratch = Scratch::new("serving-nginx");
    let (port, tls_port, expired_port) = (servers::free_port(), servers::free_port(), servers::free_port());
    let v6_port = std::net::TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap().port();
    let socket = scratch.dir.join("web.sock");
    let (mut nginx, certificate) = nginx_tls(&scratch, (port, tls_port, expired_port, v6_port), &socket);
    let (pidfile, ca) = (nginx.pidfile.display().to_string(), certificate.ca.display().to_string());
    let sock = socket.display();
    let daemon = Daemon::builder("serving-nginx")
        .file("inspeq.conf", "set cycle_time 1\n")
        .file(
            "services.d/nginx.inq",
            &format!(
                "check process nginx with pidfile {pidfile}\n\
                 \x20 if port {port} is closed then alert\n\
                 \x20 if port \"[::1]:{v6_port}\" is closed then alert\n\
                 \x20 if port \"{sock}\" is closed then alert\n\
                 \x20 if http \"http://127.0.0.1:{port}/\" with body \"^ok\" fails then alert\n\
                 \x20 if http \"http://127.0.0.1:{port}/\" with body \"^ok\" time < 60s then alert\n\
                 \x20 if http \"http://127.0.0.1:{port}/missing\" fails then alert\n\
                 \x20 if http \"https://localhost:{tls_port}/\" with ca_file {ca}, body secure fails then alert\n\
                 \x20 if http \"https://localhost:{tls_port}/\" fails then alert\n\
                 \x20 if tls \"localhost:{tls_port}\" with ca_file {ca} expires within 14 days then alert\n\
                 \x20 if tls \"localhost:{tls_port}\" with ca_file {ca} expires within 2 days then alert\n\
                 \x20 if tls \"127.0.0.1:{tls_port}\" with ca_file {ca}, server_name example.com fails then alert\n\
                 \x20 if tls \"localhost:{expired_port}\" with ca_file {ca} expires within 14 days then alert\n\
                 \x20 if tls \"localhost:{expired_port}\" with ca_file {ca} fails then alert\n\
                 \x20 if http \"https://localhost:{expired_port}/\" with ca_file {ca} fails then alert\n\
                 \x20 if listening {port} stopped then alert\n\
                 \x20 if listening {tls_port} stopped then alert\n"
            ),
        )
        .start();

    // The certificate ends in 5 days: within 14, not within 2. (The ended one alerts too, in any order.)
    let expiry = daemon.stdout.wait("the certificate's expiry alert", LIMIT, |l| {
        is_alert(l, "nginx", "rule_failed") && l.contains(&format!("tls localhost:{tls_port} certificate"))
    });
    assert!(expiry.contains("certificate is expiring in ") && expiry.contains("within 14 days"), "{expiry}");
    let days = wait_for("the certificate's days left", LIMIT, || {
        rule(&daemon, "nginx", &format!("tls \"localhost:{tls_port}\" with ca_file {ca} expires within 2 days"))?
            ["value"]
            .as_f64()
    });
    assert!((4.9..5.01).contains(&days), "{days} days left");

    // An ended certificate is measured, not a failed handshake: its time left is negative. A client (the https
    // probe) refuses it.
    let ended = daemon.stdout.wait("the ended certificate's alert", LIMIT, |l| {
        is_alert(l, "nginx", "rule_failed") && l.contains(&format!("tls localhost:{expired_port} certificate"))
    });
    assert!(ended.contains("certificate is expiring in -"), "{ended}");
    let refused = daemon.stdout.wait("the https probe of the ended certificate", LIMIT, |l| {
        is_alert(l, "nginx", "probe_failed") && l.contains(&format!("https://localhost:{expired_port}/ fails"))
    });
    assert!(refused.contains("Expired") || refused.contains("expired"), "{refused}");

    // A 404 is a failure; so is a certificate nobody trusts, and one for another name.
    let missing =
        daemon.stdout.wait("the 404 alert", LIMIT, |l| is_alert(l, "nginx", "probe_failed") && l.contains("/missing"));
    assert!(missing.contains("HTTP 404 Not Found, expected a status below 400"), "{missing}");
    let untrusted = daemon.stdout.wait("the untrusted certificate's alert", LIMIT, |l| {
        is_alert(l, "nginx", "probe_failed") && l.contains(&format!("https://localhost:{tls_port}/ fails"))
    });
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let name = daemon.stdout.wait("the wrong name's alert", LIMIT, |l| {
        is_alert(l, "nginx", "probe_failed") && l.contains(&format!("tls 127.0.0.1:{tls_port}"))
    });
    assert!(name.contains("handshake") && name.contains("certificate"), "{name}");

    // What answers is timed: the time rule compares every answer, and `status` shows the probes' last times.
    daemon.stdout.wait("the time rule", LIMIT, |l| {
        is_alert(l, "nginx", "rule_failed") && l.contains(&format!("http http://127.0.0.1:{port}/ time is"))
    });
    let tcp = wait_for("the port probe's answer", LIMIT, || {
        probe(&daemon, "nginx", &format!("port localhost:{port}")).filter(|p| p["last_time_ms"].is_f64())
    });
    assert!(tcp["error"].is_null(), "{tcp}");
    for answered in [format!("port [::1]:{v6_port}"), format!("port unix:{sock}")] {
        let p =
            wait_for(&answered, LIMIT, || probe(&daemon, "nginx", &answered).filter(|p| p["last_time_ms"].is_f64()));
        assert!(p["error"].is_null(), "{p}");
    }
    let https = wait_for("the trusted https probe's answer", LIMIT, || {
        probe(&daemon, "nginx", &format!("http https://localhost:{tls_port}/"))
            .filter(|p| p["last_success_secs_ago"].is_u64())
    });
    assert!(https["last_time_ms"].as_f64().unwrap() > 0.0, "{https}");
    // Only the probes that should fail did.
    let should_answer = [
        format!("port localhost:{port} fails"),
        format!("port [::1]:{v6_port} fails"),
        format!("port unix:{sock} fails"),
        format!("http http://127.0.0.1:{port}/ fails"),
        format!("tls localhost:{tls_port} fails"),
        format!("tls localhost:{expired_port} fails"),
        "within 2 days".to_owned(),
    ];
    none_alerted(&daemon, &should_answer);

    listeners_and_a_reload_onto_another_port(&daemon, &nginx, port, tls_port);

    a_stopped_nginx_fails(&daemon, &mut nginx, port, v6_port, &socket);
}

#[test]
fn a_sick_or_hung_puma_fails_its_http_probe_a_dead_one_is_restarted_by_its_port_rule_and_a_stop_is_left_alone() {
    let test =
        "a_sick_or_hung_puma_fails_its_http_probe_a_dead_one_is_restarted_by_its_port_rule_and_a_stop_is_left_alone";
    if !privileged_with(test, PROGRAMS) {
        return;
    }
    let apps = Apps::new("serving");
    let master = apps.start_puma();
    let port = apps.puma_port;
    let health = format!("http \"http://127.0.0.1:{port}/health\" with body healthy, timeout 1s fails for 2 cycles");
    let daemon = Daemon::builder("serving-puma")
        .file("inspeq.conf", "set cycle_time 1\n")
        .file("host.inq", HOST)
        .file(
            "services.d/puma.inq",
            &format!(
                "check service puma with scope user\n\
                 \x20 if {health} then alert\n\
                 \x20 if port {port} is closed for 2 cycles then alert, restart\n\
                 \x20 if listening {port} stopped then alert\n\
                 \x20 if accept_queue > 15 for 2 cycles then alert\n"
            ),
        )
        .env("XDG_RUNTIME_DIR", &apps.manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up("puma", LIMIT), master);
    wait_for("the health probe's first answer", LIMIT, || {
        probe(&daemon, "puma", &format!("http http://127.0.0.1:{port}/health"))
            .filter(|p| p["last_success_secs_ago"].is_u64())
    });

    // The app answers 500: the probe fails after two cycles, and recovers when it is healthy again.
    std::fs::write(apps.dir.join("sick"), "").unwrap();
    let sick = daemon.stdout.wait("the 500's alert", LIMIT, |l| is_alert(l, "puma", "probe_failed"));
    assert!(sick.contains("HTTP 500 Internal Server Error"), "{sick}");
    std::fs::remove_file(apps.dir.join("sick")).unwrap();
    daemon.stdout.wait("the health probe's recovery", LIMIT, |l| is_resolved(l, "puma", "probe_answers"));

    // Hung (master and workers stopped): the kernel still completes connections, so the port is open, but no
    // page comes back within the probe's second.
    let procs = apps.unit_procs("puma.service");
    for pid in &procs {
        unsafe { libc::kill(*pid as i32, libc::SIGSTOP) };
    }
    let hung = daemon.stdout.wait_nth("the hung puma's alert", 1, LIMIT, |l| is_alert(l, "puma", "probe_failed"));
    assert!(hung.contains("/health fails") && hung.contains("no answer within 1s"), "{hung}");
    // Connections pile up in its accept queue: the kernel's count, with no probe of its own. (The probes' own
    // connections queue too, two a cycle: the threshold is above what they reach before the clients come.)
    let clients: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("the kernel accepts for puma"))
        .collect();
    let queued = daemon
        .stdout
        .wait("the accept queue's alert", LIMIT, |l| is_alert(l, "puma", "rule_failed") && l.contains("accept_queue"));
    let waiting: f64 = queued
        .split("accept_queue is ")
        .nth(1)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{queued}"));
    assert!(waiting >= 20.0, "{queued}");
    let listener = wait_for("the queue in status", LIMIT, || {
        let listeners = daemon.service("puma")?["listeners"].as_array()?.clone();
        listeners.into_iter().find(|l| l["accept_queue"].as_u64().is_some_and(|q| q >= 20))
    });
    assert_eq!(listener["address"], format!("127.0.0.1:{port}"), "{listener}");
    drop(clients);
    for pid in &procs {
        unsafe { libc::kill(*pid as i32, libc::SIGCONT) };
    }
    daemon.stdout.wait_nth("the hung puma's recovery", 1, LIMIT, |l| is_resolved(l, "puma", "probe_answers"));
    assert_eq!(alerts(&daemon, "puma", "probe_failed", "port localhost"), 0, "{:#?}", daemon.stdout.all());

    // A killed worker closes nothing: the listening socket is the master's, shared with the workers.
    let worker = apps.puma_workers()[0];
    kill9(worker);
    let workers = apps.wait_puma_workers_replaced(&[worker]);
    assert!(!workers.contains(&worker));

    // Dead (the master killed, its workers follow): the port closes, and the port rule restarts it.
    kill9(master);
    let closed = daemon.stdout.wait("the closed port's alert", LIMIT, |l| {
        is_alert(l, "puma", "probe_failed") && l.contains("port localhost")
    });
    assert!(closed.contains("refused"), "{closed}");
    let restarted = daemon.wait_up_not("puma", Some(master), LIMIT);
    apps.wait_puma_ready();
    daemon.stdout.wait("the port's recovery", LIMIT, |l| {
        is_resolved(l, "puma", "probe_answers") && l.contains("port localhost")
    });

    // An operator's stop closes the port too: that is no failure, and nothing restarts it.
    apps.manager.systemctl_ok(&["stop", "puma.service"]);
    let before = daemon.stdout.all().len();
    let stopped =
        wait_for("status to show puma down", LIMIT, || daemon.service("puma").filter(|s| s["state"] == "down"));
    assert!(stopped["pid"].is_null(), "{stopped}");
    // Five cycles: more than the two a closed port needs.
    wait_cycles(&daemon, 5);
    let after: Vec<String> = daemon.stdout.all().into_iter().skip(before).collect();
    assert!(after.iter().all(|l| !l.contains("event=probe_failed")), "{after:#?}");
    assert_eq!(apps.active_state("puma.service"), "inactive", "inspeq restarted a stopped puma (was {restarted})");
    // Neither the worker's death, nor the crash, nor the stop was a listener stopping: each closed it as it ended.
    assert_eq!(alerts(&daemon, "puma", "listener_stopped", ""), 0, "{:#?}", daemon.stdout.all());
}

#[test]
fn nginx_under_systemd_reloaded_onto_another_port_stops_listening_there_and_a_stop_is_no_stop() {
    let test = "nginx_under_systemd_reloaded_onto_another_port_stops_listening_there_and_a_stop_is_no_stop";
    let mut programs = vec![servers::NGINX];
    programs.extend_from_slice(&PROGRAMS[..3]);
    if !privileged_with(test, &programs) {
        return;
    }
    let manager = UserManager::start("serving-nginx-unit");
    let scratch = Scratch::new("serving-nginx-unit");
    let (port, moving, moved) = (servers::free_port(), servers::free_port(), servers::free_port());
    let second =
        format!("  server {{\n    listen 127.0.0.1:{moving};\n    location / {{ return 200 \"two\\n\"; }}\n  }}\n");
    let (dir, conf) = servers::nginx_conf(&scratch, port, &second);
    manager.add_unit(
        "nginx.service",
        &format!(
            "[Unit]\nDescription=nginx (inspeq serving test)\n\n[Service]\n\
             ExecStart={} -c {} -p {} -e {}/error.log\nExecReload=/bin/kill -HUP $MAINPID\nTimeoutStopSec=30\n",
            servers::NGINX,
            conf.display(),
            dir.display(),
            dir.display()
        ),
    );
    manager.systemctl_ok(&["start", "nginx.service"]);
    wait_for("nginx to listen", LIMIT, || std::net::TcpStream::connect(("127.0.0.1", moving)).ok().map(|_| ()));
    let daemon = Daemon::builder("serving-nginx-unit")
        .file("inspeq.conf", "set cycle_time 1\n")
        .file("host.inq", HOST)
        .file(
            "services.d/nginx.inq",
            &format!(
                "check service nginx with scope user\n\
                 \x20 if listening {port} stopped then alert\n\
                 \x20 if listening {moving} stopped then alert\n"
            ),
        )
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    daemon.wait_up("nginx", LIMIT);
    // Its listeners are the unit's: the sockets created in its cgroup.
    wait_for("nginx's two listeners in status", LIMIT, || {
        let listeners = daemon.service("nginx")?["listeners"].as_array()?.clone();
        (listeners.len() == 2).then_some(())
    });

    // `systemctl reload` onto another port: the old socket closes once the old worker lets go of it.
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&format!("listen 127.0.0.1:{moving};"), &format!("listen 127.0.0.1:{moved};"));
    std::fs::write(&conf, text).unwrap();
    manager.systemctl_ok(&["reload", "nginx.service"]);
    let stopped = daemon.stdout.wait("the moved listener's alert", LIMIT, |l| is_alert(l, "nginx", "listener_stopped"));
    assert!(stopped.contains(&format!("stopped listening on port {moving}")), "{stopped}");
    assert!(stopped.contains(&format!("closed 127.0.0.1:{moving}")), "{stopped}");

    // An operator's stop closes the other port too: no stop of listening, the init system was asked.
    manager.systemctl_ok(&["stop", "nginx.service"]);
    wait_for("status to show nginx down", LIMIT, || daemon.service("nginx").filter(|s| s["state"] == "down"));
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "nginx", "listener_stopped", &format!("port {port}")), 0, "{:#?}", daemon.stdout.all());
}
