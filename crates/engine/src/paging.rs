//! Which waiting tasks of a durable queue stay in the master's memory. With
//! a task store every waiting task is on disk already, so beyond a window
//! the master keeps only a count per priority and reads the tasks back, in
//! id order, as the workers free up: its memory stays flat however long the
//! backlog grows (issue 17 §3).
//!
//! The invariant that makes a count enough: once a priority level has tasks
//! on disk only, every later task of that level also goes to disk only,
//! until the level has been read back completely. So the on-disk tasks of a
//! level are exactly the stored records of that priority with an id from
//! the level's `from` on, runnable at once, and not waiting for one task
//! worker (those are held elsewhere, see [`crate::durable_queue`]).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::queue::QueuedTask;

/// Bytes of waiting tasks kept in memory before new ones stay on disk only.
/// Enough for tens of thousands of ordinary tasks, so a queue that is
/// drained as fast as it fills never touches the disk for reading.
pub const WINDOW_BYTES: usize = 16 * 1024 * 1024;

/// A level with tasks on disk is read back when fewer than this many of its
/// tasks are left in memory. The read runs on the store's writer thread
/// while the loop hands out what is left, so this many must last through
/// it: a few milliseconds at a full drain's rate.
pub const REFILL_BELOW: usize = 4096;

/// Stored records read per refill: one read transaction, about a
/// millisecond of decoding.
pub const PAGE_RECORDS: usize = 4096;

/// What one waiting task costs in memory beyond its payload, for the
/// budget: its packed record ([`crate::packed_fifo`], 41 bytes) and its
/// share of a chunk's unused tail, rounded up.
pub const TASK_OVERHEAD: usize = 64;

/// Tasks of one priority that are on disk only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDisk {
    /// The lowest id that may be one of them; records below it were read
    /// back or stayed in memory.
    pub from: u64,
    /// How many there are.
    pub count: usize,
}

/// The budget of tasks in memory and the levels that overflowed it.
#[derive(Debug)]
pub struct Paging {
    window: usize,
    resident: usize,
    on_disk: BTreeMap<Reverse<i32>, OnDisk>,
}

impl Paging {
    /// A budget of `window` bytes of waiting tasks.
    pub fn new(window: usize) -> Paging {
        Paging {
            window,
            resident: 0,
            on_disk: BTreeMap::new(),
        }
    }

    /// Decides where a task that just entered the store waits: true = in
    /// memory (counted against the window), false = on disk only (counted
    /// in its level). Delayed tasks always stay in memory: they are ordered
    /// by due time, not id, and a count could not say which is due.
    pub fn admit(&mut self, task: &QueuedTask) -> bool {
        if task.not_before == 0 {
            if let Some(level) = self.on_disk.get_mut(&Reverse(task.priority)) {
                level.count += 1;
                return false;
            }
            if self.resident + cost(task.payload.data.len()) > self.window {
                self.on_disk.insert(
                    Reverse(task.priority),
                    OnDisk {
                        from: task.id,
                        count: 1,
                    },
                );
                return false;
            }
        }
        self.entered(task);
        true
    }

    /// A task entered memory other than through [`Paging::admit`] (given
    /// back by a worker, read back from disk, retried by an operator).
    pub fn entered(&mut self, task: &QueuedTask) {
        self.resident += cost(task.payload.data.len());
    }

    /// A task came back from disk, with a payload of `len` bytes.
    pub fn read_back(&mut self, len: usize) {
        self.resident += cost(len);
    }

    /// A task left memory (handed to a worker).
    pub fn left(&mut self, task: &QueuedTask) {
        self.resident = self.resident.saturating_sub(cost(task.payload.data.len()));
    }

    /// Tasks on disk only, in all levels.
    pub fn on_disk(&self) -> usize {
        self.on_disk.values().map(|l| l.count).sum()
    }

    /// The level to read back now, if any: the highest level with tasks on
    /// disk, once fewer than [`REFILL_BELOW`] of its tasks are in memory
    /// (`in_memory(priority)`). Lower levels wait until it is read back
    /// completely: they run after it anyway.
    pub fn to_refill(&self, in_memory: impl Fn(i32) -> usize) -> Option<(i32, OnDisk)> {
        let (&Reverse(priority), &level) = self.on_disk.first_key_value()?;
        (in_memory(priority) < REFILL_BELOW).then_some((priority, level))
    }

    /// The highest level with tasks on disk: no task of a lower priority,
    /// nor one of its own with a higher id, may run before they are read
    /// back.
    pub fn first(&self) -> Option<(i32, OnDisk)> {
        self.on_disk
            .first_key_value()
            .map(|(&Reverse(p), &l)| (p, l))
    }

    /// Tasks of `priority` on disk only, 0 for a level without any.
    pub fn count(&self, priority: i32) -> usize {
        self.on_disk.get(&Reverse(priority)).map_or(0, |l| l.count)
    }

    /// Records a refill of `priority`: `found` of its tasks were read back,
    /// and the ones left start at `next`. `later` of the level's tasks were
    /// admitted after the read began, so the read could not see them. With
    /// `exhausted` (the read found no records from `next` on) the level is
    /// done but for those, whatever its count says, so a miscount can never
    /// make the queue look runnable for good. Returns how many tasks the
    /// count said were left but were not found.
    pub fn refilled(
        &mut self,
        priority: i32,
        found: usize,
        next: u64,
        exhausted: bool,
        later: usize,
    ) -> usize {
        let key = Reverse(priority);
        let Some(level) = self.on_disk.get_mut(&key) else {
            return 0;
        };
        level.count = level.count.saturating_sub(found);
        level.from = next;
        let missing = match exhausted {
            true => level.count.saturating_sub(later),
            false => 0,
        };
        level.count -= missing;
        if level.count == 0 {
            self.on_disk.remove(&key);
        }
        missing
    }
}

/// What a waiting task with a payload of `len` bytes counts against the
/// window.
fn cost(len: usize) -> usize {
    len + TASK_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::task;

    fn sized(id: u64, priority: i32) -> QueuedTask {
        QueuedTask {
            priority,
            ..task(id)
        }
    }

    #[test]
    fn tasks_stay_in_memory_until_the_window_is_full() {
        let one = cost(task(0).payload.data.len());
        let mut p = Paging::new(3 * one);
        assert!((0..3).all(|i| p.admit(&task(i))));
        assert!(!p.admit(&task(3)));
        assert_eq!(p.on_disk(), 1);
        p.left(&task(0));
        assert!(
            !p.admit(&task(4)),
            "room again, but the level has tasks on disk: order first"
        );
        assert_eq!(p.on_disk(), 2);
    }

    #[test]
    fn a_delayed_task_always_stays_in_memory() {
        let mut p = Paging::new(0);
        assert!(!p.admit(&task(1)));
        let delayed = QueuedTask {
            not_before: 5,
            ..task(2)
        };
        assert!(p.admit(&delayed));
        assert_eq!(p.on_disk(), 1);
    }

    #[test]
    fn the_highest_level_on_disk_is_refilled_when_it_runs_low() {
        let mut p = Paging::new(0);
        assert!(!p.admit(&sized(10, 0)));
        assert!(!p.admit(&sized(11, 5)));
        assert!(!p.admit(&sized(12, 5)));
        assert_eq!(p.to_refill(|_| REFILL_BELOW), None, "enough in memory");
        let (prio, level) = p.to_refill(|_| 0).unwrap();
        assert_eq!((prio, level), (5, OnDisk { from: 11, count: 2 }));
        assert_eq!(p.first(), Some((5, OnDisk { from: 11, count: 2 })));
        assert_eq!(p.refilled(5, 1, 12, false, 0), 0);
        assert_eq!(p.to_refill(|_| 0), Some((5, OnDisk { from: 12, count: 1 })));
        assert_eq!(p.refilled(5, 1, 13, false, 0), 0);
        assert_eq!(p.to_refill(|_| 0), Some((0, OnDisk { from: 10, count: 1 })));
    }

    #[test]
    fn a_level_whose_records_ran_out_is_dropped_and_reports_the_missing() {
        let mut p = Paging::new(0);
        for id in 0..3 {
            assert!(!p.admit(&task(id)));
        }
        assert_eq!(p.refilled(0, 1, 99, true, 0), 2);
        assert_eq!(p.on_disk(), 0);
        assert_eq!(p.to_refill(|_| 0), None);
        assert!(!p.admit(&task(100)), "the window is still 0");
        assert_eq!(p.to_refill(|_| 0).unwrap().1.from, 100);
    }

    #[test]
    fn tasks_admitted_while_a_read_ran_outlive_its_end_of_records() {
        let mut p = Paging::new(0);
        for id in 0..3 {
            assert!(!p.admit(&task(id)));
        }
        let issued = p.count(0);
        for id in 3..5 {
            assert!(!p.admit(&task(id)));
        }
        let later = p.count(0) - issued;
        assert_eq!(
            p.refilled(0, 2, 3, true, later),
            1,
            "one of the first three was not found"
        );
        assert_eq!(p.on_disk(), 2, "the two admitted later are still there");
        assert_eq!(p.to_refill(|_| 0), Some((0, OnDisk { from: 3, count: 2 })));
        assert_eq!(p.refilled(0, 2, 5, true, 0), 0);
        assert_eq!(p.first(), None);
    }
}
