//! Applying one `set()` call, the same way for server and client: all or
//! nothing, a `null` skipped, an unknown key a warning with a suggestion.

use super::client::{ClientConfig, CLIENT_OPTIONS};
use super::error::{ConfigError, Warning};
use super::server::{ServerConfig, SERVER_OPTIONS};
use super::suggest::closest;
use super::value::OptValue;

/// What server and client configurations share, so one function applies a
/// `set()` call to either with the same atomicity and warnings.
pub(super) trait Settable: Clone {
    const KNOWN: &'static [&'static str];
    /// Applies one key; `Ok(false)` for a key this side does not know.
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError>;
    /// Rebuilds the framing from every framing option set so far.
    fn resolve_packet(&mut self) -> Result<(), ConfigError>;
}

impl Settable for ServerConfig {
    const KNOWN: &'static [&'static str] = SERVER_OPTIONS;
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        ServerConfig::set(self, key, value)
    }
    fn resolve_packet(&mut self) -> Result<(), ConfigError> {
        self.packet = self.framing.resolve()?;
        Ok(())
    }
}

impl Settable for ClientConfig {
    const KNOWN: &'static [&'static str] = CLIENT_OPTIONS;
    fn set(&mut self, key: &str, value: &OptValue) -> Result<bool, ConfigError> {
        ClientConfig::set(self, key, value)
    }
    fn resolve_packet(&mut self) -> Result<(), ConfigError> {
        self.packet = self.framing.resolve()?;
        Ok(())
    }
}

/// Works on a copy and replaces `cfg` only when every key was accepted.
pub(super) fn apply_atomically<T: Settable>(
    cfg: &mut T,
    entries: &[(String, OptValue)],
) -> Result<Vec<Warning>, ConfigError> {
    let mut next = cfg.clone();
    let mut warnings = Vec::new();
    for (key, value) in entries {
        // Swoole's set() skips a null value: `'log_file' => $cfg['log'] ??
        // null` keeps the default, or what an earlier set() gave.
        if *value == OptValue::Null && T::KNOWN.contains(&key.as_str()) {
            continue;
        }
        if !next.set(key, value)? {
            warnings.push(unknown_option(key, T::KNOWN));
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
