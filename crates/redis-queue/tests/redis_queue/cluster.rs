//! The queue on a real Redis Cluster (three masters, `redis-cli --cluster
//! create`): two queues whose hash tags put them on different nodes go
//! through submit, priorities, take, ack, finish with results, delayed
//! tasks, retry, fail, the failed list, recovery, keep-alive and reclaim at
//! once through one DSN, each task run exactly once; then each queue's
//! keys are found on its own node and on no other, so the test cannot pass
//! with everything on one node.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use taskq_redis::{QueueStats, RedisQueue, Select};

use crate::support::{entry_ids, eventually, good, task, RedisCluster, TIMEOUTS};

const PLAIN: u64 = 2_000;
const URGENT: u64 = 200;
const DELAYED: u64 = 100;
const DELAY: Duration = Duration::from_secs(1);

/// Runs a queue call until it does not fail as transient, as the master's
/// loop retries one: right after a failover the cluster's view may still
/// settle, and a call can meet a `MOVED` after an earlier one went
/// through. Gives up at `deadline`.
macro_rules! settled {
    ($deadline:expr, $call:expr) => {
        loop {
            match $call.await {
                Ok(v) => break v,
                Err(e) => {
                    assert!(e.is_transient(), "{e}");
                    assert!(Instant::now() < $deadline, "still failing: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
}

/// The first queue name (`q0`, `q1`, ...) and the first after it whose
/// keys' slot is served by another node, each with its node's port.
fn queues_on_two_nodes(cluster: &RedisCluster) -> [(String, u16); 2] {
    let node = |name: &str| cluster.node_of(&format!("taskq:{{{name}}}:ids"));
    let first = ("q0".to_owned(), node("q0"));
    let second = (1..100)
        .map(|i| format!("q{i}"))
        .map(|name| {
            let port = node(&name);
            (name, port)
        })
        .find(|(_, port)| *port != first.1)
        .expect("a queue name on another node");
    [first, second]
}

/// Takes, runs (records) and settles until every task was seen: tasks
/// with an odd id finish with a result for their origin, the others are
/// acknowledged. Returns the ids finished with a result.
async fn consume(q: &mut RedisQueue, seen: &RefCell<HashMap<u64, u32>>, all: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut finished = Vec::new();
    while (seen.borrow().len() as u64) < all {
        assert!(Instant::now() < deadline, "queue not drained in 40 s");
        let taken = q.take(50).await.expect("take");
        assert!(taken.exhausted.is_empty() && taken.dropped.is_empty());
        if taken.entries.is_empty() {
            let nap = taken.next_due_in.unwrap_or(Duration::from_millis(5));
            tokio::time::sleep(nap.min(Duration::from_millis(20))).await;
            continue;
        }
        for e in &taken.entries {
            *seen.borrow_mut().entry(e.task.id).or_default() += 1;
        }
        let (odd, even): (Vec<_>, Vec<_>) = taken.entries.iter().partition(|e| e.task.id % 2 == 1);
        let payloads: Vec<Vec<u8>> = odd
            .iter()
            .map(|e| format!("done:{}", e.task.id).into_bytes())
            .collect();
        let done: Vec<_> = odd
            .iter()
            .copied()
            .zip(payloads.iter().map(Vec::as_slice))
            .collect();
        let still_ours = q.finish(&done).await.expect("finish");
        assert!(still_ours.iter().all(|&ours| ours));
        finished.extend(odd.iter().map(|e| e.task.id));
        let even: Vec<_> = even.iter().map(|e| e.at.clone()).collect();
        assert_eq!(q.ack(&even).await.expect("ack"), even.len() as u64);
    }
    finished
}

/// One queue's whole life on the cluster; panics at the first step that
/// goes wrong.
async fn life_cycle(cluster: &RedisCluster, queue: &str) {
    let mut a = cluster.queue(queue, "a").await;
    let mut b = cluster.queue(queue, "b").await;
    assert_eq!(
        a.hold_name("pid 1", Duration::from_secs(10), None)
            .await
            .unwrap(),
        None
    );
    let twin = cluster.queue(queue, "a").await;
    assert_eq!(
        twin.hold_name("pid 2", Duration::from_secs(10), None)
            .await
            .unwrap()
            .as_deref(),
        Some("pid 1"),
        "one consumer name, one live process"
    );

    // Submit: plain, urgent (priority 5) and delayed tasks in MULTIs.
    let mut tasks = Vec::new();
    for i in 0..PLAIN + URGENT + DELAYED {
        let mut t = task(&i.to_string());
        if i >= PLAIN + URGENT {
            t.delay = DELAY;
        } else if i >= PLAIN {
            t.priority = 5;
        }
        tasks.push(t);
    }
    let mut submitted = Vec::new();
    for batch in tasks.chunks(500) {
        submitted.extend(a.submit_many(batch).await.expect("submit"));
    }
    let all = PLAIN + URGENT + DELAYED;
    assert_eq!(a.stats().await.unwrap().delayed, DELAYED);
    let first = b.take(50).await.unwrap();
    assert_eq!(first.entries.len(), 50);
    assert!(
        first.entries.iter().all(|e| e.task.priority == 5),
        "highest priority first"
    );
    assert_eq!(
        b.ack(
            &first
                .entries
                .iter()
                .map(|e| e.at.clone())
                .collect::<Vec<_>>()
        )
        .await
        .unwrap(),
        50
    );

    let seen = RefCell::new(HashMap::new());
    for e in &first.entries {
        seen.borrow_mut().insert(e.task.id, 1);
    }
    let (by_a, by_b) = tokio::join!(consume(&mut a, &seen, all), consume(&mut b, &seen, all));
    let seen = seen.into_inner();
    assert_eq!(seen.len() as u64, all);
    assert!(seen.values().all(|&n| n == 1), "a task ran twice");
    assert!(submitted.iter().all(|id| seen.contains_key(id)));

    // Every result reaches the origin, whichever server finished it.
    let mut expected: Vec<u64> = by_a.into_iter().chain(by_b).collect();
    expected.sort_unstable();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let batch = good(a.results(500).await.unwrap());
        assert!(
            !batch.is_empty(),
            "results missing: {} of {}",
            got.len(),
            expected.len()
        );
        for r in batch {
            assert_eq!(&r.payload[..], format!("done:{}", r.task_id).as_bytes());
            got.push(r.task_id);
        }
    }
    got.sort_unstable();
    assert_eq!(got, expected);
    assert!(b.results(10).await.unwrap().is_empty());

    // Retry, fail, the failed list; a worker task given up by another
    // server is reported to its origin.
    let mut flaky = task("flaky");
    (flaky.max_attempts, flaky.src_worker, flaky.src_task_id) = (2, 1, 77);
    let id = b.submit(&flaky).await.unwrap();
    let run = a.take(1).await.unwrap().entries.remove(0);
    assert!(a.retry(&run, Duration::ZERO).await.unwrap());
    let run = a.take(1).await.unwrap().entries.remove(0);
    assert_eq!((run.task.id, run.task.attempts), (id, 1));
    assert!(a.fail(&run, "boom").await.unwrap());
    let report = good(b.results(10).await.unwrap());
    assert_eq!(report.len(), 1);
    assert_eq!((report[0].task_id, report[0].src_task_id), (id, 77));
    assert_eq!(report[0].error.as_deref(), Some("boom"));
    let failed = b.failed_list(0, 10).await.unwrap();
    assert_eq!((failed.len(), failed[0].task.id), (1, id));
    assert_eq!(a.failed_get(id).await.unwrap().unwrap().error, "boom");
    assert_eq!(b.retry_failed(Select::Ids(&[id])).await.unwrap(), 1);
    let again = b.take(1).await.unwrap().entries.remove(0);
    assert_eq!((again.task.id, again.task.attempts), (id, 0));
    assert!(b.fail(&again, "boom again").await.unwrap());
    assert_eq!(a.purge_failed(Select::All).await.unwrap(), 1);

    // A consumer that stopped without settling takes its entries back.
    let ids: Vec<u64> = a
        .submit_many(&(0..4).map(|i| task(&i.to_string())).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut c = cluster.queue(queue, "c").await;
    assert_eq!(c.take(4).await.unwrap().entries.len(), 4);
    drop(c);
    let mut c = cluster.queue(queue, "c").await;
    let back = c.take(10).await.unwrap().entries;
    assert_eq!(back.iter().map(|e| e.task.id).collect::<Vec<_>>(), ids);
    assert!(back.iter().all(|e| e.deliveries == 2));
    assert_eq!(
        c.ack(&back.iter().map(|e| e.at.clone()).collect::<Vec<_>>())
            .await
            .unwrap(),
        4
    );

    // Keep-alive and reclaim: b holds six, keeps three alive; a reclaims
    // the other three after the idle time, and b learns it lost them.
    let idle = Duration::from_millis(500);
    a.submit_many(&(0..6).map(|i| task(&i.to_string())).collect::<Vec<_>>())
        .await
        .unwrap();
    let held: Vec<_> = b
        .take(6)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.at.clone())
        .collect();
    assert_eq!(held.len(), 6);
    tokio::time::sleep(idle + Duration::from_millis(200)).await;
    assert!(b.keep_alive(&held[..3]).await.unwrap().is_empty());
    let claimed = eventually(Duration::from_secs(5), || async {
        let t = a.reclaim(idle, 100).await.unwrap();
        (!t.entries.is_empty()).then_some(t)
    })
    .await;
    let claimed: Vec<_> = claimed.entries.iter().map(|e| e.at.clone()).collect();
    assert_eq!(claimed, held[3..]);
    let mut lost = b.keep_alive(&held).await.unwrap();
    lost.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(lost, held[3..]);
    assert_eq!(a.ack(&claimed).await.unwrap(), 3);
    assert_eq!(b.ack(&held).await.unwrap(), 3);

    assert_eq!(a.stats().await.unwrap(), QueueStats::default());
    assert!(a.release_name("pid 1").await.unwrap());
}

#[tokio::test]
async fn two_queues_on_two_nodes_each_go_through_their_whole_life() {
    let cluster = RedisCluster::start();
    let [(q1, node1), (q2, node2)] = queues_on_two_nodes(&cluster);
    assert_ne!(node1, node2);
    tokio::join!(life_cycle(&cluster, &q1), life_cycle(&cluster, &q2));
    for (queue, node) in [(&q1, node1), (&q2, node2)] {
        for port in cluster.ports() {
            let keys = cluster.keys_on(port, &format!("taskq:{{{queue}}}:*"));
            if port == node {
                assert!(keys.len() >= 3, "{queue} on {port}: {keys:?}");
            } else {
                assert!(
                    keys.is_empty(),
                    "{queue}'s keys on {port}, not its node {node}: {keys:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_node_down_fails_its_queue_fast_and_the_same_handle_recovers_once_it_is_back() {
    let mut cluster = RedisCluster::start();
    let [(queue, node), (other, _)] = queues_on_two_nodes(&cluster);
    let mut q = cluster.queue(&queue, "a").await;
    let elsewhere = cluster.queue(&other, "a").await;
    q.submit(&task("before")).await.unwrap();

    cluster.kill(node);
    let started = Instant::now();
    let err = q.submit(&task("while down")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = q.take(10).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < 2 * TIMEOUTS.command + Duration::from_secs(1));

    // Back on its port and node file (its keys are gone: no AOF); the same
    // handles reconnect by themselves, no new connect.
    cluster.restart(node);
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = settled!(deadline, q.submit(&task("after")));
    let taken = q.take(10).await.unwrap();
    assert_eq!(taken.entries.len(), 1);
    assert_eq!(
        (taken.entries[0].task.id, &taken.entries[0].task.payload[..]),
        (id, &b"after"[..])
    );
    assert_eq!(q.ack(&[taken.entries[0].at.clone()]).await.unwrap(), 1);
    elsewhere.submit(&task("other node")).await.unwrap();
    assert_eq!(elsewhere.stats().await.unwrap().queued, 1);
}

/// While the cluster is down (a master without a replica failed), the
/// nodes still up answer CLUSTERDOWN, and a transaction aborts for it
/// (EXECABORT): both are transient, like the node being away, never a
/// refusal the master would give up on.
#[tokio::test]
async fn a_cluster_down_is_transient_also_for_a_transaction() {
    let mut cluster = RedisCluster::start();
    let [(_, node), (other, alive)] = queues_on_two_nodes(&cluster);
    let mut q = cluster.queue(&other, "a").await;
    q.submit(&task("before")).await.unwrap();
    let held = q.take(10).await.unwrap().entries;
    assert_eq!(held.len(), 1);

    cluster.kill(node);
    cluster.wait_down(alive);
    let err = q.ack(&entry_ids(&held)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("ClusterDown"), "{err}");
    let err = q.submit(&task("while down")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn after_a_failover_the_same_handle_goes_on_with_every_replicated_task() {
    let mut cluster = RedisCluster::start_with_replicas();
    let [(queue, master), _] = queues_on_two_nodes(&cluster);
    let mut a = cluster.queue(&queue, "a").await;
    let tasks: Vec<_> = (0..500).map(|i| task(&i.to_string())).collect();
    let ids = a.submit_many(&tasks).await.unwrap();
    let held = a.take(100).await.unwrap().entries;
    assert_eq!(held.len(), 100);
    cluster.wait_replicated(master);

    cluster.kill(master);
    // Calls fail as transient until the replica is promoted and the
    // client has the new slot map; then the same handle goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = settled!(deadline, a.stats());
    assert_eq!((stats.queued, stats.pending), (400, 100));
    assert_eq!(settled!(deadline, a.ack(&entry_ids(&held))), 100);
    let mut seen: HashMap<u64, u32> = held.iter().map(|e| (e.task.id, 1)).collect();
    while seen.len() < ids.len() {
        assert!(Instant::now() < deadline, "not drained after the failover");
        let taken = settled!(deadline, a.take(100)).entries;
        assert!(!taken.is_empty(), "{} of {} seen", seen.len(), ids.len());
        for e in &taken {
            *seen.entry(e.task.id).or_default() += 1;
        }
        let acked = settled!(deadline, a.ack(&entry_ids(&taken)));
        assert_eq!(acked, taken.len() as u64);
    }
    assert!(seen.values().all(|&n| n == 1), "a task ran twice");
    assert!(ids.iter().all(|id| seen.contains_key(id)));
    let next = settled!(deadline, a.submit(&task("after the failover")));
    assert!(next > *ids.last().unwrap());
    assert_eq!(settled!(deadline, a.stats()).queued, 1);
}
