//! The one framing every taskq hop uses (client ⇄ master ⇄ workers): a
//! big-endian `u32` length, a kind byte, then the body. The codec knows
//! nothing of what kinds mean; `protocol.rs` and `ipc.rs` give them meaning.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::error::WireError;

/// Bytes before the body: length prefix plus kind.
pub const HEADER_LEN: usize = 5;

/// A decoded frame. The body is a `Bytes` view into the read buffer, so
/// payloads travel without copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub body: Bytes,
}

/// Splits a byte stream into frames, refusing any frame longer than `max`
/// before buffering it, so a peer cannot make us allocate without bound.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// `max` bounds the kind byte plus body.
    pub fn new(max: usize) -> Self {
        FrameCodec { max }
    }

    /// Starts a frame in `dst` and returns its start offset; the caller then
    /// appends the body and calls [`FrameCodec::end`]. Building in place
    /// avoids a copy per frame on the hot path.
    pub fn begin(dst: &mut BytesMut, kind: u8) -> usize {
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(kind);
        start
    }

    /// Patches the length of the frame started at `start`.
    pub fn end(dst: &mut BytesMut, start: usize) {
        let len = (dst.len() - start - 4) as u32;
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends one complete frame.
    pub fn put(dst: &mut BytesMut, kind: u8, body: &[u8]) {
        dst.reserve(HEADER_LEN + body.len());
        let start = Self::begin(dst, kind);
        dst.put_slice(body);
        Self::end(dst, start);
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len == 0 {
            return Err(WireError::EmptyFrame);
        }
        if len > self.max {
            return Err(WireError::FrameTooLong {
                length: len,
                max: self.max,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let kind = src.get_u8();
        let body = src.split_to(len - 1).freeze();
        Ok(Some(Frame { kind, body }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::Truncated {
                what: "frame",
                needed: 4,
                had: src.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(kind: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        FrameCodec::put(&mut b, kind, body);
        b
    }

    #[test]
    fn layout_is_length_kind_body() {
        assert_eq!(&encode(7, b"abc")[..], &[0, 0, 0, 4, 7, b'a', b'b', b'c']);
    }

    #[test]
    fn round_trips_many_frames_fed_byte_by_byte() {
        let mut wire = BytesMut::new();
        for i in 0..50u8 {
            FrameCodec::put(&mut wire, i, &vec![i; i as usize * 3]);
        }
        let mut codec = FrameCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 50);
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.kind, i as u8);
            assert_eq!(f.body, vec![i as u8; i * 3]);
        }
    }

    #[test]
    fn empty_body_is_allowed_but_zero_length_is_not() {
        let mut codec = FrameCodec::new(16);
        let mut b = encode(3, b"");
        assert_eq!(codec.decode(&mut b).unwrap().unwrap().body.len(), 0);
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut zero),
            Err(WireError::EmptyFrame)
        ));
    }

    #[test]
    fn refuses_oversized_frame_from_header_alone() {
        let mut codec = FrameCodec::new(10);
        let mut b = BytesMut::from(&[0u8, 0, 0, 11, 1][..]);
        match codec.decode(&mut b) {
            Err(WireError::FrameTooLong { length, max }) => assert_eq!((length, max), (11, 10)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn exactly_max_is_accepted() {
        let mut codec = FrameCodec::new(10);
        let mut b = encode(1, &[9u8; 9]);
        assert_eq!(codec.decode(&mut b).unwrap().unwrap().body.len(), 9);
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut codec = FrameCodec::new(100);
        let mut b = encode(1, b"hello");
        b.truncate(6);
        assert!(codec.decode_eof(&mut b).is_err());
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn in_place_building_matches_put() {
        let mut a = BytesMut::new();
        let start = FrameCodec::begin(&mut a, 9);
        a.put_slice(b"xy");
        a.put_slice(b"z");
        FrameCodec::end(&mut a, start);
        assert_eq!(a, encode(9, b"xyz"));
    }
}
