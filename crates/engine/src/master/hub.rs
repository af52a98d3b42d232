//! The router between the master's rooms: what a client connection or a
//! worker link brings in goes to the room that owns it ([`Sessions`],
//! [`Workers`], [`Tasks`]), and what crosses rooms (a message to a worker,
//! a task's acknowledgement to a client) is passed on here. Every network
//! task calls into it synchronously (the master runs on one thread), so
//! routing a message is a function call, not a channel hop.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use super::asks::{Asker, Asks};
use super::depth_watch::{DepthWatch, Swing};
use super::history::{History, Sample};
use super::outbox::Outbox;
use super::parking::{Lot, Parked, Resumed};
use super::sessions::{SessionRules, Sessions};
use super::stats::{self, Counters};
use super::tasks::{Accepted, Committed, TaskRules, Tasks};
use super::waiters::{Answer, Waiters};
use super::workers::{Departure, WorkerRow, Workers};
use super::MasterConfig;
use crate::board::Board;
use crate::failed::FailedOp;
use crate::ipc::{FromWorker, ToWorker};
use crate::log::Level;
use crate::payload::Payload;
use crate::protocol::{code, TaskRequest};
use crate::query::{Query, WORKER_BUSY, WORKER_EXIT, WORKER_IDLE};
use crate::queue::{now_ms, QueuedTask, TaskQueue};
use crate::remote_queue::SharedLedger;
use crate::supervisor::ManagerOrder;

/// The master's state, in rooms.
pub struct Hub {
    cfg: Rc<MasterConfig>,
    sessions: Sessions,
    workers: Workers,
    tasks: Tasks,
    start_time: u64,
    /// Wakes the trimmer after a large drain (`master::trimmer`).
    trim: Rc<Notify>,
    /// Tells the trimmer the queue rose by a large step: it trims once the
    /// rise stopped.
    risen: Rc<Notify>,
    depth_watch: DepthWatch,
    stopping: bool,
    /// The manager, which takes `stop($workerId)` orders from the master.
    manager: Pid,
    /// `POST /tasks` submissions waiting for their acknowledgement.
    waiters: Waiters,
    /// Questions about failed tasks waiting for the Redis link's answer.
    asks: Asks,
    /// The last minutes of task counters, for the status page's charts.
    history: History,
}

impl Hub {
    /// State for the configured worker counts over `queue`, whose task ids
    /// continue from `next_task` (recovered from a durable store).
    pub fn new(
        cfg: Rc<MasterConfig>,
        queue: Box<dyn TaskQueue>,
        next_task: u64,
        board: Arc<Board>,
        manager: Pid,
        remote: Option<SharedLedger>,
    ) -> Self {
        let trim = Rc::new(Notify::new());
        let sessions = Sessions::new(SessionRules {
            dispatch_mode: cfg.dispatch_mode,
            max_conn: cfg.max_conn,
            auth_token: cfg.auth_token.clone(),
            auth_max_pending: cfg.auth_max_pending,
            server_port: cfg.server_port,
            sock_type: cfg.sock_type,
        });
        let sessions = match Lot::new(trim.clone()) {
            Ok(lot) => sessions.with_lot(lot),
            Err(e) => {
                crate::log!(
                    Level::Warning,
                    "cannot make the epoll set for idle connections ({e}); they keep their tasks"
                );
                sessions
            }
        };
        Hub {
            sessions,
            workers: Workers::new(
                cfg.worker_num,
                cfg.task_worker_num,
                cfg.outbox_high_water,
                Rc::new(Notify::new()),
                trim.clone(),
            ),
            tasks: Tasks::new(
                TaskRules {
                    task_worker_num: cfg.task_worker_num,
                    task_window: cfg.task_window,
                    task_queue_max: cfg.task_queue_max,
                    task_max_attempts: cfg.task_max_attempts,
                    worker_task_max_attempts: cfg.worker_task_max_attempts,
                    task_retry_delay_ms: cfg.task_retry_delay_ms,
                    task_timeout_ms: cfg.task_timeout_ms,
                    durable: cfg.durable,
                    untrusted: cfg.untrusted.clone(),
                },
                queue,
                next_task,
                board,
                remote,
            ),
            start_time: stats_now(),
            trim,
            risen: Rc::new(Notify::new()),
            depth_watch: DepthWatch::default(),
            stopping: false,
            manager,
            waiters: Waiters::default(),
            asks: Asks::default(),
            history: History::default(),
            cfg,
        }
    }

    /// The configuration the hub was built with.
    pub fn config(&self) -> Rc<MasterConfig> {
        self.cfg.clone()
    }

    /// What the trimmer waits on: trims asked for now, and rises of the
    /// queue to trim after.
    pub fn trims(&self) -> (Rc<Notify>, Rc<Notify>) {
        (self.trim.clone(), self.risen.clone())
    }

    /// What the committer waits on.
    pub fn commit_needed(&self) -> Arc<Notify> {
        self.tasks.commit_needed()
    }

    /// What the scheduler waits on besides its deadline.
    pub fn reschedule(&self) -> Rc<Notify> {
        self.tasks.reschedule()
    }

    /// A fresh outbox for a client.
    pub fn client_outbox(&self) -> Rc<Outbox> {
        Rc::new(Outbox::for_client(self.trim.clone()))
    }

    /// Called after each batch of messages: tells the trimmer of a large
    /// swing of unfinished tasks (see [`DepthWatch`]).
    pub fn note_queue_depth(&mut self) {
        match self.depth_watch.note(self.tasks.unfinished()) {
            Some(Swing::Drained) => self.trim.notify_one(),
            Some(Swing::Rose) => self.risen.notify_one(),
            None => {}
        }
    }

    /// Registers a new client; `None` when `max_conn` is reached.
    pub fn client_opened(
        &mut self,
        peer: Option<SocketAddr>,
        outbox: Rc<Outbox>,
        closer: Rc<Notify>,
    ) -> Option<u64> {
        let (fd, worker) = self.sessions.open(peer, outbox, closer, &self.workers)?;
        if self.cfg.events.connect {
            self.workers
                .push_event(worker, &ToWorker::Connect { fd, reactor_id: 0 });
        }
        Some(fd)
    }

    /// The client proved it speaks taskq's framed protocol.
    pub fn client_is_taskq(&mut self, fd: u64) {
        self.sessions.speaks_taskq(fd);
    }

    /// The client speaks another protocol, or has said nothing for
    /// `GREETING_HOLD`.
    pub fn client_speaks_raw(&mut self, fd: u64) {
        self.sessions.speaks_raw(fd);
    }

    /// One complete client message: one onReceive.
    pub fn client_message(&mut self, fd: u64, data: Bytes) {
        if self.stopping {
            return self.sessions.refuse_stopping(fd);
        }
        if let Some(worker) = self.sessions.message_from(fd, data.len(), &self.workers) {
            self.workers.push_event(
                worker,
                &ToWorker::Receive {
                    fd,
                    reactor_id: 0,
                    data,
                },
            );
        }
    }

    /// A message sent with `ack`: routed like any message, then acknowledged.
    pub fn client_message_acked(&mut self, fd: u64, data: Bytes) {
        if self.stopping {
            return self.sessions.refuse_stopping(fd);
        }
        self.client_message(fd, data);
        self.sessions.answer_ack(fd, 0);
    }

    /// `TaskClient::task()`: acknowledged once the queue holds it, or
    /// refused at once.
    pub fn client_task(&mut self, fd: u64, req: TaskRequest) {
        if self.stopping {
            if Waiters::owns(fd) {
                return self.task_refused(fd, code::STOPPING, "the server is stopping");
            }
            return self.sessions.refuse_stopping(fd);
        }
        match self.tasks.client_task(fd, req) {
            Ok(accepted) => {
                if let Accepted::Now(id) = accepted {
                    self.task_acked(fd, id);
                }
                self.tasks.assign(now_ms(), &self.workers);
                self.note_queue_depth();
            }
            Err(refused) => self.task_refused(fd, refused.code, &refused.message),
        }
    }

    /// A task submitted over HTTP (`POST /tasks`): the same path as
    /// [`Hub::client_task`], answered on the returned channel instead of a
    /// connection, once the queue holds the task (or refused it).
    pub fn http_task(&mut self, req: TaskRequest) -> oneshot::Receiver<Answer> {
        let (fd, answer) = self.waiters.open();
        self.client_task(fd, req);
        answer
    }

    /// Acknowledges submission `fd` (a connection or an HTTP waiter).
    fn task_acked(&mut self, fd: u64, id: u64) {
        if Waiters::owns(fd) {
            self.waiters.answer(fd, Ok(id));
        } else {
            self.sessions.answer_ack(fd, id);
        }
    }

    /// Refuses submission `fd` (a connection or an HTTP waiter).
    fn task_refused(&mut self, fd: u64, code: u32, message: &str) {
        if Waiters::owns(fd) {
            self.waiters.answer(fd, Err((code, message.to_string())));
        } else {
            self.sessions.answer_error(fd, code, message);
        }
    }

    /// What session `fd`'s reader must wait for before reading more (see
    /// [`Sessions::holding_back`]).
    pub fn holding_back(&self, fd: u64) -> Option<Rc<Notify>> {
        self.sessions.holding_back(fd, &self.workers)
    }

    /// Whether the configured auth_token equals `token` (constant time).
    pub fn token_ok(&self, token: &[u8]) -> bool {
        self.sessions.token_ok(token)
    }

    /// Session `fd` presented the right auth_token. False when `max_conn`
    /// authenticated connections are open already: the caller refuses it.
    pub fn client_authenticated(&mut self, fd: u64) -> bool {
        self.sessions.authenticated(fd)
    }

    /// Tells a foreign client why it is refused, in plain text, before the
    /// connection is closed (only where the framing is raw: any other framing
    /// would misread the text).
    pub fn refuse_foreign(&mut self, fd: u64, why: &str) {
        if self.cfg.packet.mode == crate::packet::PacketMode::Raw {
            self.sessions.refuse_foreign(fd, why);
        }
    }

    /// The client connection ended, by either side.
    pub fn client_closed(&mut self, fd: u64) {
        if let Some(closed) = self.sessions.closed(fd) {
            if self.cfg.events.close {
                self.workers
                    .push(closed.worker, &ToWorker::Close { fd, reactor_id: 0 });
            }
            // Thousands of idle connections closing leave their buffers
            // and tasks in the allocator's free lists: without a trim the
            // master stayed at its high-water mark (issue 17 §6).
            if closed.many_gone {
                self.trim.notify_one();
            }
        }
    }

    /// `TaskClient::batch()`: the batch's progress as a JSON reply, or an
    /// error naming why there is none.
    pub fn client_batch(&mut self, fd: u64, name: &[u8]) {
        let name = String::from_utf8_lossy(name);
        match self.batch(Some(&name)) {
            Ok(Some(report)) => self.sessions.answer_reply(fd, &report),
            Ok(None) => self.sessions.answer_error(
                fd,
                code::UNKNOWN_BATCH,
                &format!("no batch named {name:?} (no task was tagged with it, or it finished long ago and was forgotten)"),
            ),
            Err(why) => self.sessions.answer_error(fd, code::BAD_REQUEST, why),
        }
    }

    /// The progress of batch `name`, or of every unfinished batch, with
    /// the completions posted on the board counted first.
    pub fn batch(&mut self, name: Option<&str>) -> Result<Option<Value>, &'static str> {
        self.tasks.settle(now_ms());
        self.tasks.batch(name)
    }

    /// The status page's batches (see `Tasks::recent_batches`), with the
    /// completions posted on the board counted first.
    pub fn recent_batches(&mut self, limit: usize) -> Result<(Vec<Value>, usize), &'static str> {
        self.tasks.settle(now_ms());
        self.tasks.recent_batches(limit)
    }

    /// Sends an ERROR answer to a taskq client.
    pub fn answer_error(&mut self, fd: u64, code: u32, message: &str) {
        self.sessions.answer_error(fd, code, message);
    }

    /// Acknowledges an `auth_token` frame.
    pub fn answer_ack(&mut self, fd: u64) {
        self.sessions.answer_ack(fd, 0);
    }

    /// Parks session `fd`'s idle connection (see `parking`); hands it back
    /// when it cannot be parked.
    pub fn park(&mut self, fd: u64, parked: Parked) -> Result<(), Parked> {
        self.sessions.park(fd, parked)
    }

    /// A parked connection's socket became readable: brings it back.
    pub fn wake_parked(&mut self, fd: u64) {
        self.sessions.wake_parked(fd);
    }

    /// Parked connections brought back since the last call, for their tasks.
    pub fn take_resumed(&mut self) -> Vec<Resumed> {
        self.sessions.take_resumed()
    }

    /// When the lot's memory is next to be given back (see `Lot::next_settle`).
    pub fn next_settle(&self) -> Option<std::time::Duration> {
        self.sessions.next_settle()
    }

    /// Gives back what the connections parked since the last trim held.
    pub fn settle_parking(&mut self) {
        self.sessions.settle_parking();
    }

    /// Whether idle connections can be parked.
    pub fn can_park(&self) -> bool {
        self.sessions.can_park()
    }

    /// The lot's epoll descriptor and wake-up, when idle connections can be
    /// parked.
    pub fn lot_handles(&self) -> Option<std::io::Result<(std::os::fd::OwnedFd, Rc<Notify>)>> {
        self.sessions.lot_handles()
    }

    /// The refusal for a connection over `max_conn`.
    pub fn max_conn(&self) -> usize {
        self.sessions.max_conn()
    }

    /// Group commit: starts making every queue change since the last call
    /// durable, and acknowledges the submissions of the commits that ended
    /// (or reports their failure). A job of the store's writer may have
    /// read tasks back from disk: they go out to free task workers.
    pub fn commit(&mut self) {
        for committed in self.tasks.commit() {
            self.answer_committed(committed, code::STORE);
        }
        if self.tasks.refilled() {
            self.tasks.assign(now_ms(), &self.workers);
        }
    }

    /// [`Hub::commit`] waiting until everything is durable, for the stop.
    pub fn commit_all(&mut self) {
        for committed in self.tasks.commit_all() {
            self.answer_committed(committed, code::STORE);
        }
    }

    /// Whether a commit waits for its sync (see [`Tasks::unsynced`]).
    pub fn unsynced(&self) -> bool {
        self.tasks.unsynced()
    }

    /// Answers the clients whose submissions a commit (to the store or to
    /// Redis) covered; a failure is answered with `error_code`.
    fn answer_committed(&mut self, committed: Committed, error_code: u32) {
        match committed {
            Committed::Acks(acks) => {
                for (fd, id) in acks {
                    self.task_acked(fd, id);
                }
            }
            Committed::Failed(fds, why) => {
                for fd in fds {
                    self.task_refused(fd, error_code, &why);
                }
            }
        }
    }

    /// The ledger of the Redis backend, if tasks live in Redis.
    pub fn ledger(&self) -> Option<SharedLedger> {
        self.tasks.ledger()
    }

    /// The Redis link submitted `batch` (see [`Tasks::submitted`]).
    pub fn submitted(&mut self, batch: &[QueuedTask], outcome: Result<Vec<u64>, String>) {
        let committed = self.tasks.submitted(batch, outcome, &mut self.workers);
        self.answer_committed(committed, code::BACKEND);
    }

    /// The Redis link took tasks for this server's task workers.
    pub fn taken(&mut self, taken: taskq_redis::Taken) {
        self.tasks.taken(taken, &mut self.workers);
    }

    /// The Redis link read results for this server's workers.
    pub fn remote_results(&mut self, results: Vec<taskq_redis::TaskResult>) {
        self.tasks.remote_results(results, &mut self.workers);
    }

    /// How many tasks this server may take from Redis now.
    pub fn remote_room(&self) -> usize {
        self.tasks.remote_room()
    }

    /// Runs due work: delayed tasks that became runnable, task timeouts.
    /// Returns when to call again (unix ms), if ever.
    pub fn tick(&mut self) -> Option<u64> {
        self.tasks.tick(&mut self.workers)
    }

    /// Pids of the workers connected now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.pids()
    }

    /// The stop began: refuse new client submissions.
    pub fn begin_stop(&mut self) {
        self.stopping = true;
    }

    /// A worker incarnation said hello; returns its generation and the
    /// outbox its writer must drain. A task worker is handed at most
    /// `max_tasks` tasks (0 = no limit).
    pub fn worker_joined(
        &mut self,
        worker: u32,
        pid: u32,
        max_tasks: u64,
    ) -> Option<(u64, Rc<Outbox>)> {
        let (generation, outbox) = self.workers.joined(worker, pid)?;
        if let Some(t) = self.workers.task_index(worker) {
            self.tasks.joined(t, generation, max_tasks, &self.workers);
        }
        Some((generation, outbox))
    }

    /// The link of incarnation `generation` ended (exit or crash).
    pub fn worker_gone(&mut self, worker: u32, generation: u64) {
        let departure = self.workers.gone(worker, generation);
        if let (Some(d), false) = (departure, self.stopping) {
            self.workers.restarted(worker, d);
        }
        let killed = departure == Some(Departure::TaskTimeout);
        if let Some(t) = self.workers.task_index(worker) {
            self.tasks
                .worker_gone((worker, t), generation, killed, &mut self.workers);
        }
    }

    /// `$server->task()` from the master's onStart or the manager's
    /// onManagerStart.
    pub fn one_way_task(&mut self, task_id: i64, dst: i32, payload: Payload) {
        self.tasks.one_way(task_id, dst, payload, &mut self.workers);
    }

    /// Handles one message from worker `worker`.
    pub fn worker_message(&mut self, worker: u32, generation: u64, msg: FromWorker) {
        let task_worker = self.workers.task_index(worker);
        match (msg, task_worker) {
            (
                FromWorker::Submit {
                    task_id,
                    dst,
                    wait,
                    payload,
                },
                _,
            ) => self.tasks.worker_task(
                worker,
                generation,
                (task_id, dst, wait),
                payload,
                &mut self.workers,
            ),
            (FromWorker::Result { id, payload }, Some(t)) => {
                self.tasks.result(t, id, payload, &mut self.workers)
            }
            (FromWorker::Done { id, run_us }, Some(t)) => {
                self.tasks.done(t, id, run_us, &self.workers)
            }
            (FromWorker::Failed { id, error }, Some(t)) => {
                self.tasks.failed(t, id, &error, &mut self.workers)
            }
            (FromWorker::Send { fd, data }, _) => self.sessions.send(fd, &data),
            (FromWorker::CloseFd { fd }, _) => self.sessions.close(fd),
            (FromWorker::Leaving, t) => {
                self.workers.leaving(worker, generation);
                if let Some(t) = t {
                    self.tasks.leaving(t);
                }
            }
            (FromWorker::Pipe { dst, payload }, _) => self.pipe(worker, dst, payload),
            (FromWorker::Query { req, body }, _) => {
                let asker = Asker::Worker {
                    worker,
                    generation,
                    req,
                };
                match Query::from_json(&body) {
                    Some(q) => self.answer(q, asker),
                    None => self.reply(asker, Value::Null),
                }
            }
            (FromWorker::Idle { handled }, _) => self.workers.idle(worker, generation, handled),
            (FromWorker::Mailed(counts), _) => self.workers.mailed(&counts),
            (FromWorker::Hello { .. }, _) => {
                crate::log!(Level::Warning, "worker #{worker} said hello twice; ignored");
            }
            (
                FromWorker::Result { .. } | FromWorker::Done { .. } | FromWorker::Failed { .. },
                None,
            ) => {}
        }
    }

    /// `sendMessage()` from worker `src` to worker `dst`.
    fn pipe(&mut self, src: u32, dst: u32, payload: Payload) {
        if self.workers.exists(dst) {
            self.workers.push_event(
                dst,
                &ToWorker::Pipe {
                    src_worker: src as i32,
                    payload,
                },
            );
        } else {
            crate::log!(
                Level::Warning,
                "sendMessage to unknown worker #{dst} dropped"
            );
        }
    }

    /// Asks about the failed tasks for `asker`: answered now by a local
    /// queue, or when the Redis link has Redis's answer.
    pub fn ask_failed(&mut self, op: FailedOp, asker: Asker) {
        let ticket = self.asks.open(asker);
        if let Some(answer) = self.tasks.failed_op(op, ticket, &mut self.workers) {
            self.answered(ticket, answer);
        }
    }

    /// The answer for ticket `ticket` (from the Redis link, or at once).
    pub fn answered(&mut self, ticket: u64, answer: Value) {
        if let Some(asker) = self.asks.take(ticket) {
            self.reply(asker, answer);
        }
    }

    fn reply(&mut self, asker: Asker, answer: Value) {
        match asker {
            Asker::Worker {
                worker,
                generation,
                req,
            } => {
                let body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
                self.workers
                    .push_reply(worker, generation, &ToWorker::Reply { req, body });
            }
            Asker::Http(tx) => {
                let _ = tx.send(answer);
            }
        }
    }

    fn answer(&mut self, q: Query, asker: Asker) {
        // Answers about busy and idle task workers must count what they
        // posted finished since the master last looked.
        self.tasks.settle(now_ms());
        let answer = match q {
            Query::Failed(op) => return self.ask_failed(op, asker),
            Query::Stats => {
                stats::stats(self.start_time, &self.sessions, &self.workers, &self.tasks)
            }
            Query::Exists { fd } => Value::Bool(self.sessions.exists(fd)),
            Query::ClientInfo { fd } => self.sessions.client_info(fd),
            Query::Bind { fd, uid } => Value::Bool(self.sessions.bind(fd, uid)),
            Query::ClientList { after, limit } => json!(self.sessions.list(after, limit)),
            Query::WorkerPid { worker_id } => self
                .workers
                .pid(worker_id)
                .map(Value::from)
                .unwrap_or(Value::Null),
            Query::StopWorker { worker_id } => {
                let running = self.workers.pid(worker_id).is_some();
                Value::Bool(
                    running && super::stop::tell(self.manager, ManagerOrder::StopWorker(worker_id)),
                )
            }
            Query::WorkerStatus { worker_id } => self.worker_status(worker_id),
        };
        self.reply(asker, answer);
    }

    /// Swoole's status of worker `worker_id`, or null if there is none.
    fn worker_status(&self, worker_id: u32) -> Value {
        if !self.workers.exists(worker_id) {
            return Value::Null;
        }
        if self.workers.pid(worker_id).is_none() {
            return json!(WORKER_EXIT);
        }
        let busy = match self.workers.task_index(worker_id) {
            Some(t) => self.tasks.is_busy(t),
            None => self.workers.outstanding(worker_id) > 0,
        };
        json!(if busy { WORKER_BUSY } else { WORKER_IDLE })
    }

    /// The Prometheus exposition of `metrics_listen`, with the completions
    /// task workers posted on the board counted first.
    pub fn metrics(&mut self) -> String {
        self.tasks.settle(now_ms());
        let snapshot = stats::snapshot(&self.sessions, &self.workers, &self.tasks);
        super::metrics::render(snapshot, self.tasks.timings())
    }

    /// What `GET /api/stats` shows: `stats()`, the task counts the
    /// metrics show, and one row per worker (with whether it is busy; a
    /// task worker's `handled` is the runs its process ended).
    pub fn admin_stats(&mut self) -> (Value, super::metrics::Snapshot, Vec<(WorkerRow, bool)>) {
        self.tasks.settle(now_ms());
        let stats = stats::stats(self.start_time, &self.sessions, &self.workers, &self.tasks);
        let snapshot = stats::snapshot(&self.sessions, &self.workers, &self.tasks);
        let rows = self
            .workers
            .rows()
            .into_iter()
            .map(|mut row| {
                let busy = match row.task_index {
                    Some(t) => {
                        row.handled = self.tasks.handled(t);
                        row.current = self.tasks.current(t);
                        self.tasks.is_busy(t)
                    }
                    None => row.outstanding > 0,
                };
                (row, busy)
            })
            .collect();
        (stats, snapshot, rows)
    }

    /// Adds the task counters as they are now to the history (the
    /// sampler calls it once a second while `metrics_listen` is on).
    pub fn sample_history(&mut self) {
        self.tasks.settle(now_ms());
        let snapshot = stats::snapshot(&self.sessions, &self.workers, &self.tasks);
        self.history
            .push(Sample::of(super::sessions::now(), &snapshot));
    }

    /// The history of task counters, for `GET /api/history`.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// When the server started (unix seconds), for `GET /api/ping`.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// `POST /api/reload`: has the manager restart the task workers
    /// (`task_only`) or every worker, as `reload()` does.
    pub fn reload(&self, task_only: bool) -> bool {
        super::stop::tell(
            self.manager,
            if task_only {
                ManagerOrder::ReloadTaskWorkers
            } else {
                ManagerOrder::Reload
            },
        )
    }

    /// Whether the stop has begun.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Sessions idle (nothing received) for at least `idle` seconds, for
    /// the heartbeat check.
    pub fn idle_sessions(&self, idle: f64) -> Vec<u64> {
        self.sessions.idle(idle)
    }

    /// Closes session `fd` (heartbeat, `close()`).
    pub fn close_session(&mut self, fd: u64) {
        self.sessions.close(fd);
    }

    /// The totals for the last log line.
    pub fn counters(&self) -> Counters {
        Counters::of(&self.sessions, &self.tasks)
    }

    /// Tasks accepted but not finished, for the shutdown log.
    pub fn unfinished_tasks(&self) -> usize {
        self.tasks.unfinished()
    }
}

/// Unix time in whole seconds, as `stats()` shows `start_time`.
fn stats_now() -> u64 {
    super::sessions::now() as u64
}
