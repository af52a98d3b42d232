//! A task running longer than the claim idle time on a live server is not
//! taken from it while the server keeps it alive; once it stops doing so,
//! another server takes it over and the first one learns it lost it.

use std::time::{Duration, Instant};

use crate::support::{entry_ids, task, RedisServer};

#[tokio::test]
async fn a_long_task_kept_alive_is_not_reclaimed() {
    let redis = RedisServer::start(false);
    // Well above the 100 ms refresh, so a loaded machine does not matter.
    let idle = Duration::from_millis(600);
    let mut owner = redis.queue("long", "owner").await;
    let other = redis.queue("long", "other").await;
    owner
        .submit_many(&[task("a"), task("b"), task("c")])
        .await
        .unwrap();
    let running = owner.take(10).await.unwrap().entries;
    assert_eq!(running.len(), 3);
    let held = entry_ids(&running);

    let until = Instant::now() + idle * 3;
    let mut last_kept = Instant::now();
    while Instant::now() < until {
        if last_kept.elapsed() >= Duration::from_millis(100) {
            assert!(owner.keep_alive(&held).await.unwrap().is_empty());
            last_kept = Instant::now();
        }
        assert!(
            other.reclaim(idle, 10).await.unwrap().entries.is_empty(),
            "stolen from a live server"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // The owner stops refreshing (it hangs): now the entries are abandoned.
    tokio::time::sleep(idle + Duration::from_millis(100)).await;
    let claimed = other.reclaim(idle, 10).await.unwrap().entries;
    assert_eq!(claimed.len(), 3);
    let mut lost = owner.keep_alive(&held).await.unwrap();
    lost.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(lost, held, "the owner learns it no longer holds them");
    assert!(
        !owner.fail(&running[0], "late").await.unwrap(),
        "a lost entry is not the owner's to fail"
    );
    let claimed_ids = entry_ids(&claimed);
    assert_eq!(other.ack(&claimed_ids).await.unwrap(), 3);
    assert_eq!(other.stats().await.unwrap().failed, 0);
}
