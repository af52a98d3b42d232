//! The task queue behind one interface, so the embedded in-memory queue, a
//! durable on-disk store and a distributed engine can be swapped without the
//! dispatcher noticing. The shape (take, then ack or requeue) is the one
//! durable queues and Redis Streams consumer groups need.

use std::collections::VecDeque;

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

/// Storage for tasks waiting for a task worker.
pub trait TaskQueue {
    /// Accepts a new task at the back.
    fn push(&mut self, task: QueuedTask);
    /// Hands out the oldest task; the caller owns it until `ack` or `requeue`.
    fn take(&mut self) -> Option<QueuedTask>;
    /// The task ran to completion and may be forgotten.
    fn ack(&mut self, id: u64);
    /// A task that was taken but not completed goes back to the front, so a
    /// crashed worker's task runs next rather than last.
    fn requeue(&mut self, task: QueuedTask);
    /// Tasks waiting (not taken).
    fn len(&self) -> usize;
    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The embedded default: a FIFO in the master's memory. Fast, and lost on a
/// crash of the master, which the README states plainly.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    ready: VecDeque<QueuedTask>,
}

impl TaskQueue for MemoryQueue {
    fn push(&mut self, task: QueuedTask) {
        self.ready.push_back(task);
    }

    fn take(&mut self) -> Option<QueuedTask> {
        self.ready.pop_front()
    }

    fn ack(&mut self, _id: u64) {}

    fn requeue(&mut self, task: QueuedTask) {
        self.ready.push_front(task);
    }

    fn len(&self) -> usize {
        self.ready.len()
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
    fn fifo_with_requeue_to_front() {
        let mut q = MemoryQueue::default();
        for i in 0..3 {
            q.push(task(i));
        }
        let first = q.take().unwrap();
        assert_eq!(first.id, 0);
        q.requeue(first);
        assert_eq!(q.len(), 3);
        let order: Vec<u64> = std::iter::from_fn(|| q.take()).map(|t| t.id).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert!(q.is_empty());
    }
}
