//! The task queue behind one interface, so the embedded in-memory queue, a
//! durable on-disk store and a distributed engine can be swapped without the
//! dispatcher noticing. The shape (take, then ack or requeue) is the one
//! durable queues and Redis Streams consumer groups need.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::ipc::Payload;

/// A task as the master keeps it until a task worker reports it done. It is
/// also the record a durable store keeps, hence serde.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueuedTask {
    /// Master-wide key, unique for the life of the queue (also across
    /// restarts with a durable store).
    pub id: u64,
    /// Worker that dispatched it, where its result goes; -1 for tasks
    /// submitted by a client with `TaskClient::task()`.
    pub src_worker: i32,
    /// The id `task()` returned in the source worker (the master id for
    /// client-submitted tasks).
    pub task_id: i64,
    pub payload: Payload,
    /// Runs that ended in failure (exception, crash, timeout).
    pub attempts: u32,
    /// Runs allowed before the task is moved to the failed tasks.
    pub max_attempts: u32,
    /// Higher runs first; equal priorities run in submission order.
    pub priority: i32,
    /// Unix time in ms before which the task must not start (delay, retry
    /// backoff); 0 = at once.
    pub not_before: u64,
}

/// Unix time in ms: the clock of task delays, retry backoffs, timeouts and
/// failure records (`QueuedTask::not_before` is in these units).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a queue refused or could not keep a task.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("task queue is full (task_queue_max = {0})")]
    Full(usize),
    #[error("task store: {0}")]
    Store(String),
}

/// Storage for tasks waiting for a task worker: the embedded in-memory
/// queue, the same with a durable store underneath, or a distributed engine.
pub trait TaskQueue {
    /// Accepts a new task (it may be delayed by `not_before`).
    fn push(&mut self, task: QueuedTask);
    /// Hands out the next runnable task at `now_ms`: highest priority first,
    /// then oldest; the caller owns it until `ack`, `requeue` or `fail`.
    fn take(&mut self, now_ms: u64) -> Option<QueuedTask>;
    /// When the earliest delayed task becomes runnable, to wake up for it.
    fn next_due(&self) -> Option<u64>;
    /// The task ran to completion and may be forgotten.
    fn ack(&mut self, id: u64);
    /// A taken task goes back (after a crash, or to retry later).
    fn requeue(&mut self, task: QueuedTask);
    /// The task used up its attempts: it leaves the queue for the failed tasks.
    fn fail(&mut self, task: QueuedTask, error: &str);
    /// Tasks waiting (runnable or delayed), not taken.
    fn len(&self) -> usize;
    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes every change since the last commit durable (group commit); the
    /// master acknowledges submissions only after this returns Ok.
    fn commit(&mut self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// The embedded default: ordered maps in the master's memory. Fast, and
/// lost if the master itself dies, which the README states plainly.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    ready: BTreeMap<(Reverse<i32>, u64), QueuedTask>,
    delayed: BTreeMap<(u64, u64), QueuedTask>,
    failed: u64,
}

impl MemoryQueue {
    fn insert(&mut self, task: QueuedTask) {
        if task.not_before > 0 {
            self.delayed.insert((task.not_before, task.id), task);
        } else {
            self.ready.insert((Reverse(task.priority), task.id), task);
        }
    }

    /// Tasks given up on since start (kept only as a count in memory).
    pub fn failed_count(&self) -> u64 {
        self.failed
    }
}

impl TaskQueue for MemoryQueue {
    fn push(&mut self, task: QueuedTask) {
        self.insert(task);
    }

    fn take(&mut self, now_ms: u64) -> Option<QueuedTask> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let task = entry.remove();
            self.ready.insert((Reverse(task.priority), task.id), task);
        }
        self.ready.pop_first().map(|(_, t)| t)
    }

    fn next_due(&self) -> Option<u64> {
        self.delayed.first_key_value().map(|((at, _), _)| *at)
    }

    fn ack(&mut self, _id: u64) {}

    fn requeue(&mut self, task: QueuedTask) {
        self.insert(task);
    }

    fn fail(&mut self, _task: QueuedTask, _error: &str) {
        self.failed += 1;
    }

    fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::Encoding;
    use bytes::Bytes;

    pub(crate) fn task(id: u64) -> QueuedTask {
        QueuedTask {
            id,
            src_worker: 0,
            task_id: id as i64,
            attempts: 0,
            max_attempts: 3,
            priority: 0,
            not_before: 0,
            payload: Payload {
                encoding: Encoding::Raw,
                data: Bytes::from(format!("t{id}")),
            },
        }
    }

    #[test]
    fn fifo_and_a_requeued_task_runs_before_newer_ones() {
        let mut q = MemoryQueue::default();
        for i in 0..3 {
            q.push(task(i));
        }
        let first = q.take(0).unwrap();
        assert_eq!(first.id, 0);
        q.requeue(first);
        assert_eq!(q.len(), 3);
        let order: Vec<u64> = std::iter::from_fn(|| q.take(0)).map(|t| t.id).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn higher_priority_first_then_submission_order() {
        let mut q = MemoryQueue::default();
        for (id, prio) in [(1, 0), (2, 5), (3, 0), (4, 5), (5, -1)] {
            q.push(QueuedTask {
                priority: prio,
                ..task(id)
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.take(0)).map(|t| t.id).collect();
        assert_eq!(order, vec![2, 4, 1, 3, 5]);
    }

    #[test]
    fn delayed_tasks_wait_for_their_time() {
        let mut q = MemoryQueue::default();
        q.push(QueuedTask {
            not_before: 1000,
            ..task(1)
        });
        q.push(task(2));
        assert_eq!(q.next_due(), Some(1000));
        assert_eq!(q.take(999).map(|t| t.id), Some(2));
        assert_eq!(q.take(999), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(1000).map(|t| t.id), Some(1));
        assert_eq!(q.next_due(), None);
    }
}
