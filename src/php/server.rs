//! `TaskQ\Server` (aliases `TaskServer`, `swoole_server`, `Swoole\Server`): the PHP face of
//! the launcher, master and workers. It converts arguments, keeps settings and
//! callbacks until `start()`, and forwards worker-side calls to `worker.rs`.
// PHP parameter names are Swoole 5.1's, for named arguments (`taskWorkerIndex: 0`,
// `send_data: ...`); taskq-only methods keep taskq's names.
#![allow(non_snake_case)]

use std::time::Duration;

use super::error::PhpResult;
use bytes::Bytes;
use ext_php_rs::prelude::*;
use ext_php_rs::types::{ZendClassObject, ZendHashTable, Zval};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::args::{Array, Bin, Bool, Callable, Float, Int, Opt, Str};
use super::error::PhpError;
use super::events::{Callbacks, Event};
use super::exception::warn;
use super::failed_tasks;
use super::handler::PhpHooks;
use super::loose_value::{self, options};
use super::process_state::ProcessState;
use super::timer;
use super::values::{bool_zval, from_payload, json_zval, long_zval, to_payload};
use taskq_engine::config::ServerConfig;
use taskq_engine::error::ServerError;
use taskq_engine::failed::{FailedOp, Which};
use taskq_engine::ipc::ToWorker;
use taskq_engine::launcher::{launch, Launch};
use taskq_engine::listener::{Listener, SockType};
use taskq_engine::master::{Backend, Timeouts};
use taskq_engine::master::{EventMask, MasterConfig};
use taskq_engine::one_way;
use taskq_engine::query::Query;
use taskq_engine::worker::{self, Link};
use taskq_value::Value;

/// Swoole's mode constants; taskq always runs the process architecture.
pub const MODE_BASE: i64 = 1;
pub const MODE_PROCESS: i64 = 2;

/// A task server: listens in the constructor, runs on `start()`.
#[php_class]
#[php(name = "TaskQ\\Server")]
pub struct TaskServer {
    host: String,
    port: i64,
    sock_type: i64,
    listener: Option<Listener>,
    config: ServerConfig,
    settings: Vec<(String, Value)>,
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
    /// Binds at once, like Swoole, so a busy port fails here and not in
    /// start(). `$mode` SWOOLE_BASE is accepted, but the server runs the
    /// process model either way.
    pub fn __construct(
        host: Str,
        port: Opt<Int>,
        mode: Opt<Int>,
        sock_type: Opt<Int>,
    ) -> PhpResult<Self> {
        let (host, port) = (host.0, port.or(0));
        let (mode, sock_type) = (mode.or(MODE_PROCESS), sock_type.or(1));
        if mode != MODE_BASE && mode != MODE_PROCESS {
            return Err(ServerError::BadMode(mode).into());
        }
        let kind = SockType::from_raw(sock_type).ok_or(ServerError::BadSockType(sock_type))?;
        let port16 = u16::try_from(port).map_err(|_| PhpError::Port(port))?;
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
            sock_type,
            listener: Some(listener),
            config: ServerConfig::new(cpu_count()),
            settings: Vec::new(),
            callbacks: Callbacks::default(),
            started: false,
        })
    }

    /// Merges options; unknown keys warn (with a suggestion), bad values throw.
    pub fn set(&mut self, settings: Array) -> PhpResult<bool> {
        if self.started {
            warn("server is running, unable to execute set()");
            return Ok(false);
        }
        let converted = options(settings.0)?;
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
    pub fn on(&mut self, event_name: Str, callback: Callable) -> PhpResult<bool> {
        let event = event_name.0;
        let Some(ev) = Event::parse(&event) else {
            warn(&format!(
                "unknown event types[{event}] (known events: {})",
                Event::known()
            ));
            return Ok(false);
        };
        if self.started {
            warn("server is running, unable to register event callback function");
            return Ok(false);
        }
        self.callbacks.set(ev, callback.0);
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
        if self_.config.task_store.is_some() && self_.config.task_backend.is_some() {
            return Err(ServerError::Start(
                "task_store and task_backend exclude each other: tasks live either in this server's store or in Redis; set one".into(),
            )
            .into());
        }
        if task_workers == 0 && self_.callbacks.has(Event::Task) {
            warn("a Task callback is registered but task_worker_num is 0: $server->task() will fail with a warning and TaskClient::task() is refused (errCode 9007); set task_worker_num");
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
            untrusted: self_.config.untrusted_values(),
        };
        let result = launch(cfg, &listener, &mut hooks);
        drop(listener);
        result?;
        Ok(true)
    }

    /// Queues `$data` for a task worker; returns the task id, or false.
    pub fn task(
        &self,
        data: &Zval,
        taskWorkerIndex: Opt<Int>,
        finishCallback: Opt<Callable>,
    ) -> PhpResult<Zval> {
        let dst_worker_id = taskWorkerIndex.or(-1);
        let Some(id) = self.submit(data, dst_worker_id, "task")? else {
            return Ok(bool_zval(false));
        };
        if let Some(cb) = finishCallback.0 {
            ProcessState::with(|s| s.remember_finish_callback(id, cb.0));
        }
        Ok(long_zval(id))
    }

    /// Sends a result for the running task to the dispatching worker's onFinish.
    pub fn finish(&self, data: &Zval) -> PhpResult<bool> {
        match worker::current() {
            Some((_, true)) => {}
            _ => {
                warn("finish() can only be used in the task worker process");
                return Ok(false);
            }
        }
        let payload = match to_payload(data) {
            Ok(p) => p,
            Err(e) => {
                warn(&format!("finish(): the result cannot be sent: {e}"));
                return Ok(false);
            }
        };
        match worker::with_link(|link| link.finish(payload)) {
            Ok(()) => Ok(true),
            Err(worker::LinkError::Misuse(m)) => {
                warn(m);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends data to a client connection (one `recv()` for a TaskClient).
    pub fn send(&self, fd: Int, send_data: Bin) -> PhpResult<bool> {
        let (fd, bytes) = (fd.0, send_data.0);
        if bytes.is_empty() {
            warn("the data sent must not be empty");
            return Ok(false);
        }
        if bytes.len() > self.config.buffer_output_size {
            warn(&format!(
                "data of {} bytes exceeds buffer_output_size {}",
                bytes.len(),
                self.config.buffer_output_size
            ));
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
        worker::with_link(|link| link.send_to_client(fd as u64, Bytes::copy_from_slice(bytes)))?;
        Ok(true)
    }

    /// Closes a client connection (its onClose follows).
    pub fn close(&self, fd: Int) -> PhpResult<bool> {
        let fd = fd.0;
        if fd <= 0 || worker::current().is_none() {
            warn("server is not running or invalid fd");
            return Ok(false);
        }
        worker::with_link(|link| link.close_client(fd as u64))?;
        Ok(true)
    }

    /// Pid of the master process.
    pub fn get_master_pid(&self) -> i64 {
        ProcessState::with(|s| s.info()).master_pid
    }

    /// Pid of the manager process.
    pub fn get_manager_pid(&self) -> i64 {
        ProcessState::with(|s| s.info()).manager_pid
    }

    /// Id of this worker (-1 outside workers).
    pub fn get_worker_id(&self) -> i64 {
        ProcessState::with(|s| s.info()).worker_id
    }

    /// Pid of worker `$worker_id` (this worker's by default); false when it
    /// has no process right now.
    pub fn get_worker_pid(&self, worker_id: Opt<Int>) -> PhpResult<Zval> {
        let worker_id = worker_id.or(-1);
        if worker_id < 0 || worker_id == ProcessState::with(|s| s.info()).worker_id {
            return Ok(long_zval(ProcessState::with(|s| s.info()).worker_pid));
        }
        let Some(id) = self.worker_index(worker_id) else {
            return Ok(bool_zval(false));
        };
        Ok(match self.ask(Query::WorkerPid { worker_id: id })? {
            Some(v) if !v.is_null() => json_zval(&v),
            _ => bool_zval(false),
        })
    }

    /// TASKQ_WORKER_BUSY (1), _IDLE (2) or _EXIT (3) of a worker; this
    /// worker (running a callback) is busy.
    pub fn get_worker_status(&self, worker_id: Opt<Int>) -> PhpResult<Zval> {
        let worker_id = worker_id.or(-1);
        if worker_id < 0 || worker_id == ProcessState::with(|s| s.info()).worker_id {
            return Ok(if worker::current().is_some() {
                long_zval(taskq_engine::query::WORKER_BUSY)
            } else {
                bool_zval(false)
            });
        }
        let Some(id) = self.worker_index(worker_id) else {
            return Ok(bool_zval(false));
        };
        Ok(match self.ask(Query::WorkerStatus { worker_id: id })? {
            Some(v) if !v.is_null() => json_zval(&v),
            _ => bool_zval(false),
        })
    }

    /// Swoole's `stats()`: server counters from the master plus this
    /// worker's own; `tasking_num` counts queued and running tasks.
    pub fn stats(&self) -> PhpResult<Zval> {
        let Some(mut v) = self.ask(Query::Stats)? else {
            return Ok(bool_zval(false));
        };
        if let Some(map) = v.as_object_mut() {
            let (requests, dispatched) =
                worker::with_link(|link| Ok(link.local_counts())).unwrap_or((0, 0));
            map.insert("worker_request_count".into(), requests.into());
            map.insert("worker_dispatch_count".into(), dispatched.into());
        }
        Ok(json_zval(&v))
    }

    /// taskq: the failed tasks (tasks that used up their attempts) the
    /// queue keeps, newest first, `$limit` (null: 100; 1 to 1000) from
    /// `$offset` (null: 0). Each row: id, worker, task_id, attempts, error,
    /// failed_at, data (objects in it as `__PHP_Incomplete_Class`), and
    /// raw when the data cannot be decoded.
    pub fn failed_tasks(&self, offset: Opt<Int>, limit: Opt<Int>) -> PhpResult<Zval> {
        const METHOD: &str = "failedTasks";
        let op = failed_tasks::list(METHOD, offset.or(0), limit.or(100))?;
        let answer = self.ask_failed(METHOD, op)?;
        failed_tasks::rows(METHOD, &answer, self.config.task_max_depth)
    }

    /// taskq: puts failed tasks back into the queue, attempts reset, as
    /// fresh tasks whose results reach no onFinish. `$ids`: an id, an array
    /// of ids, or true for all. Returns how many went back.
    pub fn retry_failed(&self, ids: &Zval) -> PhpResult<i64> {
        self.change_failed("retryFailed", ids, FailedOp::Retry)
    }

    /// taskq: forgets failed tasks. `$ids`: an id, an array of ids, or true
    /// for all. Returns how many were removed.
    pub fn purge_failed(&self, ids: &Zval) -> PhpResult<i64> {
        self.change_failed("purgeFailed", ids, FailedOp::Purge)
    }

    /// Whether session `$fd` is connected.
    pub fn exists(&self, fd: Int) -> PhpResult<bool> {
        let fd = fd.0;
        if fd <= 0 {
            return Ok(false);
        }
        Ok(matches!(
            self.ask(Query::Exists { fd: fd as u64 })?,
            Some(serde_json::Value::Bool(true))
        ))
    }

    /// Binds session `$fd` to `$uid` once; with dispatch_mode 5 its messages
    /// then go to worker `$uid % worker_num`.
    pub fn bind(&self, fd: Int, uid: Int) -> PhpResult<bool> {
        let (fd, uid) = (fd.0, uid.0);
        if fd <= 0 || uid < 0 {
            warn(&format!("invalid fd {fd} or uid {uid}"));
            return Ok(false);
        }
        Ok(matches!(
            self.ask(Query::Bind {
                fd: fd as u64,
                uid: uid as u64
            })?,
            Some(serde_json::Value::Bool(true))
        ))
    }

    /// Alias of `exists()` (Swoole 4 name).
    pub fn exist(&self, fd: Int) -> PhpResult<bool> {
        self.exists(fd)
    }

    /// Swoole's `getClientInfo()` array, or false for an unknown session.
    pub fn get_client_info(
        &self,
        fd: Int,
        reactor_id: Opt<Int>,
        ignoreError: Opt<Bool>,
    ) -> PhpResult<Zval> {
        let _ = (reactor_id, ignoreError);
        let fd = fd.0;
        if fd <= 0 {
            return Ok(bool_zval(false));
        }
        Ok(match self.ask(Query::ClientInfo { fd: fd as u64 })? {
            Some(v) if v.is_object() => json_zval(&v),
            _ => bool_zval(false),
        })
    }

    /// Swoole's `getClientList()`: up to `$find_count` (1 to 100) session ids
    /// above `$start_fd`, ascending, to page through every connection from a
    /// worker (e.g. to broadcast); false outside a running server.
    pub fn get_client_list(&self, start_fd: Opt<Int>, find_count: Opt<Int>) -> PhpResult<Zval> {
        let (start, size) = (start_fd.or(0), find_count.or(10));
        if !(1..=100).contains(&size) {
            warn(&format!("invalid find_count {size} (allowed: 1 to 100)"));
            return Ok(bool_zval(false));
        }
        self.client_list(start, size)
    }

    /// Swoole's `$server->connections`: every open session id, ascending,
    /// as an array read from the master (empty outside a running server).
    #[php(getter)]
    pub fn get_connections(&self) -> PhpResult<Zval> {
        if worker::current().is_none() {
            return Ok(json_zval(&serde_json::json!([])));
        }
        self.client_list(0, i64::MAX)
    }

    /// Blocks for the task's result (at most `$timeout` seconds); false on
    /// timeout. A late result is discarded, as in Swoole.
    pub fn taskwait(
        &self,
        data: &Zval,
        timeout: Opt<Float>,
        taskWorkerIndex: Opt<Int>,
    ) -> PhpResult<Zval> {
        let (timeout, dst_worker_id) = (timeout.or(0.5), taskWorkerIndex.or(-1));
        let id = match self.submit(data, dst_worker_id, "taskwait")? {
            Some(id) => id,
            None => return Ok(bool_zval(false)),
        };
        let got = worker::with_link(|link| {
            link.mark_awaited(id);
            link.wait_for(
                seconds(timeout),
                |m| matches!(m, ToWorker::Finish { task_id, .. } if *task_id == id),
            )
        })?;
        Ok(match got {
            Some(ToWorker::Finish { payload, .. }) => {
                from_payload(&payload, &self.config.untrusted_values())?
            }
            _ => bool_zval(false),
        })
    }

    /// Runs several tasks in parallel and waits for all (at most `$timeout`
    /// seconds); results keyed like the input, timed-out keys absent.
    pub fn task_wait_multi(&self, tasks: Array, timeout: Opt<Float>) -> PhpResult<Zval> {
        let (tasks, timeout) = (tasks.0, timeout.or(0.5));
        if tasks.len() >= 1024 {
            warn("too many concurrent tasks (at most 1023)");
            return Ok(bool_zval(false));
        }
        let mut ids: Vec<(ext_php_rs::types::ArrayKey<'_>, i64)> = Vec::new();
        let mut failed = Vec::new();
        for (key, value) in tasks.iter() {
            match self.submit(value, -1, "taskWaitMulti")? {
                Some(id) => {
                    let _ = worker::with_link(|link| {
                        link.mark_awaited(id);
                        Ok(())
                    });
                    ids.push((key, id));
                }
                None => failed.push(key),
            }
        }
        if ids.is_empty() {
            return Ok(bool_zval(false));
        }
        let deadline = std::time::Instant::now() + seconds(timeout);
        let mut results: std::collections::HashMap<i64, Zval> = std::collections::HashMap::new();
        while results.len() < ids.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let got = worker::with_link(|link| {
                link.wait_for(left, |m| {
                    matches!(m, ToWorker::Finish { task_id, .. }
                        if ids.iter().any(|(_, id)| id == task_id) && !results.contains_key(task_id))
                })
            })?;
            match got {
                Some(ToWorker::Finish { task_id, payload }) => {
                    let v = from_payload(&payload, &self.config.untrusted_values())?;
                    results.insert(task_id, v);
                }
                _ => break,
            }
        }
        let mut out = ZendHashTable::new();
        for (key, id) in ids {
            if let Some(v) = results.remove(&id) {
                out.insert(key, v).map_err(PhpError::from)?;
            }
        }
        for key in failed {
            out.insert(key, bool_zval(false)).map_err(PhpError::from)?;
        }
        let mut z = Zval::new();
        z.set_hashtable(out);
        Ok(z)
    }

    /// Sends `$message` to worker `$dst_worker_id`'s onPipeMessage.
    pub fn send_message(&self, message: &Zval, dst_worker_id: Int) -> PhpResult<bool> {
        let worker_id = dst_worker_id.0;
        let Some((me, _)) = worker::current() else {
            warn("server is not running");
            return Ok(false);
        };
        let Some(dst) = self.worker_index(worker_id) else {
            warn(&format!(
                "invalid worker_id {worker_id} (allowed: 0 to {})",
                self.total_workers() - 1
            ));
            return Ok(false);
        };
        if dst == me {
            warn("cannot send message to self");
            return Ok(false);
        }
        if !self.callbacks.has(Event::PipeMessage) {
            warn("require 'onPipeMessage' callback");
            return Ok(false);
        }
        let payload = to_payload(message)?;
        worker::with_link(|link| link.send_pipe(dst, payload))?;
        Ok(true)
    }

    /// Restarts all workers (or only task workers) gracefully; no queued
    /// task is lost. Asks the master, as SIGUSR1/SIGUSR2 to it does: the
    /// manager takes orders from the master only.
    pub fn reload(&self, only_reload_taskworker: Opt<Bool>) -> bool {
        let only_task_workers = only_reload_taskworker.or(false);
        let master = ProcessState::with(|s| s.info()).master_pid;
        if master <= 0 {
            warn("server is not running");
            return false;
        }
        let sig = if only_task_workers {
            Signal::SIGUSR2
        } else {
            Signal::SIGUSR1
        };
        kill(Pid::from_raw(master as i32), sig).is_ok()
    }

    /// Stops the whole server, as SIGTERM to the master does.
    pub fn shutdown(&self) -> bool {
        let master = ProcessState::with(|s| s.info()).master_pid;
        if master <= 0 {
            warn("server is not running");
            return false;
        }
        kill(Pid::from_raw(master as i32), Signal::SIGTERM).is_ok()
    }

    /// Stops this worker (or worker `$workerId`) after what it holds; the
    /// manager starts a fresh one. Another worker is told by the manager,
    /// as in a reload, so its running callback finishes as written.
    pub fn stop(&self, workerId: Opt<Int>, waitEvent: Opt<Bool>) -> PhpResult<bool> {
        let _ = waitEvent;
        let worker_id = workerId.or(-1);
        if worker_id < 0 || worker_id == ProcessState::with(|s| s.info()).worker_id {
            if worker::current().is_none() {
                warn("server is not running");
                return Ok(false);
            }
            worker::with_link(Link::stop)?;
            return Ok(true);
        }
        let Some(id) = self.worker_index(worker_id) else {
            return Ok(false);
        };
        Ok(self
            .ask(Query::StopWorker { worker_id: id })?
            .is_some_and(|told| told.as_bool() == Some(true)))
    }

    /// Calls `$callback($timerId)` every `$ms` milliseconds in this worker.
    pub fn tick(&self, ms: Int, callback: Callable) -> PhpResult<Zval> {
        timer::add(ms.0, callback.0, true)
    }

    /// Calls `$callback()` once after `$ms` milliseconds in this worker.
    pub fn after(&self, ms: Int, callback: Callable) -> PhpResult<Zval> {
        timer::add(ms.0, callback.0, false)
    }

    /// Cancels a `tick()` or `after()` timer.
    pub fn clear_timer(&self, timerId: Int) -> PhpResult<bool> {
        timer::clear(timerId.0)
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

    /// Always TASKQ_PROCESS: SWOOLE_BASE is accepted by the constructor,
    /// but taskq runs the process model (master, manager, workers) anyway.
    #[php(getter)]
    pub fn get_mode(&self) -> i64 {
        MODE_PROCESS
    }

    /// The socket type given to the constructor.
    #[php(getter)]
    pub fn get_type(&self) -> i64 {
        self.sock_type
    }

    /// Every option passed to set(), merged, as Swoole's `$server->setting`;
    /// from start() on with the defaults Swoole fills in.
    #[php(getter)]
    pub fn get_setting(&self) -> PhpResult<Zval> {
        let settings = if self.started {
            self.config.started_settings(&self.settings)
        } else {
            self.settings.clone()
        };
        let mut ht = ZendHashTable::new();
        for (k, v) in &settings {
            ht.insert(k.as_str(), loose_value::zval(v))
                .map_err(PhpError::from)?;
        }
        let mut z = Zval::new();
        z.set_hashtable(ht);
        Ok(z)
    }

    /// Pid of the master, in every process of the server.
    #[php(getter, name = "master_pid")]
    pub fn get_master_pid_prop(&self) -> i64 {
        ProcessState::with(|s| s.info()).master_pid
    }

    /// Pid of the manager, in every process of the server.
    #[php(getter, name = "manager_pid")]
    pub fn get_manager_pid_prop(&self) -> i64 {
        ProcessState::with(|s| s.info()).manager_pid
    }

    /// This worker's id; -1 in the master.
    #[php(getter, name = "worker_id")]
    pub fn get_worker_id_prop(&self) -> i64 {
        ProcessState::with(|s| s.info()).worker_id
    }

    /// This worker's pid.
    #[php(getter, name = "worker_pid")]
    pub fn get_worker_pid_prop(&self) -> i64 {
        ProcessState::with(|s| s.info()).worker_pid
    }

    /// Whether this process is a task worker.
    #[php(getter, name = "taskworker")]
    pub fn get_taskworker(&self) -> bool {
        ProcessState::with(|s| s.info()).taskworker
    }
}

fn seconds(timeout: f64) -> Duration {
    if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout.min(86_400.0))
    } else {
        Duration::from_millis(500)
    }
}

/// How long a worker waits for the master to answer a query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a failed-task method waits: with a Redis backend the master
/// answers after Redis does, each call bounded by task_backend_timeout,
/// and retrying or purging every failed task takes one call per page.
const FAILED_TIMEOUT: Duration = Duration::from_secs(30);

impl TaskServer {
    fn total_workers(&self) -> i64 {
        (self.config.worker_num + self.config.task_worker_num) as i64
    }

    fn worker_index(&self, worker_id: i64) -> Option<u32> {
        (0..self.total_workers())
            .contains(&worker_id)
            .then_some(worker_id as u32)
    }

    /// Asks the master; None (with a warning) outside a worker.
    fn ask(&self, q: Query) -> PhpResult<Option<serde_json::Value>> {
        if worker::current().is_none() {
            warn("server is not running");
            return Ok(None);
        }
        let answer = worker::with_link(|link| link.query(q.to_json(), QUERY_TIMEOUT))?;
        Ok(answer.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Asks the master about its failed tasks: the answer, or why there is
    /// none as an exception (not running, no answer, the master's error).
    fn ask_failed(&self, method: &'static str, op: FailedOp) -> PhpResult<serde_json::Value> {
        if worker::current().is_none() {
            return Err(PhpError::NotRunning(method));
        }
        let answer =
            worker::with_link(|link| link.query(Query::Failed(op).to_json(), FAILED_TIMEOUT))?;
        let answer: serde_json::Value = answer
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| PhpError::FailedTasks {
                method,
                why: format!(
                    "the master did not answer within {} s",
                    FAILED_TIMEOUT.as_secs()
                ),
            })?;
        match answer.get("error") {
            Some(why) => Err(PhpError::FailedTasks {
                method,
                why: why.as_str().map_or_else(|| why.to_string(), str::to_string),
            }),
            None => Ok(answer),
        }
    }

    /// `retryFailed()` or `purgeFailed()`: `make` of the selection, and the
    /// count the master answers.
    fn change_failed(
        &self,
        method: &'static str,
        ids: &Zval,
        make: fn(Which) -> FailedOp,
    ) -> PhpResult<i64> {
        let Some(which) = failed_tasks::which(method, ids)? else {
            return Ok(0);
        };
        let answer = self.ask_failed(method, make(which))?;
        answer.as_i64().ok_or_else(|| PhpError::FailedTasks {
            method,
            why: format!("the master's answer is not a count: {answer}"),
        })
    }

    /// Open session ids above `after`, at most `limit`, as a PHP array.
    fn client_list(&self, after: i64, limit: i64) -> PhpResult<Zval> {
        let query = Query::ClientList {
            after: after.max(0) as u64,
            limit: limit as u64,
        };
        Ok(match self.ask(query)? {
            Some(v) if v.is_array() => json_zval(&v),
            _ => bool_zval(false),
        })
    }

    /// The checks and submission shared by task(), taskwait() and
    /// taskWaitMulti(); None after a warning.
    fn submit(&self, data: &Zval, dst_worker_id: i64, method: &str) -> PhpResult<Option<i64>> {
        let wait = method != "task";
        let n = self.config.task_worker_num as i64;
        let fail = |msg: String| {
            warn(&msg);
            Ok(None)
        };
        let in_worker = worker::current();
        if in_worker.is_none() && !one_way::available() {
            return fail(if ProcessState::with(|s| s.info()).master_pid == 0 {
                format!("server is not running: {method}() works after start(), in an event worker")
            } else {
                format!("{method}() cannot be used here: in the master and manager processes only task() works, one-way, in onStart and onManagerStart")
            });
        }
        if in_worker.is_none() && wait {
            return fail(format!(
                "{method}() can only be used in an event worker; task() in onStart and onManagerStart is one-way"
            ));
        }
        if n == 0 && self.config.task_backend.is_none() {
            return fail(format!(
                "{method} method can't be executed without task worker"
            ));
        }
        if matches!(in_worker, Some((_, true))) {
            return fail(format!("{method}() cannot use in the task-worker"));
        }
        if dst_worker_id >= n {
            return fail(format!("worker_id must be less than task_worker_num[{n}]"));
        }
        let payload = to_payload(data)?;
        let dst = if dst_worker_id < 0 {
            -1
        } else {
            dst_worker_id as i32
        };
        if in_worker.is_none() {
            return match one_way::submit(dst, payload) {
                Ok(id) => Ok(Some(id)),
                Err(e) => fail(e.to_string()),
            };
        }
        Ok(Some(worker::with_link(|link| {
            link.submit_task(dst, payload, wait)
        })?))
    }

    /// A consumer name that stays the same across restarts and differs
    /// between the servers of one host: host name and port (or the unix
    /// socket's path).
    fn default_consumer(&self) -> String {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let at = if self.port > 0 {
            self.port.to_string()
        } else {
            self.host.replace([' ', '{', '}'], "_")
        };
        format!("{host}:{at}")
    }

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
                task_window: c.task_window,
                task_max_attempts: c.client_task_retries() + 1,
                worker_task_max_attempts: c.worker_task_retries() + 1,
                task_retry_delay_ms: (c.task_retry_delay * 1000.0) as u64,
                task_timeout_ms: c.task_timeout.map(|t| (t * 1000.0) as u64),
                task_queue_max: c.task_queue_max,
                outbox_high_water: c.socket_buffer_size,
                durable: c.task_store.is_some(),
                auth_token: c.auth_token.clone(),
                auth_timeout: Duration::from_secs_f64(c.auth_timeout),
                auth_max_pending: c.auth_max_pending,
                untrusted: c.untrusted_values(),
                worker_uid: c
                    .user
                    .as_deref()
                    .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
                    .map(|u| u.uid.as_raw()),
                package_timeout: Duration::from_secs_f64(c.package_timeout),
                max_wait_time: Duration::from_secs(c.max_wait_time),
                heartbeat: c.heartbeat(),
                server_port: self.port as u16,
                sock_type: self.sock_type,
                backend: c.task_backend.as_ref().map(|dsn| Backend {
                    dsn: dsn.clone(),
                    queue: c.task_queue.clone(),
                    consumer: c
                        .task_consumer
                        .clone()
                        .unwrap_or_else(|| self.default_consumer()),
                    claim_idle: Duration::from_secs_f64(c.task_claim_idle),
                    timeouts: Timeouts {
                        connect: Duration::from_secs_f64(c.task_backend_timeout),
                        command: Duration::from_secs_f64(c.task_backend_timeout),
                    },
                }),
            },
            max_wait_time: Duration::from_secs(c.max_wait_time),
            reload_wait_time: Duration::from_secs(c.reload_wait_time),
            daemonize: c.daemonize,
            log_file: c.log_file.clone(),
            log_level: c.log_level,
            pid_file: c.pid_file.clone(),
            backlog: c.backlog,
            max_request: (c.max_request, c.effective_max_request_grace()),
            task_max_request: (c.task_max_request, c.effective_task_max_request_grace()),
            task_store: c.task_store.clone(),
            user: c.user.clone(),
            group: c.group.clone(),
            metrics_listen: c.metrics_listen,
        }
    }
}
