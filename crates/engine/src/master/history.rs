//! The last minutes of the master's task counters, one sample a second,
//! served as `GET /api/history` so the status page opened now draws the
//! past minutes at once, not only what happens after it was opened. The
//! ring is bounded: the oldest sample is dropped for the newest.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::metrics::Snapshot;

/// Samples kept: ten minutes at one a second.
pub const CAPACITY: usize = 600;

/// Seconds between two samples.
pub const INTERVAL_SECS: u64 = 1;

/// The counters at one moment; the page turns two neighbours into rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Unix time in seconds.
    pub time: f64,
    pub submitted: u64,
    pub finished: u64,
    pub failed: u64,
    pub retried: u64,
    pub waiting: u64,
    pub delayed: u64,
    pub running: u64,
}

impl Sample {
    /// The counters of `snapshot`, taken at `time`.
    pub fn of(time: f64, snapshot: &Snapshot) -> Self {
        Sample {
            time,
            submitted: snapshot.submitted,
            finished: snapshot.finished,
            failed: snapshot.failed,
            retried: snapshot.retried,
            waiting: snapshot.waiting,
            delayed: snapshot.delayed,
            running: snapshot.running,
        }
    }
}

/// The bounded ring of samples, oldest first.
#[derive(Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        History::with_capacity(CAPACITY)
    }
}

impl History {
    /// An empty ring keeping at most `capacity` samples (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        History {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds `sample`, dropping the oldest when the ring is full.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The `GET /api/history` body: the sampling interval and the samples
    /// as columns (`time`, `submitted`, ...), oldest first, which is
    /// smaller than one object per sample and what a chart reads.
    pub fn to_json(&self) -> Value {
        let column = |f: fn(&Sample) -> Value| self.samples.iter().map(f).collect::<Vec<_>>();
        json!({
            "interval": INTERVAL_SECS,
            "capacity": self.capacity,
            "time": column(|s| json!(s.time)),
            "submitted": column(|s| json!(s.submitted)),
            "finished": column(|s| json!(s.finished)),
            "failed": column(|s| json!(s.failed)),
            "retried": column(|s| json!(s.retried)),
            "waiting": column(|s| json!(s.waiting)),
            "delayed": column(|s| json!(s.delayed)),
            "running": column(|s| json!(s.running)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, finished: u64) -> Sample {
        Sample {
            time,
            submitted: finished + 1,
            finished,
            failed: 0,
            retried: 0,
            waiting: 1,
            delayed: 0,
            running: 0,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_in_order() {
        let mut h = History::with_capacity(3);
        for i in 0..5 {
            h.push(sample(i as f64, i));
        }
        assert_eq!(h.to_json()["finished"], json!([2, 3, 4]));
        assert_eq!(h.to_json()["time"], json!([2.0, 3.0, 4.0]));
    }

    #[test]
    fn an_empty_ring_serves_empty_columns() {
        let v = History::default().to_json();
        assert_eq!(v["capacity"], CAPACITY);
        assert_eq!(v["interval"], INTERVAL_SECS);
        assert_eq!(v["time"], json!([]));
        assert_eq!(v["waiting"], json!([]));
    }

    #[test]
    fn the_json_has_one_column_per_counter_oldest_first() {
        let mut h = History::with_capacity(2);
        h.push(sample(10.0, 1));
        h.push(sample(11.0, 4));
        h.push(sample(12.5, 9));
        let v = h.to_json();
        assert_eq!(v["time"], json!([11.0, 12.5]));
        assert_eq!(v["finished"], json!([4, 9]));
        assert_eq!(v["submitted"], json!([5, 10]));
        assert_eq!(v["waiting"], json!([1, 1]));
        for key in ["failed", "retried", "delayed", "running"] {
            assert_eq!(v[key], json!([0, 0]), "{key}");
        }
    }

    #[test]
    fn a_zero_capacity_still_keeps_the_last_sample() {
        let mut h = History::with_capacity(0);
        h.push(sample(1.0, 1));
        h.push(sample(2.0, 2));
        assert_eq!(h.to_json()["finished"], json!([2]));
    }

    #[test]
    fn a_sample_copies_the_snapshot_counters() {
        let snapshot = Snapshot {
            waiting: 3,
            delayed: 2,
            running: 1,
            submitted: 10,
            finished: 6,
            retried: 4,
            failed: 1,
            ..Snapshot::default()
        };
        let s = Sample::of(5.0, &snapshot);
        assert_eq!(
            (
                s.waiting,
                s.delayed,
                s.running,
                s.submitted,
                s.finished,
                s.retried,
                s.failed
            ),
            (3, 2, 1, 10, 6, 4, 1)
        );
    }
}
