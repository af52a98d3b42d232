//! What `taskq push` sends: the task's data from the command line or a
//! file, as JSON when it parses as JSON, else as a plain string.

use serde_json::{json, Value};

use crate::error::CliError;

/// The data `text` stands for: its JSON value, or the text itself.
pub fn data_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The `POST /tasks` body for one task.
pub fn body(
    data: Value,
    delay: Option<f64>,
    priority: Option<i32>,
    max_attempts: Option<u32>,
    batch: Option<String>,
) -> Result<Value, CliError> {
    let mut task = json!({ "data": data });
    if let Some(d) = delay {
        if d.is_nan() || d < 0.0 {
            return Err(CliError::BadInput(format!(
                "--delay must be a number of seconds of 0 or more, not {d}"
            )));
        }
        task["delay"] = json!(d);
    }
    if let Some(p) = priority {
        task["priority"] = json!(p);
    }
    if let Some(n) = max_attempts {
        if n == 0 {
            return Err(CliError::BadInput(
                "--max-attempts must be at least 1".into(),
            ));
        }
        task["max_attempts"] = json!(n);
    }
    if let Some(name) = batch {
        task["batch"] = json!(name);
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_sent_as_json_and_anything_else_as_a_string() {
        assert_eq!(data_of(r#"{"to":"a@b"}"#), json!({"to": "a@b"}));
        assert_eq!(data_of("42"), json!(42));
        assert_eq!(data_of("hello world"), json!("hello world"));
        assert_eq!(data_of(r#""quoted""#), json!("quoted"));
    }

    #[test]
    fn options_become_fields_and_bad_ones_are_refused() {
        assert_eq!(
            body(json!(1), Some(2.5), Some(-1), Some(3), Some("b".into())).unwrap(),
            json!({"data": 1, "delay": 2.5, "priority": -1, "max_attempts": 3, "batch": "b"})
        );
        assert_eq!(
            body(json!(1), None, None, None, None).unwrap(),
            json!({"data": 1})
        );
        assert!(body(json!(1), Some(-1.0), None, None, None).is_err());
        assert!(body(json!(1), None, None, Some(0), None).is_err());
    }
}
