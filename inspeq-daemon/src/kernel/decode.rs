//! Raw ring-buffer records → [`Observation`]s. Pure: bytes in, values out, and a
//! typed error for a record this build does not understand (never a panic).

use std::{
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use inspeq_common::{
    EXIT_FLAG_OOM_KILLED, EXIT_FLAG_RSS_KNOWN, EXIT_FLAG_STATUS_KNOWN, EventKind, Header, LISTEN_FAMILY_INET,
    LISTEN_FAMILY_INET6, ListenClosed, ProcessExit, ProcessFork, RSS_CROSSED_DOWN, RSS_CROSSED_UP, RSS_MOVED,
    RssChange, RssTotalChange,
};

use super::observation::{ExitStatus, Observation, ProcessExited, RssDirection, WatchId};

/// Why a record was not decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("record of kind {kind:?} is {len} bytes, expected {expected}")]
    BadSize { kind: EventKind, len: usize, expected: usize },
    /// The header's own size disagrees with this build's layout of the kind: the
    /// programs and the daemon were built from different wire formats.
    #[error("record of kind {kind:?} says it is {header} bytes, this build's layout is {expected}")]
    SizeMismatch { kind: EventKind, header: u16, expected: usize },
    #[error("RSS record with unknown direction {0}")]
    BadDirection(u32),
    #[error("listener record with address family {0}, neither AF_INET nor AF_INET6")]
    BadFamily(u16),
}

fn read<T: Copy>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= size_of::<T>());
    // SAFETY: the caller checked the length; the wire types are Pod and
    // read_unaligned does not need the ring's 8-byte alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// The record as a `T`, once both the bytes received and the size the program
/// wrote in the header agree with `T`'s layout.
fn sized<T: Copy>(kind: EventKind, header: &Header, bytes: &[u8]) -> Result<T, DecodeError> {
    if usize::from(header.size) != size_of::<T>() {
        return Err(DecodeError::SizeMismatch { kind, header: header.size, expected: size_of::<T>() });
    }
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::BadSize { kind, len: bytes.len(), expected: size_of::<T>() });
    }
    Ok(read(bytes))
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<Observation, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    let header: Header = read(bytes);
    let kind = EventKind::from_u8(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    let watch = WatchId(header.watch_id);
    Ok(match kind {
        EventKind::Exit => {
            let e: ProcessExit = sized(kind, &header, bytes)?;
            let status = if e.flags & EXIT_FLAG_STATUS_KNOWN != 0 {
                ExitStatus::from_wait_status(e.exit_status)
            } else {
                ExitStatus::Unknown
            };
            Observation::ProcessExited(ProcessExited {
                watch,
                pid: e.tgid,
                ppid: e.ppid,
                status,
                oom_killed: e.flags & EXIT_FLAG_OOM_KILLED != 0,
                rss_bytes: (e.flags & EXIT_FLAG_RSS_KNOWN != 0).then_some(e.rss_bytes),
                cgroup_id: e.cgroup_id,
                comm: comm(&e.comm),
                ktime_ns: e.header.ktime_ns,
            })
        }
        EventKind::Fork => {
            let e: ProcessFork = sized(kind, &header, bytes)?;
            Observation::ProcessForked {
                watch,
                parent: e.parent_tgid,
                child: e.child_tgid,
                cgroup_id: e.cgroup_id,
                ktime_ns: e.header.ktime_ns,
            }
        }
        EventKind::Rss => {
            let e: RssChange = sized(kind, &header, bytes)?;
            let direction = match e.direction {
                RSS_CROSSED_UP => RssDirection::Up,
                RSS_CROSSED_DOWN => RssDirection::Down,
                RSS_MOVED => RssDirection::Moved,
                other => return Err(DecodeError::BadDirection(other)),
            };
            Observation::RssCrossed {
                watch,
                pid: e.tgid,
                direction,
                rss_bytes: e.rss_bytes,
                threshold_bytes: e.threshold_bytes,
                cgroup_id: e.cgroup_id,
                ktime_ns: e.header.ktime_ns,
            }
        }
        EventKind::RssTotal => {
            let e: RssTotalChange = sized(kind, &header, bytes)?;
            let direction = match e.direction {
                RSS_CROSSED_UP => RssDirection::Up,
                RSS_CROSSED_DOWN => RssDirection::Down,
                other => return Err(DecodeError::BadDirection(other)),
            };
            Observation::RssTotalCrossed {
                watch,
                pid: e.tgid,
                direction,
                total_bytes: e.total_bytes,
                threshold_bytes: e.threshold_bytes,
                ktime_ns: e.header.ktime_ns,
            }
        }
        EventKind::ListenClosed => {
            let e: ListenClosed = sized(kind, &header, bytes)?;
            Observation::ListenerClosed {
                watch,
                pid: e.tgid,
                addr: listen_addr(e.family, &e.addr, e.port)?,
                cgroup_id: e.cgroup_id,
                ktime_ns: e.header.ktime_ns,
            }
        }
    })
}

/// A listener's address from the record: the address bytes are in network
/// order, the port in host order (as the tracepoint gives them).
fn listen_addr(family: u16, addr: &[u8; 16], port: u16) -> Result<SocketAddr, DecodeError> {
    match family {
        LISTEN_FAMILY_INET => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        LISTEN_FAMILY_INET6 => Ok(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(*addr), port, 0, 0))),
        other => Err(DecodeError::BadFamily(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: wire types are Pod with no padding.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn exit(status: u32, flags: u32) -> ProcessExit {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"sleep");
        ProcessExit {
            header: Header::new(EventKind::Exit, size_of::<ProcessExit>(), 7, 1234),
            tgid: 42,
            ppid: 1,
            exit_status: status,
            flags,
            rss_bytes: 4096,
            cgroup_id: 99,
            comm,
        }
    }

    #[test]
    fn exit_records_become_process_exited() {
        let raw = exit(3 << 8, EXIT_FLAG_STATUS_KNOWN | EXIT_FLAG_RSS_KNOWN);
        let Observation::ProcessExited(e) = decode(&bytes_of(&raw)).unwrap() else { panic!("not an exit") };
        assert_eq!(e.status, ExitStatus::Code(3));
        assert_eq!((e.pid, e.watch, e.rss_bytes, e.comm.as_str()), (42, WatchId(7), Some(4096), "sleep"));
        assert!(!e.oom_killed);

        let raw = exit(9, EXIT_FLAG_STATUS_KNOWN | EXIT_FLAG_OOM_KILLED);
        let Observation::ProcessExited(e) = decode(&bytes_of(&raw)).unwrap() else { panic!("not an exit") };
        assert_eq!(e.status, ExitStatus::Signal { signal: 9, core_dumped: false });
        assert!(e.oom_killed);
        assert_eq!(e.rss_bytes, None);

        let raw = exit(0, 0);
        let Observation::ProcessExited(e) = decode(&bytes_of(&raw)).unwrap() else { panic!("not an exit") };
        assert_eq!(e.status, ExitStatus::Unknown);
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short { len: 3 }));
        let mut raw = bytes_of(&exit(0, 0));
        raw[0] = 77;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownKind { kind: 77 }));
        let raw = bytes_of(&exit(0, 0));
        assert!(matches!(decode(&raw[..40]), Err(DecodeError::BadSize { .. })));
        // A program built from another layout: the header's size is the one it wrote.
        let mut other = exit(0, 0);
        other.header.size -= 8;
        assert_eq!(
            decode(&bytes_of(&other)),
            Err(DecodeError::SizeMismatch {
                kind: EventKind::Exit,
                header: (size_of::<ProcessExit>() - 8) as u16,
                expected: size_of::<ProcessExit>()
            })
        );
        let rss = RssChange {
            header: Header::new(EventKind::Rss, size_of::<RssChange>(), 1, 5),
            tgid: 1,
            direction: 9,
            rss_bytes: 0,
            threshold_bytes: 0,
            cgroup_id: 0,
        };
        assert_eq!(decode(&bytes_of(&rss)), Err(DecodeError::BadDirection(9)));
    }

    #[test]
    fn total_records_become_total_crossings() {
        let total = RssTotalChange {
            header: Header::new(EventKind::RssTotal, size_of::<RssTotalChange>(), 4, 12),
            direction: RSS_CROSSED_DOWN,
            tgid: 8,
            total_bytes: 100 << 20,
            threshold_bytes: 128 << 20,
        };
        assert_eq!(
            decode(&bytes_of(&total)).unwrap(),
            Observation::RssTotalCrossed {
                watch: WatchId(4),
                pid: 8,
                direction: RssDirection::Down,
                total_bytes: 100 << 20,
                threshold_bytes: 128 << 20,
                ktime_ns: 12,
            }
        );
        // A total never "moves": only crossings leave the kernel.
        let moved = RssTotalChange { direction: RSS_MOVED, ..total };
        assert_eq!(decode(&bytes_of(&moved)), Err(DecodeError::BadDirection(RSS_MOVED)));
    }

    fn listener(family: u16, addr: [u8; 16], port: u16) -> ListenClosed {
        ListenClosed {
            header: Header::new(EventKind::ListenClosed, size_of::<ListenClosed>(), 3, 77),
            tgid: 1234,
            family,
            port,
            addr,
            cgroup_id: 25,
        }
    }

    #[test]
    fn listener_records_become_listener_closed() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            decode(&bytes_of(&listener(LISTEN_FAMILY_INET, v4, 8080))).unwrap(),
            Observation::ListenerClosed {
                watch: WatchId(3),
                pid: 1234,
                addr: "127.0.0.1:8080".parse().unwrap(),
                cgroup_id: 25,
                ktime_ns: 77,
            }
        );
        // Network-order address bytes, host-order port: [::1]:443.
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let Observation::ListenerClosed { addr, .. } =
            decode(&bytes_of(&listener(LISTEN_FAMILY_INET6, v6, 443))).unwrap()
        else {
            panic!("not a listener record")
        };
        assert_eq!(addr, "[::1]:443".parse::<SocketAddr>().unwrap());
        // Listening on every address.
        let Observation::ListenerClosed { addr, .. } =
            decode(&bytes_of(&listener(LISTEN_FAMILY_INET, [0; 16], 22))).unwrap()
        else {
            panic!("not a listener record")
        };
        assert_eq!(addr, "0.0.0.0:22".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn malformed_listener_records_are_errors() {
        assert_eq!(decode(&bytes_of(&listener(1, [0; 16], 80))), Err(DecodeError::BadFamily(1)));
        let raw = bytes_of(&listener(LISTEN_FAMILY_INET, [0; 16], 80));
        assert!(matches!(decode(&raw[..40]), Err(DecodeError::BadSize { kind: EventKind::ListenClosed, .. })));
    }

    #[test]
    fn fork_and_rss_records() {
        let fork = ProcessFork {
            header: Header::new(EventKind::Fork, size_of::<ProcessFork>(), 2, 10),
            parent_tgid: 5,
            child_tgid: 6,
            cgroup_id: 3,
        };
        assert_eq!(
            decode(&bytes_of(&fork)).unwrap(),
            Observation::ProcessForked { watch: WatchId(2), parent: 5, child: 6, cgroup_id: 3, ktime_ns: 10 }
        );
        let rss = RssChange {
            header: Header::new(EventKind::Rss, size_of::<RssChange>(), 2, 11),
            tgid: 5,
            direction: RSS_CROSSED_UP,
            rss_bytes: 64 << 20,
            threshold_bytes: 32 << 20,
            cgroup_id: 3,
        };
        assert!(matches!(
            decode(&bytes_of(&rss)).unwrap(),
            Observation::RssCrossed { direction: RssDirection::Up, rss_bytes, .. } if rss_bytes == 64 << 20
        ));
    }
}
