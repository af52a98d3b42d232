//! The process layer: signals, daemonizing, the workers' user and group,
//! the pid file, the manager's line to each child, and how a child ended
//! or a process exits. Everything here sits on the operating system only
//! (std, nix, libc) and imports nothing else from the crate, so the
//! launcher, the manager, the master and the workers can all use it
//! without depending on one another.

pub mod control;
pub mod daemon;
pub mod exit;
pub mod identity;
pub mod pid_file;
pub mod signals;
