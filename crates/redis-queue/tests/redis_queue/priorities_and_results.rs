//! Priority order across the per-priority streams, and results travelling
//! back to the server that submitted the task when another one ran it.

use bytes::Bytes;
use taskq_redis::{NewTask, TaskResult};

use crate::support::{good, task, RedisServer};

fn with_priority(name: &str, priority: i32) -> NewTask {
    NewTask {
        priority,
        ..task(name)
    }
}

#[tokio::test]
async fn higher_priorities_first_then_submission_order() {
    let redis = RedisServer::start(false);
    let mut q = redis.queue("prio", "web").await;
    let order = [("t1", 0), ("t2", 0), ("t3", 5), ("t4", -1), ("t5", 5)];
    let tasks: Vec<_> = order.iter().map(|(n, p)| with_priority(n, *p)).collect();
    q.submit_many(&tasks).await.unwrap();
    let taken = q.take(2).await.unwrap().entries;
    let names = |es: &[taskq_redis::Entry]| -> Vec<Bytes> {
        es.iter().map(|e| e.task.payload.clone()).collect()
    };
    assert_eq!(names(&taken), ["t3", "t5"]);
    let rest = q.take(10).await.unwrap().entries;
    assert_eq!(names(&rest), ["t1", "t2", "t4"]);
    assert_eq!(rest[2].at.priority, -1);
}

#[tokio::test]
async fn a_result_reaches_the_origin_server_whoever_ran_the_task() {
    let redis = RedisServer::start(false);
    let origin = redis.queue("replies", "host-a:9501").await;
    let mut runner = redis.queue("replies", "host-b:9501").await;
    let mut t = task("work");
    t.src_worker = 2;
    t.src_task_id = 17;
    let id = origin.submit(&t).await.unwrap();

    let entry = runner.take(1).await.unwrap().entries.remove(0);
    assert_eq!(entry.task.origin, "host-a:9501");
    assert_eq!(runner.finish(&[(&entry, b"done")]).await.unwrap(), [true]);

    assert!(
        runner.results(10).await.unwrap().is_empty(),
        "not the runner's result"
    );
    let results = good(origin.results(10).await.unwrap());
    assert_eq!(
        results,
        [TaskResult {
            task_id: id,
            src_worker: 2,
            src_task_id: 17,
            payload: Bytes::from_static(b"done"),
            error: None,
        }]
    );
    assert!(
        origin.results(10).await.unwrap().is_empty(),
        "handed out once"
    );
    assert_eq!(
        origin.stats().await.unwrap().pending,
        0,
        "finish acknowledged it"
    );
    assert_eq!(
        runner.finish(&[(&entry, b"again")]).await.unwrap(),
        [false],
        "no longer pending: said so"
    );
}

#[tokio::test]
async fn results_finished_together_reach_each_origin_and_ack_every_entry() {
    let redis = RedisServer::start(false);
    let a = redis.queue("many", "host-a:9501").await;
    let b = redis.queue("many", "host-b:9501").await;
    let mut runner = redis.queue("many", "host-c:9501").await;
    a.submit(&with_priority("a1", 0)).await.unwrap();
    b.submit(&with_priority("b1", 3)).await.unwrap();
    a.submit(&with_priority("a2", 0)).await.unwrap();
    let entries = runner.take(3).await.unwrap().entries;
    let done: Vec<_> = entries.iter().map(|e| (e, &e.task.payload[..])).collect();
    assert_eq!(runner.finish(&done).await.unwrap(), [true, true, true]);
    let payloads =
        |rs: Vec<TaskResult>| -> Vec<Bytes> { rs.into_iter().map(|r| r.payload).collect() };
    assert_eq!(payloads(good(a.results(10).await.unwrap())), ["a1", "a2"]);
    assert_eq!(payloads(good(b.results(10).await.unwrap())), ["b1"]);
    assert_eq!(
        a.stats().await.unwrap().pending,
        0,
        "every entry acknowledged"
    );
}
