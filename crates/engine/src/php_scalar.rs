//! PHP's null, booleans and integers in `serialize()` form, written and read
//! without calling PHP. Most task results are `true`: a call into PHP's
//! `serialize()` in the task worker and `unserialize()` in the worker that
//! gets the result cost more than the rest of handing the result over.
//! Only the exact text PHP's `serialize()` writes is read here; anything
//! else still goes to PHP's own `unserialize()`, so no value changes.

use bytes::Bytes;

/// A value whose serialized form is fixed and carries no object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
}

impl Scalar {
    /// What `serialize()` returns for it.
    pub fn serialized(self) -> Bytes {
        match self {
            Scalar::Null => Bytes::from_static(b"N;"),
            Scalar::Bool(false) => Bytes::from_static(b"b:0;"),
            Scalar::Bool(true) => Bytes::from_static(b"b:1;"),
            Scalar::Int(n) => Bytes::from(format!("i:{n};")),
        }
    }

    /// The value of `data` when it is exactly what `serialize()` writes for
    /// one of these; None for anything else (a sign, leading zeros or an
    /// integer out of range are PHP's to judge).
    pub fn parse(data: &[u8]) -> Option<Scalar> {
        match data {
            b"N;" => Some(Scalar::Null),
            b"b:0;" => Some(Scalar::Bool(false)),
            b"b:1;" => Some(Scalar::Bool(true)),
            [b'i', b':', digits @ .., b';'] => {
                let text = std::str::from_utf8(digits).ok()?;
                let n: i64 = text.parse().ok()?;
                (n.to_string() == text).then_some(Scalar::Int(n))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_reads_back_as_written() {
        let all = [
            Scalar::Null,
            Scalar::Bool(false),
            Scalar::Bool(true),
            Scalar::Int(0),
            Scalar::Int(-1),
            Scalar::Int(42),
            Scalar::Int(i64::MAX),
            Scalar::Int(i64::MIN),
        ];
        for s in all {
            assert_eq!(Scalar::parse(&s.serialized()), Some(s), "{s:?}");
        }
        assert_eq!(&Scalar::Int(-42).serialized()[..], b"i:-42;");
        assert_eq!(&Scalar::Bool(true).serialized()[..], b"b:1;");
    }

    #[test]
    fn anything_serialize_would_not_write_is_left_to_php() {
        for text in [
            &b"i:+5;"[..],
            b"i:05;",
            b"i:-0;",
            b"i:;",
            b"i:9223372036854775808;",
            b"i:1",
            b"i:1;x",
            b"b:2;",
            b"b:1",
            b"N",
            b"d:1;",
            b"s:1:\"1\";",
            b"",
        ] {
            assert_eq!(
                Scalar::parse(text),
                None,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
