//! taskq's own log lines, in Swoole's layout (`[time mark pid.worker_id]
//! LEVEL message`) so existing log parsers and operators' habits keep working.
//! Every process writes whole lines with one `write(2)` to an append-mode
//! file, so lines from different processes never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

/// Severity, numbered as Swoole's `log_level` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Trace = 1,
    Info = 2,
    Notice = 3,
    Warning = 4,
    Error = 5,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
            Level::Info => "INFO",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// Which process a line comes from; the mark is Swoole's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Manager,
    Worker,
    TaskWorker,
}

impl Role {
    fn mark(self) -> char {
        match self {
            Role::Master => '#',
            Role::Manager => '$',
            Role::Worker => '*',
            Role::TaskWorker => '^',
        }
    }
}

struct State {
    file: Option<File>,
    path: Option<String>,
    min_level: u8,
    role: Role,
    worker_id: i64,
}

static STATE: Mutex<State> = Mutex::new(State {
    file: None,
    path: None,
    min_level: Level::Info as u8,
    role: Role::Master,
    worker_id: 0,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends log lines to `path` (append) or, without one, to stderr.
/// `min_level` 6 (NONE) silences taskq's own lines.
pub fn configure(path: Option<&str>, min_level: u8) -> std::io::Result<()> {
    let mut s = state();
    s.file = match path {
        Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    s.path = path.map(str::to_owned);
    s.min_level = min_level;
    Ok(())
}

/// The log file to use: `path` if it can be opened for appending. If it
/// cannot, the server still starts, as Swoole's does: a warning naming the
/// path and the errno goes to stderr, and logs stay there (`None`).
pub fn usable_file(path: Option<&str>, min_level: u8) -> Option<&str> {
    let p = path?;
    match OpenOptions::new().create(true).append(true).open(p) {
        Ok(_) => Some(p),
        Err(e) => {
            let _ = configure(None, min_level);
            crate::log!(
                Level::Warning,
                "cannot open log_file '{p}': {e}; logging to stderr instead"
            );
            None
        }
    }
}

/// Reopens the log file after logrotate moved it away. stdout and stderr
/// follow when they wrote to the old file (a daemon's stdio, or a server
/// started with `>> log_file 2>&1`), so PHP's echo, warnings and fatal
/// errors move to the new file too.
pub fn reopen() -> std::io::Result<()> {
    let mut s = state();
    let Some(path) = s.path.clone() else {
        return Ok(());
    };
    let new = OpenOptions::new().create(true).append(true).open(path)?;
    if let Some(old) = s.file.as_ref().and_then(|f| identity(f.as_fd())) {
        if identity(std::io::stdout().as_fd()) == Some(old) {
            let _ = nix::unistd::dup2_stdout(&new);
        }
        if identity(std::io::stderr().as_fd()) == Some(old) {
            let _ = nix::unistd::dup2_stderr(&new);
        }
    }
    s.file = Some(new);
    Ok(())
}

/// [`reopen`], for a signal handler's caller: a failure is logged (to the
/// old file, still open) and the process carries on.
pub fn reopen_or_warn() {
    if let Err(e) = reopen() {
        write(Level::Warning, &format!("cannot reopen log file: {e}"));
    }
}

/// The (device, inode) of the file behind descriptor `fd`.
fn identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Records who this process is, right after fork.
pub fn set_process(role: Role, worker_id: i64) {
    let mut s = state();
    s.role = role;
    s.worker_id = worker_id;
}

fn timestamp() -> String {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live, properly sized locals.
    unsafe {
        libc::gettimeofday(&mut tv, std::ptr::null_mut());
        libc::localtime_r(&tv.tv_sec, &mut tm);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tv.tv_usec
    )
}

/// Formats one line; public for tests of the layout.
pub fn format_line(level: Level, role: Role, pid: u32, worker_id: i64, msg: &str) -> String {
    format!(
        "[{} {}{}.{}]\t{}\t{}\n",
        timestamp(),
        role.mark(),
        pid,
        worker_id,
        level.name(),
        msg
    )
}

/// Writes one line if `level` passes the configured filter.
pub fn write(level: Level, msg: &str) {
    let mut s = state();
    if (level as u8) < s.min_level {
        return;
    }
    let line = format_line(level, s.role, std::process::id(), s.worker_id, msg);
    let result = match s.file.as_mut() {
        Some(f) => f.write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
    drop(result);
}

/// `log!(Level::Info, "...", args)`: formats only when the line will be written.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        $crate::log::write($level, &format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_moves_stdio_that_wrote_to_the_old_file_only() {
        let dir = std::env::temp_dir().join(format!("taskq-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        configure(Some(path.to_str().unwrap()), 2).unwrap();
        let stdout_before = identity(std::io::stdout().as_fd());
        std::fs::rename(&path, dir.join("x.log.1")).unwrap();
        reopen().unwrap();
        assert!(path.exists(), "a new file was created");
        assert_eq!(
            identity(std::io::stdout().as_fd()),
            stdout_before,
            "stdout did not point at the log: left alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        configure(None, 2).unwrap();
    }

    #[test]
    fn line_layout_matches_swoole() {
        let line = format_line(Level::Warning, Role::TaskWorker, 42, 3, "boom");
        assert!(line.starts_with('['), "{line}");
        assert!(line.ends_with(" ^42.3]\tWARNING\tboom\n"), "{line}");
        assert_eq!(line.as_bytes()[5], b'-');
    }
}
