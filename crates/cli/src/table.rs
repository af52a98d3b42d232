//! `taskq stats` as a table: the task counts, the rates, one row per
//! worker (like RoadRunner's `rr workers -i`).

use std::fmt::Write;

use serde_json::Value;

use crate::sample::{Rates, Sample};

/// The whole `taskq stats` text for a reading and its rates.
pub fn render(url: &str, stats: &Value, rates: Option<&Rates>) -> String {
    let s = Sample::of(stats);
    let mut out = String::new();
    let _ = writeln!(out, "taskq at {url}");
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>10} {:>8} {:>8}",
        "QUEUED", "RUNNING", "DONE", "FAILED", "RETRIES"
    );
    let _ = writeln!(
        out,
        "{:>8} {:>8} {:>10} {:>8} {:>8}",
        s.queued, s.running, s.done, s.failed, s.retries
    );
    if let Some(r) = rates {
        let _ = writeln!(
            out,
            "rates/s: submitted {:.1}  done {:.1}  failed {:.1}",
            r.submitted, r.done, r.failed
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>6}  {:<5}  {:>8}  {:<6}  {:>8}  {:>10}  STARTED",
        "WORKER", "KIND", "PID", "STATE", "HANDLED", "MEMORY"
    );
    for w in stats["workers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>6}  {:<5}  {:>8}  {:<6}  {:>8}  {:>10}  {}",
            w["id"].as_u64().map_or("?".into(), |n| n.to_string()),
            w["kind"].as_str().unwrap_or("?"),
            w["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
            w["state"].as_str().unwrap_or("?"),
            w["handled"].as_u64().map_or("-".into(), |n| n.to_string()),
            w["memory_rss"].as_u64().map_or("-".into(), megabytes),
            w["started_at"].as_f64().map_or("-".into(), |t| {
                age(stats["time"].as_f64().unwrap_or(t) - t)
            }),
        );
    }
    out
}

/// Bytes as megabytes with one decimal.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// How long ago, as `1h2m`, `3m4s` or `5s` followed by ` ago`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let text = match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    };
    format!("{text} ago")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_counts_rates_and_workers() {
        let stats = json!({
            "time": 1000.0,
            "tasks": {"waiting": 7, "delayed": 0, "running": 1, "finished": 42, "failed": 2, "retried": 3},
            "workers": [
                {"id": 0, "kind": "event", "pid": 11, "state": "idle", "handled": 5, "memory_rss": 10485760, "started_at": 995.0},
                {"id": 1, "kind": "task", "pid": null, "state": "exited", "handled": null, "memory_rss": null, "started_at": null}
            ]
        });
        let rates = Rates {
            submitted: 1.0,
            done: 2.5,
            failed: 0.0,
        };
        let text = render("http://127.0.0.1:9502", &stats, Some(&rates));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "taskq at http://127.0.0.1:9502");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["7", "1", "42", "2", "3"]
        );
        assert_eq!(lines[3], "rates/s: submitted 1.0  done 2.5  failed 0.0");
        assert_eq!(
            lines[6].split_whitespace().collect::<Vec<_>>(),
            ["0", "event", "11", "idle", "5", "10.0", "MB", "5s", "ago"]
        );
        assert_eq!(
            lines[7].split_whitespace().collect::<Vec<_>>(),
            ["1", "task", "-", "exited", "-", "-", "-"]
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5.2), "5s ago");
        assert_eq!(age(125.0), "2m5s ago");
        assert_eq!(age(7322.0), "2h2m ago");
    }
}
