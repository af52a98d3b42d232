//! taskq's engine: everything the server and the client do that is not PHP.
//! The codec and protocol, the options, the task queue and its on-disk
//! store, the dispatcher, the master's event loop, the manager's supervisor
//! and the worker loop are plain Rust with no PHP dependency, unit-tested with
//! `cargo test -p taskq-engine`. The extension (the workspace's top-level
//! crate) converts zvals into these types and calls PHP callbacks through
//! [`worker::Handler`].

pub mod ack_wait;
pub mod board;
pub mod chunk_reader;
pub mod client;
pub mod committer;
pub mod config;
pub mod dispatcher;
pub mod durable_queue;
pub mod error;
pub mod failed;
pub mod frame;
pub mod inbox;
pub mod ipc;
pub mod json_serial;
pub mod launcher;
pub mod listener;
pub mod log;
pub mod mail_tally;
pub mod master;
pub mod memory;
pub mod one_way;
pub mod packed_fifo;
pub mod packet;
pub mod paging;
pub mod payload;
pub mod php_serial;
pub mod process;
pub mod protocol;
pub mod query;
pub mod queue;
pub mod remote_queue;
pub mod store;
pub mod store_pages;
pub mod supervisor;
pub mod timer;
pub mod worker;
