//! The Prometheus exposition of `metrics_listen`. The counts are not kept
//! twice: each scrape reads them from the rooms that keep them for
//! `stats()` (a [`Snapshot`]), and only the two timing histograms, which
//! nothing else records, live here ([`Timings`]). The text is written by
//! `prometheus-client` (OpenMetrics text, which Prometheus reads).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use taskq_redis::QueueStats;

use crate::mail_tally::{MailCounts, MailOutcome};

/// The media type of what [`render`] writes, for the `Content-Type` header.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the queue-wait buckets: from a task handed
/// out at once to one that waited an hour behind a backlog.
const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Upper bounds (seconds) of the run-time buckets: from a task of a few µs
/// to one of five minutes.
const RUN_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The task timings the master observes; nothing else keeps them, so they
/// are recorded here as tasks are handed out and finish.
#[derive(Debug, Clone)]
pub struct Timings {
    queue_wait: Histogram,
    run_time: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            queue_wait: Histogram::new(WAIT_BUCKETS),
            run_time: Histogram::new(RUN_BUCKETS),
        }
    }
}

impl Timings {
    /// A task was handed to a task worker `ms` after it became runnable.
    pub fn waited(&self, ms: u64) {
        self.queue_wait.observe(ms as f64 / 1e3);
    }

    /// A task's onTask returned after `run_us` µs, as its worker measured.
    pub fn ran(&self, run_us: u32) {
        self.run_time.observe(f64::from(run_us) / 1e6);
    }
}

/// What the rooms count, read at one moment for one scrape.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Tasks runnable and not started: in the queue, held for one task
    /// worker, or in a worker's window behind the task it runs.
    pub waiting: u64,
    /// Tasks whose delay or retry backoff is not over yet.
    pub delayed: u64,
    /// Tasks a task worker is running now.
    pub running: u64,
    pub submitted: u64,
    pub finished: u64,
    /// Failed runs scheduled to run again.
    pub retried: u64,
    /// Tasks given back to the queue because their task worker went away.
    pub requeued: u64,
    /// Tasks given up (attempts used, or refused).
    pub failed: u64,
    pub connections: u64,
    pub accepted: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Worker processes replaced while the server ran: (kind, reason, count).
    pub worker_restarts: Vec<(&'static str, &'static str, u64)>,
    /// Mail the workers' `TaskQ\Mailer`s sent or failed to send.
    pub mail: MailCounts,
    /// With `task_backend`: the whole queue (every server's tasks) as
    /// Redis last counted it, once a second; None until Redis was reached.
    pub backend: Option<QueueStats>,
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        labelled(
            &mut enc,
            ("taskq_tasks", "Tasks in this server by state: waiting for a task worker, delayed (delay or retry backoff not over), running."),
            MetricType::Gauge,
            "state",
            &[
                ("waiting", self.waiting),
                ("delayed", self.delayed),
                ("running", self.running),
            ],
        )?;
        for (name, help, n) in [
            (
                "taskq_tasks_submitted",
                "Tasks submitted: $server->task() calls and TaskClient::task() submissions accepted.",
                self.submitted,
            ),
            (
                "taskq_tasks_finished",
                "Tasks whose onTask returned.",
                self.finished,
            ),
            (
                "taskq_tasks_retried",
                "Failed runs (onTask threw) scheduled to run again after the retry backoff.",
                self.retried,
            ),
            (
                "taskq_tasks_requeued",
                "Tasks given back to the queue because their task worker died, was killed or left.",
                self.requeued,
            ),
            (
                "taskq_tasks_failed",
                "Tasks given up: their last attempt failed, or Redis could not take them.",
                self.failed,
            ),
            (
                "taskq_connections_accepted",
                "Client connections accepted.",
                self.accepted,
            ),
            (
                "taskq_received_bytes",
                "Bytes of client messages for onReceive, as stats() counts them.",
                self.received_bytes,
            ),
            ("taskq_sent_bytes", "Bytes of send() replies to clients, as stats() counts them.", self.sent_bytes),
        ] {
            counter(&mut enc, name, help, n)?;
        }
        let open = ConstGauge::new(self.connections);
        open.encode(enc.encode_descriptor(
            "taskq_connections",
            "Client connections open now.",
            None,
            open.metric_type(),
        )?)?;
        let mut restarts = enc.encode_descriptor(
            "taskq_worker_restarts",
            "Worker processes that went away while the server ran (the manager starts another): planned (reload, max_request, $server->stop($workerId)), task_timeout (killed by the master), died (crash, fatal error, exit).",
            None,
            MetricType::Counter,
        )?;
        for &(kind, reason, n) in &self.worker_restarts {
            ConstCounter::new(n)
                .encode(restarts.encode_family(&[("kind", kind), ("reason", reason)])?)?;
        }
        counter(
            &mut enc,
            "taskq_mail_sent",
            "Messages TaskQ's Mailer handed to the SMTP server (2xx after DATA), in every worker.",
            self.mail.get(MailOutcome::Sent),
        )?;
        let failed: Vec<_> = MailOutcome::ALL[1..]
            .iter()
            .map(|o| (o.label(), self.mail.get(*o)))
            .collect();
        labelled(
            &mut enc,
            ("taskq_mail_failed", "Messages TaskQ's Mailer could not send, by class: 4xx (the server may take it later), 5xx (it will not), connection (no connection, broken, timed out or not SMTP), tls, unsupported (a needed SMTP extension is missing), invalid (refused before any I/O)."),
            MetricType::Counter,
            "class",
            &failed,
        )?;
        if let Some(q) = self.backend {
            labelled(
                &mut enc,
                ("taskq_backend_tasks", "With task_backend: the whole queue in Redis, every server's tasks, by state, as Redis counted it within the last second: queued (not yet taken), pending (taken by a server, running or to be reclaimed), delayed, failed (in the failed list)."),
                MetricType::Gauge,
                "state",
                &[
                    ("queued", q.queued),
                    ("pending", q.pending),
                    ("delayed", q.delayed),
                    ("failed", q.failed),
                ],
            )?;
        }
        Ok(())
    }
}

/// A family with one label, one sample per value of it.
fn labelled(
    enc: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    kind: MetricType,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, kind)?;
    for &(value, n) in values {
        let labels = [(label, value)];
        let sample = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(n).encode(sample)?,
            _ => ConstGauge::new(n).encode(sample)?,
        }
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    n: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(n);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// The exposition of one scrape.
pub fn render(snapshot: Snapshot, timings: &Timings) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register(
        "taskq_task_queue_wait_seconds",
        "Time from a task becoming runnable (submitted, requeued, or its delay over) to it being handed to a task worker",
        timings.queue_wait.clone(),
    );
    registry.register(
        "taskq_task_run_seconds",
        "Time onTask ran, as the task worker measured it",
        timings.run_time.clone(),
    );
    let mut out = String::new();
    // Writing to a String cannot fail; the encoders only pass its errors on.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line of `text` as (name with labels, value).
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect(l);
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn value(text: &str, key: &str) -> String {
        samples(text)
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .1
    }

    #[test]
    fn a_snapshot_renders_every_metric_with_help_type_and_value() {
        let snapshot = Snapshot {
            waiting: 3,
            delayed: 2,
            running: 1,
            submitted: 10,
            finished: 6,
            retried: 4,
            requeued: 5,
            failed: 1,
            connections: 2,
            accepted: 7,
            received_bytes: 1000,
            sent_bytes: 2000,
            worker_restarts: vec![("task", "task_timeout", 2), ("event", "planned", 1)],
            mail: MailCounts([9, 1, 2, 3, 0, 0, 4]),
            backend: Some(QueueStats {
                queued: 11,
                pending: 12,
                delayed: 13,
                failed: 14,
            }),
        };
        let text = render(snapshot, &Timings::default());
        assert!(text.ends_with("# EOF\n"), "{text}");
        for (key, v) in [
            ("taskq_tasks{state=\"waiting\"}", "3"),
            ("taskq_tasks{state=\"delayed\"}", "2"),
            ("taskq_tasks{state=\"running\"}", "1"),
            ("taskq_tasks_submitted_total", "10"),
            ("taskq_tasks_finished_total", "6"),
            ("taskq_tasks_retried_total", "4"),
            ("taskq_tasks_requeued_total", "5"),
            ("taskq_tasks_failed_total", "1"),
            ("taskq_connections", "2"),
            ("taskq_connections_accepted_total", "7"),
            ("taskq_received_bytes_total", "1000"),
            ("taskq_sent_bytes_total", "2000"),
            (
                "taskq_worker_restarts_total{kind=\"task\",reason=\"task_timeout\"}",
                "2",
            ),
            (
                "taskq_worker_restarts_total{kind=\"event\",reason=\"planned\"}",
                "1",
            ),
            ("taskq_mail_sent_total", "9"),
            ("taskq_mail_failed_total{class=\"4xx\"}", "1"),
            ("taskq_mail_failed_total{class=\"5xx\"}", "2"),
            ("taskq_mail_failed_total{class=\"connection\"}", "3"),
            ("taskq_mail_failed_total{class=\"tls\"}", "0"),
            ("taskq_mail_failed_total{class=\"invalid\"}", "4"),
            ("taskq_backend_tasks{state=\"queued\"}", "11"),
            ("taskq_backend_tasks{state=\"failed\"}", "14"),
        ] {
            assert_eq!(value(&text, key), v, "{key}");
        }
        for line in text.lines().filter(|l| l.starts_with("# HELP taskq_")) {
            assert!(line.len() > "# HELP taskq_x x".len(), "{line}");
        }
        assert!(text.contains("# TYPE taskq_tasks_submitted counter\n"));
        assert!(text.contains("# TYPE taskq_tasks gauge\n"));
        assert!(text.contains("# TYPE taskq_task_run_seconds histogram\n"));
    }

    #[test]
    fn timings_are_histograms_in_seconds() {
        let t = Timings::default();
        t.waited(20);
        t.waited(2_000);
        t.ran(300);
        let text = render(Snapshot::default(), &t);
        assert!(!text.contains("taskq_backend_tasks"), "{text}");
        assert_eq!(
            value(&text, "taskq_task_queue_wait_seconds_bucket{le=\"0.01\"}"),
            "0"
        );
        assert_eq!(
            value(&text, "taskq_task_queue_wait_seconds_bucket{le=\"0.05\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "taskq_task_queue_wait_seconds_bucket{le=\"5.0\"}"),
            "2"
        );
        assert_eq!(
            value(&text, "taskq_task_queue_wait_seconds_bucket{le=\"+Inf\"}"),
            "2"
        );
        assert_eq!(value(&text, "taskq_task_queue_wait_seconds_count"), "2");
        assert_eq!(value(&text, "taskq_task_queue_wait_seconds_sum"), "2.02");
        assert_eq!(
            value(&text, "taskq_task_run_seconds_bucket{le=\"0.0005\"}"),
            "1"
        );
        assert_eq!(value(&text, "taskq_task_run_seconds_count"), "1");
    }
}
