//! Conversions between zvals and the engine's plain Rust values. Strings
//! cross process boundaries as raw bytes; every other PHP value goes through
//! PHP's own `serialize()`, so it arrives as exactly the same value.

use bytes::Bytes;
use ext_php_rs::convert::IntoZval;
use ext_php_rs::types::ZendCallable;
use ext_php_rs::types::{ZendHashTable, ZendStr, Zval};
use ext_php_rs::zend::ExecutorGlobals;

use super::error::PhpError;
use taskq_engine::payload::{Encoding, Payload};
use taskq_engine::php_serial::{AllowedClasses, Policy};

/// A PHP string zval holding `bytes` (binary-safe).
pub fn bytes_zval(bytes: &[u8]) -> Zval {
    let mut z = Zval::new();
    z.set_zend_string(ZendStr::new(bytes, false));
    z
}

/// The bytes of a PHP string zval, binary-safe.
pub fn zval_bytes(z: &Zval) -> Option<&[u8]> {
    z.zend_str().map(|s| s.as_bytes())
}

/// Calls PHP's `function($arg)`. An exception it throws (serialize() of a
/// Closure) is taken here and returned as text: left pending, it would fail
/// whatever PHP code runs next, such as the worker's next task.
fn call(function: &'static str, arg: &Zval) -> Result<Zval, PhpError> {
    let f = ZendCallable::try_from_name(function)?;
    f.try_call(vec![arg]).map_err(|e| {
        let thrown = ExecutorGlobals::take_exception().and_then(|ex| {
            let z = ex.into_zval(false).ok()?;
            let class = z.object()?.get_class_name().ok()?;
            let message = z.try_call_method("getMessage", vec![]).ok()?.string()?;
            Some(format!("{class}: {message}"))
        });
        PhpError::Call {
            function,
            cause: thrown.unwrap_or_else(|| e.to_string()),
        }
    })
}

/// Encodes a task or result value for IPC.
pub fn to_payload(z: &Zval) -> Result<Payload, PhpError> {
    if let Some(bytes) = zval_bytes(z) {
        return Ok(Payload {
            encoding: Encoding::Raw,
            data: Bytes::copy_from_slice(bytes),
        });
    }
    let s = call("serialize", z)?;
    let bytes = zval_bytes(&s).ok_or(PhpError::NotAString("serialize"))?;
    Ok(Payload {
        encoding: Encoding::Serialized,
        data: Bytes::copy_from_slice(bytes),
    })
}

/// Decodes a payload back into the value the sender passed. A value from a
/// network client becomes objects only of the classes `untrusted` allows.
pub fn from_payload(p: &Payload, untrusted: &Policy) -> Result<Zval, PhpError> {
    match p.encoding {
        Encoding::Raw => Ok(bytes_zval(&p.data)),
        Encoding::Serialized => call("unserialize", &bytes_zval(&p.data)),
        Encoding::Untrusted => unserialize_untrusted(&p.data, untrusted),
    }
}

/// `unserialize($data, ['allowed_classes' => …, 'max_depth' => …])`. The
/// master checked the data already (`taskq_engine::php_serial`); this is the second
/// line, and a failure here fails the task rather than handing it `false`.
fn unserialize_untrusted(data: &[u8], policy: &Policy) -> Result<Zval, PhpError> {
    let classes = match &policy.classes {
        AllowedClasses::None => bool_zval(false),
        AllowedClasses::All => bool_zval(true),
        AllowedClasses::Only(names) => {
            let mut list = ZendHashTable::new();
            for name in names {
                list.push(bytes_zval(name.as_bytes()))?;
            }
            let mut z = Zval::new();
            z.set_hashtable(list);
            z
        }
    };
    let mut options = ZendHashTable::new();
    options
        .insert("allowed_classes", classes)
        .and_then(|_| options.insert("max_depth", long_zval(policy.max_depth as i64)))?;
    let mut options_zval = Zval::new();
    options_zval.set_hashtable(options);
    let f = ZendCallable::try_from_name("unserialize")?;
    let value = f
        .try_call(vec![&bytes_zval(data), &options_zval])
        .map_err(|e| call_failed("unserialize", &e))?;
    if value.bool() == Some(false) && data != b"b:0;" {
        return Err(PhpError::UntrustedPayload);
    }
    Ok(value)
}

/// JSON text for an array passed to `TaskClient::send()`, with PHP's own
/// `json_encode` so the receiver's `json_decode` sees what PHP would produce.
pub fn json_encode(z: &Zval) -> Result<Vec<u8>, PhpError> {
    let f = ZendCallable::try_from_name("json_encode")?;
    let flags: i64 = 64 | 256 | 4194304; // JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR
    let out = f
        .try_call(vec![z, &flags])
        .map_err(|e| call_failed("json_encode", &e))?;
    zval_bytes(&out)
        .map(<[u8]>::to_vec)
        .ok_or(PhpError::NotAString("json_encode"))
}

/// `function` failed without an exception we could read.
fn call_failed(function: &'static str, e: &ext_php_rs::error::Error) -> PhpError {
    PhpError::Call {
        function,
        cause: e.to_string(),
    }
}

/// A PHP int zval.
pub fn long_zval(v: i64) -> Zval {
    let mut z = Zval::new();
    z.set_long(v);
    z
}

/// A PHP bool zval, for Swoole's `int|false` returns.
pub fn bool_zval(v: bool) -> Zval {
    let mut z = Zval::new();
    z.set_bool(v);
    z
}

/// A PHP value for a JSON answer from the master (`stats()`, `getClientInfo()`).
pub fn json_zval(v: &serde_json::Value) -> Zval {
    use serde_json::Value as J;
    match v {
        J::Null => Zval::null(),
        J::Bool(b) => bool_zval(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => long_zval(i),
            None => n
                .as_f64()
                .and_then(|f| f.into_zval(false).ok())
                .unwrap_or_else(Zval::null),
        },
        J::String(s) => bytes_zval(s.as_bytes()),
        J::Array(items) => {
            let mut ht = ZendHashTable::new();
            for item in items {
                let _ = ht.push(json_zval(item));
            }
            let mut z = Zval::new();
            z.set_hashtable(ht);
            z
        }
        J::Object(map) => {
            let mut ht = ZendHashTable::new();
            for (k, item) in map {
                let _ = ht.insert(k.as_str(), json_zval(item));
            }
            let mut z = Zval::new();
            z.set_hashtable(ht);
            z
        }
    }
}
