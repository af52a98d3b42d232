//! Tasks that used up their attempts, kept in Redis with their error so
//! every server (and an operator) sees them, and can retry or purge them.

use redis::Value;

use crate::error::RedisQueueError;
use crate::task::{field, Fields, Task};

/// A task in the failed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    /// The task; `attempts` is every run that failed.
    pub task: Task,
    /// Why the last run failed (exception text, "timeout", ...).
    pub error: String,
    /// When it was given up (Redis's clock, Unix ms).
    pub failed_at_ms: u64,
}

impl FailedTask {
    /// Reads a failed record (`HGETALL failed:<id>`).
    pub(crate) fn from_record(key: &str, record: &Value) -> Result<Self, RedisQueueError> {
        let fields = Fields::new(key, "failed record", record)?;
        let mut task = fields.task(1)?;
        task.attempts = fields.number(field::ATTEMPTS)?;
        Ok(Self {
            task,
            error: fields.text(field::ERROR)?.to_owned(),
            failed_at_ms: fields.number(field::FAILED_AT)?,
        })
    }
}

/// Which failed tasks an operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select<'a> {
    /// Every failed task of the queue.
    All,
    /// These task ids (ids not in the failed list are skipped).
    Ids(&'a [u64]),
}
