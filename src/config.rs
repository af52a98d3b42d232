//! The options of `$server->set([...])` and `$client->set([...])`, validated
//! the way Swoole reads them, so existing Swoole configuration arrays work
//! unchanged. Values arrive already converted from zvals (`OptValue`); this
//! module never touches PHP, so every rule here is testable without an engine.
//!
//! Unknown keys are warnings, never errors: Swoole silently ignores them, and
//! failing on them would break scripts that set options taskq does not need.
//! Known keys with bad values are errors, because silently running with a
//! different worker count or framing than the user asked for is worse.

use crate::packet::{LengthType, PacketMode, PacketOptions};
use crate::php_serial::{AllowedClasses, Policy};

/// A PHP option value after conversion from a zval. The PHP layer does the
/// conversion so that this module stays free of PHP types and can be tested
/// with plain Rust values.
#[derive(Clone, Debug, PartialEq)]
pub enum OptValue {
    /// PHP `null`: a known option given `null` is an option not given, as
    /// in Swoole; kept so `$server->setting` shows what `set()` was given.
    Null,
    /// PHP `bool`; integer options refuse it, as a `true` worker count is
    /// almost certainly a mistake.
    Bool(bool),
    /// PHP `int`.
    Int(i64),
    /// PHP `float`; integral floats pass as integers, as PHP would coerce.
    Float(f64),
    /// PHP `string`; numeric and size strings ("4", "8M") are coerced.
    Str(String),
    /// PHP `array`; no option takes one, but it must still reach here so
    /// the user gets a proper "invalid value" error instead of a crash.
    List(Vec<OptValue>),
}

/// Why a `set()` call was refused. The PHP layer turns it into an exception;
/// the messages name the option, the offending value and what would be
/// accepted, because Swoole's own messages rarely do and users need all three.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The option exists but the value cannot be used. `value` is shown as
    /// PHP would print it (strings quoted) so users recognise their input.
    #[error("invalid value for option '{option}': {value} (allowed: {allowed})")]
    Invalid {
        option: String,
        value: String,
        allowed: String,
    },
    /// The option is a Swoole feature taskq deliberately does not implement;
    /// failing loudly beats silently running with different semantics.
    #[error("option '{option}' is not supported: {reason}")]
    Unsupported { option: String, reason: String },
}

/// A notice about an ignored key. Kept separate from errors because Swoole
/// ignores unknown keys; the PHP layer emits these as `E_WARNING` so typos
/// such as a trailing space in a key do not go unnoticed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

/// Swoole's `SW_IPC_BUFFER_SIZE`: offsets beyond it are rejected by Swoole
/// with "value is too large", so taskq rejects them too.
const MAX_HEADER_OFFSET: i64 = 8152;
/// Swoole raises smaller `package_max_length` values to this.
const MIN_PACKAGE_MAX_LENGTH: u64 = 64 * 1024;
const MAX_PACKAGE_MAX_LENGTH: u64 = 1024 * 1024 * 1024;
/// taskq's default is above Swoole's 2 MiB so that 8 MiB task payloads work
/// without any configuration.
const DEFAULT_PACKAGE_MAX_LENGTH: usize = 16 * 1024 * 1024;
/// Nesting a network task payload may have: deep enough for any job
/// description, shallow enough that checking it costs nothing.
const DEFAULT_TASK_MAX_DEPTH: usize = 128;
/// unserialize()'s own default limit (`unserialize_max_depth`).
const MAX_TASK_MAX_DEPTH: i64 = 4096;
const DEFAULT_SOCKET_BUFFER_SIZE: usize = 8 * 1024 * 1024;
const MAX_SOCKET_BUFFER_SIZE: u64 = i32::MAX as u64;
const DEFAULT_PACKAGE_EOF: &[u8] = b"\r\n\r\n";
const MAX_PACKAGE_EOF_LEN: usize = 8;
/// Upper bound for client timeouts, so that turning them into a `Duration`
/// or a timer can never overflow.
const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;
/// Below this score no "did you mean" is offered: unrelated Swoole options
/// (`open_http_protocol`, `ssl_cert_file`, ...) must not get misleading hints.
const SUGGESTION_THRESHOLD: f64 = 0.91;

const SERVER_OPTIONS: &[&str] = &[
    "worker_num",
    "task_worker_num",
    "daemonize",
    "log_file",
    "log_level",
    "pid_file",
    "max_request",
    "max_request_grace",
    "task_max_request",
    "task_max_request_grace",
    "dispatch_mode",
    "task_ipc_mode",
    "message_queue_key",
    "task_tmpdir",
    "backlog",
    "max_conn",
    "max_connection",
    "heartbeat_check_interval",
    "heartbeat_idle_time",
    "open_length_check",
    "package_length_type",
    "package_length_offset",
    "package_body_offset",
    "package_body_start",
    "open_eof_check",
    "open_eof_split",
    "package_eof",
    "package_max_length",
    "buffer_output_size",
    "output_buffer_size",
    "socket_buffer_size",
    "reload_async",
    "max_wait_time",
    "reload_wait_time",
    "open_tcp_nodelay",
    "user",
    "group",
    "reactor_num",
    "enable_unsafe_event",
    "discard_timeout_request",
    "open_tcp_keepalive",
    "enable_coroutine",
    "task_enable_coroutine",
    "task_use_object",
    "task_object",
    "task_retry_max",
    "task_retry_delay",
    "task_timeout",
    "task_queue_max",
    "task_window",
    "task_store",
    "auth_token",
    "package_timeout",
    "task_allowed_classes",
    "task_max_depth",
    "auth_timeout",
    "auth_max_pending",
];

const CLIENT_OPTIONS: &[&str] = &[
    "open_length_check",
    "package_length_type",
    "package_length_offset",
    "package_body_offset",
    "package_body_start",
    "open_eof_check",
    "open_eof_split",
    "package_eof",
    "package_max_length",
    "open_tcp_nodelay",
    "socket_buffer_size",
    "connect_timeout",
    "timeout",
    "taskq_protocol",
    "ack",
    "auth_token",
];

/// The framing options as the user set them. They are kept raw because they
/// may arrive in separate `set()` calls and only their combination decides
/// the `PacketMode`.
#[derive(Clone, Debug, PartialEq)]
struct Framing {
    open_length_check: bool,
    length_type: LengthType,
    length_offset: usize,
    body_offset: usize,
    open_eof_check: bool,
    open_eof_split: bool,
    eof: Vec<u8>,
    max_length: usize,
}

impl Framing {
    fn new(body_offset: usize) -> Self {
        Framing {
            open_length_check: false,
            length_type: LengthType::U32Be,
            length_offset: 0,
            body_offset,
            open_eof_check: false,
            open_eof_split: false,
            eof: DEFAULT_PACKAGE_EOF.to_vec(),
            max_length: DEFAULT_PACKAGE_MAX_LENGTH,
        }
    }

    /// Stores one framing option; `Ok(false)` when `key` is not one.
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        match key {
            "open_length_check" => self.open_length_check = to_bool(key, value)?,
            "package_length_type" => self.length_type = to_length_type(key, value)?,
            "package_length_offset" => self.length_offset = to_header_offset(key, value)?,
            "package_body_offset" | "package_body_start" => {
                self.body_offset = to_header_offset(key, value)?
            }
            "open_eof_check" => self.open_eof_check = to_bool(key, value)?,
            "open_eof_split" => self.open_eof_split = to_bool(key, value)?,
            "package_eof" => self.eof = to_eof(key, value)?,
            "package_max_length" => {
                let size = to_size(key, value, 0, MAX_PACKAGE_MAX_LENGTH)?;
                self.max_length = to_usize(key, value, size.max(MIN_PACKAGE_MAX_LENGTH))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn resolve(&self) -> Result<PacketOptions, ConfigError> {
        let eof = self.open_eof_check || self.open_eof_split;
        let mode = if self.open_length_check && eof {
            return Err(ConfigError::Invalid {
                option: "open_length_check".to_string(),
                value: "true".to_string(),
                allowed: "false while open_eof_check or open_eof_split is enabled: \
                          only one framing protocol can be used"
                    .to_string(),
            });
        } else if self.open_length_check {
            PacketMode::Length {
                length_type: self.length_type,
                length_offset: self.length_offset,
                body_offset: self.body_offset,
            }
        } else if self.open_eof_split {
            PacketMode::EofSplit {
                eof: self.eof.clone(),
            }
        } else if self.open_eof_check {
            PacketMode::EofCheck {
                eof: self.eof.clone(),
            }
        } else {
            PacketMode::Raw
        };
        Ok(PacketOptions {
            mode,
            max_length: self.max_length,
        })
    }
}

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
    /// Accepted for compatibility (1 unix socket, 2 and 3 message queue, 4
    /// Swoole's stream mode, which its `examples/task/task_stream.php`
    /// uses); taskq always uses its own IPC, so it changes no behaviour.
    pub task_ipc_mode: u8,
    /// Accepted for compatibility with `task_ipc_mode` 2 and 3.
    pub message_queue_key: i64,
    /// Where Swoole spills task payloads too large for IPC; kept so scripts
    /// that read it back see the same value.
    pub task_tmpdir: String,
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
    /// Reload workers without dropping in-flight work, Swoole's default.
    pub reload_async: bool,
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
    /// Accepted because Swoole scripts set it; taskq has no reactor threads
    /// and reports it only in `stats()`.
    pub reactor_num: usize,
    /// Swoole's switch to deliver onConnect/onClose while a worker is busy.
    pub enable_unsafe_event: bool,
    /// Drop data of connections that closed before their worker got to it.
    pub discard_timeout_request: bool,
    /// Enable `SO_KEEPALIVE` on accepted connections.
    pub open_tcp_keepalive: bool,
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
    cpu_count: usize,
    framing: Framing,
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
            task_ipc_mode: 1,
            message_queue_key: 0,
            task_tmpdir: "/tmp".to_string(),
            backlog: 4096,
            max_conn: 100_000,
            heartbeat_check_interval: 0,
            heartbeat_idle_time: 0,
            packet,
            buffer_output_size: u32::MAX as usize,
            socket_buffer_size: DEFAULT_SOCKET_BUFFER_SIZE,
            reload_async: true,
            max_wait_time: 3,
            reload_wait_time: 300,
            open_tcp_nodelay: true,
            user: None,
            group: None,
            reactor_num: cpu_count,
            enable_unsafe_event: false,
            discard_timeout_request: true,
            open_tcp_keepalive: false,
            task_retry_max: None,
            task_retry_delay: 1.0,
            task_timeout: None,
            task_queue_max: 1_000_000,
            task_window: 64,
            task_store: None,
            auth_token: None,
            auth_timeout: 5.0,
            auth_max_pending: 128,
            package_timeout: 30.0,
            task_allowed_classes: AllowedClasses::None,
            task_max_depth: DEFAULT_TASK_MAX_DEPTH,
            cpu_count,
            framing,
        }
    }

    /// Applies one `set()` call atomically: on `Err` nothing changes, so a
    /// script that catches the exception keeps a consistent configuration.
    /// Keys match exactly, as in Swoole; near misses only produce warnings
    /// with a suggestion, since an ignored option is easy to overlook.
    pub fn apply(&mut self, entries: &[(String, OptValue)]) -> Result<Vec<Warning>, ConfigError> {
        apply_atomically(self, entries)
    }

    /// `$server->setting` once the server started: the options `given` to
    /// `set()`, as given, plus what Swoole fills in at start for a key not
    /// set (scripts read `$serv->setting['worker_num']` to tell task workers
    /// apart), with the values in effect. `worker_num` and `task_worker_num`
    /// always hold the real counts, also where `set()` gave 0 for "CPU count".
    pub fn started_settings(&self, given: &[(String, OptValue)]) -> Vec<(String, OptValue)> {
        let count = |n: usize| OptValue::Int(n as i64);
        let filled = [
            ("worker_num", count(self.worker_num)),
            ("task_worker_num", count(self.task_worker_num)),
            ("output_buffer_size", count(self.buffer_output_size)),
            ("buffer_output_size", count(self.buffer_output_size)),
            ("max_connection", count(self.max_conn)),
            ("dispatch_mode", OptValue::Int(self.dispatch_mode.into())),
            ("task_ipc_mode", OptValue::Int(self.task_ipc_mode.into())),
            ("daemonize", OptValue::Bool(self.daemonize)),
            ("log_level", OptValue::Int(self.log_level.into())),
            ("max_request", OptValue::Int(self.max_request as i64)),
            (
                "task_max_request",
                OptValue::Int(self.task_max_request as i64),
            ),
            ("max_wait_time", OptValue::Int(self.max_wait_time as i64)),
            ("reload_async", OptValue::Bool(self.reload_async)),
            ("open_tcp_nodelay", OptValue::Bool(self.open_tcp_nodelay)),
            ("backlog", OptValue::Int(self.backlog.into())),
            ("socket_buffer_size", count(self.socket_buffer_size)),
            ("package_max_length", count(self.packet.max_length)),
            ("task_tmpdir", OptValue::Str(self.task_tmpdir.clone())),
        ];
        let mut out = given.to_vec();
        for (key, value) in filled {
            let always = matches!(key, "worker_num" | "task_worker_num");
            match out.iter_mut().find(|(k, _)| k == key) {
                Some(slot) if always || slot.1 == OptValue::Null => slot.1 = value,
                Some(_) => {}
                None => out.push((key.to_owned(), value)),
            }
        }
        out
    }

    /// The keys `apply` understands, for suggestions and documentation.
    pub fn known_options() -> &'static [&'static str] {
        SERVER_OPTIONS
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

    /// Stores one option; `Ok(false)` when the key is unknown.
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        if self.framing.set(key, value)? {
            return Ok(true);
        }
        match key {
            "worker_num" => {
                let n: usize = to_int_in(key, value, 0, 1000, "an integer from 1 to 1000")?;
                self.worker_num = if n == 0 { self.cpu_count } else { n };
            }
            "task_worker_num" => self.task_worker_num = to_int(key, value, 0, 1000)?,
            "daemonize" => self.daemonize = to_bool(key, value)?,
            "log_file" => self.log_file = Some(to_non_empty_string(key, value)?),
            "log_level" => {
                self.log_level =
                    to_int_in(key, value, 0, 6, "an integer from 0 (DEBUG) to 6 (NONE)")?
            }
            "pid_file" => self.pid_file = Some(to_non_empty_string(key, value)?),
            "max_request" => self.max_request = to_int(key, value, 0, i64::MAX)?,
            "max_request_grace" => self.max_request_grace = Some(to_int(key, value, 0, i64::MAX)?),
            "task_max_request" => self.task_max_request = to_int(key, value, 0, i64::MAX)?,
            "task_max_request_grace" => {
                self.task_max_request_grace = Some(to_int(key, value, 0, i64::MAX)?)
            }
            "dispatch_mode" => self.dispatch_mode = to_dispatch_mode(key, value)?,
            "task_ipc_mode" => self.task_ipc_mode = to_int(key, value, 1, 4)?,
            "message_queue_key" => self.message_queue_key = to_int(key, value, i64::MIN, i64::MAX)?,
            "task_tmpdir" => self.task_tmpdir = to_absolute_path(key, value)?,
            "backlog" => self.backlog = to_int(key, value, 0, 65535)?,
            "max_conn" | "max_connection" => self.max_conn = to_int(key, value, 1, 1_000_000)?,
            "heartbeat_check_interval" => {
                self.heartbeat_check_interval = to_int(key, value, 0, i64::MAX)?
            }
            "heartbeat_idle_time" => self.heartbeat_idle_time = to_int(key, value, 0, i64::MAX)?,
            "buffer_output_size" | "output_buffer_size" => {
                let size = to_size(key, value, 1, u64::from(u32::MAX))?;
                self.buffer_output_size = to_usize(key, value, size)?;
            }
            "socket_buffer_size" => self.socket_buffer_size = to_socket_buffer_size(key, value)?,
            "reload_async" => self.reload_async = to_bool(key, value)?,
            "max_wait_time" => self.max_wait_time = to_int(key, value, 1, 3600)?,
            "reload_wait_time" => self.reload_wait_time = to_int(key, value, 1, 86400)?,
            "open_tcp_nodelay" => self.open_tcp_nodelay = to_bool(key, value)?,
            "user" => self.user = Some(to_non_empty_string(key, value)?),
            "group" => self.group = Some(to_non_empty_string(key, value)?),
            "reactor_num" => self.reactor_num = to_int(key, value, 1, 1000)?,
            "enable_unsafe_event" => self.enable_unsafe_event = to_bool(key, value)?,
            "discard_timeout_request" => self.discard_timeout_request = to_bool(key, value)?,
            "open_tcp_keepalive" => self.open_tcp_keepalive = to_bool(key, value)?,
            "task_retry_max" => self.task_retry_max = Some(to_int(key, value, 0, 100)?),
            "task_retry_delay" => self.task_retry_delay = to_seconds(key, value)?,
            "task_timeout" => {
                self.task_timeout = match value {
                    OptValue::Int(0) => None,
                    _ => Some(to_seconds(key, value)?),
                }
            }
            "task_queue_max" => self.task_queue_max = to_int(key, value, 0, i64::MAX)?,
            "task_window" => self.task_window = to_int(key, value, 1, 1024)?,
            "task_store" => self.task_store = Some(to_absolute_or_relative_dir(key, value)?),
            "auth_token" => self.auth_token = Some(to_non_empty_string(key, value)?),
            "auth_timeout" => self.auth_timeout = to_seconds(key, value)?,
            "auth_max_pending" => self.auth_max_pending = to_int(key, value, 1, 1_000_000)?,
            "package_timeout" => self.package_timeout = to_seconds(key, value)?,
            "task_allowed_classes" => self.task_allowed_classes = to_allowed_classes(key, value)?,
            "task_max_depth" => self.task_max_depth = to_int(key, value, 1, MAX_TASK_MAX_DEPTH)?,
            "enable_coroutine" | "task_enable_coroutine" => refuse_true(
                key,
                value,
                "taskq runs callbacks synchronously, one at a time per worker process",
            )?,
            "task_use_object" | "task_object" => refuse_true(
                key,
                value,
                "use the classic onTask($server, $taskId, $srcWorkerId, $data) signature",
            )?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// What server and client configurations share, so one function applies a
/// `set()` call to either with the same atomicity and warnings.
trait Settable: Clone {
    const KNOWN: &'static [&'static str];
    /// Applies one key; `Ok(false)` for a key this side does not know.
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError>;
    /// Rebuilds the framing from every framing option set so far.
    fn resolve_packet(&mut self) -> Result<(), ConfigError>;
}

impl Settable for ServerConfig {
    const KNOWN: &'static [&'static str] = SERVER_OPTIONS;
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        ServerConfig::set(self, key, value)
    }
    fn resolve_packet(&mut self) -> Result<(), ConfigError> {
        self.packet = self.framing.resolve()?;
        Ok(())
    }
}

impl Settable for ClientConfig {
    const KNOWN: &'static [&'static str] = CLIENT_OPTIONS;
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        ClientConfig::set(self, key, value)
    }
    fn resolve_packet(&mut self) -> Result<(), ConfigError> {
        self.packet = self.framing.resolve()?;
        Ok(())
    }
}

/// Works on a copy and replaces `cfg` only when every key was accepted.
fn apply_atomically<T: Settable>(
    cfg: &mut T,
    entries: &[(String, OptValue)],
) -> Result<Vec<Warning>, ConfigError> {
    let mut next = cfg.clone();
    let mut warnings = Vec::new();
    for (key, value) in entries {
        // Swoole's set() skips a null value: `'log_file' => $cfg['log'] ??
        // null` keeps the default, or what an earlier set() gave.
        if *value == OptValue::Null && T::KNOWN.contains(&key.as_str()) {
            continue;
        }
        if !next.set(key, value)? {
            warnings.push(unknown_option(key, T::KNOWN));
        }
    }
    next.resolve_packet()?;
    *cfg = next;
    Ok(warnings)
}

/// Everything `$client->set()` accepts. The framing options are the
/// server's, but with Swoole's client default of body offset 0, so a client
/// configured like a Swoole client talks to a Swoole-configured server.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// The framing resolved from all framing options set so far. Rebuilt by
    /// every `apply`, so assigning it directly does not survive the next one.
    pub packet: PacketOptions,
    /// Disable Nagle, Swoole's default, for request/response latency.
    pub open_tcp_nodelay: bool,
    /// Socket buffer size; 8 MiB as on the server.
    pub socket_buffer_size: usize,
    /// Seconds allowed for `connect()`; `None` keeps the timeout passed to
    /// `connect()` itself, which is how Swoole treats an unset option.
    pub connect_timeout: Option<f64>,
    /// Seconds allowed for each read or write; `None` keeps the default.
    pub timeout: Option<f64>,
    /// Speak taskq's framed protocol (one send() = one onReceive) when no
    /// framing option is set. `false` makes the client a plain Swoole raw
    /// client for talking to servers that are not taskq.
    pub taskq_protocol: bool,
    /// `send()` waits until the server has taken the message.
    pub ack: bool,
    /// Shared secret presented at connect (server `auth_token`).
    pub auth_token: Option<String>,
    framing: Framing,
}

impl ClientConfig {
    /// Swoole's client defaults (no framing, body offset 0), with taskq's
    /// larger `package_max_length` so big task results fit by default.
    pub fn new() -> Self {
        let framing = Framing::new(0);
        ClientConfig {
            packet: PacketOptions {
                mode: PacketMode::Raw,
                max_length: framing.max_length,
            },
            open_tcp_nodelay: true,
            socket_buffer_size: DEFAULT_SOCKET_BUFFER_SIZE,
            connect_timeout: None,
            timeout: None,
            taskq_protocol: true,
            ack: false,
            auth_token: None,
            framing,
        }
    }

    /// Applies one `set()` call atomically, with the same rules and
    /// warnings as `ServerConfig::apply`.
    pub fn apply(&mut self, entries: &[(String, OptValue)]) -> Result<Vec<Warning>, ConfigError> {
        apply_atomically(self, entries)
    }

    /// The keys `apply` understands, for suggestions and documentation.
    pub fn known_options() -> &'static [&'static str] {
        CLIENT_OPTIONS
    }

    /// Whether `recv()` returns whole packets rather than whatever bytes
    /// arrived, which changes how the client must read.
    pub fn has_framing(&self) -> bool {
        self.packet.mode != PacketMode::Raw
    }

    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        if self.framing.set(key, value)? {
            return Ok(true);
        }
        match key {
            "open_tcp_nodelay" => self.open_tcp_nodelay = to_bool(key, value)?,
            "socket_buffer_size" => self.socket_buffer_size = to_socket_buffer_size(key, value)?,
            "connect_timeout" => self.connect_timeout = Some(to_seconds(key, value)?),
            "timeout" => self.timeout = Some(to_seconds(key, value)?),
            "taskq_protocol" => self.taskq_protocol = to_bool(key, value)?,
            "ack" => self.ack = to_bool(key, value)?,
            "auth_token" => self.auth_token = Some(to_non_empty_string(key, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Default for ClientConfig {
    /// Same as `new`, so the client can be built with `..Default::default()`
    /// and by generic code.
    fn default() -> Self {
        Self::new()
    }
}

fn grace(max_request: u64, explicit: Option<u64>) -> u64 {
    match explicit {
        Some(grace) => grace,
        None if max_request > 10 => max_request / 2,
        None => 0,
    }
}

/// The warning for a key no option matches, with a suggestion when a known
/// key is close after ignoring case and surrounding whitespace.
fn unknown_option(key: &str, known: &[&str]) -> Warning {
    let wanted = key.trim().to_lowercase();
    let best = known
        .iter()
        .map(|option| (strsim::jaro_winkler(&wanted, option), *option))
        .fold(None, |best: Option<(f64, &str)>, candidate| match best {
            Some(b) if b.0 >= candidate.0 => Some(b),
            _ => Some(candidate),
        });
    match best {
        Some((score, option)) if score >= SUGGESTION_THRESHOLD => Warning(format!(
            "unsupported option '{key}', did you mean '{option}'?"
        )),
        _ => Warning(format!(
            "unsupported option '{key}' (known options: {})",
            known.join(", ")
        )),
    }
}

/// The value as PHP's `var_export` would show it (on one line).
fn php_repr(value: &OptValue) -> String {
    match value {
        OptValue::Null => "null".to_string(),
        OptValue::Bool(b) => b.to_string(),
        OptValue::Int(n) => n.to_string(),
        OptValue::Float(f) if f.is_nan() => "NAN".to_string(),
        OptValue::Float(f) if f.is_infinite() => if *f > 0.0 { "INF" } else { "-INF" }.to_string(),
        OptValue::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        OptValue::Float(f) => f.to_string(),
        OptValue::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        OptValue::List(items) => {
            let items: Vec<String> = items.iter().map(php_repr).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn invalid(option: &str, value: &OptValue, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option: option.to_string(),
        value: php_repr(value),
        allowed: allowed.into(),
    }
}

const BOOL_ALLOWED: &str = "true, false, 0, 1, '0', '1', '', 'true' or 'false'";

fn to_bool(option: &str, value: &OptValue) -> Result<bool, ConfigError> {
    match value {
        OptValue::Bool(b) => Ok(*b),
        OptValue::Int(0) => Ok(false),
        OptValue::Int(1) => Ok(true),
        // "" is what parse_ini_file() makes of Off/no/false.
        OptValue::Str(s) if s.is_empty() || s == "0" || s == "false" => Ok(false),
        OptValue::Str(s) if s == "1" || s == "true" => Ok(true),
        _ => Err(invalid(option, value, BOOL_ALLOWED)),
    }
}

/// PHP's whitespace for numeric strings (`" 4"` and `"4 "` are numeric).
fn trim_php(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
}

/// A PHP numeric string as a float; Rust's own parser alone would also
/// accept "inf" and "nan", which PHP does not consider numeric.
fn parse_php_float(s: &str) -> Option<f64> {
    let s = trim_php(s);
    let numeric = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if numeric {
        s.parse().ok()
    } else {
        None
    }
}

fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every integral float below it fits.
    let limit = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && f >= -limit && f < limit).then_some(f as i64)
}

/// An integer as PHP would coerce it: ints, integral floats, numeric strings.
fn as_int(value: &OptValue) -> Option<i64> {
    match value {
        OptValue::Int(n) => Some(*n),
        OptValue::Float(f) => float_to_int(*f),
        OptValue::Str(s) => trim_php(s)
            .parse()
            .ok()
            .or_else(|| parse_php_float(s).and_then(float_to_int)),
        _ => None,
    }
}

fn int_allowed(min: i64, max: i64) -> String {
    match (min, max) {
        (i64::MIN, i64::MAX) => "an integer".to_string(),
        (0, i64::MAX) => "a non-negative integer".to_string(),
        _ => format!("an integer from {min} to {max}"),
    }
}

fn to_int<T: TryFrom<i64>>(
    option: &str,
    value: &OptValue,
    min: i64,
    max: i64,
) -> Result<T, ConfigError> {
    to_int_in(option, value, min, max, &int_allowed(min, max))
}

/// Like `to_int`, with a hand-written `allowed` text for options whose
/// range needs explaining.
fn to_int_in<T: TryFrom<i64>>(
    option: &str,
    value: &OptValue,
    min: i64,
    max: i64,
    allowed: &str,
) -> Result<T, ConfigError> {
    as_int(value)
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(option, value, allowed))
}

const DISPATCH_ALLOWED: &str =
    "1 round-robin, 2 fixed by connection, 3 idle worker, 4 by client IP, 5 by uid";

/// Swoole's modes 6 to 10 depend on its reactor threads and coroutines,
/// which taskq does not have; the message says so instead of just "invalid".
fn to_dispatch_mode(option: &str, value: &OptValue) -> Result<u8, ConfigError> {
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

fn to_header_offset(option: &str, value: &OptValue) -> Result<usize, ConfigError> {
    let allowed = int_allowed(0, MAX_HEADER_OFFSET);
    match as_int(value) {
        Some(n) if n > MAX_HEADER_OFFSET => Err(invalid(
            option,
            value,
            format!("{allowed}; value is too large"),
        )),
        _ => to_int_in(option, value, 0, MAX_HEADER_OFFSET, &allowed),
    }
}

fn to_length_type(option: &str, value: &OptValue) -> Result<LengthType, ConfigError> {
    let found = match value {
        OptValue::Str(s) => {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if LengthType::pack_chars().contains(c) => {
                    LengthType::from_pack_char(c)
                }
                _ => None,
            }
        }
        _ => None,
    };
    found.ok_or_else(|| {
        let chars: Vec<String> = LengthType::pack_chars()
            .chars()
            .map(|c| c.to_string())
            .collect();
        invalid(
            option,
            value,
            format!("one pack() format character: {}", chars.join(", ")),
        )
    })
}

fn to_eof(option: &str, value: &OptValue) -> Result<Vec<u8>, ConfigError> {
    match value {
        OptValue::Str(s) if (1..=MAX_PACKAGE_EOF_LEN).contains(&s.len()) => {
            Ok(s.as_bytes().to_vec())
        }
        _ => Err(invalid(
            option,
            value,
            format!("a string of 1 to {MAX_PACKAGE_EOF_LEN} bytes"),
        )),
    }
}

/// Byte counts shown the way users write them ("64K", "1G").
fn human_size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        .map_or_else(
            || n.to_string(),
            |(unit, suffix)| format!("{}{suffix}", n / unit),
        )
}

/// A byte count as Swoole's `php_swoole_parse_to_size` reads it: an integer
/// or a string with a K, M or G suffix (binary multiples, any case).
fn as_size(value: &OptValue) -> Option<u64> {
    if let OptValue::Str(s) = value {
        let s = trim_php(s);
        let shift = match s.chars().last() {
            Some('k' | 'K') => Some(10),
            Some('m' | 'M') => Some(20),
            Some('g' | 'G') => Some(30),
            _ => None,
        };
        if let Some(shift) = shift {
            let digits = &s[..s.len() - 1];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return digits.parse::<u64>().ok()?.checked_mul(1 << shift);
        }
    }
    as_int(value).and_then(|n| u64::try_from(n).ok())
}

fn to_size(option: &str, value: &OptValue, min: u64, max: u64) -> Result<u64, ConfigError> {
    as_size(value)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            let range = if min == 0 {
                format!("up to {}", human_size(max))
            } else {
                format!("from {} to {}", human_size(min), human_size(max))
            };
            invalid(
                option,
                value,
                format!(
                    "a byte count {range}, as an integer or a size string like '8M' \
                     (K, M, G are binary multiples)"
                ),
            )
        })
}

/// Narrows a validated size; only fails on targets where `usize` is smaller
/// than the option's range.
fn to_usize(option: &str, value: &OptValue, n: u64) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| invalid(option, value, "a size that fits this platform"))
}

fn to_socket_buffer_size(option: &str, value: &OptValue) -> Result<usize, ConfigError> {
    let size = to_size(option, value, 1, MAX_SOCKET_BUFFER_SIZE)?;
    to_usize(option, value, size)
}

fn to_seconds(option: &str, value: &OptValue) -> Result<f64, ConfigError> {
    let seconds = match value {
        OptValue::Int(n) => Some(*n as f64),
        OptValue::Float(f) => Some(*f),
        OptValue::Str(s) => parse_php_float(s),
        _ => None,
    };
    seconds
        .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECS)
        .ok_or_else(|| {
            invalid(
                option,
                value,
                format!("a number of seconds greater than 0 and at most {MAX_TIMEOUT_SECS}"),
            )
        })
}

/// A directory path; relative paths are kept (taskq keeps the working
/// directory when it daemonizes).
fn to_absolute_or_relative_dir(option: &str, value: &OptValue) -> Result<String, ConfigError> {
    let path = to_non_empty_string(option, value)?;
    if path.contains('\0') {
        return Err(invalid(option, value, "a directory path without NUL bytes"));
    }
    Ok(path)
}

fn to_non_empty_string(option: &str, value: &OptValue) -> Result<String, ConfigError> {
    match value {
        OptValue::Str(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid(option, value, "a non-empty string")),
    }
}

fn to_absolute_path(option: &str, value: &OptValue) -> Result<String, ConfigError> {
    match value {
        OptValue::Str(s) if s.starts_with('/') => Ok(s.clone()),
        _ => Err(invalid(
            option,
            value,
            "an absolute path (starting with '/')",
        )),
    }
}

/// Accepts `false` so configurations that spell out Swoole's defaults keep
/// working, and refuses `true` because the feature does not exist in taskq.
const ALLOWED_CLASSES: &str = "false (no objects), true (any class) or a list of class names";

/// `task_allowed_classes`: false, true or class names, as unserialize()'s
/// `allowed_classes` takes them.
fn to_allowed_classes(option: &str, value: &OptValue) -> Result<AllowedClasses, ConfigError> {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'\\' | 0x80..=0xff))
    };
    match value {
        OptValue::List(items) => items
            .iter()
            .map(|item| match item {
                OptValue::Str(s) if valid_name(s) => Ok(s.trim_start_matches('\\')),
                _ => Err(invalid(option, value, ALLOWED_CLASSES)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|names| AllowedClasses::only(&names)),
        OptValue::Bool(true) => Ok(AllowedClasses::All),
        OptValue::Bool(false) => Ok(AllowedClasses::None),
        _ => Err(invalid(option, value, ALLOWED_CLASSES)),
    }
}

fn refuse_true(option: &str, value: &OptValue, reason: &str) -> Result<(), ConfigError> {
    if to_bool(option, value)? {
        Err(ConfigError::Unsupported {
            option: option.to_string(),
            reason: reason.to_string(),
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_settings_fill_in_swooles_defaults_and_keep_what_was_given() {
        let given = entries(&[
            ("worker_num", OptValue::Int(0)),
            ("max_request", OptValue::Str("100".into())),
        ]);
        let mut c = ServerConfig::new(4);
        c.apply(&given).unwrap();
        let started = c.started_settings(&given);
        let get = |key: &str| {
            started
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("worker_num"),
            Some(OptValue::Int(4)),
            "0 meant the CPU count"
        );
        assert_eq!(get("task_worker_num"), Some(OptValue::Int(0)));
        assert_eq!(
            get("max_request"),
            Some(OptValue::Str("100".into())),
            "as given"
        );
        assert_eq!(
            get("output_buffer_size"),
            Some(OptValue::Int(u32::MAX as i64))
        );
        assert_eq!(get("max_connection"), Some(OptValue::Int(100_000)));
        assert_eq!(get("dispatch_mode"), Some(OptValue::Int(2)));
        assert_eq!(started[0].0, "worker_num", "given keys keep their place");
    }

    #[test]
    fn task_reliability_options_have_defaults_and_limits() {
        let mut c = ServerConfig::new(2);
        assert_eq!(
            (
                c.client_task_retries(),
                c.worker_task_retries(),
                c.task_retry_delay,
                c.task_timeout,
                c.task_queue_max
            ),
            (2, 0, 1.0, None, 1_000_000),
            "client jobs are retried by default, a worker's task() is not (as in Swoole)"
        );
        c.apply(&[
            ("task_retry_max".into(), OptValue::Int(5)),
            ("task_retry_delay".into(), OptValue::Float(0.25)),
            ("task_timeout".into(), OptValue::Int(10)),
            ("task_queue_max".into(), OptValue::Int(0)),
            ("task_window".into(), OptValue::Int(1)),
            ("task_store".into(), OptValue::Str("/var/lib/taskq".into())),
            ("auth_token".into(), OptValue::Str("s3cret".into())),
        ])
        .unwrap();
        assert_eq!(
            (
                c.client_task_retries(),
                c.worker_task_retries(),
                c.task_retry_delay,
                c.task_timeout,
                c.task_queue_max
            ),
            (5, 5, 0.25, Some(10.0), 0),
            "an explicit task_retry_max applies to both"
        );
        assert_eq!(c.task_window, 1);
        assert_eq!(c.task_store.as_deref(), Some("/var/lib/taskq"));
        c.apply(&[("task_timeout".into(), OptValue::Int(0))])
            .unwrap();
        assert_eq!(c.task_timeout, None);
        let err = c
            .apply(&[("task_retry_max".into(), OptValue::Int(-1))])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for option 'task_retry_max': -1 (allowed: an integer from 0 to 100)"
        );
        assert!(c
            .apply(&[("auth_token".into(), OptValue::Str(String::new()))])
            .is_err());
        assert!(c
            .apply(&[("task_retry_delay".into(), OptValue::Int(0))])
            .is_err());
    }

    fn s(v: &str) -> OptValue {
        OptValue::Str(v.to_string())
    }

    fn entries(list: &[(&str, OptValue)]) -> Vec<(String, OptValue)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn server_with(list: &[(&str, OptValue)]) -> Result<ServerConfig, ConfigError> {
        let mut config = ServerConfig::new(8);
        config.apply(&entries(list))?;
        Ok(config)
    }

    fn client_with(list: &[(&str, OptValue)]) -> Result<ClientConfig, ConfigError> {
        let mut config = ClientConfig::new();
        config.apply(&entries(list))?;
        Ok(config)
    }

    #[test]
    fn a_null_option_is_an_option_not_given() {
        let c = server_with(&[
            ("worker_num", OptValue::Int(3)),
            ("worker_num", OptValue::Null),
            ("daemonize", OptValue::Null),
            ("task_timeout", OptValue::Null),
            ("log_file", OptValue::Null),
        ])
        .unwrap();
        let d = ServerConfig::new(8);
        assert_eq!(
            (c.worker_num, c.daemonize, c.task_timeout, c.log_file),
            (3, d.daemonize, d.task_timeout, d.log_file)
        );
        let c =
            client_with(&[("timeout", OptValue::Null), ("package_eof", OptValue::Null)]).unwrap();
        assert_eq!(c, ClientConfig::new());
        let mut c = ServerConfig::new(8);
        let warnings = c
            .apply(&entries(&[("no_such_option", OptValue::Null)]))
            .unwrap();
        assert_eq!(warnings.len(), 1, "an unknown key is still reported");
        let setting = c.started_settings(&entries(&[("daemonize", OptValue::Null)]));
        assert!(setting.contains(&("daemonize".to_owned(), OptValue::Bool(false))));
    }

    fn server_err(key: &str, value: OptValue) -> String {
        match server_with(&[(key, value)]) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{key} was accepted"),
        }
    }

    fn client_err(key: &str, value: OptValue) -> String {
        match client_with(&[(key, value)]) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("{key} was accepted"),
        }
    }

    #[test]
    fn server_defaults_follow_swoole() {
        let c = ServerConfig::new(6);
        assert_eq!(c.worker_num, 6);
        assert_eq!(c.task_worker_num, 0);
        assert!(!c.daemonize);
        assert_eq!(c.log_file, None);
        assert_eq!(c.log_level, 2);
        assert_eq!(c.pid_file, None);
        assert_eq!(c.max_request, 0);
        assert_eq!(c.max_request_grace, None);
        assert_eq!(c.effective_max_request_grace(), 0);
        assert_eq!(c.task_max_request, 0);
        assert_eq!(c.task_max_request_grace, None);
        assert_eq!(c.effective_task_max_request_grace(), 0);
        assert_eq!(c.dispatch_mode, 2);
        assert_eq!(c.task_ipc_mode, 1);
        assert_eq!(c.message_queue_key, 0);
        assert_eq!(c.task_tmpdir, "/tmp");
        assert_eq!(c.backlog, 4096);
        assert_eq!(c.max_conn, 100_000);
        assert_eq!(c.heartbeat_check_interval, 0);
        assert_eq!(c.heartbeat_idle_time, 0);
        assert_eq!(c.heartbeat(), None);
        assert_eq!(
            c.packet,
            PacketOptions {
                mode: PacketMode::Raw,
                max_length: 16 * 1024 * 1024
            }
        );
        assert_eq!(c.buffer_output_size, u32::MAX as usize);
        assert_eq!(c.socket_buffer_size, 8 * 1024 * 1024);
        assert!(c.reload_async);
        assert_eq!(c.max_wait_time, 3);
        assert_eq!(c.reload_wait_time, 300);
        assert!(c.open_tcp_nodelay);
        assert_eq!(c.user, None);
        assert_eq!(c.group, None);
        assert_eq!(c.reactor_num, 6);
        assert!(!c.enable_unsafe_event);
        assert!(c.discard_timeout_request);
        assert!(!c.open_tcp_keepalive);
    }

    #[test]
    fn zero_cpu_count_still_gives_one_worker() {
        let c = ServerConfig::new(0);
        assert_eq!((c.worker_num, c.reactor_num), (1, 1));
    }

    #[test]
    fn client_defaults_follow_swoole() {
        let c = ClientConfig::new();
        assert_eq!(c, ClientConfig::default());
        assert_eq!(c.packet.mode, PacketMode::Raw);
        assert_eq!(c.packet.max_length, 16 * 1024 * 1024);
        assert!(c.open_tcp_nodelay);
        assert_eq!(c.socket_buffer_size, 8 * 1024 * 1024);
        assert_eq!(c.connect_timeout, None);
        assert_eq!(c.timeout, None);
        assert!(!c.has_framing());
    }

    #[test]
    fn every_known_server_option_is_handled() {
        for key in ServerConfig::known_options() {
            let mut c = ServerConfig::new(4);
            // An empty list of allowed classes is valid: no classes.
            let probe = match *key {
                "task_allowed_classes" => OptValue::Float(0.5),
                _ => OptValue::List(vec![]),
            };
            let result = c.apply(&entries(&[(key, probe)]));
            assert!(
                matches!(result, Err(ConfigError::Invalid { ref option, .. }) if option == key),
                "{key}: {result:?}"
            );
        }
    }

    #[test]
    fn auth_timeout_and_auth_max_pending_are_validated() {
        let mut c = ServerConfig::new(4);
        assert_eq!((c.auth_timeout, c.auth_max_pending), (5.0, 128));
        c.apply(&entries(&[
            ("auth_timeout", OptValue::Float(0.5)),
            ("auth_max_pending", OptValue::Int(10)),
        ]))
        .unwrap();
        assert_eq!((c.auth_timeout, c.auth_max_pending), (0.5, 10));
        let e = c
            .apply(&entries(&[("auth_timeout", OptValue::Int(0))]))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid value for option 'auth_timeout': 0 (allowed: a number of seconds greater than 0"),
            "{e}"
        );
        let e = c
            .apply(&entries(&[("auth_max_pending", OptValue::Int(0))]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for option 'auth_max_pending': 0 (allowed: an integer from 1 to 1000000)"
        );
    }

    #[test]
    fn task_allowed_classes_takes_false_true_or_class_names() {
        let mut c = ServerConfig::new(4);
        assert_eq!(c.task_allowed_classes, AllowedClasses::None);
        assert_eq!(c.task_max_depth, 128);
        let names =
            |v: &[&str]| OptValue::List(v.iter().map(|s| OptValue::Str(s.to_string())).collect());
        c.apply(&entries(&[(
            "task_allowed_classes",
            names(&["App\\Mail", "\\stdClass"]),
        )]))
        .unwrap();
        assert_eq!(
            c.task_allowed_classes,
            AllowedClasses::Only(vec!["app\\mail".into(), "stdclass".into()])
        );
        c.apply(&entries(&[("task_allowed_classes", OptValue::Bool(true))]))
            .unwrap();
        assert_eq!(c.task_allowed_classes, AllowedClasses::All);
        c.apply(&entries(&[("task_allowed_classes", names(&[]))]))
            .unwrap();
        assert_eq!(c.task_allowed_classes, AllowedClasses::Only(vec![]));
        for bad in [
            names(&["a b"]),
            names(&[""]),
            OptValue::Str("Foo".into()),
            OptValue::Int(1),
        ] {
            let e = c
                .apply(&entries(&[("task_allowed_classes", bad)]))
                .unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("invalid value for option 'task_allowed_classes'")
                    && e.to_string().ends_with(
                        "(allowed: false (no objects), true (any class) or a list of class names)"
                    ),
                "{e}"
            );
        }
        c.apply(&entries(&[("task_max_depth", OptValue::Int(4096))]))
            .unwrap();
        assert_eq!(c.task_max_depth, 4096);
        let e = c
            .apply(&entries(&[("task_max_depth", OptValue::Int(0))]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for option 'task_max_depth': 0 (allowed: an integer from 1 to 4096)"
        );
        assert_eq!(
            c.untrusted_values(),
            Policy {
                classes: AllowedClasses::Only(vec![]),
                max_depth: 4096
            }
        );
    }

    #[test]
    fn every_known_client_option_is_handled() {
        for key in ClientConfig::known_options() {
            let mut c = ClientConfig::new();
            let result = c.apply(&entries(&[(key, OptValue::List(vec![]))]));
            assert!(
                matches!(result, Err(ConfigError::Invalid { ref option, .. }) if option == key),
                "{key}: {result:?}"
            );
        }
    }

    #[test]
    fn seed_array_gives_one_warning_and_applies_the_rest() {
        let mut c = ServerConfig::new(4);
        let warnings = c
            .apply(&entries(&[
                ("worker_num", OptValue::Int(1)),
                ("daemonize", OptValue::Int(1)),
                ("max_request", OptValue::Int(10000)),
                ("dispatch_mode", OptValue::Int(2)),
                ("task_worker_num", OptValue::Int(8)),
                ("task_ipc_mode ", OptValue::Int(3)),
            ]))
            .unwrap();
        assert_eq!(
            warnings,
            vec![Warning(
                "unsupported option 'task_ipc_mode ', did you mean 'task_ipc_mode'?".to_string()
            )]
        );
        assert_eq!(c.worker_num, 1);
        assert!(c.daemonize);
        assert_eq!(c.max_request, 10000);
        assert_eq!(c.effective_max_request_grace(), 5000);
        assert_eq!(c.dispatch_mode, 2);
        assert_eq!(c.task_worker_num, 8);
        assert_eq!(c.task_ipc_mode, 1, "the misspelled key must be ignored");
    }

    #[test]
    fn case_and_typos_get_suggestions() {
        let mut c = ServerConfig::new(4);
        let warnings = c
            .apply(&entries(&[
                ("Worker_Num", OptValue::Int(3)),
                ("max_requests", OptValue::Int(3)),
                ("dispatch", OptValue::Int(3)),
            ]))
            .unwrap();
        assert_eq!(c.worker_num, 4, "keys are case-sensitive");
        assert_eq!(c.max_request, 0);
        assert_eq!(
            warnings,
            vec![
                Warning("unsupported option 'Worker_Num', did you mean 'worker_num'?".into()),
                Warning("unsupported option 'max_requests', did you mean 'max_request'?".into()),
                Warning("unsupported option 'dispatch', did you mean 'dispatch_mode'?".into()),
            ]
        );
    }

    #[test]
    fn unrelated_keys_list_the_known_options_of_their_side() {
        let mut server = ServerConfig::new(4);
        let warnings = server
            .apply(&entries(&[("foo", OptValue::Int(1))]))
            .unwrap();
        assert_eq!(
            warnings,
            vec![Warning(format!(
                "unsupported option 'foo' (known options: {})",
                ServerConfig::known_options().join(", ")
            ))]
        );
        assert!(warnings[0]
            .0
            .contains("worker_num, task_worker_num, daemonize, "));

        let mut client = ClientConfig::new();
        let warnings = client
            .apply(&entries(&[("worker_num", OptValue::Int(1))]))
            .unwrap();
        assert_eq!(
            warnings,
            vec![Warning(
                "unsupported option 'worker_num' (known options: open_length_check, \
                 package_length_type, package_length_offset, package_body_offset, \
                 package_body_start, open_eof_check, open_eof_split, package_eof, \
                 package_max_length, open_tcp_nodelay, socket_buffer_size, \
                 connect_timeout, timeout, taskq_protocol, ack, auth_token)"
                    .into()
            )]
        );
        assert_eq!(client, ClientConfig::new());
    }

    #[test]
    fn other_swoole_options_get_no_misleading_suggestion() {
        for key in [
            "open_http_protocol",
            "open_websocket_protocol",
            "open_mqtt_protocol",
            "open_redis_protocol",
            "buffer_input_size",
            "input_buffer_size",
            "enable_static_handler",
            "enable_reuse_port",
            "ssl_cert_file",
            "max_coroutine",
            "hook_flags",
            "",
        ] {
            let mut c = ServerConfig::new(4);
            let warnings = c.apply(&entries(&[(key, OptValue::Bool(true))])).unwrap();
            assert_eq!(warnings.len(), 1);
            assert!(
                warnings[0].0.contains("(known options: "),
                "{key}: {warnings:?}"
            );
        }
    }

    #[test]
    fn worker_num_values() {
        assert_eq!(
            server_with(&[("worker_num", OptValue::Int(1000))])
                .unwrap()
                .worker_num,
            1000
        );
        assert_eq!(
            server_with(&[("worker_num", s("4"))]).unwrap().worker_num,
            4
        );
        assert_eq!(
            server_with(&[("worker_num", s(" 4 "))]).unwrap().worker_num,
            4
        );
        assert_eq!(
            server_with(&[("worker_num", s("4.0"))]).unwrap().worker_num,
            4
        );
        assert_eq!(
            server_with(&[("worker_num", s("1e2"))]).unwrap().worker_num,
            100
        );
        assert_eq!(
            server_with(&[("worker_num", OptValue::Float(3.0))])
                .unwrap()
                .worker_num,
            3
        );
        assert_eq!(
            server_with(&[("worker_num", OptValue::Int(0))])
                .unwrap()
                .worker_num,
            8
        );
        assert_eq!(
            server_err("worker_num", OptValue::Int(-3)),
            "invalid value for option 'worker_num': -3 (allowed: an integer from 1 to 1000)"
        );
        assert_eq!(
            server_err("worker_num", OptValue::Int(1001)),
            "invalid value for option 'worker_num': 1001 (allowed: an integer from 1 to 1000)"
        );
        assert_eq!(
            server_err("worker_num", s("four")),
            "invalid value for option 'worker_num': 'four' (allowed: an integer from 1 to 1000)"
        );
        assert_eq!(
            server_err("worker_num", OptValue::Float(2.5)),
            "invalid value for option 'worker_num': 2.5 (allowed: an integer from 1 to 1000)"
        );
        for bad in [
            OptValue::Bool(true),
            s(""),
            s("4abc"),
            s("inf"),
            s("nan"),
            OptValue::Float(f64::NAN),
            OptValue::Float(1e300),
        ] {
            assert!(
                server_with(&[("worker_num", bad.clone())]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn integer_options_ranges() {
        let c = server_with(&[
            ("task_worker_num", OptValue::Int(1000)),
            ("log_level", OptValue::Int(6)),
            ("max_request", OptValue::Int(i64::MAX)),
            ("task_ipc_mode", s("3")),
            ("message_queue_key", OptValue::Int(-5)),
            ("backlog", OptValue::Int(65535)),
            ("max_conn", OptValue::Int(1)),
            ("max_wait_time", OptValue::Int(3600)),
            ("reload_wait_time", OptValue::Int(86400)),
            ("reactor_num", OptValue::Int(2)),
        ])
        .unwrap();
        assert_eq!(c.task_worker_num, 1000);
        assert_eq!(c.log_level, 6);
        assert_eq!(c.max_request, i64::MAX as u64);
        assert_eq!(c.task_ipc_mode, 3);
        assert_eq!(c.message_queue_key, -5);
        assert_eq!(
            server_with(&[("task_ipc_mode", OptValue::Int(4))])
                .unwrap()
                .task_ipc_mode,
            4,
            "Swoole's stream mode is accepted like 1 to 3"
        );
        assert_eq!(c.backlog, 65535);
        assert_eq!(c.max_conn, 1);
        assert_eq!(c.max_wait_time, 3600);
        assert_eq!(c.reload_wait_time, 86400);
        assert_eq!(c.reactor_num, 2);
        assert_eq!(
            server_with(&[("max_connection", OptValue::Int(77))])
                .unwrap()
                .max_conn,
            77
        );
        assert_eq!(
            server_err("log_level", OptValue::Int(7)),
            "invalid value for option 'log_level': 7 (allowed: an integer from 0 (DEBUG) to 6 (NONE))"
        );
        assert_eq!(
            server_err("max_request", OptValue::Int(-1)),
            "invalid value for option 'max_request': -1 (allowed: a non-negative integer)"
        );
        assert_eq!(
            server_err("reload_wait_time", OptValue::Int(0)),
            "invalid value for option 'reload_wait_time': 0 (allowed: an integer from 1 to 86400)"
        );
        assert_eq!(
            server_err("task_ipc_mode", OptValue::Int(0)),
            "invalid value for option 'task_ipc_mode': 0 (allowed: an integer from 1 to 4)"
        );
        assert_eq!(
            server_err("max_connection", OptValue::Int(0)),
            "invalid value for option 'max_connection': 0 (allowed: an integer from 1 to 1000000)"
        );
        for (key, bad) in [
            ("task_worker_num", 1001),
            ("backlog", -1),
            ("backlog", 65536),
            ("max_conn", 1_000_001),
            ("max_wait_time", 0),
            ("max_wait_time", 3601),
            ("reload_wait_time", 0),
            ("reload_wait_time", 86401),
            ("reactor_num", 0),
            ("heartbeat_idle_time", -1),
        ] {
            assert!(
                server_with(&[(key, OptValue::Int(bad))]).is_err(),
                "{key} {bad}"
            );
        }
    }

    #[test]
    fn dispatch_mode_values() {
        for mode in 1..=5 {
            let c = server_with(&[("dispatch_mode", OptValue::Int(mode))]).unwrap();
            assert_eq!(i64::from(c.dispatch_mode), mode);
        }
        assert_eq!(
            server_err("dispatch_mode", OptValue::Int(7)),
            "invalid value for option 'dispatch_mode': 7 (allowed: 1 round-robin, 2 fixed by \
             connection, 3 idle worker, 4 by client IP, 5 by uid; dispatch_mode 7 is not \
             supported by taskq)"
        );
        assert_eq!(
            server_err("dispatch_mode", OptValue::Int(0)),
            "invalid value for option 'dispatch_mode': 0 (allowed: 1 round-robin, 2 fixed by \
             connection, 3 idle worker, 4 by client IP, 5 by uid)"
        );
        assert!(server_with(&[("dispatch_mode", OptValue::Int(11))]).is_err());
    }

    #[test]
    fn bool_coercions() {
        for (value, expected) in [
            (OptValue::Bool(true), true),
            (OptValue::Bool(false), false),
            (OptValue::Int(1), true),
            (OptValue::Int(0), false),
            (s("1"), true),
            (s("0"), false),
            (s("true"), true),
            (s("false"), false),
            (s(""), false),
        ] {
            let c = server_with(&[
                ("daemonize", value.clone()),
                ("reload_async", value.clone()),
            ])
            .unwrap();
            assert_eq!(
                (c.daemonize, c.reload_async),
                (expected, expected),
                "{value:?}"
            );
        }
        for bad in [
            OptValue::Int(2),
            OptValue::Int(-1),
            OptValue::Float(1.0),
            s("yes"),
            s("TRUE"),
        ] {
            assert!(
                server_with(&[("daemonize", bad.clone())]).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            server_err("daemonize", s("yes")),
            "invalid value for option 'daemonize': 'yes' (allowed: true, false, 0, 1, '0', '1', \
             '', 'true' or 'false')"
        );
        let c = server_with(&[
            ("open_tcp_nodelay", OptValue::Bool(false)),
            ("enable_unsafe_event", OptValue::Bool(true)),
            ("discard_timeout_request", OptValue::Bool(false)),
            ("open_tcp_keepalive", OptValue::Bool(true)),
        ])
        .unwrap();
        assert!(!c.open_tcp_nodelay);
        assert!(c.enable_unsafe_event);
        assert!(!c.discard_timeout_request);
        assert!(c.open_tcp_keepalive);
    }

    #[test]
    fn string_options() {
        let c = server_with(&[
            ("log_file", s("/var/log/taskq.log")),
            ("pid_file", s("/run/taskq.pid")),
            ("task_tmpdir", s("/var/tmp")),
            ("user", s("www-data")),
            ("group", s("www")),
        ])
        .unwrap();
        assert_eq!(c.log_file.as_deref(), Some("/var/log/taskq.log"));
        assert_eq!(c.pid_file.as_deref(), Some("/run/taskq.pid"));
        assert_eq!(c.task_tmpdir, "/var/tmp");
        assert_eq!(c.user.as_deref(), Some("www-data"));
        assert_eq!(c.group.as_deref(), Some("www"));
        assert_eq!(
            server_err("log_file", s("")),
            "invalid value for option 'log_file': '' (allowed: a non-empty string)"
        );
        assert_eq!(
            server_err("task_tmpdir", s("tmp")),
            "invalid value for option 'task_tmpdir': 'tmp' (allowed: an absolute path (starting \
             with '/'))"
        );
        assert!(server_with(&[("user", OptValue::Int(0))]).is_err());
    }

    #[test]
    fn values_are_shown_as_php_prints_them() {
        assert_eq!(php_repr(&OptValue::Null), "null");
        assert_eq!(php_repr(&OptValue::Bool(false)), "false");
        assert_eq!(php_repr(&OptValue::Float(2.0)), "2.0");
        assert_eq!(php_repr(&OptValue::Float(-0.25)), "-0.25");
        assert_eq!(php_repr(&OptValue::Float(f64::INFINITY)), "INF");
        assert_eq!(php_repr(&s("it's")), "'it\\'s'");
        assert_eq!(
            php_repr(&OptValue::List(vec![OptValue::Int(1), s("a")])),
            "[1, 'a']"
        );
    }

    #[test]
    fn max_request_grace_defaults_to_half_above_ten() {
        let grace = |max_request| {
            server_with(&[("max_request", OptValue::Int(max_request))])
                .unwrap()
                .effective_max_request_grace()
        };
        assert_eq!(grace(0), 0);
        assert_eq!(grace(10), 0);
        assert_eq!(grace(11), 5);
        assert_eq!(grace(10000), 5000);
    }

    #[test]
    fn explicit_max_request_grace_wins_in_any_order() {
        let c = server_with(&[
            ("max_request_grace", OptValue::Int(7)),
            ("max_request", OptValue::Int(10000)),
        ])
        .unwrap();
        assert_eq!(c.max_request_grace, Some(7));
        assert_eq!(c.effective_max_request_grace(), 7);

        let mut c = ServerConfig::new(4);
        c.apply(&entries(&[("max_request_grace", OptValue::Int(0))]))
            .unwrap();
        c.apply(&entries(&[("max_request", OptValue::Int(10000))]))
            .unwrap();
        assert_eq!(c.effective_max_request_grace(), 0);
    }

    #[test]
    fn task_max_request_grace_follows_the_same_rules() {
        let c = server_with(&[("task_max_request", OptValue::Int(100))]).unwrap();
        assert_eq!(c.effective_task_max_request_grace(), 50);
        assert_eq!(c.effective_max_request_grace(), 0);
        let mut c = ServerConfig::new(4);
        c.apply(&entries(&[("task_max_request_grace", OptValue::Int(3))]))
            .unwrap();
        c.apply(&entries(&[("task_max_request", OptValue::Int(100))]))
            .unwrap();
        assert_eq!(c.effective_task_max_request_grace(), 3);
    }

    #[test]
    fn heartbeat_fills_the_missing_half() {
        let hb = |interval, idle| {
            server_with(&[
                ("heartbeat_check_interval", OptValue::Int(interval)),
                ("heartbeat_idle_time", OptValue::Int(idle)),
            ])
            .unwrap()
            .heartbeat()
        };
        assert_eq!(hb(0, 0), None);
        assert_eq!(hb(5, 0), Some((5, 10)));
        assert_eq!(hb(0, 60), Some((30, 60)));
        assert_eq!(hb(0, 1), Some((1, 1)));
        assert_eq!(hb(3, 20), Some((3, 20)));
        assert_eq!(hb(i64::MAX, 0), Some((i64::MAX as u64, u64::MAX - 1)));
    }

    #[test]
    fn size_strings_are_binary_multiples() {
        let size = |value: OptValue| {
            server_with(&[("socket_buffer_size", value)])
                .map(|c| c.socket_buffer_size)
                .ok()
        };
        assert_eq!(size(s("8M")), Some(8 << 20));
        assert_eq!(size(s("512K")), Some(512 << 10));
        assert_eq!(size(s("512k")), Some(512 << 10));
        assert_eq!(size(s("1G")), Some(1 << 30));
        assert_eq!(size(s("2m")), Some(2 << 20));
        assert_eq!(size(s(" 2M ")), Some(2 << 20));
        assert_eq!(size(s("4096")), Some(4096));
        assert_eq!(size(OptValue::Int(4096)), Some(4096));
        assert_eq!(size(OptValue::Float(4096.0)), Some(4096));
        for bad in [
            s("8MB"),
            s("M"),
            s("-1M"),
            s("1.5M"),
            s("8T"),
            s("99999999999999999999G"),
            s("3G"),
            OptValue::Int(0),
            OptValue::Int(-1),
        ] {
            assert_eq!(size(bad.clone()), None, "{bad:?}");
        }
        let c = server_with(&[("output_buffer_size", s("32M"))]).unwrap();
        assert_eq!(c.buffer_output_size, 32 << 20);
        let c = server_with(&[("buffer_output_size", s("4G"))]);
        assert!(c.is_err(), "above u32::MAX");
    }

    #[test]
    fn package_max_length_is_clamped_to_64k_and_capped_at_1g() {
        let max_length = |value: OptValue| {
            server_with(&[("package_max_length", value)]).map(|c| c.packet.max_length)
        };
        assert_eq!(max_length(s("8M")), Ok(8 << 20));
        assert_eq!(max_length(s("1G")), Ok(1 << 30));
        assert_eq!(max_length(OptValue::Int(1000)), Ok(64 << 10));
        assert_eq!(max_length(OptValue::Int(0)), Ok(64 << 10));
        assert_eq!(
            max_length(s("2G")).unwrap_err().to_string(),
            "invalid value for option 'package_max_length': '2G' (allowed: a byte count up to \
             1G, as an integer or a size string like '8M' (K, M, G are binary multiples))"
        );
        assert!(max_length(OptValue::Int(-1)).is_err());
        let c = client_with(&[("package_max_length", s("2m"))]).unwrap();
        assert_eq!(c.packet.max_length, 2 << 20);
    }

    #[test]
    fn length_framing_resolves_across_calls() {
        let mut c = ServerConfig::new(4);
        c.apply(&entries(&[
            ("package_length_type", s("n")),
            ("package_length_offset", OptValue::Int(2)),
        ]))
        .unwrap();
        assert_eq!(c.packet.mode, PacketMode::Raw);
        c.apply(&entries(&[("open_length_check", OptValue::Bool(true))]))
            .unwrap();
        assert_eq!(
            c.packet.mode,
            PacketMode::Length {
                length_type: LengthType::U16Be,
                length_offset: 2,
                body_offset: 4
            }
        );
        c.apply(&entries(&[("package_body_start", OptValue::Int(6))]))
            .unwrap();
        assert_eq!(
            c.packet.mode,
            PacketMode::Length {
                length_type: LengthType::U16Be,
                length_offset: 2,
                body_offset: 6
            }
        );
        c.apply(&entries(&[("open_length_check", OptValue::Bool(false))]))
            .unwrap();
        assert_eq!(c.packet.mode, PacketMode::Raw);
    }

    #[test]
    fn client_body_offset_defaults_to_zero() {
        let c = client_with(&[("open_length_check", OptValue::Bool(true))]).unwrap();
        assert!(c.has_framing());
        assert_eq!(
            c.packet.mode,
            PacketMode::Length {
                length_type: LengthType::U32Be,
                length_offset: 0,
                body_offset: 0
            }
        );
        let c = client_with(&[
            ("open_length_check", OptValue::Int(1)),
            ("package_body_offset", OptValue::Int(4)),
        ])
        .unwrap();
        assert!(matches!(
            c.packet.mode,
            PacketMode::Length { body_offset: 4, .. }
        ));
    }

    #[test]
    fn eof_framing_and_split_wins_over_check() {
        let mut c = ClientConfig::new();
        c.apply(&entries(&[("open_eof_check", OptValue::Bool(true))]))
            .unwrap();
        assert_eq!(
            c.packet.mode,
            PacketMode::EofCheck {
                eof: b"\r\n\r\n".to_vec()
            }
        );
        c.apply(&entries(&[
            ("package_eof", s("\n")),
            ("open_eof_split", OptValue::Bool(true)),
        ]))
        .unwrap();
        assert_eq!(
            c.packet.mode,
            PacketMode::EofSplit {
                eof: b"\n".to_vec()
            }
        );
        let c = server_with(&[("open_eof_split", s("1"))]).unwrap();
        assert_eq!(
            c.packet.mode,
            PacketMode::EofSplit {
                eof: b"\r\n\r\n".to_vec()
            }
        );
    }

    #[test]
    fn conflicting_framing_is_refused_and_leaves_config_unchanged() {
        let mut c = ServerConfig::new(4);
        c.apply(&entries(&[("open_eof_check", OptValue::Bool(true))]))
            .unwrap();
        let before = c.clone();
        let err = c
            .apply(&entries(&[
                ("worker_num", OptValue::Int(2)),
                ("open_length_check", OptValue::Bool(true)),
            ]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for option 'open_length_check': true (allowed: false while \
             open_eof_check or open_eof_split is enabled: only one framing protocol can be used)"
        );
        assert_eq!(c, before);
        let both = client_with(&[
            ("open_length_check", OptValue::Bool(true)),
            ("open_eof_split", OptValue::Bool(true)),
        ]);
        assert!(
            matches!(both, Err(ConfigError::Invalid { option, .. }) if option == "open_length_check")
        );
    }

    #[test]
    fn package_eof_length_is_1_to_8_bytes() {
        let c = server_with(&[("package_eof", s("12345678"))]).unwrap();
        assert_eq!(c.framing.eof, b"12345678".to_vec());
        assert_eq!(
            server_err("package_eof", s("")),
            "invalid value for option 'package_eof': '' (allowed: a string of 1 to 8 bytes)"
        );
        assert_eq!(
            client_err("package_eof", s("123456789")),
            "invalid value for option 'package_eof': '123456789' (allowed: a string of 1 to 8 \
             bytes)"
        );
        assert!(
            server_with(&[("package_eof", s("ééééé"))]).is_err(),
            "10 bytes"
        );
    }

    #[test]
    fn length_type_and_offsets() {
        for c in LengthType::pack_chars().chars() {
            let config = server_with(&[
                ("package_length_type", s(&c.to_string())),
                ("open_length_check", OptValue::Bool(true)),
            ])
            .unwrap();
            assert!(
                matches!(config.packet.mode, PacketMode::Length { length_type, .. }
                    if Some(length_type) == LengthType::from_pack_char(c)),
                "{c}"
            );
        }
        assert_eq!(
            server_err("package_length_type", s("X")),
            "invalid value for option 'package_length_type': 'X' (allowed: one pack() format \
             character: c, C, s, S, n, N, l, L, v, V, q, Q, J, P)"
        );
        assert!(server_with(&[("package_length_type", s("NN"))]).is_err());
        assert!(server_with(&[("package_length_type", s(""))]).is_err());
        assert!(server_with(&[("package_length_offset", OptValue::Int(8152))]).is_ok());
        assert_eq!(
            server_err("package_length_offset", OptValue::Int(8153)),
            "invalid value for option 'package_length_offset': 8153 (allowed: an integer from 0 \
             to 8152; value is too large)"
        );
        assert_eq!(
            client_err("package_body_offset", OptValue::Int(-1)),
            "invalid value for option 'package_body_offset': -1 (allowed: an integer from 0 to \
             8152)"
        );
    }

    #[test]
    fn apply_is_atomic_on_error() {
        let mut c = ServerConfig::new(4);
        c.apply(&entries(&[("worker_num", OptValue::Int(3))]))
            .unwrap();
        let before = c.clone();
        let result = c.apply(&entries(&[
            ("worker_num", OptValue::Int(5)),
            ("open_length_check", OptValue::Bool(true)),
            ("bogus", OptValue::Int(1)),
            ("task_worker_num", OptValue::Int(9999)),
        ]));
        assert!(result.is_err());
        assert_eq!(c, before);

        let mut client = ClientConfig::new();
        let result = client.apply(&entries(&[
            ("open_eof_check", OptValue::Bool(true)),
            ("timeout", OptValue::Int(0)),
        ]));
        assert!(result.is_err());
        assert_eq!(client, ClientConfig::new());
    }

    #[test]
    fn later_duplicate_keys_win() {
        let c = server_with(&[
            ("worker_num", OptValue::Int(2)),
            ("worker_num", OptValue::Int(3)),
        ])
        .unwrap();
        assert_eq!(c.worker_num, 3);
    }

    #[test]
    fn coroutine_options_accept_only_false() {
        let c = server_with(&[
            ("enable_coroutine", OptValue::Bool(false)),
            ("task_enable_coroutine", OptValue::Int(0)),
            ("task_use_object", s("false")),
            ("task_object", OptValue::Bool(false)),
        ]);
        assert_eq!(c, Ok(ServerConfig::new(8)));
        assert_eq!(
            server_with(&[("task_enable_coroutine", OptValue::Bool(true))]),
            Err(ConfigError::Unsupported {
                option: "task_enable_coroutine".into(),
                reason: "taskq runs callbacks synchronously, one at a time per worker process"
                    .into()
            })
        );
        assert_eq!(
            server_err("task_enable_coroutine", OptValue::Bool(true)),
            "option 'task_enable_coroutine' is not supported: taskq runs callbacks \
             synchronously, one at a time per worker process"
        );
        assert_eq!(
            server_err("enable_coroutine", OptValue::Int(1)),
            "option 'enable_coroutine' is not supported: taskq runs callbacks synchronously, \
             one at a time per worker process"
        );
        assert_eq!(
            server_err("task_use_object", OptValue::Bool(true)),
            "option 'task_use_object' is not supported: use the classic onTask($server, \
             $taskId, $srcWorkerId, $data) signature"
        );
        assert!(matches!(
            server_with(&[("task_object", s("true"))]),
            Err(ConfigError::Unsupported { .. })
        ));
        assert!(matches!(
            server_with(&[("enable_coroutine", s("maybe"))]),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn client_options() {
        let c = client_with(&[
            ("connect_timeout", OptValue::Float(0.5)),
            ("timeout", s("2")),
            ("open_tcp_nodelay", OptValue::Bool(false)),
            ("socket_buffer_size", s("1M")),
        ])
        .unwrap();
        assert_eq!(c.connect_timeout, Some(0.5));
        assert_eq!(c.timeout, Some(2.0));
        assert!(!c.open_tcp_nodelay);
        assert_eq!(c.socket_buffer_size, 1 << 20);
        assert_eq!(
            client_err("connect_timeout", OptValue::Int(0)),
            "invalid value for option 'connect_timeout': 0 (allowed: a number of seconds \
             greater than 0 and at most 31536000)"
        );
        for bad in [
            OptValue::Float(-1.0),
            OptValue::Float(f64::NAN),
            OptValue::Float(f64::INFINITY),
            OptValue::Float(1e300),
            s("fast"),
            OptValue::Bool(true),
        ] {
            assert!(client_with(&[("timeout", bad.clone())]).is_err(), "{bad:?}");
        }
    }
}
