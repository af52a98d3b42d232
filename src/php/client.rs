//! `TaskQ\Client` (aliases `TaskClient`, `swoole_client`, `Swoole\Client`): Swoole's
//! synchronous client. Failures return false with `errCode`/`errMsg` set and
//! an E_WARNING, as Swoole does; only misuse of types throws.
// PHP parameter names are Swoole 5.1's, for named arguments (`type: ...`, `sock_flag: 0`).
#![allow(non_snake_case)]

use std::time::Duration;

use bytes::Bytes;

use super::error::PhpResult;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendHashTable, Zval};

use super::args::{Array, Bool, Float, Int, Opt, Str, StrOrArray};
use super::error::PhpError;
use super::exception::{take_pending_message, warn};
use super::loose_value::{entries, options};
use super::values::{bool_zval, bytes_zval, json_encode, json_zval, long_zval, to_payload};
use std::cell::RefCell;
use std::collections::HashMap;
use taskq_engine::client::{Connection, MAX_RAW_RECV};
use taskq_engine::config::ClientConfig;
use taskq_engine::error::ClientError;
use taskq_engine::listener::SockType;
use taskq_engine::master::check_batch_name;
use taskq_engine::payload::{Encoding, Payload};
use taskq_engine::protocol::{TaskRequest, MAX_DELAY_MS};

/// Swoole's flag for a persistent connection, accepted in the type.
pub const SOCK_KEEP: i64 = 1 << 12;

/// A synchronous client for TaskServer (or any Swoole-framed server).
#[php_class]
#[php(name = "TaskQ\\Client")]
pub struct TaskClient {
    /// errno of the last failure (111 = connection refused, 11 = timeout).
    #[php(prop, name = "errCode")]
    err_code: i64,
    /// Text of the last failure.
    #[php(prop, name = "errMsg")]
    err_msg: String,
    kind: SockType,
    sock_type: i64,
    config: ClientConfig,
    conn: Option<Connection>,
    /// TASKQ_KEEP: the connection outlives this object in a per-process pool.
    keep: bool,
    /// (host, port, timeout) of the last connect(), to reconnect a pooled
    /// connection whose server restarted.
    target: Option<(String, u16, Duration)>,
    /// The server closed the connection: calls until the next connect()
    /// fail saying so instead of "not connected".
    closed_by_server: bool,
}

thread_local! {
    /// Persistent connections of TASKQ_KEEP clients, by type, host and port:
    /// under PHP-FPM one per worker process, reused across requests.
    static POOL: RefCell<HashMap<String, Connection>> = RefCell::new(HashMap::new());
}

fn pool_key(kind: SockType, host: &str, port: u16) -> String {
    format!("{}:{host}:{port}", kind as i64)
}

#[php_impl]
impl TaskClient {
    /// `$type` is TASKQ_SOCK_TCP, TASKQ_SOCK_TCP6 or TASKQ_SOCK_UNIX_STREAM,
    /// optionally OR'ed with TASKQ_KEEP. `$async` exists for Swoole scripts
    /// that pass SWOOLE_SOCK_SYNC; the client is always synchronous.
    pub fn __construct(r#type: Opt<Int>, r#async: Opt<Bool>, id: Opt<Str>) -> PhpResult<Self> {
        let _ = id;
        let sock_type = r#type.or(1);
        if r#async.or(false) {
            return Err(PhpError::AsyncClient);
        }
        let kind = SockType::from_raw(sock_type).ok_or(PhpError::ClientType(sock_type))?;
        Ok(TaskClient {
            err_code: 0,
            err_msg: String::new(),
            kind,
            sock_type,
            config: ClientConfig::new(),
            conn: None,
            keep: sock_type & SOCK_KEEP != 0,
            target: None,
            closed_by_server: false,
        })
    }

    /// Framing and socket options; applied at the next connect().
    pub fn set(&mut self, settings: Array) -> PhpResult<bool> {
        let converted = options(settings.0)?;
        let warnings = self
            .config
            .apply(&converted)
            .map_err(PhpError::ClientOption)?;
        for w in warnings {
            warn(&w.0);
        }
        Ok(true)
    }

    /// Connects; `$timeout` (seconds) also bounds every later send and recv.
    pub fn connect(
        &mut self,
        host: Str,
        port: Opt<Int>,
        timeout: Opt<Float>,
        sock_flag: Opt<Int>,
    ) -> bool {
        let _ = sock_flag;
        let (host, port, timeout) = (host.0, port.or(0), timeout.or(0.5));
        if self.is_connected() {
            return self.fail(ClientError::AlreadyConnected);
        }
        self.conn = None;
        if host.is_empty() {
            return self.fail(ClientError::Os {
                code: libc::EINVAL,
                message: "the host must not be empty".into(),
            });
        }
        let port = match u16::try_from(port) {
            Ok(p) if p > 0 || self.kind == SockType::UnixStream => p,
            _ => {
                return self.fail(ClientError::Os {
                    code: libc::EINVAL,
                    message: format!("invalid port {port} (allowed: 1 to 65535)"),
                })
            }
        };
        let timeout = if timeout.is_finite() && timeout > 0.0 {
            Duration::from_secs_f64(timeout)
        } else {
            Duration::from_millis(500)
        };
        self.target = Some((host.clone(), port, timeout));
        self.closed_by_server = false;
        if self.keep {
            let pooled = POOL.with(|p| p.borrow_mut().remove(&pool_key(self.kind, &host, port)));
            if let Some(c) = pooled.filter(Connection::is_alive) {
                self.conn = Some(c);
                self.clear_error();
                return true;
            }
        }
        match Connection::connect(self.kind, &host, port, timeout, &self.config) {
            Ok(c) => {
                self.conn = Some(c);
                self.clear_error();
                true
            }
            Err(e) => self.fail(e),
        }
    }

    /// Submits `$data` straight into the server's task queue; returns the
    /// task id once the server holds it (on disk with a task store), or
    /// false with errCode/errMsg. Options: delay (seconds), priority (higher
    /// first), max_attempts.
    pub fn task(&mut self, data: &Zval, options: Opt<Array>) -> PhpResult<Zval> {
        let req = TaskRequest {
            payload: to_payload(data).map_err(PhpError::invalid_data)?,
            ..task_options(options.0.map(|a| a.0))?
        };
        let result = self.with_retry(|c| c.submit(&req));
        Ok(match result {
            Ok(id) => {
                self.clear_error();
                long_zval(id as i64)
            }
            Err(e) => {
                self.fail(e);
                bool_zval(false)
            }
        })
    }

    /// task() for every element of `$tasks`, with one round trip per batch
    /// of up to 1024 tasks instead of one per task: what a web request
    /// handing over "these 10,000 emails" wants. Returns an array with the
    /// keys of `$tasks`: each task's id, or false where the server refused
    /// that task (errCode/errMsg then tell the first refusal). False when
    /// the connection failed; the tasks acknowledged before that (errMsg
    /// says how many) are queued. `$options` apply to every task.
    pub fn task_multi(&mut self, tasks: Array, options: Opt<Array>) -> PhpResult<Zval> {
        let (tasks, template) = (tasks.0, task_options(options.0.map(|a| a.0))?);
        let mut keys = Vec::with_capacity(tasks.len());
        let mut reqs = Vec::with_capacity(tasks.len());
        for (key, data) in tasks.iter() {
            let payload = to_payload(data).map_err(|e| PhpError::TaskValue {
                key: key.to_string(),
                cause: take_pending_message().unwrap_or_else(|| e.to_string()),
            })?;
            keys.push(key);
            reqs.push(TaskRequest {
                payload,
                ..template.clone()
            });
        }
        let mut answers = Vec::with_capacity(reqs.len());
        let sent = self
            .live_connection()
            .and_then(|c| c.submit_many(&reqs, &mut answers));
        if let Err(e) = sent {
            let e = self.settle(e);
            if matches!(e, ClientError::NotConnected) {
                self.fail(e);
                return Ok(bool_zval(false));
            }
            let acknowledged = answers.iter().filter(|a| a.is_ok()).count();
            // A refusal after which the server closes the connection is why.
            let closing = answers.iter().find_map(|a| match a {
                Err(r @ ClientError::Server { code, .. }) if closes_connection(*code) => Some(r),
                _ => None,
            });
            let why = match closing {
                Some(refusal) if refusal.to_string() != e.to_string() => {
                    format!("{e} after refusing a task: {refusal}")
                }
                _ => e.to_string(),
            };
            self.fail(ClientError::Os {
                code: e.code(),
                message: format!(
                    "{why} ({acknowledged} of {} tasks were acknowledged before and are queued)",
                    reqs.len()
                ),
            });
            return Ok(bool_zval(false));
        }
        self.clear_error();
        let mut out = ZendHashTable::with_capacity(u32::try_from(keys.len()).unwrap_or(u32::MAX));
        for (key, answer) in keys.into_iter().zip(answers) {
            let value = match answer {
                Ok(id) => long_zval(id as i64),
                Err(e) => {
                    if self.err_code == 0 {
                        self.fail(e);
                    }
                    bool_zval(false)
                }
            };
            out.insert(key, value).map_err(PhpError::from)?;
        }
        let mut z = Zval::new();
        z.set_hashtable(out);
        Ok(z)
    }

    /// The progress of batch `$name` (the `batch` option of task() and
    /// taskMulti()) as the server counts it: total, done, failed, pending,
    /// started_at, finished_at (null until none is pending) and failures
    /// grouped by error. False with errCode/errMsg when the server does
    /// not know the batch (9011) or cannot answer.
    pub fn batch(&mut self, name: Str) -> PhpResult<Zval> {
        let name = batch_name(name.0, "batch($name)")?;
        Ok(match self.with_retry(|c| c.batch(&name)) {
            Ok(report) => {
                self.clear_error();
                json_zval(&report)
            }
            Err(e) => {
                self.fail(e);
                bool_zval(false)
            }
        })
    }

    /// Sends a string, or an array as its JSON encoding; returns bytes sent.
    pub fn send(&mut self, data: StrOrArray) -> PhpResult<Zval> {
        let owned;
        let bytes: &[u8] = match data {
            StrOrArray::Str(b) => b,
            StrOrArray::Array(a) => {
                owned = json_encode(a).map_err(PhpError::invalid_data)?;
                &owned
            }
        };
        let result = self.with_retry(|c| c.send(bytes));
        Ok(match result {
            Ok(n) => {
                self.clear_error();
                long_zval(n as i64)
            }
            Err(e) => {
                if matches!(e, ClientError::Os { .. }) {
                    self.conn = None;
                }
                self.fail(e);
                bool_zval(false)
            }
        })
    }

    /// One message (framed modes) or up to `$size` bytes (raw mode); "" when
    /// the server closed the connection, false on error or timeout.
    pub fn recv(&mut self, size: Opt<Int>, flag: Opt<Int>) -> Zval {
        let (size, flags) = (size.or(65535), flag.or(0));
        let waitall = flags & (libc::MSG_WAITALL as i64) != 0 || flags == 1;
        let size = if size <= 0 {
            MAX_RAW_RECV
        } else if waitall {
            size as usize
        } else {
            (size as usize).min(MAX_RAW_RECV)
        };
        let result = self.connection().and_then(|c| c.recv(size, waitall));
        match result {
            Ok(Some(msg)) => {
                self.clear_error();
                bytes_zval(&msg)
            }
            Ok(None) => {
                // Swoole's "" for a closed connection; the next call says why.
                self.gone();
                self.clear_error();
                bytes_zval(b"")
            }
            Err(e) => {
                let e = self.settle(e);
                if matches!(e, ClientError::Protocol(_)) {
                    self.conn = None;
                }
                self.fail(e);
                bool_zval(false)
            }
        }
    }

    /// Closes the connection; false when it was not connected. A TASKQ_KEEP
    /// connection goes back to the pool unless `$force`.
    pub fn close(&mut self, force: Opt<Bool>) -> bool {
        let force = force.or(false);
        let Some(conn) = self.conn.take() else {
            if std::mem::take(&mut self.closed_by_server) {
                return true;
            }
            return self.fail(ClientError::NotConnected);
        };
        if self.keep && !force {
            self.park(conn);
        }
        true
    }

    /// Whether connect() succeeded and the connection was closed neither
    /// by close() nor by the server (checked without blocking).
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(Connection::is_alive)
    }

    /// The socket type given to the constructor.
    #[php(getter)]
    pub fn get_type(&self) -> i64 {
        self.sock_type
    }
}

impl Drop for TaskClient {
    /// A TASKQ_KEEP connection survives the object (end of an FPM request).
    fn drop(&mut self) {
        if self.keep {
            if let Some(conn) = self.conn.take() {
                self.park(conn);
            }
        }
    }
}

impl TaskClient {
    fn park(&self, conn: Connection) {
        if let Some((host, port, _)) = &self.target {
            let key = pool_key(self.kind, host, *port);
            POOL.with(|p| p.borrow_mut().insert(key, conn));
        }
    }

    /// The connection as it is, or why there is none.
    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None if self.closed_by_server => Err(ClientError::ClosedByServer),
            None => Err(ClientError::NotConnected),
        }
    }

    /// Whether the server has closed the connection since the last call.
    fn stale(&mut self) -> Result<bool, ClientError> {
        Ok(!self.connection()?.is_alive())
    }

    /// The connection for a new request: a kept one the server closed is
    /// replaced; any other the server closed fails as closed by the server.
    fn live_connection(&mut self) -> Result<&mut Connection, ClientError> {
        if self.stale()? {
            if !self.keep {
                return Err(self.gone());
            }
            return self.reconnect();
        }
        self.connection()
    }

    /// Forgets a connection the server closed; later calls say so.
    fn gone(&mut self) -> ClientError {
        self.conn = None;
        self.closed_by_server = true;
        ClientError::ClosedByServer
    }

    /// An error of a request, with a connection the server closed (a write
    /// into it, or a read at its end) reported as closed by the server and
    /// forgotten, and one that refused the request for good dropped.
    fn settle(&mut self, e: ClientError) -> ClientError {
        match &e {
            ClientError::Os { code, .. }
                if [libc::EPIPE, libc::ECONNRESET, libc::ENOTCONN].contains(code) =>
            {
                self.gone()
            }
            ClientError::Server { code, .. } if closes_connection(*code) => {
                self.conn = None;
                e
            }
            _ => e,
        }
    }

    /// Runs `op` on the connection. A TASKQ_KEEP connection whose server
    /// went away (restart) is replaced, once, transparently: before the
    /// request when the socket already reads as closed, or after a request
    /// the dead server could not have answered.
    fn with_retry<T>(
        &mut self,
        mut op: impl FnMut(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let result = op(self.live_connection()?);
        let closed = matches!(&result, Err(ClientError::Os { code, .. })
            if [libc::EPIPE, libc::ECONNRESET, libc::ENOTCONN].contains(code));
        if self.keep && closed {
            let fresh = self.reconnect()?;
            return op(fresh).map_err(|e| self.settle(e));
        }
        result.map_err(|e| self.settle(e))
    }

    fn reconnect(&mut self) -> Result<&mut Connection, ClientError> {
        let (host, port, timeout) = self.target.clone().ok_or(ClientError::NotConnected)?;
        self.conn = None;
        let fresh = Connection::connect(self.kind, &host, port, timeout, &self.config)?;
        Ok(self.conn.insert(fresh))
    }

    fn fail(&mut self, e: ClientError) -> bool {
        self.err_code = e.code() as i64;
        self.err_msg = e.to_string();
        warn(&self.err_msg);
        false
    }

    fn clear_error(&mut self) {
        self.err_code = 0;
        self.err_msg.clear();
    }
}

/// A batch name checked before it goes out, the error naming `what`.
fn batch_name(name: String, what: &str) -> PhpResult<String> {
    match check_batch_name(&name) {
        Ok(()) => Ok(name),
        Err(e) => Err(PhpError::BatchName {
            what: what.to_owned(),
            why: e.to_string(),
        }),
    }
}

/// Whether the server closes the connection after refusing with `code`.
fn closes_connection(code: u32) -> bool {
    [
        taskq_engine::protocol::code::AUTH,
        taskq_engine::protocol::code::TOO_LARGE,
    ]
    .contains(&code)
}

/// The options of `task()` and `taskMulti()`, as a request with no payload
/// yet. Options: delay (seconds), priority (higher first), max_attempts,
/// batch (a name whose progress `batch()` reports).
fn task_options(options: Option<&ZendHashTable>) -> PhpResult<TaskRequest> {
    let mut req = TaskRequest {
        priority: 0,
        delay_ms: 0,
        max_attempts: 0,
        batch: None,
        payload: Payload {
            encoding: Encoding::Raw,
            data: Bytes::new(),
        },
    };
    for (key, value) in options.map(entries).unwrap_or_default() {
        let bad = |allowed: &str| PhpError::TaskOption {
            key: key.clone(),
            allowed: allowed.to_owned(),
        };
        match key.as_str() {
            "delay" => {
                let max = (MAX_DELAY_MS / 1000) as f64;
                let secs = value
                    .double()
                    .or_else(|| value.long().map(|l| l as f64))
                    .filter(|s| s.is_finite() && (0.0..=max).contains(s))
                    .ok_or_else(|| bad(&format!("seconds from 0 to {max} (one year)")))?;
                req.delay_ms = (secs * 1000.0) as u64;
            }
            "priority" => {
                req.priority = value
                    .long()
                    .and_then(|p| i32::try_from(p).ok())
                    .ok_or_else(|| bad("an integer; higher runs first"))?;
            }
            "max_attempts" => {
                req.max_attempts = value
                    .long()
                    .filter(|n| (1..=101).contains(n))
                    .ok_or_else(|| bad("an integer from 1 to 101"))?
                    as u32;
            }
            "batch" => {
                let name = value
                    .str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("a string of 1 to 128 bytes without control characters"))?;
                req.batch = Some(batch_name(name, "task option 'batch'")?);
            }
            other => warn(&format!(
                "unknown task option '{other}' (known: delay, priority, max_attempts, batch)"
            )),
        }
    }
    Ok(req)
}
