//! A real `redis-server` per test, on 127.0.0.1 and a free port, with its
//! files in a temporary directory; killed when the test ends, also when it
//! panics (Drop), and by the kernel if the test process dies (parent-death
//! signal).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use taskq_redis::{NewTask, RedisQueue, Timeouts};

/// Short limits, so a test about an unreachable Redis finishes quickly.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    command: Duration::from_millis(1000),
};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
}

impl RedisServer {
    /// Starts a server; with `appendonly` every write goes to the AOF
    /// (appendfsync everysec, the usual production setting).
    pub fn start(appendonly: bool) -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            appendonly,
        };
        server.spawn();
        server
    }

    pub fn dsn(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Connects a queue handle as consumer `name` of queue `queue`.
    pub async fn queue(&self, queue: &str, name: &str) -> RedisQueue {
        RedisQueue::connect(&self.dsn(), queue, name, TIMEOUTS)
            .await
            .expect("connect")
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--dir"])
            .arg(dir)
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "everysec", "--logfile"])
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // kill the child when the spawning thread goes away.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(
            cmd.spawn()
                .expect("redis-server (apt-get install redis-server)"),
        );
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.dsn()).expect("dsn");
        loop {
            let ping = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "redis-server not ready in 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, nothing flushed by Redis itself.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (reloading the AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A task with `payload`, default priority, no delay, 3 attempts.
pub fn task(payload: &str) -> NewTask {
    NewTask {
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        priority: 0,
        delay: Duration::ZERO,
        max_attempts: 3,
        src_worker: 0,
        src_task_id: 0,
    }
}

/// Runs `f` again until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where each entry sits, for ack and keep-alive.
pub fn entry_ids(entries: &[taskq_redis::Entry]) -> Vec<taskq_redis::EntryId> {
    entries.iter().map(|e| e.at.clone()).collect()
}

/// The results of a `results()` call, every one well-formed.
pub fn good(
    results: Vec<Result<taskq_redis::TaskResult, taskq_redis::RedisQueueError>>,
) -> Vec<taskq_redis::TaskResult> {
    results.into_iter().map(Result::unwrap).collect()
}
