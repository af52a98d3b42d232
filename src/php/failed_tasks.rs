//! The PHP side of `failedTasks()`, `retryFailed()` and `purgeFailed()`:
//! their arguments checked into a [`FailedOp`], and the master's rows made
//! PHP arrays whose task data is decoded without creating any object.

use ext_php_rs::types::{ZendHashTable, Zval};
use ext_php_rs::zend::ExecutorGlobals;
use serde_json::Value as Json;

use super::error::PhpError;
use super::loose_value::{key, type_name};
use super::values::{bytes_zval, from_payload, long_zval};
use taskq_engine::failed::{FailedOp, FailedTask, Which, PAGE_MAX};
use taskq_engine::payload::{Encoding, Payload};
use taskq_engine::php_serial::{AllowedClasses, Policy};

/// What `$ids` of `retryFailed()` and `purgeFailed()` may be.
const IDS_ALLOWED: &str =
    "a failed task's id (an int of 0 or more), an array of such ids, or true for every failed task";

/// `failedTasks($offset, $limit)` as a list question.
pub fn list(method: &'static str, offset: i64, limit: i64) -> Result<FailedOp, PhpError> {
    let bad = |arg: &str, got: i64, allowed: String| PhpError::FailedArgument {
        method,
        arg: arg.into(),
        got: got.to_string(),
        allowed,
    };
    let offset = usize::try_from(offset).map_err(|_| bad("$offset", offset, "0 or more".into()))?;
    let limit = usize::try_from(limit)
        .ok()
        .filter(|n| (1..=PAGE_MAX).contains(n))
        .ok_or_else(|| bad("$limit", limit, format!("1 to {PAGE_MAX}")))?;
    Ok(FailedOp::List { offset, limit })
}

/// The failed tasks `$ids` selects; None for an empty array, which
/// selects nothing. "All" takes an explicit `true`: a null or false that
/// reached here by mistake (an unset variable) must not retry or purge
/// every failed task.
pub fn which(method: &'static str, ids: &Zval) -> Result<Option<Which>, PhpError> {
    let ids = ids.dereference();
    let bad = |arg: String, z: &Zval| PhpError::FailedArgument {
        method,
        arg,
        got: match z.long() {
            Some(n) => n.to_string(),
            None => type_name(z),
        },
        allowed: IDS_ALLOWED.into(),
    };
    if ids.bool() == Some(true) {
        return Ok(Some(Which::All));
    }
    if let Some(id) = ids.long() {
        return match u64::try_from(id) {
            Ok(id) => Ok(Some(Which::Ids(vec![id]))),
            Err(_) => Err(bad("$ids".into(), ids)),
        };
    }
    let Some(list) = ids.array() else {
        return Err(bad("$ids".into(), ids));
    };
    let mut out = Vec::with_capacity(list.len());
    for (k, item) in list.iter() {
        let item = item.dereference();
        match item.long().map(u64::try_from) {
            Some(Ok(id)) => out.push(id),
            _ => return Err(bad(format!("$ids[{}]", key(&k)), item)),
        }
    }
    Ok((!out.is_empty()).then_some(Which::Ids(out)))
}

/// The master's rows as a list of PHP arrays: id, worker, task_id,
/// attempts, error, failed_at, data, and `raw` (the stored bytes, with
/// `data` null) when the data cannot be decoded.
pub fn rows(method: &'static str, answer: &Json, max_depth: usize) -> Result<Zval, PhpError> {
    let unreadable = || PhpError::FailedTasks {
        method,
        why: format!("the master's answer is not a list of failed tasks: {answer}"),
    };
    let items = answer.as_array().ok_or_else(unreadable)?;
    let mut list = ZendHashTable::new();
    for item in items {
        let task = FailedTask::from_json(item).ok_or_else(unreadable)?;
        list.push(row(task, max_depth)?)?;
    }
    let mut z = Zval::new();
    z.set_hashtable(list);
    Ok(z)
}

fn row(task: FailedTask, max_depth: usize) -> Result<Zval, PhpError> {
    let mut ht = ZendHashTable::new();
    ht.insert("id", long_zval(task.id as i64))?;
    ht.insert("worker", long_zval(task.src_worker.into()))?;
    ht.insert("task_id", long_zval(task.task_id))?;
    ht.insert("attempts", long_zval(task.attempts.into()))?;
    ht.insert("error", bytes_zval(task.error.as_bytes()))?;
    ht.insert("failed_at", task.failed_at_ms as f64 / 1000.0)?;
    match silenced(|| data(&task.payload, max_depth)) {
        Ok(value) => ht.insert("data", value)?,
        Err(_) => {
            ht.insert("data", Zval::null())?;
            ht.insert("raw", bytes_zval(&task.payload.data))?;
        }
    }
    let mut z = Zval::new();
    z.set_hashtable(ht);
    Ok(z)
}

/// What PHP 8's `@` leaves in `error_reporting`: E_ERROR, E_PARSE,
/// E_CORE_ERROR, E_COMPILE_ERROR, E_USER_ERROR, E_RECOVERABLE_ERROR.
const E_FATAL_ERRORS: i32 = 1 | 4 | 16 | 64 | 256 | 4096;

/// Runs `f` as PHP's `@` runs an expression (an error handler still sees
/// the warnings, with `error_reporting()` saying they are silenced): `unserialize()` warns about
/// data it cannot decode, and here the row's `raw` already says so, once
/// per task rather than as warnings the caller did not ask for.
fn silenced<T>(f: impl FnOnce() -> T) -> T {
    let saved = ExecutorGlobals::get().error_reporting;
    ExecutorGlobals::get_mut().error_reporting = saved & E_FATAL_ERRORS;
    let out = f();
    ExecutorGlobals::get_mut().error_reporting = saved;
    out
}

/// The task's data as a PHP value, read like a network client's
/// (`from_payload` with untrusted rules) but with no class allowed at all:
/// listing failed tasks must not run any class's `__wakeup()` or
/// `__unserialize()`, so objects come back as `__PHP_Incomplete_Class`.
fn data(payload: &Payload, max_depth: usize) -> Result<Zval, PhpError> {
    let no_objects = Policy {
        classes: AllowedClasses::None,
        max_depth,
    };
    let encoding = match payload.encoding {
        Encoding::Raw => Encoding::Raw,
        Encoding::Serialized | Encoding::Untrusted => Encoding::Untrusted,
    };
    from_payload(
        &Payload {
            encoding,
            data: payload.data.clone(),
        },
        &no_objects,
    )
}
