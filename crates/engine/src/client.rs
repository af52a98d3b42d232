//! The blocking client behind `TaskClient`. It runs in ordinary PHP
//! processes (CLI, FPM), so it uses plain blocking sockets with timeouts and
//! no threads or runtime. Without framing options it speaks taskq's framed
//! protocol, so one `send()` is one `onReceive` and one `recv()` is one
//! server `send()`; with Swoole framing options it speaks those instead.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::socket::{recv, send, MsgFlags};
use tokio_util::codec::Decoder;

use crate::ack_wait::AckWait;
use crate::chunk_reader::ChunkReader;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::frame::{FrameCodec, HEADER_LEN};
use crate::listener::SockType;
use crate::packet::{PacketDecoder, PacketMode};
use crate::protocol::{
    Answer, TaskRequest, KIND_AUTH, KIND_BATCH, KIND_MESSAGE, KIND_MESSAGE_ACK, MAGIC,
};

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> i32 {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(t)),
            Stream::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(t)),
            Stream::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// One read that never blocks (EAGAIN when nothing is there).
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
    }
}

/// Younger than this, a connection cannot have been greeted yet: a greeting
/// needs the master to accept it, a worker to run onConnect and the master
/// to write, several process wakeups. The seed pattern's send() comes
/// sooner, so it pays no check.
const GREETING_FLOOR: Duration = Duration::from_micros(10);

/// How long a liveness poll that found nothing to read stands for "no
/// greeting has arrived": the request that made it writes right after.
const QUIET_TRUSTED: Duration = Duration::from_millis(1);

/// Most unframed bytes kept from before the magic: a greeting, not a stream.
const MAX_UNFRAMED: usize = 1 << 20;

/// The socket with its send/recv timeout, which is set on the socket only
/// before the first call that could block: a connect-send-close whose send
/// fits in the socket buffer then costs no `setsockopt` at all.
struct Timed {
    stream: Stream,
    timeout: Duration,
    read_timeout_set: bool,
    write_timeout_set: bool,
}

impl Timed {
    fn fd(&self) -> i32 {
        self.stream.fd()
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.read_timeout_set {
            self.stream.set_read_timeout(self.timeout)?;
            self.read_timeout_set = true;
        }
        self.stream.read(buf)
    }

    /// Writes everything; MSG_NOSIGNAL so a closed peer is an error, not a
    /// SIGPIPE that kills the PHP process. Tries without blocking first and
    /// sets the timeout only when the socket buffer is full.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let flags = if self.write_timeout_set {
                MsgFlags::MSG_NOSIGNAL
            } else {
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT
            };
            let e = match send(self.fd(), data, flags) {
                Ok(n) => {
                    data = &data[n..];
                    continue;
                }
                Err(errno) => io::Error::from(errno),
            };
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if !self.write_timeout_set => {
                    self.stream.set_write_timeout(self.timeout)?;
                    self.write_timeout_set = true;
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }
}

/// How the server's bytes are cut into replies: taskq's frames, or the
/// client's framing options (a Swoole server, or `taskq_protocol` off).
enum Decoding {
    Taskq(FrameCodec),
    Packets(Box<PacketDecoder>),
}

/// A connected client socket.
pub struct Connection {
    stream: Timed,
    wire: Decoding,
    buf: BytesMut,
    out: BytesMut,
    /// Server messages that arrived while we waited for an acknowledgement.
    pending: VecDeque<Bytes>,
    ack: bool,
    /// Made at the first read: its 64 KiB scratch chunk would be a calloc
    /// and memset on every connect, and most seed-pattern connections never
    /// read.
    chunks: Option<ChunkReader>,
    /// The protocol magic has not been sent yet: it goes out with the first
    /// frame, so a connect-send-close is one write (one wakeup of the
    /// server). A connection that never sends needs no magic.
    hello_pending: bool,
    /// When connect() returned, to tell whether the server may have sent
    /// something before it knew this client's protocol.
    connected_at: Instant,
    /// When the liveness check a request makes first
    /// ([`Connection::is_alive`]) last found nothing to read: looking for a
    /// greeting right after it would only cost a `recvfrom` that fails (a
    /// tenth of a seed-pattern enqueue).
    quiet_at: Cell<Option<Instant>>,
    /// Whether waiting for acks by polling has been paying off.
    ack_wait: AckWait,
}

fn is_raw(d: &PacketDecoder) -> bool {
    matches!(d.options().mode, PacketMode::Raw)
}

/// Largest raw `recv()`, as Swoole caps it.
pub const MAX_RAW_RECV: usize = 65535;

/// `taskMulti()` writes at most this many tasks, or about this many bytes
/// (one larger task goes alone), before reading their answers: the batch
/// and its answers stay within the sockets' buffers, so neither side
/// holds a large backlog in memory.
const MULTI_BATCH_TASKS: usize = 1024;
const MULTI_BATCH_BYTES: usize = 256 * 1024;

fn resolve(host: &str, port: u16, kind: SockType) -> Result<SocketAddr, ClientError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| ClientError::os(&format!("cannot resolve '{host}'"), &e))?;
    addrs
        .into_iter()
        .find(|a| a.is_ipv6() == (kind == SockType::Tcp6))
        .ok_or_else(|| ClientError::Os {
            code: libc::EINVAL,
            message: format!("'{host}' has no address of the socket's family"),
        })
}

impl Connection {
    /// Connects within `timeout`, which then also bounds every send and
    /// recv, as Swoole's synchronous client does.
    pub fn connect(
        kind: SockType,
        host: &str,
        port: u16,
        timeout: Duration,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let io_timeout = config
            .timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(timeout);
        let timeout = config
            .connect_timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(timeout);
        let fail = |e: io::Error| {
            let target = if kind == SockType::UnixStream {
                host.to_owned()
            } else {
                format!("{host}:{port}")
            };
            ClientError::os(&format!("connect to server[{target}] failed"), &e)
        };
        let stream = match kind {
            SockType::UnixStream => Stream::Unix(UnixStream::connect(host).map_err(fail)?),
            SockType::Tcp | SockType::Tcp6 => {
                let addr = resolve(host, port, kind)?;
                let s = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
                // Off is the socket's default: no syscall to say so again.
                if config.open_tcp_nodelay {
                    s.set_nodelay(true).map_err(fail)?;
                }
                Stream::Tcp(s)
            }
        };
        let max = config.packet.max_length;
        let mut conn = Connection {
            stream: Timed {
                stream,
                // A zero Duration would mean "no timeout" to setsockopt.
                timeout: io_timeout.max(Duration::from_micros(1)),
                read_timeout_set: false,
                write_timeout_set: false,
            },
            wire: if config.has_framing() || !config.taskq_protocol {
                Decoding::Packets(Box::new(PacketDecoder::new(config.packet.clone())))
            } else {
                Decoding::Taskq(FrameCodec::new(max + 1))
            },
            buf: BytesMut::new(),
            out: BytesMut::new(),
            pending: VecDeque::new(),
            ack: config.ack,
            chunks: None,
            ack_wait: AckWait::default(),
            hello_pending: false,
            connected_at: Instant::now(),
            quiet_at: Cell::new(None),
        };
        if !matches!(conn.wire, Decoding::Taskq(_)) {
            if config.ack || config.auth_token.is_some() {
                return Err(ClientError::NeedsTaskqProtocol("'ack' or 'auth_token'"));
            }
            return Ok(conn);
        }
        conn.hello_pending = true;
        if let Some(token) = &config.auth_token {
            // A wrong token must fail connect(), so this one waits.
            conn.start_frames(HEADER_LEN + token.len());
            FrameCodec::put(&mut conn.out, KIND_AUTH, token.as_bytes());
            conn.flush_out()?;
            conn.answer()?;
        }
        Ok(conn)
    }

    /// Empties `out` for the next frames (about `size` bytes), keeping the
    /// magic in front while it has not been sent.
    fn start_frames(&mut self, size: usize) {
        self.out.clear();
        self.out.reserve(MAGIC.len() + size);
        if self.hello_pending {
            self.out.extend_from_slice(&MAGIC);
        }
    }

    /// Writes `out` (the magic goes with it).
    fn flush_out(&mut self) -> Result<(), ClientError> {
        if self.hello_pending {
            self.keep_unframed()?;
        }
        let out = std::mem::take(&mut self.out);
        let sent = self.stream.write_all(&out);
        self.out = out;
        sent.map_err(|e| ClientError::os("send failed", &e))?;
        self.hello_pending = false;
        Ok(())
    }

    /// Keeps what the server sent before it saw the magic (a greeting from
    /// onConnect), which it sent unframed, as one message for `recv()`.
    /// The master holds such a greeting back while a new client is silent
    /// (`master::connection::GREETING_HOLD`) and frames it once the magic
    /// arrives, so this finds one only when the first call comes later.
    fn keep_unframed(&mut self) -> Result<(), ClientError> {
        let just_polled_quiet = self
            .quiet_at
            .take()
            .is_some_and(|at| at.elapsed() < QUIET_TRUSTED);
        if self.connected_at.elapsed() < GREETING_FLOOR || just_polled_quiet {
            return Ok(());
        }
        let mut raw = BytesMut::new();
        let chunks = self.chunks.get_or_insert_with(ChunkReader::default);
        while raw.len() < MAX_UNFRAMED {
            match chunks.read_into(&mut raw, |c| self.stream.stream.read_now(c)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(ClientError::os("recv() failed", &e)),
            }
        }
        if !raw.is_empty() {
            self.pending.push_back(raw.freeze());
        }
        Ok(())
    }

    /// Whether the server is still there: a pooled connection whose server
    /// restarted reads as closed (or errors) without blocking.
    /// A connection younger than [`GREETING_FLOOR`] is taken as alive
    /// unpolled: the server cannot have closed it yet, as it cannot have
    /// greeted it, and the seed pattern's send() then costs one syscall
    /// less. A close in that instant fails the write, as one arriving just
    /// after a poll would.
    pub fn is_alive(&self) -> bool {
        if self.connected_at.elapsed() < GREETING_FLOOR {
            return true;
        }
        // Raw poll(2): nix 0.32's `PollFlags` has no POLLRDHUP, the flag
        // that tells a peer's half-close apart from data to read.
        let mut pfd = libc::pollfd {
            fd: self.stream.fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n < 0 {
            return false;
        }
        self.quiet_at.set((n == 0).then(Instant::now));
        if n == 0 {
            return true;
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP | libc::POLLNVAL) != 0 {
            return false;
        }
        let mut byte = [0u8; 1];
        let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(recv(self.stream.fd(), &mut byte, peek), Ok(n) if n > 0)
    }

    fn next_frame(&mut self) -> Result<Option<crate::frame::Frame>, ClientError> {
        loop {
            if let Decoding::Taskq(codec) = &mut self.wire {
                if let Some(f) = codec
                    .decode(&mut self.buf)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                {
                    return Ok(Some(f));
                }
            } else {
                return Err(ClientError::NeedsTaskqProtocol("this request"));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Waits for the server's ACK or ERROR; messages that come first are
    /// kept for `recv()`.
    fn answer(&mut self) -> Result<u64, ClientError> {
        match self.any_answer()? {
            Answer::Ack(v) => Ok(v),
            Answer::Reply(_) => Err(ClientError::Protocol(
                "the server answered with a document where an acknowledgement was due".into(),
            )),
            Answer::Error { code, message } => Err(ClientError::Server { code, message }),
        }
    }

    /// Waits for the server's answer of any kind; an ERROR becomes the
    /// server's error.
    fn any_answer(&mut self) -> Result<Answer, ClientError> {
        if self.buf.is_empty() && self.ack_wait.should_spin() {
            let stream = &self.stream.stream;
            let buf = &mut self.buf;
            let chunks = self.chunks.get_or_insert_with(ChunkReader::default);
            self.ack_wait
                .spin(|| match chunks.read_into(buf, |c| stream.read_now(c)) {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                    Err(e) => Err(e),
                })
                .map_err(|e| ClientError::os("recv() failed", &e))?;
        }
        loop {
            let Some(frame) = self.next_frame()? else {
                return Err(ClientError::Os {
                    code: libc::ECONNRESET,
                    message: "the server closed the connection before answering".into(),
                });
            };
            match frame.kind {
                KIND_MESSAGE => self.pending.push_back(frame.body),
                kind => {
                    return match Answer::decode(kind, frame.body)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?
                    {
                        Answer::Error { code, message } => {
                            Err(ClientError::Server { code, message })
                        }
                        answer => Ok(answer),
                    }
                }
            }
        }
    }

    /// After a failed write: what the server answered before it closed
    /// the connection, already received. Acknowledgements and refusals go
    /// to `answers`, messages to `recv()`; returns the first refusal (one
    /// longer than the server's `package_max_length`, say), which tells
    /// why better than the write's "Broken pipe".
    fn last_words(&mut self, answers: &mut Vec<Result<u64, ClientError>>) -> Option<ClientError> {
        let stream = &self.stream.stream;
        let chunks = self.chunks.get_or_insert_with(ChunkReader::default);
        while matches!(chunks.read_into(&mut self.buf, |c| stream.read_now(c)), Ok(n) if n > 0) {}
        let Decoding::Taskq(codec) = &mut self.wire else {
            return None;
        };
        let mut refusal = None;
        while let Ok(Some(frame)) = codec.decode(&mut self.buf) {
            match frame.kind {
                KIND_MESSAGE => self.pending.push_back(frame.body),
                kind => match Answer::decode(kind, frame.body) {
                    Ok(Answer::Ack(id)) => answers.push(Ok(id)),
                    Ok(Answer::Error { code, message }) => {
                        refusal.get_or_insert_with(|| ClientError::Server {
                            code,
                            message: message.clone(),
                        });
                        answers.push(Err(ClientError::Server { code, message }));
                    }
                    Ok(Answer::Reply(_)) | Err(_) => {}
                },
            }
        }
        refusal
    }

    /// `TaskClient::task()`: returns the task id once the server holds the
    /// task (on disk, with a task store).
    pub fn submit(&mut self, req: &TaskRequest) -> Result<u64, ClientError> {
        if !matches!(self.wire, Decoding::Taskq(_)) {
            return Err(ClientError::NeedsTaskqProtocol("task()"));
        }
        self.start_frames(64 + req.payload.data.len());
        req.encode(&mut self.out);
        if let Err(e) = self.flush_out() {
            return Err(self.last_words(&mut Vec::new()).unwrap_or(e));
        }
        self.answer()
    }

    /// `TaskClient::batch()`: the progress of batch `name` as the server
    /// counts it (total, done, failed, pending, failures by reason).
    pub fn batch(&mut self, name: &str) -> Result<serde_json::Value, ClientError> {
        if !matches!(self.wire, Decoding::Taskq(_)) {
            return Err(ClientError::NeedsTaskqProtocol("batch()"));
        }
        self.start_frames(16 + name.len());
        FrameCodec::put(&mut self.out, KIND_BATCH, name.as_bytes());
        if let Err(e) = self.flush_out() {
            return Err(self.last_words(&mut Vec::new()).unwrap_or(e));
        }
        match self.any_answer()? {
            Answer::Reply(body) => serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("batch report: {e}"))),
            _ => Err(ClientError::Protocol(
                "the server acknowledged a batch question instead of answering it".into(),
            )),
        }
    }

    /// `TaskClient::taskMulti()`: submits `reqs` a batch per write and
    /// reads the batch's answers in order, so a thousand tasks cost about
    /// one round trip instead of a thousand. Each answer (the id, or the
    /// server's refusal of that task) is pushed to `answers` as it comes.
    /// An error ends it: the connection failed, and `answers` holds what
    /// was answered before.
    pub fn submit_many(
        &mut self,
        reqs: &[TaskRequest],
        answers: &mut Vec<Result<u64, ClientError>>,
    ) -> Result<(), ClientError> {
        if !matches!(self.wire, Decoding::Taskq(_)) {
            return Err(ClientError::NeedsTaskqProtocol("taskMulti()"));
        }
        let mut rest = reqs;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take(MULTI_BATCH_TASKS)
                .take_while(|r| {
                    let first = bytes == 0;
                    bytes += 64 + r.payload.data.len();
                    first || bytes <= MULTI_BATCH_BYTES
                })
                .count();
            let (batch, later) = rest.split_at(n);
            self.start_frames(bytes);
            for req in batch {
                req.encode(&mut self.out);
            }
            if let Err(e) = self.flush_out() {
                return Err(self.last_words(answers).unwrap_or(e));
            }
            for _ in batch {
                match self.answer() {
                    Err(e @ ClientError::Server { .. }) => answers.push(Err(e)),
                    Err(e) => return Err(e),
                    Ok(id) => answers.push(Ok(id)),
                }
            }
            rest = later;
        }
        Ok(())
    }

    /// Sends one message; returns the number of payload bytes sent.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, ClientError> {
        if data.is_empty() {
            return Err(ClientError::EmptyData);
        }
        match &self.wire {
            Decoding::Taskq(_) => {
                self.start_frames(HEADER_LEN + data.len());
                let kind = if self.ack {
                    KIND_MESSAGE_ACK
                } else {
                    KIND_MESSAGE
                };
                FrameCodec::put(&mut self.out, kind, data);
                self.flush_out()?;
            }
            Decoding::Packets(_) => self
                .stream
                .write_all(data)
                .map_err(|e| ClientError::os("send failed", &e))?,
        }
        if self.ack {
            self.answer()?;
        }
        Ok(data.len())
    }

    fn fill(&mut self) -> Result<bool, ClientError> {
        let stream = &mut self.stream;
        let chunks = self.chunks.get_or_insert_with(ChunkReader::default);
        match chunks.read_into(&mut self.buf, |c| stream.read(c)) {
            Ok(n) => Ok(n > 0),
            Err(e) => Err(ClientError::os("recv() failed", &e)),
        }
    }

    /// Receives one message. `Ok(None)` means the server closed the
    /// connection (PHP sees ""). In raw mode at most `size` bytes of whatever
    /// arrived, unless `waitall` asks for exactly `size`.
    pub fn recv(&mut self, size: usize, waitall: bool) -> Result<Option<Bytes>, ClientError> {
        if self.hello_pending {
            // The server frames what it sends only for a client that has
            // announced itself.
            self.start_frames(0);
            self.flush_out()?;
        }
        if let Some(msg) = self.pending.pop_front() {
            return Ok(Some(msg));
        }
        loop {
            let decoded = match &mut self.wire {
                Decoding::Taskq(codec) => {
                    let mut message = None;
                    while let Some(f) = codec
                        .decode(&mut self.buf)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?
                    {
                        if f.kind == KIND_MESSAGE {
                            message = Some(f.body);
                            break;
                        }
                    }
                    message
                }
                Decoding::Packets(d) if is_raw(d) => {
                    let want = if waitall { size } else { 1 };
                    if !self.buf.is_empty() && self.buf.len() >= want.min(size) {
                        let n = self.buf.len().min(size);
                        Some(self.buf.split_to(n).freeze())
                    } else {
                        None
                    }
                }
                Decoding::Packets(d) => d
                    .decode(&mut self.buf)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                    .map(BytesMut::freeze),
            };
            if let Some(msg) = decoded {
                return Ok(Some(msg));
            }
            if !self.fill()? {
                if matches!(&self.wire, Decoding::Packets(d) if is_raw(d)) && !self.buf.is_empty() {
                    let n = self.buf.len().min(size);
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Write};
    use std::os::unix::net::UnixListener;

    /// A unix socket path in a fresh directory, removed on drop.
    struct SocketDir(std::path::PathBuf);

    impl Drop for SocketDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A unix listener in a fresh directory; the connection is accepted
    /// after `connect` returns (the backlog holds it meanwhile).
    fn listen(name: &str) -> (UnixListener, String, SocketDir) {
        let dir = std::env::temp_dir().join(format!("taskq-client-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock").to_string_lossy().into_owned();
        (UnixListener::bind(&path).unwrap(), path, SocketDir(dir))
    }

    fn connect(path: &str, config: &ClientConfig) -> Connection {
        Connection::connect(
            SockType::UnixStream,
            path,
            0,
            Duration::from_secs(5),
            config,
        )
        .unwrap()
    }

    fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        FrameCodec::put(&mut b, kind, body);
        b.to_vec()
    }

    fn read_all(peer: &mut UnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn the_magic_goes_out_with_the_first_frame() {
        let (listener, path, _dir) = listen("first-frame");
        let mut conn = connect(&path, &ClientConfig::new());
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            peer.read(&mut byte).unwrap_err().kind(),
            ErrorKind::WouldBlock,
            "nothing is written at connect"
        );
        peer.set_nonblocking(false).unwrap();
        conn.send(b"one").unwrap();
        conn.send(b"two").unwrap();
        drop(conn);
        let mut expected = MAGIC.to_vec();
        expected.extend(frame(KIND_MESSAGE, b"one"));
        expected.extend(frame(KIND_MESSAGE, b"two"));
        assert_eq!(read_all(&mut peer), expected, "the magic is sent once");
    }

    #[test]
    fn a_connection_that_never_sends_writes_nothing() {
        let (listener, path, _dir) = listen("silent");
        drop(connect(&path, &ClientConfig::new()));
        let (mut peer, _) = listener.accept().unwrap();
        assert_eq!(read_all(&mut peer), b"");
    }

    #[test]
    fn recv_before_any_send_announces_the_protocol_first() {
        let (listener, path, _dir) = listen("recv-first");
        let mut conn = connect(&path, &ClientConfig::new());
        let (mut peer, _) = listener.accept().unwrap();
        let server = std::thread::spawn(move || {
            let mut magic = [0u8; 8];
            peer.read_exact(&mut magic).unwrap();
            peer.write_all(&frame(KIND_MESSAGE, b"welcome")).unwrap();
            magic
        });
        assert_eq!(conn.recv(65535, false).unwrap().unwrap(), "welcome");
        assert_eq!(server.join().unwrap(), MAGIC);
    }

    #[test]
    fn the_auth_token_is_checked_at_connect() {
        let (listener, path, _dir) = listen("auth");
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut hello = vec![0u8; MAGIC.len() + frame(KIND_AUTH, b"t0ken").len()];
            peer.read_exact(&mut hello).unwrap();
            let mut error = BytesMut::new();
            crate::protocol::put_error(&mut error, crate::protocol::code::AUTH, "wrong auth_token");
            peer.write_all(&error).unwrap();
            hello
        });
        let mut config = ClientConfig::new();
        config.auth_token = Some("t0ken".into());
        let err = Connection::connect(
            SockType::UnixStream,
            &path,
            0,
            Duration::from_secs(5),
            &config,
        )
        .err()
        .expect("refused at connect");
        assert_eq!(err.code(), crate::protocol::code::AUTH as i32, "{err}");
        let mut expected = MAGIC.to_vec();
        expected.extend(frame(KIND_AUTH, b"t0ken"));
        assert_eq!(server.join().unwrap(), expected);
    }

    /// A server that greets in onConnect writes before it has seen the
    /// magic, so unframed; a client whose first call comes later gets the
    /// greeting as its first message, whether that call is recv() or send().
    #[test]
    fn a_greeting_sent_before_the_magic_is_one_message() {
        for send_first in [false, true] {
            let (listener, path, _dir) = listen(if send_first {
                "greet-send"
            } else {
                "greet-recv"
            });
            let mut conn = connect(&path, &ClientConfig::new());
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"welcome").unwrap();
            // Older than GREETING_FLOOR, so the client looks for it.
            std::thread::sleep(Duration::from_millis(1));
            if send_first {
                conn.send(b"hi").unwrap();
            }
            assert_eq!(conn.recv(65535, false).unwrap().unwrap(), "welcome");
            peer.write_all(&frame(KIND_MESSAGE, b"framed")).unwrap();
            assert_eq!(conn.recv(65535, false).unwrap().unwrap(), "framed");
            drop(conn);
            let mut expected = MAGIC.to_vec();
            if send_first {
                expected.extend(frame(KIND_MESSAGE, b"hi"));
            }
            assert_eq!(read_all(&mut peer), expected);
        }
    }

    /// A liveness check that found nothing spares the first send its look
    /// for a greeting only while it is fresh: a greeting that came after an
    /// older check is still kept as the first message.
    #[test]
    fn a_greeting_after_a_stale_quiet_check_is_still_kept() {
        let (listener, path, _dir) = listen("greet-late");
        let mut conn = connect(&path, &ClientConfig::new());
        let (mut peer, _) = listener.accept().unwrap();
        std::thread::sleep(GREETING_FLOOR);
        assert!(conn.is_alive());
        assert!(conn.quiet_at.get().is_some(), "nothing to read yet");
        std::thread::sleep(QUIET_TRUSTED);
        peer.write_all(b"welcome").unwrap();
        std::thread::sleep(Duration::from_millis(1));
        conn.send(b"hi").unwrap();
        assert_eq!(conn.recv(65535, false).unwrap().unwrap(), "welcome");
        drop(conn);
        let mut expected = MAGIC.to_vec();
        expected.extend(frame(KIND_MESSAGE, b"hi"));
        assert_eq!(read_all(&mut peer), expected);
    }

    /// A connection younger than GREETING_FLOOR is alive without a poll (a
    /// poll records whether it found nothing); an older one is polled.
    #[test]
    fn a_fresh_connection_is_alive_without_a_poll() {
        let (listener, path, _dir) = listen("fresh");
        let mut unpolled = 0;
        for _ in 0..100 {
            let conn = connect(&path, &ClientConfig::new());
            assert!(conn.is_alive());
            if conn.connected_at.elapsed() < GREETING_FLOOR {
                assert!(
                    conn.quiet_at.get().is_none(),
                    "a fresh connection was polled"
                );
                unpolled += 1;
            }
            let _peer = listener.accept().unwrap();
            std::thread::sleep(GREETING_FLOOR);
            assert!(conn.is_alive());
            assert!(conn.quiet_at.get().is_some(), "an older one is polled");
        }
        assert!(
            unpolled > 0,
            "never asked within {GREETING_FLOOR:?} of connecting"
        );
    }

    /// A connection the server reset before the client's first call fails
    /// that call with the reset, not with a garbled message.
    #[test]
    fn a_reset_before_the_first_call_is_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut conn = Connection::connect(
            SockType::Tcp,
            "127.0.0.1",
            port,
            Duration::from_secs(5),
            &ClientConfig::new(),
        )
        .unwrap();
        let (peer, _) = listener.accept().unwrap();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid linger struct for SO_LINGER on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                peer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(peer); // RST
        std::thread::sleep(Duration::from_millis(1));
        let err = conn.send(b"hi").unwrap_err();
        assert_eq!(err.code(), libc::ECONNRESET, "{err}");
    }

    /// The timeouts are set on the socket only when a call would block; a
    /// server that neither reads nor answers still cannot hang the client.
    #[test]
    fn timeouts_still_bound_a_blocked_send_and_recv() {
        let (listener, path, _dir) = listen("timeouts");
        let mut config = ClientConfig::new();
        config.timeout = Some(0.2);
        let mut conn = connect(&path, &config);
        let (_peer, _) = listener.accept().unwrap();
        let err = conn.recv(65535, false).unwrap_err();
        assert_eq!(err.code(), libc::EAGAIN, "{err}");
        let big = vec![b'x'; 16 << 20];
        let err = conn.send(&big).unwrap_err();
        assert_eq!(err.code(), libc::EAGAIN, "{err}");
    }

    /// A taskq server on `listener` for one connection: after the magic it
    /// answers the TASK frames it reads, one write per read, with ACK n for
    /// the n-th (from 1), or ERROR 9001 when n is in `refuse`, and closes
    /// after answering `answer` of them.
    fn task_server(
        listener: UnixListener,
        answer: usize,
        refuse: &'static [usize],
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut magic = [0u8; 8];
            peer.read_exact(&mut magic).unwrap();
            assert_eq!(magic, MAGIC);
            let mut codec = FrameCodec::new(1 << 30);
            let mut buf = BytesMut::new();
            let mut n = 0;
            let mut chunk = vec![0u8; 1 << 20];
            while n < answer {
                let got = peer.read(&mut chunk).unwrap();
                assert!(got > 0, "the client hung up before all answers");
                buf.extend_from_slice(&chunk[..got]);
                let mut out = BytesMut::new();
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    assert_eq!(f.kind, crate::protocol::KIND_TASK);
                    n += 1;
                    if refuse.contains(&n) {
                        crate::protocol::put_error(&mut out, 9001, "the task queue is full");
                    } else {
                        crate::protocol::put_ack(&mut out, n as u64);
                    }
                    if n == answer {
                        break;
                    }
                }
                peer.write_all(&out).unwrap();
            }
        })
    }

    fn request(len: usize) -> TaskRequest {
        TaskRequest {
            priority: 0,
            delay_ms: 0,
            max_attempts: 0,
            batch: None,
            payload: crate::payload::Payload {
                encoding: crate::payload::Encoding::Raw,
                data: Bytes::from(vec![b'p'; len]),
            },
        }
    }

    #[test]
    fn submit_many_reads_every_answer_in_order_across_batches() {
        let (listener, path, _dir) = listen("multi");
        let mut reqs: Vec<TaskRequest> = (0..2500).map(|_| request(300)).collect();
        reqs[1500] = request(MULTI_BATCH_BYTES * 2);
        let server = task_server(listener, reqs.len(), &[7, 2000]);
        let mut conn = connect(&path, &ClientConfig::new());
        let mut answers = Vec::new();
        conn.submit_many(&reqs, &mut answers).unwrap();
        server.join().unwrap();
        assert_eq!(answers.len(), reqs.len());
        for (i, answer) in answers.iter().enumerate() {
            let n = i + 1;
            match answer {
                Ok(id) => assert_eq!(*id, n as u64),
                Err(ClientError::Server { code, .. }) => {
                    assert!([7, 2000].contains(&n), "task {n} refused");
                    assert_eq!(*code, 9001);
                }
                Err(e) => panic!("task {n}: {e}"),
            }
        }
        assert!(answers[6].is_err() && answers[1999].is_err());
    }

    #[test]
    fn submit_many_stops_at_a_lost_connection_keeping_the_answers_so_far() {
        let (listener, path, _dir) = listen("multi-lost");
        let reqs: Vec<TaskRequest> = (0..5).map(|_| request(10)).collect();
        let server = task_server(listener, 3, &[]);
        let mut conn = connect(&path, &ClientConfig::new());
        let mut answers = Vec::new();
        let err = conn.submit_many(&reqs, &mut answers).unwrap_err();
        server.join().unwrap();
        assert_eq!(err.code(), libc::ECONNRESET, "{err}");
        let ids: Vec<u64> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }

    #[test]
    fn submit_many_needs_the_taskq_protocol() {
        let (_listener, path, _dir) = listen("multi-raw");
        let mut config = ClientConfig::new();
        config.taskq_protocol = false;
        let mut conn = connect(&path, &config);
        let err = conn
            .submit_many(&[request(1)], &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.code(), libc::EPROTO, "{err}");
    }
}
