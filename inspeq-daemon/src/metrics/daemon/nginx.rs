//! `nginx:*`: the `stub_status` page (`endpoint`, default `/status`) over HTTP ([`Page`]: reqwest, whose pool
//! keeps the connection open between cycles; nginx's `keepalive_timeout` is 75 s by default, so a longer cycle
//! reconnects).
//!
//! ```text
//! Active connections: 291
//! server accepts handled requests
//!  16630948 16630948 31070465
//! Reading: 6 Writing: 179 Waiting: 106
//! ```

use super::{CollectError, Collector, Page, Reading};
use crate::config::{metrics::Daemon, model::DaemonSource};

/// The page is four short lines; a longer body is not a status page.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Nginx {
    page: Page,
}

impl Nginx {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        Nginx { page: Page::new(source, "/status", MAX_BODY_BYTES) }
    }
}

/// The page's seven numbers, by the catalogue's names; `None` when it is not a `stub_status` page.
fn parse_status(page: &str) -> Option<Reading> {
    let mut lines = page.lines().map(str::trim);
    let active = lines.next()?.strip_prefix("Active connections:")?.trim();
    if lines.next()? != "server accepts handled requests" {
        return None;
    }
    let counts: Vec<&str> = lines.next()?.split_whitespace().collect();
    let [accepts, handled, requests] = counts.as_slice() else { return None };
    let states: Vec<&str> = lines.next()?.split_whitespace().collect();
    let ["Reading:", reading, "Writing:", writing, "Waiting:", waiting] = states.as_slice() else { return None };
    let fields = [
        ("Active_connections", active),
        ("accepts", *accepts),
        ("handled", *handled),
        ("requests", *requests),
        ("Reading", *reading),
        ("Writing", *writing),
        ("Waiting", *waiting),
    ];
    let read = Reading::of_fields(Daemon::Nginx.family(), fields);
    (read.values.len() == fields.len()).then_some(read)
}

impl Collector for Nginx {
    async fn collect(&mut self) -> Result<Reading, CollectError> {
        let page = self.page.get().await?;
        parse_status(&page).ok_or_else(|| self.page.not("nginx's stub_status page", &page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_page_gives_its_seven_numbers() {
        let page = "Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \n\
                    Reading: 6 Writing: 179 Waiting: 106 \n";
        let reading = parse_status(page).unwrap();
        assert_eq!(
            reading.values,
            vec![
                ("Active_connections", 291.0),
                ("accepts", 16_630_948.0),
                ("handled", 16_630_948.0),
                ("requests", 31_070_465.0),
                ("Reading", 6.0),
                ("Writing", 179.0),
                ("Waiting", 106.0),
            ]
        );
        assert_eq!(parse_status("<html>404</html>"), None);
        assert_eq!(
            parse_status(
                "Active connections: x\nserver accepts handled requests\n1 2 3\nReading: 0 Writing: 1 Waiting: 0\n"
            ),
            None
        );
    }
}
