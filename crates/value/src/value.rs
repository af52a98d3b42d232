//! Loosely typed input (a PHP array converted by the PHP layer) for messages
//! and options. Keeping this conversion target free of zvals lets every rule
//! about what a field accepts live in the engine, where it is unit-tested.

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
}
