//! Reading a blocking socket into a `BytesMut`. Reading straight into the
//! buffer's spare capacity would need it zero-filled first, on every read,
//! and a frame of several MiB reserves that much: each read would clear
//! megabytes to receive a few KiB. A fixed scratch chunk costs one copy of
//! what actually arrived.

use std::io;

use bytes::BytesMut;

/// Bytes asked of the kernel per read.
pub const CHUNK: usize = 64 * 1024;

/// A reusable scratch buffer for [`ChunkReader::read_into`].
pub struct ChunkReader {
    chunk: Box<[u8]>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader {
            chunk: vec![0u8; CHUNK].into_boxed_slice(),
        }
    }
}

impl ChunkReader {
    /// Appends what one `read` returns to `buf`; `Ok(0)` means end of
    /// stream. Interrupted reads are retried.
    pub fn read_into(
        &mut self,
        buf: &mut BytesMut,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        loop {
            match read(&mut self.chunk) {
                Ok(n) => {
                    buf.extend_from_slice(&self.chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn appends_exactly_what_each_read_returns() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut src = &data[..];
        let mut reader = ChunkReader::default();
        let mut buf = BytesMut::from(&b"head"[..]);
        let mut total = 0;
        loop {
            let n = reader.read_into(&mut buf, |c| src.read(c)).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= CHUNK);
            total += n;
        }
        assert_eq!(total, data.len());
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &data[..]);
    }

    #[test]
    fn retries_interrupted_reads_and_reports_errors() {
        let mut reader = ChunkReader::default();
        let mut buf = BytesMut::new();
        let mut calls = 0;
        let n = reader
            .read_into(&mut buf, |c| {
                calls += 1;
                if calls == 1 {
                    Err(io::Error::from(io::ErrorKind::Interrupted))
                } else {
                    c[0] = 7;
                    Ok(1)
                }
            })
            .unwrap();
        assert_eq!((n, &buf[..]), (1, &[7u8][..]));
        let err = reader
            .read_into(&mut buf, |_| {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            })
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
