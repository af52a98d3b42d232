//! The master's end of each worker's IPC connection. Workers connect to an
//! abstract unix socket private to this master; the kernel vouches for the
//! peer's uid, so no other user can pose as a worker.

use std::cell::{Cell, RefCell};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio_util::codec::Decoder;

use super::connection::read_available;
use super::hub::Hub;
use super::outbox::write_loop;
use super::quiet_socket;
use crate::frame::FrameCodec;
use crate::ipc::{FromWorker, MAX_IPC_FRAME};
use crate::log::Level;

/// The worker links being served, so that a stop can wait for the last
/// messages of workers that already exited (a `Done` written just before
/// the exit must still be acknowledged in the task store).
#[derive(Default)]
pub struct Links {
    live: Cell<usize>,
    ended: Notify,
}

impl Links {
    /// Waits until every link has ended, at most `limit`.
    pub async fn all_ended(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.live.get() > 0 {
                self.ended.notified().await;
            }
        })
        .await;
    }
}

/// Counts one link as live for as long as it exists.
struct Live(Rc<Links>);

impl Live {
    fn new(links: &Rc<Links>) -> Self {
        links.live.set(links.live.get() + 1);
        Live(links.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.set(self.0.live.get() - 1);
        self.0.ended.notify_waiters();
    }
}

/// Accepts worker connections for the life of the master.
pub fn spawn_acceptor(ipc: StdUnixListener, hub: Rc<RefCell<Hub>>) -> std::io::Result<Rc<Links>> {
    ipc.set_nonblocking(true)?;
    let listener = UnixListener::from_std(ipc)?;
    let links = Rc::new(Links::default());
    let counted = links.clone();
    tokio::task::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let live = Live::new(&counted);
                    let hub = hub.clone();
                    tokio::task::spawn_local(async move {
                        serve(stream, hub).await;
                        drop(live);
                    });
                }
                Err(e) => crate::log!(Level::Warning, "worker accept failed: {e}"),
            }
        }
    });
    Ok(links)
}

async fn serve(stream: UnixStream, hub: Rc<RefCell<Hub>>) {
    let me = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me || Some(cred.uid()) == hub.borrow().config().worker_uid => {}
        Ok(cred) => {
            crate::log!(
                Level::Warning,
                "refused IPC connection from uid {} (pid {:?})",
                cred.uid(),
                cred.pid()
            );
            return;
        }
        Err(e) => {
            crate::log!(Level::Warning, "cannot check IPC peer: {e}");
            return;
        }
    }
    // Read-only in epoll: see `quiet_socket`.
    let (mut rd, wr) = match stream.into_std().and_then(quiet_socket::split) {
        Ok(halves) => halves,
        Err(e) => {
            crate::log!(Level::Warning, "cannot set up an IPC connection: {e}");
            return;
        }
    };
    let mut codec = FrameCodec::new(MAX_IPC_FRAME);
    let mut buf = BytesMut::new();
    let mut joined: Option<(u32, u64)> = None;
    // The master or manager sending one-way tasks (`crate::one_way`).
    let mut producer = false;
    let mut writer = Some(wr);
    loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    crate::log!(Level::Error, "bad frame from a worker: {e}");
                    return finish(&hub, joined);
                }
            };
            let msg = match FromWorker::decode(frame) {
                Ok(m) => m,
                Err(e) => {
                    crate::log!(Level::Error, "bad message from a worker: {e}");
                    return finish(&hub, joined);
                }
            };
            match (joined, msg) {
                (
                    None,
                    FromWorker::Hello {
                        worker_id: crate::one_way::PRODUCER,
                        ..
                    },
                ) => producer = true,
                (
                    None,
                    FromWorker::Submit {
                        task_id,
                        dst,
                        payload,
                        ..
                    },
                ) if producer => hub.borrow_mut().one_way_task(task_id, dst, payload),
                (
                    None,
                    FromWorker::Hello {
                        worker_id,
                        pid,
                        max_tasks,
                    },
                ) => {
                    let joined_as = hub.borrow_mut().worker_joined(worker_id, pid, max_tasks);
                    let Some((generation, outbox)) = joined_as else {
                        crate::log!(Level::Error, "unknown worker id {worker_id} from pid {pid}");
                        return;
                    };
                    if let Some(w) = writer.take() {
                        tokio::task::spawn_local(write_loop(outbox, w));
                    }
                    joined = Some((worker_id, generation));
                }
                (None, other) => {
                    crate::log!(Level::Error, "worker spoke before hello: {other:?}");
                    return;
                }
                (Some((id, generation)), msg) => {
                    hub.borrow_mut().worker_message(id, generation, msg)
                }
            }
        }
        if joined.is_some() {
            hub.borrow_mut().note_queue_depth();
        }
        match read_available(&mut rd, &mut buf).await {
            Ok(0) | Err(_) => return finish(&hub, joined),
            Ok(_) => {}
        }
    }
}

fn finish(hub: &Rc<RefCell<Hub>>, joined: Option<(u32, u64)>) {
    if let Some((id, generation)) = joined {
        hub.borrow_mut().worker_gone(id, generation);
    }
}
