//! One server's handle on a queue shared through Redis Streams: it submits
//! tasks, takes its share as a consumer of the queue's group, and settles
//! each task it took (ack, retry, fail) only after it ran. Every call is
//! bounded by the command timeout, so an unreachable Redis is an error
//! within that time, never a hang; the connection manager reconnects on the
//! next call once Redis is back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

use crate::dsn::{Dsn, Target};
use crate::error::RedisQueueError;
use crate::failed::{FailedTask, Select};
use crate::keys::{check_name, Keys, GROUP};
use crate::result::TaskResult;
use crate::scripts::{self, Invocation};
use crate::stats::QueueStats;
use crate::task::{field, Entry, EntryId, Fields, Meta, NewTask};
use crate::timeouts::Timeouts;

type Result<T> = std::result::Result<T, RedisQueueError>;

/// Due delayed tasks moved into the streams per `take`, bounding the time
/// one script keeps Redis busy.
const PROMOTE_LIMIT: usize = 1000;

/// Failed tasks retried or purged per script call by `Select::All`.
const FAILED_PAGE: isize = 500;

/// Task ids reserved per round trip ahead of need, so that a submission
/// is one MULTI and several can be on their way at once. A stopped server
/// skips the rest of its block: ids are unique, not contiguous.
const ID_BLOCK: u64 = 4096;

/// What a server reserved ahead: ids not yet handed out, and the priority
/// levels whose stream and group it has set up.
#[derive(Debug, Default)]
struct Reserved {
    ids: Range<u64>,
    levels: BTreeSet<i32>,
}

/// A batch of tasks with its ids reserved and its transaction built,
/// ready to send: preparing waits for Redis only now and then (a new id
/// block, a new priority level, delayed tasks), so batches can be
/// prepared in order and sent without waiting for each other.
pub struct Prepared {
    ids: Range<u64>,
    tx: redis::Pipeline,
}

/// What a `take` or `reclaim` handed to this server.
#[derive(Debug, Default)]
pub struct Taken {
    /// Tasks to run, owned by this consumer until ack, retry or fail.
    pub entries: Vec<Entry>,
    /// Tasks delivered again after their consumers stopped so often that
    /// they used up their attempts: already moved to the failed list, not
    /// to run. The caller reports its own and clients' tasks (onTaskFailed);
    /// another server's worker tasks went to that server's results stream.
    pub exhausted: Vec<FailedTask>,
    /// Entries under the queue's keys that taskq did not write (missing or
    /// unreadable fields), each with why: acknowledged and deleted, so one
    /// stray entry cannot stop a server taking the tasks behind it.
    pub dropped: Vec<RedisQueueError>,
    /// How long until the earliest delayed task is due (only from `take`),
    /// so the caller can sleep until then instead of polling.
    pub next_due_in: Option<Duration>,
}

/// The connection to one Redis server or to a Redis Cluster. Both send
/// each call once (no retry of a write Redis may have run) and reconnect
/// on the next call after a failure; the cluster one routes each command,
/// script and MULTI by the slot of its keys, all in the queue's one slot.
#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::One(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::One(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::One(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A server's connection to one queue, as one consumer of its group.
pub struct RedisQueue {
    conn: Conn,
    keys: Keys,
    consumer: String,
    /// The DSN with the password masked, for errors.
    at: String,
    timeouts: Timeouts,
    /// Priority streams whose pending entries this consumer owned before
    /// it (re)connected, each with the last entry id read back so far.
    /// `take` hands these out before any new entry.
    recovering: VecDeque<(i32, String)>,
    /// Shared by every handle of this connection.
    reserved: Arc<Mutex<Reserved>>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("at", &self.at)
            .field("queue", &self.keys.prefix())
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl RedisQueue {
    /// Connects to the Redis of `dsn` as consumer `consumer` of queue
    /// `queue`. The consumer name must be stable across restarts (so the
    /// server takes back what it held) and unique among the servers
    /// sharing the queue (two processes with one name share one pending
    /// list and take each other's work).
    pub async fn connect(
        dsn: &str,
        queue: &str,
        consumer: &str,
        timeouts: Timeouts,
    ) -> Result<Self> {
        let dsn = Dsn::parse(dsn)?;
        let keys = Keys::new(queue)?;
        check_name("consumer name", consumer)?;
        if dsn.is_tls() {
            // redis-rs builds its rustls config from the process default
            // provider; an Err means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let at = dsn.shown().to_owned();
        let conn = open(&at, dsn.target(), timeouts).await?;
        let mut this = Self {
            conn,
            keys,
            consumer: consumer.to_owned(),
            at,
            timeouts,
            recovering: VecDeque::new(),
            reserved: Arc::default(),
        };
        let priorities: Vec<i32> = this
            .call(
                "read the priority levels",
                redis::cmd("ZREVRANGE")
                    .arg(this.keys.priorities())
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        this.recovering = priorities.into_iter().map(|p| (p, "0".into())).collect();
        Ok(this)
    }

    /// Another handle on the same connection and consumer, for calls made
    /// concurrently with this one's (submissions while a `take` waits).
    /// It has nothing to recover: only the connected handle's `take` hands
    /// out this consumer's old pending entries.
    pub fn handle(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            consumer: self.consumer.clone(),
            at: self.at.clone(),
            timeouts: self.timeouts,
            recovering: VecDeque::new(),
            reserved: self.reserved.clone(),
        }
    }

    /// This server's consumer name (also the name of its results stream).
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Holds this server's consumer name for `ttl` as `holder` (text that
    /// says which process, for the others' errors), renewing it if it is
    /// ours already, or taking it from `stale`, a holder the caller knows
    /// is dead. Returns None once held, else who holds it: another live
    /// process uses the name, and this one must not take tasks under it.
    pub async fn hold_name(
        &self,
        holder: &str,
        ttl: Duration,
        stale: Option<&str>,
    ) -> Result<Option<String>> {
        let mut inv = scripts::HOLD_NAME.prepare_invoke();
        inv.key(self.keys.consumer(&self.consumer))
            .arg(holder)
            .arg(millis(ttl).max(1))
            .arg(stale.unwrap_or(""));
        let other: String = self.script("hold the consumer name", &inv).await?;
        Ok((!other.is_empty()).then_some(other))
    }

    /// Frees the consumer name at a clean stop, so a restart under it need
    /// not wait for the lease to run out. Returns whether it was ours.
    pub async fn release_name(&self, holder: &str) -> Result<bool> {
        let mut inv = scripts::RELEASE_NAME.prepare_invoke();
        inv.key(self.keys.consumer(&self.consumer)).arg(holder);
        let released: u64 = self.script("release the consumer name", &inv).await?;
        Ok(released == 1)
    }

    /// Queues one task; returns its queue-wide id once Redis holds it, so
    /// the caller acknowledges the submission only then.
    pub async fn submit(&self, task: &NewTask) -> Result<u64> {
        let ids = self.submit_many(std::slice::from_ref(task)).await?;
        Ok(ids[0])
    }

    /// Queues a batch in one MULTI transaction: on Ok Redis holds all of
    /// them, on Err none was confirmed. A transaction that cannot be
    /// queued whole (out of memory) is aborted by Redis with nothing
    /// written. Keep batches to thousands, not millions: the transaction
    /// holds Redis while it runs.
    pub async fn submit_many(&self, tasks: &[NewTask]) -> Result<Vec<u64>> {
        let batch = self.prepare(tasks).await?;
        self.send(batch).await
    }

    /// The first half of `submit_many`: reserves the batch's ids and builds
    /// its transaction. Batches sent in the order they were prepared are
    /// queued in that order.
    pub async fn prepare(&self, tasks: &[NewTask]) -> Result<Prepared> {
        let n = tasks.len() as u64;
        let levels: BTreeSet<i32> = tasks.iter().map(|t| t.priority).collect();
        // Due times are Redis's clock: a batch with delayed tasks asks for it.
        let clock = tasks.iter().any(|t| !t.delay.is_zero());
        let pooled = (!clock).then(|| self.pooled(n, &levels)).flatten();
        let (ids, now) = match pooled {
            Some(ids) => (ids, None),
            None => {
                let block = if clock { n } else { n.max(ID_BLOCK) };
                let (first, now) = self.reserve(block, &levels).await?;
                let mut reserved = self.reserved.lock().expect("not poisoned");
                reserved.levels.extend(&levels);
                if block > n {
                    reserved.ids = first + n..first + block;
                }
                (first..first + n, Some(now))
            }
        };
        let submitted_at_ms = wall_clock_ms();
        let now = now.unwrap_or(submitted_at_ms);
        let streams: BTreeMap<i32, String> =
            levels.iter().map(|&p| (p, self.keys.stream(p))).collect();
        let delayed = self.keys.delayed();
        let mut tx = redis::pipe();
        tx.atomic();
        // Cheap, and keeps the level readable if the keys were deleted
        // since it was set up (TAKE creates a missing group).
        let priorities = self.keys.priorities();
        for p in &levels {
            tx.cmd("ZADD")
                .arg(&priorities)
                .arg("NX")
                .arg(*p)
                .arg(*p)
                .ignore();
        }
        for (id, t) in ids.clone().zip(tasks) {
            let delay = millis(t.delay);
            let cmd = if delay > 0 {
                tx.cmd("HSET").arg(self.keys.delayed_task(id))
            } else {
                tx.cmd("XADD").arg(&streams[&t.priority]).arg("*")
            };
            let meta = Meta {
                id,
                priority: t.priority,
                src_worker: t.src_worker,
                src_task_id: t.src_task_id,
                max_attempts: t.max_attempts.max(1),
                submitted_at_ms,
                origin: &self.consumer,
            };
            cmd.arg(field::META)
                .arg(meta.encode())
                .arg(field::PAYLOAD)
                .arg(&t.payload[..])
                .ignore();
            if delay > 0 {
                tx.cmd("ZADD")
                    .arg(&delayed)
                    .arg(now + delay)
                    .arg(id)
                    .ignore();
            }
        }
        Ok(Prepared { ids, tx })
    }

    /// The second half of `submit_many`: sends a prepared batch and returns
    /// its ids once Redis holds it. After any failed call the ids reserved
    /// ahead are dropped (see `bounded`).
    pub async fn send(&self, batch: Prepared) -> Result<Vec<u64>> {
        if batch.ids.is_empty() {
            return Ok(Vec::new());
        }
        self.pipe::<()>("submit tasks", &batch.tx).await?;
        Ok(batch.ids.collect())
    }

    /// Takes `n` ids from the block reserved ahead, if it holds enough and
    /// every level is set up already.
    fn pooled(&self, n: u64, levels: &BTreeSet<i32>) -> Option<Range<u64>> {
        let mut reserved = self.reserved.lock().expect("not poisoned");
        let start = reserved.ids.start;
        if reserved.ids.end - start < n || !levels.is_subset(&reserved.levels) {
            return None;
        }
        reserved.ids.start += n;
        Some(start..start + n)
    }

    /// Reserves `n` ids and sets up the priority levels; returns the first
    /// id and Redis's clock.
    async fn reserve(&self, n: u64, levels: &BTreeSet<i32>) -> Result<(u64, u64)> {
        let mut inv = scripts::RESERVE.prepare_invoke();
        inv.key(self.keys.ids())
            .key(self.keys.priorities())
            .arg(self.keys.prefix())
            .arg(GROUP)
            .arg(n);
        for p in levels {
            inv.arg(*p);
        }
        self.script("submit tasks", &inv).await
    }

    /// Hands out up to `max` tasks for this consumer: first the ones it
    /// owned before it (re)connected (its own pending entries, read from
    /// id 0: a restarted server finishes its work before taking new),
    /// then due delayed tasks and new entries, highest priority first.
    pub async fn take(&mut self, max: usize) -> Result<Taken> {
        let mut taken = Taken::default();
        let mut recovered = Vec::new();
        let mut junk = Vec::new();
        while recovered.len() < max {
            let Some((priority, cursor)) = self.recovering.front().cloned() else {
                break;
            };
            let stream = self.keys.stream(priority);
            let mut inv = scripts::RECOVER.prepare_invoke();
            inv.key(&stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(&cursor)
                .arg(max - recovered.len());
            let reply: Value = self.script("re-read own pending entries", &inv).await?;
            let [rows, last] = parts::<2>(&stream, reply)?;
            match text(&last) {
                Some(last) if !last.is_empty() => self.recovering[0].1 = last,
                _ => {
                    self.recovering.pop_front();
                }
            }
            for row in list(&stream, rows)? {
                let [id, fields, deliveries] = parts::<3>(&stream, row)?;
                self.sort(
                    priority,
                    &id,
                    &fields,
                    &deliveries,
                    &mut recovered,
                    &mut junk,
                )?;
            }
        }
        self.settle(recovered, &mut taken).await?;
        if taken.entries.len() < max && self.recovering.is_empty() {
            let mut inv = scripts::TAKE.prepare_invoke();
            inv.key(self.keys.priorities())
                .key(self.keys.delayed())
                .arg(self.keys.prefix())
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(max - taken.entries.len())
                .arg(PROMOTE_LIMIT);
            let reply: Value = self.script("take tasks", &inv).await?;
            let what = self.keys.prefix();
            let [rows, next_due, now] = parts::<3>(what, reply)?;
            for row in list(what, rows)? {
                let [priority, id, fields] = parts::<3>(what, row)?;
                let priority = number(what, &priority)?;
                self.sort(
                    priority,
                    &id,
                    &fields,
                    &Value::Int(1),
                    &mut taken.entries,
                    &mut junk,
                )?;
            }
            let (next_due, now): (i64, i64) = (number(what, &next_due)?, number(what, &now)?);
            if next_due >= 0 {
                taken.next_due_in = Some(Duration::from_millis(
                    next_due.saturating_sub(now).max(0) as u64,
                ));
            }
        }
        self.drop_junk(junk, &mut taken).await?;
        Ok(taken)
    }

    /// Takes over up to `max` tasks that other consumers have not touched
    /// for `idle` (their server died or lost Redis): the claim idle time.
    /// Choose it well above the keep-alive interval of live servers.
    pub async fn reclaim(&self, idle: Duration, max: usize) -> Result<Taken> {
        let mut inv = scripts::RECLAIM.prepare_invoke();
        inv.key(self.keys.priorities())
            .arg(self.keys.prefix())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(millis(idle))
            .arg(max);
        let reply: Value = self.script("reclaim idle tasks", &inv).await?;
        let what = self.keys.prefix();
        let (mut claimed, mut junk) = (Vec::new(), Vec::new());
        for row in list(what, reply)? {
            let [priority, id, fields, deliveries] = parts::<4>(what, row)?;
            let priority = number(what, &priority)?;
            self.sort(priority, &id, &fields, &deliveries, &mut claimed, &mut junk)?;
        }
        let mut taken = Taken::default();
        self.settle(claimed, &mut taken).await?;
        self.drop_junk(junk, &mut taken).await?;
        Ok(taken)
    }

    /// Keeps this consumer's in-flight entries from being reclaimed (call
    /// it for every running task well within the claim idle time). Returns
    /// the entries it no longer owns: another server reclaimed them, so
    /// this server's ack, retry or fail of them will be ignored.
    pub async fn keep_alive(&self, entries: &[EntryId]) -> Result<Vec<EntryId>> {
        let mut lost = Vec::new();
        for (priority, ids) in by_stream(entries) {
            let stream = self.keys.stream(priority);
            let mut inv = scripts::KEEP_ALIVE.prepare_invoke();
            inv.key(&stream).arg(GROUP).arg(&self.consumer).arg(&ids);
            let gone: Vec<String> = self.script("keep tasks alive", &inv).await?;
            lost.extend(gone.into_iter().map(|id| EntryId { priority, id }));
        }
        Ok(lost)
    }

    /// The tasks ran: acknowledges and deletes their entries in one MULTI
    /// (deleted, not trimmed, so nothing still pending is ever dropped).
    /// Call it only after the task ran. Returns how many were still
    /// pending (another server may have finished a reclaimed one first).
    pub async fn ack(&self, entries: &[EntryId]) -> Result<u64> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (priority, ids) in by_stream(entries) {
            let stream = self.keys.stream(priority);
            pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&ids);
            pipe.cmd("XDEL").arg(&stream).arg(&ids).ignore();
        }
        let acked: Vec<u64> = self.pipe("acknowledge tasks", &pipe).await?;
        Ok(acked.iter().sum())
    }

    /// The tasks ran and each produced its payload: posts each to its
    /// origin server's results stream and acknowledges its entry, all in
    /// one MULTI, so a crash cannot leave a result without its ack or the
    /// reverse, and a burst of results costs one round trip. Says for each
    /// whether the entry was still this consumer's.
    pub async fn finish(&self, done: &[(&Entry, &[u8])]) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (entry, payload) in done {
            let stream = self.keys.stream(entry.at.priority);
            self.add_result(&mut pipe, entry, payload);
            pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&entry.at.id);
            pipe.cmd("XDEL").arg(&stream).arg(&entry.at.id).ignore();
        }
        let acked: Vec<u64> = self.pipe("finish tasks", &pipe).await?;
        Ok(acked.into_iter().map(|n| n == 1).collect())
    }

    /// Posts a result to the origin server's results stream without
    /// settling the entry (a worker's progress, or a client task's reply).
    pub async fn post_result(&self, entry: &Entry, payload: &[u8]) -> Result<()> {
        let mut pipe = redis::pipe();
        self.add_result(&mut pipe, entry, payload);
        self.pipe::<()>("post a result", &pipe).await
    }

    fn add_result(&self, pipe: &mut redis::Pipeline, entry: &Entry, payload: &[u8]) {
        let task = &entry.task;
        pipe.cmd("XADD")
            .arg(self.keys.results(&task.origin))
            .arg("*")
            .arg(field::ID)
            .arg(task.id)
            .arg(field::WORKER)
            .arg(task.src_worker)
            .arg(field::REF)
            .arg(task.src_task_id)
            .arg(field::PAYLOAD)
            .arg(payload)
            .ignore();
    }

    /// Takes up to `max` results other servers (or this one) posted for
    /// this server's tasks; each is handed out once. An entry taskq did not
    /// write comes out as its own error, beside the good ones.
    pub async fn results(&self, max: usize) -> Result<Vec<Result<TaskResult>>> {
        let key = self.keys.results(&self.consumer);
        let mut inv = scripts::TAKE_RESULTS.prepare_invoke();
        inv.key(&key).arg(max);
        let reply: Value = self.script("take results", &inv).await?;
        let mut out = Vec::new();
        for row in list(&key, reply)? {
            let [id, fields] = parts::<2>(&key, row)?;
            let id = text(&id).unwrap_or_default();
            out.push(result(&key, &id, &fields));
        }
        Ok(out)
    }

    /// The run failed and the task has attempts left: moves it to the
    /// delayed set with one more failed run counted, due after `delay`
    /// (the retry backoff). Returns false if the entry was no longer this
    /// consumer's (reclaimed by another server, which now decides).
    pub async fn retry(&self, entry: &Entry, delay: Duration) -> Result<bool> {
        let mut inv = scripts::RETRY.prepare_invoke();
        inv.key(self.keys.stream(entry.at.priority))
            .key(self.keys.delayed())
            .arg(self.keys.prefix())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(&entry.at.id)
            .arg(millis(delay))
            .arg(entry.task.attempts + 1);
        let moved: u32 = self.script("retry a task", &inv).await?;
        Ok(moved == 1)
    }

    /// The run failed and the task used up its attempts: moves it to the
    /// failed list with `error`, visible to every server; another server's
    /// worker task is reported to that server's results stream with the
    /// error, in the same script. Returns false if
    /// the entry was no longer this consumer's.
    pub async fn fail(&self, entry: &Entry, error: &str) -> Result<bool> {
        Ok(self
            .move_to_failed(entry, error, entry.task.attempts + 1)
            .await?
            .is_some())
    }

    /// FAIL script; the failure time, or None if the entry is not ours.
    async fn move_to_failed(
        &self,
        entry: &Entry,
        error: &str,
        attempts: u32,
    ) -> Result<Option<u64>> {
        let mut inv = scripts::FAIL.prepare_invoke();
        inv.key(self.keys.stream(entry.at.priority))
            .key(self.keys.failed())
            .arg(self.keys.prefix())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(&entry.at.id)
            .arg(error)
            .arg(attempts);
        let failed_at: u64 = self.script("move a task to the failed list", &inv).await?;
        Ok((failed_at > 0).then_some(failed_at))
    }

    /// Sorts redelivered entries into runnable and given up, moving the
    /// given-up ones to the failed list.
    async fn settle(&self, entries: Vec<Entry>, taken: &mut Taken) -> Result<()> {
        for entry in entries {
            if !entry.exhausted() {
                taken.entries.push(entry);
                continue;
            }
            let error = format!(
                "delivered {} times; each time the server running it stopped before it finished",
                entry.deliveries
            );
            let attempts = entry.task.attempts;
            if let Some(failed_at_ms) = self.move_to_failed(&entry, &error, attempts).await? {
                taken.exhausted.push(FailedTask {
                    task: entry.task,
                    error,
                    failed_at_ms,
                });
            }
        }
        Ok(())
    }

    /// Failed tasks, newest first, `limit` from `offset`.
    pub async fn failed_list(&self, offset: usize, limit: usize) -> Result<Vec<FailedTask>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = self
            .call(
                "list failed tasks",
                redis::cmd("ZREVRANGE")
                    .arg(self.keys.failed())
                    .arg(offset)
                    .arg(offset + limit - 1),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.failed_record(*id));
        }
        let records: Vec<Value> = self.pipe("read failed tasks", &pipe).await?;
        let mut out = Vec::new();
        for (id, record) in ids.iter().zip(&records) {
            // Purged by another server between the two reads.
            if matches!(record, Value::Array(a) if a.is_empty()) {
                continue;
            }
            out.push(FailedTask::from_record(
                &self.keys.failed_record(*id),
                record,
            )?);
        }
        Ok(out)
    }

    /// The failed task `id`, or None when the failed list does not hold it
    /// (never failed, retried or purged), read without listing the others.
    pub async fn failed_get(&self, id: u64) -> Result<Option<FailedTask>> {
        let key = self.keys.failed_record(id);
        let record: Value = self
            .call("read a failed task", redis::cmd("HGETALL").arg(&key))
            .await?;
        if matches!(&record, Value::Array(a) if a.is_empty()) {
            return Ok(None);
        }
        FailedTask::from_record(&key, &record).map(Some)
    }

    /// Puts failed tasks back into the queue with their attempts reset, as
    /// fresh jobs whose results reach no worker (the `task()` that
    /// dispatched them is long over). Returns how many went back.
    pub async fn retry_failed(&self, which: Select<'_>) -> Result<u64> {
        self.on_failed(which, &scripts::RETRY_FAILED, "retry failed tasks")
            .await
    }

    /// Forgets failed tasks. Returns how many were removed.
    pub async fn purge_failed(&self, which: Select<'_>) -> Result<u64> {
        self.on_failed(which, &scripts::PURGE_FAILED, "purge failed tasks")
            .await
    }

    async fn on_failed(
        &self,
        which: Select<'_>,
        script: &scripts::Script,
        during: &'static str,
    ) -> Result<u64> {
        let run = |ids: Vec<u64>| {
            let mut inv = script.prepare_invoke();
            inv.key(self.keys.failed()).arg(self.keys.prefix()).arg(ids);
            async move { self.script::<u64>(during, &inv).await }
        };
        match which {
            Select::Ids(ids) => run(ids.to_vec()).await,
            Select::All => {
                let mut done = 0;
                loop {
                    let ids: Vec<u64> = self
                        .call(
                            during,
                            redis::cmd("ZRANGE")
                                .arg(self.keys.failed())
                                .arg(0)
                                .arg(FAILED_PAGE - 1),
                        )
                        .await?;
                    if ids.is_empty() {
                        return Ok(done);
                    }
                    done += run(ids).await?;
                }
            }
        }
    }

    /// Where the queue's tasks are, counted by Redis in one snapshot.
    pub async fn stats(&self) -> Result<QueueStats> {
        let mut inv = scripts::STATS.prepare_invoke();
        inv.key(self.keys.priorities())
            .key(self.keys.delayed())
            .key(self.keys.failed())
            .arg(self.keys.prefix())
            .arg(GROUP);
        let [queued, pending, delayed, failed]: [i64; 4] = self.script("count tasks", &inv).await?;
        let count = |n: i64| n.max(0) as u64;
        Ok(QueueStats {
            queued: count(queued),
            pending: count(pending),
            delayed: count(delayed),
            failed: count(failed),
        })
    }

    /// Reads one delivered entry into `entries`, or into `junk` if taskq
    /// did not write it; only an entry id that is not text is an error.
    fn sort(
        &self,
        priority: i32,
        id: &Value,
        fields: &Value,
        deliveries: &Value,
        entries: &mut Vec<Entry>,
        junk: &mut Vec<(EntryId, RedisQueueError)>,
    ) -> Result<()> {
        match self.entry(priority, id, fields, deliveries) {
            Ok(entry) => entries.push(entry),
            Err(e @ RedisQueueError::Malformed { .. }) => {
                let key = self.keys.stream(priority);
                let id = text(id).ok_or_else(|| malformed(&key, "an entry id is not a string"))?;
                junk.push((EntryId { priority, id }, e));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Acknowledges and deletes entries taskq did not write, reporting
    /// them in `taken.dropped`.
    async fn drop_junk(
        &self,
        junk: Vec<(EntryId, RedisQueueError)>,
        taken: &mut Taken,
    ) -> Result<()> {
        if junk.is_empty() {
            return Ok(());
        }
        let (ids, errors): (Vec<_>, Vec<_>) = junk.into_iter().unzip();
        self.ack(&ids).await?;
        taken.dropped.extend(errors);
        Ok(())
    }

    fn entry(
        &self,
        priority: i32,
        id: &Value,
        fields: &Value,
        deliveries: &Value,
    ) -> Result<Entry> {
        let key = self.keys.stream(priority);
        let id = text(id).ok_or_else(|| malformed(&key, "an entry id is not a string"))?;
        let deliveries: u32 = number(&key, deliveries)?;
        let task = Fields::new(&key, &id, fields)?.task(deliveries)?;
        Ok(Entry {
            at: EntryId { priority, id },
            task,
            deliveries,
        })
    }

    async fn call<T: FromRedisValue>(&self, during: &'static str, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(during, cmd.query_async(&mut conn)).await
    }

    async fn pipe<T: FromRedisValue>(
        &self,
        during: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(during, pipe.query_async(&mut conn)).await
    }

    async fn script<T: FromRedisValue>(
        &self,
        during: &'static str,
        inv: &Invocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        self.bounded(during, inv.invoke(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        during: &'static str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let cluster = matches!(self.conn, Conn::Cluster(_));
        let done = bounded(&self.at, during, cluster, self.timeouts.command, fut).await;
        if done.is_err() {
            // Redis may be a new one that lost the ids counter (restarted
            // without persistence) and would hand out these ids again.
            *self.reserved.lock().expect("not poisoned") = Reserved::default();
        }
        done
    }
}

/// Opens the connection `target` names. One connection attempt per call:
/// while Redis is away each call fails at once with the reason; the caller
/// decides when to retry.
async fn open(at: &str, target: &Target, timeouts: Timeouts) -> Result<Conn> {
    let limit = timeouts.connect + timeouts.command;
    match target {
        Target::One(info) => {
            let client = Client::open((**info).clone())
                .map_err(|e| RedisQueueError::from_redis(at, "connect", false, e))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeouts.connect))
                .set_response_timeout(Some(timeouts.command))
                .set_number_of_retries(0);
            let manager = ConnectionManager::new_with_config(client, config);
            Ok(Conn::One(
                bounded(at, "connect", false, limit, manager).await?,
            ))
        }
        Target::Cluster(nodes) => {
            // No retries: a call that failed is reported, not sent again
            // (a MULTI of submissions sent twice would queue its tasks
            // twice). A MOVED still makes the client rebuild its slot map
            // for the next call; the error is reported as transient.
            let client = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.command)
                .retries(0)
                .build()
                .map_err(|e| RedisQueueError::from_redis(at, "connect", true, e))?;
            let conn = client.get_async_connection();
            Ok(Conn::Cluster(
                bounded(at, "connect", true, limit, conn).await?,
            ))
        }
    }
}

/// One entry of a results stream; one taskq did not write is an error of
/// its own, so the results beside it still arrive.
fn result(key: &str, id: &str, fields: &Value) -> Result<TaskResult> {
    let fields = Fields::new(key, id, fields)?;
    Ok(TaskResult {
        task_id: fields.number(field::ID)?,
        src_worker: fields.number(field::WORKER)?,
        src_task_id: fields.number(field::REF)?,
        payload: bytes::Bytes::copy_from_slice(fields.bytes(field::PAYLOAD)?),
        error: fields
            .has(field::ERROR)
            .then(|| fields.text(field::ERROR).map(str::to_owned))
            .transpose()?,
    })
}

/// This machine's clock in Unix ms: a task's submission time, kept for
/// the operator's eye only (due times use Redis's clock).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs one Redis exchange within `limit`, naming what it was doing in
/// the error (`cluster`: through a Redis Cluster connection).
async fn bounded<T>(
    at: &str,
    during: &'static str,
    cluster: bool,
    limit: Duration,
    fut: impl Future<Output = RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RedisQueueError::from_redis(at, during, cluster, e)),
        Err(_) => Err(RedisQueueError::Timeout {
            at: at.to_owned(),
            during,
            after: limit,
        }),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Entry ids grouped by their stream.
fn by_stream(entries: &[EntryId]) -> BTreeMap<i32, Vec<String>> {
    let mut streams: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for e in entries {
        streams.entry(e.priority).or_default().push(e.id.clone());
    }
    streams
}

fn malformed(key: &str, reason: &str) -> RedisQueueError {
    RedisQueueError::Malformed {
        key: key.to_owned(),
        id: String::new(),
        reason: reason.to_owned(),
    }
}

fn list(key: &str, v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(malformed(key, "a script reply is not a list")),
    }
}

fn parts<const N: usize>(key: &str, v: Value) -> Result<[Value; N]> {
    list(key, v)?
        .try_into()
        .map_err(|_| malformed(key, "a script reply has the wrong length"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number<T: std::str::FromStr>(key: &str, v: &Value) -> Result<T> {
    text(v)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| malformed(key, "a number in a script reply is not a number"))
}
