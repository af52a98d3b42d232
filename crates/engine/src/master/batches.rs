//! Progress of named batches ("these 10,000 emails"): a client tags its
//! tasks with a batch name, and anyone may ask how many of them are done,
//! failed or still pending, so a web page can draw a progress bar while
//! the emails go out and summarise the failures by reason at the end.
//!
//! Kept in the master's memory only: after a restart with a task store the
//! remaining tasks still run, but their batch starts over unknown.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use thiserror::Error;

/// Batches remembered at once. A new batch beyond this evicts the finished
/// batch least recently heard of; when none is finished it is refused.
pub const MAX_BATCHES: usize = 10_000;

/// Longest batch name, in bytes.
pub const MAX_NAME: usize = 128;

/// Distinct failure reasons kept per batch; further ones are counted
/// under [`OTHER_REASONS`].
const MAX_REASONS: usize = 20;

/// Where failures beyond [`MAX_REASONS`] distinct reasons are counted.
const OTHER_REASONS: &str = "(other reasons)";

/// Why a batch tag or question is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("a batch name must be 1 to {MAX_NAME} bytes of printable UTF-8, got {0}")]
    BadName(String),
    #[error("{MAX_BATCHES} unfinished batches are tracked already; wait for one to finish")]
    TooMany,
}

/// Checks a batch name from the network or PHP.
pub fn check_name(name: &str) -> Result<(), BatchError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        let shown: String = name.chars().take(40).collect();
        return Err(BatchError::BadName(format!(
            "{} bytes: {shown:?}",
            name.len()
        )));
    }
    Ok(())
}

/// One batch's counts.
#[derive(Debug, Clone)]
struct Batch {
    total: u64,
    done: u64,
    failed: u64,
    /// Failures by the first line of their error, in order of first sight.
    reasons: Vec<(String, u64)>,
    started_ms: u64,
    /// When its last task ended (or was added): the eviction order.
    touched_ms: u64,
}

impl Batch {
    fn pending(&self) -> u64 {
        self.total - self.done - self.failed
    }

    fn failure(&mut self, why: &str) {
        self.failed += 1;
        let reason = why.lines().next().unwrap_or("");
        if let Some(r) = self.reasons.iter_mut().find(|(r, _)| r == reason) {
            r.1 += 1;
        } else if self.reasons.len() < MAX_REASONS {
            self.reasons.push((reason.to_owned(), 1));
        } else if let Some(other) = self.reasons.iter_mut().find(|(r, _)| r == OTHER_REASONS) {
            other.1 += 1;
        } else {
            self.reasons.push((OTHER_REASONS.to_owned(), 1));
        }
    }
}

/// Every batch the master tracks, and which batch each unfinished task of
/// one belongs to.
#[derive(Debug, Default)]
pub struct Batches {
    named: HashMap<Arc<str>, Batch>,
    of_task: HashMap<u64, Arc<str>>,
}

impl Batches {
    /// Makes sure batch `name` (checked with [`check_name`]) can be
    /// tracked, before its task is queued: a new batch in a full table
    /// evicts the finished batch least recently heard of.
    pub fn make_room(&mut self, name: &str) -> Result<(), BatchError> {
        if self.named.contains_key(name) || self.named.len() < MAX_BATCHES {
            return Ok(());
        }
        let oldest = self
            .named
            .iter()
            .filter(|(_, b)| b.pending() == 0)
            .min_by_key(|(_, b)| b.touched_ms)
            .map(|(k, _)| k.clone())
            .ok_or(BatchError::TooMany)?;
        self.named.remove(&oldest);
        Ok(())
    }

    /// Task `id`, just queued after [`Batches::make_room`], belongs to
    /// batch `name`.
    pub fn add(&mut self, name: &str, id: u64, now_ms: u64) {
        let key = match self.named.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => Arc::from(name),
        };
        let b = self.named.entry(key.clone()).or_insert(Batch {
            total: 0,
            done: 0,
            failed: 0,
            reasons: Vec::new(),
            started_ms: now_ms,
            touched_ms: now_ms,
        });
        b.total += 1;
        b.touched_ms = now_ms;
        self.of_task.insert(id, key);
    }

    /// Task `id` ran to the end (onTask returned, or delivered its result).
    pub fn done(&mut self, id: u64, now_ms: u64) {
        if let Some(b) = self.end(id, now_ms) {
            b.done += 1;
        }
    }

    /// Task `id` was given up with error `why`.
    pub fn failed(&mut self, id: u64, why: &str, now_ms: u64) {
        if let Some(b) = self.end(id, now_ms) {
            b.failure(why);
        }
    }

    fn end(&mut self, id: u64, now_ms: u64) -> Option<&mut Batch> {
        if self.of_task.is_empty() {
            return None;
        }
        let key = self.of_task.remove(&id)?;
        let b = self.named.get_mut(&key)?;
        b.touched_ms = now_ms;
        Some(b)
    }

    /// The progress of batch `name`, or None if it is unknown (never
    /// tagged, or evicted long after it finished).
    pub fn report(&self, name: &str) -> Option<Value> {
        let b = self.named.get(name)?;
        let pending = b.pending();
        Some(json!({
            "batch": name,
            "total": b.total,
            "done": b.done,
            "failed": b.failed,
            "pending": pending,
            "started_at": b.started_ms as f64 / 1000.0,
            "finished_at": (pending == 0).then(|| b.touched_ms as f64 / 1000.0),
            "failures": b.reasons.iter().map(|(error, count)| json!({"error": error, "count": count})).collect::<Vec<_>>(),
        }))
    }

    /// The batches with tasks still pending, newest first, for the status
    /// page and `taskq watch`.
    pub fn unfinished(&self) -> Vec<Value> {
        let mut open: Vec<_> = self.named.iter().filter(|(_, b)| b.pending() > 0).collect();
        open.sort_by_key(|(_, b)| std::cmp::Reverse(b.started_ms));
        open.into_iter()
            .filter_map(|(name, _)| self.report(name))
            .collect()
    }

    /// Up to `limit` batches for the status page, the unfinished ones
    /// newest first and then the finished ones most recently finished
    /// first, and how many batches are tracked in all, so the page can say
    /// how many it leaves out.
    pub fn recent(&self, limit: usize) -> (Vec<Value>, usize) {
        let mut all: Vec<_> = self.named.iter().collect();
        all.sort_by_key(|(_, b)| {
            let open = b.pending() > 0;
            let when = if open { b.started_ms } else { b.touched_ms };
            (!open, std::cmp::Reverse(when))
        });
        let shown = all
            .into_iter()
            .take(limit)
            .filter_map(|(name, _)| self.report(name))
            .collect();
        (shown, self.named.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_counts_its_tasks_to_the_end_and_groups_failures_by_reason() {
        let mut b = Batches::default();
        for id in 1..=5 {
            b.add("mail", id, 1000);
        }
        b.add("other", 6, 1000);
        b.done(1, 2000);
        b.done(1, 2000);
        b.failed(2, "550 no such user\n#0 trace", 2100);
        b.failed(3, "550 no such user", 2200);
        b.done(99, 2300);
        let r = b.report("mail").unwrap();
        assert_eq!(
            (&r["total"], &r["done"], &r["failed"], &r["pending"]),
            (&json!(5), &json!(1), &json!(2), &json!(2))
        );
        assert_eq!(
            r["failures"],
            json!([{"error": "550 no such user", "count": 2}])
        );
        assert_eq!(r["finished_at"], Value::Null);
        b.done(4, 2400);
        b.done(5, 2500);
        let r = b.report("mail").unwrap();
        assert_eq!((&r["pending"], &r["finished_at"]), (&json!(0), &json!(2.5)));
        assert_eq!(b.unfinished().len(), 1, "only 'other' is still open");
        assert!(b.report("nope").is_none());
    }

    #[test]
    fn reasons_beyond_the_bound_are_counted_together() {
        let mut b = Batches::default();
        for id in 0..30 {
            b.add("x", id, 0);
            b.failed(id, &format!("reason {id}"), 1);
        }
        let r = b.report("x").unwrap();
        let failures = r["failures"].as_array().unwrap();
        assert_eq!(failures.len(), MAX_REASONS + 1);
        assert_eq!(
            failures[MAX_REASONS],
            json!({"error": OTHER_REASONS, "count": 10})
        );
        assert_eq!(r["failed"], json!(30));
    }

    #[test]
    fn a_full_table_evicts_the_oldest_finished_batch_or_refuses() {
        let mut b = Batches::default();
        for i in 0..MAX_BATCHES as u64 {
            b.make_room(&format!("b{i}")).unwrap();
            b.add(&format!("b{i}"), i, i);
        }
        assert_eq!(b.make_room("new"), Err(BatchError::TooMany));
        assert_eq!(b.make_room("b5"), Ok(()), "a known batch needs no room");
        b.done(7, 60_000);
        b.done(3, 70_000);
        b.make_room("new").unwrap();
        b.add("new", 1_000_001, 80_000);
        assert!(b.report("b7").is_none(), "the least recently finished went");
        assert!(b.report("b3").is_some());
        b.add("new", 1_000_002, 80_001);
        assert_eq!(b.report("new").unwrap()["total"], json!(2));
    }

    #[test]
    fn recent_lists_unfinished_newest_first_then_finished_latest_first() {
        let mut b = Batches::default();
        for (id, name) in ["a", "b", "c", "d"].iter().enumerate() {
            b.add(name, id as u64, id as u64 * 10);
        }
        b.done(0, 100);
        b.failed(2, "boom", 90);
        let names = |v: &[Value]| -> Vec<String> {
            v.iter()
                .map(|r| r["batch"].as_str().unwrap().to_owned())
                .collect()
        };
        let (shown, total) = b.recent(10);
        assert_eq!(names(&shown), ["d", "b", "a", "c"]);
        assert_eq!(total, 4);
        let (shown, total) = b.recent(3);
        assert_eq!(names(&shown), ["d", "b", "a"]);
        assert_eq!(total, 4);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("newsletter-2026-12 #4").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        let e = check_name("a\nb").unwrap_err().to_string();
        assert!(
            e.contains("printable UTF-8") && e.contains("\"a\\nb\""),
            "{e}"
        );
    }
}
