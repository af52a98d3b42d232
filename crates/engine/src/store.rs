//! The durable task store behind `set(['task_store' => '/path/dir'])`: queued,
//! delayed and failed tasks kept on disk in one redb file, so that a restart
//! after a `kill -9` runs every acknowledged task that had not finished.
//!
//! The master owns the store: it gathers the changes of one turn in a
//! [`Batch`] and commits them in one fsync'd write transaction (group commit),
//! on its event loop or on the store's writer thread ([`crate::committer`]),
//! one at a time and in order, so the cost of durability is paid once per
//! commit rather than once per task. Records are postcard-encoded
//! [`QueuedTask`]s, kept in pages of consecutive ids ([`crate::store_pages`]);
//! nothing read from disk is trusted (a record that does not decode, or
//! decodes to another id, is reported with its id).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::failed::Which;
use crate::queue::{QueuedTask, TaskRef};
use crate::store_pages::{self, Pages, DONE, PAGES};

/// Tasks as stores kept them before pages, a record per task, by id: moved
/// into pages when such a store is opened.
const LEGACY_TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// How many of those one transaction moves at most, and how many of their
/// bytes (a task beyond it moves alone), so that moving a large backlog
/// holds a bounded part of it in memory at a time.
const MIGRATE_AT_ONCE: usize = 65_536;
const MIGRATE_BYTES: usize = 16 * 1024 * 1024;
/// Tasks that used up their attempts, by id, kept for inspection.
const FAILED: TableDefinition<u64, &[u8]> = TableDefinition::new("failed");
/// Store-wide counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The id high-water mark: every id ever handed out is below it.
const NEXT_ID: &str = "next_id";
/// The file inside the `task_store` directory.
const FILE_NAME: &str = "tasks.redb";
/// redb's page cache. Its default (1 GiB) would let the master grow far past
/// what a task queue needs; the hot pages of a queue are few (its newest
/// and oldest records and the tree above them), and the master's memory
/// should stay flat under any backlog (issue 17 §3). The pages live in two
/// malloc arenas, the event loop's for the commits it makes itself and the
/// writer thread's for the rest ([`crate::memory::limit_arenas`]), and
/// each keeps what it freed: 8 MiB each holds what 16 MiB in one arena
/// did, and a drain's removals still mostly find the pages its reads back
/// left in the cache (a profile of a 1,000,000-task drain: about one page
/// read in ten was the removals').
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// How long the removal of finished tasks may wait for its sync. A drain
/// then costs one fsync per this interval instead of one per commit (the
/// sync was most of a durable drain's time); a crash of the master within
/// it runs those tasks again, at least once, as it does a task that was
/// running. Submissions, retries and failures are synced before anything
/// is acknowledged, as ever.
pub const SYNC_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Why the store could not be opened, read or written. Every message names the
/// `task_store` directory, since that is what the operator configured.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `mkdir -p` of the directory failed (permissions, a file in the way, ...).
    #[error("task_store '{}': cannot create directory: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process (normally a second server started with the same
    /// settings) has the store open; two writers would lose tasks.
    #[error("task_store '{}' is locked by another running server", path.display())]
    Locked { path: PathBuf },
    /// The database refused an operation (I/O error, a damaged file that
    /// redb's own checksums caught, disk full, ...).
    #[error("task_store '{}': {what}: {source}", path.display())]
    Db {
        path: PathBuf,
        what: &'static str,
        source: Box<redb::Error>,
    },
    /// A record that does not decode, or decodes to a task with another id.
    #[error("task_store '{}': corrupt record {id} in table '{table}': {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        id: u64,
        reason: String,
    },
    /// The store's code panicked (a bug, in redb or here). The commit or
    /// read it was making did not happen; the master goes on and tries
    /// the batch again with the next one.
    #[error("task_store '{}': failed unexpectedly: {message}", path.display())]
    Panicked { path: PathBuf, message: String },
    /// A task could not be encoded (cannot happen for the current record
    /// types, but postcard's signature allows it and nothing here panics).
    #[error("task_store '{}': cannot encode task {id}: {source}", path.display())]
    Encode {
        path: PathBuf,
        id: u64,
        source: postcard::Error,
    },
}

/// What survived a restart, for the master to queue again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Tasks not completed before the stop that the caller chose to keep in
    /// memory, ordered by id (= submission order).
    pub tasks: Vec<QueuedTask>,
    /// Greater than every id ever stored, also deleted ones, so ids stay
    /// unique across restarts.
    pub next_id: u64,
    /// How many failed tasks the store keeps (for `stats()`).
    pub failed: u64,
}

/// Records [`TaskStore::read`] reserves room for at first.
const RECORDS_RESERVE: usize = 4096;

/// Stored tasks read back, as the store keeps them, for the thread that
/// queues them: a read of a few thousand costs milliseconds, which the
/// event loop should not spend.
#[derive(Debug)]
pub struct Records {
    dir: PathBuf,
    /// The pages read, as stored.
    bytes: Vec<u8>,
    /// Each wanted record's id and where its bytes lie in `bytes`.
    at: Vec<(u64, usize, usize)>,
    /// Whether the table had no record beyond these.
    pub exhausted: bool,
}

impl Records {
    /// Hands each record to `each` in id order, decoded in place. Nothing
    /// read from disk is trusted: the first record that does not decode, or
    /// holds another id, ends the walk with its error.
    pub fn each(&self, mut each: impl FnMut(&TaskRef<'_>)) -> Result<(), StoreError> {
        for &(id, start, end) in &self.at {
            each(&decode_task(
                &self.dir,
                "pages",
                id,
                &self.bytes[start..end],
            )?);
        }
        Ok(())
    }
}

/// A failed task as the `failed` table keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FailedRecord {
    task: QueuedTask,
    error: String,
    at_ms: u64,
}

/// The last change made to one id within a batch.
#[derive(Debug)]
enum Op {
    Put(QueuedTask),
    Delete,
    Fail(Box<FailedRecord>),
}

/// Changes accumulated during one event-loop turn, committed together by
/// [`TaskStore::commit`] (group commit). Only the last change to an id counts,
/// so a task put and completed within one turn never reaches the disk.
#[derive(Debug, Default)]
pub struct Batch {
    ops: BTreeMap<u64, Op>,
    /// Finished tasks with no other change in `ops` when they ended: a
    /// drain removes one per task, and an entry of the sorted map each was
    /// most of what recording a removal cost. Applied before `ops`, so a
    /// change recorded there later wins.
    removed: Vec<u64>,
    reserved: Option<u64>,
    /// How many of `ops` are deletions, so [`Batch::only_deletes`] costs
    /// nothing while finished tasks gather over many turns.
    deletes: usize,
}

impl Batch {
    /// Inserts or replaces a task (a new task, or a retry whose attempts and
    /// `not_before` changed).
    pub fn put(&mut self, task: &QueuedTask) {
        self.set(task.id, Op::Put(task.clone()));
    }

    /// Forgets a task that ran to completion.
    pub fn delete(&mut self, id: u64) {
        match self.ops.contains_key(&id) {
            true => self.set(id, Op::Delete),
            false => self.removed.push(id),
        }
    }

    /// Moves a task that used up its attempts from the queue to the failed
    /// tasks, with the last error and when it failed (Unix ms).
    pub fn fail(&mut self, task: &QueuedTask, error: &str, at_ms: u64) {
        let record = FailedRecord {
            task: task.clone(),
            error: error.to_owned(),
            at_ms,
        };
        self.set(task.id, Op::Fail(Box::new(record)));
    }

    fn set(&mut self, id: u64, op: Op) {
        self.deletes += usize::from(matches!(op, Op::Delete));
        if let Some(Op::Delete) = self.ops.insert(id, op) {
            self.deletes -= 1;
        }
    }

    /// Persists the id high-water mark: ids below `next_id` are never handed
    /// out again, even when their tasks are long deleted.
    pub fn reserve_ids(&mut self, next_id: u64) {
        self.reserved = Some(self.reserved.map_or(next_id, |r| r.max(next_id)));
    }

    /// Whether the batch only forgets finished tasks: nothing in it needs
    /// to be on disk before an acknowledgement, so it may be committed
    /// without a sync (see [`TaskStore::commit`]).
    pub fn only_deletes(&self) -> bool {
        self.reserved.is_none() && self.deletes == self.ops.len()
    }

    /// Whether a commit would have nothing to write (the master skips it).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.removed.is_empty() && self.reserved.is_none()
    }

    /// Changes recorded: about one per task, whatever happened to it.
    pub fn len(&self) -> usize {
        self.ops.len() + self.removed.len()
    }

    /// Takes back the changes of an earlier batch whose commit failed, so
    /// they go out with this one: where both changed a task, this batch's
    /// change is the later one and wins.
    pub fn merge_older(&mut self, older: Batch) {
        self.removed.sort_unstable();
        for (id, op) in older.ops {
            if self.removed.binary_search(&id).is_ok() {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = self.ops.entry(id) {
                self.deletes += usize::from(matches!(op, Op::Delete));
                slot.insert(op);
            }
        }
        self.removed.extend(older.removed);
        if let Some(reserved) = older.reserved {
            self.reserve_ids(reserved);
        }
    }

    fn clear(&mut self) {
        self.ops.clear();
        self.removed.clear();
        self.reserved = None;
        self.deletes = 0;
    }
}

/// The open store: one redb database, exclusively locked for the life of the
/// server so a second server on the same directory is refused.
pub struct TaskStore {
    db: Database,
    dir: PathBuf,
    /// The id high-water mark: every id in a committed change is below it.
    next_id: u64,
    /// The high-water mark as the meta table keeps it. A commit writes it
    /// only where the tables' keys would not give it back: a meta page
    /// (and the table tree's page above it) less per commit, and a commit's
    /// sync costs about 20 µs per page on a VM's disk.
    meta_next_id: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    /// Since when commits made without a sync wait for one (None: all synced).
    unsynced: Option<std::time::Instant>,
}

impl std::fmt::Debug for TaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStore")
            .field("dir", &self.dir)
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl TaskStore {
    /// Creates the directory if needed (mkdir -p), opens or creates
    /// `<dir>/tasks.redb` and reads back what survived. Every page's checksum
    /// is verified on open, so a damaged file is an error here rather than a
    /// panic later.
    ///
    /// Open it in the master after forking the manager: the lock is an
    /// open-file-description lock, so a forked child would inherit it and keep
    /// the store locked after the master died (and must never drop a copy).
    /// `keep` sees every unfinished task in id order and says whether it
    /// goes into [`Recovered::tasks`]; a backlog larger than memory stays on
    /// disk (see [`crate::paging`]).
    pub fn open(
        dir: &Path,
        keep: impl FnMut(&QueuedTask) -> bool,
    ) -> Result<(TaskStore, Recovered), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(dir.join(FILE_NAME))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch => StoreError::Locked {
                    path: dir.to_path_buf(),
                },
                other => db_error(dir, "cannot open tasks.redb", other),
            })?;
        let mut store = TaskStore {
            db,
            dir: dir.to_path_buf(),
            next_id: 0,
            meta_next_id: 0,
            buf: Vec::new(),
            unsynced: None,
        };
        while store.migrate_some()? {}
        let (recovered, meta_next_id) = store.recover(keep)?;
        store.next_id = recovered.next_id;
        store.meta_next_id = meta_next_id;
        Ok((store, recovered))
    }

    /// Reads every queued task, in one write transaction that also creates
    /// the tables of a new store.
    /// Also returns the high-water mark the meta table keeps.
    fn recover(
        &self,
        mut keep: impl FnMut(&QueuedTask) -> bool,
    ) -> Result<(Recovered, u64), StoreError> {
        let what = "cannot read tasks";
        let txn = self.db.begin_write().map_err(|e| self.err(what, e))?;
        let recovered = {
            let pages = txn.open_table(PAGES).map_err(|e| self.err(what, e))?;
            let done = txn.open_table(DONE).map_err(|e| self.err(what, e))?;
            let failed = txn.open_table(FAILED).map_err(|e| self.err(what, e))?;
            let meta = txn.open_table(META).map_err(|e| self.err(what, e))?;
            let meta_next_id = meta
                .get(NEXT_ID)
                .map_err(|e| self.err(what, e))?
                .map_or(0, |v| v.value());
            let mut next_id = meta_next_id;
            let mut queued = Vec::new();
            store_pages::walk(&self.dir, &pages, &done, 0, |key, value, bits| {
                next_id = next_id.max(key.1.saturating_add(1));
                for (id, record) in store_pages::live(&self.dir, key, value, bits)? {
                    let task = decode_task(&self.dir, "pages", id, record)?.to_owned();
                    if keep(&task) {
                        queued.push(task);
                    }
                }
                Ok(true)
            })?;
            if let Some(last) = failed.last().map_err(|e| self.err(what, e))? {
                next_id = next_id.max(last.0.value().saturating_add(1));
            }
            let recovered = Recovered {
                tasks: queued,
                next_id,
                failed: failed.len().map_err(|e| self.err(what, e))?,
            };
            (recovered, meta_next_id)
        };
        txn.commit().map_err(|e| self.err(what, e))?;
        Ok(recovered)
    }

    /// Moves up to [`MIGRATE_AT_ONCE`] tasks or [`MIGRATE_BYTES`] of a store
    /// written before pages into pages, in one synced transaction (a crash
    /// leaves each task in one table or the other); false once nothing was
    /// left to move and the old table is gone.
    fn migrate_some(&mut self) -> Result<bool, StoreError> {
        let what = "cannot move tasks into pages";
        let txn = self.db.begin_write().map_err(|e| self.err(what, e))?;
        let exists = txn
            .list_tables()
            .map_err(|e| self.err(what, e))?
            .any(|t| redb::TableHandle::name(&t) == "tasks");
        if !exists {
            return Ok(false);
        }
        let mut buf = Vec::new();
        let mut moved: Vec<(u64, usize)> = Vec::new();
        {
            let mut legacy = txn
                .open_table(LEGACY_TASKS)
                .map_err(|e| self.err(what, e))?;
            for entry in legacy.iter().map_err(|e| self.err(what, e))? {
                if moved.len() == MIGRATE_AT_ONCE || buf.len() >= MIGRATE_BYTES {
                    break;
                }
                let (key, value) = entry.map_err(|e| self.err(what, e))?;
                let id = key.value();
                let record = value.value();
                decode_task(&self.dir, "tasks", id, record)?;
                buf.extend_from_slice(record);
                moved.push((id, buf.len()));
            }
            if let (Some(&(first, _)), Some(&(last, _))) = (moved.first(), moved.last()) {
                legacy
                    .retain_in(first..=last, |_, _| false)
                    .map_err(|e| self.err(what, e))?;
            }
        }
        if moved.is_empty() {
            txn.delete_table(LEGACY_TASKS)
                .map_err(|e| self.err(what, e))?;
        } else {
            let mut pages = Pages::open(&txn, &self.dir)?;
            pages.put(&slices(&buf, &moved), 0)?;
            pages.close()?;
        }
        txn.commit().map_err(|e| self.err(what, e))?;
        Ok(!moved.is_empty())
    }

    /// Writes the batch in one write transaction; the batch is then empty.
    /// With `sync` the transaction, and every one committed without a sync
    /// before it, is durable (fsync'd) when this returns Ok; without, it is
    /// visible to reads at once but a crash may undo it, back to the last
    /// synced commit. An empty batch costs nothing unless it has a sync to
    /// give. On error nothing of it is on disk and the batch is left as it
    /// was; after an I/O error redb refuses further writes until the store
    /// is reopened.
    pub fn commit(&mut self, batch: &mut Batch, sync: bool) -> Result<(), StoreError> {
        if batch.is_empty() && !(sync && self.unsynced.is_some()) {
            return Ok(());
        }
        let what = "cannot commit";
        let mut next_id = self.next_id.max(batch.reserved.unwrap_or(0));
        let mut meta_next_id = self.meta_next_id;
        let mut txn = self.db.begin_write().map_err(|e| self.err(what, e))?;
        if !sync {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| self.err(what, redb::Error::from(e)))?;
        }
        {
            let mut pages = Pages::open(&txn, &self.dir)?;
            let mut failed = txn.open_table(FAILED).map_err(|e| self.err(what, e))?;
            // Finished and failed tasks are marked done in their pages first
            // (a drain completes them about in order, so a run of ids costs
            // a lookup per page); a task put again later in the batch is
            // then no longer done.
            let mut gone: Vec<u64> = batch.removed.clone();
            gone.extend(
                batch
                    .ops
                    .iter()
                    .filter(|(_, op)| matches!(op, Op::Delete | Op::Fail(_)))
                    .map(|(&id, _)| id),
            );
            gone.sort_unstable();
            gone.dedup();
            pages.finish(&gone)?;
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let mut puts: Vec<(u64, usize)> = Vec::new();
            for (&id, op) in &batch.ops {
                match op {
                    Op::Put(task) => {
                        buf = encode_onto(&self.dir, id, task, buf)?;
                        puts.push((id, buf.len()));
                        next_id = next_id.max(id.saturating_add(1));
                    }
                    Op::Delete => {}
                    Op::Fail(record) => {
                        let start = buf.len();
                        buf = encode_onto(&self.dir, id, record, buf)?;
                        failed
                            .insert(id, &buf[start..])
                            .map_err(|e| self.err(what, e))?;
                        buf.truncate(start);
                        next_id = next_id.max(id.saturating_add(1));
                    }
                }
            }
            pages.put(&slices(&buf, &puts), self.next_id)?;
            pages.close()?;
            self.buf = buf;
            // Recovery takes the mark from the last key of either table
            // too: a batch whose highest id stays stored as a task or a
            // failure needs no meta write.
            let recorded = matches!(batch.ops.last_key_value(),
                Some((&id, Op::Put(_) | Op::Fail(_))) if id.saturating_add(1) >= next_id);
            if next_id > self.meta_next_id && !recorded {
                let mut meta = txn.open_table(META).map_err(|e| self.err(what, e))?;
                meta.insert(NEXT_ID, next_id)
                    .map_err(|e| self.err(what, e))?;
                meta_next_id = next_id;
            }
        }
        txn.commit().map_err(|e| self.err(what, e))?;
        self.next_id = next_id;
        self.meta_next_id = meta_next_id;
        batch.clear();
        self.unsynced = match sync {
            true => None,
            false => self.unsynced.or_else(|| Some(std::time::Instant::now())),
        };
        Ok(())
    }

    /// The group commit: [`TaskStore::commit`] with a sync, unless the
    /// batch only forgets finished tasks and the oldest unsynced commit is
    /// younger than [`SYNC_WITHIN`]; the caller then owes a sync within it.
    pub fn commit_turn(&mut self, batch: &mut Batch) -> Result<(), StoreError> {
        let lazy = !batch.is_empty()
            && batch.only_deletes()
            && self.unsynced_for().is_none_or(|d| d < SYNC_WITHIN);
        self.commit(batch, !lazy)
    }

    /// The error for a panic met while this store worked.
    pub fn panicked(&self, message: String) -> StoreError {
        StoreError::Panicked {
            path: self.dir.clone(),
            message,
        }
    }

    /// Since when the oldest commit made without a sync waits for one.
    pub fn unsynced_since(&self) -> Option<std::time::Instant> {
        self.unsynced
    }

    /// How long the oldest commit made without a sync has waited for one.
    pub fn unsynced_for(&self) -> Option<std::time::Duration> {
        self.unsynced.map(|since| since.elapsed())
    }

    /// Failed tasks, newest first (by failure time, then id), at most
    /// `limit`: (task, last error, failed_at_ms). For inspection and tests.
    pub fn failed(&self, limit: usize) -> Result<Vec<(QueuedTask, String, u64)>, StoreError> {
        let what = "cannot read failed tasks";
        let txn = self.db.begin_read().map_err(|e| self.err(what, e))?;
        let table = txn.open_table(FAILED).map_err(|e| self.err(what, e))?;
        let mut out: Vec<FailedRecord> = Vec::new();
        let newest_first =
            |a: &FailedRecord, b: &FailedRecord| (b.at_ms, b.task.id).cmp(&(a.at_ms, a.task.id));
        for entry in table.iter().map_err(|e| self.err(what, e))? {
            let (key, value) = entry.map_err(|e| self.err(what, e))?;
            let record: FailedRecord = decode(&self.dir, "failed", key.value(), value.value())?;
            if record.task.id != key.value() {
                return Err(corrupt(
                    &self.dir,
                    "failed",
                    key.value(),
                    format!("holds task {}", record.task.id),
                ));
            }
            out.push(record);
            // Keeps memory bounded by `limit` however many tasks failed.
            if out.len() >= limit.saturating_mul(2).max(64) {
                out.sort_unstable_by(newest_first);
                out.truncate(limit);
            }
        }
        out.sort_unstable_by(newest_first);
        out.truncate(limit);
        Ok(out
            .into_iter()
            .map(|r| (r.task, r.error, r.at_ms))
            .collect())
    }

    /// The failed task `id` (task, last error, failed_at_ms), or None.
    pub fn failed_one(&self, id: u64) -> Result<Option<(QueuedTask, String, u64)>, StoreError> {
        let what = "cannot read a failed task";
        let txn = self.db.begin_read().map_err(|e| self.err(what, e))?;
        let table = txn.open_table(FAILED).map_err(|e| self.err(what, e))?;
        let Some(value) = table.get(id).map_err(|e| self.err(what, e))? else {
            return Ok(None);
        };
        let record: FailedRecord = decode(&self.dir, "failed", id, value.value())?;
        Ok(Some((record.task, record.error, record.at_ms)))
    }

    /// Moves the selected failed tasks back into the queue's table in one
    /// transaction, reset by [`crate::failed::again`] (a crash leaves each
    /// either failed or queued, never neither), and returns them for the
    /// memory queue. Durable when it returns.
    pub fn retry_failed(&mut self, which: &Which) -> Result<Vec<QueuedTask>, StoreError> {
        let what = "cannot retry failed tasks";
        let txn = self.db.begin_write().map_err(|e| self.err(what, e))?;
        let mut back = Vec::new();
        {
            let mut failed = txn.open_table(FAILED).map_err(|e| self.err(what, e))?;
            let ids: Vec<u64> = match which {
                Which::Ids(ids) => ids.clone(),
                Which::All => failed
                    .iter()
                    .map_err(|e| self.err(what, e))?
                    .map(|entry| entry.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.err(what, e))?,
            };
            let mut ids = ids;
            ids.sort_unstable();
            ids.dedup();
            let mut buf = Vec::new();
            let mut ends = Vec::new();
            for id in ids {
                let Some(value) = failed.remove(id).map_err(|e| self.err(what, e))? else {
                    continue;
                };
                let record: FailedRecord = decode(&self.dir, "failed", id, value.value())?;
                drop(value);
                let task = crate::failed::again(record.task);
                buf = encode_onto(&self.dir, id, &task, buf)?;
                ends.push((id, buf.len()));
                back.push(task);
            }
            let mut pages = Pages::open(&txn, &self.dir)?;
            pages.put(&slices(&buf, &ends), self.next_id)?;
            pages.close()?;
        }
        txn.commit().map_err(|e| self.err(what, e))?;
        Ok(back)
    }

    /// Removes failed tasks (all of them, or those whose id is in `ids`) and
    /// returns how many were removed. Durable when it returns.
    pub fn purge_failed(&mut self, ids: Option<&[u64]>) -> Result<usize, StoreError> {
        let what = "cannot purge failed tasks";
        let txn = self.db.begin_write().map_err(|e| self.err(what, e))?;
        let removed = {
            let mut table = txn.open_table(FAILED).map_err(|e| self.err(what, e))?;
            let removed = match ids {
                None => {
                    let n = table.len().map_err(|e| self.err(what, e))?;
                    table.retain(|_, _| false).map_err(|e| self.err(what, e))?;
                    usize::try_from(n).unwrap_or(usize::MAX)
                }
                Some(ids) => {
                    let mut n = 0;
                    for &id in ids {
                        if table.remove(id).map_err(|e| self.err(what, e))?.is_some() {
                            n += 1;
                        }
                    }
                    n
                }
            };
            // The last failure may have been what kept the mark.
            if self.next_id > self.meta_next_id {
                let mut meta = txn.open_table(META).map_err(|e| self.err(what, e))?;
                meta.insert(NEXT_ID, self.next_id)
                    .map_err(|e| self.err(what, e))?;
            }
            removed
        };
        txn.commit().map_err(|e| self.err(what, e))?;
        self.meta_next_id = self.meta_next_id.max(self.next_id);
        Ok(removed)
    }

    /// Reads back up to `limit` stored tasks in id order from `from` on:
    /// how a backlog kept on disk comes back into memory. The records are
    /// copied out as they are, so the store's writer thread can read them
    /// and the event loop decode them in place where it queues them. Sees
    /// committed changes only.
    /// `reuse`: records already handed out, whose buffers to read into.
    pub fn read(
        &self,
        from: u64,
        limit: usize,
        reuse: Option<Records>,
    ) -> Result<Records, StoreError> {
        let what = "cannot read tasks back";
        let txn = self.db.begin_read().map_err(|e| self.err(what, e))?;
        let pages = txn.open_table(PAGES).map_err(|e| self.err(what, e))?;
        let done = txn.open_table(DONE).map_err(|e| self.err(what, e))?;
        let mut records = reuse.unwrap_or_else(|| Records {
            dir: self.dir.clone(),
            bytes: Vec::new(),
            at: Vec::with_capacity(limit.min(RECORDS_RESERVE)),
            exhausted: true,
        });
        records.bytes.clear();
        records.at.clear();
        records.exhausted = true;
        store_pages::walk(&self.dir, &pages, &done, from, |key, value, bits| {
            let base = records.bytes.len();
            let origin = value.as_ptr() as usize;
            for (id, record) in store_pages::live(&self.dir, key, value, bits)? {
                if id < from {
                    continue;
                }
                if records.at.len() == limit {
                    records.exhausted = false;
                    break;
                }
                let start = base + (record.as_ptr() as usize - origin);
                records.at.push((id, start, start + record.len()));
            }
            records.bytes.extend_from_slice(value);
            Ok(records.exhausted)
        })?;
        Ok(records)
    }

    fn err(&self, what: &'static str, e: impl Into<redb::Error>) -> StoreError {
        db_error(&self.dir, what, e)
    }
}

/// A task's record, read in place, which must hold the task `id`.
fn decode_task<'a>(
    dir: &Path,
    table: &'static str,
    id: u64,
    bytes: &'a [u8],
) -> Result<TaskRef<'a>, StoreError> {
    let task: TaskRef<'a> = decode(dir, table, id, bytes)?;
    if task.id != id {
        return Err(corrupt(dir, table, id, format!("holds task {}", task.id)));
    }
    Ok(task)
}

/// Appends the encoding of `value` to `buf`.
fn encode_onto<T: Serialize>(
    dir: &Path,
    id: u64,
    value: &T,
    buf: Vec<u8>,
) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, buf).map_err(|source| StoreError::Encode {
        path: dir.to_path_buf(),
        id,
        source,
    })
}

/// Records laid end to end in `buf`, each with its id and where it ends.
fn slices<'a>(buf: &'a [u8], ends: &[(u64, usize)]) -> Vec<(u64, &'a [u8])> {
    let mut start = 0;
    ends.iter()
        .map(|&(id, end)| {
            let record = &buf[start..end];
            start = end;
            (id, record)
        })
        .collect()
}

fn decode<'a, T: Deserialize<'a>>(
    dir: &Path,
    table: &'static str,
    id: u64,
    bytes: &'a [u8],
) -> Result<T, StoreError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(corrupt(
            dir,
            table,
            id,
            format!("{} trailing bytes", rest.len()),
        )),
        Err(e) => Err(corrupt(dir, table, id, e.to_string())),
    }
}

/// The error for a record that does not hold what its key says.
pub(crate) fn corrupt(dir: &Path, table: &'static str, id: u64, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_path_buf(),
        table,
        id,
        reason,
    }
}

/// The error for a failed operation of redb's.
pub(crate) fn db_error(dir: &Path, what: &'static str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: dir.to_path_buf(),
        what,
        source: Box::new(e.into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::payload::{Encoding, Payload};
    use bytes::Bytes;
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::io::{BufRead, BufReader, Lines, Seek, SeekFrom, Write};
    use std::process::{Child, ChildStdout, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    /// A directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "taskq-store-{name}-{}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                random() % 1_000_000
            ));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn random() -> u64 {
        RandomState::new().build_hasher().finish()
    }

    /// Writes `value` as the record of `id` in the page that holds it (a
    /// page of its own where none does), bypassing every check: a damaged
    /// record for the readers' error paths.
    pub(crate) fn write_raw(store: &TaskStore, id: u64, value: &[u8]) {
        write_raw_in(&store.db, id, value);
    }

    fn write_raw_in(db: &Database, id: u64, value: &[u8]) {
        let txn = db.begin_write().unwrap();
        {
            let mut pages = txn.open_table(PAGES).unwrap();
            let key = store_pages::page_of(&pages, id)
                .unwrap()
                .unwrap_or((id, id));
            let mut records: Vec<Vec<u8>> = match pages.get(key).unwrap() {
                Some(page) => postcard::from_bytes::<Vec<&[u8]>>(page.value())
                    .unwrap()
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                None => vec![Vec::new()],
            };
            records[(id - key.0) as usize] = value.to_vec();
            let page = postcard::to_allocvec(&records).unwrap();
            pages.insert(key, page.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    pub(crate) fn task(id: u64, data: &[u8]) -> QueuedTask {
        QueuedTask {
            id,
            src_worker: 1,
            task_id: id as i64 * 10,
            payload: Payload {
                encoding: Encoding::Serialized,
                data: Bytes::copy_from_slice(data),
            },
            attempts: 0,
            max_attempts: 3,
            priority: -2,
            not_before: 0,
            queued_ms: 0,
        }
    }

    fn open(dir: &TempDir) -> (TaskStore, Recovered) {
        TaskStore::open(&dir.0, |_| true).unwrap()
    }

    fn ids(tasks: &[QueuedTask]) -> Vec<u64> {
        tasks.iter().map(|t| t.id).collect()
    }

    #[test]
    fn a_failed_batch_merged_back_loses_to_the_later_changes() {
        let dir = TempDir::new("merge");
        let (mut store, _) = open(&dir);
        let mut older = Batch::default();
        older.put(&task(1, b"old"));
        older.put(&task(2, b"old"));
        older.reserve_ids(3);
        let mut newer = Batch::default();
        newer.delete(1);
        newer.put(&task(4, b"new"));
        newer.merge_older(older);
        assert!(!newer.only_deletes());
        store.commit(&mut newer, true).unwrap();
        drop(store);
        let (_, rec) = open(&dir);
        assert_eq!(ids(&rec.tasks), [2, 4], "1 was deleted after its put");
        assert_eq!(rec.next_id, 5);
    }

    #[test]
    fn puts_and_deletes_survive_a_restart() {
        let dir = TempDir::new("roundtrip");
        let (mut store, rec) = open(&dir);
        assert_eq!(rec, Recovered::default());
        let mut batch = Batch::default();
        for id in 0..5 {
            batch.put(&task(id, b"x"));
        }
        assert_eq!(batch.len(), 5);
        store.commit(&mut batch, true).unwrap();
        assert!(batch.is_empty());
        batch.delete(1);
        batch.delete(3);
        let mut retried = task(4, b"x");
        retried.attempts = 1;
        retried.not_before = 1_700_000_000_000;
        batch.put(&retried);
        store.commit(&mut batch, true).unwrap();
        drop(store);

        let (_, rec) = open(&dir);
        assert_eq!(ids(&rec.tasks), vec![0, 2, 4]);
        assert_eq!(rec.tasks[2], retried);
        assert_eq!(rec.tasks[0], task(0, b"x"));
        assert_eq!(rec.next_id, 5);
        assert_eq!(rec.failed, 0);
    }

    #[test]
    fn next_id_survives_the_purge_of_the_failure_that_held_it() {
        let dir = TempDir::new("nextid-purge");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        batch.put(&task(6, b"a"));
        batch.fail(&task(7, b"b"), "boom", 1);
        batch.reserve_ids(8);
        store.commit(&mut batch, true).unwrap();
        assert_eq!(store.purge_failed(None).unwrap(), 1);
        drop(store);
        let (_, rec) = open(&dir);
        assert_eq!(ids(&rec.tasks), [6]);
        assert_eq!(rec.next_id, 8, "7 was handed out");
    }

    #[test]
    fn next_id_survives_when_every_task_was_deleted() {
        let dir = TempDir::new("nextid");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        batch.put(&task(41, b"a"));
        store.commit(&mut batch, true).unwrap();
        batch.delete(41);
        store.commit(&mut batch, true).unwrap();
        drop(store);
        let (mut store, rec) = open(&dir);
        assert!(rec.tasks.is_empty());
        assert_eq!(rec.next_id, 42);

        // A reservation alone is persisted too, and never goes backwards.
        batch.reserve_ids(1000);
        batch.reserve_ids(900);
        assert!(!batch.is_empty());
        assert_eq!(batch.len(), 0);
        store.commit(&mut batch, true).unwrap();
        batch.reserve_ids(10);
        store.commit(&mut batch, true).unwrap();
        drop(store);
        assert_eq!(open(&dir).1.next_id, 1000);
    }

    #[test]
    fn fail_moves_a_task_and_keeps_error_and_time() {
        let dir = TempDir::new("fail");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        for id in 0..4 {
            batch.put(&task(id, b"job"));
        }
        store.commit(&mut batch, true).unwrap();
        let mut t1 = task(1, b"job");
        t1.attempts = 3;
        batch.fail(&t1, "worker 2 died: SIGSEGV", 5_000);
        batch.fail(&task(3, b"job"), "Exception: nope", 7_000);
        store.commit(&mut batch, true).unwrap();
        assert!(store.failed(0).unwrap().is_empty());
        drop(store);

        let (store, rec) = open(&dir);
        assert_eq!(ids(&rec.tasks), vec![0, 2]);
        assert_eq!(rec.failed, 2);
        assert_eq!(rec.next_id, 4);
        let failed = store.failed(10).unwrap();
        assert_eq!(
            failed,
            vec![
                (task(3, b"job"), "Exception: nope".to_string(), 7_000),
                (t1.clone(), "worker 2 died: SIGSEGV".to_string(), 5_000),
            ]
        );
        assert_eq!(store.failed(1).unwrap().len(), 1);
    }

    #[test]
    fn failed_keeps_only_the_newest_in_bounded_memory() {
        let dir = TempDir::new("failedmany");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        // Failure times run against ids, so "newest" is not "highest id".
        for id in 0..500 {
            batch.fail(&task(id, b"f"), "e", 10_000 - id);
        }
        store.commit(&mut batch, true).unwrap();
        let newest: Vec<u64> = store.failed(3).unwrap().iter().map(|f| f.0.id).collect();
        assert_eq!(newest, vec![0, 1, 2]);
        assert_eq!(store.failed(1000).unwrap().len(), 500);
    }

    #[test]
    fn purge_failed_by_id_and_all() {
        let dir = TempDir::new("purge");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        for id in 0..5 {
            batch.fail(&task(id, b"p"), "e", id);
        }
        store.commit(&mut batch, true).unwrap();
        assert_eq!(store.purge_failed(Some(&[1, 3, 99])).unwrap(), 2);
        drop(store);
        let (mut store, rec) = open(&dir);
        assert_eq!(rec.failed, 3);
        let left: Vec<u64> = store.failed(10).unwrap().iter().map(|f| f.0.id).collect();
        assert_eq!(left, vec![4, 2, 0]);
        assert_eq!(store.purge_failed(None).unwrap(), 3);
        assert_eq!(store.purge_failed(None).unwrap(), 0);
        drop(store);
        let rec = open(&dir).1;
        assert_eq!(rec.failed, 0);
        // Ids of purged tasks are not handed out again.
        assert_eq!(rec.next_id, 5);
    }

    #[test]
    fn put_then_delete_in_one_batch_leaves_nothing() {
        let dir = TempDir::new("putdel");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        batch.put(&task(7, b"old"));
        store.commit(&mut batch, true).unwrap();
        batch.put(&task(7, b"new"));
        batch.delete(7);
        batch.put(&task(8, b"short-lived"));
        batch.delete(8);
        batch.delete(9);
        batch.put(&task(9, b"back"));
        assert_eq!(batch.len(), 4, "9's removal and its put are two changes");
        store.commit(&mut batch, true).unwrap();
        drop(store);
        let rec = open(&dir).1;
        assert_eq!(rec.tasks, vec![task(9, b"back")]);
        assert_eq!(rec.next_id, 10);
    }

    #[test]
    fn recovery_orders_tasks_by_id() {
        let dir = TempDir::new("order");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        for chunk in [[300, 5, 77], [2, 1000, 64], [1, 0, 999]] {
            for id in chunk {
                batch.put(&task(id, b"o"));
            }
            store.commit(&mut batch, true).unwrap();
        }
        drop(store);
        let rec = open(&dir).1;
        assert_eq!(ids(&rec.tasks), vec![0, 1, 2, 5, 64, 77, 300, 999, 1000]);
        assert_eq!(rec.next_id, 1001);
    }

    #[test]
    fn binary_payloads_survive_byte_for_byte() {
        let dir = TempDir::new("binary");
        let (mut store, _) = open(&dir);
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let payloads: Vec<Vec<u8>> = vec![
            vec![],
            b"\0".to_vec(),
            b"a\0b\0\0".to_vec(),
            vec![0xff, 0xfe, 0xc3, 0x28, 0x80, 0x00],
            big,
        ];
        let mut batch = Batch::default();
        for (id, p) in payloads.iter().enumerate() {
            batch.put(&task(id as u64, p));
        }
        store.commit(&mut batch, true).unwrap();
        drop(store);
        let rec = open(&dir).1;
        let back: Vec<Vec<u8>> = rec.tasks.iter().map(|t| t.payload.data.to_vec()).collect();
        assert_eq!(back, payloads);
    }

    #[test]
    fn unusable_directory_is_a_clear_error() {
        let dir = TempDir::new("unusable");
        std::fs::create_dir_all(&dir.0).unwrap();
        // A file in the way (chmod would not stop root, which runs CI).
        let file = dir.0.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = TaskStore::open(&file.join("store"), |_| true).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "task_store '{}': cannot create directory: ",
                file.join("store").display()
            )),
            "{msg}"
        );

        // The directory is fine but tasks.redb cannot be a database.
        let store_dir = dir.0.join("store2");
        std::fs::create_dir_all(store_dir.join(FILE_NAME)).unwrap();
        let msg = TaskStore::open(&store_dir, |_| true)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(&format!(
                "task_store '{}': cannot open tasks.redb: ",
                store_dir.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn a_second_open_while_the_first_runs_is_locked() {
        let dir = TempDir::new("locked");
        let (store, _) = open(&dir);
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "task_store '{}' is locked by another running server",
                dir.0.display()
            )
        );
        drop(store);
        open(&dir);
    }

    #[test]
    fn a_bad_record_is_reported_with_its_id() {
        let dir = TempDir::new("badrecord");
        let (store, _) = open(&dir);
        let other = postcard::to_allocvec(&task(5, b"five")).unwrap();
        let mut valid_plus = other.clone();
        valid_plus.push(0);
        write_raw(&store, 17, &[0xff, 0xff, 0xff]);
        write_raw(&store, 18, &other);
        drop(store);
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "task_store '{}': corrupt record 17 in table 'pages': ",
                dir.0.display()
            )),
            "{err}"
        );

        drop(store_without(&dir, 17));
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err().to_string();
        assert!(
            err.ends_with("corrupt record 18 in table 'pages': holds task 5"),
            "{err}"
        );

        let db = store_without(&dir, 18);
        write_raw_in(&db, 19, &valid_plus);
        drop(db);
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err().to_string();
        assert!(
            err.ends_with("corrupt record 19 in table 'pages': 1 trailing bytes"),
            "{err}"
        );

        let db = store_without(&dir, 19);
        let txn = db.begin_write().unwrap();
        txn.open_table(PAGES)
            .unwrap()
            .insert((20, 22), [0xff_u8, 0xff].as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err().to_string();
        assert!(
            err.contains("corrupt record 20 in table 'pages': page 20..=22: "),
            "{err}"
        );
    }

    /// Writes a store in `dir` as taskq wrote it before pages: one record
    /// per task in the old table.
    fn write_legacy(dir: &TempDir, tasks: impl Iterator<Item = QueuedTask>) {
        std::fs::create_dir_all(&dir.0).unwrap();
        let db = Database::create(dir.0.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut legacy = txn.open_table(LEGACY_TASKS).unwrap();
            for t in tasks {
                let record = postcard::to_allocvec(&t).unwrap();
                legacy.insert(t.id, record.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// A store written before pages: its tasks move into pages when it is
    /// opened, in transactions of at most [`MIGRATE_AT_ONCE`] tasks or
    /// [`MIGRATE_BYTES`], and come back exactly; a damaged one is reported
    /// from the old table.
    #[test]
    fn a_store_from_before_pages_moves_its_tasks_into_pages() {
        let dir = TempDir::new("legacy");
        std::fs::create_dir_all(&dir.0).unwrap();
        // More tasks than one transaction moves, the last three large
        // enough that their bytes end a transaction too.
        let count = MIGRATE_AT_ONCE as u64 * 7 / 6 + 100;
        let stored = || (0..count).filter(|id| id % 7 != 3);
        let payload = |id: u64| match id + 3 >= count {
            true => vec![(id % 251) as u8; MIGRATE_BYTES / 2],
            false => id.to_le_bytes().to_vec(),
        };
        assert!(stored().count() > MIGRATE_AT_ONCE);
        write_legacy(&dir, stored().map(|id| task(id, &payload(id))));
        let (mut store, rec) = open(&dir);
        assert_eq!(ids(&rec.tasks), stored().collect::<Vec<_>>());
        assert!(rec
            .tasks
            .iter()
            .all(|t| t.payload.data[..] == payload(t.id)));
        assert_eq!(rec.next_id, count);
        let txn = store.db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_owned())
            .collect();
        assert!(!names.contains(&"tasks".to_owned()), "{names:?}");
        drop(txn);
        let mut batch = Batch::default();
        stored().for_each(|id| batch.delete(id));
        store.commit(&mut batch, true).unwrap();
        drop(store);
        assert!(open(&dir).1.tasks.is_empty());

        let db = Database::create(dir.0.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(LEGACY_TASKS)
            .unwrap()
            .insert(5, [0xff_u8].as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err().to_string();
        assert!(err.contains("corrupt record 5 in table 'tasks': "), "{err}");
    }

    /// Pages end at a gap in the ids and at their size limits; a read back
    /// starts inside a page and skips what is done there, and the done
    /// marks of a page survive a restart until its last task is done.
    #[test]
    fn pages_split_where_they_must_and_keep_their_done_tasks() {
        let dir = TempDir::new("pages");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        let put: Vec<u64> = (0..2_500).chain(2_600..2_700).collect();
        for &id in &put {
            let size = if id == 1_500 { 100_000 } else { 40 };
            batch.put(&task(id, &vec![b'p'; size]));
        }
        store.commit(&mut batch, true).unwrap();
        let keys: Vec<store_pages::PageKey> = {
            let txn = store.db.begin_read().unwrap();
            let pages = txn.open_table(PAGES).unwrap();
            pages
                .iter()
                .unwrap()
                .map(|e| e.unwrap().0.value())
                .collect()
        };
        assert_eq!(
            keys,
            vec![
                (0, 1_023),
                (1_024, 1_499),
                (1_500, 1_500),
                (1_501, 2_499),
                (2_600, 2_699)
            ]
        );
        (0..1_000)
            .chain(1_010..1_024)
            .chain([1_030, 1_500])
            .for_each(|id| batch.delete(id));
        store.commit(&mut batch, true).unwrap();
        let read: Vec<u64> = store
            .read(1_005, 30, None)
            .unwrap()
            .at
            .iter()
            .map(|a| a.0)
            .collect();
        let mut want: Vec<u64> = (1_005..1_010).chain(1_024..1_030).collect();
        want.extend(1_031..1_050);
        assert_eq!(read, want);
        // A done task put again (a failed task retried) is no longer done.
        batch.put(&task(1_030, b"again"));
        store.commit(&mut batch, true).unwrap();
        drop(store);
        let (store, rec) = open(&dir);
        let expected: Vec<u64> = put
            .iter()
            .copied()
            .filter(|&id| !(id < 1_000 || (1_010..1_024).contains(&id) || id == 1_500))
            .collect();
        assert_eq!(ids(&rec.tasks), expected);
        let again = rec.tasks.iter().find(|t| t.id == 1_030).unwrap();
        assert_eq!(&again.payload.data[..], b"again");
        let txn = store.db.begin_read().unwrap();
        let pages = txn.open_table(PAGES).unwrap();
        assert!(
            pages.get((0, 1_023)).unwrap().is_some(),
            "ten of its tasks wait"
        );
        assert!(
            pages.get((1_500, 1_500)).unwrap().is_none(),
            "all done: gone"
        );
        let done = txn.open_table(DONE).unwrap();
        assert!(done.get(0).unwrap().is_some());
        assert!(
            done.get(1_024).unwrap().is_none(),
            "its one done task was put again"
        );
        assert!(done.get(1_501).unwrap().is_none(), "nothing done there");
    }

    /// Random submissions (runs of new ids), tasks put again, finished,
    /// failed and retried, commits with and without a sync, reads back from
    /// anywhere and restarts, checked against a map of what the store must
    /// hold: pages, done bits and rewrites agree with a record per task.
    #[test]
    fn pages_agree_with_a_model_under_random_changes() {
        let dir = TempDir::new("model");
        let (mut store, _) = open(&dir);
        let mut queued: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut failed: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut batch = Batch::default();
        let mut next = 0u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let stored = |records: &Records| {
            let mut out = Vec::new();
            records
                .each(|t| out.push((t.id, t.payload.data.to_vec())))
                .unwrap();
            out
        };
        for step in 0..1_500u64 {
            let pick = |map: &BTreeMap<u64, Vec<u8>>, r: u64| map.keys().nth(r as usize).copied();
            match rnd(11) {
                0..=2 => {
                    for _ in 0..1 + rnd(300) {
                        let data = format!("{next}/{step}").into_bytes();
                        batch.put(&task(next, &data));
                        queued.insert(next, data);
                        next += 1;
                    }
                }
                3..=5 => {
                    for _ in 0..rnd(250) {
                        if let Some(id) = pick(&queued, rnd(queued.len() as u64)) {
                            batch.delete(id);
                            queued.remove(&id);
                        }
                    }
                }
                6 => {
                    if let Some(id) = pick(&queued, rnd(queued.len() as u64)) {
                        let data = format!("again {id}/{step}").into_bytes();
                        let mut again = task(id, &data);
                        again.attempts = 1;
                        batch.put(&again);
                        queued.insert(id, data);
                    }
                }
                7 => {
                    if let Some(id) = pick(&queued, rnd(queued.len() as u64)) {
                        let data = queued.remove(&id).unwrap();
                        batch.fail(&task(id, &data), "boom", step);
                        failed.insert(id, data);
                    }
                }
                8 => {
                    store.commit(&mut batch, rnd(2) == 0).unwrap();
                    let ids: Vec<u64> = (0..rnd(4))
                        .filter_map(|_| pick(&failed, rnd(failed.len() as u64)))
                        .collect();
                    for task in store.retry_failed(&Which::Ids(ids)).unwrap() {
                        let data = failed.remove(&task.id).unwrap();
                        assert_eq!(&task.payload.data[..], &data[..]);
                        queued.insert(task.id, data);
                    }
                }
                _ => {
                    store.commit(&mut batch, rnd(2) == 0).unwrap();
                    let from = rnd(next + 1);
                    let limit = 1 + rnd(700) as usize;
                    let read = store.read(from, limit, None).unwrap();
                    let want: Vec<(u64, Vec<u8>)> = queued
                        .range(from..)
                        .take(limit)
                        .map(|(&id, data)| (id, data.clone()))
                        .collect();
                    assert_eq!(read.exhausted, queued.range(from..).count() <= limit);
                    assert_eq!(stored(&read), want, "step {step}: read from {from}");
                }
            }
            if step % 300 == 299 {
                store.commit(&mut batch, true).unwrap();
                drop(store);
                let (again, rec) = open(&dir);
                store = again;
                let back: Vec<(u64, Vec<u8>)> = rec
                    .tasks
                    .iter()
                    .map(|t| (t.id, t.payload.data.to_vec()))
                    .collect();
                let want: Vec<(u64, Vec<u8>)> =
                    queued.iter().map(|(&id, d)| (id, d.clone())).collect();
                assert_eq!(back, want, "step {step}: after a restart");
                assert_eq!(rec.failed, failed.len() as u64);
                assert!(rec.next_id >= next);
            }
        }
    }

    /// Forks a child that runs `work` on a store in `dir` and dies without
    /// closing it (as a `kill -9` would leave it); returns whether `work`
    /// held.
    fn crashing_child(dir: &TempDir, work: fn(&mut TaskStore) -> bool) -> bool {
        // SAFETY: the child opens its own store, runs `work` on this thread
        // and exits at once, without unwinding or running destructors.
        match unsafe { libc::fork() } {
            0 => {
                let (mut store, _) = open(dir);
                let held = work(&mut store);
                crate::process::exit::now(if held { 0 } else { 1 })
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
            }
            _ => panic!("fork failed"),
        }
    }

    /// Ten tasks synced, then the first five deleted without a sync.
    fn ten_then_five_deleted_unsynced(store: &mut TaskStore) -> bool {
        let mut batch = Batch::default();
        (0..10).for_each(|id| batch.put(&task(id, b"x")));
        store.commit(&mut batch, true).unwrap();
        (0..5).for_each(|id| batch.delete(id));
        assert!(batch.only_deletes());
        store.commit(&mut batch, false).unwrap();
        store.unsynced_for().is_some()
    }

    #[test]
    fn a_commit_without_sync_is_undone_by_a_crash_until_a_synced_one_follows() {
        let dir = TempDir::new("unsynced");
        assert!(crashing_child(&dir, ten_then_five_deleted_unsynced));
        let (store, rec) = open(&dir);
        assert_eq!(rec.tasks.len(), 10, "the deletions were never synced");
        drop(store);
        let dir = TempDir::new("synced-later");
        assert!(crashing_child(&dir, |store| {
            ten_then_five_deleted_unsynced(store)
                && store.commit(&mut Batch::default(), true).is_ok()
                && store.unsynced_for().is_none()
        }));
        let (_, rec) = open(&dir);
        assert_eq!(
            ids(&rec.tasks),
            (5..10).collect::<Vec<_>>(),
            "an empty synced commit gave the sync"
        );
    }

    /// Runs of consecutive deletions are swept as ranges; what lies between
    /// them, and what else the batch does, stays exactly as asked.
    #[test]
    fn runs_of_deletions_remove_exactly_their_tasks() {
        let dir = TempDir::new("runs");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        (0..20).for_each(|id| batch.put(&task(id, b"x")));
        store.commit(&mut batch, true).unwrap();
        (2..=5).for_each(|id| batch.delete(id));
        let mut retried = task(6, b"again");
        retried.attempts = 1;
        batch.put(&retried);
        batch.delete(7);
        (9..=12).for_each(|id| batch.delete(id));
        batch.fail(&task(13, b"x"), "boom", 1);
        (14..=15).for_each(|id| batch.delete(id));
        batch.delete(99);
        store.commit(&mut batch, true).unwrap();
        drop(store);
        let (store, rec) = open(&dir);
        assert_eq!(ids(&rec.tasks), vec![0, 1, 6, 8, 16, 17, 18, 19]);
        assert_eq!(rec.tasks[2].attempts, 1);
        assert_eq!(rec.failed, 1);
        assert_eq!(store.failed(10).unwrap()[0].0.id, 13);
    }

    #[test]
    fn a_batch_with_anything_but_deletions_is_not_only_deletes() {
        let mut batch = Batch::default();
        assert!(batch.only_deletes());
        batch.delete(1);
        assert!(batch.only_deletes());
        batch.reserve_ids(9);
        assert!(!batch.only_deletes());
        let mut batch = Batch::default();
        batch.fail(&task(2, b"f"), "boom", 1);
        assert!(!batch.only_deletes());
        let mut batch = Batch::default();
        batch.put(&task(3, b"p"));
        assert!(!batch.only_deletes());
    }

    /// Opens the raw database and removes the page of `id`, to reach the
    /// next.
    fn store_without(dir: &TempDir, id: u64) -> Database {
        let db = Database::create(dir.0.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(PAGES).unwrap().remove((id, id)).unwrap();
        txn.commit().unwrap();
        db
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = TempDir::new("damaged");
        let (mut store, _) = open(&dir);
        let mut batch = Batch::default();
        for id in 0..2_000 {
            batch.put(&task(id, &[b'd'; 200]));
        }
        store.commit(&mut batch, true).unwrap();
        drop(store);
        let path = dir.0.join(FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&[0xa5; 4096]).unwrap();
        drop(f);
        let err = TaskStore::open(&dir.0, |_| true).unwrap_err();
        assert!(matches!(err, StoreError::Db { .. }), "{err:?}");
        assert!(err.to_string().starts_with("task_store '"), "{err}");
    }

    /// One step of the crash test's workload, applied both to a [`Batch`]
    /// and to the in-memory model of what the store must hold.
    enum Step {
        Put(QueuedTask),
        Delete(u64),
        Fail(QueuedTask, String, u64),
        Reserve(u64),
    }

    /// Batch `i`: 20 new tasks; of the previous batch's, 10 completed, one
    /// retried and one failed; ids reserved ahead.
    fn crash_steps(i: u64) -> Vec<Step> {
        let mut steps: Vec<Step> = (i * 20..i * 20 + 20)
            .map(|id| Step::Put(task(id, format!("b{i}\0\u{ff}{id}").as_bytes())))
            .collect();
        if i > 0 {
            let p = (i - 1) * 20;
            steps.extend((p..p + 10).map(Step::Delete));
            let mut retry = task(p + 10, format!("b{}\0\u{ff}{}", i - 1, p + 10).as_bytes());
            retry.attempts = 1;
            retry.not_before = i;
            steps.push(Step::Put(retry));
            steps.push(Step::Fail(task(p + 11, b"f"), format!("boom {i}"), i));
        }
        steps.push(Step::Reserve(i * 20 + 25));
        steps
    }

    /// What the store must hold after batches `0..=last` (none if `None`).
    fn model_after(last: Option<u64>) -> Recovered {
        let mut tasks = BTreeMap::new();
        let (mut next_id, mut failed) = (0, 0);
        for i in last.map_or(0..0, |l| 0..l + 1) {
            for step in crash_steps(i) {
                match step {
                    Step::Put(t) => {
                        next_id = next_id.max(t.id + 1);
                        tasks.insert(t.id, t);
                    }
                    Step::Delete(id) => {
                        tasks.remove(&id);
                    }
                    Step::Fail(t, _, _) => {
                        tasks.remove(&t.id);
                        failed += 1;
                    }
                    Step::Reserve(n) => next_id = next_id.max(n),
                }
            }
        }
        Recovered {
            tasks: tasks.into_values().collect(),
            next_id,
            failed,
        }
    }

    /// Starts `name`, one of this binary's ignored helper tests, on the
    /// store in `dir` (passed in `env`); its output, line by line.
    fn helper_process(
        name: &str,
        env: &str,
        dir: &TempDir,
    ) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("store::tests::{name}"),
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env, &dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    }

    const CRASH_ENV: &str = "TASKQ_STORE_CRASH_DIR";
    const CRASH_MARK: &str = "crash-child committed ";

    /// Not a test: the child of `a_kill_9_loses_no_committed_batch`, which
    /// commits batches until it is killed, reporting each on stdout.
    #[test]
    #[ignore = "helper process of a_kill_9_loses_no_committed_batch"]
    fn crash_child() {
        let Some(dir) = std::env::var_os(CRASH_ENV) else {
            return;
        };
        let (mut store, _) = TaskStore::open(Path::new(&dir), |_| true).unwrap();
        let mut batch = Batch::default();
        let started = Instant::now();
        let mut out = std::io::stdout();
        // Bounded, should the parent fail to kill it.
        for i in 0..100_000 {
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
            for step in crash_steps(i) {
                match step {
                    Step::Put(t) => batch.put(&t),
                    Step::Delete(id) => batch.delete(id),
                    Step::Fail(t, e, at) => batch.fail(&t, &e, at),
                    Step::Reserve(n) => batch.reserve_ids(n),
                }
            }
            store.commit(&mut batch, true).unwrap();
            writeln!(out, "{CRASH_MARK}{i}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn a_kill_9_loses_no_committed_batch() {
        for round in 0..3 {
            let dir = TempDir::new("crash");
            let (mut child, mut lines) = helper_process("crash_child", CRASH_ENV, &dir);
            let mut last = None;
            let mut read_until = |last: &mut Option<u64>, stop: Option<u64>| {
                for line in lines.by_ref() {
                    let line = line.unwrap();
                    if let Some(pos) = line.find(CRASH_MARK) {
                        let n: u64 = line[pos + CRASH_MARK.len()..].trim().parse().unwrap();
                        *last = Some(n);
                        if stop.is_some_and(|s| n >= s) {
                            return;
                        }
                    }
                }
            };
            // Let it get going: meanwhile the store is locked to everyone else.
            read_until(&mut last, Some(2));
            assert!(matches!(
                TaskStore::open(&dir.0, |_| true),
                Err(StoreError::Locked { .. })
            ));
            // Then SIGKILL it at a random moment.
            std::thread::sleep(Duration::from_micros(random() % 150_000));
            child.kill().unwrap();
            child.wait().unwrap();
            read_until(&mut last, None);
            let last = last.expect("the child reported no commit");

            let (mut store, rec) = TaskStore::open(&dir.0, |_| true).unwrap();
            let reported = model_after(Some(last));
            let one_more = model_after(Some(last + 1));
            assert!(
                rec == reported || rec == one_more,
                "round {round}: after batch {last}: recovered {} tasks, next_id {}, {} failed; \
                 expected {} or {} tasks",
                rec.tasks.len(),
                rec.next_id,
                rec.failed,
                reported.tasks.len(),
                one_more.tasks.len()
            );
            // And the store goes on working.
            let mut batch = Batch::default();
            batch.put(&task(rec.next_id, b"after"));
            store.commit(&mut batch, true).unwrap();
            eprintln!(
                "round {round}: killed after batch {last}, recovered {} tasks",
                rec.tasks.len()
            );
        }
    }

    const MOVE_ENV: &str = "TASKQ_STORE_MOVE_DIR";
    const MOVE_OPENING: &str = "move-child: opening";
    const MOVE_DONE: &str = "move-child: moved";

    /// Not a test: the child of `a_kill_9_while_an_old_store_moves_loses_nothing`,
    /// which opens an old store (moving its tasks into pages) and says when
    /// it starts and when it is done.
    #[test]
    #[ignore = "helper process of a_kill_9_while_an_old_store_moves_loses_nothing"]
    fn move_child() {
        let Some(dir) = std::env::var_os(MOVE_ENV) else {
            return;
        };
        let mut out = std::io::stdout();
        writeln!(out, "{MOVE_OPENING}").unwrap();
        out.flush().unwrap();
        TaskStore::open(Path::new(&dir), |_| true).unwrap();
        writeln!(out, "{MOVE_DONE}").unwrap();
        out.flush().unwrap();
    }

    /// Each step of a move is one synced transaction that deletes tasks
    /// from the old table and writes them into pages: a `kill -9` at any
    /// moment leaves every task in exactly one of the two, and the next
    /// open finishes the move.
    #[test]
    fn a_kill_9_while_an_old_store_moves_loses_nothing() {
        let count = MIGRATE_AT_ONCE as u64 * 4 + 17;
        let payload = |id: u64| id.to_le_bytes();
        let template = TempDir::new("move-template");
        write_legacy(&template, (0..count).map(|id| task(id, &payload(id))));
        let copy = || {
            let dir = TempDir::new("move");
            std::fs::create_dir_all(&dir.0).unwrap();
            std::fs::copy(template.0.join(FILE_NAME), dir.0.join(FILE_NAME)).unwrap();
            dir
        };
        let all_there = |dir: &TempDir, round: u32| {
            let (_, rec) = open(dir);
            assert_eq!(rec.tasks.len() as u64, count, "round {round}");
            for (i, t) in rec.tasks.iter().enumerate() {
                assert_eq!(
                    (t.id, &t.payload.data[..]),
                    (i as u64, &payload(i as u64)[..])
                );
            }
        };
        // How long a whole move takes here, so the kills land within one.
        let timed = copy();
        let started = Instant::now();
        drop(open(&timed));
        let whole = started.elapsed();
        all_there(&timed, 0);
        // Tasks left in the old table, when some have moved already.
        let halfway = |dir: &TempDir| {
            let db = Database::open(dir.0.join(FILE_NAME)).unwrap();
            let txn = db.begin_read().unwrap();
            let left = txn.open_table(LEGACY_TASKS).map_or(0, |t| t.len().unwrap());
            (left > 0 && left < count).then_some(left)
        };
        let mut cut_short = 0;
        for round in 1..=5 {
            let dir = copy();
            let (mut child, mut lines) = helper_process("move_child", MOVE_ENV, &dir);
            let mut said = |mark: &str| lines.by_ref().any(|l| l.unwrap().contains(mark));
            assert!(said(MOVE_OPENING), "round {round}: the child did not start");
            let quarter = (whole.as_micros() as u64 / 4).max(1);
            let at = Duration::from_micros(quarter + random() % (2 * quarter));
            std::thread::sleep(at);
            child.kill().unwrap();
            child.wait().unwrap();
            let moved = said(MOVE_DONE);
            let left = halfway(&dir);
            cut_short += u32::from(left.is_some());
            all_there(&dir, round);
            eprintln!(
                "round {round}: killed {at:?} into a move of {whole:?}; finished: {moved}; \
                 left in the old table: {left:?}"
            );
        }
        assert!(
            cut_short > 0,
            "no kill landed halfway through a move of {whole:?}"
        );
    }

    /// Commit cost, printed: 10,000 puts then 10,000 deletes in batches of
    /// 4 (as from 8 producers waiting on two alternating commits; also
    /// without a sync, redb's own cost), 100 and 10,000. Run with
    /// `cargo test --release --lib store::tests::commit_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, prints numbers"]
    fn commit_timing() {
        let dir = TempDir::new("timing");
        let (mut store, _) = open(&dir);
        let payload = [b'p'; 100];
        for (per_batch, sync) in [(4u64, true), (4, false), (100, true), (10_000, true)] {
            let base = store.next_id;
            let mut batch = Batch::default();
            let started = Instant::now();
            for chunk in 0..10_000 / per_batch {
                for id in base + chunk * per_batch..base + (chunk + 1) * per_batch {
                    batch.put(&task(id, &payload));
                    batch.reserve_ids(id + 1);
                }
                store.commit(&mut batch, sync).unwrap();
            }
            let puts = started.elapsed();
            let started = Instant::now();
            for chunk in 0..10_000 / per_batch {
                for id in base + chunk * per_batch..base + (chunk + 1) * per_batch {
                    batch.delete(id);
                }
                store.commit(&mut batch, sync).unwrap();
            }
            let deletes = started.elapsed();
            let commits = 10_000 / per_batch;
            println!(
                "batches of {per_batch}, sync {sync}: 10,000 puts in {puts:.2?} ({:.2?}/commit), \
                 10,000 deletes in {deletes:.2?} ({:.2?}/commit)",
                puts / commits as u32,
                deletes / commits as u32
            );
        }
        drop(store);
        let started = Instant::now();
        let (_, rec) = open(&dir);
        println!(
            "reopen (integrity check) of the emptied store: {:.2?}",
            started.elapsed()
        );
        assert!(rec.tasks.is_empty());
    }
}
