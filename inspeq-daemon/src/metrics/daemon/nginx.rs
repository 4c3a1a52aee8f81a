//! `nginx:*`: the `stub_status` page (`endpoint`, default `/status`) over HTTP, through reqwest, whose pool keeps
//! the connection open between cycles (nginx's `keepalive_timeout` is 75 s by default; a longer cycle
//! reconnects).
//!
//! ```text
//! Active connections: 291
//! server accepts handled requests
//!  16630948 16630948 31070465
//! Reading: 6 Writing: 179 Waiting: 106
//! ```

use super::{CollectError, Collector, Reading, TIMEOUT};
use crate::config::{
    metrics::Daemon,
    model::{DaemonAddress, DaemonSource},
};

/// The page is four short lines; a longer body is not a status page.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Nginx {
    url: Result<url::Url, (String, url::ParseError)>,
    http: reqwest::Client,
}

impl Nginx {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        let path = source.path.as_deref().unwrap_or("/status");
        // nginx takes no Unix socket parameter in the catalogue: only TCP addresses reach here.
        let text = match &source.address {
            address @ DaemonAddress::Tcp { .. } => format!("http://{address}{path}"),
            DaemonAddress::Unix(path) => format!("unix:{path}"),
        };
        let url = url::Url::parse(&text).map_err(|e| (text, e));
        let http = reqwest::Client::builder()
            .user_agent(concat!("inspeq/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            // One connection, kept: what the family promises the server.
            .pool_max_idle_per_host(1)
            // The status page is this server's, never a proxy's: a proxy in the environment must not answer it.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client with these settings always builds");
        Nginx { url, http }
    }

    async fn page(&self, url: &url::Url) -> Result<String, CollectError> {
        let http = |source| CollectError::Http { url: url.to_string(), source };
        let mut response = self.http.get(url.clone()).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(CollectError::HttpStatus { url: url.to_string(), status: response.status().as_u16() });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY_BYTES {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
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
        let url = match &self.url {
            Ok(url) => url.clone(),
            Err((text, source)) => return Err(CollectError::Url { url: text.clone(), source: *source }),
        };
        let page = self.page(&url).await?;
        parse_status(&page).ok_or_else(|| CollectError::Page {
            url: url.to_string(),
            expected: "nginx's stub_status page",
            found: super::quote(page.as_bytes()),
        })
    }

    /// reqwest's pool keeps the connection; a request on one the server closed is retried by hyper itself.
    fn connected(&self) -> bool {
        false
    }

    /// A timed-out request's connection is dropped with its future; the pool keeps no broken one.
    fn disconnect(&mut self) {}
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
