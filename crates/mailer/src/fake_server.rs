//! A scripted SMTP server on 127.0.0.1 for the engine's unit tests (the PHP
//! tests use a real one, aiosmtpd). Recipients steer it: `reject...@` gets
//! 550 at RCPT, `busy...@` 451, `close...@` has the connection closed right
//! after its message is accepted, `dropnext...@` has it closed silently at
//! the next MAIL FROM, as if the server had timed it out in between,
//! `nodata...@` is accepted but DATA gets 554, and `lenient...@` gets 550
//! but a following DATA still gets 354 (a server breaking RFC 2920 §3.1),
//! `dataclose...@` gets 550 and the connection is closed at DATA,
//! `hangup...@` has the connection closed at its RCPT TO.
//! DATA without an accepted recipient otherwise gets 554. With [`start_pipelining`]
//! it offers PIPELINING and records what arrived in one read with each MAIL.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// Connections accepted, to check reuse.
    pub connections: AtomicUsize,
    /// (recipients, message as received after dot-unstuffing)
    pub messages: Mutex<Vec<(Vec<String>, String)>>,
    /// Per MAIL FROM: that line and the commands already buffered behind
    /// it, i.e. what the client wrote in one batch.
    pub batches: Mutex<Vec<String>>,
    /// Lines received that are not commands it knows.
    pub unknown: Mutex<Vec<String>>,
}

/// Starts the server without PIPELINING; returns its port and what it
/// records.
pub fn start() -> (u16, Arc<Seen>) {
    start_with(false)
}

/// Starts the server offering PIPELINING.
pub fn start_pipelining() -> (u16, Arc<Seen>) {
    start_with(true)
}

fn start_with(pipelining: bool) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local addr").port();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let seen = shared.clone();
            thread::spawn(move || serve(stream, &seen, pipelining));
        }
    });
    (port, seen)
}

fn serve(stream: TcpStream, seen: &Seen, pipelining: bool) {
    let mut out = stream.try_clone().expect("clone stream");
    let mut lines = BufReader::new(stream);
    let mut say = |s: &str| out.write_all(s.as_bytes()).is_ok();
    say("220 fake ESMTP\r\n");
    let mut rcpts: Vec<String> = Vec::new();
    let mut drop_next = false;
    let mut lenient = false;
    let mut in_mail = false;
    let mut close_at_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let ok = if upper.starts_with("EHLO") {
            let extra = if pipelining { "250-PIPELINING\r\n" } else { "" };
            say(&format!(
                "250-fake\r\n{extra}250-8BITMIME\r\n250 SMTPUTF8\r\n"
            ))
        } else if upper.starts_with("MAIL FROM:") {
            if drop_next {
                return;
            }
            rcpts.clear();
            (lenient, close_at_data) = (false, false);
            let behind = String::from_utf8_lossy(lines.buffer()).into_owned();
            seen.batches
                .lock()
                .expect("lock")
                .push(line.clone() + &behind);
            in_mail = !addr_of(&cmd).starts_with("refused");
            if in_mail {
                say("250 sender ok\r\n")
            } else {
                say("550 5.7.1 sender refused\r\n")
            }
        } else if upper.starts_with("RCPT TO:<") {
            let addr = addr_of(&cmd);
            if addr.starts_with("hangup") {
                return;
            } else if !in_mail {
                say("503 5.5.1 need MAIL first\r\n")
            } else if addr.starts_with("dataclose") {
                close_at_data = true;
                say("550 5.1.1 no such user\r\n")
            } else if addr.starts_with("lenient") {
                lenient = true;
                say("550 5.1.1 no such user\r\n")
            } else if addr.starts_with("reject") {
                say("550 5.1.1 no such user\r\n")
            } else if addr.starts_with("busy") {
                say("451 4.3.0 try later\r\n")
            } else {
                rcpts.push(addr);
                say("250 rcpt ok\r\n")
            }
        } else if upper == "DATA" && close_at_data {
            return;
        } else if upper == "DATA" && rcpts.is_empty() && !lenient {
            say("554 5.5.1 no valid recipients\r\n")
        } else if upper == "DATA" && rcpts.iter().any(|r| r.starts_with("nodata")) {
            say("554 5.7.1 message refused\r\n")
        } else if upper == "DATA" {
            say("354 go ahead\r\n");
            let mut body = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                body.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let mut messages = seen.messages.lock().expect("lock");
            messages.push((rcpts.clone(), body));
            let n = messages.len();
            drop(messages);
            in_mail = false;
            say(&format!("250 OK id {n}\r\n"));
            if rcpts.iter().any(|r| r.starts_with("close")) {
                return;
            }
            drop_next = rcpts.iter().any(|r| r.starts_with("dropnext"));
            true
        } else if upper == "RSET" {
            rcpts.clear();
            (lenient, in_mail, close_at_data) = (false, false, false);
            say("250 ok\r\n")
        } else if upper == "NOOP" {
            say("250 ok\r\n")
        } else if upper == "QUIT" {
            say("221 bye\r\n");
            return;
        } else {
            seen.unknown.lock().expect("lock").push(cmd);
            say("500 unknown command\r\n")
        };
        if !ok {
            return;
        }
    }
}

/// The address inside `MAIL FROM:<...>` or `RCPT TO:<...>`.
fn addr_of(cmd: &str) -> String {
    let start = cmd.find('<').map_or(cmd.len(), |i| i + 1);
    let end = cmd.rfind('>').unwrap_or(cmd.len()).max(start);
    cmd[start..end].to_owned()
}
