//! The master's link to Redis when tasks live there (`task_backend`): it
//! carries out what the [`Ledger`] wrote down (submissions, settlements),
//! takes tasks for this server's task workers, reads the results other
//! servers ran for this one, keeps this server's running tasks from being
//! reclaimed and reclaims the tasks of servers that died. Every loop runs
//! on the master's thread and reaches the rooms through the hub; none
//! holds a borrow of the hub across an await.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use serde_json::{json, Value};
/// Connect and call time limits of the Redis link.
pub use taskq_redis::Timeouts;
use taskq_redis::{RedisQueue, RedisQueueError, Select};

use super::hub::Hub;
use super::name_holder::Holder;
use crate::failed::{FailedOp, FailedTask, Which};
use crate::log::Level;
use crate::remote_queue::{new_task, Settle, SharedLedger};

/// Where and how tasks live in Redis (`task_backend` and its options).
#[derive(Debug, Clone)]
pub struct Backend {
    /// `redis://`, `rediss://` or `unix://` address.
    pub dsn: String,
    /// The queue shared by every server that names it (`task_queue`).
    pub queue: String,
    /// This server's stable consumer name (`task_consumer`).
    pub consumer: String,
    /// How long another server's task may sit untouched before this one
    /// takes it over (`task_claim_idle`).
    pub claim_idle: Duration,
    pub timeouts: Timeouts,
}

/// Most results posted in one MULTI: a burst of finished tasks costs one
/// round trip, and one transaction stays a bounded message.
const SETTLE_BATCH: usize = 256;
/// Most tasks submitted in one MULTI: small enough that Redis runs one
/// batch while the master builds the next, large enough that the
/// transaction's own cost is shared by many tasks.
const SUBMIT_BATCH: usize = 256;
/// Submissions sent and not yet answered. One at a time left Redis and
/// the master each idle half the time (every batch: build, then wait).
const SUBMITS_IN_FLIGHT: u32 = 4;
/// Most results read per call.
const RESULTS_BATCH: usize = 512;
/// Polling backs off from this to `POLL_MAX` while Redis has nothing.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);
/// How often Redis counts the whole queue for `stats()`.
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// Reconnection backs off from this to `RECONNECT_MAX`.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The running link: what the stop needs to flush.
pub struct RedisLink {
    hub: Rc<RefCell<Hub>>,
    ledger: SharedLedger,
    queue: Rc<RefCell<Option<Rc<RedisQueue>>>>,
    /// This process, as it holds the consumer name.
    me: Holder,
    /// How long the flush at the stop may take: twice the command timeout.
    flush_within: Duration,
    in_flight: InFlight,
}

impl RedisLink {
    /// Starts connecting to Redis and, once connected, every loop of the
    /// link, on the master's LocalSet.
    pub fn spawn(hub: Rc<RefCell<Hub>>, ledger: SharedLedger, backend: Backend) -> Self {
        let queue = Rc::new(RefCell::new(None));
        let flush_within = backend.timeouts.command * 2;
        let me = Holder::this_process();
        let in_flight = InFlight::default();
        tokio::task::spawn_local(connect(
            hub.clone(),
            ledger.clone(),
            backend,
            me.clone(),
            queue.clone(),
            in_flight.clone(),
        ));
        RedisLink {
            hub,
            ledger,
            queue,
            me,
            flush_within,
            in_flight,
        }
    }

    /// At the stop, after the last worker left: submits and settles what
    /// is still written down, within twice the command timeout, so finished
    /// tasks do not run again and submitted ones are not lost; then frees
    /// the consumer name for the server's next start.
    pub async fn flush(&self) {
        let Some(queue) = self.queue.borrow().clone() else {
            return;
        };
        let flushed = tokio::time::timeout(self.flush_within, async {
            submit_pending(&self.hub, &self.ledger, &queue, &self.in_flight, None).await;
            self.in_flight.all_answered().await;
            settle_pending(&self.ledger, &queue).await?;
            queue.release_name(&self.me.to_string()).await.map(drop)
        })
        .await;
        let why = match flushed {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.flush_within),
        };
        crate::log!(
            Level::Warning,
            "task backend at the stop: {why}; finished tasks it was not told of will run again"
        );
    }
}

/// The submissions on their way to Redis, bounded; the stop waits for
/// their answers before it settles and leaves.
#[derive(Clone)]
struct InFlight(Arc<Semaphore>);

impl Default for InFlight {
    fn default() -> Self {
        InFlight(Arc::new(Semaphore::new(SUBMITS_IN_FLIGHT as usize)))
    }
}

impl InFlight {
    async fn slot(&self) -> OwnedSemaphorePermit {
        self.0.clone().acquire_owned().await.expect("never closed")
    }

    async fn all_answered(&self) {
        drop(self.0.acquire_many(SUBMITS_IN_FLIGHT).await);
    }
}

/// Says once that Redis went away and once that it came back, not on
/// every failed call.
#[derive(Default)]
struct Health {
    down: Cell<bool>,
}

impl Health {
    fn failed(&self, e: &RedisQueueError) {
        if !self.down.replace(true) {
            crate::log!(
                Level::Error,
                "task backend: {e}; tasks wait, task workers idle, retrying"
            );
        }
    }

    fn ok(&self) {
        if self.down.replace(false) {
            crate::log!(Level::Notice, "task backend reachable again; resuming");
        }
    }
}

async fn connect(
    hub: Rc<RefCell<Hub>>,
    ledger: SharedLedger,
    backend: Backend,
    me: Holder,
    slot: Rc<RefCell<Option<Rc<RedisQueue>>>>,
    in_flight: InFlight,
) {
    let mut wait = RECONNECT_MIN;
    let mut said = String::new();
    let queue = loop {
        let why = match connect_as(&backend, &me).await {
            Ok(Ok(q)) => break q,
            Ok(Err(holder)) => format!(
                "consumer name {:?} is held by {holder}, another live server; this one takes no tasks and refuses submissions until it is free (give each server its own task_consumer)",
                backend.consumer
            ),
            Err(e) => e.to_string(),
        };
        if why != said {
            crate::log!(Level::Error, "task backend: {why}; retrying");
            said = why.clone();
        }
        refuse_pending(&hub, &ledger, &why);
        let wake = ledger.borrow().wake.clone();
        // A submission or a question tries again at once, so its answer
        // (refused, or taken by the new connection) does not wait out the
        // backoff.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.submit.notified() => {}
            _ = wake.asks.notified() => {}
        }
        wait = (wait * 2).min(RECONNECT_MAX);
    };
    crate::log!(
        Level::Info,
        "task backend {}: queue {:?}, consumer {:?}",
        taskq_redis::Dsn::parse(&backend.dsn)
            .map(|d| d.shown().to_owned())
            .unwrap_or_default(),
        backend.queue,
        queue.consumer()
    );
    let shared = Rc::new(queue.handle());
    *slot.borrow_mut() = Some(shared.clone());
    let health = Rc::new(Health::default());
    tokio::task::spawn_local(submitter(
        hub.clone(),
        ledger.clone(),
        shared.clone(),
        health.clone(),
        in_flight,
    ));
    tokio::task::spawn_local(settler(ledger.clone(), shared.clone(), health.clone()));
    tokio::task::spawn_local(results(hub.clone(), ledger.clone(), shared.clone()));
    tokio::task::spawn_local(counter(ledger.clone(), shared.clone()));
    tokio::task::spawn_local(answerer(hub.clone(), ledger.clone(), shared.clone()));
    tokio::task::spawn_local(keeper(
        hub.clone(),
        ledger.clone(),
        shared,
        me,
        backend.claim_idle,
    ));
    fetcher(hub, ledger, queue, health).await;
}

/// Connects and holds the consumer name (for the claim idle time, the
/// time after which the others would take a silent server's tasks too),
/// taking it at once from a predecessor known dead. Ok(Err(holder)): a
/// live process holds the name.
async fn connect_as(
    backend: &Backend,
    me: &Holder,
) -> Result<Result<RedisQueue, String>, RedisQueueError> {
    let queue = RedisQueue::connect(
        &backend.dsn,
        &backend.queue,
        &backend.consumer,
        backend.timeouts,
    )
    .await?;
    let token = me.to_string();
    let Some(holder) = queue.hold_name(&token, backend.claim_idle, None).await? else {
        return Ok(Ok(queue));
    };
    if !Holder::parse(&holder).is_some_and(|h| h.is_gone()) {
        return Ok(Err(holder));
    }
    crate::log!(
        Level::Notice,
        "task backend: consumer name {:?} was held by {holder}, which is no longer running; taking it over",
        backend.consumer
    );
    Ok(
        match queue
            .hold_name(&token, backend.claim_idle, Some(&holder))
            .await?
        {
            None => Ok(queue),
            Some(other) => Err(other),
        },
    )
}

/// While Redis cannot be reached at all, submissions and questions about
/// the failed list fail at once rather than wait for a connection that may
/// never come.
fn refuse_pending(hub: &Rc<RefCell<Hub>>, ledger: &SharedLedger, why: &str) {
    let asks = ledger.borrow_mut().take_asks();
    for (ticket, _) in asks {
        hub.borrow_mut()
            .answered(ticket, json!({ "error": format!("task backend: {why}") }));
    }
    loop {
        let batch = ledger.borrow_mut().take_submits(SUBMIT_BATCH);
        if batch.is_empty() {
            return;
        }
        hub.borrow_mut().submitted(&batch, Err(why.to_owned()));
    }
}

async fn submitter(
    hub: Rc<RefCell<Hub>>,
    ledger: SharedLedger,
    queue: Rc<RedisQueue>,
    health: Rc<Health>,
    in_flight: InFlight,
) {
    let wake = ledger.borrow().wake.clone();
    // What was written down while connecting goes first: its wake-up may
    // have been spent on the connection loop.
    loop {
        submit_pending(&hub, &ledger, &queue, &in_flight, Some(&health)).await;
        wake.submit.notified().await;
    }
}

/// Submits everything written down, batch by batch, up to
/// `SUBMITS_IN_FLIGHT` batches at once; the hub acknowledges each client
/// once Redis holds its task. Batches are prepared here one after the
/// other and each is sent by a task spawned in that order, which the
/// LocalSet first runs in that order: Redis queues them in the order the
/// tasks were submitted.
async fn submit_pending(
    hub: &Rc<RefCell<Hub>>,
    ledger: &SharedLedger,
    queue: &Rc<RedisQueue>,
    in_flight: &InFlight,
    health: Option<&Rc<Health>>,
) {
    loop {
        let slot = in_flight.slot().await;
        let batch = ledger.borrow_mut().take_submits(SUBMIT_BATCH);
        if batch.is_empty() {
            return;
        }
        let tasks: Vec<_> = batch.iter().map(new_task).collect();
        let prepared = match queue.prepare(&tasks).await {
            Ok(prepared) => prepared,
            Err(e) => {
                hub.borrow_mut().submitted(&batch, Err(e.to_string()));
                continue;
            }
        };
        let (hub, ledger, queue) = (hub.clone(), ledger.clone(), queue.clone());
        let health = health.cloned();
        tokio::task::spawn_local(async move {
            let outcome = queue.send(prepared).await.map_err(|e| e.to_string());
            if outcome.is_ok() {
                if let Some(health) = health {
                    health.ok();
                }
            }
            drop(slot);
            hub.borrow_mut().submitted(&batch, outcome);
            // This server may take its own tasks, and their results will
            // come back: tell the fetcher and the results reader now rather
            // than at their next poll.
            let wake = ledger.borrow().wake.clone();
            wake.fetch.notify_one();
            wake.results.notify_one();
        });
        // Let the send go out now, so Redis runs this batch while the next
        // one is prepared.
        tokio::task::yield_now().await;
    }
}

async fn settler(ledger: SharedLedger, queue: Rc<RedisQueue>, health: Rc<Health>) {
    let wake = ledger.borrow().wake.clone();
    let mut wait = RECONNECT_MIN;
    loop {
        while let Err(e) = settle_pending(&ledger, &queue).await {
            health.failed(&e);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECONNECT_MAX);
        }
        health.ok();
        wait = RECONNECT_MIN;
        // The fetcher takes less while settlements pile up: room again.
        wake.fetch.notify_one();
        wake.settle.notified().await;
    }
}

/// Tells Redis how the tasks written down ended: acks in one MULTI, tasks
/// with a result for their origin in MULTIs of up to [`SETTLE_BATCH`], the
/// others (retries and failures, each a script) one by one. What Redis
/// could not take goes back to the ledger for the next try; the entries
/// stay pending in Redis meanwhile, so nothing is lost, at worst run again
/// after a crash.
async fn settle_pending(ledger: &SharedLedger, queue: &RedisQueue) -> Result<(), RedisQueueError> {
    let settles = ledger.borrow_mut().take_settles();
    if settles.is_empty() {
        return Ok(());
    }
    let (acks, rest): (Vec<_>, Vec<_>) = settles
        .into_iter()
        .partition(|s| matches!(s, Settle::Ack(_)));
    let (finishes, others): (Vec<_>, Vec<_>) = rest
        .into_iter()
        .partition(|s| matches!(s, Settle::Finish(..)));
    let ids: Vec<_> = acks.iter().map(|s| s.entry().at.clone()).collect();
    let acked = if ids.is_empty() {
        Ok(0)
    } else {
        queue.ack(&ids).await
    };
    if let Err(e) = acked {
        let mut back = acks;
        back.extend(finishes);
        back.extend(others);
        ledger.borrow_mut().return_settles(back);
        return Err(e);
    }
    let mut pending: Vec<Settle> = finishes.into_iter().chain(others).collect();
    while !pending.is_empty() {
        let finishing = pending
            .iter()
            .take(SETTLE_BATCH)
            .take_while(|s| matches!(s, Settle::Finish(..)))
            .count();
        let (n, done) = if finishing > 0 {
            let encoded: Vec<_> = pending[..finishing]
                .iter()
                .map(|s| match s {
                    Settle::Finish(entry, payload) => (entry, crate::remote_queue::encode(payload)),
                    _ => unreachable!("counted as finishes above"),
                })
                .collect();
            let batch: Vec<_> = encoded.iter().map(|(e, p)| (*e, &p[..])).collect();
            (finishing, queue.finish(&batch).await)
        } else {
            let done = match &pending[0] {
                Settle::Retry(entry, delay) => queue.retry(entry, *delay).await,
                Settle::Fail(entry, why) => queue.fail(entry, why).await,
                Settle::Ack(_) | Settle::Finish(..) => unreachable!("settled in MULTIs"),
            };
            (1, done.map(|ok| vec![ok]))
        };
        match done {
            Ok(flags) => {
                for (settle, ours) in pending.drain(..n).zip(flags) {
                    if !ours {
                        crate::log!(
                            Level::Notice,
                            "task {} was taken over by another server before it was settled here",
                            settle.entry().task.id
                        );
                    }
                }
            }
            Err(e) if e.is_transient() => {
                ledger.borrow_mut().return_settles(pending);
                return Err(e);
            }
            Err(e) => {
                for settle in pending.drain(..n) {
                    crate::log!(
                        Level::Error,
                        "task backend: {e} (task {})",
                        settle.entry().task.id
                    );
                }
            }
        }
    }
    Ok(())
}

/// Takes tasks while this server has room for them: at once when woken
/// (room freed, tasks submitted), else polling with a backoff, and no
/// later than the next delayed task is due.
async fn fetcher(
    hub: Rc<RefCell<Hub>>,
    ledger: SharedLedger,
    mut queue: RedisQueue,
    health: Rc<Health>,
) {
    let wake = ledger.borrow().wake.clone();
    let mut idle = POLL_MIN;
    loop {
        let room = hub.borrow().remote_room();
        if room == 0 {
            tokio::select! {
                _ = wake.fetch.notified() => {}
                _ = tokio::time::sleep(POLL_MAX) => {}
            }
            continue;
        }
        match queue.take(room).await {
            Ok(taken) => {
                health.ok();
                let got = taken.entries.len() + taken.exhausted.len();
                let due = taken.next_due_in;
                hub.borrow_mut().taken(taken);
                if got > 0 {
                    idle = POLL_MIN;
                    continue;
                }
                let nap = due.map_or(idle, |d| d.min(idle));
                tokio::select! {
                    _ = wake.fetch.notified() => idle = POLL_MIN,
                    _ = tokio::time::sleep(nap) => idle = (idle * 2).min(POLL_MAX),
                }
            }
            Err(e) => {
                health.failed(&e);
                idle = POLL_MIN;
                tokio::time::sleep(RECONNECT_MIN).await;
            }
        }
    }
}

/// Reads the results other servers posted for this server's workers.
async fn results(hub: Rc<RefCell<Hub>>, ledger: SharedLedger, queue: Rc<RedisQueue>) {
    let wake = ledger.borrow().wake.clone();
    let mut idle = POLL_MIN;
    loop {
        match queue.results(RESULTS_BATCH).await {
            Ok(list) if !list.is_empty() => {
                idle = POLL_MIN;
                let mut good = Vec::with_capacity(list.len());
                for result in list {
                    match result {
                        Ok(r) => good.push(r),
                        Err(e) => crate::log!(Level::Error, "task backend: result dropped: {e}"),
                    }
                }
                hub.borrow_mut().remote_results(good);
                continue;
            }
            Ok(_) => {}
            Err(_) => idle = POLL_MAX,
        }
        tokio::select! {
            _ = wake.results.notified() => idle = POLL_MIN,
            _ = tokio::time::sleep(idle) => idle = (idle * 2).min(POLL_MAX),
        }
    }
}

/// Answers the questions about Redis's failed list, shared by every server
/// of the queue.
async fn answerer(hub: Rc<RefCell<Hub>>, ledger: SharedLedger, queue: Rc<RedisQueue>) {
    let wake = ledger.borrow().wake.clone();
    loop {
        let asks = ledger.borrow_mut().take_asks();
        for (ticket, op) in asks {
            let answer = match failed_op(&ledger, &queue, op).await {
                Ok(v) => v,
                Err(e) => json!({ "error": e.to_string() }),
            };
            hub.borrow_mut().answered(ticket, answer);
        }
        wake.asks.notified().await;
    }
}

async fn failed_op(
    ledger: &SharedLedger,
    queue: &RedisQueue,
    op: FailedOp,
) -> Result<Value, RedisQueueError> {
    Ok(match op {
        FailedOp::List { offset, limit } => Value::Array(
            queue
                .failed_list(offset, limit)
                .await?
                .into_iter()
                .map(|f| row(ledger, f))
                .collect(),
        ),
        FailedOp::Get(id) => {
            json!({ "task": queue.failed_get(id).await?.map(|f| row(ledger, f)) })
        }
        FailedOp::Retry(which) => queue.retry_failed(select(&which)).await?.into(),
        FailedOp::Purge(which) => queue.purge_failed(select(&which)).await?.into(),
    })
}

/// A Redis failed task as the API and PHP see it; a payload this server
/// would not admit travels empty.
fn row(ledger: &SharedLedger, f: taskq_redis::FailedTask) -> Value {
    FailedTask {
        id: f.task.id,
        src_worker: f.task.src_worker,
        task_id: f.task.src_task_id,
        payload: ledger.borrow().admitted_or_empty(&f.task.payload),
        error: f.error,
        attempts: f.task.attempts,
        failed_at_ms: f.failed_at_ms,
    }
    .to_json()
}

fn select(which: &Which) -> Select<'_> {
    match which {
        Which::All => Select::All,
        Which::Ids(ids) => Select::Ids(ids),
    }
}

/// Has Redis count the whole queue every second, so `stats()` answers at
/// once with numbers at most that old (and says how old).
async fn counter(ledger: SharedLedger, queue: Rc<RedisQueue>) {
    loop {
        if let Ok(stats) = queue.stats().await {
            ledger.borrow_mut().counted(stats, crate::queue::now_ms());
        }
        tokio::time::sleep(COUNT_EVERY).await;
    }
}

/// Every third of the claim idle time: renews this server's hold on its
/// consumer name, keeps its tasks fresh in Redis, so a long task is not
/// stolen from a live server, and reclaims the tasks of servers that
/// stopped keeping theirs fresh.
async fn keeper(
    hub: Rc<RefCell<Hub>>,
    ledger: SharedLedger,
    queue: Rc<RedisQueue>,
    me: Holder,
    claim_idle: Duration,
) {
    let every = claim_idle / 3;
    let token = me.to_string();
    loop {
        tokio::time::sleep(every).await;
        if let Ok(Some(holder)) = queue.hold_name(&token, claim_idle, None).await {
            crate::log!(
                Level::Error,
                "task backend: consumer name {:?} was taken over by {holder} while this server held it (it could not renew it within task_claim_idle); two live servers now share it: give each its own task_consumer",
                queue.consumer()
            );
        }
        let alive = ledger.borrow().alive();
        if !alive.is_empty() {
            match queue.keep_alive(&alive).await {
                Ok(lost) if !lost.is_empty() => {
                    crate::log!(
                        Level::Warning,
                        "{} task(s) were taken over by another server (this one did not keep them fresh within task_claim_idle)",
                        lost.len()
                    );
                    ledger.borrow_mut().lost(&lost);
                }
                Ok(_) => {}
                Err(_) => continue,
            }
        }
        let room = hub.borrow().remote_room();
        if room > 0 {
            if let Ok(taken) = queue.reclaim(claim_idle, room).await {
                if !taken.entries.is_empty() {
                    crate::log!(
                        Level::Notice,
                        "took over {} task(s) idle for {:?} (their server stopped)",
                        taken.entries.len(),
                        claim_idle
                    );
                }
                hub.borrow_mut().taken(taken);
            }
        }
    }
}
