//! The one place engine errors become PHP exceptions and warnings. The
//! exception classes are declared in PHP (see `bootstrap.php`), so they carry
//! the caller's file, line and trace like any userland exception.

use ext_php_rs::error::php_error;
use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::ErrorType;
use ext_php_rs::zend::{ce, ClassEntry};

use crate::error::{ClientError, ServerError};
use crate::worker::LinkError;

/// PHP source declaring taskq's exception hierarchy, run at request start.
pub const BOOTSTRAP: &str = include_str!("bootstrap.php");

fn class(name: &str) -> &'static ClassEntry {
    ClassEntry::try_find(name).unwrap_or_else(ce::exception)
}

/// A `TaskQ\Exception` with `code` (errno where there is one).
pub fn exception(message: String, code: i32) -> PhpException {
    PhpException::new(message, code, class("TaskQ\\Exception"))
}

impl From<ServerError> for PhpException {
    fn from(e: ServerError) -> Self {
        let code = match &e {
            ServerError::Listen { source, .. } => source.raw_os_error().unwrap_or(0),
            _ => 0,
        };
        exception(e.to_string(), code)
    }
}

impl From<ClientError> for PhpException {
    fn from(e: ClientError) -> Self {
        let code = e.code();
        exception(e.to_string(), code)
    }
}

impl From<LinkError> for PhpException {
    fn from(e: LinkError) -> Self {
        exception(e.to_string(), 0)
    }
}

/// Emits an `E_WARNING` attributed to the calling PHP method, Swoole-style.
pub fn warn(message: &str) {
    php_error(&ErrorType::Warning, message);
}
