//! How a client waits for an acknowledgement it has just asked for. An ack
//! usually comes back within tens of µs, and on a VM sleeping in `read()`
//! for that long lets the vCPU halt: waking it costs about as much again,
//! on every call. So the client first polls the socket without blocking
//! for up to [`SPIN`], and sleeps only if nothing came. Spinning pays only
//! when the server answers within that time (it has a CPU to itself); when
//! it does not, as when many producers share the cores with the server, the
//! spin is skipped for a growing number of calls, so a busy machine loses
//! at most a probe now and then.

use std::time::{Duration, Instant};

/// Longest busy wait before sleeping.
pub const SPIN: Duration = Duration::from_micros(50);

/// Most calls skipped after missed spins before the next probe.
const MAX_SKIP: u32 = 256;

/// Per-connection memory of whether spinning has been paying off.
#[derive(Debug, Default)]
pub struct AckWait {
    skip: u32,
    backoff: u32,
}

impl AckWait {
    /// Whether to spin for this acknowledgement.
    pub fn should_spin(&mut self) -> bool {
        if self.skip > 0 || !several_cpus() {
            self.skip = self.skip.saturating_sub(1);
            return false;
        }
        true
    }

    /// Records whether the spin saw the answer arrive.
    pub fn record(&mut self, arrived: bool) {
        if arrived {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_SKIP);
            self.skip = self.backoff;
        }
    }

    /// Polls with `try_read` until it reports progress (`Ok(true)`), fails,
    /// or `SPIN` has passed (`Ok(false)`).
    pub fn spin(
        &mut self,
        mut try_read: impl FnMut() -> std::io::Result<bool>,
    ) -> std::io::Result<bool> {
        let start = Instant::now();
        let arrived = loop {
            if try_read()? {
                break true;
            }
            if start.elapsed() >= SPIN {
                break false;
            }
            std::hint::spin_loop();
        };
        self.record(arrived);
        Ok(arrived)
    }
}

/// Spinning on a single CPU only delays the server it waits for (here and
/// in the store's writer thread, [`crate::committer`]).
pub(crate) fn several_cpus() -> bool {
    static SEVERAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_seen_while_spinning_keeps_the_spin() {
        let mut w = AckWait::default();
        let mut polls = 0;
        let arrived = w
            .spin(|| {
                polls += 1;
                Ok(polls == 3)
            })
            .unwrap();
        assert!(arrived);
        assert_eq!(polls, 3);
        assert_eq!(w.should_spin(), several_cpus());
    }

    #[test]
    fn missed_spins_are_skipped_for_longer_and_longer_then_probed_again() {
        let mut w = AckWait::default();
        let mut skipped_runs = Vec::new();
        for _ in 0..4 {
            assert!(!w.spin(|| Ok(false)).unwrap());
            let mut skipped = 0;
            while !w.should_spin() {
                skipped += 1;
                if skipped > MAX_SKIP + 1 {
                    break;
                }
            }
            skipped_runs.push(skipped);
        }
        if several_cpus() {
            assert_eq!(skipped_runs, vec![1, 2, 4, 8]);
            w.record(true);
            assert!(w.should_spin(), "one hit and it spins again");
        }
    }

    #[test]
    fn a_failing_read_ends_the_spin_with_its_error() {
        let mut w = AckWait::default();
        let e = w
            .spin(|| Err(std::io::Error::from_raw_os_error(libc::ECONNRESET)))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    }
}
