//! What reaches a worker process: the master's frames, the manager's orders
//! (leave, reopen the log: `crate::process::control`) and an operator's SIGTERM, all
//! waited for by the main thread in one `poll()`.
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
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio_util::codec::Decoder;

use crate::frame::FrameCodec;
use crate::ipc::{ToWorker, MAX_IPC_FRAME};
use crate::process::control::{self, Heard, Order};
use crate::process::signals;

/// Bytes asked of the kernel per read: reads go straight into the buffer's
/// spare room (the kernel fills it, nothing is zeroed first), which is
/// topped up to this much when less than `MIN_READ` is left.
const READ_SIZE: usize = 64 * 1024;
const MIN_READ: usize = 16 * 1024;

/// How long the manager's orders may wait unread while messages keep the
/// worker from sleeping. Reading the line before every message cost a
/// system call per task for orders that come a few times a day; asleep, the
/// worker hears them at once, as `poll()` watches the line.
const ORDERS_EVERY: Duration = Duration::from_millis(10);

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
    /// Read end of the pipe the signal handler writes to, to end `poll()`.
    wake: UnixStream,
    /// The manager's line, until it closes.
    control: Option<UnixStream>,
    /// When the line was last read, and whether `poll()` saw it readable
    /// since (see [`ORDERS_EVERY`]).
    orders_read: Instant,
    orders_waiting: bool,
    terminate: Arc<AtomicBool>,
    gone: bool,
}

impl Inbox {
    /// Takes over SIGTERM (an operator's order to leave after what is
    /// queued). Every other signal a service manager may send to the whole
    /// group is ignored here — the master got it too and relays what
    /// concerns workers over the control line — so it cannot kill a worker
    /// or cut short a `sleep()` in a running callback. SIGINT is ignored,
    /// so Ctrl-C reaches the master, which stops everyone in order.
    pub fn new(stream: UnixStream, control: Option<UnixStream>) -> io::Result<Inbox> {
        signals::take_over();
        signals::ignore(&[nix::sys::signal::Signal::SIGINT]);
        let (inbox, wake_tx) = Inbox::unsignalled(stream, control)?;
        signal_hook::flag::register(libc::SIGTERM, inbox.terminate.clone())?;
        signal_hook::low_level::pipe::register(libc::SIGTERM, wake_tx)?;
        Ok(inbox)
    }

    /// The inbox before any signal handler points at it, and the write end
    /// of its wake pipe.
    fn unsignalled(
        stream: UnixStream,
        control: Option<UnixStream>,
    ) -> io::Result<(Inbox, UnixStream)> {
        let (wake, wake_tx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let inbox = Inbox {
            stream,
            codec: FrameCodec::new(MAX_IPC_FRAME),
            buf: BytesMut::new(),
            wake,
            control,
            orders_read: Instant::now(),
            orders_waiting: true,
            terminate: Arc::new(AtomicBool::new(false)),
            gone: false,
        };
        Ok((inbox, wake_tx))
    }

    /// The next message already received, reading what the socket holds
    /// without waiting; `None` when nothing is there yet.
    pub fn try_next(&mut self) -> Option<Inbound> {
        self.hear_orders();
        if self.terminate.swap(false, Ordering::Relaxed) {
            return Some(Inbound::Terminate);
        }
        if self.gone {
            return None;
        }
        if let Some(m) = self.decode() {
            return Some(m);
        }
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_SIZE);
        }
        let spare = self.buf.chunk_mut();
        // Raw recv(2): nix's takes an initialised slice, and this reads into
        // spare capacity nobody zeroed.
        // SAFETY: recv writes at most `spare.len()` bytes into the buffer's
        // spare capacity and reports how many; only those are marked filled.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let read = if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: the kernel initialised the first `n` spare bytes.
            unsafe { self.buf.advance_mut(n as usize) };
            Ok(n as usize)
        };
        match read {
            Ok(0) => self.lost("master closed the connection".into()),
            Ok(_) => self.decode(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.try_next(),
            Err(e) => self.lost(e.to_string()),
        }
    }

    /// Carries out the manager's orders already sent, once `poll()` saw the
    /// line readable or [`ORDERS_EVERY`] passed. A closed line means the
    /// manager died: leave, as on a stop.
    fn hear_orders(&mut self) {
        let Some(control) = &self.control else {
            return;
        };
        if !self.orders_waiting && self.orders_read.elapsed() < ORDERS_EVERY {
            return;
        }
        self.orders_waiting = false;
        self.orders_read = Instant::now();
        let orders = match control::read_orders(control) {
            Heard::Orders(orders) => orders,
            Heard::Closed => {
                self.control = None;
                vec![Order::Leave]
            }
        };
        for order in orders {
            match order {
                Order::Leave => self.terminate.store(true, Ordering::Relaxed),
                Order::ReopenLog => crate::log::reopen_or_warn(),
            }
        }
    }

    /// Frees the read buffer between bursts, when it holds nothing.
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
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
            let mut fds = vec![
                PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(control) = &self.control {
                fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => {
                    self.orders_waiting |= fds.get(2).is_some_and(|f| f.any().unwrap_or(false));
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::io::Write;

    fn receive(fd: u64, data: &'static [u8]) -> ToWorker {
        ToWorker::Receive {
            fd,
            reactor_id: 0,
            data: Bytes::from_static(data),
        }
    }

    fn fds(inbox: &mut Inbox) -> Vec<u64> {
        std::iter::from_fn(|| inbox.try_next())
            .map(|m| match m {
                Inbound::Msg(ToWorker::Receive { fd, .. }) => fd,
                _ => panic!("expected a Receive"),
            })
            .collect()
    }

    #[test]
    fn frames_arrive_whole_however_the_bytes_are_cut() {
        let (mut master, worker) = UnixStream::pair().unwrap();
        let (mut inbox, _wake) = Inbox::unsignalled(worker, None).unwrap();
        let mut wire = BytesMut::new();
        for fd in 1..=3 {
            receive(fd, b"hello").encode(&mut wire);
        }
        assert!(inbox.try_next().is_none(), "nothing sent yet");
        master.write_all(&wire[..7]).unwrap();
        assert!(inbox.try_next().is_none(), "half a frame is not a message");
        assert!(inbox.has_buffered());
        master.write_all(&wire[7..]).unwrap();
        assert_eq!(fds(&mut inbox), vec![1, 2, 3]);
        assert!(!inbox.has_buffered());
    }

    #[test]
    fn wait_ends_on_data_or_at_the_deadline() {
        let (mut master, worker) = UnixStream::pair().unwrap();
        let (mut inbox, _wake) = Inbox::unsignalled(worker, None).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!inbox.wait(Some(soon)).unwrap(), "nothing came");
        assert!(Instant::now() >= soon);
        let mut wire = BytesMut::new();
        receive(9, b"x").encode(&mut wire);
        master.write_all(&wire).unwrap();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(inbox.wait(Some(later)).unwrap());
        assert_eq!(fds(&mut inbox), vec![9]);
    }

    #[test]
    fn a_stop_request_comes_before_messages_already_waiting() {
        let (mut master, worker) = UnixStream::pair().unwrap();
        let (mut inbox, mut wake) = Inbox::unsignalled(worker, None).unwrap();
        let mut wire = BytesMut::new();
        receive(1, b"a").encode(&mut wire);
        master.write_all(&wire).unwrap();
        inbox.terminate.store(true, Ordering::Relaxed);
        wake.write_all(b"x").unwrap();
        assert!(inbox.wait(None).unwrap(), "the wake pipe ends the wait");
        assert!(matches!(inbox.try_next(), Some(Inbound::Terminate)));
        assert_eq!(fds(&mut inbox), vec![1], "then what was already sent");
    }

    #[test]
    fn the_managers_leave_order_and_its_death_both_end_the_worker() {
        let (_master, worker) = UnixStream::pair().unwrap();
        let (manager, child) = control::line().unwrap();
        let (mut inbox, _wake) = Inbox::unsignalled(worker, Some(child)).unwrap();
        assert!(inbox.try_next().is_none());
        assert!(manager.tell(Order::Leave));
        assert!(inbox.wait(None).unwrap(), "an order ends the wait");
        assert!(matches!(inbox.try_next(), Some(Inbound::Terminate)));
        assert!(inbox.try_next().is_none(), "told once, left once");
        drop(manager);
        assert!(inbox.wait(None).unwrap(), "the closed line ends the wait");
        assert!(matches!(inbox.try_next(), Some(Inbound::Terminate)));
        assert!(
            inbox.control.is_none(),
            "a closed line is no longer waited on"
        );
    }

    #[test]
    fn orders_sent_while_messages_keep_coming_are_heard_within_the_bound() {
        let (mut master, worker) = UnixStream::pair().unwrap();
        let (manager, child) = control::line().unwrap();
        let (mut inbox, _wake) = Inbox::unsignalled(worker, Some(child)).unwrap();
        let start = Instant::now();
        assert!(inbox.try_next().is_none(), "the first look reads the line");
        assert!(manager.tell(Order::Leave));
        let mut wire = BytesMut::new();
        let heard = loop {
            wire.clear();
            receive(1, b"busy").encode(&mut wire);
            master.write_all(&wire).unwrap();
            match inbox.try_next() {
                Some(Inbound::Terminate) => break start.elapsed(),
                Some(Inbound::Msg(_)) => {}
                _ => panic!("expected a message or the order"),
            }
            assert!(start.elapsed() < Duration::from_secs(5), "never heard");
        };
        assert!(
            heard >= ORDERS_EVERY,
            "not read before every message ({heard:?})"
        );
    }

    #[test]
    fn a_closed_or_garbled_link_is_reported_once() {
        let (master, worker) = UnixStream::pair().unwrap();
        let (mut inbox, _wake) = Inbox::unsignalled(worker, None).unwrap();
        drop(master);
        assert!(matches!(inbox.try_next(), Some(Inbound::MasterGone(_))));
        assert!(inbox.try_next().is_none(), "reported once");

        let (mut master, worker) = UnixStream::pair().unwrap();
        let (mut inbox, _wake) = Inbox::unsignalled(worker, None).unwrap();
        master.write_all(&[0, 0, 0, 1, 0xee]).unwrap();
        match inbox.try_next() {
            Some(Inbound::MasterGone(why)) => assert!(why.starts_with("bad message"), "{why}"),
            _ => panic!("an unknown message kind must end the link"),
        }
        assert!(inbox.try_next().is_none());
    }
}
