//! How long the queue waits for Redis. Every call is bounded, so an
//! unreachable Redis turns into a clear error within these times instead of
//! a master that hangs while clients wait for their acknowledgement.

use std::time::Duration;

/// Connect and command time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One attempt to open a connection (TCP/TLS handshake, AUTH, SELECT).
    pub connect: Duration,
    /// One call of the queue, from sending the first command to the last
    /// reply, including a reconnection it has to wait for.
    pub command: Duration,
}

impl Default for Timeouts {
    /// 2 s to connect, 2 s per call: long enough for a loaded Redis across
    /// a data centre, short enough that a client's `task()` fails while
    /// the user is still waiting for it.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            command: Duration::from_secs(2),
        }
    }
}
