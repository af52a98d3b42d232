//! The loop of a worker or task worker process, all on the main thread, the
//! only one that may run PHP: it takes the master's messages, stop requests
//! and master loss from the [`Inbox`] and its timers in one place. Writes go
//! through a buffer that is flushed before the loop sleeps, or at once when
//! no further message is already waiting, so a burst of events is answered
//! in a few writes and a lone event without delay.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io::{BufWriter, Write};
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::board::Board;
use crate::error::CallbackError;
use crate::inbox::{Inbound, Inbox};
use crate::ipc::{result_has_a_destination, FromWorker, ToWorker};
use crate::log::Level;
use crate::payload::Payload;
use crate::timer::Timers;

/// Which worker this process is.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub worker_id: u32,
    pub is_task: bool,
    /// Events handled before the worker recycles itself (0 = never).
    pub max_request: u64,
    /// dispatch_mode 3: report "handled" after every event, in the same
    /// write as the replies the event produced, so the master never routes
    /// the client's next request to us while we look busy.
    pub report_every_event: bool,
    /// A task worker's row on the completion board, where it posts the
    /// tasks the master sent with a place (see `crate::board`).
    pub board: Option<(Arc<Board>, usize)>,
}

/// The PHP side of a worker: one method per event it can receive.
pub trait Handler {
    fn worker_start(&mut self);
    fn worker_stop(&mut self);
    /// The worker has started leaving (reload, max_request, stop()).
    fn worker_exit(&mut self);
    fn receive(&mut self, fd: u64, reactor_id: u32, data: Bytes);
    fn connect(&mut self, fd: u64, reactor_id: u32);
    fn close(&mut self, fd: u64, reactor_id: i32);
    /// Returns the value to pass to onFinish, if any, or why the run failed
    /// (the exception), so the master can retry it. None where `src_worker`
    /// has no [`result_has_a_destination`]: the master would drop it.
    fn task(
        &mut self,
        task_id: i64,
        src_worker: i32,
        payload: Payload,
    ) -> Result<Option<Payload>, CallbackError>;
    fn finish(&mut self, task_id: i64, payload: Payload);
    /// A task this worker dispatched was given up.
    fn task_failed(&mut self, task_id: i64, error: String, payload: Payload);
    fn pipe_message(&mut self, src_worker: i32, payload: Payload);
    fn timer(&mut self, timer_id: u64);
}

/// Why a call made from a PHP callback could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("this method can only be used inside a running server's worker process")]
    NotInWorker,
    #[error("{0}")]
    Misuse(&'static str),
    #[error("the connection to the master process is lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection to the master process is lost")]
    MasterGone,
}

/// Bytes of replies gathered before a write.
const OUT_BUFFER: usize = 64 * 1024;

/// How long a worker that handled messages stays without any before it
/// frees its buffers and gives the memory back, so it returns to its idle
/// size after a burst without paying for that during the burst.
const IDLE_RELEASE: Duration = Duration::from_millis(250);

/// A task that ran at least this long (µs) is reported at once, not with
/// the next batch of writes: the write costs a few µs, under 1 % of the
/// run, and holding the report back would leave the worker without a next
/// task once it ran the one queued behind this. Quicker tasks are reported
/// in batches, one write for many.
const REPORT_AT_ONCE_US: u32 = 200;

/// How many consumed `taskwait` ids are remembered so that their late or
/// repeated results are discarded instead of reaching onFinish.
const AWAITED_MEMORY: usize = 4096;

/// A worker's connection to the master and everything the event loop and
/// the PHP methods share: queued replies, timers, task ids, what is awaited.
pub struct Link {
    out: BufWriter<UnixStream>,
    scratch: BytesMut,
    spec: WorkerSpec,
    inbox: Inbox,
    /// Messages set aside by `wait_for` for the event loop, in order.
    pending: VecDeque<Inbound>,
    timers: Timers,
    next_task_id: i64,
    next_req: u32,
    /// The task `onTask` runs now, and the worker that dispatched it (< 0:
    /// none, so its results have nowhere to go).
    current_task: Option<(u64, i32)>,
    awaited: HashSet<i64>,
    awaited_order: VecDeque<i64>,
    handled: u64,
    reported: u64,
    leaving: bool,
    /// A master event's callback is running.
    in_event: bool,
    /// Messages were handled since memory was last given back.
    worked: bool,
}

impl Link {
    fn new(stream: UnixStream, inbox: Inbox, spec: WorkerSpec) -> Link {
        Link {
            out: BufWriter::with_capacity(OUT_BUFFER, stream),
            scratch: BytesMut::new(),
            spec,
            inbox,
            pending: VecDeque::new(),
            timers: Timers::default(),
            next_task_id: 0,
            next_req: 0,
            current_task: None,
            awaited: HashSet::new(),
            awaited_order: VecDeque::new(),
            handled: 0,
            reported: 0,
            leaving: false,
            in_event: false,
            worked: false,
        }
    }

    /// Posts task `id` finished at board place `place`; returns whether
    /// the master must be told through the socket as well (it is waiting
    /// for a free worker, or this worker has no board).
    fn post(&self, place: u8, id: u64, run_us: u32) -> bool {
        match &self.spec.board {
            Some((board, row)) => board.post(*row, place, id, run_us),
            None => true,
        }
    }

    fn send(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        self.out.write_all(&self.scratch)
    }

    fn send_now(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        self.send(msg)?;
        self.out.flush()
    }

    /// Sends now, unless more messages are already waiting: then it leaves
    /// with the replies to those, in one write, when the loop next sleeps.
    fn send_soon(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        self.send(msg)?;
        if self.pending.is_empty() && !self.inbox.has_buffered() {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Flushes and, for event workers, tells the master how far we got.
    fn before_blocking(&mut self) -> std::io::Result<()> {
        if !self.spec.is_task && self.handled != self.reported {
            self.reported = self.handled;
            let handled = self.handled;
            self.send(&FromWorker::Idle { handled })?;
        }
        self.out.flush()
    }

    /// Sleeps until a message, a signal or the next timer. After
    /// `IDLE_RELEASE` of quiet following some work, frees the buffers and
    /// returns free memory to the system, then sleeps on.
    fn sleep(&mut self) -> std::io::Result<()> {
        let timer = self.timers.next_deadline();
        if !self.worked {
            return self.inbox.wait(timer).map(drop);
        }
        let release_at = Instant::now() + IDLE_RELEASE;
        let deadline = timer.map_or(release_at, |t| t.min(release_at));
        if !self.inbox.wait(Some(deadline))? && Instant::now() >= release_at {
            self.worked = false;
            self.release_buffers()?;
            crate::memory::release_free_memory();
        }
        Ok(())
    }

    /// Frees what a burst grew: the write buffers, the read buffer, and
    /// the room `wait_for` took to set messages aside (a query answered
    /// behind a backlog of thousands of messages kept a megabyte).
    fn release_buffers(&mut self) -> std::io::Result<()> {
        self.out = BufWriter::with_capacity(OUT_BUFFER, self.out.get_ref().try_clone()?);
        self.scratch = BytesMut::new();
        self.inbox.release();
        self.pending.shrink_to_fit();
        Ok(())
    }
}

thread_local! {
    /// The link of this process, while it runs as a worker.
    static LINK: RefCell<Option<Link>> = const { RefCell::new(None) };
}

/// Runs `f` on this worker's link: how PHP methods such as
/// `$server->task()` reach it. `NotInWorker` outside a worker. `f` must not
/// call PHP, which could reach the link again.
pub fn with_link<T>(f: impl FnOnce(&mut Link) -> Result<T, LinkError>) -> Result<T, LinkError> {
    LINK.with(|l| match l.borrow_mut().as_mut() {
        Some(link) => f(link),
        None => Err(LinkError::NotInWorker),
    })
}

/// This process's worker id and whether it is a task worker, when it is one.
pub fn current() -> Option<(u32, bool)> {
    LINK.with(|l| {
        l.borrow()
            .as_ref()
            .map(|k| (k.spec.worker_id, k.spec.is_task))
    })
}

/// The calls PHP callbacks make on their worker.
impl Link {
    /// `$server->task()`: queues a task and returns its id at once. The task
    /// is on its way to the master when this returns, or, while further
    /// events already wait to be handled, leaves with the next batch of
    /// writes.
    pub fn submit_task(
        &mut self,
        dst: i32,
        payload: Payload,
        wait: bool,
    ) -> Result<i64, LinkError> {
        if self.spec.is_task {
            return Err(LinkError::Misuse("task() cannot be used in a task worker"));
        }
        let task_id = self.next_task_id;
        self.next_task_id += 1;
        let msg = FromWorker::Submit {
            task_id,
            dst,
            wait,
            payload,
        };
        if wait {
            self.send_now(&msg)?;
        } else {
            self.send_soon(&msg)?;
        }
        Ok(task_id)
    }

    /// Marks task `id`'s result as consumed by a `taskwait`, so a late or
    /// repeated result is dropped rather than passed to onFinish.
    pub fn mark_awaited(&mut self, id: i64) {
        if self.awaited.insert(id) {
            self.awaited_order.push_back(id);
            if self.awaited_order.len() > AWAITED_MEMORY {
                if let Some(old) = self.awaited_order.pop_front() {
                    self.awaited.remove(&old);
                }
            }
        }
    }

    /// `$server->finish()`: sends a result for the task being run.
    pub fn finish(&mut self, payload: Payload) -> Result<(), LinkError> {
        let (id, src) = self.current_task.ok_or(LinkError::Misuse(
            "finish() can only be used inside onTask in a task worker",
        ))?;
        if !result_has_a_destination(src) {
            return Err(LinkError::Misuse(
                "finish(): this task was not dispatched by a worker (it came one-way from onStart or onManagerStart, or from a TaskClient), so its result has nowhere to go",
            ));
        }
        self.send_now(&FromWorker::Result { id, payload })?;
        Ok(())
    }

    /// `$server->send($fd, $data)` from a worker. With dispatch_mode 3 a
    /// reply made while handling an event leaves together with the idle
    /// report.
    pub fn send_to_client(&mut self, fd: u64, data: Bytes) -> Result<(), LinkError> {
        let msg = FromWorker::Send { fd, data };
        if self.in_event && self.spec.report_every_event {
            Ok(self.send(&msg)?)
        } else {
            Ok(self.send_soon(&msg)?)
        }
    }

    /// `$server->close($fd)` from a worker.
    pub fn close_client(&mut self, fd: u64) -> Result<(), LinkError> {
        Ok(self.send_now(&FromWorker::CloseFd { fd })?)
    }

    /// (events handled, tasks dispatched) by this process, for `stats()`.
    pub fn local_counts(&self) -> (u64, u64) {
        (self.handled, self.next_task_id as u64)
    }

    /// `$server->sendMessage()`.
    pub fn send_pipe(&mut self, dst: u32, payload: Payload) -> Result<(), LinkError> {
        Ok(self.send_now(&FromWorker::Pipe { dst, payload })?)
    }

    /// `$server->stop()` for this worker: leave after what is already queued.
    pub fn stop(&mut self) -> Result<(), LinkError> {
        Ok(leave(self)?)
    }

    /// `tick()` / `after()`: returns the timer id.
    pub fn add_timer(&mut self, delay: Duration, every: Option<Duration>) -> u64 {
        self.timers.add(Instant::now(), delay, every)
    }

    /// `clearTimer()`.
    pub fn clear_timer(&mut self, id: u64) -> bool {
        self.timers.clear(id)
    }

    /// Asks the master a question (JSON) and waits at most `timeout` for the
    /// answer.
    pub fn query(&mut self, body: Vec<u8>, timeout: Duration) -> Result<Option<Bytes>, LinkError> {
        self.next_req = self.next_req.wrapping_add(1);
        let req = self.next_req;
        self.send_now(&FromWorker::Query {
            req,
            body: Bytes::from(body),
        })?;
        Ok(self
            .wait_for(
                timeout,
                |m| matches!(m, ToWorker::Reply { req: r, .. } if *r == req),
            )?
            .and_then(|m| match m {
                ToWorker::Reply { body, .. } => Some(body),
                _ => None,
            }))
    }

    /// Waits at most `timeout` for a message matching `want`, keeping every
    /// other message for the event loop, in order. Used by taskwait and
    /// queries.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&ToWorker) -> bool,
    ) -> Result<Option<ToWorker>, LinkError> {
        let deadline = Instant::now() + timeout;
        if let Some(pos) = self
            .pending
            .iter()
            .position(|m| matches!(m, Inbound::Msg(msg) if want(msg)))
        {
            if let Some(Inbound::Msg(msg)) = self.pending.remove(pos) {
                return Ok(Some(msg));
            }
        }
        loop {
            while let Some(m) = self.inbox.try_next() {
                match m {
                    Inbound::Msg(msg) if want(&msg) => return Ok(Some(msg)),
                    other => {
                        let gone = matches!(other, Inbound::MasterGone(_));
                        self.pending.push_back(other);
                        if gone {
                            return Err(LinkError::MasterGone);
                        }
                    }
                }
            }
            self.out.flush()?;
            if !self.inbox.wait(Some(deadline))? {
                return Ok(None);
            }
        }
    }
}

fn flush() -> Result<(), LinkError> {
    with_link(|link| Ok(link.out.flush()?))
}

/// Connects to the master, runs `handler` until the master says goodbye or
/// disappears, and returns the process exit code.
pub fn run(spec: WorkerSpec, master: &SocketAddr, handler: &mut dyn Handler) -> i32 {
    let stream = match UnixStream::connect_addr(master) {
        Ok(s) => s,
        Err(e) => {
            crate::log!(Level::Error, "cannot connect to the master: {e}");
            return 1;
        }
    };
    let inbox = match stream
        .try_clone()
        .and_then(|s| Inbox::new(s, crate::process::control::child_end()))
    {
        Ok(inbox) => inbox,
        Err(e) => {
            crate::log!(Level::Error, "cannot set up the worker's inbox: {e}");
            return 1;
        }
    };
    let max_request = spec.max_request;
    let worker_id = spec.worker_id;
    let hello = FromWorker::Hello {
        worker_id,
        pid: std::process::id(),
        max_tasks: if spec.is_task { max_request } else { 0 },
    };
    LINK.with(|l| *l.borrow_mut() = Some(Link::new(stream, inbox, spec)));
    // Mail the forking process sent before start() is not this worker's.
    let _ = crate::mail_tally::take();
    if let Err(e) = with_link(|link| Ok(link.send_now(&hello)?)) {
        crate::log!(Level::Error, "cannot greet the master: {e}");
        return 1;
    }
    handler.worker_start();
    crate::process::control::announce_ready();
    let code = event_loop(handler, max_request);
    let _ = flush();
    handler.worker_stop();
    let _ = flush();
    code
}

/// What the event loop should do next.
enum Next {
    Event(Inbound),
    Timer(u64),
}

fn next_event() -> Result<Next, LinkError> {
    with_link(|link| loop {
        if let Some(id) = link.timers.pop_due(Instant::now()) {
            return Ok(Next::Timer(id));
        }
        if let Some(m) = link.pending.pop_front() {
            return Ok(Next::Event(m));
        }
        if let Some(m) = link.inbox.try_next() {
            link.worked = true;
            return Ok(Next::Event(m));
        }
        link.before_blocking()?;
        link.sleep()?;
    })
}

fn event_loop(handler: &mut dyn Handler, max_request: u64) -> i32 {
    let mut requests: u64 = 0;
    let mut exit_announced = false;
    loop {
        let next = match next_event() {
            Ok(n) => n,
            Err(e) => {
                crate::log!(Level::Error, "{e}");
                return 1;
            }
        };
        let counted = match next {
            Next::Timer(id) => {
                handler.timer(id);
                false
            }
            Next::Event(inbound) => match handle_event(handler, inbound, &mut requests) {
                Ok(Flow::Exit(code)) => return code,
                Ok(Flow::Counted) => true,
                Ok(Flow::Uncounted) => false,
                Err(e) => {
                    crate::log!(Level::Error, "{e}");
                    return 1;
                }
            },
        };
        if counted {
            let reported = with_link(|link| {
                link.handled += 1;
                if link.spec.report_every_event && !link.spec.is_task {
                    link.reported = link.handled;
                    let handled = link.handled;
                    link.send(&FromWorker::Idle { handled })?;
                    link.out.flush()?;
                }
                Ok(())
            });
            if let Err(e) = reported {
                crate::log!(Level::Error, "{e}");
                return 1;
            }
        }
        let _ = with_link(|link| {
            link.in_event = false;
            if let Some(counts) = crate::mail_tally::take() {
                link.send(&FromWorker::Mailed(counts))?;
            }
            Ok(())
        });
        if max_request > 0 && requests >= max_request {
            let started = with_link(|link| Ok(!link.leaving && leave(link).is_ok()));
            if matches!(started, Ok(true)) {
                crate::log!(Level::Info, "max_request {max_request} reached; recycling");
            }
        }
        let leaving = with_link(|link| Ok(link.leaving)).unwrap_or(true);
        if leaving && !exit_announced {
            exit_announced = true;
            handler.worker_exit();
        }
    }
}

/// Handles one message with replies held back for the idle report
/// (dispatch_mode 3, see `send_to_client`).
fn handle_event(
    handler: &mut dyn Handler,
    inbound: Inbound,
    requests: &mut u64,
) -> Result<Flow, LinkError> {
    with_link(|link| {
        link.in_event = true;
        Ok(())
    })?;
    handle(handler, inbound, requests)
}

/// What handling one message means for the loop.
enum Flow {
    /// An event the master counts as dispatched to us (see `FromWorker::Idle`).
    Counted,
    Uncounted,
    Exit(i32),
}

/// Handles one message.
fn handle(
    handler: &mut dyn Handler,
    inbound: Inbound,
    requests: &mut u64,
) -> Result<Flow, LinkError> {
    match inbound {
        Inbound::Msg(ToWorker::Receive {
            fd,
            reactor_id,
            data,
        }) => {
            handler.receive(fd, reactor_id, data);
            *requests += 1;
        }
        Inbound::Msg(ToWorker::Connect { fd, reactor_id }) => handler.connect(fd, reactor_id),
        Inbound::Msg(ToWorker::Close { fd, reactor_id }) => handler.close(fd, reactor_id),
        Inbound::Msg(ToWorker::Task {
            id,
            task_id,
            src_worker,
            place,
            payload,
        }) => {
            set_current_task(Some((id, src_worker)));
            let started = Instant::now();
            let result = handler.task(task_id, src_worker, payload);
            let run_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            set_current_task(None);
            with_link(|link| {
                match (result, place) {
                    // Nobody awaits the result of a task sent with a place.
                    (Ok(_), Some(place)) => {
                        if link.post(place, id, run_us) {
                            link.send(&FromWorker::Done { id, run_us })?;
                        }
                    }
                    (Ok(Some(payload)), None) => {
                        link.send(&FromWorker::Result { id, payload })?;
                        link.send(&FromWorker::Done { id, run_us })?;
                    }
                    (Ok(None), None) => link.send(&FromWorker::Done { id, run_us })?,
                    (Err(error), _) => link.send(&FromWorker::Failed {
                        id,
                        error: error.to_string(),
                    })?,
                }
                // A next task may already wait here (the master queues one
                // behind the running one): tell the master now that this
                // one ended, so it sends the one after while we run that.
                if run_us >= REPORT_AT_ONCE_US {
                    link.out.flush()?;
                }
                Ok(())
            })?;
            *requests += 1;
        }
        Inbound::Msg(ToWorker::Finish { task_id, payload }) => {
            let awaited = with_link(|link| Ok(link.awaited.contains(&task_id)))?;
            if !awaited {
                handler.finish(task_id, payload);
            }
        }
        Inbound::Msg(ToWorker::Reply { req, .. }) => {
            crate::log!(Level::Debug, "late reply {req} from the master dropped");
            return Ok(Flow::Uncounted);
        }
        Inbound::Msg(ToWorker::Bye) => return Ok(Flow::Exit(0)),
        Inbound::MasterGone(why) => {
            let leaving = with_link(|link| Ok(link.leaving))?;
            if !leaving {
                crate::log!(Level::Warning, "master is gone ({why}); worker exits");
            }
            return Ok(Flow::Exit(0));
        }
        Inbound::Terminate => {
            crate::log!(Level::Debug, "stop requested; finishing queued events");
            with_link(|link| Ok(leave(link)?))?;
            return Ok(Flow::Uncounted);
        }
        Inbound::Msg(ToWorker::Pipe {
            src_worker,
            payload,
        }) => handler.pipe_message(src_worker, payload),
        Inbound::Msg(ToWorker::TaskFailed {
            task_id,
            error,
            payload,
        }) => handler.task_failed(task_id, error, payload),
    }
    Ok(Flow::Counted)
}

/// Tells the master this incarnation is ending; it answers with `Bye` after
/// the last message meant for us, so nothing already sent is dropped.
fn leave(link: &mut Link) -> std::io::Result<()> {
    if link.leaving {
        return Ok(());
    }
    link.leaving = true;
    link.send_now(&FromWorker::Leaving)
}

fn set_current_task(id: Option<(u64, i32)>) {
    LINK.with(|l| {
        if let Some(link) = l.borrow_mut().as_mut() {
            link.current_task = id;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> (Link, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let inbox = Inbox::new(ours.try_clone().unwrap(), None).unwrap();
        let spec = WorkerSpec {
            worker_id: 0,
            is_task: false,
            max_request: 0,
            report_every_event: false,
            board: None,
        };
        (Link::new(ours, inbox, spec), theirs)
    }

    #[test]
    fn releasing_after_a_burst_gives_back_the_room_set_aside_for_pending_messages() {
        let (mut link, _peer) = link();
        for _ in 0..20_000 {
            link.pending.push_back(Inbound::Terminate);
        }
        link.scratch.reserve(1 << 20);
        link.pending.clear();
        assert!(link.pending.capacity() >= 20_000);
        link.release_buffers().unwrap();
        assert_eq!(link.pending.capacity(), 0);
        assert_eq!(link.scratch.capacity(), 0);
    }

    #[test]
    fn releasing_keeps_messages_still_pending() {
        let (mut link, _peer) = link();
        link.pending.push_back(Inbound::Terminate);
        link.release_buffers().unwrap();
        assert!(matches!(link.pending.pop_front(), Some(Inbound::Terminate)));
    }
}
