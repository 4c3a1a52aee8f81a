//! Daemon metrics against the real servers: Debian's Redis, memcached, nginx, etcd (a Go program serving
//! expvar's memstats), MariaDB and PostgreSQL, started by each test on a free
//! loopback port (`tests::servers`), watched by the real `inspeqd` as a `check process` found by the pid file the
//! test writes, with the family's connection parameters. Each test loads the server (SETs, sets, GETs), waits for
//! the rules to fire at the values the server reports (counters as rates), reads the values back through
//! `status --json`, `show` and `/metrics`, then makes the server unreachable (killed, or stopped with SIGSTOP so
//! it hangs) and waits for the family's rules to lose their value and `is unreachable` to fire, and recover.
//!
//! Waits are bounded (hang guards); nothing here asserts how fast anything happened.

use std::time::Duration;

use tests::{
    daemon_harness::{Daemon, is_alert},
    init_harness::{Scratch, wait_for},
    privileged_with,
    servers::{self, RedisClient, Server},
};

/// Hang guard for what takes a few one-second cycles.
const LIMIT: Duration = Duration::from_secs(60);
/// Hang guard for a reconnection after the collector's backoff (a minute at most).
const RECONNECT_LIMIT: Duration = Duration::from_secs(120);

fn conf(metrics_port: u16) -> String {
    format!("set cycle_time 1\nset metrics_listen 127.0.0.1:{metrics_port}\n")
}

/// The service `name`'s collection of `family` in `status --json`.
fn collection(daemon: &Daemon, name: &str, family: &str) -> Option<serde_json::Value> {
    let service = daemon.service(name)?;
    service["collections"].as_array()?.iter().find(|c| c["family"] == family).cloned()
}

/// The rule `text` of service `name` in `status --json`.
fn rule(daemon: &Daemon, name: &str, text: &str) -> Option<serde_json::Value> {
    let service = daemon.service(name)?;
    service["rules"].as_array()?.iter().find(|r| r["rule"] == text).cloned()
}

fn is_resolved(line: &str, service: &str, event: &str) -> bool {
    line.starts_with(&format!("alert: resolved service={service} event={event} "))
}

/// Waits until `family` of `name` was collected without error, and returns its collection.
fn wait_collected(daemon: &Daemon, name: &str, family: &str) -> serde_json::Value {
    wait_for(&format!("{name}: {family} collected"), LIMIT, || {
        collection(daemon, name, family).filter(|c| c["error"].is_null() && c["last_success_secs_ago"].is_u64())
    })
}

fn show(daemon: &Daemon, name: &str, metric: &str) -> String {
    daemon.ctl_ok(&["show", name, metric])
}

#[test]
fn redis_rules_fire_at_the_servers_values_and_an_unreachable_redis_is_alerted_and_recovers() {
    let test = "redis_rules_fire_at_the_servers_values_and_an_unreachable_redis_is_alerted_and_recovers";
    if !privileged_with(test, &[servers::REDIS_SERVER]) {
        return;
    }
    let scratch = Scratch::new("redis-metrics");
    let port = servers::free_port();
    let password = "s3cr3t-pw";
    let mut redis = servers::redis(&scratch, port, password);
    let metrics_port = servers::free_port();
    let socket = redis.dir.join("redis.sock");
    let pidfile = redis.pidfile.display().to_string();
    let daemon = Daemon::builder("redis-metrics")
        .file("inspeq.conf", &conf(metrics_port))
        .file(
            "services.d/redis.inq",
            &format!(
                "check process redis-tcp with pidfile {pidfile}, hostname 127.0.0.1, port {port}, password {password}\n\
                 \x20 if redis:used_memory > 64m then alert\n\
                 \x20 if redis:total_commands_processed > 500/sec then alert\n\
                 \x20 if redis:keyspace_misses > 100 then alert\n\
                 \x20 if redis is unreachable for 3 cycles then alert\n\
                 check process redis-unix with pidfile {pidfile}, socket {}, password {password}\n\
                 \x20 if redis:connected_clients > 1000 then alert\n\
                 check process redis-badauth with pidfile {pidfile}, port {port}, password wrong\n\
                 \x20 if redis is unreachable then alert\n",
                socket.display()
            ),
        )
        .arg("--no-ebpf")
        .start();

    // Collected over TCP and over the Unix socket, authenticated; a wrong password is a failure, not a zero.
    let tcp = wait_collected(&daemon, "redis-tcp", "redis");
    assert_eq!(tcp["address"], format!("127.0.0.1:{port}"));
    let unix = wait_collected(&daemon, "redis-unix", "redis");
    assert_eq!(unix["address"], format!("unix:{}", socket.display()));
    let refused =
        daemon.stdout.wait("the wrong password alerted", LIMIT, |l| is_alert(l, "redis-badauth", "unreachable"));
    assert!(refused.contains("refused") && refused.contains("WRONGPASS"), "{refused}");
    let clients = wait_for("connected_clients from the Unix socket", LIMIT, || {
        rule(&daemon, "redis-unix", "redis:connected_clients > 1000")?["value"].as_f64()
    });
    assert!(clients >= 1.0, "{clients}");

    // Nothing fires while the server idles: inspeq's own INFO is one command a second.
    let idle = wait_for("a rate of total_commands_processed", LIMIT, || {
        rule(&daemon, "redis-tcp", "redis:total_commands_processed > 500/sec")?["value"].as_f64()
    });
    assert!((0.0..500.0).contains(&idle), "an idle Redis at {idle} commands/s");
    let rate = rule(&daemon, "redis-tcp", "redis:total_commands_processed > 500/sec").unwrap();
    assert_eq!(rate["unit"], "per_sec", "{rate}");

    // Memory: 80 values of 1 MiB take used_memory past 64m.
    let mut client = RedisClient::connect(port, password);
    let value = vec![b'x'; 1 << 20];
    for i in 0..80 {
        let key = format!("big{i}");
        assert_eq!(client.call(&[b"SET", key.as_bytes(), &value]), "+OK");
    }
    let memory = daemon.stdout.wait("the used_memory alert", LIMIT, |l| {
        is_alert(l, "redis-tcp", "rule_failed") && l.contains("redis:used_memory")
    });
    assert!(memory.contains("above 64m"), "{memory}");
    let shown = show(&daemon, "redis-tcp", "redis:used_memory");
    assert!(shown.contains("redis:used_memory") && shown.contains('m'), "{shown}");

    // A counter: misses counted over one cycle (without /sec), then commands per second under load.
    for _ in 0..20 {
        client.pipeline(&[b"GET", b"no-such-key"], 50);
        if daemon.stdout.count(|l| is_alert(l, "redis-tcp", "rule_failed") && l.contains("redis:keyspace_misses")) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.stdout.wait("the keyspace_misses alert", LIMIT, |l| {
        is_alert(l, "redis-tcp", "rule_failed") && l.contains("redis:keyspace_misses")
    });
    for _ in 0..600 {
        client.pipeline(&[b"PING"], 1000);
        if daemon.stdout.count(|l| is_alert(l, "redis-tcp", "rule_failed") && l.contains("total_commands_processed"))
            > 0
        {
            break;
        }
    }
    let busy = daemon.stdout.wait("the commands/sec alert", LIMIT, |l| {
        is_alert(l, "redis-tcp", "rule_failed") && l.contains("total_commands_processed")
    });
    assert!(busy.contains("above 500/sec"), "{busy}");

    // The values reach /metrics, from the same history.
    let page = wait_for("redis values on /metrics", LIMIT, || {
        let page = servers::http_get(metrics_port, "/metrics")?;
        page.contains("metric=\"redis:used_memory\"").then_some(page)
    });
    assert!(page.contains("target=\"redis-tcp\""), "{page}");

    // Unreachable: the server is stopped. Its rules lose their values, the unreachable rule fires, status says why.
    redis.stop();
    let down = daemon.stdout.wait("the unreachable alert", LIMIT, |l| is_alert(l, "redis-tcp", "unreachable"));
    assert!(down.contains(&format!("127.0.0.1:{port}")), "{down}");
    let memory_rule = rule(&daemon, "redis-tcp", "redis:used_memory > 64m").unwrap();
    assert!(memory_rule["value"].is_null(), "a value from before the failure: {memory_rule}");
    assert!(memory_rule["value_text"].as_str().unwrap().contains("unreachable"), "{memory_rule}");
    let failed = collection(&daemon, "redis-tcp", "redis").unwrap();
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("connecting to")), "{failed}");

    // Back: a new instance on the same port; the rule recovers, and the counters start over (never negative).
    // Its pid file is the one the checks name (the same directory).
    let redis = servers::redis(&scratch, port, password);
    daemon.stdout.wait("the recovery", RECONNECT_LIMIT, |l| is_resolved(l, "redis-tcp", "reachable"));
    wait_collected(&daemon, "redis-tcp", "redis");
    let history = show(&daemon, "redis-tcp", "redis:total_commands_processed");
    assert!(!history.contains("min -"), "a negative rate across the restart: {history}");
    drop(redis);
}

#[test]
fn memcached_rules_fire_at_the_servers_values_and_a_hung_memcached_is_unreachable_until_it_answers() {
    let test = "memcached_rules_fire_at_the_servers_values_and_a_hung_memcached_is_unreachable_until_it_answers";
    if !privileged_with(test, &[servers::MEMCACHED]) {
        return;
    }
    let scratch = Scratch::new("memcached-metrics");
    let port = servers::free_port();
    let memcached = servers::memcached(&scratch, port);
    let daemon = Daemon::builder("memcached-metrics")
        .file("inspeq.conf", &conf(servers::free_port()))
        .file(
            "services.d/memcached.inq",
            &format!(
                "check process memcached-test with pidfile {}, hostname 127.0.0.1, port {port}\n\
                 \x20 if memcached:curr_items > 500 then alert\n\
                 \x20 if memcached:total_connections > 100 then alert\n\
                 \x20 if memcached:cmd_set > 2k/sec then alert\n\
                 \x20 if memcached is unreachable for 2 cycles then alert\n",
                memcached.pidfile.display()
            ),
        )
        .arg("--no-ebpf")
        .start();
    wait_collected(&daemon, "memcached-test", "memcached");
    let idle = wait_for("a rate of cmd_set", LIMIT, || {
        rule(&daemon, "memcached-test", "memcached:cmd_set > 2k/sec")?["value"].as_f64()
    });
    assert_eq!(idle, 0.0, "nobody sets yet");
    // One connection, kept across cycles: no new connection per collection.
    wait_for("no new connections within a cycle", LIMIT, || {
        let value = rule(&daemon, "memcached-test", "memcached:total_connections > 100")?["value"].as_f64()?;
        (value == 0.0).then_some(())
    });

    // 1,000 items: the gauge fires at the server's count.
    servers::memcached_sets(port, "item", 1000);
    let items = daemon.stdout.wait("the curr_items alert", LIMIT, |l| {
        is_alert(l, "memcached-test", "rule_failed") && l.contains("curr_items")
    });
    assert!(items.contains("memcached:curr_items is 1000"), "{items}");
    // Sets per second, under load.
    for round in 0..600 {
        servers::memcached_sets(port, &format!("r{round}-"), 2000);
        if daemon.stdout.count(|l| is_alert(l, "memcached-test", "rule_failed") && l.contains("cmd_set")) > 0 {
            break;
        }
    }
    daemon
        .stdout
        .wait("the cmd_set alert", LIMIT, |l| is_alert(l, "memcached-test", "rule_failed") && l.contains("cmd_set"));
    assert!(show(&daemon, "memcached-test", "memcached:cmd_set").contains("/s"));

    // Hung (SIGSTOP): the kept connection gets no answer; the collection times out, the rule fires.
    memcached.signal(libc::SIGSTOP);
    let hung = daemon.stdout.wait("the unreachable alert", LIMIT, |l| is_alert(l, "memcached-test", "unreachable"));
    assert!(hung.contains("no answer within"), "{hung}");
    let items_rule = rule(&daemon, "memcached-test", "memcached:curr_items > 500").unwrap();
    assert!(items_rule["value"].is_null(), "{items_rule}");
    memcached.signal(libc::SIGCONT);
    daemon.stdout.wait("the recovery", RECONNECT_LIMIT, |l| is_resolved(l, "memcached-test", "reachable"));
    wait_collected(&daemon, "memcached-test", "memcached");
    drop(memcached);
}

#[test]
fn nginx_rules_fire_at_its_status_pages_values_and_a_stopped_nginx_is_unreachable() {
    let test = "nginx_rules_fire_at_its_status_pages_values_and_a_stopped_nginx_is_unreachable";
    if !privileged_with(test, &[servers::NGINX]) {
        return;
    }
    let scratch = Scratch::new("nginx-metrics");
    let port = servers::free_port();
    let mut nginx: Server = servers::nginx(&scratch, port);
    let page = wait_for("nginx's status page", LIMIT, || servers::http_get(port, "/nginx_status"));
    assert!(page.contains("Active connections"), "no stub_status in this nginx: {page}");
    let daemon = Daemon::builder("nginx-metrics")
        .file("inspeq.conf", &conf(servers::free_port()))
        .file(
            "services.d/nginx.inq",
            &format!(
                "check process nginx-test with pidfile {}, hostname 127.0.0.1, port {port}, endpoint /nginx_status\n\
                 \x20 if nginx:Active_connections > 5 then alert\n\
                 \x20 if nginx:accepts > 100 then alert\n\
                 \x20 if nginx:requests > 1k/sec then alert\n\
                 \x20 if nginx is unreachable then alert\n",
                nginx.pidfile.display()
            ),
        )
        .arg("--no-ebpf")
        .start();
    wait_collected(&daemon, "nginx-test", "nginx");
    // inspeq's own connection is kept: one active connection, its own, while nobody else connects.
    let active = wait_for("Active_connections", LIMIT, || {
        rule(&daemon, "nginx-test", "nginx:Active_connections > 5")?["value"].as_f64()
    });
    assert_eq!(active, 1.0, "inspeq's kept connection alone");
    wait_for("no connection accepted within a cycle: the kept one is reused", LIMIT, || {
        let value = rule(&daemon, "nginx-test", "nginx:accepts > 100")?["value"].as_f64()?;
        (value == 0.0).then_some(())
    });

    // Ten idle connections held open: the gauge fires at the page's count.
    let held: Vec<std::net::TcpStream> =
        (0..10).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let connections = daemon.stdout.wait("the Active_connections alert", LIMIT, |l| {
        is_alert(l, "nginx-test", "rule_failed") && l.contains("Active_connections")
    });
    assert!(connections.contains("above 5"), "{connections}");
    drop(held);
    // Requests per second, under load.
    for _ in 0..600 {
        servers::http_gets(port, 2000);
        if daemon.stdout.count(|l| is_alert(l, "nginx-test", "rule_failed") && l.contains("nginx:requests")) > 0 {
            break;
        }
    }
    daemon.stdout.wait("the requests alert", LIMIT, |l| {
        is_alert(l, "nginx-test", "rule_failed") && l.contains("nginx:requests")
    });

    nginx.stop();
    let down = daemon.stdout.wait("the unreachable alert", LIMIT, |l| is_alert(l, "nginx-test", "unreachable"));
    assert!(down.contains(&format!("127.0.0.1:{port}")), "{down}");
    let requests = rule(&daemon, "nginx-test", "nginx:requests > 1k/sec").unwrap();
    assert!(requests["value"].is_null(), "{requests}");
}

#[test]
fn memstats_of_a_real_go_program_are_collected_and_a_hung_one_is_unreachable_until_it_answers() {
    let test = "memstats_of_a_real_go_program_are_collected_and_a_hung_one_is_unreachable_until_it_answers";
    if !privileged_with(test, &[servers::ETCD]) {
        return;
    }
    let scratch = Scratch::new("memstats-metrics");
    let port = servers::free_port();
    let etcd = servers::etcd(&scratch, port);
    let daemon = Daemon::builder("memstats-metrics")
        .file("inspeq.conf", &conf(servers::free_port()))
        .file(
            "services.d/etcd.inq",
            &format!(
                "check process etcd-test with pidfile {}, port {port}, path /debug/vars\n\
                 \x20 if memstats:HeapAlloc > 1k then alert\n\
                 \x20 if memstats:TotalAlloc > 1/sec then alert\n\
                 \x20 if memstats is unreachable then alert\n",
                etcd.pidfile.display()
            ),
        )
        .arg("--no-ebpf")
        .start();
    let collected = wait_collected(&daemon, "etcd-test", "memstats");
    assert_eq!(collected["address"], format!("localhost:{port}"));
    // A Go heap holds megabytes: the gauge fires at what the program reports, in bytes.
    let heap = daemon.stdout.wait("the HeapAlloc alert", LIMIT, |l| {
        is_alert(l, "etcd-test", "rule_failed") && l.contains("memstats:HeapAlloc")
    });
    assert!(heap.contains("above 1k"), "{heap}");
    // The program allocates as it runs (and serves inspeq): TotalAlloc, a counter, is a rate in bytes per second.
    let rate = wait_for("TotalAlloc as a rate", LIMIT, || {
        rule(&daemon, "etcd-test", "memstats:TotalAlloc > 1/sec").filter(|r| r["value"].is_f64())
    });
    assert_eq!(rate["unit"], "bytes_per_sec", "{rate}");
    assert!(show(&daemon, "etcd-test", "memstats:HeapAlloc").contains("memstats:HeapAlloc"));

    etcd.signal(libc::SIGSTOP);
    let hung = daemon.stdout.wait("the unreachable alert", LIMIT, |l| is_alert(l, "etcd-test", "unreachable"));
    assert!(hung.contains("memstats is unreachable"), "{hung}");
    etcd.signal(libc::SIGCONT);
    daemon.stdout.wait("the recovery", RECONNECT_LIMIT, |l| is_resolved(l, "etcd-test", "reachable"));
    drop(etcd);
}

#[test]
fn mysql_rules_fire_at_mariadbs_values_over_tcp_and_the_socket_and_a_stopped_mariadb_is_unreachable() {
    let test = "mysql_rules_fire_at_mariadbs_values_over_tcp_and_the_socket_and_a_stopped_mariadb_is_unreachable";
    if !privileged_with(test, &[servers::MARIADBD, servers::MARIADB_INSTALL_DB, servers::MARIADB]) {
        return;
    }
    let scratch = Scratch::new("mysql-metrics");
    let port = servers::free_port();
    let password = "pw-'\"x";
    let mut mariadb = servers::mariadb(&scratch, port, "watch", password);
    let pidfile = mariadb.pidfile.display().to_string();
    let socket = mariadb.dir.join("mysqld.sock");
    let daemon = Daemon::builder("mysql-metrics")
        .file("inspeq.conf", &conf(servers::free_port()))
        .file(
            "services.d/mariadb.inq",
            &format!(
                "check process mariadb-tcp with pidfile {pidfile}, hostname 127.0.0.1, port {port}, username watch, \
                 password \"pw-'\\\"x\"\n\
                 \x20 if mysql:Queries > 300/sec then alert\n\
                 \x20 if mysql:Com_select > 1000 then alert\n\
                 \x20 if mysql:Threads_connected > 100 then alert\n\
                 \x20 if mysql is unreachable for 2 cycles then alert\n\
                 check process mariadb-root with pidfile {pidfile}, socket {socket}\n\
                 \x20 if mysql:Open_tables > 100000 then alert\n\
                 check process mariadb-lag with pidfile {pidfile}, socket {socket}\n\
                 \x20 if mysql:Seconds_Behind_Master > 60 then alert\n\
                 \x20 if mysql is unreachable then alert\n\
                 check process mariadb-badauth with pidfile {pidfile}, hostname 127.0.0.1, port {port}, \
                 username watch, password wrong\n\
                 \x20 if mysql is unreachable then alert\n",
                socket = socket.display(),
            ),
        )
        .arg("--no-ebpf")
        .start();

    // Over TCP with a password (quotes and all), and over the socket as root with no password: Debian's
    // `unix_socket` login. A wrong password is a failure with the server's words, not a zero.
    let tcp = wait_collected(&daemon, "mariadb-tcp", "mysql");
    assert_eq!(tcp["address"], format!("127.0.0.1:{port}"));
    let unix = wait_collected(&daemon, "mariadb-root", "mysql");
    assert_eq!(unix["address"], format!("unix:{}", socket.display()));
    let refused =
        daemon.stdout.wait("the wrong password alerted", LIMIT, |l| is_alert(l, "mariadb-badauth", "unreachable"));
    assert!(refused.contains("Access denied"), "{refused}");
    assert!(!refused.contains("wrong"), "the password in an alert: {refused}");
    let tables = wait_for("Open_tables over the socket", LIMIT, || {
        rule(&daemon, "mariadb-root", "mysql:Open_tables > 100000")?["value"].as_f64()
    });
    assert!(tables >= 1.0, "{tables}");
    let threads = wait_for("Threads_connected", LIMIT, || {
        rule(&daemon, "mariadb-tcp", "mysql:Threads_connected > 100")?["value"].as_f64()
    });
    assert!(threads >= 1.0, "inspeq's own connections at least: {threads}");

    // A lag rule on a server that is no replica is not silently unknown: the collection fails, saying why.
    let lag = daemon.stdout.wait("the lag rule's failure", LIMIT, |l| is_alert(l, "mariadb-lag", "unreachable"));
    assert!(lag.contains("no replica"), "{lag}");

    // Idle: inspeq's own queries are a few a second.
    let idle = wait_for("a rate of Queries", LIMIT, || {
        rule(&daemon, "mariadb-tcp", "mysql:Queries > 300/sec")?["value"].as_f64()
    });
    assert!((0.0..300.0).contains(&idle), "an idle MariaDB at {idle} queries/s");

    // Load: batches of SELECTs, each a query, until the per-cycle and per-second rules fire.
    let batch = "SELECT 1;".repeat(3000);
    for _ in 0..100 {
        servers::mariadb_sql(&mariadb, &batch);
        let fired = |name: &str| daemon.stdout.count(|l| is_alert(l, "mariadb-tcp", "rule_failed") && l.contains(name));
        if fired("mysql:Queries") > 0 && fired("mysql:Com_select") > 0 {
            break;
        }
    }
    let busy = daemon.stdout.wait("the Queries/sec alert", LIMIT, |l| {
        is_alert(l, "mariadb-tcp", "rule_failed") && l.contains("mysql:Queries")
    });
    assert!(busy.contains("above 300/sec"), "{busy}");
    daemon.stdout.wait("the Com_select alert", LIMIT, |l| {
        is_alert(l, "mariadb-tcp", "rule_failed") && l.contains("mysql:Com_select")
    });
    assert!(show(&daemon, "mariadb-tcp", "mysql:Queries").contains("/s"));

    // Stopped: the rules lose their values and the unreachable rule fires.
    mariadb.stop();
    let down = daemon.stdout.wait("the unreachable alert", LIMIT, |l| is_alert(l, "mariadb-tcp", "unreachable"));
    assert!(down.contains(&format!("127.0.0.1:{port}")), "{down}");
    let queries = rule(&daemon, "mariadb-tcp", "mysql:Queries > 300/sec").unwrap();
    assert!(queries["value"].is_null(), "a value from before the failure: {queries}");
}

#[test]
fn postgresql_rules_fire_at_the_servers_values_over_tcp_and_the_socket_and_a_stopped_server_is_unreachable() {
    let test =
        "postgresql_rules_fire_at_the_servers_values_over_tcp_and_the_socket_and_a_stopped_server_is_unreachable";
    if !privileged_with(test, &[servers::PSQL]) {
        return;
    }
    if servers::postgres_bin().is_none() {
        tests::cannot_run(test, "no PostgreSQL in /usr/lib/postgresql (cargo xtask setup installs it)");
        return;
    }
    let scratch = Scratch::new("postgresql-metrics");
    let port = servers::free_port();
    let password = "pg-'\"pw";
    let mut pg = servers::postgres(&scratch, port, password);
    let pidfile = pg.pidfile.display().to_string();
    let daemon = Daemon::builder("postgresql-metrics")
        .file("inspeq.conf", &conf(servers::free_port()))
        .file(
            "services.d/postgresql.inq",
            &format!(
                "check process pg-tcp with pidfile {pidfile}, hostname 127.0.0.1, port {port}, username postgres, \
                 password \"pg-'\\\"pw\", database postgres\n\
                 \x20 if postgresql:xact_commit > 200/sec then alert\n\
                 \x20 if postgresql:total_size > 1m then alert\n\
                 \x20 if postgresql:numbackends > 100 then alert\n\
                 \x20 if postgresql:blk_hit_rate < 0 then alert\n\
                 \x20 if postgresql is unreachable for 2 cycles then alert\n\
                 check process pg-unix with pidfile {pidfile}, socket {dir}/.s.PGSQL.{port}\n\
                 \x20 if postgresql:max_connections > 1000 then alert\n\
                 check process pg-badauth with pidfile {pidfile}, hostname 127.0.0.1, port {port}, password wrong\n\
                 \x20 if postgresql is unreachable then alert\n",
                dir = pg.dir.display(),
            ),
        )
        .arg("--no-ebpf")
        .start();

    // Over TCP with SCRAM and a password with quotes, and over the socket (trusted, as `postgres`).
    let tcp = wait_collected(&daemon, "pg-tcp", "postgresql");
    assert_eq!(tcp["address"], format!("127.0.0.1:{port}"));
    wait_collected(&daemon, "pg-unix", "postgresql");
    let max = wait_for("max_connections over the socket", LIMIT, || {
        rule(&daemon, "pg-unix", "postgresql:max_connections > 1000")?["value"].as_f64()
    });
    assert_eq!(max, 20.0, "the server's setting");
    let refused = daemon.stdout.wait("the wrong password alerted", LIMIT, |l| is_alert(l, "pg-badauth", "unreachable"));
    assert!(refused.contains("password authentication failed"), "{refused}");
    let backends =
        wait_for("numbackends", LIMIT, || rule(&daemon, "pg-tcp", "postgresql:numbackends > 100")?["value"].as_f64());
    assert!(backends >= 1.0, "inspeq's own connections at least: {backends}");
    let hits =
        wait_for("blk_hit_rate", LIMIT, || rule(&daemon, "pg-tcp", "postgresql:blk_hit_rate < 0")?["value"].as_f64());
    assert!((0.0..=100.0).contains(&hits), "a percentage: {hits}");
    let size =
        wait_for("total_size", LIMIT, || rule(&daemon, "pg-tcp", "postgresql:total_size > 1m")?["value"].as_f64());
    assert!(size < 1024.0 * 1024.0, "a fresh cluster's tables: {size}");

    // A table of about 3 MiB takes total_size past 1m.
    servers::psql(&pg, "CREATE TABLE big AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 25000) g;");
    let grown = daemon
        .stdout
        .wait("the total_size alert", LIMIT, |l| is_alert(l, "pg-tcp", "rule_failed") && l.contains("total_size"));
    assert!(grown.contains("above 1m"), "{grown}");

    // Transactions: each statement of the file is one, until the per-second rule fires.
    let idle = wait_for("a rate of xact_commit", LIMIT, || {
        rule(&daemon, "pg-tcp", "postgresql:xact_commit > 200/sec")?["value"].as_f64()
    });
    assert!((0.0..200.0).contains(&idle), "an idle PostgreSQL at {idle} commits/s");
    let batch = "SELECT 1;\n".repeat(2000);
    for _ in 0..100 {
        servers::psql(&pg, &batch);
        if daemon.stdout.count(|l| is_alert(l, "pg-tcp", "rule_failed") && l.contains("xact_commit")) > 0 {
            break;
        }
    }
    let busy = daemon
        .stdout
        .wait("the commits/sec alert", LIMIT, |l| is_alert(l, "pg-tcp", "rule_failed") && l.contains("xact_commit"));
    assert!(busy.contains("above 200/sec"), "{busy}");

    // Stopped (a fast shutdown, which ends inspeq's session too): unknown, then unreachable.
    pg.signal(libc::SIGINT);
    let down = daemon.stdout.wait("the unreachable alert", LIMIT, |l| is_alert(l, "pg-tcp", "unreachable"));
    assert!(down.contains(&format!("127.0.0.1:{port}")), "{down}");
    let commits = rule(&daemon, "pg-tcp", "postgresql:xact_commit > 200/sec").unwrap();
    assert!(commits["value"].is_null(), "a value from before the failure: {commits}");
    pg.stop();
}
