//! A view of a store as a [`Tree`]: `bkfs mount --store`, and the sealed
//! snapshots under a live mount's `.snapshots/`, with the cache lifetimes
//! an immutable tree deserves.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use super::SnapView;
use crate::vfs::{
    AddEntry, AttrOut, Ctx, DirEntry, Entry, Errno, NodeId, Opened, Result, SetAttr, Statfs, Tree,
    Xattr,
};

/// Entries and attributes inside a snapshot never change: the kernel may
/// keep them until it needs the memory.
pub const SEALED_TTL: Duration = Duration::from_secs(24 * 3600);

/// The root's own entries (snapshots come and go with backup and forget),
/// and negative entries there.
pub const ROOT_TTL: Duration = super::catalog::REFRESH;

/// A store's snapshots, read-only.
pub struct ViewTree {
    view: Arc<SnapView>,
}

impl ViewTree {
    pub fn new(view: Arc<SnapView>) -> ViewTree {
        ViewTree { view }
    }

    pub fn view(&self) -> &Arc<SnapView> {
        &self.view
    }

    /// How long the kernel may trust what it learns about node `id`.
    fn ttl_of(&self, id: u64) -> Duration {
        if id == self.view.root_id() {
            ROOT_TTL
        } else {
            SEALED_TTL
        }
    }

    /// A write-class request on `id`: `ENOENT` for an unknown node, else `EROFS`.
    fn refuse<T>(&self, id: NodeId) -> Result<T> {
        match self.view.modify(id.0) {
            Ok(never) => match never {},
            Err(e) => Err(e),
        }
    }
}

#[allow(unused_variables)]
impl Tree for ViewTree {
    fn lookup(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<Entry> {
        let ttl = self.ttl_of(parent.0);
        match self.view.lookup(parent.0, name) {
            Ok(e) => Ok(Entry { attr: e.attr, ttl }),
            // Inside a snapshot a missing name stays missing.
            Err(Errno::ENOENT) => Ok(Entry::negative(ttl)),
            Err(e) => Err(e),
        }
    }

    fn forget(&self, id: NodeId, n: u64) {
        self.view.forget(id.0, n);
    }

    fn getattr(&self, id: NodeId, _fh: Option<u64>) -> Result<AttrOut> {
        Ok(AttrOut {
            attr: self.view.getattr(id.0)?,
            ttl: self.ttl_of(id.0),
        })
    }

    fn setattr(&self, ctx: &Ctx, id: NodeId, fh: Option<u64>, set: &SetAttr) -> Result<AttrOut> {
        self.refuse(id)
    }

    fn readlink(&self, id: NodeId) -> Result<Vec<u8>> {
        self.view.readlink(id.0)
    }

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> Result<Entry> {
        self.refuse(parent)
    }

    fn mkdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, mode: u32) -> Result<Entry> {
        self.refuse(parent)
    }

    fn unlink(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        self.refuse(parent)
    }

    fn rmdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        self.refuse(parent)
    }

    fn symlink(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, target: &OsStr) -> Result<Entry> {
        self.refuse(parent)
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
        self.refuse(parent)
    }

    fn link(&self, ctx: &Ctx, id: NodeId, new_parent: NodeId, new_name: &OsStr) -> Result<Entry> {
        self.refuse(id)
    }

    /// Files need no handle: reads take the node id (see
    /// [`Tree::needs_opens`]); the page cache is kept across opens.
    fn open(&self, _ctx: &Ctx, id: NodeId, flags: i32) -> Result<Opened> {
        self.view.open(id.0, flags)?;
        Ok(Opened {
            fh: 0,
            keep_cache: true,
            ..Opened::default()
        })
    }

    fn read(&self, id: NodeId, _fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.view.read(id.0, offset, buf)
    }

    fn write(
        &self,
        ctx: &Ctx,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: crate::vfs::WriteFlags,
    ) -> Result<usize> {
        self.refuse(id)
    }

    fn create(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Entry, Opened)> {
        self.refuse(parent)
    }

    fn fallocate(&self, id: NodeId, fh: u64, mode: i32, offset: u64, len: u64) -> Result<()> {
        self.refuse(id)
    }

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
        self.refuse(id_out)
    }

    /// A snapshot's directories never change: the kernel may keep their
    /// listings; the root's changes with backup and forget.
    fn opendir(&self, id: NodeId) -> Result<Opened> {
        let fh = self.view.opendir(id.0)?;
        let immutable = id.0 != self.view.root_id();
        Ok(Opened {
            fh,
            keep_cache: immutable,
            cache_dir: immutable,
            ..Opened::default()
        })
    }

    fn readdir(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> Result<()> {
        let ttl = self.ttl_of(id.0);
        self.view.readdir(fh, offset, plus, |e| {
            add(&DirEntry {
                name: e.name,
                ino: e.ino,
                kind: e.kind,
                next: e.next_offset,
                attr: e.attr,
                ttl,
            })
        })
    }

    fn releasedir(&self, _id: NodeId, fh: u64) {
        self.view.releasedir(fh);
    }

    fn statfs(&self, _id: NodeId) -> Result<Statfs> {
        self.view.statfs()
    }

    fn getxattr(&self, id: NodeId, name: &OsStr, size: u32) -> Result<Xattr> {
        self.view.getxattr(id.0, name, size)
    }

    fn listxattr(&self, id: NodeId, size: u32) -> Result<Xattr> {
        self.view.listxattr(id.0, size)
    }

    fn setxattr(&self, id: NodeId, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        self.refuse(id)
    }

    fn removexattr(&self, id: NodeId, name: &OsStr) -> Result<()> {
        self.refuse(id)
    }

    /// Reads come by node id: the kernel need not send opens at all.
    fn needs_opens(&self) -> bool {
        false
    }
}
