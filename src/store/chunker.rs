//! Content-defined chunking (FastCDC, 2020 variant) of a stream.
//!
//! Cut points depend only on the bytes, so an insertion early in a file moves
//! only the chunks around it, and equal content in different files yields
//! equal chunks.

use std::io::{self, Read};

use fastcdc::v2020::FastCDC;

use super::config::ChunkerParams;

/// Reads a stream and yields its chunks in order. The buffer holds a few
/// maximum-size chunks, so each read(2) is large.
pub struct Chunker<R: Read> {
    src: R,
    params: ChunkerParams,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes handed out so far (the offset of the next chunk).
    pub offset: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(src: R, params: ChunkerParams) -> Self {
        Self::with_capacity(src, params, params.max as usize * 4)
    }

    /// A buffer of `cap` bytes: at least a maximum-size chunk, unless the whole
    /// stream is known to be shorter than that (a small file).
    pub fn with_capacity(src: R, params: ChunkerParams, cap: usize) -> Self {
        let cap = cap.max(1);
        Chunker {
            src,
            params,
            buf: vec![0; cap],
            start: 0,
            end: 0,
            eof: false,
            offset: 0,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, borrowed from the internal buffer.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.end - self.start < self.params.max as usize && !self.eof {
            self.fill()?;
        }
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let len = cut(&self.buf[self.start..self.end], self.params);
        let chunk = &self.buf[self.start..self.start + len];
        self.start += len;
        self.offset += len as u64;
        Ok(Some(chunk))
    }
}

/// Length of the first chunk of `data`. `data` holds at least a maximum-size
/// chunk unless it is the end of the stream, so a cut at its end is real.
pub fn cut(data: &[u8], p: ChunkerParams) -> usize {
    if data.len() <= p.min as usize {
        return data.len();
    }
    let window = &data[..data.len().min(p.max as usize)];
    let cdc = FastCDC::new(window, p.min, p.avg, p.max);
    let (_, end) = cdc.cut(0, window.len());
    end.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdata::pseudo_random;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        }
    }

    fn chunks(data: &[u8]) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data, params());
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let data = pseudo_random(1_000_000, 7);
        let cs = chunks(&data);
        assert_eq!(cs.concat(), data);
        for c in &cs[..cs.len() - 1] {
            assert!(c.len() >= 4096 && c.len() <= 65536, "{}", c.len());
        }
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = pseudo_random(2_000_000, 9);
        let mut edited = data.clone();
        edited.splice(500_000..500_000, b"inserted bytes".iter().copied());
        let a = chunks(&data);
        let b = chunks(&edited);
        let common = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            common + 3 >= a.len(),
            "{common} of {} chunks survive",
            a.len()
        );
    }

    #[test]
    fn small_reads_give_the_same_chunks() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = pseudo_random(600_000, 3);
        let mut c = Chunker::new(Trickle(&data), params());
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        assert_eq!(out, chunks(&data));
    }
}
