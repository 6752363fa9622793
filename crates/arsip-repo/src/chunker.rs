//! Content-defined chunking of a byte stream (FastCDC 2020 with the repository's secret
//! seed), cutting at exactly the points `fastcdc::v2020::StreamCDC` cuts at.
//!
//! `StreamCDC` keeps a buffer of one maximum chunk and, for every chunk it returns, shifts the
//! rest of the buffer down and zero-fills the freed tail: about four bytes moved per byte
//! chunked with the default sizes. This chunker reads into a window of several maximum chunks
//! and only compacts when less than one maximum chunk is left, and hands out chunks as slices
//! of that window, so each byte is copied about once (into the batch handed to the pack
//! workers, and only if the chunk is new). The cut points are the same because
//! `cut` never looks further than one maximum chunk ahead: the window always offers at least
//! that much, or everything up to the end of the stream.

use std::io::{self, Read};

use fastcdc::v2020::{FastCDC, Normalization};

use crate::keys::ChunkerParams;

/// Window size in maximum chunks.
const WINDOW_CHUNKS: usize = 4;

pub struct Chunker<R> {
    reader: R,
    params: ChunkerParams,
    seed: u64,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    pub fn new(reader: R, params: ChunkerParams, seed: u64) -> Self {
        Chunker {
            reader,
            params,
            seed,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }

    /// The next chunk, or `None` at the end of the stream. The slice lives until the next
    /// call.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        let max = self.params.max as usize;
        if !self.eof && self.buf.len() - self.start < max {
            self.buf.drain(..self.start);
            self.start = 0;
            let want = WINDOW_CHUNKS * max - self.buf.len();
            self.buf.reserve(want);
            // `read_to_end` fills spare capacity without zeroing it first and retries EINTR.
            let got = (&mut self.reader)
                .take(want as u64)
                .read_to_end(&mut self.buf)?;
            self.eof = got < want;
        }
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(None);
        }
        let cdc = FastCDC::with_level_and_seed(
            avail,
            self.params.min,
            self.params.avg,
            self.params.max,
            Normalization::Level1,
            self.seed,
        );
        let (_, end) = cdc.cut(0, avail.len());
        self.start += end;
        Ok(Some(&avail[..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same cut points as `StreamCDC`, whatever sizes the reader hands out.
    #[test]
    fn cuts_like_streamcdc() {
        let params = ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        };
        let mut data = vec![0u8; 3 * 1024 * 1024 + 777];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for (i, b) in data.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // runs of zeros and repeats exercise min and max cuts too
            *b = if (i / 100_000) % 3 == 1 { 0 } else { x as u8 };
        }
        let seed = 0x1234_5678_9abc_def0;
        let expected: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level_and_seed(
            &data[..],
            params.min,
            params.avg,
            params.max,
            Normalization::Level1,
            seed,
        )
        .map(|c| c.unwrap().data)
        .collect();
        assert!(expected.len() > 50);

        /// Hands out at most 1000 bytes per read, like a pipe.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(self.0.len()).min(1000);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        for trickle in [false, true] {
            let reader: Box<dyn Read> = if trickle {
                Box::new(Trickle(&data))
            } else {
                Box::new(&data[..])
            };
            let mut c = Chunker::new(reader, params, seed);
            let mut got = Vec::new();
            while let Some(chunk) = c.next_chunk().unwrap() {
                got.push(chunk.to_vec());
            }
            assert_eq!(got, expected, "trickle={trickle}");
        }
        let mut empty = Chunker::new(&[][..], params, seed);
        assert!(empty.next_chunk().unwrap().is_none());
    }
}
