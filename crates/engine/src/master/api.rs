//! The admin JSON API and task submission over HTTP, on the master's HTTP
//! listener (`metrics_listen`; the transport is `http.rs`): `GET /api/ping`,
//! `GET /api/stats`, `GET /api/history`, `POST /api/reload`, `POST /api/stop`,
//! `GET /api/failed`, `GET /api/failed/<id>`, `POST /api/failed/retry`,
//! `POST /api/failed/purge`, `GET /api/batches` and `POST /tasks`.
//! Answered by the master alone, so they work while every worker is busy;
//! errors are `{"error": "..."}` with a 4xx or 503 status.

use std::cell::RefCell;
use std::rc::Rc;

use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::asks::Asker;
use super::hub::Hub;
use super::workers::WorkerRow;
use crate::failed::{FailedOp, Which, PAGE_MAX};
use crate::payload::{Encoding, Payload};
use crate::protocol::{code, TaskRequest};

/// One API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Ping,
    Stats,
    History,
    Reload,
    Stop,
    Tasks,
    Failed,
    /// One failed task, by its id.
    FailedTask(u64),
    RetryFailed,
    PurgeFailed,
    Batches,
}

impl Endpoint {
    /// Whether its request body is read (and bounded by
    /// `package_max_length`).
    pub fn reads_body(self) -> bool {
        matches!(
            self,
            Endpoint::Reload | Endpoint::Tasks | Endpoint::RetryFailed | Endpoint::PurgeFailed
        )
    }
}

/// An API answer before it becomes an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// Seconds for a `Retry-After` header (with 503).
    pub retry_after: Option<u32>,
    /// The methods for an `Allow` header (with 405).
    pub allow: Option<&'static str>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
            retry_after: None,
            allow: None,
        }
    }

    /// `{"error": why}` with `status`.
    pub fn error(status: StatusCode, why: impl Into<String>) -> Self {
        Reply {
            status,
            body: json!({ "error": why.into() }),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER),
            allow: None,
        }
    }
}

/// What a 503 asks the producer to wait before trying again.
const RETRY_AFTER: u32 = 1;

/// The endpoint for `method` on `path`: `None` when `path` is not an API
/// path; a 405 reply when the method is not the endpoint's.
pub fn route(method: &Method, path: &str) -> Option<Result<Endpoint, Reply>> {
    let (endpoint, allowed) = match path {
        "/api/ping" => (Endpoint::Ping, "GET, HEAD"),
        "/api/stats" => (Endpoint::Stats, "GET, HEAD"),
        "/api/history" => (Endpoint::History, "GET, HEAD"),
        "/api/reload" => (Endpoint::Reload, "POST"),
        "/api/stop" => (Endpoint::Stop, "POST"),
        "/tasks" => (Endpoint::Tasks, "POST"),
        "/api/failed" => (Endpoint::Failed, "GET, HEAD"),
        "/api/failed/retry" => (Endpoint::RetryFailed, "POST"),
        "/api/failed/purge" => (Endpoint::PurgeFailed, "POST"),
        "/api/batches" => (Endpoint::Batches, "GET, HEAD"),
        _ => match path.strip_prefix("/api/failed/").map(str::parse) {
            Some(Ok(id)) => (Endpoint::FailedTask(id), "GET, HEAD"),
            _ => return None,
        },
    };
    let ok = match allowed {
        "POST" => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    Some(if ok {
        Ok(endpoint)
    } else {
        Err(Reply {
            allow: Some(allowed),
            ..Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes {allowed} only, not {method}"),
            )
        })
    })
}

/// Answers `endpoint`, with the request's query string and (for those that
/// read one) its body.
pub async fn answer(
    endpoint: Endpoint,
    query: Option<&str>,
    body: &[u8],
    hub: &Rc<RefCell<Hub>>,
) -> Reply {
    match endpoint {
        Endpoint::Ping => ping(&hub.borrow()),
        Endpoint::Stats => stats(&mut hub.borrow_mut()),
        Endpoint::History => Reply::ok(hub.borrow().history().to_json()),
        Endpoint::Reload => match task_only(query, body) {
            Ok(task_only) => reload(&hub.borrow(), task_only),
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Endpoint::Stop => stop(&hub.borrow()),
        Endpoint::Tasks => match parse_submission(body) {
            Ok((tasks, batch)) => submit(tasks, batch, hub).await,
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Endpoint::Failed => match page(query) {
            Ok((offset, limit)) => failed(FailedOp::List { offset, limit }, None, hub).await,
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Endpoint::FailedTask(id) => {
            let mut r = failed(FailedOp::Get(id), None, hub).await;
            if r.status != StatusCode::OK {
                return r;
            }
            r.body = r.body["task"].take();
            if r.body.is_null() {
                return Reply::error(
                    StatusCode::NOT_FOUND,
                    format!("no failed task has the id {id}"),
                );
            }
            r
        }
        Endpoint::RetryFailed | Endpoint::PurgeFailed => match which(body) {
            Ok(which) if endpoint == Endpoint::RetryFailed => {
                failed(FailedOp::Retry(which), Some("retried"), hub).await
            }
            Ok(which) => failed(FailedOp::Purge(which), Some("purged"), hub).await,
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Endpoint::Batches => match batch_query(query) {
            Ok(BatchQuery::Recent(limit)) => recent_batches(limit, &mut hub.borrow_mut()),
            Ok(BatchQuery::Named(name)) => batches(name.as_deref(), &mut hub.borrow_mut()),
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, e.to_string()),
        },
    }
}

/// `GET /api/batches?name=X`: one batch's progress; without a name, every
/// unfinished batch's.
fn batches(name: Option<&str>, hub: &mut Hub) -> Reply {
    match hub.batch(name) {
        Ok(Some(report)) => Reply::ok(report),
        Ok(None) => Reply::error(
            StatusCode::NOT_FOUND,
            format!("no batch named {:?}", name.unwrap_or_default()),
        ),
        Err(why) => Reply::error(StatusCode::NOT_IMPLEMENTED, why),
    }
}

/// `GET /api/batches?recent=N` (the status page): `{"batches": [...],
/// "total": T}`, up to N batches, unfinished first, and how many are
/// tracked in all.
fn recent_batches(limit: usize, hub: &mut Hub) -> Reply {
    match hub.recent_batches(limit) {
        Ok((batches, total)) => Reply::ok(json!({"batches": batches, "total": total})),
        Err(why) => Reply::error(StatusCode::NOT_IMPLEMENTED, why),
    }
}

/// Most batches one `GET /api/batches?recent=N` lists.
const MAX_RECENT: usize = 1000;

/// What a `GET /api/batches` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchQuery {
    /// One batch by its name (percent-decoded), or None for every
    /// unfinished batch.
    Named(Option<String>),
    /// The status page's list: up to this many batches.
    Recent(usize),
}

/// Reads the query of `GET /api/batches`: `name=X`, `recent=N` or nothing.
pub fn batch_query(query: Option<&str>) -> Result<BatchQuery, BadRequest> {
    let mut asked = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        asked = match (k.as_ref(), asked) {
            ("name", None) if super::batches::check_name(&v).is_ok() => {
                Some(BatchQuery::Named(Some(v.into_owned())))
            }
            ("recent", None) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_RECENT).contains(&n) => Some(BatchQuery::Recent(n)),
                _ => return Err(BadRequest::BadBatchQuery),
            },
            _ => return Err(BadRequest::BadBatchQuery),
        };
    }
    Ok(asked.unwrap_or(BatchQuery::Named(None)))
}

/// Asks the queue that keeps the failed tasks (Redis's answer comes
/// later, through the link) and waits for its answer; a count is answered
/// as `{key: n}`.
async fn failed(op: FailedOp, key: Option<&str>, hub: &Rc<RefCell<Hub>>) -> Reply {
    let (tx, rx) = tokio::sync::oneshot::channel();
    hub.borrow_mut().ask_failed(op, Asker::Http(tx));
    match rx.await {
        Ok(Value::Object(e)) if e.contains_key("error") => Reply {
            body: Value::Object(e),
            ..Reply::error(StatusCode::SERVICE_UNAVAILABLE, "")
        },
        Ok(v) => Reply::ok(match key {
            Some(key) => json!({ key: v }),
            None => v,
        }),
        Err(_) => Reply::error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"),
    }
}

/// `offset` and `limit` (default 0 and 100) of `GET /api/failed`.
pub fn page(query: Option<&str>) -> Result<(usize, usize), BadRequest> {
    let (mut offset, mut limit) = (0, 100);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n: Option<usize> = v.parse().ok();
        match (k, n) {
            ("offset", Some(n)) => offset = n,
            ("limit", Some(n)) if (1..=PAGE_MAX).contains(&n) => limit = n,
            _ => return Err(BadRequest::BadPage),
        }
    }
    Ok((offset, limit))
}

/// The failed tasks a retry or purge is for: `{"ids": [..]}` or
/// `{"all": true}`.
pub fn which(body: &[u8]) -> Result<Which, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BadRequest::Json(e.to_string()))?;
    match (value.get("all"), value.get("ids")) {
        (Some(Value::Bool(true)), None) => Ok(Which::All),
        (None, Some(Value::Array(ids))) if !ids.is_empty() => ids
            .iter()
            .map(Value::as_u64)
            .collect::<Option<Vec<u64>>>()
            .map(Which::Ids)
            .ok_or(BadRequest::BadWhich),
        _ => Err(BadRequest::BadWhich),
    }
}

fn ping(hub: &Hub) -> Reply {
    let now = super::sessions::now();
    Reply::ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "start_time": hub.start_time(),
        "uptime": (now - hub.start_time() as f64).max(0.0).floor() as u64,
        "stopping": hub.stopping(),
    }))
}

fn stats(hub: &mut Hub) -> Reply {
    let (stats, t, rows) = hub.admin_stats();
    Reply::ok(json!({
        "time": super::sessions::now(),
        "stats": stats,
        "tasks": {
            "waiting": t.waiting,
            "delayed": t.delayed,
            "running": t.running,
            "submitted": t.submitted,
            "finished": t.finished,
            "retried": t.retried,
            "requeued": t.requeued,
            "failed": t.failed,
        },
        "workers": rows.iter().map(|(row, busy)| worker(row, *busy)).collect::<Vec<_>>(),
    }))
}

/// One worker's row, like RoadRunner's `rr workers -i`.
fn worker(row: &WorkerRow, busy: bool) -> Value {
    let state = match (row.pid, busy) {
        (None, _) => "exited",
        (Some(_), true) => "busy",
        (Some(_), false) => "idle",
    };
    json!({
        "id": row.id,
        "kind": if row.task_index.is_some() { "task" } else { "event" },
        "pid": row.pid,
        "state": state,
        "handled": row.handled,
        "memory_rss": row.pid.and_then(rss_bytes),
        "started_at": row.started_at,
        "task": row.current.map(|(id, started_ms)| json!({
            "id": id,
            "started_at": started_ms as f64 / 1000.0,
        })),
    })
}

/// The resident set of process `pid`, from `/proc/PID/status` (`VmRSS`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss(&status)
}

fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn reload(hub: &Hub, task_only: bool) -> Reply {
    if hub.stopping() {
        return Reply::error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    }
    if hub.reload(task_only) {
        Reply::ok(json!({ "reloading": if task_only { "task" } else { "all" } }))
    } else {
        Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the manager process could not be signalled",
        )
    }
}

fn stop(hub: &Hub) -> Reply {
    if !hub.stopping() {
        // Through the signal path, so the stop is the one SIGTERM begins;
        // after a moment, so this answer is written first.
        tokio::task::spawn_local(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGTERM);
        });
    }
    Reply::ok(json!({ "stopping": true }))
}

/// Why a request's body or query was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body must be a JSON object: one task {{\"data\": ...}} or a batch {{\"tasks\": [...]}}")]
    NotObject,
    #[error("{at}: unknown field '{field}'; allowed: {allowed}")]
    UnknownField {
        at: String,
        field: String,
        allowed: &'static str,
    },
    #[error("{at}: the field 'data' is required (any JSON value)")]
    NoData { at: String },
    #[error("{at}: '{field}' must be {allowed}")]
    BadField {
        at: String,
        field: &'static str,
        allowed: &'static str,
    },
    #[error("'tasks' must be a non-empty array of task objects")]
    BadBatch,
    #[error("task_only must be 1, 0, true or false")]
    BadTaskOnly,
    #[error("the query may hold either name=<batch name> (1 to 128 bytes, percent-encoded) or recent=N (1 to 1000) only")]
    BadBatchQuery,
    #[error("the query may hold offset=N (0 or more) and limit=N (1 to 1000) only")]
    BadPage,
    #[error("the body must be {{\"ids\": [task ids]}} (non-empty) or {{\"all\": true}}")]
    BadWhich,
}

const TASK_FIELDS: &str = "data, delay, priority, max_attempts, batch";

/// The tasks of a `POST /tasks` body, and whether it was a batch.
pub fn parse_submission(body: &[u8]) -> Result<(Vec<TaskRequest>, bool), BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|e| BadRequest::Json(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(BadRequest::NotObject);
    };
    if map.contains_key("tasks") && !map.contains_key("data") {
        if let Some(field) = map.keys().find(|k| *k != "tasks") {
            return Err(BadRequest::UnknownField {
                at: "the batch".into(),
                field: field.clone(),
                allowed: "tasks",
            });
        }
        let Some(Value::Array(items)) = map.get("tasks") else {
            return Err(BadRequest::BadBatch);
        };
        if items.is_empty() {
            return Err(BadRequest::BadBatch);
        }
        let tasks = items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(task) => parse_task(task, &format!("tasks[{i}]")),
                _ => Err(BadRequest::BadBatch),
            })
            .collect::<Result<_, _>>()?;
        return Ok((tasks, true));
    }
    Ok((vec![parse_task(&map, "the task")?], false))
}

fn parse_task(task: &Map<String, Value>, at: &str) -> Result<TaskRequest, BadRequest> {
    if let Some(field) = task
        .keys()
        .find(|k| !["data", "delay", "priority", "max_attempts", "batch"].contains(&k.as_str()))
    {
        return Err(BadRequest::UnknownField {
            at: at.into(),
            field: field.clone(),
            allowed: TASK_FIELDS,
        });
    }
    let bad = |field, allowed| BadRequest::BadField {
        at: at.into(),
        field,
        allowed,
    };
    let data = task
        .get("data")
        .ok_or_else(|| BadRequest::NoData { at: at.into() })?;
    let delay_ms = match task.get("delay") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_f64() {
            Some(s) if (0.0..=MAX_DELAY_S).contains(&s) => (s * 1000.0).round() as u64,
            _ => return Err(bad("delay", "a number of seconds from 0 to 31536000")),
        },
    };
    let priority = match task.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| bad("priority", "an integer (32-bit; higher runs first)"))?,
    };
    let max_attempts = match task.get("max_attempts") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| bad("max_attempts", "an integer of at least 1"))?,
    };
    let batch = match task.get("batch") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if super::batches::check_name(name).is_ok() => Some(name.clone()),
        Some(_) => {
            return Err(bad(
                "batch",
                "a string of 1 to 128 bytes, no control characters",
            ))
        }
    };
    let payload = match data {
        // A string stays a string, as `task('text')` sends it.
        Value::String(s) => Payload {
            encoding: Encoding::Raw,
            data: s.clone().into_bytes().into(),
        },
        other => Payload {
            encoding: Encoding::Serialized,
            data: crate::json_serial::to_php(other).into(),
        },
    };
    Ok(TaskRequest {
        priority,
        delay_ms,
        max_attempts,
        batch,
        payload,
    })
}

/// A year: longer delays are almost surely a unit mistake (ms for s).
const MAX_DELAY_S: f64 = 31_536_000.0;

/// `task_only` from the query (`task_only=1`) or a JSON body
/// (`{"task_only": true}`); false when neither says.
pub fn task_only(query: Option<&str>, body: &[u8]) -> Result<bool, BadRequest> {
    let from_query = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, "1"))))
            .find(|(k, _)| *k == "task_only")
            .map(|(_, v)| v.to_string())
    });
    if let Some(v) = from_query {
        return match v.as_str() {
            "1" | "true" => Ok(true),
            "0" | "false" => Ok(false),
            _ => Err(BadRequest::BadTaskOnly),
        };
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| BadRequest::Json(e.to_string()))?;
    match value.get("task_only") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(_) => Err(BadRequest::BadTaskOnly),
    }
}

/// Queues `tasks` through the hub, as `TaskClient::task()` does, and
/// answers once every one is held. A batch stops at the first task refused
/// at once (a full queue, a stop): those before it stay queued and their
/// ids are part of the error answer; none after it is queued.
async fn submit(tasks: Vec<TaskRequest>, batch: bool, hub: &Rc<RefCell<Hub>>) -> Reply {
    let mut waiting = Vec::with_capacity(tasks.len());
    for task in tasks {
        let mut answer = hub.borrow_mut().http_task(task);
        match answer.try_recv() {
            Ok(Err(refused)) => {
                waiting.push(Err(refused));
                break;
            }
            Ok(Ok(id)) => waiting.push(Ok(Ok(id))),
            Err(_) => waiting.push(Ok(Err(answer))),
        }
    }
    let mut ids = Vec::with_capacity(waiting.len());
    for w in waiting {
        let answer = match w {
            Ok(Ok(id)) => Ok(Ok(id)),
            Ok(Err(pending)) => pending.await,
            Err(refused) => Ok(Err(refused)),
        };
        let refused = match answer {
            Ok(Ok(id)) => {
                ids.push(id);
                continue;
            }
            Ok(Err((code, why))) => refusal(code, why),
            Err(_) => Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server stopped before the task was held",
            ),
        };
        return if batch {
            let mut r = refused;
            r.body["ids"] = json!(ids);
            r
        } else {
            refused
        };
    }
    Reply::ok(if batch {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids[0] })
    })
}

/// The HTTP answer for a protocol error code a taskq client would get.
fn refusal(error_code: u32, why: String) -> Reply {
    match error_code {
        code::BAD_REQUEST => Reply::error(StatusCode::BAD_REQUEST, why),
        _ => Reply::error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_submission(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn one_task_takes_its_fields() {
        let (tasks, batch) = parse_submission(
            br#"{"data": {"to": "a@b"}, "delay": 1.5, "priority": 3, "max_attempts": 2}"#,
        )
        .unwrap();
        assert!(!batch);
        let t = &tasks[0];
        assert_eq!((t.delay_ms, t.priority, t.max_attempts), (1500, 3, 2));
        assert_eq!(t.payload.encoding, Encoding::Serialized);
        assert_eq!(&t.payload.data[..], b"a:1:{s:2:\"to\";s:3:\"a@b\";}");
    }

    #[test]
    fn a_string_is_sent_raw_and_defaults_apply() {
        let (tasks, _) = parse_submission(br#"{"data": "hello"}"#).unwrap();
        assert_eq!(tasks[0].payload.encoding, Encoding::Raw);
        assert_eq!(&tasks[0].payload.data[..], b"hello");
        assert_eq!((tasks[0].delay_ms, tasks[0].max_attempts), (0, 0));
    }

    #[test]
    fn a_batch_gives_one_request_per_task() {
        let (tasks, batch) =
            parse_submission(br#"{"tasks": [{"data": 1}, {"data": [2], "priority": -1}]}"#)
                .unwrap();
        assert!(batch);
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].priority, -1);
    }

    #[test]
    fn bad_bodies_name_the_field_and_what_is_allowed() {
        assert!(err("{nope").starts_with("the body is not valid JSON"));
        assert!(err("[1]").contains("must be a JSON object"));
        assert_eq!(
            err(r#"{"data": 1, "prio": 2}"#),
            "the task: unknown field 'prio'; allowed: data, delay, priority, max_attempts, batch"
        );
        assert_eq!(
            err(r#"{"data": 1, "batch": ""}"#),
            "the task: 'batch' must be a string of 1 to 128 bytes, no control characters"
        );
        assert_eq!(
            err(r#"{"delay": 1}"#),
            "the task: the field 'data' is required (any JSON value)"
        );
        assert_eq!(
            err(r#"{"data": 1, "delay": -1}"#),
            "the task: 'delay' must be a number of seconds from 0 to 31536000"
        );
        assert!(err(r#"{"data": 1, "priority": 1.5}"#).contains("'priority' must be an integer"));
        assert!(err(r#"{"data": 1, "max_attempts": 0}"#).contains("at least 1"));
        assert_eq!(err(r#"{"tasks": []}"#), BadRequest::BadBatch.to_string());
        assert!(err(r#"{"tasks": [{"data": 1}, {"x": 1}]}"#).starts_with("tasks[1]: unknown"));
    }

    #[test]
    fn task_only_comes_from_the_query_or_the_body() {
        assert_eq!(task_only(Some("task_only=1"), b""), Ok(true));
        assert_eq!(task_only(Some("a=b&task_only=0"), b""), Ok(false));
        assert_eq!(task_only(None, b""), Ok(false));
        assert_eq!(task_only(None, br#"{"task_only": true}"#), Ok(true));
        assert_eq!(
            task_only(Some("task_only=yes"), b""),
            Err(BadRequest::BadTaskOnly)
        );
    }

    #[test]
    fn batch_queries_name_one_batch_or_ask_for_the_recent_ones() {
        assert_eq!(batch_query(None).unwrap(), BatchQuery::Named(None));
        assert_eq!(
            batch_query(Some("name=mail%202026%2F12+%E2%9C%89")).unwrap(),
            BatchQuery::Named(Some("mail 2026/12 ✉".into()))
        );
        assert_eq!(
            batch_query(Some("recent=20")).unwrap(),
            BatchQuery::Recent(20)
        );
        for bad in [
            "name=",
            "name=a&name=b",
            "id=3",
            "name=a%0Ab",
            "recent=0",
            "recent=1001",
            "recent=x",
            "recent=5&name=a",
        ] {
            assert!(batch_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_check_the_method() {
        assert_eq!(route(&Method::GET, "/api/ping"), Some(Ok(Endpoint::Ping)));
        assert_eq!(route(&Method::POST, "/tasks"), Some(Ok(Endpoint::Tasks)));
        assert_eq!(
            route(&Method::GET, "/api/history"),
            Some(Ok(Endpoint::History))
        );
        assert_eq!(route(&Method::GET, "/metrics"), None);
        let r = route(&Method::GET, "/api/stop").unwrap().unwrap_err();
        assert_eq!(
            (r.status, r.allow),
            (StatusCode::METHOD_NOT_ALLOWED, Some("POST"))
        );
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        assert_eq!(
            vm_rss("Name:\tphp\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(vm_rss("Name:\tphp\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn failed_pages_and_selections_are_checked() {
        assert_eq!(page(None).unwrap(), (0, 100));
        assert_eq!(page(Some("offset=5&limit=20")).unwrap(), (5, 20));
        for bad in ["limit=0", "limit=1001", "offset=-1", "sort=new", "limit"] {
            assert!(page(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(which(br#"{"all": true}"#).unwrap(), Which::All);
        assert_eq!(
            which(br#"{"ids": [3, 4]}"#).unwrap(),
            Which::Ids(vec![3, 4])
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"ids": []}"#,
            br#"{"ids": ["x"]}"#,
            br#"{"all": false}"#,
            b"nope",
        ] {
            assert!(which(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            route(&Method::GET, "/api/failed/42"),
            Some(Ok(Endpoint::FailedTask(42)))
        );
        assert_eq!(route(&Method::GET, "/api/failed/x"), None);
        assert_eq!(route(&Method::GET, "/api/failed/-1"), None);
        assert_eq!(
            route(&Method::POST, "/api/failed/42")
                .unwrap()
                .unwrap_err()
                .allow,
            Some("GET, HEAD")
        );
        assert_eq!(
            route(&Method::GET, "/api/failed/retry")
                .unwrap()
                .unwrap_err()
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
