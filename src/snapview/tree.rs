//! A view of a store as a [`Tree`]: `bkfs mount --store`, and the sealed
//! snapshots under a live mount's `.snapshots/`, with the cache lifetimes
//! an immutable tree deserves.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use super::SnapView;
use crate::vfs::{
    AddEntry, AttrOut, Ctx, DirEntry, Entry, Errno, NodeId, Opened, Result, Statfs, Tree, Xattr,
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
}

#[allow(unused_variables)]
impl Tree for ViewTree {
    /// A write-class request: `ENOENT` for an unknown node, else `EROFS`.
    fn refusal(&self, id: NodeId) -> Errno {
        match self.view.modify(id.0) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

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

    fn readlink(&self, id: NodeId) -> Result<Vec<u8>> {
        self.view.readlink(id.0)
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

    /// Reads come by node id: the kernel need not send opens at all.
    fn needs_opens(&self) -> bool {
        false
    }
}
