//! A task's result on its way back to the server whose worker dispatched
//! it, through that server's results stream, so onFinish, taskwait and
//! onTaskFailed work whichever host ran the task.

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
    /// The encoded result, opaque to the queue; for a failure, the task's
    /// own payload (what onTaskFailed gets).
    pub payload: Bytes,
    /// Why another server gave the task up: a failure for the worker's
    /// onTaskFailed, not a result.
    pub error: Option<String>,
}
