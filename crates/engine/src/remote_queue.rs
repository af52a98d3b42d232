//! The task queue when tasks live in Redis (`task_backend`). The dispatcher
//! sees a [`TaskQueue`] like any other, but a task pushed here goes out to
//! Redis for whichever server takes it first, and the tasks it hands out
//! are the ones this server took from Redis. Nothing here does I/O: every
//! change is written down in the [`Ledger`] for the master's Redis link
//! (`master::redis_link`) to carry out, so the dispatcher stays
//! synchronous and this file is tested without a Redis.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use taskq_redis::{Entry, EntryId, NewTask, QueueStats};
use tokio::sync::Notify;

use crate::failed::FailedOp;
use crate::ipc::result_has_a_destination;
use crate::payload::{Encoding, Payload};
use crate::php_serial::Policy;
use crate::queue::{now_ms, MemoryQueue, QueuedTask, TaskQueue};

/// Local ids of tasks taken from Redis have this bit set, so they never
/// meet the ids of tasks submitted here (numbered from 1 by the master).
pub const TAKEN: u64 = 1 << 62;
/// Set as well on a taken task that another server submitted: its result
/// and its failure belong to that server, not to a worker of this one.
pub const FOREIGN: u64 = 1 << 61;

/// Whether the local id `id` names a task another server submitted.
pub fn is_foreign(id: u64) -> bool {
    id & TAKEN != 0 && id & FOREIGN != 0
}

/// How a task taken from Redis ends, for the link to tell Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// It ran; nobody is owed a result.
    Ack(Entry),
    /// It ran and called finish(): the result goes to its origin's results
    /// stream in the same MULTI as the ack.
    Finish(Entry, Payload),
    /// The run failed with attempts left: back to Redis after the backoff,
    /// for any server.
    Retry(Entry, Duration),
    /// The task used up its attempts: to the failed list, with the error.
    Fail(Entry, String),
}

impl Settle {
    /// The Redis entry this settles.
    pub fn entry(&self) -> &Entry {
        match self {
            Settle::Ack(e) | Settle::Finish(e, _) | Settle::Retry(e, _) | Settle::Fail(e, _) => e,
        }
    }
}

/// A task taken from Redis and not settled yet.
#[derive(Debug)]
struct Held {
    entry: Entry,
    /// What finish() delivered, posted when the task completes.
    result: Option<Payload>,
}

/// Wakes the link's loops when there is something for them.
#[derive(Debug, Default)]
pub struct Wakers {
    /// Tasks to submit.
    pub submit: Notify,
    /// Taken tasks to settle.
    pub settle: Notify,
    /// Room for more tasks, or tasks just submitted that this server may
    /// take itself.
    pub fetch: Notify,
    /// Tasks just submitted, whose results may come back soon.
    pub results: Notify,
    /// Questions about the failed list.
    pub asks: Notify,
}

/// What the dispatcher did that Redis must learn, and the tasks this server
/// took from Redis; shared by the [`RemoteQueue`] (inside the dispatcher),
/// the master's tasks and the Redis link.
#[derive(Debug)]
pub struct Ledger {
    /// This server's consumer name: the origin of what it submits.
    consumer: String,
    /// What task payloads from Redis may hold: another server, or anyone
    /// who can write to Redis, put them there.
    untrusted: Policy,
    submits: Vec<QueuedTask>,
    settles: Vec<Settle>,
    held: HashMap<u64, Held>,
    /// Taken tasks waiting for a task worker of this server.
    buffer: MemoryQueue,
    next_taken: u64,
    /// Questions about the failed list for the link, each with the ticket
    /// the hub answers.
    asks: Vec<(u64, FailedOp)>,
    /// The queue as Redis last counted it, across every server, and when
    /// (unix ms): `stats()` answers at once, from this.
    counted: Option<(QueueStats, u64)>,
    pub wake: Rc<Wakers>,
}

/// Shared handle on the ledger.
pub type SharedLedger = Rc<RefCell<Ledger>>;

impl Ledger {
    /// An empty ledger for consumer `consumer`.
    pub fn new(consumer: &str, untrusted: Policy) -> SharedLedger {
        Rc::new(RefCell::new(Ledger {
            consumer: consumer.to_owned(),
            untrusted,
            submits: Vec::new(),
            settles: Vec::new(),
            held: HashMap::new(),
            buffer: MemoryQueue::default(),
            next_taken: 1,
            asks: Vec::new(),
            counted: None,
            wake: Rc::new(Wakers::default()),
        }))
    }

    /// This server's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Up to `max` tasks to submit, oldest first.
    pub fn take_submits(&mut self, max: usize) -> Vec<QueuedTask> {
        let n = self.submits.len().min(max);
        self.submits.drain(..n).collect()
    }

    /// Every settlement written down so far.
    pub fn take_settles(&mut self) -> Vec<Settle> {
        std::mem::take(&mut self.settles)
    }

    /// Settlements Redis could not take yet go back, ahead of newer ones.
    pub fn return_settles(&mut self, mut settles: Vec<Settle>) {
        settles.append(&mut self.settles);
        self.settles = settles;
    }

    /// Asks Redis about its failed list; the link answers ticket `ticket`.
    pub fn ask(&mut self, ticket: u64, op: FailedOp) {
        self.asks.push((ticket, op));
        self.wake.asks.notify_one();
    }

    /// Every question written down so far.
    pub fn take_asks(&mut self) -> Vec<(u64, FailedOp)> {
        std::mem::take(&mut self.asks)
    }

    /// A payload read from Redis as this server admits it; one it does not
    /// admit is shown empty rather than not at all (a failed task's data,
    /// for onTaskFailed or an operator).
    pub fn admitted_or_empty(&self, data: &Bytes) -> Payload {
        decode(data, &self.untrusted).unwrap_or(Payload {
            encoding: Encoding::Raw,
            data: Bytes::new(),
        })
    }

    /// Redis counted the queue at `at_ms`.
    pub fn counted(&mut self, stats: QueueStats, at_ms: u64) {
        self.counted = Some((stats, at_ms));
    }

    /// The queue-wide counts and when Redis made them; None until Redis
    /// was first reached.
    pub fn queue_stats(&self) -> Option<(QueueStats, u64)> {
        self.counted
    }

    /// Taken tasks waiting for a task worker of this server.
    pub fn waiting(&self) -> usize {
        self.buffer.len()
    }

    /// Tasks taken from Redis and not settled.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The entries to keep alive in Redis: every task taken and not
    /// settled, running or waiting here for a task worker, and every one
    /// that ended here but whose settlement Redis has not taken yet (so
    /// another server does not reclaim and rerun it meanwhile).
    pub fn alive(&self) -> Vec<EntryId> {
        self.held
            .values()
            .map(|h| &h.entry.at)
            .chain(self.settles.iter().map(|s| &s.entry().at))
            .cloned()
            .collect()
    }

    /// Settlements written down and not yet taken by Redis.
    pub fn unsettled(&self) -> usize {
        self.settles.len()
    }

    /// Another server reclaimed these entries (this one looked dead to
    /// it): their settlement is that server's now.
    pub fn lost(&mut self, entries: &[EntryId]) {
        self.held.retain(|_, h| !entries.contains(&h.entry.at));
    }

    /// Adds tasks this server took from Redis. Those it must not run (a
    /// payload this server does not accept) go to the failed list; returns
    /// how many.
    pub fn taken(&mut self, entries: Vec<Entry>) -> usize {
        let mut refused = 0;
        for entry in entries {
            let payload = match decode(&entry.task.payload, &self.untrusted) {
                Ok(p) => p,
                Err(why) => {
                    refused += 1;
                    self.settles
                        .push(Settle::Fail(entry, format!("payload refused: {why}")));
                    continue;
                }
            };
            let foreign = entry.task.origin != self.consumer;
            let id = TAKEN | if foreign { FOREIGN } else { 0 } | self.next_taken;
            self.next_taken += 1;
            let task = QueuedTask {
                id,
                src_worker: entry.task.src_worker,
                task_id: entry.task.src_task_id,
                payload,
                attempts: entry.task.attempts,
                max_attempts: entry.task.max_attempts,
                priority: entry.task.priority,
                not_before: 0,
                queued_ms: 0,
            };
            self.held.insert(
                id,
                Held {
                    entry,
                    result: None,
                },
            );
            self.buffer.push(task);
        }
        if refused > 0 {
            self.wake.settle.notify_one();
        }
        refused
    }

    /// finish() of a taken task delivered `payload`; false if `id` is not
    /// a task taken from Redis (a task for one task worker stays local).
    /// A client's task (no dispatching worker) is owed no result, as with
    /// the embedded queue: it is dropped here, so the task settles with a
    /// plain ack, batched with the others, instead of a MULTI of its own
    /// and a write to a results stream its origin would discard.
    pub fn record_result(&mut self, id: u64, payload: &Payload) -> bool {
        match self.held.get_mut(&id) {
            Some(h) => {
                if result_has_a_destination(h.entry.task.src_worker) {
                    h.result = Some(payload.clone());
                }
                true
            }
            None => false,
        }
    }

    fn settle(&mut self, settle: Settle) {
        self.settles.push(settle);
        self.wake.settle.notify_one();
        self.wake.fetch.notify_one();
    }
}

/// The [`TaskQueue`] the dispatcher owns when tasks live in Redis.
#[derive(Debug)]
pub struct RemoteQueue {
    ledger: SharedLedger,
}

impl RemoteQueue {
    /// A queue writing to `ledger`.
    pub fn new(ledger: SharedLedger) -> Self {
        RemoteQueue { ledger }
    }
}

impl TaskQueue for RemoteQueue {
    /// Goes out to Redis; the dispatcher never sees it again unless this
    /// server takes it back from there.
    fn push(&mut self, task: QueuedTask) {
        let mut l = self.ledger.borrow_mut();
        l.submits.push(task);
        l.wake.submit.notify_one();
    }

    fn take(&mut self, now_ms: u64) -> Option<QueuedTask> {
        self.ledger.borrow_mut().buffer.take(now_ms)
    }

    fn next_due(&self) -> Option<u64> {
        self.ledger.borrow().buffer.next_due()
    }

    fn ready(&self, now_ms: u64) -> bool {
        self.ledger.borrow().buffer.ready(now_ms)
    }

    fn ack(&mut self, id: u64) {
        let mut l = self.ledger.borrow_mut();
        if let Some(h) = l.held.remove(&id) {
            l.settle(match h.result {
                Some(p) => Settle::Finish(h.entry, p),
                None => Settle::Ack(h.entry),
            });
        }
    }

    /// A failed run goes back to Redis (any server may retry it); a task
    /// that never started (its worker died first) waits here again, still
    /// this server's entry.
    fn requeue(&mut self, task: QueuedTask) {
        let mut l = self.ledger.borrow_mut();
        let failed_run = l
            .held
            .get(&task.id)
            .is_some_and(|h| task.attempts > h.entry.task.attempts);
        if failed_run {
            let h = l.held.remove(&task.id).expect("held");
            let delay = Duration::from_millis(task.not_before.saturating_sub(now_ms()));
            l.settle(Settle::Retry(h.entry, delay));
        } else {
            l.buffer.requeue(task);
        }
    }

    fn fail(&mut self, task: QueuedTask, error: &str) {
        let mut l = self.ledger.borrow_mut();
        if let Some(h) = l.held.remove(&task.id) {
            l.settle(Settle::Fail(h.entry, error.to_owned()));
        }
    }

    fn len(&self) -> usize {
        let l = self.ledger.borrow();
        l.buffer.len() + l.submits.len()
    }

    /// Delayed tasks wait in Redis, not here; those taken wait only for a
    /// task worker.
    fn delayed(&self) -> usize {
        self.ledger.borrow().buffer.delayed()
    }
}

/// A task as Redis keeps it: its payload with the encoding in front.
pub fn new_task(task: &QueuedTask) -> NewTask {
    NewTask {
        payload: encode(&task.payload),
        priority: task.priority,
        delay: Duration::from_millis(task.not_before.saturating_sub(now_ms())),
        max_attempts: task.max_attempts,
        src_worker: task.src_worker,
        src_task_id: task.task_id,
    }
}

/// A payload for Redis: one byte of encoding, then the data.
pub fn encode(payload: &Payload) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + payload.data.len());
    b.put_u8(payload.encoding as u8);
    b.put_slice(&payload.data);
    b.freeze()
}

/// A payload read from Redis. Serialized values are checked as if a
/// network client had sent them and unserialized with the server's
/// `task_allowed_classes`: whoever can write to Redis must not choose the
/// classes a worker instantiates.
pub fn decode(data: &Bytes, policy: &Policy) -> Result<Payload, String> {
    let Some(&tag) = data.first() else {
        return Err("empty payload (no encoding byte)".into());
    };
    let encoding = Encoding::from_u8(tag).map_err(|e| e.to_string())?;
    let payload = Payload {
        encoding,
        data: data.slice(1..),
    };
    crate::php_serial::admit(payload, policy).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::php_serial::AllowedClasses;
    use taskq_redis::Task;

    fn policy() -> Policy {
        Policy {
            classes: AllowedClasses::None,
            max_depth: 8,
        }
    }

    fn entry(n: u32, origin: &str, payload: Payload, attempts: u32) -> Entry {
        Entry {
            at: EntryId {
                priority: 0,
                id: format!("1-{n}"),
            },
            task: Task {
                id: u64::from(n),
                origin: origin.into(),
                src_worker: 1,
                src_task_id: 7,
                priority: 0,
                payload: encode(&payload),
                max_attempts: 3,
                attempts,
                submitted_at_ms: 0,
            },
            deliveries: 1,
        }
    }

    fn raw(data: &'static [u8]) -> Payload {
        Payload {
            encoding: Encoding::Raw,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn a_pushed_task_goes_out_and_only_taken_ones_come_back() {
        let ledger = Ledger::new("a:1", policy());
        let mut q = RemoteQueue::new(ledger.clone());
        q.push(crate::queue::tests::task(1));
        assert_eq!(
            q.len(),
            1,
            "counted against task_queue_max until Redis has it"
        );
        assert_eq!(q.take(now_ms()), None, "another server may run it");
        assert_eq!(ledger.borrow_mut().take_submits(10).len(), 1);
        assert_eq!(q.len(), 0);
        ledger.borrow_mut().taken(vec![
            entry(1, "a:1", raw(b"x"), 0),
            entry(2, "b:1", raw(b"y"), 0),
        ]);
        let own = q.take(now_ms()).unwrap();
        let other = q.take(now_ms()).unwrap();
        assert!(!is_foreign(own.id) && own.id & TAKEN != 0);
        assert!(is_foreign(other.id));
        assert_eq!((own.src_worker, own.task_id), (1, 7));
        assert_eq!(own.payload, raw(b"x"));
    }

    #[test]
    fn completion_posts_the_result_with_the_ack_and_failure_goes_back_to_redis() {
        let ledger = Ledger::new("a:1", policy());
        let mut q = RemoteQueue::new(ledger.clone());
        ledger.borrow_mut().taken(vec![
            entry(1, "a:1", raw(b"x"), 0),
            entry(2, "a:1", raw(b"y"), 0),
            entry(3, "a:1", raw(b"z"), 0),
            entry(4, "a:1", raw(b"w"), 0),
        ]);
        let t: Vec<_> = (0..4).map(|_| q.take(now_ms()).unwrap()).collect();
        assert!(ledger.borrow_mut().record_result(t[0].id, &raw(b"out")));
        q.ack(t[0].id);
        q.ack(t[1].id);
        let mut retried = t[2].clone();
        retried.attempts += 1;
        retried.not_before = now_ms() + 60_000;
        q.requeue(retried);
        q.fail(t[3].clone(), "boom");
        let settles = ledger.borrow_mut().take_settles();
        assert!(matches!(&settles[0], Settle::Finish(e, p) if e.task.id == 1 && *p == raw(b"out")));
        assert!(matches!(&settles[1], Settle::Ack(e) if e.task.id == 2));
        assert!(matches!(&settles[2], Settle::Retry(e, d) if e.task.id == 3 && d.as_secs() >= 59));
        assert!(matches!(&settles[3], Settle::Fail(e, why) if e.task.id == 4 && why == "boom"));
        assert_eq!(ledger.borrow().held(), 0);
    }

    #[test]
    fn a_clients_task_settles_with_a_plain_ack_whatever_on_task_returned() {
        let ledger = Ledger::new("a:1", policy());
        let mut q = RemoteQueue::new(ledger.clone());
        let mut client_task = entry(1, "b:1", raw(b"x"), 0);
        client_task.task.src_worker = -1;
        ledger.borrow_mut().taken(vec![client_task]);
        let t = q.take(now_ms()).unwrap();
        assert!(
            ledger.borrow_mut().record_result(t.id, &raw(b"true")),
            "a task from Redis: not routed locally"
        );
        q.ack(t.id);
        assert_eq!(
            (ledger.borrow().unsettled(), ledger.borrow().alive().len()),
            (1, 1),
            "kept alive until Redis took its settlement"
        );
        let settles = ledger.borrow_mut().take_settles();
        assert!(matches!(&settles[..], [Settle::Ack(e)] if e.task.id == 1));
        assert_eq!(settles[0].entry().task.id, 1);
        assert_eq!(ledger.borrow().alive().len(), 0);
    }

    #[test]
    fn a_task_whose_worker_died_before_it_started_waits_here_again() {
        let ledger = Ledger::new("a:1", policy());
        let mut q = RemoteQueue::new(ledger.clone());
        ledger
            .borrow_mut()
            .taken(vec![entry(1, "a:1", raw(b"x"), 1)]);
        let t = q.take(now_ms()).unwrap();
        q.requeue(t.clone());
        assert!(ledger.borrow_mut().take_settles().is_empty());
        assert_eq!(q.take(now_ms()).map(|t| t.id), Some(t.id));
        assert_eq!(ledger.borrow().alive().len(), 1, "still kept alive");
    }

    #[test]
    fn objects_from_redis_need_the_servers_allowed_classes() {
        let ledger = Ledger::new("a:1", policy());
        let object = Payload {
            encoding: Encoding::Serialized,
            data: Bytes::from_static(b"O:8:\"stdClass\":0:{}"),
        };
        assert_eq!(
            ledger.borrow_mut().taken(vec![entry(1, "b:1", object, 0)]),
            1
        );
        let settles = ledger.borrow_mut().take_settles();
        assert!(matches!(&settles[0], Settle::Fail(_, why) if why.contains("payload refused")));
        let array = Payload {
            encoding: Encoding::Serialized,
            data: Bytes::from_static(b"a:1:{i:0;i:1;}"),
        };
        assert_eq!(
            decode(&encode(&array), &policy()).unwrap().encoding,
            Encoding::Untrusted
        );
        assert!(decode(&Bytes::new(), &policy()).is_err());
    }

    #[test]
    fn entries_reclaimed_by_another_server_are_no_longer_settled_here() {
        let ledger = Ledger::new("a:1", policy());
        let mut q = RemoteQueue::new(ledger.clone());
        ledger
            .borrow_mut()
            .taken(vec![entry(1, "a:1", raw(b"x"), 0)]);
        let t = q.take(now_ms()).unwrap();
        let gone = ledger.borrow().alive();
        ledger.borrow_mut().lost(&gone);
        q.ack(t.id);
        assert!(ledger.borrow_mut().take_settles().is_empty());
    }
}
