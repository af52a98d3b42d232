//! The manager process: forks the workers and task workers, respawns any
//! that exit (same worker id), and reloads, stops or reopens the log of them
//! when the master says so ([`ManagerOrder`]), telling each over its control
//! line (`crate::process::control`).
//! It is single-threaded and waits for signals synchronously with
//! `sigtimedwait`, so forking from it is always safe, and none of the
//! signals a service manager sends to the whole process group (TERM, INT,
//! QUIT, HUP, USR1, USR2, RTMIN, PIPE) can kill it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{fork, ForkResult, Pid};

use crate::log::Level;
use crate::process::control::{self, ManagerEnd, Order};
pub use crate::process::exit::Exit;
use crate::process::exit::{self, wait_child};
use crate::process::signals::{self, NumberedSet, Received};

/// What the manager supervises.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    pub worker_num: u32,
    pub task_worker_num: u32,
    /// Grace given to workers on stop before they are SIGKILLed.
    pub max_wait_time: Duration,
    /// Grace given to workers on reload before they are SIGKILLed: long,
    /// since a reload must not cut a running task in half.
    pub reload_wait_time: Duration,
    /// The master, the only process whose orders the manager takes.
    pub master: Pid,
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

/// How long after a SIGTERM from outside (most likely sent to the whole
/// group, so the master's stop order is on its way) a worker that exits is
/// not yet replaced.
const GROUP_STOP_GRACE: Duration = Duration::from_secs(1);
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

struct Child {
    id: u32,
    /// Its control line: readiness up, orders down.
    control: ManagerEnd,
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
    /// have not (`reload_wait_time`).
    reload_deadlines: HashMap<Pid, Instant>,
    /// Workers SIGKILLed because a reload outlasted `reload_wait_time`.
    reload_kills: u64,
    /// Until when workers that exit are not replaced at once: a SIGTERM
    /// sent to the whole group makes them leave before the master's stop
    /// order arrives, and replacing them would fork workers only to stop
    /// them (`GROUP_STOP_GRACE`).
    respawn_hold: Option<Instant>,
}

/// The signals the manager waits for instead of letting them act: every
/// one a service manager may send to the whole group, so none kills it.
/// (SIGINT and SIGQUIT, which a terminal sends to its foreground group,
/// and SIGPIPE are ignored outright.)
fn managed_signals() -> NumberedSet {
    let orders = (1..=ManagerOrder::SIGNALS).map(|n| signals::rtmin() + n);
    NumberedSet::of(
        [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGHUP,
            signals::rtmin(),
        ]
        .into_iter()
        .chain(orders),
    )
}

/// Runs the manager loop until every worker has exited after a stop.
pub fn supervise(spec: SupervisorSpec, hooks: &mut dyn ManagerHooks) -> i32 {
    let set = managed_signals();
    if let Err(e) = set.block() {
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
        reload_kills: 0,
        respawn_hold: None,
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
        if let Some(received) = set.wait(timeout) {
            sup.on_signal(received);
        }
        sup.tick();
    }
}

/// What the master tells the manager, each as its own real-time signal:
/// those queue (two orders sent at once are two orders), carry the
/// sender's pid, which the manager checks, and a value. No signal is added
/// for [`ManagerOrder::StopWorker`], a reload of one worker: it is the
/// reload signal with the worker's id + 1 as its value (0: every worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerOrder {
    Stop,
    Reload,
    ReloadTaskWorkers,
    ReopenLogs,
    /// `$server->stop($workerId)`: that worker leaves, as in a reload, and
    /// is replaced.
    StopWorker(u32),
}

impl ManagerOrder {
    /// The number of real-time signals the orders use, from SIGRTMIN+1 on.
    const SIGNALS: i32 = 4;

    fn signal(self) -> i32 {
        signals::rtmin()
            + match self {
                ManagerOrder::Stop => 1,
                ManagerOrder::Reload | ManagerOrder::StopWorker(_) => 2,
                ManagerOrder::ReloadTaskWorkers => 3,
                ManagerOrder::ReopenLogs => 4,
            }
    }

    fn value(self) -> usize {
        match self {
            ManagerOrder::StopWorker(id) => id as usize + 1,
            _ => 0,
        }
    }

    fn from_signal(sig: i32, value: usize) -> Option<ManagerOrder> {
        match (sig - signals::rtmin(), value) {
            (1, _) => Some(ManagerOrder::Stop),
            (2, 0) => Some(ManagerOrder::Reload),
            (2, id) => u32::try_from(id - 1).ok().map(ManagerOrder::StopWorker),
            (3, _) => Some(ManagerOrder::ReloadTaskWorkers),
            (4, _) => Some(ManagerOrder::ReopenLogs),
            _ => None,
        }
    }

    /// Sends the order to `manager`.
    pub fn send(self, manager: Pid) -> std::io::Result<()> {
        signals::queue(manager, self.signal(), self.value())
    }
}

impl Supervisor<'_> {
    /// Acts on a signal. Orders come from the master only, as queued
    /// real-time signals ([`ManagerOrder`]): a signal sent to the whole
    /// process group reaches the master too, which relays what it means, so
    /// acting on both copies would reload twice, and a standard signal sent
    /// twice at once is delivered once, with the first sender's pid. The
    /// group's own signals only reopen this process's log (SIGHUP,
    /// SIGRTMIN) or are ignored, except SIGTERM once the master is gone
    /// (`PR_SET_PDEATHSIG`); a SIGTERM while it lives holds respawns for a
    /// moment (`respawn_hold`).
    fn on_signal(&mut self, Received { sig, sender, value }: Received) {
        let master_gone = nix::unistd::getppid() != self.spec.master;
        if sig == libc::SIGCHLD {
            return self.reap();
        }
        if sender == self.spec.master.as_raw() {
            if let Some(order) = ManagerOrder::from_signal(sig, value) {
                return self.obey(order);
            }
        }
        if sig == libc::SIGTERM && !master_gone {
            self.respawn_hold = Some(Instant::now() + GROUP_STOP_GRACE);
        }
        match sig {
            libc::SIGTERM if master_gone => self.stop(),
            libc::SIGHUP => crate::log::reopen_or_warn(),
            s if s == signals::rtmin() => crate::log::reopen_or_warn(),
            _ => crate::log!(
                Level::Notice,
                "signal {sig} from pid {sender} ignored: the manager takes orders from the master (pid {}) only; signal the master",
                self.spec.master
            ),
        }
    }

    fn obey(&mut self, order: ManagerOrder) {
        match order {
            ManagerOrder::Stop => self.stop(),
            ManagerOrder::Reload => self.reload(false),
            ManagerOrder::ReloadTaskWorkers => self.reload(true),
            ManagerOrder::StopWorker(id) => self.stop_worker(id),
            ManagerOrder::ReopenLogs => {
                crate::log::reopen_or_warn();
                self.tell_children(Order::ReopenLog);
            }
        }
    }

    fn start(&mut self, id: u32) {
        let (ours, theirs) = match control::line() {
            Ok(line) => line,
            Err(e) => return self.retry_start(id, &format!("cannot create its control line: {e}")),
        };
        // SAFETY: the manager is single-threaded, so the child inherits a
        // consistent address space.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Other children's lines must close when the manager dies.
                self.children.clear();
                drop(ours);
                control::adopt(theirs);
                signals::unblock_all();
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
                let code = self.hooks.run_worker(id);
                // Not the parent's atexit handlers nor PHP's request
                // shutdown a second time.
                exit::now(code);
            }
            Ok(ForkResult::Parent { child }) => {
                self.children.insert(child, Child { id, control: ours });
            }
            Err(e) => self.retry_start(id, &e.to_string()),
        }
    }

    fn retry_start(&mut self, id: u32, why: &str) {
        crate::log!(
            Level::Error,
            "fork of worker #{id} failed: {why}; retrying in {:?}",
            BACKOFF_START
        );
        self.pending.push((Instant::now() + BACKOFF_START, id));
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
        let started = child.control.was_ready();
        if exit.abnormal() && !started {
            *slot += 1;
        } else {
            *slot = 0;
        }
        let delay = backoff(*slot);
        if !delay.is_zero() {
            crate::log!(
                Level::Warning,
                "{kind} #{} died {} times in a row before onWorkerStart returned; respawning in {:?}",
                child.id,
                *slot,
                delay
            );
        }
        let now = Instant::now();
        let held = self
            .respawn_hold
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        match delay.max(held) {
            d if d.is_zero() => self.start(child.id),
            d => self.pending.push((now + d, child.id)),
        }
    }

    fn stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(Instant::now() + self.spec.max_wait_time);
        self.pending.clear();
        self.tell_children(Order::Leave);
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
        let leaving: Vec<Pid> = self
            .children
            .iter()
            .filter(|(_, child)| !only_tasks || self.spec.is_task(child.id))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in leaving {
            self.replace(pid);
        }
    }

    /// `$server->stop($workerId)` of another worker: it leaves as in a
    /// reload, so its running callback finishes as written.
    fn stop_worker(&mut self, id: u32) {
        if self.stopping.is_some() {
            return;
        }
        let pid = self
            .children
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(p, _)| *p);
        match pid {
            Some(pid) => self.replace(pid),
            None => crate::log!(
                Level::Notice,
                "stop of worker #{id} ignored: it has no process now"
            ),
        }
    }

    /// Tells a child to leave after what it holds (it is respawned when it
    /// exits), SIGKILLing it if it still runs after `reload_wait_time`.
    fn replace(&mut self, pid: Pid) {
        let Some(child) = self.children.get(&pid) else {
            return;
        };
        child.control.tell(Order::Leave);
        let deadline = Instant::now() + self.spec.reload_wait_time;
        self.reload_deadlines.entry(pid).or_insert(deadline);
    }

    fn tell_children(&self, order: Order) {
        for child in self.children.values() {
            child.control.tell(order);
        }
    }

    fn kill_children(&self) {
        for pid in self.children.keys() {
            let _ = kill(*pid, Signal::SIGKILL);
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
                self.kill_children();
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
            self.reload_kills += 1;
            crate::log!(
                Level::Warning,
                "worker(pid={pid}) did not exit within reload_wait_time {:?} after a reload or stop(); forced termination ({} worker(s) killed by reloads so far)",
                self.spec.reload_wait_time,
                self.reload_kills
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
    fn orders_round_trip_through_signal_and_value() {
        for order in [
            ManagerOrder::Stop,
            ManagerOrder::Reload,
            ManagerOrder::ReloadTaskWorkers,
            ManagerOrder::ReopenLogs,
            ManagerOrder::StopWorker(0),
            ManagerOrder::StopWorker(7),
        ] {
            assert_eq!(
                ManagerOrder::from_signal(order.signal(), order.value()),
                Some(order)
            );
        }
        assert_eq!(ManagerOrder::from_signal(signals::rtmin() + 5, 0), None);
    }
}
