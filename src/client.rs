//! The blocking client behind `TaskClient`. It runs in ordinary PHP
//! processes (CLI, FPM), so it uses plain blocking sockets with timeouts and
//! no threads or runtime. Without framing options it speaks taskq's framed
//! protocol, so one `send()` is one `onReceive` and one `recv()` is one
//! server `send()`; with Swoole framing options it speaks those instead.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::frame::FrameCodec;
use crate::listener::SockType;
use crate::packet::{PacketDecoder, PacketMode};
use crate::protocol::{KIND_MESSAGE, MAGIC};

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
        };
        if matches!(conn.wire, Wire::Taskq(_)) {
            conn.stream
                .write_all(&MAGIC)
                .map_err(|e| ClientError::os("send failed", &e))?;
        }
        Ok(conn)
    }

    /// Sends one message; returns the number of payload bytes sent.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, ClientError> {
        if data.is_empty() {
            return Err(ClientError::EmptyData);
        }
        let result = match &self.wire {
            Wire::Taskq(_) => {
                self.out.clear();
                FrameCodec::put(&mut self.out, KIND_MESSAGE, data);
                self.stream.write_all(&self.out)
            }
            Wire::Packets(_) => self.stream.write_all(data),
        };
        result
            .map(|()| data.len())
            .map_err(|e| ClientError::os("send failed", &e))
    }

    fn fill(&mut self) -> Result<bool, ClientError> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let len = self.buf.len();
        let cap = self.buf.capacity();
        self.buf.resize(cap, 0);
        let r = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match r {
            Ok(n) => {
                self.buf.truncate(len + n);
                Ok(n > 0)
            }
            Err(e) => {
                self.buf.truncate(len);
                Err(ClientError::os("recv() failed", &e))
            }
        }
    }

    /// Receives one message. `Ok(None)` means the server closed the
    /// connection (PHP sees ""). In raw mode at most `size` bytes of whatever
    /// arrived, unless `waitall` asks for exactly `size`.
    pub fn recv(&mut self, size: usize, waitall: bool) -> Result<Option<Bytes>, ClientError> {
        loop {
            let decoded = match &mut self.wire {
                Wire::Taskq(codec) => codec
                    .decode(&mut self.buf)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                    .map(|f| f.body),
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
