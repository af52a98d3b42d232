//! Refuses requests a browser sends on behalf of another site's page. The
//! admin API takes plain POSTs (`/api/stop`, `/api/failed/purge`, `/tasks`)
//! that a page elsewhere could send to a loopback listener without reading
//! the answer (a "simple" cross-origin request needs no CORS preflight),
//! and without an `auth_token` nothing else would stop it. Browsers mark
//! such requests with `Sec-Fetch-Site` and `Origin`; other clients (curl,
//! the `taskq` command, a producer) send neither and are not affected.

use hyper::header::{HeaderMap, HOST, ORIGIN};

/// Why the request is refused as another site's, or `None` when it is not
/// one. A browser that sends `Sec-Fetch-Site` says itself whether the page
/// is this origin's (`same-origin`, or `none`: typed in the address bar);
/// that holds behind a reverse proxy too, whose `Host` may differ. Without
/// it, an `Origin` must name the `Host` the request was sent to.
pub fn refusal(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        return (!site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none"))
            .then(|| {
                format!("requests from another site's page are refused (Sec-Fetch-Site: {site})")
            });
    }
    let origin = headers.get(ORIGIN)?.to_str().unwrap_or("");
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
    (!own).then(|| {
        format!("requests from another site's page are refused (Origin: {origin}; this is {host})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn clients_that_are_not_browsers_pass() {
        assert_eq!(refusal(&headers(&[("host", "127.0.0.1:9502")])), None);
        assert_eq!(refusal(&HeaderMap::new()), None);
    }

    #[test]
    fn the_status_page_itself_passes() {
        let own = [
            ("host", "127.0.0.1:9502"),
            ("origin", "http://127.0.0.1:9502"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(refusal(&headers(&own)), None);
        assert_eq!(
            refusal(&headers(&[
                ("host", "[::1]:9502"),
                ("origin", "http://[::1]:9502")
            ])),
            None
        );
        assert_eq!(refusal(&headers(&[("sec-fetch-site", "none")])), None);
        let proxied = [
            ("host", "127.0.0.1:9502"),
            ("origin", "https://taskq.example.com"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(refusal(&headers(&proxied)), None, "behind a TLS proxy");
    }

    #[test]
    fn another_sites_page_is_refused() {
        for pairs in [
            &[
                ("host", "127.0.0.1:9502"),
                ("origin", "http://evil.example"),
            ][..],
            &[("host", "127.0.0.1:9502"), ("origin", "null")],
            &[
                ("host", "127.0.0.1:9502"),
                ("origin", "http://127.0.0.1:8080"),
            ],
            &[("origin", "http://127.0.0.1:9502")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[
                ("host", "127.0.0.1:9502"),
                ("origin", "http://127.0.0.1:9502"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            let why = refusal(&headers(pairs)).expect("refused");
            assert!(
                why.starts_with("requests from another site's page are refused"),
                "{why}"
            );
        }
    }
}
