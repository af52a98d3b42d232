//! The master's state: worker slots, client connections and the task
//! dispatcher. Every network task calls into it synchronously (the master runs
//! on one thread), so routing a message is a function call, not a channel hop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::outbox::Outbox;
use super::MasterConfig;
use crate::dispatcher::Dispatcher;
use crate::frame::FrameCodec;
use crate::ipc::{FromWorker, ToWorker};
use crate::log::Level;
use crate::protocol::KIND_MESSAGE;
use crate::queue::{MemoryQueue, QueuedTask};

struct Slot {
    outbox: Rc<Outbox>,
    /// Incarnation whose link currently drains `outbox`.
    attached: Option<u64>,
    generation: u64,
    pid: Option<u32>,
}

/// One client connection as the hub sees it.
pub struct Conn {
    outbox: Rc<Outbox>,
    closer: Rc<Notify>,
    taskq: bool,
    worker: u32,
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
}

/// The master's routing state.
pub struct Hub {
    cfg: Rc<MasterConfig>,
    slots: Vec<Slot>,
    dispatcher: Dispatcher<MemoryQueue>,
    conns: HashMap<u64, Conn>,
    next_fd: u64,
    next_task: u64,
    round_robin: usize,
    counters: Counters,
}

impl Hub {
    /// Empty state for the configured worker counts.
    pub fn new(cfg: Rc<MasterConfig>) -> Self {
        let total = (cfg.worker_num + cfg.task_worker_num) as usize;
        Hub {
            slots: (0..total)
                .map(|_| Slot {
                    outbox: Rc::new(Outbox::default()),
                    attached: None,
                    generation: 0,
                    pid: None,
                })
                .collect(),
            dispatcher: Dispatcher::new(
                MemoryQueue::default(),
                cfg.task_worker_num as usize,
                cfg.task_window,
            ),
            conns: HashMap::new(),
            next_fd: 1,
            next_task: 0,
            round_robin: 0,
            counters: Counters::default(),
            cfg,
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

    fn assign(&mut self) {
        let base = self.cfg.worker_num;
        let slots = &self.slots;
        self.dispatcher.assign(|i, t| {
            let msg = ToWorker::Task {
                id: t.id,
                task_id: t.task_id,
                src_worker: t.src_worker,
                payload: t.payload.clone(),
            };
            slots[base as usize + i].outbox.push_with(|b| msg.encode(b));
        });
    }

    /// Registers a new client; `None` when `max_conn` is reached.
    pub fn client_opened(
        &mut self,
        peer: Option<IpAddr>,
        outbox: Rc<Outbox>,
        closer: Rc<Notify>,
    ) -> Option<u64> {
        if self.conns.len() >= self.cfg.max_conn {
            self.counters.abort_count += 1;
            return None;
        }
        let fd = self.next_fd;
        self.next_fd += 1;
        self.counters.accept_count += 1;
        let worker = self.pick_worker(fd, peer);
        self.conns.insert(
            fd,
            Conn {
                outbox,
                closer,
                taskq: false,
                worker,
            },
        );
        if self.cfg.events.connect {
            self.push(worker, &ToWorker::Connect { fd, reactor_id: 0 });
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

    /// The client proved it speaks taskq's framed protocol.
    pub fn client_is_taskq(&mut self, fd: u64) {
        if let Some(c) = self.conns.get_mut(&fd) {
            c.taskq = true;
        }
    }

    /// One complete client message: one onReceive.
    pub fn client_message(&mut self, fd: u64, data: Bytes) {
        let Some(conn) = self.conns.get(&fd) else {
            return;
        };
        let worker = match self.cfg.dispatch_mode {
            1 | 3 => {
                let n = self.cfg.worker_num.max(1) as usize;
                self.round_robin = (self.round_robin + 1) % n;
                self.round_robin as u32
            }
            _ => conn.worker,
        };
        self.counters.request_count += 1;
        self.push(
            worker,
            &ToWorker::Receive {
                fd,
                reactor_id: 0,
                data,
            },
        );
    }

    /// The client connection ended, by either side.
    pub fn client_closed(&mut self, fd: u64) {
        if let Some(conn) = self.conns.remove(&fd) {
            self.counters.close_count += 1;
            conn.outbox.close();
            if self.cfg.events.close {
                self.push(conn.worker, &ToWorker::Close { fd, reactor_id: 0 });
            }
        }
    }

    /// A worker incarnation said hello; returns its generation and the
    /// outbox its writer must drain (possibly holding messages queued while
    /// the worker id had no process).
    pub fn worker_joined(&mut self, worker: u32, pid: u32) -> Option<(u64, Rc<Outbox>)> {
        let idx = worker as usize;
        if idx >= self.slots.len() {
            return None;
        }
        self.detach(worker);
        let slot = &mut self.slots[idx];
        slot.generation += 1;
        slot.attached = Some(slot.generation);
        slot.pid = Some(pid);
        let generation = slot.generation;
        let outbox = slot.outbox.clone();
        if let Some(t) = self.task_index(worker) {
            self.dispatcher.online(t, generation);
            self.assign();
        }
        crate::log!(Level::Debug, "worker #{worker} (pid {pid}) connected");
        Some((generation, outbox))
    }

    /// Gives the slot a fresh outbox holding whatever the old link had not
    /// written yet, and stops the old link's writer.
    fn detach(&mut self, worker: u32) {
        let slot = &mut self.slots[worker as usize];
        if slot.attached.take().is_some() {
            let old = std::mem::replace(&mut slot.outbox, Rc::new(Outbox::default()));
            slot.outbox.prepend(old.take());
            old.close();
        }
    }

    /// The link of incarnation `generation` ended (exit or crash).
    pub fn worker_gone(&mut self, worker: u32, generation: u64) {
        let idx = worker as usize;
        if self.slots[idx].attached == Some(generation) {
            self.detach(worker);
            self.slots[idx].pid = None;
        }
        if let Some(t) = self.task_index(worker) {
            let n = self.dispatcher.offline(t, generation);
            if n > 0 {
                self.counters.requeued_tasks += n as u64;
                crate::log!(
                    Level::Warning,
                    "task worker #{worker} ended with {n} unfinished task(s); requeued them"
                );
                self.assign();
            }
        }
    }

    /// Handles one message from worker `worker`.
    pub fn worker_message(&mut self, worker: u32, generation: u64, msg: FromWorker) {
        match msg {
            FromWorker::Submit {
                task_id,
                dst,
                payload,
            } => {
                let id = self.next_task;
                self.next_task += 1;
                self.counters.task_count += 1;
                let task = QueuedTask {
                    id,
                    src_worker: worker as i32,
                    task_id,
                    payload,
                };
                let target = usize::try_from(dst).ok();
                if !self.dispatcher.submit(task, target) {
                    crate::log!(
                        Level::Warning,
                        "worker #{worker} sent task {task_id} to task worker {dst}, which does not exist; dropped"
                    );
                }
                self.assign();
            }
            FromWorker::Result { id, payload } => {
                let Some(t) = self.task_index(worker) else {
                    return;
                };
                let Some(task) = self.dispatcher.running(t, id) else {
                    return;
                };
                let src = task.src_worker;
                let task_id = task.task_id;
                if src >= 0 && (src as u32) < self.cfg.worker_num {
                    self.push(src as u32, &ToWorker::Finish { task_id, payload });
                }
            }
            FromWorker::Done { id } => {
                if let Some(t) = self.task_index(worker) {
                    self.dispatcher.complete(t, id);
                    self.assign();
                }
            }
            FromWorker::Send { fd, data } => self.send_to_client(fd, &data),
            FromWorker::CloseFd { fd } => {
                if let Some(c) = self.conns.get(&fd) {
                    c.closer.notify_one();
                }
            }
            FromWorker::Leaving => {
                let slot = &mut self.slots[worker as usize];
                if slot.attached == Some(generation) {
                    slot.outbox.push_with(|b| ToWorker::Bye.encode(b));
                    slot.attached = None;
                    let old = std::mem::replace(&mut slot.outbox, Rc::new(Outbox::default()));
                    old.close();
                }
                if let Some(t) = self.task_index(worker) {
                    self.dispatcher.draining(t);
                }
            }
            FromWorker::Hello { .. } => {
                crate::log!(Level::Warning, "worker #{worker} said hello twice; ignored");
            }
        }
    }

    fn send_to_client(&mut self, fd: u64, data: &[u8]) {
        let Some(c) = self.conns.get(&fd) else {
            crate::log!(Level::Notice, "send to session #{fd} failed: it is closed");
            return;
        };
        if c.taskq {
            c.outbox
                .push_with(|b| FrameCodec::put(b, KIND_MESSAGE, data));
        } else {
            c.outbox
                .push_with(|b: &mut BytesMut| b.extend_from_slice(data));
        }
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Tasks accepted but not finished, for the shutdown log.
    pub fn unfinished_tasks(&self) -> usize {
        self.dispatcher.queued() + self.dispatcher.running_count()
    }
}
