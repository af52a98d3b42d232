//! One reading of `GET /api/stats`, the counts the commands show, and the
//! rates per second between two readings.

use serde_json::Value;

/// The task counts of one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Server time of the reading (unix seconds).
    pub time: f64,
    /// Waiting and delayed tasks.
    pub queued: u64,
    pub running: u64,
    pub submitted: u64,
    /// Tasks whose onTask returned.
    pub done: u64,
    pub failed: u64,
    /// Failed runs scheduled to run again.
    pub retries: u64,
}

impl Sample {
    /// The counts of a `/api/stats` answer (missing ones read as 0).
    pub fn of(stats: &Value) -> Self {
        let t = &stats["tasks"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        Sample {
            time: stats["time"].as_f64().unwrap_or(0.0),
            queued: n("waiting") + n("delayed"),
            running: n("running"),
            submitted: n("submitted"),
            done: n("finished"),
            failed: n("failed"),
            retries: n("retried"),
        }
    }

    /// Tasks not finished yet.
    pub fn backlog(&self) -> u64 {
        self.queued + self.running
    }

    /// Per-second rates from `earlier` to `self`; `None` without time
    /// between them.
    pub fn rates_since(&self, earlier: &Sample) -> Option<Rates> {
        let dt = self.time - earlier.time;
        if dt <= 0.0 {
            return None;
        }
        let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        Some(Rates {
            submitted: per_s(self.submitted, earlier.submitted),
            done: per_s(self.done, earlier.done),
            failed: per_s(self.failed, earlier.failed),
        })
    }
}

/// Tasks per second between two readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub submitted: f64,
    pub done: f64,
    pub failed: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(time: f64, finished: u64, submitted: u64) -> Sample {
        Sample::of(
            &json!({"time": time, "tasks": {"waiting": 3, "delayed": 1, "running": 2,
            "submitted": submitted, "finished": finished, "failed": 1, "retried": 4}}),
        )
    }

    #[test]
    fn a_reading_counts_waiting_and_delayed_as_queued() {
        let s = at(10.0, 5, 9);
        assert_eq!((s.queued, s.running, s.done, s.retries), (4, 2, 5, 4));
        assert_eq!(s.backlog(), 6);
    }

    #[test]
    fn rates_come_from_two_readings() {
        let r = at(12.0, 25, 9).rates_since(&at(10.0, 5, 1)).unwrap();
        assert_eq!((r.done, r.submitted, r.failed), (10.0, 4.0, 0.0));
        assert_eq!(at(10.0, 5, 1).rates_since(&at(10.0, 5, 1)), None);
    }
}
