//! The master's HTTP listener (`metrics_listen`): HTTP/1.1 by hyper on the
//! master's own runtime, answered from the hub alone, so it answers while
//! every worker is busy. It serves `GET /metrics`; it is the place where
//! further HTTP endpoints go. With an `auth_token`, every request must
//! carry it as `Authorization: Bearer <token>`.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::connection::accept_failed;
use super::hub::Hub;
use super::metrics;

/// Connections served at once; more are closed at once, so a flood of idle
/// sockets cannot pile up in the master.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's headers, so a
/// silent or trickling one does not hold a slot.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts serving HTTP on `listener`; abort the handle to stop listening
/// (the connections end with the master's runtime).
pub fn spawn(
    listener: std::net::TcpListener,
    hub: Rc<RefCell<Hub>>,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let open = Rc::new(Cell::new(0usize));
    Ok(tokio::task::spawn_local(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            };
            if open.get() >= MAX_CONNECTIONS {
                continue;
            }
            let slot = Slot::take(&open);
            let hub = hub.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    std::future::ready(Ok::<_, Infallible>(answer(&req, &hub)))
                });
                // A client that sends garbage or goes away ends only its
                // own connection; there is nobody to tell.
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(slot);
            });
        }
    }))
}

/// One of the `MAX_CONNECTIONS` places, given back when dropped.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(open: &Rc<Cell<usize>>) -> Self {
        open.set(open.get() + 1);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The answer to one request.
fn answer<B>(req: &Request<B>, hub: &RefCell<Hub>) -> Response<Full<Bytes>> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    if !hub.borrow().token_ok(token.unwrap_or_default()) {
        return reply(
            StatusCode::UNAUTHORIZED,
            TEXT,
            "a valid auth_token is required: send it as 'Authorization: Bearer <token>'\n".into(),
            Some((WWW_AUTHENTICATE, "Bearer realm=\"taskq\"")),
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            hub.borrow_mut().metrics(),
            None,
        ),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD are allowed here\n".into(),
            Some((ALLOW, "GET, HEAD")),
        ),
        (_, path) => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("no such page: {path} (this listener serves /metrics)\n"),
            None,
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, as RFC 9110 has it); `None` for any other scheme.
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at(header.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    header: Option<(HeaderName, &'static str)>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some((name, value)) = header {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer(b"bearer  s3cret "), Some(&b"s3cret"[..]));
        assert_eq!(bearer(b"Basic czNjcmV0"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), Some(&b""[..]));
    }
}
