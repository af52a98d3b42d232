//! How a process ends and how its parent learns how a child ended.

use nix::unistd::Pid;

/// How a worker ended, in the terms onWorkerError and the log use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub signal: i32,
}

impl Exit {
    /// Decodes a raw `waitpid` status. Done here rather than by nix, whose
    /// decoder fails for signals it cannot name (SIGRTMIN and above) after
    /// the kernel has already reaped the child, which was then lost.
    fn from_status(status: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit {
                code: libc::WEXITSTATUS(status),
                signal: 0,
            })
        } else if libc::WIFSIGNALED(status) {
            Some(Exit {
                code: 0,
                signal: libc::WTERMSIG(status),
            })
        } else {
            None
        }
    }

    /// Whether onWorkerError fires for this exit.
    pub fn abnormal(self) -> bool {
        self.code != 0 || self.signal != 0
    }
}

/// Reaps an ended child (`pid`, or any with `None`), waiting for one only
/// if `block`: its pid and how it ended, whatever the signal that killed
/// it. `None` when no child has ended (or none is left).
pub fn wait_child(pid: Option<Pid>, block: bool) -> Option<(Pid, Exit)> {
    let target = pid.map_or(-1, Pid::as_raw);
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes the status into a local integer.
        let got = unsafe { libc::waitpid(target, &mut status, flags) };
        if got > 0 {
            if let Some(exit) = Exit::from_status(status) {
                return Some((Pid::from_raw(got), exit));
            }
        } else if got == 0 || nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return None;
        }
    }
}

/// Ends this process at once with `code`, running neither atexit handlers
/// nor PHP's request shutdown: a forked child must not flush or tear down
/// what its parent still owns, and a process that is done (the launcher
/// of a daemon, the manager) skips PHP's shutdown.
pub fn now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_is_decoded_also_the_real_time_ones() {
        for sig in [
            libc::SIGKILL,
            libc::SIGSYS,
            libc::SIGRTMIN(),
            libc::SIGRTMIN() + 5,
            64,
        ] {
            let status = sig; // as the kernel encodes a death by signal
            assert_eq!(
                Exit::from_status(status),
                Some(Exit {
                    code: 0,
                    signal: sig
                })
            );
        }
        assert_eq!(Exit::from_status(7 << 8), Some(Exit { code: 7, signal: 0 }));
    }

    #[test]
    // The child is reaped by `wait_child`, the function under test.
    #[allow(clippy::zombie_processes)]
    fn a_child_killed_by_a_real_time_signal_is_reaped() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        // SAFETY: plain kill(2) of our own child (nix's kill cannot name a
        // real-time signal).
        unsafe { libc::kill(pid.as_raw(), libc::SIGRTMIN() + 5) };
        let reaped = wait_child(Some(pid), true);
        let killed = Exit {
            code: 0,
            signal: libc::SIGRTMIN() + 5,
        };
        assert_eq!(reaped, Some((pid, killed)));
    }

    #[test]
    fn exit_is_abnormal_on_code_or_signal() {
        assert!(!Exit { code: 0, signal: 0 }.abnormal());
        assert!(Exit {
            code: 255,
            signal: 0
        }
        .abnormal());
        assert!(Exit { code: 0, signal: 9 }.abnormal());
    }
}
