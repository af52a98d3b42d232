//! Two servers share one queue: every task runs exactly once, and both
//! servers do some of the work.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use taskq_redis::{QueueStats, RedisQueue};

use crate::support::{entry_ids, task, RedisServer};

const TASKS: u64 = 20_000;
const BATCH: u64 = 1_000;

/// Takes, "runs" (records) and acknowledges until all tasks were seen.
async fn consume(q: &mut RedisQueue, seen: &RefCell<HashMap<u64, u32>>, deadline: Instant) -> u64 {
    let mut mine = 0;
    while (seen.borrow().len() as u64) < TASKS {
        assert!(Instant::now() < deadline, "queue not drained in time");
        let taken = q.take(50).await.expect("take");
        if taken.entries.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let ids = entry_ids(&taken.entries);
        for e in &taken.entries {
            *seen.borrow_mut().entry(e.task.id).or_default() += 1;
            mine += 1;
        }
        assert_eq!(q.ack(&ids).await.expect("ack"), ids.len() as u64);
    }
    mine
}

#[tokio::test]
async fn two_consumers_share_20000_tasks_each_runs_exactly_once() {
    let redis = RedisServer::start(false);
    let mut a = redis.queue("share", "a").await;
    let mut b = redis.queue("share", "b").await;
    let seen = RefCell::new(HashMap::new());
    let deadline = Instant::now() + Duration::from_secs(40);

    let mut submitted = Vec::new();
    let producer_then_consumer = async {
        for batch in 0..TASKS / BATCH {
            let tasks: Vec<_> = (0..BATCH)
                .map(|i| task(&format!("{}", batch * BATCH + i)))
                .collect();
            let ids = a.submit_many(&tasks).await.expect("submit");
            assert_eq!(ids.len() as u64, BATCH);
            submitted.extend(ids);
        }
        consume(&mut a, &seen, deadline).await
    };
    let (by_a, by_b) = tokio::join!(producer_then_consumer, consume(&mut b, &seen, deadline));

    let seen = seen.into_inner();
    assert_eq!(seen.len() as u64, TASKS);
    assert!(seen.values().all(|&n| n == 1), "a task ran twice");
    assert!(submitted.iter().all(|id| seen.contains_key(id)));
    assert_eq!(by_a + by_b, TASKS);
    assert!(by_a > 0 && by_b > 0, "a: {by_a}, b: {by_b}");
    assert_eq!(a.stats().await.unwrap(), QueueStats::default());
}
