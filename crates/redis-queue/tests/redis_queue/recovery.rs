//! A server that stops without acknowledging loses nothing: restarted
//! under its name it takes its own pending entries back first; if it stays
//! away, another server reclaims them after the claim idle time, and never
//! a live server's own in-flight entries.

use std::time::Duration;

use crate::support::{entry_ids, task, RedisServer};

fn ids(entries: &[taskq_redis::Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.task.id).collect()
}

#[tokio::test]
async fn a_restarted_consumer_reads_its_pending_entries_before_new_ones() {
    let redis = RedisServer::start(false);
    let mut a = redis.queue("crash", "web1").await;
    let tasks: Vec<_> = (0..30).map(|i| task(&i.to_string())).collect();
    a.submit_many(&tasks).await.unwrap();
    let held = a.take(10).await.unwrap();
    assert_eq!(ids(&held.entries), (1..=10).collect::<Vec<_>>());
    drop(a); // crash: no ack

    let mut again = redis.queue("crash", "web1").await;
    let first = again.take(4).await.unwrap();
    assert_eq!(ids(&first.entries), vec![1, 2, 3, 4]);
    assert!(first
        .entries
        .iter()
        .all(|e| e.deliveries == 2 && e.task.attempts == 1));
    let rest = again.take(100).await.unwrap();
    assert_eq!(
        ids(&rest.entries)[..6],
        [5, 6, 7, 8, 9, 10],
        "own pending first"
    );
    assert_eq!(ids(&rest.entries)[6..], (11..=30).collect::<Vec<_>>());
    assert!(rest.entries[6..]
        .iter()
        .all(|e| e.deliveries == 1 && e.task.attempts == 0));

    assert_eq!(again.ack(&entry_ids(&first.entries)).await.unwrap(), 4);
    assert_eq!(again.ack(&entry_ids(&rest.entries)).await.unwrap(), 26);
    let stats = again.stats().await.unwrap();
    assert_eq!((stats.queued, stats.pending), (0, 0));
}

#[tokio::test]
async fn another_server_reclaims_a_dead_servers_entries_after_the_idle_time() {
    let redis = RedisServer::start(false);
    let idle = Duration::from_millis(300);
    let mut dead = redis.queue("claim", "dead").await;
    let mut live = redis.queue("claim", "live").await;
    let tasks: Vec<_> = (0..8).map(|i| task(&i.to_string())).collect();
    live.submit_many(&tasks).await.unwrap();
    let held = dead.take(5).await.unwrap();
    assert_eq!(held.entries.len(), 5);
    drop(dead);
    let own = live.take(3).await.unwrap();
    assert_eq!(own.entries.len(), 3);

    assert!(
        live.reclaim(idle, 100).await.unwrap().entries.is_empty(),
        "not idle long enough yet"
    );
    tokio::time::sleep(idle + Duration::from_millis(100)).await;
    let claimed = live.reclaim(idle, 100).await.unwrap();
    assert_eq!(
        ids(&claimed.entries),
        ids(&held.entries),
        "only the dead server's entries, not its own"
    );
    assert!(claimed
        .entries
        .iter()
        .all(|e| e.deliveries == 2 && e.task.attempts == 1));

    // A third server sees the live one's idle entries as abandoned, as it must.
    let third = redis.queue("claim", "third").await;
    let taken_over = third.reclaim(idle, 100).await.unwrap();
    assert_eq!(ids(&taken_over.entries), ids(&own.entries));
    assert!(third.reclaim(idle, 100).await.unwrap().entries.is_empty());

    let settled = entry_ids(&claimed.entries);
    assert_eq!(live.ack(&settled).await.unwrap(), 5);
    let settled = entry_ids(&taken_over.entries);
    assert_eq!(third.ack(&settled).await.unwrap(), 3);
    assert_eq!(live.stats().await.unwrap().pending, 0);
}
