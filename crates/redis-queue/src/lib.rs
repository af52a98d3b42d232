//! taskq's Redis Streams queue: many TaskServers on many hosts share one
//! queue in a Redis they already run (one server or a Redis Cluster), and
//! no task is lost when a server or Redis restarts.
//!
//! Each queue is a set of streams (one per priority level) with one
//! consumer group; each server is a consumer with a stable name. A task is
//! delivered to one consumer and stays in the group's pending entries until
//! that consumer acknowledges it after it ran; a restarted server first
//! takes back its own pending entries, and entries of a server that stays
//! away are reclaimed by the others after the claim idle time, unless the
//! owner keeps them alive while they run. Every move of a task between keys
//! (stream, delayed set, failed list) is one Lua script or MULTI. The
//! master wires it in; this crate knows nothing of PHP or the master.

mod dsn;
mod error;
mod failed;
mod keys;
mod queue;
mod result;
mod scripts;
mod stats;
mod task;
mod timeouts;

pub use dsn::{Dsn, DsnError};
pub use error::RedisQueueError;
pub use failed::{FailedTask, Select};
pub use keys::{check_name, Keys, GROUP};
pub use queue::{RedisQueue, Taken};
pub use result::TaskResult;
pub use stats::QueueStats;
pub use task::{Entry, EntryId, NewTask, Task};
pub use timeouts::Timeouts;
