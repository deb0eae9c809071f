//! The FUSE adapter: translates fuser requests into calls on the live core
//! ([`crate::live`]) and its results into replies. No filesystem logic here
//! beyond choosing each open's I/O mode ([`iomode`]) and cache lifetimes.

pub mod iomode;
pub mod router;

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::live::{self, encode_dev, Attr, Caller, Live, SetAttr, SetTime, Xattr};
use crate::snapshot::barrier::Barrier;
use crate::snapshot::fence::Fences;
use iomode::{Backing, IoModes, Mode, Refusal};

/// Settings of the adapter.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// How long the kernel may trust entries and attributes without asking.
    pub ttl: Duration,
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

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            ttl: Duration::from_secs(1),
            passthrough: true,
            passthrough_writes: true,
            writeback: false,
            point_in_time: false,
        }
    }
}

/// The live tree's adapter. Its state is shared (`Arc`) so an operation
/// deferred by the write barrier can run after its request handler returned.
pub struct BkfsFs {
    s: Arc<Shared>,
}

impl std::ops::Deref for BkfsFs {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.s
    }
}

pub struct Shared {
    live: Arc<Live>,
    /// Write-class operations pass it (see [`crate::snapshot::barrier`]).
    barrier: Arc<Barrier>,
    /// Writable opens pass its gate; it holds fence FSYNCs.
    fences: Arc<Fences>,
    cfg: FsConfig,
    /// Passthrough was negotiated and still works.
    passthrough: AtomicBool,
    /// `FUSE_HANDLE_KILLPRIV_V2` was negotiated: removing set-user-id bits
    /// and capabilities on writes and truncation is the daemon's job.
    killpriv: AtomicBool,
    io: IoModes,
}

/// The errno to reply with; shared with the snapshot view's adapter.
pub(crate) fn errno(e: live::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    crate::os::time::from_stat(sec, nsec).into()
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    let st = &a.st;
    FileAttr {
        ino: INodeNo(a.id()),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev),
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    })
}

thread_local! {
    /// Per-thread read buffer, reused across requests.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Answer a statfs with a `statvfs` of the filesystem below; shared with
/// the snapshot view's adapter.
pub(crate) fn reply_statfs(reply: ReplyStatfs, r: Result<libc::statvfs, live::Errno>) {
    match r {
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

/// Answer a read of `size` bytes with what `read` puts into a per-thread
/// buffer (no allocation per request); shared with the snapshot view's adapter.
pub(crate) fn reply_read(
    reply: ReplyData,
    size: u32,
    read: impl FnOnce(&mut [u8]) -> Result<usize, live::Errno>,
) {
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

impl BkfsFs {
    pub fn new(
        live: Arc<Live>,
        barrier: Arc<Barrier>,
        fences: Arc<Fences>,
        cfg: FsConfig,
    ) -> BkfsFs {
        BkfsFs {
            s: Arc::new(Shared {
                live,
                barrier,
                fences,
                cfg,
                passthrough: AtomicBool::new(false),
                killpriv: AtomicBool::new(false),
                io: IoModes::default(),
            }),
        }
    }

    fn caller(req: &Request, umask: u32) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            umask,
        }
    }

    fn reply_empty(reply: ReplyEmpty, r: live::Result<()>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Runs write-class operation `op` when the barrier admits it (at once,
    /// unless a snapshot is fixing its point in time).
    fn gated(&self, op: impl FnOnce(&Shared) + Send + 'static) {
        let s = self.s.clone();
        self.s.barrier.defer(move || op(&s));
    }
}

impl Shared {
    /// How long the kernel may trust live entries and attributes.
    pub fn ttl(&self) -> Duration {
        self.cfg.ttl
    }

    /// Whether kernel passthrough is in use (known after the INIT handshake).
    pub fn passthrough_active(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    fn reply_entry(&self, reply: ReplyEntry, r: live::Result<live::Entry>) {
        match r {
            Ok(e) => reply.entry(&self.cfg.ttl, &file_attr(&e.attr), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// A missing name is answered with a negative entry (node id 0) that the
    /// kernel may cache as long as a positive one: compilers and git probe
    /// many names that do not exist. A name created through the mount
    /// replaces the negative entry at once.
    fn reply_lookup(&self, reply: ReplyEntry, r: live::Result<live::Entry>) {
        match r {
            Err(live::Errno::ENOENT) if !self.cfg.ttl.is_zero() => {
                let mut attr = file_attr(&Attr::new(crate::os::zeroed_stat(), 0));
                attr.ino = INodeNo(0);
                reply.entry(&self.cfg.ttl, &attr, Generation(0))
            }
            r => self.reply_entry(reply, r),
        }
    }

    /// FOPEN flags of a page-cached open. Without passthrough (the writeback
    /// cache, or a mount with snapshots) every change reaches the backing
    /// file through this page cache, so it stays valid across opens;
    /// otherwise an inode may have been written by passthrough since, and
    /// the cache is dropped.
    fn cached_open_flags(&self) -> FopenFlags {
        if self.cfg.writeback || !self.cfg.passthrough {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    /// Turns passthrough off for the rest of the mount (new opens only).
    fn stop_passthrough(&self, why: &io::Error) {
        if self.passthrough.swap(false, Ordering::Relaxed) {
            tracing::warn!("kernel passthrough refused ({why}); I/O goes through the daemon");
        }
    }

    /// Chooses the I/O mode of a new open (see [`iomode`]); `None` when the
    /// open must be refused with ETXTBSY.
    ///
    /// If the kernel refuses to register a backing file with EPERM (the
    /// daemon lacks CAP_SYS_ADMIN), passthrough is off for the rest of the
    /// mount; other failures (a backing file on a stacked filesystem, no
    /// descriptor left) only make that one open page-cached.
    fn open_mode(
        &self,
        fh: u64,
        ino: u64,
        flags: i32,
        register: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> Option<Mode> {
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let passthrough = self.passthrough_active() && (read_only || self.cfg.passthrough_writes);
        let r = self.io.open(fh, ino, read_only, passthrough, || {
            let (fd, writable) = self.live.passthrough_file(fh).map_err(io::Error::from)?;
            Ok(Backing {
                id: register(&fd)?,
                writable,
            })
        });
        match r {
            Ok((mode, error)) => {
                match error {
                    Some(e) if e.raw_os_error() == Some(libc::EPERM) => self.stop_passthrough(&e),
                    Some(e) => tracing::debug!("no passthrough for inode {ino}: {e}"),
                    None => {}
                }
                Some(mode)
            }
            Err(Refusal::ReadOnlyBacking) => None,
        }
    }
}

impl Shared {
    fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr, root: bool, reply: ReplyAttr) {
        let mut r = self.live.setattr(ino, fh, &set);

        // With FUSE_HANDLE_KILLPRIV_V2 (see init) the kernel asks the daemon
        // to remove privileges with a flag fuser does not pass on: on a
        // truncation, and as a setattr that changes nothing, sent before a
        // write (also a passthrough one) by a process without CAP_FSETID.
        // The caller's uid stands for that capability. The reply carries the
        // new mode, so the kernel's cached attributes stay right.
        let nothing = set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.atime.is_none()
            && set.mtime.is_none();
        if r.is_ok()
            && (set.size.is_some() || nothing)
            && !root
            && self.killpriv.load(Ordering::Relaxed)
        {
            r = self
                .live
                .kill_privs(ino)
                .and_then(|()| self.live.getattr(ino));
        }
        match r {
            Ok(a) => reply.attr(&self.cfg.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, ino: u64, flags: i32, root: bool, reply: ReplyOpen) {
        // Truncation by an unprivileged caller removes privileges (see init).
        if flags & libc::O_TRUNC != 0
            && !root
            && self.killpriv.load(Ordering::Relaxed)
            && self.live.has_privs(ino).unwrap_or(false)
        {
            let _ = self.live.kill_privs(ino);
        }
        let fh = match self.live.open(ino, flags) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        let mode = self.open_mode(fh, ino, flags, |fd| reply.open_backing(fd));
        match mode {
            Some(Mode::Passthrough(b)) => {
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b)
            }
            Some(Mode::Cached) => reply.opened(FileHandle(fh), self.cached_open_flags()),
            None => {
                self.live.release(fh);
                reply.error(Errno::ETXTBSY)
            }
        }
    }

    fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
        reply: ReplyWrite,
    ) {
        if flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = self.live.kill_privs(ino) {
                return reply.error(errno(e));
            }
        }
        let from_cache = flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        match self.live.write(fh, offset, data, from_cache) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (entry, fh) = match self.live.create(&caller, parent, name, mode, umask, flags) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(e)),
        };
        let attr = file_attr(&entry.attr);
        match self.open_mode(fh, entry.id(), flags, |fd| reply.open_backing(fd)) {
            Some(Mode::Passthrough(b)) => reply.created_passthrough(
                &self.cfg.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
                &b,
            ),
            Some(Mode::Cached) => reply.created(
                &self.cfg.ttl,
                &attr,
                Generation(0),
                FileHandle(fh),
                self.cached_open_flags(),
            ),
            None => {
                self.live.release(fh);
                reply.error(Errno::ETXTBSY)
            }
        }
    }
}

impl Filesystem for BkfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let want = |config: &mut KernelConfig, flag: InitFlags, what: &str| -> bool {
            match config.add_capabilities(flag) {
                Ok(()) => true,
                Err(_) => {
                    tracing::info!("kernel lacks {what}");
                    false
                }
            }
        };
        // Mode bits arrive unmasked with the caller's umask (see live::caller).
        want(config, InitFlags::FUSE_DONT_MASK, "FUSE_DONT_MASK");
        // The kernel enforces POSIX ACLs (with default_permissions).
        want(config, InitFlags::FUSE_POSIX_ACL, "FUSE_POSIX_ACL");
        want(
            config,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            "FUSE_ATOMIC_O_TRUNC",
        );
        want(
            config,
            InitFlags::FUSE_DO_READDIRPLUS,
            "FUSE_DO_READDIRPLUS",
        );
        want(
            config,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            "FUSE_READDIRPLUS_AUTO",
        );
        want(
            config,
            InitFlags::FUSE_PARALLEL_DIROPS,
            "FUSE_PARALLEL_DIROPS",
        );
        want(
            config,
            InitFlags::FUSE_CACHE_SYMLINKS,
            "FUSE_CACHE_SYMLINKS",
        );
        // Asynchronous direct I/O lets an aio write(2) return, and its
        // inode lock go, before its requests are answered: a fence could
        // not wait for it.
        if !self.cfg.point_in_time {
            want(config, InitFlags::FUSE_ASYNC_DIO, "FUSE_ASYNC_DIO");
        }
        // Without this the kernel asks for security.capability before every
        // write (a round trip each); with it the daemon removes privileges.
        if want(
            config,
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            "FUSE_HANDLE_KILLPRIV_V2",
        ) {
            self.killpriv.store(true, Ordering::Relaxed);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        if self.cfg.writeback {
            want(
                config,
                InitFlags::FUSE_WRITEBACK_CACHE,
                "FUSE_WRITEBACK_CACHE",
            );
        } else if self.cfg.passthrough
            && want(config, InitFlags::FUSE_PASSTHROUGH, "FUSE_PASSTHROUGH")
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        tracing::info!(
            "FUSE session ready: passthrough={}, writeback={}",
            self.passthrough_active(),
            self.cfg.writeback
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_lookup(reply, self.live.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.live.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live.getattr(ino.0) {
            Ok(a) => reply.attr(&self.cfg.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
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
        let root = req.uid() == 0;
        self.gated(move |s| s.setattr(ino.0, fh.map(|f| f.0), set, root, reply));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.live.readlink(ino.0) {
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
        let caller = Self::caller(req, umask);
        let name = name.to_owned();
        self.gated(move |s| {
            s.reply_entry(
                reply,
                s.live.mknod(&caller, parent.0, &name, mode, umask, rdev),
            )
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
        let caller = Self::caller(req, umask);
        let name = name.to_owned();
        self.gated(move |s| {
            s.reply_entry(reply, s.live.mkdir(&caller, parent.0, &name, mode, umask))
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(move |s| Self::reply_empty(reply, s.live.unlink(parent.0, &name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(move |s| Self::reply_empty(reply, s.live.rmdir(parent.0, &name)));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let caller = Self::caller(req, 0);
        let (name, target) = (link_name.to_owned(), target.as_os_str().to_owned());
        self.gated(move |s| {
            let r = s.live.symlink(&caller, parent.0, &name, &target);
            s.reply_entry(reply, r);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.gated(move |s| {
            let r = s
                .live
                .rename(parent.0, &name, newparent.0, &newname, flags.bits());
            Self::reply_empty(reply, r);
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_owned();
        self.gated(move |s| s.reply_entry(reply, s.live.link(ino.0, newparent.0, &newname)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let root = req.uid() == 0;
        if flags.0 & libc::O_ACCMODE == libc::O_RDONLY {
            return self.s.open(ino.0, flags.0, root, reply);
        }
        // A new writer: past the fences' gate (see crate::snapshot::fence).
        let s = self.s.clone();
        self.fences.writable_open(Some(ino.0), move || {
            if flags.0 & libc::O_TRUNC != 0 {
                // Truncates: a change, and so behind the barrier.
                let t = s.clone();
                s.barrier.defer(move || t.open(ino.0, flags.0, root, reply));
            } else {
                s.open(ino.0, flags.0, root, reply);
            }
        });
    }
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply_read(reply, size, |buf| self.live.read(fh.0, offset, buf));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.barrier.enter() {
            Some(_pass) => self.s.write(ino.0, fh.0, offset, data, write_flags, reply),
            None => {
                let data = data.to_vec();
                self.gated(move |s| s.write(ino.0, fh.0, offset, &data, write_flags, reply));
            }
        }
    }

    /// Nothing to do at close: written data reached the backing file when
    /// its WRITE was answered, and the kernel reports writeback errors at
    /// close and fsync itself (the daemon answers every failed WRITE of
    /// cached pages with its error). ENOSYS tells the kernel to stop sending
    /// FLUSH, saving a round trip on every close.
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
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.io.release(fh.0);
        self.live.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // A fence's FSYNC is held until its point in time is committed.
        if self.fences.is_fence(req.pid()) {
            return self.fences.hold(req.pid(), Box::new(move || reply.ok()));
        }
        Self::reply_empty(reply, self.live.fsync(fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live.opendir(ino.0) {
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
        let r = self.live.readdir(fh.0, offset as i64, false, |e| {
            !reply.add(
                INodeNo(e.ino),
                e.next_offset as u64,
                file_type(e.kind),
                e.name,
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.cfg.ttl;
        let r = self.live.readdir(fh.0, offset as i64, true, |e| {
            let Some(attr) = e.attr else {
                return true;
            };
            let mut fattr = file_attr(&attr);
            fattr.ino = INodeNo(e.ino);
            !reply.add(
                INodeNo(e.ino),
                e.next_offset as u64,
                e.name,
                &ttl,
                &fattr,
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
        self.live.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(reply, self.live.fsyncdir(fh.0, datasync));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        reply_statfs(reply, self.live.statfs(ino.0));
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
        let (name, value) = (name.to_owned(), value.to_vec());
        self.gated(move |s| Self::reply_empty(reply, s.live.setxattr(ino.0, &name, &value, flags)));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.live.getxattr(ino.0, name, size) {
            Ok(Xattr::Size(n)) => reply.size(n as u32),
            Ok(Xattr::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.live.listxattr(ino.0, size) {
            Ok(Xattr::Size(n)) => reply.size(n as u32),
            Ok(Xattr::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.gated(move |s| Self::reply_empty(reply, s.live.removexattr(ino.0, &name)));
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
        let caller = Self::caller(req, umask);
        let name = name.to_owned();
        let s = self.s.clone();
        let create = move || {
            let t = s.clone();
            s.barrier
                .defer(move || t.create(caller, parent.0, &name, mode, umask, flags, reply));
        };
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            create();
        } else {
            // A new writer: past the fences' gate (see crate::snapshot::fence).
            self.fences.writable_open(None, create);
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.gated(move |s| Self::reply_empty(reply, s.live.fallocate(fh.0, mode, offset, length)));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.live.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let len = len.min(u64::from(u32::MAX) & !0xfff);
        self.gated(move |s| {
            let r = s.live.copy_file_range(
                fh_in.0,
                offset_in,
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
}
