//! Decides which task worker runs which task. Workers pull work through a
//! credit window instead of being pushed blindly, so a busy worker never hoards
//! tasks another idle worker could run, and every task handed out is tracked
//! until the worker reports it done: a worker that dies gives its tasks back.

use std::collections::VecDeque;

use crate::queue::{QueuedTask, TaskQueue};

#[derive(Debug, Default)]
struct Slot {
    online: bool,
    /// Incarnation of the worker process now connected for this slot; a
    /// late disconnect of an older incarnation must not touch the new one.
    generation: u64,
    inflight: Vec<(u64, QueuedTask)>,
    /// Tasks sent with an explicit `$dstWorkerId`: only this worker may run them.
    targeted: VecDeque<QueuedTask>,
}

/// Task assignment over a [`TaskQueue`].
pub struct Dispatcher<Q: TaskQueue> {
    queue: Q,
    slots: Vec<Slot>,
    window: usize,
    next: usize,
    max_attempts: u32,
}

/// What happened to the tasks of a worker that went away.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// Requeued at the front to run again.
    pub requeued: usize,
    /// Ran `max_attempts` times and killed its worker each time: a poison
    /// task that would otherwise crash every task worker in turn.
    pub given_up: Vec<QueuedTask>,
}

impl<Q: TaskQueue> Dispatcher<Q> {
    /// `workers` task workers, each trusted with at most `window` unfinished
    /// tasks at once (1 = strictly idle-first dispatch); a task whose worker
    /// dies under it runs at most `max_attempts` times.
    pub fn new(queue: Q, workers: usize, window: usize, max_attempts: u32) -> Self {
        Dispatcher {
            queue,
            slots: (0..workers).map(|_| Slot::default()).collect(),
            window: window.max(1),
            next: 0,
            max_attempts: max_attempts.max(1),
        }
    }

    /// Queues a task for any worker, or only for task worker `dst`.
    /// Returns false when `dst` is out of range (the caller reports it).
    pub fn submit(&mut self, task: QueuedTask, dst: Option<usize>) -> bool {
        match dst {
            Some(i) if i >= self.slots.len() => false,
            Some(i) => {
                self.slots[i].targeted.push_back(task);
                true
            }
            None => {
                self.queue.push(task);
                true
            }
        }
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

    /// Incarnation `generation` is gone. What it held returns to the front
    /// of the queue, unless it has used up its attempts.
    pub fn offline(&mut self, worker: usize, generation: u64) -> Orphans {
        let mut orphans = Orphans::default();
        let Some(s) = self.slots.get_mut(worker) else {
            return orphans;
        };
        if s.generation == generation {
            s.online = false;
        }
        let (lost, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut s.inflight)
            .into_iter()
            .partition(|(g, _)| *g == generation);
        s.inflight = kept;
        for (_, mut t) in lost.into_iter().rev() {
            t.attempts += 1;
            if t.attempts >= self.max_attempts {
                self.queue.ack(t.id);
                orphans.given_up.push(t);
            } else {
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
            .map(|(_, t)| t)
            .find(|t| t.id == id)
    }

    /// The worker finished task `id`; frees its credit.
    pub fn complete(&mut self, worker: usize, id: u64) -> Option<QueuedTask> {
        let slot = self.slots.get_mut(worker)?;
        let pos = slot.inflight.iter().position(|(_, t)| t.id == id)?;
        let (_, task) = slot.inflight.swap_remove(pos);
        self.queue.ack(id);
        Some(task)
    }

    /// Hands waiting tasks to workers with free credit, round-robin among
    /// them, calling `send(worker, task)` for each assignment.
    pub fn assign(&mut self, mut send: impl FnMut(usize, &QueuedTask)) {
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
                    None => match self.queue.take() {
                        Some(t) => t,
                        None => continue,
                    },
                };
                send(i, &task);
                slot.inflight.push((slot.generation, task));
                self.next = (i + 1) % n;
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
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

    fn assign(d: &mut Dispatcher<MemoryQueue>) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        d.assign(|w, t| out.push((w, t.id)));
        out
    }

    #[test]
    fn idle_first_round_robin_with_window_one() {
        let mut d = Dispatcher::new(MemoryQueue::default(), 3, 1, 3);
        for w in 0..3 {
            d.online(w, 1);
        }
        for i in 0..5 {
            d.submit(task(i), None);
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
        let mut d = Dispatcher::new(MemoryQueue::default(), 2, 1, 3);
        d.submit(task(1), None);
        assert!(assign(&mut d).is_empty());
        d.online(1, 1);
        assert_eq!(assign(&mut d), vec![(1, 1)]);
    }

    #[test]
    fn dead_worker_gives_tasks_back_to_the_front() {
        let mut d = Dispatcher::new(MemoryQueue::default(), 2, 2, 3);
        d.online(0, 1);
        for i in 0..4 {
            d.submit(task(i), None);
        }
        assert_eq!(assign(&mut d), vec![(0, 0), (0, 1)]);
        assert_eq!(d.offline(0, 1).requeued, 2);
        d.online(1, 1);
        assert_eq!(assign(&mut d), vec![(1, 0), (1, 1)]);
        assert_eq!(d.queued(), 2);
    }

    #[test]
    fn late_disconnect_of_an_old_incarnation_spares_the_new_one() {
        let mut d = Dispatcher::new(MemoryQueue::default(), 1, 2, 3);
        d.online(0, 1);
        d.submit(task(1), None);
        assert_eq!(assign(&mut d), vec![(0, 1)]);
        d.online(0, 2);
        d.submit(task(2), None);
        assert_eq!(assign(&mut d), vec![(0, 2)]);
        assert_eq!(d.offline(0, 1).requeued, 1);
        assert_eq!(d.running(0, 2).map(|t| t.id), Some(2));
        assert_eq!(assign(&mut d), vec![(0, 1)]);
    }

    #[test]
    fn a_task_that_kills_every_worker_is_given_up_after_max_attempts() {
        let mut d = Dispatcher::new(MemoryQueue::default(), 1, 1, 2);
        d.online(0, 1);
        d.submit(task(5), None);
        assert_eq!(assign(&mut d), vec![(0, 5)]);
        assert_eq!(d.offline(0, 1).requeued, 1);
        d.online(0, 2);
        assert_eq!(assign(&mut d), vec![(0, 5)]);
        let orphans = d.offline(0, 2);
        assert_eq!(orphans.requeued, 0);
        assert_eq!(
            orphans
                .given_up
                .iter()
                .map(|t| (t.id, t.attempts))
                .collect::<Vec<_>>(),
            vec![(5, 2)]
        );
        d.online(0, 3);
        assert!(assign(&mut d).is_empty());
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn targeted_tasks_only_go_to_their_worker() {
        let mut d = Dispatcher::new(MemoryQueue::default(), 2, 1, 3);
        d.online(0, 1);
        d.online(1, 1);
        assert!(d.submit(task(7), Some(1)));
        assert!(!d.submit(task(8), Some(2)));
        d.complete(0, 99);
        assert_eq!(assign(&mut d), vec![(1, 7)]);
    }

    #[test]
    fn draining_worker_keeps_its_tasks_but_gets_no_more() {
        let mut d = Dispatcher::new(MemoryQueue::default(), 1, 1, 3);
        d.online(0, 1);
        d.submit(task(1), None);
        d.submit(task(2), None);
        assert_eq!(assign(&mut d), vec![(0, 1)]);
        d.draining(0);
        assert_eq!(d.running(0, 1).map(|t| t.id), Some(1));
        assert!(d.complete(0, 1).is_some());
        assert!(assign(&mut d).is_empty());
        assert_eq!(d.queued(), 1);
    }
}
