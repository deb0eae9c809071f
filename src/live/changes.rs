//! What the live core tells before it changes the backing tree.
//!
//! A point-in-time snapshot (`crate::snapshot`) must keep the state an object
//! had at the snapshot's barrier until the snapshot is copied: before the
//! first change to an object, its pre-image is preserved. The live core knows
//! nothing of snapshots; it calls a [`Changes`] before every change, with the
//! objects the change touches, and applies the change only if the call
//! succeeded (an error is returned to the caller and nothing changes).
//!
//! Calls happen while the write barrier admits the operation, so a barrier
//! that drains in-flight operations also drains these calls.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use super::ids::InodeKey;
use crate::os::Result;

/// An object of the backing tree as the live core holds it.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    /// `(st_dev, st_ino)`.
    pub key: InodeKey,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
    /// An `O_PATH` descriptor of the inode (reopen it through
    /// `/proc/self/fd/N` to read it).
    pub fd: BorrowedFd<'a>,
    /// The keys of the directories above the object, nearest first, up to and
    /// including the source root, as far as the live core knows them; `None`
    /// when a link of the chain is unknown or ambiguous (a file with several
    /// names). Computed on demand: it walks the node table.
    pub lineage: &'a dyn Fn() -> Option<Vec<InodeKey>>,
}

impl std::fmt::Debug for Obj<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obj")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Told before each change. Every method returns before the change is made;
/// an error aborts the change.
pub trait Changes: Send + Sync {
    /// Whether anything listens; when not, the live core skips the work of
    /// finding the objects a change touches (the victim of an unlink, say).
    fn active(&self) -> bool;
    /// Attributes (mode, owner, times) or xattrs of `obj` are about to change.
    fn attrs(&self, obj: &Obj) -> Result<()>;
    /// Bytes `[off, off + len)` of regular file `obj` are about to be written
    /// (write, fallocate, the destination of copy_file_range); implies
    /// [`Changes::attrs`] (size, mtime, ctime change with them).
    fn data(&self, obj: &Obj, off: u64, len: u64) -> Result<()>;
    /// Regular file `obj` is about to be truncated or extended to `size`;
    /// implies [`Changes::attrs`].
    fn truncate(&self, obj: &Obj, size: u64) -> Result<()>;
    /// The entries of directory `dir` are about to change (create, mknod,
    /// mkdir, symlink, link, unlink, rmdir, rename from or to it); implies
    /// [`Changes::attrs`] of `dir`.
    fn entries(&self, dir: &Obj) -> Result<()>;
    /// `victim`, named `name` in `dir`, is about to lose that name (unlink,
    /// rmdir, rename from, or replaced by a rename); called after
    /// [`Changes::entries`] of `dir`. If this is its last name the object
    /// disappears from the backing tree with the change.
    fn unlinking(&self, dir: &Obj, name: &CStr, victim: &Obj) -> Result<()>;
    /// `obj` was just created (it did not exist at any barrier before now).
    fn created(&self, obj: &Obj);
    /// Names of inode `key` the listener added itself (a link that keeps a
    /// removed object for a pending snapshot): the live tree reports a link
    /// count without them, as the source would have it.
    fn hidden_links(&self, _key: InodeKey) -> u64 {
        0
    }
}

/// Nobody listens: the live tree of a mount without snapshots.
pub struct NoChanges;

impl Changes for NoChanges {
    fn active(&self) -> bool {
        false
    }
    fn attrs(&self, _: &Obj) -> Result<()> {
        Ok(())
    }
    fn data(&self, _: &Obj, _: u64, _: u64) -> Result<()> {
        Ok(())
    }
    fn truncate(&self, _: &Obj, _: u64) -> Result<()> {
        Ok(())
    }
    fn entries(&self, _: &Obj) -> Result<()> {
        Ok(())
    }
    fn unlinking(&self, _: &Obj, _: &CStr, _: &Obj) -> Result<()> {
        Ok(())
    }
    fn created(&self, _: &Obj) {}
}
