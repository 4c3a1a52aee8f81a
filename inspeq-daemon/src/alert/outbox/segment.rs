//! The outbox's file format: one record per line, so damage costs only the
//! records it touches.
//!
//! A segment holds the alerts of one batch the writer committed. Each line is
//! one JSON object:
//!
//! ```text
//! {"v":1,"n":0,"of":3,"alert":{...}}
//! ```
//!
//! `v` is the format version, `n` the record's place in its file and `of` how
//! many records the file was written with. Lines are read one by one: a line
//! cut short (the machine died mid-write, a truncation), garbage appended or a
//! bad sector loses the lines it touches, and `of` tells how many whole records
//! a truncation cut away. A line of another version is damage too (a newer
//! inspeq wrote it); its bytes are kept for the operator, never deleted.
//!
//! The previous version wrote one JSON array per file. It is still read, by
//! looking at the first byte: up to the first damaged element, since an array
//! cannot be resynchronised after damage.
//!
//! Pure: bytes in, bytes out. `store.rs` does the disk.

use serde::{Deserialize, Serialize};

use crate::alert::Alert;

/// The record format written by this version.
pub const VERSION: u32 = 1;

/// One line as written.
#[derive(Serialize)]
struct RecordOut<'a> {
    v: u32,
    n: usize,
    of: usize,
    alert: &'a Alert,
}

/// One line as read: the version first, so that a record of another version is
/// recognised before its alert is interpreted.
#[derive(Deserialize)]
struct RecordIn {
    v: u32,
    #[serde(default)]
    of: Option<usize>,
    alert: serde_json::Value,
}

/// The bytes of a segment holding `alerts`, one line each.
pub fn encode(alerts: &[Alert]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, alert) in alerts.iter().enumerate() {
        let record = RecordOut { v: VERSION, n, of: alerts.len(), alert };
        // An `Alert` is strings, numbers and enums: serialising it cannot fail.
        serde_json::to_writer(&mut out, &record).expect("an alert serialises to JSON");
        out.push(b'\n');
    }
    out
}

/// Which format a file was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One record per line (this version).
    Lines,
    /// One JSON array (the previous version).
    Array,
}

/// What a segment's bytes held.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub format: Format,
    /// The intact records' alerts, in file order.
    pub alerts: Vec<Alert>,
    /// Records that could not be read back: damaged lines, or, when a
    /// truncation cut whole records away, the number the file's own count
    /// says are missing (whichever is more). For an array, one: its damage
    /// hides how many elements followed.
    pub lost: usize,
    /// The damaged bytes (whole lines; the whole file for an array), to be kept
    /// beside the segment for an operator.
    pub damaged: Vec<u8>,
}

impl Decoded {
    pub fn is_damaged(&self) -> bool {
        self.lost > 0
    }
}

/// Reads a segment of either format.
pub fn decode(bytes: &[u8]) -> Decoded {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => decode_array(bytes),
        _ => decode_lines(bytes),
    }
}

fn decode_lines(bytes: &[u8]) -> Decoded {
    let mut alerts = Vec::new();
    let mut damaged = Vec::new();
    let mut bad_lines = 0;
    let mut declared = 0;
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = serde_json::from_slice::<RecordIn>(line)
            .ok()
            .filter(|r| r.v == VERSION)
            .and_then(|r| Some((r.of, serde_json::from_value::<Alert>(r.alert).ok()?)));
        match record {
            Some((of, alert)) => {
                declared = declared.max(of.unwrap_or(0));
                alerts.push(alert);
            }
            None => {
                bad_lines += 1;
                damaged.extend_from_slice(line);
                damaged.push(b'\n');
            }
        }
    }
    let lost = bad_lines.max(declared.saturating_sub(alerts.len()));
    Decoded { format: Format::Lines, alerts, lost, damaged }
}

/// The previous version's array, element by element, keeping what came before
/// the first damaged one.
fn decode_array(bytes: &[u8]) -> Decoded {
    use serde::de::{DeserializeSeed, SeqAccess, Visitor};

    /// Pushes each element into `into` as it is read, so the elements before an
    /// error survive it.
    struct Salvage<'a> {
        into: &'a mut Vec<Alert>,
    }

    impl<'de> Visitor<'de> for Salvage<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of alerts")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(alert) = seq.next_element::<Alert>()? {
                self.into.push(alert);
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Salvage<'_> {
        type Value = ();

        fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_seq(self)
        }
    }

    let mut alerts = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let ok = Salvage { into: &mut alerts }.deserialize(&mut deserializer).and_then(|()| deserializer.end()).is_ok();
    let (lost, damaged) = if ok { (0, Vec::new()) } else { (1, bytes.to_vec()) };
    Decoded { format: Format::Array, alerts, lost, damaged }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::alert::{AlertKind, ExitStatus};

    fn alerts(n: u32) -> Vec<Alert> {
        (0..n)
            .map(|i| {
                let mut alert = Alert::new(
                    "web1",
                    format!("svc{i}"),
                    AlertKind::Crashed { pid: 100 + i, exit: ExitStatus::Code(1) },
                    SystemTime::UNIX_EPOCH,
                );
                alert.seq = u64::from(i) + 1;
                alert
            })
            .collect()
    }

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn each_alert_is_one_versioned_line_that_reads_back_as_it_went_in() {
        let written = alerts(3);
        let bytes = encode(&written);
        assert_eq!(lines(&bytes).len(), 3);
        assert!(bytes.ends_with(b"\n"));
        let first: serde_json::Value = serde_json::from_slice(lines(&bytes)[0]).unwrap();
        assert_eq!((first["v"].as_u64(), first["n"].as_u64(), first["of"].as_u64()), (Some(1), Some(0), Some(3)));
        assert_eq!(first["alert"]["service"], "svc0");
        let read = decode(&bytes);
        assert_eq!(read, Decoded { format: Format::Lines, alerts: written, lost: 0, damaged: Vec::new() });
    }

    /// Records as earlier versions wrote them (the exit status was `alert::Exit` then, and a worker's OOM kill
    /// had no RSS): they read back as the same alerts.
    #[test]
    fn records_of_earlier_versions_still_read() {
        let at = r#""at":{"secs_since_epoch":0,"nanos_since_epoch":0}"#;
        let record = |event: &str| {
            let alert = format!(r#"{{"hostname":"h","service":"s","event":{event},"actions":[],{at},"seq":1}}"#);
            format!(r#"{{"v":1,"n":0,"of":1,"alert":{alert}}}"#)
        };
        let cases = [
            (
                r#"{"kind":"crashed","pid":2,"exit":{"code":1}}"#,
                AlertKind::Crashed { pid: 2, exit: ExitStatus::Code(1) },
            ),
            (
                r#"{"kind":"worker_crashed","pid":3,"exit":{"signal":{"signal":6,"core_dumped":true}}}"#,
                AlertKind::WorkerCrashed { pid: 3, exit: ExitStatus::Signal { signal: 6, core_dumped: true } },
            ),
            (
                r#"{"kind":"crashed","pid":4,"exit":"unknown"}"#,
                AlertKind::Crashed { pid: 4, exit: ExitStatus::Unknown },
            ),
            (r#"{"kind":"worker_oom_killed","pid":5}"#, AlertKind::WorkerOomKilled { pid: 5, rss_bytes: None }),
        ];
        for (event, kind) in cases {
            let line = record(event) + "\n";
            let read = decode(line.as_bytes());
            assert_eq!(read.lost, 0, "{line}");
            let mut expected = Alert::new("h", "s", kind, SystemTime::UNIX_EPOCH);
            expected.seq = 1;
            assert_eq!(read.alerts, vec![expected], "{line}");
        }
    }

    #[test]
    fn a_record_cut_short_is_the_only_one_lost() {
        let bytes = encode(&alerts(3));
        let cut = &bytes[..bytes.len() - 20];
        let read = decode(cut);
        assert_eq!(read.alerts, alerts(2));
        assert_eq!(read.lost, 1);
        assert_eq!(read.damaged, [lines(cut)[2], b"\n"].concat(), "the damaged bytes are kept");
    }

    #[test]
    fn whole_records_cut_away_are_counted_from_the_files_own_count() {
        let bytes = encode(&alerts(5));
        let two_lines = lines(&bytes)[..2].iter().map(|l| [*l, b"\n"].concat()).collect::<Vec<_>>().concat();
        let read = decode(&two_lines);
        assert_eq!(read.alerts, alerts(2));
        assert_eq!(read.lost, 3, "three whole records are gone");
        // Cut mid-way through the third: the partial line is one of the three.
        let read = decode(&bytes[..two_lines.len() + 10]);
        assert_eq!((read.alerts.len(), read.lost), (2, 3));
    }

    #[test]
    fn garbage_appended_loses_no_record_but_is_counted() {
        let mut bytes = encode(&alerts(3));
        bytes.extend_from_slice(b"\x00\x17garbage{\"v\":1\n\n   \n");
        let read = decode(&bytes);
        assert_eq!(read.alerts, alerts(3));
        assert_eq!(read.lost, 1, "one damaged line");
        assert_eq!(read.damaged, b"\x00\x17garbage{\"v\":1\n");
    }

    #[test]
    fn a_damaged_line_in_the_middle_costs_that_line_alone() {
        let bytes = encode(&alerts(3));
        let l = lines(&bytes);
        let middle = String::from_utf8(l[1].to_vec()).unwrap().replace("svc1", "svc1\u{0}");
        let damaged = [l[0], b"\n", middle.as_bytes(), b"\n", l[2], b"\n"].concat();
        let read = decode(&damaged);
        let services: Vec<&str> = read.alerts.iter().map(|a| a.service.as_str()).collect();
        assert_eq!((services, read.lost), (vec!["svc0", "svc2"], 1));
    }

    #[test]
    fn a_record_of_another_version_is_kept_as_damage_not_guessed_at() {
        let mut bytes = encode(&alerts(1));
        bytes.extend_from_slice(b"{\"v\":2,\"n\":1,\"of\":2,\"alert\":{\"shape\":\"new\"}}\n");
        let read = decode(&bytes);
        assert_eq!((read.alerts, read.lost), (alerts(1), 1));
        assert!(read.damaged.starts_with(b"{\"v\":2"));
    }

    #[test]
    fn the_previous_versions_arrays_are_read_up_to_their_damage() {
        let old = serde_json::to_vec(&alerts(3)).unwrap();
        let read = decode(&old);
        assert_eq!((read.format, read.alerts.clone(), read.lost), (Format::Array, alerts(3), 0));
        let cut = &old[..old.len() - 30];
        let read = decode(cut);
        assert_eq!((read.format, read.alerts.clone(), read.lost), (Format::Array, alerts(2), 1));
        assert_eq!(read.damaged, cut, "the whole damaged file is kept");
        let mut appended = old.clone();
        appended.extend_from_slice(b"garbage");
        let read = decode(&appended);
        assert_eq!((read.alerts.len(), read.lost), (3, 1));
    }

    #[test]
    fn an_empty_file_holds_nothing_and_lost_nothing() {
        assert_eq!(decode(b"").alerts, []);
        assert_eq!(decode(b"\n").lost, 0);
        assert_eq!(decode(b"[]").lost, 0);
    }
}
