//! The master process: owns the listening socket, every client connection
//! and the task queue, on a single-threaded tokio runtime built only after
//! the manager was forked. It runs no PHP while serving.

mod auth_gate;
mod connection;
mod hub;
mod link;
mod outbox;

use std::cell::RefCell;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::rc::Rc;
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::LocalSet;

use crate::board::Board;
use crate::listener::Listener;
use crate::log::Level;
use crate::packet::PacketOptions;
use crate::process::exit::Exit;
use crate::queue::TaskQueue;
use crate::supervisor::ManagerOrder;
pub use hub::Counters;
use hub::Hub;

/// Which optional events have PHP callbacks; the master skips the IPC for
/// events nobody listens to.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventMask {
    pub connect: bool,
    pub close: bool,
}

/// Everything the master needs from `set()`.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub worker_num: u32,
    pub task_worker_num: u32,
    pub dispatch_mode: u8,
    /// Framing for foreign (non-taskq) clients.
    pub packet: PacketOptions,
    /// Largest taskq-protocol message accepted from a client.
    pub package_max_length: usize,
    pub max_conn: usize,
    pub open_tcp_nodelay: bool,
    pub events: EventMask,
    /// Most unfinished tasks a task worker may hold at once.
    pub task_window: usize,
    /// Runs of a failing `TaskClient::task()` job before it is given up,
    /// unless the submission says otherwise.
    pub task_max_attempts: u32,
    /// Runs of a failing `$server->task()` before it is given up (1 by
    /// default: at most once, as in Swoole). A `taskwait()` task runs once.
    pub worker_task_max_attempts: u32,
    /// Backoff before the first retry; doubles for each further one.
    pub task_retry_delay_ms: u64,
    /// A task running longer is failed and its worker killed.
    pub task_timeout_ms: Option<u64>,
    /// Whether the queue has a task_store (unfinished tasks survive a stop).
    pub durable: bool,
    /// Waiting tasks at most (0 = unbounded).
    pub task_queue_max: usize,
    /// Bytes waiting for an event worker above which the master stops
    /// reading the clients whose messages go to it (`socket_buffer_size`).
    pub outbox_high_water: usize,
    /// The uid workers run as after dropping privileges (`user`); their IPC
    /// connections are accepted from it as well as from our own uid.
    pub worker_uid: Option<u32>,
    /// Shared secret taskq clients must present first.
    pub auth_token: Option<String>,
    /// How long a connection may take to present it (`auth_timeout`).
    pub auth_timeout: std::time::Duration,
    /// Connections still to present it, at most (`auth_max_pending`).
    pub auth_max_pending: usize,
    /// What task payloads from clients may hold (`task_allowed_classes`,
    /// `task_max_depth`).
    pub untrusted: crate::php_serial::Policy,
    /// A client with a partial message buffered for this long is closed.
    pub package_timeout: std::time::Duration,
    /// How long workers get to leave once their manager died, before the
    /// master SIGKILLs them (`max_wait_time`).
    pub max_wait_time: std::time::Duration,
    /// (check interval, idle limit) in seconds, when the heartbeat is on.
    pub heartbeat: Option<(u64, u64)>,
    /// For `getClientInfo()`.
    pub server_port: u16,
    pub sock_type: i64,
}

/// How the master's run ended.
#[derive(Debug)]
pub struct Ended {
    pub counters: Counters,
    /// Why the manager died, when it did: the server stopped because of it
    /// and must not exit as if an operator had stopped it.
    pub manager_lost: Option<String>,
}

/// Serves until SIGTERM/SIGINT/SIGQUIT (or the manager's death), then waits
/// for the manager to stop every worker. `before_shutdown` runs (on this,
/// the PHP thread) when a stop begins.
pub fn run(
    cfg: MasterConfig,
    queue: (Box<dyn TaskQueue>, u64),
    listener: &Listener,
    ipc: StdUnixListener,
    manager: Pid,
    board: Arc<Board>,
    before_shutdown: &mut dyn FnMut(),
) -> std::io::Result<Ended> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let hub = Hub::new(Rc::new(cfg), queue.0, queue.1, board, manager);
    local.block_on(
        &runtime,
        serve(hub, listener, ipc, manager, before_shutdown),
    )
}

async fn serve(
    hub: Hub,
    listener: &Listener,
    ipc: StdUnixListener,
    manager: Pid,
    before_shutdown: &mut dyn FnMut(),
) -> std::io::Result<Ended> {
    let cfg = hub.config();
    let hub = Rc::new(RefCell::new(hub));
    if cfg.durable {
        tokio::task::spawn_local(committer(hub.clone()));
    }
    tokio::task::spawn_local(trimmer(hub.borrow().trim.clone()));
    tokio::task::spawn_local(scheduler(hub.clone()));
    let door = Door {
        listener,
        acceptor: connection::spawn_acceptor(listener, hub.clone(), cfg.clone())?,
        hub: hub.clone(),
        cfg: cfg.clone(),
    };
    let links = link::spawn_acceptor(ipc, hub.clone())?;
    if let Some((interval, idle)) = cfg.heartbeat {
        tokio::task::spawn_local(heartbeat(hub.clone(), interval, idle));
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut rtmin = signal(SignalKind::from_raw(crate::process::signals::rtmin()))?;
    crate::process::signals::StopSignalsHeld::release();
    let mut manager_exit = watch_manager(manager);

    let mut stopping = false;
    let mut manager_lost = None;
    loop {
        tokio::select! {
            _ = term.recv() => stopping = begin_stop(stopping, &door, Some(manager), "SIGTERM received", before_shutdown),
            _ = int.recv() => stopping = begin_stop(stopping, &door, Some(manager), "SIGINT received", before_shutdown),
            _ = quit.recv() => stopping = begin_stop(stopping, &door, Some(manager), "SIGQUIT received", before_shutdown),
            _ = usr1.recv() => { tell(manager, ManagerOrder::Reload); }
            _ = usr2.recv() => { tell(manager, ManagerOrder::ReloadTaskWorkers); }
            _ = hup.recv() => reopen_logs(manager),
            _ = rtmin.recv() => reopen_logs(manager),
            ended = &mut manager_exit => {
                if !stopping {
                    let how = ended.ok().flatten().map_or("unknown status".into(), |e| format!("status={}, signal={}", e.code, e.signal));
                    crate::log!(Level::Error, "manager process exited unexpectedly ({how}); stopping the server");
                    begin_stop(false, &door, None, "the manager died", before_shutdown);
                    // Its workers leave on their own (their control line
                    // closed); those that do not are killed.
                    links.all_ended(cfg.max_wait_time).await;
                    kill_workers(&hub);
                    manager_lost = Some(how);
                }
                break;
            }
        }
    }
    door.acceptor.abort();
    // Every worker has exited; what they wrote last (results, `Done`) may
    // still be unread. Read it (each link's end also reads the completion
    // board), then commit, so that a finished task is not run again after a
    // restart.
    links.all_ended(LAST_WORDS).await;
    if cfg.durable {
        hub.borrow_mut().commit();
    }
    let hub = hub.borrow();
    let unfinished = hub.unfinished_tasks();
    if unfinished > 0 && !cfg.durable {
        crate::log!(
            Level::Warning,
            "server stopped with {unfinished} unfinished task(s) in memory; they are lost (no task_store)"
        );
    }
    Ok(Ended {
        counters: hub.counters(),
        manager_lost,
    })
}

/// SIGKILLs every worker still connected (their manager is gone).
fn kill_workers(hub: &Rc<RefCell<Hub>>) {
    for pid in hub.borrow().worker_pids() {
        crate::log!(
            Level::Warning,
            "worker (pid {pid}) did not leave within max_wait_time after the manager died; killing it"
        );
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// SIGHUP or SIGRTMIN: reopen the log file here, and have the manager do
/// it in every process.
fn reopen_logs(manager: Pid) {
    crate::log::reopen_or_warn();
    tell(manager, ManagerOrder::ReopenLogs);
}

/// Closes sessions idle longer than `idle` seconds every `interval` seconds.
async fn heartbeat(hub: Rc<RefCell<Hub>>, interval: u64, idle: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let hub = hub.borrow();
        for fd in hub.idle_sessions(idle as f64) {
            crate::log!(
                Level::Notice,
                "session #{fd} idle for {idle}s; closed by heartbeat check"
            );
            hub.close_session(fd);
        }
    }
}

/// Group commit: runs after the tasks that queued work in this turn of the
/// event loop, so one durable write covers every submission they made.
/// Only with a task_store: in memory there is nothing to make durable, and
/// submissions are acknowledged at once.
async fn committer(hub: Rc<RefCell<Hub>>) {
    let notify = hub.borrow().commit_needed.clone();
    loop {
        notify.notified().await;
        tokio::task::yield_now().await;
        hub.borrow_mut().commit();
    }
}

/// Tells large drains of the task queue apart from ordinary ups and downs,
/// so the trimmer runs after the former only.
#[derive(Debug, Default)]
pub struct DrainWatch {
    /// Most unfinished tasks since the last drain reported.
    peak: usize,
}

impl DrainWatch {
    /// A drain from at least this many unfinished tasks to an eighth.
    const LARGE: usize = 4096;
    /// Running dry after at least this many: the tail of a large drain
    /// (what followed its report) is given back too, while a queue that
    /// never holds more than a few tasks never reports.
    const TAIL: usize = 64;

    /// Records the current number of unfinished tasks; true when that
    /// completes a drain worth a trim.
    pub fn drained(&mut self, depth: usize) -> bool {
        let peak = self.peak;
        if depth > peak {
            self.peak = depth;
            return false;
        }
        let drained =
            (peak >= Self::LARGE && depth <= peak / 8) || (peak >= Self::TAIL && depth == 0);
        if drained {
            self.peak = depth;
        }
        drained
    }
}

/// How long a stop waits for the links of exited workers to be read to
/// their end (they normally are within a loop turn).
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);

/// Least time between two trims: a trim walks the allocator's free lists,
/// so a stream of large drains costs at most a few trims a second.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Hands memory freed by a large drain (a deep queue run down, a backed-up
/// outbox written) back to the system. glibc keeps freed heap memory for
/// reuse and only returns what lies at the top of the heap, so without
/// this the master would stay at its high-water mark for good.
async fn trimmer(trim: Rc<tokio::sync::Notify>) {
    loop {
        trim.notified().await;
        crate::memory::release_free_and_cached_memory();
        tokio::time::sleep(TRIM_INTERVAL).await;
    }
}

/// Wakes up for delayed tasks and task timeouts; sleeps otherwise (no
/// polling: it waits for the next deadline or for a change).
async fn scheduler(hub: Rc<RefCell<Hub>>) {
    let notify = hub.borrow().reschedule.clone();
    loop {
        let next = hub.borrow_mut().tick();
        match next {
            Some(at) => {
                let wait =
                    std::time::Duration::from_millis(at.saturating_sub(crate::queue::now_ms()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}

/// What a stop closes first: the listening socket and its acceptor.
struct Door<'a> {
    listener: &'a Listener,
    acceptor: tokio::task::JoinHandle<()>,
    hub: Rc<RefCell<Hub>>,
    cfg: Rc<MasterConfig>,
}

impl Door<'_> {
    /// New connections are refused from now on; those the kernel already
    /// completed are taken in, so what they send is refused with an answer.
    fn close(&self) {
        self.acceptor.abort();
        connection::close_door(self.listener, &self.hub, &self.cfg);
    }
}

/// Begins a stop, unless one has begun: refuse new submissions, close the
/// door, run onBeforeShutdown, tell the manager (when it lives).
fn begin_stop(
    already: bool,
    door: &Door,
    manager: Option<Pid>,
    why: &str,
    before_shutdown: &mut dyn FnMut(),
) -> bool {
    if !already {
        crate::log!(Level::Info, "{why}; stopping");
        door.hub.borrow_mut().begin_stop();
        door.close();
        before_shutdown();
        if let Some(manager) = manager {
            tell(manager, ManagerOrder::Stop);
        }
    }
    true
}

/// Sends the manager an order; false (logged) when it cannot be sent.
fn tell(manager: Pid, order: ManagerOrder) -> bool {
    order
        .send(manager)
        .map_err(|e| crate::log!(Level::Warning, "cannot signal manager {manager}: {e}"))
        .is_ok()
}

/// Resolves when the manager process has exited and been reaped, with how
/// it ended (`None` if it could not be waited for).
fn watch_manager(manager: Pid) -> oneshot::Receiver<Option<Exit>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("taskq-manager-wait".into())
        .spawn(move || {
            let ended = crate::process::exit::wait_child(Some(manager), true);
            let _ = tx.send(ended.map(|(_, exit)| exit));
        })
        .map(drop)
        .unwrap_or_else(|e| crate::log!(Level::Error, "cannot watch the manager: {e}"));
    rx
}

#[cfg(test)]
mod tests {
    use super::DrainWatch;

    /// Feeds `depths`; returns the indexes that reported a drain.
    fn reports(depths: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut w = DrainWatch::default();
        depths
            .into_iter()
            .enumerate()
            .filter(|(_, d)| w.drained(*d))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_large_drain_reports_at_an_eighth_and_again_when_dry() {
        let up = (0..=10_000).step_by(100);
        let down = (0..=10_000).rev().step_by(100);
        let r = reports(up.chain(down));
        assert_eq!(r.len(), 2, "{r:?}");
    }

    #[test]
    fn a_shallow_queue_never_reports() {
        assert!(reports((0..10_000).map(|i| i % 3)).is_empty());
        assert!(reports((0..10_000).map(|i| i % 60)).is_empty());
    }

    #[test]
    fn running_dry_after_a_modest_backlog_reports_once() {
        assert_eq!(reports([0, 10, 100, 50, 0, 0, 0]), vec![4]);
    }
}
