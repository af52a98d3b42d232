//! Checks PHP `serialize()` output that came over the network, in the
//! master, before a task is acknowledged. The master runs no PHP, so this is
//! a small parser of the format's grammar (as PHP 8.2's
//! `ext/standard/var_unserializer.re` accepts it): a payload that would not
//! unserialize is refused with an error instead of reaching `onTask` as
//! `false`, and one holding an object (`O:`, `C:`, an enum `E:`) of a class
//! the server did not allow in `task_allowed_classes` is refused before any
//! PHP sees it, since unserializing an object runs its class's magic methods.
//! The task worker unserializes such payloads with the same limits as well.
//!
//! It is stricter than PHP where `serialize()` never goes: an integer out of
//! range (PHP clamps it) and bytes after the value (PHP 8.2 ignores them)
//! are refused.

use crate::payload::{Encoding, Payload};

/// Classes whose objects may arrive in network payloads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedClasses {
    /// No objects at all (the default).
    #[default]
    None,
    /// Any class the server script knows: the operator trusts every client.
    All,
    /// These classes only; lower-cased, as PHP compares class names.
    Only(Vec<String>),
}

impl AllowedClasses {
    /// `Only`, with the names lower-cased.
    pub fn only<S: AsRef<str>>(names: &[S]) -> Self {
        AllowedClasses::Only(
            names
                .iter()
                .map(|n| n.as_ref().to_ascii_lowercase())
                .collect(),
        )
    }

    fn allows(&self, class: &[u8]) -> bool {
        match self {
            AllowedClasses::None => false,
            AllowedClasses::All => true,
            AllowedClasses::Only(names) => names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(class)),
        }
    }
}

/// What a network payload may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub classes: AllowedClasses,
    /// Most nested non-empty arrays and objects, as unserialize()'s `max_depth`.
    pub max_depth: usize,
}

/// Why a payload was refused; the text goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("the task payload is not valid PHP serialize() data: {what} at byte {at}")]
    Syntax { what: &'static str, at: usize },
    #[error("the task payload holds an object of class '{class}' (at byte {at}): objects from the network are refused unless the server lists their class in task_allowed_classes")]
    Object { class: String, at: usize },
    #[error(
        "the task payload nests arrays or objects deeper than task_max_depth ({max}) at byte {at}"
    )]
    TooDeep { max: usize, at: usize },
}

/// Accepts `data` if `unserialize($data, ['allowed_classes' => …,
/// 'max_depth' => …])` would return the value it encodes, with no object of
/// a class outside `policy`.
pub fn check(data: &[u8], policy: &Policy) -> Result<(), SerialError> {
    let mut p = Parser {
        data,
        pos: 0,
        slots: 0,
        objects: Vec::new(),
        policy,
    };
    p.value()?;
    if p.pos != data.len() {
        return Err(p.syntax("bytes after the end of the value"));
    }
    Ok(())
}

/// A task payload from a network client, as the master queues it: a
/// serialized value is checked and marked [`Encoding::Untrusted`] so that
/// the task worker unserializes it with the same limits; a string stays a
/// string.
pub fn admit(payload: Payload, policy: &Policy) -> Result<Payload, SerialError> {
    if payload.encoding == Encoding::Raw {
        return Ok(payload);
    }
    check(&payload.data, policy)?;
    Ok(Payload {
        encoding: Encoding::Untrusted,
        data: payload.data,
    })
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    /// Values seen so far: what `r:`/`R:` may refer to (numbered from 1).
    slots: usize,
    /// The slots that hold objects, in order: what `r:` may refer to.
    objects: Vec<usize>,
    policy: &'a Policy,
}

impl<'a> Parser<'a> {
    fn syntax(&self, what: &'static str) -> SerialError {
        SerialError::Syntax { what, at: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), SerialError> {
        if self.peek() != Some(byte) {
            return Err(self.syntax(what));
        }
        self.pos += 1;
        Ok(())
    }

    /// An unsigned decimal number (PHP's `uiv`).
    fn unsigned(&mut self) -> Result<usize, SerialError> {
        let start = self.pos;
        let mut n: usize = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(d - b'0')))
                .ok_or_else(|| self.syntax("a number out of range"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.syntax("a digit expected"));
        }
        Ok(n)
    }

    /// `i:` … `;`: an optionally signed integer that fits PHP's int.
    fn integer(&mut self) -> Result<(), SerialError> {
        let start = self.pos;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let digits = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == digits {
            return Err(self.syntax("a digit expected"));
        }
        let text = std::str::from_utf8(&self.data[start..self.pos]).unwrap_or_default();
        if text.parse::<i64>().is_err() {
            return Err(SerialError::Syntax {
                what: "an integer out of range",
                at: start,
            });
        }
        self.expect(b';', "';' expected after an integer")
    }

    /// `d:` … `;`: digits with an optional fraction and exponent, or
    /// `NAN`, `INF`, `-INF`.
    fn float(&mut self) -> Result<(), SerialError> {
        for special in [&b"NAN"[..], b"INF", b"-INF"] {
            if self.data[self.pos..].starts_with(special) {
                self.pos += special.len();
                return self.expect(b';', "';' expected after a float");
            }
        }
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let mut digits = self.skip_digits();
        if self.peek() == Some(b'.') {
            self.pos += 1;
            digits += self.skip_digits();
        }
        if digits == 0 {
            return Err(self.syntax("a digit expected in a float"));
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.skip_digits() == 0 {
                return Err(self.syntax("a digit expected in an exponent"));
            }
        }
        self.expect(b';', "';' expected after a float")
    }

    fn skip_digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `<len>:"<bytes>"`, the part after `s:`; returns the bytes.
    fn quoted(&mut self) -> Result<&'a [u8], SerialError> {
        let len = self.unsigned()?;
        self.expect(b':', "':' expected after a length")?;
        self.expect(b'"', "'\"' expected")?;
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| self.syntax("a string longer than the data"))?;
        self.pos = end;
        self.expect(b'"', "'\"' expected after a string's bytes")?;
        Ok(&self.data[start..end])
    }

    /// `S:<len>:"<escaped>"`: `len` bytes once every `\xx` is decoded.
    fn escaped(&mut self) -> Result<(), SerialError> {
        let len = self.unsigned()?;
        self.expect(b':', "':' expected after a length")?;
        self.expect(b'"', "'\"' expected")?;
        for _ in 0..len {
            match self.peek() {
                None => return Err(self.syntax("a string longer than the data")),
                Some(b'\\') => {
                    let hex = self.data.get(self.pos + 1..self.pos + 3);
                    if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                        return Err(self.syntax("an invalid escape in an S: string"));
                    }
                    self.pos += 3;
                }
                Some(_) => self.pos += 1,
            }
        }
        self.expect(b'"', "'\"' expected after a string's bytes")
    }

    /// A string or integer key of an array or object (keys take no slot).
    fn key(&mut self) -> Result<(), SerialError> {
        let tag = self.peek();
        if !matches!(tag, Some(b'i' | b's' | b'S')) {
            return Err(self.syntax("an array key must be an integer or a string"));
        }
        self.pos += 1;
        self.expect(b':', "':' expected after a type letter")?;
        match tag {
            Some(b'i') => self.integer(),
            Some(b's') => self.quoted().map(drop),
            _ => self.escaped(),
        }?;
        if tag != Some(b'i') {
            self.expect(b';', "';' expected after a string")?;
        }
        Ok(())
    }

    /// `<n>:{`, the start of an array's elements or an object's properties;
    /// returns `n`. An empty one is closed (`}`) here and returns 0.
    fn open(&mut self) -> Result<usize, SerialError> {
        let n = self.unsigned()?;
        self.expect(b':', "':' expected after an element count")?;
        self.expect(b'{', "'{' expected")?;
        if n == 0 {
            self.expect(b'}', "'}' expected after the elements")?;
        }
        Ok(n)
    }

    /// A class name, refused unless allowed.
    fn class(&mut self, at: usize) -> Result<(), SerialError> {
        let name = self.quoted()?;
        if name.is_empty()
            || !name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'\\' | 0x80..=0xff))
        {
            return Err(SerialError::Syntax {
                what: "an invalid class name",
                at,
            });
        }
        if !self.policy.classes.allows(name) {
            return Err(SerialError::Object {
                class: String::from_utf8_lossy(name).into_owned(),
                at,
            });
        }
        Ok(())
    }

    /// One value with everything nested in it. A loop over an explicit
    /// stack instead of recursion: `open` holds, for each non-empty array or
    /// object being read, how many of its elements are still to come, so
    /// nesting up to `task_max_depth` (4096) costs heap, not the stack.
    fn value(&mut self) -> Result<(), SerialError> {
        let mut open: Vec<usize> = Vec::new();
        loop {
            let elements = self.item()?;
            if elements > 0 {
                if open.len() >= self.policy.max_depth {
                    return Err(SerialError::TooDeep {
                        max: self.policy.max_depth,
                        at: self.pos,
                    });
                }
                open.push(elements);
            }
            // Close what is complete, then read the next element's key.
            loop {
                match open.last_mut() {
                    None => return Ok(()),
                    Some(0) => {
                        open.pop();
                        self.expect(b'}', "'}' expected after the elements")?;
                    }
                    Some(left) => {
                        *left -= 1;
                        self.key()?;
                        break;
                    }
                }
            }
        }
    }

    /// One value without what is nested in it, which takes a slot unless it
    /// is an `R:` reference: a scalar, a reference or custom data whole, an
    /// array or object up to its `{`. Returns how many elements follow
    /// (0 for all but a non-empty array or object).
    fn item(&mut self) -> Result<usize, SerialError> {
        let at = self.pos;
        let tag = self.peek().ok_or_else(|| self.syntax("a value expected"))?;
        if tag != b'R' {
            self.slots += 1;
            if matches!(tag, b'O' | b'C' | b'E') {
                self.objects.push(self.slots);
            }
        }
        self.pos += 1;
        if tag == b'N' {
            return self.expect(b';', "';' expected after N").map(|()| 0);
        }
        self.expect(b':', "':' expected after a type letter")?;
        let () = match tag {
            b'b' => {
                if !matches!(self.peek(), Some(b'0' | b'1')) {
                    return Err(self.syntax("0 or 1 expected after b:"));
                }
                self.pos += 1;
                self.expect(b';', "';' expected after a boolean")
            }
            b'i' => self.integer(),
            b'd' => self.float(),
            b's' => {
                self.quoted()?;
                self.expect(b';', "';' expected after a string")
            }
            b'S' => {
                self.escaped()?;
                self.expect(b';', "';' expected after a string")
            }
            b'a' => return self.open(),
            b'O' => {
                self.class(at)?;
                self.expect(b':', "':' expected after a class name")?;
                return self.open();
            }
            b'C' => {
                self.class(at)?;
                self.expect(b':', "':' expected after a class name")?;
                let len = self.unsigned()?;
                self.expect(b':', "':' expected after a length")?;
                self.expect(b'{', "'{' expected")?;
                self.pos = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.data.len())
                    .ok_or_else(|| self.syntax("custom data longer than the data"))?;
                self.expect(b'}', "'}' expected after custom data")
            }
            b'E' => {
                let body = self.quoted()?;
                let Some(colon) = body.iter().position(|b| *b == b':') else {
                    return Err(SerialError::Syntax {
                        what: "an enum case without ':'",
                        at,
                    });
                };
                let class = &body[..colon];
                if !self.policy.classes.allows(class) {
                    return Err(SerialError::Object {
                        class: String::from_utf8_lossy(class).into_owned(),
                        at,
                    });
                }
                self.expect(b';', "';' expected after an enum case")
            }
            b'r' | b'R' => {
                let n = self.unsigned()?;
                // `r:` took its own slot above and may not name itself; it
                // shares an object, so it must name one.
                let valid = if tag == b'r' {
                    n < self.slots && self.objects.binary_search(&n).is_ok()
                } else {
                    n <= self.slots
                };
                if n == 0 || !valid {
                    return Err(SerialError::Syntax {
                        what: "a reference to a value that does not exist",
                        at,
                    });
                }
                self.expect(b';', "';' expected after a reference")
            }
            _ => Err(SerialError::Syntax {
                what: "an unknown type letter",
                at,
            }),
        }?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(classes: AllowedClasses) -> Policy {
        Policy {
            classes,
            max_depth: 8,
        }
    }

    fn ok(data: &str) {
        if let Err(e) = check(data.as_bytes(), &policy(AllowedClasses::None)) {
            panic!("{data:?} refused: {e}");
        }
    }

    fn refused(data: &[u8]) -> SerialError {
        check(data, &policy(AllowedClasses::None)).expect_err(&String::from_utf8_lossy(data))
    }

    #[test]
    fn accepts_what_serialize_produces_for_plain_values() {
        for s in [
            "N;",
            "b:0;",
            "b:1;",
            "i:0;",
            "i:-9223372036854775808;",
            "i:9223372036854775807;",
            "i:+5;",
            "d:0.1;",
            "d:-1.5E+25;",
            "d:1.0E-10;",
            "d:INF;",
            "d:-INF;",
            "d:NAN;",
            "d:5;",
            "d:.5;",
            "d:5.;",
            "s:0:\"\";",
            "s:5:\"a\"b;c\";",
            "s:3:\"\0é\";",
            "S:3:\"a\\00b\";",
            "a:0:{}",
            "a:2:{i:0;s:1:\"x\";s:2:\"to\";a:1:{i:-1;N;}}",
            "a:2:{s:1:\"a\";a:0:{}s:1:\"b\";R:2;}",
            "a:1:{i:0;R:1;}",
        ] {
            ok(s);
        }
    }

    #[test]
    fn refuses_broken_syntax_naming_the_byte() {
        for s in [
            &b""[..],
            b"x",
            b"i:;",
            b"i:1",
            b"i:1x;",
            b"i:99999999999999999999;",
            b"b:2;",
            b"d:;",
            b"d:1e;",
            b"d:inf;",
            b"s:5:\"abc\";",
            b"s:1:\"abc\";",
            b"s:-1:\"\";",
            b"s:99999999999999999999999:\"\";",
            b"S:1:\"\\g0\";",
            b"a:1:{}",
            b"a:1:{i:0;}",
            b"a:1:{d:0.5;i:1;}",
            b"a:1:{N;i:1;}",
            b"a:1:{a:0:{}i:1;}",
            b"a:0:{",
            b"N;N;",
            b"i:1;garbage",
            b"r:1;",
            b"R:1;",
            b"a:1:{i:0;r:5;}",
            b"a:2:{i:0;i:7;i:1;r:2;}",
            b"a:1:{i:0;R:0;}",
            b"o:8:\"stdClass\":0:{}",
            b"O:3:\"a b\":0:{}",
            b"O:0:\"\":0:{}",
        ] {
            match refused(s) {
                SerialError::Syntax { .. } => {}
                other => panic!("{:?}: {other}", String::from_utf8_lossy(s)),
            }
        }
        let e = refused(b"a:1:{i:0;s:9:\"ab\";}");
        assert_eq!(
            e.to_string(),
            "the task payload is not valid PHP serialize() data: a string longer than the data at byte 14"
        );
    }

    #[test]
    fn refuses_objects_of_any_class_by_default() {
        for (data, class) in [
            (
                &b"O:6:\"Gadget\":1:{s:4:\"path\";s:4:\"/tmp\";}"[..],
                "Gadget",
            ),
            (b"O:8:\"stdClass\":0:{}", "stdClass"),
            (
                b"C:11:\"ArrayObject\":21:{x:i:0;a:0:{};m:a:0:{}}",
                "ArrayObject",
            ),
            (b"E:11:\"Suit:Hearts\";", "Suit"),
            (b"a:1:{i:0;O:9:\"App\\Evil1\":0:{}}", "App\\Evil1"),
        ] {
            match refused(data) {
                SerialError::Object { class: c, .. } => assert_eq!(c, class),
                other => panic!("{other}"),
            }
        }
        let e = refused(b"a:1:{i:0;O:6:\"Gadget\":0:{}}");
        assert_eq!(
            e.to_string(),
            "the task payload holds an object of class 'Gadget' (at byte 9): objects from the network are refused unless the server lists their class in task_allowed_classes"
        );
    }

    #[test]
    fn allows_listed_classes_case_insensitively_and_all_with_true() {
        let only = policy(AllowedClasses::only(&["App\\Mail", "stdclass"]));
        let nested =
            b"a:2:{i:0;O:8:\"app\\MAIL\":1:{s:2:\"to\";s:1:\"x\";}i:1;O:8:\"stdClass\":0:{}}";
        assert_eq!(check(nested, &only), Ok(()));
        assert!(matches!(
            check(b"O:6:\"Gadget\":0:{}", &only),
            Err(SerialError::Object { .. })
        ));
        let all = policy(AllowedClasses::All);
        assert_eq!(check(b"O:6:\"Gadget\":0:{}", &all), Ok(()));
        assert_eq!(check(b"C:3:\"Foo\":3:{abc}", &all), Ok(()));
        assert_eq!(check(b"E:11:\"Suit:Hearts\";", &all), Ok(()));
        assert!(check(b"C:3:\"Foo\":9:{abc}", &all).is_err());
        // a property value may refer to the object itself
        assert_eq!(check(b"O:3:\"Foo\":1:{s:4:\"self\";r:1;}", &all), Ok(()));
        assert_eq!(check(b"a:2:{i:0;O:3:\"Foo\":0:{}i:1;r:2;}", &all), Ok(()));
    }

    #[test]
    fn depth_counts_non_empty_arrays_as_unserialize_does() {
        let p = |max| Policy {
            classes: AllowedClasses::None,
            max_depth: max,
        };
        let nest = |n: usize| "a:1:{i:0;".repeat(n) + "N;" + &"}".repeat(n);
        assert_eq!(check(nest(3).as_bytes(), &p(3)), Ok(()));
        assert_eq!(
            check(nest(4).as_bytes(), &p(3)),
            Err(SerialError::TooDeep { max: 3, at: 32 })
        );
        // empty arrays do not count
        assert_eq!(check(b"a:1:{i:0;a:0:{}}", &p(1)), Ok(()));
        // a deep attack stops at the limit instead of exhausting the stack
        let deep = "a:1:{i:0;".repeat(1_000_000);
        assert!(matches!(
            check(deep.as_bytes(), &p(4096)),
            Err(SerialError::TooDeep { .. })
        ));
    }

    #[test]
    fn the_deepest_value_allowed_is_read_without_recursion() {
        let p = Policy {
            classes: AllowedClasses::None,
            max_depth: 4096,
        };
        let nest = |n: usize| "a:1:{i:0;".repeat(n) + "N;" + &"}".repeat(n);
        assert_eq!(check(nest(4096).as_bytes(), &p), Ok(()));
        let mut unclosed = nest(4096);
        unclosed.pop();
        assert_eq!(
            check(unclosed.as_bytes(), &p),
            Err(SerialError::Syntax {
                what: "'}' expected after the elements",
                at: unclosed.len()
            })
        );
    }

    #[test]
    fn admitted_values_are_marked_untrusted_and_strings_stay_strings() {
        let p = policy(AllowedClasses::None);
        let payload = |encoding, data: &'static [u8]| Payload {
            encoding,
            data: bytes::Bytes::from_static(data),
        };
        assert_eq!(
            admit(payload(Encoding::Serialized, b"a:0:{}"), &p),
            Ok(payload(Encoding::Untrusted, b"a:0:{}"))
        );
        assert_eq!(
            admit(payload(Encoding::Raw, b"O:1:\"A\":0:{}"), &p),
            Ok(payload(Encoding::Raw, b"O:1:\"A\":0:{}"))
        );
        assert!(admit(payload(Encoding::Serialized, b"O:1:\"A\":0:{}"), &p).is_err());
    }

    #[test]
    fn claimed_sizes_beyond_the_data_cost_nothing() {
        assert!(matches!(
            refused(b"a:4294967295:{}"),
            SerialError::Syntax { .. }
        ));
        assert!(matches!(
            refused(b"a:4294967295:{i:0;i:0;}"),
            SerialError::Syntax { .. }
        ));
        assert!(matches!(
            refused(b"s:18446744073709551615:\"\";"),
            SerialError::Syntax { .. }
        ));
    }
}
