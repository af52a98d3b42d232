//! Client connections. The first bytes decide the protocol: taskq clients
//! announce themselves with `protocol::MAGIC` and then send frames, so every
//! `send()` is exactly one onReceive; anyone else gets Swoole's semantics for
//! the configured framing (raw reads by default).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;

use super::hub::Hub;
use super::outbox::write_loop;
use super::MasterConfig;
use crate::chunk_reader::ChunkReader;
use crate::error::WireError;
use crate::frame::FrameCodec;
use crate::listener::Listener;
use crate::log::Level;
use crate::packet::PacketDecoder;
use crate::protocol::{
    code, detect, Detected, TaskRequest, KIND_AUTH, KIND_BATCH, KIND_MESSAGE, KIND_MESSAGE_ACK,
    KIND_TASK, MAGIC,
};

/// Starts accepting clients; abort the handle to stop listening.
pub fn spawn_acceptor(
    listener: &Listener,
    hub: Rc<RefCell<Hub>>,
    cfg: Rc<MasterConfig>,
) -> std::io::Result<JoinHandle<()>> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let l = TcpListener::from_std(l.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })?)?;
            tokio::task::spawn_local(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, peer)) => open_tcp(stream, peer, &hub, &cfg),
                        Err(e) => accept_failed(e).await,
                    }
                }
            })
        }
        Listener::Unix(l, _) => {
            let l = UnixListener::from_std(l.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })?)?;
            tokio::task::spawn_local(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, _)) => open(stream, None, &hub, &cfg),
                        Err(e) => accept_failed(e).await,
                    }
                }
            })
        }
    })
}

fn open_tcp(stream: TcpStream, peer: SocketAddr, hub: &Rc<RefCell<Hub>>, cfg: &Rc<MasterConfig>) {
    if cfg.open_tcp_nodelay {
        let _ = stream.set_nodelay(true);
    }
    open(stream, Some(peer), hub, cfg);
}

/// When a stop begins: takes in the connections the kernel has already
/// completed (their messages are then refused with the "server stopping"
/// error, not lost in a reset), then stops listening on every copy of the
/// socket, so that any later connection is refused at once. Abort the
/// acceptor as well.
pub fn close_door(listener: &Listener, hub: &Rc<RefCell<Hub>>, cfg: &Rc<MasterConfig>) {
    let _ = listener.set_nonblocking();
    match listener {
        Listener::Tcp(l) => {
            while let Ok((stream, peer)) = l.accept() {
                if let Ok(stream) = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream))
                {
                    open_tcp(stream, peer, hub, cfg);
                }
            }
        }
        Listener::Unix(l, _) => {
            while let Ok((stream, _)) = l.accept() {
                if let Ok(stream) = stream
                    .set_nonblocking(true)
                    .and_then(|()| UnixStream::from_std(stream))
                {
                    open(stream, None, hub, cfg);
                }
            }
        }
    }
    if let Err(e) = listener.shut() {
        crate::log!(Level::Warning, "cannot stop listening: {e}");
    }
}

/// Out of file descriptors and similar: log, pause briefly, keep serving.
pub(super) async fn accept_failed(e: std::io::Error) {
    crate::log!(Level::Warning, "accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A client socket split into the halves the reader and the writer own.
trait Socket {
    type Read: AsyncRead + Unpin + 'static;
    type Write: AsyncWrite + Unpin + 'static;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

macro_rules! socket {
    ($stream:ty, $read:ty, $write:ty) => {
        impl Socket for $stream {
            type Read = $read;
            type Write = $write;
            fn into_halves(self) -> ($read, $write) {
                self.into_split()
            }
        }
    };
}
socket!(TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf);
socket!(UnixStream, unix::OwnedReadHalf, unix::OwnedWriteHalf);

thread_local! {
    /// The master reads every socket through this one chunk (it is single
    /// threaded and never awaits mid-read), so a connection's buffer holds
    /// only bytes that arrived, and an idle connection holds none.
    static SCRATCH: RefCell<ChunkReader> = RefCell::new(ChunkReader::default());
}

/// Waits until `rd` is readable, then appends what it has to `buf`.
/// `Ok(0)` is the end of the stream. An empty `buf` gives up its
/// allocation first: what a burst grew it to is not kept while waiting.
///
/// Reads through tokio's `poll_read`, which takes a read that did not fill
/// the chunk as proof the socket is drained and waits for the next epoll
/// event, instead of a `try_read` loop, which needs a read to fail with
/// `EAGAIN` first: one `recvfrom` less per request of a client that waits
/// for its answer.
pub async fn read_available<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
    std::future::poll_fn(|cx| {
        let read = SCRATCH.with(|s| {
            s.borrow_mut().read_into(buf, |chunk| {
                let mut into = ReadBuf::new(chunk);
                match Pin::new(&mut *rd).poll_read(cx, &mut into) {
                    Poll::Ready(Ok(())) => Ok(into.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            })
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            other => Poll::Ready(other),
        }
    })
    .await
}

fn open<S: Socket>(
    stream: S,
    peer: Option<SocketAddr>,
    hub: &Rc<RefCell<Hub>>,
    cfg: &Rc<MasterConfig>,
) {
    let outbox = hub.borrow().client_outbox();
    let closer = Rc::new(Notify::new());
    let Some(fd) = hub
        .borrow_mut()
        .client_opened(peer, outbox.clone(), closer.clone())
    else {
        crate::log!(
            Level::Warning,
            "max_conn {} reached; refused a connection from {}",
            cfg.max_conn,
            peer.map(|p| p.to_string())
                .unwrap_or_else(|| "a unix socket".into())
        );
        return;
    };
    let (rd, wr) = stream.into_halves();
    tokio::task::spawn_local(write_loop(outbox, wr));
    tokio::task::spawn_local(read_loop(rd, fd, hub.clone(), cfg.clone(), closer));
}

/// How the bytes a client sends are cut into messages: taskq's frames, or
/// the server's framing options for a foreign client.
enum InboundCodec {
    Taskq(FrameCodec),
    Foreign(Box<PacketDecoder>),
}

/// What a raw client of a server with an auth_token reads before the
/// server closes the connection.
const FOREIGN_REFUSED: &str = "taskq: this server requires an auth_token, which only a taskq client (TaskClient) can present; connection closed\n";

/// How long replies to a client that has not yet shown its protocol are
/// held back (see `hub::ReplyFraming`). A TaskClient shows it with its first
/// request; a foreign client that waits for a greeting gets it this late.
pub const GREETING_HOLD: Duration = Duration::from_millis(20);

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    fd: u64,
    hub: Rc<RefCell<Hub>>,
    cfg: Rc<MasterConfig>,
    closer: Rc<Notify>,
) {
    let mut buf = BytesMut::new();
    let mut framing: Option<InboundCodec> = None;
    let mut authenticated = cfg.auth_token.is_none();
    let mut partial_since: Option<Instant> = None;
    let mut hold_until = Some(Instant::now() + GREETING_HOLD);
    let auth_deadline = (!authenticated).then(|| Instant::now() + cfg.auth_timeout);
    let result: Result<(), String> = loop {
        if framing.is_none() {
            match detect(&buf) {
                Detected::NeedMore => {}
                Detected::Taskq => {
                    let _ = buf.split_to(MAGIC.len());
                    hub.borrow_mut().client_is_taskq(fd);
                    hold_until = None;
                    framing = Some(InboundCodec::Taskq(FrameCodec::new(
                        cfg.package_max_length + 1,
                    )));
                }
                Detected::Foreign if !authenticated => {
                    hub.borrow_mut().refuse_foreign(fd, FOREIGN_REFUSED);
                    break Err(
                        "a client without taskq's protocol cannot present the auth_token; refused"
                            .into(),
                    );
                }
                Detected::Foreign => {
                    hub.borrow_mut().client_speaks_raw(fd);
                    hold_until = None;
                    framing = Some(InboundCodec::Foreign(Box::new(PacketDecoder::new(
                        cfg.packet.clone(),
                    ))))
                }
            }
        }
        if let Err(e) = drain(&mut framing, &mut buf, fd, &hub, &mut authenticated) {
            break Err(e);
        }
        partial_since = match (buf.is_empty(), partial_since) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, since) => since,
        };
        let held_back = hub.borrow().holding_back(fd);
        if let Some(space) = held_back {
            tokio::select! {
                _ = space.notified() => {}
                _ = closer.notified() => break Ok(()),
            }
            // The wait was ours, not the client's: a partial message gets
            // its full package_timeout from now.
            partial_since = partial_since.map(|_| Instant::now());
            continue;
        }
        let deadline = partial_since.map(|t| t + cfg.package_timeout);
        tokio::select! {
            r = read_available(&mut rd, &mut buf) => match r {
                Ok(0) => break finish_eof(&mut framing, &mut buf, fd, &hub, &mut authenticated),
                Ok(_) => {}
                Err(e) => break Err(e.to_string()),
            },
            _ = closer.notified() => break Ok(()),
            _ = sleep_until(hold_until) => {
                hold_until = None;
                hub.borrow_mut().client_speaks_raw(fd);
            }
            _ = sleep_until(auth_deadline.filter(|_| !authenticated)) => {
                let why = format!(
                    "the auth_token was not presented within auth_timeout ({:?})",
                    cfg.auth_timeout
                );
                if matches!(framing, Some(InboundCodec::Taskq(_))) {
                    hub.borrow().answer_error(fd, code::AUTH, &format!("{why}; connection closed"));
                }
                break Err(why);
            }
            _ = sleep_until(deadline) => {
                break Err(format!(
                    "an incomplete message ({} bytes) was not completed within package_timeout ({:?})",
                    buf.len(),
                    cfg.package_timeout
                ));
            }
        }
    };
    if let Err(e) = result {
        crate::log!(Level::Warning, "session #{fd}: {e}; connection closed");
    }
    hub.borrow_mut().client_closed(fd);
}

/// Sleeps until `deadline`, or forever without one. The timer is boxed,
/// and only made when there is a deadline: each connection's read loop
/// holds three of these, and inline timers made every idle connection
/// carry about 290 bytes for deadlines it mostly does not have.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d.into())).await,
        None => std::future::pending().await,
    }
}

fn drain(
    framing: &mut Option<InboundCodec>,
    buf: &mut BytesMut,
    fd: u64,
    hub: &Rc<RefCell<Hub>>,
    authenticated: &mut bool,
) -> Result<(), String> {
    match framing {
        None => Ok(()),
        Some(InboundCodec::Taskq(codec)) => loop {
            let frame = match codec.decode(buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => {
                    if let WireError::FrameTooLong { length, max } = e {
                        // The codec's limit counts the kind byte as well.
                        let message = format!(
                            "request of {} bytes exceeds the server's package_max_length of {} bytes",
                            length - 1,
                            max - 1
                        );
                        hub.borrow().answer_error(fd, code::TOO_LARGE, &message);
                    }
                    break Err(format!("{e} (package_max_length)"));
                }
            };
            if frame.kind == KIND_AUTH {
                let mut hub = hub.borrow_mut();
                if !hub.token_ok(&frame.body) {
                    hub.answer_error(fd, code::AUTH, "wrong auth_token");
                    break Err("wrong auth_token".into());
                }
                if !*authenticated && !hub.client_authenticated(fd) {
                    let why = format!("max_conn {} reached", hub.max_conn());
                    hub.answer_error(fd, code::MAX_CONN, &why);
                    break Err(format!("{why}; refused after authentication"));
                }
                *authenticated = true;
                hub.answer_ack(fd);
                continue;
            }
            if !*authenticated {
                hub.borrow()
                    .answer_error(fd, code::AUTH, "this server requires an auth_token");
                break Err("sent a request before presenting the auth_token".into());
            }
            match frame.kind {
                KIND_MESSAGE => hub.borrow_mut().client_message(fd, frame.body),
                KIND_MESSAGE_ACK => hub.borrow_mut().client_message_acked(fd, frame.body),
                KIND_BATCH => hub.borrow_mut().client_batch(fd, &frame.body),
                KIND_TASK => match TaskRequest::decode(frame.body) {
                    Ok(req) => hub.borrow_mut().client_task(fd, req),
                    Err(e) => {
                        hub.borrow().answer_error(
                            fd,
                            code::BAD_REQUEST,
                            &format!("malformed task: {e}"),
                        );
                        break Err(format!("malformed task: {e}"));
                    }
                },
                other => {
                    hub.borrow().answer_error(
                        fd,
                        code::BAD_REQUEST,
                        &format!("unknown message kind {other}"),
                    );
                    break Err(format!("unknown message kind {other}"));
                }
            }
        },
        Some(InboundCodec::Foreign(decoder)) => loop {
            match decoder.decode(buf) {
                Ok(Some(packet)) => hub.borrow_mut().client_message(fd, packet.freeze()),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        },
    }
}

fn finish_eof(
    framing: &mut Option<InboundCodec>,
    buf: &mut BytesMut,
    fd: u64,
    hub: &Rc<RefCell<Hub>>,
    authenticated: &mut bool,
) -> Result<(), String> {
    if framing.is_none() && !buf.is_empty() {
        *framing = Some(InboundCodec::Foreign(Box::new(PacketDecoder::new(
            crate::packet::PacketOptions {
                mode: crate::packet::PacketMode::Raw,
                max_length: usize::MAX,
            },
        ))));
    }
    drain(framing, buf, fd, hub, authenticated)?;
    match framing {
        Some(InboundCodec::Foreign(decoder)) => match decoder.decode_eof(buf) {
            Ok(Some(packet)) => {
                hub.borrow_mut().client_message(fd, packet.freeze());
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Some(InboundCodec::Taskq(codec)) => {
            codec.decode_eof(buf).map(drop).map_err(|e| e.to_string())
        }
        None => Ok(()),
    }
}
