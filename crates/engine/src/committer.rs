//! The task store's writer thread. A group commit waits for its fsync
//! (100–300 µs on a VM's disk); on the master's event loop that wait stopped
//! everything else, so submissions that arrived during it waited for the
//! next turn's commit. Here the loop hands a turn's batch over and goes on
//! reading; the next batch gathers everything that arrived during the sync
//! and goes out as soon as this one is done (issue 17 §4).
//!
//! One commit is in flight at a time, so batches reach the disk in the
//! order they were made. Every commit here is synced: it is what clients
//! wait for.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::store::{Batch, StoreError, TaskStore};

/// Called on the writer thread after each commit, to wake the event loop
/// that waits for it.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The store both threads use: the writer commits, the event loop reads
/// (paging, failed tasks) and makes the few writes of its own only once no
/// commit is in flight.
pub type SharedStore = Arc<Mutex<TaskStore>>;

/// Locks the store; a panic on the other thread does not make it unusable.
pub fn lock(store: &SharedStore) -> MutexGuard<'_, TaskStore> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A commit the writer finished.
pub struct Done {
    /// The batch's number, as handed to [`Committer::send`].
    pub generation: u64,
    /// On error nothing of the batch is on disk, and it comes back so its
    /// changes can go out with the next one.
    pub result: Result<(), (StoreError, Batch)>,
}

struct Job {
    generation: u64,
    batch: Batch,
}

/// The handle of the writer thread; dropping it joins the thread, so the
/// store is closed when the queue is.
pub struct Committer {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    done: crossbeam_channel::Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread. Start it in the master only, after the manager was
    /// forked (a process with threads must not fork).
    pub fn start(store: SharedStore, wake: Wake) -> std::io::Result<Committer> {
        let (jobs, inbox) = crossbeam_channel::unbounded();
        let (outbox, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("taskq-commit".into())
            .spawn(move || run(&store, &inbox, &outbox, &*wake))?;
        Ok(Committer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands `batch` to the thread; gives it back if the thread is gone.
    pub fn send(&self, generation: u64, batch: Batch) -> Result<(), Batch> {
        let Some(jobs) = &self.jobs else {
            return Err(batch);
        };
        jobs.send(Job { generation, batch })
            .map_err(|crossbeam_channel::SendError(job)| job.batch)
    }

    /// The commit that finished, if one did.
    pub fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// Waits for the commit in flight; None if the thread is gone.
    pub fn wait_done(&self) -> Option<Done> {
        self.done.recv().ok()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    store: &SharedStore,
    jobs: &crossbeam_channel::Receiver<Job>,
    done: &crossbeam_channel::Sender<Done>,
    wake: &dyn Fn(),
) {
    while let Ok(job) = jobs.recv() {
        let mut batch = job.batch;
        let result = lock(store).commit(&mut batch, true).map_err(|e| (e, batch));
        let finished = Done {
            generation: job.generation,
            result,
        };
        if done.send(finished).is_err() {
            return;
        }
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueuedTask;
    use crate::store::tests::TempDir;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn task(id: u64) -> QueuedTask {
        crate::store::tests::task(id, b"x")
    }

    fn open(dir: &TempDir) -> SharedStore {
        Arc::new(Mutex::new(TaskStore::open(&dir.0, |_| true).unwrap().0))
    }

    #[test]
    fn batches_are_committed_in_order_and_each_wakes_the_loop() {
        let dir = TempDir::new("committer");
        let store = open(&dir);
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        let committer = Committer::start(
            store.clone(),
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        let mut first = Batch::default();
        first.put(&task(1));
        first.put(&task(2));
        let mut second = Batch::default();
        second.delete(1);
        committer.send(1, first).unwrap();
        committer.send(2, second).unwrap();
        let generations: Vec<u64> = (0..2)
            .map(|_| {
                let done = committer.wait_done().unwrap();
                assert!(done.result.is_ok());
                done.generation
            })
            .collect();
        assert_eq!(generations, [1, 2]);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        let mut left = Vec::new();
        lock(&store).scan(0, 10, |t| left.push(t.id)).unwrap();
        assert_eq!(
            left,
            [2],
            "the delete of the second batch came after the put of the first"
        );
    }
}
