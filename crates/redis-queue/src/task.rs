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

/// Field names. A task is two fields, `meta` and `payload` (plus `tries`
/// once a run failed): Redis's cost per XADD grows with the field count,
/// and eight separate fields made submission twice as slow.
pub mod field {
    /// The task's fixed description, see [`super::Meta`].
    pub const META: &str = "meta";
    /// Failed runs recorded by retries; absent means 0.
    pub const TRIES: &str = "tries";
    pub const PAYLOAD: &str = "payload";
    /// A results stream entry: task id, origin worker and its task id.
    pub const ID: &str = "id";
    pub const WORKER: &str = "worker";
    pub const REF: &str = "ref";
    pub const ERROR: &str = "error";
    pub const ATTEMPTS: &str = "attempts";
    pub const FAILED_AT: &str = "failed_at";
}

/// The part of a task that never changes while it waits, runs and
/// retries, as one space-separated field: `id prio worker ref max at
/// origin`. The origin comes last because it is the only part that may
/// contain anything but digits (it has no spaces: consumer names cannot).
/// The Lua scripts read it with one `string.match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<'a> {
    pub id: u64,
    pub priority: i32,
    pub src_worker: i32,
    pub src_task_id: i64,
    pub max_attempts: u32,
    pub submitted_at_ms: u64,
    pub origin: &'a str,
}

impl<'a> Meta<'a> {
    /// The `meta` field's value.
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.id,
            self.priority,
            self.src_worker,
            self.src_task_id,
            self.max_attempts,
            self.submitted_at_ms,
            self.origin
        )
    }

    /// Reads a `meta` field; the error says which part is wrong.
    pub fn decode(text: &'a str) -> Result<Self, String> {
        let mut parts = text.splitn(7, ' ');
        let mut next = |name: &str| {
            parts
                .next()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("`meta` = `{text}` has no {name}"))
        };
        fn num<T: std::str::FromStr>(text: &str, name: &str, v: &str) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("`meta` = `{text}`: {name} `{v}` is not a number"))
        }
        Ok(Self {
            id: num(text, "id", next("id")?)?,
            priority: num(text, "priority", next("priority")?)?,
            src_worker: num(text, "worker", next("worker")?)?,
            src_task_id: num(text, "ref", next("ref")?)?,
            max_attempts: num(text, "max attempts", next("max attempts")?)?,
            submitted_at_ms: num(text, "submission time", next("submission time")?)?,
            origin: next("origin")?,
        })
    }
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
        let tries: u32 = if self.has(field::TRIES) {
            self.number(field::TRIES)?
        } else {
            0
        };
        let meta = Meta::decode(self.text(field::META)?).map_err(|e| self.malformed(e))?;
        Ok(Task {
            id: meta.id,
            origin: meta.origin.to_owned(),
            src_worker: meta.src_worker,
            src_task_id: meta.src_task_id,
            priority: meta.priority,
            payload: Bytes::copy_from_slice(self.bytes(field::PAYLOAD)?),
            max_attempts: meta.max_attempts,
            attempts: tries + deliveries.saturating_sub(1),
            submitted_at_ms: meta.submitted_at_ms,
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

    const TASK: [(&str, &str); 3] = [
        ("meta", "42 -2 3 7 3 1700000000000 web1:9501"),
        ("tries", "1"),
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
    fn a_record_without_tries_has_no_failed_runs_and_meta_round_trips() {
        let meta = Meta {
            id: 9,
            priority: 0,
            src_worker: -1,
            src_task_id: 0,
            max_attempts: 1,
            submitted_at_ms: 5,
            origin: "host:9501",
        };
        let text = meta.encode();
        assert_eq!(text, "9 0 -1 0 1 5 host:9501");
        assert_eq!(Meta::decode(&text), Ok(meta));
        let v = flat(&[("meta", &text), ("payload", "x")]);
        let task = Fields::new("k", "1-0", &v).unwrap().task(1).unwrap();
        assert_eq!((task.id, task.attempts, task.src_worker), (9, 0, -1));
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
            "malformed task record in taskq:{q}:stream:0 (5-1): no `meta` field"
        );
        for (meta, says) in [
            ("42 -2 three 7 3 1 o", "worker `three` is not a number"),
            ("42 -2 3 7 3 1", "has no origin"),
            ("", "has no id"),
        ] {
            let mut bad = TASK;
            bad[0] = ("meta", meta);
            let v = flat(&bad);
            let e = Fields::new("k", "1-0", &v).unwrap().task(1).unwrap_err();
            assert!(e.to_string().contains(says), "{meta:?}: {e}");
        }
    }
}
