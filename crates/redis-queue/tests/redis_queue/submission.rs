//! Submission reserves ids ahead and sends batches without waiting for
//! each other: batches sent in the order they were prepared are queued
//! in that order, ids stay unique across servers and across a Redis that
//! lost its data, and a priority level whose keys were deleted is set up
//! again.

use std::collections::HashSet;
use std::future::Future;
use std::task::Poll;

use std::time::Duration;

use crate::support::{entry_ids, eventually, task, RedisServer};

#[tokio::test]
async fn batches_prepared_in_order_and_sent_together_are_queued_in_that_order() {
    let redis = RedisServer::start(false);
    let mut q = redis.queue("order", "web").await;
    let batches: Vec<Vec<_>> = (0..8)
        .map(|b| {
            (0..100)
                .map(|i| task(&format!("{:04}", b * 100 + i)))
                .collect()
        })
        .collect();
    let mut prepared = Vec::new();
    for b in &batches {
        prepared.push(q.prepare(b).await.unwrap());
    }
    let sends: Vec<_> = prepared.into_iter().map(|p| q.send(p)).collect();
    let mut ids = Vec::new();
    for got in futures_join_all(sends).await {
        ids.extend(got.unwrap());
    }
    assert_eq!(ids.len(), 800);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids follow the order");

    let mut payloads = Vec::new();
    loop {
        let taken = q.take(300).await.unwrap();
        if taken.entries.is_empty() {
            break;
        }
        payloads.extend(
            taken
                .entries
                .iter()
                .map(|e| String::from_utf8(e.task.payload.to_vec()).unwrap()),
        );
        q.ack(&entry_ids(&taken.entries)).await.unwrap();
    }
    let expected: Vec<_> = (0..800).map(|i| format!("{i:04}")).collect();
    assert_eq!(payloads, expected);
}

#[tokio::test]
async fn ids_stay_unique_across_servers_and_across_a_redis_that_lost_its_data() {
    let mut redis = RedisServer::start(false);
    let a = redis.queue("ids", "a").await;
    let b = redis.queue("ids", "b").await;
    let mut seen = HashSet::new();
    for round in 0..3 {
        for q in [&a, &b] {
            let tasks: Vec<_> = (0..300).map(|i| task(&format!("{round}-{i}"))).collect();
            for id in q.submit_many(&tasks).await.unwrap() {
                assert!(seen.insert(id), "id {id} handed out twice");
            }
        }
    }
    // Without persistence the restarted Redis starts its counter again:
    // a new server gets the ids from 1 on, so `a` must not go on with the
    // block it reserved from the old counter.
    redis.kill();
    redis.restart();
    let c = redis.queue("ids", "c").await;
    let tasks: Vec<_> = (0..1000).map(|i| task(&format!("c-{i}"))).collect();
    let mut after: HashSet<u64> = c.submit_many(&tasks).await.unwrap().into_iter().collect();
    let from_a = eventually(Duration::from_secs(5), || async {
        a.submit_many(&[task("a after")]).await.ok()
    })
    .await;
    for id in from_a {
        assert!(
            after.insert(id),
            "id {id} handed out twice after the restart"
        );
    }
}

#[tokio::test]
async fn a_level_whose_keys_were_deleted_is_set_up_again_and_its_tasks_are_taken() {
    let redis = RedisServer::start(false);
    let mut q = redis.queue("gone", "web").await;
    q.submit(&task("before")).await.unwrap();
    let taken = q.take(10).await.unwrap();
    q.ack(&entry_ids(&taken.entries)).await.unwrap();
    let mut raw = redis.raw().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();

    q.submit(&task("after")).await.unwrap();
    let taken = q.take(10).await.unwrap();
    let payloads: Vec<_> = taken.entries.iter().map(|e| &e.task.payload[..]).collect();
    assert_eq!(payloads, [&b"after"[..]]);
}

/// Runs the futures together, each polled first in the order given (as
/// the master's spawned sends are), and returns their outputs in order.
async fn futures_join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, out) in futs.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    *out = Some(v);
                }
            }
        }
        if done.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().map(Option::unwrap).collect()
}
