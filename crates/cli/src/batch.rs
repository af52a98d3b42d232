//! `taskq watch --batch NAME`: follows one batch ("these 10,000 emails")
//! to its end — done and failed of total, rate, ETA — and then prints the
//! failures grouped by error, so whoever queued it sees what went out.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::Client;
use crate::error::CliError;
use crate::watch::Progress;

/// One reading of a batch, from `GET /api/batches?name=...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub pending: u64,
    /// (error, how many tasks failed with it)
    pub failures: Vec<(String, u64)>,
}

impl Reading {
    /// The reading in the API's answer; a missing number reads as 0.
    pub fn of(v: &Value) -> Self {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Reading {
            total: n("total"),
            done: n("done"),
            failed: n("failed"),
            pending: n("pending"),
            failures: v["failures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| {
                            let error = f["error"].as_str().unwrap_or("").to_owned();
                            (error, f["count"].as_u64().unwrap_or(0))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Tasks that ended, either way.
    pub fn ended(&self) -> u64 {
        self.done + self.failed
    }

    /// "done D, failed F, rate, ETA", where the rate counts the tasks
    /// that ended since `first`, `secs` ago.
    pub fn status(&self, first: &Reading, secs: f64) -> String {
        let ended = self.ended().saturating_sub(first.ended());
        let progress = Progress::after(ended, self.pending, secs);
        format!("{} failed, {}", self.failed, progress.rate_and_eta())
    }

    /// The final summary: counts, then each failure reason with its count.
    pub fn summary(&self, name: &str, secs: f64) -> String {
        let mut out = format!(
            "batch {name}: {} of {} done, {} failed ({secs:.1}s)",
            self.done, self.total, self.failed
        );
        for (error, count) in &self.failures {
            out.push_str(&format!("\n  {count:>6} × {error}"));
        }
        out
    }
}

/// The API path that reports batch `name`.
pub fn path(name: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("/api/batches?name={encoded}")
}

/// Reads the batch every `interval` until nothing of it is pending.
pub fn run(client: &Client, name: &str, interval: Duration) -> Result<(), CliError> {
    let path = path(name);
    let started = Instant::now();
    let first = Reading::of(&client.get(&path)?);
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(first.total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {msg}")
                .expect("the template is valid"),
        );
        bar
    });
    let mut now = first.clone();
    while now.pending > 0 {
        std::thread::sleep(interval);
        now = Reading::of(&client.get(&path)?);
        let status = now.status(&first, started.elapsed().as_secs_f64());
        match &bar {
            Some(bar) => {
                bar.set_length(now.total);
                bar.set_position(now.ended());
                bar.set_message(status);
            }
            None => println!("{}/{} ended, {status}", now.ended(), now.total),
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    println!("{}", now.summary(name, started.elapsed().as_secs_f64()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reading_shows_progress_and_sums_up_failures() {
        let first = Reading::of(&json!({"total": 100, "done": 10, "failed": 0, "pending": 90}));
        let now = Reading::of(&json!({
            "total": 100, "done": 40, "failed": 10, "pending": 50,
            "failures": [{"error": "550 no such user", "count": 9}, {"error": "timeout", "count": 1}]
        }));
        assert_eq!(now.status(&first, 2.0), "10 failed, 20.0/s, ETA 3s");
        assert_eq!(now.status(&first, 0.0), "10 failed, -, ETA -");
        assert_eq!(
            now.summary("mail", 4.25),
            "batch mail: 40 of 100 done, 10 failed (4.2s)\n       9 × 550 no such user\n       1 × timeout"
        );
    }

    #[test]
    fn names_are_percent_encoded_in_the_path() {
        assert_eq!(
            path("mail 12/ü&x"),
            "/api/batches?name=mail+12%2F%C3%BC%26x"
        );
    }
}
