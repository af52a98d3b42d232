//! SMTP replies (RFC 5321 §4.2): a three-digit code and one or more lines,
//! all but the last written `250-text`, the last `250 text`. Parsed here
//! leniently (a bare `250` and LF-only endings are accepted, as real servers
//! send them) but bounded, because the bytes come from the network.

use std::str::FromStr;

use lettre::transport::smtp::response::Response;

/// Longest reply line accepted (RFC 5321 allows 512; servers exceed it).
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply (EHLO lists one extension per line).
pub const MAX_LINES: usize = 128;

/// One complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text of each line, without code and separator.
    pub lines: Vec<String>,
}

/// One parsed line: its code, whether more lines follow, its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The three-digit reply code.
    pub code: u16,
    /// Whether more lines of the same reply follow (`250-`).
    pub more: bool,
    /// The text after the code and separator.
    pub text: String,
}

impl Line {
    /// Parses one line including its line ending.
    pub fn parse(raw: &[u8]) -> Result<Line, String> {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let show = || String::from_utf8_lossy(raw).into_owned();
        let code = match raw.get(..3) {
            Some(d)
                if (b'2'..=b'5').contains(&d[0])
                    && d[1].is_ascii_digit()
                    && d[2].is_ascii_digit() =>
            {
                u16::from(d[0] - b'0') * 100 + u16::from(d[1] - b'0') * 10 + u16::from(d[2] - b'0')
            }
            _ => return Err(format!("not an SMTP reply line: {:?}", show())),
        };
        let (more, text) = match raw.get(3) {
            None => (false, &raw[3..]),
            Some(b' ') => (false, &raw[4..]),
            Some(b'-') => (true, &raw[4..]),
            Some(_) => return Err(format!("not an SMTP reply line: {:?}", show())),
        };
        Ok(Line {
            code,
            more,
            text: String::from_utf8_lossy(text).into_owned(),
        })
    }
}

impl Reply {
    /// 2xx and 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The text of all lines, joined by spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// `250 text`, the form `send()` returns to PHP.
    pub fn summary(&self) -> String {
        let text = self.text();
        if text.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {}", self.code, text)
        }
    }

    /// The same reply as lettre's type, for lettre's EHLO and AUTH helpers.
    pub fn to_lettre(&self) -> Option<Response> {
        let mut raw = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            raw.push_str(&format!("{}{sep}{line}\r\n", self.code));
        }
        Response::from_str(&raw).ok()
    }
}

/// Accumulates lines into a reply.
#[derive(Default)]
pub struct Assembler {
    code: Option<u16>,
    lines: Vec<String>,
}

impl Assembler {
    /// Adds one raw line; returns the reply once its last line arrived.
    pub fn push(&mut self, raw: &[u8]) -> Result<Option<Reply>, String> {
        let line = Line::parse(raw)?;
        if *self.code.get_or_insert(line.code) != line.code {
            return Err(format!(
                "reply lines with different codes ({} then {})",
                self.code.unwrap_or_default(),
                line.code
            ));
        }
        self.lines.push(line.text);
        if line.more {
            if self.lines.len() >= MAX_LINES {
                return Err(format!("reply longer than {MAX_LINES} lines"));
            }
            return Ok(None);
        }
        Ok(Some(Reply {
            code: line.code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(raw: &[&[u8]]) -> Result<Reply, String> {
        let mut a = Assembler::default();
        for (i, l) in raw.iter().enumerate() {
            if let Some(r) = a.push(l)? {
                assert_eq!(i + 1, raw.len(), "reply ended early");
                return Ok(r);
            }
        }
        Err("incomplete".into())
    }

    #[test]
    fn single_and_multi_line_replies() {
        let r = assemble(&[b"250 OK queued as 7\r\n"]).unwrap();
        assert_eq!(
            r,
            Reply {
                code: 250,
                lines: vec!["OK queued as 7".into()]
            }
        );
        assert_eq!(r.summary(), "250 OK queued as 7");
        let r = assemble(&[
            b"250-mx.example.com\r\n",
            b"250-STARTTLS\r\n",
            b"250 8BITMIME\r\n",
        ])
        .unwrap();
        assert_eq!(r.lines, ["mx.example.com", "STARTTLS", "8BITMIME"]);
        assert!(r.is_positive());
    }

    #[test]
    fn lenient_forms() {
        assert_eq!(assemble(&[b"250\r\n"]).unwrap().summary(), "250");
        assert_eq!(assemble(&[b"354 go on\n"]).unwrap().code, 354);
        assert!(!assemble(&[b"550 no\r\n"]).unwrap().is_positive());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(assemble(&[b"hello\r\n"]).is_err());
        assert!(assemble(&[b"650 x\r\n"]).is_err());
        assert!(assemble(&[b"25\r\n"]).is_err());
        assert!(assemble(&[b"250x\r\n"]).is_err());
        assert_eq!(
            assemble(&[b"250-a\r\n", b"251 b\r\n"]).unwrap_err(),
            "reply lines with different codes (250 then 251)"
        );
        let many: Vec<&[u8]> = std::iter::repeat_n(b"250-x\r\n".as_slice(), MAX_LINES).collect();
        assert!(assemble(&many).unwrap_err().contains("longer than"));
    }

    #[test]
    fn converts_to_lettre() {
        let r = assemble(&[b"250-mx\r\n", b"250 STARTTLS\r\n"]).unwrap();
        let l = r.to_lettre().unwrap();
        assert!(l.has_code(250));
        assert_eq!(l.message().collect::<Vec<_>>(), ["mx", "STARTTLS"]);
    }
}
