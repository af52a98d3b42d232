//! The server's listening socket. It is bound in `TaskServer`'s constructor,
//! as Swoole does, so an address clash is reported where the server is
//! created, and clients that connect before the event loop runs simply wait
//! in the accept backlog.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// Socket types accepted by the constructors, with Swoole's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockType {
    Tcp = 1,
    Tcp6 = 3,
    UnixStream = 5,
}

impl SockType {
    /// Maps `SWOOLE_SOCK_*` values; flags such as `SWOOLE_KEEP` in the high
    /// bits are ignored here.
    pub fn from_raw(v: i64) -> Option<SockType> {
        match v & 0xff {
            1 => Some(SockType::Tcp),
            3 => Some(SockType::Tcp6),
            5 => Some(SockType::UnixStream),
            _ => None,
        }
    }
}

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `host:port` (or the unix socket path `host`).
    pub fn bind(host: &str, port: u16, kind: SockType) -> io::Result<Listener> {
        match kind {
            SockType::UnixStream => bind_unix(host),
            SockType::Tcp | SockType::Tcp6 => {
                let addrs: Vec<SocketAddr> = (host, port)
                    .to_socket_addrs()?
                    .filter(|a| a.is_ipv6() == (kind == SockType::Tcp6))
                    .collect();
                if addrs.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "'{host}' is not an {} address",
                            if kind == SockType::Tcp6 {
                                "IPv6"
                            } else {
                                "IPv4"
                            }
                        ),
                    ));
                }
                Ok(Listener::Tcp(TcpListener::bind(&addrs[..])?))
            }
        }
    }

    /// The port actually bound (the kernel's choice for port 0); 0 for unix.
    pub fn port(&self) -> u16 {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.port()).unwrap_or(0),
            Listener::Unix(..) => 0,
        }
    }

    /// The address, when it is reachable from other hosts (not loopback,
    /// not a unix socket): such a server should require an auth_token.
    pub fn exposed_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().filter(|a| !a.ip().is_loopback()),
            Listener::Unix(..) => None,
        }
    }

    /// Applies the configured accept backlog (listen(2) may be called again).
    /// Raw listen(2): nix's `Backlog` refuses values above SOMAXCONN, which
    /// the kernel clamps instead, as Swoole relies on.
    pub fn set_backlog(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: plain syscall on a socket we own.
        if unsafe { libc::listen(self.as_raw_fd(), backlog) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes `accept` return at once when nobody is waiting.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l, _) => l.set_nonblocking(true),
        }
    }

    /// Stops listening on every copy of this socket at once (closing one
    /// descriptor would leave the others listening): new connections are
    /// refused from now on, instead of being completed by the kernel and
    /// never read.
    pub fn shut(&self) -> io::Result<()> {
        nix::sys::socket::shutdown(self.as_raw_fd(), nix::sys::socket::Shutdown::Both)
            .map_err(io::Error::from)
    }

    /// Removes the socket file of a unix listener when the server stops.
    pub fn cleanup(&self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }
}

fn bind_unix(path: &str) -> io::Result<Listener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(Listener::Unix(l, PathBuf::from(path))),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // A socket file nobody listens on is left over from a crash.
            match UnixStream::connect(path) {
                Err(c) if c.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                    Ok(Listener::Unix(
                        UnixListener::bind(path)?,
                        PathBuf::from(path),
                    ))
                }
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shut_listener_refuses_connections_on_every_copy() {
        let l = Listener::bind("127.0.0.1", 0, SockType::Tcp).unwrap();
        let copy = match &l {
            Listener::Tcp(t) => t.try_clone().unwrap(),
            Listener::Unix(..) => unreachable!(),
        };
        let addr = ("127.0.0.1", l.port());
        assert!(std::net::TcpStream::connect(addr).is_ok(), "listening");
        l.shut().unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "refused although a copy is open"
        );
        drop(copy);

        let path = std::env::temp_dir().join(format!("taskq-shut-{}.sock", std::process::id()));
        let l = Listener::bind(path.to_str().unwrap(), 0, SockType::UnixStream).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        l.shut().unwrap();
        assert!(UnixStream::connect(&path).is_err());
        l.cleanup();
    }

    #[test]
    fn port_zero_gets_a_kernel_port_and_clash_is_reported() {
        let l = Listener::bind("127.0.0.1", 0, SockType::Tcp).unwrap();
        let port = l.port();
        assert!(port > 0);
        let err = Listener::bind("127.0.0.1", port, SockType::Tcp).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    }

    #[test]
    fn only_non_loopback_addresses_count_as_exposed() {
        let local = Listener::bind("127.0.0.1", 0, SockType::Tcp).unwrap();
        assert_eq!(local.exposed_addr(), None);
        let any = Listener::bind("0.0.0.0", 0, SockType::Tcp).unwrap();
        assert!(any.exposed_addr().is_some());
    }

    #[test]
    fn family_mismatch_and_bad_host_are_errors() {
        assert!(Listener::bind("::1", 0, SockType::Tcp).is_err());
        assert!(Listener::bind("not a host", 0, SockType::Tcp).is_err());
    }

    #[test]
    fn stale_unix_socket_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("taskq-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let p = path.to_str().unwrap();
        drop(Listener::bind(p, 0, SockType::UnixStream).unwrap());
        assert!(path.exists());
        let again = Listener::bind(p, 0, SockType::UnixStream).unwrap();
        again.cleanup();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sock_type_ignores_flag_bits() {
        assert_eq!(SockType::from_raw(1 | 4096), Some(SockType::Tcp));
        assert_eq!(SockType::from_raw(2), None);
    }
}
