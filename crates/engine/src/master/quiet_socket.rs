//! The master's end of a worker's socket, registered with epoll for reading
//! only. A `tokio::net::UnixStream` is registered for both directions, so
//! every time a worker reads what the master wrote (its next task), the
//! kernel's `unix_write_space` wakes the master for `EPOLLOUT`: in a backlog
//! of slow tasks that is one wakeup per task for nothing, and on a VM whose
//! idle vCPUs halt, every wakeup costs. Here the reading half is registered
//! for `EPOLLIN` only; the writing half writes without waiting, and only a
//! write that found the socket full registers (its own descriptor of the
//! socket) for `EPOLLOUT`, until the write got through.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits a non-blocking stream into its reading half (registered for
/// reading) and its writing half (a second descriptor of the same socket,
/// registered only while a write waits).
pub fn split(stream: UnixStream) -> io::Result<(QuietReader, QuietWriter)> {
    let writer = QuietWriter {
        waiting: None,
        stream: stream.try_clone()?,
    };
    // SAFETY: the `AsyncFd` owns `stream`, so its descriptor stays open and
    // the same for as long as it is registered.
    let reader = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    Ok((QuietReader(reader), writer))
}

/// The reading half: readable interest only.
pub struct QuietReader(AsyncFd<UnixStream>);

impl AsyncRead for QuietReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let room = buf.remaining();
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // As tokio's own streams do: a read that did not fill
                    // the buffer emptied the socket, so the next read waits
                    // for the next edge instead of finding `EAGAIN`.
                    if n > 0 && n < room {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The writing half. `waiting` is declared first so that it is dropped
/// (deregistered) before `stream` closes its descriptor: epoll keeps an
/// entry as long as the socket lives, not the descriptor.
pub struct QuietWriter {
    /// `stream`'s descriptor registered for writability, while a write
    /// found the socket full.
    waiting: Option<AsyncFd<RawFd>>,
    stream: UnixStream,
}

impl AsyncWrite for QuietWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match (&this.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) if n < buf.len() => return Poll::Ready(Ok(n)),
                done => {
                    this.waiting = None;
                    return Poll::Ready(done);
                }
            }
            let waiting = match &mut this.waiting {
                Some(w) => w,
                // SAFETY: `stream` owns the descriptor and is dropped only
                // after `waiting` (field order), so it stays open and the
                // same while registered.
                none => none.insert(
                    unsafe {
                        AsyncFd::register_with_interest(this.stream.as_raw_fd(), Interest::WRITABLE)
                    }
                    .map_err(|e| e.into_parts().1)?,
                ),
            };
            // Registering reports the socket at once if it already has room
            // again; the write is retried after every readiness, so an edge
            // between the failed write and here is not lost.
            std::task::ready!(waiting.poll_write_ready(cx))?.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn run(test: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test);
    }

    fn pair() -> (QuietReader, QuietWriter, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (rd, wr) = split(ours).unwrap();
        (rd, wr, theirs)
    }

    /// The event masks epoll holds for descriptor `fd`, in any epoll set of
    /// this process (from `/proc/self/fdinfo`).
    fn epoll_masks(fd: RawFd) -> Vec<u32> {
        let mut masks = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.get(1) == Some(&fd.to_string().as_str()) && words[2] == "events:" {
                    masks.push(u32::from_str_radix(words[3], 16).unwrap());
                }
            }
        }
        masks
    }

    #[test]
    fn the_reading_half_is_registered_for_reading_only_and_the_writing_half_only_while_blocked() {
        run(async {
            let (rd, mut wr, theirs) = pair();
            // The runtime's epoll set may show under more than one
            // descriptor, so each registration may be listed more than once.
            let read_masks = epoll_masks(rd.0.as_raw_fd());
            assert!(!read_masks.is_empty(), "registered");
            for mask in read_masks {
                assert_eq!(mask & libc::EPOLLOUT as u32, 0, "not for writing");
                assert_ne!(mask & libc::EPOLLIN as u32, 0, "for reading");
            }
            let fd = wr.stream.as_raw_fd();
            assert!(epoll_masks(fd).is_empty(), "idle writer: not registered");
            let data = vec![5u8; 4 << 20];
            let mut write = std::pin::pin!(wr.write_all(&data));
            assert!(
                futures_poll(&mut write).is_pending(),
                "the socket cannot hold 4 MiB"
            );
            let masks = epoll_masks(fd);
            assert!(!masks.is_empty(), "blocked writer: registered");
            assert!(masks.iter().all(|m| m & libc::EPOLLOUT as u32 != 0));
            let peer = std::thread::spawn(move || {
                let mut got = vec![0u8; 4 << 20];
                (&theirs).read_exact(&mut got).unwrap();
            });
            tokio::time::timeout(std::time::Duration::from_secs(30), write)
                .await
                .expect("the peer reads everything")
                .unwrap();
            peer.join().unwrap();
            assert!(epoll_masks(fd).is_empty(), "written: no longer registered");
        });
    }

    /// Polls `f` once.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_write_larger_than_the_socket_waits_for_room_and_arrives_whole() {
        run(async {
            let (_rd, mut wr, theirs) = pair();
            let data: Vec<u8> = (0..4 << 20).map(|i: u32| i as u8).collect();
            let expected = data.clone();
            let peer = std::thread::spawn(move || {
                let mut got = Vec::new();
                (&theirs).read_to_end(&mut got).unwrap();
                got
            });
            let written = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                wr.write_all(&data).await.unwrap();
                assert!(wr.waiting.is_none(), "no longer registered once written");
                wr.shutdown().await.unwrap();
            });
            written.await.expect("the peer reads everything");
            assert_eq!(peer.join().unwrap(), expected);
        });
    }

    #[test]
    fn reads_what_the_peer_wrote_then_the_end() {
        run(async {
            let (mut rd, _wr, theirs) = pair();
            let peer = std::thread::spawn(move || {
                (&theirs).write_all(b"hello").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                (&theirs).write_all(b" world").unwrap();
            });
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(10), rd.read_to_end(&mut got))
                .await
                .expect("the peer closes")
                .unwrap();
            assert_eq!(got, b"hello world");
            peer.join().unwrap();
        });
    }

    #[test]
    fn a_write_to_a_closed_peer_fails() {
        run(async {
            let (_rd, mut wr, theirs) = pair();
            drop(theirs);
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                wr.write_all(&[0u8; 1 << 20]),
            )
            .await
            .expect("fails without waiting");
            assert!(result.is_err());
        });
    }
}
