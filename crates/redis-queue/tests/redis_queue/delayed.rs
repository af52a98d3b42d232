//! Delayed tasks wait in a sorted set and are moved into the stream when
//! due, by whichever server takes next: two servers promoting at once
//! deliver each exactly once, none early, and none stays behind to be
//! delivered again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use taskq_redis::RedisQueue;

use crate::support::{entry_ids, task, RedisServer};

const DELAYED: u64 = 3_000;
const DELAY: Duration = Duration::from_millis(400);

async fn consume(q: &mut RedisQueue, seen: &RefCell<HashMap<u64, u32>>, submitted: Instant) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut mine = 0;
    while (seen.borrow().len() as u64) < DELAYED {
        assert!(Instant::now() < deadline, "delayed tasks not all delivered");
        let taken = q.take(40).await.unwrap();
        for e in &taken.entries {
            // The local clock and Redis's are the same machine's.
            assert!(
                submitted.elapsed() + Duration::from_millis(20) >= DELAY,
                "task {} ran early",
                e.task.id
            );
            *seen.borrow_mut().entry(e.task.id).or_default() += 1;
            mine += 1;
        }
        let ids = entry_ids(&taken.entries);
        q.ack(&ids).await.unwrap();
        if taken.entries.is_empty() {
            tokio::time::sleep(
                taken
                    .next_due_in
                    .unwrap_or(Duration::from_millis(5))
                    .min(Duration::from_millis(20)),
            )
            .await;
        }
    }
    mine
}

#[tokio::test]
async fn two_promoters_deliver_each_due_task_exactly_once() {
    let redis = RedisServer::start(false);
    let mut a = redis.queue("later", "a").await;
    let mut b = redis.queue("later", "b").await;
    let tasks: Vec<_> = (0..DELAYED)
        .map(|i| {
            let mut t = task(&i.to_string());
            t.delay = DELAY;
            t
        })
        .collect();
    let submitted = Instant::now();
    a.submit_many(&tasks).await.unwrap();

    let early = a.take(10).await.unwrap();
    assert!(early.entries.is_empty(), "delivered before due");
    let wait = early.next_due_in.expect("the earliest due time");
    assert!(wait <= DELAY, "{wait:?}");
    assert_eq!(a.stats().await.unwrap().delayed, DELAYED);

    let seen = RefCell::new(HashMap::new());
    let (by_a, by_b) = tokio::join!(
        consume(&mut a, &seen, submitted),
        consume(&mut b, &seen, submitted)
    );
    let seen = seen.into_inner();
    assert!(
        seen.values().all(|&n| n == 1),
        "a delayed task was delivered twice"
    );
    assert_eq!(by_a + by_b, DELAYED);

    // Nothing left behind to be promoted a second time.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(a.take(10).await.unwrap().entries.is_empty());
    assert!(b.take(10).await.unwrap().entries.is_empty());
    let stats = a.stats().await.unwrap();
    assert_eq!((stats.delayed, stats.queued, stats.pending), (0, 0, 0));
}
