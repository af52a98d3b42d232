//! The option tables: each side of `set()` lists its options once, as rows
//! of name and setter, and dispatch, the known-options list and suggestions
//! all read the same table, so a name cannot be known but unhandled.

use super::error::ConfigError;
use super::framing::{Framing, FRAMING_ROWS};
use super::ignored::Ignored;
use taskq_value::Value;

/// How one option is read into a configuration of type `T`: validates the
/// value (the option name is passed for the error) and stores it.
pub(super) type Setter<T> = fn(&mut T, &str, &Value) -> Result<(), ConfigError>;

/// One row of a side's table.
pub(super) enum Row<T: 'static> {
    /// An option of this side and how it is stored.
    Option(&'static str, Setter<T>),
    /// The framing options, which server and client share, at this place
    /// in the list.
    Framing,
    /// An option accepted for compatibility and ignored (`config::ignored`):
    /// validated, then dropped.
    Ignored(&'static Ignored),
}

/// A setter storing what `$parse` returns (given the option name `$k` and
/// the value `$v`) in `$field`: the shape of almost every row.
macro_rules! store {
    ($field:ident, |$k:ident, $v:ident| $parse:expr) => {
        |c, $k, $v| {
            c.$field = $parse;
            Ok(())
        }
    };
}
pub(super) use store;

/// A configuration described by a table of rows.
pub(super) trait Schema: Sized + 'static {
    /// The rows, in the order the "known options" warning lists them.
    const ROWS: &'static [Row<Self>];
    /// Where the shared framing options are stored.
    fn framing_mut(&mut self) -> &mut Framing;
}

/// Stores one option; `Ok(false)` when no row has this name.
pub(super) fn set<T: Schema>(cfg: &mut T, key: &str, value: &Value) -> Result<bool, ConfigError> {
    for row in T::ROWS {
        match row {
            Row::Option(name, setter) if *name == key => {
                setter(cfg, key, value)?;
                return Ok(true);
            }
            Row::Framing => {
                if let Some((_, setter)) = FRAMING_ROWS.iter().find(|(name, _)| *name == key) {
                    setter(cfg.framing_mut(), key, value)?;
                    return Ok(true);
                }
            }
            Row::Ignored(row) if row.name == key => {
                (row.check)(key, value)?;
                return Ok(true);
            }
            Row::Option(..) | Row::Ignored(_) => {}
        }
    }
    Ok(false)
}

/// Every name of the table, in order.
pub(super) fn names<T: Schema>() -> Vec<&'static str> {
    T::ROWS
        .iter()
        .flat_map(|row| match row {
            Row::Option(name, _) => vec![*name],
            Row::Ignored(row) => vec![row.name],
            Row::Framing => FRAMING_ROWS.iter().map(|(name, _)| *name).collect(),
        })
        .collect()
}
