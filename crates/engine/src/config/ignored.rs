//! The Swoole server options taskq accepts for compatibility but whose value
//! changes nothing here, in one list with the reason for each. Each is still
//! validated as Swoole reads it, so a configuration that Swoole would refuse
//! fails here too, and a valid one keeps working; the value is then dropped
//! (`$server->setting` still shows it as given).

use super::coerce::{to_absolute_path, to_bool, to_int};
use super::error::ConfigError;
use taskq_value::Value;

/// Swoole's rule for an option's value; the value itself is not kept.
type Check = fn(&str, &Value) -> Result<(), ConfigError>;

/// One option accepted and validated, then dropped.
pub(super) struct Ignored {
    /// The option's name in `set()`.
    pub(super) name: &'static str,
    /// How Swoole validates the value.
    pub(super) check: Check,
}

/// A boolean switch, read as every boolean option is.
const SWITCH: Check = |k, v| to_bool(k, v).map(drop);

/// Every server option taskq accepts but ignores (README, *TaskServer*),
/// each with why its value changes nothing in taskq.
pub(super) const IGNORED: &[Ignored] = &[
    // taskq has one IPC, a unix socket per task worker with idle-first dispatch; 1 to 4 (4 is
    // Swoole's stream mode) are accepted.
    row("task_ipc_mode", |k, v| to_int::<u8>(k, v, 1, 4).map(drop)),
    // No System V message queue is created (task_ipc_mode 2 and 3).
    row("message_queue_key", |k, v| {
        to_int::<i64>(k, v, i64::MIN, i64::MAX).map(drop)
    }),
    // Task payloads of any size travel over the socket, never through tmpfiles.
    row("task_tmpdir", |k, v| to_absolute_path(k, v).map(drop)),
    // Reloads are always graceful: a worker finishes what it holds, then exits.
    row("reload_async", SWITCH),
    // taskq has no reactor threads: the master's tokio runtime does their work.
    row("reactor_num", |k, v| {
        to_int::<usize>(k, v, 1, 1000).map(drop)
    }),
    // Swoole's switch to deliver onConnect/onClose while a worker is busy; taskq's events have
    // one fixed order, with no switch.
    row("enable_unsafe_event", SWITCH),
    // Swoole's switch to drop data of connections that closed before their worker got to it;
    // taskq has no such switch.
    row("discard_timeout_request", SWITCH),
    // Connections are not given SO_KEEPALIVE; heartbeat_check_interval closes idle ones.
    row("open_tcp_keepalive", SWITCH),
];

/// One row of the list.
const fn row(name: &'static str, check: Check) -> Ignored {
    Ignored { name, check }
}

/// The row of `IGNORED` named `name`, found at compile time: a schema row
/// naming an option that is not in the list does not build.
pub(super) const fn ignored(name: &str) -> &'static Ignored {
    let mut i = 0;
    while i < IGNORED.len() {
        if same(IGNORED[i].name.as_bytes(), name.as_bytes()) {
            return &IGNORED[i];
        }
        i += 1;
    }
    panic!("not in the list of ignored options")
}

/// `a == b`, usable in a `const fn`.
const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
