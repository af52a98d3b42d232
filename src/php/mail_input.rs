//! PHP arrays to the mailer engine's input values, on the PHP thread. The
//! engine decides what each field accepts; this only mirrors PHP's types.

use ext_php_rs::types::{ArrayKey, ZendHashTable, Zval};

use taskq_value::Value;

/// The entries of an options or message array, keys as strings.
pub fn fields(ht: &ZendHashTable) -> Vec<(String, Value)> {
    ht.iter().map(|(k, v)| (key(&k), value(v))).collect()
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
