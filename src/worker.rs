//! The loop of a worker or task worker process. A reader thread turns the
//! master's frames into messages on a crossbeam channel, and a signal thread
//! turns SIGTERM into one more message, so the main thread, the only one that
//! may run PHP, handles events, stop requests and master loss in one place.
//! Writes go straight from the main thread through a buffer flushed whenever
//! it would block or a caller needs its message sent now.

use std::cell::RefCell;
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::{SocketAddr, UnixStream};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio_util::codec::Decoder;

use crate::frame::FrameCodec;
use crate::ipc::{FromWorker, Payload, ToWorker, MAX_IPC_FRAME};
use crate::log::Level;

/// Which worker this process is.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub worker_id: u32,
    pub is_task: bool,
    /// Events handled before the worker recycles itself (0 = never).
    pub max_request: u64,
}

/// The PHP side of a worker: one method per event it can receive.
pub trait Handler {
    fn worker_start(&mut self);
    fn worker_stop(&mut self);
    fn receive(&mut self, fd: u64, reactor_id: u32, data: Bytes);
    fn connect(&mut self, fd: u64, reactor_id: u32);
    fn close(&mut self, fd: u64, reactor_id: i32);
    /// Returns the value to pass to onFinish, if any.
    fn task(&mut self, task_id: i64, src_worker: i32, payload: Payload) -> Option<Payload>;
    fn finish(&mut self, task_id: i64, payload: Payload);
}

enum Inbound {
    Msg(ToWorker),
    MasterGone(String),
    Terminate,
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
}

struct Link {
    out: BufWriter<UnixStream>,
    scratch: BytesMut,
    spec: WorkerSpec,
    next_task_id: i64,
    current_task: Option<u64>,
}

impl Link {
    fn send(&mut self, msg: &FromWorker) -> std::io::Result<()> {
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        self.out.write_all(&self.scratch)
    }
}

thread_local! {
    static LINK: RefCell<Option<Link>> = const { RefCell::new(None) };
}

fn with_link<T>(f: impl FnOnce(&mut Link) -> Result<T, LinkError>) -> Result<T, LinkError> {
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

/// `$server->task()`: queues a task and returns its id at once; the task is
/// on its way to the master when this returns.
pub fn submit_task(dst: i32, payload: Payload) -> Result<i64, LinkError> {
    with_link(|link| {
        if link.spec.is_task {
            return Err(LinkError::Misuse("task() cannot be used in a task worker"));
        }
        let task_id = link.next_task_id;
        link.next_task_id += 1;
        link.send(&FromWorker::Submit {
            task_id,
            dst,
            payload,
        })?;
        link.out.flush()?;
        Ok(task_id)
    })
}

/// `$server->finish()`: sends a result for the task being run.
pub fn finish(payload: Payload) -> Result<(), LinkError> {
    with_link(|link| {
        let id = link.current_task.ok_or(LinkError::Misuse(
            "finish() can only be used inside onTask in a task worker",
        ))?;
        link.send(&FromWorker::Result { id, payload })?;
        link.out.flush()?;
        Ok(())
    })
}

/// `$server->send($fd, $data)` from a worker.
pub fn send_to_client(fd: u64, data: Bytes) -> Result<(), LinkError> {
    with_link(|link| {
        link.send(&FromWorker::Send { fd, data })?;
        link.out.flush()?;
        Ok(())
    })
}

/// `$server->close($fd)` from a worker.
pub fn close_client(fd: u64) -> Result<(), LinkError> {
    with_link(|link| {
        link.send(&FromWorker::CloseFd { fd })?;
        link.out.flush()?;
        Ok(())
    })
}

fn reader(mut stream: UnixStream, tx: Sender<Inbound>) {
    let mut codec = FrameCodec::new(MAX_IPC_FRAME);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => match ToWorker::decode(frame) {
                    Ok(msg) => {
                        if tx.send(Inbound::Msg(msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Inbound::MasterGone(format!("bad message: {e}")));
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Inbound::MasterGone(format!("bad frame: {e}")));
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let len = buf.len();
        let cap = buf.capacity();
        buf.resize(cap, 0);
        match stream.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                let _ = tx.send(Inbound::MasterGone("master closed the connection".into()));
                return;
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                let _ = tx.send(Inbound::MasterGone(e.to_string()));
                return;
            }
        }
    }
}

fn spawn_signal_thread(tx: Sender<Inbound>) -> std::io::Result<()> {
    crate::launcher::take_over_signals();
    // SAFETY: SIG_IGN needs nothing; the manager ignores SIGINT and so do
    // workers, so Ctrl-C reaches the master, which stops everyone in order.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGHUP])?;
    std::thread::Builder::new()
        .name("taskq-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == libc::SIGHUP {
                    if let Err(e) = crate::log::reopen() {
                        crate::log!(Level::Warning, "cannot reopen log file: {e}");
                    }
                } else if tx.send(Inbound::Terminate).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

fn flush() -> Result<(), LinkError> {
    with_link(|link| Ok(link.out.flush()?))
}

fn send(msg: &FromWorker) -> Result<(), LinkError> {
    with_link(|link| Ok(link.send(msg)?))
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
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let started = stream
        .try_clone()
        .and_then(|read_half| {
            std::thread::Builder::new()
                .name("taskq-reader".into())
                .spawn({
                    let tx = tx.clone();
                    move || reader(read_half, tx)
                })
                .map(drop)
        })
        .and_then(|()| spawn_signal_thread(tx));
    if let Err(e) = started {
        crate::log!(Level::Error, "cannot start worker threads: {e}");
        return 1;
    }
    let max_request = spec.max_request;
    let worker_id = spec.worker_id;
    LINK.with(|l| {
        *l.borrow_mut() = Some(Link {
            out: BufWriter::with_capacity(64 * 1024, stream),
            scratch: BytesMut::new(),
            spec,
            next_task_id: 0,
            current_task: None,
        })
    });
    let hello = FromWorker::Hello {
        worker_id,
        pid: std::process::id(),
    };
    if let Err(e) = send(&hello).and_then(|()| flush()) {
        crate::log!(Level::Error, "cannot greet the master: {e}");
        return 1;
    }
    handler.worker_start();
    let code = event_loop(&rx, handler, max_request);
    let _ = flush();
    handler.worker_stop();
    let _ = flush();
    code
}

fn event_loop(rx: &Receiver<Inbound>, handler: &mut dyn Handler, max_request: u64) -> i32 {
    let mut handled: u64 = 0;
    let mut leaving = false;
    loop {
        let inbound = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                if let Err(e) = flush() {
                    crate::log!(Level::Error, "{e}");
                    return 1;
                }
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return 1,
                }
            }
            Err(TryRecvError::Disconnected) => return 1,
        };
        match inbound {
            Inbound::Msg(ToWorker::Receive {
                fd,
                reactor_id,
                data,
            }) => {
                handler.receive(fd, reactor_id, data);
                handled += 1;
            }
            Inbound::Msg(ToWorker::Connect { fd, reactor_id }) => handler.connect(fd, reactor_id),
            Inbound::Msg(ToWorker::Close { fd, reactor_id }) => handler.close(fd, reactor_id),
            Inbound::Msg(ToWorker::Task {
                id,
                task_id,
                src_worker,
                payload,
            }) => {
                set_current_task(Some(id));
                let result = handler.task(task_id, src_worker, payload);
                set_current_task(None);
                let sent = match result {
                    Some(payload) => send(&FromWorker::Result { id, payload }),
                    None => Ok(()),
                }
                .and_then(|()| send(&FromWorker::Done { id }));
                if let Err(e) = sent {
                    crate::log!(Level::Error, "{e}");
                    return 1;
                }
                handled += 1;
            }
            Inbound::Msg(ToWorker::Finish { task_id, payload }) => handler.finish(task_id, payload),
            Inbound::Msg(ToWorker::Bye) => return 0,
            Inbound::MasterGone(why) => {
                if !leaving {
                    crate::log!(Level::Warning, "master is gone ({why}); worker exits");
                }
                return 0;
            }
            Inbound::Terminate => {
                if !leaving {
                    crate::log!(Level::Debug, "stop requested; finishing queued events");
                }
                if let Err(e) = leave(&mut leaving) {
                    crate::log!(Level::Error, "{e}");
                    return 1;
                }
            }
        }
        if max_request > 0 && handled >= max_request && !leaving {
            crate::log!(Level::Info, "max_request {max_request} reached; recycling");
            if let Err(e) = leave(&mut leaving) {
                crate::log!(Level::Error, "{e}");
                return 1;
            }
        }
    }
}

/// Tells the master this incarnation is ending; it answers with `Bye` after
/// the last message meant for us, so nothing already sent is dropped.
fn leave(leaving: &mut bool) -> Result<(), LinkError> {
    if *leaving {
        return Ok(());
    }
    *leaving = true;
    send(&FromWorker::Leaving)?;
    flush()
}

fn set_current_task(id: Option<u64>) {
    LINK.with(|l| {
        if let Some(link) = l.borrow_mut().as_mut() {
            link.current_task = id;
        }
    });
}
