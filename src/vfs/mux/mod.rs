//! The root of a mount with snapshots: a tree of trees.
//!
//! The live tree fills the root; beside its entries hang the virtual
//! directories (`.control`, `.snapshots`, `.quiesce`), each the top of
//! another tree. Requests go to the tree that owns the node's namespace
//! ([`super::ids`]); an id of no tree is `ESTALE`. What the mux decides
//! itself:
//! - lookups of the virtual names in the root;
//! - the root's listing: the live entries, then the virtual ones when they
//!   are visible (`snapdir=visible`), at offsets the live tree never uses;
//! - the live tree may not make, remove or rename onto a virtual name in
//!   the root (the source may have one: it is then shadowed);
//! - a rename or link between trees is `EXDEV` when one side is live (the
//!   kernel or the tool falls back to copying), `EROFS` otherwise;
//! - statfs is the live tree's.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::{
    AddEntry, AttrOut, Class, Ctx, DirEntry, Entry, Errno, Namespace, NodeId, Opened, Result,
    SetAttr, Statfs, Tree, WriteFlags, Xattr,
};

/// Root listing offsets at and above this are the virtual entries'.
const VIRT_BASE: u64 = (i64::MAX as u64) - 16;

/// Names of the virtual directories in the root.
#[derive(Debug, Clone)]
pub struct VirtualNames {
    pub control: String,
    pub snapshots: String,
    pub quiesce: String,
    /// Listed by readdir of the root (`snapdir=visible`).
    pub visible: bool,
}

impl Default for VirtualNames {
    fn default() -> Self {
        VirtualNames {
            control: ".control".into(),
            snapshots: ".snapshots".into(),
            quiesce: ".quiesce".into(),
            visible: false,
        }
    }
}

/// A virtual directory of the root.
pub struct Virtual {
    pub name: String,
    /// Its node id; the tree owning its namespace serves it.
    pub id: NodeId,
}

/// The trees of a mount, by namespace.
pub struct Mux {
    live: Arc<dyn Tree>,
    control: Arc<dyn Tree>,
    snapshots: Arc<dyn Tree>,
    /// In the order the root lists them.
    virtuals: Vec<Virtual>,
    /// Whether the root's listing shows the virtual directories.
    visible: bool,
}

impl Mux {
    pub fn new(
        live: Arc<dyn Tree>,
        control: Arc<dyn Tree>,
        snapshots: Arc<dyn Tree>,
        virtuals: Vec<Virtual>,
        visible: bool,
    ) -> Mux {
        Mux {
            live,
            control,
            snapshots,
            virtuals,
            visible,
        }
    }

    /// The tree that owns node `id`.
    fn tree(&self, id: NodeId) -> Result<&dyn Tree> {
        Ok(match id.namespace()? {
            Namespace::Live => &*self.live,
            Namespace::Control => &*self.control,
            Namespace::Snapshots | Namespace::Pending => &*self.snapshots,
        })
    }

    fn is_live(&self, id: NodeId) -> bool {
        matches!(id.namespace(), Ok(Namespace::Live))
    }

    /// The virtual directory named `name` in the root.
    fn virtual_named(&self, parent: NodeId, name: &OsStr) -> Option<&Virtual> {
        if !parent.is_root() {
            return None;
        }
        self.virtuals
            .iter()
            .find(|v| v.name.as_bytes() == name.as_bytes())
    }

    /// `name` in `parent` is a virtual directory's: the live tree may not
    /// make, remove or rename one there.
    fn reserved(&self, parent: NodeId, name: &OsStr) -> bool {
        self.virtual_named(parent, name).is_some()
    }

    /// Lists the root with the virtual entries after the live ones.
    fn root_listing(&self, fh: u64, offset: u64, plus: bool, add: &mut AddEntry<'_>) -> Result<()> {
        let mut full = false;
        if offset < VIRT_BASE {
            self.live
                .readdir(NodeId::ROOT, fh, offset, plus, &mut |e: &DirEntry<'_>| {
                    // A live cookie that would land in our range ends the live part.
                    let e = DirEntry {
                        next: e.next.min(VIRT_BASE),
                        ..*e
                    };
                    let taken = add(&e);
                    full = !taken;
                    taken
                })?;
        }
        if full {
            return Ok(());
        }
        let first = offset.saturating_sub(VIRT_BASE) as usize;
        for (i, v) in self.virtuals.iter().enumerate().skip(first) {
            let Ok(a) = self.tree(v.id)?.getattr(v.id, None) else {
                continue;
            };
            let e = DirEntry {
                name: OsStr::new(&v.name),
                ino: v.id.0,
                kind: a.attr.kind,
                next: VIRT_BASE + i as u64 + 1,
                attr: plus.then_some(a.attr),
                ttl: a.ttl,
            };
            if !add(&e) {
                break;
            }
        }
        Ok(())
    }
}

impl Tree for Mux {
    fn class(&self, id: NodeId) -> Class {
        match self.tree(id) {
            Ok(t) => t.class(id),
            Err(_) => Class::Virtual,
        }
    }

    fn lookup(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<Entry> {
        if let Some(v) = self.virtual_named(parent, name) {
            let a = self.tree(v.id)?.getattr(v.id, None)?;
            return Ok(Entry {
                attr: a.attr,
                ttl: a.ttl,
            });
        }
        self.tree(parent)?.lookup(ctx, parent, name)
    }

    fn forget(&self, id: NodeId, n: u64) {
        if let Ok(t) = self.tree(id) {
            t.forget(id, n);
        }
    }

    fn getattr(&self, id: NodeId, fh: Option<u64>) -> Result<AttrOut> {
        self.tree(id)?.getattr(id, fh)
    }

    fn setattr(&self, ctx: &Ctx, id: NodeId, fh: Option<u64>, set: &SetAttr) -> Result<AttrOut> {
        self.tree(id)?.setattr(ctx, id, fh, set)
    }

    fn readlink(&self, id: NodeId) -> Result<Vec<u8>> {
        self.tree(id)?.readlink(id)
    }

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> Result<Entry> {
        if self.reserved(parent, name) {
            return Err(Errno::EEXIST);
        }
        self.tree(parent)?.mknod(ctx, parent, name, mode, rdev)
    }

    fn mkdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, mode: u32) -> Result<Entry> {
        if self.reserved(parent, name) {
            return Err(Errno::EEXIST);
        }
        self.tree(parent)?.mkdir(ctx, parent, name, mode)
    }

    fn unlink(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        if self.reserved(parent, name) {
            return Err(Errno::EPERM);
        }
        self.tree(parent)?.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        if self.reserved(parent, name) {
            return Err(Errno::EPERM);
        }
        self.tree(parent)?.rmdir(ctx, parent, name)
    }

    fn symlink(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, target: &OsStr) -> Result<Entry> {
        if self.reserved(parent, name) {
            return Err(Errno::EEXIST);
        }
        self.tree(parent)?.symlink(ctx, parent, name, target)
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
        match (self.is_live(parent), self.is_live(new_parent)) {
            (true, true) if self.reserved(parent, name) || self.reserved(new_parent, new_name) => {
                Err(Errno::EPERM)
            }
            (true, true) => self
                .live
                .rename(ctx, parent, name, new_parent, new_name, flags),
            (true, false) | (false, true) => Err(Errno::EXDEV),
            (false, false) => {
                self.tree(parent)?;
                Err(Errno::EROFS)
            }
        }
    }

    fn link(&self, ctx: &Ctx, id: NodeId, new_parent: NodeId, new_name: &OsStr) -> Result<Entry> {
        match (self.is_live(id), self.is_live(new_parent)) {
            (true, true) if self.reserved(new_parent, new_name) => Err(Errno::EEXIST),
            (true, true) => self.live.link(ctx, id, new_parent, new_name),
            (true, false) | (false, true) => Err(Errno::EXDEV),
            (false, false) => {
                self.tree(id)?;
                Err(Errno::EROFS)
            }
        }
    }

    fn open(&self, ctx: &Ctx, id: NodeId, flags: i32) -> Result<Opened> {
        self.tree(id)?.open(ctx, id, flags)
    }

    fn passthrough_file(&self, id: NodeId, fh: u64) -> Option<Result<(OwnedFd, bool)>> {
        self.tree(id).ok()?.passthrough_file(id, fh)
    }

    fn read(&self, id: NodeId, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.tree(id)?.read(id, fh, offset, buf)
    }

    fn write(
        &self,
        ctx: &Ctx,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<usize> {
        self.tree(id)?.write(ctx, id, fh, offset, data, flags)
    }

    fn release(&self, id: NodeId, fh: u64) {
        if let Ok(t) = self.tree(id) {
            t.release(id, fh);
        }
    }

    fn fsync(&self, id: NodeId, fh: u64, datasync: bool) -> Result<()> {
        self.tree(id)?.fsync(id, fh, datasync)
    }

    fn create(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Entry, Opened)> {
        if self.reserved(parent, name) {
            return Err(Errno::EEXIST);
        }
        self.tree(parent)?.create(ctx, parent, name, mode, flags)
    }

    fn fallocate(&self, id: NodeId, fh: u64, mode: i32, offset: u64, len: u64) -> Result<()> {
        self.tree(id)?.fallocate(id, fh, mode, offset, len)
    }

    fn lseek(&self, id: NodeId, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        self.tree(id)?.lseek(id, fh, offset, whence)
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
        if self.is_live(id_in) && self.is_live(id_out) {
            return self
                .live
                .copy_file_range(id_in, fh_in, off_in, id_out, fh_out, off_out, len, flags);
        }
        // The kernel falls back to reading and writing.
        Err(Errno::EXDEV)
    }

    fn opendir(&self, id: NodeId) -> Result<Opened> {
        self.tree(id)?.opendir(id)
    }

    fn readdir(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> Result<()> {
        if id.is_root() && self.visible {
            return self.root_listing(fh, offset, plus, add);
        }
        self.tree(id)?.readdir(id, fh, offset, plus, add)
    }

    fn releasedir(&self, id: NodeId, fh: u64) {
        if let Ok(t) = self.tree(id) {
            t.releasedir(id, fh);
        }
    }

    fn fsyncdir(&self, id: NodeId, fh: u64, datasync: bool) -> Result<()> {
        self.tree(id)?.fsyncdir(id, fh, datasync)
    }

    /// The live tree's filesystem, whichever node is asked about.
    fn statfs(&self, _id: NodeId) -> Result<Statfs> {
        self.live.statfs(NodeId::ROOT)
    }

    fn getxattr(&self, id: NodeId, name: &OsStr, size: u32) -> Result<Xattr> {
        self.tree(id)?.getxattr(id, name, size)
    }

    fn listxattr(&self, id: NodeId, size: u32) -> Result<Xattr> {
        self.tree(id)?.listxattr(id, size)
    }

    fn setxattr(&self, id: NodeId, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        self.tree(id)?.setxattr(id, name, value, flags)
    }

    fn removexattr(&self, id: NodeId, name: &OsStr) -> Result<()> {
        self.tree(id)?.removexattr(id, name)
    }

    fn destroy(&self) {
        self.snapshots.destroy();
        self.control.destroy();
        self.live.destroy();
    }
}

#[cfg(test)]
mod tests;
