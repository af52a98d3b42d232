//! PHP's own argument rules for every taskq method. ext-php-rs accepts an
//! `i64` parameter only from a PHP int, so `new Swoole\Server('127.0.0.1',
//! '9501')` failed where Swoole (an internal PHP function) takes it. These
//! parameter types hand the conversion to the Zend engine's own parsers
//! (`zend_parse_arg_*_slow`, the ones `ZEND_PARSE_PARAMETERS` uses), which
//! apply the caller's typing mode: coercion by default, exact types under
//! `declare(strict_types=1)`, and the engine's own deprecations and
//! TypeErrors naming the method, the argument's number and name.
//!
//! `Opt<T>` is an optional parameter: nullable, with `null` (or leaving it
//! out) meaning the default the method gives with [`Opt::or`].

use std::ffi::{c_char, CStr};

use ext_php_rs::convert::FromZvalMut;
use ext_php_rs::ffi::{
    _efree, _zend_expected_type_Z_EXPECTED_ARRAY as EXPECTED_ARRAY,
    _zend_expected_type_Z_EXPECTED_BOOL as EXPECTED_BOOL,
    _zend_expected_type_Z_EXPECTED_DOUBLE as EXPECTED_DOUBLE,
    _zend_expected_type_Z_EXPECTED_LONG as EXPECTED_LONG,
    _zend_expected_type_Z_EXPECTED_STRING as EXPECTED_STRING, zend_is_callable_ex, zend_string,
};
use ext_php_rs::flags::DataType;
use ext_php_rs::types::{ZendHashTable, Zval};
use ext_php_rs::zend::ExecutorGlobals;

use super::zend;

/// A PHP `int` parameter.
pub struct Int(pub i64);
/// A PHP `float` parameter.
pub struct Float(pub f64);
/// A PHP `string` parameter (bytes that are not UTF-8 are replaced).
pub struct Str(pub String);
/// A PHP `bool` parameter.
pub struct Bool(pub bool);
/// A PHP `string` parameter kept as bytes (binary data such as a message).
pub struct Bin<'a>(pub &'a [u8]);
/// A PHP `array` parameter.
pub struct Array<'a>(pub &'a ZendHashTable);
/// A PHP `callable` parameter.
pub struct Callable<'a>(pub &'a Zval);
/// A `string|array` parameter: `TaskClient::send()` sends an array as JSON.
pub enum StrOrArray<'a> {
    Str(&'a [u8]),
    /// The argument itself, an array.
    Array(&'a Zval),
}

/// An optional, nullable parameter: `None` when omitted or null.
pub struct Opt<T>(pub Option<T>);

/// What each parameter type tells the engine and how it reads a value.
pub trait Param<'a>: Sized {
    /// The type declared in the argument info (reflection, stubs).
    const TYPE: DataType;
    /// Zend's `zend_expected_type` for the TypeError; its `_OR_NULL`
    /// twin follows it (`expected + 1`) in every PHP 8 release.
    const EXPECTED: u32;
    /// The value the engine accepts for this caller, or None when PHP
    /// rejects it (an error may already be thrown, e.g. a deprecation an
    /// error handler turned into an exception).
    fn parse(zval: &'a mut Zval) -> Option<Self>;

    /// Throws PHP's TypeError for a value `parse` rejected.
    fn reject(zval: *mut Zval, nullable: bool) {
        wrong_type(zval, Self::EXPECTED + u32::from(nullable));
    }
}

/// A scalar parameter's plain value, for [`Opt::or`].
pub trait Scalar {
    type Value;
    fn value(self) -> Self::Value;
}

impl<T: Scalar> Opt<T> {
    /// The given value, or `default` when the caller left it out or passed null.
    pub fn or(self, default: T::Value) -> T::Value {
        self.0.map_or(default, Scalar::value)
    }
}

/// Runs the engine's parser for values that are not already of the type:
/// it refuses them under strict_types and converts them otherwise. `name`
/// is the `zend_parse_arg_*_slow` whose destination type is `T`.
fn slow<T>(name: &'static CStr, zval: &mut Zval, dest: T) -> Option<T> {
    let num = arg_num(zval);
    // SAFETY: the callers pair each parser with its destination type, and
    // `zval` is one of the current call's arguments.
    unsafe { zend::parse_arg_slow(name, zval, dest, num) }
}

/// Position (from 1) of `zval` among the arguments of the running internal
/// call, which is where the engine's messages need it; 0 if not found.
fn arg_num(zval: *const Zval) -> u32 {
    let ex = ExecutorGlobals::get().current_execute_data;
    // SAFETY: inside a method handler the current frame is this call's.
    let Some(ex) = (unsafe { ex.as_ref() }) else {
        return 0;
    };
    // SAFETY: num_args is the union member set for function frames.
    let count = unsafe { ex.This.u2.num_args };
    (0..count)
        .find(|&i| {
            // SAFETY: i < num_args, so the slot is an argument of this frame.
            unsafe { ex.zend_call_arg(i as usize) }.is_some_and(|slot| {
                std::ptr::eq(&*slot, zval) || std::ptr::eq(slot.dereference(), zval)
            })
        })
        .map_or(0, |i| i + 1)
}

/// Throws PHP's TypeError "X::m(): Argument #N ($name) must be of type T,
/// U given", unless an exception is already pending.
fn wrong_type(zval: *mut Zval, expected: u32) {
    // SAFETY: `zval` is argument `arg_num(zval)` of the current call.
    unsafe { zend::wrong_parameter_type_error(arg_num(zval), expected, zval) };
}

fn accept<'a, T: Param<'a>>(zval: &'a mut Zval, nullable: bool) -> Option<T> {
    let ptr: *mut Zval = zval;
    let value = T::parse(zval);
    if value.is_none() {
        T::reject(ptr, nullable);
    }
    value
}

/// A type whose values the engine converts with `zend_parse_arg_<name>_slow`
/// when they are not already of it.
macro_rules! weak {
    ($($ty:ident: $exact:ident, $slow:literal, $data:ident, $expected:ident;)*) => {$(
        impl Param<'_> for $ty {
            const TYPE: DataType = DataType::$data;
            const EXPECTED: u32 = $expected;
            fn parse(zval: &mut Zval) -> Option<Self> {
                zval.$exact()
                    .or_else(|| slow($slow, zval, Default::default()))
                    .map($ty)
            }
        }
    )*};
}

weak! {
    Int: long, c"zend_parse_arg_long_slow", Long, EXPECTED_LONG;
    Float: double, c"zend_parse_arg_double_slow", Double, EXPECTED_DOUBLE;
    Bool: bool, c"zend_parse_arg_bool_slow", Bool, EXPECTED_BOOL;
}

impl<'a> Param<'a> for Bin<'a> {
    const TYPE: DataType = DataType::String;
    const EXPECTED: u32 = EXPECTED_STRING;
    fn parse(zval: &'a mut Zval) -> Option<Self> {
        if zval.zend_str().is_none() {
            // Converts the argument in place (int to its decimal text, ...).
            let _: *mut zend_string = slow(c"zend_parse_arg_str_slow", zval, std::ptr::null_mut())?;
        }
        zval.zend_str().map(|s| Bin(s.as_bytes()))
    }
}

impl Param<'_> for Str {
    const TYPE: DataType = DataType::String;
    const EXPECTED: u32 = EXPECTED_STRING;
    fn parse(zval: &mut Zval) -> Option<Self> {
        Bin::parse(zval).map(|b| Str(String::from_utf8_lossy(b.0).into_owned()))
    }
}

impl<'a> Param<'a> for Array<'a> {
    const TYPE: DataType = DataType::Array;
    const EXPECTED: u32 = EXPECTED_ARRAY;
    fn parse(zval: &'a mut Zval) -> Option<Self> {
        zval.array().map(Array)
    }
}

macro_rules! scalar {
    ($($ty:ident: $value:ty),*) => {$(
        impl Scalar for $ty {
            type Value = $value;
            fn value(self) -> $value {
                self.0
            }
        }

        impl<'a> FromZvalMut<'a> for $ty {
            const TYPE: DataType = <$ty as Param<'a>>::TYPE;
            fn from_zval_mut(zval: &'a mut Zval) -> Option<Self> {
                accept(zval, false)
            }
        }
    )*};
}

scalar!(Int: i64, Float: f64, Str: String, Bool: bool);

impl<'a> FromZvalMut<'a> for Array<'a> {
    const TYPE: DataType = DataType::Array;
    fn from_zval_mut(zval: &'a mut Zval) -> Option<Self> {
        accept(zval, false)
    }
}

/// Asks the engine whether `zval` is callable from here; its reason when
/// not (an emalloc'd string the caller owns).
fn callable(zval: *mut Zval) -> Result<(), *mut c_char> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: a live argument zval; no object, name or cache wanted.
    let ok = unsafe {
        zend_is_callable_ex(
            zval,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut error,
        )
    };
    match (ok, error.is_null()) {
        (true, true) => Ok(()),
        (true, false) => {
            // SAFETY: the engine allocated it with emalloc; nobody else frees it.
            unsafe { _efree(error.cast()) };
            Ok(())
        }
        (false, _) => Err(error),
    }
}

impl<'a> Param<'a> for Callable<'a> {
    const TYPE: DataType = DataType::Callable;
    /// Unused: `reject` reports callables with the engine's own reason.
    const EXPECTED: u32 = 0;
    fn parse(zval: &'a mut Zval) -> Option<Self> {
        callable(zval).ok().map(|()| Callable(zval))
    }
    /// "must be a valid callback[ or null], <the engine's reason>".
    fn reject(zval: *mut Zval, nullable: bool) {
        let Err(error) = callable(zval) else {
            return;
        };
        if !error.is_null() {
            // SAFETY: `error` is the reason zend_is_callable_ex emalloc'd.
            unsafe { zend::wrong_callback_error(arg_num(zval), error, nullable) };
        }
    }
}

impl<'a> FromZvalMut<'a> for Callable<'a> {
    const TYPE: DataType = DataType::Callable;
    fn from_zval_mut(zval: &'a mut Zval) -> Option<Self> {
        accept(zval, false)
    }
}

impl<'a> FromZvalMut<'a> for Bin<'a> {
    const TYPE: DataType = DataType::String;
    fn from_zval_mut(zval: &'a mut Zval) -> Option<Self> {
        accept(zval, false)
    }
}

impl<'a> FromZvalMut<'a> for StrOrArray<'a> {
    const TYPE: DataType = DataType::Mixed;
    fn from_zval_mut(zval: &'a mut Zval) -> Option<Self> {
        if zval.is_array() {
            return Some(StrOrArray::Array(zval));
        }
        let ptr: *mut Zval = zval;
        let value = Bin::parse(zval).map(|b| StrOrArray::Str(b.0));
        if value.is_none() {
            type_error(ptr, c"array|string");
        }
        value
    }
}

/// PHP's TypeError for a parameter whose type Zend has no constant for.
fn type_error(zval: *mut Zval, expected: &CStr) {
    if ExecutorGlobals::has_exception() {
        return;
    }
    // SAFETY: `zval` is argument `arg_num(zval)` of the current call.
    unsafe { zend::argument_type_error(arg_num(zval), expected, zval) };
}

impl<'a, T: Param<'a>> FromZvalMut<'a> for Opt<T> {
    const TYPE: DataType = T::TYPE;
    const NULLABLE: bool = true;
    fn from_zval_mut(zval: &'a mut Zval) -> Option<Self> {
        if zval.is_null() {
            return Some(Opt(None));
        }
        accept(zval, true).map(|v| Opt(Some(v)))
    }
    fn from_missing() -> Option<Self> {
        Some(Opt(None))
    }
}
