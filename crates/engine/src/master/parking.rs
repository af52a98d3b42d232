//! Idle client connections without tasks. PHP-FPM keeps one persistent
//! connection per child, so a busy server holds thousands that send nothing
//! for minutes (issue 17 §6). A connection idle for [`PARK_AFTER`] gives up
//! its two tasks, timers, outbox and tokio registration, about 1.5 KiB: its
//! socket waits in one epoll set of the master's own (the kernel keeps what
//! it needs there), and the session keeps only the descriptor. Anything for
//! it (bytes or an end from the client, a reply, a close) brings it back
//! with fresh tasks that carry on where the old ones stopped.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use super::outbox::Outbox;

/// How long a connection must have been quiet before it is parked. Short
/// enough that a burst of new idle connections is parked within a second;
/// long enough that a client with a request every few milliseconds is never
/// parked and brought back between them.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// After this many connections were parked, brought back or closed after
/// being parked (thousands close together when a PHP-FPM pool stops), the
/// memory their tasks held is worth giving back to the system at once (see
/// `master::trimmer`); fewer are trimmed for [`SETTLE`] later.
const TRIM_AFTER_MOVED: usize = 256;

/// How long after a connection was moved (see [`Lot::moved`]) the memory of
/// those moved since the last trim is given back.
const SETTLE: Duration = PARK_AFTER;

/// How long after the last of those trims one more is made: after
/// thousands of parked connections closed at once, what their tasks held
/// was at times freed only after the trims that the closes asked for.
const FOLLOW_UP: Duration = Duration::from_secs(1);

/// What a connection's reader had learnt of its client, kept while it is
/// parked (it is parked only with nothing buffered, so nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Has sent nothing yet (and its greeting hold is over).
    Undecided,
    /// Speaks taskq's framed protocol.
    Taskq,
    /// Speaks something else, cut by the server's framing options.
    Foreign,
}

/// A parked connection: its socket and where its reader stood.
#[derive(Debug)]
pub struct Parked {
    pub socket: OwnedFd,
    /// A unix socket, not TCP.
    pub unix: bool,
    pub inbound: Inbound,
    pub authenticated: bool,
}

/// A parked connection brought back, waiting for its task.
pub struct Resumed {
    pub fd: u64,
    pub parked: Parked,
    pub outbox: Rc<Outbox>,
    pub closer: Rc<Notify>,
}

/// The epoll set parked sockets wait in, and the connections brought back
/// since the lot's task last looked.
pub struct Lot {
    epoll: OwnedFd,
    resumed: Vec<Resumed>,
    /// Tells the lot's task that `resumed` has connections for it.
    wake: Rc<Notify>,
    /// Handed to the outboxes of resumed connections; told after many
    /// connections were parked.
    trim: Rc<Notify>,
    moved_since_trim: usize,
    /// A trim for moved connections was asked for, and its follow-up not yet.
    follow_up: bool,
}

impl Lot {
    /// An empty lot; `trim` is the master's trimmer.
    pub fn new(trim: Rc<Notify>) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory arguments; the descriptor it
        // returns is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Lot {
            // SAFETY: a fresh descriptor nobody else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            resumed: Vec::new(),
            wake: Rc::new(Notify::new()),
            trim,
            moved_since_trim: 0,
            follow_up: false,
        })
    }

    /// A second descriptor of the epoll set, for the lot's task to wait on,
    /// and what tells that task to look at `take_resumed`.
    pub fn handles(&self) -> io::Result<(OwnedFd, Rc<Notify>)> {
        Ok((self.epoll.try_clone()?, self.wake.clone()))
    }

    /// Starts watching `socket` for session `fd`: any input, end or error
    /// brings it back.
    pub fn watch(&mut self, fd: u64, socket: &OwnedFd) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: fd,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.moved();
        Ok(())
    }

    /// Counts a connection parked, brought back, or closed after it was
    /// parked: each frees tasks' worth of memory, given back to the system
    /// once [`TRIM_AFTER_MOVED`] were counted, or [`SETTLE`] after the
    /// first (so a trim follows the last of a burst).
    pub fn moved(&mut self) {
        self.moved_since_trim += 1;
        if self.moved_since_trim == 1 {
            // The lot's task times the trim for these.
            self.wake.notify_one();
        }
        if self.moved_since_trim >= TRIM_AFTER_MOVED {
            self.settle();
        }
    }

    /// When the lot's task should call [`Lot::settle`]: [`SETTLE`] after
    /// connections were moved, [`FOLLOW_UP`] after the trim that gave their
    /// memory back; `None` when neither is due.
    pub fn next_settle(&self) -> Option<Duration> {
        if self.moved_since_trim > 0 {
            Some(SETTLE)
        } else {
            self.follow_up.then_some(FOLLOW_UP)
        }
    }

    /// Gives back what the tasks of the connections moved since the last
    /// trim held, or makes the follow-up trim.
    pub fn settle(&mut self) {
        if self.moved_since_trim > 0 {
            self.moved_since_trim = 0;
            self.follow_up = true;
        } else if self.follow_up {
            self.follow_up = false;
        } else {
            return;
        }
        self.trim.notify_one();
    }

    /// A fresh outbox and closer for a connection brought back.
    pub fn fresh_link(&self) -> (Rc<Outbox>, Rc<Notify>) {
        (
            Rc::new(Outbox::for_client(self.trim.clone())),
            Rc::new(Notify::new()),
        )
    }

    /// Stops watching a parked socket and hands it to the lot's task.
    pub fn resume(&mut self, resumed: Resumed) {
        // SAFETY: both descriptors are open. Failure means the socket is
        // not in the set, which is what we want.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                resumed.parked.socket.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
        self.resumed.push(resumed);
        self.wake.notify_one();
    }

    /// The connections brought back since the last call.
    pub fn take_resumed(&mut self) -> Vec<Resumed> {
        std::mem::take(&mut self.resumed)
    }
}

/// Reads up to `events.len()` ready sockets from the epoll set `epoll`
/// without waiting: the session ids they were parked under.
pub fn ready(epoll: &OwnedFd, events: &mut [libc::epoll_event]) -> io::Result<usize> {
    let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `events` has room for `max` entries.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
