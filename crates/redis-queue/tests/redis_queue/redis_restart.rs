//! Redis itself crashes (SIGKILL) and restarts from its append-only file:
//! every task it acknowledged is still there, the in-flight ones still
//! pending for their server; calls while it is down fail fast with a clear
//! error; afterwards the same handles work again with no reconnect call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{entry_ids, eventually, task, RedisServer, TIMEOUTS};

#[tokio::test]
async fn nothing_acknowledged_is_lost_and_calls_fail_fast_while_redis_is_down() {
    let mut redis = RedisServer::start(true);
    let mut q = redis.queue("durable", "web1").await;
    let mut accepted = Vec::new();
    for batch in 0..5 {
        let tasks: Vec<_> = (0..100).map(|i| task(&format!("{batch}-{i}"))).collect();
        accepted.extend(q.submit_many(&tasks).await.unwrap());
    }
    let mut done: HashMap<u64, u32> = HashMap::new();
    let first = q.take(100).await.unwrap().entries;
    let (finished, in_flight) = first.split_at(50);
    let finished_ids = entry_ids(finished);
    assert_eq!(q.ack(&finished_ids).await.unwrap(), 50);
    for e in finished {
        *done.entry(e.task.id).or_default() += 1;
    }

    redis.kill();
    let started = Instant::now();
    let err = q.submit(&task("while down")).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < TIMEOUTS.command + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(message.contains("redis://127.0.0.1:"), "{message}");
    assert!(message.contains("submit tasks"), "{message}");
    let err = q.take(10).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    redis.restart();
    let late = eventually(Duration::from_secs(5), || async {
        q.submit(&task("after restart")).await.ok()
    })
    .await;
    accepted.push(late);

    let in_flight_ids = entry_ids(in_flight);
    assert_eq!(
        q.ack(&in_flight_ids).await.unwrap(),
        50,
        "in-flight entries survived as pending"
    );
    for e in in_flight {
        *done.entry(e.task.id).or_default() += 1;
    }
    loop {
        let taken = q.take(100).await.unwrap().entries;
        if taken.is_empty() {
            break;
        }
        let ids = entry_ids(&taken);
        q.ack(&ids).await.unwrap();
        for e in &taken {
            *done.entry(e.task.id).or_default() += 1;
        }
    }
    assert!(done.values().all(|&n| n == 1), "a task ran twice");
    let mut done: Vec<u64> = done.into_keys().collect();
    done.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(done, accepted, "every acknowledged submission ran");
}
