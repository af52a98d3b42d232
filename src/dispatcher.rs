//! Decides which task worker runs which task. Workers pull work through a
//! credit window instead of being pushed blindly, so a busy worker never hoards
//! tasks another idle worker could run, and every task handed out is tracked
//! until the worker reports it done: a worker that dies gives its tasks back,
//! a task that fails is retried with backoff, and one that keeps failing is
//! moved to the failed tasks instead of running forever.

use std::collections::VecDeque;

use crate::queue::{QueueError, QueuedTask, TaskQueue};

struct Running {
    generation: u64,
    started_ms: u64,
    task: QueuedTask,
}

#[derive(Default)]
struct Slot {
    online: bool,
    /// Incarnation of the worker process now connected for this slot; a
    /// late disconnect of an older incarnation must not touch the new one.
    generation: u64,
    inflight: Vec<Running>,
    /// Tasks sent with an explicit `$dstWorkerId`: only this worker may run them.
    targeted: VecDeque<QueuedTask>,
}

/// Why a task was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("task worker {0} does not exist")]
    NoSuchWorker(usize),
    #[error("task queue is full (task_queue_max = {0})")]
    Full(usize),
}

/// What happened to the tasks of a worker that went away.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Requeued to run again.
    pub requeued: usize,
    /// Ran `max_attempts` times and failed each time: a poison task that
    /// would otherwise crash every task worker in turn.
    pub given_up: Vec<QueuedTask>,
}

/// What the dispatcher did with a task whose run failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// It runs again, not before this unix time in ms.
    At(u64),
    /// It used up its attempts and was moved to the failed tasks.
    GaveUp(QueuedTask),
}

/// Task assignment over a [`TaskQueue`].
pub struct Dispatcher {
    queue: Box<dyn TaskQueue>,
    slots: Vec<Slot>,
    window: usize,
    next: usize,
    max_queued: usize,
    retry_delay_ms: u64,
}

/// Longest backoff between two runs of a failing task.
const MAX_RETRY_DELAY_MS: u64 = 3_600_000;

impl Dispatcher {
    /// `workers` task workers, each trusted with at most `window` unfinished
    /// tasks at once (1 = strictly idle-first dispatch). At most `max_queued`
    /// tasks wait (0 = unbounded); a failed run is retried after
    /// `retry_delay_ms`, doubling each time.
    pub fn new(
        queue: Box<dyn TaskQueue>,
        workers: usize,
        window: usize,
        max_queued: usize,
        retry_delay_ms: u64,
    ) -> Self {
        Dispatcher {
            queue,
            slots: (0..workers).map(|_| Slot::default()).collect(),
            window: window.max(1),
            next: 0,
            max_queued,
            retry_delay_ms,
        }
    }

    /// Queues a task for any worker, or only for task worker `dst`.
    pub fn submit(&mut self, task: QueuedTask, dst: Option<usize>) -> Result<(), SubmitError> {
        if let Some(i) = dst {
            if i >= self.slots.len() {
                return Err(SubmitError::NoSuchWorker(i));
            }
        }
        if self.max_queued > 0 && self.queued() >= self.max_queued {
            return Err(SubmitError::Full(self.max_queued));
        }
        match dst {
            Some(i) => self.slots[i].targeted.push_back(task),
            None => self.queue.push(task),
        }
        Ok(())
    }

    /// Incarnation `generation` of a task worker connected and may receive work.
    pub fn online(&mut self, worker: usize, generation: u64) {
        if let Some(s) = self.slots.get_mut(worker) {
            s.online = true;
            s.generation = generation;
        }
    }

    /// The worker is leaving: it gets nothing new but may still finish what
    /// it holds.
    pub fn draining(&mut self, worker: usize) {
        if let Some(s) = self.slots.get_mut(worker) {
            s.online = false;
        }
    }

    /// Incarnation `generation` is gone (it crashed, was killed or exited
    /// holding tasks). Each task it held counts a failed run: it is requeued,
    /// or given up once it has used its attempts.
    pub fn offline(&mut self, worker: usize, generation: u64, why: &str) -> Orphans {
        let mut orphans = Orphans::default();
        let Some(s) = self.slots.get_mut(worker) else {
            return orphans;
        };
        if s.generation == generation {
            s.online = false;
        }
        let (lost, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut s.inflight)
            .into_iter()
            .partition(|r| r.generation == generation);
        s.inflight = kept;
        for r in lost {
            let mut t = r.task;
            t.attempts += 1;
            if t.attempts >= t.max_attempts.max(1) {
                self.queue.fail(t.clone(), why);
                orphans.given_up.push(t);
            } else {
                t.not_before = 0;
                self.queue.requeue(t);
                orphans.requeued += 1;
            }
        }
        orphans
    }

    /// The task a worker is running, to route its results.
    pub fn running(&self, worker: usize, id: u64) -> Option<&QueuedTask> {
        self.slots
            .get(worker)?
            .inflight
            .iter()
            .map(|r| &r.task)
            .find(|t| t.id == id)
    }

    fn take_running(&mut self, worker: usize, id: u64) -> Option<QueuedTask> {
        let slot = self.slots.get_mut(worker)?;
        let pos = slot.inflight.iter().position(|r| r.task.id == id)?;
        Some(slot.inflight.swap_remove(pos).task)
    }

    /// The worker finished task `id`; frees its credit.
    pub fn complete(&mut self, worker: usize, id: u64) -> Option<QueuedTask> {
        let task = self.take_running(worker, id)?;
        self.queue.ack(id);
        Some(task)
    }

    /// The worker's run of task `id` failed (onTask threw): retry it later
    /// with exponential backoff, or give up after its last attempt.
    pub fn failed(&mut self, worker: usize, id: u64, error: &str, now_ms: u64) -> Option<Retry> {
        let mut task = self.take_running(worker, id)?;
        task.attempts += 1;
        if task.attempts >= task.max_attempts.max(1) {
            self.queue.fail(task.clone(), error);
            return Some(Retry::GaveUp(task));
        }
        let factor = 1u64 << (task.attempts - 1).min(20);
        let at = now_ms
            + self
                .retry_delay_ms
                .saturating_mul(factor)
                .min(MAX_RETRY_DELAY_MS);
        task.not_before = at;
        self.queue.requeue(task);
        Some(Retry::At(at))
    }

    /// Workers running a task that started before `deadline_ms` (task_timeout).
    pub fn overdue(&self, deadline_ms: u64) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.inflight.iter().any(|r| r.started_ms < deadline_ms))
            .map(|(i, _)| i)
            .collect()
    }

    /// When the oldest running task started, to schedule the timeout check.
    pub fn oldest_start(&self) -> Option<u64> {
        self.slots
            .iter()
            .flat_map(|s| s.inflight.iter().map(|r| r.started_ms))
            .min()
    }

    /// Hands runnable tasks to workers with free credit, round-robin among
    /// them, calling `send(worker, task)` for each assignment.
    pub fn assign(&mut self, now_ms: u64, mut send: impl FnMut(usize, &QueuedTask)) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        loop {
            let mut progressed = false;
            let start = self.next;
            for k in 0..n {
                let i = (start + k) % n;
                let slot = &mut self.slots[i];
                if !slot.online || slot.inflight.len() >= self.window {
                    continue;
                }
                let task = match slot.targeted.pop_front() {
                    Some(t) => t,
                    None => match self.queue.take(now_ms) {
                        Some(t) => t,
                        None => continue,
                    },
                };
                send(i, &task);
                slot.inflight.push(Running {
                    generation: slot.generation,
                    started_ms: now_ms,
                    task,
                });
                self.next = (i + 1) % n;
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    /// When a delayed task becomes runnable.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.next_due()
    }

    /// Makes queue changes durable (group commit).
    pub fn commit(&mut self) -> Result<(), QueueError> {
        self.queue.commit()
    }

    /// Tasks accepted and not yet handed to a worker.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.slots.iter().map(|s| s.targeted.len()).sum::<usize>()
    }

    /// Tasks handed to workers and not yet done.
    pub fn running_count(&self) -> usize {
        self.slots.iter().map(|s| s.inflight.len()).sum()
    }

    /// Whether task worker `worker` holds an unfinished task.
    pub fn is_busy(&self, worker: usize) -> bool {
        self.slots
            .get(worker)
            .is_some_and(|s| !s.inflight.is_empty())
    }

    /// Online task workers running nothing.
    pub fn idle_workers(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.online && s.inflight.is_empty())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{Encoding, Payload};
    use crate::queue::MemoryQueue;
    use bytes::Bytes;

    fn task(id: u64) -> QueuedTask {
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
                data: Bytes::new(),
            },
        }
    }

    fn dispatcher(workers: usize, window: usize) -> Dispatcher {
        Dispatcher::new(Box::new(MemoryQueue::default()), workers, window, 0, 100)
    }

    fn assign(d: &mut Dispatcher) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        d.assign(0, |w, t| out.push((w, t.id)));
        out
    }

    #[test]
    fn idle_first_round_robin_with_window_one() {
        let mut d = dispatcher(3, 1);
        for w in 0..3 {
            d.online(w, 1);
        }
        for i in 0..5 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(assign(&mut d), vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(d.queued(), 2);
        assert_eq!(d.idle_workers(), 0);
        assert!(d.complete(1, 1).is_some());
        assert_eq!(assign(&mut d), vec![(1, 3)]);
        assert!(d.complete(1, 3).is_some());
        assert_eq!(assign(&mut d), vec![(1, 4)]);
        assert_eq!(d.queued(), 0);
        assert_eq!(d.running_count(), 3);
    }

    #[test]
    fn tasks_wait_for_workers_to_come_online() {
        let mut d = dispatcher(2, 1);
        d.submit(task(1), None).unwrap();
        assert!(assign(&mut d).is_empty());
        d.online(1, 1);
        assert_eq!(assign(&mut d), vec![(1, 1)]);
    }

    #[test]
    fn dead_worker_gives_tasks_back() {
        let mut d = dispatcher(2, 2);
        d.online(0, 1);
        for i in 0..4 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(assign(&mut d), vec![(0, 0), (0, 1)]);
        assert_eq!(d.offline(0, 1, "crash").requeued, 2);
        d.online(1, 1);
        assert_eq!(assign(&mut d), vec![(1, 0), (1, 1)]);
        assert_eq!(d.queued(), 2);
    }

    #[test]
    fn late_disconnect_of_an_old_incarnation_spares_the_new_one() {
        let mut d = dispatcher(1, 2);
        d.online(0, 1);
        d.submit(task(1), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 1)]);
        d.online(0, 2);
        d.submit(task(2), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 2)]);
        assert_eq!(d.offline(0, 1, "crash").requeued, 1);
        assert_eq!(d.running(0, 2).map(|t| t.id), Some(2));
        assert_eq!(assign(&mut d), vec![(0, 1)]);
    }

    #[test]
    fn a_task_that_kills_every_worker_is_given_up_after_max_attempts() {
        let mut d = dispatcher(1, 1);
        d.online(0, 1);
        d.submit(
            QueuedTask {
                max_attempts: 2,
                ..task(5)
            },
            None,
        )
        .unwrap();
        assert_eq!(assign(&mut d), vec![(0, 5)]);
        assert_eq!(d.offline(0, 1, "crash").requeued, 1);
        d.online(0, 2);
        assert_eq!(assign(&mut d), vec![(0, 5)]);
        let orphans = d.offline(0, 2, "crash");
        assert_eq!(orphans.requeued, 0);
        let given: Vec<_> = orphans
            .given_up
            .iter()
            .map(|t| (t.id, t.attempts))
            .collect();
        assert_eq!(given, vec![(5, 2)]);
        d.online(0, 3);
        assert!(assign(&mut d).is_empty());
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn failed_runs_back_off_exponentially_then_give_up() {
        let mut d = dispatcher(1, 1);
        d.online(0, 1);
        d.submit(task(7), None).unwrap();
        d.assign(1_000, |_, _| {});
        assert_eq!(d.failed(0, 7, "boom", 1_000), Some(Retry::At(1_100)));
        let mut got = Vec::new();
        d.assign(1_099, |w, t| got.push((w, t.id)));
        assert!(got.is_empty(), "not before its backoff");
        assert_eq!(d.next_due(), Some(1_100));
        d.assign(1_100, |w, t| got.push((w, t.id)));
        assert_eq!(got, vec![(0, 7)]);
        assert_eq!(d.failed(0, 7, "boom", 2_000), Some(Retry::At(2_200)));
        d.assign(2_200, |_, _| {});
        match d.failed(0, 7, "boom", 3_000) {
            Some(Retry::GaveUp(t)) => assert_eq!((t.id, t.attempts), (7, 3)),
            other => panic!("expected give-up, got {other:?}"),
        }
        assert_eq!(d.queued() + d.running_count(), 0);
    }

    #[test]
    fn queue_limit_and_bad_targets_are_refused() {
        let mut d = Dispatcher::new(Box::new(MemoryQueue::default()), 2, 1, 2, 100);
        assert_eq!(
            d.submit(task(1), Some(2)),
            Err(SubmitError::NoSuchWorker(2))
        );
        d.submit(task(1), None).unwrap();
        d.submit(task(2), Some(1)).unwrap();
        assert_eq!(d.submit(task(3), None), Err(SubmitError::Full(2)));
        d.online(1, 1);
        assert_eq!(assign(&mut d), vec![(1, 2)]);
        d.submit(task(3), None).unwrap();
    }

    #[test]
    fn timeouts_find_the_workers_running_old_tasks() {
        let mut d = dispatcher(2, 1);
        d.online(0, 1);
        d.online(1, 1);
        d.submit(task(1), None).unwrap();
        d.assign(100, |_, _| {});
        d.submit(task(2), None).unwrap();
        d.assign(500, |_, _| {});
        assert_eq!(d.oldest_start(), Some(100));
        assert_eq!(d.overdue(200), vec![0]);
        assert_eq!(d.overdue(600), vec![0, 1]);
    }

    #[test]
    fn draining_worker_keeps_its_tasks_but_gets_no_more() {
        let mut d = dispatcher(1, 1);
        d.online(0, 1);
        d.submit(task(1), None).unwrap();
        d.submit(task(2), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 1)]);
        d.draining(0);
        assert_eq!(d.running(0, 1).map(|t| t.id), Some(1));
        assert!(d.complete(0, 1).is_some());
        assert!(assign(&mut d).is_empty());
        assert_eq!(d.queued(), 1);
    }
}
