//! How the master stops: the door closed first, onBeforeShutdown, the
//! manager told; and what it does when the manager itself died.

use std::cell::RefCell;
use std::rc::Rc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::connection;
use super::hub::Hub;
use super::MasterConfig;
use crate::listener::Listener;
use crate::log::Level;
use crate::process::exit::Exit;
use crate::supervisor::ManagerOrder;

/// SIGKILLs every worker still connected (their manager is gone).
pub fn kill_workers(hub: &Rc<RefCell<Hub>>) {
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
pub fn reopen_logs(manager: Pid) {
    crate::log::reopen_or_warn();
    tell(manager, ManagerOrder::ReopenLogs);
}

/// What a stop closes first: the listening socket and its acceptor.
pub struct Door<'a> {
    pub listener: &'a Listener,
    pub acceptor: tokio::task::JoinHandle<()>,
    pub hub: Rc<RefCell<Hub>>,
    pub cfg: Rc<MasterConfig>,
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
pub fn begin_stop(
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
pub fn tell(manager: Pid, order: ManagerOrder) -> bool {
    order
        .send(manager)
        .map_err(|e| crate::log!(Level::Warning, "cannot signal manager {manager}: {e}"))
        .is_ok()
}

/// Resolves when the manager process has exited and been reaped, with how
/// it ended (`None` if it could not be waited for).
pub fn watch_manager(manager: Pid) -> oneshot::Receiver<Option<Exit>> {
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
