//! `TaskQ\Mailer`: the seed's "send email" done natively, so a task worker
//! sends at the speed of the SMTP server. PHP arrays are converted on the
//! PHP thread; the engine (`taskq_mailer`) never sees a zval, which is what
//! lets `sendMany()` use threads.

use super::error::PhpResult;
use ext_php_rs::boxed::ZBox;
use ext_php_rs::prelude::*;
use ext_php_rs::types::ZendHashTable;

use super::args::{Array, Opt, Str};
use super::loose_value::{fields, key, type_name};
use taskq_engine::mail_tally::{self, MailOutcome};
use taskq_mailer::{Email, MailError, Mailer as Engine, MailerOptions, Reply};

/// An SMTP client with a pool of open connections, reused across sends.
#[php_class]
#[php(name = "TaskQ\\Mailer")]
pub struct Mailer {
    engine: Engine,
}

#[php_impl]
impl Mailer {
    /// `smtp://user:pass@host:port` (STARTTLS when offered; `?tls=required`
    /// insists, `?tls=none` never), `smtps://...` (implicit TLS). Options:
    /// timeout, connect_timeout, idle_timeout (seconds), pool_size,
    /// helo_name, ca_file, verify_peer. Connects at the first send.
    pub fn __construct(dsn: Str, options: Opt<Array>) -> PhpResult<Self> {
        let options = options.0.map(|a| fields(a.0)).unwrap_or_default();
        Ok(Mailer {
            engine: Engine::new(&dsn.0, MailerOptions::from_pairs(&options)?)?,
        })
    }

    /// Sends one message; returns the server's final reply, e.g.
    /// "250 OK queued as 4F1Z". Throws TaskQ\MailException.
    pub fn send(&self, message: Array) -> PhpResult<String> {
        let result = Email::from_fields(&fields(message.0)).and_then(|e| self.engine.send(&e));
        tally(&result);
        Ok(result?.summary())
    }

    /// Sends a batch concurrently over the pool. Returns, under each input
    /// key, `['ok' => bool, 'response' => string, 'code' => int,
    /// 'error' => string, 'permanent' => bool]`; never throws for a single
    /// message's failure.
    pub fn send_many(&self, messages: Array) -> ZBox<ZendHashTable> {
        let messages = messages.0;
        let mut keys = Vec::with_capacity(messages.len());
        let mut batch = Vec::with_capacity(messages.len());
        for (k, z) in messages.iter() {
            batch.push(match z.dereference().array() {
                Some(ht) => Email::from_fields(&fields(ht)),
                None => Err(MailError::field(
                    format!("messages[{}]", key(&k)),
                    format!("must be an array, {} given", type_name(z)),
                )),
            });
            keys.push(k);
        }
        let mut out = ZendHashTable::with_capacity(u32::try_from(keys.len()).unwrap_or(u32::MAX));
        for (k, result) in keys.into_iter().zip(self.engine.send_many(&batch)) {
            tally(&result);
            let _ = out.insert(k, outcome(result));
        }
        out
    }
}

/// Counts a message's outcome for the server's metrics
/// (`taskq_mail_sent_total`, `taskq_mail_failed_total{class}`).
fn tally(result: &Result<Reply, MailError>) {
    mail_tally::count(match result {
        Ok(_) => MailOutcome::Sent,
        Err(MailError::Smtp { code, .. }) if *code >= 500 => MailOutcome::Rejected5xx,
        Err(MailError::Smtp { .. }) => MailOutcome::Rejected4xx,
        Err(MailError::Connect { .. } | MailError::Io { .. } | MailError::Protocol { .. }) => {
            MailOutcome::Connection
        }
        Err(MailError::Tls { .. } | MailError::StartTlsUnavailable { .. }) => MailOutcome::Tls,
        Err(MailError::Unsupported { .. }) => MailOutcome::Unsupported,
        Err(
            MailError::InvalidMessage { .. }
            | MailError::InvalidDsn { .. }
            | MailError::InvalidOption { .. },
        ) => MailOutcome::Invalid,
    });
}

/// One entry of `sendMany()`'s result.
fn outcome(result: Result<Reply, MailError>) -> ZBox<ZendHashTable> {
    let mut ht = ZendHashTable::new();
    let (ok, response, code, error, permanent) = match result {
        Ok(reply) => (
            true,
            reply.summary(),
            i64::from(reply.code),
            String::new(),
            false,
        ),
        Err(e) => (
            false,
            e.server_reply().unwrap_or_default(),
            i64::from(e.code()),
            e.to_string(),
            e.is_permanent(),
        ),
    };
    let _ = ht.insert("ok", ok);
    let _ = ht.insert("response", response);
    let _ = ht.insert("code", code);
    let _ = ht.insert("error", error);
    let _ = ht.insert("permanent", permanent);
    ht
}
