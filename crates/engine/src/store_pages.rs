//! How the task store lays queued tasks out in redb: in pages, each a run
//! of consecutive ids committed together, and the finished tasks of a page
//! marked aside until the whole page is done. A durable drain reads a page
//! of tasks per record and removes a record per page; with a record per
//! task, redb's work per record was most of what a store added to a drain
//! (issue 17 §3).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::store::{corrupt, db_error, StoreError};

/// Tasks not yet completed (queued, delayed, running), a page per record,
/// keyed by the page's first and last id. The value is postcard's encoding
/// of the tasks' own records as a `Vec<&[u8]>`, so a reader finds each
/// task's bytes without decoding the task.
pub const PAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("pages");
/// Which tasks of a page are done, by the page's first id, while some of
/// them are not: a bit per task, the first task's in the low bit of byte 0.
/// A page whose tasks are all done goes, and its bits with it.
pub const DONE: TableDefinition<u64, &[u8]> = TableDefinition::new("done");
/// A page takes tasks while their records add up to at most this much, so
/// that it fits one 64 KiB redb page; a single larger task is a page alone.
const PAGE_BYTES: usize = 60 * 1024;
/// And at most this many tasks, which bounds a page's done bits to 128 bytes.
const PAGE_TASKS: usize = 1024;

/// A page's key: its first and last id.
pub type PageKey = (u64, u64);

/// The task records of the page `key`, in id order. Nothing read from disk
/// is trusted: a page that does not decode, or holds another number of
/// tasks than its key spans, is reported with its first id.
fn records<'a>(dir: &Path, key: PageKey, value: &'a [u8]) -> Result<Vec<&'a [u8]>, StoreError> {
    let (first, last) = key;
    let span = span(dir, key)?;
    let tasks: Vec<&[u8]> = match postcard::take_from_bytes(value) {
        Ok((tasks, [])) => tasks,
        Ok((_, rest)) => {
            let reason = format!("page {first}..={last}: {} trailing bytes", rest.len());
            return Err(corrupt(dir, "pages", first, reason));
        }
        Err(e) => {
            return Err(corrupt(
                dir,
                "pages",
                first,
                format!("page {first}..={last}: {e}"),
            ))
        }
    };
    if tasks.len() as u64 != span {
        let reason = format!("page {first}..={last} holds {} tasks", tasks.len());
        return Err(corrupt(dir, "pages", first, reason));
    }
    Ok(tasks)
}

/// The records of page `key` that `bits` does not mark done, with their
/// ids: what a page still holds for the queue.
pub fn live<'a>(
    dir: &Path,
    key: PageKey,
    value: &'a [u8],
    bits: &'a [u8],
) -> Result<impl Iterator<Item = (u64, &'a [u8])> + 'a, StoreError> {
    let tasks = records(dir, key, value)?;
    Ok((key.0..)
        .zip(tasks)
        .filter(move |&(id, _)| !is_done(bits, id - key.0)))
}

/// Whether task `i` of a page is marked done in `bits`.
fn is_done(bits: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|byte| bits.get(byte))
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// The page holding `id`, if one does.
pub fn page_of(
    table: &impl ReadableTable<PageKey, &'static [u8]>,
    id: u64,
) -> Result<Option<PageKey>, redb::StorageError> {
    match table.range::<PageKey>(..=(id, u64::MAX))?.next_back() {
        Some(entry) => {
            let key = entry?.0.value();
            Ok((key.1 >= id).then_some(key))
        }
        None => Ok(None),
    }
}

/// Where the pages that hold ids from `id` on begin: at the page holding
/// `id`, or else after every page that starts at or before it.
fn start_at(
    table: &impl ReadableTable<PageKey, &'static [u8]>,
    id: u64,
) -> Result<Bound<PageKey>, redb::StorageError> {
    Ok(match page_of(table, id)? {
        Some(key) => Bound::Included(key),
        None => Bound::Excluded((id, u64::MAX)),
    })
}

/// Walks the pages that hold ids from `from` on, in id order, with each
/// page's done bits (empty: none done), until `each` returns false.
pub fn walk(
    dir: &Path,
    pages: &impl ReadableTable<PageKey, &'static [u8]>,
    done: &impl ReadableTable<u64, &'static [u8]>,
    from: u64,
    mut each: impl FnMut(PageKey, &[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let what = "cannot read tasks";
    let err = |e: redb::StorageError| db_error(dir, what, e);
    let start = start_at(pages, from).map_err(err)?;
    for entry in pages
        .range::<PageKey>((start, Bound::Unbounded))
        .map_err(err)?
    {
        let (key, value) = entry.map_err(err)?;
        let key = key.value();
        let bits = done.get(key.0).map_err(err)?;
        let bits = bits.as_ref().map_or(&[][..], |b| b.value());
        if !each(key, value.value(), bits)? {
            break;
        }
    }
    Ok(())
}

/// The pages of one write transaction and the done bits it changed, which
/// [`Pages::close`] writes back (and with them removes the pages that are
/// all done).
pub struct Pages<'t, 'd> {
    pages: Table<'t, PageKey, &'static [u8]>,
    done: Table<'t, u64, &'static [u8]>,
    bits: BTreeMap<PageKey, Vec<u8>>,
    dir: &'d Path,
}

impl<'t, 'd> Pages<'t, 'd> {
    /// Opens (or, in a new store, creates) both tables in `txn`.
    pub fn open(txn: &'t WriteTransaction, dir: &'d Path) -> Result<Self, StoreError> {
        let what = "cannot open the tasks' tables";
        Ok(Pages {
            pages: txn.open_table(PAGES).map_err(|e| db_error(dir, what, e))?,
            done: txn.open_table(DONE).map_err(|e| db_error(dir, what, e))?,
            bits: BTreeMap::new(),
            dir,
        })
    }

    /// The done bits of `key` as this transaction has them, as many bytes
    /// as the page needs.
    fn bits(&mut self, key: PageKey) -> Result<&mut Vec<u8>, StoreError> {
        let len = span(self.dir, key)?.div_ceil(8) as usize;
        let bits = match self.bits.entry(key) {
            Entry::Occupied(slot) => slot.into_mut(),
            Entry::Vacant(slot) => {
                let stored = self
                    .done
                    .get(key.0)
                    .map_err(|e| commit_error(self.dir, e))?;
                slot.insert(stored.map_or_else(Vec::new, |b| b.value().to_vec()))
            }
        };
        bits.resize(len, 0);
        Ok(bits)
    }

    /// Marks the tasks `ids` (sorted, without repeats) done; ids no page
    /// holds (a task put and finished within one batch) are skipped.
    pub fn finish(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        for run in ids.chunk_by(|a, b| a + 1 == *b) {
            let (a, b) = (run[0], run[run.len() - 1]);
            let start = start_at(&self.pages, a).map_err(|e| commit_error(self.dir, e))?;
            let keys = self
                .pages
                .range::<PageKey>((start, Bound::Included((b, u64::MAX))))
                .map_err(|e| commit_error(self.dir, e))?
                .map(|entry| entry.map(|(key, _)| key.value()))
                .collect::<Result<Vec<PageKey>, _>>()
                .map_err(|e| commit_error(self.dir, e))?;
            for key in keys {
                let bits = self.bits(key)?;
                for id in a.max(key.0)..=b.min(key.1) {
                    let i = id - key.0;
                    bits[(i / 8) as usize] |= 1 << (i % 8);
                }
            }
        }
        Ok(())
    }

    /// Stores `tasks` (sorted by id, each with its encoded record): a task
    /// a page already holds (a retry, with its attempts and due time
    /// changed) is replaced there and no longer done; the others go into
    /// new pages. Ids from `fresh_from` on are known to be in no page.
    pub fn put(&mut self, tasks: &[(u64, &[u8])], fresh_from: u64) -> Result<(), StoreError> {
        let mut replaced: BTreeMap<PageKey, Vec<(u64, &[u8])>> = BTreeMap::new();
        let mut fresh: Vec<(u64, &[u8])> = Vec::with_capacity(tasks.len());
        for &(id, record) in tasks {
            let page = match id < fresh_from {
                true => page_of(&self.pages, id).map_err(|e| commit_error(self.dir, e))?,
                false => None,
            };
            match page {
                Some(key) => replaced.entry(key).or_default().push((id, record)),
                None => fresh.push((id, record)),
            }
        }
        for (key, changes) in replaced {
            self.replace(key, &changes)?;
        }
        let mut start = 0;
        while start < fresh.len() {
            let mut end = start + 1;
            let mut bytes = fresh[start].1.len();
            while end < fresh.len()
                && fresh[end].0 == fresh[end - 1].0 + 1
                && end - start < PAGE_TASKS
                && bytes + fresh[end].1.len() <= PAGE_BYTES
            {
                bytes += fresh[end].1.len();
                end += 1;
            }
            let page = &fresh[start..end];
            let records: Vec<&[u8]> = page.iter().map(|&(_, r)| r).collect();
            self.insert((page[0].0, page[end - start - 1].0), &records)?;
            start = end;
        }
        Ok(())
    }

    /// Rewrites the page `key` with `changes` in place of its records.
    fn replace(&mut self, key: PageKey, changes: &[(u64, &[u8])]) -> Result<(), StoreError> {
        let stored = self
            .pages
            .get(key)
            .map_err(|e| commit_error(self.dir, e))?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        let mut records = records(self.dir, key, &stored)?;
        for &(id, record) in changes {
            records[(id - key.0) as usize] = record;
        }
        self.insert(key, &records)?;
        let bits = self.bits(key)?;
        for &(id, _) in changes {
            let i = id - key.0;
            if let Some(byte) = bits.get_mut((i / 8) as usize) {
                *byte &= !(1 << (i % 8));
            }
        }
        Ok(())
    }

    fn insert(&mut self, key: PageKey, records: &[&[u8]]) -> Result<(), StoreError> {
        let value = postcard::to_allocvec(records).map_err(|source| StoreError::Encode {
            path: self.dir.to_path_buf(),
            id: key.0,
            source,
        })?;
        self.pages
            .insert(key, value.as_slice())
            .map_err(|e| commit_error(self.dir, e))?;
        Ok(())
    }

    /// Writes the changed done bits back; a page whose tasks are all done
    /// is removed with them.
    pub fn close(mut self) -> Result<(), StoreError> {
        for (key, bits) in std::mem::take(&mut self.bits) {
            let done = bits.iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
            if done == span(self.dir, key)? {
                self.pages
                    .remove(key)
                    .map_err(|e| commit_error(self.dir, e))?;
                self.done
                    .remove(key.0)
                    .map_err(|e| commit_error(self.dir, e))?;
            } else if done == 0 {
                self.done
                    .remove(key.0)
                    .map_err(|e| commit_error(self.dir, e))?;
            } else {
                self.done
                    .insert(key.0, bits.as_slice())
                    .map_err(|e| commit_error(self.dir, e))?;
            }
        }
        Ok(())
    }
}

/// How many ids the page `key` spans. Nothing read from disk is trusted:
/// a key that ends before it starts, or spans more tasks than a page
/// holds, is reported rather than sized for.
fn span(dir: &Path, key: PageKey) -> Result<u64, StoreError> {
    match key.1.checked_sub(key.0) {
        Some(n) if n < PAGE_TASKS as u64 => Ok(n + 1),
        _ => {
            let reason = format!("page {}..={} cannot be a page", key.0, key.1);
            Err(corrupt(dir, "pages", key.0, reason))
        }
    }
}

/// The error for a failed operation of redb's within a commit.
fn commit_error(dir: &Path, e: impl Into<redb::Error>) -> StoreError {
    db_error(dir, "cannot commit", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_bits_read_back_as_set() {
        let bits = [0b0000_0101, 0b1000_0000];
        let done: Vec<u64> = (0..20).filter(|&i| is_done(&bits, i)).collect();
        assert_eq!(done, vec![0, 2, 15]);
        assert!(!is_done(&[], 0), "no bits: none done");
    }

    #[test]
    fn a_page_must_hold_as_many_tasks_as_its_key_spans() {
        let dir = Path::new("/x");
        let value = postcard::to_allocvec(&vec![&b"a"[..], &b"b"[..]]).unwrap();
        assert_eq!(
            records(dir, (4, 5), &value).unwrap(),
            vec![&b"a"[..], &b"b"[..]]
        );
        let err = records(dir, (4, 6), &value).unwrap_err().to_string();
        assert!(
            err.ends_with("corrupt record 4 in table 'pages': page 4..=6 holds 2 tasks"),
            "{err}"
        );
        let err = records(dir, (6, 4), &value).unwrap_err().to_string();
        assert!(
            err.ends_with("corrupt record 6 in table 'pages': page 6..=4 cannot be a page"),
            "{err}"
        );
        let err = records(dir, (0, u64::MAX), &value).unwrap_err().to_string();
        assert!(
            err.ends_with("page 0..=18446744073709551615 cannot be a page"),
            "{err}"
        );
        assert_eq!(
            span(dir, (7, 7 + PAGE_TASKS as u64 - 1)).unwrap(),
            PAGE_TASKS as u64
        );
        assert!(span(dir, (7, 7 + PAGE_TASKS as u64)).is_err());
        let mut longer = value.clone();
        longer.push(0);
        let err = records(dir, (4, 5), &longer).unwrap_err().to_string();
        assert!(err.ends_with("page 4..=5: 1 trailing bytes"), "{err}");
        assert!(records(dir, (4, 5), &[0xff, 0xff]).is_err());
    }
}
