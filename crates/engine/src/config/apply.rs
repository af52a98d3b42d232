//! Applying one `set()` call, the same way for server and client: all or
//! nothing, a `null` skipped, an unknown key a warning with a suggestion.

use super::client::ClientConfig;
use super::error::{ConfigError, Warning};
use super::schema::{set, Schema};
use super::server::ServerConfig;
use taskq_value::suggest::closest;
use taskq_value::Value;

/// What server and client configurations share, so one function applies a
/// `set()` call to either with the same atomicity and warnings.
pub(super) trait Settable: Schema + Clone {
    /// The names of the table's rows, for the null check and suggestions.
    fn known() -> &'static [&'static str];
    /// Rebuilds the framing from every framing option set so far.
    fn resolve_packet(&mut self) -> Result<(), ConfigError>;
}

impl Settable for ServerConfig {
    fn known() -> &'static [&'static str] {
        ServerConfig::known_options()
    }
    fn resolve_packet(&mut self) -> Result<(), ConfigError> {
        self.packet = self.framing.resolve()?;
        Ok(())
    }
}

impl Settable for ClientConfig {
    fn known() -> &'static [&'static str] {
        ClientConfig::known_options()
    }
    fn resolve_packet(&mut self) -> Result<(), ConfigError> {
        self.packet = self.framing.resolve()?;
        Ok(())
    }
}

/// Works on a copy and replaces `cfg` only when every key was accepted.
pub(super) fn apply_atomically<T: Settable>(
    cfg: &mut T,
    entries: &[(String, Value)],
) -> Result<Vec<Warning>, ConfigError> {
    let mut next = cfg.clone();
    let mut warnings = Vec::new();
    for (key, value) in entries {
        // Swoole's set() skips a null value: `'log_file' => $cfg['log'] ??
        // null` keeps the default, or what an earlier set() gave.
        if *value == Value::Null && T::known().contains(&key.as_str()) {
            continue;
        }
        if !set(&mut next, key, value)? {
            warnings.push(unknown_option(key, T::known()));
        }
    }
    next.resolve_packet()?;
    *cfg = next;
    Ok(warnings)
}

/// The warning for a key no option matches, with a suggestion when a known
/// key is close after ignoring case and surrounding whitespace.
fn unknown_option(key: &str, known: &[&str]) -> Warning {
    match closest(key, known) {
        Some(option) => Warning(format!(
            "unsupported option '{key}', did you mean '{option}'?"
        )),
        None => Warning(format!(
            "unsupported option '{key}' (known options: {})",
            known.join(", ")
        )),
    }
}
