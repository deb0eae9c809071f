//! The FUSE adapter of a standalone view (`bkfs mount --store`): fuser
//! requests to [`SnapView`] calls, results to replies, and the cache
//! lifetimes an immutable tree deserves.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::{Attr, BLKSIZE};
use super::SnapView;
use crate::fs::errno;
use crate::live::{encode_dev, Xattr};
use crate::store::Time;

/// Entries and attributes inside a snapshot never change: the kernel may
/// keep them until it needs the memory.
const SEALED_TTL: Duration = Duration::from_secs(24 * 3600);

/// The root's own entries (snapshots come and go with backup and forget),
/// and negative entries there.
const ROOT_TTL: Duration = super::catalog::REFRESH;

pub struct SnapViewFs {
    view: Arc<SnapView>,
}

impl SnapViewFs {
    pub fn new(view: Arc<SnapView>) -> SnapViewFs {
        SnapViewFs { view }
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

/// Read-ahead's way into the kernel's page cache: `FUSE_NOTIFY_STORE`.
/// Sent from the read-ahead threads, never from a request handler. A node
/// the kernel has dropped meanwhile answers ENOENT: nothing to do then.
pub fn page_cache_push(notifier: fuser::Notifier) -> super::Push {
    Box::new(move |ino, offset, data| {
        if let Err(e) = notifier.store(INodeNo(ino), offset, data) {
            tracing::debug!("page cache push of {ino:#x}: {e}");
        }
    })
}

fn time(t: Time) -> SystemTime {
    t.into()
}

fn file_type(kind: u32) -> FileType {
    match kind {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: encode_dev(a.rdev as libc::dev_t),
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn reply_xattr(reply: ReplyXattr, r: super::Result<Xattr>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n as u32),
        Ok(Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(e)),
    }
}

impl SnapViewFs {
    fn refuse(&self, id: u64) -> Errno {
        match self.view.modify(id) {
            Ok(never) => match never {},
            Err(e) => errno(e),
        }
    }
}

impl Filesystem for SnapViewFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        for (flag, what) in [
            // The kernel enforces the recorded POSIX ACLs (with default_permissions).
            (InitFlags::FUSE_POSIX_ACL, "FUSE_POSIX_ACL"),
            // Always readdirplus, not the kernel's "auto" choice: that asks
            // for attributes only in a listing's first reply and leaves the
            // rest of a large directory to one LOOKUP per name, while
            // attributes cost the view nothing more than names.
            (InitFlags::FUSE_DO_READDIRPLUS, "FUSE_DO_READDIRPLUS"),
            (InitFlags::FUSE_PARALLEL_DIROPS, "FUSE_PARALLEL_DIROPS"),
            // A symlink's target never changes for a given inode (`latest`
            // gets a new inode when its target changes).
            (InitFlags::FUSE_CACHE_SYMLINKS, "FUSE_CACHE_SYMLINKS"),
            (InitFlags::FUSE_ASYNC_READ, "FUSE_ASYNC_READ"),
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::info!("kernel lacks {what}");
            }
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        tracing::info!("FUSE session ready: read-only snapshot view");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ttl = self.ttl_of(parent.0);
        match self.view.lookup(parent.0, name) {
            Ok(e) => reply.entry(&ttl, &file_attr(&e.attr), Generation(0)),
            // A negative entry (id 0) the kernel may cache: inside a
            // snapshot a missing name stays missing.
            Err(super::Errno::ENOENT) => {
                let mut attr = file_attr(&Attr::synthetic(0, 0, 0, (0, 0), Time::default()));
                attr.ino = INodeNo(0);
                reply.entry(&ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.view.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.getattr(ino.0) {
            Ok(a) => reply.attr(&self.ttl_of(ino.0), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(self.refuse(ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse(parent.0));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse(parent.0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse(parent.0));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse(parent.0));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse(parent.0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse(parent.0));
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse(ino.0));
    }

    /// Answered `ENOSYS` once the open is known to be valid: the kernel
    /// then takes every later open of this mount as succeeding without
    /// asking (it still checks permissions, and `ro` refuses writers), and
    /// keeps each file's cached pages across opens (`FOPEN_KEEP_CACHE`).
    /// That saves an open and a release round trip per file, which is most
    /// of the cost of reading many small files. Reads come by node id.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.view.open(ino.0, flags.0) {
            Ok(()) => reply.error(Errno::ENOSYS),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        crate::fs::reply_read(reply, size, |buf| self.view.read(ino.0, offset, buf));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.view.opendir(ino.0) {
            // A snapshot's directories never change: the kernel may keep
            // their listings; the root's changes with backup and forget.
            Ok(fh) if ino.0 != self.view.root_id() => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.view.readdir(fh.0, offset, false, |e| {
            !reply.add(INodeNo(e.ino), e.next_offset, file_type(e.kind), e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl_of(ino.0);
        let r = self.view.readdir(fh.0, offset, true, |e| {
            // `.` and `..` come without attributes: the kernel lists them
            // but never makes inodes of them.
            let attr = e
                .attr
                .unwrap_or_else(|| Attr::synthetic(e.ino, e.kind, 0o555, (0, 0), Time::default()));
            !reply.add(
                INodeNo(e.ino),
                e.next_offset,
                e.name,
                &ttl,
                &file_attr(&attr),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.view.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        crate::fs::reply_statfs(reply, self.view.statfs());
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse(ino.0));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.view.getxattr(ino.0, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.view.listxattr(ino.0, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse(ino.0));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only called without default_permissions; the kernel checks access.
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(self.refuse(parent.0));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse(ino.0));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse(ino_out.0));
    }
}
