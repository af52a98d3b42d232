//! Why a mail was not sent, in terms a retry policy can act on: every error
//! is either permanent (sending the same message again will fail the same
//! way) or transient (a later attempt may succeed), and carries the SMTP
//! reply code or the errno when there is one.

use std::io;

/// A failure of [`crate::Mailer`]. Cloneable so that one connection
/// failure can be reported for every message of a batch that needed it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// A message field is missing, malformed or unsafe (e.g. CR/LF in a
    /// header); detected before any network I/O, so nothing was sent.
    #[error("invalid message: '{field}' {reason}")]
    InvalidMessage { field: String, reason: String },
    /// The DSN cannot be used. The password is never part of `dsn`.
    #[error("invalid DSN '{dsn}': {reason}")]
    InvalidDsn { dsn: String, reason: String },
    /// A constructor option has an unknown name or an unusable value.
    #[error("invalid mailer option '{option}': {reason}")]
    InvalidOption { option: String, reason: String },
    /// No TCP connection could be made (refused, unreachable, timed out, DNS).
    #[error("cannot connect to SMTP server {addr}: {reason}")]
    Connect {
        addr: String,
        reason: String,
        errno: i32,
    },
    /// The connection broke or timed out while talking to the server.
    #[error("connection to SMTP server {addr} failed during {stage}: {reason}")]
    Io {
        addr: String,
        stage: String,
        reason: String,
        errno: i32,
    },
    /// The TLS handshake failed (certificate not trusted, wrong name, no
    /// common protocol); retrying without changing the setup cannot help.
    #[error("TLS with SMTP server {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    /// The DSN demands STARTTLS (`?tls=required`) and the server does not
    /// offer it; nothing was sent in clear text.
    #[error("SMTP server {addr} does not offer STARTTLS, which the DSN requires (tls=required)")]
    StartTlsUnavailable { addr: String },
    /// The server lacks an SMTP extension this message or the DSN needs
    /// (SMTPUTF8 for internationalized addresses, 8BITMIME for 8-bit content,
    /// AUTH PLAIN or LOGIN for credentials).
    #[error("SMTP server {addr} does not support {extension}")]
    Unsupported { addr: String, extension: String },
    /// The server answered a command with a 4xx or 5xx reply.
    #[error("SMTP server {addr} rejected {command}: {code} {text}")]
    Smtp {
        addr: String,
        command: String,
        code: u16,
        text: String,
    },
    /// The server's bytes are not valid SMTP.
    #[error("SMTP server {addr} broke the protocol during {stage}: {reason}")]
    Protocol {
        addr: String,
        stage: String,
        reason: String,
    },
}

impl MailError {
    /// The PHP exception code: the SMTP reply code for rejections, the errno
    /// for network failures, 0 otherwise.
    pub fn code(&self) -> i32 {
        match self {
            MailError::Smtp { code, .. } => i32::from(*code),
            MailError::Connect { errno, .. } | MailError::Io { errno, .. } => *errno,
            _ => 0,
        }
    }

    /// Whether sending the same message again is pointless: 5xx replies and
    /// every problem with the input, the configuration or TLS. Network
    /// failures and 4xx replies are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::Smtp { code, .. } => *code >= 500,
            MailError::Connect { .. } | MailError::Io { .. } | MailError::Protocol { .. } => false,
            MailError::InvalidMessage { .. }
            | MailError::InvalidDsn { .. }
            | MailError::InvalidOption { .. }
            | MailError::Tls { .. }
            | MailError::StartTlsUnavailable { .. }
            | MailError::Unsupported { .. } => true,
        }
    }

    /// The server's reply when it rejected a command, e.g. `550 5.1.1 ...`.
    pub fn server_reply(&self) -> Option<String> {
        match self {
            MailError::Smtp { code, text, .. } => Some(format!("{code} {text}")),
            _ => None,
        }
    }

    /// Whether the failure means the connection cannot carry another
    /// transaction and must be dropped rather than reset and reused.
    pub fn breaks_connection(&self) -> bool {
        match self {
            MailError::Smtp { code, .. } => *code == 421,
            MailError::Io { .. } | MailError::Protocol { .. } | MailError::Tls { .. } => true,
            _ => false,
        }
    }

    /// An invalid-message error for `field`.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MailError::InvalidMessage {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An invalid-option error for `option`.
    pub fn option(option: impl Into<String>, reason: impl Into<String>) -> Self {
        MailError::InvalidOption {
            option: option.into(),
            reason: reason.into(),
        }
    }

    /// A broken connection during `stage`, keeping the errno when there is one.
    pub fn io(addr: &str, stage: &str, err: &io::Error) -> Self {
        MailError::Io {
            addr: addr.to_owned(),
            stage: stage.to_owned(),
            reason: err.to_string(),
            errno: errno(err),
        }
    }
}

/// The errno of an I/O error; timeouts without one count as ETIMEDOUT.
pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(match err.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => libc::ETIMEDOUT,
        io::ErrorKind::UnexpectedEof => libc::ECONNRESET,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(code: u16) -> MailError {
        MailError::Smtp {
            addr: "127.0.0.1:25".into(),
            command: "RCPT TO:<a@example.com>".into(),
            code,
            text: "no".into(),
        }
    }

    #[test]
    fn five_hundreds_are_permanent_four_hundreds_transient() {
        assert!(smtp(550).is_permanent());
        assert!(!smtp(451).is_permanent());
        assert_eq!(smtp(550).code(), 550);
        assert_eq!(smtp(550).server_reply().as_deref(), Some("550 no"));
        assert_eq!(MailError::field("to", "x").server_reply(), None);
        assert_eq!(
            smtp(550).to_string(),
            "SMTP server 127.0.0.1:25 rejected RCPT TO:<a@example.com>: 550 no"
        );
    }

    #[test]
    fn network_failures_are_transient_with_errno() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let e = MailError::io("h:25", "MAIL FROM", &refused);
        assert!(!e.is_permanent());
        assert_eq!(e.code(), libc::ECONNREFUSED);
        assert!(e.breaks_connection());
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(errno(&timeout), libc::ETIMEDOUT);
    }

    #[test]
    fn input_errors_are_permanent_and_keep_the_connection() {
        let e = MailError::field("to", "is required");
        assert!(e.is_permanent());
        assert!(!e.breaks_connection());
        assert_eq!(e.code(), 0);
        assert_eq!(e.to_string(), "invalid message: 'to' is required");
    }

    #[test]
    fn only_421_ends_the_session() {
        assert!(smtp(421).breaks_connection());
        assert!(!smtp(450).breaks_connection());
        assert!(!smtp(550).breaks_connection());
    }
}
