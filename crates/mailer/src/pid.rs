//! This process's id without a system call per use. The pool and the
//! Message-ID ask for it on every message, and glibc no longer caches
//! `getpid()`; a forked task worker must still see its own at once, so a
//! handler that `fork()` runs in the child refreshes it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn refresh() {
    PID.store(std::process::id(), Ordering::Relaxed);
}

/// The calling process's id.
pub fn current() -> u32 {
    static HOOKED: Once = Once::new();
    HOOKED.call_once(|| {
        refresh();
        // SAFETY: the handler only stores getpid() (async-signal-safe) in
        // an atomic; registering it has no other effect.
        unsafe { libc::pthread_atfork(None, None, Some(refresh)) };
    });
    PID.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_sees_its_own_id() {
        assert_eq!(current(), std::process::id());
        // SAFETY: the child only reads two ids and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let own = current() == std::process::id();
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or the test harness.
            unsafe { libc::_exit(if own { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child saw its parent's id"
        );
        assert_eq!(current(), std::process::id());
    }
}
