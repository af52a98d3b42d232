//! Counts of one queue across every server sharing it.

/// Where a queue's tasks are, from one atomic snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// In a stream, not yet delivered to any server.
    pub queued: u64,
    /// Delivered and not acknowledged: running, or held by a server that
    /// stopped (to be reclaimed).
    pub pending: u64,
    /// Waiting for their due time (delay or retry backoff).
    pub delayed: u64,
    /// Given up, in the failed list.
    pub failed: u64,
}
