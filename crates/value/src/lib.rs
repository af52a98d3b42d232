//! PHP input as plain Rust values. The extension converts each zval into a
//! [`Value`] on the PHP thread; the engine and the mailer then check option
//! and message fields against these, with unit tests and no PHP. The one
//! "did you mean" rule ([`suggest::closest`]) lives here too, so `set()` and
//! the mailer hint alike.

pub mod suggest;
pub mod value;

pub use value::Value;
