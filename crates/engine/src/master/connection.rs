//! Client connections. The first bytes decide the protocol: taskq clients
//! announce themselves with `protocol::MAGIC` and then send frames, so every
//! `send()` is exactly one onReceive; anyone else gets Swoole's semantics for
//! the configured framing (raw reads by default).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::codec::Decoder;

use super::hub::Hub;
use super::outbox::{write_loop, Outbox};
use super::parking::{self, Inbound, Parked, Resumed, PARK_AFTER};
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

/// A client socket: split into the halves the reader and the writer own,
/// put back together to be parked as a bare descriptor (see `parking`).
trait Socket: Sized + 'static {
    type Read: AsyncRead + Unpin + 'static;
    type Write: AsyncWrite + Unpin + 'static;
    /// A unix socket, not TCP.
    const UNIX: bool;
    fn into_halves(self) -> (Self::Read, Self::Write);
    fn reunite(rd: Self::Read, wr: Self::Write) -> io::Result<Self>;
    /// Takes the socket out of tokio's reactor.
    fn into_fd(self) -> io::Result<OwnedFd>;
    /// Puts a parked socket back into tokio's reactor.
    fn from_fd(fd: OwnedFd) -> io::Result<Self>;
}

macro_rules! socket {
    ($stream:ty, $std:ty, $read:ty, $write:ty, $unix:expr) => {
        impl Socket for $stream {
            type Read = $read;
            type Write = $write;
            const UNIX: bool = $unix;
            fn into_halves(self) -> ($read, $write) {
                self.into_split()
            }
            fn reunite(rd: $read, wr: $write) -> io::Result<Self> {
                rd.reunite(wr)
                    .map_err(|_| io::Error::other("halves of two different sockets"))
            }
            fn into_fd(self) -> io::Result<OwnedFd> {
                Ok(self.into_std()?.into())
            }
            fn from_fd(fd: OwnedFd) -> io::Result<Self> {
                Self::from_std(<$std>::from(fd))
            }
        }
    };
}
socket!(
    TcpStream,
    std::net::TcpStream,
    tcp::OwnedReadHalf,
    tcp::OwnedWriteHalf,
    false
);
socket!(
    UnixStream,
    std::os::unix::net::UnixStream,
    unix::OwnedReadHalf,
    unix::OwnedWriteHalf,
    true
);

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
    let link = Link {
        fd,
        hub: hub.clone(),
        cfg: cfg.clone(),
        outbox,
        closer,
    };
    tokio::task::spawn_local(serve(stream, link, Reader::fresh(cfg)));
}

/// Brings parked connections back: waits on the lot's epoll set (one tokio
/// registration for all of them) and for sessions that have a reply or a
/// close for one, and starts a task for each connection brought back. Also
/// has the memory of parked connections' tasks given back once parking
/// went quiet.
pub fn spawn_lot(hub: Rc<RefCell<Hub>>, cfg: Rc<MasterConfig>) -> io::Result<()> {
    let Some(handles) = hub.borrow().lot_handles() else {
        return Ok(());
    };
    let (epoll, wake) = handles?;
    // SAFETY: the lot's task owns this descriptor of the epoll set and
    // neither closes nor replaces it while registered.
    let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
        .map_err(io::Error::from)?;
    tokio::task::spawn_local(async move {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        // Armed while a trim for moved connections is due (Lot::next_settle).
        let mut settle: Option<Pin<Box<Sleep>>> = None;
        loop {
            if settle.is_none() {
                let next = hub.borrow().next_settle();
                settle = next.map(|after| Box::pin(tokio::time::sleep(after)));
            }
            tokio::select! {
                () = tick(&mut settle) => {
                    settle = None;
                    hub.borrow_mut().settle_parking();
                }
                ready = epoll.readable() => match ready {
                    Ok(mut guard) => match parking::ready(guard.get_inner(), &mut events) {
                        Ok(0) => guard.clear_ready(),
                        Ok(n) => {
                            let mut hub = hub.borrow_mut();
                            for event in &events[..n] {
                                let fd = event.u64;
                                hub.wake_parked(fd);
                            }
                        }
                        Err(e) => {
                            crate::log!(Level::Warning, "idle connections: epoll_wait failed: {e}");
                            guard.clear_ready();
                        }
                    },
                    Err(e) => {
                        crate::log!(Level::Error, "idle connections: cannot wait on the epoll set: {e}");
                        return;
                    }
                },
                _ = wake.notified() => {}
            }
            let resumed = hub.borrow_mut().take_resumed();
            for r in resumed {
                resume(r, &hub, &cfg);
            }
        }
    });
    Ok(())
}

/// Starts the task of a connection brought back from the lot.
fn resume(r: Resumed, hub: &Rc<RefCell<Hub>>, cfg: &Rc<MasterConfig>) {
    let reader = Reader::resumed(cfg, &r.parked);
    let link = Link {
        fd: r.fd,
        hub: hub.clone(),
        cfg: cfg.clone(),
        outbox: r.outbox,
        closer: r.closer,
    };
    if r.parked.unix {
        restart(UnixStream::from_fd(r.parked.socket), link, reader);
    } else {
        restart(TcpStream::from_fd(r.parked.socket), link, reader);
    }
}

fn restart<S: Socket>(stream: io::Result<S>, link: Link, reader: Reader) {
    match stream {
        Ok(stream) => {
            tokio::task::spawn_local(serve(stream, link, reader));
        }
        Err(e) => link.lost(&e),
    }
}

/// What one connection's task works with.
struct Link {
    fd: u64,
    hub: Rc<RefCell<Hub>>,
    cfg: Rc<MasterConfig>,
    outbox: Rc<Outbox>,
    closer: Rc<Notify>,
}

/// What the reader knows of its client between reads.
struct Reader {
    framing: Option<InboundCodec>,
    authenticated: bool,
    /// Replies are held back until then, or until the client shows its
    /// protocol (see `GREETING_HOLD`).
    hold_until: Option<Instant>,
    auth_deadline: Option<Instant>,
}

impl Reader {
    fn fresh(cfg: &MasterConfig) -> Self {
        let authenticated = cfg.auth_token.is_none();
        Reader {
            framing: None,
            authenticated,
            hold_until: Some(Instant::now() + GREETING_HOLD),
            auth_deadline: (!authenticated).then(|| Instant::now() + cfg.auth_timeout),
        }
    }

    /// Where a parked connection's reader stood (with nothing buffered, its
    /// greeting hold over and no auth deadline pending).
    fn resumed(cfg: &MasterConfig, parked: &Parked) -> Self {
        Reader {
            framing: match parked.inbound {
                Inbound::Undecided => None,
                Inbound::Taskq => Some(taskq_codec(cfg)),
                Inbound::Foreign => Some(foreign_codec(cfg)),
            },
            authenticated: parked.authenticated,
            hold_until: None,
            auth_deadline: None,
        }
    }

    fn inbound(&self) -> Inbound {
        match self.framing {
            None => Inbound::Undecided,
            Some(InboundCodec::Taskq(_)) => Inbound::Taskq,
            Some(InboundCodec::Foreign(_)) => Inbound::Foreign,
        }
    }

    /// Whether nothing but the socket needs watching: the greeting hold is
    /// over and no auth deadline runs.
    fn settled(&self) -> bool {
        self.hold_until.is_none() && self.authenticated
    }
}

fn taskq_codec(cfg: &MasterConfig) -> InboundCodec {
    InboundCodec::Taskq(FrameCodec::new(cfg.package_max_length + 1))
}

fn foreign_codec(cfg: &MasterConfig) -> InboundCodec {
    InboundCodec::Foreign(Box::new(PacketDecoder::new(cfg.packet.clone())))
}

/// How a connection's reader stopped.
enum Leave {
    /// The session is closed.
    Closed,
    /// Idle: the connection is to be parked.
    Park,
}

/// One connection's reader task, with its writer task beside it: reads
/// until the session closes (the writer then writes what is left), or until
/// the connection has been idle long enough to be parked. Reader and writer
/// stay two tasks: one task doing both cost the persistent `task()` path
/// about a third of its rate (bench scenario 2).
async fn serve<S: Socket>(stream: S, link: Link, mut reader: Reader) {
    let mut can_park = link.hub.borrow().can_park();
    let (mut rd, wr) = stream.into_halves();
    let mut writer = tokio::task::spawn_local(write_loop(link.outbox.clone(), wr));
    loop {
        if let Leave::Closed = read_loop(&mut rd, &link, &mut reader, can_park).await {
            return;
        }
        link.outbox.stop_writer();
        let Ok(Some(wr)) = (&mut writer).await else {
            // The writer failed (the peer is gone): read on, unparked.
            can_park = false;
            continue;
        };
        let stream = match S::reunite(rd, wr) {
            Ok(stream) => stream,
            Err(e) => return link.lost(&e),
        };
        let Some(stream) = park(stream, &link, &reader) else {
            return;
        };
        let (r, w) = stream.into_halves();
        rd = r;
        writer = tokio::task::spawn_local(write_loop(link.outbox.clone(), w));
    }
}

/// Parks an idle connection, or hands it back when it cannot be parked
/// (replies arrived, or a close was asked for, while its writer stopped).
fn park<S: Socket>(stream: S, link: &Link, reader: &Reader) -> Option<S> {
    let closing = pin!(link.closer.notified()).enable();
    if closing {
        // Put back for the reader, which closes the session.
        link.closer.notify_one();
        return Some(stream);
    }
    let socket = match stream.into_fd() {
        Ok(socket) => socket,
        Err(e) => {
            link.lost(&e);
            return None;
        }
    };
    let parked = Parked {
        socket,
        unix: S::UNIX,
        inbound: reader.inbound(),
        authenticated: reader.authenticated,
    };
    let refused = link.hub.borrow_mut().park(link.fd, parked);
    match refused.map_err(|parked| S::from_fd(parked.socket)) {
        Ok(()) => None,
        Err(Ok(stream)) => Some(stream),
        Err(Err(e)) => {
            link.lost(&e);
            None
        }
    }
}

impl Link {
    /// Parking or resuming the socket failed: the connection is lost.
    fn lost(&self, e: &io::Error) {
        crate::log!(
            Level::Warning,
            "session #{}: cannot park or resume the idle connection: {e}; connection closed",
            self.fd
        );
        self.hub.borrow_mut().client_closed(self.fd);
    }
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
    rd: &mut R,
    link: &Link,
    reader: &mut Reader,
    can_park: bool,
) -> Leave {
    let Link {
        fd,
        hub,
        cfg,
        outbox,
        closer,
    } = link;
    let fd = *fd;
    let mut buf = BytesMut::new();
    let mut partial_since: Option<Instant> = None;
    // Wakes every PARK_AFTER; parks when nothing was read since the last
    // time (made once per task, not per read).
    let mut quiet = can_park.then(|| Box::pin(tokio::time::sleep(PARK_AFTER)));
    let mut active = false;
    let result: Result<Leave, String> = loop {
        if reader.framing.is_none() {
            match detect(&buf) {
                Detected::NeedMore => {}
                Detected::Taskq => {
                    let _ = buf.split_to(MAGIC.len());
                    hub.borrow_mut().client_is_taskq(fd);
                    reader.hold_until = None;
                    reader.framing = Some(taskq_codec(cfg));
                }
                Detected::Foreign if !reader.authenticated => {
                    hub.borrow_mut().refuse_foreign(fd, FOREIGN_REFUSED);
                    break Err(
                        "a client without taskq's protocol cannot present the auth_token; refused"
                            .into(),
                    );
                }
                Detected::Foreign => {
                    hub.borrow_mut().client_speaks_raw(fd);
                    reader.hold_until = None;
                    reader.framing = Some(foreign_codec(cfg));
                }
            }
        }
        if let Err(e) = drain(
            &mut reader.framing,
            &mut buf,
            fd,
            hub,
            &mut reader.authenticated,
        ) {
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
                _ = closer.notified() => break Ok(Leave::Closed),
            }
            // The wait was ours, not the client's: a partial message gets
            // its full package_timeout from now.
            partial_since = partial_since.map(|_| Instant::now());
            continue;
        }
        let deadline = partial_since.map(|t| t + cfg.package_timeout);
        tokio::select! {
            r = read_available(rd, &mut buf) => match r {
                Ok(0) => break finish_eof(&mut reader.framing, &mut buf, fd, hub, &mut reader.authenticated).map(|()| Leave::Closed),
                Ok(_) => active = true,
                Err(e) => break Err(e.to_string()),
            },
            _ = closer.notified() => break Ok(Leave::Closed),
            _ = sleep_until(reader.hold_until) => {
                reader.hold_until = None;
                hub.borrow_mut().client_speaks_raw(fd);
            }
            _ = sleep_until(reader.auth_deadline.filter(|_| !reader.authenticated)) => {
                let why = format!(
                    "the auth_token was not presented within auth_timeout ({:?})",
                    cfg.auth_timeout
                );
                if matches!(reader.framing, Some(InboundCodec::Taskq(_))) {
                    hub.borrow_mut().answer_error(fd, code::AUTH, &format!("{why}; connection closed"));
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
            () = tick(&mut quiet) => {
                if !active && buf.is_empty() && reader.settled() && outbox.pending() == 0 {
                    break Ok(Leave::Park);
                }
                active = false;
                if let Some(t) = quiet.as_mut() {
                    t.as_mut().reset((Instant::now() + PARK_AFTER).into());
                }
            }
        }
    };
    match result {
        Ok(Leave::Park) => return Leave::Park,
        Ok(Leave::Closed) => {}
        Err(e) => crate::log!(Level::Warning, "session #{fd}: {e}; connection closed"),
    }
    hub.borrow_mut().client_closed(fd);
    Leave::Closed
}

/// Waits for `timer` to fire, or forever without one.
async fn tick(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
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
                        hub.borrow_mut().answer_error(fd, code::TOO_LARGE, &message);
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
                hub.borrow_mut()
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
                        hub.borrow_mut().answer_error(
                            fd,
                            code::BAD_REQUEST,
                            &format!("malformed task: {e}"),
                        );
                        break Err(format!("malformed task: {e}"));
                    }
                },
                other => {
                    hub.borrow_mut().answer_error(
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
