//! statsd export, as Inspeqtor did it (`set statsd_location host:port`): after
//! every cycle, one UDP datagram per metric,
//! `<hostname>.<host|service>.<family>[.<name>]:<value>|g` for gauges (CPU as its
//! percentage, as rules compare it) and `|c` for counters (the per-cycle delta,
//! which statsd sums). UDP send errors are counted, never fatal: a missing statsd
//! must not disturb monitoring.

use std::net::UdpSocket;

/// A metric's kind, as statsd sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsdKind {
    Gauge,
    Counter,
}

/// One statsd line. Dots and colons inside names would split the metric path, so
/// they become underscores (a disk mount point `/var/log` becomes `_var_log`).
pub fn line(hostname: &str, target: &str, metric: &str, value: f64, kind: StatsdKind) -> String {
    let clean = |s: &str| s.replace(['.', ':', '/', ' ', '|', '@'], "_");
    let (family, name) = match metric.split_once(':') {
        Some((f, n)) => (f, Some(n)),
        None => (metric, None),
    };
    let mut path = format!("{}.{}.{}", clean(hostname), clean(target), clean(family));
    if let Some(name) = name {
        path.push('.');
        path.push_str(&clean(name));
    }
    let suffix = match kind {
        StatsdKind::Gauge => "g",
        StatsdKind::Counter => "c",
    };
    format!("{path}:{value:.2}|{suffix}")
}

/// A UDP statsd sink.
pub struct Statsd {
    socket: UdpSocket,
    /// Datagrams that could not be sent.
    pub errors: u64,
}

impl Statsd {
    /// Connects (UDP: only resolves and binds) to `location` (`host:port`).
    pub fn connect(location: &str) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect(location)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, errors: 0 })
    }

    /// Sends each line as its own datagram, as Inspeqtor did.
    pub fn send(&mut self, lines: &[String]) {
        for line in lines {
            if self.socket.send(line.as_bytes()).is_err() {
                self.errors += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_inspeqtors_format() {
        assert_eq!(line("web1", "host", "load:1", 0.5, StatsdKind::Gauge), "web1.host.load.1:0.50|g");
        assert_eq!(line("web1", "host", "swap", 0.0, StatsdKind::Gauge), "web1.host.swap:0.00|g");
        assert_eq!(
            line("web1.example.com", "mysql", "mysql:Queries", 12.0, StatsdKind::Counter),
            "web1_example_com.mysql.mysql.Queries:12.00|c"
        );
        assert_eq!(line("h", "host", "disk:/var/log", 42.126, StatsdKind::Gauge), "h.host.disk._var_log:42.13|g");
    }

    #[test]
    fn datagrams_reach_a_real_udp_listener() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        listener.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut statsd = Statsd::connect(&listener.local_addr().unwrap().to_string()).unwrap();
        statsd.send(&["a.host.load.1:1.00|g".into(), "a.host.swap:0.00|g".into()]);
        let mut buf = [0u8; 128];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a.host.load.1:1.00|g");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a.host.swap:0.00|g");
        assert_eq!(statsd.errors, 0);
    }
}
