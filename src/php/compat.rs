//! The other names of taskq's classes, constants and functions. The real
//! classes live in the `TaskQ` namespace, so an application's own
//! `TaskServer` or `Server` class never clashes with them. Two groups of
//! aliases, each switchable by a system INI setting (both on by default):
//! the global `TaskServer`/`TaskClient` (`taskq.global_names`), and Swoole's
//! names (`taskq.swoole_compat`, and only when the swoole extension itself
//! is not loaded), so existing scripts run unchanged.

use ext_php_rs::class::RegisteredClass;
use ext_php_rs::constant::IntoConst;

use super::zend::{extension_loaded, ini_long, register_class_alias};

/// The Swoole release whose API taskq mirrors (process mode by default,
/// `swoole_server` names, the server's `tick()`/`after()`): what
/// `SWOOLE_VERSION` and `swoole_version()` report.
pub const SWOOLE_VERSION: (i64, i64, i64) = (4, 8, 13);

/// PHP source declaring Swoole's functions and `Swoole\Timer` on top of
/// taskq's own, run at request start when the Swoole names are on.
const SWOOLE_FUNCTIONS: &str = include_str!("swoole_functions.php");

/// Whether the Swoole names should be registered in this process.
pub fn enabled() -> bool {
    ini_long("taskq.swoole_compat").unwrap_or(1) != 0 && !extension_loaded("swoole")
}

/// Whether the global `TaskServer`/`TaskClient` names should be registered.
pub fn global_names_enabled() -> bool {
    ini_long("taskq.global_names").unwrap_or(1) != 0
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
        let (major, minor, release) = SWOOLE_VERSION;
        let version = format!("{major}.{minor}.{release}");
        let _ = version.register_constant("SWOOLE_VERSION", module_number);
        let _ = (major * 10_000 + minor * 100 + release)
            .register_constant("SWOOLE_VERSION_ID", module_number);
        let _ = major.register_constant("SWOOLE_MAJOR_VERSION", module_number);
        let _ = minor.register_constant("SWOOLE_MINOR_VERSION", module_number);
        let _ = release.register_constant("SWOOLE_RELEASE_VERSION", module_number);
    }
    let _ = env!("CARGO_PKG_VERSION").register_constant("TASKQ_VERSION", module_number);
}

/// Registers the class aliases and Swoole's functions; called at every
/// request start because request-time names are discarded with the
/// request's class and function tables.
pub fn register_aliases() {
    let server = super::server::TaskServer::get_metadata().ce();
    let client = super::client::TaskClient::get_metadata().ce();
    if global_names_enabled() {
        register_class_alias("TaskServer", server);
        register_class_alias("TaskClient", client);
    }
    if !enabled() {
        return;
    }
    for (name, ce) in [
        ("swoole_server", server),
        ("Swoole\\Server", server),
        ("swoole_client", client),
        ("Swoole\\Client", client),
    ] {
        register_class_alias(name, ce);
    }
    let _ = ext_php_rs::php_eval::execute(SWOOLE_FUNCTIONS);
}
