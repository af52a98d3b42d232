//! The completion board: memory shared by the master and its task workers,
//! where a task worker posts "finished" for a task whose result nobody
//! waits for (one a client submitted with `TaskClient::task()`), instead of
//! writing a report to the master. Writing that report woke the master once
//! per task, and on a machine whose idle vCPUs halt that wakeup cost more
//! than the rest of the round trip; the master now reads the board whenever
//! it is awake anyway and about to decide something that depends on which
//! workers are free.
//!
//! When the master is waiting for a worker to become free (tasks are
//! queued), it raises the board's `listening` flag, and a worker that posts
//! while the flag is up also sends its report, which wakes the master as
//! before. The flag and the posts are ordered by sequentially consistent
//! fences on both sides (the worker posts, then reads the flag; the master
//! raises the flag, then reads the posts), so at least one of the two sees
//! the other: a completion can be read late, never lost.
//!
//! The mapping is anonymous and shared, created before the manager is
//! forked, so the master, the manager and every worker incarnation forked
//! since see the same pages. A crashed worker's posts stay readable, so a
//! task it finished is not run again.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Places per task worker: how many of one worker's unfinished tasks can be
/// settled through the board at once. A task sent while all its worker's
/// places are taken reports through the socket, as every task used to.
pub const PLACES: usize = 64;

/// One task's place. `id` holds the master's task id plus one, so that the
/// zeroed page reads as "nothing posted".
#[repr(C)]
struct Place {
    id: AtomicU64,
    run_us: AtomicU32,
}

/// The flag sits on its own cache line, away from the places workers write.
#[repr(C, align(64))]
struct Header {
    listening: AtomicBool,
}

/// A shared mapping of `Header` followed by `PLACES` places per task worker.
#[derive(Debug)]
pub struct Board {
    base: NonNull<u8>,
    len: usize,
    workers: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Board {}
// SAFETY: as above.
unsafe impl Sync for Board {}

impl Board {
    /// Maps a board for `task_workers` task workers. Call it before forking
    /// the processes that must share it.
    pub fn new(task_workers: usize) -> io::Result<Board> {
        let len =
            std::mem::size_of::<Header>() + task_workers * PLACES * std::mem::size_of::<Place>();
        let size = NonZeroUsize::new(len).expect("the header is never empty");
        // SAFETY: a fresh anonymous mapping aliases no Rust object.
        let base = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Board {
            base: base.cast(),
            len,
            workers: task_workers,
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a zero-initialised Header, whose
        // only field is an atomic.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    fn place(&self, worker: usize, index: u8) -> &Place {
        let index = usize::from(index);
        assert!(
            worker < self.workers && index < PLACES,
            "board place out of range"
        );
        let offset = std::mem::size_of::<Header>()
            + (worker * PLACES + index) * std::mem::size_of::<Place>();
        // SAFETY: in bounds (asserted above), suitably aligned (the header
        // is 64 bytes and places are 16), and only accessed atomically.
        unsafe { self.base.add(offset).cast::<Place>().as_ref() }
    }

    /// Master: whether task workers should also report completions through
    /// the socket (raise it while tasks wait for a free worker). Read the
    /// board after raising it: a post made just before was not reported.
    pub fn listen(&self, on: bool) {
        self.header().listening.store(on, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Master: how long task `id` ran, if the worker posted it finished at
    /// `index`.
    pub fn posted(&self, worker: usize, index: u8, id: u64) -> Option<u32> {
        let place = self.place(worker, index);
        (place.id.load(Ordering::Acquire) == id.wrapping_add(1))
            .then(|| place.run_us.load(Ordering::Relaxed))
    }

    /// Worker: task `id`, sent with place `index`, finished after `run_us`
    /// µs. Returns whether the master is listening, in which case the
    /// worker must also send its report.
    pub fn post(&self, worker: usize, index: u8, id: u64, run_us: u32) -> bool {
        let place = self.place(worker, index);
        place.run_us.store(run_us, Ordering::Relaxed);
        place.id.store(id.wrapping_add(1), Ordering::Release);
        fence(Ordering::SeqCst);
        self.header().listening.load(Ordering::SeqCst)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length and no
        // reference into it outlives `self`.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_read_for_its_own_task_only() {
        let board = Board::new(2).unwrap();
        assert_eq!(
            board.posted(1, 3, 0),
            None,
            "a fresh board holds nothing, not task 0"
        );
        assert!(!board.post(1, 3, 0, 17));
        assert_eq!(board.posted(1, 3, 0), Some(17));
        assert_eq!(
            board.posted(1, 3, 1),
            None,
            "another task in the same place"
        );
        assert_eq!(board.posted(0, 3, 0), None, "another worker's place");
        board.listen(true);
        assert!(
            board.post(0, 63, 9, 1),
            "a listening master must also be told"
        );
    }

    #[test]
    fn a_forked_worker_posts_where_the_parent_reads() {
        let board = Board::new(1).unwrap();
        // SAFETY: the test thread forks a child that only posts and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                board.post(0, 5, 42, 7);
                // Leave without running the parent's test harness.
                crate::process::exit::now(0)
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(board.posted(0, 5, 42), Some(7));
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_place_beyond_the_board_is_refused() {
        Board::new(1).unwrap().posted(1, 0, 0);
    }
}
