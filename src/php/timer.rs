//! `TaskQ\Timer` (and, through the Swoole names, `Swoole\Timer` and
//! `swoole_timer_*`): the per-process timers of a worker, the same ones as
//! the server's `tick()`/`after()`/`clearTimer()`. They run in the worker's
//! event loop, so they exist only inside workers after `start()`.
// `TaskQ\Timer` is taskq's own class, so its parameter names are taskq's;
// `Swoole\Timer` (swoole_functions.php) has Swoole's (`timer_id`).
#![allow(non_snake_case)]

use std::time::Duration;

use super::error::PhpResult;
use ext_php_rs::prelude::*;
use ext_php_rs::types::Zval;

use super::args::{Callable, Int};
use super::error::PhpError;
use super::exception::warn;
use super::process_state::ProcessState;
use super::values::{bool_zval, long_zval};
use taskq_engine::worker;

/// Static timer functions for code that has no server object at hand.
#[php_class]
#[php(name = "TaskQ\\Timer")]
pub struct Timer;

#[php_impl]
impl Timer {
    /// Calls `$callback($timerId)` every `$ms` milliseconds in this worker;
    /// returns the timer id, or false outside a worker.
    pub fn tick(ms: Int, callback: Callable) -> PhpResult<Zval> {
        add(ms.0, callback.0, true)
    }

    /// Calls `$callback()` once after `$ms` milliseconds in this worker.
    pub fn after(ms: Int, callback: Callable) -> PhpResult<Zval> {
        add(ms.0, callback.0, false)
    }

    /// Cancels a timer; false when it does not exist (fired or cleared).
    pub fn clear(timerId: Int) -> PhpResult<bool> {
        clear(timerId.0)
    }
}

/// Adds a timer in this worker's event loop.
pub fn add(ms: i64, callback: &Zval, repeating: bool) -> PhpResult<Zval> {
    if worker::current().is_none() {
        warn("timers can only be used in worker processes after start()");
        return Ok(bool_zval(false));
    }
    if !(1..=86_400_000).contains(&ms) {
        return Err(PhpError::TimerInterval(ms));
    }
    let delay = Duration::from_millis(ms as u64);
    let every = repeating.then_some(delay);
    let id = ProcessState::with(|s| s.add_timer(delay, every, callback))?;
    Ok(long_zval(id as i64))
}

/// Removes a timer of this worker.
pub fn clear(timer_id: i64) -> PhpResult<bool> {
    if timer_id <= 0 || worker::current().is_none() {
        return Ok(false);
    }
    Ok(ProcessState::with(|s| s.clear_timer(timer_id as u64))?)
}
