//! Swoole's names for taskq's classes and constants, registered only when
//! the swoole extension itself is not loaded (and `taskq.swoole_compat` is
//! on), so existing scripts run unchanged. Zend functions that ext-php-rs
//! does not bind are looked up at run time with dlsym.

use std::ffi::{c_char, c_int, c_void, CStr};

use ext_php_rs::constant::IntoConst;

/// Looks up a symbol exported by the PHP binary.
fn symbol(name: &CStr) -> Option<*mut c_void> {
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

/// Whether the Swoole names should be registered in this process.
pub fn enabled() -> bool {
    ini_long("taskq.swoole_compat").unwrap_or(1) != 0 && !extension_loaded("swoole")
}

/// taskq's own constants and, when enabled, their `SWOOLE_*` twins.
const CONSTANTS: &[(&str, i64, bool)] = &[
    ("BASE", 1, false),
    ("PROCESS", 2, false),
    ("SOCK_TCP", 1, false),
    ("SOCK_TCP6", 3, false),
    ("SOCK_UNIX_STREAM", 5, false),
    ("TCP", 1, true),
    ("TCP6", 3, true),
    ("UNIX_STREAM", 5, true),
    ("KEEP", 1 << 12, false),
    ("IPC_UNSOCK", 1, false),
    ("IPC_MSGQUEUE", 2, false),
    ("IPC_PREEMPTIVE", 3, false),
    ("DISPATCH_ROUND", 1, false),
    ("DISPATCH_FDMOD", 2, false),
    ("DISPATCH_IDLE_WORKER", 3, false),
    ("DISPATCH_IPMOD", 4, false),
    ("DISPATCH_UIDMOD", 5, false),
    ("LOG_DEBUG", 0, false),
    ("LOG_TRACE", 1, false),
    ("LOG_INFO", 2, false),
    ("LOG_NOTICE", 3, false),
    ("LOG_WARNING", 4, false),
    ("LOG_ERROR", 5, false),
    ("LOG_NONE", 6, false),
];

/// Registers constants in MINIT. The third tuple field marks names that
/// exist only as Swoole aliases.
pub fn register_constants(module_number: i32) {
    let swoole = enabled();
    for (name, value, swoole_only) in CONSTANTS {
        if !swoole_only {
            let _ = value.register_constant(&format!("TASKQ_{name}"), module_number);
        }
        if swoole {
            let _ = value.register_constant(&format!("SWOOLE_{name}"), module_number);
        }
    }
    if swoole {
        let _ = false.register_constant("SWOOLE_SOCK_SYNC", module_number);
        let _ = true.register_constant("SWOOLE_SOCK_ASYNC", module_number);
    }
    let _ = env!("CARGO_PKG_VERSION").register_constant("TASKQ_VERSION", module_number);
}

/// Registers the class aliases; called at every request start because
/// request-time aliases are discarded with the request's class table.
pub fn register_aliases() {
    if !enabled() {
        return;
    }
    type Alias = unsafe extern "C" fn(*const c_char, usize, *mut c_void, bool) -> c_int;
    let Some(f) = symbol(c"zend_register_class_alias_ex") else {
        return;
    };
    // SAFETY: the Zend signature (name, len, ce, persistent) -> zend_result.
    let alias: Alias = unsafe { std::mem::transmute(f) };
    use ext_php_rs::class::RegisteredClass;
    let server = super::server::TaskServer::get_metadata().ce() as *const _ as *mut c_void;
    let client = super::client::TaskClient::get_metadata().ce() as *const _ as *mut c_void;
    for (name, ce) in [
        ("swoole_server", server),
        ("Swoole\\Server", server),
        ("swoole_client", client),
        ("Swoole\\Client", client),
    ] {
        // SAFETY: name/len describe a valid buffer; the ce is registered.
        unsafe {
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
    if let Some(f) = symbol(c"display_ini_entries") {
        // SAFETY: display_ini_entries(zend_module_entry*).
        let f: Display = unsafe { std::mem::transmute(f) };
        unsafe { f(module) };
    }
}
