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
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ingest::asof::Key;
use crate::os::handle::FileHandle;
use crate::os::{self, fd, Follow};
use crate::store::{Time, Xattr};

/// Preservation granularity of file content.
pub const BLOCK: u64 = 64 * 1024;

/// Entry of a `.blocks` log meaning "every block below the size at the
/// point in time is preserved" (the object could not be kept by a link).
pub const ALL_BLOCKS: u64 = u64::MAX;

/// The record of a snapshot that failed (its reason, as text), written
/// before the change whose pre-image could not be kept.
pub const FAILED: &CStr = c"failed";

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
        let (mtime, atime, ctime) = os::time::stat_times(st);
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
        let mut st = os::zeroed_stat();
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
        os::time::set_stat_times(&mut st, self.mtime, self.atime, self.ctime);
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

/// The file handle of `name` in `dir` (not following a symlink), encoded as
/// in [`EntryRec::handle`]; `None` where the filesystem has none.
pub fn handle_at(dir: BorrowedFd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    match FileHandle::at(dir, name) {
        Ok(h) => Ok(Some(h.to_bytes())),
        Err(e) if FileHandle::unsupported(e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file handle of the object `fd` holds, as [`handle_at`] gives.
pub fn handle_of(fd: BorrowedFd) -> io::Result<Option<Vec<u8>>> {
    match FileHandle::of(fd) {
        Ok(h) => Ok(Some(h.to_bytes())),
        Err(e) if FileHandle::unsupported(e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens (`O_PATH`) the object a handle from [`handle_at`] names, through
/// `mount`, any descriptor on its filesystem.
pub fn open_handle(mount: BorrowedFd, handle: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    let h = FileHandle::from_bytes(handle)?;
    Ok(h.open(mount, libc::O_PATH | libc::O_NOFOLLOW)?)
}

/// Reads `buf.len()` bytes at `off`, zeros past the end of the file.
pub fn read_full(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let n = os::io::read_full_at(file.as_fd(), buf, off)?;
    buf[n..].fill(0);
    Ok(())
}

/// Writes a whole record: `name.tmp`, then renamed to `name`.
pub fn write_atomic(dir: BorrowedFd, name: &CStr, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = name.to_bytes().to_vec();
    tmp.extend_from_slice(b".tmp");
    let tmp = CString::new(tmp).expect("no NUL");
    let fd = fd::openat(
        dir,
        &tmp,
        Follow::No,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o600,
    )?;
    os::io::write_all(fd.as_fd(), bytes, "area.record.write")?;
    drop(fd);
    Ok(os::dir::renameat2(
        dir,
        &tmp,
        dir,
        name,
        0,
        "area.record.rename",
    )?)
}

pub fn read_all(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::from(fd::openat(dir, name, Follow::No, libc::O_RDONLY, 0)?).read_to_end(&mut out)?;
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
    for name in os::dir::read_dir_names(dir)? {
        let Some((key, ext)) = parse_rec_name(&name) else {
            continue;
        };
        let cname = os::cstr(&name)?;
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
                let _ = os::dir::unlinkat(dir, &cname, 0);
            }
            _ => {}
        }
    }
    Ok(map.into_iter().collect())
}

/// What the files of a diff dir take on disk, its links left out (they
/// keep live inodes, not pre-images).
pub fn used_bytes(dir: BorrowedFd) -> io::Result<u64> {
    let mut used = 0u64;
    for name in os::dir::read_dir_names(dir)? {
        if name.ends_with(b".link") {
            continue;
        }
        let st = match fd::fstatat(dir, &os::cstr(&name)?, Follow::No) {
            Ok(st) => st,
            Err(os::Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        used = used.saturating_add((st.st_blocks as u64).saturating_mul(512));
    }
    Ok(used)
}

/// Whether `name` is one of `hidden`.
pub fn is_hidden(hidden: &[std::ffi::OsString], name: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    hidden.iter().any(|h| h.as_bytes() == name)
}
