//! The status page on the master's HTTP listener (`GET /`, `/status` and
//! its script and stylesheet under `/status/`): static files embedded in
//! the binary, so there is nothing to install and no CDN to reach. They
//! hold no data and are served without the `auth_token`; the script reads
//! everything from the admin API with the token as a bearer header (the
//! page asks for it and keeps it in the tab's `sessionStorage`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Response, StatusCode};

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("status/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("status/app.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("status/style.css"),
};

/// Only this origin's own files and API; no inline script, no framing (so
/// another site cannot overlay the Retry button).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/status" | "/status/" => Some(&INDEX),
        "/status/app.js" => Some(&SCRIPT),
        "/status/style.css" => Some(&STYLE),
        _ => None,
    }
}

/// The answer for a status page path (the file, or 405 for a method other
/// than GET and HEAD); `None` when `path` is not one of the page's.
pub fn serve(method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    let asset = asset(path)?;
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(Full::new(Bytes::from(format!(
            "{path} takes GET and HEAD only, not {method}\n"
        ))));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let headers = response.headers_mut();
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Some(response);
    }
    let mut response = Response::new(Full::new(Bytes::from_static(asset.body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // A new build's page is picked up on reload, not after a cache expiry.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_with_their_types() {
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/status", "text/html; charset=utf-8"),
            ("/status/app.js", "text/javascript; charset=utf-8"),
            ("/status/style.css", "text/css; charset=utf-8"),
        ] {
            let r = serve(&Method::GET, path).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[CONTENT_TYPE], ty, "{path}");
            assert!(r.headers().contains_key(CONTENT_SECURITY_POLICY));
        }
        assert!(serve(&Method::GET, "/metrics").is_none());
        assert!(serve(&Method::GET, "/status/other.js").is_none());
    }

    #[test]
    fn other_methods_are_refused() {
        let r = serve(&Method::POST, "/").unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn the_html_loads_only_the_embedded_files() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        assert!(html.contains("src=\"/status/app.js\""));
        assert!(html.contains("href=\"/status/style.css\""));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
