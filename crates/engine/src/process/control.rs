//! The manager's private line to each child it forks: a socket pair, one
//! end each. Up it goes the child's "started" byte (onWorkerStart has
//! returned); down go the manager's orders: leave (stop or reload) and
//! reopen the log file. Orders travel as bytes rather than signals because
//! a signal interrupts whatever the PHP callback is doing — `sleep()`
//! returns early — while a byte is read only between callbacks, so the
//! running callback finishes as written.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// What the manager tells a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Finish what you hold, then exit (stop, reload).
    Leave,
    /// Reopen `log_file` (it was rotated).
    ReopenLog,
}

impl Order {
    fn byte(self) -> u8 {
        match self {
            Order::Leave => b'L',
            Order::ReopenLog => b'R',
        }
    }

    fn from_byte(b: u8) -> Option<Order> {
        match b {
            b'L' => Some(Order::Leave),
            b'R' => Some(Order::ReopenLog),
            _ => None,
        }
    }
}

/// The byte a child sends up once it has started.
const READY: u8 = b'!';

/// The manager's end of one child's line.
#[derive(Debug)]
pub struct ManagerEnd(UnixStream);

/// A new line: the manager keeps the first end, the child the second.
pub fn line() -> io::Result<(ManagerEnd, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    Ok((ManagerEnd(ours), theirs))
}

impl ManagerEnd {
    /// Sends `order`; false if the child is gone.
    pub fn tell(&self, order: Order) -> bool {
        (&self.0).write(&[order.byte()]).is_ok_and(|n| n == 1)
    }

    /// Whether the child announced it had started.
    pub fn was_ready(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!((&self.0).read(&mut byte), Ok(1) if byte[0] == READY)
    }
}

/// The child's end, kept from the fork until the worker's inbox takes it.
static CHILD_END: Mutex<Option<UnixStream>> = Mutex::new(None);

/// In a freshly forked child: keeps its end of the line.
pub fn adopt(end: UnixStream) {
    if let Ok(mut slot) = CHILD_END.lock() {
        *slot = Some(end);
    }
}

/// Called by a worker once it has started (onWorkerStart returned): from
/// then on its death is an ordinary crash, not a crash loop, so the manager
/// respawns it at once (random SIGKILLs under load must not slow it down).
pub fn announce_ready() {
    if let Ok(slot) = CHILD_END.lock() {
        if let Some(end) = slot.as_ref() {
            let _ = (&*end).write(&[READY]);
        }
    }
}

/// The child's end of the line, for the worker's inbox to wait on.
pub fn child_end() -> Option<UnixStream> {
    CHILD_END
        .lock()
        .ok()
        .and_then(|slot| slot.as_ref().and_then(|e| e.try_clone().ok()))
}

/// What reading the child's end gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Orders(Vec<Order>),
    /// The manager is gone: the line was closed.
    Closed,
}

/// Reads the orders already sent, without waiting.
pub fn read_orders(end: &UnixStream) -> Heard {
    let mut buf = [0u8; 64];
    let mut orders = Vec::new();
    loop {
        match (&*end).read(&mut buf) {
            Ok(0) => return Heard::Closed,
            Ok(n) => orders.extend(buf[..n].iter().copied().filter_map(Order::from_byte)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Heard::Orders(orders),
            Err(_) => return Heard::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_go_down_and_readiness_up() {
        let (manager, child) = line().unwrap();
        assert!(!manager.was_ready(), "nothing announced yet");
        assert_eq!(read_orders(&child), Heard::Orders(vec![]));
        assert!(manager.tell(Order::ReopenLog));
        assert!(manager.tell(Order::Leave));
        assert_eq!(
            read_orders(&child),
            Heard::Orders(vec![Order::ReopenLog, Order::Leave])
        );
        (&child).write_all(&[READY]).unwrap();
        assert!(manager.was_ready());
    }

    #[test]
    fn a_closed_line_means_the_manager_is_gone() {
        let (manager, child) = line().unwrap();
        drop(manager);
        assert_eq!(read_orders(&child), Heard::Closed);
        let (manager, child) = line().unwrap();
        drop(child);
        assert!(!manager.tell(Order::Leave), "a gone child is reported");
    }
}
