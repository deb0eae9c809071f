//! The diff area on disk: one directory per pending snapshot, one set of
//! files per preserved object (docs/SNAPSHOTS.md, "The diff area").
//!
//! Every record is complete on disk before the hook that wrote it returns:
//! whole-file records (`state.json`, `.attrs`, `.entries`) are written to a
//! `.tmp` name and renamed; preserved blocks are written to `.data` before
//! their index is appended to `.blocks`. A daemon killed at any point leaves
//! a diff area that [`load`] reads back; nothing needs `fsync`, since the
//! page cache outlives the process.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::snapshot::asof::Key;
use crate::store::{Time, Xattr};

/// Preservation granularity of file content.
pub const BLOCK: u64 = 64 * 1024;

/// Entry of a `.blocks` log meaning "every block below the size at the
/// point in time is preserved" (the object could not be kept by a link).
pub const ALL_BLOCKS: u64 = u64::MAX;

/// Version of the diff area layout.
pub const VERSION: u32 = 1;

/// `state.json`: what `commit` fixed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub name: String,
    /// The time the caller gave to `commit` (the snapshot's time).
    pub time: Time,
    /// `CLOCK_REALTIME` read inside the barrier: no change made through the
    /// mount before the barrier has a later ctime.
    pub commit: Time,
    /// `(st_dev, st_ino)` of the source root, to refuse a diff area left for
    /// another tree.
    pub root: Key,
}

/// `K.attrs`: an object's attributes and xattrs as of the point in time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttrsRec {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub xattrs: Vec<Xattr>,
    /// A symlink's target.
    pub target: Option<ByteBuf>,
}

impl AttrsRec {
    pub fn new(st: &libc::stat, xattrs: Vec<Xattr>, target: Option<Vec<u8>>) -> AttrsRec {
        let (mtime, atime, ctime) = crate::sys::stat_times(st);
        AttrsRec {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blksize: st.st_blksize,
            blocks: st.st_blocks,
            atime,
            mtime,
            ctime,
            xattrs,
            target: target.map(ByteBuf::from),
        }
    }

    pub fn to_stat(&self) -> libc::stat {
        // SAFETY: `struct stat` is plain old data; all zeros is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = self.dev;
        st.st_ino = self.ino;
        st.st_mode = self.mode;
        st.st_nlink = self.nlink;
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_rdev = self.rdev;
        st.st_size = self.size as i64;
        st.st_blksize = self.blksize;
        st.st_blocks = self.blocks;
        st.st_atime = self.atime.sec;
        st.st_atime_nsec = self.atime.nsec as i64;
        st.st_mtime = self.mtime.sec;
        st.st_mtime_nsec = self.mtime.nsec as i64;
        st.st_ctime = self.ctime.sec;
        st.st_ctime_nsec = self.ctime.nsec as i64;
        st
    }
}

/// One entry of a `K.entries` record: a directory's listing as of the point
/// in time, sorted by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryRec {
    pub name: ByteBuf,
    pub dev: u64,
    pub ino: u64,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
    /// `handle_type` (4 bytes, little endian) then `f_handle`, from
    /// `name_to_handle_at`: finds the object wherever it was renamed since.
    pub handle: Option<ByteBuf>,
}

impl EntryRec {
    pub fn key(&self) -> Key {
        (self.dev, self.ino)
    }
}

/// The file name of record `ext` of object `key` in a diff dir.
pub fn rec_name(key: Key, ext: &str) -> CString {
    CString::new(format!("{:x}-{:x}.{ext}", key.0, key.1)).expect("no NUL in a record name")
}

/// Parses a record file name back into its key and extension.
pub fn parse_rec_name(name: &[u8]) -> Option<(Key, &str)> {
    let name = std::str::from_utf8(name).ok()?;
    let (stem, ext) = name.split_once('.')?;
    let (dev, ino) = stem.split_once('-')?;
    Some((
        (
            u64::from_str_radix(dev, 16).ok()?,
            u64::from_str_radix(ino, 16).ok()?,
        ),
        ext,
    ))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    check(fd)?;
    // SAFETY: `fd` was just returned by a successful open and is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn openat(dir: BorrowedFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })
}

pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    crate::sys::fstat(fd)
}

pub fn fstatat(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    crate::sys::fstatat(dir, name)
}

/// `/proc/self/fd/N`: reaches the inode an `O_PATH` descriptor holds.
pub fn proc_path(fd: BorrowedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// Reopens an `O_PATH` descriptor for I/O.
pub fn reopen(fd: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    let path = proc_path(fd);
    let open = |flags: i32| {
        // SAFETY: `path` is a valid C string.
        owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
    };
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        match open(flags | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            r => return r,
        }
    }
    open(flags)
}

pub fn read_link(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    crate::live::sys::readlink_fd(fd).map_err(io::Error::from)
}

/// All xattrs of the inode an `O_PATH` descriptor holds, sorted by name.
pub fn xattrs_of(fd: BorrowedFd) -> io::Result<Vec<Xattr>> {
    use crate::live::sys as lsys;
    let path = proc_path(fd);
    let unsupported = |e: nix::errno::Errno| matches!(e, nix::errno::Errno::ENOTSUP);
    let mut names = vec![0u8; 1024];
    let len = loop {
        match lsys::listxattr(&path, &mut names) {
            Ok(n) => break n,
            Err(nix::errno::Errno::ERANGE) => {
                let want = lsys::listxattr(&path, &mut []).map_err(io::Error::from)?;
                names.resize(want.max(names.len() * 2), 0);
            }
            Err(e) if unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = crate::sys::cstr(name)?;
        let mut value = vec![0u8; 256];
        loop {
            match lsys::getxattr(&path, &cname, &mut value) {
                Ok(n) => {
                    value.truncate(n);
                    out.push(Xattr {
                        name: name.to_vec(),
                        value,
                    });
                    break;
                }
                Err(nix::errno::Errno::ERANGE) => {
                    let want = lsys::getxattr(&path, &cname, &mut []).map_err(io::Error::from)?;
                    value.resize(want.max(value.len() * 2), 0);
                }
                Err(nix::errno::Errno::ENODATA) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `MAX_HANDLE_SZ` of the kernel.
const MAX_HANDLE_SZ: usize = 128;

#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// The file handle of `name` in `dir` (not following a symlink), encoded as
/// in [`EntryRec::handle`]; `None` where the filesystem has none.
pub fn handle_at(dir: BorrowedFd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    name_to_handle(dir, name, 0)
}

/// The file handle of the object `fd` holds, as [`handle_at`] gives.
pub fn handle_of(fd: BorrowedFd) -> io::Result<Option<Vec<u8>>> {
    name_to_handle(fd, c"", libc::AT_EMPTY_PATH)
}

fn name_to_handle(dir: BorrowedFd, name: &CStr, flags: i32) -> io::Result<Option<Vec<u8>>> {
    let mut h = FileHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` has room for MAX_HANDLE_SZ bytes as announced; `name` is a
    // valid C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut h as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    if ret == -1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::EOVERFLOW) => Ok(None),
            _ => Err(e),
        };
    }
    let n = h.handle_bytes as usize;
    let mut out = h.handle_type.to_le_bytes().to_vec();
    out.extend_from_slice(&h.f_handle[..n]);
    Ok(Some(out))
}

/// Opens (`O_PATH`) the object a handle from [`handle_at`] names, through
/// `mount`, any descriptor on its filesystem.
pub fn open_handle(mount: BorrowedFd, handle: &[u8]) -> io::Result<OwnedFd> {
    if handle.len() < 4 || handle.len() - 4 > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut h = FileHandle {
        handle_bytes: (handle.len() - 4) as u32,
        handle_type: i32::from_le_bytes(handle[..4].try_into().expect("4 bytes")),
        f_handle: [0; MAX_HANDLE_SZ],
    };
    h.f_handle[..handle.len() - 4].copy_from_slice(&handle[4..]);
    // SAFETY: `h` is a valid file_handle; the result is a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &h as *const FileHandle,
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    owned(fd as libc::c_int)
}

/// Hard-links the inode `fd` holds (`O_PATH`) as `name` in `dir`.
pub fn link_into(fd: BorrowedFd, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: both strings are valid C strings.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// The data segments of `fd` within `[start, end)`, ascending
/// (`SEEK_DATA`/`SEEK_HOLE`).
pub fn data_segments(fd: BorrowedFd, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: plain lseek on a valid descriptor.
        let data = unsafe { libc::lseek(fd.as_raw_fd(), pos as i64, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e);
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd.as_raw_fd(), data as i64, libc::SEEK_HOLE) };
        if hole < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                // Truncated under us (the reader of a file whose cut blocks
                // are all preserved takes no lock the truncate waits for).
                break;
            }
            return Err(e);
        }
        let hole = (hole as u64).min(end);
        if hole <= data {
            break;
        }
        out.push((data, hole - data));
        pos = hole;
    }
    Ok(out)
}

/// Reads `buf.len()` bytes at `off`, zeros past the end of the file.
pub fn read_full(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// Copies the data segments of `src` within `[start, end)` to the same
/// offsets of `dst`, so holes stay holes. `copy_file_range` first (a
/// filesystem that shares extents makes it a reflink), by hand if it fails.
pub fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = Vec::new();
    for (off, len) in data_segments(src.as_fd(), start, end)? {
        let stop = off + len;
        let mut pos = off;
        while pos < stop {
            let mut at_in = pos as i64;
            let mut at_out = pos as i64;
            // SAFETY: both descriptors are open; the offsets are valid
            // in/out pointers for the duration of the call.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut at_in,
                    dst.as_raw_fd(),
                    &mut at_out,
                    (stop - pos) as usize,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            pos += n as u64;
        }
        while pos < stop {
            buf.resize(BLOCK as usize, 0);
            let n = (stop - pos).min(BLOCK) as usize;
            read_full(src, &mut buf[..n], pos)?;
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
    }
    Ok(())
}

/// Writes a whole record: `name.tmp`, then renamed to `name`.
pub fn write_atomic(dir: BorrowedFd, name: &CStr, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = name.to_bytes().to_vec();
    tmp.extend_from_slice(b".tmp");
    let tmp = CString::new(tmp).expect("no NUL");
    let fd = openat(
        dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o600,
    )?;
    File::from(fd).write_all(bytes)?;
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::renameat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
        )
    })
    .map(drop)
}

pub fn read_all(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::from(openat(dir, name, libc::O_RDONLY, 0)?).read_to_end(&mut out)?;
    Ok(out)
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("records always serialize")
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What a diff dir holds for one object, as read back by [`load`].
#[derive(Default)]
pub struct Loaded {
    pub attrs: Option<Arc<AttrsRec>>,
    pub entries: Option<Arc<Vec<EntryRec>>>,
    pub blocks: BTreeSet<u64>,
    pub all: bool,
    pub linked: bool,
}

/// Reads every record of a diff dir (removing half-written `.tmp` files).
pub fn load(dir: BorrowedFd) -> io::Result<Vec<(Key, Loaded)>> {
    let mut map: std::collections::HashMap<Key, Loaded> = Default::default();
    for name in crate::sys::read_dir_names(dir)? {
        let Some((key, ext)) = parse_rec_name(&name) else {
            continue;
        };
        let cname = crate::sys::cstr(&name)?;
        let rec = map.entry(key).or_default();
        match ext {
            "attrs" => rec.attrs = Some(Arc::new(decode(&read_all(dir, &cname)?)?)),
            "entries" => rec.entries = Some(Arc::new(decode(&read_all(dir, &cname)?)?)),
            "link" => rec.linked = true,
            "blocks" => {
                let bytes = read_all(dir, &cname)?;
                // A torn last record cannot be: each is one 8-byte append.
                for b in bytes.chunks_exact(8) {
                    let b = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                    if b == ALL_BLOCKS {
                        rec.all = true;
                    } else {
                        rec.blocks.insert(b);
                    }
                }
            }
            _ if ext.ends_with("tmp") => {
                // SAFETY: valid C string.
                unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) };
            }
            _ => {}
        }
    }
    Ok(map.into_iter().collect())
}

/// Whether a directory (opened for reading) has no entry but `.` and `..`;
/// reads only as far as the first other entry.
pub fn dir_is_empty(dir: OwnedFd) -> io::Result<bool> {
    let mut d = nix::dir::Dir::from_fd(dir).map_err(io::Error::from)?;
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `name` is one of `hidden`.
pub fn is_hidden(hidden: &[std::ffi::OsString], name: &[u8]) -> bool {
    hidden.iter().any(|h| h.as_bytes() == name)
}
