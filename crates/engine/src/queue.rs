//! The task queue behind one interface, so the embedded in-memory queue, a
//! durable on-disk store and a distributed engine can be swapped without the
//! dispatcher noticing. The shape (take, then ack or requeue) is the one
//! durable queues and Redis Streams consumer groups need.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use bytes::Bytes;

use crate::failed::{FailedTask, RecentFailures, Which};
use crate::packed_fifo::PackedFifo;
use crate::payload::{Encoding, Payload};

/// Payloads up to this size are copied when queued. A payload decoded from
/// a socket is a slice of a 64 KiB read buffer, and a slice keeps the whole
/// buffer allocated for as long as the task waits; a private copy costs one
/// small allocation.
pub const COPY_PAYLOAD_MAX: usize = 16 * 1024;

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
    /// Unix time in ms when it last entered the queue (submitted, or given
    /// back by a worker that went away), for the queue-wait histogram; 0 =
    /// unknown (recovered from a store, taken from Redis). Not stored: a
    /// wait across a restart would measure the downtime.
    #[serde(skip)]
    pub queued_ms: u64,
}

/// A stored [`QueuedTask`] read in place: its payload borrows the page it
/// was read from, so a backlog read back from disk is copied once, into the
/// queue's packed chunks ([`PackedFifo`]), not into an allocation of its
/// own first. The same fields in the same order as `QueuedTask`'s serde
/// form, which is what the store keeps.
#[derive(Debug, serde::Deserialize)]
pub struct TaskRef<'a> {
    pub id: u64,
    pub src_worker: i32,
    pub task_id: i64,
    #[serde(borrow)]
    pub payload: PayloadRef<'a>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub not_before: u64,
}

/// The payload of a [`TaskRef`].
#[derive(Debug, serde::Deserialize)]
pub struct PayloadRef<'a> {
    pub encoding: Encoding,
    pub data: &'a [u8],
}

impl TaskRef<'_> {
    /// The task as the queue keeps it whole.
    pub fn to_owned(&self) -> QueuedTask {
        QueuedTask {
            id: self.id,
            src_worker: self.src_worker,
            task_id: self.task_id,
            payload: Payload {
                encoding: self.payload.encoding,
                data: Bytes::copy_from_slice(self.payload.data),
            },
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            priority: self.priority,
            not_before: self.not_before,
            queued_ms: 0,
        }
    }
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
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Whether `take(now_ms)` would hand out a task.
    fn ready(&self, now_ms: u64) -> bool;
    /// The task ran to completion and may be forgotten.
    fn ack(&mut self, id: u64);
    /// A taken task goes back (after a crash, or to retry later).
    fn requeue(&mut self, task: QueuedTask);
    /// The task used up its attempts: it leaves the queue for the failed tasks.
    fn fail(&mut self, task: QueuedTask, error: &str);
    /// Records a task that waits outside the queue, for one task worker
    /// only (`$dstWorkerId`): `take` never hands it out, yet a durable queue
    /// must bring it back after a crash like any other, and `ack` ends it.
    fn hold(&mut self, _task: &QueuedTask) {}
    /// Tasks waiting (runnable or delayed), not taken.
    fn len(&self) -> usize;
    /// Of those, the tasks not runnable yet (delay or retry backoff).
    fn delayed(&self) -> usize;
    /// Whether nothing is waiting.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes every change so far durable before it returns (the stop, and
    /// operations that read what they wrote); the commit is also reported
    /// by [`TaskQueue::settled`].
    fn commit(&mut self) -> Result<(), QueueError> {
        Ok(())
    }
    /// The group commit at the end of an event-loop turn: makes every
    /// change so far durable, or starts to without waiting for it (a
    /// durable store hands a commit several clients wait for to its writer
    /// thread, [`crate::committer`], and calls the
    /// [`TaskQueue::wake_on_commit`] function when it is done). `waiting`:
    /// how many clients wait for it (counted up to 2).
    fn commit_turn(&mut self, _waiting: usize) {}
    /// Whether a commit waits for its sync: the committer then comes back
    /// within [`crate::store::SYNC_WITHIN`] even if nothing else happens.
    fn unsynced(&self) -> bool {
        false
    }
    /// The commit a change made now belongs to, to match the master's
    /// acknowledgements against [`TaskQueue::settled`].
    fn generation(&self) -> u64 {
        0
    }
    /// The commits that ended since the last call, oldest first: each one
    /// covers the changes of its generation and of every earlier one. A
    /// queue with nothing to make durable has always settled everything.
    fn settled(&mut self) -> Vec<(u64, Result<(), QueueError>)> {
        vec![(self.generation(), Ok(()))]
    }
    /// What a commit finished on another thread calls, to wake the loop
    /// that reports it.
    fn wake_on_commit(&mut self, _wake: crate::committer::Wake) {}
    /// Whether tasks came back from disk since the last call (a read the
    /// store's writer made, [`crate::paging`]): the master hands them out
    /// then, as no completion may come to do it.
    fn refilled(&mut self) -> bool {
        false
    }
    /// The failed tasks this queue keeps, for operators; None where they
    /// live elsewhere (Redis, reached by the master's link).
    fn failures(&mut self) -> Option<&mut dyn FailedStore> {
        None
    }
}

/// Given-up tasks a local queue keeps: listed, put back into the queue
/// (attempts reset, see [`crate::failed::again`]) or forgotten.
pub trait FailedStore {
    /// Newest first, `limit` from `offset`.
    fn list(&mut self, offset: usize, limit: usize) -> Result<Vec<FailedTask>, QueueError>;
    /// The one with id `id`, without listing them all.
    fn get(&mut self, id: u64) -> Result<Option<FailedTask>, QueueError>;
    /// Moves the selected ones back into the queue; returns how many.
    fn retry(&mut self, which: &Which) -> Result<usize, QueueError>;
    /// Forgets the selected ones; returns how many.
    fn purge(&mut self, which: &Which) -> Result<usize, QueueError>;
}

/// The embedded default, in the master's memory: one FIFO per priority,
/// plus the delayed tasks ordered by due time. Fast, and lost if the master
/// itself dies, which the README states plainly.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    /// Runnable tasks by priority (highest first), each level in id order.
    /// A level is dropped when it empties, so a drained queue holds no
    /// memory.
    ready: BTreeMap<Reverse<i32>, PackedFifo>,
    ready_len: usize,
    delayed: BTreeMap<(u64, u64), QueuedTask>,
    /// The most recent given-up tasks, for operators.
    failed: RecentFailures,
}

impl MemoryQueue {
    /// Runnable tasks of one priority, for deciding when to read more of
    /// that level back from disk.
    pub fn ready_at(&self, priority: i32) -> usize {
        self.ready
            .get(&Reverse(priority))
            .map_or(0, PackedFifo::len)
    }

    /// The priority and id of the task [`TaskQueue::take`] would hand out
    /// at `now_ms`, moving the delayed tasks due by then to their levels.
    pub fn next_up(&mut self, now_ms: u64) -> Option<(i32, u64)> {
        self.promote_due(now_ms);
        let (&Reverse(priority), level) = self.ready.first_key_value()?;
        Some((priority, level.first_id()?))
    }

    /// Delayed tasks due at `now_ms` join their levels.
    fn promote_due(&mut self, now_ms: u64) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let task = entry.remove();
            self.insert_ready(task);
        }
    }

    /// Queues a task read back from a store (see [`TaskRef`]).
    pub fn push_stored(&mut self, task: &TaskRef<'_>) {
        if task.not_before > 0 {
            return self.insert(task.to_owned());
        }
        self.ready
            .entry(Reverse(task.priority))
            .or_default()
            .push_stored(task);
        self.ready_len += 1;
    }

    fn insert(&mut self, mut task: QueuedTask) {
        if task.not_before > 0 {
            own_payload(&mut task.payload);
            self.delayed.insert((task.not_before, task.id), task);
        } else {
            self.insert_ready(task);
        }
    }

    /// A requeued or formerly delayed task goes back to its place by id
    /// (see [`PackedFifo`]).
    fn insert_ready(&mut self, task: QueuedTask) {
        self.ready
            .entry(Reverse(task.priority))
            .or_default()
            .push(task);
        self.ready_len += 1;
    }
}

/// Gives `payload` its own allocation when it is small (see
/// [`COPY_PAYLOAD_MAX`]), for a task kept whole.
pub(crate) fn own_payload(payload: &mut Payload) {
    if !payload.data.is_empty() && payload.data.len() <= COPY_PAYLOAD_MAX {
        payload.data = Bytes::copy_from_slice(&payload.data);
    }
}

impl TaskQueue for MemoryQueue {
    fn push(&mut self, task: QueuedTask) {
        self.insert(task);
    }

    fn take(&mut self, now_ms: u64) -> Option<QueuedTask> {
        self.promote_due(now_ms);
        let mut entry = self.ready.first_entry()?;
        let Reverse(priority) = *entry.key();
        let task = entry.get_mut().pop(priority);
        if entry.get().is_empty() {
            entry.remove();
        }
        self.ready_len -= task.is_some() as usize;
        task
    }

    fn next_due(&self) -> Option<u64> {
        self.delayed.first_key_value().map(|((at, _), _)| *at)
    }

    fn ready(&self, now_ms: u64) -> bool {
        self.ready_len > 0 || self.next_due().is_some_and(|at| at <= now_ms)
    }

    fn ack(&mut self, _id: u64) {}

    fn requeue(&mut self, task: QueuedTask) {
        self.insert(task);
    }

    /// Nothing is kept: without a store a task given up on is only counted,
    /// by the hub (`task_failed_count` in stats()).
    fn fail(&mut self, task: QueuedTask, error: &str) {
        self.failed.push(task, error, now_ms());
    }

    fn len(&self) -> usize {
        self.ready_len + self.delayed.len()
    }

    fn delayed(&self) -> usize {
        self.delayed.len()
    }

    fn failures(&mut self) -> Option<&mut dyn FailedStore> {
        Some(self)
    }
}

impl FailedStore for MemoryQueue {
    fn list(&mut self, offset: usize, limit: usize) -> Result<Vec<FailedTask>, QueueError> {
        Ok(self.failed.list(offset, limit))
    }

    fn get(&mut self, id: u64) -> Result<Option<FailedTask>, QueueError> {
        Ok(self.failed.get(id))
    }

    fn retry(&mut self, which: &Which) -> Result<usize, QueueError> {
        let tasks = self.failed.take(which);
        let n = tasks.len();
        for task in tasks {
            self.push(task);
        }
        Ok(n)
    }

    fn purge(&mut self, which: &Which) -> Result<usize, QueueError> {
        Ok(self.failed.purge(which))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::payload::Encoding;
    use bytes::Bytes;

    /// A ready task whose payload names it.
    pub(crate) fn task(id: u64) -> QueuedTask {
        QueuedTask {
            id,
            src_worker: 0,
            task_id: id as i64,
            attempts: 0,
            max_attempts: 3,
            priority: 0,
            not_before: 0,
            queued_ms: 0,
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
            queued_ms: 0,
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

    #[test]
    fn requeued_tasks_go_back_to_their_place_in_any_order() {
        let mut q = MemoryQueue::default();
        for i in 0..5 {
            q.push(task(i));
        }
        let taken: Vec<QueuedTask> = (0..3).map(|_| q.take(0).unwrap()).collect();
        for t in taken.into_iter().rev() {
            q.requeue(t);
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.take(0)).map(|t| t.id).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_delayed_task_that_became_due_runs_before_newer_ones_of_its_priority() {
        let mut q = MemoryQueue::default();
        q.push(QueuedTask {
            not_before: 50,
            queued_ms: 0,
            ..task(1)
        });
        q.push(task(2));
        q.push(task(3));
        q.push(QueuedTask {
            priority: 1,
            ..task(4)
        });
        let order: Vec<u64> = std::iter::from_fn(|| q.take(100)).map(|t| t.id).collect();
        assert_eq!(order, vec![4, 1, 2, 3]);
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let mut q = MemoryQueue::default();
        for i in 0..100_000 {
            q.push(task(i));
        }
        for _ in 0..99_000 {
            q.take(0).unwrap();
        }
        let kept = q.ready.values().map(PackedFifo::chunk_bytes).sum::<usize>();
        assert!(kept <= 128 * 1024, "{kept} bytes kept for 1000 tasks");
        assert_eq!(q.len(), 1000);
        while q.take(0).is_some() {}
        assert!(q.ready.is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn a_small_payload_is_copied_out_of_the_buffer_it_was_read_into() {
        let buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let range = buffer.as_ptr_range();
        let mut q = MemoryQueue::default();
        q.push(QueuedTask {
            payload: Payload {
                encoding: Encoding::Raw,
                data: buffer.slice(100..400),
            },
            ..task(1)
        });
        q.push(QueuedTask {
            payload: Payload {
                encoding: Encoding::Raw,
                data: buffer.slice(0..COPY_PAYLOAD_MAX + 1),
            },
            ..task(2)
        });
        let small = q.take(0).unwrap().payload.data;
        assert_eq!(small, buffer.slice(100..400));
        assert!(!range.contains(&small.as_ptr()));
        let large = q.take(0).unwrap().payload.data;
        assert!(
            range.contains(&large.as_ptr()),
            "large payloads are not copied"
        );
    }
}
