//! The master process: owns the listening socket, every client connection
//! and the task queue, on a single-threaded tokio runtime built only after
//! the manager was forked. It runs no PHP while serving.

mod api;
mod asks;
mod auth_gate;
mod background;
mod batches;
mod connection;
mod cross_site;
mod depth_watch;
mod history;
mod http;
mod hub;
mod link;
mod metrics;
mod name_holder;
mod outbox;
mod parking;
mod quiet_socket;
mod redis_link;
mod sessions;
mod stats;
mod status_page;
mod stop;
mod tasks;
mod waiters;
mod workers;

use std::cell::RefCell;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::rc::Rc;
use std::sync::Arc;

use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::LocalSet;

use crate::board::Board;
use crate::listener::Listener;
use crate::log::Level;
use crate::packet::PacketOptions;
use crate::queue::TaskQueue;
use crate::remote_queue::{Ledger, RemoteQueue};
use crate::supervisor::ManagerOrder;
use background::{committer, heartbeat, sampler, scheduler, trimmer};
pub use batches::{check_name as check_batch_name, BatchError};
use hub::Hub;
use redis_link::RedisLink;
pub use redis_link::{Backend, Timeouts};
pub use stats::Counters;
use stop::{begin_stop, kill_workers, reopen_logs, tell, watch_manager, Door};

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
    /// Where tasks live when not in this master (`task_backend`).
    pub backend: Option<Backend>,
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
/// the PHP thread) when a stop begins. `http` is the bound `metrics_listen`
/// socket, if any; it is served until the run ends.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cfg: MasterConfig,
    queue: (Box<dyn TaskQueue>, u64),
    listener: &Listener,
    http: Option<std::net::TcpListener>,
    ipc: StdUnixListener,
    manager: Pid,
    board: Arc<Board>,
    before_shutdown: &mut dyn FnMut(),
) -> std::io::Result<Ended> {
    let queue_next = queue.1;
    crate::memory::limit_arenas(cfg.durable);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    let (queue, ledger) = match &cfg.backend {
        Some(b) => {
            let ledger = Ledger::new(&b.consumer, cfg.untrusted.clone());
            let remote: Box<dyn TaskQueue> = Box::new(RemoteQueue::new(ledger.clone()));
            (remote, Some(ledger))
        }
        None => (queue.0, None),
    };
    let hub = Hub::new(Rc::new(cfg), queue, queue_next, board, manager, ledger);
    local.block_on(
        &runtime,
        serve(hub, listener, http, ipc, manager, before_shutdown),
    )
}

async fn serve(
    hub: Hub,
    listener: &Listener,
    http: Option<std::net::TcpListener>,
    ipc: StdUnixListener,
    manager: Pid,
    before_shutdown: &mut dyn FnMut(),
) -> std::io::Result<Ended> {
    let cfg = hub.config();
    let hub = Rc::new(RefCell::new(hub));
    if cfg.durable {
        tokio::task::spawn_local(committer(hub.clone()));
    }
    let (trim, risen) = hub.borrow().trims();
    tokio::task::spawn_local(trimmer(trim, risen));
    tokio::task::spawn_local(scheduler(hub.clone()));
    connection::spawn_lot(hub.clone(), cfg.clone())?;
    let door = Door {
        listener,
        acceptor: connection::spawn_acceptor(listener, hub.clone(), cfg.clone())?,
        hub: hub.clone(),
        cfg: cfg.clone(),
    };
    let links = link::spawn_acceptor(ipc, hub.clone())?;
    let http = http.map(|l| http::spawn(l, hub.clone())).transpose()?;
    if http.is_some() {
        tokio::task::spawn_local(sampler(hub.clone()));
    }
    let redis = cfg
        .backend
        .clone()
        .zip(hub.borrow().ledger())
        .map(|(backend, ledger)| RedisLink::spawn(hub.clone(), ledger, backend));
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
    if let Some(http) = &http {
        http.abort();
    }
    // Every worker has exited; what they wrote last (results, `Done`) may
    // still be unread. Read it (each link's end also reads the completion
    // board), then commit, so that a finished task is not run again after a
    // restart.
    links.all_ended(LAST_WORDS).await;
    if cfg.durable {
        hub.borrow_mut().commit_all();
    }
    if let Some(redis) = &redis {
        redis.flush().await;
    }
    let hub = hub.borrow();
    let unfinished = hub.unfinished_tasks();
    if unfinished > 0 && !cfg.durable && cfg.backend.is_none() {
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

/// How long a stop waits for the links of exited workers to be read to
/// their end (they normally are within a loop turn).
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);
