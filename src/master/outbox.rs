//! Bytes waiting to be written to one peer. Producers append whole frames
//! synchronously; one writer task drains everything buffered with a single
//! write, so bursts of small messages cost one syscall, not one each.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// A write buffer shared between the hub and one writer task.
#[derive(Default)]
pub struct Outbox {
    buf: RefCell<BytesMut>,
    notify: Notify,
    closed: Cell<bool>,
}

impl Outbox {
    /// Appends with `fill` and wakes the writer.
    pub fn push_with(&self, fill: impl FnOnce(&mut BytesMut)) {
        fill(&mut self.buf.borrow_mut());
        self.notify.notify_one();
    }

    /// Ends the writer once everything buffered so far is written.
    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify_one();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Removes what is buffered but not yet written (for the writer, or for
    /// the next incarnation of a worker). The buffer itself is handed over,
    /// not split, so a burst's peak allocation is freed once written instead
    /// of being kept for good.
    pub fn take(&self) -> BytesMut {
        std::mem::take(&mut *self.buf.borrow_mut())
    }

    /// Moves `other`'s unwritten bytes in front of ours.
    pub fn prepend(&self, mut older: BytesMut) {
        let mut buf = self.buf.borrow_mut();
        if !older.is_empty() {
            older.extend_from_slice(&buf);
            *buf = older;
        }
    }
}

/// Drains `outbox` into `w` until it is closed and empty or the peer fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(outbox: Rc<Outbox>, mut w: W) {
    loop {
        let chunk = outbox.take();
        if !chunk.is_empty() {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
            continue;
        }
        if outbox.is_closed() {
            let _ = w.shutdown().await;
            return;
        }
        outbox.notify.notified().await;
    }
}
