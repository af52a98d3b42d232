//! `taskq`: see and steer a running taskq server from a shell, through the
//! admin API its master serves on `metrics_listen`. Each command is a
//! request and a formatter; exit codes tell a script what went wrong
//! (see `error::exit`).

mod batch;
mod client;
mod error;
mod failed;
mod push;
mod sample;
mod table;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use client::Client;
use error::CliError;
use sample::Sample;

/// See and steer a running taskq server (its metrics_listen address).
#[derive(Debug, Parser)]
#[command(name = "taskq", version)]
struct Cli {
    /// The server's metrics_listen address.
    #[arg(
        long,
        global = true,
        env = "TASKQ_URL",
        default_value = "http://127.0.0.1:9502"
    )]
    url: String,
    /// The server's auth_token, if it has one.
    #[arg(long, global = true, env = "TASKQ_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Is the server up? Its version, pid and uptime.
    Ping,
    /// Queued, running, done, failed, retries, rates per second, workers.
    Stats {
        /// Print again every --interval until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// The API's JSON, with the rates added, for scripts.
        #[arg(long)]
        json: bool,
        /// Seconds between the two readings the rates come from.
        #[arg(long, default_value_t = 1.0, value_parser = seconds)]
        interval: f64,
    },
    /// Follow the backlog as it drains: done/total, rate, ETA.
    Watch {
        /// Seconds between readings.
        #[arg(long, default_value_t = 0.5, value_parser = seconds)]
        interval: f64,
        /// Follow this batch (tasks queued with its name) instead of the
        /// whole queue, and sum up its failures at the end.
        #[arg(long)]
        batch: Option<String>,
    },
    /// Queue one task (acknowledged); prints its id.
    Push {
        /// The task's data: JSON, or else a plain string.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        data: Option<String>,
        /// Read the data from this file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Seconds before the task may run.
        #[arg(long, allow_negative_numbers = true)]
        delay: Option<f64>,
        /// Higher runs first.
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        /// Runs before the task is given up.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Count it in this batch (see `taskq watch --batch`).
        #[arg(long)]
        batch: Option<String>,
    },
    /// Restart the workers (as reload()).
    Reload {
        /// Only the task workers (as reload(true)).
        #[arg(long)]
        task: bool,
    },
    /// Stop the server (as SIGTERM).
    Stop,
    /// The failed tasks (attempts used up): list, show, retry, purge.
    Failed {
        #[command(subcommand)]
        command: FailedCommand,
    },
}

#[derive(Debug, Subcommand)]
enum FailedCommand {
    /// Newest first: id, attempts, worker, when, the error's first line.
    List {
        /// The API's JSON (data in base64), for scripts.
        #[arg(long)]
        json: bool,
        /// Skip this many, newest first.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// One failed task: its whole error and its data.
    Show {
        /// The failed task's id (as listed).
        id: u64,
        /// The API's JSON (data in base64), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Queue failed tasks again, attempts reset; prints how many went.
    Retry {
        /// The failed tasks' ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every failed task.
        #[arg(long)]
        all: bool,
    },
    /// Forget failed tasks; prints how many.
    Purge {
        /// The failed tasks' ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every failed task.
        #[arg(long)]
        all: bool,
    },
}

/// A positive number of seconds.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds above 0 and at most 3600"
        )),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("taskq: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.url, cli.token)?;
    match cli.command {
        Command::Ping => {
            let p = client.get("/api/ping")?;
            println!(
                "pong from {}: taskq {}, pid {}, up {}",
                client.url(),
                p["version"].as_str().unwrap_or("?"),
                p["pid"],
                table::age(p["uptime"].as_f64().unwrap_or(0.0)).trim_end_matches(" ago"),
            );
        }
        Command::Stats {
            watch,
            json,
            interval,
        } => loop {
            let (stats, rates) = two_readings(&client, Duration::from_secs_f64(interval))?;
            if json {
                let mut out = stats;
                out["rates"] = rates.map_or(
                    Value::Null,
                    |r| json!({"submitted": r.submitted, "done": r.done, "failed": r.failed}),
                );
                println!("{out}");
            } else {
                if watch && std::io::stdout().is_terminal() {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", table::render(client.url(), &stats, rates.as_ref()));
            }
            if !watch {
                break;
            }
        },
        Command::Watch { interval, batch } => {
            let interval = Duration::from_secs_f64(interval);
            match batch {
                Some(name) => batch::run(&client, &name, interval)?,
                None => watch::run(&client, interval)?,
            }
        }
        Command::Push {
            data,
            file,
            delay,
            priority,
            max_attempts,
            batch,
        } => {
            let text = match (data, file) {
                (Some(d), _) => d,
                (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| {
                    CliError::BadInput(format!("cannot read --file {}: {e}", f.display()))
                })?,
                (None, None) => unreachable!("clap requires data or --file"),
            };
            let body = push::body(push::data_of(&text), delay, priority, max_attempts, batch)?;
            let answer = client.post("/tasks", Some(&body))?;
            println!("{}", answer["id"]);
        }
        Command::Reload { task } => {
            let path = if task {
                "/api/reload?task_only=1"
            } else {
                "/api/reload"
            };
            client.post(path, None)?;
            println!(
                "reloading {} at {}",
                if task {
                    "the task workers"
                } else {
                    "every worker"
                },
                client.url()
            );
        }
        Command::Stop => {
            client.post("/api/stop", None)?;
            println!("stopping the server at {}", client.url());
        }
        Command::Failed { command } => run_failed(&client, command)?,
    }
    Ok(())
}

fn run_failed(client: &Client, command: FailedCommand) -> Result<(), CliError> {
    match command {
        FailedCommand::List {
            json,
            offset,
            limit,
        } => {
            let rows = client.get(&format!("/api/failed?offset={offset}&limit={limit}"))?;
            if json {
                println!("{rows}");
            } else {
                let rows = rows.as_array().map(Vec::as_slice).unwrap_or_default();
                print!("{}", failed::render_list(client.url(), rows));
            }
        }
        FailedCommand::Show { id, json } => {
            let row = client.get(&format!("/api/failed/{id}"))?;
            if json {
                println!("{row}");
            } else {
                print!("{}", failed::render_one(&row));
            }
        }
        FailedCommand::Retry { ids, all } => {
            let n = client.post("/api/failed/retry", Some(&failed::which(&ids, all)))?;
            println!("retried {} failed task(s)", n["retried"]);
        }
        FailedCommand::Purge { ids, all } => {
            let n = client.post("/api/failed/purge", Some(&failed::which(&ids, all)))?;
            println!("purged {} failed task(s)", n["purged"]);
        }
    }
    Ok(())
}

/// The latest `/api/stats` and the rates since a reading `interval`
/// earlier.
fn two_readings(
    client: &Client,
    interval: Duration,
) -> Result<(Value, Option<sample::Rates>), CliError> {
    let first = Sample::of(&client.get("/api/stats")?);
    std::thread::sleep(interval);
    let stats = client.get("/api/stats")?;
    let rates = Sample::of(&stats).rates_since(&first);
    Ok((stats, rates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_and_global_options_parse() {
        let cli = Cli::try_parse_from([
            "taskq",
            "push",
            "--priority",
            "-2",
            "{\"a\":1}",
            "--url",
            "http://[::1]:9",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.url, "http://[::1]:9");
        assert_eq!(cli.token.as_deref(), Some("t"));
        assert!(matches!(
            cli.command,
            Command::Push { priority: Some(-2), ref data, .. } if data.as_deref() == Some("{\"a\":1}")
        ));
        let cli = Cli::try_parse_from(["taskq", "reload", "--task"]).unwrap();
        assert!(matches!(cli.command, Command::Reload { task: true }));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(Cli::try_parse_from(["taskq", "push"]).is_err());
        assert!(Cli::try_parse_from(["taskq", "push", "x", "--file", "f"]).is_err());
        assert!(Cli::try_parse_from(["taskq", "stats", "--interval", "0"]).is_err());
        assert!(Cli::try_parse_from(["taskq", "frobnicate"]).is_err());
    }

    #[test]
    fn failed_subcommands_parse_and_refuse_bad_lines() {
        let cli = Cli::try_parse_from(["taskq", "failed", "retry", "3", "4"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Failed { command: FailedCommand::Retry { ref ids, all: false } } if ids == &[3, 4]
        ));
        let cli = Cli::try_parse_from(["taskq", "failed", "purge", "--all"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Failed { command: FailedCommand::Purge { ref ids, all: true } } if ids.is_empty()
        ));
        let cli =
            Cli::try_parse_from(["taskq", "failed", "list", "--limit", "5", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Failed {
                command: FailedCommand::List {
                    json: true,
                    offset: 0,
                    limit: 5
                }
            }
        ));
        for bad in [
            &["taskq", "failed", "retry"][..],
            &["taskq", "failed", "purge", "3", "--all"],
            &["taskq", "failed", "retry", "x"],
            &["taskq", "failed", "show"],
            &["taskq", "failed", "list", "--limit", "0"],
            &["taskq", "failed", "list", "--limit", "1001"],
            &["taskq", "failed", "list", "--offset", "-1"],
            &["taskq", "failed"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
