//! The embedded queue with durability: the in-memory queue decides what runs
//! next, and every change is mirrored into the on-disk store, committed once
//! per event-loop turn (group commit) before submissions are acknowledged.
//! After a crash, the store gives back every task that had not finished.

use std::path::Path;

use crate::failed::{FailedTask, Which};
use crate::queue::{now_ms, FailedStore, MemoryQueue, QueueError, QueuedTask, TaskQueue};
use crate::store::{Batch, StoreError, TaskStore};

/// [`MemoryQueue`] backed by a [`TaskStore`].
pub struct DurableQueue {
    mem: MemoryQueue,
    store: TaskStore,
    batch: Batch,
}

/// What opening the store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Unfinished tasks queued again.
    pub tasks: usize,
    /// Failed tasks kept in the store.
    pub failed: u64,
    /// First id for new tasks.
    pub next_id: u64,
}

impl DurableQueue {
    /// Opens (or creates) the store in `dir` and queues every task that was
    /// accepted but not finished when the previous server stopped or died.
    pub fn open(dir: &Path) -> Result<(DurableQueue, Recovery), StoreError> {
        let (store, recovered) = TaskStore::open(dir)?;
        let mut mem = MemoryQueue::default();
        let tasks = recovered.tasks.len();
        for task in recovered.tasks {
            mem.push(task);
        }
        let recovery = Recovery {
            tasks,
            failed: recovered.failed,
            next_id: recovered.next_id,
        };
        Ok((
            DurableQueue {
                mem,
                store,
                batch: Batch::default(),
            },
            recovery,
        ))
    }
}

impl TaskQueue for DurableQueue {
    fn push(&mut self, task: QueuedTask) {
        self.batch.put(&task);
        self.batch.reserve_ids(task.id + 1);
        self.mem.push(task);
    }

    fn take(&mut self, now_ms: u64) -> Option<QueuedTask> {
        self.mem.take(now_ms)
    }

    fn next_due(&self) -> Option<u64> {
        self.mem.next_due()
    }

    fn ready(&self, now_ms: u64) -> bool {
        self.mem.ready(now_ms)
    }

    fn ack(&mut self, id: u64) {
        self.batch.delete(id);
    }

    fn requeue(&mut self, task: QueuedTask) {
        self.batch.put(&task);
        self.mem.requeue(task);
    }

    fn fail(&mut self, task: QueuedTask, error: &str) {
        self.batch.fail(&task, error, now_ms());
    }

    fn hold(&mut self, task: &QueuedTask) {
        self.batch.put(task);
        self.batch.reserve_ids(task.id + 1);
    }

    fn len(&self) -> usize {
        self.mem.len()
    }

    fn delayed(&self) -> usize {
        self.mem.delayed()
    }

    fn commit(&mut self) -> Result<(), QueueError> {
        self.store
            .commit(&mut self.batch)
            .map_err(|e| QueueError::Store(e.to_string()))
    }

    fn failures(&mut self) -> Option<&mut dyn FailedStore> {
        Some(self)
    }
}

/// The store's failed table. Each operation first commits what this turn
/// wrote, so a task given up a moment ago is already there.
impl FailedStore for DurableQueue {
    fn list(&mut self, offset: usize, limit: usize) -> Result<Vec<FailedTask>, QueueError> {
        self.commit()?;
        let records = self
            .store
            .failed(offset.saturating_add(limit))
            .map_err(|e| QueueError::Store(e.to_string()))?;
        Ok(records
            .iter()
            .skip(offset)
            .map(|(task, error, at)| FailedTask::of(task, error, *at))
            .collect())
    }

    fn get(&mut self, id: u64) -> Result<Option<FailedTask>, QueueError> {
        self.commit()?;
        let record = self
            .store
            .failed_one(id)
            .map_err(|e| QueueError::Store(e.to_string()))?;
        Ok(record.map(|(task, error, at)| FailedTask::of(&task, &error, at)))
    }

    fn retry(&mut self, which: &Which) -> Result<usize, QueueError> {
        self.commit()?;
        let tasks = self
            .store
            .retry_failed(which)
            .map_err(|e| QueueError::Store(e.to_string()))?;
        let n = tasks.len();
        for task in tasks {
            self.mem.push(task);
        }
        Ok(n)
    }

    fn purge(&mut self, which: &Which) -> Result<usize, QueueError> {
        self.commit()?;
        let ids = match which {
            Which::All => None,
            Which::Ids(ids) => Some(&ids[..]),
        };
        self.store
            .purge_failed(ids)
            .map_err(|e| QueueError::Store(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Encoding, Payload};
    use bytes::Bytes;

    fn task(id: u64) -> QueuedTask {
        QueuedTask {
            id,
            src_worker: -1,
            task_id: id as i64,
            payload: Payload {
                encoding: Encoding::Raw,
                data: Bytes::from(format!("job {id}")),
            },
            attempts: 0,
            max_attempts: 3,
            priority: 0,
            not_before: 0,
            queued_ms: 0,
        }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("taskq-dq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn unfinished_tasks_survive_a_restart_and_finished_ones_do_not() {
        let d = dir("restart");
        {
            let (mut q, rec) = DurableQueue::open(&d).unwrap();
            assert_eq!(
                rec,
                Recovery {
                    tasks: 0,
                    failed: 0,
                    next_id: 0
                }
            );
            for i in 0..5 {
                q.push(task(i));
            }
            q.commit().unwrap();
            let t0 = q.take(0).unwrap();
            let t1 = q.take(0).unwrap();
            q.ack(t0.id);
            q.fail(t1, "boom");
            let mut t2 = q.take(0).unwrap();
            t2.attempts = 1;
            q.requeue(t2);
            q.commit().unwrap();
            q.push(task(9));
        }
        let (mut q, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(rec.tasks, 3, "2, 3 and 4; 9 was never committed");
        assert_eq!(rec.failed, 1);
        assert!(rec.next_id >= 5);
        let ids: Vec<(u64, u32)> = std::iter::from_fn(|| q.take(0))
            .map(|t| (t.id, t.attempts))
            .collect();
        assert_eq!(ids, vec![(2, 1), (3, 0), (4, 0)]);
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_task_for_one_task_worker_is_durable_until_it_is_done() {
        let d = dir("held");
        {
            let (q, _) = DurableQueue::open(&d).unwrap();
            let mut disp = crate::dispatcher::Dispatcher::new(Box::new(q), 2, 1, 0, 100);
            disp.submit(task(7), Some(1)).unwrap();
            disp.submit(task(8), Some(1)).unwrap();
            disp.commit().unwrap();
            disp.online(1, 1, None);
            let mut sent = Vec::new();
            disp.assign(0, |w, t, _| sent.push((w, t.id)));
            assert_eq!(sent, vec![(1, 7)]);
            assert!(disp.complete(1, 7, 5, 0).is_some());
            disp.commit().unwrap();
        }
        let (_, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(rec.tasks, 1, "8 is still to run; 7 is done");
        assert!(rec.next_id >= 9);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_tasks_are_listed_retried_durably_and_purged() {
        let d = dir("failed");
        {
            let (mut q, _) = DurableQueue::open(&d).unwrap();
            for i in 1..=3 {
                q.push(task(i));
            }
            q.commit().unwrap();
            for _ in 1..=3 {
                let mut t = q.take(0).unwrap();
                t.attempts = 3;
                t.src_worker = 4;
                q.fail(t, "boom");
            }
            let store = q.failures().unwrap();
            let listed: Vec<u64> = store.list(0, 10).unwrap().iter().map(|f| f.id).collect();
            assert_eq!(listed.len(), 3, "given up this turn, listed at once");
            assert_eq!(store.list(1, 1).unwrap().len(), 1);
            let first = &store.list(0, 10).unwrap()[2];
            assert_eq!((first.error.as_str(), first.attempts), ("boom", 3));
            let one = store.get(first.id).unwrap().unwrap();
            assert_eq!(&one, first, "one row, as listed");
            assert_eq!(store.get(99).unwrap(), None);
            assert_eq!(store.retry(&Which::Ids(vec![2, 99])).unwrap(), 1);
            assert_eq!(store.purge(&Which::Ids(vec![3])).unwrap(), 1);
            let back = q.take(0).unwrap();
            assert_eq!((back.id, back.attempts, back.src_worker), (2, 0, -1));
        }
        let (mut q, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(
            (rec.tasks, rec.failed),
            (1, 1),
            "the retried task is queued on disk"
        );
        assert_eq!(q.take(0).unwrap().id, 2);
        assert_eq!(q.failures().unwrap().purge(&Which::All).unwrap(), 1);
        assert!(q.failures().unwrap().list(0, 10).unwrap().is_empty());
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
