//! A task as it travels through Redis: what a server submits, what a
//! consumer gets delivered, and how its fields are named in a stream entry
//! or a hash (the same flat field list in both, so scripts move it as is).

use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use crate::error::RedisQueueError;

/// A task to queue. Its origin (the server whose results stream gets its
/// result) is the submitting queue's consumer name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// The encoded task, opaque to the queue.
    pub payload: Bytes,
    /// Higher runs first; equal priorities run in submission order.
    pub priority: i32,
    /// Not to start before this much time has passed (Redis's clock).
    pub delay: Duration,
    /// Runs allowed before the task goes to the failed tasks (at least 1).
    pub max_attempts: u32,
    /// Worker of the origin server that dispatched it (-1: a client).
    pub src_worker: i32,
    /// The id `task()` returned in that worker.
    pub src_task_id: i64,
}

/// A task read back from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Queue-wide id (from the queue's counter), unique across servers.
    pub id: u64,
    /// Consumer name of the server that submitted it: where its result
    /// goes, whichever server runs it.
    pub origin: String,
    pub src_worker: i32,
    pub src_task_id: i64,
    pub priority: i32,
    pub payload: Bytes,
    pub max_attempts: u32,
    /// Runs that ended in failure before this delivery: explicit retries
    /// plus deliveries whose consumer stopped without acknowledging.
    pub attempts: u32,
    /// When it was submitted (Redis's clock, Unix ms).
    pub submitted_at_ms: u64,
}

/// Where a delivered task sits in Redis: what ack, retry, fail and
/// keep-alive need, small enough to keep for every task in flight.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryId {
    /// The priority level, i.e. which stream.
    pub priority: i32,
    /// The stream entry id (`ms-seq`).
    pub id: String,
}

/// A task delivered to this consumer: it stays in the group's pending
/// entries until `ack`, `retry` or `fail`, so a crash does not lose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at: EntryId,
    pub task: Task,
    /// How often the group delivered this entry (1 = first time).
    pub deliveries: u32,
}

impl Entry {
    /// Whether this delivery may not run: the failed runs already used up
    /// the task's attempts (a consumer died holding it too often).
    pub fn exhausted(&self) -> bool {
        self.task.attempts >= self.task.max_attempts.max(1)
    }
}

/// Field names, short because every task carries them.
pub mod field {
    pub const ID: &str = "id";
    pub const ORIGIN: &str = "origin";
    pub const WORKER: &str = "worker";
    pub const REF: &str = "ref";
    pub const PRIORITY: &str = "prio";
    pub const TRIES: &str = "tries";
    pub const MAX: &str = "max";
    pub const AT: &str = "at";
    pub const PAYLOAD: &str = "payload";
    pub const ERROR: &str = "error";
    pub const ATTEMPTS: &str = "attempts";
    pub const FAILED_AT: &str = "failed_at";
}

/// A flat `field, value, field, value...` list as Redis returns a stream
/// entry's fields or a hash, looked up by name.
pub struct Fields<'a> {
    key: &'a str,
    id: &'a str,
    pairs: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Fields<'a> {
    /// Reads the list; `key` and `id` only name the record in errors.
    pub fn new(key: &'a str, id: &'a str, flat: &'a Value) -> Result<Self, RedisQueueError> {
        let mut this = Self {
            key,
            id,
            pairs: Vec::new(),
        };
        let Value::Array(items) = flat else {
            return Err(this.malformed("fields are not a list".into()));
        };
        let mut items = items.iter();
        while let (Some(f), Some(v)) = (items.next(), items.next()) {
            match (f, v) {
                (Value::BulkString(f), Value::BulkString(v)) => this.pairs.push((f, v)),
                _ => return Err(this.malformed("a field is not a string".into())),
            }
        }
        Ok(this)
    }

    /// Reports a record written by something other than taskq.
    pub fn malformed(&self, reason: String) -> RedisQueueError {
        RedisQueueError::Malformed {
            key: self.key.to_owned(),
            id: self.id.to_owned(),
            reason,
        }
    }

    /// The raw value of `name`.
    pub fn bytes(&self, name: &str) -> Result<&'a [u8], RedisQueueError> {
        self.pairs
            .iter()
            .find(|(f, _)| *f == name.as_bytes())
            .map(|(_, v)| *v)
            .ok_or_else(|| self.malformed(format!("no `{name}` field")))
    }

    /// Whether the record has a field `name` (one written only sometimes).
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(f, _)| *f == name.as_bytes())
    }

    /// The value of `name` as text.
    pub fn text(&self, name: &str) -> Result<&'a str, RedisQueueError> {
        std::str::from_utf8(self.bytes(name)?)
            .map_err(|_| self.malformed(format!("`{name}` is not UTF-8")))
    }

    /// The value of `name` as a number.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, RedisQueueError> {
        let text = self.text(name)?;
        text.parse()
            .map_err(|_| self.malformed(format!("`{name}` = `{text}` is not a number")))
    }

    /// The task these fields describe; `deliveries` adds the failed runs
    /// of consumers that stopped holding it.
    pub fn task(&self, deliveries: u32) -> Result<Task, RedisQueueError> {
        let tries: u32 = self.number(field::TRIES)?;
        Ok(Task {
            id: self.number(field::ID)?,
            origin: self.text(field::ORIGIN)?.to_owned(),
            src_worker: self.number(field::WORKER)?,
            src_task_id: self.number(field::REF)?,
            priority: self.number(field::PRIORITY)?,
            payload: Bytes::copy_from_slice(self.bytes(field::PAYLOAD)?),
            max_attempts: self.number(field::MAX)?,
            attempts: tries + deliveries.saturating_sub(1),
            submitted_at_ms: self.number(field::AT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .flat_map(|(f, v)| {
                    [
                        Value::BulkString(f.as_bytes().to_vec()),
                        Value::BulkString(v.as_bytes().to_vec()),
                    ]
                })
                .collect(),
        )
    }

    const TASK: [(&str, &str); 9] = [
        ("id", "42"),
        ("origin", "web1:9501"),
        ("worker", "3"),
        ("ref", "7"),
        ("prio", "-2"),
        ("tries", "1"),
        ("max", "3"),
        ("at", "1700000000000"),
        ("payload", "s:2:\"hi\";"),
    ];

    #[test]
    fn a_record_reads_back_with_crashed_deliveries_counted() {
        let v = flat(&TASK);
        let task = Fields::new("k", "1-0", &v).unwrap().task(2).unwrap();
        assert_eq!(task.id, 42);
        assert_eq!(task.origin, "web1:9501");
        assert_eq!(
            (task.src_worker, task.src_task_id, task.priority),
            (3, 7, -2)
        );
        assert_eq!(&task.payload[..], b"s:2:\"hi\";");
        assert_eq!(task.attempts, 2, "one retry plus one abandoned delivery");
        let entry = Entry {
            at: EntryId {
                priority: -2,
                id: "1-0".into(),
            },
            task,
            deliveries: 2,
        };
        assert!(!entry.exhausted());
    }

    #[test]
    fn a_foreign_record_is_reported_with_its_key_and_field() {
        let v = flat(&TASK[1..]);
        let e = Fields::new("taskq:{q}:stream:0", "5-1", &v)
            .unwrap()
            .task(1)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed task record in taskq:{q}:stream:0 (5-1): no `id` field"
        );
        let mut bad = TASK;
        bad[2] = ("worker", "three");
        let v = flat(&bad);
        let e = Fields::new("k", "1-0", &v).unwrap().task(1).unwrap_err();
        assert!(
            e.to_string().contains("`worker` = `three` is not a number"),
            "{e}"
        );
    }
}
