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

/// How long the queue must stop rising before the trim a rise asked for:
/// a trim during the rise would give back pages the next submissions
/// fault in again.
const RISE_SETTLE: std::time::Duration = TRIM_INTERVAL;

/// Hands memory freed by a large drain (a deep queue run down, a backed-up
/// outbox written) back to the system, and the holes a large rise left
/// once it stopped (`risen`). glibc keeps freed heap memory for reuse and
/// only returns what lies at the top of the heap, so without this the
/// master would stay at its high-water mark for good, and 100,000 tasks
/// queued through `send()` held 45–96 B each beyond their payload instead
/// of 46–49 (issue 17 §3).
pub async fn trimmer(trim: Rc<tokio::sync::Notify>, risen: Rc<tokio::sync::Notify>) {
    trim_on(&trim, &risen, crate::memory::release_free_and_cached_memory).await;
}

/// [`trimmer`], with what a trim does.
async fn trim_on(trim: &tokio::sync::Notify, risen: &tokio::sync::Notify, release: impl Fn()) {
    loop {
        tokio::select! {
            () = trim.notified() => {}
            () = risen.notified() => loop {
                tokio::select! {
                    () = trim.notified() => break,
                    () = risen.notified() => {}
                    () = tokio::time::sleep(RISE_SETTLE) => break,
                }
            },
        }
        release();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Runs the trimmer beside `script` with paused time; returns when each
    /// trim happened, in ms from the start.
    fn trims_during(script: impl AsyncFnOnce(&Notify, &Notify)) -> Vec<u128> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (trim, risen) = (Notify::new(), Notify::new());
            let start = tokio::time::Instant::now();
            let at = std::cell::RefCell::new(Vec::new());
            let release = || at.borrow_mut().push(start.elapsed().as_millis());
            tokio::select! {
                () = trim_on(&trim, &risen, release) => unreachable!(),
                () = script(&trim, &risen) => {}
            }
            at.take()
        })
    }

    async fn ms(n: u64) {
        tokio::time::sleep(Duration::from_millis(n)).await;
    }

    /// Notifies `times` times, `every_ms` apart (the last wait included).
    async fn ask(notify: &Notify, times: usize, every_ms: u64) {
        for _ in 0..times {
            notify.notify_one();
            ms(every_ms).await;
        }
    }

    #[test]
    fn a_rise_is_trimmed_once_it_stopped_and_only_then() {
        let trims = trims_during(async |_, risen| {
            ask(risen, 10, 50).await;
            ms(1000).await;
        });
        assert_eq!(trims, [450 + 100], "one trim, a settle after the last step");
    }

    #[test]
    fn a_drain_is_trimmed_at_once_even_during_a_rise() {
        let trims = trims_during(async |trim, risen| {
            risen.notify_one();
            ms(30).await;
            trim.notify_one();
            ms(500).await;
        });
        assert_eq!(trims, [30]);
    }

    #[test]
    fn trims_are_spaced_by_the_interval() {
        let trims = trims_during(async |trim, _| {
            ask(trim, 5, 10).await;
            ms(500).await;
        });
        assert_eq!(trims, [0, 100], "the asks during the pause make one more");
    }
}
