//! This server as the holder of its consumer name in Redis. Two live
//! processes under one name would share one pending list (each, restarting,
//! would take the other's running tasks), so the name is a lease; the text
//! a holder writes into it says which process it is, precisely enough that
//! a server restarted on the same host can tell its dead predecessor (take
//! the name at once) from a live namesake (wait, and say who it is).

use std::fmt;

/// A process that holds (or wants) a consumer name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    host: String,
    pid: i32,
    /// Its start time in clock ticks since boot: a pid that was reused
    /// names another process.
    start: u64,
}

impl Holder {
    /// The calling process (the master).
    pub fn this_process() -> Self {
        let pid = std::process::id() as i32;
        Holder {
            host: host_name(),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Reads a holder's text; None for text taskq did not write.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_whitespace().collect::<Vec<_>>()[..] {
            [host, "pid", pid, "start", start] => Some(Holder {
                host: host.to_owned(),
                pid: pid.parse().ok()?,
                start: start.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// Whether this holder is certainly no longer running: it was on this
    /// host and its pid is gone or names a process started at another
    /// time. A holder on another host cannot be checked from here: its
    /// lease runs out if it is dead.
    pub fn is_gone(&self) -> bool {
        self.host == host_name() && start_time(self.pid) != Some(self.start)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pid {} start {}", self.host, self.pid, self.start)
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Field 22 of `/proc/<pid>/stat`, if that process runs: a zombie (killed,
/// not yet reaped by its parent) holds nothing any more.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from after its closing one, where field 3 (the state) starts.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z" | &"X")) {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_text_names_the_process_and_reads_back() {
        let me = Holder::this_process();
        assert!(me.start > 0, "{me}");
        assert_eq!(Holder::parse(&me.to_string()), Some(me.clone()));
        assert!(!me.is_gone(), "a live process is not gone");
        for foreign in ["", "web1", "web1 pid x start 1", "web1 pid 1 start 2 extra"] {
            assert_eq!(Holder::parse(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn a_dead_or_reused_pid_on_this_host_is_gone_another_host_is_not_known() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid).expect("a running child has a start time");
        let dead = Holder {
            host: host_name(),
            pid,
            start,
        };
        assert!(!dead.is_gone(), "running: {dead}");
        child.kill().unwrap();
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(dead.is_gone(), "a zombie is gone: {dead}");
        child.wait().unwrap();
        assert!(dead.is_gone(), "reaped: {dead}");

        let me = Holder::this_process();
        let reused = Holder {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(reused.is_gone(), "same pid, started at another time");
        let elsewhere = Holder {
            host: format!("{}-other", me.host),
            ..dead
        };
        assert!(!elsewhere.is_gone(), "only its lease can tell");
    }
}
