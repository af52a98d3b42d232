//! Every Zend engine function taskq calls that ext-php-rs does not bind,
//! in one place. They are looked up at run time with dlsym: declaring them
//! as `extern "C"` would break `cargo php stubs` (see the ext-php-rs notes).
//! Each wrapper states the C signature it relies on in its SAFETY note;
//! where ext-php-rs exports the function, its binding is used instead.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

use ext_php_rs::types::Zval;
use ext_php_rs::zend::ClassEntry;

/// Symbols looked up so far (address 0: not exported). A `dlsym` walks
/// every loaded object (about a microsecond), and the argument parsers
/// and exception checks ask on every call that needs them: the seed
/// pattern's `connect()` paid one for its int timeout.
static SYMBOLS: Mutex<Vec<(&'static CStr, usize)>> = Mutex::new(Vec::new());

/// Looks up a symbol exported by the PHP binary.
fn symbol(name: &'static CStr) -> Option<*mut c_void> {
    let mut known = SYMBOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let address = match known.iter().find(|(n, _)| *n == name) {
        Some(&(_, address)) => address,
        None => {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            known.push((name, p as usize));
            p as usize
        }
    };
    (address != 0).then_some(address as *mut c_void)
}

/// The function `name` as the function-pointer type `F`.
///
/// # Safety
/// `F` must be an `unsafe extern "C" fn` type matching the C declaration of
/// `name` in the PHP versions taskq supports.
unsafe fn function<F: Copy>(name: &'static CStr) -> Option<F> {
    let p = symbol(name)?;
    // SAFETY: `F` is a function pointer (the caller's promise), which has
    // the size and representation of the data pointer dlsym returned.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Whether an extension named `name` (lowercase) is loaded.
pub fn extension_loaded(name: &str) -> bool {
    let Some(registry) = symbol(c"module_registry") else {
        return false;
    };
    // SAFETY: `module_registry` is the engine's HashTable of loaded modules;
    // name/len describe a valid buffer.
    let found = unsafe {
        ext_php_rs::ffi::zend_hash_str_find(registry.cast(), name.as_ptr().cast(), name.len())
    };
    !found.is_null()
}

/// `ini_get()` of an integer setting from C, usable during MINIT.
pub fn ini_long(name: &str) -> Option<i64> {
    type IniLong = unsafe extern "C" fn(*const c_char, usize, bool) -> i64;
    // SAFETY: zend_ini_long(const char *name, size_t len, bool orig) ->
    // zend_long; name/len describe a valid buffer.
    unsafe {
        function::<IniLong>(c"zend_ini_long").map(|f| f(name.as_ptr().cast(), name.len(), false))
    }
}

/// Makes `name` another name of the class `ce` for this request.
pub fn register_class_alias(name: &str, ce: &ClassEntry) {
    type Alias = unsafe extern "C" fn(*const c_char, usize, *mut c_void, bool) -> c_int;
    let ce = std::ptr::from_ref(ce).cast_mut().cast::<c_void>();
    // SAFETY: zend_register_class_alias_ex(const char *name, size_t len,
    // zend_class_entry *ce, bool persistent) -> zend_result; name/len
    // describe a valid buffer and the ce is registered.
    unsafe {
        if let Some(alias) = function::<Alias>(c"zend_register_class_alias_ex") {
            alias(name.as_ptr().cast(), name.len(), ce, false);
        }
    }
}

/// `php --ri taskq` lists the INI settings through this Zend helper.
///
/// # Safety
/// `module` must be the module entry PHP passed to the info function.
pub unsafe fn display_ini_entries(module: *mut c_void) {
    type Display = unsafe extern "C" fn(*mut c_void);
    // SAFETY: display_ini_entries(zend_module_entry *), given the entry
    // the caller vouches for.
    unsafe {
        if let Some(display) = function::<Display>(c"display_ini_entries") {
            display(module);
        }
    }
}

/// `bool zend_parse_arg_<type>_slow(zval *arg, <type> *dest, uint32_t
/// arg_num)`, named by `name`: the engine's conversion of an argument that
/// is not already of the type, following the caller's typing mode.
///
/// # Safety
/// `name` must be a `zend_parse_arg_*_slow` whose `dest` type is `T`, and
/// `arg` an argument of the running call.
pub unsafe fn parse_arg_slow<T>(
    name: &'static CStr,
    arg: *mut Zval,
    mut dest: T,
    arg_num: u32,
) -> Option<T> {
    type Slow<T> = unsafe extern "C" fn(*mut Zval, *mut T, u32) -> bool;
    // SAFETY: every zend_parse_arg_*_slow has the `Slow<T>` signature
    // (ZEND_FASTCALL is the default convention on 64-bit targets); the
    // caller vouches for `name`, `T` and `arg`.
    unsafe {
        let parse = function::<Slow<T>>(name)?;
        parse(arg, &mut dest, arg_num).then_some(dest)
    }
}

/// Throws PHP's TypeError "X::m(): Argument #N ($name) must be of type T,
/// U given" for a `zend_expected_type`.
///
/// # Safety
/// `arg` must be argument `arg_num` of the running call.
pub unsafe fn wrong_parameter_type_error(arg_num: u32, expected: u32, arg: *mut Zval) {
    type Error = unsafe extern "C" fn(u32, u32, *mut Zval);
    // SAFETY: zend_wrong_parameter_type_error(uint32_t arg_num,
    // zend_expected_type expected_type, zval *arg), with an argument the
    // caller vouches for.
    unsafe {
        if let Some(error) = function::<Error>(c"zend_wrong_parameter_type_error") {
            error(arg_num, expected, arg);
        }
    }
}

/// Throws "must be a valid callback[ or null], <reason>", handing the
/// engine the reason it gave.
///
/// # Safety
/// `reason` must be the emalloc'd string `zend_is_callable_ex` returned;
/// the engine frees it.
pub unsafe fn wrong_callback_error(arg_num: u32, reason: *mut c_char, or_null: bool) {
    type Error = unsafe extern "C" fn(u32, *mut c_char);
    let name = if or_null {
        c"zend_wrong_callback_or_null_error"
    } else {
        c"zend_wrong_callback_error"
    };
    // SAFETY: zend_wrong_callback_error / zend_wrong_callback_or_null_error
    // (uint32_t arg_num, char *error) take ownership of the emalloc'd reason.
    unsafe {
        if let Some(error) = function::<Error>(name) {
            error(arg_num, reason);
        }
    }
}

/// Throws "must be of type <expected>, <type of arg> given" for a type
/// Zend has no `zend_expected_type` for (`array|string`).
///
/// # Safety
/// `arg` must be argument `arg_num` of the running call.
pub unsafe fn argument_type_error(arg_num: u32, expected: &CStr, arg: *mut Zval) {
    type Error = unsafe extern "C" fn(u32, *const c_char, ...);
    type TypeName = unsafe extern "C" fn(*const Zval) -> *const c_char;
    // SAFETY: zend_argument_type_error(uint32_t arg_num, const char *format,
    // ...) with a format taking two strings, and zend_zval_type_name(const
    // zval *) -> const char *, on an argument the caller vouches for.
    unsafe {
        let (Some(error), Some(type_name)) = (
            function::<Error>(c"zend_argument_type_error"),
            function::<TypeName>(c"zend_zval_type_name"),
        ) else {
            return;
        };
        error(
            arg_num,
            c"must be of type %s, %s given".as_ptr(),
            expected.as_ptr(),
            type_name(arg),
        );
    }
}

/// Whether the pending "exception" is PHP 8's unwind-exit object, which
/// `exit()`/`die()` raise.
///
/// # Safety
/// `exception` must be the engine's live `EG(exception)`.
pub unsafe fn is_unwind_exit(exception: *const c_void) -> bool {
    type IsUnwindExit = unsafe extern "C" fn(*const c_void) -> bool;
    // SAFETY: zend_is_unwind_exit(const zend_object *ex) -> bool, on the
    // object the caller vouches for.
    unsafe { function::<IsUnwindExit>(c"zend_is_unwind_exit").is_some_and(|f| f(exception)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_is_looked_up_once_and_a_missing_one_stays_missing() {
        let first = symbol(c"malloc");
        assert!(first.is_some());
        assert_eq!(symbol(c"malloc"), first);
        assert_eq!(symbol(c"taskq_no_such_symbol"), None);
        assert_eq!(symbol(c"taskq_no_such_symbol"), None);
        let known = SYMBOLS.lock().unwrap();
        let entries = |name: &CStr| known.iter().filter(|(n, _)| *n == name).count();
        assert_eq!(
            (entries(c"malloc"), entries(c"taskq_no_such_symbol")),
            (1, 1)
        );
    }
}
