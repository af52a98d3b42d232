//! The names of one queue's Redis keys. All carry the queue's name as the
//! `{hash tag}`, so they live in one slot: every Lua script and MULTI that
//! moves a task between them runs on one node of a Redis Cluster too.

use crate::error::RedisQueueError;

/// The consumer group every server of a queue joins: one group per queue,
/// each server one consumer in it.
pub const GROUP: &str = "taskq";

/// Longest queue or consumer name, so keys stay short.
const NAME_MAX: usize = 128;

/// The key layout of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    /// `taskq:{queue}`: every key starts with it; scripts derive
    /// per-priority and per-task keys from it.
    prefix: String,
}

impl Keys {
    /// Keys for queue `queue`, after checking the name keeps the layout.
    pub fn new(queue: &str) -> Result<Self, RedisQueueError> {
        check_name("queue name", queue)?;
        Ok(Self {
            prefix: format!("taskq:{{{queue}}}"),
        })
    }

    /// What scripts get to build the keys they derive.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream of one priority level: tasks ready to run, in order.
    pub fn stream(&self, priority: i32) -> String {
        format!("{}:stream:{priority}", self.prefix)
    }

    /// Sorted set of the priority levels in use (score = priority), so
    /// `take` knows which streams to read, highest first.
    pub fn priorities(&self) -> String {
        format!("{}:priorities", self.prefix)
    }

    /// Sorted set of delayed task ids by due time (Redis clock, ms); each
    /// task's fields wait in the hash `delayed:<id>`.
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.prefix)
    }

    /// The hash where delayed task `task_id` waits until it is due.
    pub fn delayed_task(&self, task_id: u64) -> String {
        format!("{}:delayed:{task_id}", self.prefix)
    }

    /// Sorted set of failed task ids by failure time; each record (task
    /// fields plus error, attempts, time) is the hash `failed:<id>`.
    pub fn failed(&self) -> String {
        format!("{}:failed", self.prefix)
    }

    /// The failed record of one task.
    pub fn failed_record(&self, task_id: u64) -> String {
        format!("{}:failed:{task_id}", self.prefix)
    }

    /// The stream of results for the server (consumer) named `server`: the
    /// one whose worker dispatched the tasks, wherever they ran.
    pub fn results(&self, server: &str) -> String {
        format!("{}:results:{server}", self.prefix)
    }

    /// Who holds the consumer name `name` now (a lease that expires), so
    /// two live processes never share one pending list.
    pub fn consumer(&self, name: &str) -> String {
        format!("{}:consumer:{name}", self.prefix)
    }

    /// Counter handing out queue-wide task ids.
    pub fn ids(&self) -> String {
        format!("{}:ids", self.prefix)
    }
}

/// Rejects names that would split the hash tag or the key layout.
pub fn check_name(what: &'static str, name: &str) -> Result<(), RedisQueueError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > NAME_MAX {
        Some("longer than 128 bytes")
    } else if name.contains(['{', '}']) {
        Some("must not contain `{` or `}` (they delimit the key's hash tag)")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RedisQueueError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_queue_as_hash_tag() {
        let k = Keys::new("mail").unwrap();
        for key in [
            k.stream(-3),
            k.priorities(),
            k.delayed(),
            k.failed(),
            k.failed_record(7),
            k.results("web1:9501"),
            k.consumer("web1:9501"),
            k.ids(),
        ] {
            assert!(key.starts_with("taskq:{mail}:"), "{key}");
        }
        assert_eq!(k.stream(5), "taskq:{mail}:stream:5");
    }

    #[test]
    fn names_that_break_the_layout_are_refused() {
        for bad in ["", "a{b", "a}b", "a b", "tab\t", &"x".repeat(129)] {
            let e = Keys::new(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    RedisQueueError::InvalidName {
                        what: "queue name",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        assert!(check_name("consumer name", "web-1.example:9501").is_ok());
    }
}
