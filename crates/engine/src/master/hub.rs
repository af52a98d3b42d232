//! The master's state: worker slots, client connections and the task
//! dispatcher. Every network task calls into it synchronously (the master runs
//! on one thread), so routing a message is a function call, not a channel hop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::auth_gate::AuthGate;
use super::outbox::Outbox;
use super::{DrainWatch, MasterConfig};
use crate::board::Board;
use crate::dispatcher::{Dispatcher, Retry, SubmitError};
use crate::frame::FrameCodec;
use crate::ipc::{without_tasks, FromWorker, ToWorker};
use crate::log::Level;
use crate::protocol::{code, put_ack, put_error, TaskRequest, KIND_MESSAGE};
use crate::query::{Query, WORKER_BUSY, WORKER_EXIT, WORKER_IDLE};
use crate::queue::{now_ms, QueuedTask, TaskQueue};
use crate::supervisor::ManagerOrder;
use nix::unistd::Pid;
use serde_json::{json, Value};

/// The master's side of one worker id: its outbox and the process
/// (incarnation) now draining it.
struct WorkerProcess {
    outbox: Rc<Outbox>,
    /// Incarnation whose link currently drains `outbox`.
    attached: Option<u64>,
    generation: u64,
    pid: Option<u32>,
    /// Events routed to this worker and not yet reported handled.
    outstanding: u64,
    /// The incarnation's last `Idle { handled }` total.
    last_handled: u64,
    /// Incarnation already SIGKILLed for exceeding task_timeout.
    killed: Option<u64>,
    /// An incarnation that said Leaving and is finishing what it holds: it
    /// still gets the results of its own tasks and the answers to its
    /// queries (a taskwait in its last callback must work), nothing new.
    leaving: Option<(u64, Rc<Outbox>)>,
}

/// How replies to a client are written.
enum ReplyFraming {
    /// The client has not shown its protocol yet. Replies (a greeting from
    /// onConnect) wait here, for at most `connection::GREETING_HOLD`: a
    /// TaskClient announces itself with its first request, and a greeting
    /// written unframed before that would be misread as a frame.
    Undecided(Vec<Bytes>),
    /// A foreign client, or one still silent after the hold: unframed.
    Raw,
    /// taskq's framed protocol.
    Taskq,
}

/// One client connection as the hub sees it.
pub struct Conn {
    outbox: Rc<Outbox>,
    closer: Rc<Notify>,
    wire: ReplyFraming,
    worker: u32,
    peer: Option<SocketAddr>,
    /// Set by `bind()`; dispatch_mode 5 routes by it.
    uid: Option<u64>,
    connect_time: f64,
    last_recv: f64,
    last_send: f64,
    /// Has sent messages for event workers (not only tasks), so its reads
    /// pause while the worker its next message goes to is backed up.
    feeds_workers: bool,
    /// Presented the auth_token (always true on a server without one).
    authenticated: bool,
}

impl Conn {
    /// Queues one reply in the client's protocol.
    fn write(&self, data: &[u8]) {
        if matches!(self.wire, ReplyFraming::Taskq) {
            self.outbox
                .push_with(|b| FrameCodec::put(b, KIND_MESSAGE, data));
        } else {
            self.outbox
                .push_with(|b: &mut BytesMut| b.extend_from_slice(data));
        }
    }
}

/// Unix time in seconds, as Swoole's `stats()` and `getClientInfo()` show it.
fn now() -> f64 {
    now_ms() as f64 / 1000.0
}

/// Counters behind `stats()` and the log.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub accept_count: u64,
    pub close_count: u64,
    pub abort_count: u64,
    pub request_count: u64,
    pub task_count: u64,
    pub requeued_tasks: u64,
    pub failed_tasks: u64,
    pub dispatch_count: u64,
    pub response_count: u64,
    pub total_recv_bytes: u64,
    pub total_send_bytes: u64,
    /// Client messages and tasks refused because the server was stopping.
    pub refused_stopping: u64,
}

/// The master's routing state.
pub struct Hub {
    cfg: Rc<MasterConfig>,
    slots: Vec<WorkerProcess>,
    dispatcher: Dispatcher,
    conns: HashMap<u64, Conn>,
    next_fd: u64,
    next_task: u64,
    round_robin: usize,
    counters: Counters,
    start_time: u64,
    /// Client submissions waiting for the next group commit to be acked.
    pending_acks: Vec<(u64, u64)>,
    /// taskwait tasks, by master id: the incarnation blocked on the result.
    awaited: HashMap<u64, u64>,
    /// Wakes the committer when acks are pending.
    pub commit_needed: Rc<Notify>,
    /// Wakes the scheduler when the next timer may have changed.
    pub reschedule: Rc<Notify>,
    /// Wakes the trimmer after a large drain (`master::trimmer`).
    pub trim: Rc<Notify>,
    /// Told when a worker outbox fell below its low-water mark.
    space: Rc<Notify>,
    drain_watch: DrainWatch,
    stopping: bool,
    /// With an auth_token: pending and authenticated connections.
    gate: Option<AuthGate>,
    /// Where task workers post completions nobody awaits (`crate::board`).
    board: Arc<Board>,
    /// Whether the board's flag asks workers to report every completion.
    listening: bool,
    /// The manager, which takes `stop($workerId)` orders from the master.
    manager: Pid,
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
    ) -> Self {
        let total = (cfg.worker_num + cfg.task_worker_num) as usize;
        let dispatcher = Dispatcher::new(
            queue,
            cfg.task_worker_num as usize,
            cfg.task_window,
            cfg.task_queue_max,
            cfg.task_retry_delay_ms,
        );
        let mut hub = Hub {
            slots: Vec::with_capacity(total),
            dispatcher: if cfg.durable {
                dispatcher
            } else {
                dispatcher.with_board()
            },
            conns: HashMap::new(),
            next_fd: 1,
            next_task,
            round_robin: 0,
            counters: Counters::default(),
            start_time: now() as u64,
            pending_acks: Vec::new(),
            awaited: HashMap::new(),
            commit_needed: Rc::new(Notify::new()),
            reschedule: Rc::new(Notify::new()),
            trim: Rc::new(Notify::new()),
            space: Rc::new(Notify::new()),
            drain_watch: DrainWatch::default(),
            stopping: false,
            gate: cfg
                .auth_token
                .as_ref()
                .map(|_| AuthGate::new(cfg.auth_max_pending, cfg.max_conn)),
            board,
            listening: false,
            manager,
            cfg,
        };
        for _ in 0..total {
            let outbox = hub.worker_outbox();
            hub.slots.push(WorkerProcess {
                outbox,
                attached: None,
                generation: 0,
                pid: None,
                outstanding: 0,
                last_handled: 0,
                killed: None,
                leaving: None,
            });
        }
        hub
    }

    /// The configuration the hub was built with.
    pub fn config(&self) -> Rc<MasterConfig> {
        self.cfg.clone()
    }

    /// A fresh outbox for a worker slot, with the high-water mark.
    fn worker_outbox(&self) -> Rc<Outbox> {
        Rc::new(Outbox::for_worker(
            self.cfg.outbox_high_water,
            self.space.clone(),
            self.trim.clone(),
        ))
    }

    /// A fresh outbox for a client.
    pub fn client_outbox(&self) -> Rc<Outbox> {
        Rc::new(Outbox::for_client(self.trim.clone()))
    }

    /// Called after each batch of messages: wakes the trimmer after a
    /// large drain of unfinished tasks (see [`DrainWatch`]).
    pub fn note_queue_depth(&mut self) {
        let depth = self.unfinished_tasks();
        if self.drain_watch.drained(depth) {
            self.trim.notify_one();
        }
    }

    fn task_index(&self, worker: u32) -> Option<usize> {
        worker
            .checked_sub(self.cfg.worker_num)
            .map(|i| i as usize)
            .filter(|i| *i < self.cfg.task_worker_num as usize)
    }

    fn push(&self, worker: u32, msg: &ToWorker) {
        if let Some(slot) = self.slots.get(worker as usize) {
            slot.outbox.push_with(|b| msg.encode(b));
        }
    }

    /// Routes an event the worker will report handled (`Idle`).
    fn push_event(&mut self, worker: u32, msg: &ToWorker) {
        if let Some(slot) = self.slots.get_mut(worker as usize) {
            slot.outbox.push_with(|b| msg.encode(b));
            if worker < self.cfg.worker_num {
                slot.outstanding += 1;
            }
            self.counters.dispatch_count += 1;
        }
    }

    /// Hands runnable tasks to task workers; `now` is the caller's clock
    /// reading (unix ms), so one message costs one reading.
    fn assign(&mut self, now: u64) {
        let base = self.cfg.worker_num;
        let mut started = false;
        loop {
            self.settle(now);
            let slots = &self.slots;
            self.dispatcher.assign(now, |i, t, place| {
                started = true;
                let msg = ToWorker::Task {
                    id: t.id,
                    task_id: t.task_id,
                    src_worker: t.src_worker,
                    place,
                    payload: t.payload.clone(),
                };
                slots[base as usize + i].outbox.push_with(|b| msg.encode(b));
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
        if started && self.cfg.task_timeout_ms.is_some() {
            self.reschedule.notify_one();
        }
    }

    /// Completes the tasks task workers posted finished on the board.
    /// Returns whether there were any. Nothing to do while the master
    /// listens: every post since the flag went up was reported as well, and
    /// a deep queue's reports would otherwise each cost a read of the board.
    fn settle(&mut self, now: u64) -> bool {
        !self.listening && self.read_board(now)
    }

    fn read_board(&mut self, now: u64) -> bool {
        let board = &self.board;
        self.dispatcher
            .settle(now, |worker, place, id| board.posted(worker, place, id))
    }

    /// Registers a new client; `None` when `max_conn` is reached. With an
    /// auth_token, only authenticated connections count towards `max_conn`
    /// (see `client_authenticated`), and a newcomer may close the oldest
    /// connection still to present it (`AuthGate`).
    pub fn client_opened(
        &mut self,
        peer: Option<SocketAddr>,
        outbox: Rc<Outbox>,
        closer: Rc<Notify>,
    ) -> Option<u64> {
        if self.gate.is_none() && self.conns.len() >= self.cfg.max_conn {
            self.counters.abort_count += 1;
            return None;
        }
        let fd = self.next_fd;
        self.next_fd += 1;
        if let Some(evicted) = self.gate.as_mut().and_then(|g| g.opened(fd)) {
            if let Some(c) = self.conns.get(&evicted) {
                crate::log!(
                    Level::Notice,
                    "session #{evicted} had not presented the auth_token; closed to make room for a new connection (auth_max_pending {})",
                    self.cfg.auth_max_pending
                );
                self.counters.abort_count += 1;
                c.closer.notify_one();
            }
        }
        self.counters.accept_count += 1;
        let worker = self.pick_worker(fd, peer.map(|p| p.ip()));
        let t = now();
        self.conns.insert(
            fd,
            Conn {
                outbox,
                closer,
                wire: ReplyFraming::Undecided(Vec::new()),
                worker,
                peer,
                uid: None,
                connect_time: t,
                last_recv: 0.0,
                last_send: 0.0,
                feeds_workers: false,
                authenticated: self.gate.is_none(),
            },
        );
        if self.cfg.events.connect {
            self.push_event(worker, &ToWorker::Connect { fd, reactor_id: 0 });
        }
        Some(fd)
    }

    fn pick_worker(&mut self, fd: u64, peer: Option<IpAddr>) -> u32 {
        let n = self.cfg.worker_num.max(1);
        match self.cfg.dispatch_mode {
            4 => {
                let key = match peer {
                    Some(IpAddr::V4(v4)) => u32::from(v4) as u64,
                    Some(IpAddr::V6(v6)) => (u128::from(v6) % u64::MAX as u128) as u64,
                    None => fd,
                };
                (key % n as u64) as u32
            }
            _ => (fd % n as u64) as u32,
        }
    }

    /// The client proved it speaks taskq's framed protocol: replies held
    /// until now go out framed.
    pub fn client_is_taskq(&mut self, fd: u64) {
        self.decide(fd, ReplyFraming::Taskq);
    }

    /// The client speaks another protocol, or has said nothing for
    /// `GREETING_HOLD`: replies held until now go out unframed.
    pub fn client_speaks_raw(&mut self, fd: u64) {
        if let Some(Conn {
            wire: ReplyFraming::Undecided(_),
            ..
        }) = self.conns.get(&fd)
        {
            self.decide(fd, ReplyFraming::Raw);
        }
    }

    fn decide(&mut self, fd: u64, wire: ReplyFraming) {
        let Some(c) = self.conns.get_mut(&fd) else {
            return;
        };
        if let ReplyFraming::Undecided(held) = std::mem::replace(&mut c.wire, wire) {
            for data in held {
                c.write(&data);
            }
        }
    }

    /// One complete client message: one onReceive.
    pub fn client_message(&mut self, fd: u64, data: Bytes) {
        if self.stopping {
            return self.refuse_stopping(fd);
        }
        let Some(conn) = self.conns.get_mut(&fd) else {
            return;
        };
        conn.last_recv = now();
        conn.feeds_workers = true;
        let (uid, bound) = (conn.uid, conn.worker);
        let (worker, _) = self.route(uid, bound);
        if matches!(self.cfg.dispatch_mode, 1 | 3) {
            self.round_robin = worker as usize;
        }
        self.counters.request_count += 1;
        self.counters.total_recv_bytes += data.len() as u64;
        self.push_event(
            worker,
            &ToWorker::Receive {
                fd,
                reactor_id: 0,
                data,
            },
        );
    }

    /// The event worker a connection's next message goes to (`uid` from
    /// `bind()`, `bound` the worker it was given at accept), and whether
    /// that worker's outbox is over its high-water mark. A connection is
    /// bound to its worker in dispatch_mode 2 and 4 (and 5, by uid once bound);
    /// in 1 (in turn) and 3 (least busy) it is not, and those skip workers
    /// over the mark: a backed-up worker is not idle, and this way one
    /// blocked worker holds no client back while another has room.
    fn route(&self, uid: Option<u64>, bound: u32) -> (u32, bool) {
        let n = self.cfg.worker_num.max(1) as usize;
        let over = |w: usize| self.slots.get(w).is_some_and(|s| s.outbox.over_mark());
        let start = (self.round_robin + 1) % n;
        let in_turn = (0..n).map(|k| (start + k) % n);
        let worker = match self.cfg.dispatch_mode {
            5 => uid.map_or(bound as usize, |u| (u % n as u64) as usize),
            1 => in_turn.clone().find(|&w| !over(w)).unwrap_or(start),
            3 => {
                let outstanding =
                    |&w: &usize| self.slots.get(w).map_or(u64::MAX, |s| s.outstanding);
                in_turn
                    .clone()
                    .filter(|&w| !over(w))
                    .min_by_key(outstanding)
                    .or_else(|| in_turn.min_by_key(outstanding))
                    .unwrap_or(0)
            }
            _ => bound as usize,
        };
        (worker as u32, over(worker))
    }

    /// What session `fd`'s reader must wait for before reading more: the
    /// worker its next message goes to has more than its high-water mark
    /// waiting, so a client that sends faster than its worker handles is
    /// slowed down by TCP instead of filling the master's memory. Told
    /// whenever a worker outbox drains; the reader then asks again.
    /// Sessions that only submit tasks are never held back (their tasks do
    /// not go through an event worker).
    pub fn holding_back(&self, fd: u64) -> Option<Rc<Notify>> {
        let conn = self.conns.get(&fd).filter(|c| c.feeds_workers)?;
        self.route(conn.uid, conn.worker)
            .1
            .then(|| self.space.clone())
    }

    /// Session `fd` presented the right auth_token. False when `max_conn`
    /// authenticated connections are open already: the caller refuses it.
    pub fn client_authenticated(&mut self, fd: u64) -> bool {
        let Some(gate) = self.gate.as_mut() else {
            return true;
        };
        if !gate.authenticated(fd) {
            self.counters.abort_count += 1;
            return false;
        }
        if let Some(c) = self.conns.get_mut(&fd) {
            c.authenticated = true;
        }
        true
    }

    /// Tells a foreign client why it is refused, in plain text, before the
    /// connection is closed (only where the framing is raw: any other framing
    /// would misread the text).
    pub fn refuse_foreign(&mut self, fd: u64, why: &str) {
        if self.cfg.packet.mode != crate::packet::PacketMode::Raw {
            return;
        }
        self.decide(fd, ReplyFraming::Raw);
        if let Some(c) = self.conns.get(&fd) {
            c.write(why.as_bytes());
        }
    }

    /// The client connection ended, by either side.
    pub fn client_closed(&mut self, fd: u64) {
        if let Some(conn) = self.conns.remove(&fd) {
            if let Some(gate) = self.gate.as_mut() {
                gate.closed(fd, conn.authenticated);
            }
            if let Some(room) =
                crate::memory::shrunk_capacity(self.conns.len(), self.conns.capacity())
            {
                self.conns.shrink_to(room);
            }
            self.counters.close_count += 1;
            conn.outbox.close();
            if self.cfg.events.close {
                self.push(conn.worker, &ToWorker::Close { fd, reactor_id: 0 });
            }
        }
    }

    /// A worker incarnation said hello; returns its generation and the
    /// outbox its writer must drain (possibly holding messages queued while
    /// the worker id had no process). A task worker is handed at most
    /// `max_tasks` tasks (0 = no limit).
    pub fn worker_joined(
        &mut self,
        worker: u32,
        pid: u32,
        max_tasks: u64,
    ) -> Option<(u64, Rc<Outbox>)> {
        let idx = worker as usize;
        if idx >= self.slots.len() {
            return None;
        }
        self.detach(worker);
        let slot = &mut self.slots[idx];
        slot.generation += 1;
        slot.attached = Some(slot.generation);
        slot.pid = Some(pid);
        slot.last_handled = 0;
        let generation = slot.generation;
        let outbox = slot.outbox.clone();
        if let Some(t) = self.task_index(worker) {
            self.dispatcher
                .online(t, generation, (max_tasks > 0).then_some(max_tasks));
            self.assign(now_ms());
        }
        crate::log!(Level::Debug, "worker #{worker} (pid {pid}) connected");
        Some((generation, outbox))
    }

    /// Gives the slot a fresh outbox holding whatever the old link had not
    /// written yet, except tasks (`ipc::without_tasks`), and stops the old
    /// link's writer.
    fn detach(&mut self, worker: u32) {
        let fresh = self.worker_outbox();
        let slot = &mut self.slots[worker as usize];
        if slot.attached.take().is_some() {
            let old = std::mem::replace(&mut slot.outbox, fresh);
            slot.outbox.prepend(without_tasks(old.take()));
            old.close();
        }
    }

    /// The link of incarnation `generation` ended (exit or crash).
    pub fn worker_gone(&mut self, worker: u32, generation: u64) {
        let idx = worker as usize;
        if self.slots[idx].attached == Some(generation) {
            self.detach(worker);
            self.slots[idx].pid = None;
            self.slots[idx].outstanding = 0;
        }
        if matches!(&self.slots[idx].leaving, Some((g, _)) if *g == generation) {
            let slot = &mut self.slots[idx];
            if let Some((_, old)) = slot.leaving.take() {
                let unsent = without_tasks(old.take());
                old.close();
                if !unsent.is_empty() {
                    slot.outbox.push_with(|b| b.extend_from_slice(&unsent));
                }
            }
            if slot.attached.is_none() {
                slot.pid = None;
            }
        }
        if let Some(t) = self.task_index(worker) {
            let why = if self.slots[idx].killed == Some(generation) {
                format!("task worker #{worker} exceeded task_timeout and was killed")
            } else {
                format!("task worker #{worker} died while running it")
            };
            // What the worker posted finished before it went is not
            // orphaned, even if it died before it could report it.
            self.read_board(now_ms());
            let orphans = self.dispatcher.offline(t, generation, &why);
            if orphans.requeued > 0 {
                self.counters.requeued_tasks += orphans.requeued as u64;
                crate::log!(
                    Level::Warning,
                    "{why}: requeued {} unfinished task(s)",
                    orphans.requeued
                );
            }
            for task in orphans.given_up {
                self.give_up(&task, &why);
            }
            for id in orphans.completed {
                self.awaited.remove(&id);
            }
            self.assign(now_ms());
            self.commit_needed.notify_one();
        }
    }

    /// A task used up its attempts: count it, log it and tell the worker
    /// that dispatched it (onTaskFailed).
    fn give_up(&mut self, task: &QueuedTask, why: &str) {
        self.awaited.remove(&task.id);
        self.counters.failed_tasks += 1;
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
        self.report_failure(task, why);
    }

    fn report_failure(&mut self, task: &QueuedTask, why: &str) {
        let target = if task.src_worker >= 0 && (task.src_worker as u32) < self.cfg.worker_num {
            task.src_worker as u32
        } else if self.cfg.worker_num > 0 {
            0
        } else {
            return;
        };
        self.push_event(
            target,
            &ToWorker::TaskFailed {
                task_id: task.task_id,
                error: why.to_owned(),
                payload: task.payload.clone(),
            },
        );
    }

    fn new_task(
        &mut self,
        src_worker: i32,
        task_id: i64,
        payload: crate::payload::Payload,
        priority: i32,
        delay_ms: u64,
        max_attempts: u32,
    ) -> QueuedTask {
        let id = self.next_task;
        self.next_task += 1;
        QueuedTask {
            id,
            src_worker,
            task_id: if src_worker >= 0 { task_id } else { id as i64 },
            payload,
            attempts: 0,
            max_attempts,
            priority,
            not_before: if delay_ms > 0 { now_ms() + delay_ms } else { 0 },
        }
    }

    /// `$server->task()` from the master's onStart or the manager's
    /// onManagerStart: one-way as in Swoole (nobody gets its result, so
    /// `finish()` has nowhere to send it), and at most once like a worker's.
    pub fn one_way_task(&mut self, task_id: i64, dst: i32, payload: crate::payload::Payload) {
        let attempts = self.cfg.worker_task_max_attempts;
        let mut task = self.new_task(-1, 0, payload, 0, 0, attempts);
        task.task_id = task_id;
        self.queue_task(task, dst, "the master or manager");
    }

    /// Queues a task from inside the server (for any task worker when
    /// `dst` < 0); a refusal reaches onTaskFailed.
    fn queue_task(&mut self, task: QueuedTask, dst: i32, from: &str) {
        self.counters.task_count += 1;
        match self
            .dispatcher
            .submit(task.clone(), usize::try_from(dst).ok())
        {
            Ok(()) => self.assign(now_ms()),
            Err(e) => {
                crate::log!(
                    Level::Error,
                    "task {} from {from} refused: {e}",
                    task.task_id
                );
                self.report_failure(&task, &e.to_string());
            }
        }
        self.commit_needed.notify_one();
    }

    /// `TaskClient::task()`: queue it and acknowledge it with its id, at
    /// once in memory, after the next group commit with a task_store; or
    /// refuse it at once.
    pub fn client_task(&mut self, fd: u64, req: TaskRequest) {
        if self.stopping {
            return self.refuse_stopping(fd);
        }
        if self.cfg.task_worker_num == 0 {
            self.answer_error(
                fd,
                code::NO_TASK_WORKERS,
                "the server has no task workers (task_worker_num is 0): the task was not queued",
            );
            return;
        }
        let payload = match crate::php_serial::admit(req.payload, &self.cfg.untrusted) {
            Ok(p) => p,
            Err(e) => {
                crate::log!(Level::Warning, "session #{fd}: task refused: {e}");
                self.answer_error(fd, code::BAD_REQUEST, &e.to_string());
                return;
            }
        };
        let attempts = match req.max_attempts {
            0 => self.cfg.task_max_attempts,
            n => n,
        };
        let task = self.new_task(-1, 0, payload, req.priority, req.delay_ms, attempts);
        let id = task.id;
        let delayed = task.not_before > 0;
        match self.dispatcher.submit(task, None) {
            Ok(()) => {
                self.counters.task_count += 1;
                if self.cfg.durable {
                    self.pending_acks.push((fd, id));
                    self.commit_needed.notify_one();
                } else if let Some(c) = self.conns.get(&fd) {
                    c.outbox.push_with(|b| put_ack(b, id));
                }
                self.assign(now_ms());
                if delayed {
                    self.reschedule.notify_one();
                }
                self.note_queue_depth();
            }
            Err(e @ SubmitError::Full(_)) => {
                self.answer_error(fd, code::QUEUE_FULL, &e.to_string())
            }
            Err(e) => self.answer_error(fd, code::BAD_REQUEST, &e.to_string()),
        }
    }

    /// A message sent with `ack`: routed like any message, then acknowledged.
    pub fn client_message_acked(&mut self, fd: u64, data: Bytes) {
        if self.stopping {
            return self.refuse_stopping(fd);
        }
        self.client_message(fd, data);
        if let Some(c) = self.conns.get(&fd) {
            c.outbox.push_with(|b| put_ack(b, 0));
        }
    }

    /// A message or task that arrived after the stop began: counted, and
    /// answered with the "server stopping" error (a taskq client), or by
    /// closing the connection (a raw client has no error to read), so no
    /// producer takes it for accepted.
    fn refuse_stopping(&mut self, fd: u64) {
        let Some(c) = self.conns.get(&fd) else {
            return;
        };
        self.counters.refused_stopping += 1;
        if matches!(c.wire, ReplyFraming::Taskq) {
            self.answer_error(fd, code::STOPPING, "the server is stopping");
        } else {
            c.closer.notify_one();
        }
    }

    /// Sends an ERROR answer to a taskq client.
    pub fn answer_error(&self, fd: u64, code: u32, message: &str) {
        if let Some(c) = self.conns.get(&fd) {
            c.outbox.push_with(|b| put_error(b, code, message));
        }
    }

    /// Acknowledges an `auth_token` frame.
    pub fn answer_ack(&self, fd: u64) {
        if let Some(c) = self.conns.get(&fd) {
            c.outbox.push_with(|b| put_ack(b, 0));
        }
    }

    /// Group commit: makes every queue change since the last call durable,
    /// then acknowledges the submissions it covers (or reports the failure).
    pub fn commit(&mut self) {
        let acks = std::mem::take(&mut self.pending_acks);
        match self.dispatcher.commit() {
            Ok(()) => {
                for (fd, id) in acks {
                    if let Some(c) = self.conns.get(&fd) {
                        c.outbox.push_with(|b| put_ack(b, id));
                    }
                }
            }
            Err(e) => {
                crate::log!(Level::Error, "task store commit failed: {e}");
                for (fd, _) in acks {
                    self.answer_error(fd, code::STORE, &e.to_string());
                }
            }
        }
    }

    /// Runs due work: delayed tasks that became runnable, task timeouts.
    /// Returns when to call again (unix ms), if ever.
    pub fn tick(&mut self) -> Option<u64> {
        let now = now_ms();
        self.assign(now);
        let mut next = self.dispatcher.next_due();
        if let Some(timeout) = self.cfg.task_timeout_ms.filter(|t| *t > 0) {
            for t in self.dispatcher.overdue(now.saturating_sub(timeout)) {
                let idx = self.cfg.worker_num as usize + t;
                let slot = &mut self.slots[idx];
                if let (Some(pid), Some(generation)) = (slot.pid, slot.attached) {
                    if slot.killed != Some(generation) {
                        slot.killed = Some(generation);
                        crate::log!(
                            Level::Warning,
                            "task worker #{idx} (pid {pid}) exceeded task_timeout of {timeout} ms; killing it"
                        );
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            if let Some(oldest) = self.dispatcher.oldest_start() {
                let at = oldest + timeout;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// Pids of the workers connected now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.slots.iter().filter_map(|s| s.pid).collect()
    }

    /// The stop began: refuse new client submissions.
    pub fn begin_stop(&mut self) {
        self.stopping = true;
    }

    /// Handles one message from worker `worker`.
    pub fn worker_message(&mut self, worker: u32, generation: u64, msg: FromWorker) {
        match msg {
            FromWorker::Submit {
                task_id,
                dst,
                wait,
                payload,
            } => {
                // A taskwait caller is blocked on this one run, and a
                // retry could only answer a caller that has given up.
                let attempts = if wait {
                    1
                } else {
                    self.cfg.worker_task_max_attempts
                };
                let task = self.new_task(worker as i32, task_id, payload, 0, 0, attempts);
                if wait {
                    self.awaited.insert(task.id, generation);
                }
                self.queue_task(task, dst, &format!("worker #{worker}"));
            }
            FromWorker::Result { id, payload } => {
                let Some(t) = self.task_index(worker) else {
                    return;
                };
                let Some(task) = self.dispatcher.deliver(t, id) else {
                    return;
                };
                let src = task.src_worker;
                let task_id = task.task_id;
                if src >= 0 && (src as u32) < self.cfg.worker_num {
                    let msg = ToWorker::Finish { task_id, payload };
                    let waiter = self.awaited.get(&id).copied();
                    match (&self.slots[src as usize].leaving, waiter) {
                        (Some((g, old)), Some(w)) if *g == w => old.push_with(|b| msg.encode(b)),
                        _ => self.push_event(src as u32, &msg),
                    }
                }
            }
            FromWorker::Done { id, run_us } => {
                self.awaited.remove(&id);
                if let Some(t) = self.task_index(worker) {
                    let now = now_ms();
                    self.dispatcher.complete(t, id, run_us, now);
                    self.assign(now);
                    self.commit_needed.notify_one();
                }
            }
            FromWorker::Failed { id, error } => {
                let Some(t) = self.task_index(worker) else {
                    return;
                };
                let first_line = error.lines().next().unwrap_or("").to_owned();
                let now = now_ms();
                match self.dispatcher.failed(t, id, &first_line, now) {
                    Some(Retry::At(at)) => {
                        crate::log!(
                            Level::Notice,
                            "task {id} failed ({first_line}); retrying in {} ms",
                            at.saturating_sub(now)
                        );
                        self.reschedule.notify_one();
                    }
                    Some(Retry::GaveUp(task)) => self.give_up(&task, &first_line),
                    Some(Retry::Delivered) => {
                        self.awaited.remove(&id);
                        crate::log!(
                            Level::Warning,
                            "task {id} failed ({first_line}) after its result was delivered; it is not run again"
                        );
                    }
                    None => {}
                }
                self.assign(now);
                self.commit_needed.notify_one();
            }
            FromWorker::Send { fd, data } => self.send_to_client(fd, &data),
            FromWorker::CloseFd { fd } => self.close_session(fd),
            FromWorker::Leaving => {
                let fresh = self.worker_outbox();
                let slot = &mut self.slots[worker as usize];
                if slot.attached == Some(generation) {
                    slot.outbox.push_with(|b| ToWorker::Bye.encode(b));
                    slot.attached = None;
                    let old = std::mem::replace(&mut slot.outbox, fresh);
                    slot.leaving = Some((generation, old));
                }
                if let Some(t) = self.task_index(worker) {
                    self.dispatcher.draining(t);
                }
            }
            FromWorker::Pipe { dst, payload } => {
                if (dst as usize) < self.slots.len() {
                    self.push_event(
                        dst,
                        &ToWorker::Pipe {
                            src_worker: worker as i32,
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
            FromWorker::Query { req, body } => {
                let answer = Query::from_json(&body)
                    .map(|q| self.answer(q))
                    .unwrap_or(Value::Null);
                let body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
                let msg = ToWorker::Reply { req, body };
                let slot = &self.slots[worker as usize];
                match &slot.leaving {
                    Some((g, old)) if *g == generation => old.push_with(|b| msg.encode(b)),
                    _ => self.push(worker, &msg),
                }
            }
            FromWorker::Idle { handled } => {
                let slot = &mut self.slots[worker as usize];
                if slot.attached == Some(generation) {
                    let delta = handled.saturating_sub(slot.last_handled);
                    slot.last_handled = handled;
                    slot.outstanding = slot.outstanding.saturating_sub(delta);
                }
            }
            FromWorker::Hello { .. } => {
                crate::log!(Level::Warning, "worker #{worker} said hello twice; ignored");
            }
        }
    }

    fn send_to_client(&mut self, fd: u64, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&fd) else {
            crate::log!(Level::Notice, "send to session #{fd} failed: it is closed");
            return;
        };
        c.last_send = now();
        self.counters.response_count += 1;
        self.counters.total_send_bytes += data.len() as u64;
        match &mut c.wire {
            ReplyFraming::Undecided(held) => held.push(Bytes::copy_from_slice(data)),
            _ => c.write(data),
        }
    }

    fn answer(&mut self, q: Query) -> Value {
        // Answers about busy and idle task workers must count what they
        // posted finished since the master last looked.
        self.settle(now_ms());
        match q {
            Query::Stats => self.stats(),
            Query::Exists { fd } => Value::Bool(self.conns.contains_key(&fd)),
            Query::ClientInfo { fd } => self.client_info(fd),
            Query::Bind { fd, uid } => match self.conns.get_mut(&fd) {
                Some(c) if c.uid.is_none() => {
                    c.uid = Some(uid);
                    Value::Bool(true)
                }
                _ => Value::Bool(false),
            },
            Query::ClientList { after, limit } => {
                let mut fds: Vec<u64> = self
                    .conns
                    .keys()
                    .copied()
                    .filter(|&fd| fd > after)
                    .collect();
                fds.sort_unstable();
                fds.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                json!(fds)
            }
            Query::WorkerPid { worker_id } => self
                .slots
                .get(worker_id as usize)
                .and_then(|s| s.pid)
                .map(Value::from)
                .unwrap_or(Value::Null),
            Query::StopWorker { worker_id } => {
                let running = self
                    .slots
                    .get(worker_id as usize)
                    .is_some_and(|s| s.pid.is_some());
                Value::Bool(
                    running && super::tell(self.manager, ManagerOrder::StopWorker(worker_id)),
                )
            }
            Query::WorkerStatus { worker_id } => match self.slots.get(worker_id as usize) {
                None => Value::Null,
                Some(s) if s.pid.is_none() => json!(WORKER_EXIT),
                Some(_) => {
                    let busy = match self.task_index(worker_id) {
                        Some(t) => self.dispatcher.is_busy(t),
                        None => self.slots[worker_id as usize].outstanding > 0,
                    };
                    json!(if busy { WORKER_BUSY } else { WORKER_IDLE })
                }
            },
        }
    }

    /// Swoole's `stats()` keys, plus taskq's queue depth.
    fn stats(&self) -> Value {
        let c = &self.counters;
        let n = self.cfg.worker_num as usize;
        let idle = self.slots[..n]
            .iter()
            .filter(|s| s.pid.is_some() && s.outstanding == 0)
            .count();
        json!({
            "start_time": self.start_time,
            "connection_num": self.conns.len(),
            "abort_count": c.abort_count,
            "accept_count": c.accept_count,
            "close_count": c.close_count,
            "worker_num": self.cfg.worker_num,
            "task_worker_num": self.cfg.task_worker_num,
            "user_worker_num": 0,
            "idle_worker_num": idle,
            "dispatch_count": c.dispatch_count,
            "request_count": c.request_count,
            "response_count": c.response_count,
            "total_recv_bytes": c.total_recv_bytes,
            "total_send_bytes": c.total_send_bytes,
            "session_round": self.next_fd - 1,
            "task_idle_worker_num": self.dispatcher.idle_workers(),
            "tasking_num": self.dispatcher.queued() + self.dispatcher.running_count(),
            "task_count": c.task_count,
            "task_queue_num": self.dispatcher.queued(),
            "task_running_num": self.dispatcher.running_count(),
            "task_requeued_count": c.requeued_tasks,
            "task_failed_count": c.failed_tasks,
        })
    }

    fn client_info(&self, fd: u64) -> Value {
        let Some(c) = self.conns.get(&fd) else {
            return Value::Null;
        };
        let (ip, port) = match c.peer {
            Some(p) => (p.ip().to_string(), p.port()),
            None => (String::new(), 0),
        };
        json!({
            "server_port": self.cfg.server_port,
            "server_fd": 0,
            "socket_fd": fd,
            "socket_type": self.cfg.sock_type,
            "remote_port": port,
            "remote_ip": ip,
            "reactor_id": 0,
            "connect_time": c.connect_time as u64,
            "last_time": c.last_recv.max(c.connect_time) as u64,
            "last_recv_time": c.last_recv,
            "last_send_time": c.last_send,
            "last_dispatch_time": c.last_recv,
            "close_errno": 0,
            "recv_queued_bytes": 0,
            "send_queued_bytes": 0,
            "worker_id": c.worker,
            "uid": c.uid,
            "taskq_protocol": matches!(c.wire, ReplyFraming::Taskq),
        })
    }

    /// Sessions idle (nothing received) for at least `idle` seconds, for
    /// the heartbeat check.
    pub fn idle_sessions(&self, idle: f64) -> Vec<u64> {
        let t = now();
        self.conns
            .iter()
            .filter(|(_, c)| t - c.last_recv.max(c.connect_time) >= idle)
            .map(|(fd, _)| *fd)
            .collect()
    }

    /// Closes session `fd` (heartbeat, `close()`).
    pub fn close_session(&self, fd: u64) {
        if let Some(c) = self.conns.get(&fd) {
            c.closer.notify_one();
        }
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Tasks accepted but not finished, for the shutdown log and the drain
    /// watch. Board posts are not read here: at shutdown every worker's link
    /// has ended, and each end read the board (`worker_gone`).
    pub fn unfinished_tasks(&self) -> usize {
        self.dispatcher.queued() + self.dispatcher.running_count()
    }

    /// Whether the configured auth_token equals `token` (constant time).
    pub fn token_ok(&self, token: &[u8]) -> bool {
        match &self.cfg.auth_token {
            None => true,
            Some(expected) => {
                let e = expected.as_bytes();
                e.len() == token.len()
                    && e.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
        }
    }
}
