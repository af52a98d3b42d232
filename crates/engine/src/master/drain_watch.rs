//! Tells a large drain of the task queue from its ordinary ups and downs,
//! so the master gives memory back after the former only.

/// Tells large drains of the task queue apart from ordinary ups and downs,
/// so the trimmer runs after the former only.
#[derive(Debug, Default)]
pub struct DrainWatch {
    /// Most unfinished tasks since the last drain reported.
    peak: usize,
}

impl DrainWatch {
    /// A drain from at least this many unfinished tasks to an eighth.
    const LARGE: usize = 4096;
    /// Running dry after at least this many: the tail of a large drain
    /// (what followed its report) is given back too, while a queue that
    /// never holds more than a few tasks never reports.
    const TAIL: usize = 64;

    /// Records the current number of unfinished tasks; true when that
    /// completes a drain worth a trim.
    pub fn drained(&mut self, depth: usize) -> bool {
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
    use super::DrainWatch;

    /// Feeds `depths`; returns the indexes that reported a drain.
    fn reports(depths: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let mut w = DrainWatch::default();
        depths
            .into_iter()
            .enumerate()
            .filter(|(_, d)| w.drained(*d))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_large_drain_reports_at_an_eighth_and_again_when_dry() {
        let up = (0..=10_000).step_by(100);
        let down = (0..=10_000).rev().step_by(100);
        let r = reports(up.chain(down));
        assert_eq!(r.len(), 2, "{r:?}");
    }

    #[test]
    fn a_shallow_queue_never_reports() {
        assert!(reports((0..10_000).map(|i| i % 3)).is_empty());
        assert!(reports((0..10_000).map(|i| i % 60)).is_empty());
    }

    #[test]
    fn running_dry_after_a_modest_backlog_reports_once() {
        assert_eq!(reports([0, 10, 100, 50, 0, 0, 0]), vec![4]);
    }
}
