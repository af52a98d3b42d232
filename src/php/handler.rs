//! Runs PHP callbacks for the process layer: the master's onStart and
//! onShutdown, and every worker event. A callback that throws is logged with
//! its class, message and trace and the worker keeps serving; a fatal error
//! ends the worker (exit 255) and the manager respawns it.

use std::os::unix::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use ext_php_rs::convert::{IntoZval, IntoZvalDyn};
use ext_php_rs::error::Error;
use ext_php_rs::types::{ZendCallable, Zval};
use ext_php_rs::zend::{try_catch, ExecutorGlobals};
use nix::unistd::Pid;

use super::events::{Callbacks, Event};
use super::process_state::{DueTimer, ProcessState};
use super::values::{bytes_zval, from_payload, to_payload};
use taskq_engine::error::CallbackError;
use taskq_engine::ipc;
use taskq_engine::launcher::Hooks;
use taskq_engine::log::Level;
use taskq_engine::payload::Payload;
use taskq_engine::php_serial::Policy;
use taskq_engine::process::exit;
use taskq_engine::supervisor::Exit;
use taskq_engine::worker::{self, Handler, WorkerSpec};

/// Calls `callback` on the PHP thread. Exceptions are logged and swallowed
/// so one bad message cannot stop a worker; fatal errors end the process.
pub fn invoke(what: &str, callback: &Zval, args: Vec<&dyn IntoZvalDyn>) -> Option<Zval> {
    call(what, callback, args).ok()
}

/// Like [`invoke`], but says why the call failed (the exception as PHP
/// prints it), for onTask whose failures are retried.
pub fn call(
    what: &str,
    callback: &Zval,
    args: Vec<&dyn IntoZvalDyn>,
) -> Result<Zval, CallbackError> {
    let callable = match ZendCallable::new(callback) {
        Ok(c) => c,
        Err(_) => {
            taskq_engine::log!(Level::Error, "{what} callback is not callable");
            return Err(CallbackError::NotCallable(what.to_owned()));
        }
    };
    let result = try_catch(AssertUnwindSafe(|| callable.try_call(args)));
    if result.is_err() || fatal_error_happened() {
        taskq_engine::log!(
            Level::Error,
            "fatal error in {what} callback (see the PHP error above); process exits with 255"
        );
        // The engine state after a fatal error is not safe to reuse.
        exit::now(255)
    }
    if let Some(status) = exit_called() {
        taskq_engine::log!(
            Level::Notice,
            "worker process is terminated by exit()/die() in {what} callback, status {status}"
        );
        // PHP is unwinding the request for exit(); end the process with the
        // status the script chose.
        exit::now(status)
    }
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Error::ExceptionPending { .. })) => Err(log_exception(what)),
        Ok(Err(e)) => {
            taskq_engine::log!(Level::Error, "{what} callback failed: {e}");
            Err(CallbackError::Call(e.to_string()))
        }
        Err(e) => Err(CallbackError::Call(e.to_string())),
    }
}

/// `exit()`/`die()` in a callback: PHP 8 unwinds with an internal
/// "unwind exit" object in place of an exception. Returns the exit status.
fn exit_called() -> Option<i32> {
    let globals = ExecutorGlobals::get();
    let ex = globals.exception;
    if ex.is_null() {
        return None;
    }
    // SAFETY: `ex` is the engine's pending EG(exception).
    unsafe { super::zend::is_unwind_exit(ex.cast()) }.then_some(globals.exit_status)
}

/// PHP records a fatal error (E_ERROR, out of memory, ...) as exit status
/// 255 even where the engine unwinds without reaching our bailout handler.
fn fatal_error_happened() -> bool {
    ExecutorGlobals::get().exit_status == 255
}

/// Logs and clears the pending exception; returns it as the failure.
fn log_exception(what: &str) -> CallbackError {
    let Some(ex) = ExecutorGlobals::take_exception() else {
        taskq_engine::log!(Level::Error, "{what} callback failed");
        return CallbackError::Failed(what.to_owned());
    };
    let text = ex
        .into_zval(false)
        .ok()
        .and_then(|z| z.try_call_method("__toString", vec![]).ok())
        .and_then(|s| s.string())
        .unwrap_or_else(|| "an exception that cannot be converted to string".into());
    taskq_engine::log!(
        Level::Error,
        "uncaught exception in {what} callback: {text}"
    );
    CallbackError::Threw(text)
}

/// The hooks `start()` hands to the launcher.
pub struct PhpHooks {
    pub this: Zval,
    pub callbacks: Callbacks,
    /// What task payloads from network clients may hold.
    pub untrusted: Policy,
}

impl PhpHooks {
    /// onStart (in the master) or onManagerStart (in the manager): records
    /// the pids the server's getters report, then runs the callback with
    /// `task()` delivered one-way, as in Swoole.
    fn process_started(&mut self, event: Event, master: Pid, manager: Pid, own: Pid) {
        ProcessState::with(|s| {
            s.update_info(|p| {
                p.master_pid = master.as_raw() as i64;
                p.manager_pid = manager.as_raw() as i64;
                p.worker_pid = own.as_raw() as i64;
            })
        });
        if self.callbacks.get(event).is_some() {
            taskq_engine::one_way::open(own == manager);
            self.fire(event, vec![&self.this]);
            taskq_engine::one_way::close();
        }
    }

    fn fire(&self, event: Event, args: Vec<&dyn IntoZvalDyn>) -> Option<Zval> {
        let cb = self.callbacks.get(event)?;
        invoke(&format!("on{}", event.name()), cb, args)
    }
}

impl Hooks for PhpHooks {
    fn master_started(&mut self, master: Pid, manager: Pid) {
        self.process_started(Event::Start, master, manager, master);
    }

    fn master_stopping(&mut self) {
        self.fire(Event::BeforeShutdown, vec![&self.this]);
    }

    fn master_stopped(&mut self) {
        self.fire(Event::Shutdown, vec![&self.this]);
    }

    fn manager_started(&mut self, master: Pid, manager: Pid) {
        self.process_started(Event::ManagerStart, master, manager, manager);
    }

    fn manager_stopped(&mut self) {
        self.fire(Event::ManagerStop, vec![&self.this]);
    }

    fn worker_error(&mut self, worker_id: u32, pid: i32, exit: Exit) {
        let (id, pid, code, signal) = (
            worker_id as i64,
            pid as i64,
            exit.code as i64,
            exit.signal as i64,
        );
        self.fire(
            Event::WorkerError,
            vec![&self.this, &id, &pid, &code, &signal],
        );
    }

    fn run_worker(&mut self, spec: WorkerSpec, master_addr: &SocketAddr, manager: Pid) -> i32 {
        ProcessState::with(|s| {
            s.update_info(|p| {
                p.manager_pid = manager.as_raw() as i64;
                p.worker_id = spec.worker_id as i64;
                p.worker_pid = std::process::id() as i64;
                p.taskworker = spec.is_task;
            })
        });
        let mut handler = WorkerHandler { hooks: self };
        worker::run(spec, master_addr, &mut handler)
    }
}

struct WorkerHandler<'a> {
    hooks: &'a PhpHooks,
}

impl WorkerHandler<'_> {
    fn worker_id(&self) -> i64 {
        ProcessState::with(|s| s.info().worker_id)
    }
}

impl Handler for WorkerHandler<'_> {
    fn worker_start(&mut self) {
        let id = self.worker_id();
        self.hooks
            .fire(Event::WorkerStart, vec![&self.hooks.this, &id]);
    }

    fn worker_stop(&mut self) {
        let id = self.worker_id();
        self.hooks
            .fire(Event::WorkerStop, vec![&self.hooks.this, &id]);
    }

    fn worker_exit(&mut self) {
        let id = self.worker_id();
        self.hooks
            .fire(Event::WorkerExit, vec![&self.hooks.this, &id]);
    }

    fn pipe_message(&mut self, src_worker: i32, payload: Payload) {
        if self.hooks.callbacks.get(Event::PipeMessage).is_none() {
            taskq_engine::log!(
                Level::Warning,
                "message from worker #{src_worker} dropped: no PipeMessage callback is registered"
            );
            return;
        }
        let data = match from_payload(&payload, &self.hooks.untrusted) {
            Ok(d) => d,
            Err(e) => {
                taskq_engine::log!(Level::Error, "message from worker #{src_worker}: {e}");
                return;
            }
        };
        let src = src_worker as i64;
        self.hooks
            .fire(Event::PipeMessage, vec![&self.hooks.this, &src, &data]);
    }

    fn timer(&mut self, timer_id: u64) {
        let due = ProcessState::with(|s| s.due_timer(timer_id));
        if let Some(DueTimer {
            callback,
            repeating,
        }) = due
        {
            let id = timer_id as i64;
            if repeating {
                invoke("timer", &callback, vec![&id]);
            } else {
                invoke("timer", &callback, vec![]);
            }
        }
    }

    fn receive(&mut self, fd: u64, reactor_id: u32, data: Bytes) {
        let data = bytes_zval(&data);
        let (fd, reactor_id) = (fd as i64, reactor_id as i64);
        self.hooks.fire(
            Event::Receive,
            vec![&self.hooks.this, &fd, &reactor_id, &data],
        );
    }

    fn connect(&mut self, fd: u64, reactor_id: u32) {
        let (fd, reactor_id) = (fd as i64, reactor_id as i64);
        self.hooks
            .fire(Event::Connect, vec![&self.hooks.this, &fd, &reactor_id]);
    }

    fn close(&mut self, fd: u64, reactor_id: i32) {
        let (fd, reactor_id) = (fd as i64, reactor_id as i64);
        self.hooks
            .fire(Event::Close, vec![&self.hooks.this, &fd, &reactor_id]);
    }

    fn task(
        &mut self,
        task_id: i64,
        src_worker: i32,
        payload: Payload,
    ) -> Result<Option<Payload>, CallbackError> {
        let data = from_payload(&payload, &self.hooks.untrusted).map_err(|e| {
            taskq_engine::log!(
                Level::Error,
                "task {task_id} from worker #{src_worker}: {e}"
            );
            CallbackError::Payload(e.to_string())
        })?;
        let Some(cb) = self.hooks.callbacks.get(Event::Task) else {
            return Err(CallbackError::NoTaskCallback);
        };
        let src = src_worker as i64;
        let ret = call("onTask", cb, vec![&self.hooks.this, &task_id, &src, &data])?;
        if ret.is_null() || !ipc::result_has_a_destination(src_worker) {
            return Ok(None);
        }
        match to_payload(&ret) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                taskq_engine::log!(Level::Error, "onTask result of task {task_id}: {e}");
                Ok(None)
            }
        }
    }

    fn task_failed(&mut self, task_id: i64, error: String, payload: Payload) {
        let Some(cb) = self.hooks.callbacks.get(Event::TaskFailed) else {
            return;
        };
        let data = match from_payload(&payload, &self.hooks.untrusted) {
            Ok(d) => d,
            Err(e) => {
                taskq_engine::log!(Level::Error, "failed task {task_id}: {e}");
                return;
            }
        };
        let error = bytes_zval(error.as_bytes());
        invoke(
            "onTaskFailed",
            cb,
            vec![&self.hooks.this, &task_id, &data, &error],
        );
    }

    fn finish(&mut self, task_id: i64, payload: Payload) {
        let data = match from_payload(&payload, &self.hooks.untrusted) {
            Ok(d) => d,
            Err(e) => {
                taskq_engine::log!(Level::Error, "result of task {task_id}: {e}");
                return;
            }
        };
        let own = ProcessState::with(|s| s.take_finish_callback(task_id));
        match own
            .as_ref()
            .or_else(|| self.hooks.callbacks.get(Event::Finish))
        {
            Some(cb) => {
                invoke("onFinish", cb, vec![&self.hooks.this, &task_id, &data]);
            }
            None => taskq_engine::log!(
                Level::Warning,
                "task {task_id} returned a result but no Finish callback is registered"
            ),
        }
    }
}
