//! `taskq watch`: follows a backlog as it drains — done / total, rate and
//! ETA — with a progress bar on a terminal and one line per reading
//! otherwise (a log, a pipe), and returns once nothing is queued or running.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Client;
use crate::error::CliError;
use crate::sample::Sample;

/// Where the backlog stands, relative to the first reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Tasks finished or given up since the first reading.
    pub done: u64,
    /// `done` plus what is still queued or running.
    pub total: u64,
    /// Tasks per second since the first reading.
    pub rate: Option<f64>,
    /// Seconds until the backlog is gone at `rate`.
    pub eta: Option<f64>,
}

impl Progress {
    /// Progress at `now`, counted from `first`.
    pub fn between(first: &Sample, now: &Sample) -> Self {
        let done = (now.done + now.failed).saturating_sub(first.done + first.failed);
        Progress::after(done, now.backlog(), now.time - first.time)
    }

    /// Progress when `done` tasks ended in `elapsed` seconds and `backlog`
    /// are left.
    pub fn after(done: u64, backlog: u64, elapsed: f64) -> Self {
        let rate = (elapsed > 0.0).then(|| done as f64 / elapsed);
        let eta = rate.filter(|&r| r > 0.0).map(|r| backlog as f64 / r);
        Progress {
            done,
            total: done + backlog,
            rate,
            eta,
        }
    }

    /// `rate`, `ETA` as text.
    pub fn rate_and_eta(&self) -> String {
        let rate = self.rate.map_or("-".into(), |r| format!("{r:.1}/s"));
        let eta = self
            .eta
            .map_or("-".into(), |s| format!("{}s", s.ceil() as u64));
        format!("{rate}, ETA {eta}")
    }

    /// The one-line form, for output that is not a terminal.
    pub fn line(&self) -> String {
        format!("{}/{} done, {}", self.done, self.total, self.rate_and_eta())
    }
}

/// Reads `/api/stats` every `interval` until the backlog is gone.
pub fn run(client: &Client, interval: Duration) -> Result<(), CliError> {
    let first = Sample::of(&client.get("/api/stats")?);
    if first.backlog() == 0 {
        println!("nothing queued or running at {}", client.url());
        return Ok(());
    }
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(first.backlog());
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {msg}")
                .expect("the template is valid"),
        );
        bar
    });
    loop {
        std::thread::sleep(interval);
        let now = Sample::of(&client.get("/api/stats")?);
        let p = Progress::between(&first, &now);
        match &bar {
            Some(bar) => {
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_message(p.rate_and_eta());
            }
            None => println!("{}", p.line()),
        }
        if now.backlog() == 0 {
            if let Some(bar) = &bar {
                bar.finish();
            }
            println!("done: {} task(s) in {:.1}s", p.done, now.time - first.time);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: f64, queued: u64, running: u64, done: u64, failed: u64) -> Sample {
        Sample {
            time,
            queued,
            running,
            done,
            failed,
            ..Sample::default()
        }
    }

    #[test]
    fn progress_counts_from_the_first_reading() {
        let first = at(100.0, 90, 10, 50, 0);
        let p = Progress::between(&first, &at(102.0, 30, 10, 108, 2));
        assert_eq!((p.done, p.total), (60, 100));
        assert_eq!(p.rate, Some(30.0));
        assert_eq!(p.line(), "60/100 done, 30.0/s, ETA 2s");
    }

    #[test]
    fn no_rate_without_time_or_progress() {
        let first = at(100.0, 5, 0, 0, 0);
        assert_eq!(
            Progress::between(&first, &first).line(),
            "0/5 done, -, ETA -"
        );
        let p = Progress::between(&first, &at(101.0, 5, 0, 0, 0));
        assert_eq!(p.eta, None);
    }
}
