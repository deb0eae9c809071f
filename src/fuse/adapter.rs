//! One `fuser::Filesystem` for every [`Tree`].
//!
//! The threading policy, by the class of the node a request is about
//! ([`Class`]):
//! - **backed** trees (the live tree): write-class requests (write,
//!   setattr, create, mknod, mkdir, unlink, rmdir, rename, link, symlink,
//!   fallocate, copy_file_range, set/removexattr, an open that truncates)
//!   pass the write barrier ([`Barrier::defer`]: at once, or queued while a
//!   point in time is being fixed, so no FUSE worker blocks); writable opens
//!   and creates first pass the fences' gate ([`Fences::writable_open`]);
//!   an FSYNC from a fence thread is held ([`Fences::hold`]);
//! - **slow** trees (control files, `.snapshots/`): write, mkdir and rmdir
//!   run on a thread of their own and reply from there: they may wait for
//!   applications that use the mount;
//! - **virtual** trees: everything on the FUSE worker.
//!
//! Over 700 lines on purpose: it is one `impl fuser::Filesystem` (a trait
//! impl cannot span files), one short method per FUSE request, each a
//! translation and a dispatch by the policy below.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::iomode::{Backing, IoModes, Mode, Refusal};
use super::{errno, file_attr, file_type, init, Config};
use crate::snapshot::barrier::Barrier;
use crate::snapshot::fence::Fences;
use crate::vfs::{
    self, AttrOut, Class, Ctx, DirEntry, Entry, NodeId, Opened, SetAttr, SetTime, Tree, Xattr,
};

/// Serves tree `T` to the kernel. Its state is shared (`Arc`) so a request
/// deferred by the barrier, or run on a thread of its own, can reply after
/// its handler returned.
pub struct Adapter<T: Tree> {
    s: Arc<Shared<T>>,
}

struct Shared<T: Tree> {
    tree: Arc<T>,
    /// Write-class requests of backed nodes pass it.
    barrier: Arc<Barrier>,
    /// Writable opens of backed nodes pass its gate; it holds fence FSYNCs
    /// (none where no point in time is ever fixed).
    fences: Option<Arc<Fences>>,
    cfg: Config,
    /// Passthrough was negotiated and still works.
    passthrough: AtomicBool,
    /// `FUSE_HANDLE_KILLPRIV_V2` was negotiated.
    kill_privs: AtomicBool,
    io: IoModes,
}

thread_local! {
    /// Per-thread read buffer, reused across requests.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a thread of its own (its reply is sent from there).
fn own_thread(what: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(format!("bkfs-{what}"))
        .spawn(f)
    {
        tracing::error!("cannot start a thread for {what}: {e}");
    }
}

fn reply_entry(reply: ReplyEntry, r: vfs::Result<Entry>) {
    match r {
        Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_attr(reply: ReplyAttr, r: vfs::Result<AttrOut>) {
    match r {
        Ok(a) => reply.attr(&a.ttl, &file_attr(&a.attr)),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: vfs::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, r: vfs::Result<Xattr>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n as u32),
        Ok(Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(e)),
    }
}

fn open_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.cache_dir {
        f |= FopenFlags::FOPEN_CACHE_DIR;
    }
    f
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    })
}

fn writes(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY
}

impl<T: Tree> Adapter<T> {
    pub fn new(
        tree: Arc<T>,
        barrier: Arc<Barrier>,
        fences: Option<Arc<Fences>>,
        cfg: Config,
    ) -> Self {
        Adapter {
            s: Arc::new(Shared {
                tree,
                barrier,
                fences,
                cfg,
                passthrough: AtomicBool::new(false),
                kill_privs: AtomicBool::new(false),
                io: IoModes::default(),
            }),
        }
    }

    /// The tree served.
    pub fn tree(&self) -> &Arc<T> {
        &self.s.tree
    }

    fn ctx(&self, req: &Request, umask: u32) -> Ctx {
        Ctx {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
            umask,
            kill_privs: self.s.kill_privs.load(Ordering::Relaxed),
        }
    }

    /// Runs write-class request `op` on node `id` as its class asks: past
    /// the barrier for backed nodes, on a thread of its own for `slow` ones
    /// when `slow` (write, mkdir, rmdir), else here.
    fn changing(
        &self,
        id: NodeId,
        slow: Option<&str>,
        op: impl FnOnce(&Shared<T>) + Send + 'static,
    ) {
        let s = self.s.clone();
        match (s.tree.class(id), slow) {
            (Class::Backed, _) => {
                let b = s.barrier.clone();
                b.defer(move || op(&s));
            }
            (Class::Slow, Some(what)) => own_thread(what, move || op(&s)),
            _ => op(&s),
        }
    }
}

impl<T: Tree> Shared<T> {
    fn passthrough_active(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// Turns passthrough off for the rest of the mount (new opens only).
    fn stop_passthrough(&self, why: &io::Error) {
        if self.passthrough.swap(false, Ordering::Relaxed) {
            tracing::warn!("kernel passthrough refused ({why}); I/O goes through the daemon");
        }
    }

    /// Chooses the I/O mode of a new open of backed node `id` (see
    /// [`super::iomode`]); `None` when the open must be refused with ETXTBSY.
    ///
    /// If the kernel refuses to register a backing file with EPERM (the
    /// daemon lacks CAP_SYS_ADMIN), passthrough is off for the rest of the
    /// mount; other failures (a backing file on a stacked filesystem, no
    /// descriptor left) only make that one open page-cached.
    fn open_mode(
        &self,
        id: NodeId,
        fh: u64,
        flags: i32,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> Option<Mode> {
        let read_only = !writes(flags);
        let passthrough = self.passthrough_active() && (read_only || self.cfg.passthrough_writes);
        let r = self.io.open(fh, id.0, read_only, passthrough, || {
            let (fd, writable) = match self.tree.passthrough_file(id, fh) {
                Some(r) => r.map_err(io::Error::from)?,
                None => return Err(io::Error::from_raw_os_error(libc::ENOSYS)),
            };
            Ok(Backing {
                id: register(&fd)?,
                writable,
            })
        });
        match r {
            Ok((mode, error)) => {
                match error {
                    Some(e) if e.raw_os_error() == Some(libc::EPERM) => self.stop_passthrough(&e),
                    Some(e) => tracing::debug!("no passthrough for inode {id}: {e}"),
                    None => {}
                }
                Some(mode)
            }
            Err(Refusal::ReadOnlyBacking) => None,
        }
    }

    /// FOPEN flags of a page-cached open of a backed node. Without
    /// passthrough (the writeback cache, or a mount with snapshots) every
    /// change reaches the file through this page cache, so it stays valid
    /// across opens; otherwise an inode may have been written by
    /// passthrough since, and the cache is dropped.
    fn cached_open_flags(&self, o: &Opened) -> FopenFlags {
        let mut f = open_flags(o);
        if self.cfg.writeback || !self.cfg.passthrough {
            f |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        f
    }

    fn open(&self, ctx: Ctx, id: NodeId, flags: i32, reply: ReplyOpen) {
        let o = match self.tree.open(&ctx, id, flags) {
            Ok(o) => o,
            Err(e) => return reply.error(errno(e)),
        };
        if self.tree.class(id) != Class::Backed {
            if !self.tree.needs_opens() && !writes(flags) {
                // Every later open succeeds without asking (see Tree::needs_opens).
                return reply.error(Errno::ENOSYS);
            }
            return reply.opened(FileHandle(o.fh), open_flags(&o));
        }
        match self.open_mode(id, o.fh, flags, |fd| reply.open_backing(fd)) {
            Some(Mode::Passthrough(b)) => {
                reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), &b)
            }
            Some(Mode::Cached) => reply.opened(FileHandle(o.fh), self.cached_open_flags(&o)),
            None => {
                self.tree.release(id, o.fh);
                reply.error(Errno::ETXTBSY)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        ctx: Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (entry, o) = match self.tree.create(&ctx, parent, name, mode, flags) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        let attr = file_attr(&entry.attr);
        let id = NodeId(entry.id());
        let mode = if self.tree.class(id) == Class::Backed {
            self.open_mode(id, o.fh, flags, |fd| reply.open_backing(fd))
        } else {
            Some(Mode::Cached)
        };
        match mode {
            Some(Mode::Passthrough(b)) => reply.created_passthrough(
                &entry.ttl,
                &attr,
                Generation(0),
                FileHandle(o.fh),
                FopenFlags::empty(),
                &b,
            ),
            Some(Mode::Cached) => reply.created(
                &entry.ttl,
                &attr,
                Generation(0),
                FileHandle(o.fh),
                self.cached_open_flags(&o),
            ),
            None => {
                self.tree.release(id, o.fh);
                reply.error(Errno::ETXTBSY)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Ctx,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
        reply: ReplyWrite,
    ) {
        let flags = vfs::WriteFlags {
            kill_privs: flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
            from_cache: flags.contains(WriteFlags::FUSE_WRITE_CACHE),
        };
        match self.tree.write(ctx, id, fh, offset, data, flags) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Answers a read of `size` bytes with what `read` puts into a per-thread
/// buffer (no allocation per request).
fn reply_read(reply: ReplyData, size: u32, read: impl FnOnce(&mut [u8]) -> vfs::Result<usize>) {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < size as usize {
            buf.resize(size as usize, 0);
        }
        match read(&mut buf[..size as usize]) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    });
}

impl<T: Tree> Filesystem for Adapter<T> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let agreed = init::negotiate(&self.s.cfg, config);
        self.s
            .passthrough
            .store(agreed.passthrough, Ordering::Relaxed);
        self.s
            .kill_privs
            .store(agreed.kill_privs, Ordering::Relaxed);
        Ok(())
    }

    fn destroy(&mut self) {
        self.s.tree.destroy();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ctx = self.ctx(req, 0);
        reply_entry(reply, self.s.tree.lookup(&ctx, NodeId(parent.0), name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.s.tree.forget(NodeId(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.s.tree.getattr(NodeId(ino.0), fh.map(|f| f.0)));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        let (ctx, id) = (self.ctx(req, 0), NodeId(ino.0));
        self.changing(id, None, move |s| {
            reply_attr(reply, s.tree.setattr(&ctx, id, fh.map(|f| f.0), &set))
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.s.tree.readlink(NodeId(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (ctx, parent, name) = (self.ctx(req, umask), NodeId(parent.0), name.to_owned());
        self.changing(parent, None, move |s| {
            let rdev = super::decode_dev(rdev);
            reply_entry(reply, s.tree.mknod(&ctx, parent, &name, mode, rdev))
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (ctx, parent, name) = (self.ctx(req, umask), NodeId(parent.0), name.to_owned());
        self.changing(parent, Some("mkdir"), move |s| {
            reply_entry(reply, s.tree.mkdir(&ctx, parent, &name, mode))
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (ctx, parent, name) = (self.ctx(req, 0), NodeId(parent.0), name.to_owned());
        self.changing(parent, None, move |s| {
            reply_empty(reply, s.tree.unlink(&ctx, parent, &name))
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (ctx, parent, name) = (self.ctx(req, 0), NodeId(parent.0), name.to_owned());
        self.changing(parent, Some("rmdir"), move |s| {
            reply_empty(reply, s.tree.rmdir(&ctx, parent, &name))
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (ctx, parent) = (self.ctx(req, 0), NodeId(parent.0));
        let (name, target) = (link_name.to_owned(), target.as_os_str().to_owned());
        self.changing(parent, None, move |s| {
            reply_entry(reply, s.tree.symlink(&ctx, parent, &name, &target))
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let ctx = self.ctx(req, 0);
        let (parent, newparent) = (NodeId(parent.0), NodeId(newparent.0));
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.changing(parent, None, move |s| {
            let r = s
                .tree
                .rename(&ctx, parent, &name, newparent, &newname, flags.bits());
            reply_empty(reply, r)
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (ctx, id, newparent) = (self.ctx(req, 0), NodeId(ino.0), NodeId(newparent.0));
        let newname = newname.to_owned();
        self.changing(id, None, move |s| {
            reply_entry(reply, s.tree.link(&ctx, id, newparent, &newname))
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (ctx, id, flags) = (self.ctx(req, 0), NodeId(ino.0), flags.0);
        if !writes(flags) || self.s.tree.class(id) != Class::Backed {
            return self.s.open(ctx, id, flags, reply);
        }
        let s = self.s.clone();
        let open = move || {
            if flags & libc::O_TRUNC != 0 {
                // Truncates: a change, and so behind the barrier.
                let t = s.clone();
                s.barrier.defer(move || t.open(ctx, id, flags, reply));
            } else {
                s.open(ctx, id, flags, reply);
            }
        };
        // A new writer: past the fences' gate (see crate::snapshot::fence).
        match &self.s.fences {
            Some(f) => f.writable_open(Some(id.0), open),
            None => open(),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply_read(reply, size, |buf| {
            self.s.tree.read(NodeId(ino.0), fh.0, offset, buf)
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (ctx, id) = (self.ctx(req, 0), NodeId(ino.0));
        match self.s.tree.class(id) {
            // The common case without copying the data: admitted at once.
            Class::Backed => match self.s.barrier.enter() {
                Some(_pass) => self
                    .s
                    .write(&ctx, id, fh.0, offset, data, write_flags, reply),
                None => {
                    let data = data.to_vec();
                    self.changing(id, None, move |s| {
                        s.write(&ctx, id, fh.0, offset, &data, write_flags, reply)
                    });
                }
            },
            Class::Slow => {
                let data = data.to_vec();
                self.changing(id, Some("write"), move |s| {
                    s.write(&ctx, id, fh.0, offset, &data, write_flags, reply)
                });
            }
            Class::Virtual => self
                .s
                .write(&ctx, id, fh.0, offset, data, write_flags, reply),
        }
    }

    /// Nothing to do at close: written data reached the tree when its WRITE
    /// was answered, and the kernel reports writeback errors at close and
    /// fsync itself (trees answer every failed WRITE of cached pages with
    /// its error). ENOSYS tells the kernel to stop sending FLUSH, saving a
    /// round trip on every close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let id = NodeId(ino.0);
        if self.s.tree.class(id) == Class::Backed {
            self.s.io.release(fh.0);
        }
        self.s.tree.release(id, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // A fence's FSYNC is held until its point in time is committed.
        if let Some(f) = self.s.fences.as_ref().filter(|f| f.is_fence(req.pid())) {
            return f.hold(req.pid(), Box::new(move || reply.ok()));
        }
        reply_empty(reply, self.s.tree.fsync(NodeId(ino.0), fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.s.tree.opendir(NodeId(ino.0)) {
            Ok(o) => reply.opened(FileHandle(o.fh), open_flags(&o)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self
            .s
            .tree
            .readdir(NodeId(ino.0), fh.0, offset, false, &mut |e: &DirEntry<
                '_,
            >| {
                !reply.add(INodeNo(e.ino), e.next, file_type(e.kind), e.name)
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
        let r = self
            .s
            .tree
            .readdir(NodeId(ino.0), fh.0, offset, true, &mut |e: &DirEntry<
                '_,
            >| {
                // `.` and `..` come without attributes: the kernel lists
                // them but never makes inodes of them.
                let attr = e.attr.unwrap_or_else(|| {
                    vfs::Attr::synthetic(e.ino, e.kind, 0o555, (0, 0), vfs::Time::default())
                });
                !reply.add(
                    INodeNo(e.ino),
                    e.next,
                    e.name,
                    &e.ttl,
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
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.s.tree.releasedir(NodeId(ino.0), fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.s.tree.fsyncdir(NodeId(ino.0), fh.0, datasync));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.s.tree.statfs(NodeId(ino.0)) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (id, name, value) = (NodeId(ino.0), name.to_owned(), value.to_vec());
        self.changing(id, None, move |s| {
            reply_empty(reply, s.tree.setxattr(id, &name, &value, flags))
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.s.tree.getxattr(NodeId(ino.0), name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.s.tree.listxattr(NodeId(ino.0), size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (id, name) = (NodeId(ino.0), name.to_owned());
        self.changing(id, None, move |s| {
            reply_empty(reply, s.tree.removexattr(id, &name))
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only called without default_permissions; the kernel checks access.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (ctx, parent, name) = (self.ctx(req, umask), NodeId(parent.0), name.to_owned());
        if self.s.tree.class(parent) != Class::Backed {
            return self.s.create(ctx, parent, &name, mode, flags, reply);
        }
        let s = self.s.clone();
        let create = move || {
            let t = s.clone();
            s.barrier
                .defer(move || t.create(ctx, parent, &name, mode, flags, reply));
        };
        match &self.s.fences {
            // A new writer: past the fences' gate (see crate::snapshot::fence).
            Some(f) if writes(flags) => f.writable_open(None, create),
            _ => create(),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let id = NodeId(ino.0);
        self.changing(id, None, move |s| {
            reply_empty(reply, s.tree.fallocate(id, fh.0, mode, offset, length))
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.s.tree.lseek(NodeId(ino.0), fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply's count is 32 bits.
        let len = len.min(u64::from(u32::MAX) & !0xfff);
        let (id_in, id_out) = (NodeId(ino_in.0), NodeId(ino_out.0));
        self.changing(id_out, None, move |s| {
            let r = s.tree.copy_file_range(
                id_in,
                fh_in.0,
                offset_in,
                id_out,
                fh_out.0,
                offset_out,
                len,
                flags.bits() as u32,
            );
            match r {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    /// No ioctls (isatty's TCGETS is the usual one): answered quietly, not
    /// with fuser's "not implemented" warning on every `awk` of a control file.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}
