//! Per-process timers behind `tick()`, `after()` and `clearTimer()`. They
//! live in the worker's event loop (which sleeps until the next deadline), so
//! no thread and no signal is involved and callbacks run on the PHP thread.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    every: Option<Duration>,
}

/// A set of one-shot and periodic timers keyed by id (from 1, as Swoole).
#[derive(Debug, Default)]
pub struct Timers {
    next_id: u64,
    due: BTreeSet<(Instant, u64)>,
    entries: HashMap<u64, Entry>,
}

impl Timers {
    /// Adds a timer firing after `delay`, then every `every` if given.
    pub fn add(&mut self, now: Instant, delay: Duration, every: Option<Duration>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let at = now + delay;
        self.entries.insert(id, Entry { at, every });
        self.due.insert((at, id));
        id
    }

    /// Removes a timer; false when it does not exist (already fired or cleared).
    pub fn clear(&mut self, id: u64) -> bool {
        match self.entries.remove(&id) {
            Some(e) => {
                self.due.remove(&(e.at, id));
                true
            }
            None => false,
        }
    }

    /// When the event loop must wake up next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes one timer due at `now`: one-shots are removed, periodic timers
    /// rescheduled from their previous deadline (no drift).
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let &(at, id) = self.due.first()?;
        if at > now {
            return None;
        }
        self.due.remove(&(at, id));
        let entry = self.entries.get_mut(&id)?;
        match entry.every {
            Some(every) => {
                let mut next = at + every;
                if next <= now {
                    next = now + every;
                }
                entry.at = next;
                self.due.insert((next, id));
            }
            None => {
                self.entries.remove(&id);
            }
        }
        Some(id)
    }

    /// Live timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_shot_fires_once_in_deadline_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let late = t.add(t0, 20 * MS, None);
        let early = t.add(t0, 10 * MS, None);
        assert_eq!((early, late), (2, 1));
        assert_eq!(t.next_deadline(), Some(t0 + 10 * MS));
        assert_eq!(t.pop_due(t0 + 5 * MS), None);
        assert_eq!(t.pop_due(t0 + 25 * MS), Some(early));
        assert_eq!(t.pop_due(t0 + 25 * MS), Some(late));
        assert_eq!(t.pop_due(t0 + 25 * MS), None);
        assert!(t.is_empty());
    }

    #[test]
    fn periodic_reschedules_without_drift_and_clears() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let id = t.add(t0, 10 * MS, Some(10 * MS));
        assert_eq!(t.pop_due(t0 + 11 * MS), Some(id));
        assert_eq!(t.next_deadline(), Some(t0 + 20 * MS));
        assert_eq!(t.pop_due(t0 + 100 * MS), Some(id));
        assert_eq!(t.next_deadline(), Some(t0 + 110 * MS));
        assert!(t.clear(id));
        assert!(!t.clear(id));
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.len(), 0);
    }
}
