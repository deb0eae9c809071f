//! Directory entries: create, remove, rename and link names (`*at()` calls,
//! never following a final symlink), read symlinks, and list directories
//! ([`DirStream`] over getdents64(2), the one directory reader).

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::fd::{cwd, ProcPath};
use super::{check, check_size, fail, path_cstr, Result, Site, EMPTY};

/// Safe wrapper for mkdirat(2).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// Safe wrapper for mknodat(2) (FIFOs, devices, sockets, empty files).
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: libc::dev_t) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// Safe wrapper for symlinkat(2): `dir/name` pointing at `target`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: both strings are valid C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Safe wrapper for unlinkat(2); `flags` is 0 or `AT_REMOVEDIR`.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Safe wrapper for renameat2(2); `flags` as for it (`RENAME_NOREPLACE`,
/// `RENAME_EXCHANGE`, 0 for a plain rename).
pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
    site: Site,
) -> Result<()> {
    fail::point(site)?;
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// rename(2) of one path to another.
pub fn rename(from: &Path, to: &Path, site: Site) -> Result<()> {
    renameat2(cwd(), &path_cstr(from)?, cwd(), &path_cstr(to)?, 0, site)
}

/// Safe wrapper for linkat(2) from a descriptor: hard-links the inode `fd`
/// refers to (an `O_PATH` descriptor or any other) as `dir/name`.
///
/// One mechanism for every caller: the link is made from `/proc/self/fd/N`
/// with `AT_SYMLINK_FOLLOW` (the magic link resolves to the inode itself,
/// also a symlink's), which, unlike `AT_EMPTY_PATH`, needs no
/// `CAP_DAC_READ_SEARCH`.
///
/// # Errors
/// As linkat(2): `ENOENT` for an inode with no name left, `EXDEV` across
/// filesystems, `EEXIST` for a name in use, `EPERM` for a directory.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr, site: Site) -> Result<()> {
    fail::point(site)?;
    let from = ProcPath::of(fd);
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_cstr().as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// link(2) of one path to another (a final symlink is linked, not followed).
pub fn hard_link(from: &Path, to: &Path, site: Site) -> Result<()> {
    fail::point(site)?;
    let (from, to) = (path_cstr(from)?, path_cstr(to)?);
    // SAFETY: both paths are valid C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// Safe wrapper for readlinkat(2): the whole target, however long.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let n = check_size(unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// The target of the symlink `fd` refers to (an `O_PATH|O_NOFOLLOW` descriptor).
pub fn readlink_fd(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    readlinkat(fd, EMPTY)
}

/// Safe wrapper for getdents64(2): fills `buf` with `struct linux_dirent64`
/// records; 0 at the end of the directory.
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes; getdents64 writes at most that.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    check(ret).map(|n| n as usize)
}

const BUF_SIZE: usize = 32 * 1024;

/// One raw entry of a directory.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    pub ino: u64,
    /// Offset of the entry after this one (the value to resume from).
    pub next_off: i64,
    /// `DT_*` type.
    pub d_type: u8,
    pub name: &'a OsStr,
}

/// A directory listed in order, resumable at the offsets the filesystem
/// gives: each entry's offset is the backing filesystem's own `d_off`
/// cookie (what telldir(3) returns), and a listing from such an offset seeks
/// there, so a listing resumed by offset stays correct while entries are
/// added or removed concurrently (ext4's hash order, for one, returns every
/// entry present for the whole listing exactly once). Reads are buffered;
/// a listing that continues where the previous one stopped does not seek.
pub struct DirStream<F = OwnedFd> {
    fd: F,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Offset of the entry at `pos` (0 before the first).
    off: i64,
}

impl<F: AsFd> DirStream<F> {
    /// A stream over `fd` (a directory opened for reading), whose position
    /// is taken to be its start.
    pub fn new(fd: F) -> DirStream<F> {
        DirStream {
            fd,
            buf: vec![0u8; BUF_SIZE],
            pos: 0,
            len: 0,
            off: 0,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Lists entries from `offset`, passing each to `f`, until `f` returns
    /// `false` (the entry was not taken and will be listed again from the
    /// same offset) or the directory ends.
    pub fn list(
        &mut self,
        offset: i64,
        mut f: impl FnMut(&RawEntry<'_>) -> Result<bool>,
    ) -> Result<()> {
        if offset != self.off {
            super::io::lseek(self.fd.as_fd(), offset, libc::SEEK_SET)?;
            self.pos = 0;
            self.len = 0;
            self.off = offset;
        }
        loop {
            if self.pos >= self.len {
                self.len = getdents64(self.fd.as_fd(), &mut self.buf)?;
                self.pos = 0;
                if self.len == 0 {
                    return Ok(());
                }
            }
            let entry = parse(&self.buf[self.pos..self.len]);
            if !f(&entry)? {
                return Ok(());
            }
            self.pos += entry_len(&self.buf[self.pos..]);
            self.off = entry.next_off;
        }
    }
}

// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
const NAME_AT: usize = 19;

fn entry_len(rec: &[u8]) -> usize {
    u16::from_ne_bytes([rec[16], rec[17]]) as usize
}

fn parse(rec: &[u8]) -> RawEntry<'_> {
    let ino = u64::from_ne_bytes(rec[0..8].try_into().expect("8 bytes"));
    let next_off = i64::from_ne_bytes(rec[8..16].try_into().expect("8 bytes"));
    let reclen = entry_len(rec);
    let d_type = rec[18];
    let name_bytes = &rec[NAME_AT..reclen];
    let name_len = name_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(name_bytes.len());
    RawEntry {
        ino,
        next_off,
        d_type,
        name: OsStr::from_bytes(&name_bytes[..name_len]),
    }
}

/// Whether a name is `.` or `..`.
pub fn is_dot_or_dotdot(name: &OsStr) -> bool {
    matches!(name.as_bytes(), b"." | b"..")
}

/// Lists `dir` from its start (its file position, shared with every
/// descriptor of the same open, is moved), calling `f` with each name but
/// `.` and `..` until it returns `false`.
fn each_name(dir: BorrowedFd<'_>, mut f: impl FnMut(&OsStr) -> bool) -> Result<()> {
    super::io::lseek(dir, 0, libc::SEEK_SET)?;
    DirStream::new(dir).list(0, |e| Ok(is_dot_or_dotdot(e.name) || f(e.name)))
}

/// The names in a directory (opened for reading), without `.` and `..`.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    each_name(dir, |n| {
        out.push(n.as_bytes().to_vec());
        true
    })?;
    Ok(out)
}

/// Whether a directory (opened for reading) has no entry but `.` and `..`;
/// reads only as far as the first other entry.
pub fn dir_is_empty(dir: BorrowedFd<'_>) -> Result<bool> {
    let mut empty = true;
    each_name(dir, |_| {
        empty = false;
        false
    })?;
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fd::{open_dir, openat, Follow};

    #[test]
    fn names_links_and_listings() {
        let tmp = tempfile::tempdir().unwrap();
        let d = open_dir(tmp.path()).unwrap();
        let d = d.as_fd();
        assert!(dir_is_empty(d).unwrap());
        mkdirat(d, c"sub", 0o755).unwrap();
        mknodat(d, c"fifo", libc::S_IFIFO | 0o600, 0).unwrap();
        let long = vec![b'x'; 1000];
        symlinkat(&crate::os::cstr(&long).unwrap(), d, c"sym").unwrap();
        assert_eq!(readlinkat(d, c"sym").unwrap(), long);
        let p = openat(d, c"sym", Follow::No, libc::O_PATH, 0).unwrap();
        assert_eq!(readlink_fd(p.as_fd()).unwrap(), long);
        // A symlink held by an O_PATH descriptor is linked itself.
        link_fd(p.as_fd(), d, c"sym2", "test").unwrap();
        assert_eq!(readlinkat(d, c"sym2").unwrap(), long);
        renameat2(d, c"sym2", d, c"sym3", 0, "test").unwrap();
        let mut names = read_dir_names(d).unwrap();
        names.sort();
        assert_eq!(names, [&b"fifo"[..], b"sub", b"sym", b"sym3"]);
        assert!(!dir_is_empty(d).unwrap());
        // A second listing starts again from the start.
        assert_eq!(read_dir_names(d).unwrap().len(), 4);
        unlinkat(d, c"sub", libc::AT_REMOVEDIR).unwrap();
        assert_eq!(read_dir_names(d).unwrap().len(), 3);
    }
}
