//! The framing options (`open_length_check`, `package_eof`, ...): kept as
//! the user set them and resolved together into the codec's `PacketOptions`.

use super::coerce::{as_int, int_allowed, invalid, to_bool, to_int_in, to_size, to_usize};
use super::error::ConfigError;
use super::schema::{store, Setter};
use crate::packet::{LengthType, PacketMode, PacketOptions};
use taskq_value::Value;

/// Swoole's `SW_IPC_BUFFER_SIZE`: offsets beyond it are rejected by Swoole
/// with "value is too large", so taskq rejects them too.
const MAX_HEADER_OFFSET: i64 = 8152;
/// Swoole raises smaller `package_max_length` values to this.
const MIN_PACKAGE_MAX_LENGTH: u64 = 64 * 1024;
const MAX_PACKAGE_MAX_LENGTH: u64 = 1024 * 1024 * 1024;
/// taskq's default is above Swoole's 2 MiB so that 8 MiB task payloads work
/// without any configuration.
const DEFAULT_PACKAGE_MAX_LENGTH: usize = 16 * 1024 * 1024;
const DEFAULT_PACKAGE_EOF: &[u8] = b"\r\n\r\n";
const MAX_PACKAGE_EOF_LEN: usize = 8;

/// The framing options as the user set them. They are kept raw because they
/// may arrive in separate `set()` calls and only their combination decides
/// the `PacketMode`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Framing {
    pub(super) open_length_check: bool,
    pub(super) length_type: LengthType,
    pub(super) length_offset: usize,
    pub(super) body_offset: usize,
    pub(super) open_eof_check: bool,
    pub(super) open_eof_split: bool,
    pub(super) eof: Vec<u8>,
    pub(super) max_length: usize,
}

/// The framing options, named once here and placed in each side's table by
/// `Row::Framing`.
pub(super) const FRAMING_ROWS: &[(&str, Setter<Framing>)] = &[
    (
        "open_length_check",
        store!(open_length_check, |k, v| to_bool(k, v)?),
    ),
    (
        "package_length_type",
        store!(length_type, |k, v| to_length_type(k, v)?),
    ),
    (
        "package_length_offset",
        store!(length_offset, |k, v| to_header_offset(k, v)?),
    ),
    (
        "package_body_offset",
        store!(body_offset, |k, v| to_header_offset(k, v)?),
    ),
    (
        "package_body_start",
        store!(body_offset, |k, v| to_header_offset(k, v)?),
    ),
    (
        "open_eof_check",
        store!(open_eof_check, |k, v| to_bool(k, v)?),
    ),
    (
        "open_eof_split",
        store!(open_eof_split, |k, v| to_bool(k, v)?),
    ),
    ("package_eof", store!(eof, |k, v| to_eof(k, v)?)),
    (
        "package_max_length",
        store!(max_length, |k, v| to_package_max_length(k, v)?),
    ),
];

impl Framing {
    pub(super) fn new(body_offset: usize) -> Self {
        Framing {
            open_length_check: false,
            length_type: LengthType::U32Be,
            length_offset: 0,
            body_offset,
            open_eof_check: false,
            open_eof_split: false,
            eof: DEFAULT_PACKAGE_EOF.to_vec(),
            max_length: DEFAULT_PACKAGE_MAX_LENGTH,
        }
    }

    /// The codec options all framing options set so far resolve to;
    /// refused when two framing protocols are enabled at once.
    pub(super) fn resolve(&self) -> Result<PacketOptions, ConfigError> {
        let eof = self.open_eof_check || self.open_eof_split;
        let mode = if self.open_length_check && eof {
            return Err(ConfigError::Invalid {
                option: "open_length_check".to_string(),
                value: "true".to_string(),
                allowed: "false while open_eof_check or open_eof_split is enabled: \
                          only one framing protocol can be used"
                    .to_string(),
            });
        } else if self.open_length_check {
            PacketMode::Length {
                length_type: self.length_type,
                length_offset: self.length_offset,
                body_offset: self.body_offset,
            }
        } else if self.open_eof_split {
            PacketMode::EofSplit {
                eof: self.eof.clone(),
            }
        } else if self.open_eof_check {
            PacketMode::EofCheck {
                eof: self.eof.clone(),
            }
        } else {
            PacketMode::Raw
        };
        Ok(PacketOptions {
            mode,
            max_length: self.max_length,
        })
    }
}

fn to_header_offset(option: &str, value: &Value) -> Result<usize, ConfigError> {
    let allowed = int_allowed(0, MAX_HEADER_OFFSET);
    match as_int(value) {
        Some(n) if n > MAX_HEADER_OFFSET => Err(invalid(
            option,
            value,
            format!("{allowed}; value is too large"),
        )),
        _ => to_int_in(option, value, 0, MAX_HEADER_OFFSET, &allowed),
    }
}

fn to_length_type(option: &str, value: &Value) -> Result<LengthType, ConfigError> {
    let found = value.lossy_str().and_then(|s| {
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if LengthType::pack_chars().contains(c) => {
                LengthType::from_pack_char(c)
            }
            _ => None,
        }
    });
    found.ok_or_else(|| {
        let chars: Vec<String> = LengthType::pack_chars()
            .chars()
            .map(|c| c.to_string())
            .collect();
        invalid(
            option,
            value,
            format!("one pack() format character: {}", chars.join(", ")),
        )
    })
}

fn to_eof(option: &str, value: &Value) -> Result<Vec<u8>, ConfigError> {
    match value.lossy_str() {
        Some(s) if (1..=MAX_PACKAGE_EOF_LEN).contains(&s.len()) => Ok(s.as_bytes().to_vec()),
        _ => Err(invalid(
            option,
            value,
            format!("a string of 1 to {MAX_PACKAGE_EOF_LEN} bytes"),
        )),
    }
}

/// Swoole's rule: a byte count up to 1 GiB, raised to 64 KiB when smaller.
fn to_package_max_length(option: &str, value: &Value) -> Result<usize, ConfigError> {
    let size = to_size(option, value, 0, MAX_PACKAGE_MAX_LENGTH)?;
    to_usize(option, value, size.max(MIN_PACKAGE_MAX_LENGTH))
}
