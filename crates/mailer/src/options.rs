//! The `$options` array of `new TaskQ\Mailer($dsn, $options)`. Unknown names
//! are errors (with a "did you mean"), not warnings: a mistyped `ca_file`
//! silently ignored would turn into a confusing TLS failure later.

use std::path::PathBuf;
use std::time::Duration;

use super::error::MailError;
use taskq_value::suggest::closest;
use taskq_value::Value;

/// Tuning and TLS settings of a mailer.
#[derive(Clone, Debug, PartialEq)]
pub struct MailerOptions {
    /// Bound on every read and write of an SMTP exchange.
    pub timeout: Duration,
    /// Bound on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Connections kept open between sends, and the concurrency of
    /// `send_many`.
    pub pool_size: usize,
    /// A pooled connection unused for this long is closed rather than reused:
    /// servers drop idle clients, and reusing a half-dead one costs a retry.
    pub idle_timeout: Duration,
    /// The EHLO name; the machine's host name when `None`.
    pub helo_name: Option<String>,
    /// Extra trusted CA certificates (PEM), e.g. a private relay's CA.
    pub ca_file: Option<PathBuf>,
    /// `false` accepts any certificate: only for test relays, never for
    /// mail that crosses a network you do not control.
    pub verify_peer: bool,
}

const OPTIONS: &[&str] = &[
    "timeout",
    "connect_timeout",
    "pool_size",
    "idle_timeout",
    "helo_name",
    "ca_file",
    "verify_peer",
];
const MAX_POOL_SIZE: i64 = 256;
const MAX_SECONDS: f64 = 24.0 * 3600.0;

impl Default for MailerOptions {
    fn default() -> Self {
        MailerOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pool_size: 4,
            idle_timeout: Duration::from_secs(30),
            helo_name: None,
            ca_file: None,
            verify_peer: true,
        }
    }
}

impl MailerOptions {
    /// Reads the options array; every error names the option.
    pub fn from_pairs(pairs: &[(String, Value)]) -> Result<MailerOptions, MailError> {
        let mut o = MailerOptions::default();
        for (key, value) in pairs {
            match key.as_str() {
                "timeout" => o.timeout = seconds(key, value)?,
                "connect_timeout" => o.connect_timeout = seconds(key, value)?,
                "idle_timeout" => o.idle_timeout = seconds(key, value)?,
                "pool_size" => o.pool_size = pool_size(value)?,
                "helo_name" => o.helo_name = Some(helo_name(value)?),
                "ca_file" => {
                    let path = value.text().map_err(|r| MailError::option(key, r))?;
                    if path.is_empty() {
                        return Err(MailError::option(key, "must not be empty"));
                    }
                    o.ca_file = Some(PathBuf::from(path));
                }
                "verify_peer" => match value {
                    Value::Bool(b) => o.verify_peer = *b,
                    other => {
                        return Err(MailError::option(
                            key,
                            format!("must be a bool, {} given", other.type_name()),
                        ))
                    }
                },
                unknown => return Err(MailError::option(unknown, unknown_reason(unknown))),
            }
        }
        Ok(o)
    }
}

fn seconds(key: &str, value: &Value) -> Result<Duration, MailError> {
    let secs = match value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        other => {
            return Err(MailError::option(
                key,
                format!("must be a number of seconds, {} given", other.type_name()),
            ))
        }
    };
    if !(secs > 0.0 && secs <= MAX_SECONDS) {
        return Err(MailError::option(
            key,
            format!("{secs} (allowed: more than 0 and at most {MAX_SECONDS} seconds)"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn pool_size(value: &Value) -> Result<usize, MailError> {
    match value {
        Value::Int(n) if (1..=MAX_POOL_SIZE).contains(n) => Ok(*n as usize),
        Value::Int(n) => Err(MailError::option(
            "pool_size",
            format!("{n} (allowed: an integer from 1 to {MAX_POOL_SIZE})"),
        )),
        other => Err(MailError::option(
            "pool_size",
            format!("must be an int, {} given", other.type_name()),
        )),
    }
}

/// An EHLO argument: a domain or address literal, so printable ASCII with
/// no spaces (anything else would let the option inject SMTP commands).
fn helo_name(value: &Value) -> Result<String, MailError> {
    let name = value
        .text()
        .map_err(|r| MailError::option("helo_name", r))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(MailError::option(
            "helo_name",
            format!("{name:?} (allowed: a host name or address literal, printable ASCII without spaces)"),
        ));
    }
    Ok(name)
}

fn unknown_reason(key: &str) -> String {
    match closest(key, OPTIONS) {
        Some(o) => format!("unknown option, did you mean '{o}'?"),
        None => format!("unknown option (known: {})", OPTIONS.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, Value)]) -> Vec<(String, Value)> {
        v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn defaults() {
        let o = MailerOptions::from_pairs(&[]).unwrap();
        assert_eq!(o, MailerOptions::default());
        assert!(o.verify_peer);
        assert_eq!(o.pool_size, 4);
    }

    #[test]
    fn every_option_is_read() {
        let o = MailerOptions::from_pairs(&pairs(&[
            ("timeout", Value::Float(2.5)),
            ("connect_timeout", Value::Int(3)),
            ("idle_timeout", Value::Int(5)),
            ("pool_size", Value::Int(8)),
            ("helo_name", Value::str("worker1.example.com")),
            ("ca_file", Value::str("/etc/ca.pem")),
            ("verify_peer", Value::Bool(false)),
        ]))
        .unwrap();
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.connect_timeout, Duration::from_secs(3));
        assert_eq!(o.idle_timeout, Duration::from_secs(5));
        assert_eq!(o.pool_size, 8);
        assert_eq!(o.helo_name.as_deref(), Some("worker1.example.com"));
        assert_eq!(o.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!o.verify_peer);
    }

    #[test]
    fn bad_values_name_the_option() {
        let err = |k: &str, v: Value| {
            MailerOptions::from_pairs(&pairs(&[(k, v)]))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("pool_size", Value::Int(0)),
            "invalid mailer option 'pool_size': 0 (allowed: an integer from 1 to 256)"
        );
        assert!(err("timeout", Value::Int(-1)).starts_with("invalid mailer option 'timeout': -1"));
        assert!(
            err("timeout", Value::str("5")).contains("must be a number of seconds, string given")
        );
        assert!(err("verify_peer", Value::Int(0)).contains("must be a bool, int given"));
        assert!(err("helo_name", Value::str("a b")).contains("'helo_name'"));
        assert!(err("helo_name", Value::str("x\r\nRSET")).contains("'helo_name'"));
        assert!(err("ca_file", Value::str("")).contains("must not be empty"));
    }

    #[test]
    fn unknown_options_get_a_suggestion() {
        let e = MailerOptions::from_pairs(&pairs(&[("cafile", Value::str("x"))])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid mailer option 'cafile': unknown option, did you mean 'ca_file'?"
        );
        let e = MailerOptions::from_pairs(&pairs(&[("zzz", Value::Null)])).unwrap_err();
        assert!(
            e.to_string().contains("known: timeout, connect_timeout"),
            "{e}"
        );
    }
}
