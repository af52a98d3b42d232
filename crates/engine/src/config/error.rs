//! What `set()` reports: a refusal (error) or an ignored key (warning).

/// Why a `set()` call was refused. The PHP layer turns it into an exception;
/// the messages name the option, the offending value and what would be
/// accepted, because Swoole's own messages rarely do and users need all three.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The option exists but the value cannot be used. `value` is shown as
    /// PHP would print it (strings quoted) so users recognise their input.
    #[error("invalid value for option '{option}': {value} (allowed: {allowed})")]
    Invalid {
        option: String,
        value: String,
        allowed: String,
    },
    /// The option is a Swoole feature taskq deliberately does not implement;
    /// failing loudly beats silently running with different semantics.
    #[error("option '{option}' is not supported: {reason}")]
    Unsupported { option: String, reason: String },
}

/// A notice about an ignored key. Kept separate from errors because Swoole
/// ignores unknown keys; the PHP layer emits these as `E_WARNING` so typos
/// such as a trailing space in a key do not go unnoticed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);
