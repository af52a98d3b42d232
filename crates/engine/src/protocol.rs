//! The client ⇄ server protocol spoken by `TaskClient`. A connection that
//! opens with [`MAGIC`] speaks frames (see `frame.rs`) whose kinds are listed
//! here; any other connection is a foreign client and gets Swoole's raw or
//! configured framing (`packet.rs`). The magic lets both live on one port
//! with no configuration and no extra round trip.

/// Sent once by a taskq client right after connecting. Starts with a
/// non-ASCII byte and contains CR LF like PNG's magic, so text protocols and
/// length-prefixed binary protocols (which start with a NUL) never match it.
pub const MAGIC: [u8; 8] = *b"\x89TASKQ\r\n";

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::WireError;
use crate::frame::FrameCodec;
use crate::payload::{Encoding, Payload};

/// A `send()`/`recv()` message: exactly one `onReceive` on the server, exactly
/// one `recv()` result on the client.
pub const KIND_MESSAGE: u8 = 1;
/// `TaskClient::task()`: straight into the task queue, answered by
/// [`KIND_ACK`] (with the task id) once the server holds the task.
pub const KIND_TASK: u8 = 2;
/// Positive answer: a `u64` (task id, or 0).
pub const KIND_ACK: u8 = 3;
/// Negative answer: a `u32` error code and a UTF-8 message.
pub const KIND_ERROR: u8 = 4;
/// A message like [`KIND_MESSAGE`] that the server acknowledges once taken.
pub const KIND_MESSAGE_ACK: u8 = 5;
/// The shared secret, first frame of a connection when the server has an
/// `auth_token`; answered by an ACK or an ERROR and a close.
pub const KIND_AUTH: u8 = 6;
/// `TaskClient::batch()`: the progress of a batch, by name; answered by
/// [`KIND_REPLY`] or an ERROR.
pub const KIND_BATCH: u8 = 7;
/// An answer carrying a JSON document.
pub const KIND_REPLY: u8 = 8;

/// Set in a task request's encoding byte when a batch name follows the
/// fixed fields (one length byte, then the name), so requests without one
/// keep their old form.
const IN_BATCH: u8 = 0x80;

/// Error codes a taskq server sends back (and `$client->errCode` shows).
pub mod code {
    /// `task_queue_max` reached.
    pub const QUEUE_FULL: u32 = 9001;
    /// Missing or wrong `auth_token`.
    pub const AUTH: u32 = 9003;
    /// The durable store could not record the task.
    pub const STORE: u32 = 9004;
    /// A malformed request.
    pub const BAD_REQUEST: u32 = 9005;
    /// The server is stopping and takes no new work.
    pub const STOPPING: u32 = 9006;
    /// The server has no task workers (`task_worker_num` 0): a task would
    /// never run, so it is not queued.
    pub const NO_TASK_WORKERS: u32 = 9007;
    /// `max_conn` authenticated connections are open already (servers with
    /// an `auth_token` count only those; others just close the newcomer).
    pub const MAX_CONN: u32 = 9008;
    /// A request longer than the server's `package_max_length`; the
    /// connection is closed after this answer.
    pub const TOO_LARGE: u32 = 9009;
    /// The task backend (Redis) did not take the task: unreachable, too
    /// slow, or it refused the write. Nothing was queued; submit again.
    pub const BACKEND: u32 = 9010;
    /// `TaskClient::batch()` names a batch the server does not know.
    pub const UNKNOWN_BATCH: u32 = 9011;
}

/// The longest `delay` a task may ask for: one year. Longer is refused,
/// from any client, rather than parked in the queue for ever.
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// Options of one `TaskClient::task()` submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    pub priority: i32,
    pub delay_ms: u64,
    /// 0 = the server's default.
    pub max_attempts: u32,
    /// The batch whose progress counts this task (`TaskClient::batch()`).
    pub batch: Option<String>,
    pub payload: Payload,
}

impl TaskRequest {
    /// Appends the request as one frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        let batch = self.batch.as_deref().map(str::as_bytes);
        dst.reserve(23 + batch.map_or(0, <[u8]>::len) + self.payload.data.len());
        let s = FrameCodec::begin(dst, KIND_TASK);
        let flag = if batch.is_some() { IN_BATCH } else { 0 };
        dst.put_u8(self.payload.encoding as u8 | flag);
        dst.put_i32(self.priority);
        dst.put_u64(self.delay_ms);
        dst.put_u32(self.max_attempts);
        if let Some(name) = batch {
            // Names are checked to be at most 128 bytes before they get here.
            dst.put_u8(name.len().min(255) as u8);
            dst.put_slice(&name[..name.len().min(255)]);
        }
        dst.put_slice(&self.payload.data);
        FrameCodec::end(dst, s);
    }

    /// Parses a [`KIND_TASK`] frame body.
    pub fn decode(mut body: Bytes) -> Result<Self, WireError> {
        if body.len() < 17 {
            return Err(WireError::Truncated {
                what: "task request",
                needed: 17,
                had: body.len(),
            });
        }
        let first = body.get_u8();
        let encoding = match first & !IN_BATCH {
            0 => Encoding::Raw,
            1 => Encoding::Serialized,
            other => return Err(WireError::UnknownKind(other)),
        };
        let priority = body.get_i32();
        let delay_ms = body.get_u64();
        if delay_ms > MAX_DELAY_MS {
            return Err(WireError::DelayTooLong(delay_ms));
        }
        let max_attempts = body.get_u32();
        let batch = if first & IN_BATCH != 0 {
            let len = if body.is_empty() {
                0
            } else {
                body.get_u8() as usize
            };
            if len == 0 || body.len() < len {
                return Err(WireError::Truncated {
                    what: "task request's batch name",
                    needed: len.max(1),
                    had: body.len(),
                });
            }
            let name = body.split_to(len);
            Some(String::from_utf8(name.to_vec()).map_err(|_| WireError::BadUtf8("batch name"))?)
        } else {
            None
        };
        Ok(TaskRequest {
            priority,
            delay_ms,
            max_attempts,
            batch,
            payload: Payload {
                encoding,
                data: body,
            },
        })
    }
}

/// Appends an ACK frame.
pub fn put_ack(dst: &mut BytesMut, value: u64) {
    FrameCodec::put(dst, KIND_ACK, &value.to_be_bytes());
}

/// Appends an ERROR frame.
pub fn put_error(dst: &mut BytesMut, code: u32, message: &str) {
    let s = FrameCodec::begin(dst, KIND_ERROR);
    dst.put_u32(code);
    dst.put_slice(message.as_bytes());
    FrameCodec::end(dst, s);
}

/// Appends a REPLY frame carrying `json`.
pub fn put_reply(dst: &mut BytesMut, json: &[u8]) {
    FrameCodec::put(dst, KIND_REPLY, json);
}

/// A server's answer to a request that expects one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack(u64),
    Error {
        code: u32,
        message: String,
    },
    /// A JSON document, not yet parsed.
    Reply(Bytes),
}

impl Answer {
    /// Parses an ACK or ERROR frame; any other kind is a protocol error.
    pub fn decode(kind: u8, mut body: Bytes) -> Result<Answer, WireError> {
        match kind {
            KIND_ACK if body.len() >= 8 => Ok(Answer::Ack(body.get_u64())),
            KIND_REPLY => Ok(Answer::Reply(body)),
            KIND_ERROR if body.len() >= 4 => {
                let code = body.get_u32();
                Ok(Answer::Error {
                    code,
                    message: String::from_utf8_lossy(&body).into_owned(),
                })
            }
            KIND_ACK | KIND_ERROR => Err(WireError::Truncated {
                what: "answer",
                needed: 4,
                had: body.len(),
            }),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

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
    use tokio_util::codec::Decoder;

    fn one_frame(buf: &mut BytesMut) -> crate::frame::Frame {
        FrameCodec::new(1 << 20).decode(buf).unwrap().unwrap()
    }

    #[test]
    fn task_request_round_trip() {
        let req = TaskRequest {
            priority: -3,
            delay_ms: 1500,
            max_attempts: 7,
            batch: None,
            payload: Payload {
                encoding: Encoding::Serialized,
                data: Bytes::from_static(b"a:1:{i:0;i:1;}"),
            },
        };
        let mut buf = BytesMut::new();
        req.encode(&mut buf);
        let f = one_frame(&mut buf);
        assert_eq!(f.kind, KIND_TASK);
        assert_eq!(f.body[0], 1, "no batch: the old form");
        assert_eq!(TaskRequest::decode(f.body).unwrap(), req);
        let tagged = TaskRequest {
            batch: Some("mail-12 ✉".into()),
            ..req
        };
        tagged.encode(&mut buf);
        assert_eq!(
            TaskRequest::decode(one_frame(&mut buf).body).unwrap(),
            tagged
        );
        assert!(TaskRequest::decode(Bytes::from_static(b"\0\0")).is_err());
        let mut bad = vec![9u8];
        bad.extend_from_slice(&[0; 16]);
        assert!(TaskRequest::decode(Bytes::from(bad)).is_err());
        for body in [&b"\x80"[..], b"\x80\x05", b"\x80\x00x", b"\x80\x02\xff\xfe"] {
            let mut b = vec![body[0]];
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(&body[1..]);
            assert!(TaskRequest::decode(Bytes::from(b)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn answers_round_trip() {
        let mut buf = BytesMut::new();
        put_ack(&mut buf, 42);
        put_error(&mut buf, code::QUEUE_FULL, "task queue is full");
        let a = one_frame(&mut buf);
        assert_eq!(Answer::decode(a.kind, a.body).unwrap(), Answer::Ack(42));
        let e = one_frame(&mut buf);
        assert_eq!(
            Answer::decode(e.kind, e.body).unwrap(),
            Answer::Error {
                code: code::QUEUE_FULL,
                message: "task queue is full".into()
            }
        );
        assert!(Answer::decode(KIND_MESSAGE, Bytes::new()).is_err());
        assert!(Answer::decode(KIND_ACK, Bytes::from_static(b"\0")).is_err());
    }

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
