//! The task store's writer thread. A group commit waits for its fsync
//! (100–300 µs on a VM's disk); on the master's event loop that wait stopped
//! everything else, so submissions that arrived during it waited for the
//! next turn's commit. Here the loop hands a turn's batch over and goes on
//! reading; the next batch gathers everything that arrived during the sync
//! and goes out as soon as this one is done (issue 17 §4).
//!
//! The thread also does the store's slow work nobody waits for: removing
//! finished tasks a few thousand at a time, and reading a backlog kept on
//! disk back ([`crate::paging`]). Each costs milliseconds, and a loop busy
//! that long leaves task workers idle that it would have fed (issue 17 §3).
//!
//! One job is in flight at a time, so batches reach the disk in the order
//! they were made, and a read sees every batch before it.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::{Batch, Records, StoreError, TaskStore};

/// Called on the writer thread after each job, to wake the event loop that
/// waits for it.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The store both threads use: the writer commits and reads back, the event
/// loop reads (failed tasks) and makes the few writes of its own only once
/// no job is in flight.
pub type SharedStore = Arc<Mutex<TaskStore>>;

/// Locks the store; a panic on the other thread does not make it unusable.
pub fn lock(store: &SharedStore) -> MutexGuard<'_, TaskStore> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a job's batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// Durable when done: clients wait for it, or a sync is owed.
    Synced,
    /// [`TaskStore::commit_turn`]: a batch that only forgets finished tasks
    /// may wait for its sync.
    Turn,
}

/// Stored tasks to read back after the commit.
#[derive(Debug)]
pub struct Read {
    /// The lowest id to read.
    pub from: u64,
    /// At most this many records.
    pub limit: usize,
    /// An earlier read's records, already handed out, to read into: a
    /// drain then allocates (and faults in) its buffer once, not once per
    /// read.
    pub reuse: Option<Records>,
}

/// A batch to commit, and what to read once it is committed.
#[derive(Debug)]
pub struct Job {
    /// The batch's number, reported back in [`Done::generation`].
    pub generation: u64,
    pub batch: Batch,
    pub kind: CommitKind,
    pub read: Option<Read>,
}

/// A job the writer finished.
pub struct Done {
    /// The batch's number, as handed to [`Committer::send`].
    pub generation: u64,
    /// On error nothing of the batch is on disk, and it comes back so its
    /// changes can go out with the next one.
    pub result: Result<(), (StoreError, Batch)>,
    /// Since when the store's oldest commit without a sync waits for one.
    pub unsynced_since: Option<Instant>,
    /// What the job read; None if it asked for nothing or its commit
    /// failed (a read must see the batch's tasks).
    pub read: Option<ReadResult>,
}

/// Does `job`: on the writer thread, or on the loop when there is none.
/// A panic (a bug, in redb or here) is caught and reported as the job's
/// error, with its batch, so that the batch goes out again with the next
/// one and neither the thread nor the loop ends with it.
pub fn execute(store: &SharedStore, mut job: Job) -> Done {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| attempt(store, &mut job)));
    let store = lock(store);
    let (committed, read) =
        outcome.unwrap_or_else(|payload| (Err(store.panicked(panic_message(&*payload))), None));
    Done {
        generation: job.generation,
        result: committed.map_err(|e| (e, job.batch)),
        unsynced_since: store.unsynced_since(),
        read,
    }
}

/// What a job did: its commit, then its read. The batch is left as it was
/// unless the commit succeeded.
fn attempt(store: &SharedStore, job: &mut Job) -> (Result<(), StoreError>, Option<ReadResult>) {
    #[cfg(test)]
    if job.generation == tests::PANICS {
        panic!("a panic the test asked for");
    }
    let mut store = lock(store);
    let committed = match job.kind {
        CommitKind::Synced => store.commit(&mut job.batch, true),
        CommitKind::Turn => store.commit_turn(&mut job.batch),
    };
    let read = match (&committed, job.read.take()) {
        (Ok(()), Some(read)) => Some(store.read(read.from, read.limit, read.reuse)),
        _ => None,
    };
    (committed, read)
}

/// A read's records, or why it stopped.
type ReadResult = Result<Records, StoreError>;

/// The text a panic was raised with.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// The handle of the writer thread; dropping it joins the thread, so the
/// store is closed when the queue is.
pub struct Committer {
    jobs: Option<crossbeam_channel::Sender<Handed>>,
    done: crossbeam_channel::Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread. Start it in the master only, after the manager was
    /// forked (a process with threads must not fork). Returns once the
    /// thread has allocated, so that the malloc arena it gets is its own
    /// when it is the first thread started ([`crate::memory::limit_arenas`]).
    pub fn start(store: SharedStore, wake: Wake) -> std::io::Result<Committer> {
        let (jobs, inbox) = crossbeam_channel::unbounded();
        let (outbox, done) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("taskq-commit".into())
            .spawn(move || {
                drop(std::hint::black_box(Box::new(0u64)));
                let _ = ready_tx.send(());
                run(&store, &inbox, &outbox, &*wake)
            })?;
        let _ = ready_rx.recv();
        Ok(Committer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands `job` to the thread; gives it back if the thread is gone.
    pub fn send(&self, job: Job) -> Result<(), Box<Job>> {
        let Some(jobs) = &self.jobs else {
            return Err(Box::new(job));
        };
        jobs.send((Instant::now(), job))
            .map_err(|crossbeam_channel::SendError((_, job))| Box::new(job))
    }

    /// The job that finished, if one did; [`Ended`] if the thread is gone.
    pub fn try_done(&self) -> Result<Option<Done>, Ended> {
        match self.done.try_recv() {
            Ok(done) => Ok(Some(done)),
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(Ended),
        }
    }

    /// Waits for the job in flight; None if the thread is gone.
    pub fn wait_done(&self) -> Option<Done> {
        self.done.recv().ok()
    }
}

#[cfg(test)]
impl Committer {
    /// A committer whose thread has ended, as after a bug outside the
    /// store's code.
    pub fn ended() -> Committer {
        let (_, done) = crossbeam_channel::unbounded();
        Committer {
            jobs: None,
            done,
            thread: None,
        }
    }
}

/// The writer thread is gone, and the job it had with it.
#[derive(Debug)]
pub struct Ended;

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A job, and when the loop handed it over.
type Handed = (Instant, Job);

fn run(
    store: &SharedStore,
    jobs: &crossbeam_channel::Receiver<Handed>,
    done: &crossbeam_channel::Sender<Done>,
    wake: &dyn Fn(),
) {
    let mut pace = Pace::new(crate::ack_wait::several_cpus());
    loop {
        let since = Instant::now();
        let Some((handed, job)) = next_job(jobs, since + pace.poll_for()) else {
            return;
        };
        pace.arrived_after(handed.saturating_duration_since(since));
        if done.send(execute(store, job)).is_err() {
            return;
        }
        wake();
    }
}

/// How long the writer polls for its next job before it sleeps, while jobs
/// come that fast. Under concurrent durable submissions the loop hands the
/// next batch over a few µs after it hears the last one is done; a writer
/// asleep by then is woken by the kernel, which on a VM that halts idle
/// vCPUs costs tens of µs per commit. In alternating rounds, 8 producers'
/// acknowledged durable tasks ran at 16.2–18.5k/s with the writer sleeping
/// at once and at 18.3–20.6k/s with this poll, on no more CPU per task;
/// one producer at a time ran as before (issue 17 §4).
const POLL_FOR_NEXT: Duration = Duration::from_micros(50);

/// Whether the writer polls before it sleeps: only while each job was
/// handed over within [`POLL_FOR_NEXT`] of the end of the one before (the
/// hand-over's time, not the writer's: waking up would make every gap
/// look long), so a store that commits now and then (a slow producer, a
/// drain's lazy removals) costs one missed poll and then sleeps at once,
/// as an idle one does. On a single CPU it never polls: the loop it would
/// wait for could not run meanwhile.
#[derive(Debug)]
struct Pace {
    can_poll: bool,
    hot: bool,
}

impl Pace {
    /// A writer that has had no job yet; `can_poll` when it has a CPU of
    /// its own to poll on.
    fn new(can_poll: bool) -> Pace {
        Pace {
            can_poll,
            hot: false,
        }
    }

    /// How long to poll for the next job.
    fn poll_for(&self) -> Duration {
        match self.can_poll && self.hot {
            true => POLL_FOR_NEXT,
            false => Duration::ZERO,
        }
    }

    /// The next job was handed over `waited` after the last one ended.
    fn arrived_after(&mut self, waited: Duration) {
        self.hot = waited <= POLL_FOR_NEXT;
    }
}

/// The next job: polled for until `until`, then waited for; None once the
/// loop dropped its end of the channel.
fn next_job(jobs: &crossbeam_channel::Receiver<Handed>, until: Instant) -> Option<Handed> {
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            Err(crossbeam_channel::TryRecvError::Empty) if Instant::now() < until => {
                std::hint::spin_loop();
            }
            Err(crossbeam_channel::TryRecvError::Empty) => return jobs.recv().ok(),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::queue::QueuedTask;
    use crate::store::tests::TempDir;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A job of this generation panics in the store's code.
    pub const PANICS: u64 = 1 << 62;

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
        send_two(&committer, first, second, None);
        let generations: Vec<u64> = (0..2)
            .map(|_| {
                let done = committer.wait_done().unwrap();
                assert!(done.result.is_ok());
                done.generation
            })
            .collect();
        assert_eq!(generations, [1, 2]);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert_eq!(
            ids(&lock(&store).read(0, 10, None).unwrap()),
            [2],
            "the delete of the second batch came after the put of the first"
        );
    }

    #[test]
    fn a_read_sees_its_own_batch_and_says_where_the_table_ends() {
        let (_dir, store, committer) = started("committer-read");
        let mut first = Batch::default();
        for id in 1..=5 {
            first.put(&task(id));
        }
        let mut second = Batch::default();
        second.delete(2);
        second.put(&task(6));
        send_two(&committer, first, second, Some(read(2, 3)));
        assert!(committer.wait_done().unwrap().read.is_none());
        let done = committer.wait_done().unwrap();
        assert!(done.result.is_ok());
        assert_eq!(
            done.unsynced_since, None,
            "a batch with a new task is synced, even in a turn"
        );
        let records = done.read.unwrap().unwrap();
        assert_eq!(ids(&records), [3, 4, 5]);
        assert!(!records.exhausted, "task 6 is beyond the limit");
        let read = Read {
            from: 6,
            limit: 3,
            reuse: Some(records),
        };
        let rest = execute(
            &store,
            job(3, Batch::default(), CommitKind::Turn, Some(read)),
        );
        let rest = rest.read.unwrap().unwrap();
        assert_eq!(ids(&rest), [6], "nothing left of the records read into");
        assert!(rest.exhausted);
    }

    #[test]
    fn a_job_that_panics_gives_its_batch_back_and_the_thread_goes_on() {
        let (_dir, _, committer) = started("committer-panic");
        let mut batch = Batch::default();
        batch.put(&task(1));
        let read_all = || Some(read(0, 10));
        committer
            .send(job(PANICS, batch, CommitKind::Synced, read_all()))
            .unwrap();
        let done = committer.wait_done().unwrap();
        assert!(done.read.is_none());
        let (error, batch) = done.result.unwrap_err();
        assert!(
            matches!(&error, StoreError::Panicked { message, .. } if message == "a panic the test asked for"),
            "{error}"
        );
        assert!(error.to_string().contains("failed unexpectedly"), "{error}");
        assert_eq!(batch.len(), 1, "the batch is as it was");
        committer
            .send(job(2, batch, CommitKind::Synced, read_all()))
            .unwrap();
        let done = committer.wait_done().unwrap();
        assert!(done.result.is_ok(), "the same thread commits the next job");
        assert_eq!(ids(&done.read.unwrap().unwrap()), [1]);
    }

    #[test]
    fn a_panic_on_the_loop_is_caught_too() {
        let dir = TempDir::new("committer-panic-inline");
        let store = open(&dir);
        let mut batch = Batch::default();
        batch.put(&task(1));
        let done = execute(&store, job(PANICS, batch, CommitKind::Turn, None));
        let (error, batch) = done.result.unwrap_err();
        assert!(matches!(error, StoreError::Panicked { .. }), "{error}");
        let done = execute(&store, job(2, batch, CommitKind::Turn, Some(read(0, 10))));
        assert!(done.result.is_ok(), "the store is usable after it");
        assert_eq!(ids(&done.read.unwrap().unwrap()), [1]);
    }

    #[test]
    fn the_writer_polls_only_while_jobs_come_fast() {
        let mut pace = Pace::new(true);
        assert_eq!(
            pace.poll_for(),
            Duration::ZERO,
            "an idle writer sleeps at once"
        );
        pace.arrived_after(Duration::from_micros(10));
        assert_eq!(pace.poll_for(), POLL_FOR_NEXT);
        pace.arrived_after(POLL_FOR_NEXT);
        assert_eq!(
            pace.poll_for(),
            POLL_FOR_NEXT,
            "the window's edge still counts"
        );
        pace.arrived_after(Duration::from_millis(100));
        assert_eq!(
            pace.poll_for(),
            Duration::ZERO,
            "one slow job ends the polling"
        );
    }

    #[test]
    fn a_writer_on_a_single_cpu_never_polls() {
        let mut pace = Pace::new(false);
        pace.arrived_after(Duration::ZERO);
        assert_eq!(pace.poll_for(), Duration::ZERO);
    }

    #[test]
    fn a_job_waited_for_past_the_poll_still_arrives() {
        let (jobs, inbox) = crossbeam_channel::unbounded();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            jobs.send((
                Instant::now(),
                job(7, Batch::default(), CommitKind::Turn, None),
            ))
            .unwrap();
        });
        let (_, got) = next_job(&inbox, Instant::now()).expect("the job");
        assert_eq!(got.generation, 7);
        sender.join().unwrap();
        assert!(
            next_job(&inbox, Instant::now() + POLL_FOR_NEXT).is_none(),
            "a closed channel ends the writer, polling or not"
        );
    }

    #[test]
    fn a_thread_that_ended_says_so() {
        assert!(Committer::ended().try_done().is_err());
        assert!(Committer::ended().wait_done().is_none());
    }

    /// A fresh store in a temporary directory, with its writer thread.
    fn started(name: &str) -> (TempDir, SharedStore, Committer) {
        let dir = TempDir::new(name);
        let store = open(&dir);
        let committer = Committer::start(store.clone(), Arc::new(|| {})).unwrap();
        (dir, store, committer)
    }

    /// Up to `limit` records from `from`, into a new buffer.
    fn read(from: u64, limit: usize) -> Read {
        Read {
            from,
            limit,
            reuse: None,
        }
    }

    /// `first` as generation 1, synced, then `second` in a turn with `read`.
    fn send_two(committer: &Committer, first: Batch, second: Batch, read: Option<Read>) {
        committer
            .send(job(1, first, CommitKind::Synced, None))
            .unwrap();
        committer
            .send(job(2, second, CommitKind::Turn, read))
            .unwrap();
    }

    fn job(generation: u64, batch: Batch, kind: CommitKind, read: Option<Read>) -> Job {
        Job {
            generation,
            batch,
            kind,
            read,
        }
    }

    fn ids(records: &Records) -> Vec<u64> {
        let mut ids = Vec::new();
        records.each(|t| ids.push(t.id)).unwrap();
        ids
    }
}
