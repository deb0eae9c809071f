//! Reading one regular file into chunks: data extents only (holes stay holes),
//! content-defined cuts, and the chunks of a large file hashed, compressed and
//! stored in parallel.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};

use rayon::prelude::*;

use crate::store::chunker::Chunker;
use crate::store::pack::BlobKind;
use crate::store::{Id, Piece, StoreWriter};

use super::{Failure, Progress};

/// How many chunks of one file are in flight at once: enough to keep every
/// core busy, bounded so a huge file does not fill memory.
fn batch_len() -> usize {
    rayon::current_num_threads().max(2) * 2
}

/// The data extents of a file: `(offset, len)`, ascending. A file whose blocks
/// cover its size has no holes and is one extent, without asking SEEK_DATA.
fn data_extents(file: &File, size: u64, blocks: u64) -> io::Result<Vec<(u64, u64)>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    if blocks * 512 >= size {
        return Ok(vec![(0, size)]);
    }
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid fd has no memory effects.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(vec![(0, size)]); // filesystem without SEEK_DATA
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(size);
        if end > data as u64 {
            out.push((data as u64, end - data as u64));
        }
        pos = hole;
    }
    Ok(out)
}

/// Store a file's content and return its pieces. `size` and `blocks` come from
/// the stat taken before opening; the pieces describe what was actually read
/// (a file that shrinks while we read it is recorded as read).
pub fn store_file(
    fd: OwnedFd,
    size: u64,
    blocks: u64,
    w: &StoreWriter,
    progress: &Progress,
) -> Result<Vec<Piece>, Failure> {
    let mut file = File::from(fd);
    let extents = data_extents(&file, size, blocks).map_err(Failure::Source)?;
    let params = w.store().config().chunker;
    let mut pieces = Vec::new();
    let mut pos = 0u64;
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
            file.seek(SeekFrom::Start(off)).map_err(Failure::Source)?;
            let n = read_full(&mut file, &mut buf).map_err(Failure::Source)?;
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
                break; // the file shrank
            }
            continue;
        }
        if len > 64 << 20 {
            // SAFETY: advisory only.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    off as i64,
                    len as i64,
                    libc::POSIX_FADV_SEQUENTIAL,
                )
            };
        }
        file.seek(SeekFrom::Start(off)).map_err(Failure::Source)?;
        let cap = (len as usize).min(params.max as usize * 4);
        let mut chunker = Chunker::with_capacity((&mut file).take(len), params, cap);
        let mut read = 0u64;
        loop {
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
            break;
        }
    }
    // Trailing hole (a file whose size ends past its last data).
    if pos < size && pieces.iter().map(|p| p.len).sum::<u64>() == pos {
        let actual = file.metadata().map(|m| m.len()).unwrap_or(pos);
        if actual > pos {
            pieces.push(Piece {
                id: None,
                len: actual.min(size) - pos,
            });
        }
    }
    Ok(pieces)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
