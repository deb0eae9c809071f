//! The FUSE adapter: the only module that knows fuser.
//!
//! [`Adapter`] serves any [`crate::vfs::Tree`] to the kernel: it converts
//! requests to tree calls and results to replies, once for every tree, and
//! owns what FUSE asks of a daemon beyond the trees: the INIT negotiation
//! ([`init`]), the threading policy (which requests pass the write barrier
//! or the fences' gate, which run on a thread of their own), kernel
//! passthrough ([`iomode`]) and the page cache's lifetimes.

mod adapter;
pub mod init;
pub mod iomode;

use std::time::UNIX_EPOCH;

use fuser::{FileAttr, FileType, INodeNo};

pub use adapter::Adapter;
pub use init::Profile;

use crate::vfs::{self, Attr};

/// Settings of an adapter.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to negotiate with the kernel at INIT.
    pub profile: Profile,
    /// Use kernel passthrough when the kernel has it.
    pub passthrough: bool,
    /// Also for opens that write (else read-only opens only).
    pub passthrough_writes: bool,
    /// Ask for the kernel's writeback cache (excludes passthrough).
    pub writeback: bool,
    /// Points in time are fixed on this mount: every write(2) must hold its
    /// inode's lock until its last request is answered, so no asynchronous
    /// direct I/O (see [`crate::snapshot::fence`]).
    pub point_in_time: bool,
}

impl Config {
    /// A live tree's defaults: passthrough for every open.
    pub fn live() -> Config {
        Config {
            profile: Profile::Live,
            passthrough: true,
            passthrough_writes: true,
            writeback: false,
            point_in_time: false,
        }
    }

    /// A read-only view of a store.
    pub fn view() -> Config {
        Config {
            profile: Profile::View,
            passthrough: false,
            passthrough_writes: false,
            writeback: false,
            point_in_time: false,
        }
    }
}

/// The errno to reply with.
pub(crate) fn errno(e: vfs::Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

/// The one mode → file type conversion.
pub(crate) fn file_type(kind: u32) -> FileType {
    match kind & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The kernel's 32-bit device number (`new_encode_dev`) of a `dev_t`.
pub fn encode_dev(dev: libc::dev_t) -> u32 {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The `dev_t` of the kernel's 32-bit device number.
pub fn decode_dev(rdev: u32) -> libc::dev_t {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.into(),
        mtime: a.mtime.into(),
        ctime: a.ctime.into(),
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: encode_dev(a.rdev as libc::dev_t),
        blksize: a.blksize,
        flags: 0,
    }
}

/// Read-ahead's way into the kernel's page cache: `FUSE_NOTIFY_STORE`.
/// Sent from the read-ahead threads, never from a request handler. A node
/// the kernel has dropped meanwhile answers ENOENT: nothing to do then.
pub fn page_cache_push(notifier: fuser::Notifier) -> crate::snapview::Push {
    Box::new(move |ino, offset, data| {
        if let Err(e) = notifier.store(INodeNo(ino), offset, data) {
            tracing::debug!("page cache push of {ino:#x}: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::Time;
    use std::time::{Duration, SystemTime};

    #[test]
    fn device_numbers_round_trip_through_the_kernels_encoding() {
        for (major, minor) in [(0, 0), (8, 1), (259, 3), (4095, 1 << 19)] {
            let dev = libc::makedev(major, minor);
            assert_eq!(decode_dev(encode_dev(dev)), dev, "{major}:{minor}");
        }
    }

    #[test]
    fn times_before_the_epoch_convert() {
        let t = SystemTime::from(Time { sec: -2, nsec: 5 });
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::new(1, 999_999_995)
        );
    }
}
