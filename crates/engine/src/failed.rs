//! Tasks that used up their attempts, as an operator or a PHP script sees
//! them whichever queue keeps them (the memory queue's recent ones, the
//! store's failed table, Redis's failed list): listed with their error,
//! put back to run again, or forgotten.

use std::collections::VecDeque;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::payload::{Encoding, Payload};
use crate::queue::QueuedTask;

/// Failed tasks the memory queue remembers; older ones are forgotten
/// (they are in the log), so a poison flood cannot grow the master.
pub const MEMORY_KEEP: usize = 1000;

/// Bytes of data and errors the memory queue's failed tasks may hold at
/// most, so a flood of large poison payloads is bounded as well as a
/// flood of small ones; the oldest are forgotten first, the newest is kept.
pub const MEMORY_KEEP_BYTES: usize = 64 << 20;

/// Most failed tasks one listing returns (`GET /api/failed`,
/// `failedTasks()`), so one answer stays a bounded message.
pub const PAGE_MAX: usize = 1000;

/// A task given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    /// Its id in the queue that gave it up: what retry and purge take.
    pub id: u64,
    /// Worker that dispatched it; -1 for a client's task.
    pub src_worker: i32,
    /// The id `task()` returned there.
    pub task_id: i64,
    pub payload: Payload,
    /// Why its last run failed.
    pub error: String,
    /// Runs that failed.
    pub attempts: u32,
    /// When it was given up (unix ms).
    pub failed_at_ms: u64,
}

impl FailedTask {
    /// A task of this master's queue given up with `error` at `at_ms`.
    pub fn of(task: &QueuedTask, error: &str, at_ms: u64) -> Self {
        FailedTask {
            id: task.id,
            src_worker: task.src_worker,
            task_id: task.task_id,
            payload: task.payload.clone(),
            error: error.to_owned(),
            attempts: task.attempts,
            failed_at_ms: at_ms,
        }
    }

    /// The wire form of an answer (admin API, worker query); the payload
    /// travels as base64 with its encoding, so its reader decides how to
    /// turn it into a value under its own rules for untrusted data.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "worker": self.src_worker,
            "task_id": self.task_id,
            "encoding": self.payload.encoding as u8,
            "data": base64::engine::general_purpose::STANDARD.encode(&self.payload.data),
            "error": self.error,
            "attempts": self.attempts,
            "failed_at": self.failed_at_ms as f64 / 1000.0,
        })
    }

    /// Reads [`Self::to_json`] back (in the worker, for `failedTasks()`);
    /// None for anything else.
    pub fn from_json(v: &Value) -> Option<Self> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str()?)
            .ok()?;
        Some(FailedTask {
            id: v["id"].as_u64()?,
            src_worker: i32::try_from(v["worker"].as_i64()?).ok()?,
            task_id: v["task_id"].as_i64()?,
            payload: Payload {
                encoding: Encoding::from_u8(u8::try_from(v["encoding"].as_u64()?).ok()?).ok()?,
                data: data.into(),
            },
            error: v["error"].as_str()?.to_owned(),
            attempts: u32::try_from(v["attempts"].as_u64()?).ok()?,
            failed_at_ms: (v["failed_at"].as_f64()? * 1000.0).round() as u64,
        })
    }
}

/// A failed task made ready to run again: no failed runs, no delay, and
/// nobody's `onFinish` (the `task()` call that dispatched it is long over,
/// and its id may name another task there by now).
pub fn again(mut task: QueuedTask) -> QueuedTask {
    task.src_worker = -1;
    task.task_id = task.id as i64;
    task.attempts = 0;
    task.not_before = 0;
    task.queued_ms = crate::queue::now_ms();
    task
}

/// Which failed tasks an operation is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Which {
    All,
    Ids(Vec<u64>),
}

impl Which {
    /// Whether task `id` is selected.
    pub fn has(&self, id: u64) -> bool {
        match self {
            Which::All => true,
            Which::Ids(ids) => ids.contains(&id),
        }
    }
}

/// What is asked of the failed tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailedOp {
    /// Newest first, `limit` from `offset`.
    List { offset: usize, limit: usize },
    /// One task by id (`taskq failed show`); answers `{"task": row}`,
    /// the row null when no failed task has that id (wrapped, as the
    /// row's own `error` field must not read as a failed answer).
    Get(u64),
    /// Back into the queue; answers how many went.
    Retry(Which),
    /// Forgotten; answers how many.
    Purge(Which),
}

/// The memory queue's failed tasks: the most recent [`MEMORY_KEEP`], and
/// no more than [`MEMORY_KEEP_BYTES`] of them.
#[derive(Debug, Default)]
pub struct RecentFailures {
    /// Oldest first: each task with its error and when it failed.
    list: VecDeque<(QueuedTask, String, u64)>,
    /// Bytes of data and errors in `list`.
    bytes: usize,
}

/// What one remembered failure counts against [`MEMORY_KEEP_BYTES`].
fn weight((task, error, _): &(QueuedTask, String, u64)) -> usize {
    task.payload.data.len() + error.len()
}

impl RecentFailures {
    /// Remembers `task`, forgetting the oldest beyond [`MEMORY_KEEP`] or
    /// [`MEMORY_KEEP_BYTES`].
    pub fn push(&mut self, task: QueuedTask, error: &str, at_ms: u64) {
        let entry = (task, error.to_owned(), at_ms);
        self.bytes += weight(&entry);
        self.list.push_back(entry);
        while self.list.len() > MEMORY_KEEP
            || (self.bytes > MEMORY_KEEP_BYTES && self.list.len() > 1)
        {
            if let Some(old) = self.list.pop_front() {
                self.bytes -= weight(&old);
            }
        }
    }

    /// Newest first, `limit` from `offset`.
    pub fn list(&self, offset: usize, limit: usize) -> Vec<FailedTask> {
        self.list
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|(t, error, at)| FailedTask::of(t, error, *at))
            .collect()
    }

    /// The one with id `id`, if it is still remembered.
    pub fn get(&self, id: u64) -> Option<FailedTask> {
        self.list
            .iter()
            .find(|(t, _, _)| t.id == id)
            .map(|(t, error, at)| FailedTask::of(t, error, *at))
    }

    /// Takes the selected ones out, ready to queue again.
    pub fn take(&mut self, which: &Which) -> Vec<QueuedTask> {
        let (out, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|(t, _, _)| which.has(t.id));
        self.list = keep;
        self.bytes -= out.iter().map(weight).sum::<usize>();
        out.into_iter().map(|(t, _, _)| again(t)).collect()
    }

    /// Forgets the selected ones; returns how many.
    pub fn purge(&mut self, which: &Which) -> usize {
        let before = self.list.len();
        let mut freed = 0;
        self.list.retain(|e| {
            let gone = which.has(e.0.id);
            if gone {
                freed += weight(e);
            }
            !gone
        });
        self.bytes -= freed;
        before - self.list.len()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn task(id: u64) -> QueuedTask {
        QueuedTask {
            id,
            src_worker: 2,
            task_id: 7,
            payload: Payload {
                encoding: Encoding::Serialized,
                data: Bytes::from(format!("s:1:\"{id}\";")),
            },
            attempts: 3,
            max_attempts: 3,
            priority: 5,
            not_before: 0,
            queued_ms: 0,
        }
    }

    #[test]
    fn the_wire_form_carries_the_payload_with_its_encoding() {
        let f = FailedTask::of(&task(9), "RuntimeException: boom", 1_700_000_000_123);
        let v = f.to_json();
        assert_eq!(
            (
                v["id"].as_u64(),
                v["worker"].as_i64(),
                v["task_id"].as_i64()
            ),
            (Some(9), Some(2), Some(7))
        );
        assert_eq!(v["encoding"].as_u64(), Some(Encoding::Serialized as u64));
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, b"s:1:\"9\";");
        assert_eq!(v["error"], "RuntimeException: boom");
        assert_eq!(v["failed_at"].as_f64(), Some(1_700_000_000.123));
        assert_eq!(FailedTask::from_json(&v), Some(f), "reads back");
        assert_eq!(FailedTask::from_json(&json!({"id": 1})), None);
        let mut bad = v.clone();
        bad["encoding"] = json!(9);
        assert_eq!(FailedTask::from_json(&bad), None, "an unknown encoding");
    }

    #[test]
    fn recent_failures_are_bounded_newest_first_and_retried_as_fresh_tasks() {
        let mut r = RecentFailures::default();
        for id in 1..=(MEMORY_KEEP as u64 + 5) {
            r.push(task(id), "boom", id);
        }
        assert_eq!(r.len(), MEMORY_KEEP);
        let ids: Vec<u64> = r.list(1, 3).iter().map(|t| t.id).collect();
        let newest = MEMORY_KEEP as u64 + 5;
        assert_eq!(ids, [newest - 1, newest - 2, newest - 3]);
        assert_eq!(r.get(newest - 2).map(|t| t.failed_at_ms), Some(newest - 2));
        assert_eq!(r.get(1), None, "forgotten beyond MEMORY_KEEP");

        let back = r.take(&Which::Ids(vec![newest, 1, 9999]));
        assert_eq!(back.len(), 1, "id 1 was forgotten, 9999 never failed");
        let t = &back[0];
        assert_eq!(
            (t.id, t.src_worker, t.attempts, t.priority, t.max_attempts),
            (newest, -1, 0, 5, 3)
        );
        assert_eq!(r.purge(&Which::Ids(vec![newest - 1])), 1);
        assert_eq!(r.purge(&Which::All), MEMORY_KEEP - 2);
        assert!(r.is_empty());
    }

    fn big(id: u64, mib: usize) -> QueuedTask {
        let mut t = task(id);
        t.payload.data = Bytes::from(vec![b'x'; mib << 20]);
        t
    }

    #[test]
    fn recent_failures_are_bounded_in_bytes_oldest_forgotten_newest_kept() {
        let mut r = RecentFailures::default();
        for id in 1..=10 {
            r.push(big(id, 10), "boom", id);
        }
        assert_eq!(r.len(), 6, "six of 10 MiB fit in 64 MiB");
        assert_eq!(r.get(4), None);
        assert!(r.get(5).is_some());
        assert_eq!(r.take(&Which::Ids(vec![10])).len(), 1);
        assert_eq!(r.purge(&Which::Ids(vec![9])), 1);
        for id in 11..=13 {
            r.push(big(id, 10), "boom", id);
        }
        assert_eq!(r.len(), 6, "what was taken and purged freed its bytes");
        r.push(big(99, 100), "boom", 99);
        assert_eq!(r.len(), 1, "one larger than the bound is still kept");
        assert!(r.get(99).is_some());
        r.push(task(100), "boom", 100);
        assert_eq!(r.len(), 1, "and forgotten when the next one fails");
    }
}
