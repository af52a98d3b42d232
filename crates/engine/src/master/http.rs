//! The master's HTTP listener (`metrics_listen`): HTTP/1.1 by hyper on the
//! master's own runtime, answered from the hub alone, so it answers while
//! every worker is busy. It serves `GET /metrics`, through `api.rs` the
//! admin JSON API and `POST /tasks`, and through `status_page.rs` the
//! status page; this file is the transport (auth, body limits, status
//! lines). With an `auth_token`, every request but the status page's static
//! files (which hold no data) must carry it as `Authorization: Bearer <token>`;
//! what a browser sends for another site's page is refused (`cross_site.rs`).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::api::{self, Endpoint};
use super::connection::accept_failed;
use super::cross_site;
use super::hub::Hub;
use super::metrics;
use super::status_page;

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
                    let hub = hub.clone();
                    async move { Ok::<_, Infallible>(answer(req, &hub).await) }
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
async fn answer(req: Request<Incoming>, hub: &Rc<RefCell<Hub>>) -> Response<Full<Bytes>> {
    if let Some(page) = status_page::serve(req.method(), req.uri().path()) {
        return page;
    }
    let route = api::route(req.method(), req.uri().path());
    if let Some(why) = cross_site::refusal(req.headers()) {
        return match route {
            Some(_) => json_reply(api::Reply::error(StatusCode::FORBIDDEN, why)),
            None => reply(StatusCode::FORBIDDEN, TEXT, format!("{why}\n"), None),
        };
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    if !hub.borrow().token_ok(token.unwrap_or_default()) {
        let why = "a valid auth_token is required: send it as 'Authorization: Bearer <token>'";
        let mut response = match route {
            Some(_) => json_reply(api::Reply::error(StatusCode::UNAUTHORIZED, why)),
            None => reply(StatusCode::UNAUTHORIZED, TEXT, format!("{why}\n"), None),
        };
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"taskq\""),
        );
        return response;
    }
    match route {
        Some(Ok(endpoint)) => json_reply(endpoint_answer(endpoint, req, hub).await),
        Some(Err(refused)) => json_reply(refused),
        None => plain_answer(&req, hub),
    }
}

/// An API endpoint's answer, its body read first where it takes one.
async fn endpoint_answer(
    endpoint: Endpoint,
    req: Request<Incoming>,
    hub: &Rc<RefCell<Hub>>,
) -> api::Reply {
    let query = req.uri().query().map(str::to_string);
    let body = if endpoint.reads_body() {
        let limit = hub.borrow().config().package_max_length;
        match read_body(req, limit).await {
            Ok(body) => body,
            Err(refused) => return refused,
        }
    } else {
        Bytes::new()
    };
    api::answer(endpoint, query.as_deref(), &body, hub).await
}

/// The request body, refused with 413 above `limit` bytes
/// (`package_max_length`, as for a taskq client's message).
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, api::Reply> {
    let too_large = || {
        api::Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than package_max_length ({limit} bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(api::Reply::error(
            StatusCode::BAD_REQUEST,
            format!("the body could not be read: {e}"),
        )),
    }
}

/// `/metrics`, and the 404 for every path that is neither it, the API nor
/// the status page.
fn plain_answer<B>(req: &Request<B>, hub: &RefCell<Hub>) -> Response<Full<Bytes>> {
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
        (_, path) if path.starts_with("/api/") => json_reply(api::Reply::error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (the API has /api/ping, /api/stats, /api/history, /api/reload, /api/stop, /api/failed, /api/failed/<id>, /api/failed/retry, /api/failed/purge, /api/batches and /tasks)"),
        )),
        (_, path) => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("no such page: {path} (this listener serves the status page at /, /metrics, /api/* and /tasks)\n"),
            None,
        ),
    }
}

fn json_reply(r: api::Reply) -> Response<Full<Bytes>> {
    let mut body = r.body.to_string();
    body.push('\n');
    let mut response = reply(r.status, JSON, body, r.allow.map(|a| (ALLOW, a)));
    if let Some(secs) = r.retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
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
const JSON: &str = "application/json";

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
