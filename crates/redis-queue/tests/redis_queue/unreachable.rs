//! Connecting fails fast and clearly: nothing listening, a wrong DSN, a
//! name that would break the key layout.

use std::time::{Duration, Instant};

use taskq_redis::{RedisQueue, RedisQueueError};

use crate::support::{RedisServer, TIMEOUTS};

#[tokio::test]
async fn nothing_listening_is_a_fast_clear_error() {
    let mut redis = RedisServer::start(false);
    redis.kill();
    let dsn = format!("redis://:hunter2@127.0.0.1:{}/0", redis.port);
    let started = Instant::now();
    let err = RedisQueue::connect(&dsn, "q", "web", TIMEOUTS)
        .await
        .unwrap_err();
    assert!(started.elapsed() < TIMEOUTS.connect + TIMEOUTS.command + Duration::from_secs(1));
    assert!(err.is_transient(), "{err}");
    let message = err.to_string();
    assert!(message.contains("unavailable (connect)"), "{message}");
    assert!(message.contains(":***@127.0.0.1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_wrong_dsn_or_name_is_refused_before_connecting() {
    let err = RedisQueue::connect("redis://h:70000", "q", "web", TIMEOUTS)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RedisQueueError::Dsn(e) if e.part == "port"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(refused_name("q", "web 1").await, "consumer name");
    assert_eq!(refused_name("{q}", "web").await, "queue name");
}

/// Which name `connect` refused (it never gets as far as connecting).
async fn refused_name(queue: &str, consumer: &str) -> &'static str {
    match RedisQueue::connect("redis://127.0.0.1:1", queue, consumer, TIMEOUTS).await {
        Err(RedisQueueError::InvalidName { what, .. }) => what,
        other => panic!("{queue:?}/{consumer:?}: {other:?}"),
    }
}

#[tokio::test]
async fn no_cluster_node_listening_is_a_fast_clear_error() {
    let mut one = RedisServer::start(false);
    let mut two = RedisServer::start(false);
    one.kill();
    two.kill();
    let dsn = format!(
        "redis+cluster://:hunter2@127.0.0.1:{},127.0.0.1:{}",
        one.port, two.port
    );
    let started = Instant::now();
    let err = RedisQueue::connect(&dsn, "q", "web", TIMEOUTS)
        .await
        .unwrap_err();
    assert!(started.elapsed() < TIMEOUTS.connect + TIMEOUTS.command + Duration::from_secs(1));
    assert!(err.is_transient(), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("unavailable (connect)"), "{message}");
    assert!(
        message.contains("redis+cluster://:***@127.0.0.1"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}
