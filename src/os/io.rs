//! Reading and writing open files: full `pread`/`pwrite`, `write` for logs
//! and streams ([`Writer`]), `fsync`, `copy_file_range`, the data segments of
//! a sparse file (`SEEK_DATA`/`SEEK_HOLE`) and a copy that keeps its holes,
//! `fallocate`, `ftruncate`, `lseek`, `posix_fadvise`.
//!
//! Every call that changes a file takes a [`Site`] (see [`super::fail`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::{check, check_size, fail, Errno, Result, Site};

/// Safe wrapper for pread(2): one call, short at the end of the file.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    check_size(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

/// Reads until `buf` is full or the file ends; returns the bytes read
/// (`EINTR` is retried).
pub fn read_full_at(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match pread(fd, &mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Safe wrapper for pwrite(2): one call, which may write less than `buf`.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64, site: Site) -> Result<usize> {
    fail::point(site)?;
    // SAFETY: `buf` is readable for `buf.len()` bytes.
    check_size(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

/// Writes all of `buf` at `off` (`EINTR` is retried; a write of 0 bytes is `EIO`).
pub fn write_all_at(fd: BorrowedFd<'_>, buf: &[u8], off: u64, site: Site) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match pwrite(fd, &buf[done..], off + done as u64, site) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Safe wrapper for write(2) at the file position (or the end, for an
/// `O_APPEND` descriptor): one call.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8], site: Site) -> Result<usize> {
    fail::point(site)?;
    // SAFETY: `buf` is readable for `buf.len()` bytes.
    check_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// Writes all of `buf` at the file position (`EINTR` is retried).
pub fn write_all(fd: BorrowedFd<'_>, buf: &[u8], site: Site) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match write(fd, &buf[done..], site) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An open file as an `io::Write` whose writes are [`write`] calls of
/// `site` (under a `BufWriter`, for a file written from start to end).
pub struct Writer<F> {
    file: F,
    site: Site,
}

impl<F: AsFd> Writer<F> {
    pub fn new(file: F, site: Site) -> Writer<F> {
        Writer { file, site }
    }

    pub fn get_ref(&self) -> &F {
        &self.file
    }

    pub fn into_inner(self) -> F {
        self.file
    }
}

impl<F: AsFd> std::io::Write for Writer<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(write(self.file.as_fd(), buf, self.site)?)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`fsync`] makes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Data and metadata: fsync(2).
    All,
    /// Data and the metadata needed to read it back: fdatasync(2).
    Data,
}

impl Sync {
    /// `Data` if `datasync` (the flag FUSE's FSYNC carries), else `All`.
    pub fn from_datasync(datasync: bool) -> Sync {
        if datasync {
            Sync::Data
        } else {
            Sync::All
        }
    }
}

/// Safe wrapper for fsync(2) and fdatasync(2).
pub fn fsync(fd: BorrowedFd<'_>, how: Sync, site: Site) -> Result<()> {
    fail::point(site)?;
    // SAFETY: plain calls on a borrowed descriptor.
    check(unsafe {
        match how {
            Sync::All => libc::fsync(fd.as_raw_fd()),
            Sync::Data => libc::fdatasync(fd.as_raw_fd()),
        }
    })
    .map(drop)
}

/// Safe wrapper for ftruncate(2).
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> Result<()> {
    let size = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
    // SAFETY: plain call on a borrowed descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }).map(drop)
}

/// Safe wrapper for fallocate(2).
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> Result<()> {
    // SAFETY: plain call on a borrowed descriptor.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) }).map(drop)
}

/// Safe wrapper for lseek(2), `SEEK_DATA`/`SEEK_HOLE` included.
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> Result<i64> {
    // SAFETY: plain call on a borrowed descriptor.
    check(unsafe { libc::lseek(fd.as_raw_fd(), off, whence) })
}

/// Safe wrapper for posix_fadvise(2) with `POSIX_FADV_SEQUENTIAL` over the
/// whole file (advice only: its result does not matter).
pub fn advise_sequential(fd: BorrowedFd<'_>) {
    // SAFETY: plain call on a borrowed descriptor; no memory is involved.
    unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// Safe wrapper for copy_file_range(2): one call, which may copy less than `len`.
pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
    flags: u32,
    site: Site,
) -> Result<usize> {
    fail::point(site)?;
    let mut off_in = off_in as i64;
    let mut off_out = off_out as i64;
    // SAFETY: the offsets are valid in/out pointers for the duration of the call.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    })
}

/// The data segments `(offset, len)` of `fd` within `[start, end)`,
/// ascending (`SEEK_DATA`/`SEEK_HOLE`). A file truncated while it is
/// looked at ends where it was cut.
///
/// # Errors
/// `EINVAL` where the filesystem has no `SEEK_DATA` (callers may then take
/// the whole range as data); any other errno of lseek(2).
pub fn data_segments(fd: BorrowedFd<'_>, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match lseek(fd, pos as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            // Only a hole is left.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = match lseek(fd, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(end),
            // Truncated under us.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e),
        };
        if hole <= data {
            break;
        }
        out.push((data, hole - data));
        pos = hole;
    }
    Ok(out)
}

/// Copies the data segments of `src` within `[start, end)` to the same
/// offsets of `dst`, so holes stay holes: `copy_file_range` first (a
/// filesystem that shares extents makes it a reflink), by hand through a
/// buffer of `chunk` bytes where it fails.
pub fn copy_segments(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: u64,
    end: u64,
    chunk: usize,
    site: Site,
) -> Result<()> {
    let mut buf = Vec::new();
    for (off, len) in data_segments(src, start, end)? {
        let stop = off + len;
        let mut pos = off;
        while pos < stop {
            match copy_file_range(src, pos, dst, pos, (stop - pos) as usize, 0, site) {
                Ok(n) if n > 0 => pos += n as u64,
                _ => break,
            }
        }
        while pos < stop {
            buf.resize(chunk, 0);
            let n = ((stop - pos) as usize).min(chunk);
            let got = read_full_at(src, &mut buf[..n], pos)?;
            buf[got..n].fill(0);
            write_all_at(dst, &buf[..n], pos, site)?;
            pos += n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn segments_of_a_sparse_file_and_a_copy_that_keeps_them() {
        let (_tmp, d) = crate::os::test_dir(b"");
        let rw = |name: &std::ffi::CStr| {
            let flags = libc::O_RDWR | libc::O_CREAT;
            crate::os::fd::openat(d.as_fd(), name, crate::os::Follow::No, flags, 0o600).unwrap()
        };
        let f = rw(c"sparse");
        let mb = 1u64 << 20;
        write_all_at(f.as_fd(), &[7u8; 4096], mb, "test").unwrap();
        ftruncate(f.as_fd(), 4 * mb).unwrap();
        let segs = data_segments(f.as_fd(), 0, 4 * mb).unwrap();
        if segs == vec![(0, 4 * mb)] {
            return; // a filesystem without holes (tmpfs of old kernels)
        }
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert!(segs[0].0 <= mb && segs[0].0 + segs[0].1 >= mb + 4096);
        let g = rw(c"copy");
        ftruncate(g.as_fd(), 4 * mb).unwrap();
        copy_segments(f.as_fd(), g.as_fd(), 0, 4 * mb, 65536, "test").unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(read_full_at(g.as_fd(), &mut buf, mb).unwrap(), 4096);
        assert_eq!(buf, vec![7u8; 4096]);
        assert_eq!(data_segments(g.as_fd(), 0, 4 * mb).unwrap().len(), 1);
        assert_eq!(
            read_full_at(g.as_fd(), &mut buf, 4 * mb - 100).unwrap(),
            100,
            "short at the end"
        );
    }
}
