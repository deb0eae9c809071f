//! Reading one regular file into chunks: data extents only (holes stay holes),
//! content-defined cuts, and the chunks of a large file hashed, compressed and
//! stored in parallel.

use std::io::{self, Read};

use rayon::prelude::*;

use super::AsOfFile;
use crate::store::chunker::Chunker;
use crate::store::pack::BlobKind;
use crate::store::{Error, Id, Piece, StoreWriter};

use super::{Failure, Progress};

/// How many chunks of one file are in flight at once: enough to keep every
/// core busy, bounded so a huge file does not fill memory.
fn batch_len() -> usize {
    rayon::current_num_threads().max(2) * 2
}

/// A range of a file as a stream, read with positioned reads.
struct Range<'a, F: AsOfFile> {
    file: &'a F,
    pos: u64,
    end: u64,
}

impl<F: AsOfFile> Read for Range<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end - self.pos) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        if n < want {
            self.end = self.pos; // end of file: the file shrank
        }
        Ok(n)
    }
}

/// The length of a file that is shorter than `size` (it shrank while we read
/// it), at least `pos`: where reads start returning nothing.
fn shrunk_len<F: AsOfFile>(file: &F, mut lo: u64, size: u64) -> io::Result<u64> {
    // Invariant: the file has a byte at lo - 1 (or lo is where we know data
    // ends), none at hi.
    let mut hi = size;
    let mut b = [0u8; 1];
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if file.read_at(&mut b, mid)? == 1 {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Store a file's content and return its pieces. `size` comes from the stat
/// taken before opening; the pieces describe what was actually read (a file
/// that shrinks while we read it is recorded as read). `stopped` is polled
/// between batches of chunks, so a huge file does not delay a stop.
pub fn store_file<F: AsOfFile>(
    file: &F,
    size: u64,
    w: &StoreWriter,
    progress: &Progress,
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<Piece>, Failure> {
    let extents = file.extents(size).map_err(Failure::Source)?;
    let params = w.store().config().chunker;
    let mut pieces = Vec::new();
    let mut pos = 0u64;
    let mut shrank = false;
    for (off, len) in extents {
        if off > pos {
            pieces.push(Piece {
                id: None,
                len: off - pos,
            });
        }
        if len <= params.min as u64 {
            // One small chunk: read it whole, no chunker.
            let mut buf = vec![0u8; len as usize];
            let n = file.read_at(&mut buf, off).map_err(Failure::Source)?;
            buf.truncate(n);
            if !buf.is_empty() {
                let id = w.put(BlobKind::Data, &buf).map_err(Failure::Store)?;
                pieces.push(Piece {
                    id: Some(id),
                    len: n as u64,
                });
                progress.add_read(n as u64);
            }
            pos = off + n as u64;
            if (n as u64) < len {
                shrank = true;
                break;
            }
            continue;
        }
        let cap = (len as usize).min(params.max as usize * 4);
        let range = Range {
            file,
            pos: off,
            end: off + len,
        };
        let mut chunker = Chunker::with_capacity(range, params, cap);
        let mut read = 0u64;
        loop {
            if stopped() {
                return Err(Failure::Store(Error::Other("stopped".into())));
            }
            let mut batch: Vec<Vec<u8>> = Vec::with_capacity(batch_len());
            while batch.len() < batch_len() {
                match chunker.next_chunk().map_err(Failure::Source)? {
                    Some(c) => batch.push(c.to_vec()),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let ids: Vec<Id> = batch
                .par_iter()
                .map(|c| {
                    let id = w.put(BlobKind::Data, c)?;
                    progress.add_read(c.len() as u64);
                    Ok(id)
                })
                .collect::<Result<_, _>>()
                .map_err(Failure::Store)?;
            for (id, c) in ids.into_iter().zip(&batch) {
                pieces.push(Piece {
                    id: Some(id),
                    len: c.len() as u64,
                });
                read += c.len() as u64;
            }
        }
        pos = off + read;
        if read < len {
            shrank = true;
            break;
        }
    }
    // Trailing hole (a file whose size ends past its last data), as long as
    // the file still reaches that far.
    if pos < size && !shrank {
        let mut b = [0u8; 1];
        let end = if file.read_at(&mut b, size - 1).map_err(Failure::Source)? == 1 {
            size
        } else {
            shrunk_len(file, pos, size - 1).map_err(Failure::Source)?
        };
        if end > pos {
            pieces.push(Piece {
                id: None,
                len: end - pos,
            });
        }
    }
    Ok(pieces)
}
