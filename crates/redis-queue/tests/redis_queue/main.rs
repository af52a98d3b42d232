//! The Redis Streams queue against a real `redis-server` (Debian's 7.0),
//! one server per test on 127.0.0.1, each check a way stream queues are
//! known to lose or duplicate work.

mod cluster;
mod consumer_name;
mod delayed;
mod failures;
mod keep_alive;
mod priorities_and_results;
mod recovery;
mod redis_restart;
mod sharing;
mod submission;
mod support;
mod unreachable;
