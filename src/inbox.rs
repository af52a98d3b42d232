//! What reaches a worker process: the master's frames and the stop and
//! log-reopen signals, all waited for by the main thread in one `poll()`.
//! No reader thread: a thread blocked in `read()` on the master socket is
//! woken each time the master drains what this worker wrote, and handing
//! messages across threads costs a wakeup (and a channel's spinning) per
//! batch. Reads never block: the loop takes what is already there, runs it,
//! and only then sleeps in `poll()`, so a burst is read, handled and
//! answered in batches.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio_util::codec::Decoder;

use crate::chunk_reader::ChunkReader;
use crate::frame::FrameCodec;
use crate::ipc::{ToWorker, MAX_IPC_FRAME};
use crate::log::Level;

/// One thing for the event loop to handle.
pub enum Inbound {
    Msg(ToWorker),
    MasterGone(String),
    Terminate,
}

/// The receiving side of a worker.
pub struct Inbox {
    stream: UnixStream,
    codec: FrameCodec,
    buf: BytesMut,
    chunks: ChunkReader,
    /// Read end of the pipe the signal handlers write to, to end `poll()`.
    wake: UnixStream,
    terminate: Arc<AtomicBool>,
    reopen_log: Arc<AtomicBool>,
    gone: bool,
}

impl Inbox {
    /// Takes over SIGTERM (leave after what is queued) and SIGHUP (reopen
    /// the log file); SIGINT is ignored, so Ctrl-C reaches the master, which
    /// stops everyone in order.
    pub fn new(stream: UnixStream) -> io::Result<Inbox> {
        crate::launcher::take_over_signals();
        // SAFETY: SIG_IGN needs nothing.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
        let (wake, wake_tx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let terminate = Arc::new(AtomicBool::new(false));
        let reopen_log = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(libc::SIGTERM, terminate.clone())?;
        signal_hook::flag::register(libc::SIGHUP, reopen_log.clone())?;
        signal_hook::low_level::pipe::register(libc::SIGTERM, wake_tx.try_clone()?)?;
        signal_hook::low_level::pipe::register(libc::SIGHUP, wake_tx)?;
        Ok(Inbox {
            stream,
            codec: FrameCodec::new(MAX_IPC_FRAME),
            buf: BytesMut::new(),
            chunks: ChunkReader::default(),
            wake,
            terminate,
            reopen_log,
            gone: false,
        })
    }

    /// The next message already received, reading what the socket holds
    /// without waiting; `None` when nothing is there yet.
    pub fn try_next(&mut self) -> Option<Inbound> {
        if self.reopen_log.swap(false, Ordering::Relaxed) {
            if let Err(e) = crate::log::reopen() {
                crate::log!(Level::Warning, "cannot reopen log file: {e}");
            }
        }
        if self.terminate.swap(false, Ordering::Relaxed) {
            return Some(Inbound::Terminate);
        }
        if self.gone {
            return None;
        }
        if let Some(m) = self.decode() {
            return Some(m);
        }
        let fd = self.stream.as_raw_fd();
        let read = self.chunks.read_into(&mut self.buf, |chunk| {
            // SAFETY: `chunk` is a valid writable buffer of its length.
            let n = unsafe {
                libc::recv(
                    fd,
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match read {
            Ok(0) => self.lost("master closed the connection".into()),
            Ok(_) => self.decode(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => self.lost(e.to_string()),
        }
    }

    /// Whether bytes of a next message are already here, so a caller may
    /// hold back a flush: more work follows at once.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Sleeps until the master writes, a signal arrives or `deadline`
    /// passes. Returns `false` on the deadline.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    let ms = left.as_micros().div_ceil(1000);
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [
                PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => {
                    if fds[1].any().unwrap_or(false) {
                        let mut sink = [0u8; 64];
                        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
                    }
                    return Ok(true);
                }
                Err(nix::errno::Errno::EINTR) => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn decode(&mut self) -> Option<Inbound> {
        match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => match ToWorker::decode(frame) {
                Ok(msg) => Some(Inbound::Msg(msg)),
                Err(e) => self.lost(format!("bad message: {e}")),
            },
            Ok(None) => None,
            Err(e) => self.lost(format!("bad frame: {e}")),
        }
    }

    fn lost(&mut self, why: String) -> Option<Inbound> {
        self.gone = true;
        Some(Inbound::MasterGone(why))
    }
}
