//! Error types of the engine. The PHP layer maps them to exception classes in
//! one place (`php/exception.rs`), so engine code never knows about PHP.

use std::io;

/// Failures while decoding bytes that came from another process or a peer.
/// Peer input must never panic: every malformed case has a variant here.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {length} bytes exceeds the limit of {max} bytes")]
    FrameTooLong { length: usize, max: usize },
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("truncated {what}: needed {needed} bytes, had {had}")]
    Truncated {
        what: &'static str,
        needed: usize,
        had: usize,
    },
    #[error("delay of {0} ms exceeds the maximum of {max} ms (one year)", max = crate::protocol::MAX_DELAY_MS)]
    DelayTooLong(u64),
    #[error("{0} is not UTF-8")]
    BadUtf8(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Failures a PHP user can cause or see through `TaskServer`.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to listen server port[{addr}], Error: {source}[{}]", source.raw_os_error().unwrap_or(0))]
    Listen { addr: String, source: io::Error },
    #[error("invalid $mode parameter {0} (allowed: TASKQ_BASE (1) or TASKQ_PROCESS (2))")]
    BadMode(i64),
    #[error("invalid $sock_type {0} (allowed: TASKQ_SOCK_TCP (1), TASKQ_SOCK_TCP6 (3), TASKQ_SOCK_UNIX_STREAM (5))")]
    BadSockType(i64),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("require 'onTask' callback: task_worker_num is {0} but no Task callback was registered with on('Task', ...)")]
    MissingTaskCallback(usize),
    #[error("require 'onReceive' callback: register one with on('Receive', ...)")]
    MissingReceiveCallback,
    #[error("server is already running")]
    AlreadyStarted,
    #[error("failed to start server: {0}")]
    Start(String),
    /// The manager died: the server stopped in order, and `start()` fails so
    /// the script exits non-zero and a service manager restarts it.
    #[error("the manager process died ({0}); the server stopped (start() fails so that a service manager restarts it)")]
    ManagerLost(String),
}

/// Failures of `TaskClient`, carrying the errno-style code Swoole users read
/// from `$client->errCode`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{message}")]
    Os { code: i32, message: String },
    #[error("client is not connected to server")]
    NotConnected,
    /// The server closed the connection (found by the next call after it).
    #[error("the connection was closed by the server")]
    ClosedByServer,
    #[error("connection to the server has already been established")]
    AlreadyConnected,
    #[error("data to send is empty")]
    EmptyData,
    #[error("{0}")]
    Protocol(String),
    /// The server refused the request (queue full, auth, store failure).
    #[error("{message}")]
    Server { code: u32, message: String },
    /// The operation needs taskq's protocol, which framing options replaced.
    #[error("{0} needs taskq's protocol; this client was set up with Swoole framing options or taskq_protocol = false")]
    NeedsTaskqProtocol(&'static str),
}

impl ClientError {
    /// Swoole's SW_ERROR_CLIENT_NO_CONNECTION, which scripts compare against.
    pub const NO_CONNECTION: i32 = 5001;
    /// errno of a connection the server closed, as a write into it or a
    /// read at its end reports it (ECONNRESET).
    pub const CLOSED_BY_SERVER: i32 = libc::ECONNRESET;

    /// The value `$client->errCode` takes after this error.
    pub fn code(&self) -> i32 {
        match self {
            ClientError::Os { code, .. } => *code,
            ClientError::NotConnected => Self::NO_CONNECTION,
            ClientError::ClosedByServer => Self::CLOSED_BY_SERVER,
            ClientError::AlreadyConnected => libc::EISCONN,
            ClientError::EmptyData => libc::EINVAL,
            ClientError::Protocol(_) => libc::EPROTO,
            ClientError::Server { code, .. } => *code as i32,
            ClientError::NeedsTaskqProtocol(_) => libc::EPROTO,
        }
    }

    /// Wraps an I/O error keeping its errno, so `errCode` is 111 for a refused
    /// connection as in Swoole.
    pub fn os(context: &str, err: &io::Error) -> Self {
        let code = match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if err.raw_os_error().is_none() => {
                libc::EAGAIN
            }
            _ => err.raw_os_error().unwrap_or(libc::EIO),
        };
        ClientError::Os {
            code,
            message: format!("{context}: {err}[{code}]"),
        }
    }
}

/// Why a PHP callback run by a worker failed. For onTask its text is the
/// run's failure: the master logs it and hands it to onTaskFailed as
/// `$error`, and a failed run is retried, so the cases are told apart here
/// while the text stays what PHP showed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// The registered value cannot be called (named by its event).
    #[error("the {0} callback is not callable")]
    NotCallable(String),
    /// The callback threw: the exception as its `__toString()` prints it.
    #[error("{0}")]
    Threw(String),
    /// The callback failed with an exception pending that could not be
    /// taken (named by its event).
    #[error("{0} callback failed")]
    Failed(String),
    /// The call itself could not be made, as the PHP binding reports it.
    #[error("{0}")]
    Call(String),
    /// A task arrived but no Task callback is registered.
    #[error("no Task callback is registered")]
    NoTaskCallback,
    /// The task's data could not be turned back into a PHP value.
    #[error("{0}")]
    Payload(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_failures_read_as_the_text_ontaskfailed_has_always_received() {
        let cases = [
            (
                CallbackError::NotCallable("onTask".into()),
                "the onTask callback is not callable",
            ),
            (
                CallbackError::Threw("Exception: boom in /app.php:3".into()),
                "Exception: boom in /app.php:3",
            ),
            (
                CallbackError::Failed("onTask".into()),
                "onTask callback failed",
            ),
            (CallbackError::Call("why".into()), "why"),
            (
                CallbackError::NoTaskCallback,
                "no Task callback is registered",
            ),
            (CallbackError::Payload("bad data".into()), "bad data"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
