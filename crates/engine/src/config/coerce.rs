//! PHP-style coercion of option values (`"4"` is 4, `"8M"` is 8 MiB, `"1"`
//! is true), each with the error message naming what is allowed.

use super::error::ConfigError;
use taskq_value::Value;

/// Swoole's default socket buffer size, for server and client alike.
pub(super) const DEFAULT_SOCKET_BUFFER_SIZE: usize = 8 * 1024 * 1024;
const MAX_SOCKET_BUFFER_SIZE: u64 = i32::MAX as u64;
/// Upper bound for client timeouts, so that turning them into a `Duration`
/// or a timer can never overflow.
const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;

pub(super) fn invalid(option: &str, value: &Value, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option: option.to_string(),
        value: value.php_repr(),
        allowed: allowed.into(),
    }
}

const BOOL_ALLOWED: &str = "true, false, 0, 1, '0', '1', '', 'true' or 'false'";

pub(super) fn to_bool(option: &str, value: &Value) -> Result<bool, ConfigError> {
    match (value, value.lossy_str().as_deref()) {
        (Value::Bool(b), _) => Ok(*b),
        (Value::Int(0), _) => Ok(false),
        (Value::Int(1), _) => Ok(true),
        // "" is what parse_ini_file() makes of Off/no/false.
        (_, Some("" | "0" | "false")) => Ok(false),
        (_, Some("1" | "true")) => Ok(true),
        _ => Err(invalid(option, value, BOOL_ALLOWED)),
    }
}

/// PHP's whitespace for numeric strings (`" 4"` and `"4 "` are numeric).
pub(super) fn trim_php(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c'])
}

/// A PHP numeric string as a float; Rust's own parser alone would also
/// accept "inf" and "nan", which PHP does not consider numeric.
pub(super) fn parse_php_float(s: &str) -> Option<f64> {
    let s = trim_php(s);
    let numeric = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if numeric {
        s.parse().ok()
    } else {
        None
    }
}

pub(super) fn float_to_int(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every integral float below it fits.
    let limit = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && f >= -limit && f < limit).then_some(f as i64)
}

/// An integer as PHP would coerce it: ints, integral floats, numeric strings.
pub(super) fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::Float(f) => float_to_int(*f),
        _ => value.lossy_str().and_then(|s| {
            trim_php(&s)
                .parse()
                .ok()
                .or_else(|| parse_php_float(&s).and_then(float_to_int))
        }),
    }
}

pub(super) fn int_allowed(min: i64, max: i64) -> String {
    match (min, max) {
        (i64::MIN, i64::MAX) => "an integer".to_string(),
        (0, i64::MAX) => "a non-negative integer".to_string(),
        _ => format!("an integer from {min} to {max}"),
    }
}

pub(super) fn to_int<T: TryFrom<i64>>(
    option: &str,
    value: &Value,
    min: i64,
    max: i64,
) -> Result<T, ConfigError> {
    to_int_in(option, value, min, max, &int_allowed(min, max))
}

/// Like `to_int`, with a hand-written `allowed` text for options whose
/// range needs explaining.
pub(super) fn to_int_in<T: TryFrom<i64>>(
    option: &str,
    value: &Value,
    min: i64,
    max: i64,
    allowed: &str,
) -> Result<T, ConfigError> {
    as_int(value)
        .filter(|n| (min..=max).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(option, value, allowed))
}

/// Byte counts shown the way users write them ("64K", "1G").
pub(super) fn human_size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    UNITS
        .iter()
        .find(|(unit, _)| n >= *unit && n.is_multiple_of(*unit))
        .map_or_else(
            || n.to_string(),
            |(unit, suffix)| format!("{}{suffix}", n / unit),
        )
}

/// A byte count as Swoole's `php_swoole_parse_to_size` reads it: an integer
/// or a string with a K, M or G suffix (binary multiples, any case).
pub(super) fn as_size(value: &Value) -> Option<u64> {
    if let Some(s) = value.lossy_str() {
        let s = trim_php(&s);
        let shift = match s.chars().last() {
            Some('k' | 'K') => Some(10),
            Some('m' | 'M') => Some(20),
            Some('g' | 'G') => Some(30),
            _ => None,
        };
        if let Some(shift) = shift {
            let digits = &s[..s.len() - 1];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return digits.parse::<u64>().ok()?.checked_mul(1 << shift);
        }
    }
    as_int(value).and_then(|n| u64::try_from(n).ok())
}

pub(super) fn to_size(option: &str, value: &Value, min: u64, max: u64) -> Result<u64, ConfigError> {
    as_size(value)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            let range = if min == 0 {
                format!("up to {}", human_size(max))
            } else {
                format!("from {} to {}", human_size(min), human_size(max))
            };
            invalid(
                option,
                value,
                format!(
                    "a byte count {range}, as an integer or a size string like '8M' \
                     (K, M, G are binary multiples)"
                ),
            )
        })
}

/// Narrows a validated size; only fails on targets where `usize` is smaller
/// than the option's range.
pub(super) fn to_usize(option: &str, value: &Value, n: u64) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| invalid(option, value, "a size that fits this platform"))
}

pub(super) fn to_socket_buffer_size(option: &str, value: &Value) -> Result<usize, ConfigError> {
    let size = to_size(option, value, 1, MAX_SOCKET_BUFFER_SIZE)?;
    to_usize(option, value, size)
}

pub(super) fn to_seconds(option: &str, value: &Value) -> Result<f64, ConfigError> {
    let seconds = match value {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => value.lossy_str().and_then(|s| parse_php_float(&s)),
    };
    seconds
        .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT_SECS)
        .ok_or_else(|| {
            invalid(
                option,
                value,
                format!("a number of seconds greater than 0 and at most {MAX_TIMEOUT_SECS}"),
            )
        })
}

/// A directory path; relative paths are kept (taskq keeps the working
/// directory when it daemonizes).
pub(super) fn to_absolute_or_relative_dir(
    option: &str,
    value: &Value,
) -> Result<String, ConfigError> {
    let path = to_non_empty_string(option, value)?;
    if path.contains('\0') {
        return Err(invalid(option, value, "a directory path without NUL bytes"));
    }
    Ok(path)
}

pub(super) fn to_non_empty_string(option: &str, value: &Value) -> Result<String, ConfigError> {
    match value.lossy_str() {
        Some(s) if !s.is_empty() => Ok(s.into_owned()),
        _ => Err(invalid(option, value, "a non-empty string")),
    }
}

pub(super) fn to_absolute_path(option: &str, value: &Value) -> Result<String, ConfigError> {
    match value.lossy_str() {
        Some(s) if s.starts_with('/') => Ok(s.into_owned()),
        _ => Err(invalid(
            option,
            value,
            "an absolute path (starting with '/')",
        )),
    }
}

/// Accepts `false` so configurations that spell out Swoole's defaults keep
/// working, and refuses `true` because the feature does not exist in taskq.
pub(super) fn refuse_true(option: &str, value: &Value, reason: &str) -> Result<(), ConfigError> {
    if to_bool(option, value)? {
        Err(ConfigError::Unsupported {
            option: option.to_string(),
            reason: reason.to_string(),
        })
    } else {
        Ok(())
    }
}
