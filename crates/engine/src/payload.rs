//! A value crossing a process boundary, still encoded, and how it was
//! encoded. Its own module because the client protocol, the task queue and
//! the store carry payloads as much as the worker IPC does, and none of
//! them should depend on the IPC module for it.

use bytes::Bytes;

use crate::error::WireError;

/// How a payload was encoded by the PHP side: strings travel as they are,
/// every other value as PHP `serialize()` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    Raw = 0,
    Serialized = 1,
    /// `serialize()` output that came from a network client: the master
    /// checked it (`crate::php_serial`), and PHP unserializes it only with
    /// the server's `task_allowed_classes` and `task_max_depth`.
    Untrusted = 2,
}

impl Encoding {
    /// The encoding whose discriminant is `v`, as the IPC frames carry it.
    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Encoding::Raw),
            1 => Ok(Encoding::Serialized),
            2 => Ok(Encoding::Untrusted),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// A value crossing a process boundary, still encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    pub encoding: Encoding,
    pub data: Bytes,
}
