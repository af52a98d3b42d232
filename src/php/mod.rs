//! The PHP-facing layer: zval conversions, classes, callbacks and the Swoole
//! compatibility names. Everything below `php/` is thin; the engine it drives
//! lives in the crate's other modules and knows nothing of PHP.

pub mod args;
pub mod client;
pub mod compat;
pub mod error;
pub mod events;
pub mod exception;
pub mod exception_classes;
pub mod failed_tasks;
pub mod handler;
pub mod loose_value;
pub mod mailer;
pub mod process_name;
pub mod process_state;
pub mod server;
pub mod timer;
pub mod values;
pub mod zend;
