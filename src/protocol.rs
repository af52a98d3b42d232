//! The client ⇄ server protocol spoken by `TaskClient`. A connection that
//! opens with [`MAGIC`] speaks frames (see `frame.rs`) whose kinds are listed
//! here; any other connection is a foreign client and gets Swoole's raw or
//! configured framing (`packet.rs`). The magic lets both live on one port
//! with no configuration and no extra round trip.

/// Sent once by a taskq client right after connecting. Starts with a
/// non-ASCII byte and contains CR LF like PNG's magic, so text protocols and
/// length-prefixed binary protocols (which start with a NUL) never match it.
pub const MAGIC: [u8; 8] = *b"\x89TASKQ\r\n";

/// A `send()`/`recv()` message: exactly one `onReceive` on the server, exactly
/// one `recv()` result on the client.
pub const KIND_MESSAGE: u8 = 1;

/// What the first bytes of a connection say about its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Taskq,
    Foreign,
    NeedMore,
}

/// Classifies a connection from the bytes buffered so far. A foreign client
/// that happens to send a strict prefix of the magic and then waits is the
/// only case that needs more bytes.
pub fn detect(buffered: &[u8]) -> Detected {
    let n = buffered.len().min(MAGIC.len());
    if buffered[..n] != MAGIC[..n] {
        Detected::Foreign
    } else if n == MAGIC.len() {
        Detected::Taskq
    } else {
        Detected::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_taskq_foreign_and_partial() {
        assert_eq!(detect(&MAGIC), Detected::Taskq);
        assert_eq!(detect(b"\x89TASKQ\r\nrest"), Detected::Taskq);
        assert_eq!(detect(b"\x89TA"), Detected::NeedMore);
        assert_eq!(detect(b""), Detected::NeedMore);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Foreign);
        assert_eq!(detect(b"\x00\x00\x00\x05hello"), Detected::Foreign);
        assert_eq!(detect(b"\x89TASKX\r\n"), Detected::Foreign);
    }
}
