//! The loose PHP value `set()` receives, and how error messages show it.

/// A PHP option value after conversion from a zval. The PHP layer does the
/// conversion so that this module stays free of PHP types and can be tested
/// with plain Rust values.
#[derive(Clone, Debug, PartialEq)]
pub enum OptValue {
    /// PHP `null`: a known option given `null` is an option not given, as
    /// in Swoole; kept so `$server->setting` shows what `set()` was given.
    Null,
    /// PHP `bool`; integer options refuse it, as a `true` worker count is
    /// almost certainly a mistake.
    Bool(bool),
    /// PHP `int`.
    Int(i64),
    /// PHP `float`; integral floats pass as integers, as PHP would coerce.
    Float(f64),
    /// PHP `string`; numeric and size strings ("4", "8M") are coerced.
    Str(String),
    /// PHP `array`; no option takes one, but it must still reach here so
    /// the user gets a proper "invalid value" error instead of a crash.
    List(Vec<OptValue>),
}

/// The value as PHP's `var_export` would show it (on one line).
pub(super) fn php_repr(value: &OptValue) -> String {
    match value {
        OptValue::Null => "null".to_string(),
        OptValue::Bool(b) => b.to_string(),
        OptValue::Int(n) => n.to_string(),
        OptValue::Float(f) if f.is_nan() => "NAN".to_string(),
        OptValue::Float(f) if f.is_infinite() => if *f > 0.0 { "INF" } else { "-INF" }.to_string(),
        OptValue::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        OptValue::Float(f) => f.to_string(),
        OptValue::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        OptValue::List(items) => {
            let items: Vec<String> = items.iter().map(php_repr).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> OptValue {
        OptValue::Str(v.to_string())
    }

    #[test]
    fn values_are_shown_as_php_prints_them() {
        assert_eq!(php_repr(&OptValue::Null), "null");
        assert_eq!(php_repr(&OptValue::Bool(false)), "false");
        assert_eq!(php_repr(&OptValue::Float(2.0)), "2.0");
        assert_eq!(php_repr(&OptValue::Float(-0.25)), "-0.25");
        assert_eq!(php_repr(&OptValue::Float(f64::INFINITY)), "INF");
        assert_eq!(php_repr(&s("it's")), "'it\\'s'");
        assert_eq!(
            php_repr(&OptValue::List(vec![OptValue::Int(1), s("a")])),
            "[1, 'a']"
        );
    }
}
