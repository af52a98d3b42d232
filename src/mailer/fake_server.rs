//! A scripted SMTP server on 127.0.0.1 for the engine's unit tests (the PHP
//! tests use a real one, aiosmtpd). Recipients steer it: `reject...@` gets
//! 550 at RCPT, `busy...@` 451, `close...@` has the connection closed right
//! after its message is accepted, `dropnext...@` has it closed silently at
//! the next MAIL FROM, as if the server had timed it out in between.

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
}

/// Starts the server; returns its port and what it records.
pub fn start() -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local addr").port();
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let seen = shared.clone();
            thread::spawn(move || serve(stream, &seen));
        }
    });
    (port, seen)
}

fn serve(stream: TcpStream, seen: &Seen) {
    let mut out = stream.try_clone().expect("clone stream");
    let mut lines = BufReader::new(stream);
    let mut say = |s: &str| out.write_all(s.as_bytes()).is_ok();
    say("220 fake ESMTP\r\n");
    let mut rcpts: Vec<String> = Vec::new();
    let mut drop_next = false;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let ok = if upper.starts_with("EHLO") {
            say("250-fake\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
        } else if upper.starts_with("MAIL FROM:") {
            if drop_next {
                return;
            }
            rcpts.clear();
            say("250 sender ok\r\n")
        } else if upper.starts_with("RCPT TO:<") {
            let addr = cmd["RCPT TO:<".len()..].trim_end_matches('>').to_owned();
            if addr.starts_with("reject") {
                say("550 5.1.1 no such user\r\n")
            } else if addr.starts_with("busy") {
                say("451 4.3.0 try later\r\n")
            } else {
                rcpts.push(addr);
                say("250 rcpt ok\r\n")
            }
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
            say(&format!("250 OK id {n}\r\n"));
            if rcpts.iter().any(|r| r.starts_with("close")) {
                return;
            }
            drop_next = rcpts.iter().any(|r| r.starts_with("dropnext"));
            true
        } else if upper == "RSET" || upper == "NOOP" {
            say("250 ok\r\n")
        } else if upper == "QUIT" {
            say("221 bye\r\n");
            return;
        } else {
            say("500 unknown command\r\n")
        };
        if !ok {
            return;
        }
    }
}
