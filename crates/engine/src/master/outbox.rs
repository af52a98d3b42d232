//! Bytes waiting to be written to one peer. Producers append whole frames
//! synchronously; one writer task drains everything buffered with a single
//! write, so bursts of small messages cost one syscall, not one each.
//!
//! What may wait (see [`Outbox::push_lazy`]) is written at most once per
//! [`HOLD`] while nothing urgent joins it, so a burst of task results costs
//! an idle worker one wakeup per millisecond instead of one per result.
//!
//! A worker's outbox has a high-water mark: above it the master stops
//! reading the clients whose messages would land there (see
//! `Hub::holding_back`), and TCP pushes back on them, until the writer
//! brings it below the low-water mark (half the high one). Nothing is ever
//! refused or dropped: the mark only decides when to stop reading.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// A written chunk at least this large counts as a large drain: its memory
/// is worth handing back to the system (see `master::trimmer`).
pub const LARGE_CHUNK: usize = 1024 * 1024;

/// How long after a write lazy bytes may wait for the next one. Tokio's
/// timer rounds it up to the next millisecond tick, so at most about 2 ms.
pub const HOLD: Duration = Duration::from_millis(1);

/// A write buffer shared between the hub and one writer task.
#[derive(Default)]
pub struct Outbox {
    buf: RefCell<BytesMut>,
    notify: Notify,
    closed: Cell<bool>,
    /// Something pushed since the writer last took the buffer must go out
    /// now; without it, the buffer holds lazy bytes only.
    urgent: Cell<bool>,
    /// The writer is to stop once everything is written and hand its half
    /// of the socket back (the connection is being parked).
    stop: Cell<bool>,
    /// Bytes taken by the writer and not yet written.
    in_flight: Cell<usize>,
    /// Pending bytes above which readers should pause (0 = no mark).
    high_water: usize,
    /// Told (every waiter) when the outbox fell to half its mark, or
    /// closed; shared by all worker outboxes, so a paused reader wakes when
    /// any worker it may route to has room.
    space: Option<Rc<Notify>>,
    /// Told after a large chunk was written and the outbox ran empty.
    drained_large: Option<Rc<Notify>>,
}

impl Outbox {
    /// A worker's outbox: readers pause above `high_water` pending bytes
    /// (0 = never) until `space` is told; large drains are told to `trim`.
    pub fn for_worker(high_water: usize, space: Rc<Notify>, trim: Rc<Notify>) -> Self {
        Outbox {
            high_water,
            space: Some(space),
            drained_large: Some(trim),
            ..Outbox::default()
        }
    }

    /// A client's outbox: no mark (what a client is sent is never held
    /// back); large drains are told to `trim`.
    pub fn for_client(trim: Rc<Notify>) -> Self {
        Outbox {
            drained_large: Some(trim),
            ..Outbox::default()
        }
    }

    fn tell_space(&self) {
        if let Some(space) = &self.space {
            space.notify_waiters();
        }
    }

    /// Appends with `fill` and wakes the writer.
    pub fn push_with(&self, fill: impl FnOnce(&mut BytesMut)) {
        fill(&mut self.buf.borrow_mut());
        self.urgent.set(true);
        self.notify.notify_one();
    }

    /// Appends bytes that may wait up to [`HOLD`] after the last write for
    /// more to join them: written at once after a quiet spell, otherwise
    /// with the next write. Everything stays in order: an urgent push or a
    /// close takes the lazy bytes along.
    pub fn push_lazy(&self, fill: impl FnOnce(&mut BytesMut)) {
        let mut buf = self.buf.borrow_mut();
        let was_empty = buf.is_empty();
        fill(&mut buf);
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// When the writer may write what it holds: `None` for now, or the end
    /// of the hold when only lazy bytes wait and the last write (at `last`)
    /// was less than [`HOLD`] ago.
    fn hold_until(&self, last: Option<Instant>) -> Option<Instant> {
        if self.urgent.get() || self.closed.get() || self.stop.get() {
            return None;
        }
        let until = last? + HOLD;
        (until > Instant::now()).then_some(until)
    }

    /// Ends the writer once everything buffered so far is written, and
    /// wakes paused readers so they look up where their messages go now.
    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify_one();
        self.tell_space();
    }

    /// Stops the writer once everything buffered is written; it returns its
    /// half of the socket.
    pub fn stop_writer(&self) {
        self.stop.set(true);
        self.notify.notify_one();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Bytes not yet written: buffered plus the chunk being written.
    pub fn pending(&self) -> usize {
        self.buf.borrow().len() + self.in_flight.get()
    }

    /// Whether something pushed since the writer last took the buffer must
    /// go out now.
    #[cfg(test)]
    pub fn holds_urgent(&self) -> bool {
        self.urgent.get()
    }

    /// Whether readers feeding this outbox should pause.
    pub fn over_mark(&self) -> bool {
        self.high_water > 0 && !self.closed.get() && self.pending() > self.high_water
    }

    /// Removes what is buffered but not yet written (for the writer, or for
    /// the next incarnation of a worker). The buffer itself is handed over,
    /// not split, so a burst's peak allocation is freed once written instead
    /// of being kept for good.
    pub fn take(&self) -> BytesMut {
        self.urgent.set(false);
        std::mem::take(&mut *self.buf.borrow_mut())
    }

    /// Moves `other`'s unwritten bytes in front of ours; what they were
    /// is not known here, so none of it waits.
    pub fn prepend(&self, mut older: BytesMut) {
        let mut buf = self.buf.borrow_mut();
        if !older.is_empty() {
            older.extend_from_slice(&buf);
            *buf = older;
            self.urgent.set(true);
        }
    }

    /// The writer finished a chunk of `capacity` bytes of memory.
    fn written(&self, capacity: usize) {
        self.in_flight.set(0);
        if self.high_water > 0 && self.pending() <= self.high_water / 2 {
            self.tell_space();
        }
        if capacity >= LARGE_CHUNK && self.buf.borrow().is_empty() {
            if let Some(n) = &self.drained_large {
                n.notify_one();
            }
        }
    }
}

/// Drains `outbox` into `w` until it is closed and empty or the peer fails
/// (`None`), or until `stop_writer` was called and everything is written:
/// then `w` is handed back.
pub async fn write_loop<W: AsyncWrite + Unpin>(outbox: Rc<Outbox>, mut w: W) -> Option<W> {
    let mut last_write = None;
    loop {
        if !outbox.buf.borrow().is_empty() {
            if let Some(until) = outbox.hold_until(last_write) {
                // Boxed, so that a client's writer, which never holds, is
                // not made larger by a timer it does not use.
                let hold = Box::pin(tokio::time::sleep_until(until));
                tokio::select! {
                    _ = outbox.notify.notified() => {}
                    _ = hold => {}
                }
                continue;
            }
            let chunk = outbox.take();
            outbox.in_flight.set(chunk.len());
            let result = w.write_all(&chunk).await;
            last_write = Some(Instant::now());
            let capacity = chunk.capacity();
            drop(chunk);
            outbox.written(capacity);
            if result.is_err() {
                return None;
            }
            continue;
        }
        if outbox.is_closed() {
            let _ = w.shutdown().await;
            return None;
        }
        if outbox.stop.replace(false) {
            return Some(w);
        }
        outbox.notify.notified().await;
    }
}

/// The frames an outbox holds, taken out and decoded, for the rooms' tests.
#[cfg(test)]
pub fn take_frames(outbox: &Outbox) -> Vec<crate::frame::Frame> {
    use tokio_util::codec::Decoder;
    let mut bytes = outbox.take();
    let mut codec = crate::frame::FrameCodec::new(1 << 20);
    std::iter::from_fn(|| codec.decode(&mut bytes).unwrap()).collect()
}

/// The messages a worker outbox holds, as the worker would read them.
#[cfg(test)]
pub fn take_messages(outbox: &Outbox) -> Vec<crate::ipc::ToWorker> {
    take_frames(outbox)
        .into_iter()
        .map(|f| crate::ipc::ToWorker::decode(f).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio::task::JoinHandle;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn worker_outbox(high_water: usize, space: &Rc<Notify>) -> Rc<Outbox> {
        Rc::new(Outbox::for_worker(
            high_water,
            space.clone(),
            Rc::new(Notify::new()),
        ))
    }

    #[test]
    fn over_the_mark_until_the_writer_brings_it_below_half() {
        let space = Rc::new(Notify::new());
        let outbox = worker_outbox(4096, &space);
        outbox.push_with(|b| b.extend_from_slice(&[1u8; 5000]));
        assert!(outbox.over_mark());
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let (mut rd, wr) = tokio::io::duplex(1 << 20);
            let waiter = outbox.clone();
            let paused = tokio::task::spawn_local(async move {
                while waiter.over_mark() {
                    space.notified().await;
                }
                waiter.pending()
            });
            tokio::task::yield_now().await;
            assert!(!paused.is_finished(), "nothing was written yet");
            tokio::task::spawn_local(write_loop(outbox.clone(), wr));
            assert_eq!(paused.await.unwrap(), 0);
            let mut got = vec![0u8; 5000];
            rd.read_exact(&mut got).await.unwrap();
            assert_eq!(got, vec![1u8; 5000]);
        }));
    }

    #[test]
    fn the_chunk_being_written_counts_until_it_is_written() {
        let outbox = worker_outbox(1000, &Rc::new(Notify::new()));
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            // A pipe that holds 100 bytes: the writer blocks mid-chunk.
            let (mut rd, wr) = tokio::io::duplex(100);
            outbox.push_with(|b| b.extend_from_slice(&[2u8; 3000]));
            tokio::task::spawn_local(write_loop(outbox.clone(), wr));
            tokio::task::yield_now().await;
            assert!(outbox.buf.borrow().is_empty(), "the writer took it");
            assert!(outbox.over_mark(), "but has not written it");
            let mut got = vec![0u8; 3000];
            rd.read_exact(&mut got).await.unwrap();
            tokio::task::yield_now().await;
            assert!(!outbox.over_mark());
        }));
    }

    #[test]
    fn closing_wakes_paused_readers_and_a_closed_outbox_is_never_over_the_mark() {
        let space = Rc::new(Notify::new());
        let outbox = worker_outbox(10, &space);
        outbox.push_with(|b| b.extend_from_slice(&[0u8; 100]));
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let paused = tokio::task::spawn_local(async move { space.notified().await });
            tokio::task::yield_now().await;
            outbox.close();
            paused.await.unwrap();
        }));
        assert!(!outbox.over_mark());
    }

    #[test]
    fn a_client_outbox_has_no_mark() {
        let outbox = Outbox::for_client(Rc::new(Notify::new()));
        outbox.push_with(|b| b.extend_from_slice(&vec![0u8; 1 << 20]));
        assert!(!outbox.over_mark());
    }

    #[test]
    fn a_large_drain_is_reported_once_the_outbox_is_empty() {
        let trim = Rc::new(Notify::new());
        let outbox = Rc::new(Outbox::for_client(trim.clone()));
        outbox.push_with(|b| b.extend_from_slice(&vec![3u8; LARGE_CHUNK]));
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let (mut rd, wr) = tokio::io::duplex(1 << 16);
            tokio::task::spawn_local(write_loop(outbox.clone(), wr));
            let mut got = vec![0u8; LARGE_CHUNK];
            rd.read_exact(&mut got).await.unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), trim.notified())
                .await
                .expect("a large drain is reported");
        }));
    }

    #[test]
    fn a_stopped_writer_writes_everything_first_then_hands_its_half_back() {
        let outbox = Rc::new(Outbox::for_client(Rc::new(Notify::new())));
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let (mut rd, wr) = tokio::io::duplex(16);
            let writer = tokio::task::spawn_local(write_loop(outbox.clone(), wr));
            tokio::task::yield_now().await;
            outbox.push_with(|b| b.extend_from_slice(&[4u8; 100]));
            outbox.stop_writer();
            let mut got = vec![0u8; 100];
            rd.read_exact(&mut got).await.unwrap();
            assert_eq!(got, vec![4u8; 100]);
            let mut wr = writer.await.unwrap().expect("the half comes back");
            assert_eq!(outbox.pending(), 0);
            // The half still writes, and a new writer is not stopped at once.
            tokio::io::AsyncWriteExt::write_all(&mut wr, b"x")
                .await
                .unwrap();
            let again = tokio::task::spawn_local(write_loop(outbox.clone(), wr));
            outbox.close();
            assert!(again.await.unwrap().is_none(), "closed, not stopped");
            let mut rest = Vec::new();
            rd.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"x");
        }));
    }

    /// Runs `body` on a runtime whose clock moves only when every task
    /// waits (so holds are measured in its time, not the machine's), with a
    /// client outbox, its writer, and the far end of what it writes.
    fn with_paused_writer<F, Fut>(body: F)
    where
        F: FnOnce(Rc<Outbox>, DuplexStream, JoinHandle<Option<DuplexStream>>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let outbox = Rc::new(Outbox::for_client(Rc::new(Notify::new())));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(tokio::task::LocalSet::new().run_until(async {
            let (rd, wr) = tokio::io::duplex(1 << 16);
            let writer = tokio::task::spawn_local(write_loop(outbox.clone(), wr));
            body(outbox, rd, writer).await
        }));
    }

    /// Reads exactly `n` bytes; how long (on the runtime's clock) it took.
    async fn read_n(rd: &mut DuplexStream, n: usize) -> (Vec<u8>, Duration) {
        let t0 = Instant::now();
        let mut got = vec![0u8; n];
        rd.read_exact(&mut got).await.unwrap();
        (got, t0.elapsed())
    }

    /// Has the writer write a byte now: what comes next comes soon after a
    /// write.
    async fn just_written(outbox: &Outbox, rd: &mut DuplexStream) {
        outbox.push_with(|b| b.extend_from_slice(b"a"));
        assert_eq!(read_n(rd, 1).await.0, b"a");
    }

    #[test]
    fn lazy_bytes_after_a_quiet_spell_are_written_at_once() {
        with_paused_writer(|outbox, mut rd, _| async move {
            outbox.push_lazy(|b| b.extend_from_slice(b"first"));
            let now = (b"first".to_vec(), Duration::ZERO);
            assert_eq!(read_n(&mut rd, 5).await, now);
            tokio::time::sleep(HOLD * 2).await;
            outbox.push_lazy(|b| b.extend_from_slice(b"later"));
            let now = (b"later".to_vec(), Duration::ZERO);
            assert_eq!(read_n(&mut rd, 5).await, now);
        });
    }

    #[test]
    fn lazy_bytes_soon_after_a_write_wait_for_the_hold_to_end() {
        with_paused_writer(|outbox, mut rd, _| async move {
            just_written(&outbox, &mut rd).await;
            outbox.push_lazy(|b| b.extend_from_slice(b"b"));
            outbox.push_lazy(|b| b.extend_from_slice(b"c"));
            let (got, waited) = read_n(&mut rd, 2).await;
            assert_eq!(got, b"bc", "both in one write, in order");
            assert!(waited >= HOLD && waited <= HOLD * 3, "held {waited:?}");
        });
    }

    #[test]
    fn an_urgent_push_or_a_close_takes_held_lazy_bytes_along_at_once() {
        with_paused_writer(|outbox, mut rd, writer| async move {
            just_written(&outbox, &mut rd).await;
            outbox.push_lazy(|b| b.extend_from_slice(b"b"));
            tokio::task::yield_now().await;
            outbox.push_with(|b| b.extend_from_slice(b"c"));
            assert_eq!(read_n(&mut rd, 2).await, (b"bc".to_vec(), Duration::ZERO));
            outbox.push_lazy(|b| b.extend_from_slice(b"d"));
            tokio::task::yield_now().await;
            outbox.close();
            assert_eq!(read_n(&mut rd, 1).await, (b"d".to_vec(), Duration::ZERO));
            assert!(writer.await.unwrap().is_none());
        });
    }
}
