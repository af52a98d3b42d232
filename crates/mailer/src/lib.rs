//! The engine of `TaskQ\Mailer`: sends mail over SMTP from a task worker at
//! the speed of the SMTP server, not of PHP. Plain Rust, no PHP types.
//!
//! - [`dsn`] and [`options`] configure a [`Mailer`];
//! - [`message`] validates an [`Email`] and renders it with lettre, before
//!   any network I/O;
//! - [`smtp`] is one connection (TCP_NODELAY, STARTTLS/implicit TLS with
//!   rustls, AUTH), [`pool`] keeps them open between sends;
//! - [`Mailer::send_many`] spreads a batch over pooled connections with
//!   scoped threads. Those threads only see plain Rust data: PHP values are
//!   converted on the PHP thread before and after.

pub mod dsn;
pub mod error;
#[cfg(test)]
mod fake_server;
pub mod message;
pub mod options;
mod pid;
pub mod pool;
pub mod reply;
pub mod smtp;
pub mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use lettre::transport::smtp::extension::ClientId;

pub use error::MailError;
pub use message::{Attachment, AttachmentSource, Email, Prepared};
pub use options::MailerOptions;
pub use reply::Reply;

use dsn::Dsn;
use pool::Pool;
use smtp::{Connection, Endpoint};

/// An SMTP client with a connection pool.
pub struct Mailer {
    pool: Pool,
    concurrency: usize,
}

impl Mailer {
    /// Parses the DSN and options and prepares TLS; connects lazily, at the
    /// first send.
    pub fn new(dsn: &str, options: MailerOptions) -> Result<Mailer, MailError> {
        let dsn = Dsn::parse(dsn)?;
        let endpoint = Endpoint {
            tls: tls::client_config(&options)?,
            helo: options
                .helo_name
                .clone()
                .unwrap_or_else(|| ClientId::default().to_string()),
            connect_timeout: options.connect_timeout,
            timeout: options.timeout,
            dsn,
        };
        Ok(Mailer {
            pool: Pool::new(endpoint, options.pool_size, options.idle_timeout),
            concurrency: options.pool_size,
        })
    }

    /// Validates and sends one message; returns the server's final reply
    /// (e.g. `250 2.0.0 Ok: queued as 4F1Z`).
    pub fn send(&self, email: &Email) -> Result<Reply, MailError> {
        let prepared = email.prepare()?;
        let mut slot = None;
        let result = self.deliver(&mut slot, &prepared);
        if let Some(conn) = slot {
            self.pool.give_back(conn);
        }
        result
    }

    /// Sends a batch concurrently over up to `pool_size` connections; one
    /// result per entry, in input order. Invalid messages fail alone; entries
    /// that are already errors (input the caller could not read) come back
    /// as they are, so results line up with the caller's input.
    pub fn send_many(&self, batch: &[Result<Email, MailError>]) -> Vec<Result<Reply, MailError>> {
        let next = AtomicUsize::new(0);
        // Workers that can still open connections; the calling thread is one.
        let active = AtomicUsize::new(1);
        let work = || self.drain(batch, &next, &active);
        let helpers = self.concurrency.min(batch.len()).saturating_sub(1);
        let mut done = thread::scope(|s| {
            let mut handles = Vec::with_capacity(helpers);
            for _ in 0..helpers {
                active.fetch_add(1, Ordering::AcqRel);
                match thread::Builder::new()
                    .name("taskq-mailer".into())
                    .spawn_scoped(s, work)
                {
                    Ok(handle) => handles.push(handle),
                    // Fewer threads only means less concurrency.
                    Err(_) => {
                        active.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
            let mut done = work();
            for handle in handles {
                match handle.join() {
                    Ok(part) => done.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            done
        });
        done.sort_unstable_by_key(|(i, _)| *i);
        debug_assert_eq!(done.len(), batch.len());
        done.into_iter().map(|(_, result)| result).collect()
    }

    /// One worker of `send_many`: takes the next message until none is
    /// left. A worker that cannot open a connection stops, leaving the rest
    /// to workers that have one; the last worker standing instead fails the
    /// remaining messages with its error, so a dead server fails a batch
    /// fast instead of timing out once per message.
    fn drain(
        &self,
        batch: &[Result<Email, MailError>],
        next: &AtomicUsize,
        active: &AtomicUsize,
    ) -> Vec<(usize, Result<Reply, MailError>)> {
        let mut done = Vec::new();
        let mut slot: Option<Connection> = None;
        let mut unreachable: Option<MailError> = None;
        loop {
            let i = next.fetch_add(1, Ordering::AcqRel);
            let Some(item) = batch.get(i) else { break };
            let prepared = match item
                .as_ref()
                .map_err(MailError::clone)
                .and_then(Email::prepare)
            {
                Ok(prepared) => prepared,
                Err(e) => {
                    done.push((i, Err(e)));
                    continue;
                }
            };
            if let Some(e) = &unreachable {
                done.push((i, Err(e.clone())));
                continue;
            }
            if slot.is_none() {
                match self.pool.take() {
                    Ok(conn) => slot = Some(conn),
                    Err(e) => {
                        done.push((i, Err(e.clone())));
                        if active.fetch_sub(1, Ordering::AcqRel) > 1 {
                            break;
                        }
                        unreachable = Some(e);
                        continue;
                    }
                }
            }
            done.push((i, self.deliver(&mut slot, &prepared)));
        }
        if let Some(conn) = slot {
            self.pool.give_back(conn);
        }
        done
    }

    /// Sends on the connection in `slot` (taking one from the pool when it
    /// is empty) and leaves the connection there if it is still usable. A
    /// pooled connection found dead at its first command is replaced once by
    /// a fresh one; nothing had been accepted on it.
    fn deliver(&self, slot: &mut Option<Connection>, msg: &Prepared) -> Result<Reply, MailError> {
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.pool.take()?,
        };
        let mut retried = false;
        loop {
            match conn.send(msg) {
                Ok(reply) => {
                    *slot = Some(conn);
                    return Ok(reply);
                }
                Err(failure) if failure.stale && !retried => {
                    retried = true;
                    conn = self.pool.open()?;
                }
                Err(failure) => {
                    if !failure.error.breaks_connection() && conn.reset() {
                        *slot = Some(conn);
                    }
                    return Err(failure.error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    fn mailer(port: u16, pool_size: usize) -> Mailer {
        let options = MailerOptions {
            pool_size,
            timeout: Duration::from_secs(5),
            ..MailerOptions::default()
        };
        Mailer::new(&format!("smtp://127.0.0.1:{port}"), options).unwrap()
    }

    fn email(to: &str, seq: usize) -> Email {
        Email {
            from: "shop@example.com".into(),
            to: vec![to.into()],
            subject: format!("Order {seq}"),
            text: Some(format!("line\r\n.dot line {seq}")),
            headers: vec![("X-Seq".into(), seq.to_string())],
            ..Email::default()
        }
    }

    #[test]
    fn sends_over_one_reused_connection() {
        let (port, seen) = fake_server::start();
        let m = mailer(port, 2);
        assert_eq!(
            m.send(&email("a@example.com", 1)).unwrap().summary(),
            "250 OK id 1"
        );
        assert_eq!(
            m.send(&email("b@example.com", 2)).unwrap().summary(),
            "250 OK id 2"
        );
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        let messages = seen.messages.lock().unwrap();
        assert_eq!(messages[1].0, ["b@example.com"]);
        assert!(messages[1].1.contains("X-Seq: 2\r\n"), "{}", messages[1].1);
        assert!(
            messages[1].1.contains("\r\n.dot line 2"),
            "dot-stuffing undone: {}",
            messages[1].1
        );
    }

    /// A server that hung up after the last message: within the pool's
    /// trusted moment the next send meets the closed connection at its
    /// first command, later the pool's check finds it first; either way the
    /// message goes out once, on a fresh connection.
    #[test]
    fn a_connection_the_server_closed_is_replaced_and_nothing_sent_twice() {
        for pause in [Duration::ZERO, pool::TRUSTED * 3] {
            let (port, seen) = fake_server::start_pipelining();
            let m = mailer(port, 1);
            m.send(&email("close@example.com", 1)).unwrap();
            std::thread::sleep(pause);
            m.send(&email("after@example.com", 2)).unwrap();
            assert_eq!(seen.connections.load(Ordering::SeqCst), 2, "{pause:?}");
            let messages = seen.messages.lock().unwrap();
            let to: Vec<&str> = messages.iter().map(|(r, _)| r[0].as_str()).collect();
            assert_eq!(to, ["close@example.com", "after@example.com"], "{pause:?}");
        }
    }

    /// Every way a transaction can be refused, on one connection that stays
    /// usable, with and without PIPELINING: the same errors, nothing
    /// delivered, and no message body ever read as commands.
    #[test]
    fn rejections_are_classified_and_keep_the_connection() {
        for (port, seen) in [fake_server::start(), fake_server::start_pipelining()] {
            let m = mailer(port, 1);
            let e = m.send(&email("reject@example.com", 1)).unwrap_err();
            assert_eq!(e.code(), 550);
            assert!(e.is_permanent());
            assert!(
                e.to_string()
                    .contains("rejected RCPT TO:<reject@example.com>: 550 5.1.1 no such user"),
                "{e}"
            );
            let e = m.send(&email("busy@example.com", 2)).unwrap_err();
            assert_eq!((e.code(), e.is_permanent()), (451, false));
            let mut refused = email("a@example.com", 3);
            refused.from = "refused@example.com".into();
            let e = m.send(&refused).unwrap_err();
            assert_eq!((e.code(), e.is_permanent()), (550, true));
            assert!(
                e.to_string()
                    .contains("rejected MAIL FROM:<refused@example.com>: 550 5.7.1 sender refused"),
                "{e}"
            );
            let e = m.send(&email("nodata@example.com", 4)).unwrap_err();
            assert_eq!(e.code(), 554);
            assert!(e.to_string().contains("rejected DATA: 554 5.7.1"), "{e}");
            let mut partly = email("ok@example.com", 5);
            partly.to.push("reject-2@example.com".into());
            partly.to.push("other@example.com".into());
            let e = m.send(&partly).unwrap_err();
            assert!(
                e.to_string()
                    .contains("rejected RCPT TO:<reject-2@example.com>: 550"),
                "{e}"
            );
            m.send(&email("ok@example.com", 6)).unwrap();
            assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
            let messages = seen.messages.lock().unwrap();
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].0, ["ok@example.com"]);
            assert_eq!(*seen.unknown.lock().unwrap(), Vec::<String>::new());
        }
    }

    #[test]
    fn pipelining_sends_mail_rcpt_and_data_in_one_write() {
        let (port, seen) = fake_server::start_pipelining();
        let m = mailer(port, 1);
        assert_eq!(
            m.send(&email("a@example.com", 1)).unwrap().summary(),
            "250 OK id 1"
        );
        let mut two = email("b@example.com", 2);
        two.to.push("c@example.com".into());
        assert_eq!(m.send(&two).unwrap().summary(), "250 OK id 2");
        assert_eq!(
            *seen.batches.lock().unwrap(),
            [
                "MAIL FROM:<shop@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n",
                // DATA waits for the replies when one of several recipients
                // could be refused.
                "MAIL FROM:<shop@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n",
            ]
        );
        let messages = seen.messages.lock().unwrap();
        assert_eq!(messages[1].0, ["b@example.com", "c@example.com"]);
        assert!(
            messages[1].1.contains("\r\n.dot line 2"),
            "{}",
            messages[1].1
        );
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn without_pipelining_every_command_waits_for_its_reply() {
        let (port, seen) = fake_server::start();
        mailer(port, 1).send(&email("a@example.com", 1)).unwrap();
        assert_eq!(
            *seen.batches.lock().unwrap(),
            ["MAIL FROM:<shop@example.com>\r\n"]
        );
    }

    /// A server that answers DATA with 354 although the only recipient was
    /// refused: the body must not follow, so the connection is dropped.
    #[test]
    fn pipelined_data_accepted_after_a_refusal_drops_the_connection() {
        let (port, seen) = fake_server::start_pipelining();
        let m = mailer(port, 1);
        let e = m.send(&email("lenient@example.com", 1)).unwrap_err();
        assert_eq!((e.code(), e.is_permanent()), (550, true));
        assert!(
            e.to_string()
                .contains("rejected RCPT TO:<lenient@example.com>"),
            "{e}"
        );
        m.send(&email("after@example.com", 2)).unwrap();
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        let messages = seen.messages.lock().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].0, ["after@example.com"]);
    }

    /// The server hangs up in the middle of a pipelined batch: the first
    /// error is reported and the connection is not reused.
    #[test]
    fn pipelined_batch_cut_short_drops_the_connection() {
        let (port, seen) = fake_server::start_pipelining();
        let m = mailer(port, 1);
        let e = m.send(&email("hangup@example.com", 1)).unwrap_err();
        assert_eq!((e.code(), e.is_permanent()), (libc::ECONNRESET, false));
        assert!(
            e.to_string()
                .contains("during RCPT TO:<hangup@example.com>"),
            "{e}"
        );
        let mut refused = email("hangup@example.com", 2);
        refused.from = "refused@example.com".into();
        let e = m.send(&refused).unwrap_err();
        assert_eq!(e.code(), 550, "{e}");
        assert!(
            e.to_string()
                .contains("rejected MAIL FROM:<refused@example.com>"),
            "{e}"
        );
        let e = m.send(&email("dataclose@example.com", 3)).unwrap_err();
        assert!(
            e.to_string()
                .contains("rejected RCPT TO:<dataclose@example.com>: 550"),
            "{e}"
        );
        m.send(&email("after@example.com", 4)).unwrap();
        assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
        assert_eq!(seen.messages.lock().unwrap().len(), 1);
    }

    #[test]
    fn connections_use_tcp_nodelay() {
        let (port, _) = fake_server::start();
        let m = mailer(port, 1);
        let conn = m.pool.take().unwrap();
        assert!(conn.nodelay());
        assert!(!conn.is_encrypted());
    }

    #[test]
    fn send_many_keeps_input_order_and_reports_each_message() {
        let (port, seen) = fake_server::start();
        let m = mailer(port, 4);
        let mut batch: Vec<Result<Email, MailError>> = (0..40)
            .map(|i| Ok(email(&format!("u{i}@example.com"), i)))
            .collect();
        batch[5] = Ok(email("reject@example.com", 5));
        batch[7] = Err(MailError::field("messages[7]", "must be an array"));
        let mut bad = email("u9@example.com", 9);
        bad.subject = "bad\r\nBcc: x@evil.com".into();
        batch[9] = Ok(bad);
        let results = m.send_many(&batch);
        assert_eq!(results.len(), 40);
        assert_eq!(results[0].as_ref().unwrap().code, 250);
        assert!(results[7]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("'messages[7]'"));
        assert_eq!(results[5].as_ref().unwrap_err().code(), 550);
        assert!(results[9]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("'subject'"));
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 37);
        assert!(seen.connections.load(Ordering::SeqCst) <= 4);
        let messages = seen.messages.lock().unwrap();
        assert_eq!(messages.len(), 37);
        for i in [0, 1, 39] {
            assert!(messages
                .iter()
                .any(|(r, _)| r == &[format!("u{i}@example.com")]));
        }
        assert!(m.send_many(&[]).is_empty());
    }

    #[test]
    fn send_many_fails_fast_when_the_server_is_down() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let m = mailer(port, 4);
        let started = Instant::now();
        let batch: Vec<_> = (0..200).map(|i| Ok(email("a@example.com", i))).collect();
        let results = m.send_many(&batch);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(results.len(), 200);
        for r in &results {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.code(), libc::ECONNREFUSED, "{e}");
            assert!(!e.is_permanent());
        }
    }
}
