//! Tells the large swings of the task queue from its ordinary ups and
//! downs, so the master gives memory back after the former only.

/// A swing worth a trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swing {
    /// A large backlog ran down: what its tasks held is free now.
    Drained,
    /// The queue rose by a large step: the buffers that carried the
    /// submissions (a worker's outbox, read buffers) left holes in the heap
    /// between the tasks that stay, free but kept by the allocator until a
    /// trim. Worth a trim once the rise stops, not while it goes on.
    Rose,
}

/// Watches the number of unfinished tasks for [`Swing`]s.
#[derive(Debug, Default)]
pub struct DepthWatch {
    /// Most unfinished tasks since the last drain reported.
    peak: usize,
    /// Fewest unfinished tasks since the last swing reported.
    low: usize,
}

impl DepthWatch {
    /// A drain from at least this many unfinished tasks to an eighth; a
    /// rise by at least this many.
    const LARGE: usize = 4096;
    /// Running dry after at least this many: the tail of a large drain
    /// (what followed its report) is given back too, while a queue that
    /// never holds more than a few tasks never reports.
    const TAIL: usize = 64;

    /// Records the current number of unfinished tasks; the swing it
    /// completes, if any.
    pub fn note(&mut self, depth: usize) -> Option<Swing> {
        let swing = if self.drained(depth) {
            Some(Swing::Drained)
        } else if depth >= self.low + Self::LARGE {
            Some(Swing::Rose)
        } else {
            None
        };
        self.low = match swing {
            Some(_) => depth,
            None => self.low.min(depth),
        };
        swing
    }

    fn drained(&mut self, depth: usize) -> bool {
        let peak = self.peak;
        if depth > peak {
            self.peak = depth;
            return false;
        }
        let drained =
            (peak >= Self::LARGE && depth <= peak / 8) || (peak >= Self::TAIL && depth == 0);
        if drained {
            self.peak = depth;
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::{DepthWatch, Swing};

    /// Feeds `depths`; returns the indexes that reported `swing`.
    fn reports(depths: impl IntoIterator<Item = usize>, swing: Swing) -> Vec<usize> {
        let mut w = DepthWatch::default();
        depths
            .into_iter()
            .enumerate()
            .filter(|(_, d)| w.note(*d) == Some(swing))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_large_drain_reports_at_an_eighth_and_again_when_dry() {
        let up = (0..=10_000).step_by(100);
        let down = (0..=10_000).rev().step_by(100);
        let r = reports(up.chain(down), Swing::Drained);
        assert_eq!(r.len(), 2, "{r:?}");
    }

    #[test]
    fn a_shallow_queue_never_reports() {
        for top in [3, 60] {
            let mut w = DepthWatch::default();
            assert!((0..10_000).all(|i| w.note(i % top).is_none()));
        }
        let waves = (0..40_000).map(|i| i % 4000);
        assert!(reports(waves, Swing::Rose).is_empty(), "no step of 4,096");
    }

    #[test]
    fn running_dry_after_a_modest_backlog_reports_once() {
        assert_eq!(reports([0, 10, 100, 50, 0, 0, 0], Swing::Drained), vec![4]);
    }

    #[test]
    fn a_rise_reports_once_per_large_step() {
        let r = reports(0..=10_000, Swing::Rose);
        assert_eq!(r, [4096, 8192]);
    }

    #[test]
    fn a_rise_counts_from_the_lowest_point_since_the_last_report() {
        let mut depths: Vec<usize> = (0..=5000).collect();
        depths.extend((1000..5000).rev());
        depths.extend(1000..=6000);
        let r = reports(depths, Swing::Rose);
        assert_eq!(
            r,
            [4096, 5001 + 4000 + 4096],
            "the second from 1,000, not from 4,096"
        );
    }
}
