//! One SMTP client connection (RFC 5321): connect, greeting, EHLO,
//! STARTTLS, AUTH, then any number of mail transactions.
//!
//! taskq owns this socket instead of using lettre's `SmtpTransport`, whose
//! connections cannot be configured: lettre 0.11 never sets TCP_NODELAY, so
//! the five bytes that end a message (`\r\n.\r\n`) wait for the server's
//! delayed ACK of the body (~40 ms on Linux) and a pooled connection manages
//! ~25 messages a second. Here every socket gets TCP_NODELAY, and the body and
//! its terminator go out in one write. lettre still formats the EHLO reply
//! into server capabilities and runs the AUTH exchange.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::commands::Auth;
use lettre::transport::smtp::extension::{Extension, ServerInfo};
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use rustls::{ClientConfig, ClientConnection};

use super::dsn::{Dsn, Security};
use super::error::{errno, MailError};
use super::message::Prepared;
use super::reply::{Assembler, Reply, MAX_LINE};
use super::tls;

/// Everything needed to open a connection; shared by all of a mailer's.
pub struct Endpoint {
    /// Server, security and credentials.
    pub dsn: Dsn,
    /// The EHLO argument.
    pub helo: String,
    /// Bound on the TCP connect.
    pub connect_timeout: Duration,
    /// Bound on every read and write.
    pub timeout: Duration,
    /// Used for STARTTLS and implicit TLS.
    pub tls: Arc<ClientConfig>,
}

/// The socket, encrypted once `tls` is set.
struct Stream {
    tcp: TcpStream,
    tls: Option<ClientConnection>,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(c) => rustls::Stream::new(c, &mut self.tcp).read(buf),
            None => self.tcp.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(c) => rustls::Stream::new(c, &mut self.tcp).write(buf),
            None => self.tcp.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(c) => rustls::Stream::new(c, &mut self.tcp).flush(),
            None => self.tcp.flush(),
        }
    }
}

/// Why a transaction failed, and whether it may be retried elsewhere.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: MailError,
    /// The connection turned out to be dead at the first command of a
    /// reused connection: the server closed it while it sat idle, nothing
    /// was accepted, and the message can go out on a fresh connection.
    pub stale: bool,
}

/// An open, greeted (and, as configured, encrypted and authenticated)
/// SMTP session.
pub struct Connection {
    reader: BufReader<Stream>,
    addr: String,
    info: ServerInfo,
    /// The process that opened the socket: after a fork the child must not
    /// talk on its parent's session.
    pid: u32,
    /// Transactions started, so that a failure on a reused connection can
    /// be told from one on a fresh connection.
    uses: u64,
    /// The server offers PIPELINING (RFC 2920).
    pipelining: bool,
    /// A pipelined transaction failed in a way that leaves the session in
    /// the data phase or without a reply read: RSET cannot recover it.
    out_of_step: bool,
}

impl Connection {
    /// Connects and runs the session setup. Errors here would repeat for
    /// every message until the server or the configuration changes.
    pub fn open(ep: &Endpoint) -> Result<Connection, MailError> {
        let addr = ep.dsn.addr();
        let mut tcp = connect(&ep.dsn, ep.connect_timeout, &addr)?;
        let setup = |e: io::Error| MailError::io(&addr, "connection setup", &e);
        tcp.set_nodelay(true).map_err(setup)?;
        tcp.set_read_timeout(Some(ep.timeout)).map_err(setup)?;
        tcp.set_write_timeout(Some(ep.timeout)).map_err(setup)?;
        let tls = match ep.dsn.security {
            Security::Implicit => Some(tls::handshake(&ep.tls, &ep.dsn.host, &mut tcp, &addr)?),
            _ => None,
        };
        let mut conn = Connection {
            reader: BufReader::new(Stream { tcp, tls }),
            addr,
            info: ServerInfo::default(),
            pid: super::pid::current(),
            uses: 0,
            pipelining: false,
            out_of_step: false,
        };
        conn.read_expect("the greeting", &[220])?;
        conn.ehlo(&ep.helo)?;
        let wants_starttls = matches!(
            ep.dsn.security,
            Security::Opportunistic | Security::Required
        );
        if wants_starttls && conn.info.supports_feature(Extension::StartTls) {
            conn.starttls(ep)?;
        } else if ep.dsn.security == Security::Required {
            conn.quit();
            return Err(MailError::StartTlsUnavailable {
                addr: ep.dsn.addr(),
            });
        }
        if let Some((user, password)) = &ep.dsn.credentials {
            conn.auth(Credentials::new(user.clone(), password.clone()))?;
        }
        Ok(conn)
    }

    /// Whether the session runs over TLS.
    #[cfg(test)]
    pub fn is_encrypted(&self) -> bool {
        self.reader.get_ref().tls.is_some()
    }

    /// Whether Nagle's algorithm is off on the socket.
    #[cfg(test)]
    pub fn nodelay(&self) -> bool {
        self.reader.get_ref().tcp.nodelay().unwrap_or(false)
    }

    /// The process that opened this connection.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// One mail transaction; returns the server's final reply. After a
    /// failure that does not break the connection, call [`Self::reset`].
    pub fn send(&mut self, msg: &Prepared) -> Result<Reply, Failure> {
        self.uses += 1;
        let reused = self.uses > 1;
        let mut params = String::new();
        if msg.needs_smtputf8() {
            self.require(
                Extension::SmtpUtfEight,
                "SMTPUTF8 (needed for internationalized addresses)",
            )?;
            params.push_str(" SMTPUTF8");
        }
        if !msg.data.is_ascii() {
            self.require(
                Extension::EightBitMime,
                "8BITMIME (needed for 8-bit message content)",
            )?;
            params.push_str(" BODY=8BITMIME");
        }
        let mail = format!("MAIL FROM:<{}>", msg.sender);
        let mail_line = format!("{mail}{params}\r\n");
        if self.pipelining {
            return self.send_pipelined(msg, &mail, &mail_line, reused);
        }
        self.command(&mail_line, &mail, &[250])
            .map_err(at_start(reused))?;
        for rcpt in &msg.recipients {
            let command = format!("RCPT TO:<{rcpt}>");
            self.command(&format!("{command}\r\n"), &command, &[250, 251])
                .map_err(settled)?;
        }
        self.command("DATA\r\n", "DATA", &[354]).map_err(settled)?;
        self.finish(msg)
    }

    /// The transaction with RFC 2920 pipelining: MAIL, every RCPT and (for a
    /// single recipient) DATA leave in one write and their replies are read
    /// in order, so a message costs two round trips instead of three plus one
    /// per recipient. All replies are read even after a rejection, so the
    /// session stays in step for RSET; the first rejection is the error, as
    /// without pipelining. With several recipients DATA waits for the RCPT
    /// replies: a server that accepted some of them would answer DATA with
    /// 354, and the message must then not go to the rest alone.
    fn send_pipelined(
        &mut self,
        msg: &Prepared,
        mail: &str,
        mail_line: &str,
        reused: bool,
    ) -> Result<Reply, Failure> {
        let rcpts: Vec<String> = msg
            .recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>"))
            .collect();
        let data_in_batch = rcpts.len() == 1;
        let mut batch = String::with_capacity(mail_line.len() + rcpts.len() * 40 + 6);
        batch.push_str(mail_line);
        for rcpt in &rcpts {
            batch.push_str(rcpt);
            batch.push_str("\r\n");
        }
        if data_in_batch {
            batch.push_str("DATA\r\n");
        }
        let stale = at_start(reused);
        self.write(batch.as_bytes(), mail).map_err(&stale)?;
        let mut first = self.read_expect(mail, &[250]).err();
        if let Some(error) = first.take_if(|e| e.breaks_connection()) {
            return Err(stale(error));
        }
        for rcpt in &rcpts {
            match self.read_expect(rcpt, &[250, 251]) {
                Ok(_) => {}
                Err(error) if error.breaks_connection() => {
                    self.out_of_step = true;
                    return Err(settled(first.unwrap_or(error)));
                }
                Err(error) => {
                    first.get_or_insert(error);
                }
            }
        }
        let data = if data_in_batch {
            self.read_expect("DATA", &[354])
        } else if let Some(error) = first.take() {
            return Err(settled(error));
        } else {
            self.command("DATA\r\n", "DATA", &[354])
        };
        match (first, data) {
            (None, Ok(_)) => self.finish(msg),
            (None, Err(error)) => Err(settled(error)),
            (Some(error), Ok(_)) => {
                // 354 although MAIL or RCPT failed: the only way out of the
                // data phase without delivering is to hang up.
                self.out_of_step = true;
                Err(settled(error))
            }
            (Some(error), Err(late)) => {
                self.out_of_step = late.breaks_connection();
                Err(settled(error))
            }
        }
    }

    /// Sends the message after DATA's 354 and reads the final reply.
    fn finish(&mut self, msg: &Prepared) -> Result<Reply, Failure> {
        self.write(&dot_stuff(&msg.data), "the message")
            .map_err(settled)?;
        self.read_expect("the message", &[250]).map_err(settled)
    }

    /// Aborts a failed transaction so the connection can carry the next one;
    /// false when the connection is no longer usable.
    pub fn reset(&mut self) -> bool {
        !self.out_of_step && self.command("RSET\r\n", "RSET", &[250]).is_ok()
    }

    /// Whether an idle connection still looks usable: the server has not
    /// closed it and has not sent anything unasked (such as a 421 timeout
    /// notice). Checked without blocking, so reuse costs no round trip.
    pub fn is_alive(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let fd = self.reader.get_ref().tcp.as_raw_fd();
        let mut byte = [0u8; 1];
        // MSG_DONTWAIT makes this one call non-blocking without switching
        // the socket's mode back and forth (two more syscalls per message).
        let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(recv(fd, &mut byte, peek), Err(Errno::EAGAIN))
    }

    /// Says QUIT without waiting for the answer and closes the socket.
    pub fn quit(mut self) {
        let _ = self.write(b"QUIT\r\n", "QUIT");
    }

    fn require(&self, extension: Extension, what: &str) -> Result<(), Failure> {
        if self.info.supports_feature(extension) {
            return Ok(());
        }
        Err(Failure {
            error: MailError::Unsupported {
                addr: self.addr.clone(),
                extension: what.to_owned(),
            },
            stale: false,
        })
    }

    fn ehlo(&mut self, helo: &str) -> Result<(), MailError> {
        let reply = self.command(&format!("EHLO {helo}\r\n"), "EHLO", &[250])?;
        let parsed = reply
            .to_lettre()
            .and_then(|r| ServerInfo::from_response(&r).ok());
        self.info = parsed.ok_or_else(|| self.protocol("EHLO", "unreadable EHLO reply".into()))?;
        // lettre's ServerInfo does not know this keyword.
        self.pipelining = reply.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
        });
        Ok(())
    }

    fn starttls(&mut self, ep: &Endpoint) -> Result<(), MailError> {
        self.command("STARTTLS\r\n", "STARTTLS", &[220])?;
        // Bytes that arrived with the 220 were sent in clear text and could
        // be injected; RFC 3207 §5 says to discard them, refusing is safer.
        if !self.reader.buffer().is_empty() {
            return Err(self.protocol("STARTTLS", "data after the STARTTLS reply".into()));
        }
        let stream = self.reader.get_mut();
        stream.tls = Some(tls::handshake(
            &ep.tls,
            &ep.dsn.host,
            &mut stream.tcp,
            &self.addr,
        )?);
        self.ehlo(&ep.helo)
    }

    fn auth(&mut self, credentials: Credentials) -> Result<(), MailError> {
        let mechanism = self
            .info
            .get_auth_mechanism(DEFAULT_MECHANISMS)
            .ok_or_else(|| MailError::Unsupported {
                addr: self.addr.clone(),
                extension: "AUTH PLAIN or LOGIN (needed for the DSN's credentials)".into(),
            })?;
        let stage = format!("AUTH {mechanism}");
        let lettre_err = |e: lettre::transport::smtp::Error| self.protocol(&stage, e.to_string());
        let first = Auth::new(mechanism, credentials.clone(), None).map_err(lettre_err)?;
        let mut reply = self.command(&first.to_string(), &stage, &[235, 334])?;
        // LOGIN asks for the user, then the password; allow a few more.
        for _ in 0..4 {
            if reply.code == 235 {
                return Ok(());
            }
            let challenge = reply
                .to_lettre()
                .ok_or_else(|| self.protocol(&stage, "unreadable AUTH challenge".into()))?;
            let next = Auth::new_from_response(mechanism, credentials.clone(), &challenge)
                .map_err(|e| self.protocol(&stage, e.to_string()))?;
            reply = self.command(&next.to_string(), &stage, &[235, 334])?;
        }
        if reply.code == 235 {
            return Ok(());
        }
        Err(self.protocol(&stage, "too many AUTH challenges".into()))
    }

    /// Sends `line` and reads the reply; `shown` names the command in errors
    /// (never the AUTH payload).
    fn command(&mut self, line: &str, shown: &str, expected: &[u16]) -> Result<Reply, MailError> {
        self.write(line.as_bytes(), shown)?;
        self.read_expect(shown, expected)
    }

    fn write(&mut self, bytes: &[u8], stage: &str) -> Result<(), MailError> {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| MailError::io(&self.addr, stage, &e))
    }

    fn read_expect(&mut self, stage: &str, expected: &[u16]) -> Result<Reply, MailError> {
        let reply = self.read_reply(stage)?;
        if expected.contains(&reply.code) {
            return Ok(reply);
        }
        if reply.is_positive() {
            return Err(self.protocol(stage, format!("unexpected reply {}", reply.summary())));
        }
        Err(MailError::Smtp {
            addr: self.addr.clone(),
            command: stage.to_owned(),
            code: reply.code,
            text: reply.text(),
        })
    }

    fn read_reply(&mut self, stage: &str) -> Result<Reply, MailError> {
        let mut assembler = Assembler::default();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .map_err(|e| MailError::io(&self.addr, stage, &e))?;
            if line.last() != Some(&b'\n') {
                if n >= MAX_LINE {
                    return Err(
                        self.protocol(stage, format!("reply line longer than {MAX_LINE} bytes"))
                    );
                }
                return Err(MailError::Io {
                    addr: self.addr.clone(),
                    stage: stage.to_owned(),
                    reason: "the server closed the connection".into(),
                    errno: libc::ECONNRESET,
                });
            }
            if let Some(reply) = assembler
                .push(&line)
                .map_err(|reason| self.protocol(stage, reason))?
            {
                return Ok(reply);
            }
        }
    }

    fn protocol(&self, stage: &str, reason: String) -> MailError {
        MailError::Protocol {
            addr: self.addr.clone(),
            stage: stage.to_owned(),
            reason,
        }
    }
}

/// A failure of a transaction's first command (MAIL): on a reused
/// connection, one that breaks the connection is a stale connection.
fn at_start(reused: bool) -> impl Fn(MailError) -> Failure {
    move |error| Failure {
        stale: reused && error.breaks_connection(),
        error,
    }
}

/// A failure on a connection that was in use: never worth a retry.
fn settled(error: MailError) -> Failure {
    Failure {
        error,
        stale: false,
    }
}

/// Tries every address the host resolves to, each bounded by `timeout`.
fn connect(dsn: &Dsn, timeout: Duration, addr: &str) -> Result<TcpStream, MailError> {
    let fail = |reason: String, errno: i32| MailError::Connect {
        addr: addr.to_owned(),
        reason,
        errno,
    };
    let targets = (dsn.host.as_str(), dsn.port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve '{}': {e}", dsn.host), errno(&e)))?;
    let mut last = None;
    for target in targets {
        match TcpStream::connect_timeout(&target, timeout) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => fail(e.to_string(), errno(&e)),
        None => fail(format!("'{}' resolves to no address", dsn.host), 0),
    })
}

/// The DATA payload: lines starting with '.' get a second one (RFC 5321
/// §4.5.2), then CRLF if missing and the terminating ".\r\n", so the whole
/// message leaves in one write.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_termination() {
        assert_eq!(
            dot_stuff(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b".start\r\nend"), b"..start\r\nend\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
