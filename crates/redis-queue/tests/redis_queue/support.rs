//! A real `redis-server` per test, on 127.0.0.1 and a free port, with its
//! files in a temporary directory; killed when the test ends, also when it
//! panics (Drop), and by the kernel if the test process dies (parent-death
//! signal).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
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

    /// A plain connection, for writing into Redis behind the queue's back.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.dsn())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn spawn(&mut self) {
        let appendonly = if self.appendonly { "yes" } else { "no" };
        self.child = Some(spawn_redis(
            self.dir.path(),
            self.port,
            &["--appendonly", appendonly, "--appendfsync", "everysec"],
        ));
        let child = self.child.as_mut().expect("spawned");
        wait_ping(child, self.dir.path(), self.port);
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

/// A real Redis Cluster of three masters (and, if asked, one replica
/// each) on 127.0.0.1, each node with its own free port, bus port and
/// temporary directory, the slots assigned by `redis-cli --cluster
/// create`. Every node is killed in Drop, also when the test or the start
/// panics.
pub struct RedisCluster {
    nodes: Vec<Node>,
    replicas: usize,
}

struct Node {
    child: Option<Child>,
    port: u16,
    bus: u16,
    /// `cluster-node-timeout` (ms): how long until a silent node is failed.
    timeout_ms: u32,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts (or starts again, with the node file it wrote) this node and
    /// waits until it answers PING.
    fn spawn(&mut self) {
        let dir = self.dir.path();
        let child = self.child.insert(spawn_redis(
            dir,
            self.port,
            &[
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &dir.join("nodes.conf").to_string_lossy(),
                "--cluster-port",
                &self.bus.to_string(),
                "--cluster-node-timeout",
                &self.timeout_ms.to_string(),
            ],
        ));
        wait_ping(child, dir, self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RedisCluster {
    /// Three masters, no replicas (a node is failed after 5 s of silence).
    pub fn start() -> Self {
        Self::start_with(0, 5000)
    }

    /// Three masters with one replica each; a silent master is failed
    /// over after `cluster-node-timeout` 1000 ms.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1, 1000)
    }

    /// Starts the nodes, creates the cluster and waits (bounded) until
    /// every node reports `cluster_state:ok`.
    fn start_with(replicas: usize, timeout_ms: u32) -> Self {
        let count = 3 * (1 + replicas);
        let mut cluster = Self {
            nodes: Vec::new(),
            replicas,
        };
        let mut ports = BTreeSet::new();
        while ports.len() < 2 * count {
            ports.insert(port_outside_the_ephemeral_range());
        }
        let ports: Vec<u16> = ports.into_iter().collect();
        for pair in ports.chunks(2) {
            cluster.nodes.push(Node {
                child: None,
                port: pair[0],
                bus: pair[1],
                timeout_ms,
                dir: tempfile::tempdir().expect("temp dir"),
            });
            cluster.nodes.last_mut().expect("pushed").spawn();
        }
        cluster.create();
        cluster.wait_ok();
        cluster
    }

    /// SIGKILLs the node at `port` (its slots' keys go with it: no AOF).
    pub fn kill(&mut self, port: u16) {
        self.node(port).kill();
    }

    /// Starts the node at `port` again on its port and node file, and
    /// waits until every node reports `cluster_state:ok`.
    pub fn restart(&mut self, port: u16) {
        self.node(port).spawn();
        self.wait_ok();
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// `redis-cli --cluster create`, killed if it takes over 30 s.
    fn create(&self) {
        let out = self.nodes[0].dir.path().join("create.log");
        let log = std::fs::File::create(&out).expect("log file");
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args([
                "--cluster-replicas",
                &self.replicas.to_string(),
                "--cluster-yes",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: as in spawn_redis.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("redis-cli");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("redis-cli status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli --cluster create not done in 30 s: {}",
                    std::fs::read_to_string(&out).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "redis-cli --cluster create: {status}: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
    }

    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            wait_state(node.port, "cluster_state:ok", deadline);
        }
    }

    /// Waits (bounded) until the node at `port` reports the cluster down,
    /// as every node does once a master without a replica is failed.
    pub fn wait_down(&self, port: u16) {
        wait_state(
            port,
            "cluster_state:fail",
            Instant::now() + Duration::from_secs(30),
        );
    }

    /// The cluster DSN naming every node as a seed.
    pub fn dsn(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Connects a queue handle as consumer `name` of queue `queue`.
    pub async fn queue(&self, queue: &str, name: &str) -> RedisQueue {
        RedisQueue::connect(&self.dsn(), queue, name, TIMEOUTS)
            .await
            .expect("connect to the cluster")
    }

    /// The port of the node serving `key`'s slot, by CLUSTER KEYSLOT and
    /// the slot ranges in CLUSTER NODES, asked of the first node.
    pub fn node_of(&self, key: &str) -> u16 {
        let mut conn = node_connection(self.nodes[0].port);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut conn)
            .expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let port = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("a node's address");
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
            });
            if serves {
                return port;
            }
        }
        panic!("no node serves slot {slot}: {nodes}");
    }

    /// Waits (15 s at most) until the master at `port` has every write so
    /// far on its replica (WAIT), so a failover loses none of them.
    pub fn wait_replicated(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut conn = node_connection(port);
        loop {
            let acked: u32 = redis::cmd("WAIT")
                .arg(1)
                .arg(500)
                .query(&mut conn)
                .expect("WAIT");
            if acked >= 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "master {port}: no replica caught up in 15 s"
            );
        }
    }

    /// The keys matching `pattern` stored on the node at `port`, asked of
    /// that node alone.
    pub fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut node_connection(port))
            .expect("KEYS")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// A plain (not cluster) connection to one node, every reply awaited 2 s
/// at most.
fn node_connection(port: u16) -> redis::Connection {
    let limit = Duration::from_secs(2);
    let conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(limit))
        .expect("connect to a node");
    conn.set_read_timeout(Some(limit)).expect("read timeout");
    conn
}

/// Starts `redis-server` on 127.0.0.1:`port` with its files in `dir` and
/// `extra` settings; the kernel kills it if the test process dies.
fn spawn_redis(dir: &Path, port: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--dir"])
        .arg(dir)
        .args(extra)
        .arg("--logfile")
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
    cmd.spawn()
        .expect("redis-server (apt-get install redis-server)")
}

/// Polls the node at `port` until its `CLUSTER INFO` reports `state`,
/// failing the test at `deadline`.
fn wait_state(port: u16, state: &str, deadline: Instant) {
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node_connection(port))
            .expect("CLUSTER INFO");
        if info.contains(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {port} not {state} in time: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (10 s at most) until the server on `port` answers PING; panics
/// with its log if it exited.
fn wait_ping(child: &mut Child, dir: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("dsn");
    loop {
        let ping = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if ping.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            panic!("redis-server exited with {status}: {log}");
        }
        assert!(Instant::now() < deadline, "redis-server not ready in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free port above Linux's ephemeral range (32768-60999), so a node
/// killed and started again finds its port (and bus port) still free: a
/// port from the ephemeral range may meanwhile be some connection's local
/// port, even the port of another node's own connection attempt to it.
fn port_outside_the_ephemeral_range() -> u16 {
    // Each call of this test process tries ports no earlier call tried,
    // from a start that differs between runs.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id()
    });
    (0..4000)
        .map(|_| 61_000 + (start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 4000) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port from 61000 to 64999")
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
