//! Zend engine functions that ext-php-rs does not bind, looked up at run
//! time with dlsym: declaring them as `extern "C"` would break `cargo php
//! stubs` (see the ext-php-rs notes). Each wrapper states the C signature it
//! relies on.

use std::ffi::{c_char, c_int, c_void, CStr};

use ext_php_rs::zend::ClassEntry;

/// Looks up a symbol exported by the PHP binary.
pub fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Whether an extension named `name` (lowercase) is loaded.
pub fn extension_loaded(name: &str) -> bool {
    type Find = unsafe extern "C" fn(*const c_void, *const c_char, usize) -> *mut c_void;
    let (Some(registry), Some(find)) = (symbol(c"module_registry"), symbol(c"zend_hash_str_find"))
    else {
        return false;
    };
    // SAFETY: module_registry is a HashTable; zend_hash_str_find has this signature.
    let find: Find = unsafe { std::mem::transmute(find) };
    unsafe { !find(registry, name.as_ptr().cast(), name.len()).is_null() }
}

/// `ini_get()` of an integer setting from C, usable during MINIT.
pub fn ini_long(name: &str) -> Option<i64> {
    type IniLong = unsafe extern "C" fn(*const c_char, usize, bool) -> i64;
    let f = symbol(c"zend_ini_long")?;
    // SAFETY: zend_ini_long(const char*, size_t, bool) -> zend_long.
    let f: IniLong = unsafe { std::mem::transmute(f) };
    Some(unsafe { f(name.as_ptr().cast(), name.len(), false) })
}

/// Makes `name` another name of the class `ce` for this request.
pub fn register_class_alias(name: &str, ce: &ClassEntry) {
    let ce = std::ptr::from_ref(ce).cast_mut().cast::<c_void>();
    type Alias = unsafe extern "C" fn(*const c_char, usize, *mut c_void, bool) -> c_int;
    let Some(f) = symbol(c"zend_register_class_alias_ex") else {
        return;
    };
    // SAFETY: the Zend signature (name, len, ce, persistent) -> zend_result;
    // name/len describe a valid buffer and the ce is registered.
    unsafe {
        let alias: Alias = std::mem::transmute(f);
        alias(name.as_ptr().cast(), name.len(), ce, false);
    }
}

/// `php --ri taskq` lists the INI settings through this Zend helper.
///
/// # Safety
/// `module` must be the module entry PHP passed to the info function.
pub unsafe fn display_ini_entries(module: *mut c_void) {
    type Display = unsafe extern "C" fn(*mut c_void);
    if let Some(f) = symbol(c"display_ini_entries") {
        // SAFETY: display_ini_entries(zend_module_entry*).
        let f: Display = unsafe { std::mem::transmute(f) };
        unsafe { f(module) };
    }
}
