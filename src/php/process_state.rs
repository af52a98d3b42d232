//! This process's PHP-side state: who it is, the callbacks of
//! `task($data, $dst, $callback)` waiting for their results, and the
//! callbacks of its timers. One object on the PHP thread (it holds zvals),
//! reached through [`ProcessState::with`] because PHP methods such as
//! `$server->worker_id` or `tick()` run without a handle to the worker's
//! handler. The engine's side of a worker is `taskq_engine::worker`'s link.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use ext_php_rs::types::Zval;

use taskq_engine::worker::{self, LinkError};

/// Who this process is, for `$server->worker_id` and friends.
#[derive(Debug, Clone, Copy)]
pub struct ProcInfo {
    pub master_pid: i64,
    pub manager_pid: i64,
    pub worker_id: i64,
    pub worker_pid: i64,
    pub taskworker: bool,
}

/// A timer's PHP callback, kept under the id the worker's event loop gave
/// the timer.
struct TimerCallback {
    callback: Zval,
    repeating: bool,
}

/// A due timer's callback, taken out of the state so that calling it (which
/// may add or clear timers) borrows nothing.
pub struct DueTimer {
    pub callback: Zval,
    /// A `tick()` callback gets the timer id; an `after()` callback nothing.
    pub repeating: bool,
}

/// See the module documentation.
pub struct ProcessState {
    info: ProcInfo,
    finish_callbacks: HashMap<i64, Zval>,
    timers: HashMap<u64, TimerCallback>,
}

thread_local! {
    static STATE: RefCell<ProcessState> = RefCell::new(ProcessState {
        info: ProcInfo {
            master_pid: 0,
            manager_pid: 0,
            worker_id: -1,
            worker_pid: 0,
            taskworker: false,
        },
        finish_callbacks: HashMap::new(),
        timers: HashMap::new(),
    });
}

impl ProcessState {
    /// Runs `f` on this process's state. `f` must not call PHP: a callback
    /// could reach the state again.
    pub fn with<T>(f: impl FnOnce(&mut ProcessState) -> T) -> T {
        STATE.with(|s| f(&mut s.borrow_mut()))
    }

    /// This process's identity.
    pub fn info(&self) -> ProcInfo {
        self.info
    }

    /// Records who this process is, as the launcher learns it.
    pub fn update_info(&mut self, f: impl FnOnce(&mut ProcInfo)) {
        f(&mut self.info);
    }

    /// Remembers the callback that replaces onFinish for one task.
    pub fn remember_finish_callback(&mut self, task_id: i64, callback: &Zval) {
        self.finish_callbacks
            .insert(task_id, callback.shallow_clone());
    }

    /// The callback that replaces onFinish for `task_id`, once.
    pub fn take_finish_callback(&mut self, task_id: i64) -> Option<Zval> {
        self.finish_callbacks.remove(&task_id)
    }

    /// Starts a timer in the worker's event loop and keeps its callback
    /// under the timer's id: `tick()` when `every` is set, else `after()`.
    pub fn add_timer(
        &mut self,
        delay: Duration,
        every: Option<Duration>,
        callback: &Zval,
    ) -> Result<u64, LinkError> {
        let id = worker::with_link(|link| Ok(link.add_timer(delay, every)))?;
        let callback = TimerCallback {
            callback: callback.shallow_clone(),
            repeating: every.is_some(),
        };
        self.timers.insert(id, callback);
        Ok(id)
    }

    /// Stops a timer and forgets its callback; false when it was not running.
    pub fn clear_timer(&mut self, id: u64) -> Result<bool, LinkError> {
        let cleared = worker::with_link(|link| Ok(link.clear_timer(id)))?;
        self.timers.remove(&id);
        Ok(cleared)
    }

    /// The callback of the timer that fired; an `after()` timer's is
    /// forgotten, as it will not fire again.
    pub fn due_timer(&mut self, id: u64) -> Option<DueTimer> {
        let repeating = self.timers.get(&id)?.repeating;
        let callback = if repeating {
            self.timers.get(&id)?.callback.shallow_clone()
        } else {
            self.timers.remove(&id)?.callback
        };
        Some(DueTimer {
            callback,
            repeating,
        })
    }
}
