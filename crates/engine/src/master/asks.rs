//! Questions about the failed tasks (from `$server->failedTasks()` and the
//! admin API), answered at once by a local queue or later by the Redis
//! link: whoever asked waits under a ticket until the answer comes.

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::oneshot;

/// Who waits for an answer.
#[derive(Debug)]
pub enum Asker {
    /// A worker's query number `req`, to its incarnation `generation`.
    Worker {
        worker: u32,
        generation: u64,
        req: u32,
    },
    /// An HTTP request.
    Http(oneshot::Sender<Value>),
}

/// The askers waiting, by ticket.
#[derive(Debug, Default)]
pub struct Asks {
    next: u64,
    waiting: HashMap<u64, Asker>,
}

impl Asks {
    /// Files `asker`; returns its ticket.
    pub fn open(&mut self, asker: Asker) -> u64 {
        self.next += 1;
        self.waiting.insert(self.next, asker);
        self.next
    }

    /// The asker of `ticket`, once: a second answer finds nobody.
    pub fn take(&mut self, ticket: u64) -> Option<Asker> {
        self.waiting.remove(&ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ticket_is_answered_once() {
        let mut asks = Asks::default();
        let a = asks.open(Asker::Worker {
            worker: 1,
            generation: 2,
            req: 3,
        });
        let (tx, _rx) = oneshot::channel();
        let b = asks.open(Asker::Http(tx));
        assert_ne!(a, b);
        assert!(matches!(asks.take(a), Some(Asker::Worker { req: 3, .. })));
        assert!(asks.take(a).is_none());
        assert!(matches!(asks.take(b), Some(Asker::Http(_))));
    }
}
