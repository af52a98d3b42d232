//! Every way the Redis queue can fail, as one enum, so the master can tell
//! "Redis is away, try again later" from "this call is wrong" and map each
//! to a clear errCode/errMsg in one place.

use std::time::Duration;

use crate::dsn::DsnError;

/// Why a Redis queue call did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RedisQueueError {
    /// The DSN does not say where Redis is; names the part that is wrong.
    #[error(transparent)]
    Dsn(#[from] DsnError),
    /// A queue or consumer name that would break the key layout.
    #[error("invalid {what} `{name}`: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// Redis could not be reached or the connection broke: nothing was
    /// done (or, for a write, Redis did not confirm it, so the caller must
    /// not acknowledge it). Worth retrying later.
    #[error("Redis at {at} is unavailable ({during}): {source}")]
    Unavailable {
        at: String,
        during: &'static str,
        source: redis::RedisError,
    },
    /// Redis did not answer within the command timeout; as `Unavailable`,
    /// the outcome of a write is unknown to the caller.
    #[error("Redis at {at} did not answer within {after:?} ({during})")]
    Timeout {
        at: String,
        during: &'static str,
        after: Duration,
    },
    /// Redis answered with an error (wrong type, out of memory, ACL...).
    #[error("Redis at {at} refused {during}: {source}")]
    Refused {
        at: String,
        during: &'static str,
        source: redis::RedisError,
    },
    /// A stream entry or failed record without a field taskq writes, i.e.
    /// written by something else under taskq's keys.
    #[error("malformed task record in {key} ({id}): {reason}")]
    Malformed {
        key: String,
        id: String,
        reason: String,
    },
}

impl RedisQueueError {
    /// Whether the call may succeed later without any change: Redis was
    /// away or slow. The master keeps its workers idle and retries.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }

    /// Sorts a client error into unreachable (connection level) or refused
    /// (Redis answered with an error). On a Redis Cluster (`cluster`),
    /// MOVED, ASK, TRYAGAIN and CLUSTERDOWN count as unreachable, also as
    /// the reasons of an aborted transaction: the command did not run, and
    /// it will once the client has the new slot map or the cluster is whole
    /// again. From a single server they are
    /// refusals: its DSN names one node of a cluster.
    pub(crate) fn from_redis(
        at: &str,
        during: &'static str,
        cluster: bool,
        source: redis::RedisError,
    ) -> Self {
        let at = at.to_owned();
        if source.is_io_error()
            || (cluster && cluster_error(&source))
            || source.is_connection_refusal()
            || source.is_connection_dropped()
            || source.is_timeout()
            || source.is_unrecoverable_error()
        {
            Self::Unavailable { at, during, source }
        } else {
            Self::Refused { at, during, source }
        }
    }
}

/// MOVED, ASK, TRYAGAIN or CLUSTERDOWN, or a transaction Redis aborted
/// (EXECABORT: none of it ran) for those reasons only, as during a
/// failover while the replica is promoted.
fn cluster_error(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{Ask, ClusterDown, ExecAbort, Moved, TryAgain};
    if e.is_cluster_error() {
        return true;
    }
    e.kind() == redis::ErrorKind::Server(ExecAbort)
        && e.clone().into_server_errors().is_some_and(|reasons| {
            !reasons.is_empty()
                && reasons.iter().all(|(_, reason)| {
                    matches!(reason.kind(), Some(Moved | Ask | TryAgain | ClusterDown))
                })
        })
}
