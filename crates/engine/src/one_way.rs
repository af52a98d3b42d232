//! `$server->task()` from the master's `onStart` and the manager's
//! `onManagerStart`: as in Swoole, such a task is delivered one-way (nobody
//! gets its result). Neither process is a worker with a link to the master,
//! so while that callback runs the process holds a producer connection to
//! the master's IPC socket, which says so in its `Hello` and then carries
//! only `Submit`s. The master's own connection is accepted once its event
//! loop runs, after `onStart`; the kernel keeps what was written meanwhile.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::OnceLock;

use bytes::BytesMut;

use crate::ipc::FromWorker;
use crate::payload::Payload;

/// The `Hello` worker id of a producer connection.
pub const PRODUCER: u32 = u32::MAX;

/// The master's IPC address, set once by the launcher before it forks.
static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();

thread_local! {
    static LINK: RefCell<Option<Producer>> = const { RefCell::new(None) };
}

struct Producer {
    stream: UnixStream,
    next_task_id: i64,
    /// A write failed, perhaps halfway through a frame: nothing more may
    /// follow it on this connection.
    broken: bool,
}

/// Why a one-way task was not sent.
#[derive(Debug, thiserror::Error)]
pub enum OneWayError {
    #[error("task() from the master or manager process works only in onStart and onManagerStart")]
    NotInStart,
    #[error("cannot send the task to the master process: {0}")]
    Io(#[from] std::io::Error),
    #[error("an earlier task() in this callback could not be sent to the master process, so no later one can be")]
    Broken,
}

/// Records where the master listens for its workers.
pub fn set_address(addr: SocketAddr) {
    let _ = ADDRESS.set(addr);
}

/// Opens the producer connection for the duration of `onStart` or
/// `onManagerStart`. `blocking` is for the manager, whose master is
/// already serving; the master itself must never block on its own socket
/// before its loop runs, so there a full socket refuses the task instead.
pub fn open(blocking: bool) {
    let Some(addr) = ADDRESS.get() else { return };
    let Ok(mut stream) = UnixStream::connect_addr(addr) else {
        return;
    };
    let hello = FromWorker::Hello {
        worker_id: PRODUCER,
        pid: std::process::id(),
        max_tasks: 0,
    };
    if write(&mut stream, &hello).is_ok() && stream.set_nonblocking(!blocking).is_ok() {
        LINK.with(|l| {
            *l.borrow_mut() = Some(Producer {
                stream,
                next_task_id: 0,
                broken: false,
            })
        });
    }
}

/// Ends the producer connection when the callback has returned.
pub fn close() {
    LINK.with(|l| l.borrow_mut().take());
}

/// Whether this process may send a one-way task now.
pub fn available() -> bool {
    LINK.with(|l| l.borrow().is_some())
}

/// Sends a one-way task for task worker `dst` (< 0: any); returns its id
/// (per process, from 0, as Swoole's).
pub fn submit(dst: i32, payload: Payload) -> Result<i64, OneWayError> {
    LINK.with(|l| {
        let mut l = l.borrow_mut();
        let p = l.as_mut().ok_or(OneWayError::NotInStart)?;
        if p.broken {
            return Err(OneWayError::Broken);
        }
        let task_id = p.next_task_id;
        let msg = FromWorker::Submit {
            task_id,
            dst,
            wait: false,
            payload,
        };
        if let Err(e) = write(&mut p.stream, &msg) {
            p.broken = true;
            return Err(e.into());
        }
        p.next_task_id += 1;
        Ok(task_id)
    })
}

fn write(stream: &mut UnixStream, msg: &FromWorker) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf);
    stream.write_all(&buf)
}
