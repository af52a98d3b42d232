//! Every decoder that reads bytes from a peer (client frames, task requests,
//! IPC messages, Swoole framing, PHP serialize() payloads) must return an
//! error, never panic, on any input, fed in one piece or byte by byte.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use taskq_engine::frame::FrameCodec;
use taskq_engine::ipc::{FromWorker, ToWorker};
use taskq_engine::packet::{LengthType, PacketDecoder, PacketMode, PacketOptions};
use taskq_engine::php_serial::{self, AllowedClasses, Policy};
use taskq_engine::protocol::{Answer, TaskRequest};
use tokio_util::codec::Decoder;

fn frames(data: &[u8], chunk: usize) {
    let mut codec = FrameCodec::new(1 << 16);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    let _ = ToWorker::decode(f.clone());
                    let _ = FromWorker::decode(f.clone());
                    let _ = TaskRequest::decode(f.body.clone());
                    let _ = Answer::decode(f.kind, f.body);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
}

fn packets(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let types = LengthType::pack_chars();
    let length_type = types
        .chars()
        .nth(selector as usize % types.len())
        .and_then(LengthType::from_pack_char)
        .unwrap_or(LengthType::U32Be);
    let mode = match selector % 4 {
        0 => PacketMode::Raw,
        1 => PacketMode::EofCheck { eof: b"\r\n".to_vec() },
        2 => PacketMode::EofSplit { eof: b"\r\n\r\n".to_vec() },
        _ => PacketMode::Length {
            length_type,
            length_offset: (selector as usize >> 2) % 8,
            body_offset: (selector as usize >> 2) % 8 + length_type.size(),
        },
    };
    let mut decoder = PacketDecoder::new(PacketOptions {
        mode,
        max_length: 4096,
    });
    let mut buf = BytesMut::new();
    for piece in rest.chunks(((selector as usize) % 7) + 1) {
        buf.extend_from_slice(piece);
        while let Ok(Some(p)) = decoder.decode(&mut buf) {
            assert!(p.len() <= 4096 || matches!(decoder.options().mode, PacketMode::Raw));
        }
    }
    let _ = decoder.decode_eof(&mut buf);
}

fuzz_target!(|data: &[u8]| {
    frames(data, data.len());
    frames(data, 1);
    packets(data);
    let _ = TaskRequest::decode(Bytes::copy_from_slice(data));
    for classes in [AllowedClasses::None, AllowedClasses::All] {
        let _ = php_serial::check(data, &Policy { classes, max_depth: 64 });
    }
});
