//! `start()`: turns the calling process into the master. Daemonizes if
//! asked, forks the manager *before* the master creates any thread (a
//! multi-threaded process must never fork), writes the pid file, runs the
//! master until it stops, and cleans up.

use std::hash::{BuildHasher, Hasher};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{close, fork, getpid, getppid, ForkResult, Pid};

use crate::board::Board;
use crate::durable_queue::DurableQueue;
use crate::error::ServerError;
use crate::listener::Listener;
use crate::log::{Level, Role};
use crate::master::{self, MasterConfig};
use crate::process::daemon::daemonize;
use crate::process::identity::Identity;
use crate::process::signals::{self, StopSignalsHeld};
use crate::process::{exit, pid_file};
use crate::queue::{MemoryQueue, TaskQueue};
use crate::supervisor::{self, Exit, ManagerHooks, SupervisorSpec};
use crate::worker::WorkerSpec;

/// Everything `start()` needs beyond the listener.
#[derive(Debug, Clone)]
pub struct Launch {
    pub master: MasterConfig,
    pub max_wait_time: Duration,
    /// Grace for workers leaving on a reload before they are SIGKILLed.
    pub reload_wait_time: Duration,
    pub daemonize: bool,
    pub log_file: Option<String>,
    pub log_level: u8,
    pub pid_file: Option<String>,
    pub backlog: i32,
    /// (max_request, grace) for event workers and for task workers.
    pub max_request: (u64, u64),
    pub task_max_request: (u64, u64),
    /// Directory of the durable task store.
    pub task_store: Option<String>,
    /// Unprivileged user and group for workers.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Where the master serves its HTTP endpoints (`metrics_listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The PHP callbacks, seen from the process layer.
pub trait Hooks {
    /// In the master, once the manager is forked (onStart).
    fn master_started(&mut self, master: Pid, manager: Pid);
    /// In the master, when a stop begins (onBeforeShutdown).
    fn master_stopping(&mut self);
    /// In the master, after every worker has exited (onShutdown).
    fn master_stopped(&mut self);
    /// In the manager, before it forks workers (onManagerStart).
    fn manager_started(&mut self, master: Pid, manager: Pid);
    /// In the manager, after every worker exited (onManagerStop).
    fn manager_stopped(&mut self);
    /// In the manager, when a worker exited abnormally (onWorkerError).
    fn worker_error(&mut self, worker_id: u32, pid: i32, exit: Exit);
    /// In a freshly forked worker; returns its exit code.
    fn run_worker(&mut self, spec: WorkerSpec, master_addr: &SocketAddr, manager: Pid) -> i32;
}

/// What the calling PHP process should do after `launch` returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server ran and stopped: `start()` returns true.
    Stopped,
}

/// Runs the server. In daemon mode the original process exits here.
pub fn launch(
    cfg: Launch,
    listener: &Listener,
    hooks: &mut dyn Hooks,
) -> Result<Outcome, ServerError> {
    // Misconfiguration fails here, in the calling process, before anything
    // forks or detaches: the operator sees the exception, not a worker
    // crash loop or a daemon that cannot write its pid file.
    let identity =
        Identity::resolve(cfg.user.as_deref(), cfg.group.as_deref()).map_err(ServerError::Start)?;
    if let Some(path) = &cfg.pid_file {
        pid_file::check_writable(path)
            .map_err(|e| ServerError::Start(format!("cannot write pid_file {path}: {e}")))?;
    }
    // Bound here, before anything forks, so a busy or foreign address
    // fails start() itself; the manager closes its copy.
    let http = cfg
        .metrics_listen
        .map(|addr| {
            std::net::TcpListener::bind(addr).map_err(|e| {
                ServerError::Start(format!("cannot listen on metrics_listen {addr}: {e}"))
            })
        })
        .transpose()?;
    let exposed: Vec<String> = exposure_warning(listener, &cfg)
        .into_iter()
        .chain(http_exposure_warning(
            cfg.metrics_listen,
            cfg.master.auth_token.is_some(),
        ))
        .collect();
    let log_file = crate::log::usable_file(cfg.log_file.as_deref(), cfg.log_level);
    if cfg.daemonize {
        if !exposed.is_empty() {
            // Logs go to log_file, or nowhere, once detached: say it on the
            // terminal that started the daemon as well.
            crate::log::configure(None, cfg.log_level)
                .map_err(|e| ServerError::Start(format!("log: {e}")))?;
            for warning in &exposed {
                crate::log!(Level::Warning, "{warning}");
            }
        }
        daemonize(log_file).map_err(|e| ServerError::Start(e.to_string()))?;
    }
    crate::log::configure(log_file, cfg.log_level)
        .map_err(|e| ServerError::Start(format!("cannot open log_file: {e}")))?;
    crate::log::set_process(Role::Master, -1);
    signals::take_over();
    listener
        .set_backlog(cfg.backlog)
        .map_err(|e| ServerError::Start(format!("listen(backlog={}): {e}", cfg.backlog)))?;
    let master_pid = getpid();
    let name = format!("taskq.{}.{}", master_pid, random());
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| ServerError::Start(format!("ipc address: {e}")))?;
    let ipc = UnixListener::bind_addr(&addr)
        .map_err(|e| ServerError::Start(format!("ipc socket: {e}")))?;
    crate::one_way::set_address(addr.clone());

    // Check the store before anything forks, so a locked or damaged store
    // fails start() with no worker ever running; it is reopened below in the
    // master only, so no child inherits its lock.
    if let Some(dir) = &cfg.task_store {
        DurableQueue::open(std::path::Path::new(dir))
            .map_err(|e| ServerError::Start(e.to_string()))?;
    }
    // Mapped before the fork, so that every process of the server shares it.
    let board = Board::new(cfg.master.task_worker_num as usize)
        .map(Arc::new)
        .map_err(|e| ServerError::Start(format!("completion board: {e}")))?;
    let _held = StopSignalsHeld::hold();
    // SAFETY: no thread has been started in this process yet (the tokio
    // runtime is built after this fork), so the child is consistent.
    let manager = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // Like the main listener (see run_manager): the manager must
            // not hold the port, and never drops the listener itself.
            if let Some(http) = &http {
                let _ = close(http.as_raw_fd());
            }
            run_manager(
                &cfg, &identity, listener, &ipc, &addr, master_pid, &board, hooks,
            );
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            return Err(ServerError::Start(format!(
                "fork of the manager failed: {e}"
            )))
        }
    };
    let queue = match open_queue(cfg.task_store.as_deref()) {
        Ok(q) => q,
        Err(e) => {
            stop_manager(manager);
            return Err(e);
        }
    };
    if let Some(path) = &cfg.pid_file {
        if let Err(e) = pid_file::write(path, master_pid.as_raw()) {
            stop_manager(manager);
            return Err(ServerError::Start(format!(
                "cannot write pid_file {path}: {e}"
            )));
        }
    }
    crate::log!(
        Level::Info,
        "server started: {} worker(s), {} task worker(s), manager pid {manager}",
        cfg.master.worker_num,
        cfg.master.task_worker_num
    );
    for warning in &exposed {
        crate::log!(Level::Warning, "{warning}");
    }
    if let Some(addr) = cfg.metrics_listen {
        crate::log!(Level::Info, "metrics served on http://{addr}/metrics");
    }
    hooks.master_started(master_pid, manager);
    let result = master::run(
        cfg.master.clone(),
        queue,
        listener,
        http,
        ipc,
        manager,
        board,
        &mut || hooks.master_stopping(),
    );
    hooks.master_stopped();
    if let Some(path) = &cfg.pid_file {
        pid_file::remove(path);
    }
    listener.cleanup();
    match result {
        Ok(ended) => {
            let c = ended.counters;
            crate::log!(
                Level::Info,
                "server stopped: {} connection(s), {} message(s), {} task(s), {} refused while stopping",
                c.accept_count,
                c.request_count,
                c.task_count,
                c.refused_stopping
            );
            match ended.manager_lost {
                Some(how) => Err(ServerError::ManagerLost(how)),
                None => Ok(Outcome::Stopped),
            }
        }
        Err(e) => Err(ServerError::Start(format!("master event loop: {e}"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_manager(
    cfg: &Launch,
    identity: &Identity,
    listener: &Listener,
    ipc: &UnixListener,
    addr: &SocketAddr,
    master: Pid,
    board: &Arc<Board>,
    hooks: &mut dyn Hooks,
) -> ! {
    StopSignalsHeld::release();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if getppid() != master {
        exit::now(0);
    }
    crate::log::set_process(Role::Manager, -1);
    // The manager must not hold the port (it must be free as soon as the
    // master closes it) nor the master's IPC socket; their owners are never
    // dropped in this process, which ends with `exit::now`, so nothing
    // closes these descriptors twice.
    let _ = close(listener.as_raw_fd());
    let _ = close(ipc.as_raw_fd());
    signals::ignore(&[Signal::SIGINT, Signal::SIGQUIT]);
    let spec = SupervisorSpec {
        worker_num: cfg.master.worker_num,
        task_worker_num: cfg.master.task_worker_num,
        max_wait_time: cfg.max_wait_time,
        reload_wait_time: cfg.reload_wait_time,
        master,
    };
    let mut manager = Manager {
        cfg,
        identity,
        addr,
        board,
        master,
        manager: getpid(),
        hooks,
    };
    let code = supervisor::supervise(spec, &mut manager);
    // Skipping PHP's shutdown in the manager.
    exit::now(code)
}

/// The task queue: in memory, or durable in `task_store`. Opened in the
/// master after the manager was forked, so no other process inherits the
/// store's file lock.
fn open_queue(store: Option<&str>) -> Result<(Box<dyn TaskQueue>, u64), ServerError> {
    let Some(dir) = store else {
        return Ok((Box::new(MemoryQueue::default()), 0));
    };
    let (queue, recovery) = DurableQueue::open(std::path::Path::new(dir))
        .map_err(|e| ServerError::Start(e.to_string()))?;
    crate::log!(
        Level::Info,
        "task_store {dir}: {} unfinished task(s) recovered, {} failed task(s) kept",
        recovery.tasks,
        recovery.failed
    );
    Ok((Box::new(queue), recovery.next_id))
}

/// The warning for a server anyone on the network can use, if this is one.
fn exposure_warning(listener: &Listener, cfg: &Launch) -> Option<String> {
    let addr = listener.exposed_addr()?;
    cfg.master.auth_token.is_none().then(|| format!(
        "listening on {addr}, reachable from other hosts, without an auth_token: anyone who can connect can queue tasks (an open task server that sends email is a spam relay)"
    ))
}

/// The warning for a `metrics_listen` address other hosts can reach: the
/// option is meant for loopback, and anything else must be a choice.
fn http_exposure_warning(addr: Option<std::net::SocketAddr>, token: bool) -> Option<String> {
    let addr = addr.filter(|a| !a.ip().is_loopback())?;
    Some(if token {
        format!(
            "metrics_listen {addr} is reachable from other hosts; requests must carry the auth_token"
        )
    } else {
        format!(
            "metrics_listen {addr} is reachable from other hosts without an auth_token: anyone who can connect can read the server's metrics"
        )
    })
}

/// Stops a manager started for a server that cannot run after all.
fn stop_manager(manager: Pid) {
    let _ = supervisor::ManagerOrder::Stop.send(manager);
    let _ = nix::sys::wait::waitpid(manager, None);
}

/// The manager's side of the hooks: worker specs and the manager's events.
struct Manager<'a> {
    cfg: &'a Launch,
    identity: &'a Identity,
    addr: &'a SocketAddr,
    board: &'a Arc<Board>,
    master: Pid,
    manager: Pid,
    hooks: &'a mut dyn Hooks,
}

impl ManagerHooks for Manager<'_> {
    fn run_worker(&mut self, id: u32) -> i32 {
        let is_task = id >= self.cfg.master.worker_num;
        let (max, grace) = if is_task {
            self.cfg.task_max_request
        } else {
            self.cfg.max_request
        };
        crate::log::set_process(
            if is_task {
                Role::TaskWorker
            } else {
                Role::Worker
            },
            id as i64,
        );
        if let Err(e) = self.identity.assume() {
            crate::log!(Level::Error, "{e}");
            return 1;
        }
        let spec = WorkerSpec {
            worker_id: id,
            is_task,
            max_request: with_grace(max, grace),
            report_every_event: self.cfg.master.dispatch_mode == 3,
            board: is_task.then(|| {
                let row = (id - self.cfg.master.worker_num) as usize;
                (self.board.clone(), row)
            }),
        };
        self.hooks.run_worker(spec, self.addr, self.manager)
    }

    fn manager_start(&mut self) {
        self.hooks.manager_started(self.master, self.manager);
    }

    fn manager_stop(&mut self) {
        self.hooks.manager_stopped();
    }

    fn worker_error(&mut self, worker_id: u32, pid: i32, exit: Exit) {
        self.hooks.worker_error(worker_id, pid, exit);
    }
}

/// Swoole's max_request jitter: `max + rand(1, grace)`, so workers started
/// together do not all recycle at the same moment.
pub fn with_grace(max: u64, grace: u64) -> u64 {
    if max == 0 || grace == 0 {
        return max;
    }
    max + 1 + random() % grace
}

fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_metrics_listen_address_off_loopback_is_warned_about() {
        let at = |s: &str| Some(s.parse().unwrap());
        assert_eq!(http_exposure_warning(None, false), None);
        assert_eq!(http_exposure_warning(at("127.0.0.1:9502"), false), None);
        assert_eq!(http_exposure_warning(at("[::1]:9502"), false), None);
        assert_eq!(
            http_exposure_warning(at("0.0.0.0:9502"), false).unwrap(),
            "metrics_listen 0.0.0.0:9502 is reachable from other hosts without an auth_token: anyone who can connect can read the server's metrics"
        );
        assert!(http_exposure_warning(at("[::]:9502"), true)
            .unwrap()
            .ends_with("requests must carry the auth_token"));
    }

    #[test]
    fn grace_adds_between_one_and_grace() {
        assert_eq!(with_grace(0, 10), 0);
        assert_eq!(with_grace(100, 0), 100);
        for _ in 0..200 {
            let v = with_grace(100, 5);
            assert!((101..=105).contains(&v), "{v}");
        }
    }
}
