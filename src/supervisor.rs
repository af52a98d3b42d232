//! The manager process: forks the workers and task workers, respawns any
//! that exit (same worker id), reloads them on SIGUSR1/SIGUSR2 and stops them
//! on SIGTERM. It is single-threaded and waits for signals synchronously with
//! `sigtimedwait`, so forking from it is always safe.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::{fork, ForkResult, Pid};

use crate::log::Level;

/// What the manager supervises.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    pub worker_num: u32,
    pub task_worker_num: u32,
    /// Grace given to workers on stop before they are SIGKILLed.
    pub max_wait_time: Duration,
}

impl SupervisorSpec {
    fn total(&self) -> u32 {
        self.worker_num + self.task_worker_num
    }

    fn is_task(&self, id: u32) -> bool {
        id >= self.worker_num
    }
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Delay before respawning a worker that has died `failures` times in a row
/// right after starting: none for an isolated crash, then doubling, so a
/// fatal error in onWorkerStart cannot fork-bomb the machine.
pub fn backoff(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 2).min(16);
    (BACKOFF_START * factor).min(BACKOFF_MAX)
}

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

struct Child {
    id: u32,
    /// Read end of a pipe the child writes one byte to once onWorkerStart
    /// has returned (see [`announce_ready`]).
    ready: Option<std::os::fd::OwnedFd>,
}

/// The child's end of its readiness pipe.
static READY_FD: std::sync::Mutex<Option<std::os::fd::OwnedFd>> = std::sync::Mutex::new(None);

/// Called by a worker once it has started (onWorkerStart returned): from
/// then on its death is an ordinary crash, not a crash loop, so the manager
/// respawns it at once (random SIGKILLs under load must not slow it down).
pub fn announce_ready() {
    let fd = READY_FD.lock().ok().and_then(|mut f| f.take());
    if let Some(fd) = fd {
        let _ = nix::unistd::write(&fd, &[1u8]);
    }
}

/// Whether the child behind `fd` announced it had started.
fn was_ready(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    // SAFETY: a non-blocking read of one byte into a local buffer.
    let n = unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        libc::read(fd.as_raw_fd(), byte.as_mut_ptr().cast(), 1)
    };
    n == 1
}

/// What the manager does besides forking: run worker code in the children
/// and the manager's own PHP events.
pub trait ManagerHooks {
    /// Runs in a freshly forked child; returns its exit code.
    fn run_worker(&mut self, worker_id: u32) -> i32;
    /// onManagerStart, before the first fork.
    fn manager_start(&mut self);
    /// onManagerStop, after the last worker exited.
    fn manager_stop(&mut self);
    /// onWorkerError, for an abnormal exit.
    fn worker_error(&mut self, worker_id: u32, pid: i32, exit: Exit);
}

struct Supervisor<'a> {
    spec: SupervisorSpec,
    hooks: &'a mut dyn ManagerHooks,
    children: HashMap<Pid, Child>,
    failures: Vec<u32>,
    pending: Vec<(Instant, u32)>,
    stopping: Option<Instant>,
    killed: bool,
    /// Workers told to leave by a reload, and when to SIGKILL them if they
    /// have not (`max_wait_time`, as on stop).
    reload_deadlines: HashMap<Pid, Instant>,
}

fn managed_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Runs the manager loop until every worker has exited after a stop.
pub fn supervise(spec: SupervisorSpec, hooks: &mut dyn ManagerHooks) -> i32 {
    let set = managed_signals();
    if let Err(e) = set.thread_block() {
        crate::log!(Level::Error, "manager cannot block signals: {e}");
        return 1;
    }
    let mut sup = Supervisor {
        failures: vec![0; spec.total() as usize],
        spec,
        hooks,
        children: HashMap::new(),
        pending: Vec::new(),
        stopping: None,
        killed: false,
        reload_deadlines: HashMap::new(),
    };
    sup.hooks.manager_start();
    for id in 0..sup.spec.total() {
        sup.start(id);
    }
    loop {
        if sup.stopping.is_some() && sup.children.is_empty() {
            sup.hooks.manager_stop();
            return 0;
        }
        let timeout = sup.next_timeout();
        match wait_signal(&set, timeout) {
            Some(libc::SIGCHLD) => sup.reap(),
            Some(libc::SIGTERM) => sup.stop(),
            Some(libc::SIGUSR1) => sup.reload(false),
            Some(libc::SIGUSR2) => sup.reload(true),
            Some(libc::SIGHUP) => {
                if let Err(e) = crate::log::reopen() {
                    crate::log!(Level::Warning, "cannot reopen log file: {e}");
                }
                sup.signal_children(Signal::SIGHUP, |_| true);
            }
            _ => {}
        }
        sup.tick();
    }
}

fn wait_signal(set: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

impl Supervisor<'_> {
    fn start(&mut self, id: u32) {
        let (ready_r, ready_w) = match nix::unistd::pipe() {
            Ok((r, w)) => (Some(r), Some(w)),
            Err(_) => (None, None),
        };
        // SAFETY: the manager is single-threaded, so the child inherits a
        // consistent address space.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(ready_r);
                if let Ok(mut slot) = READY_FD.lock() {
                    *slot = ready_w;
                }
                let _ = SigSet::empty().thread_set_mask();
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                let code = self.hooks.run_worker(id);
                // SAFETY: ends the child without running the parent's atexit
                // handlers or PHP's request shutdown a second time.
                unsafe { libc::_exit(code) };
            }
            Ok(ForkResult::Parent { child }) => {
                drop(ready_w);
                self.children.insert(child, Child { id, ready: ready_r });
            }
            Err(e) => {
                crate::log!(
                    Level::Error,
                    "fork of worker #{id} failed: {e}; retrying in {:?}",
                    BACKOFF_START
                );
                self.pending.push((Instant::now() + BACKOFF_START, id));
            }
        }
    }

    fn reap(&mut self) {
        while let Some((pid, exit)) = wait_child(None, false) {
            self.reload_deadlines.remove(&pid);
            if let Some(child) = self.children.remove(&pid) {
                self.exited(pid, child, exit);
            }
        }
    }

    fn exited(&mut self, pid: Pid, child: Child, exit: Exit) {
        let kind = if self.spec.is_task(child.id) {
            "task worker"
        } else {
            "worker"
        };
        if exit.abnormal() {
            crate::log!(
                Level::Warning,
                "{kind}(pid={pid}, id={}) abnormal exit, status={}, signal={}",
                child.id,
                exit.code,
                exit.signal
            );
            self.hooks.worker_error(child.id, pid.as_raw(), exit);
        }
        if self.stopping.is_some() {
            return;
        }
        let slot = &mut self.failures[child.id as usize];
        let started = child.ready.as_ref().is_some_and(was_ready);
        if exit.abnormal() && !started {
            *slot += 1;
        } else {
            *slot = 0;
        }
        let delay = backoff(*slot);
        if delay.is_zero() {
            self.start(child.id);
        } else {
            crate::log!(
                Level::Warning,
                "{kind} #{} died {} times in a row before onWorkerStart returned; respawning in {:?}",
                child.id,
                *slot,
                delay
            );
            self.pending.push((Instant::now() + delay, child.id));
        }
    }

    fn stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(Instant::now() + self.spec.max_wait_time);
        self.pending.clear();
        self.signal_children(Signal::SIGTERM, |_| true);
    }

    fn reload(&mut self, only_tasks: bool) {
        if self.stopping.is_some() {
            return;
        }
        crate::log!(
            Level::Info,
            "reloading {}",
            if only_tasks {
                "task workers"
            } else {
                "all workers"
            }
        );
        let deadline = Instant::now() + self.spec.max_wait_time;
        for (pid, child) in &self.children {
            if !only_tasks || self.spec.is_task(child.id) {
                let _ = kill(*pid, Signal::SIGTERM);
                self.reload_deadlines.entry(*pid).or_insert(deadline);
            }
        }
    }

    fn signal_children(&self, sig: Signal, which: impl Fn(u32) -> bool) {
        for (pid, child) in &self.children {
            if which(child.id) {
                let _ = kill(*pid, sig);
            }
        }
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut t = Duration::from_secs(1);
        for when in self
            .pending
            .iter()
            .map(|(w, _)| w)
            .chain(self.reload_deadlines.values())
        {
            t = t.min(when.saturating_duration_since(now));
        }
        if let Some(deadline) = self.stopping {
            if !self.killed {
                t = t.min(deadline.saturating_duration_since(now));
            }
        }
        t.max(Duration::from_millis(1))
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if let Some(deadline) = self.stopping {
            if !self.killed && now >= deadline && !self.children.is_empty() {
                crate::log!(
                    Level::Warning,
                    "worker exit timeout after {:?}, forced termination of {} processes",
                    self.spec.max_wait_time,
                    self.children.len()
                );
                self.signal_children(Signal::SIGKILL, |_| true);
                self.killed = true;
            }
            return;
        }
        let overdue: Vec<Pid> = self
            .reload_deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in overdue {
            self.reload_deadlines.remove(&pid);
            crate::log!(
                Level::Warning,
                "worker(pid={pid}) did not exit within max_wait_time {:?} after a reload; forced termination",
                self.spec.max_wait_time
            );
            let _ = kill(pid, Signal::SIGKILL);
        }
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(when, _)| *when <= now)
            .map(|(_, id)| *id)
            .collect();
        self.pending.retain(|(when, _)| *when > now);
        for id in due {
            self.start(id);
        }
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

/// Restores the default signal mask in a process that will not supervise.
pub fn unblock_all_signals() {
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_zero_then_doubles_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(800));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

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
    fn a_child_killed_by_a_real_time_signal_is_reaped() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        // SAFETY: plain kill(2) of our own child.
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
