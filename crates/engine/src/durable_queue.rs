//! The embedded queue with durability: the in-memory queue decides what runs
//! next, and every change is mirrored into the on-disk store, committed once
//! per event-loop turn (group commit) before submissions are acknowledged:
//! on the loop when one client waits, otherwise on the store's writer
//! thread ([`crate::committer`]), so that the next turns gather behind its
//! sync; the writer also removes finished tasks, a few thousand at a time.
//! After a crash, the store gives back every task that had not finished.
//! A backlog beyond [`paging::WINDOW_BYTES`] waits on disk only and is read
//! back ahead of the workers, on the writer thread ([`crate::paging`]).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::committer::{self, CommitKind, Committer, Done, Ended, Job, Read, SharedStore, Wake};
use crate::failed::{FailedTask, Which};
use crate::log::Level;
use crate::paging::{self, Paging};
use crate::queue::{now_ms, FailedStore, MemoryQueue, QueueError, QueuedTask, TaskQueue};
use crate::store::{Batch, Records, StoreError, TaskStore, SYNC_WITHIN};

/// Finished tasks removed from the store per commit while a drain runs
/// (see [`TaskQueue::commit_turn`]): each commit has a fixed cost, and
/// removing a run of ids rewrites each page once.
pub const DELETE_BATCH: usize = 8192;

/// [`MemoryQueue`] backed by a [`TaskStore`].
pub struct DurableQueue {
    mem: MemoryQueue,
    store: SharedStore,
    /// The writer thread ([`DurableQueue::writer`]).
    committer: Option<Committer>,
    wake: Option<Wake>,
    /// The changes since the last commit; their generation is `generation`.
    batch: Batch,
    generation: u64,
    /// Whether the writer has a job (its batch is the one before
    /// `generation`).
    in_flight: bool,
    /// The read back that job makes, if it makes one.
    reading: Option<Reading>,
    /// Whether a read brought tasks back since [`TaskQueue::refilled`].
    refilled: bool,
    /// The last read's records, handed out: the next read fills them.
    /// Dropped once the backlog is read back, so a drained queue does not
    /// keep them.
    spare: Option<Records>,
    /// Commits ended and not yet reported by [`TaskQueue::settled`].
    settled: Vec<(u64, Result<(), QueueError>)>,
    /// Since when a commit made without a sync waits for one (the store
    /// knows too, but asking it waits for a commit in flight).
    unsynced_since: Option<Instant>,
    paging: Paging,
    /// Tasks waiting for one task worker ([`TaskQueue::hold`]): stored like
    /// the others but never read back from disk into the shared queue.
    held: HashSet<u64>,
    /// Held tasks that ended while a read was in flight: it may still have
    /// found their records.
    released: HashSet<u64>,
}

/// A read back in flight.
#[derive(Debug, Clone, Copy)]
struct Reading {
    priority: i32,
    from: u64,
    /// The level's count on disk when it began: tasks admitted since are
    /// beyond what it can see.
    issued: usize,
}

/// What opening the store found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Unfinished tasks queued again.
    pub tasks: usize,
    /// Failed tasks kept in the store.
    pub failed: u64,
    /// First id for new tasks.
    pub next_id: u64,
}

impl DurableQueue {
    /// Opens (or creates) the store in `dir` and queues every task that was
    /// accepted but not finished when the previous server stopped or died.
    pub fn open(dir: &Path) -> Result<(DurableQueue, Recovery), StoreError> {
        Self::open_with_window(dir, paging::WINDOW_BYTES)
    }

    /// [`DurableQueue::open`] keeping at most about `window` bytes of
    /// waiting tasks in memory.
    pub fn open_with_window(
        dir: &Path,
        window: usize,
    ) -> Result<(DurableQueue, Recovery), StoreError> {
        let mut paging = Paging::new(window);
        let (store, recovered) = TaskStore::open(dir, |task| paging.admit(task))?;
        let mut mem = MemoryQueue::default();
        let tasks = recovered.tasks.len() + paging.on_disk();
        for task in recovered.tasks {
            mem.push(task);
        }
        let recovery = Recovery {
            tasks,
            failed: recovered.failed,
            next_id: recovered.next_id,
        };
        Ok((
            DurableQueue {
                mem,
                store: Arc::new(Mutex::new(store)),
                committer: None,
                wake: None,
                batch: Batch::default(),
                generation: 1,
                in_flight: false,
                reading: None,
                refilled: false,
                spare: None,
                settled: Vec::new(),
                unsynced_since: None,
                paging,
                held: HashSet::new(),
                released: HashSet::new(),
            },
            recovery,
        ))
    }

    fn store(&self) -> MutexGuard<'_, TaskStore> {
        committer::lock(&self.store)
    }

    /// Records the end of the writer's job; a failed batch's changes go
    /// out again with the next one. Returns the job's result.
    fn finished(&mut self, done: Done) -> Result<(), QueueError> {
        self.in_flight = false;
        if done.result.is_ok() {
            self.unsynced_since = match done.unsynced_since {
                None if self.batch.is_empty() => None,
                None => self.unsynced_since,
                Some(at) => Some(self.unsynced_since.map_or(at, |old| old.min(at))),
            };
        }
        let result = done.result.map_err(|(e, batch)| {
            self.batch.merge_older(batch);
            QueueError::Store(e.to_string())
        });
        self.settled.push((done.generation, result.clone()));
        if let Some(reading) = self.reading.take() {
            self.read_back(reading, done.read);
        }
        result
    }

    /// The open batch as the next job; later changes join the one after.
    fn next_job(&mut self, kind: CommitKind, read: Option<Read>) -> Job {
        let job = Job {
            generation: self.generation,
            batch: std::mem::take(&mut self.batch),
            kind,
            read,
        };
        self.generation += 1;
        job
    }

    /// Does `job` on this thread (the store's panics caught, as on the
    /// writer) and records its end.
    fn execute_here(&mut self, job: Job) -> Result<(), QueueError> {
        let done = committer::execute(&self.store, job);
        self.finished(done)
    }

    /// Hands the open batch to the writer thread, with a read to make once
    /// it is committed; does it here if there is no writer.
    fn hand_over(&mut self, kind: CommitKind, read: Option<Read>) {
        let job = self.next_job(kind, read);
        let sent = match self.writer() {
            Ok(writer) => writer
                .send(job)
                .map_err(|job| (job, "its writer thread ended".to_owned())),
            Err(e) => Err((
                Box::new(job),
                format!("cannot start its writer thread ({e})"),
            )),
        };
        match sent {
            Ok(()) => self.in_flight = true,
            Err((job, why)) => {
                self.committer = None;
                crate::log!(
                    Level::Error,
                    "task store: {why}; its work runs on the event loop"
                );
                let _ = self.execute_here(*job);
            }
        }
    }

    /// The writer thread, started on first use (never in the check
    /// `start()` makes before it forks).
    fn writer(&mut self) -> std::io::Result<&Committer> {
        match &mut self.committer {
            Some(writer) => Ok(writer),
            slot @ None => {
                let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
                Ok(slot.insert(Committer::start(self.store.clone(), wake)?))
            }
        }
    }

    /// Picks up the writer's job if it ended. Every take asks, so it asks
    /// the channel only while a job is out.
    fn poll(&mut self) {
        if !self.in_flight {
            return;
        }
        match self.committer.as_ref().map(Committer::try_done) {
            Some(Ok(None)) => {}
            Some(Ok(Some(done))) => {
                let _ = self.finished(done);
            }
            Some(Err(Ended)) | None => self.writer_ended(),
        }
    }

    /// Waits for the writer's job, so the store holds everything committed
    /// so far in order (and a read in flight is queued).
    fn wait(&mut self) {
        if !self.in_flight {
            return;
        }
        match self.committer.as_ref().and_then(Committer::wait_done) {
            Some(done) => {
                let _ = self.finished(done);
            }
            None => self.writer_ended(),
        }
    }

    /// The writer thread ended with a job out, which only a bug outside
    /// the store's code can do (the writer catches the store's panics).
    /// The job's batch went with it: its clients get an error rather than
    /// waiting for good, and the next job starts a new thread.
    fn writer_ended(&mut self) {
        self.in_flight = false;
        self.committer = None;
        self.reading = None;
        self.released.clear();
        crate::log!(
            Level::Error,
            "task store: its writer thread ended with a commit out; that commit's clients get an error"
        );
        self.settled.push((
            self.generation - 1,
            Err(QueueError::Store("the store's writer thread ended".into())),
        ));
    }

    /// Commits the open batch on this thread after the one in flight:
    /// with a sync, or as the writer would (`lazy`).
    fn flush(&mut self, lazy: bool) -> Result<(), QueueError> {
        self.wait();
        if self.batch.is_empty() && (lazy || self.unsynced_since.is_none()) {
            return Ok(());
        }
        let kind = match lazy {
            true => CommitKind::Turn,
            false => CommitKind::Synced,
        };
        let job = self.next_job(kind, None);
        self.execute_here(job)
    }

    /// Starts reading back the level [`Paging::to_refill`] names (with
    /// `now`, the first level on disk whatever memory holds), on the writer
    /// thread and after the open batch (a read must see every task stored
    /// so far): the loop goes on handing out what memory holds.
    fn read_ahead(&mut self, now: bool) {
        if self.in_flight {
            return;
        }
        let level = match now {
            true => self.paging.first(),
            false => self.paging.to_refill(|p| self.mem.ready_at(p)),
        };
        let Some((priority, level)) = level else {
            return;
        };
        self.reading = Some(Reading {
            priority,
            from: level.from,
            issued: level.count,
        });
        let read = Read {
            from: level.from,
            limit: paging::PAGE_RECORDS,
            reuse: self.spare.take(),
        };
        self.hand_over(CommitKind::Turn, Some(read));
    }

    /// Queues what a read found. A failure is logged; what was read before
    /// it is queued and the rest stays on disk: the next take tries again,
    /// and a restart would recover them. Without a result (its batch's
    /// commit failed) the level stays as it was.
    fn read_back(&mut self, reading: Reading, read: Option<Result<Records, StoreError>>) {
        let released = std::mem::take(&mut self.released);
        let Some(read) = read else { return };
        let Reading {
            priority,
            from,
            issued,
        } = reading;
        let (mut found, mut next) = (0, from);
        let (held, mem, pages) = (&self.held, &mut self.mem, &mut self.paging);
        let walked = read.and_then(|records| {
            let walked = records.each(|t| {
                next = t.id.saturating_add(1);
                let runnable = t.priority == priority && t.not_before == 0;
                if runnable && !held.contains(&t.id) && !released.contains(&t.id) {
                    pages.read_back(t.payload.data.len());
                    mem.push_stored(t);
                    found += 1;
                }
            });
            let exhausted = records.exhausted;
            self.spare = Some(records);
            walked.map(|()| exhausted)
        });
        let exhausted = walked.unwrap_or_else(|e| {
            crate::log!(Level::Error, "task store: reading queued tasks back: {e}");
            false
        });
        self.refilled |= found > 0;
        let later = self.paging.count(priority).saturating_sub(issued);
        let missing = self
            .paging
            .refilled(priority, found, next, exhausted, later);
        if missing > 0 {
            crate::log!(
                Level::Error,
                "task store: {missing} task(s) of priority {priority} counted on disk were not found; they run after a restart if they are there"
            );
        }
        if self.paging.on_disk() == 0 {
            self.spare = None;
        }
    }

    /// Whether the next task to run at `now_ms` is on disk only: memory's
    /// next is of a lower priority than the first level there, or of the
    /// same and newer than its tasks on disk (one given back, or due after
    /// a delay), or there is none.
    fn starved(&mut self, now_ms: u64) -> bool {
        let Some((first, level)) = self.paging.first() else {
            return false;
        };
        match self.mem.next_up(now_ms) {
            Some((priority, id)) => priority < first || (priority == first && id >= level.from),
            None => true,
        }
    }

    /// Forgets a held task; a read in flight may have found its record.
    /// Every finished task asks, and almost none is held: an empty set
    /// answers without hashing the id.
    fn release(&mut self, id: u64) {
        if !self.held.is_empty() && self.held.remove(&id) && self.reading.is_some() {
            self.released.insert(id);
        }
    }
}

impl TaskQueue for DurableQueue {
    fn push(&mut self, task: QueuedTask) {
        self.batch.put(&task);
        self.batch.reserve_ids(task.id + 1);
        if self.paging.admit(&task) {
            self.mem.push(task);
        }
    }

    /// A read back normally arrives while memory still holds
    /// [`paging::REFILL_BELOW`] tasks of its level. When it has not, the
    /// next task is on disk: this waits for reads as long as they make
    /// progress, so that tasks run in the order they would from memory.
    fn take(&mut self, now_ms: u64) -> Option<QueuedTask> {
        self.poll();
        self.read_ahead(false);
        while self.starved(now_ms) {
            let before = self.paging.first();
            if self.reading.map(|r| r.priority) != before.map(|(p, _)| p) {
                self.wait();
                self.read_ahead(true);
            }
            self.wait();
            if self.paging.first() == before {
                break;
            }
        }
        let task = self.mem.take(now_ms)?;
        self.paging.left(&task);
        Some(task)
    }

    fn next_due(&self) -> Option<u64> {
        self.mem.next_due()
    }

    fn ready(&self, now_ms: u64) -> bool {
        self.mem.ready(now_ms) || self.paging.on_disk() > 0
    }

    fn ack(&mut self, id: u64) {
        self.release(id);
        self.batch.delete(id);
    }

    fn requeue(&mut self, task: QueuedTask) {
        self.batch.put(&task);
        self.paging.entered(&task);
        self.mem.requeue(task);
    }

    fn fail(&mut self, task: QueuedTask, error: &str) {
        self.release(task.id);
        self.batch.fail(&task, error, now_ms());
    }

    fn hold(&mut self, task: &QueuedTask) {
        self.held.insert(task.id);
        self.batch.put(task);
        self.batch.reserve_ids(task.id + 1);
    }

    fn len(&self) -> usize {
        self.mem.len() + self.paging.on_disk()
    }

    fn delayed(&self) -> usize {
        self.mem.delayed()
    }

    fn commit(&mut self) -> Result<(), QueueError> {
        self.flush(false)
    }

    /// Only a commit one client waits for runs here on the loop: nothing
    /// would gather behind it, and the two thread hops cost it about a
    /// fifth of its rate, one `task()` at a time. The writer thread takes a
    /// synced commit several clients wait for, so that the next clients'
    /// submissions gather while it syncs; the removal of finished tasks,
    /// which gathers over turns (nobody waits for it) and goes out
    /// [`DELETE_BATCH`] at a time without a sync, or with one once the
    /// oldest has waited [`SYNC_WITHIN`]; and the read back of a backlog
    /// on disk, with whatever the batch holds. A drain pays a commit per
    /// 8,192 tasks instead of one per turn, and a crash still reruns at
    /// most what finished in the last [`SYNC_WITHIN`]. The master's
    /// committer comes back for them.
    fn commit_turn(&mut self, waiting: usize) {
        self.poll();
        self.read_ahead(false);
        if self.in_flight {
            return;
        }
        if self.batch.is_empty() {
            if self
                .unsynced_since
                .is_some_and(|t| t.elapsed() >= SYNC_WITHIN)
            {
                self.hand_over(CommitKind::Synced, None);
            }
            return;
        }
        if self.batch.only_deletes() {
            let since = *self.unsynced_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SYNC_WITHIN {
                self.hand_over(CommitKind::Synced, None);
            } else if self.batch.len() >= DELETE_BATCH {
                self.hand_over(CommitKind::Turn, None);
            }
            return;
        }
        if waiting < 2 {
            let _ = self.flush(true);
            return;
        }
        self.hand_over(CommitKind::Synced, None);
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn unsynced(&self) -> bool {
        self.unsynced_since.is_some()
    }

    fn settled(&mut self) -> Vec<(u64, Result<(), QueueError>)> {
        self.poll();
        std::mem::take(&mut self.settled)
    }

    /// The master calls this as it builds its loop, before it starts any
    /// other thread: the writer thread starts now, so that it gets a malloc
    /// arena of its own ([`crate::memory::limit_arenas`]). Should it not
    /// start, its first job tries again.
    fn wake_on_commit(&mut self, wake: Wake) {
        self.wake = Some(wake);
        if let Err(e) = self.writer() {
            crate::log!(
                Level::Warning,
                "task store: cannot start its writer thread yet ({e})"
            );
        }
    }

    fn refilled(&mut self) -> bool {
        std::mem::take(&mut self.refilled)
    }

    fn failures(&mut self) -> Option<&mut dyn FailedStore> {
        Some(self)
    }
}

/// The store's failed table. Each operation first commits what this turn
/// wrote, so a task given up a moment ago is already there.
impl FailedStore for DurableQueue {
    fn list(&mut self, offset: usize, limit: usize) -> Result<Vec<FailedTask>, QueueError> {
        self.commit()?;
        let records = self
            .store()
            .failed(offset.saturating_add(limit))
            .map_err(|e| QueueError::Store(e.to_string()))?;
        Ok(records
            .iter()
            .skip(offset)
            .map(|(task, error, at)| FailedTask::of(task, error, *at))
            .collect())
    }

    fn get(&mut self, id: u64) -> Result<Option<FailedTask>, QueueError> {
        self.commit()?;
        let record = self
            .store()
            .failed_one(id)
            .map_err(|e| QueueError::Store(e.to_string()))?;
        Ok(record.map(|(task, error, at)| FailedTask::of(&task, &error, at)))
    }

    fn retry(&mut self, which: &Which) -> Result<usize, QueueError> {
        self.commit()?;
        let tasks = self
            .store()
            .retry_failed(which)
            .map_err(|e| QueueError::Store(e.to_string()))?;
        let n = tasks.len();
        for task in tasks {
            self.paging.entered(&task);
            self.mem.push(task);
        }
        Ok(n)
    }

    fn purge(&mut self, which: &Which) -> Result<usize, QueueError> {
        self.commit()?;
        let ids = match which {
            Which::All => None,
            Which::Ids(ids) => Some(&ids[..]),
        };
        self.store()
            .purge_failed(ids)
            .map_err(|e| QueueError::Store(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Encoding, Payload};
    use bytes::Bytes;

    fn task(id: u64) -> QueuedTask {
        QueuedTask {
            id,
            src_worker: -1,
            task_id: id as i64,
            payload: Payload {
                encoding: Encoding::Raw,
                data: Bytes::from(format!("job {id}")),
            },
            attempts: 0,
            max_attempts: 3,
            priority: 0,
            not_before: 0,
            queued_ms: 0,
        }
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("taskq-dq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn unfinished_tasks_survive_a_restart_and_finished_ones_do_not() {
        let d = dir("restart");
        {
            let (mut q, rec) = DurableQueue::open(&d).unwrap();
            assert_eq!(
                rec,
                Recovery {
                    tasks: 0,
                    failed: 0,
                    next_id: 0
                }
            );
            for i in 0..5 {
                q.push(task(i));
            }
            q.commit().unwrap();
            let t0 = q.take(0).unwrap();
            let t1 = q.take(0).unwrap();
            q.ack(t0.id);
            q.fail(t1, "boom");
            let mut t2 = q.take(0).unwrap();
            t2.attempts = 1;
            q.requeue(t2);
            q.commit().unwrap();
            q.push(task(9));
        }
        let (mut q, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(rec.tasks, 3, "2, 3 and 4; 9 was never committed");
        assert_eq!(rec.failed, 1);
        assert!(rec.next_id >= 5);
        let ids: Vec<(u64, u32)> = std::iter::from_fn(|| q.take(0))
            .map(|t| (t.id, t.attempts))
            .collect();
        assert_eq!(ids, vec![(2, 1), (3, 0), (4, 0)]);
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_task_for_one_task_worker_is_durable_until_it_is_done() {
        let d = dir("held");
        {
            let (q, _) = DurableQueue::open(&d).unwrap();
            let mut disp = crate::dispatcher::Dispatcher::new(Box::new(q), 2, 1, 0, 100);
            disp.submit(task(7), Some(1)).unwrap();
            disp.submit(task(8), Some(1)).unwrap();
            disp.commit().unwrap();
            disp.online(1, 1, None);
            let mut sent = Vec::new();
            disp.assign(0, |w, t, _| sent.push((w, t.id)));
            assert_eq!(sent, vec![(1, 7)]);
            assert!(disp.complete(1, 7, 5, 0).is_some());
            disp.commit().unwrap();
        }
        let (_, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(rec.tasks, 1, "8 is still to run; 7 is done");
        assert!(rec.next_id >= 9);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Room for `n` of the tests' tasks in memory.
    fn window_of(n: usize) -> usize {
        n * (task(0).payload.data.len() + paging::TASK_OVERHEAD)
    }

    fn prio(id: u64, priority: i32) -> QueuedTask {
        QueuedTask {
            priority,
            ..task(id)
        }
    }

    #[test]
    fn a_backlog_beyond_the_window_waits_on_disk_and_comes_back_in_order() {
        let d = dir("paged");
        let (mut q, _) = DurableQueue::open_with_window(&d, window_of(3)).unwrap();
        for i in 0..5000 {
            q.push(prio(i, (i % 3) as i32));
        }
        assert!(q.mem.len() <= 3, "{} in memory", q.mem.len());
        assert_eq!(q.len(), 5000);
        assert!(q.ready(0));
        let order: Vec<(i32, u64)> = std::iter::from_fn(|| q.take(0))
            .map(|t| (t.priority, t.id))
            .collect();
        let mut expected: Vec<(i32, u64)> = (0..5000).map(|i| ((i % 3) as i32, i)).collect();
        expected.sort_by_key(|&(p, id)| (-p, id));
        assert!(order == expected, "highest priority first, then by id");
        assert_eq!(q.len(), 0);
        assert!(!q.ready(0));
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_turn_commits_on_the_writer_thread_and_reports_its_generation() {
        let d = dir("writer");
        {
            let (mut q, _) = DurableQueue::open(&d).unwrap();
            let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = woken.clone();
            q.wake_on_commit(Arc::new(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
            assert!(
                q.committer.is_some(),
                "the writer starts with the wake, before the master's other threads"
            );
            q.push(task(1));
            q.push(task(2));
            let first = q.generation();
            q.commit_turn(2);
            assert!(q.generation() > first, "later changes join the next commit");
            q.push(task(3));
            let second = q.generation();
            q.commit_turn(2);
            let mut settled = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while settled.last().is_none_or(|(g, _)| *g < second) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never settled: {settled:?}"
                );
                q.commit_turn(2);
                settled.extend(q.settled().into_iter().map(|(g, r)| (g, r.is_ok())));
                std::thread::yield_now();
            }
            assert_eq!(settled, [(first, true), (second, true)]);
            assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 2);
            q.push(task(4));
            q.commit_turn(2);
            assert!(q.in_flight);
        }
        let (_, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(rec.tasks, 4, "the drop waited for the writer's commit of 4");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_commit_that_panics_fails_its_clients_and_its_tasks_go_out_with_the_next() {
        // One client waiting: the commit runs on the loop; two: on the writer.
        for waiting in [1, 2] {
            let d = dir(&format!("panic-{waiting}"));
            {
                let (mut q, _) = DurableQueue::open(&d).unwrap();
                q.push(task(1));
                q.generation = committer::tests::PANICS;
                q.commit_turn(waiting);
                assert_eq!(q.committer.is_some(), waiting > 1);
                let settled = settle(&mut q);
                assert!(
                    matches!(&settled[..], [(committer::tests::PANICS, Err(QueueError::Store(e)))] if e.contains("failed unexpectedly")),
                    "{settled:?}"
                );
                q.generation = 7;
                q.push(task(2));
                q.commit_turn(waiting);
                assert!(matches!(&settle(&mut q)[..], [(7, Ok(()))]));
            }
            let (_, rec) = DurableQueue::open(&d).unwrap();
            assert_eq!(rec.tasks, 2, "task 1 went out with task 2's commit");
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn a_writer_that_ended_with_a_job_out_fails_its_clients_and_is_replaced() {
        let d = dir("ended");
        let (mut q, _) = DurableQueue::open(&d).unwrap();
        q.push(task(1));
        q.commit_turn(2);
        q.wait();
        let out = q.generation();
        q.committer = Some(Committer::ended());
        q.in_flight = true;
        q.generation += 1;
        assert!(
            matches!(&q.settled()[..], [_, (g, Err(QueueError::Store(e)))] if *g == out && e.contains("writer thread ended")),
            "the poll of a take or a turn notices it"
        );
        assert!(q.committer.is_none());
        q.push(task(2));
        let next = q.generation();
        q.commit_turn(2);
        assert!(q.committer.is_some(), "the next job starts a new thread");
        assert!(matches!(&settle(&mut q)[..], [(g, Ok(()))] if *g == next));
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Turns until a commit settles; what settled.
    fn settle(q: &mut DurableQueue) -> Vec<(u64, Result<(), QueueError>)> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let settled = q.settled();
            if !settled.is_empty() {
                return settled;
            }
            assert!(std::time::Instant::now() < deadline, "never settled");
            q.wait();
        }
    }

    #[test]
    fn a_commit_one_client_waits_for_runs_on_the_loop() {
        let d = dir("inline");
        let (mut q, _) = DurableQueue::open(&d).unwrap();
        q.push(task(1));
        let generation = q.generation();
        q.commit_turn(1);
        assert!(q.committer.is_none(), "no writer thread for it");
        let settled: Vec<(u64, bool)> = q
            .settled()
            .into_iter()
            .map(|(g, r)| (g, r.is_ok()))
            .collect();
        assert_eq!(settled, [(generation, true)]);
        assert_eq!(
            q.store().unsynced_for(),
            None,
            "synced before the acknowledgement"
        );
        q.ack(1);
        q.commit_turn(2);
        assert!(
            q.committer.is_none(),
            "a finished task waits for more, uncommitted"
        );
        assert!(q.unsynced(), "without a sync");
        q.commit_turn(0);
        assert!(q.unsynced(), "the sync waits for the interval");
        std::thread::sleep(SYNC_WITHIN);
        q.commit_turn(0);
        assert!(
            q.committer.is_some(),
            "nobody waits for it: the writer gives it"
        );
        q.wait();
        assert!(!q.unsynced(), "and is given after it");
        assert_eq!(q.store().unsynced_for(), None);
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn finished_tasks_gather_over_turns_and_owe_their_sync_from_the_first() {
        let d = dir("deletes");
        let (mut q, _) = DurableQueue::open(&d).unwrap();
        let n = DELETE_BATCH as u64 + 1;
        for id in 0..n {
            q.push(task(id));
        }
        q.commit().unwrap();
        // After the writer's job, if one is in flight.
        let stored = |q: &mut DurableQueue| {
            q.wait();
            let mut n_stored = 0;
            let records = q.store().read(0, 2 * n as usize, None).unwrap();
            records.each(|_| n_stored += 1).unwrap();
            n_stored
        };
        let first = Instant::now();
        let mut after_first = None;
        for _ in 1..DELETE_BATCH {
            let t = q.take(0).unwrap();
            q.ack(t.id);
            q.commit_turn(0);
            after_first.get_or_insert_with(Instant::now);
        }
        assert_eq!(
            stored(&mut q),
            n as usize,
            "nothing removed before a full batch"
        );
        assert!(q.unsynced(), "the master's committer comes back for them");
        let t = q.take(0).unwrap();
        q.ack(t.id);
        q.commit_turn(0);
        assert_eq!(stored(&mut q), 1, "a full batch is removed at once");
        assert!(
            q.unsynced_since
                .zip(after_first)
                .is_some_and(|(since, after)| since <= after),
            "the sync is owed from the first of them"
        );
        let t = q.take(0).unwrap();
        q.ack(t.id);
        q.commit_turn(0);
        assert_eq!(stored(&mut q), 1);
        std::thread::sleep(SYNC_WITHIN.saturating_sub(first.elapsed()));
        q.commit_turn(0);
        assert_eq!(
            stored(&mut q),
            0,
            "removed, with the sync, once the oldest waited long enough"
        );
        assert!(!q.unsynced());
        assert_eq!(q.store().unsynced_for(), None);
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Random pushes, takes, give-backs, completions and commits against a
    /// small window hand out tasks in exactly the order the in-memory queue
    /// does, and count the same.
    #[test]
    fn paging_hands_out_what_the_memory_queue_would() {
        let d = dir("model");
        let (mut q, _) = DurableQueue::open_with_window(&d, window_of(4)).unwrap();
        let mut model = MemoryQueue::default();
        let mut taken: Vec<QueuedTask> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut id = 0;
        for _ in 0..20_000 {
            match next() % 10 {
                0..=3 => {
                    let t = prio(id, (next() % 3) as i32);
                    id += 1;
                    q.push(t.clone());
                    model.push(t);
                }
                4..=6 => {
                    let got = q.take(0);
                    assert_eq!(got.as_ref().map(|t| t.id), model.take(0).map(|t| t.id));
                    taken.extend(got);
                }
                7 if !taken.is_empty() => {
                    let t = taken.swap_remove((next() as usize) % taken.len());
                    q.requeue(t.clone());
                    model.requeue(t);
                }
                8 if !taken.is_empty() => {
                    let t = taken.swap_remove((next() as usize) % taken.len());
                    q.ack(t.id);
                }
                // Mostly on the writer thread, so reading back often
                // meets a commit in flight.
                9 if next() % 4 == 0 => q.commit().unwrap(),
                _ => q.commit_turn(2),
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.ready(0), model.ready(0));
        }
        assert!(q.paging.on_disk() > 0, "the run should have paged");
        q.commit().unwrap();
        let settled = q.settled();
        assert!(settled.iter().all(|(_, r)| r.is_ok()));
        assert!(
            settled.windows(2).all(|w| w[0].0 < w[1].0),
            "each commit reported once, in order"
        );
        while let Some(t) = q.take(0) {
            assert_eq!(Some(t.id), model.take(0).map(|t| t.id));
        }
        assert!(model.is_empty());
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_restart_keeps_the_window_in_memory_and_the_rest_on_disk() {
        let d = dir("paged-restart");
        {
            let (mut q, _) = DurableQueue::open(&d).unwrap();
            for i in 0..1000 {
                q.push(prio(i, if i % 10 == 0 { 1 } else { 0 }));
            }
            q.push(QueuedTask {
                not_before: 1,
                ..task(1000)
            });
            q.commit().unwrap();
        }
        let (mut q, rec) = DurableQueue::open_with_window(&d, window_of(10)).unwrap();
        assert_eq!(rec.tasks, 1001);
        assert_eq!(q.len(), 1001);
        assert!(q.mem.len() <= 11, "the window and the delayed task");
        assert_eq!(q.delayed(), 1);
        let order: Vec<u64> = std::iter::from_fn(|| q.take(2)).map(|t| t.id).collect();
        let mut expected: Vec<u64> = (0..1000).step_by(10).collect();
        expected.extend((0..1000).filter(|i| i % 10 != 0));
        expected.push(1000);
        assert!(
            order == expected,
            "by priority, then id; the delayed one when due"
        );
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_task_for_one_task_worker_is_never_read_back_into_the_shared_queue() {
        let d = dir("paged-held");
        let mut q = five_held_of_ten(&d);
        assert_eq!(drain(&mut q), vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tasks_queued_while_a_read_runs_come_back_after_it() {
        let d = dir("paged-later");
        let (mut q, _) = DurableQueue::open_with_window(&d, window_of(2)).unwrap();
        for i in 0..5 {
            q.push(task(i));
        }
        q.commit().unwrap();
        assert_eq!(q.take(0).map(|t| t.id), Some(0));
        assert!(q.reading.is_some(), "the take started reading 2..=4 back");
        q.push(task(5));
        q.push(task(6));
        q.wait();
        assert!(q.refilled(), "the master is told to hand them out");
        assert!(!q.refilled(), "once");
        assert_eq!(
            q.len(),
            6,
            "the read saw the end of the table, not of the queue"
        );
        assert_eq!(drain(&mut q), vec![1, 2, 3, 4, 5, 6]);
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_held_task_that_ends_while_a_read_runs_is_not_read_back() {
        let d = dir("paged-released");
        let mut q = five_held_of_ten(&d);
        assert_eq!(q.take(0).map(|t| t.id), Some(0));
        assert!(q.reading.is_some(), "the take started reading back");
        q.ack(5);
        q.wait();
        assert_eq!(drain(&mut q), vec![1, 2, 3, 4, 6, 7, 8, 9], "5 ran already");
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Tasks 0..10 committed, 5 held for one task worker, in a window of 2.
    fn five_held_of_ten(d: &Path) -> DurableQueue {
        let (mut q, _) = DurableQueue::open_with_window(d, window_of(2)).unwrap();
        for i in 0..10 {
            if i == 5 {
                q.hold(&task(i));
            } else {
                q.push(task(i));
            }
        }
        q.commit().unwrap();
        q
    }

    /// The ids of every task `q` hands out from now on.
    fn drain(q: &mut DurableQueue) -> Vec<u64> {
        std::iter::from_fn(|| q.take(0)).map(|t| t.id).collect()
    }

    #[test]
    fn a_damaged_record_stops_a_read_back_without_repeating_or_losing_tasks() {
        let d = dir("paged-damaged");
        let (mut q, _) = DurableQueue::open_with_window(&d, window_of(2)).unwrap();
        for i in 0..10 {
            q.push(task(i));
        }
        q.commit().unwrap();
        crate::store::tests::write_raw(&q.store(), 6, &[0xff, 0xff]);
        let ids: Vec<u64> = std::iter::from_fn(|| q.take(0)).map(|t| t.id).collect();
        assert_eq!(
            ids,
            vec![0, 1, 2, 3, 4, 5],
            "what was read before the damaged record runs once"
        );
        assert_eq!(q.len(), 4, "the rest still counts as waiting");
        assert!(q.take(0).is_none(), "the damaged record stops the level");
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_tasks_are_listed_retried_durably_and_purged() {
        let d = dir("failed");
        {
            let (mut q, _) = DurableQueue::open(&d).unwrap();
            for i in 1..=3 {
                q.push(task(i));
            }
            q.commit().unwrap();
            for _ in 1..=3 {
                let mut t = q.take(0).unwrap();
                t.attempts = 3;
                t.src_worker = 4;
                q.fail(t, "boom");
            }
            let store = q.failures().unwrap();
            let listed: Vec<u64> = store.list(0, 10).unwrap().iter().map(|f| f.id).collect();
            assert_eq!(listed.len(), 3, "given up this turn, listed at once");
            assert_eq!(store.list(1, 1).unwrap().len(), 1);
            let first = &store.list(0, 10).unwrap()[2];
            assert_eq!((first.error.as_str(), first.attempts), ("boom", 3));
            let one = store.get(first.id).unwrap().unwrap();
            assert_eq!(&one, first, "one row, as listed");
            assert_eq!(store.get(99).unwrap(), None);
            assert_eq!(store.retry(&Which::Ids(vec![2, 99])).unwrap(), 1);
            assert_eq!(store.purge(&Which::Ids(vec![3])).unwrap(), 1);
            let back = q.take(0).unwrap();
            assert_eq!((back.id, back.attempts, back.src_worker), (2, 0, -1));
        }
        let (mut q, rec) = DurableQueue::open(&d).unwrap();
        assert_eq!(
            (rec.tasks, rec.failed),
            (1, 1),
            "the retried task is queued on disk"
        );
        assert_eq!(q.take(0).unwrap().id, 2);
        assert_eq!(q.failures().unwrap().purge(&Which::All).unwrap(), 1);
        assert!(q.failures().unwrap().list(0, 10).unwrap().is_empty());
        drop(q);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::payload::{Encoding, Payload};
    use bytes::Bytes;
    use std::time::{Duration, Instant};

    /// Drain cost of a durable backlog of 500,000 tasks, all in memory and
    /// paged, printed. Run with `cargo test --release -p taskq-engine --lib
    /// durable_queue::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, prints numbers"]
    fn drain_timing() {
        let payload = Bytes::from(vec![b'p'; 288]);
        for window in [usize::MAX / 2, paging::WINDOW_BYTES] {
            let d = std::env::temp_dir().join(format!("taskq-dq-timing-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            let (mut q, _) = DurableQueue::open_with_window(&d, window).unwrap();
            let started = Instant::now();
            for id in 0..500_000u64 {
                q.push(QueuedTask {
                    id,
                    src_worker: -1,
                    task_id: id as i64,
                    payload: Payload {
                        encoding: Encoding::Raw,
                        data: payload.clone(),
                    },
                    attempts: 0,
                    max_attempts: 1,
                    priority: 0,
                    not_before: 0,
                    queued_ms: 0,
                });
                if id % 1000 == 999 {
                    q.commit().unwrap();
                }
            }
            let pushed = started.elapsed();
            let (mut taking, mut committing) = (Duration::ZERO, Duration::ZERO);
            let mut n = 0;
            loop {
                let at = Instant::now();
                let Some(t) = q.take(0) else { break };
                taking += at.elapsed();
                q.ack(t.id);
                n += 1;
                if n % 64 == 0 {
                    let at = Instant::now();
                    q.commit_turn(2);
                    committing += at.elapsed();
                }
            }
            q.commit().unwrap();
            println!(
                "window {window}: 500,000 pushed (commit per 1,000) in {pushed:.2?}; \
                 take {taking:.2?}, ack and end-of-turn commit per 64 {committing:.2?}"
            );
            drop(q);
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}
