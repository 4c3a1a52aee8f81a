//! `memstats:*`: a Go program's `runtime.MemStats`, as the standard library's `expvar` package serves it at
//! `/debug/vars` (`path`) on the program's own HTTP port (`port`, on localhost: the family takes no `hostname`),
//! a JSON object whose `memstats` member holds them. Debian's etcd serves it on its client port, for one.
//!
//! ```text
//! {"cmdline": [...], "memstats": {"Alloc": 3496544, "TotalAlloc": 6278344, "HeapAlloc": 3496544,
//!  "NumGC": 2, "PauseTotalNs": 376859, ...}}
//! ```
//!
//! A program's restart shows as its counters going backwards (expvar says nothing of the process's start).

use super::{CollectError, Collector, Page, Reading};
use crate::config::{metrics::Daemon, model::DaemonSource};

/// `/debug/vars` of a busy program (etcd's `raft.status`, a program's own variables) runs to tens of kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;

pub struct Memstats {
    page: Page,
}

impl Memstats {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        Memstats { page: Page::new(source, "/debug/vars", MAX_BODY_BYTES) }
    }
}

/// The catalogue's fields of the `memstats` member; `None` when the page is not expvar's JSON with one.
fn parse_vars(body: &str) -> Option<Reading> {
    let vars: serde_json::Value = serde_json::from_str(body).ok()?;
    let memstats = vars.get("memstats")?.as_object()?;
    let family = Daemon::Memstats.family();
    let values: Vec<(&'static str, f64)> = family
        .gauges
        .iter()
        .chain(family.counters)
        .filter_map(|name| Some((*name, memstats.get(*name)?.as_f64()?)))
        .collect();
    (!values.is_empty()).then_some(Reading { values, instance: None })
}

impl Collector for Memstats {
    async fn collect(&mut self) -> Result<Reading, CollectError> {
        let body = self.page.get().await?;
        parse_vars(&body).ok_or_else(|| self.page.not("expvar's /debug/vars with memstats", &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memstats_member_gives_the_catalogues_fields() {
        let body = r#"{"cmdline":["/usr/bin/etcd"],"memstats":{"Alloc":3496544,"TotalAlloc":6278344,
            "Sys":22234120,"HeapAlloc":3496544,"PauseTotalNs":376859,"NumGC":2,"BySize":[]}}"#;
        let reading = parse_vars(body).unwrap();
        assert_eq!(
            reading.values,
            vec![
                ("Alloc", 3_496_544.0),
                ("HeapAlloc", 3_496_544.0),
                ("TotalAlloc", 6_278_344.0),
                ("NumGC", 2.0),
                ("PauseTotalNs", 376_859.0),
            ]
        );
        assert_eq!(parse_vars(r#"{"cmdline":[]}"#), None);
        assert_eq!(parse_vars("Active connections: 1"), None);
    }
}
