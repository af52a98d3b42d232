//! zvals to and from `taskq_value::Value`, on the PHP thread: the one
//! conversion `set()` (server and client) and the mailer share. The engine
//! and the mailer decide what each field accepts; this only mirrors PHP's
//! types, strings byte-exact and keyed arrays with their keys.

use ext_php_rs::convert::IntoZval;
use ext_php_rs::types::{ArrayKey, ZendHashTable, Zval};

use super::error::PhpError;
use super::values::bytes_zval;
use taskq_value::Value;

/// The entries of an options or message array, keys as strings.
pub fn fields(ht: &ZendHashTable) -> Vec<(String, Value)> {
    ht.iter().map(|(k, v)| (key(&k), value(v))).collect()
}

/// A `set()` array as option values. An object or resource anywhere in a
/// value is refused with the option's name before any option rule sees it:
/// no option takes one, and `$server->setting` must not keep one.
pub fn options(ht: &ZendHashTable) -> Result<Vec<(String, Value)>, PhpError> {
    fields(ht)
        .into_iter()
        .map(|(key, value)| match value.unsupported() {
            Some(_) => Err(PhpError::OptionValue(key)),
            None => Ok((key, value)),
        })
        .collect()
}

/// One zval; arrays with keys 0, 1, 2, ... become lists.
pub fn value(z: &Zval) -> Value {
    let z = z.dereference();
    if z.is_null() {
        Value::Null
    } else if let Some(b) = z.bool() {
        Value::Bool(b)
    } else if let Some(i) = z.long() {
        Value::Int(i)
    } else if let Some(f) = z.double() {
        Value::Float(f)
    } else if let Some(s) = z.zend_str() {
        Value::Bytes(s.as_bytes().to_vec())
    } else if let Some(ht) = z.array() {
        if ht.has_sequential_keys() {
            Value::List(ht.values().map(value).collect())
        } else {
            Value::Map(fields(ht))
        }
    } else {
        Value::Unsupported(type_name(z))
    }
}

/// The inverse of [`value`], for `$server->setting`: lists and keyed arrays
/// come back as PHP arrays with the same keys, strings with the same bytes.
/// An `Unsupported` never reaches here (`options` refused it); it becomes
/// `null`.
pub fn zval(v: &Value) -> Zval {
    let made = match v {
        Value::Null | Value::Unsupported(_) => Ok(Zval::null()),
        Value::Bool(b) => b.into_zval(false),
        Value::Int(i) => i.into_zval(false),
        Value::Float(f) => f.into_zval(false),
        Value::Bytes(b) => Ok(bytes_zval(b)),
        Value::List(items) => {
            let mut ht = ZendHashTable::new();
            for item in items {
                let _ = ht.push(zval(item));
            }
            ht.into_zval(false)
        }
        Value::Map(entries) => {
            let mut ht = ZendHashTable::new();
            for (k, item) in entries {
                // A canonical integer key ("7") goes back as the int key it was.
                let _ = ht.insert(k.as_str(), zval(item));
            }
            ht.into_zval(false)
        }
    };
    made.unwrap_or_else(|_| Zval::null())
}

/// The entries of a PHP array as (key, zval) pairs in order, for options
/// read straight from zvals (`task()`'s).
pub fn entries(ht: &ZendHashTable) -> Vec<(String, &Zval)> {
    ht.iter().map(|(k, v)| (key(&k), v)).collect()
}

/// An array key as PHP prints it.
pub fn key(k: &ArrayKey<'_>) -> String {
    match k {
        ArrayKey::Long(i) => i.to_string(),
        other => other.to_string(),
    }
}

/// PHP's name for the type of a value no field accepts (`stdClass`,
/// `resource`), for error messages.
pub fn type_name(z: &Zval) -> String {
    match z.object() {
        Some(obj) => obj.get_class_name().unwrap_or_else(|_| "object".into()),
        None if z.is_resource() => "resource".into(),
        None => format!("{:?}", z.get_type()).to_ascii_lowercase(),
    }
}
