//! The one interface every tree of a mount implements, with no FUSE in it.
//!
//! A mount shows several trees: the live tree ([`crate::live`]), the
//! control files ([`crate::control`]), the snapshots (pending ones from
//! [`crate::snapshot::pitview`], sealed ones from [`crate::snapview`]).
//! Each implements [`Tree`]; the root of a mount with snapshots is itself a
//! tree of trees ([`mux::Mux`]), and one generic adapter
//! ([`crate::fuse::Adapter`]) serves any tree to the kernel. So a tree is
//! tested without a mount, and what FUSE asks of a filesystem (threading,
//! the write barrier, conversions) is written once.
//!
//! Conventions:
//! - nodes are named by [`NodeId`]s, the `st_ino` users see; their top byte
//!   is a namespace ([`ids`]) that says which tree owns them; open files and
//!   directories by handle numbers (`fh`, plain `u64`) the tree chose;
//! - every reply that hands the kernel an entry (lookup, create, mkdir,
//!   mknod, symlink, link, readdir with attributes) counts one lookup of it,
//!   given back by [`Tree::forget`];
//! - write operations default to the tree's [`Tree::refusal`] (`EROFS`
//!   unless it says otherwise): a read-only tree implements the reads only.

pub mod ids;
pub mod mux;

pub use ids::{Namespace, NodeId, ROOT_ID};

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

pub use nix::errno::Errno;

pub use crate::store::Time;

pub type Result<T> = std::result::Result<T, Errno>;

/// A node's attributes, whatever tree it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    /// `S_IF*` type bits.
    pub kind: u32,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number in the kernel's `dev_t` encoding (as `st_rdev`).
    pub rdev: u64,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O size (`st_blksize`).
    pub blksize: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

/// `st_blksize` of nodes of trees that are not a live directory (views,
/// control files): large, so that `cp` and friends read whole chunks'
/// worth per call.
pub const BLKSIZE: u32 = 128 * 1024;

impl Attr {
    /// The attributes of `st`, shown with node id `ino`.
    pub fn from_stat(st: &libc::stat, ino: u64) -> Attr {
        let t = |sec: i64, nsec: i64| Time {
            sec,
            nsec: nsec as u32,
        };
        Attr {
            ino,
            kind: st.st_mode & libc::S_IFMT,
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink.min(u64::from(u32::MAX)) as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            blksize: st.st_blksize as u32,
            atime: t(st.st_atime, st.st_atime_nsec),
            mtime: t(st.st_mtime, st.st_mtime_nsec),
            ctime: t(st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// A directory or symlink a tree makes up (a root, `latest`, `.` and `..`
    /// of a listing).
    pub fn synthetic(ino: u64, kind: u32, perm: u16, owner: (u32, u32), time: Time) -> Attr {
        Attr {
            ino,
            kind,
            perm,
            nlink: if kind == libc::S_IFDIR { 2 } else { 1 },
            uid: owner.0,
            gid: owner.1,
            rdev: 0,
            size: 0,
            blocks: 0,
            blksize: BLKSIZE,
            atime: time,
            mtime: time,
            ctime: time,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

/// An entry handed to the kernel (it carries one lookup), and how long the
/// kernel may trust it. Node id 0 is a negative entry: the name does not
/// exist, and the kernel may remember that for `ttl`.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

impl Entry {
    /// "No such name", cacheable for `ttl`.
    pub fn negative(ttl: Duration) -> Entry {
        Entry {
            attr: Attr::synthetic(0, 0, 0, (0, 0), Time::default()),
            ttl,
        }
    }

    pub fn id(&self) -> u64 {
        self.attr.ino
    }
}

/// Attributes, and how long the kernel may trust them.
#[derive(Debug, Clone, Copy)]
pub struct AttrOut {
    pub attr: Attr,
    pub ttl: Duration,
}

/// One entry of a directory listing.
#[derive(Debug)]
pub struct DirEntry<'a> {
    pub name: &'a OsStr,
    pub ino: u64,
    /// `S_IF*` type bits.
    pub kind: u32,
    /// Offset to resume the listing after this entry.
    pub next: u64,
    /// In a listing with attributes: this entry's, carrying one lookup
    /// (except for `.` and `..`, which the kernel never makes inodes of).
    pub attr: Option<Attr>,
    /// How long the kernel may trust `attr`.
    pub ttl: Duration,
}

/// Called with each entry of a listing; returns whether it was taken (a
/// full reply refuses it, and its lookup is given back by the tree).
pub type AddEntry<'a> = dyn FnMut(&DirEntry<'_>) -> bool + 'a;

/// Answer to a get/list of extended attributes: the size when asked with
/// size 0, else the data.
#[derive(Debug, PartialEq, Eq)]
pub enum Xattr {
    Size(usize),
    Data(Vec<u8>),
}

impl Xattr {
    /// The answer to a request of `size` bytes for `data`: its size when
    /// asked with 0, `ERANGE` when it does not fit.
    pub fn answer(data: Vec<u8>, size: u32) -> Result<Xattr> {
        if size == 0 {
            Ok(Xattr::Size(data.len()))
        } else if data.len() > size as usize {
            Err(Errno::ERANGE)
        } else {
            Ok(Xattr::Data(data))
        }
    }
}

/// Who asks: from the kernel's request header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The caller's umask (creates only; 0 elsewhere).
    pub umask: u32,
    /// Removing set-id bits and capabilities on truncation is the tree's
    /// job, for callers without CAP_FSETID (`FUSE_HANDLE_KILLPRIV_V2` was
    /// negotiated; the caller's uid stands for the capability).
    pub kill_privs: bool,
}

impl Ctx {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A time for setattr: a given instant, or the current time (`UTIME_NOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    At(SystemTime),
    Now,
}

/// What a setattr request changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl SetAttr {
    /// Changes nothing (the kernel sends such a setattr to remove privileges).
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}

/// What a write request says of itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteFlags {
    /// The writer lacks CAP_FSETID: set-id bits and capabilities go.
    pub kill_privs: bool,
    /// Pages written back from the kernel's cache (a shared mapping, the
    /// writeback cache): nobody retries a short count.
    pub from_cache: bool,
}

/// How the kernel may cache an open file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Keep the file's cached pages from earlier opens.
    pub keep_cache: bool,
    /// No page cache: every read and write reaches the tree.
    pub direct_io: bool,
    /// For directories: the kernel may cache the listing.
    pub cache_dir: bool,
}

impl Opened {
    pub fn plain(fh: u64) -> Opened {
        Opened {
            fh,
            ..Opened::default()
        }
    }
}

/// How the adapter runs requests on a node: the inputs of its threading
/// policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A tree backed by a directory that snapshots are taken of: its
    /// write-class requests pass the write barrier, its writable opens the
    /// fences' gate ([`crate::snapshot::fence`]).
    Backed,
    /// Nothing a point in time needs: requests run on the FUSE worker.
    Virtual,
    /// Writes, mkdir and rmdir do slow work that may wait for applications
    /// using the mount (take a snapshot, quiesce): they run on a thread of
    /// their own, so no FUSE worker waits for the mount itself.
    Slow,
}

/// Statistics of the filesystem under a tree (`statvfs`).
pub type Statfs = libc::statvfs;

/// A tree of nodes, served to the kernel by [`crate::fuse::Adapter`].
///
/// Every method takes node ids the tree handed out (or the root's); an id
/// the tree does not know is `ESTALE`. Write operations default to [`Tree::refusal`],
/// `readlink` to `EINVAL`, the rest must be given.
#[allow(unused_variables)]
pub trait Tree: Send + Sync + 'static {
    /// How requests on node `id` are run.
    fn class(&self, id: NodeId) -> Class {
        Class::Virtual
    }

    fn lookup(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<Entry>;
    /// The kernel forgets `n` lookups of `id`.
    fn forget(&self, id: NodeId, n: u64);
    fn getattr(&self, id: NodeId, fh: Option<u64>) -> Result<AttrOut>;
    /// The errno of a write-class request on node `id` (or in directory
    /// `id`) that this tree does not implement: `EROFS` by default. A tree
    /// says it once here, rather than in every write operation: the control
    /// files answer `EPERM`, a view of the store `ENOENT` for a node it does
    /// not know.
    fn refusal(&self, id: NodeId) -> Errno {
        Errno::EROFS
    }

    fn setattr(&self, ctx: &Ctx, id: NodeId, fh: Option<u64>, set: &SetAttr) -> Result<AttrOut> {
        Err(self.refusal(id))
    }
    fn readlink(&self, id: NodeId) -> Result<Vec<u8>> {
        Err(Errno::EINVAL)
    }

    /// `rdev` is a `dev_t`.
    fn mknod(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> Result<Entry> {
        Err(self.refusal(parent))
    }
    fn mkdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, mode: u32) -> Result<Entry> {
        Err(self.refusal(parent))
    }
    fn unlink(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        Err(self.refusal(parent))
    }
    fn rmdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        Err(self.refusal(parent))
    }
    fn symlink(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, target: &OsStr) -> Result<Entry> {
        Err(self.refusal(parent))
    }
    fn rename(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        new_parent: NodeId,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        Err(self.refusal(parent))
    }
    fn link(&self, ctx: &Ctx, id: NodeId, new_parent: NodeId, new_name: &OsStr) -> Result<Entry> {
        Err(self.refusal(id))
    }

    fn open(&self, ctx: &Ctx, id: NodeId, flags: i32) -> Result<Opened>;
    /// A descriptor of open file `fh` for kernel passthrough, and whether it
    /// is open for writing; `None` where the tree has no backing files.
    fn passthrough_file(&self, id: NodeId, fh: u64) -> Option<Result<(OwnedFd, bool)>> {
        None
    }
    fn read(&self, id: NodeId, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize>;
    fn write(
        &self,
        ctx: &Ctx,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<usize> {
        Err(self.refusal(id))
    }
    fn release(&self, id: NodeId, fh: u64) {}
    fn fsync(&self, id: NodeId, fh: u64, datasync: bool) -> Result<()> {
        Ok(())
    }
    fn create(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Entry, Opened)> {
        Err(self.refusal(parent))
    }
    fn fallocate(&self, id: NodeId, fh: u64, mode: i32, offset: u64, len: u64) -> Result<()> {
        Err(self.refusal(id))
    }
    fn lseek(&self, id: NodeId, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        Err(Errno::ENOSYS)
    }
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        id_in: NodeId,
        fh_in: u64,
        off_in: u64,
        id_out: NodeId,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u32,
    ) -> Result<usize> {
        // The kernel falls back to reading and writing.
        Err(Errno::EXDEV)
    }

    fn opendir(&self, id: NodeId) -> Result<Opened>;
    /// Lists directory `id` (open as `fh`) from `offset`, calling `add` for
    /// each entry until it refuses one; with `plus`, with attributes.
    fn readdir(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> Result<()>;
    fn releasedir(&self, id: NodeId, fh: u64) {}
    fn fsyncdir(&self, id: NodeId, fh: u64, datasync: bool) -> Result<()> {
        Ok(())
    }

    fn statfs(&self, id: NodeId) -> Result<Statfs>;
    fn getxattr(&self, id: NodeId, name: &OsStr, size: u32) -> Result<Xattr>;
    fn listxattr(&self, id: NodeId, size: u32) -> Result<Xattr>;
    fn setxattr(&self, id: NodeId, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        Err(self.refusal(id))
    }
    fn removexattr(&self, id: NodeId, name: &OsStr) -> Result<()> {
        Err(self.refusal(id))
    }

    /// Whether the kernel must send opens of regular files at all. A tree
    /// whose files are read by node id and never change (a standalone view
    /// of a store) answers no: the adapter then answers the first valid open
    /// with `ENOSYS`, and the kernel stops sending opens and releases.
    fn needs_opens(&self) -> bool {
        true
    }

    /// The session is going away (unmount).
    fn destroy(&self) {}
}
