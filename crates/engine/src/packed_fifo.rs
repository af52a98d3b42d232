//! One priority level's runnable tasks in the master's memory, packed. A
//! backlog of a million tasks is mostly these, and a `QueuedTask` in a deque
//! costs 88 bytes plus an allocation of its own for the payload: about
//! 100 bytes beyond the payload, where the budget is 64. Packed, a task is
//! a 41-byte record followed by its payload in a chunk shared with its
//! neighbours, and a drained chunk is freed at once.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, BufMut, Bytes};

use crate::payload::{Encoding, Payload};
use crate::queue::{own_payload, QueuedTask, TaskRef, COPY_PAYLOAD_MAX};

/// A level's first chunk holds one ordinary record: most levels hold a
/// task or two between a push and the take that follows, and a large first
/// chunk would be allocated and freed each time the level empties. Levels
/// are the clients' priorities, so a client spreading tasks over many of
/// them must not cost more per task than a whole `QueuedTask` did.
const FIRST_CHUNK: usize = 256;
/// Chunks grow by doubling up to this size.
const MAX_CHUNK: usize = 64 * 1024;
/// id, task_id, queued_ms, src_worker, attempts, max_attempts, payload
/// length, encoding.
const RECORD: usize = 8 + 8 + 8 + 4 + 4 + 4 + 4 + 1;
/// Set in a record's encoding byte when its payload is larger than
/// [`COPY_PAYLOAD_MAX`] and waits in `large` instead of the chunk: such a
/// payload is not copied when queued, so it is not copied here either.
const OUT_OF_LINE: u8 = 0x80;

/// What a record keeps besides the payload.
struct Header {
    id: u64,
    task_id: i64,
    queued_ms: u64,
    src_worker: i32,
    attempts: u32,
    max_attempts: u32,
    encoding: Encoding,
}

/// Records back to back, read from the front.
#[derive(Debug)]
struct Chunk {
    buf: Vec<u8>,
    read: usize,
}

/// The runnable tasks of one priority, handed out in id order. Tasks pushed
/// in id order with no due time (nearly all of them) are packed; a task
/// given back by a worker, or due after a delay, keeps its full form until
/// it is taken, and `pop` merges the two by id.
#[derive(Debug, Default)]
pub struct PackedFifo {
    chunks: VecDeque<Chunk>,
    packed: usize,
    /// The id of the newest packed task, while there is one.
    back_id: u64,
    /// The capacity of the newest chunk, for the next one to double.
    last_chunk: usize,
    large: VecDeque<Bytes>,
    loose: BTreeMap<u64, QueuedTask>,
}

impl PackedFifo {
    /// Tasks waiting at this level.
    pub fn len(&self) -> usize {
        self.packed + self.loose.len()
    }

    /// Whether no task waits at this level.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `task`; its priority is the level's and is not kept.
    pub fn push(&mut self, mut task: QueuedTask) {
        if self.joins_run(task.id, task.not_before) {
            let data = task.payload.data;
            let large = (data.len() > COPY_PAYLOAD_MAX).then(|| data.clone());
            let header = Header {
                id: task.id,
                task_id: task.task_id,
                queued_ms: task.queued_ms,
                src_worker: task.src_worker,
                attempts: task.attempts,
                max_attempts: task.max_attempts,
                encoding: task.payload.encoding,
            };
            self.pack(&header, &data, large);
        } else {
            own_payload(&mut task.payload);
            self.loose.insert(task.id, task);
        }
    }

    /// Queues a task read back from a store, copying its payload straight
    /// into a chunk.
    pub fn push_stored(&mut self, task: &TaskRef<'_>) {
        if self.joins_run(task.id, task.not_before) {
            let data = task.payload.data;
            let large = (data.len() > COPY_PAYLOAD_MAX).then(|| Bytes::copy_from_slice(data));
            let header = Header {
                id: task.id,
                task_id: task.task_id,
                queued_ms: 0,
                src_worker: task.src_worker,
                attempts: task.attempts,
                max_attempts: task.max_attempts,
                encoding: task.payload.encoding,
            };
            self.pack(&header, data, large);
        } else {
            self.push(task.to_owned());
        }
    }

    /// Whether a task goes to the back of the packed run: runnable now, and
    /// newer than every packed task.
    fn joins_run(&self, id: u64, not_before: u64) -> bool {
        not_before == 0 && (self.packed == 0 || id > self.back_id)
    }

    /// The task with the lowest id, its priority set to `priority`.
    pub fn pop(&mut self, priority: i32) -> Option<QueuedTask> {
        let loose_first = self.loose.first_key_value().map(|(id, _)| *id);
        match (self.front_id(), loose_first) {
            (Some(packed), Some(loose)) if loose < packed => self.pop_loose(),
            (Some(_), _) => Some(self.unpack(priority)),
            (None, _) => self.pop_loose(),
        }
    }

    /// The id [`PackedFifo::pop`] would hand out next.
    pub fn first_id(&self) -> Option<u64> {
        let loose = self.loose.first_key_value().map(|(id, _)| *id);
        match (self.front_id(), loose) {
            (Some(packed), Some(loose)) => Some(packed.min(loose)),
            (packed, loose) => packed.or(loose),
        }
    }

    fn pop_loose(&mut self) -> Option<QueuedTask> {
        self.loose.pop_first().map(|(_, task)| task)
    }

    fn front_id(&self) -> Option<u64> {
        let chunk = self.chunks.front()?;
        Some((&chunk.buf[chunk.read..]).get_u64_le())
    }

    /// Appends a record; `large` holds a payload kept out of line (then
    /// `data` is only its length's source).
    fn pack(&mut self, h: &Header, data: &[u8], large: Option<Bytes>) {
        let need = RECORD + if large.is_none() { data.len() } else { 0 };
        let room = self
            .chunks
            .back()
            .map_or(0, |c| c.buf.capacity() - c.buf.len());
        if room < need {
            self.last_chunk = (self.last_chunk * 2).clamp(FIRST_CHUNK, MAX_CHUNK);
            self.chunks.push_back(Chunk {
                buf: Vec::with_capacity(self.last_chunk.max(need)),
                read: 0,
            });
        }
        let Some(chunk) = self.chunks.back_mut() else {
            unreachable!("a chunk with room was just ensured");
        };
        let buf = &mut chunk.buf;
        buf.put_u64_le(h.id);
        buf.put_i64_le(h.task_id);
        buf.put_u64_le(h.queued_ms);
        buf.put_i32_le(h.src_worker);
        buf.put_u32_le(h.attempts);
        buf.put_u32_le(h.max_attempts);
        buf.put_u32_le(data.len() as u32);
        let encoding = h.encoding as u8;
        match large {
            None => {
                buf.put_u8(encoding);
                buf.put_slice(data);
            }
            Some(large) => {
                buf.put_u8(encoding | OUT_OF_LINE);
                self.large.push_back(large);
            }
        }
        self.packed += 1;
        self.back_id = h.id;
    }

    fn unpack(&mut self, priority: i32) -> QueuedTask {
        let Some(chunk) = self.chunks.front_mut() else {
            unreachable!("pop unpacks only when a packed task waits");
        };
        let mut r = &chunk.buf[chunk.read..];
        let id = r.get_u64_le();
        let task_id = r.get_i64_le();
        let queued_ms = r.get_u64_le();
        let src_worker = r.get_i32_le();
        let attempts = r.get_u32_le();
        let max_attempts = r.get_u32_le();
        let len = r.get_u32_le() as usize;
        let kind = r.get_u8();
        let (data, used) = if kind & OUT_OF_LINE != 0 {
            let data = self.large.pop_front();
            crate::memory::give_back_room(&mut self.large);
            (data.unwrap_or_default(), RECORD)
        } else {
            (Bytes::copy_from_slice(&r[..len]), RECORD + len)
        };
        chunk.read += used;
        if chunk.read == chunk.buf.len() {
            self.chunks.pop_front();
        }
        self.packed -= 1;
        QueuedTask {
            id,
            src_worker,
            task_id,
            payload: Payload {
                encoding: Encoding::from_u8(kind & !OUT_OF_LINE).unwrap_or(Encoding::Raw),
                data,
            },
            attempts,
            max_attempts,
            priority,
            not_before: 0,
            queued_ms,
        }
    }

    /// Bytes the level holds for its packed tasks, for tests of the budget.
    #[cfg(test)]
    pub(crate) fn chunk_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.buf.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::task;

    fn drain(f: &mut PackedFifo, priority: i32) -> Vec<QueuedTask> {
        std::iter::from_fn(|| f.pop(priority)).collect()
    }

    #[test]
    fn every_field_comes_back_as_it_went_in() {
        let mut f = PackedFifo::default();
        let big = Bytes::from(vec![9u8; COPY_PAYLOAD_MAX + 1]);
        let tasks = [
            QueuedTask {
                src_worker: -1,
                task_id: -7,
                attempts: 2,
                max_attempts: u32::MAX,
                queued_ms: u64::MAX,
                priority: 3,
                payload: Payload {
                    encoding: Encoding::Untrusted,
                    data: Bytes::from_static(b"a:1:{i:0;s:1:\"x\";}"),
                },
                ..task(u64::MAX - 1)
            },
            QueuedTask {
                priority: 3,
                payload: Payload {
                    encoding: Encoding::Serialized,
                    data: big.clone(),
                },
                ..task(u64::MAX)
            },
        ];
        let mut first = tasks[0].clone();
        first.id = 1;
        f.push(first.clone());
        for t in &tasks {
            f.push(t.clone());
        }
        let mut empty = QueuedTask {
            priority: 3,
            ..task(u64::MAX)
        };
        empty.payload.data = Bytes::new();
        assert_eq!(
            drain(&mut f, 3),
            [first, tasks[0].clone(), tasks[1].clone()]
        );
        assert!(f.is_empty());
        f.push(empty.clone());
        assert_eq!(f.pop(3), Some(empty));
    }

    #[test]
    fn a_stored_record_read_in_place_comes_back_as_the_task_it_was() {
        let stored = |t: &QueuedTask| postcard::to_allocvec(t).unwrap();
        let tasks = [
            QueuedTask {
                src_worker: i32::MIN,
                task_id: i64::MIN,
                attempts: 7,
                max_attempts: u32::MAX,
                priority: -2,
                payload: Payload {
                    encoding: Encoding::Untrusted,
                    data: Bytes::from_static(b"b:1;"),
                },
                ..task(40)
            },
            QueuedTask {
                priority: -2,
                payload: Payload {
                    encoding: Encoding::Serialized,
                    data: Bytes::from(vec![7u8; COPY_PAYLOAD_MAX + 1]),
                },
                ..task(41)
            },
            QueuedTask {
                priority: -2,
                ..task(39)
            },
        ];
        let mut f = PackedFifo::default();
        for t in &tasks {
            let record = stored(t);
            let (view, rest): (TaskRef<'_>, _) = postcard::take_from_bytes(&record).unwrap();
            assert!(rest.is_empty());
            f.push_stored(&view);
        }
        assert_eq!(
            drain(&mut f, -2),
            [tasks[2].clone(), tasks[0].clone(), tasks[1].clone()],
            "every field, the out-of-line payload, and an id behind the packed run"
        );
    }

    #[test]
    fn given_back_and_formerly_delayed_tasks_run_in_id_order_among_packed_ones() {
        let mut f = PackedFifo::default();
        for id in [10, 11, 12, 15] {
            f.push(task(id));
        }
        let ten = f.pop(0).unwrap();
        f.push(QueuedTask {
            not_before: 5,
            ..task(13)
        });
        f.push(ten);
        f.push(task(14));
        f.push(task(16));
        let order: Vec<u64> = drain(&mut f, 0).iter().map(|t| t.id).collect();
        assert_eq!(order, [10, 11, 12, 13, 14, 15, 16]);
    }

    #[test]
    fn a_level_holding_one_task_costs_about_that_task() {
        for payload in [0, 100, 300] {
            let mut f = PackedFifo::default();
            let mut t = task(1);
            t.payload.data = Bytes::from(vec![1u8; payload]);
            f.push(t);
            assert_eq!(f.chunk_bytes(), (RECORD + payload).max(FIRST_CHUNK));
        }
    }

    #[test]
    fn a_backlog_costs_the_record_beside_its_payload_and_is_freed_as_it_drains() {
        let mut f = PackedFifo::default();
        let n = 100_000;
        let payload = 300;
        for id in 0..n {
            let mut t = task(id);
            t.payload.data = Bytes::from(vec![1u8; payload]);
            f.push(t);
        }
        let per_task = f.chunk_bytes() as f64 / n as f64 - payload as f64;
        assert!(
            per_task <= 48.0,
            "{per_task} bytes per task beyond its payload"
        );
        for _ in 0..n - 1 {
            f.pop(0).unwrap();
        }
        assert!(
            f.chunk_bytes() <= MAX_CHUNK,
            "{} bytes kept",
            f.chunk_bytes()
        );
        f.pop(0).unwrap();
        assert_eq!(f.chunk_bytes(), 0);
        assert!(f.is_empty());
    }
}
