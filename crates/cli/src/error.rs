//! What can go wrong for the `taskq` command, and the exit code each has,
//! so scripts can tell a server that is down from a wrong token or a typo.

/// One failure, with the message printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the taskq server at {url}: {why} (is metrics_listen set and the server running?)")]
    Unreachable { url: String, why: String },
    #[error("the taskq server at {url} refused the token: {why} (pass --token or TASKQ_TOKEN with the server's auth_token)")]
    Unauthorized { url: String, why: String },
    #[error("{0}")]
    BadInput(String),
    #[error("the taskq server at {url} answered {status}: {why}")]
    Server {
        url: String,
        status: u16,
        why: String,
    },
    #[error("the taskq server at {url} sent an answer that is not the expected JSON: {why}")]
    BadAnswer { url: String, why: String },
}

/// Exit codes (0 is success; 2 is also what clap uses for a bad command line).
pub mod exit {
    pub const BAD_INPUT: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
    pub const UNAUTHORIZED: i32 = 4;
    /// The server answered with an error (4xx other than 401, or 5xx).
    pub const SERVER: i32 = 5;
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Unreachable { .. } => exit::UNREACHABLE,
            CliError::Unauthorized { .. } => exit::UNAUTHORIZED,
            CliError::BadInput(_) => exit::BAD_INPUT,
            CliError::Server { .. } | CliError::BadAnswer { .. } => exit::SERVER,
        }
    }
}
