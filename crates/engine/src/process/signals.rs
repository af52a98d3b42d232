//! Signals: which ones each process takes over from PHP, the stop signals
//! held while the master starts, and the numbered sets the manager waits
//! on synchronously. nix's `Signal` cannot name the real-time signals the
//! manager's orders use, so those go through libc here, and only here.

use std::io;
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// The first real-time signal: a log reopen for the whole group, and the
/// base of the manager's orders.
pub fn rtmin() -> i32 {
    libc::SIGRTMIN()
}

/// Takes the signals a service manager may send to the whole process group
/// away from PHP, before this process installs its own handlers: SIGTERM
/// and SIGINT get their default action, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2
/// and SIGRTMIN are ignored (so none of them can kill a process that has
/// no handler for it yet, or never gets one), and SIGPIPE is ignored for
/// good. PHP's own signal handler (zend_signal) must not stay installed
/// underneath ours: the handler registry chains to the previous handler,
/// and PHP's would re-raise SIGTERM with the default action and kill the
/// process.
pub fn take_over() {
    for s in [Signal::SIGTERM, Signal::SIGINT] {
        set_handler(s, SigHandler::SigDfl);
    }
    ignore(&[
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
    ]);
    // SAFETY: installing SIG_IGN has no preconditions.
    unsafe { libc::signal(rtmin(), libc::SIG_IGN) };
}

/// Ignores `signals` in this process (and, across exec, its children).
pub fn ignore(signals: &[Signal]) {
    for s in signals {
        set_handler(*s, SigHandler::SigIgn);
    }
}

fn set_handler(s: Signal, handler: SigHandler) {
    // SAFETY: only SIG_DFL and SIG_IGN are installed here, which run no
    // code of ours in a signal context.
    let _ = unsafe { signal(s, handler) };
}

/// Lets every signal through on this thread: a forked child starts with
/// its parent's mask, and a worker must not inherit the manager's.
pub fn unblock_all() {
    let _ = SigSet::empty().thread_set_mask();
}

/// Holds SIGTERM and SIGINT pending in the master while it starts: a stop
/// requested then (`shutdown()` in a worker's onWorkerStart, a SIGTERM
/// during onStart) waits for the master's loop, which releases them once
/// its handlers exist, instead of killing the master with the default
/// action before onShutdown could run. Released on drop as well, however
/// the start ends.
pub struct StopSignalsHeld;

impl StopSignalsHeld {
    /// Holds the stop signals until [`StopSignalsHeld::release`] or drop.
    pub fn hold() -> Self {
        let _ = Self::signals().thread_block();
        StopSignalsHeld
    }

    fn signals() -> SigSet {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set
    }

    /// Lets pending and future stop signals through.
    pub fn release() {
        let _ = Self::signals().thread_unblock();
    }
}

impl Drop for StopSignalsHeld {
    fn drop(&mut self) {
        Self::release();
    }
}

/// A set of signals by number, real-time ones included, for a process that
/// waits for them instead of letting them act.
pub struct NumberedSet(libc::sigset_t);

/// A signal taken from a [`NumberedSet`]: its number, its sender's pid and
/// the value a `sigqueue` sender attached.
pub struct Received {
    pub sig: i32,
    pub sender: i32,
    pub value: usize,
}

impl NumberedSet {
    /// The set of `signals` (valid signal numbers).
    pub fn of(signals: impl IntoIterator<Item = i32>) -> NumberedSet {
        // SAFETY: an all-zero sigset_t is a valid value to initialise;
        // sigemptyset/sigaddset only write into this local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in signals {
                libc::sigaddset(&mut set, sig);
            }
            NumberedSet(set)
        }
    }

    /// Blocks the set on this thread, so its signals wait for [`Self::wait`].
    pub fn block(&self) -> io::Result<()> {
        // SAFETY: blocks a valid set for the calling thread.
        match unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Waits at most `timeout` for one of the (blocked) set.
    pub fn wait(&self, timeout: Duration) -> Option<Received> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: an all-zero siginfo_t is valid; sigtimedwait fills it in
        // from a valid sigset. si_pid is valid for signals sent with kill(2)
        // or sigqueue(3), and zero (the zeroed value) for those the kernel
        // raises itself; the value is zero unless sigqueue(3) set it.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigtimedwait(&self.0, &mut info, &ts);
            (sig > 0).then(|| Received {
                sig,
                sender: info.si_pid(),
                value: info.si_value().sival_ptr as usize,
            })
        }
    }
}

/// Sends signal number `sig` with `value` to `pid` (sigqueue(3)): queued,
/// so two sent at once are two received, and carrying the sender's pid.
pub fn queue(pid: Pid, sig: i32, value: usize) -> io::Result<()> {
    let value = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    // SAFETY: plain sigqueue(3); the value is an integer, never dereferenced.
    if unsafe { libc::sigqueue(pid.as_raw(), sig, value) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
