//! HTTP submissions (`POST /tasks`) waiting for their acknowledgement. A
//! task from HTTP goes through the same path as `TaskClient::task()` — the
//! same queue, group commit and Redis link — under a session id of its own
//! that no connection has (the top bit set); where that path would answer a
//! connection, the hub answers the waiter instead.

use std::collections::HashMap;

use tokio::sync::oneshot;

/// Session ids with this bit set belong to HTTP waiters, not connections
/// (connections count up from 1 and never reach it).
const WAITER_BIT: u64 = 1 << 63;

/// How the queue answered one submission: its id, or the protocol error
/// code and message a taskq client would have been sent.
pub type Answer = Result<u64, (u32, String)>;

/// The waiters, by their session id.
#[derive(Default)]
pub struct Waiters {
    next: u64,
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
}

impl Waiters {
    /// A new waiter: the session id to submit under, and where its answer
    /// arrives (closed without one if the master stops first).
    pub fn open(&mut self) -> (u64, oneshot::Receiver<Answer>) {
        self.next += 1;
        let fd = WAITER_BIT | self.next;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(fd, tx);
        (fd, rx)
    }

    /// Whether `fd` is a waiter's id rather than a connection's.
    pub fn owns(fd: u64) -> bool {
        fd & WAITER_BIT != 0
    }

    /// Gives waiter `fd` its answer; a waiter whose HTTP client went away
    /// is simply forgotten.
    pub fn answer(&mut self, fd: u64, answer: Answer) {
        if let Some(tx) = self.waiting.remove(&fd) {
            let _ = tx.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_gets_its_own_answer_once() {
        let mut w = Waiters::default();
        let (a, mut rx_a) = w.open();
        let (b, mut rx_b) = w.open();
        assert!(Waiters::owns(a) && Waiters::owns(b) && !Waiters::owns(1));
        w.answer(b, Err((9001, "full".into())));
        w.answer(a, Ok(7));
        w.answer(a, Ok(8));
        assert_eq!(rx_a.try_recv().unwrap(), Ok(7));
        assert_eq!(rx_b.try_recv().unwrap(), Err((9001, "full".into())));
    }
}
