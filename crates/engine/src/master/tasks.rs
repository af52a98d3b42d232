//! The task lifecycle in the master, and the one owner of the task queue
//! (through the dispatcher and its [`TaskQueue`]): submissions from
//! workers, the master and clients, handing tasks to task workers, results,
//! completions (reported or posted on the completion board), failures with
//! retries, timeouts, the orphans of a worker that died, and the group
//! commit that acknowledges durable submissions. A second queue backend
//! plugs in here, behind `TaskQueue`.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Notify;

use super::batches::{check_name, Batches};
use super::metrics::Timings;
use super::workers::Workers;
use crate::board::Board;
use crate::dispatcher::{Dispatcher, Retry, SubmitError};
use crate::failed::{FailedOp, FailedTask};
use crate::ipc::ToWorker;
use crate::log::Level;
use crate::payload::Payload;
use crate::protocol::{code, TaskRequest};
use crate::queue::{now_ms, QueuedTask, TaskQueue};
use crate::remote_queue::{self, SharedLedger};

/// Why batch questions fail with the Redis backend.
const NOT_TRACKED: &str = "batch progress is not tracked with task_backend (Redis): each server sees only the tasks it ran";

/// The options the task lifecycle follows.
#[derive(Debug, Clone)]
pub struct TaskRules {
    pub task_worker_num: u32,
    /// Most unfinished tasks a task worker may hold at once.
    pub task_window: usize,
    /// Waiting tasks at most (0 = unbounded).
    pub task_queue_max: usize,
    /// Runs of a failing `TaskClient::task()` job before it is given up,
    /// unless the submission says otherwise.
    pub task_max_attempts: u32,
    /// Runs of a failing `$server->task()` before it is given up (1 by
    /// default: at most once, as in Swoole). A `taskwait()` task runs once.
    pub worker_task_max_attempts: u32,
    /// Backoff before the first retry; doubles for each further one.
    pub task_retry_delay_ms: u64,
    /// A task running longer is failed and its worker killed.
    pub task_timeout_ms: Option<u64>,
    /// Whether the queue has a task_store: client submissions are
    /// acknowledged only after the group commit that makes them durable.
    pub durable: bool,
    /// What task payloads from clients may hold.
    pub untrusted: crate::php_serial::Policy,
}

/// How a client's task was taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Held in memory: acknowledge it with this id now.
    Now(u64),
    /// Acknowledged by the next group commit (see [`Tasks::commit`]).
    AtCommit,
}

/// A client task refused, with the protocol error code to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub code: u32,
    pub message: String,
}

/// What a group commit means for the clients waiting on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// Acknowledge each (session, task id).
    Acks(Vec<(u64, u64)>),
    /// The store failed: answer each session with this error.
    Failed(Vec<u64>, String),
}

/// What the tasks count for `stats()`, the metrics and the last log line.
#[derive(Debug, Default, Clone)]
pub struct TaskCounters {
    pub task_count: u64,
    pub requeued_tasks: u64,
    pub failed_tasks: u64,
    /// Tasks whose onTask returned (reported or posted on the board).
    pub finished_tasks: u64,
    /// Failed runs scheduled to run again.
    pub retried_tasks: u64,
}

/// The master's tasks.
pub struct Tasks {
    rules: TaskRules,
    dispatcher: Dispatcher,
    next_task: u64,
    /// Client submissions waiting for their group commit to be acked:
    /// (the queue's generation, session, task id), in generation order.
    pending_acks: VecDeque<(u64, u64, u64)>,
    /// taskwait tasks, by master id: the incarnation blocked on the result.
    awaited: HashMap<u64, u64>,
    /// Where task workers post completions nobody awaits (`crate::board`).
    board: Arc<Board>,
    /// Whether the board's flag asks workers to report every completion.
    listening: bool,
    /// Wakes the committer when acks are pending, or when the store's
    /// writer thread finished a commit.
    commit_needed: Arc<Notify>,
    /// Wakes the scheduler when the next timer may have changed.
    reschedule: Rc<Notify>,
    counters: TaskCounters,
    /// Queue waits and run times, for the metrics.
    timings: Timings,
    /// With `task_backend`: what the Redis link carries out.
    remote: Option<SharedLedger>,
    /// Client submissions on their way to Redis: local id → session.
    remote_acks: HashMap<u64, u64>,
    /// taskwait tasks sent to Redis, by (worker, task id in the worker):
    /// the incarnation blocked on the result, which may come from any
    /// server.
    awaited_remote: HashMap<(u32, i64), u64>,
    /// Progress of the batches clients tagged their tasks with.
    batches: Batches,
}

impl Tasks {
    /// The lifecycle over `queue`, whose task ids continue from `next_task`
    /// (recovered from a durable store); `remote` is the ledger `queue`
    /// writes to when tasks live in Redis.
    pub fn new(
        rules: TaskRules,
        mut queue: Box<dyn TaskQueue>,
        next_task: u64,
        board: Arc<Board>,
        remote: Option<SharedLedger>,
    ) -> Self {
        let commit_needed = Arc::new(Notify::new());
        let wake = commit_needed.clone();
        queue.wake_on_commit(Arc::new(move || wake.notify_one()));
        let dispatcher = Dispatcher::new(
            queue,
            rules.task_worker_num as usize,
            rules.task_window,
            rules.task_queue_max,
            rules.task_retry_delay_ms,
        );
        Tasks {
            // A task settled late would be removed from a store late, and
            // run again after a crash in between: no board with a store,
            // nor with Redis, which must hear of every completion.
            dispatcher: if rules.durable || remote.is_some() {
                dispatcher
            } else {
                dispatcher.with_board()
            },
            rules,
            next_task,
            pending_acks: VecDeque::new(),
            awaited: HashMap::new(),
            board,
            listening: false,
            commit_needed,
            reschedule: Rc::new(Notify::new()),
            counters: TaskCounters::default(),
            timings: Timings::default(),
            remote,
            remote_acks: HashMap::new(),
            awaited_remote: HashMap::new(),
            batches: Batches::default(),
        }
    }

    /// The ledger of the Redis backend, if tasks live in Redis.
    pub fn ledger(&self) -> Option<SharedLedger> {
        self.remote.clone()
    }

    /// With the Redis backend: the whole queue as Redis last counted it,
    /// and when (unix ms), for `stats()` and the metrics; None until Redis
    /// was first reached, and always without the backend.
    pub fn backend_counted(&self) -> Option<(taskq_redis::QueueStats, u64)> {
        self.remote.as_ref().and_then(|l| l.borrow().queue_stats())
    }

    /// What the committer waits on.
    pub fn commit_needed(&self) -> Arc<Notify> {
        self.commit_needed.clone()
    }

    /// What the scheduler waits on besides its deadline.
    pub fn reschedule(&self) -> Rc<Notify> {
        self.reschedule.clone()
    }

    /// Hands runnable tasks to task workers; `now` is the caller's clock
    /// reading (unix ms), so one message costs one reading.
    pub fn assign(&mut self, now: u64, workers: &Workers) {
        let mut started = false;
        loop {
            self.settle(now);
            let timings = &self.timings;
            self.dispatcher.assign(now, |t, task, place| {
                started = true;
                if task.queued_ms > 0 {
                    timings.waited(now.saturating_sub(task.queued_ms.max(task.not_before)));
                }
                let msg = ToWorker::Task {
                    id: task.id,
                    task_id: task.task_id,
                    src_worker: task.src_worker,
                    place,
                    payload: task.payload.clone(),
                };
                workers.push_task(t, &msg);
            });
            let listen = self.dispatcher.wants_reports(now);
            if listen != self.listening {
                self.listening = listen;
                self.board.listen(listen);
                // A worker that posted before the flag went up did not
                // report: read the board once more, and hand out what that
                // frees.
                if listen && self.read_board(now) {
                    continue;
                }
            }
            break;
        }
        if started && self.rules.task_timeout_ms.is_some() {
            self.reschedule.notify_one();
        }
    }

    /// Completes the tasks task workers posted finished on the board.
    /// Returns whether there were any. Nothing to do while the master
    /// listens: every post since the flag went up was reported as well, and
    /// a deep queue's reports would otherwise each cost a read of the board.
    pub fn settle(&mut self, now: u64) -> bool {
        !self.listening && self.read_board(now)
    }

    fn read_board(&mut self, now: u64) -> bool {
        let board = &self.board;
        let ran = self
            .dispatcher
            .settle(now, |worker, place, id| board.posted(worker, place, id));
        for &(id, run_us) in &ran {
            self.finished(id, run_us, now);
        }
        !ran.is_empty()
    }

    /// Counts task `id`, whose onTask returned after `run_us` µs.
    fn finished(&mut self, id: u64, run_us: u32, now: u64) {
        self.counters.finished_tasks += 1;
        self.timings.ran(run_us);
        self.batches.done(id, now);
    }

    fn new_task(
        &mut self,
        src_worker: i32,
        task_id: i64,
        payload: Payload,
        priority: i32,
        delay_ms: u64,
        max_attempts: u32,
    ) -> QueuedTask {
        let id = self.next_task;
        self.next_task += 1;
        let now = now_ms();
        QueuedTask {
            id,
            src_worker,
            task_id: if src_worker >= 0 { task_id } else { id as i64 },
            payload,
            attempts: 0,
            max_attempts,
            priority,
            not_before: if delay_ms > 0 { now + delay_ms } else { 0 },
            queued_ms: now,
        }
    }

    /// `$server->task()`/`taskwait()` from event worker `worker`
    /// (incarnation `generation`), for any task worker when `dst` < 0.
    pub fn worker_task(
        &mut self,
        worker: u32,
        generation: u64,
        (task_id, dst, wait): (i64, i32, bool),
        payload: Payload,
        workers: &mut Workers,
    ) {
        // A taskwait caller is blocked on this one run, and a retry could
        // only answer a caller that has given up.
        let attempts = if wait {
            1
        } else {
            self.rules.worker_task_max_attempts
        };
        let task = self.new_task(worker as i32, task_id, payload, 0, 0, attempts);
        if wait {
            // A task for any worker goes out to Redis, and its result comes
            // back from there by the worker's own task id.
            if self.remote.is_some() && dst < 0 {
                self.awaited_remote.insert((worker, task_id), generation);
            } else {
                self.awaited.insert(task.id, generation);
            }
        }
        self.queue(task, dst, &format!("worker #{worker}"), workers);
    }

    /// `$server->task()` from the master's onStart or the manager's
    /// onManagerStart: one-way as in Swoole (nobody gets its result, so
    /// `finish()` has nowhere to send it), and at most once like a worker's.
    pub fn one_way(&mut self, task_id: i64, dst: i32, payload: Payload, workers: &mut Workers) {
        let attempts = self.rules.worker_task_max_attempts;
        let mut task = self.new_task(-1, 0, payload, 0, 0, attempts);
        task.task_id = task_id;
        self.queue(task, dst, "the master or manager", workers);
    }

    /// Queues a task from inside the server; a refusal reaches onTaskFailed.
    fn queue(&mut self, task: QueuedTask, dst: i32, from: &str, workers: &mut Workers) {
        self.counters.task_count += 1;
        match self
            .dispatcher
            .submit(task.clone(), usize::try_from(dst).ok())
        {
            Ok(()) => self.assign(now_ms(), workers),
            Err(e) => {
                crate::log!(
                    Level::Error,
                    "task {} from {from} refused: {e}",
                    task.task_id
                );
                self.report_failure(&task, &e.to_string(), workers);
            }
        }
        self.commit_needed.notify_one();
    }

    /// `TaskClient::task()` from session `fd`: queued and acknowledged with
    /// its id, at once in memory, after the next group commit with a
    /// task_store; or refused at once. The caller hands it out
    /// ([`Tasks::assign`]) after writing the acknowledgement: the client
    /// waits for that, the task worker does not yet (writing the ack first
    /// kept acknowledged `task()` at 56k/s instead of 34k/s, bench
    /// scenario 2).
    pub fn client_task(&mut self, fd: u64, req: TaskRequest) -> Result<Accepted, Refused> {
        let refused = |code, message: String| Err(Refused { code, message });
        if self.rules.task_worker_num == 0 && self.remote.is_none() {
            return refused(
                code::NO_TASK_WORKERS,
                "the server has no task workers (task_worker_num is 0): the task was not queued"
                    .into(),
            );
        }
        let payload = match crate::php_serial::admit(req.payload, &self.rules.untrusted) {
            Ok(p) => p,
            Err(e) => {
                crate::log!(Level::Warning, "session #{fd}: task refused: {e}");
                return refused(code::BAD_REQUEST, e.to_string());
            }
        };
        let attempts = match req.max_attempts {
            0 => self.rules.task_max_attempts,
            n => n,
        };
        // Redis runs the tasks on every server: no one master sees a
        // batch through (`batch()` says so).
        let batch = req.batch.filter(|_| self.remote.is_none());
        if let Some(name) = &batch {
            if let Err(e) = check_name(name) {
                return refused(code::BAD_REQUEST, e.to_string());
            }
            if let Err(e) = self.batches.make_room(name) {
                return refused(code::QUEUE_FULL, e.to_string());
            }
        }
        let task = self.new_task(-1, 0, payload, req.priority, req.delay_ms, attempts);
        let id = task.id;
        let delayed = task.not_before > 0;
        match self.dispatcher.submit(task, None) {
            Ok(()) => {
                self.counters.task_count += 1;
                if let Some(name) = &batch {
                    self.batches.add(name, id, now_ms());
                }
                let accepted = if self.remote.is_some() {
                    self.remote_acks.insert(id, fd);
                    Accepted::AtCommit
                } else if self.rules.durable {
                    let generation = self.dispatcher.generation();
                    self.pending_acks.push_back((generation, fd, id));
                    self.commit_needed.notify_one();
                    Accepted::AtCommit
                } else {
                    Accepted::Now(id)
                };
                if delayed {
                    self.reschedule.notify_one();
                }
                Ok(accepted)
            }
            Err(e @ SubmitError::Full(_)) => refused(code::QUEUE_FULL, e.to_string()),
            Err(e) => refused(code::BAD_REQUEST, e.to_string()),
        }
    }

    /// Task worker index `t` delivered the result of task `id`: it goes to
    /// the worker that dispatched the task (the incarnation blocked in
    /// taskwait, if one is).
    pub fn result(&mut self, t: usize, id: u64, payload: Payload, workers: &mut Workers) {
        let Some(task) = self.dispatcher.deliver(t, id) else {
            return;
        };
        // A task from Redis: the result goes to its origin's results
        // stream together with its ack.
        if let Some(ledger) = &self.remote {
            if ledger.borrow_mut().record_result(id, &payload) {
                return;
            }
        }
        if workers.is_event_worker(task.src_worker) {
            let msg = ToWorker::Finish {
                task_id: task.task_id,
                payload,
            };
            let src = task.src_worker as u32;
            // While tasks wait for a task worker, an onFinish that comes up
            // to a millisecond later costs nothing, and the wakeups it saves
            // are CPU for the task workers.
            let backlog = self.dispatcher.backlogged();
            workers.push_result(src, self.awaited.get(&id).copied(), &msg, backlog);
        }
    }

    /// Task worker index `t` finished task `id` after `run_us` µs.
    pub fn done(&mut self, t: usize, id: u64, run_us: u32, workers: &Workers) {
        self.awaited.remove(&id);
        let now = now_ms();
        if self.dispatcher.complete(t, id, run_us, now).is_some() {
            self.finished(id, run_us, now);
        }
        self.assign(now, workers);
        self.commit_needed.notify_one();
    }

    /// Task worker index `t`'s run of task `id` threw `error`: retried
    /// later, given up, or complete if its result was delivered.
    pub fn failed(&mut self, t: usize, id: u64, error: &str, workers: &mut Workers) {
        let first_line = error.lines().next().unwrap_or("").to_owned();
        let now = now_ms();
        match self.dispatcher.failed(t, id, &first_line, now) {
            Some(Retry::At(at)) => {
                self.counters.retried_tasks += 1;
                crate::log!(
                    Level::Notice,
                    "task {id} failed ({first_line}); retrying in {} ms",
                    at.saturating_sub(now)
                );
                self.reschedule.notify_one();
            }
            Some(Retry::GaveUp(task)) => self.give_up(&task, &first_line, workers),
            Some(Retry::Delivered) => {
                self.awaited.remove(&id);
                self.batches.done(id, now);
                crate::log!(
                    Level::Warning,
                    "task {id} failed ({first_line}) after its result was delivered; it is not run again"
                );
            }
            None => {}
        }
        self.assign(now, workers);
        self.commit_needed.notify_one();
    }

    /// Task worker index `t`, incarnation `generation`, connected and may
    /// be handed at most `max_tasks` tasks (0 = no limit).
    pub fn joined(&mut self, t: usize, generation: u64, max_tasks: u64, workers: &Workers) {
        self.dispatcher
            .online(t, generation, (max_tasks > 0).then_some(max_tasks));
        self.assign(now_ms(), workers);
    }

    /// Task worker index `t` is leaving: it finishes what it holds and
    /// gets nothing new.
    pub fn leaving(&mut self, t: usize) {
        self.dispatcher.draining(t);
    }

    /// Task worker `worker` (index `t`), incarnation `generation`, is gone;
    /// `killed` when the master killed it for task_timeout. What it held is
    /// requeued or given up; what it posted finished first is complete.
    pub fn worker_gone(
        &mut self,
        (worker, t): (u32, usize),
        generation: u64,
        killed: bool,
        workers: &mut Workers,
    ) {
        let why = if killed {
            format!("task worker #{worker} exceeded task_timeout and was killed")
        } else {
            format!("task worker #{worker} died while running it")
        };
        // What the worker posted finished before it went is not orphaned,
        // even if it died before it could report it.
        let now = now_ms();
        self.read_board(now);
        let orphans = self.dispatcher.offline(t, generation, &why, now);
        if orphans.requeued > 0 {
            self.counters.requeued_tasks += orphans.requeued as u64;
            crate::log!(
                Level::Warning,
                "{why}: requeued {} unfinished task(s)",
                orphans.requeued
            );
        }
        for task in orphans.given_up {
            self.give_up(&task, &why, workers);
        }
        for id in orphans.completed {
            self.awaited.remove(&id);
            self.batches.done(id, now);
        }
        self.assign(now_ms(), workers);
        self.commit_needed.notify_one();
    }

    /// A task used up its attempts: count it, log it and tell the worker
    /// that dispatched it (onTaskFailed).
    fn give_up(&mut self, task: &QueuedTask, why: &str, workers: &mut Workers) {
        self.awaited.remove(&task.id);
        self.counters.failed_tasks += 1;
        self.batches.failed(task.id, why, now_ms());
        // A worker of another server dispatched it: Redis moves it to the
        // failed list and tells that server in one script, and its
        // onTaskFailed runs there. A client's task is reported here, as on
        // the server it came to.
        if remote_queue::is_foreign(task.id) && task.src_worker >= 0 {
            crate::log!(
                Level::Error,
                "task {} of another server's worker failed {} time(s); given up, in the failed list, reported to that server: {why}",
                task.task_id,
                task.attempts
            );
            return;
        }
        crate::log!(
            Level::Error,
            "task {} (id {} from {}) failed {} time(s); given up: {why}",
            task.id,
            task.task_id,
            if task.src_worker >= 0 {
                format!("worker #{}", task.src_worker)
            } else {
                "a client".to_owned()
            },
            task.attempts
        );
        self.report_failure(task, why, workers);
    }

    /// onTaskFailed, in the worker that dispatched the task, or in worker 0
    /// for a client's task.
    fn report_failure(&self, task: &QueuedTask, why: &str, workers: &mut Workers) {
        report_failure(task.src_worker, task.task_id, &task.payload, why, workers);
    }

    /// The Redis link submitted `batch`: Redis holds them under the
    /// queue-wide ids `outcome` lists, or could not take them. Says which
    /// clients to acknowledge or answer with the error; a worker's task
    /// that Redis did not take reaches its onTaskFailed.
    pub fn submitted(
        &mut self,
        batch: &[QueuedTask],
        outcome: Result<Vec<u64>, String>,
        workers: &mut Workers,
    ) -> Committed {
        match outcome {
            Ok(ids) => Committed::Acks(
                batch
                    .iter()
                    .zip(ids)
                    .filter_map(|(t, id)| self.remote_acks.remove(&t.id).map(|fd| (fd, id)))
                    .collect(),
            ),
            Err(why) => {
                let mut sessions = Vec::new();
                for task in batch {
                    if let Some(fd) = self.remote_acks.remove(&task.id) {
                        sessions.push(fd);
                        continue;
                    }
                    self.counters.failed_tasks += 1;
                    crate::log!(
                        Level::Error,
                        "task {} from worker #{} not queued: {why}",
                        task.task_id,
                        task.src_worker
                    );
                    if let Ok(w) = u32::try_from(task.src_worker) {
                        self.awaited_remote.remove(&(w, task.task_id));
                    }
                    self.report_failure(task, &why, workers);
                }
                Committed::Failed(sessions, why)
            }
        }
    }

    /// The Redis link took tasks for this server: they wait for its task
    /// workers. Those Redis had already given up on (their servers kept
    /// dying while running them) reach onTaskFailed here if this server's
    /// worker or a client submitted them; another server's worker hears of
    /// it through that server's results stream.
    pub fn taken(&mut self, taken: taskq_redis::Taken, workers: &mut Workers) {
        let Some(ledger) = self.remote.clone() else {
            return;
        };
        for junk in taken.dropped {
            crate::log!(
                Level::Error,
                "task backend: {junk}; not written by taskq, acknowledged and deleted"
            );
        }
        for failed in taken.exhausted {
            self.counters.failed_tasks += 1;
            let task = failed.task;
            crate::log!(
                Level::Error,
                "task {} (queue id {}) given up, in the failed list: {}",
                task.src_task_id,
                task.id,
                failed.error
            );
            if task.src_worker < 0 || task.origin == ledger.borrow().consumer() {
                let payload = ledger.borrow().admitted_or_empty(&task.payload);
                report_failure(
                    task.src_worker,
                    task.src_task_id,
                    &payload,
                    &failed.error,
                    workers,
                );
            }
        }
        let refused = ledger.borrow_mut().taken(taken.entries);
        if refused > 0 {
            crate::log!(
                Level::Warning,
                "{refused} task(s) from Redis refused (payload not allowed here); moved to the failed list"
            );
        }
        self.assign(now_ms(), workers);
    }

    /// `failedTasks()`, `retryFailed()`, `purgeFailed()` and the admin
    /// API: answered here from a local queue, or None when the Redis link
    /// will answer ticket `ticket`. Retried tasks are handed out at once.
    pub fn failed_op(&mut self, op: FailedOp, ticket: u64, workers: &mut Workers) -> Option<Value> {
        if let Some(ledger) = &self.remote {
            ledger.borrow_mut().ask(ticket, op);
            return None;
        }
        let Some(store) = self.dispatcher.failures() else {
            return Some(json!({ "error": "this queue keeps no failed tasks" }));
        };
        let answer = match op {
            FailedOp::List { offset, limit } => store
                .list(offset, limit)
                .map(|l| Value::Array(l.iter().map(FailedTask::to_json).collect())),
            FailedOp::Get(id) => store
                .get(id)
                .map(|t| json!({ "task": t.as_ref().map(FailedTask::to_json) })),
            FailedOp::Retry(which) => store.retry(&which).map(Value::from),
            FailedOp::Purge(which) => store.purge(&which).map(Value::from),
        };
        self.assign(now_ms(), workers);
        Some(answer.unwrap_or_else(|e| json!({ "error": e.to_string() })))
    }

    /// Results other servers (or this one) ran for this server's workers:
    /// each reaches onFinish, or the taskwait() blocked on it; a task
    /// another server gave up reaches onTaskFailed.
    pub fn remote_results(&mut self, results: Vec<taskq_redis::TaskResult>, workers: &mut Workers) {
        let Some(ledger) = self.remote.clone() else {
            return;
        };
        for r in results {
            if let Some(why) = &r.error {
                if let Ok(w) = u32::try_from(r.src_worker) {
                    self.awaited_remote.remove(&(w, r.src_task_id));
                }
                let payload = ledger.borrow().admitted_or_empty(&r.payload);
                report_failure(r.src_worker, r.src_task_id, &payload, why, workers);
                continue;
            }
            let payload = match remote_queue::decode(&r.payload, &self.rules.untrusted) {
                Ok(p) => p,
                Err(why) => {
                    crate::log!(
                        Level::Warning,
                        "result of task {} (queue id {}) dropped: {why}",
                        r.src_task_id,
                        r.task_id
                    );
                    continue;
                }
            };
            let Ok(w) = u32::try_from(r.src_worker) else {
                continue;
            };
            if !workers.is_event_worker(r.src_worker) {
                continue;
            }
            let waiter = self.awaited_remote.remove(&(w, r.src_task_id));
            workers.push_result(
                w,
                waiter,
                &ToWorker::Finish {
                    task_id: r.src_task_id,
                    payload,
                },
                false,
            );
        }
    }

    /// How many more tasks this server may take from Redis now: enough to
    /// fill every task worker's window (one each while tasks are slow), no
    /// more, so a task never waits here while another server idles; less
    /// while settlements pile up, so that backlog stays bounded.
    pub fn remote_room(&self) -> usize {
        let Some(ledger) = &self.remote else {
            return 0;
        };
        let want = self.rules.task_worker_num as usize * self.dispatcher.batch();
        // Settlements Redis has not taken beyond one window's worth mean
        // the task workers outrun the settler: take less until it caught up.
        let ledger = ledger.borrow();
        let behind = ledger.unsettled().saturating_sub(want);
        want.saturating_sub(self.running() + ledger.waiting() + behind)
    }

    /// Runs due work: delayed tasks that became runnable, task timeouts.
    /// Returns when to call again (unix ms), if ever.
    pub fn tick(&mut self, workers: &mut Workers) -> Option<u64> {
        let now = now_ms();
        self.assign(now, workers);
        let mut next = self.dispatcher.next_due();
        if let Some(timeout) = self.rules.task_timeout_ms.filter(|t| *t > 0) {
            for t in self.dispatcher.overdue(now.saturating_sub(timeout)) {
                workers.kill_overdue(t, timeout);
            }
            if let Some(oldest) = self.dispatcher.oldest_start() {
                let at = oldest + timeout;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Group commit at the end of a turn: starts making every submission
    /// since the last one durable (finished tasks may wait up to
    /// [`crate::store::SYNC_WITHIN`] for their sync) and says which client
    /// submissions the commits that ended since acknowledge, or that they
    /// failed.
    pub fn commit(&mut self) -> Vec<Committed> {
        let open = self.dispatcher.generation();
        let mut sessions = self
            .pending_acks
            .iter()
            .rev()
            .take_while(|(g, _, _)| *g == open)
            .map(|(_, fd, _)| *fd);
        let waiting = match sessions.next() {
            None => 0,
            Some(first) => 1 + usize::from(sessions.any(|fd| fd != first)),
        };
        self.dispatcher.commit_turn(waiting);
        self.answers()
    }

    /// Every change durable before it returns, for the stop.
    pub fn commit_all(&mut self) -> Vec<Committed> {
        let _ = self.dispatcher.commit();
        self.answers()
    }

    /// Whether tasks came back from disk, to hand out.
    pub fn refilled(&mut self) -> bool {
        self.dispatcher.refilled()
    }

    /// Whether a commit waits for its sync (the committer comes back for it).
    pub fn unsynced(&self) -> bool {
        self.dispatcher.unsynced()
    }

    /// The acknowledgements of the commits that ended.
    fn answers(&mut self) -> Vec<Committed> {
        let mut out = Vec::new();
        for (generation, result) in self.dispatcher.settled() {
            let covered = self
                .pending_acks
                .iter()
                .take_while(|(g, _, _)| *g <= generation)
                .count();
            if let Err(e) = &result {
                crate::log!(Level::Error, "task store commit failed: {e}");
            }
            if covered == 0 {
                continue;
            }
            let acks = self.pending_acks.drain(..covered);
            out.push(match result {
                Ok(()) => Committed::Acks(acks.map(|(_, fd, id)| (fd, id)).collect()),
                Err(e) => Committed::Failed(acks.map(|(_, fd, _)| fd).collect(), e.to_string()),
            });
        }
        out
    }

    /// `TaskClient::batch()`, `taskq watch --batch` and the admin API: the
    /// progress of batch `name` (None if unknown), or of every unfinished
    /// batch. An error with the Redis backend, whose batches no one server
    /// sees through.
    pub fn batch(&self, name: Option<&str>) -> Result<Option<Value>, &'static str> {
        if self.remote.is_some() {
            return Err(NOT_TRACKED);
        }
        Ok(match name {
            Some(name) => self.batches.report(name),
            None => Some(Value::Array(self.batches.unfinished())),
        })
    }

    /// The status page's batches: up to `limit` (unfinished first, see
    /// `Batches::recent`) and how many are tracked in all; the same error
    /// as [`Tasks::batch`] with the Redis backend.
    pub fn recent_batches(&self, limit: usize) -> Result<(Vec<Value>, usize), &'static str> {
        if self.remote.is_some() {
            return Err(NOT_TRACKED);
        }
        Ok(self.batches.recent(limit))
    }

    /// Tasks accepted and not yet started.
    pub fn queued(&self) -> usize {
        self.dispatcher.queued()
    }

    /// Of the queued tasks, those whose delay or retry backoff is not over.
    pub fn delayed(&self) -> usize {
        self.dispatcher.delayed()
    }

    /// What the metrics time.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.dispatcher.running_count()
    }

    /// Tasks accepted but not finished, for the shutdown log and the drain
    /// watch. Board posts are not read here: at shutdown every worker's link
    /// has ended, and each end read the board (`worker_gone`).
    pub fn unfinished(&self) -> usize {
        self.queued() + self.running()
    }

    /// Runs task worker index `t`'s current process ended.
    pub fn handled(&self, t: usize) -> u64 {
        self.dispatcher.handled(t)
    }

    /// The task task worker `t` runs now and when it started (unix ms).
    pub fn current(&self, t: usize) -> Option<(u64, u64)> {
        self.dispatcher.current(t)
    }

    /// Whether task worker index `t` holds an unfinished task.
    pub fn is_busy(&self, t: usize) -> bool {
        self.dispatcher.is_busy(t)
    }

    /// Online task workers running nothing.
    pub fn idle_workers(&self) -> usize {
        self.dispatcher.idle_workers()
    }

    /// What the tasks counted.
    pub fn counters(&self) -> &TaskCounters {
        &self.counters
    }
}

/// onTaskFailed for the task `task_id` of worker `src_worker`, or in
/// worker 0 for a client's task; nowhere if this server has no workers.
fn report_failure(
    src_worker: i32,
    task_id: i64,
    payload: &Payload,
    why: &str,
    workers: &mut Workers,
) {
    let target = if workers.is_event_worker(src_worker) {
        src_worker as u32
    } else if workers.event_workers() > 0 {
        0
    } else {
        return;
    };
    workers.push_event(
        target,
        &ToWorker::TaskFailed {
            task_id,
            error: why.to_owned(),
            payload: payload.clone(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::outbox::take_messages;
    use crate::payload::Encoding;
    use crate::php_serial::{AllowedClasses, Policy};
    use crate::queue::MemoryQueue;
    use bytes::Bytes;

    fn rules(task_workers: u32, durable: bool) -> TaskRules {
        TaskRules {
            task_worker_num: task_workers,
            task_window: 1,
            task_queue_max: 2,
            task_max_attempts: 2,
            worker_task_max_attempts: 1,
            task_retry_delay_ms: 1,
            task_timeout_ms: None,
            durable,
            untrusted: Policy {
                classes: AllowedClasses::None,
                max_depth: 8,
            },
        }
    }

    fn setup(task_workers: u32, durable: bool) -> (Tasks, Workers) {
        setup_with(rules(task_workers, durable))
    }

    fn setup_with(rules: TaskRules) -> (Tasks, Workers) {
        let task_workers = rules.task_worker_num;
        let board = Arc::new(Board::new(task_workers as usize).unwrap());
        let tasks = Tasks::new(rules, Box::new(MemoryQueue::default()), 1, board, None);
        let workers = Workers::new(
            1,
            task_workers,
            1 << 20,
            Rc::new(Notify::new()),
            Rc::new(Notify::new()),
        );
        (tasks, workers)
    }

    fn raw(data: &'static [u8]) -> Payload {
        Payload {
            encoding: Encoding::Raw,
            data: Bytes::from_static(data),
        }
    }

    fn request(data: &'static [u8]) -> TaskRequest {
        TaskRequest {
            payload: raw(data),
            priority: 0,
            delay_ms: 0,
            max_attempts: 0,
            batch: None,
        }
    }

    #[test]
    fn a_client_task_is_acknowledged_at_once_in_memory_and_at_the_commit_with_a_store() {
        let (mut tasks, _) = setup(1, false);
        assert_eq!(tasks.client_task(5, request(b"a")), Ok(Accepted::Now(1)));
        let (mut durable, _) = setup(1, true);
        assert_eq!(
            durable.client_task(5, request(b"a")),
            Ok(Accepted::AtCommit)
        );
        assert_eq!(durable.commit(), [Committed::Acks(vec![(5, 1)])]);
        assert_eq!(durable.commit(), []);
    }

    #[test]
    fn client_tasks_are_refused_with_the_protocol_code() {
        let (mut none, _) = setup(0, false);
        assert_eq!(
            none.client_task(1, request(b"a")).unwrap_err().code,
            code::NO_TASK_WORKERS
        );
        let (mut tasks, _) = setup(1, false);
        let mut bad = request(b"O:8:\"stdClass\":0:{}");
        bad.payload.encoding = Encoding::Serialized;
        assert_eq!(
            tasks.client_task(1, bad).unwrap_err().code,
            code::BAD_REQUEST
        );
        for _ in 0..2 {
            tasks.client_task(1, request(b"a")).unwrap();
        }
        assert_eq!(
            tasks.client_task(1, request(b"a")).unwrap_err().code,
            code::QUEUE_FULL,
            "task_queue_max 2, no task worker online to take them"
        );
    }

    #[test]
    fn a_task_reaches_its_worker_and_its_result_the_dispatching_worker() {
        let (mut tasks, mut w) = setup(1, false);
        let (g0, event_outbox) = w.joined(0, 10).unwrap();
        let (g1, task_outbox) = w.joined(1, 11).unwrap();
        tasks.joined(0, g1, 0, &w);
        tasks.worker_task(0, g0, (3, -1, false), raw(b"job"), &mut w);
        let sent = take_messages(&task_outbox);
        let ToWorker::Task { id, task_id, .. } = sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(task_id, 3);
        assert_eq!(tasks.running(), 1);
        tasks.result(0, id, raw(b"out"), &mut w);
        tasks.done(0, id, 10, &w);
        assert_eq!(tasks.unfinished(), 0);
        assert_eq!(
            take_messages(&event_outbox),
            vec![ToWorker::Finish {
                task_id: 3,
                payload: raw(b"out")
            }]
        );
    }

    #[test]
    fn results_may_wait_for_the_next_write_only_while_tasks_wait_and_no_one_awaits_them() {
        let (mut tasks, mut w) = setup_with(TaskRules {
            task_queue_max: 100,
            ..rules(1, false)
        });
        let (g0, event_outbox) = w.joined(0, 10).unwrap();
        let (g1, task_outbox) = w.joined(1, 11).unwrap();
        tasks.joined(0, g1, 0, &w);
        for task_id in 0..40 {
            tasks.worker_task(0, g0, (task_id, -1, task_id == 1), raw(b"job"), &mut w);
        }
        let mut results = Vec::new();
        while tasks.unfinished() > 0 {
            let sent = take_messages(&task_outbox);
            assert!(!sent.is_empty(), "the window is refilled");
            for msg in sent {
                let ToWorker::Task { id, task_id, .. } = msg else {
                    panic!("{msg:?}")
                };
                let backlog = tasks.queued() > 1;
                event_outbox.take();
                tasks.result(0, id, raw(b"out"), &mut w);
                results.push(task_id);
                assert_eq!(
                    event_outbox.holds_urgent(),
                    task_id == 1 || !tasks.dispatcher.backlogged(),
                    "result of task {task_id}, {} queued",
                    tasks.queued()
                );
                if task_id == 0 {
                    assert!(backlog, "the first results come while tasks wait");
                    assert!(!event_outbox.holds_urgent(), "so the first may wait");
                }
                tasks.done(0, id, 10, &w);
            }
        }
        assert_eq!(results, (0..40).collect::<Vec<_>>());
        assert!(
            event_outbox.holds_urgent(),
            "the last result, with nothing queued"
        );
    }

    #[test]
    fn a_task_that_throws_on_its_last_attempt_reaches_on_task_failed() {
        let (mut tasks, mut w) = setup(1, false);
        let (g0, event_outbox) = w.joined(0, 10).unwrap();
        let (g1, task_outbox) = w.joined(1, 11).unwrap();
        tasks.joined(0, g1, 0, &w);
        tasks.worker_task(0, g0, (4, -1, false), raw(b"job"), &mut w);
        let ToWorker::Task { id, .. } = take_messages(&task_outbox)[0] else {
            panic!()
        };
        tasks.failed(0, id, "boom\nat line 2", &mut w);
        assert_eq!(tasks.counters().failed_tasks, 1);
        assert_eq!(
            take_messages(&event_outbox),
            vec![ToWorker::TaskFailed {
                task_id: 4,
                error: "boom".into(),
                payload: raw(b"job")
            }]
        );
    }

    #[test]
    fn the_tasks_of_a_dead_worker_go_to_its_successor() {
        let (mut tasks, mut w) = setup(1, false);
        let (g1, first) = w.joined(1, 11).unwrap();
        tasks.joined(0, g1, 0, &w);
        tasks.client_task(1, request(b"a")).unwrap();
        tasks.assign(now_ms(), &w);
        assert_eq!(take_messages(&first).len(), 1);
        let killed = w.gone(1, g1) == Some(super::super::workers::Departure::TaskTimeout);
        tasks.worker_gone((1, 0), g1, killed, &mut w);
        assert_eq!(tasks.counters().requeued_tasks, 1);
        let (g2, second) = w.joined(1, 12).unwrap();
        tasks.joined(0, g2, 0, &w);
        assert!(matches!(
            take_messages(&second)[..],
            [ToWorker::Task { id: 1, .. }]
        ));
    }

    #[test]
    fn runs_are_counted_finished_or_retried_and_timed() {
        let (mut tasks, mut w) = setup(1, false);
        let (g1, task_outbox) = w.joined(1, 11).unwrap();
        tasks.joined(0, g1, 0, &w);
        tasks.client_task(1, request(b"a")).unwrap();
        tasks.assign(now_ms(), &w);
        let ToWorker::Task { id, .. } = take_messages(&task_outbox)[0] else {
            panic!()
        };
        tasks.failed(0, id, "boom", &mut w);
        assert_eq!(tasks.counters().retried_tasks, 1, "2 attempts allowed");
        std::thread::sleep(std::time::Duration::from_millis(5));
        tasks.tick(&mut w);
        let ToWorker::Task { id, .. } = take_messages(&task_outbox)[0] else {
            panic!("the retry goes out once its 1 ms backoff is over")
        };
        tasks.done(0, id, 1500, &w);
        let c = tasks.counters();
        assert_eq!((c.finished_tasks, c.failed_tasks), (1, 0));
        let text = super::super::metrics::render(Default::default(), tasks.timings());
        assert!(
            text.contains("taskq_task_queue_wait_seconds_count 2\n"),
            "{text}"
        );
        assert!(text.contains("taskq_task_run_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("taskq_task_run_seconds_sum 0.0015\n"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_internal_task_reaches_on_task_failed() {
        let (mut tasks, mut w) = setup(1, false);
        let (g0, event_outbox) = w.joined(0, 10).unwrap();
        tasks.worker_task(0, g0, (9, 5, false), raw(b"x"), &mut w);
        assert!(matches!(
            &take_messages(&event_outbox)[..],
            [ToWorker::TaskFailed { task_id: 9, error, .. }] if error == "task worker 5 does not exist"
        ));
    }

    #[test]
    fn with_redis_a_client_is_acknowledged_with_the_queue_id_once_redis_holds_its_task() {
        let board = Arc::new(Board::new(0).unwrap());
        let ledger = crate::remote_queue::Ledger::new("a:1", rules(0, false).untrusted);
        let mut tasks = Tasks::new(
            rules(0, false),
            Box::new(crate::remote_queue::RemoteQueue::new(ledger.clone())),
            1,
            board,
            Some(ledger.clone()),
        );
        let mut w = Workers::new(
            1,
            0,
            1 << 20,
            Rc::new(Notify::new()),
            Rc::new(Notify::new()),
        );
        let (g0, event_outbox) = w.joined(0, 10).unwrap();
        assert_eq!(
            tasks.client_task(5, request(b"a")),
            Ok(Accepted::AtCommit),
            "no task workers here: another server runs it"
        );
        tasks.client_task(6, request(b"b")).unwrap();
        let batch = ledger.borrow_mut().take_submits(10);
        assert_eq!(
            tasks.submitted(&batch[..1], Ok(vec![900]), &mut w),
            Committed::Acks(vec![(5, 900)])
        );
        assert_eq!(
            tasks.submitted(&batch[1..], Err("Redis down".into()), &mut w),
            Committed::Failed(vec![6], "Redis down".into())
        );
        tasks.worker_task(0, g0, (3, -1, false), raw(b"job"), &mut w);
        let batch = ledger.borrow_mut().take_submits(10);
        tasks.submitted(&batch, Err("Redis down".into()), &mut w);
        assert!(matches!(
            &take_messages(&event_outbox)[..],
            [ToWorker::TaskFailed { task_id: 3, error, .. }] if error == "Redis down"
        ));
        assert_eq!(
            tasks.remote_room(),
            0,
            "a server without task workers takes nothing"
        );
    }
}
