//! Mail sent with `TaskQ\Mailer`, counted by outcome. Mail goes out in
//! worker processes, but the metrics are served by the master, so each
//! worker counts here (atomics: `sendMany()` settles on the PHP thread,
//! but nothing stops an app from sending on its own threads) and its event
//! loop passes what it counted since the last report on to the master
//! ([`crate::ipc::FromWorker::Mailed`]), which adds it up in a [`MailCounts`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How one message ended, at the granularity an operator alerts on: the
/// SMTP reply class says whether the receiving side will take the mail
/// later (4xx) or never (5xx); the rest say which part of the path broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    /// The server accepted the message (2xx after DATA).
    Sent,
    /// A 4xx reply: the server may take the message later.
    Rejected4xx,
    /// A 5xx reply: the server will not take this message.
    Rejected5xx,
    /// No connection, or it broke or timed out, or the server spoke
    /// something that is not SMTP.
    Connection,
    /// TLS failed, or STARTTLS was required and not offered.
    Tls,
    /// The server lacks an extension the message needs (SMTPUTF8, 8BITMIME,
    /// AUTH).
    Unsupported,
    /// The message was refused before any I/O (a bad address or header).
    Invalid,
}

const OUTCOMES: usize = 7;

impl MailOutcome {
    /// Every outcome, in the order of [`MailCounts`].
    pub const ALL: [MailOutcome; OUTCOMES] = [
        MailOutcome::Sent,
        MailOutcome::Rejected4xx,
        MailOutcome::Rejected5xx,
        MailOutcome::Connection,
        MailOutcome::Tls,
        MailOutcome::Unsupported,
        MailOutcome::Invalid,
    ];

    /// The `class` label of `taskq_mail_failed_total` (unused for `Sent`).
    pub fn label(self) -> &'static str {
        match self {
            MailOutcome::Sent => "sent",
            MailOutcome::Rejected4xx => "4xx",
            MailOutcome::Rejected5xx => "5xx",
            MailOutcome::Connection => "connection",
            MailOutcome::Tls => "tls",
            MailOutcome::Unsupported => "unsupported",
            MailOutcome::Invalid => "invalid",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts per outcome: a worker's report, or the master's running total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MailCounts(pub [u64; OUTCOMES]);

impl MailCounts {
    /// How many messages ended with `outcome`.
    pub fn get(&self, outcome: MailOutcome) -> u64 {
        self.0[outcome.index()]
    }

    /// Adds a worker's report to the total.
    pub fn add(&mut self, other: &MailCounts) {
        for (total, n) in self.0.iter_mut().zip(other.0) {
            *total = total.saturating_add(n);
        }
    }
}

static COUNTS: [AtomicU64; OUTCOMES] = [const { AtomicU64::new(0) }; OUTCOMES];
/// Set by [`count`], so the event loop's check after every event is one load.
static COUNTED: AtomicBool = AtomicBool::new(false);

/// One message of this process ended with `outcome`.
pub fn count(outcome: MailOutcome) {
    COUNTS[outcome.index()].fetch_add(1, Ordering::Relaxed);
    COUNTED.store(true, Ordering::Release);
}

/// What this process counted since the last call, or None if nothing.
/// A worker calls it once at start to drop what the forking process
/// counted before the fork (the master reports its own sends nowhere).
pub fn take() -> Option<MailCounts> {
    // A plain load first: the event loop calls this after every event,
    // and a worker that sends no mail should not pay a write each time.
    if !COUNTED.load(Ordering::Relaxed) || !COUNTED.swap(false, Ordering::Acquire) {
        return None;
    }
    let mut out = MailCounts::default();
    for (n, c) in out.0.iter_mut().zip(&COUNTS) {
        *n = c.swap(0, Ordering::Relaxed);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_what_was_counted_once_and_totals_add_up() {
        let _ = take();
        assert_eq!(take(), None);
        count(MailOutcome::Sent);
        count(MailOutcome::Sent);
        count(MailOutcome::Rejected5xx);
        let got = take().expect("counted");
        assert_eq!(got.get(MailOutcome::Sent), 2);
        assert_eq!(got.get(MailOutcome::Rejected5xx), 1);
        assert_eq!(got.get(MailOutcome::Tls), 0);
        assert_eq!(take(), None);
        let mut total = MailCounts::default();
        total.add(&got);
        total.add(&got);
        assert_eq!(total.get(MailOutcome::Sent), 4);
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::BTreeSet<_> =
            MailOutcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), OUTCOMES);
        for (i, o) in MailOutcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
