//! `daemonize`: detaching the server from the terminal that started it.

use std::fs::OpenOptions;

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid, ForkResult};

/// Why the server could not detach.
#[derive(Debug, thiserror::Error)]
pub enum DaemonizeError {
    #[error("cannot open log_file: {0}")]
    LogFile(std::io::Error),
    #[error("/dev/null: {0}")]
    DevNull(std::io::Error),
    #[error("daemonize: fork failed: {0}")]
    Fork(nix::Error),
    #[error("setsid: {0}")]
    Setsid(nix::Error),
    #[error("daemonize: redirecting stdio failed: {0}")]
    Stdio(nix::Error),
}

/// Detaches from the terminal: fork (the parent exits at once), new
/// session, stdio to `log_file` or /dev/null. Unlike Swoole the working
/// directory is kept, so relative `log_file`/`pid_file` paths work.
/// Must be called before this process starts any thread.
pub fn daemonize(log_file: Option<&str>) -> Result<(), DaemonizeError> {
    let out = match log_file {
        Some(p) => OpenOptions::new().create(true).append(true).open(p),
        None => OpenOptions::new().write(true).open("/dev/null"),
    }
    .map_err(DaemonizeError::LogFile)?;
    let null = std::fs::File::open("/dev/null").map_err(DaemonizeError::DevNull)?;
    // SAFETY: the caller guarantees no thread exists in this process yet.
    match unsafe { fork() } {
        // The launching process is done; skip PHP's shutdown.
        Ok(ForkResult::Parent { .. }) => super::exit::now(0),
        Ok(ForkResult::Child) => {}
        Err(e) => return Err(DaemonizeError::Fork(e)),
    }
    setsid().map_err(DaemonizeError::Setsid)?;
    dup2_stdin(&null).map_err(DaemonizeError::Stdio)?;
    dup2_stdout(&out).map_err(DaemonizeError::Stdio)?;
    dup2_stderr(&out).map_err(DaemonizeError::Stdio)?;
    Ok(())
}
