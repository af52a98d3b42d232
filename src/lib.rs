//! taskq: a real-time asynchronous task queue for PHP, a drop-in for
//! Swoole's task server. This crate is the PHP extension, the thin layer that
//! turns the engine (`taskq-engine`: codec, config, queue, dispatcher,
//! master, supervisor, workers) and the mailer (`taskq-mailer`) into the
//! `TaskQ\\Server`, `TaskQ\\Client` and `TaskQ\\Mailer` classes (aliased as
//! `TaskServer`/`TaskClient` and by Swoole's names).

pub mod php;

use ext_php_rs::flags::IniEntryPermission;
use ext_php_rs::prelude::*;
use ext_php_rs::zend::{IniEntryDef, IniEntryDefs, ModuleEntry};

static INI: IniEntryDefs<3> = IniEntryDefs::new([
    IniEntryDef::new(c"taskq.swoole_compat", c"1", IniEntryPermission::System),
    IniEntryDef::new(c"taskq.global_names", c"1", IniEntryPermission::System),
    IniEntryDef::end(),
]);

/// MINIT: INI entries first, so constants can depend on them; the exception
/// classes once for the process, as PHP's own extensions declare theirs.
pub fn startup(_ty: i32, module_number: i32) -> i32 {
    IniEntryDef::register(INI.as_slice(), module_number);
    php::compat::register_constants(module_number);
    if let Err(e) = php::exception_classes::register() {
        ext_php_rs::error::php_error(
            &ext_php_rs::flags::ErrorType::CoreWarning,
            &format!("taskq: cannot declare its exception classes: {e}"),
        );
        return -1;
    }
    0
}

/// RINIT: the class aliases, which live only as long as the request.
pub extern "C" fn request_startup(_ty: i32, _module_number: i32) -> i32 {
    php::compat::register_aliases();
    0
}

/// `php --ri taskq`.
pub extern "C" fn module_info(module: *mut ModuleEntry) {
    ext_php_rs::info_table_start!();
    ext_php_rs::info_table_row!("taskq support", "enabled");
    ext_php_rs::info_table_row!("version", env!("CARGO_PKG_VERSION"));
    let state = |on: bool| if on { "registered" } else { "off" };
    ext_php_rs::info_table_row!("swoole aliases", state(php::compat::enabled()));
    ext_php_rs::info_table_row!("global aliases", state(php::compat::global_names_enabled()));
    ext_php_rs::info_table_end!();
    // SAFETY: `module` is the entry PHP handed to this info function.
    unsafe { php::zend::display_ini_entries(module.cast()) };
}

#[php_module]
#[php(startup = "startup")]
pub fn get_module(module: ModuleBuilder) -> ModuleBuilder {
    module
        .name("taskq")
        .version(env!("CARGO_PKG_VERSION"))
        .class::<php::server::TaskServer>()
        .class::<php::client::TaskClient>()
        .class::<php::mailer::Mailer>()
        .class::<php::timer::Timer>()
        .function(php::process_name::function())
        .request_startup_function(request_startup)
        .info_function(module_info)
}
