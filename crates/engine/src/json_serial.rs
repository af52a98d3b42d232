//! A JSON value as PHP `serialize()` output, so a task submitted over HTTP
//! (`POST /tasks`) reaches onTask as the PHP value the JSON decodes to —
//! objects become associative arrays, never PHP objects — through the same
//! payload path as a task from `TaskClient`.

use serde_json::Value;

/// `serialize(json_decode($json, true))` for an already parsed `value`.
pub fn to_php(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, value);
    out
}

fn put(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"N;"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"b:1;" } else { b"b:0;" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.extend_from_slice(format!("i:{i};").as_bytes()),
            // Beyond PHP's int (u64 over i64::MAX) or a fraction: a float,
            // as json_decode gives.
            None => {
                let f = n.as_f64().unwrap_or(0.0);
                out.extend_from_slice(format!("d:{f:?};").as_bytes())
            }
        },
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            out.extend_from_slice(format!("a:{}:{{", items.len()).as_bytes());
            for (i, item) in items.iter().enumerate() {
                out.extend_from_slice(format!("i:{i};").as_bytes());
                put(out, item);
            }
            out.push(b'}');
        }
        Value::Object(map) => {
            out.extend_from_slice(format!("a:{}:{{", map.len()).as_bytes());
            for (key, item) in map {
                // unserialize() turns a numeric string key into an int key,
                // as json_decode does.
                put_str(out, key);
                put(out, item);
            }
            out.push(b'}');
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(format!("s:{}:\"", s.len()).as_bytes());
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\";");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn php(v: Value) -> String {
        String::from_utf8(to_php(&v)).unwrap()
    }

    #[test]
    fn scalars_are_serialized_as_php_does() {
        assert_eq!(php(json!(null)), "N;");
        assert_eq!(php(json!(true)), "b:1;");
        assert_eq!(php(json!(-7)), "i:-7;");
        assert_eq!(php(json!(1.5)), "d:1.5;");
        assert_eq!(php(json!(u64::MAX)), "d:1.8446744073709552e19;");
        assert_eq!(php(json!("é\"")), "s:3:\"é\"\";");
    }

    #[test]
    fn objects_become_arrays_never_php_objects() {
        assert_eq!(
            php(json!({"to": "a@b", "n": [1, {"x": null}]})),
            "a:2:{s:2:\"to\";s:3:\"a@b\";s:1:\"n\";a:2:{i:0;i:1;i:1;a:1:{s:1:\"x\";N;}}}"
        );
    }

    #[test]
    fn the_output_passes_the_untrusted_payload_check() {
        let data = to_php(&json!({"a": [1, 2.5, "s", true, null], "b": {"c": {}}}));
        let policy = crate::php_serial::Policy {
            classes: crate::php_serial::AllowedClasses::None,
            max_depth: 8,
        };
        crate::php_serial::check(&data, &policy).unwrap();
    }
}
