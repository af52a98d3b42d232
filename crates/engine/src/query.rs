//! Questions a worker asks the master (`stats()`, `getClientInfo()`,
//! `exists()`, other workers' pids and status). They cross the IPC socket as
//! JSON because they are rare and their answers are PHP arrays anyway.

use serde::{Deserialize, Serialize};

/// One question; the answer is a JSON value (object, bool or number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Swoole's `stats()` keys, server-wide part.
    Stats,
    /// Whether session `fd` is open.
    Exists { fd: u64 },
    /// Swoole's `getClientInfo()` array, or null.
    ClientInfo { fd: u64 },
    /// Pid of worker `worker_id`, or null when it has no process now.
    WorkerPid { worker_id: u32 },
    /// Swoole's worker status: 1 busy, 2 idle, 3 exited (no process).
    WorkerStatus { worker_id: u32 },
    /// `bind($fd, $uid)`: dispatch_mode 5 routes the session by `uid`.
    Bind { fd: u64, uid: u64 },
    /// `getClientList()`/`$server->connections`: up to `limit` open
    /// sessions with an id above `after`, ascending.
    ClientList { after: u64, limit: u64 },
    /// `$server->stop($workerId)` of another worker: the master has the
    /// manager tell it to leave (never a signal to the worker, which would
    /// cut its running callback's `sleep()` short). Answers whether it was
    /// told.
    StopWorker { worker_id: u32 },
    /// `failedTasks()`, `retryFailed()`, `purgeFailed()`: the answer is a
    /// list, a count, or `{"error": ...}`.
    Failed(crate::failed::FailedOp),
}

/// Swoole's `SWOOLE_WORKER_BUSY`.
pub const WORKER_BUSY: i64 = 1;
/// Swoole's `SWOOLE_WORKER_IDLE`.
pub const WORKER_IDLE: i64 = 2;
/// Swoole's `SWOOLE_WORKER_EXIT`.
pub const WORKER_EXIT: i64 = 3;

impl Query {
    /// Wire form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the wire form; a malformed query is answered with null.
    pub fn from_json(bytes: &[u8]) -> Option<Query> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        for q in [
            Query::Stats,
            Query::Exists { fd: 3 },
            Query::ClientInfo { fd: 9 },
            Query::WorkerPid { worker_id: 2 },
            Query::WorkerStatus { worker_id: 0 },
            Query::Bind { fd: 1, uid: 42 },
            Query::StopWorker { worker_id: 1 },
            Query::Failed(crate::failed::FailedOp::List {
                offset: 0,
                limit: 10,
            }),
            Query::Failed(crate::failed::FailedOp::Retry(crate::failed::Which::Ids(
                vec![3],
            ))),
            Query::ClientList {
                after: 0,
                limit: 10,
            },
        ] {
            assert_eq!(Query::from_json(&q.to_json()), Some(q));
        }
        assert_eq!(Query::from_json(b"{\"Nope\":1}"), None);
        assert_eq!(Query::from_json(b"\xff"), None);
    }
}
