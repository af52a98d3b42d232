//! Failed runs are counted (explicit retries and deliveries whose server
//! died alike), and a task that used up its attempts lands in the failed
//! list with its error, where every server sees it and an operator can
//! retry or purge it.

use std::time::Duration;

use bytes::Bytes;
use taskq_redis::{Select, TaskResult};

use crate::support::{good, task, RedisServer};

#[tokio::test]
async fn retries_count_attempts_then_the_failed_list_keeps_the_error() {
    let redis = RedisServer::start(false);
    let mut a = redis.queue("flaky", "a").await;
    let mut b = redis.queue("flaky", "b").await;
    let id = a.submit(&task("payload")).await.unwrap();

    for attempts in 0..2 {
        let entry = a.take(1).await.unwrap().entries.remove(0);
        assert_eq!((entry.task.id, entry.task.attempts), (id, attempts));
        assert!(a.retry(&entry, Duration::ZERO).await.unwrap());
        assert_eq!(a.stats().await.unwrap().delayed, 1);
    }
    let last = a.take(1).await.unwrap().entries.remove(0);
    assert_eq!(last.task.attempts, 2);
    assert!(last.task.attempts + 1 >= last.task.max_attempts);
    assert!(a.fail(&last, "RuntimeException: boom").await.unwrap());

    let stats = b.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.pending, stats.delayed, stats.failed),
        (0, 0, 0, 1)
    );
    let failed = b.failed_list(0, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].task.id, id);
    assert_eq!(failed[0].task.attempts, 3);
    assert_eq!(failed[0].error, "RuntimeException: boom");
    assert_eq!(&failed[0].task.payload[..], b"payload");
    assert!(failed[0].failed_at_ms >= failed[0].task.submitted_at_ms);
    let one = a.failed_get(id).await.unwrap().unwrap();
    assert_eq!(
        (one.task.id, one.error.as_str()),
        (id, "RuntimeException: boom")
    );
    assert!(a.failed_get(999).await.unwrap().is_none());

    assert_eq!(b.retry_failed(Select::Ids(&[id, 999])).await.unwrap(), 1);
    let back = b.take(1).await.unwrap().entries.remove(0);
    assert_eq!((back.task.id, back.task.attempts), (id, 0));
    assert!(
        b.failed_get(id).await.unwrap().is_none(),
        "retried: no longer failed"
    );
    assert!(b.fail(&back, "again").await.unwrap());
    b.submit(&task("other")).await.unwrap();
    let other = b.take(1).await.unwrap().entries.remove(0);
    assert!(b.fail(&other, "too").await.unwrap());
    assert_eq!(a.purge_failed(Select::All).await.unwrap(), 2);
    assert!(a.failed_list(0, 10).await.unwrap().is_empty());
    assert_eq!(a.stats().await.unwrap(), Default::default());
}

#[tokio::test]
async fn a_task_whose_servers_keep_dying_goes_to_the_failed_list() {
    let redis = RedisServer::start(false);
    let mut submit = task("poison");
    submit.max_attempts = 2;
    let id = redis
        .queue("poison", "web")
        .await
        .submit(&submit)
        .await
        .unwrap();

    let mut first = redis.queue("poison", "web").await;
    assert_eq!(first.take(1).await.unwrap().entries[0].task.attempts, 0);
    drop(first); // died while running it
    let mut second = redis.queue("poison", "web").await;
    let again = second.take(1).await.unwrap();
    assert_eq!(
        again.entries[0].task.attempts, 1,
        "one run lost with its server"
    );
    drop(second); // died again: both attempts used

    let mut third = redis.queue("poison", "web").await;
    let taken = third.take(1).await.unwrap();
    assert!(taken.entries.is_empty(), "not run a third time");
    assert_eq!(taken.exhausted.len(), 1);
    assert_eq!(taken.exhausted[0].task.id, id);
    assert!(
        taken.exhausted[0].error.contains("delivered 3 times"),
        "{}",
        taken.exhausted[0].error
    );
    let failed = third.failed_list(0, 10).await.unwrap();
    assert_eq!(failed, taken.exhausted);
    let stats = third.stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed), (0, 1));
}

#[tokio::test]
async fn a_worker_task_given_up_elsewhere_reaches_its_origin_once() {
    let redis = RedisServer::start(false);
    let origin = redis.queue("far", "host-a:9501").await;
    let mut runner = redis.queue("far", "host-b:9501").await;
    let mut from_worker = task("mail #7");
    (from_worker.src_worker, from_worker.src_task_id) = (3, 41);
    let mut from_client = task("client job");
    from_client.src_worker = -1;
    let id = origin.submit(&from_worker).await.unwrap();
    origin.submit(&from_client).await.unwrap();

    for entry in runner.take(2).await.unwrap().entries {
        assert!(runner.fail(&entry, "SMTP 550: no such user").await.unwrap());
    }
    assert_eq!(
        good(origin.results(10).await.unwrap()),
        [TaskResult {
            task_id: id,
            src_worker: 3,
            src_task_id: 41,
            payload: Bytes::from_static(b"mail #7"),
            error: Some("SMTP 550: no such user".into()),
        }],
        "the worker's failure, with its data; a client's task is reported where it failed"
    );
    assert!(runner.results(10).await.unwrap().is_empty());
    assert_eq!(runner.stats().await.unwrap().failed, 2);

    let mut own = redis.queue("far", "host-a:9501").await;
    own.submit(&from_worker).await.unwrap();
    let entry = own.take(1).await.unwrap().entries.remove(0);
    assert!(own.fail(&entry, "boom").await.unwrap());
    assert!(
        origin.results(10).await.unwrap().is_empty(),
        "a server reports its own workers' failures itself"
    );
}

#[tokio::test]
async fn entries_taskq_did_not_write_are_dropped_not_blocking_the_tasks_behind_them() {
    let redis = RedisServer::start(false);
    let mut q = redis.queue("junk", "web").await;
    q.submit(&task("before")).await.unwrap();
    let mut raw = redis.raw().await;
    let stream = "taskq:{junk}:stream:0";
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("hello")
        .arg("world")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("id")
        .arg("not a number")
        .query_async(&mut raw)
        .await
        .unwrap();
    q.submit(&task("after")).await.unwrap();

    let taken = q.take(10).await.unwrap();
    let payloads: Vec<_> = taken.entries.iter().map(|e| &e.task.payload[..]).collect();
    assert_eq!(payloads, [&b"before"[..], b"after"]);
    assert_eq!(taken.dropped.len(), 2, "{:?}", taken.dropped);
    assert!(
        taken.dropped[0]
            .to_string()
            .contains("malformed task record in taskq:{junk}:stream:0"),
        "{}",
        taken.dropped[0]
    );
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.queued, stats.pending),
        (0, 2),
        "the junk is gone, the tasks are held"
    );

    let results = "taskq:{junk}:results:web";
    for fields in [
        &["id", "1"][..],
        &["id", "7", "worker", "0", "ref", "3", "payload", "ok"],
    ] {
        let _: String = redis::cmd("XADD")
            .arg(results)
            .arg("*")
            .arg(fields)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let got = q.results(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].is_err(), "the stray result is an error of its own");
    assert_eq!(
        got[1].as_ref().unwrap().src_task_id,
        3,
        "the good one arrives"
    );
}
