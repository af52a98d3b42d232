//! Decides which task worker runs which task. Workers pull work through a
//! credit window instead of being pushed blindly: an idle worker is served
//! first, and a busy one is trusted with more than one task only when more
//! tasks wait than there are workers, and only as much as about
//! [`WINDOW_BUDGET_US`] of predicted work. So a deep queue of tiny tasks
//! travels in batches (one write and one wakeup per batch, not per task),
//! while a few tasks never wait behind a slow one that another worker
//! could have spared them.
//! Every task handed out is tracked until the worker reports it done: a
//! worker that dies gives its tasks back, a task that fails is retried with
//! backoff, and one that keeps failing is moved to the failed tasks instead
//! of running forever.
//! A task whose result nobody waits for can instead be settled through the
//! completion board (`crate::board`): it is sent with a place there, the
//! worker posts it finished in that place, and `settle` reads the posts.

use std::collections::VecDeque;

use crate::ipc::result_has_a_destination;
use crate::queue::{QueueError, QueuedTask, TaskQueue};

struct Running {
    generation: u64,
    /// When the task was handed out, and for the first of a worker's tasks
    /// (the one it is running) no earlier than when its predecessor ended.
    started_ms: u64,
    task: QueuedTask,
    /// Its place on the completion board, if the worker posts it there.
    place: Option<u8>,
    /// Its result reached the dispatching worker (`finish()`, a non-null
    /// return): whatever happens to this run now, the task is not run again.
    delivered: bool,
}

/// What one task worker holds and may still take, as the dispatcher assigns
/// tasks (its process and outbox are the hub's `WorkerProcess`).
#[derive(Default)]
struct TaskWorkerLoad {
    online: bool,
    /// Incarnation of the worker process now connected for this slot; a
    /// late disconnect of an older incarnation must not touch the new one.
    generation: u64,
    /// In the order sent, which is the order the worker runs them.
    inflight: VecDeque<Running>,
    /// Tasks sent with an explicit `$dstWorkerId`: only this worker may run them.
    targeted: VecDeque<QueuedTask>,
    /// Board places held by tasks in `inflight`, one bit each.
    places: u64,
    /// Tasks the connected incarnation may still be handed before its
    /// `task_max_request` is reached (`None` = no limit), so no process
    /// runs more than its limit even when tasks travel in windows.
    budget: Option<u64>,
    /// Runs the connected incarnation ended (onTask returned or threw),
    /// for the admin API's per-worker view.
    handled: u64,
}

impl TaskWorkerLoad {
    /// Takes the lowest free board place.
    fn claim_place(&mut self) -> Option<u8> {
        let free = self.places.trailing_ones();
        if free as usize >= crate::board::PLACES {
            return None;
        }
        self.places |= 1 << free;
        Some(free as u8)
    }

    /// Removes entry `pos` of the window, freeing its board place.
    fn remove(&mut self, pos: usize) -> Option<Running> {
        let r = self.inflight.remove(pos)?;
        if let Some(p) = r.place {
            self.places &= !(1 << p);
        }
        Some(r)
    }
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
    /// Had delivered its result, so it is complete, not run again.
    pub completed: Vec<u64>,
}

/// What the dispatcher did with a task whose run failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// It runs again, not before this unix time in ms.
    At(u64),
    /// It used up its attempts and was moved to the failed tasks.
    GaveUp(QueuedTask),
    /// Its result had already been delivered, so it is complete: running
    /// it again would repeat side effects its caller already saw.
    Delivered,
}

/// Task assignment over a [`TaskQueue`].
pub struct Dispatcher {
    queue: Box<dyn TaskQueue>,
    slots: Vec<TaskWorkerLoad>,
    max_window: usize,
    /// Moving average of how long onTask runs, in µs; `None` until a task
    /// has run, and until then every worker gets one task at a time.
    avg_run_us: Option<f64>,
    max_queued: usize,
    retry_delay_ms: u64,
    /// Whether tasks nobody awaits get board places (see `with_board`).
    board: bool,
}

/// Longest backoff between two runs of a failing task.
const MAX_RETRY_DELAY_MS: u64 = 3_600_000;

/// How much predicted work, in µs, may wait in a worker's window behind
/// the task it runs: small enough that a slow task delays little, large
/// enough that tasks of a few µs go out dozens at a time.
pub const WINDOW_BUDGET_US: f64 = 1_000.0;

/// Tasks up to this long (µs, on average) get one more task queued behind
/// the running one while the queue is deeper than there are workers, so a
/// worker that finishes starts its next task at once instead of waiting a
/// round trip to the master for it: that wait cost 1 ms tasks 15–20 % of
/// their ideal rate (bench scenario 10). Longer tasks lose less than 1 % to
/// the round trip, and a task queued behind one would wait longer than
/// that if the running one overran.
pub const PREFETCH_MAX_US: f64 = 100_000.0;

/// Weight of the newest run time in the moving average: a slower run
/// counts more than a faster one, so the window shrinks at once when tasks
/// get slow and grows back only gradually.
const SLOWER_WEIGHT: f64 = 0.5;
const FASTER_WEIGHT: f64 = 0.125;

impl Dispatcher {
    /// `workers` task workers, each trusted with at most `max_window`
    /// unfinished tasks at once (1 = strictly one at a time). At most
    /// `max_queued` tasks wait (0 = unbounded); a failed run is retried after
    /// `retry_delay_ms`, doubling each time.
    pub fn new(
        queue: Box<dyn TaskQueue>,
        workers: usize,
        max_window: usize,
        max_queued: usize,
        retry_delay_ms: u64,
    ) -> Self {
        Dispatcher {
            queue,
            slots: (0..workers).map(|_| TaskWorkerLoad::default()).collect(),
            max_window: max_window.max(1),
            avg_run_us: None,
            max_queued,
            retry_delay_ms,
            board: false,
        }
    }

    /// Sends tasks whose result nobody waits for (`src_worker` < 0) with a
    /// place on the completion board, while their worker has one free.
    /// Not for a durable queue: a task settled late is removed from the
    /// store late, and would run again after a crash in between.
    pub fn with_board(mut self) -> Self {
        self.board = true;
        self
    }

    /// How many unfinished tasks one worker may hold now: about
    /// [`WINDOW_BUDGET_US`] of predicted work, and at least one task behind
    /// the running one while tasks take up to [`PREFETCH_MAX_US`].
    pub fn window(&self) -> usize {
        match self.avg_run_us {
            None => 1,
            Some(avg) => {
                let prefetch = usize::from(avg <= PREFETCH_MAX_US);
                (1 + self.extra_for(avg).max(prefetch)).min(self.max_window)
            }
        }
    }

    /// How many tasks one worker takes from a shared queue elsewhere
    /// (Redis) at a time: the budget's worth only, without the prefetched
    /// one, so no task waits here while another server idles.
    pub fn batch(&self) -> usize {
        self.avg_run_us
            .map_or(1, |avg| (1 + self.extra_for(avg)).min(self.max_window))
    }

    /// Tasks of `avg` µs that fit in [`WINDOW_BUDGET_US`].
    fn extra_for(&self, avg: f64) -> usize {
        (WINDOW_BUDGET_US / avg.max(1.0)) as usize
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
            Some(i) => {
                self.queue.hold(&task);
                self.slots[i].targeted.push_back(task);
            }
            None => self.queue.push(task),
        }
        Ok(())
    }

    /// Incarnation `generation` of a task worker connected and may receive
    /// work: at most `budget` tasks in its life (`None` = no limit).
    pub fn online(&mut self, worker: usize, generation: u64, budget: Option<u64>) {
        if let Some(s) = self.slots.get_mut(worker) {
            if s.generation != generation {
                s.handled = 0;
            }
            s.online = true;
            s.generation = generation;
            s.budget = budget;
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
    /// holding tasks). The first task it held was running, so that run
    /// counts as failed: it is requeued, or given up once it has used its
    /// attempts. The others had not started and go back as they were,
    /// queued again at `now_ms`.
    pub fn offline(&mut self, worker: usize, generation: u64, why: &str, now_ms: u64) -> Orphans {
        let mut orphans = Orphans::default();
        let Some(s) = self.slots.get_mut(worker) else {
            return orphans;
        };
        if s.generation == generation {
            s.online = false;
        }
        let (lost, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut s.inflight)
            .into_iter()
            .partition(|r| r.generation == generation);
        s.inflight = kept;
        s.places = s
            .inflight
            .iter()
            .filter_map(|r| r.place)
            .fold(0, |bits, p| bits | 1 << p);
        for (k, r) in lost.into_iter().enumerate() {
            let mut t = r.task;
            if r.delivered {
                self.queue.ack(t.id);
                orphans.completed.push(t.id);
                continue;
            }
            if k == 0 {
                t.attempts += 1;
            }
            if t.attempts >= t.max_attempts.max(1) {
                self.queue.fail(t.clone(), why);
                orphans.given_up.push(t);
            } else {
                t.not_before = 0;
                t.queued_ms = now_ms;
                self.queue.requeue(t);
                orphans.requeued += 1;
            }
        }
        orphans
    }

    /// The worker delivered a result of task `id`; returns the task, to
    /// route the result. From now on the task is never run again.
    pub fn deliver(&mut self, worker: usize, id: u64) -> Option<&QueuedTask> {
        let r = self
            .slots
            .get_mut(worker)?
            .inflight
            .iter_mut()
            .find(|r| r.task.id == id)?;
        r.delivered = true;
        Some(&r.task)
    }

    /// Removes task `id` from the worker's window; the next one starts now.
    fn take_running(&mut self, worker: usize, id: u64, now_ms: u64) -> Option<Running> {
        let slot = self.slots.get_mut(worker)?;
        let pos = slot.inflight.iter().position(|r| r.task.id == id)?;
        let done = slot.remove(pos)?;
        if done.generation == slot.generation {
            slot.handled += 1;
        }
        if let Some(head) = slot.inflight.front_mut() {
            head.started_ms = head.started_ms.max(now_ms);
        }
        Some(done)
    }

    /// The worker finished task `id` after running it `run_us` µs; frees
    /// its credit and refines the window.
    pub fn complete(
        &mut self,
        worker: usize,
        id: u64,
        run_us: u32,
        now_ms: u64,
    ) -> Option<QueuedTask> {
        let task = self.take_running(worker, id, now_ms)?.task;
        let sample = f64::from(run_us);
        self.avg_run_us = Some(match self.avg_run_us {
            None => sample,
            Some(avg) if sample > avg => avg + (sample - avg) * SLOWER_WEIGHT,
            Some(avg) => avg + (sample - avg) * FASTER_WEIGHT,
        });
        self.queue.ack(id);
        Some(task)
    }

    /// Completes every task its worker posted finished on the board;
    /// `posted(worker, place, id)` reads the board. Returns each one's id
    /// and how long it ran (µs), empty when none was posted.
    pub fn settle(
        &mut self,
        now_ms: u64,
        posted: impl Fn(usize, u8, u64) -> Option<u32>,
    ) -> Vec<(u64, u32)> {
        let mut finished = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.places == 0 {
                continue;
            }
            for r in &slot.inflight {
                if let Some(run_us) = r.place.and_then(|p| posted(i, p, r.task.id)) {
                    finished.push((i, r.task.id, run_us));
                }
            }
        }
        finished
            .into_iter()
            .filter_map(|(i, id, run_us)| {
                self.complete(i, id, run_us, now_ms).map(|_| (id, run_us))
            })
            .collect()
    }

    /// Whether a task is waiting that a worker could start now if one were
    /// free: then the master needs to hear of every completion at once.
    pub fn wants_reports(&self, now_ms: u64) -> bool {
        self.queue.ready(now_ms)
            || self
                .slots
                .iter()
                .any(|s| s.online && !s.targeted.is_empty())
    }

    /// The worker's run of task `id` failed (onTask threw): retry it later
    /// with exponential backoff, or give up after its last attempt. A task
    /// whose result was delivered is complete instead, whatever its attempts.
    pub fn failed(&mut self, worker: usize, id: u64, error: &str, now_ms: u64) -> Option<Retry> {
        let running = self.take_running(worker, id, now_ms)?;
        if running.delivered {
            self.queue.ack(id);
            return Some(Retry::Delivered);
        }
        let mut task = running.task;
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

    /// Workers whose running task (the first in their window) started
    /// before `deadline_ms` (task_timeout).
    pub fn overdue(&self, deadline_ms: u64) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.inflight
                    .front()
                    .is_some_and(|r| r.started_ms < deadline_ms)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// When the oldest running task started, to schedule the timeout check.
    pub fn oldest_start(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|s| s.inflight.front().map(|r| r.started_ms))
            .min()
    }

    /// Hands runnable tasks to workers with free credit, always to the one
    /// holding fewest, calling `send(worker, task, board place)` for each
    /// assignment. A worker whose current task has run past the window's
    /// budget gets nothing more until it finishes. Among equals the
    /// lowest-numbered wins, not the next in turn: when tasks trickle in,
    /// the same one or two workers take turns and stay warm on their CPUs,
    /// where waking a different sleeping process for every task cost an
    /// acknowledged `task()` over a unix socket about a fifth of its rate
    /// (bench scenario 2).
    pub fn assign(&mut self, now_ms: u64, mut send: impl FnMut(usize, &QueuedTask, Option<u8>)) {
        let window = self.window();
        let budget_ms = (WINDOW_BUDGET_US / 1000.0) as u64;
        let online = self.slots.iter().filter(|s| s.online).count();
        let mut queue_empty = false;
        loop {
            let mut best: Option<usize> = None;
            let deep = self.queue.len() > online;
            for (i, slot) in self.slots.iter().enumerate() {
                let shared = !queue_empty && (slot.inflight.is_empty() || deep);
                let has_work = !slot.targeted.is_empty() || shared;
                let stuck = slot
                    .inflight
                    .front()
                    .is_some_and(|r| now_ms > r.started_ms + budget_ms);
                let spent = slot.budget == Some(0);
                if !slot.online || slot.inflight.len() >= window || !has_work || stuck || spent {
                    continue;
                }
                if best.is_none_or(|b| slot.inflight.len() < self.slots[b].inflight.len()) {
                    best = Some(i);
                }
            }
            let Some(i) = best else { return };
            let slot = &mut self.slots[i];
            let task = match slot.targeted.pop_front() {
                Some(t) => {
                    crate::memory::give_back_room(&mut slot.targeted);
                    t
                }
                None => match self.queue.take(now_ms) {
                    Some(t) => t,
                    None => {
                        queue_empty = true;
                        continue;
                    }
                },
            };
            let place = if self.board && !result_has_a_destination(task.src_worker) {
                slot.claim_place()
            } else {
                None
            };
            send(i, &task, place);
            if let Some(b) = slot.budget.as_mut() {
                *b -= 1;
            }
            slot.inflight.push_back(Running {
                generation: slot.generation,
                started_ms: now_ms,
                task,
                place,
                delivered: false,
            });
        }
    }

    /// When a delayed task becomes runnable.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.next_due()
    }

    /// The failed tasks the queue keeps; None where they live elsewhere.
    pub fn failures(&mut self) -> Option<&mut dyn crate::queue::FailedStore> {
        self.queue.failures()
    }

    /// Makes queue changes durable (group commit).
    pub fn commit(&mut self) -> Result<(), QueueError> {
        self.queue.commit()
    }

    /// Starts the end-of-turn commit ([`TaskQueue::commit_turn`]).
    pub fn commit_turn(&mut self, waiting: usize) {
        self.queue.commit_turn(waiting)
    }

    /// Whether tasks came back from disk ([`TaskQueue::refilled`]).
    pub fn refilled(&mut self) -> bool {
        self.queue.refilled()
    }

    /// Whether a commit waits for its sync ([`TaskQueue::unsynced`]).
    pub fn unsynced(&self) -> bool {
        self.queue.unsynced()
    }

    /// The commit a change made now belongs to ([`TaskQueue::generation`]).
    pub fn generation(&self) -> u64 {
        self.queue.generation()
    }

    /// Commits ended since the last call ([`TaskQueue::settled`]).
    pub fn settled(&mut self) -> Vec<(u64, Result<(), QueueError>)> {
        self.queue.settled()
    }

    /// Tasks accepted and not yet started: in the queue, or in a worker's
    /// window behind the task it runs.
    pub fn queued(&self) -> usize {
        self.queue.len()
            + self
                .slots
                .iter()
                .map(|s| s.targeted.len() + s.inflight.len().saturating_sub(1))
                .sum::<usize>()
    }

    /// Whether tasks ready to run wait in the queue: every task worker's
    /// window is full, and the task workers bound the rate.
    pub fn backlogged(&self) -> bool {
        self.queue.len() > self.queue.delayed()
    }

    /// Tasks accepted whose delay or retry backoff is not over (part of
    /// [`Dispatcher::queued`]).
    pub fn delayed(&self) -> usize {
        self.queue.delayed()
    }

    /// Tasks running now: the first of each worker's window.
    pub fn running_count(&self) -> usize {
        self.slots.iter().filter(|s| !s.inflight.is_empty()).count()
    }

    /// Runs task worker `worker`'s connected process ended (returned or
    /// threw).
    pub fn handled(&self, worker: usize) -> u64 {
        self.slots.get(worker).map_or(0, |s| s.handled)
    }

    /// Whether task worker `worker` holds an unfinished task.
    pub fn is_busy(&self, worker: usize) -> bool {
        self.slots
            .get(worker)
            .is_some_and(|s| !s.inflight.is_empty())
    }

    /// The task worker `worker` runs now (the first of its window) and
    /// when it started (unix ms), for the status page's per-worker view.
    pub fn current(&self, worker: usize) -> Option<(u64, u64)> {
        let r = self.slots.get(worker)?.inflight.front()?;
        Some((r.task.id, r.started_ms))
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
    use crate::queue::tests::task;
    use crate::queue::MemoryQueue;

    fn dispatcher(workers: usize, window: usize) -> Dispatcher {
        Dispatcher::new(Box::new(MemoryQueue::default()), workers, window, 0, 100)
    }

    /// `workers` task workers, all online (incarnation 1).
    fn online(workers: usize, window: usize) -> Dispatcher {
        let mut d = dispatcher(workers, window);
        for w in 0..workers {
            d.online(w, 1, None);
        }
        d
    }

    /// Assigns and returns (worker, id) for each task sent.
    fn assign(d: &mut Dispatcher) -> Vec<(usize, u64)> {
        assign_places(d)
            .into_iter()
            .map(|(w, id, _)| (w, id))
            .collect()
    }

    /// Runs one task of `run_us` on worker `w` so the window is sized.
    fn learn(d: &mut Dispatcher, w: usize, run_us: u32) {
        d.submit(task(1_000), Some(w)).unwrap();
        assert_eq!(assign(d), vec![(w, 1_000)]);
        assert!(d.complete(w, 1_000, run_us, 0).is_some());
    }

    /// A task submitted by a client: nobody awaits its result.
    fn client_task(id: u64) -> QueuedTask {
        QueuedTask {
            src_worker: -1,
            ..task(id)
        }
    }

    /// Assigns and returns (worker, id, place) for each task sent.
    fn assign_places(d: &mut Dispatcher) -> Vec<(usize, u64, Option<u8>)> {
        let mut out = Vec::new();
        d.assign(0, |w, t, place| out.push((w, t.id, place)));
        out
    }

    #[test]
    fn each_incarnation_counts_the_runs_it_ended() {
        let mut d = online(2, 1);
        learn(&mut d, 0, 10);
        d.submit(task(1), Some(0)).unwrap();
        d.submit(task(2), Some(1)).unwrap();
        assign(&mut d);
        assert!(d.failed(0, 1, "boom", 0).is_some());
        assert_eq!((d.handled(0), d.handled(1)), (2, 0));
        d.online(0, 2, None);
        assert_eq!(d.handled(0), 0, "a new process starts from 0");
        assert_eq!(d.handled(9), 0);
    }

    #[test]
    fn tasks_nobody_awaits_are_settled_from_the_board() {
        let mut d = online(2, 1).with_board();
        d.submit(client_task(7), None).unwrap();
        d.submit(task(8), None).unwrap();
        assert_eq!(
            assign_places(&mut d),
            vec![(0, 7, Some(0)), (1, 8, None)],
            "only the task nobody awaits gets a place"
        );
        assert!(d.settle(0, |_, _, _| None).is_empty(), "nothing posted yet");
        assert_eq!(d.running_count(), 2);
        let settled = d.settle(0, |w, place, id| {
            ((w, place, id) == (0, 0, 7)).then_some(12)
        });
        assert_eq!(settled, [(7, 12)], "task 7 ran 12 µs");
        assert_eq!((d.running_count(), d.idle_workers()), (1, 1));
        assert!(
            d.complete(0, 7, 12, 0).is_none(),
            "a late report of a settled task is ignored"
        );
        d.submit(client_task(9), None).unwrap();
        assert_eq!(
            assign_places(&mut d),
            vec![(0, 9, Some(0))],
            "its place is free again"
        );
    }

    #[test]
    fn without_a_board_no_task_gets_a_place() {
        let mut d = online(1, 1);
        d.submit(client_task(1), None).unwrap();
        assert_eq!(assign_places(&mut d), vec![(0, 1, None)]);
    }

    #[test]
    fn a_worker_has_as_many_places_as_the_board_and_then_reports() {
        let mut d = online(1, 1024).with_board();
        learn(&mut d, 0, 1);
        let n = crate::board::PLACES as u64 + 2;
        for i in 0..=n {
            d.submit(client_task(i), None).unwrap();
        }
        let sent = assign_places(&mut d);
        assert_eq!(
            sent.len() as u64,
            n,
            "a queue of 1 µs tasks deeper than the workers goes out in the window"
        );
        let places: Vec<_> = sent.iter().map(|s| s.2).collect();
        let expected: Vec<_> = (0..crate::board::PLACES as u8)
            .map(Some)
            .chain([None, None])
            .collect();
        assert_eq!(places, expected);
        assert!(
            d.complete(0, 5, 1, 0).is_some(),
            "a reported task frees its place too"
        );
        d.submit(client_task(n + 1), None).unwrap();
        assert_eq!(assign_places(&mut d), vec![(0, n, Some(5))]);
    }

    #[test]
    fn a_task_posted_before_its_worker_died_is_settled_not_orphaned() {
        let mut d = online(1, 1).with_board();
        d.submit(client_task(3), None).unwrap();
        assert_eq!(assign_places(&mut d), vec![(0, 3, Some(0))]);
        assert_eq!(d.settle(0, |_, _, id| (id == 3).then_some(1)), [(3, 1)]);
        assert_eq!(d.offline(0, 1, "killed", 0), Orphans::default());
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn reports_are_wanted_while_a_runnable_task_waits_for_a_worker() {
        let mut d = online(1, 1).with_board();
        assert!(!d.wants_reports(0));
        d.submit(client_task(1), None).unwrap();
        d.submit(client_task(2), None).unwrap();
        assign_places(&mut d);
        assert!(d.wants_reports(0), "task 2 waits for the busy worker");
        assert_eq!(d.settle(0, |_, _, id| (id == 1).then_some(1)), [(1, 1)]);
        assign_places(&mut d);
        assert!(!d.wants_reports(0), "nothing waits");
        d.submit(
            QueuedTask {
                not_before: 1_000,
                queued_ms: 0,
                ..client_task(3)
            },
            None,
        )
        .unwrap();
        assert!(
            !d.wants_reports(999),
            "a delayed task is not waiting for a worker yet"
        );
        assert!(d.wants_reports(1_000));
    }

    #[test]
    fn idle_first_with_window_one() {
        let mut d = online(3, 1);
        for i in 0..5 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(assign(&mut d), vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(d.queued(), 2);
        assert_eq!(d.idle_workers(), 0);
        assert!(d.complete(1, 1, 0, 0).is_some());
        assert_eq!(assign(&mut d), vec![(1, 3)]);
        assert!(d.complete(1, 3, 0, 0).is_some());
        assert_eq!(assign(&mut d), vec![(1, 4)]);
        assert_eq!(d.queued(), 0);
        assert_eq!(d.running_count(), 3);
    }

    #[test]
    fn trickling_tasks_go_to_the_lowest_numbered_idle_worker_not_the_next_in_turn() {
        let mut d = online(3, 1);
        for i in 0..3 {
            d.submit(task(i), None).unwrap();
            assert_eq!(assign(&mut d), vec![(0, i)]);
            assert!(d.complete(0, i, 0, 0).is_some());
        }
        d.submit(task(10), None).unwrap();
        d.submit(task(11), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 10), (1, 11)]);
        assert!(d.complete(0, 10, 0, 0).is_some());
        d.submit(task(12), None).unwrap();
        assert_eq!(
            assign(&mut d),
            vec![(0, 12)],
            "worker 1 is busy, 0 is free again"
        );
    }

    #[test]
    fn a_drained_burst_of_targeted_tasks_gives_its_room_back() {
        let mut d = dispatcher(2, 1);
        d.online(0, 1, None);
        for i in 0..5_000 {
            d.submit(task(i), Some(0)).unwrap();
        }
        for i in 0..5_000 {
            assert_eq!(assign(&mut d), vec![(0, i)]);
            assert!(d.complete(0, i, 0, 0).is_some());
        }
        let kept = d.slots[0].targeted.capacity();
        assert!(kept <= 1024, "{kept} slots kept");
    }

    #[test]
    fn tasks_wait_for_workers_to_come_online() {
        let mut d = dispatcher(2, 1);
        d.submit(task(1), None).unwrap();
        assert!(assign(&mut d).is_empty());
        d.online(1, 1, None);
        assert_eq!(assign(&mut d), vec![(1, 1)]);
    }

    #[test]
    fn dead_worker_gives_tasks_back() {
        let mut d = dispatcher(2, 2);
        d.online(0, 1, None);
        learn(&mut d, 0, 10);
        for i in 0..4 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(assign(&mut d), vec![(0, 0), (0, 1)]);
        assert_eq!(d.offline(0, 1, "crash", 0).requeued, 2);
        d.online(1, 1, None);
        assert_eq!(assign(&mut d), vec![(1, 0), (1, 1)]);
        assert_eq!((d.running_count(), d.queued()), (1, 3));
    }

    #[test]
    fn late_disconnect_of_an_old_incarnation_spares_the_new_one() {
        let mut d = online(1, 2);
        learn(&mut d, 0, 10);
        d.submit(task(1), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 1)]);
        d.online(0, 2, None);
        d.submit(task(2), Some(0)).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 2)]);
        assert_eq!(d.offline(0, 1, "crash", 0).requeued, 1);
        assert_eq!(d.deliver(0, 2).map(|t| t.id), Some(2));
        d.submit(task(9), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 1)]);
    }

    #[test]
    fn a_task_that_kills_every_worker_is_given_up_after_max_attempts() {
        let mut d = online(1, 1);
        d.submit(
            QueuedTask {
                max_attempts: 2,
                ..task(5)
            },
            None,
        )
        .unwrap();
        assert_eq!(assign(&mut d), vec![(0, 5)]);
        assert_eq!(d.offline(0, 1, "crash", 0).requeued, 1);
        d.online(0, 2, None);
        assert_eq!(assign(&mut d), vec![(0, 5)]);
        let orphans = d.offline(0, 2, "crash", 0);
        assert_eq!(orphans.requeued, 0);
        let given: Vec<_> = orphans
            .given_up
            .iter()
            .map(|t| (t.id, t.attempts))
            .collect();
        assert_eq!(given, vec![(5, 2)]);
        d.online(0, 3, None);
        assert!(assign(&mut d).is_empty());
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn failed_runs_back_off_exponentially_then_give_up() {
        let mut d = online(1, 1);
        d.submit(task(7), None).unwrap();
        d.assign(1_000, |_, _, _| {});
        assert_eq!(d.failed(0, 7, "boom", 1_000), Some(Retry::At(1_100)));
        let mut got = Vec::new();
        d.assign(1_099, |w, t, _| got.push((w, t.id)));
        assert!(got.is_empty(), "not before its backoff");
        assert_eq!(d.next_due(), Some(1_100));
        d.assign(1_100, |w, t, _| got.push((w, t.id)));
        assert_eq!(got, vec![(0, 7)]);
        assert_eq!(d.failed(0, 7, "boom", 2_000), Some(Retry::At(2_200)));
        d.assign(2_200, |_, _, _| {});
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
        d.online(1, 1, None);
        assert_eq!(assign(&mut d), vec![(1, 2)]);
        d.submit(task(3), None).unwrap();
    }

    #[test]
    fn timeouts_find_the_workers_running_old_tasks() {
        let mut d = online(2, 1);
        d.submit(task(1), None).unwrap();
        d.assign(100, |_, _, _| {});
        d.submit(task(2), None).unwrap();
        d.assign(500, |_, _, _| {});
        assert_eq!(d.oldest_start(), Some(100));
        assert_eq!(d.overdue(200), vec![0]);
        assert_eq!(d.overdue(600), vec![0, 1]);
    }

    #[test]
    fn draining_worker_keeps_its_tasks_but_gets_no_more() {
        let mut d = online(1, 1);
        d.submit(task(1), None).unwrap();
        d.submit(task(2), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 1)]);
        d.draining(0);
        assert_eq!(d.deliver(0, 1).map(|t| t.id), Some(1));
        assert!(d.complete(0, 1, 10, 0).is_some());
        assert!(assign(&mut d).is_empty());
        assert_eq!(d.queued(), 1);
    }

    #[test]
    fn short_tasks_widen_the_window_slow_ones_prefetch_one_and_very_slow_ones_none() {
        let mut d = online(1, 64);
        assert_eq!(d.window(), 1, "nothing known yet: one at a time");
        learn(&mut d, 0, 10);
        assert_eq!(d.window(), 64, "1 ms of 10 µs tasks exceeds the cap");
        for _ in 0..40 {
            learn(&mut d, 0, 10_000);
        }
        assert_eq!(
            d.window(),
            2,
            "slow tasks: one waits behind the running one"
        );
        assert_eq!(
            d.batch(),
            1,
            "but only the budget's worth is taken from Redis"
        );
        for _ in 0..40 {
            learn(&mut d, 0, 200_000);
        }
        assert_eq!(d.window(), 1, "very slow tasks: nothing waits behind them");
        let mut d = online(1, 64);
        learn(&mut d, 0, 100);
        assert_eq!(d.window(), 11, "1 + 1000 µs / 100 µs");
    }

    #[test]
    fn the_worker_holding_fewest_tasks_is_served_first() {
        let mut d = dispatcher(2, 4);
        d.online(0, 1, None);
        learn(&mut d, 0, 1);
        for i in 0..3 {
            d.submit(task(i), Some(0)).unwrap();
        }
        assert_eq!(assign(&mut d), vec![(0, 0), (0, 1), (0, 2)]);
        d.online(1, 1, None);
        for i in 3..10 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(
            assign(&mut d),
            vec![(1, 3), (1, 4), (1, 5), (0, 6), (1, 7)],
            "the idle worker catches up before the busy one gets more"
        );
        assert_eq!(
            d.queued(),
            2 + 3 + 3,
            "as many as there are workers in the queue, the rest in windows"
        );
    }

    #[test]
    fn slow_tasks_in_a_backlog_get_one_behind_the_running_one_and_a_short_queue_none() {
        let mut d = online(2, 64);
        for _ in 0..20 {
            learn(&mut d, 0, 1_000);
        }
        for i in 0..6 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(
            assign(&mut d),
            vec![(0, 0), (1, 1), (0, 2), (1, 3)],
            "idle first, then one more each while more wait than there are workers"
        );
        assert!(d.complete(0, 0, 1_000, 0).is_some());
        assert_eq!(
            assign(&mut d),
            vec![],
            "two wait for two workers: they go to whichever is free first"
        );
        assert!(d.complete(0, 2, 1_000, 0).is_some());
        assert_eq!(assign(&mut d), vec![(0, 4)]);

        let mut d = online(2, 64);
        for _ in 0..20 {
            learn(&mut d, 0, 200_000);
        }
        for i in 0..6 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(
            assign(&mut d),
            vec![(0, 0), (1, 1)],
            "tasks over 100 ms go out one at a time"
        );
    }

    #[test]
    fn a_lost_window_charges_a_failed_run_only_to_the_running_task() {
        let mut d = online(1, 8);
        learn(&mut d, 0, 10);
        for i in 0..4 {
            d.submit(
                QueuedTask {
                    max_attempts: 1,
                    ..task(i)
                },
                None,
            )
            .unwrap();
        }
        assert_eq!(
            assign(&mut d),
            vec![(0, 0), (0, 1), (0, 2)],
            "beyond the first, only while more wait than there are workers"
        );
        let orphans = d.offline(0, 1, "crash", 0);
        let given: Vec<_> = orphans.given_up.iter().map(|t| t.id).collect();
        assert_eq!(given, vec![0], "only the task that was running failed");
        assert_eq!(orphans.requeued, 2, "the tasks behind it had not started");
        d.online(0, 2, None);
        assert_eq!(assign(&mut d), vec![(0, 1), (0, 2)]);
    }

    #[test]
    fn a_task_waiting_in_a_window_starts_its_timeout_when_its_turn_comes() {
        let mut d = online(1, 8);
        learn(&mut d, 0, 10);
        for i in 1..=3 {
            d.submit(task(i), None).unwrap();
        }
        d.assign(100, |_, _, _| {});
        assert_eq!(
            (d.running_count(), d.queued()),
            (1, 2),
            "one runs, one waits in its window"
        );
        assert_eq!(d.overdue(200), vec![0]);
        assert!(d.complete(0, 1, 10, 900).is_some());
        assert_eq!(d.oldest_start(), Some(900));
        assert!(d.overdue(600).is_empty(), "task 2 started at 900, not 100");
        assert_eq!(d.overdue(1_000), vec![0]);
    }

    #[test]
    fn a_worker_stuck_on_a_long_task_gets_nothing_more() {
        let mut d = dispatcher(2, 8);
        d.online(0, 1, None);
        learn(&mut d, 0, 10);
        d.submit(task(1), None).unwrap();
        d.assign(100, |_, _, _| {});
        for i in 2..6 {
            d.submit(task(i), None).unwrap();
        }
        let mut got = Vec::new();
        d.assign(5_000, |w, t, _| got.push((w, t.id)));
        assert!(got.is_empty(), "task 1 has run for 4.9 s: nothing joins it");
        d.online(1, 1, None);
        d.assign(5_000, |w, t, _| got.push((w, t.id)));
        assert_eq!(got, vec![(1, 2), (1, 3)]);
    }

    #[test]
    fn a_worker_is_never_handed_more_tasks_than_its_budget_even_in_windows() {
        let mut d = dispatcher(2, 64);
        d.online(0, 1, Some(11));
        learn(&mut d, 0, 1);
        for i in 0..40 {
            d.submit(task(i), None).unwrap();
        }
        let sent = assign(&mut d);
        assert_eq!(sent.len(), 10, "one of its 11 went to learning: 10 left");
        assert!(
            assign(&mut d).is_empty(),
            "spent: nothing more, however deep the queue"
        );
        for (_, id) in &sent {
            assert!(d.complete(0, *id, 1, 0).is_some());
        }
        assert!(
            assign(&mut d).is_empty(),
            "finishing its tasks gives it no new budget"
        );
        d.online(0, 2, Some(3));
        assert_eq!(assign(&mut d).len(), 3, "its successor has its own budget");
        d.online(1, 1, None);
        assert_eq!(
            assign(&mut d).len(),
            25,
            "a worker without a limit takes the rest but as many as there are workers"
        );
    }

    #[test]
    fn a_task_whose_result_was_delivered_is_not_retried_when_it_then_fails() {
        let mut d = online(1, 1);
        d.submit(task(4), None).unwrap();
        assert_eq!(assign(&mut d), vec![(0, 4)]);
        assert_eq!(d.deliver(0, 4).map(|t| t.id), Some(4));
        assert_eq!(d.failed(0, 4, "boom", 0), Some(Retry::Delivered));
        assert_eq!((d.queued(), d.running_count()), (0, 0));
        assert!(assign(&mut d).is_empty(), "it does not run again");
    }

    #[test]
    fn a_task_whose_result_was_delivered_is_not_requeued_when_its_worker_dies() {
        let mut d = online(1, 8);
        learn(&mut d, 0, 10);
        for i in 1..=3 {
            d.submit(task(i), None).unwrap();
        }
        assert_eq!(assign(&mut d), vec![(0, 1), (0, 2)]);
        assert!(d.deliver(0, 1).is_some());
        let orphans = d.offline(0, 1, "crash", 0);
        assert_eq!(
            (orphans.requeued, orphans.given_up.len(), orphans.completed),
            (1, 0, vec![1]),
            "only the task behind it, which had not started, goes back"
        );
        d.online(0, 2, None);
        assert_eq!(assign(&mut d), vec![(0, 2)]);
        assert_eq!(d.queued(), 1);
    }
}
