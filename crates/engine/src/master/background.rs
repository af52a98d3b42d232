//! The master's background tasks, each asleep until its notification or
//! deadline: the group committer, the scheduler of delayed tasks and
//! timeouts, the heartbeat check, the memory trimmer and the history
//! sampler.

use std::cell::RefCell;
use std::rc::Rc;

use super::hub::Hub;
use crate::log::Level;

/// Closes sessions idle longer than `idle` seconds every `interval` seconds.
pub async fn heartbeat(hub: Rc<RefCell<Hub>>, interval: u64, idle: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval.max(1)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut hub = hub.borrow_mut();
        for fd in hub.idle_sessions(idle as f64) {
            crate::log!(
                Level::Notice,
                "session #{fd} idle for {idle}s; closed by heartbeat check"
            );
            hub.close_session(fd);
        }
    }
}

/// Records the task counters in the hub's history every
/// `history::INTERVAL_SECS`, for the status page's charts; runs only with
/// `metrics_listen`, the one place the history is read from.
pub async fn sampler(hub: Rc<RefCell<Hub>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(
        super::history::INTERVAL_SECS,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.borrow_mut().sample_history();
    }
}

/// Group commit: runs after the tasks that queued work in this turn of the
/// event loop, so one durable write covers every submission they made; the
/// store's writer thread ([`crate::committer`]) wakes it again when such a
/// write is done, to acknowledge it and send what gathered meanwhile.
/// While a commit waits for its sync (finished tasks only), it comes back
/// within [`crate::store::SYNC_WITHIN`] to give it, work or not.
/// Only with a task_store: in memory there is nothing to make durable, and
/// submissions are acknowledged at once.
pub async fn committer(hub: Rc<RefCell<Hub>>) {
    let notify = hub.borrow().commit_needed();
    loop {
        if hub.borrow().unsynced() {
            let _ = tokio::time::timeout(crate::store::SYNC_WITHIN, notify.notified()).await;
        } else {
            notify.notified().await;
        }
        tokio::task::yield_now().await;
        hub.borrow_mut().commit();
    }
}

/// Least time between two trims: a trim walks the allocator's free lists,
/// so a stream of large drains costs at most a few trims a second.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Hands memory freed by a large drain (a deep queue run down, a backed-up
/// outbox written) back to the system. glibc keeps freed heap memory for
/// reuse and only returns what lies at the top of the heap, so without
/// this the master would stay at its high-water mark for good.
pub async fn trimmer(trim: Rc<tokio::sync::Notify>) {
    loop {
        trim.notified().await;
        crate::memory::release_free_and_cached_memory();
        tokio::time::sleep(TRIM_INTERVAL).await;
    }
}

/// Wakes up for delayed tasks and task timeouts; sleeps otherwise (no
/// polling: it waits for the next deadline or for a change).
pub async fn scheduler(hub: Rc<RefCell<Hub>>) {
    let notify = hub.borrow().reschedule();
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
