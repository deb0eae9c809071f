//! The live tree as a [`Tree`]: what the kernel asks, passed to [`Live`].

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use super::{Caller, Live};
use crate::vfs::{
    self, AddEntry, AttrOut, Class, Ctx, DirEntry, Entry, Errno, NodeId, Opened, SetAttr, Statfs,
    Tree, WriteFlags, Xattr,
};

/// The live tree served to the kernel, with how long the kernel may trust
/// what it learns of it.
pub struct LiveTree {
    live: Arc<Live>,
    ttl: Duration,
}

impl LiveTree {
    pub fn new(live: Arc<Live>, ttl: Duration) -> LiveTree {
        LiveTree { live, ttl }
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn attr(&self, a: super::Attr) -> vfs::Attr {
        vfs::Attr::from_stat(&a.st, a.id())
    }

    fn entry(&self, e: vfs::Result<super::Entry>) -> vfs::Result<Entry> {
        e.map(|e| Entry {
            attr: self.attr(e.attr),
            ttl: self.ttl,
        })
    }

    fn attr_out(&self, a: vfs::Result<super::Attr>) -> vfs::Result<AttrOut> {
        a.map(|a| AttrOut {
            attr: self.attr(a),
            ttl: self.ttl,
        })
    }
}

fn caller(ctx: &Ctx) -> Caller {
    Caller {
        uid: ctx.uid,
        gid: ctx.gid,
        umask: ctx.umask,
    }
}

impl Tree for LiveTree {
    fn class(&self, _id: NodeId) -> Class {
        Class::Backed
    }

    /// A missing name is answered with a negative entry that the kernel may
    /// cache as long as a positive one: compilers and git probe many names
    /// that do not exist. A name created through the mount replaces the
    /// negative entry at once.
    fn lookup(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> vfs::Result<Entry> {
        match self.live.lookup(parent.0, name) {
            Err(Errno::ENOENT) if !self.ttl.is_zero() => Ok(Entry::negative(self.ttl)),
            r => self.entry(r),
        }
    }

    fn forget(&self, id: NodeId, n: u64) {
        self.live.forget(id.0, n);
    }

    fn getattr(&self, id: NodeId, _fh: Option<u64>) -> vfs::Result<AttrOut> {
        self.attr_out(self.live.getattr(id.0))
    }

    /// With `ctx.kill_privs` the kernel asks the daemon to remove privileges
    /// with a flag fuser does not pass on: on a truncation, and as a setattr
    /// that changes nothing, sent before a write (also a passthrough one)
    /// by a process without CAP_FSETID. The reply carries the new mode, so
    /// the kernel's cached attributes stay right.
    fn setattr(
        &self,
        ctx: &Ctx,
        id: NodeId,
        fh: Option<u64>,
        set: &SetAttr,
    ) -> vfs::Result<AttrOut> {
        let mut r = self.live.setattr(id.0, fh, set);
        let nothing = set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.atime.is_none()
            && set.mtime.is_none();
        if r.is_ok() && (set.size.is_some() || nothing) && !ctx.is_root() && ctx.kill_privs {
            r = self
                .live
                .kill_privs(id.0)
                .and_then(|()| self.live.getattr(id.0));
        }
        self.attr_out(r)
    }

    fn readlink(&self, id: NodeId) -> vfs::Result<Vec<u8>> {
        self.live.readlink(id.0)
    }

    fn mknod(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> vfs::Result<Entry> {
        let r = self
            .live
            .mknod(&caller(ctx), parent.0, name, mode, ctx.umask, rdev);
        self.entry(r)
    }

    fn mkdir(&self, ctx: &Ctx, parent: NodeId, name: &OsStr, mode: u32) -> vfs::Result<Entry> {
        self.entry(
            self.live
                .mkdir(&caller(ctx), parent.0, name, mode, ctx.umask),
        )
    }

    fn unlink(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> vfs::Result<()> {
        self.live.unlink(parent.0, name)
    }

    fn rmdir(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> vfs::Result<()> {
        self.live.rmdir(parent.0, name)
    }

    fn symlink(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        target: &OsStr,
    ) -> vfs::Result<Entry> {
        self.entry(self.live.symlink(&caller(ctx), parent.0, name, target))
    }

    fn rename(
        &self,
        _ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        new_parent: NodeId,
        new_name: &OsStr,
        flags: u32,
    ) -> vfs::Result<()> {
        self.live
            .rename(parent.0, name, new_parent.0, new_name, flags)
    }

    fn link(
        &self,
        _ctx: &Ctx,
        id: NodeId,
        new_parent: NodeId,
        new_name: &OsStr,
    ) -> vfs::Result<Entry> {
        self.entry(self.live.link(id.0, new_parent.0, new_name))
    }

    /// Truncation by an unprivileged caller removes privileges (see setattr).
    fn open(&self, ctx: &Ctx, id: NodeId, flags: i32) -> vfs::Result<Opened> {
        if flags & libc::O_TRUNC != 0
            && !ctx.is_root()
            && ctx.kill_privs
            && self.live.has_privs(id.0).unwrap_or(false)
        {
            let _ = self.live.kill_privs(id.0);
        }
        self.live.open(id.0, flags).map(Opened::plain)
    }

    fn passthrough_file(&self, _id: NodeId, fh: u64) -> Option<vfs::Result<(OwnedFd, bool)>> {
        Some(self.live.passthrough_file(fh))
    }

    fn read(&self, _id: NodeId, fh: u64, offset: u64, buf: &mut [u8]) -> vfs::Result<usize> {
        self.live.read(fh, offset, buf)
    }

    fn write(
        &self,
        _ctx: &Ctx,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> vfs::Result<usize> {
        if flags.kill_privs {
            self.live.kill_privs(id.0)?;
        }
        self.live.write(fh, offset, data, flags.from_cache)
    }

    fn release(&self, _id: NodeId, fh: u64) {
        self.live.release(fh);
    }

    fn fsync(&self, _id: NodeId, fh: u64, datasync: bool) -> vfs::Result<()> {
        self.live.fsync(fh, datasync)
    }

    fn create(
        &self,
        ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> vfs::Result<(Entry, Opened)> {
        let (e, fh) = self
            .live
            .create(&caller(ctx), parent.0, name, mode, ctx.umask, flags)?;
        Ok((self.entry(Ok(e))?, Opened::plain(fh)))
    }

    fn fallocate(&self, _id: NodeId, fh: u64, mode: i32, offset: u64, len: u64) -> vfs::Result<()> {
        self.live.fallocate(fh, mode, offset, len)
    }

    fn lseek(&self, _id: NodeId, fh: u64, offset: i64, whence: i32) -> vfs::Result<i64> {
        self.live.lseek(fh, offset, whence)
    }

    fn copy_file_range(
        &self,
        _id_in: NodeId,
        fh_in: u64,
        off_in: u64,
        _id_out: NodeId,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u32,
    ) -> vfs::Result<usize> {
        self.live
            .copy_file_range(fh_in, off_in, fh_out, off_out, len, flags)
    }

    fn opendir(&self, id: NodeId) -> vfs::Result<Opened> {
        self.live.opendir(id.0).map(Opened::plain)
    }

    fn readdir(
        &self,
        _id: NodeId,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> vfs::Result<()> {
        self.live.readdir(fh, offset as i64, plus, |e| {
            let attr = e.attr.map(|a| vfs::Attr {
                ino: e.ino,
                ..self.attr(a)
            });
            add(&DirEntry {
                name: e.name,
                ino: e.ino,
                kind: e.kind,
                next: e.next_offset as u64,
                attr,
                ttl: self.ttl,
            })
        })
    }

    fn releasedir(&self, _id: NodeId, fh: u64) {
        self.live.releasedir(fh);
    }

    fn fsyncdir(&self, _id: NodeId, fh: u64, datasync: bool) -> vfs::Result<()> {
        self.live.fsyncdir(fh, datasync)
    }

    fn statfs(&self, id: NodeId) -> vfs::Result<Statfs> {
        self.live.statfs(id.0)
    }

    fn getxattr(&self, id: NodeId, name: &OsStr, size: u32) -> vfs::Result<Xattr> {
        self.live.getxattr(id.0, name, size)
    }

    fn listxattr(&self, id: NodeId, size: u32) -> vfs::Result<Xattr> {
        self.live.listxattr(id.0, size)
    }

    fn setxattr(&self, id: NodeId, name: &OsStr, value: &[u8], flags: i32) -> vfs::Result<()> {
        self.live.setxattr(id.0, name, value, flags)
    }

    fn removexattr(&self, id: NodeId, name: &OsStr) -> vfs::Result<()> {
        self.live.removexattr(id.0, name)
    }
}
