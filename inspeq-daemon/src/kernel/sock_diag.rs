//! The host's listening TCP sockets, from one `NETLINK_SOCK_DIAG` dump per
//! address family (`SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2` asking for
//! state `LISTEN` only): what `ss -ltn` shows, without spawning it. For the
//! cycle's socket scan: which ports a service listens on, how many connections
//! wait for its `accept` (a stuck server's queue fills while its port still
//! answers SYNs), and, on the tiers without eBPF, which listener went away.
//!
//! Each listener comes with the cgroup v2 id of its socket (`INET_DIAG_CGROUP_ID`,
//! Linux 5.9+, sent with every socket whether asked for or not; `None` on an older
//! kernel). That is the cgroup of the task that *created* the socket
//! (`sk_cgrp_data`, set at `socket()`), which is the service's own except where
//! someone else created it for the service: a systemd socket unit's listener is
//! in systemd's cgroup. The dump covers the daemon's network namespace only.
//!
//! `listeners` blocks: a dump of a few KB, answered by the kernel at once. The
//! daemon runs it in a blocking task; every receive has a 1 s timeout
//! (`SO_RCVTIMEO`), so it cannot hang. Needs no privilege (the kernel shows every
//! socket to everyone), but the `inet_diag`/`tcp_diag` modules, which the kernel
//! loads on the first request where it can.
//!
//! The messages (`struct nlmsghdr`, `struct inet_diag_req_v2` and `struct
//! inet_diag_msg` from linux/inet_diag.h, `struct nlattr`) are read and written
//! by hand at their byte offsets in [`wire`], as the process connector's are:
//! libc has the constants but not these structs.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// One listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The local address and port (`0.0.0.0` or `::` when it listens on all;
    /// an IPv6 address's scope id is the interface it is bound to, 0 for none).
    pub addr: SocketAddr,
    /// The socket's inode: `socket:[INODE]` in /proc/PID/fd of whoever holds it.
    pub inode: u64,
    /// The socket's owner (the creator's effective uid).
    pub uid: u32,
    /// The cgroup v2 id of the socket (its creator's cgroup); `None` on kernels
    /// before 5.9, which do not send it.
    pub cgroup_id: Option<u64>,
    /// Connections established and waiting for `accept` (`idiag_rqueue`).
    pub accept_queue: u32,
    /// The listen backlog (`idiag_wqueue`): the queue is full above it.
    pub backlog: u32,
}

/// Why the dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("opening a NETLINK_SOCK_DIAG socket")]
    Socket(#[source] io::Error),
    #[error("setting the socket's receive timeout")]
    Timeout(#[source] io::Error),
    #[error("sending the {family} dump request")]
    Send {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("receiving the {family} dump")]
    Receive {
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the kernel did not answer the {family} dump within {} ms", RECV_TIMEOUT.as_millis())]
    TimedOut { family: &'static str },
    #[error(
        "the kernel refused the {family} dump ({}; is inet_diag/tcp_diag missing?)",
        io::Error::from_raw_os_error(*errno)
    )]
    Refused { family: &'static str, errno: i32 },
    #[error("a {len}-byte message of the {family} dump did not fit the receive buffer")]
    Oversized { family: &'static str, len: usize },
    #[error("parsing the {family} dump")]
    Parse {
        family: &'static str,
        #[source]
        source: wire::ParseError,
    },
}

/// Each receive's limit: the kernel answers a dump at once, so a second of
/// silence means it never will.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// The receive buffer. The kernel fills a dump's datagrams up to 32 KiB at most
/// (netlink's `max_recvmsg_len`), so one never arrives cut.
const RECV_BYTES: usize = 64 << 10;

/// The byte layout of the messages, from the kernel's uapi headers.
pub mod wire {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    use super::Listener;

    /// `struct nlmsghdr`: len u32 @0, type u16 @4, flags u16 @6, seq u32 @8, pid u32 @12.
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    /// linux/sock_diag.h.
    pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
    pub const NLM_F_REQUEST: u16 = 0x1;
    /// `NLM_F_ROOT | NLM_F_MATCH`.
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;
    pub const IPPROTO_TCP: u8 = 6;
    /// include/net/tcp_states.h; `idiag_states` is a bit mask of these.
    pub const TCP_LISTEN: u8 = 10;
    /// `struct inet_diag_req_v2`: sdiag_family u8 @0, sdiag_protocol u8 @1,
    /// idiag_ext u8 @2, pad u8 @3, idiag_states u32 @4, id (`inet_diag_sockid`) @8.
    pub const REQ_V2_LEN: usize = 8 + SOCKID_LEN;
    /// `struct inet_diag_sockid`: sport be16 @0, dport be16 @2, src be32[4] @4,
    /// dst be32[4] @20, if u32 @36, cookie u32[2] @40.
    pub const SOCKID_LEN: usize = 48;
    /// `struct inet_diag_msg`: family u8 @0, state u8 @1, timer u8 @2, retrans u8
    /// @3, id @4, expires u32 @52, rqueue u32 @56, wqueue u32 @60, uid u32 @64,
    /// inode u32 @68; its attributes (`struct nlattr`: len u16, type u16, each
    /// padded to 4 bytes) follow @72.
    pub const MSG_LEN: usize = 72;
    const ID: usize = 4;
    const RQUEUE: usize = 56;
    const WQUEUE: usize = 60;
    const UID: usize = 64;
    const INODE: usize = 68;
    pub const NLA_HDRLEN: usize = 4;
    /// `INET_DIAG_CGROUP_ID` (Linux 5.9): the socket's cgroup v2 id, a u64.
    pub const INET_DIAG_CGROUP_ID: u16 = 21;

    /// How a datagram of the dump left it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Dump {
        /// More datagrams follow.
        More,
        /// `NLMSG_DONE`: the dump is complete.
        Done,
        /// The kernel ended the dump with this errno (`NLMSG_ERROR`, or a
        /// negative `NLMSG_DONE`, as it answers a family or protocol it has no
        /// handler for).
        Failed(i32),
    }

    /// What did not parse.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum ParseError {
        #[error("netlink message of {len} bytes at offset {at} runs past the datagram's {size}")]
        Truncated { at: usize, len: usize, size: usize },
        #[error("inet_diag_msg of {0} bytes is shorter than its {MSG_LEN}")]
        ShortMessage(usize),
        #[error("attribute of {len} bytes at offset {at} runs past its message")]
        BadAttribute { at: usize, len: usize },
        #[error("socket of address family {0}, neither AF_INET nor AF_INET6")]
        BadFamily(u8),
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The dump request for one address family's TCP sockets in state LISTEN.
    /// No extensions are asked for (`idiag_ext` 0): the accept queue and backlog
    /// are in the message itself, and the cgroup id comes unasked.
    pub fn request(family: u8, seq: u32) -> Vec<u8> {
        let len = NLMSG_HDRLEN + REQ_V2_LEN;
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel is port 0
        m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
        m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        // A zero socket id: no port or address filter.
        m.resize(len, 0);
        m
    }

    /// Parses one datagram of the dump answering request `seq`, appending its
    /// listeners to `out`. Messages of other requests are skipped.
    pub fn parse(datagram: &[u8], seq: u32, out: &mut Vec<Listener>) -> Result<Dump, ParseError> {
        let mut at = 0;
        while at + NLMSG_HDRLEN <= datagram.len() {
            let len = u32_at(datagram, at) as usize;
            if len < NLMSG_HDRLEN || at + len > datagram.len() {
                return Err(ParseError::Truncated { at, len, size: datagram.len() });
            }
            let kind = u16_at(datagram, at + 4);
            let of_request = u32_at(datagram, at + 8) == seq;
            let payload = &datagram[at + NLMSG_HDRLEN..at + len];
            // NLMSG_ALIGN: messages start on 4-byte boundaries.
            at += (len + 3) & !3;
            if !of_request {
                continue;
            }
            match kind {
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(listener) = listener(payload)? {
                        out.push(listener);
                    }
                }
                // Both carry a negative errno first (0: an acknowledgement, or a
                // clean end); NLMSG_DONE's is absent on some old kernels.
                NLMSG_DONE | NLMSG_ERROR => {
                    let errno = if payload.len() >= 4 { -(u32_at(payload, 0) as i32) } else { 0 };
                    return Ok(if errno == 0 { Dump::Done } else { Dump::Failed(errno) });
                }
                // NLMSG_NOOP, and anything this build does not know.
                _ => {}
            }
        }
        Ok(Dump::More)
    }

    /// One `inet_diag_msg`, or `None` for a socket not in LISTEN (the request
    /// asked the kernel to leave those out).
    fn listener(msg: &[u8]) -> Result<Option<Listener>, ParseError> {
        if msg.len() < MSG_LEN {
            return Err(ParseError::ShortMessage(msg.len()));
        }
        if msg[1] != TCP_LISTEN {
            return Ok(None);
        }
        // The port and addresses are in network byte order.
        let port = u16::from_be_bytes([msg[ID], msg[ID + 1]]);
        let src = &msg[ID + 4..ID + 20];
        let addr = match msg[0] {
            AF_INET => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(src[0], src[1], src[2], src[3]), port)),
            AF_INET6 => {
                let ip: [u8; 16] = src.try_into().expect("16 bytes");
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, u32_at(msg, ID + 36)))
            }
            other => return Err(ParseError::BadFamily(other)),
        };
        let mut cgroup_id = None;
        let mut a = MSG_LEN;
        while a + NLA_HDRLEN <= msg.len() {
            let len = usize::from(u16_at(msg, a));
            if len < NLA_HDRLEN || a + len > msg.len() {
                return Err(ParseError::BadAttribute { at: a, len });
            }
            // The top bits are NLA_F_NESTED and NLA_F_NET_BYTEORDER.
            let kind = u16_at(msg, a + 2) & 0x3fff;
            if kind == INET_DIAG_CGROUP_ID && len >= NLA_HDRLEN + 8 {
                cgroup_id = Some(u64_at(msg, a + NLA_HDRLEN));
            }
            a += (len + 3) & !3;
        }
        Ok(Some(Listener {
            addr,
            inode: u64::from(u32_at(msg, INODE)),
            uid: u32_at(msg, UID),
            cgroup_id,
            accept_queue: u32_at(msg, RQUEUE),
            backlog: u32_at(msg, WQUEUE),
        }))
    }
}

use wire::Dump;

/// Every listening TCP socket (IPv4, then IPv6) in the daemon's network
/// namespace. Blocking, bounded by a 1 s timeout per receive.
pub fn listeners() -> Result<Vec<Listener>, SockDiagError> {
    let fd = socket()?;
    let mut buf = vec![0u8; RECV_BYTES];
    let mut out = Vec::new();
    for (seq, family, name) in [(1, wire::AF_INET, "IPv4"), (2, wire::AF_INET6, "IPv6")] {
        dump(&fd, family, seq, name, &mut buf, &mut out)?;
    }
    Ok(out)
}

/// Whose listening sockets to pick: a service's cgroup (its directory and those below it; the sockets created
/// there carry their ids), and its processes (the sockets their descriptors hold, read from `/proc/PID/fd` of those
/// processes only), which decide for a service without a cgroup of its own and on a kernel that sends no cgroup id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub cgroup: Option<std::path::PathBuf>,
    pub processes: Vec<u32>,
}

/// The listeners among `all` that are `owner`'s. Blocking (cgroup directories, `/proc/PID/fd`): the daemon calls
/// it off the loop.
#[must_use]
pub fn owned(all: &[Listener], owner: &Owner) -> Vec<Listener> {
    match &owner.cgroup {
        Some(dir) if all.iter().all(|l| l.cgroup_id.is_some()) => {
            let ids = super::cgroup::ids_below(dir);
            all.iter().filter(|l| l.cgroup_id.is_some_and(|id| ids.contains(&id))).cloned().collect()
        }
        _ => {
            let inodes: std::collections::BTreeSet<u64> =
                owner.processes.iter().flat_map(|pid| socket_inodes(*pid)).collect();
            all.iter().filter(|l| inodes.contains(&l.inode)).cloned().collect()
        }
    }
}

/// The inodes of the sockets process `pid` holds (`socket:[INODE]` links in `/proc/PID/fd`).
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

fn socket() -> Result<OwnedFd, SockDiagError> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(SockDiagError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t, tv_usec: 0 };
    // SAFETY: the option value is a timeval that outlives the call.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(SockDiagError::Timeout(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// One family's dump, to its `NLMSG_DONE`.
fn dump(
    fd: &OwnedFd,
    family: u8,
    seq: u32,
    name: &'static str,
    buf: &mut [u8],
    out: &mut Vec<Listener>,
) -> Result<(), SockDiagError> {
    let request = wire::request(family, seq);
    // Unbound: the kernel is the destination, and binds the socket to a port at
    // the first send.
    // SAFETY: request is valid for its length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(SockDiagError::Send { family: name, source: io::Error::last_os_error() });
    }
    loop {
        // MSG_TRUNC: the datagram's real length, to tell a cut one.
        // SAFETY: buf is valid for writing its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Err(SockDiagError::TimedOut { family: name }),
                _ => return Err(SockDiagError::Receive { family: name, source: err }),
            }
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(SockDiagError::Oversized { family: name, len: n });
        }
        match wire::parse(&buf[..n], seq, out).map_err(|source| SockDiagError::Parse { family: name, source })? {
            Dump::More => {}
            Dump::Done => return Ok(()),
            Dump::Failed(errno) => return Err(SockDiagError::Refused { family: name, errno }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{self, Dump, ParseError};
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    // Captured on the reference VM (x86_64, Linux 6.18) from a NETLINK_SOCK_DIAG
    // socket answering `request(AF_INET|AF_INET6, 7)`: a listener on 0.0.0.0:2024
    // (backlog 128, root cgroup), one on 127.0.0.1:46027 (backlog 8, 3 connections
    // never accepted, cgroup 25), one on [::1]:55747 (backlog 4, cgroup 25, IPV6_V6ONLY
    // attribute), and each dump's NLMSG_DONE.
    const V4: &str = "7c0000001400020007000000d3410000020a000007e8000000000000000000000000000000000000000000000000000000000000000000000000000001000000000000000000000000000000800000000000000025040000050008000000000008000f00000000000c001500010000000000000006001600520000007c0000001400020007000000d3410000020a0000b3cb00007f0000010000000000000000000000000000000000000000000000000000000000000000020000000000000000000000030000000800000000000000c4690000050008000000000008000f00000000000c00150019000000000000000600160052000000";
    const V6: &str = "840000001400020007000000d34100000a0a0000d9c30000000000000000000000000000000000010000000000000000000000000000000000000000030000000000000000000000000000000400000000000000c5690000050008000000000005000b000100000008000f00000000000c00150019000000000000000600160012000000";
    const DONE: &str = "140000000300020007000000d341000000000000";
    // A dump of protocol 99 (no handler): NLMSG_DONE with -ENOENT, seq 9.
    const DONE_ENOENT: &str = "14000000030002000900000046430000feffffff";
    // A request cut after its first 8 bytes: NLMSG_ERROR -EINVAL echoing it, seq 11.
    const ERROR_EINVAL: &str =
        "2c000000020000000b00000054440000eaffffff18000000140001030b000000000000000206000000040000";

    fn parse(text: &str, seq: u32) -> (Vec<Listener>, Dump) {
        let mut out = Vec::new();
        let dump = wire::parse(&hex(text), seq, &mut out).unwrap();
        (out, dump)
    }

    #[test]
    fn the_request_asks_for_tcp_listeners_of_one_family() {
        let r = wire::request(wire::AF_INET6, 2);
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20, "SOCK_DIAG_BY_FAMILY");
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301, "NLM_F_REQUEST | NLM_F_DUMP");
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 2);
        assert_eq!(&r[16..20], &[10, 6, 0, 0], "AF_INET6, IPPROTO_TCP, no extensions");
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10, "TCP_LISTEN only");
        assert!(r[24..].iter().all(|&b| b == 0), "no socket filter");
    }

    #[test]
    fn ipv4_listeners_with_queue_backlog_and_cgroup() {
        let (out, dump) = parse(V4, 7);
        assert_eq!(dump, Dump::More);
        assert_eq!(
            out,
            vec![
                Listener {
                    addr: "0.0.0.0:2024".parse().unwrap(),
                    inode: 1061,
                    uid: 0,
                    cgroup_id: Some(1),
                    accept_queue: 0,
                    backlog: 128,
                },
                Listener {
                    addr: "127.0.0.1:46027".parse().unwrap(),
                    inode: 27076,
                    uid: 0,
                    cgroup_id: Some(25),
                    accept_queue: 3,
                    backlog: 8,
                },
            ]
        );
        assert_eq!(parse(DONE, 7), (vec![], Dump::Done));
    }

    #[test]
    fn ipv6_listeners() {
        let (out, _) = parse(V6, 7);
        assert_eq!(
            out,
            vec![Listener {
                addr: "[::1]:55747".parse().unwrap(),
                inode: 27077,
                uid: 0,
                cgroup_id: Some(25),
                accept_queue: 0,
                backlog: 4,
            }]
        );
    }

    #[test]
    fn a_kernel_without_the_cgroup_attribute_gives_no_cgroup() {
        // The IPv6 message with its attributes cut off, as a kernel before 5.9 sends
        // no INET_DIAG_CGROUP_ID: the message ends at its 72 fixed bytes.
        let mut old = hex(V6);
        old.truncate(16 + wire::MSG_LEN);
        old[0] = old.len() as u8;
        let mut out = Vec::new();
        assert_eq!(wire::parse(&old, 7, &mut out), Ok(Dump::More));
        assert_eq!(out[0].cgroup_id, None);
        assert_eq!(out[0].backlog, 4);
    }

    #[test]
    fn the_kernel_ending_a_dump_with_an_error() {
        assert_eq!(parse(DONE_ENOENT, 9), (vec![], Dump::Failed(libc::ENOENT)));
        assert_eq!(parse(ERROR_EINVAL, 11), (vec![], Dump::Failed(libc::EINVAL)));
    }

    #[test]
    fn messages_of_another_request_are_skipped() {
        assert_eq!(parse(V4, 8), (vec![], Dump::More));
        assert_eq!(parse(DONE, 8), (vec![], Dump::More));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut out = Vec::new();
        let cut = &hex(V4)[..100];
        assert!(matches!(wire::parse(cut, 7, &mut out), Err(ParseError::Truncated { at: 0, len: 124, size: 100 })));
        // A message too short for an inet_diag_msg.
        let mut short = hex(V6);
        short.truncate(16 + 40);
        short[0] = short.len() as u8;
        assert_eq!(wire::parse(&short, 7, &mut out), Err(ParseError::ShortMessage(40)));
        // An attribute whose length runs past its message.
        let mut bad = hex(V6);
        let first_attr = 16 + wire::MSG_LEN;
        bad[first_attr] = 0xf0;
        assert!(matches!(wire::parse(&bad, 7, &mut out), Err(ParseError::BadAttribute { at: 72, len: 0xf0 })));
        // A family that is neither.
        let mut unix = hex(V6);
        unix[16] = 1;
        assert_eq!(wire::parse(&unix, 7, &mut out), Err(ParseError::BadFamily(1)));
    }

    #[test]
    fn errors_name_the_family_and_errno() {
        let err = SockDiagError::Refused { family: "IPv6", errno: libc::ENOENT };
        let text = err.to_string();
        assert!(text.starts_with("the kernel refused the IPv6 dump (No such file or directory"), "{text}");
    }
}
