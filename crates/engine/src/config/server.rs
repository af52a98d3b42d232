//! `$server->set()`: the server's options, their defaults and rules.

use super::apply::apply_atomically;
use super::coerce::{
    as_int, invalid, refuse_true, to_absolute_or_relative_dir, to_bool, to_int, to_int_in,
    to_non_empty_string, to_seconds, to_size, to_socket_buffer_size, to_usize,
    DEFAULT_SOCKET_BUFFER_SIZE,
};
use super::error::{ConfigError, Warning};
use super::framing::Framing;
use super::ignored::ignored;
use super::schema::{names, store, Row, Schema};
use crate::packet::{PacketMode, PacketOptions};
use crate::php_serial::{AllowedClasses, Policy};
use std::sync::OnceLock;
use taskq_value::Value;

/// Nesting a network task payload may have: deep enough for any job
/// description, shallow enough that checking it costs nothing.
const DEFAULT_TASK_MAX_DEPTH: usize = 128;
/// unserialize()'s own default limit (`unserialize_max_depth`).
const MAX_TASK_MAX_DEPTH: i64 = 4096;

/// Everything `$server->set()` accepts, with Swoole's defaults. Fields are
/// public so the engine reads them directly; `apply` is the only place that
/// validates, so construct with `new` and change with `apply`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Event workers. Defaults to the CPU count as in Swoole; a 0 in `set()`
    /// also means the CPU count, because Swoole treats it that way.
    pub worker_num: usize,
    /// Task workers; 0 (Swoole's default) means `task()` is unavailable.
    pub task_worker_num: usize,
    /// Detach from the terminal after start, as Swoole's daemon mode does.
    pub daemonize: bool,
    /// Where logs go; `None` keeps them on stderr like Swoole.
    pub log_file: Option<String>,
    /// Swoole's numbering (DEBUG=0 ... NONE=6) so `SWOOLE_LOG_*` constants
    /// keep working; 2 (INFO) is Swoole's default.
    pub log_level: u8,
    /// Written with the master pid so init scripts can signal the server.
    pub pid_file: Option<String>,
    /// Requests after which an event worker restarts (0 = never), Swoole's
    /// cure for slow leaks in long-running PHP code.
    pub max_request: u64,
    /// The grace the user set explicitly; kept apart from the derived
    /// default so that setting `max_request` later does not overwrite it.
    /// Read it through `effective_max_request_grace`.
    pub max_request_grace: Option<u64>,
    /// Like `max_request`, for task workers.
    pub task_max_request: u64,
    /// Like `max_request_grace`, for task workers; read it through
    /// `effective_task_max_request_grace`.
    pub task_max_request_grace: Option<u64>,
    /// How connections are spread over workers; only Swoole's modes 1 to 5
    /// exist in taskq (see `apply` for the reason).
    pub dispatch_mode: u8,
    /// `listen()` backlog. Swoole's default is 512, which a connect-per-
    /// request producer overflows whenever the master is kept off the CPU
    /// for ~10 ms (each overflow is a SYN resent only after 1 s): 4096,
    /// capped by the kernel at `net.core.somaxconn`.
    pub backlog: i32,
    /// Connection limit; `max_connection` is accepted as an alias because
    /// Swoole accepts both spellings.
    pub max_conn: usize,
    /// Seconds between idle-connection sweeps; read through `heartbeat()`,
    /// which applies Swoole's defaults for a missing half.
    pub heartbeat_check_interval: u64,
    /// Seconds of silence before a connection is closed; 0 means twice the
    /// interval. Read through `heartbeat()`.
    pub heartbeat_idle_time: u64,
    /// The framing resolved from all framing options set so far. Rebuilt by
    /// every `apply`, so assigning it directly does not survive the next one.
    pub packet: PacketOptions,
    /// Per-connection send buffer limit; Swoole's default is `u32::MAX`.
    pub buffer_output_size: usize,
    /// Socket buffer size; 8 MiB is Swoole's default.
    pub socket_buffer_size: usize,
    /// Seconds a worker may keep running after a stop or reload request.
    pub max_wait_time: u64,
    /// Seconds a worker may keep running after a reload request: longer
    /// than `max_wait_time`, since a reload must not cut a task in half.
    pub reload_wait_time: u64,
    /// Disable Nagle, Swoole's default, for request/response latency.
    pub open_tcp_nodelay: bool,
    /// Unix user the workers switch to.
    pub user: Option<String>,
    /// Unix group the workers switch to.
    pub group: Option<String>,
    /// Retries of a task whose run failed (exception, crash, timeout) before
    /// it is given up, as set; `None` keeps each kind of task's default
    /// (see `client_task_retries` and `worker_task_retries`).
    pub task_retry_max: Option<u32>,
    /// Seconds before the first retry; each further retry waits twice as long.
    pub task_retry_delay: f64,
    /// Seconds a task may run before its worker is killed and the run counts
    /// as failed; `None` = no limit.
    pub task_timeout: Option<f64>,
    /// Waiting tasks at most; beyond it submissions fail fast with "queue
    /// full" instead of growing memory without bound. 0 = unbounded.
    pub task_queue_max: usize,
    /// Tasks one task worker may hold at once when tasks are short (see
    /// `dispatcher`): batches cut the IPC cost of tiny tasks; 1 = strictly
    /// one at a time.
    pub task_window: usize,
    /// Directory of the durable task store; `None` keeps tasks in memory only.
    pub task_store: Option<String>,
    /// Redis address when tasks live in Redis, shared by several servers;
    /// `None` keeps the embedded queue.
    pub task_backend: Option<String>,
    /// The queue's name in Redis: servers naming the same one share it.
    pub task_queue: String,
    /// This server's stable consumer name in Redis; `None` = host name and
    /// port, chosen at start.
    pub task_consumer: Option<String>,
    /// Seconds another server's task may sit untouched before this one
    /// takes it over.
    pub task_claim_idle: f64,
    /// Seconds to connect to Redis and for one call, so an unreachable
    /// Redis is an error, not a hang.
    pub task_backend_timeout: f64,
    /// Shared secret producers must present; `None` = open server.
    pub auth_token: Option<String>,
    /// Seconds a connection may take to present the `auth_token`; one that
    /// does not is closed, so idle sockets cannot hold slots.
    pub auth_timeout: f64,
    /// Connections that have not presented the `auth_token` yet, at most;
    /// the oldest is closed to make room for a newcomer.
    pub auth_max_pending: usize,
    /// Seconds a client may hold a partial message before it is disconnected
    /// (slowloris protection).
    pub package_timeout: f64,
    /// Classes whose objects `TaskClient::task()` payloads may hold. None by
    /// default: unserializing an object runs its class's magic methods, so
    /// a stranger's payload must not choose them.
    pub task_allowed_classes: AllowedClasses,
    /// Most nested non-empty arrays and objects in such a payload
    /// (unserialize()'s `max_depth`).
    pub task_max_depth: usize,
    /// Where the master serves `GET /metrics` over HTTP; `None` (the
    /// default) = no HTTP listener. An IP literal, so what it exposes is
    /// never decided by a name lookup.
    pub metrics_listen: Option<std::net::SocketAddr>,
    cpu_count: usize,
    pub(super) framing: Framing,
}

impl ServerConfig {
    /// Swoole's defaults, with `worker_num` and `reactor_num` taken from
    /// `cpu_count` as Swoole does; a count of 0 is treated as 1 so a failed
    /// CPU probe cannot produce a server without workers.
    pub fn new(cpu_count: usize) -> Self {
        let cpu_count = cpu_count.max(1);
        let framing = Framing::new(4);
        let packet = PacketOptions {
            mode: PacketMode::Raw,
            max_length: framing.max_length,
        };
        ServerConfig {
            worker_num: cpu_count,
            task_worker_num: 0,
            daemonize: false,
            log_file: None,
            log_level: 2,
            pid_file: None,
            max_request: 0,
            max_request_grace: None,
            task_max_request: 0,
            task_max_request_grace: None,
            dispatch_mode: 2,
            backlog: 4096,
            max_conn: 100_000,
            heartbeat_check_interval: 0,
            heartbeat_idle_time: 0,
            packet,
            buffer_output_size: u32::MAX as usize,
            socket_buffer_size: DEFAULT_SOCKET_BUFFER_SIZE,
            max_wait_time: 3,
            reload_wait_time: 300,
            open_tcp_nodelay: true,
            user: None,
            group: None,
            task_retry_max: None,
            task_retry_delay: 1.0,
            task_timeout: None,
            task_queue_max: 1_000_000,
            task_window: 64,
            task_store: None,
            task_backend: None,
            task_queue: "default".into(),
            task_consumer: None,
            task_claim_idle: 30.0,
            task_backend_timeout: 2.0,
            auth_token: None,
            auth_timeout: 5.0,
            auth_max_pending: 128,
            package_timeout: 30.0,
            task_allowed_classes: AllowedClasses::None,
            task_max_depth: DEFAULT_TASK_MAX_DEPTH,
            metrics_listen: None,
            cpu_count,
            framing,
        }
    }

    /// Applies one `set()` call atomically: on `Err` nothing changes, so a
    /// script that catches the exception keeps a consistent configuration.
    /// Keys match exactly, as in Swoole; near misses only produce warnings
    /// with a suggestion, since an ignored option is easy to overlook.
    pub fn apply(&mut self, entries: &[(String, Value)]) -> Result<Vec<Warning>, ConfigError> {
        apply_atomically(self, entries)
    }

    /// `$server->setting` once the server started: the options `given` to
    /// `set()`, as given, plus what Swoole fills in at start for a key not
    /// set (scripts read `$serv->setting['worker_num']` to tell task workers
    /// apart), with the values in effect. `worker_num` and `task_worker_num`
    /// always hold the real counts, also where `set()` gave 0 for "CPU count".
    /// An ignored option (`config::ignored`) not given shows Swoole's default.
    pub fn started_settings(&self, given: &[(String, Value)]) -> Vec<(String, Value)> {
        let count = |n: usize| Value::Int(n as i64);
        let filled = [
            ("worker_num", count(self.worker_num)),
            ("task_worker_num", count(self.task_worker_num)),
            ("output_buffer_size", count(self.buffer_output_size)),
            ("buffer_output_size", count(self.buffer_output_size)),
            ("max_connection", count(self.max_conn)),
            ("dispatch_mode", Value::Int(self.dispatch_mode.into())),
            ("task_ipc_mode", Value::Int(1)),
            ("daemonize", Value::Bool(self.daemonize)),
            ("log_level", Value::Int(self.log_level.into())),
            ("max_request", Value::Int(self.max_request as i64)),
            ("task_max_request", Value::Int(self.task_max_request as i64)),
            ("max_wait_time", Value::Int(self.max_wait_time as i64)),
            ("reload_async", Value::Bool(true)),
            ("open_tcp_nodelay", Value::Bool(self.open_tcp_nodelay)),
            ("backlog", Value::Int(self.backlog.into())),
            ("socket_buffer_size", count(self.socket_buffer_size)),
            ("package_max_length", count(self.packet.max_length)),
            ("task_tmpdir", Value::str("/tmp")),
        ];
        let mut out = given.to_vec();
        for (key, value) in filled {
            let always = matches!(key, "worker_num" | "task_worker_num");
            match out.iter_mut().find(|(k, _)| k == key) {
                Some(slot) if always || slot.1 == Value::Null => slot.1 = value,
                Some(_) => {}
                None => out.push((key.to_owned(), value)),
            }
        }
        out
    }

    /// The keys `apply` understands, for suggestions and documentation.
    pub fn known_options() -> &'static [&'static str] {
        static NAMES: OnceLock<Vec<&str>> = OnceLock::new();
        NAMES.get_or_init(names::<Self>)
    }

    /// Swoole's rule: half of `max_request` once it exceeds 10, unless the
    /// user chose a grace, so workers do not all restart at the same moment.
    pub fn effective_max_request_grace(&self) -> u64 {
        grace(self.max_request, self.max_request_grace)
    }

    /// Retries of an acknowledged `TaskClient::task()` job: its producer has
    /// gone and cannot retry it, so by default taskq does (2, so 3 runs).
    pub fn client_task_retries(&self) -> u32 {
        self.task_retry_max.unwrap_or(2)
    }

    /// Retries of a `$server->task()`: none by default, as in Swoole, whose
    /// users write `onTask` for at-most-once (a DB pool must not insert a
    /// row three times). `taskwait()` tasks are never retried at all.
    pub fn worker_task_retries(&self) -> u32 {
        self.task_retry_max.unwrap_or(0)
    }

    /// The same rule as `effective_max_request_grace`, for task workers.
    pub fn effective_task_max_request_grace(&self) -> u64 {
        grace(self.task_max_request, self.task_max_request_grace)
    }

    /// `(interval, idle)` in seconds, filling a missing half the way Swoole
    /// does (idle = 2 × interval; interval = idle / 2, at least 1), or `None`
    /// when heartbeats are off.
    pub fn heartbeat(&self) -> Option<(u64, u64)> {
        match (self.heartbeat_check_interval, self.heartbeat_idle_time) {
            (0, 0) => None,
            (interval, 0) => Some((interval, interval.saturating_mul(2))),
            (0, idle) => Some(((idle / 2).max(1), idle)),
            (interval, idle) => Some((interval, idle)),
        }
    }

    /// What a `TaskClient::task()` payload may hold.
    pub fn untrusted_values(&self) -> Policy {
        Policy {
            classes: self.task_allowed_classes.clone(),
            max_depth: self.task_max_depth,
        }
    }
}

impl Schema for ServerConfig {
    /// Every option of `$server->set()`, each named once, in the order the
    /// "known options" warning lists them.
    const ROWS: &[Row<ServerConfig>] = &[
        Row::Option("worker_num", |c, k, v| {
            let n: usize = to_int_in(k, v, 0, 1000, "an integer from 1 to 1000")?;
            c.worker_num = if n == 0 { c.cpu_count } else { n };
            Ok(())
        }),
        Row::Option(
            "task_worker_num",
            store!(task_worker_num, |k, v| to_int(k, v, 0, 1000)?),
        ),
        Row::Option("daemonize", store!(daemonize, |k, v| to_bool(k, v)?)),
        Row::Option(
            "log_file",
            store!(log_file, |k, v| Some(to_non_empty_string(k, v)?)),
        ),
        Row::Option(
            "log_level",
            store!(log_level, |k, v| to_int_in(
                k,
                v,
                0,
                6,
                "an integer from 0 (DEBUG) to 6 (NONE)"
            )?),
        ),
        Row::Option(
            "pid_file",
            store!(pid_file, |k, v| Some(to_non_empty_string(k, v)?)),
        ),
        Row::Option(
            "max_request",
            store!(max_request, |k, v| to_int(k, v, 0, i64::MAX)?),
        ),
        Row::Option(
            "max_request_grace",
            store!(max_request_grace, |k, v| Some(to_int(k, v, 0, i64::MAX)?)),
        ),
        Row::Option(
            "task_max_request",
            store!(task_max_request, |k, v| to_int(k, v, 0, i64::MAX)?),
        ),
        Row::Option(
            "task_max_request_grace",
            store!(task_max_request_grace, |k, v| Some(to_int(
                k,
                v,
                0,
                i64::MAX
            )?)),
        ),
        Row::Option(
            "dispatch_mode",
            store!(dispatch_mode, |k, v| to_dispatch_mode(k, v)?),
        ),
        Row::Ignored(ignored("task_ipc_mode")),
        Row::Ignored(ignored("message_queue_key")),
        Row::Ignored(ignored("task_tmpdir")),
        Row::Option("backlog", store!(backlog, |k, v| to_int(k, v, 0, 65535)?)),
        Row::Option(
            "max_conn",
            store!(max_conn, |k, v| to_int(k, v, 1, 1_000_000)?),
        ),
        Row::Option(
            "max_connection",
            store!(max_conn, |k, v| to_int(k, v, 1, 1_000_000)?),
        ),
        Row::Option(
            "heartbeat_check_interval",
            store!(heartbeat_check_interval, |k, v| to_int(k, v, 0, i64::MAX)?),
        ),
        Row::Option(
            "heartbeat_idle_time",
            store!(heartbeat_idle_time, |k, v| to_int(k, v, 0, i64::MAX)?),
        ),
        Row::Framing,
        Row::Option(
            "buffer_output_size",
            store!(buffer_output_size, |k, v| to_output_buffer_size(k, v)?),
        ),
        Row::Option(
            "output_buffer_size",
            store!(buffer_output_size, |k, v| to_output_buffer_size(k, v)?),
        ),
        Row::Option(
            "socket_buffer_size",
            store!(socket_buffer_size, |k, v| to_socket_buffer_size(k, v)?),
        ),
        Row::Ignored(ignored("reload_async")),
        Row::Option(
            "max_wait_time",
            store!(max_wait_time, |k, v| to_int(k, v, 1, 3600)?),
        ),
        Row::Option(
            "reload_wait_time",
            store!(reload_wait_time, |k, v| to_int(k, v, 1, 86400)?),
        ),
        Row::Option(
            "open_tcp_nodelay",
            store!(open_tcp_nodelay, |k, v| to_bool(k, v)?),
        ),
        Row::Option(
            "user",
            store!(user, |k, v| Some(to_non_empty_string(k, v)?)),
        ),
        Row::Option(
            "group",
            store!(group, |k, v| Some(to_non_empty_string(k, v)?)),
        ),
        Row::Ignored(ignored("reactor_num")),
        Row::Ignored(ignored("enable_unsafe_event")),
        Row::Ignored(ignored("discard_timeout_request")),
        Row::Ignored(ignored("open_tcp_keepalive")),
        Row::Option("enable_coroutine", refuse_coroutines),
        Row::Option("task_enable_coroutine", refuse_coroutines),
        Row::Option("task_use_object", refuse_task_objects),
        Row::Option("task_object", refuse_task_objects),
        Row::Option(
            "task_retry_max",
            store!(task_retry_max, |k, v| Some(to_int(k, v, 0, 100)?)),
        ),
        Row::Option(
            "task_retry_delay",
            store!(task_retry_delay, |k, v| to_seconds(k, v)?),
        ),
        Row::Option(
            "task_timeout",
            store!(task_timeout, |k, v| match v {
                Value::Int(0) => None,
                _ => Some(to_seconds(k, v)?),
            }),
        ),
        Row::Option(
            "task_queue_max",
            store!(task_queue_max, |k, v| to_int(k, v, 0, i64::MAX)?),
        ),
        Row::Option(
            "task_window",
            store!(task_window, |k, v| to_int(k, v, 1, 1024)?),
        ),
        Row::Option(
            "task_store",
            store!(task_store, |k, v| Some(to_absolute_or_relative_dir(k, v)?)),
        ),
        Row::Option(
            "task_backend",
            store!(task_backend, |k, v| Some(to_redis_dsn(k, v)?)),
        ),
        Row::Option(
            "task_queue",
            store!(task_queue, |k, v| to_redis_name(k, v)?),
        ),
        Row::Option(
            "task_consumer",
            store!(task_consumer, |k, v| Some(to_redis_name(k, v)?)),
        ),
        Row::Option(
            "task_claim_idle",
            store!(task_claim_idle, |k, v| to_seconds(k, v)?),
        ),
        Row::Option(
            "task_backend_timeout",
            store!(task_backend_timeout, |k, v| to_seconds(k, v)?),
        ),
        Row::Option(
            "auth_token",
            store!(auth_token, |k, v| Some(to_non_empty_string(k, v)?)),
        ),
        Row::Option(
            "package_timeout",
            store!(package_timeout, |k, v| to_seconds(k, v)?),
        ),
        Row::Option(
            "task_allowed_classes",
            store!(task_allowed_classes, |k, v| to_allowed_classes(k, v)?),
        ),
        Row::Option(
            "task_max_depth",
            store!(task_max_depth, |k, v| to_int(k, v, 1, MAX_TASK_MAX_DEPTH)?),
        ),
        Row::Option(
            "auth_timeout",
            store!(auth_timeout, |k, v| to_seconds(k, v)?),
        ),
        Row::Option(
            "auth_max_pending",
            store!(auth_max_pending, |k, v| to_int(k, v, 1, 1_000_000)?),
        ),
        Row::Option(
            "metrics_listen",
            store!(metrics_listen, |k, v| Some(to_listen_addr(k, v)?)),
        ),
    ];

    fn framing_mut(&mut self) -> &mut Framing {
        &mut self.framing
    }
}

fn grace(max_request: u64, explicit: Option<u64>) -> u64 {
    match explicit {
        Some(grace) => grace,
        None if max_request > 10 => max_request / 2,
        None => 0,
    }
}

const DISPATCH_ALLOWED: &str =
    "1 round-robin, 2 fixed by connection, 3 idle worker, 4 by client IP, 5 by uid";

/// Swoole's modes 6 to 10 depend on its reactor threads and coroutines,
/// which taskq does not have; the message says so instead of just "invalid".
fn to_dispatch_mode(option: &str, value: &Value) -> Result<u8, ConfigError> {
    match as_int(value) {
        Some(n @ 1..=5) => Ok(n as u8),
        Some(n @ 6..=10) => Err(invalid(
            option,
            value,
            format!("{DISPATCH_ALLOWED}; dispatch_mode {n} is not supported by taskq"),
        )),
        _ => Err(invalid(option, value, DISPATCH_ALLOWED)),
    }
}

const ALLOWED_CLASSES: &str = "false (no objects), true (any class) or a list of class names";

/// `task_allowed_classes`: false, true or class names, as unserialize()'s
/// `allowed_classes` takes them.
fn to_allowed_classes(option: &str, value: &Value) -> Result<AllowedClasses, ConfigError> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'\\' | 0x80..=0xff))
    };
    if let Some(items) = value.elements() {
        return items
            .into_iter()
            .map(|item| match item.lossy_str() {
                Some(s) if valid_name(&s) => Ok(s.trim_start_matches('\\').to_owned()),
                _ => Err(invalid(option, value, ALLOWED_CLASSES)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|names| AllowedClasses::only(&names));
    }
    match value {
        Value::Bool(true) => Ok(AllowedClasses::All),
        Value::Bool(false) => Ok(AllowedClasses::None),
        _ => Err(invalid(option, value, ALLOWED_CLASSES)),
    }
}

/// `task_backend`: a Redis DSN that parses. The error shows the DSN with
/// its password masked, never as given.
fn to_redis_dsn(option: &str, value: &Value) -> Result<String, ConfigError> {
    let dsn = to_non_empty_string(option, value)?;
    match taskq_redis::Dsn::parse(&dsn) {
        Ok(_) => Ok(dsn),
        Err(e) => Err(ConfigError::Invalid {
            option: option.to_owned(),
            value: format!("'{}'", e.dsn),
            allowed: format!("{}: {}", e.part, e.reason),
        }),
    }
}

const LISTEN_ALLOWED: &str =
    "an IP address and port, such as '127.0.0.1:9502' or '[::1]:9502' (port 1 to 65535)";

/// `metrics_listen`: an IPv4 `address:port` or a bracketed IPv6
/// `[address]:port`, with a port to listen on (not 0: the operator must
/// know where to scrape).
fn to_listen_addr(option: &str, value: &Value) -> Result<std::net::SocketAddr, ConfigError> {
    let parsed = value
        .lossy_str()
        .and_then(|s| s.parse::<std::net::SocketAddr>().ok());
    match parsed {
        Some(addr) if addr.port() > 0 => Ok(addr),
        _ => Err(invalid(option, value, LISTEN_ALLOWED)),
    }
}

/// `task_queue` and `task_consumer`: names that keep Redis's key layout
/// (and its Cluster hash tag) intact.
fn to_redis_name(option: &str, value: &Value) -> Result<String, ConfigError> {
    let name = to_non_empty_string(option, value)?;
    match taskq_redis::check_name("name", &name) {
        Ok(()) => Ok(name),
        Err(e) => Err(invalid(
            option,
            value,
            format!("{e}; a name of at most 128 bytes without spaces, `{{` or `}}`"),
        )),
    }
}

/// `enable_coroutine` and `task_enable_coroutine`: only `false` is accepted.
fn refuse_coroutines(_: &mut ServerConfig, option: &str, value: &Value) -> Result<(), ConfigError> {
    refuse_true(
        option,
        value,
        "taskq runs callbacks synchronously, one at a time per worker process",
    )
}

/// `task_use_object` and `task_object`: only `false` is accepted.
fn refuse_task_objects(
    _: &mut ServerConfig,
    option: &str,
    value: &Value,
) -> Result<(), ConfigError> {
    refuse_true(
        option,
        value,
        "use the classic onTask($server, $taskId, $srcWorkerId, $data) signature",
    )
}

/// `buffer_output_size` (and its alias): 1 byte to 4 GiB - 1, as in Swoole.
fn to_output_buffer_size(option: &str, value: &Value) -> Result<usize, ConfigError> {
    let size = to_size(option, value, 1, u64::from(u32::MAX))?;
    to_usize(option, value, size)
}
