//! The one place engine errors become PHP exceptions and warnings, thrown
//! as the classes `exception_classes` declares.

use ext_php_rs::convert::IntoZval;
use ext_php_rs::error::php_error;
use ext_php_rs::exception::PhpException;
use ext_php_rs::flags::ErrorType;
use ext_php_rs::zend::ExecutorGlobals;

use super::exception_classes::{class, EXCEPTION, MAIL_EXCEPTION};

use super::error::PhpError;
use taskq_engine::error::ServerError;
use taskq_mailer::MailError;

/// A `TaskQ\Exception` with `code` (errno where there is one).
fn exception(message: String, code: i32) -> PhpException {
    PhpException::new(message, code, class(EXCEPTION))
}

impl From<PhpError> for PhpException {
    fn from(e: PhpError) -> Self {
        match e {
            PhpError::Mail(e) => mail_exception(e),
            PhpError::Server(e) => {
                let code = match &e {
                    ServerError::Listen { source, .. } => source.raw_os_error().unwrap_or(0),
                    _ => 0,
                };
                exception(e.to_string(), code)
            }
            e => {
                let code = e.code();
                exception(e.to_string(), code)
            }
        }
    }
}

/// A `TaskQ\MailException`: code = SMTP reply code (errno for network
/// failures), and `isPermanent()` tells a retry policy whether to retry. The
/// object is constructed here (rather than by the engine's throw) because
/// the permanent flag is a constructor argument.
fn mail_exception(e: MailError) -> PhpException {
    let (message, code) = (e.to_string(), e.code());
    let ce = class(MAIL_EXCEPTION);
    let object = ce.new();
    let constructed = object.try_call_method(
        "__construct",
        vec![&message, &i64::from(code), &e.is_permanent()],
    );
    match (constructed, object.into_zval(false)) {
        (Ok(_), Ok(zval)) => PhpException::new(message, code, ce).with_object(zval),
        _ => PhpException::new(message, code, ce),
    }
}

/// Emits an `E_WARNING` attributed to the calling PHP method, Swoole-style.
pub fn warn(message: &str) {
    php_error(&ErrorType::Warning, message);
}

/// Clears the exception a PHP function we called left pending and returns
/// its message, so ours can say which input it was about instead.
pub fn take_pending_message() -> Option<String> {
    let ex = ExecutorGlobals::take_exception()?;
    ex.into_zval(false)
        .ok()?
        .try_call_method("getMessage", vec![])
        .ok()?
        .string()
}
