//! Swoole's packet framing for foreign clients (raw sockets, `nc`, clients
//! written for Swoole). A connection that does not open with taskq's magic
//! (see `protocol.rs`) is split into packets exactly as a Swoole server with
//! the same `open_eof_check` / `open_eof_split` / `open_length_check`
//! settings would split it, so existing clients keep working unchanged.

use bytes::{BufMut, BytesMut};
use memchr::memmem::Finder;
use tokio_util::codec::Decoder;

/// Byte type of the length field, as PHP `pack()` names it, so that
/// `package_length_type` settings written for Swoole keep their meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthType {
    /// `c`
    I8,
    /// `C`
    U8,
    /// `s` (machine order, little endian on every supported target)
    I16Le,
    /// `S`, `v`
    U16Le,
    /// `n`
    U16Be,
    /// `N`
    U32Be,
    /// `l`
    I32Le,
    /// `L`, `V`
    U32Le,
    /// `q`
    I64Le,
    /// `Q`, `P`
    U64Le,
    /// `J`
    U64Be,
}

impl LengthType {
    /// Parses a `package_length_type` setting; `None` lets the caller report
    /// the bad setting together with [`LengthType::pack_chars`].
    pub fn from_pack_char(c: char) -> Option<LengthType> {
        Some(match c {
            'c' => LengthType::I8,
            'C' => LengthType::U8,
            's' => LengthType::I16Le,
            'S' | 'v' => LengthType::U16Le,
            'n' => LengthType::U16Be,
            'N' => LengthType::U32Be,
            'l' => LengthType::I32Le,
            'L' | 'V' => LengthType::U32Le,
            'q' => LengthType::I64Le,
            'Q' | 'P' => LengthType::U64Le,
            'J' => LengthType::U64Be,
            _ => return None,
        })
    }

    /// Every accepted `package_length_type`, for error messages.
    pub fn pack_chars() -> &'static str {
        "cCsSnNlLvVqQJP"
    }

    /// Names the type in messages; where PHP has two names for one layout
    /// this is the explicitly little-endian one (`v`, `V`, `P`).
    pub fn pack_char(self) -> char {
        match self {
            LengthType::I8 => 'c',
            LengthType::U8 => 'C',
            LengthType::I16Le => 's',
            LengthType::U16Le => 'v',
            LengthType::U16Be => 'n',
            LengthType::U32Be => 'N',
            LengthType::I32Le => 'l',
            LengthType::U32Le => 'V',
            LengthType::I64Le => 'q',
            LengthType::U64Le => 'P',
            LengthType::U64Be => 'J',
        }
    }

    /// How much header must arrive before a packet's length is known.
    pub fn size(self) -> usize {
        match self {
            LengthType::I8 | LengthType::U8 => 1,
            LengthType::I16Le | LengthType::U16Le | LengthType::U16Be => 2,
            LengthType::U32Be | LengthType::I32Le | LengthType::U32Le => 4,
            LengthType::I64Le | LengthType::U64Le | LengthType::U64Be => 8,
        }
    }

    /// Decodes the field at the start of `buf` into an `i128` so negative
    /// signed values and the whole `u64` range both reach validation intact.
    ///
    /// # Panics
    /// If `buf` is shorter than [`LengthType::size`]; the decoder checks this
    /// before calling, so peer input cannot trigger it.
    pub fn read(self, buf: &[u8]) -> i128 {
        match self {
            LengthType::I8 => i8::from_le_bytes(head(buf)).into(),
            LengthType::U8 => u8::from_le_bytes(head(buf)).into(),
            LengthType::I16Le => i16::from_le_bytes(head(buf)).into(),
            LengthType::U16Le => u16::from_le_bytes(head(buf)).into(),
            LengthType::U16Be => u16::from_be_bytes(head(buf)).into(),
            LengthType::U32Be => u32::from_be_bytes(head(buf)).into(),
            LengthType::I32Le => i32::from_le_bytes(head(buf)).into(),
            LengthType::U32Le => u32::from_le_bytes(head(buf)).into(),
            LengthType::I64Le => i64::from_le_bytes(head(buf)).into(),
            LengthType::U64Le => u64::from_le_bytes(head(buf)).into(),
            LengthType::U64Be => u64::from_be_bytes(head(buf)).into(),
        }
    }

    /// Appends `value` in this layout, refusing values the peer would read
    /// back differently (too large, or negative once read as signed).
    pub fn write(self, value: u64, dst: &mut BytesMut) -> Result<(), PacketError> {
        let too_large = |_| PacketError::ValueTooLarge {
            value,
            length_type: self.pack_char(),
        };
        match self {
            LengthType::I8 => dst.put_i8(i8::try_from(value).map_err(too_large)?),
            LengthType::U8 => dst.put_u8(u8::try_from(value).map_err(too_large)?),
            LengthType::I16Le => dst.put_i16_le(i16::try_from(value).map_err(too_large)?),
            LengthType::U16Le => dst.put_u16_le(u16::try_from(value).map_err(too_large)?),
            LengthType::U16Be => dst.put_u16(u16::try_from(value).map_err(too_large)?),
            LengthType::U32Be => dst.put_u32(u32::try_from(value).map_err(too_large)?),
            LengthType::I32Le => dst.put_i32_le(i32::try_from(value).map_err(too_large)?),
            LengthType::U32Le => dst.put_u32_le(u32::try_from(value).map_err(too_large)?),
            LengthType::I64Le => dst.put_i64_le(i64::try_from(value).map_err(too_large)?),
            LengthType::U64Le => dst.put_u64_le(value),
            LengthType::U64Be => dst.put_u64(value),
        }
        Ok(())
    }
}

/// Copies the first `N` bytes of `buf` into an array for `from_*_bytes`.
fn head<const N: usize>(buf: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[..N]);
    out
}

/// Which Swoole framing option is on; exactly one applies per server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketMode {
    /// No option: every read is one packet, as Swoole does by default.
    Raw,
    /// `open_eof_check`: deliver the whole buffer once it ends with `eof`.
    EofCheck {
        /// `package_eof`, 1 to 8 bytes.
        eof: Vec<u8>,
    },
    /// `open_eof_split`: deliver one packet per `eof`, `eof` included.
    EofSplit {
        /// `package_eof`, 1 to 8 bytes.
        eof: Vec<u8>,
    },
    /// `open_length_check`: a header announces each packet's length.
    Length {
        /// `package_length_type`.
        length_type: LengthType,
        /// `package_length_offset`: where the length field starts.
        length_offset: usize,
        /// `package_body_offset`: added to the field's value to get the
        /// packet's total length (0 when the field counts the header too).
        body_offset: usize,
    },
}

/// Framing settings of one server, carried together so a decoder per
/// connection can be built from a shared copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketOptions {
    /// The framing option in force.
    pub mode: PacketMode,
    /// `package_max_length`: bounds what a peer can make us buffer.
    pub max_length: usize,
}

/// Why a foreign connection must be closed; the messages go to the log and
/// name the Swoole setting involved so operators know what to change.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// A packet is larger than the configured limit.
    #[error("packet of {length} bytes exceeds package_max_length {max}")]
    TooLong {
        /// Announced (length mode) or buffered (EOF modes) size.
        length: u64,
        /// `package_max_length`.
        max: usize,
    },
    /// The header announces an impossible length.
    #[error("malformed packet: {reason}")]
    Malformed {
        /// What was wrong, naming the settings involved.
        reason: String,
    },
    /// The peer closed the connection in the middle of a packet.
    #[error("connection closed inside a packet ({buffered} bytes buffered and discarded)")]
    Truncated {
        /// Bytes of the unfinished packet.
        buffered: usize,
    },
    /// A length cannot be represented by the configured field type.
    #[error("length {value} does not fit package_length_type '{length_type}'")]
    ValueTooLarge {
        /// The length that did not fit.
        value: u64,
        /// The field type, as its `pack()` char.
        length_type: char,
    },
    /// Reading the socket failed; required by [`Decoder`].
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits one foreign connection's byte stream into the packets Swoole would
/// hand to `onReceive`; one decoder per connection, as it keeps scan state.
#[derive(Clone, Debug)]
pub struct PacketDecoder {
    opts: PacketOptions,
    /// `EofSplit` searcher, built on first use rather than per read.
    finder: Option<Finder<'static>>,
    /// `EofSplit`: length of the buffered prefix known to hold no start of
    /// the EOF, so each byte is searched once however the reads are split.
    scanned: usize,
}

impl PacketDecoder {
    /// Starts a decoder for a new connection.
    pub fn new(opts: PacketOptions) -> Self {
        if let PacketMode::EofCheck { eof } | PacketMode::EofSplit { eof } = &opts.mode {
            debug_assert!(
                (1..=8).contains(&eof.len()),
                "package_eof must be 1 to 8 bytes"
            );
        }
        PacketDecoder {
            opts,
            finder: None,
            scanned: 0,
        }
    }

    /// Lets the connection handler consult the settings it was built with.
    pub fn options(&self) -> &PacketOptions {
        &self.opts
    }
}

impl Decoder for PacketDecoder {
    type Item = BytesMut;
    type Error = PacketError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, PacketError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let max = self.opts.max_length;
        match &self.opts.mode {
            PacketMode::Raw => Ok(Some(buf.split())),
            PacketMode::EofCheck { eof } => {
                if buf.len() > max {
                    Err(too_long(buf.len(), max))
                } else if buf.ends_with(eof) {
                    Ok(Some(buf.split()))
                } else {
                    Ok(None)
                }
            }
            PacketMode::EofSplit { eof } => {
                let finder = self
                    .finder
                    .get_or_insert_with(|| Finder::new(eof).into_owned());
                split_eof(buf, finder, &mut self.scanned, max)
            }
            PacketMode::Length {
                length_type,
                length_offset,
                body_offset,
            } => split_length(buf, *length_type, *length_offset, *body_offset, max),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, PacketError> {
        match self.decode(buf)? {
            Some(packet) => Ok(Some(packet)),
            None if buf.is_empty() => Ok(None),
            None => Err(PacketError::Truncated {
                buffered: buf.len(),
            }),
        }
    }
}

fn too_long(length: usize, max: usize) -> PacketError {
    PacketError::TooLong {
        length: length as u64,
        max,
    }
}

/// `open_eof_split`: one packet up to and including the first EOF. Only the
/// first `max` bytes are searched: an EOF ending later means too long anyway.
fn split_eof(
    buf: &mut BytesMut,
    finder: &Finder<'_>,
    scanned: &mut usize,
    max: usize,
) -> Result<Option<BytesMut>, PacketError> {
    let eof_len = finder.needle().len();
    let limit = buf.len().min(max);
    let start = (*scanned).min(limit);
    match finder.find(&buf[start..limit]) {
        Some(at) => {
            *scanned = 0;
            Ok(Some(buf.split_to(start + at + eof_len)))
        }
        None if buf.len() > max => Err(too_long(buf.len(), max)),
        None => {
            // The last eof_len - 1 bytes may begin an EOF completed by the next read.
            *scanned = limit.saturating_sub(eof_len.saturating_sub(1));
            Ok(None)
        }
    }
}

/// `open_length_check`: the whole packet, header included, once all of it
/// has arrived. Its length is validated as soon as the header is in.
fn split_length(
    buf: &mut BytesMut,
    length_type: LengthType,
    length_offset: usize,
    body_offset: usize,
    max: usize,
) -> Result<Option<BytesMut>, PacketError> {
    let header_end = length_offset + length_type.size();
    if buf.len() < header_end {
        return Ok(None);
    }
    let value = length_type.read(&buf[length_offset..header_end]);
    if value < 0 {
        return Err(PacketError::Malformed {
            reason: format!(
                "negative length {value} in package_length_type '{}' field",
                length_type.pack_char()
            ),
        });
    }
    // Cannot overflow: value <= u64::MAX and body_offset <= usize::MAX.
    let total = body_offset as i128 + value;
    let total = match usize::try_from(total) {
        Ok(total) if total <= max => total,
        _ => {
            return Err(PacketError::TooLong {
                length: u64::try_from(total).unwrap_or(u64::MAX),
                max,
            })
        }
    };
    if total < header_end {
        return Err(PacketError::Malformed {
            reason: format!(
                "packet length {total} (package_body_offset {body_offset} + length field {value}) \
                 is shorter than its {header_end}-byte header \
                 (package_length_offset + size of package_length_type)"
            ),
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(total)))
}

/// Builds the header a client using `open_length_check` puts before a body of
/// `body_len` bytes, so tests and benchmarks speak the same framing as peers.
pub fn length_header(
    length_type: LengthType,
    length_offset: usize,
    body_offset: usize,
    body_len: usize,
) -> Result<BytesMut, PacketError> {
    let field_end = length_offset + length_type.size();
    if field_end > body_offset {
        return Err(PacketError::Malformed {
            reason: format!(
                "package_length_type '{}' at package_length_offset {length_offset} \
                 ends at byte {field_end}, past package_body_offset {body_offset}",
                length_type.pack_char()
            ),
        });
    }
    let mut header = BytesMut::with_capacity(body_offset);
    header.resize(length_offset, 0);
    length_type.write(body_len as u64, &mut header)?;
    header.resize(body_offset, 0);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [LengthType; 11] = [
        LengthType::I8,
        LengthType::U8,
        LengthType::I16Le,
        LengthType::U16Le,
        LengthType::U16Be,
        LengthType::U32Be,
        LengthType::I32Le,
        LengthType::U32Le,
        LengthType::I64Le,
        LengthType::U64Le,
        LengthType::U64Be,
    ];

    fn opts(mode: PacketMode, max_length: usize) -> PacketOptions {
        PacketOptions { mode, max_length }
    }

    fn eof_split(eof: &[u8]) -> PacketMode {
        PacketMode::EofSplit { eof: eof.to_vec() }
    }

    fn eof_check(eof: &[u8]) -> PacketMode {
        PacketMode::EofCheck { eof: eof.to_vec() }
    }

    fn length(c: char, length_offset: usize, body_offset: usize) -> PacketMode {
        PacketMode::Length {
            length_type: LengthType::from_pack_char(c).expect("valid pack char"),
            length_offset,
            body_offset,
        }
    }

    /// Feeds `chunks` as successive reads, draining packets after each one,
    /// then ends the stream the way `FramedRead` does.
    fn run(opts: PacketOptions, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, PacketError> {
        let mut dec = PacketDecoder::new(opts);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(p) = dec.decode(&mut buf)? {
                out.push(p.to_vec());
            }
        }
        while let Some(p) = dec.decode_eof(&mut buf)? {
            out.push(p.to_vec());
        }
        Ok(out)
    }

    fn bytewise(data: &[u8]) -> Vec<&[u8]> {
        data.chunks(1).collect()
    }

    fn packet(ty: LengthType, length_offset: usize, body_offset: usize, body: &[u8]) -> Vec<u8> {
        let mut p = length_header(ty, length_offset, body_offset, body.len()).expect("header");
        p.extend_from_slice(body);
        p.to_vec()
    }

    #[test]
    fn every_pack_char_maps_to_its_type_and_size() {
        let expected = [
            ('c', LengthType::I8, 1),
            ('C', LengthType::U8, 1),
            ('s', LengthType::I16Le, 2),
            ('S', LengthType::U16Le, 2),
            ('n', LengthType::U16Be, 2),
            ('N', LengthType::U32Be, 4),
            ('l', LengthType::I32Le, 4),
            ('L', LengthType::U32Le, 4),
            ('v', LengthType::U16Le, 2),
            ('V', LengthType::U32Le, 4),
            ('q', LengthType::I64Le, 8),
            ('Q', LengthType::U64Le, 8),
            ('J', LengthType::U64Be, 8),
            ('P', LengthType::U64Le, 8),
        ];
        let chars: String = expected.iter().map(|e| e.0).collect();
        assert_eq!(chars, LengthType::pack_chars());
        for (c, ty, size) in expected {
            assert_eq!(LengthType::from_pack_char(c), Some(ty), "{c}");
            assert_eq!(ty.size(), size, "{c}");
            assert_eq!(LengthType::from_pack_char(ty.pack_char()), Some(ty));
        }
        for c in ['x', 'i', 'I', 'a', 'H', 'e', 'E', 'g', ' ', 'é'] {
            assert_eq!(LengthType::from_pack_char(c), None, "{c}");
        }
    }

    #[test]
    fn write_lays_out_bytes_like_php_pack() {
        let cases: [(char, &[u8]); 14] = [
            ('c', &[0x04]),
            ('C', &[0x04]),
            ('s', &[0x04, 0x03]),
            ('S', &[0x04, 0x03]),
            ('v', &[0x04, 0x03]),
            ('n', &[0x03, 0x04]),
            ('N', &[0x01, 0x02, 0x03, 0x04]),
            ('l', &[0x04, 0x03, 0x02, 0x01]),
            ('L', &[0x04, 0x03, 0x02, 0x01]),
            ('V', &[0x04, 0x03, 0x02, 0x01]),
            ('q', &[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]),
            ('Q', &[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]),
            ('P', &[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01]),
            ('J', &[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]),
        ];
        for (c, bytes) in cases {
            let ty = LengthType::from_pack_char(c).expect("valid");
            let value = match ty.size() {
                1 => 0x04,
                2 => 0x0304,
                4 => 0x0102_0304,
                _ => 0x0102_0304_0506_0708,
            };
            let mut dst = BytesMut::from(&b"x"[..]);
            ty.write(value, &mut dst).expect("fits");
            assert_eq!(&dst[1..], bytes, "{c}");
            assert_eq!(ty.read(&dst[1..]), i128::from(value), "{c}");
        }
    }

    #[test]
    fn read_and_write_round_trip_at_the_limits() {
        let limits: [(LengthType, u64); 11] = [
            (LengthType::I8, i8::MAX as u64),
            (LengthType::U8, u8::MAX.into()),
            (LengthType::I16Le, i16::MAX as u64),
            (LengthType::U16Le, u16::MAX.into()),
            (LengthType::U16Be, u16::MAX.into()),
            (LengthType::U32Be, u32::MAX.into()),
            (LengthType::I32Le, i32::MAX as u64),
            (LengthType::U32Le, u32::MAX.into()),
            (LengthType::I64Le, i64::MAX as u64),
            (LengthType::U64Le, u64::MAX),
            (LengthType::U64Be, u64::MAX),
        ];
        for (ty, max) in limits {
            let mut dst = BytesMut::new();
            ty.write(max, &mut dst).expect("max fits");
            assert_eq!(dst.len(), ty.size());
            assert_eq!(ty.read(&dst), i128::from(max), "{ty:?}");
            if let Some(over) = max.checked_add(1) {
                let mut dst = BytesMut::new();
                match ty.write(over, &mut dst) {
                    Err(PacketError::ValueTooLarge { value, length_type }) => {
                        assert_eq!(value, over);
                        assert_eq!(length_type, ty.pack_char());
                    }
                    other => panic!("{ty:?}: expected ValueTooLarge, got {other:?}"),
                }
                assert!(dst.is_empty(), "nothing written on error");
            }
        }
    }

    #[test]
    fn read_sign_extends_signed_types_only() {
        assert_eq!(LengthType::I8.read(&[0xff]), -1);
        assert_eq!(LengthType::U8.read(&[0xff]), 255);
        assert_eq!(LengthType::I16Le.read(&[0x00, 0x80]), -32768);
        assert_eq!(LengthType::U16Le.read(&[0x00, 0x80]), 32768);
        assert_eq!(LengthType::I32Le.read(&[0xfe, 0xff, 0xff, 0xff]), -2);
        assert_eq!(
            LengthType::U32Be.read(&[0xff, 0xff, 0xff, 0xfe]),
            0xffff_fffe
        );
        assert_eq!(LengthType::I64Le.read(&[0xff; 8]), -1);
        assert_eq!(LengthType::U64Be.read(&[0xff; 8]), i128::from(u64::MAX));
        // Extra bytes after the field are ignored.
        assert_eq!(LengthType::U16Be.read(&[0x01, 0x02, 0x03]), 0x0102);
    }

    #[test]
    fn every_type_frames_a_packet_header_included() {
        for ty in ALL {
            let p = packet(ty, 0, ty.size(), b"abc");
            assert_eq!(&p[ty.size()..], b"abc");
            let got = run(opts(length(ty.pack_char(), 0, ty.size()), 64), &[&p]).expect("decodes");
            assert_eq!(got, vec![p.clone()], "{ty:?}");
        }
    }

    #[test]
    fn length_at_offset_two_with_body_at_six() {
        // 2 bytes of magic, 'n' length, 2 reserved bytes, then the body.
        let wire = b"\xAA\xBB\x00\x05\xCC\xDDhelloXY\x00\x01\x00\x00Z";
        let got = run(opts(length('n', 2, 6), 64), &[wire]).expect("decodes");
        assert_eq!(
            got,
            vec![
                b"\xAA\xBB\x00\x05\xCC\xDDhello".to_vec(),
                b"XY\x00\x01\x00\x00Z".to_vec(),
            ]
        );
        assert_eq!(
            packet(LengthType::U16Be, 2, 6, b"hello"),
            b"\x00\x00\x00\x05\x00\x00hello".to_vec()
        );
    }

    #[test]
    fn body_offset_zero_means_length_counts_the_header() {
        // 'N' holds the total packet length, as some protocols do.
        let wire = b"\x00\x00\x00\x07abc\x00\x00\x00\x04";
        let got = run(opts(length('N', 0, 0), 64), &[wire]).expect("decodes");
        assert_eq!(
            got,
            vec![
                b"\x00\x00\x00\x07abc".to_vec(),
                b"\x00\x00\x00\x04".to_vec()
            ]
        );
    }

    #[test]
    fn many_length_packets_in_one_buffer() {
        let bodies: [&[u8]; 4] = [b"first", b"", b"third packet", b"4"];
        let mut wire = Vec::new();
        for body in bodies {
            wire.extend(packet(LengthType::U32Be, 0, 4, body));
        }
        let got = run(opts(length('N', 0, 4), 64), &[&wire]).expect("decodes");
        let expected: Vec<Vec<u8>> = bodies
            .iter()
            .map(|b| {
                let mut p = (b.len() as u32).to_be_bytes().to_vec();
                p.extend_from_slice(b);
                p
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_length_packets() {
        let mut wire = Vec::new();
        for body in [&b"one"[..], b"two two", b"", b"three"] {
            wire.extend(packet(LengthType::I16Le, 1, 4, body));
        }
        let o = opts(length('s', 1, 4), 64);
        let whole = run(o.clone(), &[&wire]).expect("decodes");
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[1], b"\x00\x07\x00\x00two two".to_vec());
        assert_eq!(run(o, &bytewise(&wire)).expect("decodes"), whole);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_eof_split_packets() {
        let wire = b"GET / HTTP/1.0\r\n\r\nsecond\r\n\r\n\r\n\r\nlast\r\n\r\n";
        let o = opts(eof_split(b"\r\n\r\n"), 64);
        let whole = run(o.clone(), &[wire]).expect("decodes");
        assert_eq!(
            whole,
            vec![
                b"GET / HTTP/1.0\r\n\r\n".to_vec(),
                b"second\r\n\r\n".to_vec(),
                b"\r\n\r\n".to_vec(),
                b"last\r\n\r\n".to_vec(),
            ]
        );
        assert_eq!(run(o, &bytewise(wire)).expect("decodes"), whole);
    }

    #[test]
    fn length_packet_exactly_at_max_passes_one_over_fails() {
        let o = opts(length('N', 0, 4), 10);
        let at = packet(LengthType::U32Be, 0, 4, b"123456");
        assert_eq!(run(o.clone(), &[&at]).expect("at limit"), vec![at.clone()]);
        let over = packet(LengthType::U32Be, 0, 4, b"1234567");
        // Refused as soon as the header is in, before the body is buffered.
        match run(o, &[&over[..4]]) {
            Err(PacketError::TooLong { length, max }) => assert_eq!((length, max), (11, 10)),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn huge_announced_length_is_reported_not_wrapped() {
        let o = opts(length('J', 0, 8), 2_097_152);
        let err = run(o, &[&[0xff; 8]]).expect_err("too long");
        match err {
            PacketError::TooLong { length, max } => {
                assert_eq!((length, max), (u64::MAX, 2_097_152));
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
        let o = opts(length('N', 0, 4), 2_097_152);
        let err = run(o, &[&2_999_996u32.to_be_bytes()]).expect_err("too long");
        assert_eq!(
            err.to_string(),
            "packet of 3000000 bytes exceeds package_max_length 2097152"
        );
    }

    #[test]
    fn negative_signed_length_is_malformed() {
        let cases: [(char, &[u8]); 4] = [
            ('c', &[0xff]),
            ('s', &[0xfe, 0xff]),
            ('l', &[0x00, 0x00, 0x00, 0x80]),
            ('q', &[0xff; 8]),
        ];
        for (c, field) in cases {
            let o = opts(length(c, 0, field.len()), 1024);
            match run(o, &[field]) {
                Err(PacketError::Malformed { reason }) => {
                    assert!(reason.contains("negative"), "{c}: {reason}");
                    assert!(reason.contains(&format!("'{c}'")), "{c}: {reason}");
                }
                other => panic!("{c}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn total_shorter_than_header_is_malformed() {
        // Length at offset 2, body at 0: a value of 3 ends inside the header.
        let o = opts(length('n', 2, 0), 1024);
        match run(o.clone(), &[b"\x00\x00\x00\x03"]) {
            Err(PacketError::Malformed { reason }) => {
                assert!(reason.contains("packet length 3"), "{reason}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        // A value of exactly the header size is an empty-bodied packet.
        let got = run(o, &[b"\x00\x00\x00\x04"]).expect("decodes");
        assert_eq!(got, vec![b"\x00\x00\x00\x04".to_vec()]);
    }

    #[test]
    fn length_mode_reserves_the_announced_packet() {
        let mut dec = PacketDecoder::new(opts(length('N', 0, 4), 1 << 20));
        let mut buf = BytesMut::from(&100_000u32.to_be_bytes()[..]);
        assert!(dec.decode(&mut buf).expect("ok").is_none());
        assert!(buf.capacity() >= 100_004);
        assert_eq!(&buf[..], &100_000u32.to_be_bytes());
    }

    #[test]
    fn eof_split_across_reads() {
        let got = run(
            opts(eof_split(b"\r\n\r\n"), 64),
            &[b"hello\r\n\r", b"\nworld\r", b"\n", b"\r\n"],
        )
        .expect("decodes");
        assert_eq!(
            got,
            vec![b"hello\r\n\r\n".to_vec(), b"world\r\n\r\n".to_vec()]
        );
    }

    #[test]
    fn eof_split_remembers_how_far_it_searched() {
        let mut dec = PacketDecoder::new(opts(eof_split(b"\r\n\r\n"), 64));
        let mut buf = BytesMut::from(&b"hello\r\n\r"[..]);
        assert!(dec.decode(&mut buf).expect("ok").is_none());
        // The last 3 bytes may start the EOF; everything before is done.
        assert_eq!(dec.scanned, 5);
        buf.extend_from_slice(b"\nrest");
        assert_eq!(
            dec.decode(&mut buf).expect("ok").as_deref(),
            Some(&b"hello\r\n\r\n"[..])
        );
        assert_eq!(dec.scanned, 0);
        assert_eq!(&buf[..], b"rest");
        assert!(dec.decode(&mut buf).expect("ok").is_none());
        assert_eq!(dec.scanned, 1);
    }

    #[test]
    fn eof_split_with_self_overlapping_eof() {
        let got =
            run(opts(eof_split(b"aab"), 64), &[b"xaa", b"ab", b"aa", b"aab"]).expect("decodes");
        assert_eq!(got, vec![b"xaaab".to_vec(), b"aaaab".to_vec()]);
    }

    #[test]
    fn eof_split_keeps_the_rest_buffered() {
        let mut dec = PacketDecoder::new(opts(eof_split(b"\n"), 64));
        let mut buf = BytesMut::from(&b"a\nbb\nccc"[..]);
        assert_eq!(
            dec.decode(&mut buf).expect("ok").as_deref(),
            Some(&b"a\n"[..])
        );
        assert_eq!(
            dec.decode(&mut buf).expect("ok").as_deref(),
            Some(&b"bb\n"[..])
        );
        assert!(dec.decode(&mut buf).expect("ok").is_none());
        assert_eq!(&buf[..], b"ccc");
        match dec.decode_eof(&mut buf) {
            Err(PacketError::Truncated { buffered }) => assert_eq!(buffered, 3),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn eof_split_max_exactly_at_and_one_over() {
        let o = opts(eof_split(b"\r\n"), 8);
        let got = run(o.clone(), &[b"123456\r\n1234567\r\n"]);
        match got {
            Err(PacketError::TooLong { length, max }) => assert_eq!((length, max), (9, 8)),
            other => panic!("expected TooLong, got {other:?}"),
        }
        let got = run(o.clone(), &[b"123456\r\n"]).expect("at limit");
        assert_eq!(got, vec![b"123456\r\n".to_vec()]);
        // Exactly max bytes without a complete EOF: wait, then fail on the next byte.
        let mut dec = PacketDecoder::new(o);
        let mut buf = BytesMut::from(&b"1234567\r"[..]);
        assert!(dec.decode(&mut buf).expect("ok").is_none());
        buf.extend_from_slice(b"\n");
        match dec.decode(&mut buf) {
            Err(PacketError::TooLong { length, max }) => assert_eq!((length, max), (9, 8)),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn eof_check_delivers_merged_packets_whole() {
        let o = opts(eof_check(b"\r\n"), 64);
        let got = run(o.clone(), &[b"a\r\nb\r\n"]).expect("decodes");
        assert_eq!(got, vec![b"a\r\nb\r\n".to_vec()]);
        let got = run(o.clone(), &[b"a\r\nb", b"c\r", b"\n", b"d\r\n"]).expect("decodes");
        assert_eq!(got, vec![b"a\r\nbc\r\n".to_vec(), b"d\r\n".to_vec()]);
        match run(o, &[b"a\r\nb"]) {
            Err(PacketError::Truncated { buffered }) => assert_eq!(buffered, 4),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn eof_check_max_exactly_at_and_one_over() {
        let o = opts(eof_check(b"\n"), 4);
        assert_eq!(
            run(o.clone(), &[b"abc\n"]).expect("at limit"),
            vec![b"abc\n".to_vec()]
        );
        match run(o.clone(), &[b"abcd\n"]) {
            Err(PacketError::TooLong { length, max }) => assert_eq!((length, max), (5, 4)),
            other => panic!("expected TooLong, got {other:?}"),
        }
        match run(o, &[b"abc", b"de"]) {
            Err(PacketError::TooLong { length, max }) => assert_eq!((length, max), (5, 4)),
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[test]
    fn raw_delivers_each_read_whole() {
        let o = opts(PacketMode::Raw, 4);
        let got = run(o.clone(), &[b"hello world", b"", b"!"]).expect("decodes");
        assert_eq!(got, vec![b"hello world".to_vec(), b"!".to_vec()]);
        let mut dec = PacketDecoder::new(o);
        let mut buf = BytesMut::new();
        assert!(dec.decode(&mut buf).expect("ok").is_none());
    }

    #[test]
    fn decode_eof_behaviour() {
        // Raw hands over whatever is left.
        let mut dec = PacketDecoder::new(opts(PacketMode::Raw, 64));
        let mut buf = BytesMut::from(&b"tail"[..]);
        assert_eq!(
            dec.decode_eof(&mut buf).expect("ok").as_deref(),
            Some(&b"tail"[..])
        );
        assert!(dec.decode_eof(&mut buf).expect("ok").is_none());

        // Empty leftovers are a clean close in every mode.
        for mode in [
            PacketMode::Raw,
            eof_check(b"\n"),
            eof_split(b"\n"),
            length('N', 0, 4),
        ] {
            let mut dec = PacketDecoder::new(opts(mode, 64));
            assert!(dec.decode_eof(&mut BytesMut::new()).expect("ok").is_none());
        }

        // A complete packet still comes out at EOF; a partial one is an error.
        let mut dec = PacketDecoder::new(opts(length('N', 0, 4), 64));
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x01x\x00\x00\x00\x02y"[..]);
        assert_eq!(
            dec.decode_eof(&mut buf).expect("ok").as_deref(),
            Some(&b"\x00\x00\x00\x01x"[..])
        );
        let err = dec.decode_eof(&mut buf).expect_err("truncated");
        assert!(
            matches!(err, PacketError::Truncated { buffered: 5 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "connection closed inside a packet (5 bytes buffered and discarded)"
        );
    }

    #[test]
    fn length_header_round_trips_through_the_decoder() {
        let configs = [
            (LengthType::U32Be, 0, 4),
            (LengthType::U16Be, 2, 6),
            (LengthType::U8, 3, 4),
            (LengthType::I64Le, 1, 12),
            (LengthType::U64Be, 0, 8),
            (LengthType::I32Le, 4, 8),
        ];
        for (ty, length_offset, body_offset) in configs {
            let header = length_header(ty, length_offset, body_offset, 5).expect("header");
            assert_eq!(header.len(), body_offset);
            assert_eq!(ty.read(&header[length_offset..]), 5);
            let zeros = header
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < length_offset || *i >= length_offset + ty.size())
                .all(|(_, b)| *b == 0);
            assert!(zeros, "{ty:?}: padding is zero-filled");
            let mut wire = header.to_vec();
            wire.extend_from_slice(b"body1");
            let mut two = wire.clone();
            two.extend_from_slice(&wire);
            let mode = PacketMode::Length {
                length_type: ty,
                length_offset,
                body_offset,
            };
            let got = run(opts(mode, 64), &bytewise(&two)).expect("decodes");
            assert_eq!(got, vec![wire.clone(), wire], "{ty:?}");
        }
    }

    #[test]
    fn length_header_rejects_bad_layouts_and_values() {
        match length_header(LengthType::U32Be, 2, 4, 1) {
            Err(PacketError::Malformed { reason }) => {
                assert!(reason.contains("package_body_offset 4"), "{reason}");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        match length_header(LengthType::I8, 0, 1, 128) {
            Err(PacketError::ValueTooLarge { value, length_type }) => {
                assert_eq!((value, length_type), (128, 'c'));
            }
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
        assert_eq!(
            PacketError::ValueTooLarge {
                value: 70000,
                length_type: 'n'
            }
            .to_string(),
            "length 70000 does not fit package_length_type 'n'"
        );
    }

    #[test]
    fn options_are_kept() {
        let o = opts(eof_split(b"\n"), 99);
        assert_eq!(PacketDecoder::new(o.clone()).options(), &o);
    }
}
