//! `taskq failed ...`: the failed tasks of the admin API (`/api/failed`)
//! as a table, one task in full, and the bodies that retry or purge them.

use std::fmt::Write;

use base64::Engine;
use serde_json::{json, Value};

/// Most characters of an error's first line in the table.
const ERROR_WIDTH: usize = 60;

/// The `POST /api/failed/retry` or `/purge` body: the ids, or every one.
pub fn which(ids: &[u64], all: bool) -> Value {
    if all {
        json!({ "all": true })
    } else {
        json!({ "ids": ids })
    }
}

/// `taskq failed list`: one line per task, newest first.
pub fn render_list(url: &str, rows: &[Value]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        let _ = writeln!(out, "no failed tasks at {url}");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>10}  {:>8}  {:>6}  {:<20}  ERROR",
        "ID", "ATTEMPTS", "WORKER", "FAILED AT"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>10}  {:>8}  {:>6}  {:<20}  {}",
            r["id"].to_string(),
            r["attempts"].to_string(),
            worker(&r["worker"]),
            r["failed_at"].as_f64().map_or("?".into(), utc),
            first_line(r["error"].as_str().unwrap_or(""), ERROR_WIDTH),
        );
    }
    out
}

/// `taskq failed show`: every field, the whole error, and the data.
pub fn render_one(row: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "id:        {}", row["id"]);
    let _ = writeln!(out, "attempts:  {}", row["attempts"]);
    let _ = writeln!(out, "worker:    {}", worker(&row["worker"]));
    let _ = writeln!(out, "task id:   {}", row["task_id"]);
    let _ = writeln!(
        out,
        "failed at: {}",
        row["failed_at"].as_f64().map_or("?".into(), utc)
    );
    let _ = writeln!(out, "error:");
    for line in row["error"].as_str().unwrap_or("").lines() {
        let _ = writeln!(out, "  {line}");
    }
    let (label, text) = data(row);
    let _ = writeln!(out, "data ({label}):");
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// The task's data as text and what form it is in: a string task's text
/// (pretty JSON when it is JSON), the `serialize()` text of any other PHP
/// value, or base64 when it is not text.
pub fn data(row: &Value) -> (&'static str, String) {
    let b64 = row["data"].as_str().unwrap_or("");
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return ("base64, as the server sent it", b64.to_string());
    };
    let raw = row["encoding"].as_u64() == Some(0);
    match String::from_utf8(bytes) {
        Ok(text) if raw => match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.is_object() || v.is_array() => (
                "JSON text",
                serde_json::to_string_pretty(&v).unwrap_or(text),
            ),
            _ => ("text", text),
        },
        Ok(text) => ("PHP serialize()", text),
        Err(_) => ("base64, not text", b64.to_string()),
    }
}

/// Who dispatched the task: an event worker's id, or a client.
fn worker(v: &Value) -> String {
    match v.as_i64() {
        Some(-1) => "client".into(),
        Some(n) => n.to_string(),
        None => "?".into(),
    }
}

/// The first line of `text`, cut to `width` characters with an ellipsis.
pub fn first_line(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let more = text.lines().nth(1).is_some();
    if line.chars().count() > width {
        let cut: String = line.chars().take(width - 1).collect();
        format!("{cut}…")
    } else if more {
        format!("{line} …")
    } else {
        line.to_string()
    }
}

/// Unix seconds as `2026-12-05 12:00:01` (UTC).
pub fn utc(secs: f64) -> String {
    let s = secs.max(0.0) as i64;
    let (days, rest) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(encoding: u8, data: &[u8]) -> Value {
        json!({
            "id": 42, "worker": -1, "task_id": 42, "attempts": 3,
            "error": "RuntimeException: broken\n#0 {main}", "failed_at": 1_764_936_001.5,
            "encoding": encoding,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
        })
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(utc(1_764_936_001.5), "2025-12-05 12:00:01");
    }

    #[test]
    fn errors_are_cut_to_their_first_line() {
        assert_eq!(first_line("boom", 10), "boom");
        assert_eq!(first_line("boom\nat line 2", 10), "boom …");
        assert_eq!(first_line("0123456789abc", 10), "012345678…");
        assert_eq!(first_line("", 10), "");
    }

    #[test]
    fn the_list_is_a_table_newest_first() {
        let text = render_list("http://x", &[row(1, b"i:1;")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "ATTEMPTS", "WORKER", "FAILED", "AT", "ERROR"]
        );
        assert!(lines[1].starts_with("        42         3  client  2025-12-05 12:00:01  "));
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "42",
                "3",
                "client",
                "2025-12-05",
                "12:00:01",
                "RuntimeException:",
                "broken",
                "…"
            ]
        );
        assert_eq!(
            render_list("http://x", &[]),
            "no failed tasks at http://x\n"
        );
    }

    #[test]
    fn data_is_shown_as_text_json_serialize_or_base64() {
        assert_eq!(data(&row(0, b"hello")), ("text", "hello".into()));
        assert_eq!(
            data(&row(0, br#"{"a":1}"#)),
            ("JSON text", "{\n  \"a\": 1\n}".into())
        );
        assert_eq!(
            data(&row(1, b"a:1:{i:0;i:1;}")),
            ("PHP serialize()", "a:1:{i:0;i:1;}".into())
        );
        assert_eq!(
            data(&row(0, b"\xff\x00")),
            ("base64, not text", "/wA=".into())
        );
        let one = render_one(&row(0, b"hello"));
        assert!(one.contains("error:\n  RuntimeException: broken\n  #0 {main}\n"));
        assert!(one.ends_with("data (text):\n  hello\n"));
    }

    #[test]
    fn retry_and_purge_bodies() {
        assert_eq!(which(&[3, 4], false), json!({"ids": [3, 4]}));
        assert_eq!(which(&[], true), json!({"all": true}));
    }
}
