//! Failures of the PHP layer itself: arguments the engine never sees, and
//! the PHP functions (`serialize()`, `json_encode()`, …) it calls to convert
//! values, and the engine errors a PHP method can meet. `exception.rs` maps
//! them to `TaskQ\Exception` (or `TaskQ\MailException`) with their codes.

/// What the PHP-facing methods return: ext-php-rs throws the error as the
/// exception `exception.rs` maps it to, and `?` lifts any engine error.
pub type PhpResult<T = ()> = Result<T, PhpError>;

/// A bad argument or a value that could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum PhpError {
    #[error("the $async parameter is not supported: TaskClient is synchronous (use SWOOLE_SOCK_SYNC or omit it)")]
    AsyncClient,
    #[error("unknown client type {0} (allowed: TASKQ_SOCK_TCP (1), TASKQ_SOCK_TCP6 (3), TASKQ_SOCK_UNIX_STREAM (5), optionally | TASKQ_KEEP)")]
    ClientType(i64),
    #[error("invalid port {0} (allowed: 0 to 65535; 0 lets the kernel choose)")]
    Port(i64),
    #[error("invalid timer interval {0} ms (allowed: 1 to 86400000)")]
    TimerInterval(i64),
    #[error("invalid value for option '{0}': an object or resource (allowed: scalars and arrays)")]
    OptionValue(String),
    #[error("invalid value for task option '{key}' (allowed: {allowed})")]
    TaskOption { key: String, allowed: String },
    /// A batch name (`batch()`'s argument or the `batch` task option).
    #[error("invalid batch name for {what}: {why}")]
    BatchName { what: String, why: String },
    /// One element of `taskMulti()`'s array could not be sent.
    #[error("task [{key}]: {cause}")]
    TaskValue { key: String, cause: String },
    /// A PHP function we called failed; `cause` is what it threw.
    #[error("{function}() failed: {cause}")]
    Call {
        function: &'static str,
        cause: String,
    },
    #[error("{0}() did not return a string")]
    NotAString(&'static str),
    /// A bad argument of `failedTasks()`, `retryFailed()` or
    /// `purgeFailed()`: which one, what it was and what is allowed.
    #[error("{method}(): {arg} is {got}; allowed: {allowed}")]
    FailedArgument {
        method: &'static str,
        arg: String,
        got: String,
        allowed: String,
    },
    /// The failed-task methods need the master, so a running server.
    #[error("{0}() works only in a running server's worker (in a callback such as onWorkerStart, onReceive or onTask)")]
    NotRunning(&'static str),
    /// The master could not do what a failed-task method asked (a queue
    /// that keeps no failed tasks, the store or Redis failing).
    #[error("{method}(): {why}")]
    FailedTasks { method: &'static str, why: String },
    #[error("the task payload from the network could not be unserialized")]
    UntrustedPayload,
    /// A value the caller handed over could not be converted: the same
    /// failure as the wrapped one, reported with `EINVAL`.
    #[error(transparent)]
    InvalidData(Box<PhpError>),
    /// A `TaskClient::set()` option refused by the engine's config.
    #[error(transparent)]
    ClientOption(taskq_engine::config::ConfigError),
    #[error(transparent)]
    Zend(#[from] ext_php_rs::error::Error),
    /// `start()` and the server's methods; the code is the errno of a
    /// failed listen.
    #[error(transparent)]
    Server(#[from] taskq_engine::error::ServerError),
    /// `TaskClient`'s methods; the code is its `errCode`.
    #[error(transparent)]
    Client(#[from] taskq_engine::error::ClientError),
    /// A worker's link to the master.
    #[error(transparent)]
    Link(#[from] taskq_engine::worker::LinkError),
    /// `TaskQ\Mailer`, thrown as `TaskQ\MailException`.
    #[error(transparent)]
    Mail(#[from] taskq_mailer::MailError),
}

impl PhpError {
    /// The same failure blamed on the caller's data (`EINVAL`), as
    /// `TaskClient` reports values it cannot send.
    pub fn invalid_data(self) -> Self {
        PhpError::InvalidData(Box::new(self))
    }

    /// The exception code: `EINVAL` for bad arguments, 0 for conversions
    /// that failed inside PHP.
    pub fn code(&self) -> i32 {
        match self {
            PhpError::Call { .. }
            | PhpError::NotAString(_)
            | PhpError::UntrustedPayload
            | PhpError::NotRunning(_)
            | PhpError::FailedTasks { .. }
            | PhpError::Zend(_)
            | PhpError::Server(_)
            | PhpError::Link(_)
            | PhpError::Mail(_) => 0,
            PhpError::Client(e) => e.code(),
            _ => libc::EINVAL,
        }
    }
}
