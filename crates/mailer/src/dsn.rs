//! The mailer's DSN: where the SMTP server is, how to secure the connection
//! and how to log in, in the URL form PHP mailers (Symfony Mailer, Laravel)
//! made familiar: `smtp://user:pass@host:port?tls=required`, `smtps://...`.

use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::error::MailError;

/// How the connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// `smtp://...?tls=none`: never STARTTLS, even when offered.
    None,
    /// `smtp://...` (default): STARTTLS when the server offers it.
    Opportunistic,
    /// `smtp://...?tls=required`: STARTTLS or fail before sending anything.
    Required,
    /// `smtps://...`: TLS from the first byte (port 465).
    Implicit,
}

/// A parsed DSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// TCP port; 25 for `smtp://`, 465 for `smtps://` when not given.
    pub port: u16,
    /// Whether and how the connection is encrypted.
    pub security: Security,
    /// User name and password, percent-decoded, when the DSN has a user.
    pub credentials: Option<(String, String)>,
}

impl Dsn {
    /// Parses `dsn`; errors name the problem and show the DSN without its
    /// password.
    pub fn parse(dsn: &str) -> Result<Dsn, MailError> {
        let fail = |reason: &str| MailError::InvalidDsn {
            dsn: redact(dsn),
            reason: reason.to_owned(),
        };
        let url = Url::parse(dsn).map_err(|e| fail(&e.to_string()))?;
        let (mut security, default_port) = match url.scheme() {
            "smtp" => (Security::Opportunistic, 25),
            "smtps" => (Security::Implicit, 465),
            other => {
                return Err(fail(&format!(
                    "unknown scheme '{other}' (allowed: smtp, smtps)"
                )))
            }
        };
        // smtp is not a "special" URL scheme: IPv4 addresses come as domains,
        // which is how they are used (connect and TLS name both parse them).
        let host = match url.host() {
            Some(Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(fail("the host is missing")),
        };
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(fail("a DSN has no path or fragment"));
        }
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), security) {
                ("tls", Security::Implicit) => {
                    return Err(fail(
                        "'tls' applies to smtp:// only; smtps:// is always TLS",
                    ))
                }
                ("tls", _) => {
                    security = match value.as_ref() {
                        "required" => Security::Required,
                        "opportunistic" => Security::Opportunistic,
                        "none" => Security::None,
                        other => {
                            return Err(fail(&format!(
                                "tls={other} (allowed: required, opportunistic, none)"
                            )))
                        }
                    }
                }
                (other, _) => {
                    return Err(fail(&format!("unknown parameter '{other}' (allowed: tls)")))
                }
            }
        }
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| fail("the user or password is not valid UTF-8 once decoded"))
        };
        let credentials = if url.username().is_empty() {
            None
        } else {
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or(""))?,
            ))
        };
        Ok(Dsn {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            credentials,
        })
    }

    /// `host:port` for connecting and for messages (`[v6]:port` for IPv6).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The DSN with any password replaced by `***`, for error messages and logs.
pub fn redact(dsn: &str) -> String {
    let Some(start) = dsn.find("://").map(|i| i + 3) else {
        return dsn.to_owned();
    };
    let end = dsn[start..]
        .find(['/', '?', '#'])
        .map_or(dsn.len(), |i| start + i);
    let authority = &dsn[start..end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &dsn[..start],
                &authority[..colon],
                &dsn[start + at..]
            ),
            None => dsn.to_owned(),
        },
        None => dsn.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_smtp_defaults_to_port_25_and_opportunistic_tls() {
        let d = Dsn::parse("smtp://mail.example.com").unwrap();
        assert_eq!(d.host, "mail.example.com");
        assert_eq!(d.port, 25);
        assert_eq!(d.security, Security::Opportunistic);
        assert_eq!(d.credentials, None);
        assert_eq!(d.addr(), "mail.example.com:25");
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let d =
            Dsn::parse("smtp://user%40example.com:p%40ss%3Aw@127.0.0.1:2525?tls=required").unwrap();
        assert_eq!(
            d.credentials,
            Some(("user@example.com".into(), "p@ss:w".into()))
        );
        assert_eq!(d.port, 2525);
        assert_eq!(d.host, "127.0.0.1");
        assert_eq!(d.security, Security::Required);
    }

    #[test]
    fn smtps_is_implicit_tls_on_465() {
        let d = Dsn::parse("smtps://u:p@smtp.example.com").unwrap();
        assert_eq!((d.port, d.security), (465, Security::Implicit));
    }

    #[test]
    fn tls_none_and_ipv6() {
        let d = Dsn::parse("smtp://[::1]:1025?tls=none").unwrap();
        assert_eq!(d.security, Security::None);
        assert_eq!(d.host, "::1");
        assert_eq!(d.addr(), "[::1]:1025");
    }

    #[test]
    fn errors_name_the_problem_without_the_password() {
        let e = Dsn::parse("http://u:secret@h").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid DSN 'http://u:***@h': unknown scheme 'http' (allowed: smtp, smtps)"
        );
        let e = Dsn::parse("smtp://u:secret@h?tls=maybe").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e
            .to_string()
            .contains("tls=maybe (allowed: required, opportunistic, none)"));
        assert!(Dsn::parse("smtp://h?foo=1")
            .unwrap_err()
            .to_string()
            .contains("unknown parameter 'foo'"));
        assert!(Dsn::parse("smtps://h?tls=required")
            .unwrap_err()
            .to_string()
            .contains("smtp:// only"));
        assert!(Dsn::parse("smtp://h/path").is_err());
        assert!(Dsn::parse("not a dsn").is_err());
        assert!(Dsn::parse("smtp://:25").is_err());
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("smtp://u:pw@h:25?tls=required"),
            "smtp://u:***@h:25?tls=required"
        );
        assert_eq!(redact("smtp://u@h"), "smtp://u@h");
        assert_eq!(redact("smtp://h:25"), "smtp://h:25");
        assert_eq!(redact("garbage"), "garbage");
    }
}
