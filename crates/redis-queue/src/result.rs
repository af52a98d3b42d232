//! A task's result on its way back to the server whose worker dispatched
//! it, through that server's results stream, so onFinish and taskwait work
//! whichever host ran the task.

use bytes::Bytes;

/// One result, as the origin server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    /// The queue-wide task id.
    pub task_id: u64,
    /// The worker of this server that dispatched the task (-1: a client).
    pub src_worker: i32,
    /// The id `task()` returned in that worker.
    pub src_task_id: i64,
    /// The encoded result, opaque to the queue.
    pub payload: Bytes,
}
