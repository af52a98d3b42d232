//! The blocking client behind `TaskClient`. It runs in ordinary PHP
//! processes (CLI, FPM), so it uses plain blocking sockets with timeouts and
//! no threads or runtime. Without framing options it speaks taskq's framed
//! protocol, so one `send()` is one `onReceive` and one `recv()` is one
//! server `send()`; with Swoole framing options it speaks those instead.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::chunk_reader::ChunkReader;
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::frame::FrameCodec;
use crate::listener::SockType;
use crate::packet::{PacketDecoder, PacketMode};
use crate::protocol::{Answer, TaskRequest, KIND_AUTH, KIND_MESSAGE, KIND_MESSAGE_ACK, MAGIC};

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

    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// Writes everything; MSG_NOSIGNAL so a closed peer is an error, not a
    /// SIGPIPE that kills the PHP process.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: `data` is a valid buffer for its length.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            data = &data[n as usize..];
        }
        Ok(())
    }
}

enum Wire {
    Taskq(FrameCodec),
    Packets(Box<PacketDecoder>),
}

/// A connected client socket.
pub struct Connection {
    stream: Stream,
    wire: Wire,
    buf: BytesMut,
    out: BytesMut,
    /// Server messages that arrived while we waited for an acknowledgement.
    pending: VecDeque<Bytes>,
    ack: bool,
    chunks: ChunkReader,
}

fn is_raw(d: &PacketDecoder) -> bool {
    matches!(d.options().mode, PacketMode::Raw)
}

/// Largest raw `recv()`, as Swoole caps it.
pub const MAX_RAW_RECV: usize = 65535;

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
        let target = if kind == SockType::UnixStream {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let io_timeout = config
            .timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(timeout);
        let timeout = config
            .connect_timeout
            .map(Duration::from_secs_f64)
            .unwrap_or(timeout);
        let fail =
            |e: io::Error| ClientError::os(&format!("connect to server[{target}] failed"), &e);
        let stream = match kind {
            SockType::UnixStream => Stream::Unix(UnixStream::connect(host).map_err(fail)?),
            SockType::Tcp | SockType::Tcp6 => {
                let addr = resolve(host, port, kind)?;
                let s = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
                s.set_nodelay(config.open_tcp_nodelay).map_err(fail)?;
                Stream::Tcp(s)
            }
        };
        stream
            .set_timeouts(Some(io_timeout))
            .map_err(|e| ClientError::os("setting socket timeouts failed", &e))?;
        let max = config.packet.max_length;
        let mut conn = Connection {
            stream,
            wire: if config.has_framing() || !config.taskq_protocol {
                Wire::Packets(Box::new(PacketDecoder::new(config.packet.clone())))
            } else {
                Wire::Taskq(FrameCodec::new(max + 1))
            },
            buf: BytesMut::new(),
            out: BytesMut::new(),
            pending: VecDeque::new(),
            ack: config.ack,
            chunks: ChunkReader::default(),
        };
        if matches!(conn.wire, Wire::Taskq(_)) {
            conn.out.clear();
            conn.out.extend_from_slice(&MAGIC);
            if let Some(token) = &config.auth_token {
                FrameCodec::put(&mut conn.out, KIND_AUTH, token.as_bytes());
            }
            let hello = std::mem::take(&mut conn.out);
            conn.stream
                .write_all(&hello)
                .map_err(|e| ClientError::os("send failed", &e))?;
            if config.auth_token.is_some() {
                conn.answer()?;
            }
        } else if config.ack || config.auth_token.is_some() {
            return Err(ClientError::NeedsTaskqProtocol("'ack' or 'auth_token'"));
        }
        Ok(conn)
    }

    /// Whether the server is still there: a pooled connection whose server
    /// restarted reads as closed (or errors) without blocking.
    pub fn is_alive(&self) -> bool {
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
        if n == 0 {
            return true;
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLRDHUP | libc::POLLNVAL) != 0 {
            return false;
        }
        let mut byte = [0u8; 1];
        // SAFETY: peeking one byte into a local buffer.
        let r = unsafe {
            libc::recv(
                self.stream.fd(),
                byte.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        r > 0
    }

    fn next_frame(&mut self) -> Result<Option<crate::frame::Frame>, ClientError> {
        loop {
            if let Wire::Taskq(codec) = &mut self.wire {
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
                        Answer::Ack(v) => Ok(v),
                        Answer::Error { code, message } => {
                            Err(ClientError::Server { code, message })
                        }
                    }
                }
            }
        }
    }

    /// `TaskClient::task()`: returns the task id once the server holds the
    /// task (on disk, with a task store).
    pub fn submit(&mut self, req: &TaskRequest) -> Result<u64, ClientError> {
        if !matches!(self.wire, Wire::Taskq(_)) {
            return Err(ClientError::NeedsTaskqProtocol("task()"));
        }
        self.out.clear();
        req.encode(&mut self.out);
        let out = std::mem::take(&mut self.out);
        let sent = self.stream.write_all(&out);
        self.out = out;
        sent.map_err(|e| ClientError::os("send failed", &e))?;
        self.answer()
    }

    /// Sends one message; returns the number of payload bytes sent.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, ClientError> {
        if data.is_empty() {
            return Err(ClientError::EmptyData);
        }
        let result = match &self.wire {
            Wire::Taskq(_) => {
                self.out.clear();
                let kind = if self.ack {
                    KIND_MESSAGE_ACK
                } else {
                    KIND_MESSAGE
                };
                FrameCodec::put(&mut self.out, kind, data);
                self.stream.write_all(&self.out)
            }
            Wire::Packets(_) => self.stream.write_all(data),
        };
        result.map_err(|e| ClientError::os("send failed", &e))?;
        if self.ack {
            self.answer()?;
        }
        Ok(data.len())
    }

    fn fill(&mut self) -> Result<bool, ClientError> {
        let stream = &mut self.stream;
        match self.chunks.read_into(&mut self.buf, |c| stream.read(c)) {
            Ok(n) => Ok(n > 0),
            Err(e) => Err(ClientError::os("recv() failed", &e)),
        }
    }

    /// Receives one message. `Ok(None)` means the server closed the
    /// connection (PHP sees ""). In raw mode at most `size` bytes of whatever
    /// arrived, unless `waitall` asks for exactly `size`.
    pub fn recv(&mut self, size: usize, waitall: bool) -> Result<Option<Bytes>, ClientError> {
        if let Some(msg) = self.pending.pop_front() {
            return Ok(Some(msg));
        }
        loop {
            let decoded = match &mut self.wire {
                Wire::Taskq(codec) => {
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
                Wire::Packets(d) if is_raw(d) => {
                    let want = if waitall { size } else { 1 };
                    if !self.buf.is_empty() && self.buf.len() >= want.min(size) {
                        let n = self.buf.len().min(size);
                        Some(self.buf.split_to(n).freeze())
                    } else {
                        None
                    }
                }
                Wire::Packets(d) => d
                    .decode(&mut self.buf)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                    .map(BytesMut::freeze),
            };
            if let Some(msg) = decoded {
                return Ok(Some(msg));
            }
            if !self.fill()? {
                if matches!(&self.wire, Wire::Packets(d) if is_raw(d)) && !self.buf.is_empty() {
                    let n = self.buf.len().min(size);
                    return Ok(Some(self.buf.split_to(n).freeze()));
                }
                return Ok(None);
            }
        }
    }
}
