//! `TaskServer` (alias `swoole_server`, `Swoole\Server`): the PHP face of
//! the launcher, master and workers. It converts arguments, keeps settings and
//! callbacks until `start()`, and forwards worker-side calls to `worker.rs`.

use std::time::Duration;

use bytes::Bytes;
use ext_php_rs::exception::PhpResult;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendClassObject, ZendHashTable, Zval};

use super::events::{Callbacks, Event};
use super::exception::{exception, warn};
use super::handler::{proc_info, remember_finish_callback, PhpHooks};
use super::values::{bool_zval, entries, long_zval, opt_zval, to_opt, to_payload, zval_bytes};
use crate::config::{OptValue, ServerConfig};
use crate::error::ServerError;
use crate::launcher::{launch, Launch};
use crate::listener::{Listener, SockType};
use crate::master::{EventMask, MasterConfig};
use crate::worker;

/// Swoole's mode constants; taskq always runs the process architecture.
pub const MODE_BASE: i64 = 1;
pub const MODE_PROCESS: i64 = 2;

/// A task server: listens in the constructor, runs on `start()`.
#[php_class]
#[php(name = "TaskServer")]
pub struct TaskServer {
    host: String,
    port: i64,
    mode: i64,
    sock_type: i64,
    listener: Option<Listener>,
    config: ServerConfig,
    settings: Vec<(String, OptValue)>,
    callbacks: Callbacks,
    started: bool,
}

fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[php_impl]
impl TaskServer {
    /// Binds at once, like Swoole, so a busy port fails here and not in start().
    #[php(defaults(port = 0, mode = 2, sock_type = 1))]
    pub fn __construct(host: String, port: i64, mode: i64, sock_type: i64) -> PhpResult<Self> {
        if mode != MODE_BASE && mode != MODE_PROCESS {
            return Err(ServerError::BadMode(mode).into());
        }
        let kind = SockType::from_raw(sock_type).ok_or(ServerError::BadSockType(sock_type))?;
        let port16 = u16::try_from(port).map_err(|_| {
            exception(
                format!("invalid port {port} (allowed: 0 to 65535; 0 lets the kernel choose)"),
                libc::EINVAL,
            )
        })?;
        let addr = if kind == SockType::UnixStream {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let listener = Listener::bind(&host, port16, kind)
            .map_err(|source| ServerError::Listen { addr, source })?;
        Ok(TaskServer {
            port: listener.port() as i64,
            host,
            mode,
            sock_type,
            listener: Some(listener),
            config: ServerConfig::new(cpu_count()),
            settings: Vec::new(),
            callbacks: Callbacks::default(),
            started: false,
        })
    }

    /// Merges options; unknown keys warn (with a suggestion), bad values throw.
    pub fn set(&mut self, settings: &ZendHashTable) -> PhpResult<bool> {
        if self.started {
            warn("server is running, unable to execute TaskServer->set");
            return Ok(false);
        }
        let mut converted = Vec::new();
        for (key, value) in entries(settings) {
            let v = to_opt(value).ok_or_else(|| {
                exception(
                    format!("invalid value for option '{key}': an object or resource (allowed: scalars and arrays)"),
                    libc::EINVAL,
                )
            })?;
            converted.push((key, v));
        }
        let warnings = self.config.apply(&converted).map_err(ServerError::Config)?;
        for w in warnings {
            warn(&w.0);
        }
        for (key, value) in converted {
            match self.settings.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.settings.push((key, value)),
            }
        }
        Ok(true)
    }

    /// Registers an event callback; unknown names warn and return false.
    pub fn on(&mut self, event: String, callback: &Zval) -> PhpResult<bool> {
        let Some(ev) = Event::parse(&event) else {
            warn(&format!(
                "unknown event types[{event}] (known events: {})",
                Event::known()
            ));
            return Ok(false);
        };
        if !callback.is_callable() {
            return Err(exception(
                format!("the callback for '{}' is not callable", ev.name()),
                libc::EINVAL,
            ));
        }
        if self.started {
            warn("server is running, unable to register event callback function");
            return Ok(false);
        }
        self.callbacks.set(ev, callback);
        Ok(true)
    }

    /// Runs the server until it is stopped; returns true afterwards.
    pub fn start(self_: &mut ZendClassObject<TaskServer>) -> PhpResult<bool> {
        if self_.started {
            return Err(ServerError::AlreadyStarted.into());
        }
        let task_workers = self_.config.task_worker_num;
        if task_workers > 0 && !self_.callbacks.has(Event::Task) {
            return Err(ServerError::MissingTaskCallback(task_workers).into());
        }
        if !self_.callbacks.has(Event::Receive) {
            return Err(ServerError::MissingReceiveCallback.into());
        }
        let Some(listener) = self_.listener.take() else {
            return Err(ServerError::AlreadyStarted.into());
        };
        self_.started = true;
        let cfg = self_.launch_config();
        let mut this = Zval::new();
        this.set_object(&mut self_.std);
        let mut hooks = PhpHooks {
            this,
            callbacks: self_.callbacks.share(),
        };
        let result = launch(cfg, &listener, &mut hooks);
        drop(listener);
        result?;
        Ok(true)
    }

    /// Queues `$data` for a task worker; returns the task id, or false.
    #[php(defaults(dst_worker_id = -1))]
    pub fn task(
        &self,
        data: &Zval,
        dst_worker_id: i64,
        finish_callback: Option<&Zval>,
    ) -> PhpResult<Zval> {
        let n = self.config.task_worker_num as i64;
        let fail = |msg: String| {
            warn(&msg);
            Ok(bool_zval(false))
        };
        let Some((_, is_task)) = worker::current() else {
            return fail("server is not running".into());
        };
        if n == 0 {
            return fail("task method can't be executed without task worker".into());
        }
        if is_task {
            return fail("TaskServer->task() cannot use in the task-worker".into());
        }
        if dst_worker_id >= n {
            return fail(format!("worker_id must be less than task_worker_num[{n}]"));
        }
        if let Some(cb) = finish_callback {
            if !cb.is_null() && !cb.is_callable() {
                return Err(exception(
                    "the finish callback is not callable".into(),
                    libc::EINVAL,
                ));
            }
        }
        let payload = to_payload(data).map_err(|e| exception(e, 0))?;
        let dst = if dst_worker_id < 0 {
            -1
        } else {
            dst_worker_id as i32
        };
        let id = worker::submit_task(dst, payload)?;
        if let Some(cb) = finish_callback.filter(|cb| !cb.is_null()) {
            remember_finish_callback(id, cb);
        }
        Ok(long_zval(id))
    }

    /// Sends a result for the running task to the dispatching worker's onFinish.
    pub fn finish(&self, data: &Zval) -> PhpResult<bool> {
        match worker::current() {
            Some((_, true)) => {}
            _ => {
                warn("TaskServer->finish() can only be used in the task worker process");
                return Ok(false);
            }
        }
        let payload = to_payload(data).map_err(|e| exception(e, 0))?;
        match worker::finish(payload) {
            Ok(()) => Ok(true),
            Err(worker::LinkError::Misuse(m)) => {
                warn(m);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends data to a client connection (one `recv()` for a TaskClient).
    pub fn send(&self, fd: i64, data: &Zval) -> PhpResult<bool> {
        let Some(bytes) = zval_bytes(data) else {
            return Err(exception(
                "send() data must be a string".into(),
                libc::EINVAL,
            ));
        };
        if bytes.is_empty() {
            warn("the data sent must not be empty");
            return Ok(false);
        }
        if fd <= 0 {
            warn(&format!("invalid fd {fd}"));
            return Ok(false);
        }
        if worker::current().is_none() {
            warn("server is not running");
            return Ok(false);
        }
        worker::send_to_client(fd as u64, Bytes::copy_from_slice(bytes))?;
        Ok(true)
    }

    /// Closes a client connection (its onClose follows).
    pub fn close(&self, fd: i64) -> PhpResult<bool> {
        if fd <= 0 || worker::current().is_none() {
            warn("server is not running or invalid fd");
            return Ok(false);
        }
        worker::close_client(fd as u64)?;
        Ok(true)
    }

    /// Pid of the master process.
    pub fn get_master_pid(&self) -> i64 {
        proc_info().master_pid
    }

    /// Pid of the manager process.
    pub fn get_manager_pid(&self) -> i64 {
        proc_info().manager_pid
    }

    /// Id of this worker (-1 outside workers).
    pub fn get_worker_id(&self) -> i64 {
        proc_info().worker_id
    }

    /// Pid of this worker process.
    pub fn get_worker_pid(&self) -> i64 {
        proc_info().worker_pid
    }

    /// The port actually bound (the kernel's choice for port 0).
    #[php(getter)]
    pub fn get_port(&self) -> i64 {
        self.port
    }

    /// The host or unix socket path given to the constructor.
    #[php(getter)]
    pub fn get_host(&self) -> String {
        self.host.clone()
    }

    /// TASKQ_PROCESS or TASKQ_BASE as given.
    #[php(getter)]
    pub fn get_mode(&self) -> i64 {
        self.mode
    }

    /// The socket type given to the constructor.
    #[php(getter)]
    pub fn get_type(&self) -> i64 {
        self.sock_type
    }

    /// Every option passed to set(), merged, as Swoole's `$server->setting`.
    #[php(getter)]
    pub fn get_setting(&self) -> PhpResult<Zval> {
        let mut ht = ZendHashTable::new();
        for (k, v) in &self.settings {
            ht.insert(k.as_str(), opt_zval(v))
                .map_err(|e| exception(e.to_string(), 0))?;
        }
        let mut z = Zval::new();
        z.set_hashtable(ht);
        Ok(z)
    }

    /// Pid of the master, in every process of the server.
    #[php(getter, name = "master_pid")]
    pub fn get_master_pid_prop(&self) -> i64 {
        proc_info().master_pid
    }

    /// Pid of the manager, in every process of the server.
    #[php(getter, name = "manager_pid")]
    pub fn get_manager_pid_prop(&self) -> i64 {
        proc_info().manager_pid
    }

    /// This worker's id; -1 in the master.
    #[php(getter, name = "worker_id")]
    pub fn get_worker_id_prop(&self) -> i64 {
        proc_info().worker_id
    }

    /// This worker's pid.
    #[php(getter, name = "worker_pid")]
    pub fn get_worker_pid_prop(&self) -> i64 {
        proc_info().worker_pid
    }

    /// Whether this process is a task worker.
    #[php(getter, name = "taskworker")]
    pub fn get_taskworker(&self) -> bool {
        proc_info().taskworker
    }
}

impl TaskServer {
    fn launch_config(&self) -> Launch {
        let c = &self.config;
        Launch {
            master: MasterConfig {
                worker_num: c.worker_num as u32,
                task_worker_num: c.task_worker_num as u32,
                dispatch_mode: c.dispatch_mode,
                packet: c.packet.clone(),
                package_max_length: c.packet.max_length,
                max_conn: c.max_conn,
                open_tcp_nodelay: c.open_tcp_nodelay,
                events: EventMask {
                    connect: self.callbacks.has(Event::Connect),
                    close: self.callbacks.has(Event::Close),
                },
                task_window: 1,
            },
            max_wait_time: Duration::from_secs(c.max_wait_time),
            daemonize: c.daemonize,
            log_file: c.log_file.clone(),
            log_level: c.log_level,
            pid_file: c.pid_file.clone(),
            backlog: c.backlog,
            max_request: (c.max_request, c.effective_max_request_grace()),
            task_max_request: (c.task_max_request, c.effective_task_max_request_grace()),
        }
    }
}
