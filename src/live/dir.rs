//! Directory streams: listing a backing directory with stable offsets.
//!
//! The offset of each entry we report is the backing filesystem's own `d_off`
//! cookie (what telldir(3) returns). A later readdir at that offset seeks the
//! backing directory there, so a listing stays correct while entries are
//! added or removed concurrently: the backing filesystem (ext4's hash order,
//! for one) guarantees every entry present for the whole listing is returned
//! exactly once. Reads are buffered per handle; a readdir that continues where
//! the previous one stopped uses the buffer without seeking.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::sys::{self, Result};

const BUF_SIZE: usize = 32 * 1024;

/// One raw entry of a backing directory.
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    pub ino: u64,
    /// Offset of the entry after this one (the value to resume from).
    pub next_off: i64,
    /// `DT_*` type.
    pub d_type: u8,
    pub name: &'a OsStr,
}

pub struct DirStream {
    fd: OwnedFd,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Offset of the entry at `pos` (0 before the first).
    off: i64,
}

impl DirStream {
    pub fn new(fd: OwnedFd) -> DirStream {
        DirStream {
            fd,
            buf: vec![0u8; BUF_SIZE],
            pos: 0,
            len: 0,
            off: 0,
        }
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Lists entries from `offset`, passing each to `f`, until `f` returns
    /// `false` (the reply is full: the entry was not taken and will be listed
    /// again from the same offset) or the directory ends.
    pub fn list(
        &mut self,
        offset: i64,
        mut f: impl FnMut(&RawEntry<'_>) -> Result<bool>,
    ) -> Result<()> {
        if offset != self.off {
            sys::lseek(self.fd.as_fd(), offset, libc::SEEK_SET)?;
            self.pos = 0;
            self.len = 0;
            self.off = offset;
        }
        loop {
            if self.pos >= self.len {
                self.len = sys::getdents64(self.fd.as_fd(), &mut self.buf)?;
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

pub fn is_dot_or_dotdot(name: &OsStr) -> bool {
    matches!(name.as_bytes(), b"." | b"..")
}
