//! The options of `$server->set([...])` and `$client->set([...])`, validated
//! the way Swoole reads them, so existing Swoole configuration arrays work
//! unchanged. Values arrive already converted from zvals into
//! `taskq_value::Value`, the loose PHP value the mailer reads too; this module
//! never touches PHP, so every rule here is testable without an engine.
//!
//! Unknown keys are warnings, never errors: Swoole silently ignores them, and
//! failing on them would break scripts that set options taskq does not need.
//! Known keys with bad values are errors, because silently running with a
//! different worker count or framing than the user asked for is worse.
//!
//! The folder splits by concern: the PHP-style coercions, the framing
//! options, the server's and the client's tables of options (each name
//! listed once, with its setter), the one list of options accepted for
//! compatibility but ignored (`ignored.rs`, with why), and the one `apply`
//! both sides share.

mod apply;
mod client;
mod coerce;
mod error;
mod framing;
mod ignored;
mod schema;
mod server;

pub use client::ClientConfig;
pub use error::{ConfigError, Warning};
pub use server::ServerConfig;

#[cfg(test)]
mod tests;
