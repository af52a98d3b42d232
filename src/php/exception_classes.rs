//! taskq's exception hierarchy, declared once at module start. The classes
//! are built with ext-php-rs's `ClassBuilder` rather than `#[php_class]`: a
//! `#[php_class]` replaces `create_object`, while these inherit
//! `RuntimeException`'s, so they carry the caller's file, line and trace like
//! any userland exception.

use ext_php_rs::args::{Arg, ArgInfoTables};
use ext_php_rs::builders::{ClassBuilder, ClassProperty, FunctionBuilder};
use ext_php_rs::convert::IntoZval;
use ext_php_rs::error::Result;
use ext_php_rs::flags::{DataType, MethodFlags, PropertyFlags};
use ext_php_rs::types::{ZendObject, Zval};
use ext_php_rs::zend::{ce, ClassEntry, ExecuteData, ExecutorGlobals};

/// Every error taskq reports by exception; `getCode()` is the errno where
/// there is one.
pub const EXCEPTION: &str = "TaskQ\\Exception";

/// Why `TaskQ\Mailer` could not send: `getCode()` is the SMTP reply code
/// (550, 451, ...), the errno for network failures (111 refused), or 0; a
/// retry policy retries only when `isTransient()`.
pub const MAIL_EXCEPTION: &str = "TaskQ\\MailException";

/// The private property behind `isPermanent()`/`isTransient()`.
const PERMANENT: &str = "permanent";

/// Declares `TaskQ\Exception extends RuntimeException` and
/// `TaskQ\MailException extends TaskQ\Exception`; called from MINIT, after
/// SPL (a built-in module) has declared `RuntimeException`.
pub fn register() -> Result<()> {
    ClassBuilder::new(EXCEPTION)
        .extends((runtime_exception, "\\RuntimeException"))
        .registration(keep_arg_info)
        .register()?;
    ClassBuilder::new(MAIL_EXCEPTION)
        .extends((taskq_exception, "\\TaskQ\\Exception"))
        .property(ClassProperty {
            name: PERMANENT.into(),
            flags: PropertyFlags::Private,
            default: Some(Box::new(|| true.into_zval(false))),
            docs: &[],
            ty: Some(DataType::Bool),
            nullable: false,
            readonly: false,
            default_stub: Some("true".into()),
        })
        .method(
            FunctionBuilder::constructor(mail_exception_construct)
                .arg(Arg::new("message", DataType::String).default("''"))
                .arg(Arg::new("code", DataType::Long).default("0"))
                .arg(Arg::new(PERMANENT, DataType::Bool).default("true"))
                .arg(
                    Arg::new("previous", DataType::Object("Throwable".into()))
                        .allow_null()
                        .default("null"),
                )
                .required_args(0),
            MethodFlags::Public,
        )
        .method(
            FunctionBuilder::new("isPermanent", is_permanent).returns(DataType::Bool, false, false),
            MethodFlags::Public,
        )
        .method(
            FunctionBuilder::new("isTransient", is_transient).returns(DataType::Bool, false, false),
            MethodFlags::Public,
        )
        .registration(keep_arg_info)
        .register()
}

/// The class a taskq exception of `name` is thrown as: the declared class,
/// or `Exception` should registration have failed (MINIT then warned).
/// Looked up in the compiler's class table, which (unlike
/// `ClassEntry::try_find`'s executor table) already exists during MINIT,
/// where the parents are resolved.
pub fn class(name: &str) -> &'static ClassEntry {
    // SAFETY: the compiler globals exist for the life of the process.
    let table = unsafe { (*ext_php_rs::ffi::ext_php_rs_compiler_globals()).class_table };
    if table.is_null() {
        return ce::exception();
    }
    // SAFETY: `table` is the engine's live class table, whose values are
    // class entries; `name` is valid for `name.len()` bytes.
    let found = unsafe {
        ext_php_rs::ffi::zend_hash_str_find_ptr_lc(table, name.as_ptr().cast(), name.len())
    };
    // SAFETY: a class entry in the class table lives until MSHUTDOWN.
    unsafe { found.cast::<ClassEntry>().as_ref() }.unwrap_or_else(ce::exception)
}

fn runtime_exception() -> &'static ClassEntry {
    class("RuntimeException")
}

fn taskq_exception() -> &'static ClassEntry {
    class(EXCEPTION)
}

/// The engine points into a class's argument info for the life of the
/// process, so it is never freed.
fn keep_arg_info(_class: &'static mut ClassEntry, arg_info: ArgInfoTables) {
    Box::leak(arg_info);
}

/// `new MailException($message, $code, $permanent, $previous)`: the
/// `Exception` constructor with `$message`, `$code` and `$previous`, then
/// the permanent flag.
extern "C" fn mail_exception_construct(ex: &mut ExecuteData, _retval: &mut Zval) {
    let mut message = Arg::new("message", DataType::String);
    let mut code = Arg::new("code", DataType::Long);
    let mut permanent = Arg::new(PERMANENT, DataType::Bool);
    let mut previous = Arg::new("previous", DataType::Object("Throwable".into()));
    let (parser, this) = ex.parser_object();
    let parsed = parser
        .not_required()
        .arg(&mut message)
        .arg(&mut code)
        .arg(&mut permanent)
        .arg(&mut previous)
        .parse();
    let Some(this) = this else { return };
    if parsed.is_err() {
        return;
    }
    let mut args = Vec::with_capacity(3);
    for arg in [&mut message, &mut code, &mut previous] {
        match arg.zval() {
            Some(zval) => args.push(zval.shallow_clone()),
            None => break,
        }
    }
    if !construct_as_exception(this, &mut args) {
        return;
    }
    let flag = permanent.zval().is_none_or(|zval| zval.coerce_to_bool());
    let _ = this.set_property(PERMANENT, flag);
}

/// `isPermanent()`: 5xx replies, invalid input, TLS and configuration
/// problems, where retrying cannot help.
extern "C" fn is_permanent(ex: &mut ExecuteData, retval: &mut Zval) {
    retval.set_bool(permanent_flag(ex).unwrap_or(true));
}

/// `isTransient()`: 4xx replies and network failures, where a later
/// attempt may succeed.
extern "C" fn is_transient(ex: &mut ExecuteData, retval: &mut Zval) {
    retval.set_bool(!permanent_flag(ex).unwrap_or(true));
}

fn permanent_flag(ex: &mut ExecuteData) -> Option<bool> {
    ex.get_self()?.get_property::<bool>(PERMANENT).ok()
}

/// Runs `Exception::__construct` on `this` with `args`, as `parent::__construct()`
/// would; false when it threw (the exception stays pending for PHP).
fn construct_as_exception(this: &mut ZendObject, args: &mut [Zval]) -> bool {
    let Ok(count) = u32::try_from(args.len()) else {
        return false;
    };
    let mut retval = Zval::new();
    let called_scope = this.ce;
    // SAFETY: `Exception`'s constructor is a live internal function that
    // `this` (a `TaskQ\MailException`) inherits; `args` holds `count`
    // initialised zvals that outlive the call.
    unsafe {
        ext_php_rs::ffi::zend_call_known_function(
            ce::exception().constructor,
            std::ptr::from_mut(this),
            called_scope,
            &raw mut retval,
            count,
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        );
    }
    !ExecutorGlobals::has_exception()
}
