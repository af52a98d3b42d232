//! Loosely typed input (a PHP array converted by the PHP layer) for messages
//! and options. Keeping this conversion target free of zvals lets every rule
//! about what a field accepts live in the engine, where it is unit-tested.

use std::borrow::Cow;

/// One input value. Strings are bytes because PHP strings are: attachment
/// data is binary, and text fields are checked for UTF-8 where they are read.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// PHP `null`: an optional field left out.
    Null,
    /// PHP `bool`.
    Bool(bool),
    /// PHP `int`.
    Int(i64),
    /// PHP `float`.
    Float(f64),
    /// PHP `string`, binary-safe.
    Bytes(Vec<u8>),
    /// A PHP array whose keys are 0, 1, 2, ... in order.
    List(Vec<Value>),
    /// Any other PHP array, keys as strings, in order.
    Map(Vec<(String, Value)>),
    /// An object or resource; the PHP type name is kept for the error.
    Unsupported(String),
}

impl Value {
    /// A string value, as PHP would pass a string literal.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// The type as PHP would name it, for error messages.
    pub fn type_name(&self) -> &str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "string",
            Value::List(_) | Value::Map(_) => "array",
            Value::Unsupported(name) => name,
        }
    }

    /// The value as UTF-8 text; ints and floats are accepted as PHP would
    /// print them, so `'X-Seq' => 7` works.
    pub fn text(&self) -> Result<String, String> {
        match self {
            Value::Bytes(b) => {
                String::from_utf8(b.clone()).map_err(|_| "must be valid UTF-8 text".to_owned())
            }
            Value::Int(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            other => Err(format!("must be a string, {} given", other.type_name())),
        }
    }

    /// A string value as text with invalid UTF-8 replaced (U+FFFD), the way
    /// `set()` has always read numbers, sizes and paths; `None` for any other
    /// type, so each option decides what else it accepts.
    pub fn lossy_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b)),
            _ => None,
        }
    }

    /// The elements of an array in order, keys dropped (PHP's
    /// `array_values`); `None` when the value is not an array.
    pub fn elements(&self) -> Option<Vec<&Value>> {
        match self {
            Value::List(items) => Some(items.iter().collect()),
            Value::Map(entries) => Some(entries.iter().map(|(_, v)| v).collect()),
            _ => None,
        }
    }

    /// The type name of the first object or resource found in this value,
    /// at any depth: `set()` refuses such an option value as a whole before
    /// any option rule sees it.
    pub fn unsupported(&self) -> Option<&str> {
        match self {
            Value::Unsupported(name) => Some(name),
            Value::List(items) => items.iter().find_map(Value::unsupported),
            Value::Map(entries) => entries.iter().find_map(|(_, v)| v.unsupported()),
            _ => None,
        }
    }

    /// The value as PHP's `var_export` shows it, on one line with short
    /// array syntax (`[1, 'a']`, `['k' => true]`), for error messages that
    /// quote what the user passed.
    pub fn php_repr(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) if f.is_nan() => "NAN".to_string(),
            Value::Float(f) if f.is_infinite() => if *f > 0.0 { "INF" } else { "-INF" }.to_string(),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
            Value::Float(f) => f.to_string(),
            Value::Bytes(b) => quoted(&String::from_utf8_lossy(b)),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(Value::php_repr).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Map(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{} => {}", key_repr(k), v.php_repr()))
                    .collect();
                format!("[{}]", entries.join(", "))
            }
            Value::Unsupported(name) => name.clone(),
        }
    }

    /// The entries of a list or map as (label suffix, value): `[0]`, `[1]`
    /// for lists, `[key]` for maps. Anything else is a one-element list
    /// without suffix, so a single string and a list of strings both work.
    pub fn items(&self) -> Vec<(String, &Value)> {
        match self {
            Value::List(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v))
                .collect(),
            Value::Map(entries) => entries.iter().map(|(k, v)| (format!("[{k}]"), v)).collect(),
            single => vec![(String::new(), single)],
        }
    }
}

/// A PHP single-quoted string literal.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An array key as `var_export` shows it: PHP stores a canonical decimal
/// string key ("7", "-1", not "07") as an integer, so such a key was an
/// integer and is shown bare; any other key is a quoted string.
fn key_repr(key: &str) -> String {
    let digits = key.strip_prefix('-').unwrap_or(key);
    let canonical = match digits.as_bytes() {
        [b'0'] => key == "0",
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if canonical && key.parse::<i64>().is_ok() {
        key.to_string()
    } else {
        quoted(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_accepts_strings_and_numbers_only() {
        assert_eq!(Value::str("é").text().unwrap(), "é");
        assert_eq!(Value::Int(7).text().unwrap(), "7");
        assert_eq!(
            Value::Bytes(vec![0xff]).text().unwrap_err(),
            "must be valid UTF-8 text"
        );
        assert_eq!(
            Value::Bool(true).text().unwrap_err(),
            "must be a string, bool given"
        );
        assert_eq!(
            Value::Unsupported("stdClass".into()).text().unwrap_err(),
            "must be a string, stdClass given"
        );
    }

    #[test]
    fn items_label_list_and_map_entries() {
        let list = Value::List(vec![Value::str("a"), Value::str("b")]);
        let labels: Vec<String> = list.items().into_iter().map(|(l, _)| l).collect();
        assert_eq!(labels, ["[0]", "[1]"]);
        let map = Value::Map(vec![("X-A".into(), Value::str("1"))]);
        assert_eq!(map.items()[0].0, "[X-A]");
        let single = Value::str("a@example.com");
        assert_eq!(single.items(), vec![(String::new(), &single)]);
    }

    #[test]
    fn lossy_str_reads_strings_only_replacing_invalid_utf8() {
        assert_eq!(Value::str("8M").lossy_str().as_deref(), Some("8M"));
        assert_eq!(
            Value::Bytes(vec![b'a', 0xff]).lossy_str().as_deref(),
            Some("a\u{fffd}")
        );
        assert_eq!(Value::Int(8).lossy_str(), None);
    }

    #[test]
    fn elements_drop_the_keys_of_lists_and_maps() {
        let list = Value::List(vec![Value::Int(1)]);
        assert_eq!(list.elements(), Some(vec![&Value::Int(1)]));
        let map = Value::Map(vec![("a".into(), Value::str("x"))]);
        assert_eq!(map.elements(), Some(vec![&Value::str("x")]));
        assert_eq!(Value::str("x").elements(), None);
    }

    #[test]
    fn unsupported_is_found_at_any_depth() {
        assert_eq!(
            Value::Unsupported("stdClass".into()).unsupported(),
            Some("stdClass")
        );
        let nested = Value::Map(vec![(
            "a".into(),
            Value::List(vec![Value::Int(1), Value::Unsupported("resource".into())]),
        )]);
        assert_eq!(nested.unsupported(), Some("resource"));
        let plain = Value::List(vec![Value::Map(vec![("k".into(), Value::Null)])]);
        assert_eq!(plain.unsupported(), None);
    }

    #[test]
    fn values_are_shown_as_php_prints_them() {
        assert_eq!(Value::Null.php_repr(), "null");
        assert_eq!(Value::Bool(false).php_repr(), "false");
        assert_eq!(Value::Float(2.0).php_repr(), "2.0");
        assert_eq!(Value::Float(-0.25).php_repr(), "-0.25");
        assert_eq!(Value::Float(f64::INFINITY).php_repr(), "INF");
        assert_eq!(Value::Float(f64::NAN).php_repr(), "NAN");
        assert_eq!(Value::str("it's a \\").php_repr(), "'it\\'s a \\\\'");
        assert_eq!(Value::Bytes(vec![0xff]).php_repr(), "'\u{fffd}'");
        assert_eq!(
            Value::List(vec![Value::Int(1), Value::str("a")]).php_repr(),
            "[1, 'a']"
        );
    }

    #[test]
    fn keyed_arrays_are_shown_with_their_keys() {
        let map = Value::Map(vec![
            ("k".into(), Value::Bool(true)),
            ("7".into(), Value::str("x")),
            ("-1".into(), Value::Null),
            ("07".into(), Value::Int(0)),
            ("it's".into(), Value::List(vec![])),
        ]);
        assert_eq!(
            map.php_repr(),
            "['k' => true, 7 => 'x', -1 => null, '07' => 0, 'it\\'s' => []]"
        );
    }
}
