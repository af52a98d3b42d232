//! The master's side of every worker process, and the one owner of that
//! state: which incarnation of each worker id is connected, its pid, its
//! outbox, how many events it still has to handle, and the incarnation that
//! is leaving. Worker ids are PHP's `$workerId`: event workers first, then
//! task workers; [`Workers::task_index`] and [`Workers::task_worker_id`] are
//! the only places that translate between the two numberings.

use std::rc::Rc;

use tokio::sync::Notify;

use super::outbox::Outbox;
use crate::ipc::{without_tasks, ToWorker};
use crate::log::Level;
use crate::mail_tally::MailCounts;

/// One worker id: its outbox and the process (incarnation) now draining it.
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
    /// When the attached incarnation said hello (unix seconds).
    started_at: Option<f64>,
    /// An incarnation that said Leaving and is finishing what it holds: it
    /// still gets the results of its own tasks and the answers to its
    /// queries (a taskwait in its last callback must work), nothing new.
    leaving: Option<(u64, Rc<Outbox>)>,
}

/// Why a worker process went away, as far as the master can tell (the
/// manager alone sees exit statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It said it was leaving first: reload, max_request, `stop($workerId)`.
    Planned,
    /// The master SIGKILLed it for running a task past task_timeout.
    TaskTimeout,
    /// Its link ended without a word: a crash, a fatal error, `exit()`.
    Died,
}

impl Departure {
    const ALL: [Departure; 3] = [Departure::Planned, Departure::TaskTimeout, Departure::Died];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Departure::Planned => "planned",
            Departure::TaskTimeout => "task_timeout",
            Departure::Died => "died",
        }
    }
}

/// Every worker process the manager runs, as the master sees them.
pub struct Workers {
    procs: Vec<WorkerProcess>,
    /// `worker_num`: ids below it are event workers.
    event_workers: u32,
    high_water: usize,
    /// Told when a worker outbox fell below its low-water mark.
    space: Rc<Notify>,
    trim: Rc<Notify>,
    /// Events routed to workers (Swoole's `dispatch_count`).
    dispatched: u64,
    /// Workers replaced while the server ran, by [event, task] and by
    /// `Departure::ALL` order.
    restarts: [[u64; 3]; 2],
    /// Mail the workers' `TaskQ\Mailer`s sent or failed to send.
    mail: MailCounts,
}

impl Workers {
    /// `event_workers` + `task_workers` ids, none connected yet. Outboxes
    /// hold at most `high_water` bytes before their clients are held back;
    /// `space` is told when one drains, `trim` after a large drain.
    pub fn new(
        event_workers: u32,
        task_workers: u32,
        high_water: usize,
        space: Rc<Notify>,
        trim: Rc<Notify>,
    ) -> Self {
        let mut workers = Workers {
            procs: Vec::new(),
            event_workers,
            high_water,
            space,
            trim,
            dispatched: 0,
            restarts: [[0; 3]; 2],
            mail: MailCounts::default(),
        };
        workers.procs = (0..event_workers + task_workers)
            .map(|_| WorkerProcess {
                outbox: workers.fresh_outbox(),
                attached: None,
                generation: 0,
                pid: None,
                outstanding: 0,
                last_handled: 0,
                killed: None,
                started_at: None,
                leaving: None,
            })
            .collect();
        workers
    }

    fn fresh_outbox(&self) -> Rc<Outbox> {
        Rc::new(Outbox::for_worker(
            self.high_water,
            self.space.clone(),
            self.trim.clone(),
        ))
    }

    /// What a session's reader waits on while its worker is backed up.
    pub fn space(&self) -> Rc<Notify> {
        self.space.clone()
    }

    /// `worker_num`.
    pub fn event_workers(&self) -> u32 {
        self.event_workers
    }

    /// `task_worker_num`.
    pub fn task_workers(&self) -> u32 {
        self.procs.len() as u32 - self.event_workers
    }

    /// Whether `worker` is an event worker id (where task results and
    /// onTaskFailed go); `src_worker` -1 (a client, the master) is not.
    pub fn is_event_worker(&self, worker: i32) -> bool {
        u32::try_from(worker).is_ok_and(|w| w < self.event_workers)
    }

    /// The task worker index (0-based, as the dispatcher counts) of worker
    /// id `worker`, if it is a task worker.
    pub fn task_index(&self, worker: u32) -> Option<usize> {
        worker
            .checked_sub(self.event_workers)
            .map(|i| i as usize)
            .filter(|&i| i + (self.event_workers as usize) < self.procs.len())
    }

    /// The worker id of task worker index `t`.
    pub fn task_worker_id(&self, t: usize) -> u32 {
        self.event_workers + t as u32
    }

    /// Whether `worker` is a known worker id.
    pub fn exists(&self, worker: u32) -> bool {
        (worker as usize) < self.procs.len()
    }

    /// Queues a message the worker does not report handled (a reply, a
    /// close notice).
    pub fn push(&self, worker: u32, msg: &ToWorker) {
        if let Some(p) = self.procs.get(worker as usize) {
            p.outbox.push_with(|b| msg.encode(b));
        }
    }

    /// Queues a task for task worker index `t`.
    pub fn push_task(&self, t: usize, msg: &ToWorker) {
        self.push(self.task_worker_id(t), msg);
    }

    /// Routes an event the worker will report handled (`Idle`).
    pub fn push_event(&mut self, worker: u32, msg: &ToWorker) {
        self.route_event(worker, msg, false);
    }

    /// [`Workers::push_event`], lazily if `may_wait` (see
    /// [`Outbox::push_lazy`]).
    fn route_event(&mut self, worker: u32, msg: &ToWorker, may_wait: bool) {
        let event_worker = worker < self.event_workers;
        if let Some(p) = self.procs.get_mut(worker as usize) {
            if may_wait {
                p.outbox.push_lazy(|b| msg.encode(b));
            } else {
                p.outbox.push_with(|b| msg.encode(b));
            }
            if event_worker {
                p.outstanding += 1;
            }
            self.dispatched += 1;
        }
    }

    /// A task result for `worker`: to the incarnation blocked in taskwait on
    /// it (`waiter`), even while it is leaving, otherwise as a new event,
    /// which may wait for the outbox's next write if `may_wait` and no one
    /// waits for it.
    pub fn push_result(
        &mut self,
        worker: u32,
        waiter: Option<u64>,
        msg: &ToWorker,
        may_wait: bool,
    ) {
        let leaving = self
            .procs
            .get(worker as usize)
            .and_then(|p| p.leaving.as_ref());
        match (leaving, waiter) {
            (Some((g, old)), Some(w)) if *g == w => old.push_with(|b| msg.encode(b)),
            _ => self.route_event(worker, msg, may_wait && waiter.is_none()),
        }
    }

    /// The answer to a query from incarnation `generation`, which may be
    /// the one leaving.
    pub fn push_reply(&self, worker: u32, generation: u64, msg: &ToWorker) {
        let Some(p) = self.procs.get(worker as usize) else {
            return;
        };
        match &p.leaving {
            Some((g, old)) if *g == generation => old.push_with(|b| msg.encode(b)),
            _ => p.outbox.push_with(|b| msg.encode(b)),
        }
    }

    /// An incarnation said hello; returns its generation and the outbox its
    /// writer must drain (possibly holding messages queued while the worker
    /// id had no process).
    pub fn joined(&mut self, worker: u32, pid: u32) -> Option<(u64, Rc<Outbox>)> {
        if !self.exists(worker) {
            return None;
        }
        self.detach(worker);
        let p = &mut self.procs[worker as usize];
        p.generation += 1;
        p.attached = Some(p.generation);
        p.pid = Some(pid);
        p.last_handled = 0;
        p.started_at = Some(super::sessions::now());
        crate::log!(Level::Debug, "worker #{worker} (pid {pid}) connected");
        Some((p.generation, p.outbox.clone()))
    }

    /// Gives the worker id a fresh outbox holding whatever the old link had
    /// not written yet, except tasks (`ipc::without_tasks`), and stops the
    /// old link's writer.
    fn detach(&mut self, worker: u32) {
        let fresh = self.fresh_outbox();
        let p = &mut self.procs[worker as usize];
        if p.attached.take().is_some() {
            let old = std::mem::replace(&mut p.outbox, fresh);
            p.outbox.prepend(without_tasks(old.take()));
            old.close();
        }
    }

    /// Incarnation `generation` said it is leaving: it gets a goodbye and
    /// keeps its old outbox for what it still awaits; new work goes to the
    /// next incarnation's fresh outbox.
    pub fn leaving(&mut self, worker: u32, generation: u64) {
        let fresh = self.fresh_outbox();
        let Some(p) = self.procs.get_mut(worker as usize) else {
            return;
        };
        if p.attached == Some(generation) {
            p.outbox.push_with(|b| ToWorker::Bye.encode(b));
            p.attached = None;
            let old = std::mem::replace(&mut p.outbox, fresh);
            p.leaving = Some((generation, old));
        }
    }

    /// The link of incarnation `generation` ended (exit or crash). Returns
    /// why, `None` for an unknown worker id.
    pub fn gone(&mut self, worker: u32, generation: u64) -> Option<Departure> {
        let idx = worker as usize;
        if !self.exists(worker) {
            return None;
        }
        if self.procs[idx].attached == Some(generation) {
            self.detach(worker);
            self.procs[idx].pid = None;
            self.procs[idx].outstanding = 0;
        }
        let p = &mut self.procs[idx];
        let planned = matches!(&p.leaving, Some((g, _)) if *g == generation);
        if planned {
            if let Some((_, old)) = p.leaving.take() {
                let unsent = without_tasks(old.take());
                old.close();
                if !unsent.is_empty() {
                    p.outbox.push_with(|b| b.extend_from_slice(&unsent));
                }
            }
            if p.attached.is_none() {
                p.pid = None;
            }
        }
        Some(if p.killed == Some(generation) {
            Departure::TaskTimeout
        } else if planned {
            Departure::Planned
        } else {
            Departure::Died
        })
    }

    /// Counts worker `worker` as replaced after `departure` (the master
    /// calls this while it is not stopping: then the manager starts another).
    pub fn restarted(&mut self, worker: u32, departure: Departure) {
        let kind = usize::from(self.task_index(worker).is_some());
        let reason = Departure::ALL
            .iter()
            .position(|d| *d == departure)
            .unwrap_or(0);
        self.restarts[kind][reason] += 1;
    }

    /// Workers replaced so far, as (kind, reason, count), every pair listed
    /// so that a rate can be taken from the first scrape on.
    pub fn restarts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(6);
        for (kind, counts) in ["event", "task"].into_iter().zip(self.restarts) {
            for (departure, n) in Departure::ALL.into_iter().zip(counts) {
                out.push((kind, departure.label(), n));
            }
        }
        out
    }

    /// A worker reported the mail it sent since its last report.
    pub fn mailed(&mut self, counts: &MailCounts) {
        self.mail.add(counts);
    }

    /// Mail sent or failed by every worker so far.
    pub fn mail(&self) -> MailCounts {
        self.mail
    }

    /// The incarnation has handled `handled` events in all: those are no
    /// longer outstanding.
    pub fn idle(&mut self, worker: u32, generation: u64, handled: u64) {
        if let Some(p) = self.procs.get_mut(worker as usize) {
            if p.attached == Some(generation) {
                let delta = handled.saturating_sub(p.last_handled);
                p.last_handled = handled;
                p.outstanding = p.outstanding.saturating_sub(delta);
            }
        }
    }

    /// SIGKILLs task worker index `t` for running a task longer than
    /// `timeout_ms`, once per incarnation.
    pub fn kill_overdue(&mut self, t: usize, timeout_ms: u64) {
        let worker = self.task_worker_id(t);
        let Some(p) = self.procs.get_mut(worker as usize) else {
            return;
        };
        if let (Some(pid), Some(generation)) = (p.pid, p.attached) {
            if p.killed != Some(generation) {
                p.killed = Some(generation);
                crate::log!(
                    Level::Warning,
                    "task worker #{worker} (pid {pid}) exceeded task_timeout of {timeout_ms} ms; killing it"
                );
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Whether `worker`'s outbox holds more than its high-water mark.
    pub fn over_mark(&self, worker: u32) -> bool {
        self.procs
            .get(worker as usize)
            .is_some_and(|p| p.outbox.over_mark())
    }

    /// Events routed to `worker` and not yet handled (`u64::MAX` for an
    /// unknown id, so least-busy routing never picks it).
    pub fn outstanding(&self, worker: u32) -> u64 {
        self.procs
            .get(worker as usize)
            .map_or(u64::MAX, |p| p.outstanding)
    }

    /// The pid of the process now serving `worker`.
    pub fn pid(&self, worker: u32) -> Option<u32> {
        self.procs.get(worker as usize).and_then(|p| p.pid)
    }

    /// Pids of the workers connected now.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().filter_map(|p| p.pid).collect()
    }

    /// Event workers connected and with nothing outstanding.
    pub fn idle_event_workers(&self) -> usize {
        self.procs[..self.event_workers as usize]
            .iter()
            .filter(|p| p.pid.is_some() && p.outstanding == 0)
            .count()
    }

    /// Events routed to workers so far.
    pub fn dispatched(&self) -> u64 {
        self.dispatched
    }

    /// One row per worker id, for the admin API's per-worker view.
    pub fn rows(&self) -> Vec<WorkerRow> {
        self.procs
            .iter()
            .enumerate()
            .map(|(id, p)| WorkerRow {
                id: id as u32,
                task_index: self.task_index(id as u32),
                pid: p.pid,
                outstanding: p.outstanding,
                handled: p.last_handled,
                started_at: p.pid.and(p.started_at),
                current: None,
            })
            .collect()
    }
}

/// What the master knows of one worker id (see [`Workers::rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: u32,
    /// Its index among task workers; `None` for an event worker.
    pub task_index: Option<usize>,
    /// The process serving it now, if one is connected.
    pub pid: Option<u32>,
    /// Events routed to it and not yet handled (event workers).
    pub outstanding: u64,
    /// Events its current process reported handled (event workers; the hub
    /// fills in a task worker's ended runs).
    pub handled: u64,
    /// When its current process connected (unix seconds).
    pub started_at: Option<f64>,
    /// The task it runs now and when that started (unix ms); the hub fills
    /// it in for a task worker.
    pub current: Option<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::outbox::take_messages;
    use crate::payload::{Encoding, Payload};
    use bytes::Bytes;

    fn workers(event: u32, task: u32) -> Workers {
        Workers::new(
            event,
            task,
            1 << 20,
            Rc::new(Notify::new()),
            Rc::new(Notify::new()),
        )
    }

    fn receive(fd: u64) -> ToWorker {
        ToWorker::Receive {
            fd,
            reactor_id: 0,
            data: Bytes::from_static(b"hi"),
        }
    }

    fn task(id: u64) -> ToWorker {
        ToWorker::Task {
            id,
            task_id: id as i64,
            src_worker: 0,
            place: None,
            payload: Payload {
                encoding: Encoding::Raw,
                data: Bytes::from_static(b"t"),
            },
        }
    }

    #[test]
    fn ids_number_event_workers_first_then_task_workers() {
        let w = workers(2, 3);
        assert_eq!(w.task_index(1), None);
        assert_eq!(w.task_index(2), Some(0));
        assert_eq!(w.task_index(4), Some(2));
        assert_eq!(w.task_index(5), None);
        assert_eq!(w.task_worker_id(2), 4);
        assert!(w.is_event_worker(1) && !w.is_event_worker(2) && !w.is_event_worker(-1));
    }

    #[test]
    fn events_count_as_outstanding_until_the_worker_says_it_handled_them() {
        let mut w = workers(2, 1);
        let (generation, _) = w.joined(0, 100).unwrap();
        w.push_event(0, &receive(1));
        w.push_event(0, &receive(2));
        assert_eq!(w.outstanding(0), 2);
        assert_eq!(w.idle_event_workers(), 0);
        w.idle(0, generation, 2);
        assert_eq!(w.outstanding(0), 0);
        assert_eq!(w.idle_event_workers(), 1);
        assert_eq!(w.dispatched(), 2);
    }

    #[test]
    fn messages_queued_while_a_worker_is_away_wait_for_its_successor_except_tasks() {
        let mut w = workers(1, 1);
        let (g1, first) = w.joined(1, 100).unwrap();
        w.push_task(0, &task(7));
        w.push(
            1,
            &ToWorker::Close {
                fd: 3,
                reactor_id: 0,
            },
        );
        assert_eq!(w.gone(1, g1), Some(Departure::Died));
        assert!(first.is_closed(), "the old link's writer stops");
        assert_eq!(w.pid(1), None);
        let (g2, second) = w.joined(1, 101).unwrap();
        assert!(g2 > g1);
        assert_eq!(
            take_messages(&second),
            vec![ToWorker::Close {
                fd: 3,
                reactor_id: 0
            }],
            "the task was requeued by the dispatcher, so it is not sent twice"
        );
    }

    #[test]
    fn a_late_end_of_an_old_incarnation_spares_the_new_one() {
        let mut w = workers(1, 0);
        let (g1, _) = w.joined(0, 100).unwrap();
        let (_, _) = w.joined(0, 101).unwrap();
        w.gone(0, g1);
        assert_eq!(w.pid(0), Some(101));
    }

    #[test]
    fn a_leaving_worker_still_gets_its_replies_and_awaited_results_new_work_waits() {
        let mut w = workers(1, 0);
        let (g1, old) = w.joined(0, 100).unwrap();
        w.leaving(0, g1);
        assert_eq!(take_messages(&old), vec![ToWorker::Bye]);
        let reply = ToWorker::Reply {
            req: 1,
            body: Bytes::from_static(b"null"),
        };
        w.push_reply(0, g1, &reply);
        let result = ToWorker::Finish {
            task_id: 4,
            payload: Payload {
                encoding: Encoding::Raw,
                data: Bytes::from_static(b"r"),
            },
        };
        w.push_result(0, Some(g1), &result, true);
        w.push_event(0, &receive(9));
        assert_eq!(take_messages(&old), vec![reply, result]);
        let (_, new) = w.joined(0, 101).unwrap();
        assert_eq!(take_messages(&new), vec![receive(9)]);
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let mut w = workers(1, 1);
        assert!(w.joined(2, 1).is_none());
        w.push_event(9, &receive(1));
        assert_eq!(w.dispatched(), 0);
        assert_eq!(w.outstanding(9), u64::MAX);
        assert_eq!(w.gone(9, 1), None);
    }

    #[test]
    fn a_departure_is_planned_after_leaving_a_timeout_after_the_kill_else_a_death() {
        let mut w = workers(1, 1);
        let (g, _) = w.joined(0, 100).unwrap();
        w.leaving(0, g);
        assert_eq!(w.gone(0, g), Some(Departure::Planned));
        w.restarted(0, Departure::Planned);
        let (g, _) = w.joined(1, 101).unwrap();
        // What kill_overdue records (without signalling a real pid).
        w.procs[1].killed = Some(g);
        assert_eq!(w.gone(1, g), Some(Departure::TaskTimeout));
        w.restarted(1, Departure::TaskTimeout);
        w.restarted(1, Departure::Died);
        w.restarted(1, Departure::Died);
        assert_eq!(
            w.restarts(),
            vec![
                ("event", "planned", 1),
                ("event", "task_timeout", 0),
                ("event", "died", 0),
                ("task", "planned", 0),
                ("task", "task_timeout", 1),
                ("task", "died", 2),
            ]
        );
    }
}
