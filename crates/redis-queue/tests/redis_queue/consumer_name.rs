//! One consumer name, one live process: two processes under one name would
//! share one pending list and, restarting, take each other's running tasks.
//! The name is a lease that its holder renews; a second process is told who
//! holds it, and gets it when the holder releases it, lets it run out, or
//! is known dead.

use std::time::Duration;

use crate::support::RedisServer;

#[tokio::test]
async fn a_consumer_name_is_held_by_one_process_at_a_time() {
    let redis = RedisServer::start(false);
    let first = redis.queue("mail", "web1:9501").await;
    let second = redis.queue("mail", "web1:9501").await;
    let other_name = redis.queue("mail", "web2:9501").await;
    let ttl = Duration::from_secs(30);

    assert_eq!(
        first.hold_name("web1 pid 10", ttl, None).await.unwrap(),
        None
    );
    assert_eq!(
        first.hold_name("web1 pid 10", ttl, None).await.unwrap(),
        None,
        "renewed by its holder"
    );
    assert_eq!(
        second.hold_name("web1 pid 11", ttl, None).await.unwrap(),
        Some("web1 pid 10".into()),
        "refused, naming the holder"
    );
    assert_eq!(
        other_name
            .hold_name("web2 pid 10", ttl, None)
            .await
            .unwrap(),
        None,
        "names are independent"
    );
    assert_eq!(
        second
            .hold_name("web1 pid 11", ttl, Some("web1 pid 99"))
            .await
            .unwrap(),
        Some("web1 pid 10".into()),
        "only the holder named stale is replaced"
    );
    assert_eq!(
        second
            .hold_name("web1 pid 11", ttl, Some("web1 pid 10"))
            .await
            .unwrap(),
        None,
        "taken from a holder known dead"
    );
    assert!(
        !first.release_name("web1 pid 10").await.unwrap(),
        "no longer the holder's to release"
    );
    assert!(second.release_name("web1 pid 11").await.unwrap());
    assert_eq!(
        first.hold_name("web1 pid 10", ttl, None).await.unwrap(),
        None
    );

    let short = Duration::from_millis(200);
    assert_eq!(
        first.hold_name("web1 pid 10", short, None).await.unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        second.hold_name("web1 pid 11", ttl, None).await.unwrap(),
        None,
        "a lease its holder stopped renewing runs out"
    );
}
