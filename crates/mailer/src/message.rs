//! What to send: an [`Email`] built from Rust or from the PHP message array
//! (the seed's `from_email`/`to_email`/`title`/`content` keys and the usual
//! ones), validated and turned into the exact bytes and envelope an SMTP
//! transaction needs ([`Prepared`]). Every check happens here, before any
//! network I/O, and every error names the field as the caller wrote it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{
    Attachment as LettreAttachment, Body, Mailbox, Mailboxes, MultiPart, SinglePart,
};
use lettre::{Address, Message};

use super::error::MailError;
use taskq_value::suggest::closest;
use taskq_value::Value;

/// A message to send.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Email {
    /// The sender, `addr@example.com` or `Name <addr@example.com>`.
    pub from: String,
    /// Recipients; each entry may itself be a comma-separated list.
    pub to: Vec<String>,
    /// Recipients shown in the Cc header.
    pub cc: Vec<String>,
    /// Recipients that get the message but do not appear in its headers.
    pub bcc: Vec<String>,
    /// Where replies should go instead of `from`.
    pub reply_to: Vec<String>,
    /// UTF-8; encoded per RFC 2047 when not plain ASCII.
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The HTML body; with `text` too, the two become multipart/alternative.
    pub html: Option<String>,
    /// Extra headers (`X-...`, `List-Unsubscribe`, `Message-ID`, ...).
    pub headers: Vec<(String, String)>,
    /// Files sent along; with any, the message becomes multipart/mixed.
    pub attachments: Vec<Attachment>,
    /// The key names errors use, so seed-shaped input gets `to_email`.
    pub labels: Labels,
}

/// The input keys of the fields that have aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labels {
    /// `from` or `from_email`.
    pub from: &'static str,
    /// `to` or `to_email`.
    pub to: &'static str,
    /// `subject` or `title`.
    pub subject: &'static str,
}

impl Default for Labels {
    fn default() -> Self {
        Labels {
            from: "from",
            to: "to",
            subject: "subject",
        }
    }
}

/// A file attached to the message.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    /// A file to read or the bytes themselves.
    pub source: AttachmentSource,
    /// The file name shown to the recipient; defaults to the path's name.
    pub name: Option<String>,
    /// MIME type; guessed from the name's extension when not given.
    pub content_type: Option<String>,
}

/// Where an attachment's bytes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum AttachmentSource {
    /// Read when the message is prepared.
    Path(PathBuf),
    /// The bytes themselves.
    Data(Vec<u8>),
}

/// A validated message: envelope plus the bytes of the DATA phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The envelope sender (MAIL FROM), the address of `from`.
    pub sender: Address,
    /// To, Cc and Bcc without duplicates, in that order.
    pub recipients: Vec<Address>,
    /// The RFC 5322 message, CRLF line endings, not yet dot-stuffed.
    pub data: Vec<u8>,
}

impl Prepared {
    /// Whether an address is internationalized, which needs SMTPUTF8.
    pub fn needs_smtputf8(&self) -> bool {
        std::iter::once(&self.sender)
            .chain(&self.recipients)
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii())
    }
}

/// Headers the named fields produce, or that would break the MIME structure.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    ("from", "from"),
    ("to", "to"),
    ("cc", "cc"),
    ("bcc", "bcc"),
    ("reply-to", "reply_to"),
    ("subject", "subject"),
    ("content-type", "text, html and attachments"),
    ("content-transfer-encoding", "text, html and attachments"),
    ("mime-version", "text, html and attachments"),
];

impl Email {
    /// Reads a PHP-shaped message array. Unknown keys are errors, since a
    /// misspelt `attachements` silently dropped would send the wrong mail.
    pub fn from_fields(fields: &[(String, Value)]) -> Result<Email, MailError> {
        let mut email = Email::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in fields {
            let Some((canonical, alias)) = canonical_key(key) else {
                return Err(MailError::field(key.as_str(), unknown_key_reason(key)));
            };
            if matches!(value, Value::Null) {
                continue;
            }
            if let Some(first) = seen
                .iter()
                .find(|k| canonical_key(k).map(|c| c.0) == Some(canonical))
            {
                return Err(MailError::field(
                    key.as_str(),
                    format!("given together with '{first}'; use one of them"),
                ));
            }
            seen.push(alias);
            let label = alias;
            match canonical {
                "from" => {
                    email.labels.from = label;
                    email.from = text(label, value)?;
                }
                "to" => {
                    email.labels.to = label;
                    email.to = text_list(label, value)?;
                }
                "cc" => email.cc = text_list(label, value)?,
                "bcc" => email.bcc = text_list(label, value)?,
                "reply_to" => email.reply_to = text_list(label, value)?,
                "subject" => {
                    email.labels.subject = label;
                    email.subject = text(label, value)?;
                }
                "text" => email.text = Some(text(label, value)?),
                "html" => email.html = Some(text(label, value)?),
                "headers" => email.headers = headers(value)?,
                _ => email.attachments = attachments(value)?,
            }
        }
        Ok(email)
    }

    /// Validates everything and renders the message. Reads attachment files;
    /// touches no network.
    pub fn prepare(&self) -> Result<Prepared, MailError> {
        let l = self.labels;
        let from = mailboxes(l.from, std::slice::from_ref(&self.from))?;
        let sender = match from.as_slice() {
            [one] => one.clone(),
            [] => return Err(MailError::field(l.from, "is required")),
            _ => return Err(MailError::field(l.from, "must be a single address")),
        };
        let to = mailboxes(l.to, &self.to)?;
        let cc = mailboxes("cc", &self.cc)?;
        let bcc = mailboxes("bcc", &self.bcc)?;
        let reply_to = mailboxes("reply_to", &self.reply_to)?;
        let mut recipients: Vec<Address> = Vec::new();
        for m in to.iter().chain(&cc).chain(&bcc) {
            if !recipients.contains(&m.email) {
                recipients.push(m.email.clone());
            }
        }
        // Given, the envelope is not derived again from the headers, which
        // lettre would parse back (From twice, To, Cc, Bcc) for every
        // message: about a twentieth of a task worker's CPU per email. Its
        // one error is the empty recipient list.
        let envelope =
            Envelope::new(Some(sender.email.clone()), recipients.clone()).map_err(|_| {
                MailError::field(
                    l.to,
                    "is required: give at least one recipient in 'to', 'cc' or 'bcc'",
                )
            })?;
        header_safe(l.subject, &self.subject)?;

        let mut builder = Message::builder()
            .envelope(envelope)
            .from(sender.clone())
            .subject(self.subject.clone());
        for m in &to {
            builder = builder.to(m.clone());
        }
        for m in &cc {
            builder = builder.cc(m.clone());
        }
        for m in &bcc {
            builder = builder.bcc(m.clone());
        }
        for m in &reply_to {
            builder = builder.reply_to(m.clone());
        }
        let mut has_message_id = false;
        for (name, value) in &self.headers {
            let header = custom_header(name, value)?;
            has_message_id |= name.eq_ignore_ascii_case("message-id");
            builder = builder.raw_header(header);
        }
        if !has_message_id {
            builder = builder.message_id(Some(message_id()));
        }

        let text = self.text.as_deref().map(crlf_safe);
        let html = self.html.as_deref().map(crlf_safe);
        let body = match (text, html) {
            (Some(text), Some(html)) => Part::Multi(MultiPart::alternative_plain_html(text, html)),
            (None, Some(html)) => Part::Single(SinglePart::html(html)),
            (text, None) => Part::Single(SinglePart::plain(text.unwrap_or_default())),
        };
        let message = if self.attachments.is_empty() {
            match body {
                Part::Single(p) => builder.singlepart(p),
                Part::Multi(p) => builder.multipart(p),
            }
        } else {
            let mut mixed = match body {
                Part::Single(p) => MultiPart::mixed().singlepart(p),
                Part::Multi(p) => MultiPart::mixed().multipart(p),
            };
            for (i, a) in self.attachments.iter().enumerate() {
                mixed = mixed.singlepart(a.part(&format!("attachments[{i}]"))?);
            }
            builder.multipart(mixed)
        }
        .map_err(|e| MailError::field("message", e.to_string()))?;

        Ok(Prepared {
            sender: sender.email,
            recipients,
            data: message.formatted(),
        })
    }
}

enum Part {
    Single(SinglePart),
    Multi(MultiPart),
}

impl Attachment {
    fn part(&self, label: &str) -> Result<SinglePart, MailError> {
        let (data, default_name) = match &self.source {
            AttachmentSource::Data(d) => (d.clone(), None),
            AttachmentSource::Path(p) => {
                let data = std::fs::read(p).map_err(|e| {
                    MailError::field(label, format!("cannot read '{}': {e}", p.display()))
                })?;
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                (data, name)
            }
        };
        let name = self
            .name
            .clone()
            .or(default_name)
            .ok_or_else(|| MailError::field(label, "needs a 'name' when given as 'data'"))?;
        header_safe(&format!("{label}[name]"), &name)?;
        let content_type = match &self.content_type {
            Some(ct) => {
                header_safe(&format!("{label}[type]"), ct)?;
                ContentType::parse(ct).map_err(|_| {
                    MailError::field(
                        format!("{label}[type]"),
                        format!("'{ct}' is not a MIME type"),
                    )
                })?
            }
            None => ContentType::parse(guess_content_type(&name))
                .map_err(|e| MailError::field(format!("{label}[type]"), e.to_string()))?,
        };
        // Always base64: lettre would send ASCII data as 7bit with its bare
        // LFs, which SMTP forbids and strict servers reject.
        let body = Body::new_with_encoding(data, ContentTransferEncoding::Base64)
            .map_err(|_| MailError::field(label, "cannot be base64-encoded"))?;
        Ok(LettreAttachment::new(name).body(body, content_type))
    }
}

/// The canonical field and the key as written, for every accepted key.
fn canonical_key(key: &str) -> Option<(&'static str, &'static str)> {
    Some(match key {
        "from" => ("from", "from"),
        "from_email" => ("from", "from_email"),
        "to" => ("to", "to"),
        "to_email" => ("to", "to_email"),
        "cc" => ("cc", "cc"),
        "bcc" => ("bcc", "bcc"),
        "reply_to" => ("reply_to", "reply_to"),
        "subject" => ("subject", "subject"),
        "title" => ("subject", "title"),
        "text" => ("text", "text"),
        "content" => ("text", "content"),
        "html" => ("html", "html"),
        "headers" => ("headers", "headers"),
        "attachments" => ("attachments", "attachments"),
        _ => return None,
    })
}

const KEYS: &[&str] = &[
    "from",
    "from_email",
    "to",
    "to_email",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "title",
    "text",
    "content",
    "html",
    "headers",
    "attachments",
];

fn unknown_key_reason(key: &str) -> String {
    match closest(key, KEYS) {
        Some(k) => format!("is not a message field; did you mean '{k}'?"),
        None => format!("is not a message field (known: {})", KEYS.join(", ")),
    }
}

fn text(label: &str, value: &Value) -> Result<String, MailError> {
    value
        .text()
        .map_err(|reason| MailError::field(label, reason))
}

fn text_list(label: &str, value: &Value) -> Result<Vec<String>, MailError> {
    if matches!(value, Value::Map(_)) {
        return Err(MailError::field(
            label,
            "must be a string or a list of strings",
        ));
    }
    value
        .items()
        .into_iter()
        .map(|(suffix, v)| text(&format!("{label}{suffix}"), v))
        .collect()
}

fn headers(value: &Value) -> Result<Vec<(String, String)>, MailError> {
    match value {
        Value::Map(entries) => entries
            .iter()
            .map(|(name, v)| Ok((name.clone(), text(&format!("headers[{name}]"), v)?)))
            .collect(),
        Value::List(items) if items.is_empty() => Ok(Vec::new()),
        other => Err(MailError::field(
            "headers",
            format!(
                "must be an array of name => value, {} given",
                other.type_name()
            ),
        )),
    }
}

fn attachments(value: &Value) -> Result<Vec<Attachment>, MailError> {
    let Value::List(items) = value else {
        return Err(MailError::field(
            "attachments",
            format!("must be a list, {} given", value.type_name()),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| attachment(&format!("attachments[{i}]"), item))
        .collect()
}

/// `'/path/file.pdf'`, or `['path' => ..]` / `['data' => ..]` with optional
/// `name` and `type`.
fn attachment(label: &str, value: &Value) -> Result<Attachment, MailError> {
    let entries = match value {
        Value::Bytes(_) => {
            return Ok(Attachment {
                source: AttachmentSource::Path(PathBuf::from(text(label, value)?)),
                name: None,
                content_type: None,
            })
        }
        Value::Map(entries) => entries,
        other => {
            return Err(MailError::field(
                label,
                format!(
                    "must be a path or an array with 'path' or 'data', {} given",
                    other.type_name()
                ),
            ))
        }
    };
    let mut source = None;
    let mut name = None;
    let mut content_type = None;
    for (key, v) in entries {
        let field = format!("{label}[{key}]");
        match key.as_str() {
            "path" => source = Some(AttachmentSource::Path(PathBuf::from(text(&field, v)?))),
            "data" => match v {
                Value::Bytes(b) => source = Some(AttachmentSource::Data(b.clone())),
                other => {
                    return Err(MailError::field(
                        field,
                        format!("must be a string, {} given", other.type_name()),
                    ))
                }
            },
            "name" => name = Some(text(&field, v)?),
            "type" => content_type = Some(text(&field, v)?),
            _ => {
                return Err(MailError::field(
                    field,
                    "is not an attachment field (known: path, data, name, type)",
                ))
            }
        }
    }
    let source = source.ok_or_else(|| MailError::field(label, "needs 'path' or 'data'"))?;
    Ok(Attachment {
        source,
        name,
        content_type,
    })
}

/// Body text with every line break as LF (lettre then writes CRLF): a lone
/// CR would reach the server as a bare CR, which SMTP forbids.
fn crlf_safe(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Refuses CR, LF and NUL, which would let a value start a new header.
fn header_safe(label: &str, value: &str) -> Result<(), MailError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(MailError::field(
            label,
            "contains a line break or NUL (header injection refused)",
        ));
    }
    Ok(())
}

fn mailboxes(label: &str, entries: &[String]) -> Result<Vec<Mailbox>, MailError> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = if entries.len() == 1 {
            label.to_owned()
        } else {
            format!("{label}[{i}]")
        };
        header_safe(&field, entry)?;
        if entry.trim().is_empty() {
            continue;
        }
        let parsed = Mailboxes::from_str(entry).map_err(|_| {
            MailError::field(
                field.as_str(),
                format!("'{entry}' is not a valid email address"),
            )
        })?;
        out.extend(parsed);
    }
    Ok(out)
}

fn custom_header(name: &str, value: &str) -> Result<HeaderValue, MailError> {
    let label = format!("headers[{name}]");
    // RFC 5322 field-name: printable ASCII except ':'.
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(MailError::field(label, "is not a valid header name"));
    }
    if let Some((_, field)) = RESERVED_HEADERS
        .iter()
        .find(|(h, _)| name.eq_ignore_ascii_case(h))
    {
        return Err(MailError::field(label, format!("is set through '{field}'")));
    }
    header_safe(&label, value)?;
    let header_name = HeaderName::new_from_ascii(name.to_owned())
        .map_err(|_| MailError::field(label.as_str(), "is not a valid header name"))?;
    Ok(HeaderValue::new(header_name, value.to_owned()))
}

/// A Message-ID unique across processes. lettre's own comes from a random
/// generator whose state a forked task worker copies from its parent, so
/// workers could repeat each other's IDs (and receivers drop "duplicates");
/// time, pid and a per-process counter cannot repeat.
fn message_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!(
        "<{nanos:x}.{:x}.{n:x}@{}>",
        super::pid::current(),
        host_name()
    )
}

/// This machine's name for Message-IDs, when it is a valid domain.
fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            })
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// The MIME type for common attachment extensions; anything else is sent as
/// `application/octet-stream`, which every client offers to save.
fn guess_content_type(name: &str) -> &'static str {
    let ext = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "htm" | "html" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ics" => "text/calendar",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic() -> Email {
        Email {
            from: "Shop <shop@example.com>".into(),
            to: vec!["a@example.com".into()],
            subject: "Hello".into(),
            text: Some("Hi there".into()),
            ..Email::default()
        }
    }

    fn rendered(e: &Email) -> String {
        String::from_utf8(e.prepare().unwrap().data).unwrap()
    }

    fn fields(v: &[(&str, Value)]) -> Vec<(String, Value)> {
        v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn a_plain_message_has_headers_body_and_envelope() {
        let p = basic().prepare().unwrap();
        assert_eq!(p.sender.to_string(), "shop@example.com");
        assert_eq!(p.recipients.len(), 1);
        let s = String::from_utf8(p.data).unwrap();
        assert!(s.contains("From: Shop <shop@example.com>\r\n"), "{s}");
        assert!(s.contains("To: a@example.com\r\n"), "{s}");
        assert!(s.contains("Subject: Hello\r\n"), "{s}");
        assert!(s.contains("Message-ID: <"), "{s}");
        assert!(s.contains("Date: "), "{s}");
        assert!(s.contains("Content-Type: text/plain; charset=utf-8"), "{s}");
        assert!(s.contains("\r\n\r\nHi there"), "{s}");
    }

    #[test]
    fn utf8_subject_is_rfc2047_encoded() {
        let mut e = basic();
        e.subject = "Grüße ✓".into();
        let s = rendered(&e);
        assert!(s.contains("Subject: =?utf-8?b?"), "{s}");
        assert!(s.is_ascii());
    }

    #[test]
    fn text_and_html_become_alternative_and_attachments_mixed() {
        let mut e = basic();
        e.html = Some("<p>Hi</p>".into());
        e.attachments = vec![Attachment {
            source: AttachmentSource::Data(b"a,b\n1,2\n".to_vec()),
            name: Some("report.csv".into()),
            content_type: None,
        }];
        let s = rendered(&e);
        assert!(s.contains("multipart/mixed"), "{s}");
        assert!(s.contains("multipart/alternative"), "{s}");
        assert!(s.contains("Content-Type: text/html; charset=utf-8"), "{s}");
        assert!(s.contains("Content-Type: text/csv"), "{s}");
        assert!(
            s.contains("Content-Disposition: attachment; filename=\"report.csv\""),
            "{s}"
        );
    }

    #[test]
    fn bcc_is_in_the_envelope_only_and_recipients_are_deduplicated() {
        let mut e = basic();
        e.cc = vec!["a@example.com, c@example.com".into()];
        e.bcc = vec!["hidden@example.com".into()];
        let p = e.prepare().unwrap();
        let rcpts: Vec<String> = p.recipients.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            rcpts,
            ["a@example.com", "c@example.com", "hidden@example.com"]
        );
        let s = String::from_utf8(p.data).unwrap();
        assert!(!s.contains("hidden@"), "{s}");
    }

    #[test]
    fn custom_headers_are_added_and_message_id_can_be_given() {
        let mut e = basic();
        e.headers = vec![
            ("X-Seq".into(), "42".into()),
            ("Message-ID".into(), "<fixed@example.com>".into()),
        ];
        let s = rendered(&e);
        assert!(s.contains("X-Seq: 42\r\n"), "{s}");
        assert_eq!(s.matches("Message-ID:").count(), 1, "{s}");
        assert!(s.contains("Message-ID: <fixed@example.com>"), "{s}");
    }

    #[test]
    fn validation_names_the_field() {
        let check = |f: &dyn Fn(&mut Email), expected: &str| {
            let mut e = basic();
            f(&mut e);
            assert_eq!(e.prepare().unwrap_err().to_string(), expected);
        };
        check(
            &|e| e.to.clear(),
            "invalid message: 'to' is required: give at least one recipient in 'to', 'cc' or 'bcc'",
        );
        check(&|e| e.from.clear(), "invalid message: 'from' is required");
        check(
            &|e| e.subject = "Hi\r\nBcc: x@evil.com".into(),
            "invalid message: 'subject' contains a line break or NUL (header injection refused)",
        );
        check(
            &|e| e.to = vec!["ok@example.com".into(), "x\nBcc: y@evil.com".into()],
            "invalid message: 'to[1]' contains a line break or NUL (header injection refused)",
        );
        check(&|e| e.headers = vec![("X-A".into(), "v\r\nBcc: e@evil.com".into())], "invalid message: 'headers[X-A]' contains a line break or NUL (header injection refused)");
        check(
            &|e| e.headers = vec![("Bad Name".into(), "v".into())],
            "invalid message: 'headers[Bad Name]' is not a valid header name",
        );
        check(
            &|e| e.headers = vec![("subject".into(), "v".into())],
            "invalid message: 'headers[subject]' is set through 'subject'",
        );
        check(
            &|e| e.from = "a@example.com, b@example.com".into(),
            "invalid message: 'from' must be a single address",
        );
        let mut e = basic();
        e.cc = vec!["not an address".into()];
        let msg = e.prepare().unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid message: 'cc' 'not an address' is not a valid email address"),
            "{msg}"
        );
        let mut e = basic();
        e.attachments = vec![Attachment {
            source: AttachmentSource::Path("/nonexistent/x.pdf".into()),
            name: None,
            content_type: None,
        }];
        let msg = e.prepare().unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid message: 'attachments[0]' cannot read '/nonexistent/x.pdf'"),
            "{msg}"
        );
        e.attachments[0] = Attachment {
            source: AttachmentSource::Data(vec![1]),
            name: None,
            content_type: None,
        };
        assert_eq!(
            e.prepare().unwrap_err().to_string(),
            "invalid message: 'attachments[0]' needs a 'name' when given as 'data'"
        );
        e.attachments[0].name = Some("a\r\nb".into());
        assert!(e
            .prepare()
            .unwrap_err()
            .to_string()
            .contains("'attachments[0][name]' contains a line break"));
        e.attachments[0].name = Some("x.bin".into());
        e.attachments[0].content_type = Some("nonsense".into());
        assert!(e
            .prepare()
            .unwrap_err()
            .to_string()
            .contains("'attachments[0][type]' 'nonsense' is not a MIME type"));
    }

    #[test]
    fn the_seeds_keys_are_accepted_and_errors_use_them() {
        let e = Email::from_fields(&fields(&[
            ("from_email", Value::str("shop@example.com")),
            ("to_email", Value::str("a@example.com")),
            ("title", Value::str("Order")),
            ("content", Value::str("Thanks")),
        ]))
        .unwrap();
        assert_eq!(e.subject, "Order");
        assert_eq!(e.text.as_deref(), Some("Thanks"));
        assert!(rendered(&e).contains("Subject: Order"));
        let bad = Email::from_fields(&fields(&[
            ("from_email", Value::str("shop@example.com")),
            ("to_email", Value::str("xx.@163.com")),
        ]))
        .unwrap();
        assert!(bad
            .prepare()
            .unwrap_err()
            .to_string()
            .starts_with("invalid message: 'to_email' 'xx.@163.com' is not a valid email address"));
    }

    #[test]
    fn from_fields_reads_lists_headers_and_attachments() {
        let e = Email::from_fields(&fields(&[
            ("from", Value::str("s@example.com")),
            (
                "to",
                Value::List(vec![
                    Value::str("a@example.com"),
                    Value::str("B <b@example.com>"),
                ]),
            ),
            ("cc", Value::Null),
            ("headers", Value::Map(vec![("X-Seq".into(), Value::Int(3))])),
            (
                "attachments",
                Value::List(vec![
                    Value::str("/tmp/a.pdf"),
                    Value::Map(vec![
                        ("data".into(), Value::Bytes(vec![0, 255])),
                        ("name".into(), Value::str("b.bin")),
                        ("type".into(), Value::str("application/x-thing")),
                    ]),
                ]),
            ),
        ]))
        .unwrap();
        assert_eq!(e.to, ["a@example.com", "B <b@example.com>"]);
        assert!(e.cc.is_empty());
        assert_eq!(e.headers, [("X-Seq".to_string(), "3".to_string())]);
        assert_eq!(
            e.attachments[0].source,
            AttachmentSource::Path("/tmp/a.pdf".into())
        );
        assert_eq!(
            e.attachments[1].source,
            AttachmentSource::Data(vec![0, 255])
        );
        assert_eq!(
            e.attachments[1].content_type.as_deref(),
            Some("application/x-thing")
        );
    }

    #[test]
    fn from_fields_rejects_unknown_duplicate_and_mistyped_keys() {
        let err = |v: &[(&str, Value)]| Email::from_fields(&fields(v)).unwrap_err().to_string();
        assert_eq!(
            err(&[("attachements", Value::List(vec![]))]),
            "invalid message: 'attachements' is not a message field; did you mean 'attachments'?"
        );
        assert_eq!(
            err(&[("subject", Value::str("a")), ("title", Value::str("b"))]),
            "invalid message: 'title' given together with 'subject'; use one of them"
        );
        assert_eq!(
            err(&[(
                "to",
                Value::List(vec![Value::str("a@example.com"), Value::Bool(true)])
            )]),
            "invalid message: 'to[1]' must be a string, bool given"
        );
        assert_eq!(
            err(&[("subject", Value::Bytes(vec![0xff]))]),
            "invalid message: 'subject' must be valid UTF-8 text"
        );
        assert_eq!(
            err(&[(
                "attachments",
                Value::List(vec![Value::Map(vec![("name".into(), Value::str("x"))])])
            )]),
            "invalid message: 'attachments[0]' needs 'path' or 'data'"
        );
        assert!(err(&[("headers", Value::str("X-A: 1"))])
            .contains("'headers' must be an array of name => value"));
        assert!(
            err(&[("to", Value::Map(vec![("a".into(), Value::str("b"))]))])
                .contains("'to' must be a string or a list")
        );
    }

    #[test]
    fn internationalized_addresses_need_smtputf8() {
        let mut e = basic();
        assert!(!e.prepare().unwrap().needs_smtputf8());
        e.to = vec!["josé@example.com".into()];
        assert!(e.prepare().unwrap().needs_smtputf8());
    }

    #[test]
    fn no_bare_cr_or_lf_reaches_the_wire() {
        let mut e = basic();
        e.text = Some("unix\nmac\rdos\r\nend".into());
        e.html = Some("<p>a\rb</p>".into());
        e.attachments = vec![Attachment {
            source: AttachmentSource::Data(b"a,b\n1,2\n".to_vec()),
            name: Some("r.csv".into()),
            content_type: None,
        }];
        let data = e.prepare().unwrap().data;
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
                b'\n' => assert_eq!(data[i - 1], b'\r', "bare LF at {i}"),
                _ => {}
            }
        }
        let s = String::from_utf8(data).unwrap();
        assert!(s.contains("unix\r\nmac\r\ndos\r\nend"), "{s}");
        assert!(
            s.contains("Content-Transfer-Encoding: base64\r\n\r\nYSxiCjEsMgo="),
            "{s}"
        );
    }

    #[test]
    fn message_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| message_id()).collect();
        assert_eq!(ids.len(), 1000);
        let id = message_id();
        assert!(
            id.starts_with('<') && id.ends_with('>') && id.contains('@'),
            "{id}"
        );
        assert!(id.contains(&format!(".{:x}.", std::process::id())), "{id}");
    }

    #[test]
    fn content_type_guesses() {
        assert_eq!(guess_content_type("a.PDF"), "application/pdf");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
    }
}
