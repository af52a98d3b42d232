//! `$server->stats()`, the metrics' snapshot and the counters of the last
//! log line, read from the rooms that keep them: sessions, workers and
//! tasks each count their own.

use serde_json::{json, Value};

use super::metrics::Snapshot;
use super::sessions::Sessions;
use super::tasks::Tasks;
use super::workers::Workers;

/// The totals of a run, for the log line a stop ends with.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub accept_count: u64,
    pub request_count: u64,
    pub task_count: u64,
    /// Client messages and tasks refused because the server was stopping.
    pub refused_stopping: u64,
}

impl Counters {
    /// The totals as the rooms hold them now.
    pub fn of(sessions: &Sessions, tasks: &Tasks) -> Self {
        let s = sessions.counters();
        Counters {
            accept_count: s.accept_count,
            request_count: s.request_count,
            task_count: tasks.counters().task_count,
            refused_stopping: s.refused_stopping,
        }
    }
}

/// Swoole's `stats()` keys, plus taskq's queue depth, and with a Redis
/// backend the whole queue's as Redis last counted it (every server's
/// tasks, not only this one's). `tasks` must have settled the completion
/// board first, so busy and idle counts are current.
pub fn stats(start_time: u64, sessions: &Sessions, workers: &Workers, tasks: &Tasks) -> Value {
    let mut stats = local(start_time, sessions, workers, tasks);
    let counted = tasks.backend_counted();
    if let (Some((q, at_ms)), Some(map)) = (counted, stats.as_object_mut()) {
        for (key, n) in [
            ("backend_queued_num", q.queued),
            ("backend_pending_num", q.pending),
            ("backend_delayed_num", q.delayed),
            ("backend_failed_num", q.failed),
        ] {
            map.insert(key.into(), n.into());
        }
        map.insert("backend_counted_at".into(), (at_ms as f64 / 1000.0).into());
    }
    stats
}

fn local(start_time: u64, sessions: &Sessions, workers: &Workers, tasks: &Tasks) -> Value {
    let s = sessions.counters();
    let t = tasks.counters();
    json!({
        "start_time": start_time,
        "connection_num": sessions.len(),
        "abort_count": s.abort_count,
        "accept_count": s.accept_count,
        "close_count": s.close_count,
        "worker_num": workers.event_workers(),
        "task_worker_num": workers.task_workers(),
        "user_worker_num": 0,
        "idle_worker_num": workers.idle_event_workers(),
        "dispatch_count": workers.dispatched(),
        "request_count": s.request_count,
        "response_count": s.response_count,
        "total_recv_bytes": s.total_recv_bytes,
        "total_send_bytes": s.total_send_bytes,
        "session_round": sessions.opened(),
        "task_idle_worker_num": tasks.idle_workers(),
        "tasking_num": tasks.unfinished(),
        "task_count": t.task_count,
        "task_queue_num": tasks.queued(),
        "task_running_num": tasks.running(),
        "task_requeued_count": t.requeued_tasks,
        "task_failed_count": t.failed_tasks,
    })
}

/// The counts the metrics show, from the same rooms as [`stats`]. `tasks`
/// must have settled the completion board first.
pub fn snapshot(sessions: &Sessions, workers: &Workers, tasks: &Tasks) -> Snapshot {
    let s = sessions.counters();
    let t = tasks.counters();
    let delayed = tasks.delayed();
    Snapshot {
        waiting: tasks.queued().saturating_sub(delayed) as u64,
        delayed: delayed as u64,
        running: tasks.running() as u64,
        submitted: t.task_count,
        finished: t.finished_tasks,
        retried: t.retried_tasks,
        requeued: t.requeued_tasks,
        failed: t.failed_tasks,
        connections: sessions.len() as u64,
        accepted: s.accept_count,
        received_bytes: s.total_recv_bytes,
        sent_bytes: s.total_send_bytes,
        worker_restarts: workers.restarts(),
        mail: workers.mail(),
        backend: tasks.backend_counted().map(|(q, _)| q),
    }
}
