//! Idle SMTP connections kept between sends. No background thread: expiry
//! and liveness are checked when a connection is taken, so a mailer never
//! leaves a thread running in a process that may fork (taskq's master forks
//! its workers, and a PHP script may create the mailer before `start()`).
//! After a fork the child finds its parent's connections here and drops them
//! unused, without QUIT, since the parent may still be talking on them.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::error::MailError;
use super::pid;
use super::smtp::{Connection, Endpoint};

/// How long after its last use a parked connection is taken without
/// checking it first. The check (a non-blocking peek) was a system call per
/// message in a busy worker; a server that hung up within this moment is
/// met at the next command instead, and the message goes out once on a
/// fresh connection, as nothing was accepted on the old one.
pub(crate) const TRUSTED: Duration = Duration::from_millis(100);

/// The connections of one mailer.
pub struct Pool {
    endpoint: Endpoint,
    capacity: usize,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
}

struct Idle {
    /// The process these connections belong to.
    pid: u32,
    parked: Vec<(Connection, Instant)>,
}

impl Pool {
    /// An empty pool keeping at most `capacity` idle connections.
    pub fn new(endpoint: Endpoint, capacity: usize, idle_timeout: Duration) -> Pool {
        Pool {
            endpoint,
            capacity,
            idle_timeout,
            idle: Mutex::new(Idle {
                pid: pid::current(),
                parked: Vec::new(),
            }),
        }
    }

    /// The most recently used live connection, or a new one.
    pub fn take(&self) -> Result<Connection, MailError> {
        loop {
            let parked = self.lock(pid::current()).parked.pop();
            let Some((conn, since)) = parked else {
                return self.open();
            };
            let idle = since.elapsed();
            if idle >= self.idle_timeout {
                conn.quit();
            } else if idle < TRUSTED || conn.is_alive() {
                return Ok(conn);
            }
        }
    }

    /// Parks a connection for the next send, or closes it when the pool is
    /// full.
    pub fn give_back(&self, conn: Connection) {
        let own = pid::current();
        if conn.pid() != own {
            return;
        }
        let mut idle = self.lock(own);
        if idle.parked.len() < self.capacity {
            idle.parked.push((conn, Instant::now()));
        } else {
            drop(idle);
            conn.quit();
        }
    }

    /// A new connection, bypassing the parked ones.
    pub fn open(&self) -> Result<Connection, MailError> {
        Connection::open(&self.endpoint)
    }

    /// The idle list, emptied first if `pid` (the caller's process) is not
    /// the one that parked them.
    fn lock(&self, pid: u32) -> MutexGuard<'_, Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.pid != pid {
            idle.pid = pid;
            idle.parked.clear();
        }
        idle
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let parked = std::mem::take(&mut self.lock(pid::current()).parked);
        for (conn, _) in parked {
            conn.quit();
        }
    }
}
