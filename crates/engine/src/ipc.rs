//! Messages between the master and its worker processes, carried in
//! `frame.rs` frames over one unix socket per worker incarnation. A fresh
//! connection per incarnation means a crashed worker can never leave a
//! half-written message in a stream another process will read.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::WireError;
use crate::frame::{Frame, FrameCodec};
use crate::mail_tally::MailCounts;
use crate::payload::{Encoding, Payload};
use tokio_util::codec::Decoder;

/// Encoded master → worker messages without their tasks: what a dead
/// incarnation's outbox still held is carried over to its successor, but
/// the tasks in it are not. The dispatcher requeues every task the dead
/// incarnation held, so a task sent on as well ran twice. `bytes` holds
/// whole frames, as every outbox does.
pub fn without_tasks(mut bytes: BytesMut) -> BytesMut {
    // No frame is longer than the bytes that hold it: a bound that keeps a
    // corrupt length from reserving gigabytes.
    let mut codec = FrameCodec::new(bytes.len());
    let mut kept = BytesMut::new();
    while let Ok(Some(frame)) = codec.decode(&mut bytes) {
        if frame.kind != TW_TASK {
            FrameCodec::put(&mut kept, frame.kind, &frame.body);
        }
    }
    kept
}

/// Whether a task's result can go anywhere: only a worker that dispatched
/// it (`src_worker` ≥ 0) has an onFinish for it. A task no worker
/// dispatched (a `TaskClient` job, one-way from onStart) may settle on the
/// completion board, and its task worker neither serializes nor sends its
/// return value: with a task store or Redis, where every task reports over
/// the socket, that value was half of the frames, and the master dropped it.
pub fn result_has_a_destination(src_worker: i32) -> bool {
    src_worker >= 0
}

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// One client message for `onReceive`.
    Receive {
        fd: u64,
        reactor_id: u32,
        data: Bytes,
    },
    Connect {
        fd: u64,
        reactor_id: u32,
    },
    Close {
        fd: u64,
        reactor_id: i32,
    },
    /// A task for `onTask`. `id` is the master's key; `task_id` and
    /// `src_worker` are what the dispatching worker saw. With a `place`,
    /// a successful run is posted there on the completion board
    /// (`crate::board`) instead of reported.
    Task {
        id: u64,
        task_id: i64,
        src_worker: i32,
        place: Option<u8>,
        payload: Payload,
    },
    /// A result for `onFinish` in the worker that dispatched the task.
    Finish {
        task_id: i64,
        payload: Payload,
    },
    /// The last message this incarnation will get; see `FromWorker::Leaving`.
    Bye,
    /// `sendMessage()` from worker `src_worker`, for onPipeMessage.
    Pipe {
        src_worker: i32,
        payload: Payload,
    },
    /// The answer to `FromWorker::Query` number `req` (JSON).
    Reply {
        req: u32,
        body: Bytes,
    },
    /// A task this worker dispatched was given up (it failed every attempt,
    /// or could not be queued): for onTaskFailed.
    TaskFailed {
        task_id: i64,
        error: String,
        payload: Payload,
    },
}

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// First message of every incarnation; a task worker says how many
    /// tasks it will run before it recycles itself (`task_max_request` with
    /// its grace; 0 = no limit), so the master hands it no more than that.
    Hello {
        worker_id: u32,
        pid: u32,
        max_tasks: u64,
    },
    /// `$server->task()`; `dst` < 0 lets the master choose a task worker.
    /// `wait`: a taskwait blocks on the result, so it must reach this very
    /// incarnation even if it is leaving.
    Submit {
        task_id: i64,
        dst: i32,
        wait: bool,
        payload: Payload,
    },
    /// `finish()` or a non-null `onTask` return for master task `id`.
    Result { id: u64, payload: Payload },
    /// `onTask` for master task `id` returned: the task is complete. It ran
    /// for `run_us` microseconds, which sizes how many tasks the master
    /// hands this worker at once.
    Done { id: u64, run_us: u32 },
    /// `onTask` for master task `id` threw: this run failed.
    Failed { id: u64, error: String },
    /// `$server->send($fd, $data)`.
    Send { fd: u64, data: Bytes },
    /// `$server->close($fd)`.
    CloseFd { fd: u64 },
    /// The worker will exit (reload, max_request, stop) once it has handled
    /// everything sent before the master's `Bye`; nothing is lost in between.
    Leaving,
    /// `sendMessage()` to worker `dst`.
    Pipe { dst: u32, payload: Payload },
    /// A question for the master (stats, connection info, worker pids), as
    /// JSON; answered by `ToWorker::Reply` with the same `req`.
    Query { req: u32, body: Bytes },
    /// The worker has handled `handled` events in total and is idle now;
    /// lets the master pick idle workers (dispatch_mode 3) and report busy ones.
    Idle { handled: u64 },
    /// Mail this worker's `TaskQ\Mailer` sent or failed to send since its
    /// last report, for the metrics.
    Mailed(MailCounts),
}

const TW_RECEIVE: u8 = 1;
const TW_CONNECT: u8 = 2;
const TW_CLOSE: u8 = 3;
const TW_TASK: u8 = 4;
const TW_FINISH: u8 = 5;
const TW_BYE: u8 = 6;
const TW_PIPE: u8 = 7;
const TW_REPLY: u8 = 8;
const TW_TASK_FAILED: u8 = 9;

/// A task's board place byte when it has none.
const NO_PLACE: u8 = u8::MAX;

const FW_HELLO: u8 = 1;
const FW_SUBMIT: u8 = 2;
const FW_RESULT: u8 = 3;
const FW_DONE: u8 = 4;
const FW_SEND: u8 = 5;
const FW_CLOSE_FD: u8 = 6;
const FW_LEAVING: u8 = 7;
const FW_PIPE: u8 = 8;
const FW_QUERY: u8 = 9;
const FW_IDLE: u8 = 10;
const FW_FAILED: u8 = 11;
const FW_MAILED: u8 = 12;

/// Largest IPC frame: payloads are bounded by the user's memory, not by a
/// tmpfile threshold as in Swoole, so this only guards against corruption.
pub const MAX_IPC_FRAME: usize = 1 << 30;

fn need(body: &Bytes, n: usize, what: &'static str) -> Result<(), WireError> {
    if body.remaining() < n {
        Err(WireError::Truncated {
            what,
            needed: n,
            had: body.remaining(),
        })
    } else {
        Ok(())
    }
}

fn put_str(dst: &mut BytesMut, s: &str) {
    dst.put_u32(s.len() as u32);
    dst.put_slice(s.as_bytes());
}

fn get_str(body: &mut Bytes) -> Result<String, WireError> {
    need(body, 4, "string length")?;
    let len = body.get_u32() as usize;
    need(body, len, "string")?;
    let raw = body.split_to(len);
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn put_payload(dst: &mut BytesMut, p: &Payload) {
    dst.put_u8(p.encoding as u8);
    dst.put_slice(&p.data);
}

fn get_payload(body: &mut Bytes) -> Result<Payload, WireError> {
    need(body, 1, "payload")?;
    let encoding = Encoding::from_u8(body.get_u8())?;
    Ok(Payload {
        encoding,
        data: std::mem::take(body),
    })
}

impl ToWorker {
    /// Appends this message as one frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            ToWorker::Receive {
                fd,
                reactor_id,
                data,
            } => {
                dst.reserve(17 + data.len());
                let s = FrameCodec::begin(dst, TW_RECEIVE);
                dst.put_u64(*fd);
                dst.put_u32(*reactor_id);
                dst.put_slice(data);
                FrameCodec::end(dst, s);
            }
            ToWorker::Connect { fd, reactor_id } => {
                let s = FrameCodec::begin(dst, TW_CONNECT);
                dst.put_u64(*fd);
                dst.put_u32(*reactor_id);
                FrameCodec::end(dst, s);
            }
            ToWorker::Close { fd, reactor_id } => {
                let s = FrameCodec::begin(dst, TW_CLOSE);
                dst.put_u64(*fd);
                dst.put_i32(*reactor_id);
                FrameCodec::end(dst, s);
            }
            ToWorker::Task {
                id,
                task_id,
                src_worker,
                place,
                payload,
            } => {
                dst.reserve(27 + payload.data.len());
                let s = FrameCodec::begin(dst, TW_TASK);
                dst.put_u64(*id);
                dst.put_i64(*task_id);
                dst.put_i32(*src_worker);
                dst.put_u8(place.unwrap_or(NO_PLACE));
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
            ToWorker::Finish { task_id, payload } => {
                dst.reserve(14 + payload.data.len());
                let s = FrameCodec::begin(dst, TW_FINISH);
                dst.put_i64(*task_id);
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
            ToWorker::Bye => FrameCodec::put(dst, TW_BYE, &[]),
            ToWorker::Pipe {
                src_worker,
                payload,
            } => {
                dst.reserve(10 + payload.data.len());
                let s = FrameCodec::begin(dst, TW_PIPE);
                dst.put_i32(*src_worker);
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
            ToWorker::Reply { req, body } => {
                let s = FrameCodec::begin(dst, TW_REPLY);
                dst.put_u32(*req);
                dst.put_slice(body);
                FrameCodec::end(dst, s);
            }
            ToWorker::TaskFailed {
                task_id,
                error,
                payload,
            } => {
                let s = FrameCodec::begin(dst, TW_TASK_FAILED);
                dst.put_i64(*task_id);
                put_str(dst, error);
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
        }
    }

    /// Parses one frame; unknown kinds are errors, never panics.
    pub fn decode(frame: Frame) -> Result<Self, WireError> {
        let mut b = frame.body;
        Ok(match frame.kind {
            TW_RECEIVE => {
                need(&b, 12, "receive")?;
                let fd = b.get_u64();
                let reactor_id = b.get_u32();
                ToWorker::Receive {
                    fd,
                    reactor_id,
                    data: b,
                }
            }
            TW_CONNECT => {
                need(&b, 12, "connect")?;
                ToWorker::Connect {
                    fd: b.get_u64(),
                    reactor_id: b.get_u32(),
                }
            }
            TW_CLOSE => {
                need(&b, 12, "close")?;
                ToWorker::Close {
                    fd: b.get_u64(),
                    reactor_id: b.get_i32(),
                }
            }
            TW_TASK => {
                need(&b, 21, "task")?;
                let id = b.get_u64();
                let task_id = b.get_i64();
                let src_worker = b.get_i32();
                let place = Some(b.get_u8()).filter(|&p| p != NO_PLACE);
                ToWorker::Task {
                    id,
                    task_id,
                    src_worker,
                    place,
                    payload: get_payload(&mut b)?,
                }
            }
            TW_FINISH => {
                need(&b, 8, "finish")?;
                let task_id = b.get_i64();
                ToWorker::Finish {
                    task_id,
                    payload: get_payload(&mut b)?,
                }
            }
            TW_BYE => ToWorker::Bye,
            TW_PIPE => {
                need(&b, 4, "pipe")?;
                let src_worker = b.get_i32();
                ToWorker::Pipe {
                    src_worker,
                    payload: get_payload(&mut b)?,
                }
            }
            TW_REPLY => {
                need(&b, 4, "reply")?;
                let req = b.get_u32();
                ToWorker::Reply { req, body: b }
            }
            TW_TASK_FAILED => {
                need(&b, 8, "task failed")?;
                let task_id = b.get_i64();
                let error = get_str(&mut b)?;
                ToWorker::TaskFailed {
                    task_id,
                    error,
                    payload: get_payload(&mut b)?,
                }
            }
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

impl FromWorker {
    /// Appends this message as one frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            FromWorker::Hello {
                worker_id,
                pid,
                max_tasks,
            } => {
                let s = FrameCodec::begin(dst, FW_HELLO);
                dst.put_u32(*worker_id);
                dst.put_u32(*pid);
                dst.put_u64(*max_tasks);
                FrameCodec::end(dst, s);
            }
            FromWorker::Submit {
                task_id,
                dst: target,
                wait,
                payload,
            } => {
                dst.reserve(19 + payload.data.len());
                let s = FrameCodec::begin(dst, FW_SUBMIT);
                dst.put_i64(*task_id);
                dst.put_i32(*target);
                dst.put_u8(u8::from(*wait));
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
            FromWorker::Result { id, payload } => {
                dst.reserve(14 + payload.data.len());
                let s = FrameCodec::begin(dst, FW_RESULT);
                dst.put_u64(*id);
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
            FromWorker::Done { id, run_us } => {
                let s = FrameCodec::begin(dst, FW_DONE);
                dst.put_u64(*id);
                dst.put_u32(*run_us);
                FrameCodec::end(dst, s);
            }
            FromWorker::Failed { id, error } => {
                let s = FrameCodec::begin(dst, FW_FAILED);
                dst.put_u64(*id);
                put_str(dst, error);
                FrameCodec::end(dst, s);
            }
            FromWorker::Send { fd, data } => {
                dst.reserve(13 + data.len());
                let s = FrameCodec::begin(dst, FW_SEND);
                dst.put_u64(*fd);
                dst.put_slice(data);
                FrameCodec::end(dst, s);
            }
            FromWorker::CloseFd { fd } => FrameCodec::put(dst, FW_CLOSE_FD, &fd.to_be_bytes()),
            FromWorker::Leaving => FrameCodec::put(dst, FW_LEAVING, &[]),
            FromWorker::Pipe {
                dst: target,
                payload,
            } => {
                dst.reserve(10 + payload.data.len());
                let s = FrameCodec::begin(dst, FW_PIPE);
                dst.put_u32(*target);
                put_payload(dst, payload);
                FrameCodec::end(dst, s);
            }
            FromWorker::Query { req, body } => {
                let s = FrameCodec::begin(dst, FW_QUERY);
                dst.put_u32(*req);
                dst.put_slice(body);
                FrameCodec::end(dst, s);
            }
            FromWorker::Idle { handled } => FrameCodec::put(dst, FW_IDLE, &handled.to_be_bytes()),
            FromWorker::Mailed(counts) => {
                let s = FrameCodec::begin(dst, FW_MAILED);
                for n in counts.0 {
                    dst.put_u64(n);
                }
                FrameCodec::end(dst, s);
            }
        }
    }

    /// Parses one frame; unknown kinds are errors, never panics.
    pub fn decode(frame: Frame) -> Result<Self, WireError> {
        let mut b = frame.body;
        Ok(match frame.kind {
            FW_HELLO => {
                need(&b, 16, "hello")?;
                FromWorker::Hello {
                    worker_id: b.get_u32(),
                    pid: b.get_u32(),
                    max_tasks: b.get_u64(),
                }
            }
            FW_SUBMIT => {
                need(&b, 13, "submit")?;
                let task_id = b.get_i64();
                let dst = b.get_i32();
                let wait = b.get_u8() != 0;
                FromWorker::Submit {
                    task_id,
                    dst,
                    wait,
                    payload: get_payload(&mut b)?,
                }
            }
            FW_RESULT => {
                need(&b, 8, "result")?;
                let id = b.get_u64();
                FromWorker::Result {
                    id,
                    payload: get_payload(&mut b)?,
                }
            }
            FW_DONE => {
                need(&b, 12, "done")?;
                FromWorker::Done {
                    id: b.get_u64(),
                    run_us: b.get_u32(),
                }
            }
            FW_FAILED => {
                need(&b, 8, "failed")?;
                let id = b.get_u64();
                FromWorker::Failed {
                    id,
                    error: get_str(&mut b)?,
                }
            }
            FW_SEND => {
                need(&b, 8, "send")?;
                let fd = b.get_u64();
                FromWorker::Send { fd, data: b }
            }
            FW_CLOSE_FD => {
                need(&b, 8, "close")?;
                FromWorker::CloseFd { fd: b.get_u64() }
            }
            FW_LEAVING => FromWorker::Leaving,
            FW_PIPE => {
                need(&b, 4, "pipe")?;
                let target = b.get_u32();
                FromWorker::Pipe {
                    dst: target,
                    payload: get_payload(&mut b)?,
                }
            }
            FW_QUERY => {
                need(&b, 4, "query")?;
                let req = b.get_u32();
                FromWorker::Query { req, body: b }
            }
            FW_IDLE => {
                need(&b, 8, "idle")?;
                FromWorker::Idle {
                    handled: b.get_u64(),
                }
            }
            FW_MAILED => {
                let mut counts = MailCounts::default();
                need(&b, 8 * counts.0.len(), "mailed")?;
                for n in &mut counts.0 {
                    *n = b.get_u64();
                }
                FromWorker::Mailed(counts)
            }
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    fn payload(enc: Encoding, s: &[u8]) -> Payload {
        Payload {
            encoding: enc,
            data: Bytes::copy_from_slice(s),
        }
    }

    fn frames(buf: &mut BytesMut) -> Vec<Frame> {
        let mut codec = FrameCodec::new(MAX_IPC_FRAME);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn to_worker_round_trip() {
        let msgs = vec![
            ToWorker::Receive {
                fd: 7,
                reactor_id: 1,
                data: Bytes::from_static(b"\0binary\xff"),
            },
            ToWorker::Connect {
                fd: 1,
                reactor_id: 0,
            },
            ToWorker::Close {
                fd: 9,
                reactor_id: -1,
            },
            ToWorker::Task {
                id: u64::MAX,
                task_id: 42,
                src_worker: -1,
                place: Some(63),
                payload: payload(Encoding::Untrusted, b"a:0:{}"),
            },
            ToWorker::Task {
                id: 7,
                task_id: 1,
                src_worker: 0,
                place: None,
                payload: payload(Encoding::Serialized, b"i:1;"),
            },
            ToWorker::Finish {
                task_id: 3,
                payload: payload(Encoding::Raw, b""),
            },
            ToWorker::Bye,
            ToWorker::Pipe {
                src_worker: 2,
                payload: payload(Encoding::Raw, b"hi"),
            },
            ToWorker::Reply {
                req: 9,
                body: Bytes::from_static(b"{}"),
            },
            ToWorker::TaskFailed {
                task_id: 4,
                error: "boom ✗".into(),
                payload: payload(Encoding::Raw, b"x"),
            },
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        let back: Vec<_> = frames(&mut buf)
            .into_iter()
            .map(|f| ToWorker::decode(f).unwrap())
            .collect();
        assert_eq!(back, msgs);
    }

    #[test]
    fn from_worker_round_trip() {
        let msgs = vec![
            FromWorker::Hello {
                worker_id: 3,
                pid: 1234,
                max_tasks: 17,
            },
            FromWorker::Submit {
                task_id: 0,
                dst: -1,
                wait: true,
                payload: payload(Encoding::Raw, b"{\"to\":\"x\"}"),
            },
            FromWorker::Result {
                id: 5,
                payload: payload(Encoding::Serialized, b"b:1;"),
            },
            FromWorker::Done { id: 5, run_us: 42 },
            FromWorker::Send {
                fd: 2,
                data: Bytes::from_static(b"reply"),
            },
            FromWorker::CloseFd { fd: 2 },
            FromWorker::Leaving,
            FromWorker::Pipe {
                dst: 4,
                payload: payload(Encoding::Serialized, b"i:1;"),
            },
            FromWorker::Query {
                req: 1,
                body: Bytes::from_static(b"{\"Stats\":null}"),
            },
            FromWorker::Idle { handled: 77 },
            FromWorker::Failed {
                id: 3,
                error: "RuntimeException: nope".into(),
            },
            FromWorker::Mailed(MailCounts([9, 1, 2, 3, 0, 0, 4])),
        ];
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        let back: Vec<_> = frames(&mut buf)
            .into_iter()
            .map(|f| FromWorker::decode(f).unwrap())
            .collect();
        assert_eq!(back, msgs);
    }

    #[test]
    fn carried_over_bytes_keep_everything_but_tasks() {
        let pipe = ToWorker::Pipe {
            src_worker: 1,
            payload: payload(Encoding::Raw, b"hi"),
        };
        let task = |id| ToWorker::Task {
            id,
            task_id: 1,
            src_worker: -1,
            place: Some(0),
            payload: payload(Encoding::Raw, b"job"),
        };
        let mut buf = BytesMut::new();
        for m in [task(1), pipe.clone(), task(2), ToWorker::Bye] {
            m.encode(&mut buf);
        }
        let mut kept = without_tasks(buf);
        let back: Vec<_> = frames(&mut kept)
            .into_iter()
            .map(|f| ToWorker::decode(f).unwrap())
            .collect();
        assert_eq!(back, vec![pipe.clone(), ToWorker::Bye]);
        assert!(without_tasks(BytesMut::new()).is_empty());
        let mut corrupt = BytesMut::new();
        pipe.encode(&mut corrupt);
        corrupt.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 7]);
        let mut kept = without_tasks(corrupt);
        assert_eq!(
            frames(&mut kept).len(),
            1,
            "stops at a length no frame here can have"
        );
    }

    #[test]
    fn truncated_and_unknown_frames_are_errors() {
        let short = Frame {
            kind: TW_TASK,
            body: Bytes::from_static(b"\0\0"),
        };
        assert!(matches!(
            ToWorker::decode(short),
            Err(WireError::Truncated { what: "task", .. })
        ));
        let unknown = Frame {
            kind: 200,
            body: Bytes::new(),
        };
        assert!(matches!(
            FromWorker::decode(unknown),
            Err(WireError::UnknownKind(200))
        ));
        let bad_encoding = Frame {
            kind: FW_RESULT,
            body: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1, 9]),
        };
        assert!(FromWorker::decode(bad_encoding).is_err());
    }
}
