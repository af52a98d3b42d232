//! `TaskQ\set_process_name()` (Swoole: `swoole_set_process_name()`): the
//! name `ps` and `top` show for this process, so an operator can tell the
//! master, manager and workers apart.

use ext_php_rs::builders::FunctionBuilder;
use ext_php_rs::prelude::*;
use ext_php_rs::types::ZendCallable;

use super::args::Str;

/// Sets the kernel's name of the calling thread (`comm`, what `top` and
/// `ps -o comm` show, at most 15 bytes) and, through PHP's own
/// `cli_set_process_title()` where the SAPI has it, the command line `ps`
/// shows. True when the kernel took the name.
#[php_function]
#[php(name = "TaskQ\\set_process_name")]
pub fn set_process_name(name: Str) -> bool {
    let name = name.0;
    let mut comm: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    comm.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    let named = unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0) } == 0;
    if let Ok(title) = ZendCallable::try_from_name("cli_set_process_title") {
        let _ = title.try_call(vec![&name]);
    }
    named
}

/// The function's registration, for the module builder in `lib.rs`.
pub fn function() -> FunctionBuilder<'static> {
    wrap_function!(set_process_name)
}
