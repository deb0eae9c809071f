//! The filesystem a live mount serves: the live tree, and beside it the
//! virtual directories, each request routed by its node id's namespace.
//!
//! | namespace | what | core |
//! |---|---|---|
//! | 0 | the live tree | [`crate::live`] through [`BkfsFs`] |
//! | 1 | `.control/` | [`crate::control`] |
//! | 2 | `.snapshots/` and sealed snapshots | [`crate::snapview`] through [`SnapViewFs`] |
//! | 3 | a snapshot not sealed yet | [`crate::snapshot::pitview`] |
//!
//! The virtual directories hang under the root by name and are not listed
//! there unless `snapdir=visible`. Everything but the live tree is
//! read-only except for the control files and `mkdir`/`rmdir` in
//! `.snapshots` (take and forget a snapshot).

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::{errno, reply_read, BkfsFs};
use crate::control::{Control, CONTROL_DIR_ID, QUIESCE_DIR_ID};
use crate::live::ids::{namespace, NAMESPACE_SNAPVIEW, ROOT_ID};
use crate::live::nodes::FdBudget;
use crate::live::Live;
use crate::snapshot::diff::PointInTime;
use crate::snapshot::pitview::{PitView, NAMESPACE_PIT};
use crate::snapshot::requester::Snapshotter;
use crate::snapview::fuse::{file_attr, SnapViewFs};
use crate::snapview::ids::SNAPSHOTS_DIR_ID;
use crate::snapview::{Attr, SnapView};

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

/// Root listing offsets at and above this are the virtual entries'.
const VIRT_BASE: u64 = (i64::MAX as u64) - 16;
/// Offset after the pending snapshot's entry in `.snapshots`.
const PENDING_OFF: u64 = 1 << 40;
/// Lifetime of what the kernel learns of the virtual trees (they change
/// with every snapshot).
const VIRT_TTL: Duration = Duration::from_secs(1);

pub struct MountFs {
    live: BkfsFs,
    live_core: Arc<Live>,
    view: Arc<SnapView>,
    snapfs: SnapViewFs,
    control: Arc<Control>,
    snapshotter: Arc<Snapshotter>,
    names: VirtualNames,
    /// Views of unsealed snapshots the kernel may still hold.
    pits: Arc<Pits>,
    /// Contents of open control files, made at open.
    control_files: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// Nodes of unsealed views whose snapshot has been sealed since: the
    /// sealed view's node each stands for (holding one lookup on it).
    forwarded: Mutex<HashMap<u64, u64>>,
    /// Listings of such nodes opened before the seal: the sealed view's.
    forwarded_dirs: Mutex<HashMap<(u64, u64), u64>>,
    next_fh: Mutex<u64>,
}

/// Marks a directory handle of the sealed view given out for a node of an
/// unsealed one.
const FORWARD_FH: u64 = 1 << 62;

/// Where a request for a node of an unsealed view goes.
enum PitRoute {
    /// Its snapshot is still being copied.
    Pending(Arc<PitView<PointInTime>>),
    /// Sealed since: the store's view, this node of it.
    Sealed(u64),
    /// The view or its snapshot is gone (a failed copy).
    Gone,
}

/// The views of unsealed snapshots the kernel may still hold, by name.
struct Pits {
    snapshotter: Arc<Snapshotter>,
    map: RwLock<HashMap<String, Arc<PitView<PointInTime>>>>,
    /// The daemon's descriptor budget, shared with the live tree's nodes.
    budget: Arc<FdBudget>,
}

impl Pits {
    /// The view of the pending snapshot `name`, made on first use; views
    /// of snapshots sealed since are dropped once the kernel holds nothing
    /// of them.
    fn named(&self, name: &[u8]) -> Option<Arc<PitView<PointInTime>>> {
        let (pending, pit) = self.snapshotter.pending()?;
        if pending.as_bytes() != name {
            return None;
        }
        if let Some(v) = self.map.read().get(&pending) {
            return Some(v.clone());
        }
        let mut map = self.map.write();
        map.retain(|n, v| *n == pending || v.in_use());
        let v = match PitView::new(pending.clone(), pit, SNAPSHOTS_DIR_ID, self.budget.clone()) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                tracing::error!("view of snapshot {pending}: {e}");
                return None;
            }
        };
        map.insert(pending, v.clone());
        Some(v)
    }

    /// The unsealed view that knows id `ino`.
    fn of(&self, ino: u64) -> Option<Arc<PitView<PointInTime>>> {
        let map = self.map.read();
        map.values().find(|v| v.knows(ino)).cloned()
    }

    /// Retires the views of snapshots sealed or failed since (their
    /// descriptors go at once, whatever the kernel still caches), and
    /// drops those the kernel holds nothing of.
    fn retire_stale(&self) {
        let pending = self.snapshotter.pending().map(|(n, _)| n);
        let mut map = self.map.write();
        for (n, v) in map.iter() {
            if pending.as_ref() != Some(n) {
                v.retire();
            }
        }
        map.retain(|n, v| pending.as_ref() == Some(n) || v.in_use());
    }
}

/// Runs `f` on a thread of its own. A request that waits for applications
/// (quiescing runs their hooks, which may use the mount) must not hold a
/// FUSE worker: the mount would wait for itself. Its reply is sent from
/// that thread.
fn off_worker(what: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(format!("bkfs-{what}"))
        .spawn(f)
    {
        tracing::error!("cannot start a thread for {what}: {e}");
    }
}

enum Route {
    Live,
    Control,
    View,
    Pit,
}

fn virt_type(kind: u32) -> FileType {
    match kind {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::Socket,
    }
}

impl MountFs {
    pub fn new(
        live: BkfsFs,
        live_core: Arc<Live>,
        view: Arc<SnapView>,
        snapshotter: Arc<Snapshotter>,
        names: VirtualNames,
    ) -> MountFs {
        let budget = live_core.nodes().budget().clone();
        MountFs {
            live,
            live_core,
            snapfs: SnapViewFs::new(view.clone()),
            view,
            control: Arc::new(Control::new(snapshotter.clone(), ROOT_ID)),
            pits: Arc::new(Pits {
                snapshotter: snapshotter.clone(),
                map: RwLock::new(HashMap::new()),
                budget: budget.clone(),
            }),
            snapshotter,
            names,
            control_files: Mutex::new(HashMap::new()),
            forwarded: Mutex::new(HashMap::new()),
            forwarded_dirs: Mutex::new(HashMap::new()),
            next_fh: Mutex::new(1 << 48),
        }
    }

    fn fh(&self) -> u64 {
        let mut n = self.next_fh.lock();
        *n += 1;
        *n
    }

    /// Where a request for node `ino` goes, by its namespace; an id of the
    /// snapshot views' namespace may be a node of the pending snapshot's
    /// view, which gives out the ids the sealed view will.
    fn route(&self, ino: u64) -> Route {
        match namespace(ino) {
            0 => Route::Live,
            1 => Route::Control,
            2 if ino != SNAPSHOTS_DIR_ID && self.pits.of(ino).is_some() => Route::Pit,
            2 => Route::View,
            NAMESPACE_PIT => Route::Pit,
            _ => Route::Live,
        }
    }

    /// Refreshes the store's view and retires the views of snapshots no
    /// longer pending: to run after a snapshot is sealed or failed.
    pub fn on_change(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let (view, pits) = (self.view.clone(), self.pits.clone());
        move |_| {
            view.refresh();
            pits.retire_stale();
        }
    }

    fn pit_named(&self, name: &[u8]) -> Option<Arc<PitView<PointInTime>>> {
        self.pits.named(name)
    }

    fn pit_of(&self, ino: u64) -> Option<Arc<PitView<PointInTime>>> {
        self.pits.of(ino)
    }

    /// Where a request for node `ino` of an unsealed view goes. Once its
    /// snapshot is sealed, its nodes are found again by path in the
    /// store's view, so tools walking it across the seal read on.
    fn pit_route(&self, ino: u64) -> PitRoute {
        let Some(p) = self.pit_of(ino) else {
            return PitRoute::Gone;
        };
        if self
            .snapshotter
            .pending()
            .is_some_and(|(n, _)| n == p.name())
        {
            return PitRoute::Pending(p);
        }
        // Sealed or failed: nothing of the view's objects serves any more.
        p.retire();
        if let Some(v) = self.forwarded.lock().get(&ino) {
            return PitRoute::Sealed(*v);
        }
        let Some(path) = p.path(ino) else {
            return PitRoute::Gone;
        };
        let name = OsStr::new(p.name());
        let top = self.view.lookup(SNAPSHOTS_DIR_ID, name).or_else(|_| {
            // Sealed a moment ago: the view's list may not know it yet.
            self.view.refresh();
            self.view.lookup(SNAPSHOTS_DIR_ID, name)
        });
        let Ok(mut id) = top.map(|e| e.attr.ino) else {
            return PitRoute::Gone;
        };
        for comp in path {
            let next = self.view.lookup(id, OsStr::from_bytes(&comp));
            self.view.forget(id, 1);
            match next {
                Ok(e) => id = e.attr.ino,
                Err(_) => return PitRoute::Gone,
            }
        }
        let mut fwd = self.forwarded.lock();
        match fwd.get(&ino) {
            Some(v) => {
                // Raced with another request: keep one lookup.
                self.view.forget(id, 1);
                PitRoute::Sealed(*v)
            }
            None => {
                fwd.insert(ino, id);
                PitRoute::Sealed(id)
            }
        }
    }

    fn virt_entry(&self, reply: ReplyEntry, r: Result<Attr, nix::errno::Errno>) {
        match r {
            Ok(a) => reply.entry(&VIRT_TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn virt_attr(&self, reply: ReplyAttr, r: Result<Attr, nix::errno::Errno>) {
        match r {
            Ok(a) => reply.attr(&VIRT_TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// The virtual entries of the root: (name, id, attributes).
    fn root_virtuals(&self) -> Vec<(&str, Attr)> {
        let mut v = Vec::new();
        if let Ok(a) = self.control.getattr(CONTROL_DIR_ID) {
            v.push((self.names.control.as_str(), a));
        }
        if let Ok(a) = self.view.getattr(SNAPSHOTS_DIR_ID) {
            v.push((self.names.snapshots.as_str(), a));
        }
        if let Ok(a) = self.control.getattr(QUIESCE_DIR_ID) {
            v.push((self.names.quiesce.as_str(), a));
        }
        v
    }

    /// Lookup of `name` in the root when it is a virtual directory.
    fn root_virtual(&self, name: &OsStr) -> Option<Result<Attr, nix::errno::Errno>> {
        let name = name.as_bytes();
        if name == self.names.control.as_bytes() {
            return Some(self.control.getattr(CONTROL_DIR_ID));
        }
        if name == self.names.snapshots.as_bytes() {
            return Some(self.view.getattr(SNAPSHOTS_DIR_ID));
        }
        if name == self.names.quiesce.as_bytes() {
            return Some(self.control.getattr(QUIESCE_DIR_ID));
        }
        None
    }

    /// Lists the root with the virtual entries after the live ones.
    fn root_listing(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&OsStr, u64, u32, Option<Attr>, Option<crate::live::Attr>, u64) -> bool,
    ) -> Result<(), nix::errno::Errno> {
        let mut full = false;
        if offset < VIRT_BASE {
            self.live_core.readdir(fh, offset as i64, plus, |e| {
                let next = e.next_offset as u64;
                // A live cookie that would land in our range ends the live part.
                let taken = add(e.name, e.ino, e.kind, None, e.attr, next.min(VIRT_BASE));
                full = !taken;
                taken
            })?;
        }
        if full {
            return Ok(());
        }
        let first = offset.saturating_sub(VIRT_BASE) as usize;
        for (i, (name, attr)) in self.root_virtuals().into_iter().enumerate().skip(first) {
            if !add(
                OsStr::new(name),
                attr.ino,
                attr.kind,
                Some(attr),
                None,
                VIRT_BASE + i as u64 + 1,
            ) {
                break;
            }
        }
        Ok(())
    }
}

impl Filesystem for MountFs {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        self.live.init(req, config)
    }

    fn destroy(&mut self) {
        self.snapshotter.shutdown();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT_ID {
            if let Some(r) = self.root_virtual(name) {
                return self.virt_entry(reply, r);
            }
        }
        match self.route(parent.0) {
            Route::Live => self.live.lookup(req, parent, name, reply),
            Route::Control => self.virt_entry(reply, self.control.lookup(parent.0, name)),
            Route::View if parent.0 == SNAPSHOTS_DIR_ID => {
                if let Some(pit) = self.pit_named(name.as_bytes()) {
                    return self.virt_entry(reply, pit.lookup_root());
                }
                let r = self.view.lookup(parent.0, name).or_else(|e| {
                    // Sealed a moment ago: the view's list may not know it yet.
                    self.view.refresh();
                    self.view.lookup(parent.0, name).map_err(|_| e)
                });
                match r {
                    // The root of `.snapshots` changes with every snapshot:
                    // no long-lived negative entries there.
                    Ok(e) => reply.entry(&VIRT_TTL, &file_attr(&e.attr), Generation(0)),
                    Err(e) => reply.error(errno(e)),
                }
            }
            Route::View => self.snapfs.lookup(req, parent, name, reply),
            Route::Pit => match self.pit_route(parent.0) {
                PitRoute::Pending(p) => self.virt_entry(reply, p.lookup(parent.0, name)),
                PitRoute::Sealed(v) => {
                    self.virt_entry(reply, self.view.lookup(v, name).map(|e| e.attr))
                }
                PitRoute::Gone => reply.error(Errno::ESTALE),
            },
        }
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        match self.route(ino.0) {
            Route::Live => self.live.forget(req, ino, nlookup),
            Route::Control => {}
            Route::View => self.snapfs.forget(req, ino, nlookup),
            Route::Pit => {
                let mut rest = nlookup;
                if let Some(p) = self.pit_of(ino.0) {
                    rest = p.forget(ino.0, nlookup);
                    if !p.knows(ino.0) {
                        if let Some(v) = self.forwarded.lock().remove(&ino.0) {
                            self.view.forget(v, 1);
                        }
                    }
                }
                // The same id handed out by the store's view since the
                // seal (a lookup under a node forwarded to it).
                if rest > 0 && namespace(ino.0) == NAMESPACE_SNAPVIEW {
                    self.view.forget(ino.0, rest);
                }
            }
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.route(ino.0) {
            Route::Live => self.live.getattr(req, ino, fh, reply),
            Route::Control => self.virt_attr(reply, self.control.getattr(ino.0)),
            Route::View if ino.0 == SNAPSHOTS_DIR_ID => {
                self.virt_attr(reply, self.view.getattr(ino.0))
            }
            Route::View => self.snapfs.getattr(req, ino, fh, reply),
            Route::Pit => match self.pit_route(ino.0) {
                PitRoute::Pending(p) => self.virt_attr(reply, p.getattr(ino.0)),
                PitRoute::Sealed(v) => self.virt_attr(
                    reply,
                    self.view.getattr(v).map(|mut a| {
                        a.ino = ino.0;
                        a
                    }),
                ),
                PitRoute::Gone => reply.error(Errno::ESTALE),
            },
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
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.route(ino.0) {
            Route::Live => self.live.setattr(
                req, ino, mode, uid, gid, size, atime, mtime, ctime, fh, crtime, chgtime, bkuptime,
                flags, reply,
            ),
            // `echo x > .control/snapshot` truncates first: nothing to truncate.
            Route::Control if mode.is_none() && uid.is_none() && gid.is_none() => {
                self.virt_attr(reply, self.control.getattr(ino.0))
            }
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.route(ino.0) {
            Route::Live => self.live.readlink(req, ino, reply),
            Route::View => self.snapfs.readlink(req, ino, reply),
            Route::Pit => {
                let r = match self.pit_route(ino.0) {
                    PitRoute::Pending(p) => p.readlink(ino.0),
                    PitRoute::Sealed(v) => self.view.readlink(v),
                    PitRoute::Gone => Err(nix::errno::Errno::ESTALE),
                };
                match r {
                    Ok(t) => reply.data(&t),
                    Err(e) => reply.error(errno(e)),
                }
            }
            Route::Control => reply.error(Errno::EINVAL),
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
        match self.route(parent.0) {
            Route::Live if self.reserved(parent.0, name) => reply.error(Errno::EEXIST),
            Route::Live => self.live.mknod(req, parent, name, mode, umask, rdev, reply),
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
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
        match self.route(parent.0) {
            Route::Live if self.reserved(parent.0, name) => reply.error(Errno::EEXIST),
            Route::Live => self.live.mkdir(req, parent, name, mode, umask, reply),
            Route::View if parent.0 == SNAPSHOTS_DIR_ID => {
                // `mkdir .snapshots/NAME` takes snapshot NAME.
                let Some(name) = name.to_str().map(str::to_string) else {
                    return reply.error(Errno::EINVAL);
                };
                let (snapshotter, pits, view) = (
                    self.snapshotter.clone(),
                    self.pits.clone(),
                    self.view.clone(),
                );
                off_worker("mkdir", move || {
                    let name = match snapshotter.take(Some(&name)) {
                        Ok(name) => name,
                        Err(r) => return reply.error(errno(r.errno)),
                    };
                    let r = match pits.named(name.as_bytes()) {
                        Some(pit) => pit.lookup_root(),
                        None => {
                            // Sealed already (an empty tree copies fast).
                            view.refresh();
                            view.lookup(SNAPSHOTS_DIR_ID, OsStr::new(&name))
                                .map(|e| e.attr)
                        }
                    };
                    match r {
                        Ok(a) => reply.entry(&VIRT_TTL, &file_attr(&a), Generation(0)),
                        Err(e) => reply.error(errno(e)),
                    }
                });
            }
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.route(parent.0) {
            Route::Live if self.reserved(parent.0, name) => reply.error(Errno::EPERM),
            Route::Live => self.live.unlink(req, parent, name, reply),
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.route(parent.0) {
            Route::Live if self.reserved(parent.0, name) => reply.error(Errno::EPERM),
            Route::Live => self.live.rmdir(req, parent, name, reply),
            Route::View if parent.0 == SNAPSHOTS_DIR_ID => {
                // `rmdir .snapshots/NAME` forgets snapshot NAME.
                let Some(name) = name.to_str() else {
                    return reply.error(Errno::ENOENT);
                };
                if name == crate::snapview::LATEST {
                    return reply.error(Errno::ENOTDIR);
                }
                let (snapshotter, name) = (self.snapshotter.clone(), name.to_string());
                off_worker("rmdir", move || match snapshotter.forget(&name) {
                    Ok(()) => reply.ok(),
                    Err(r) => reply.error(errno(r.errno)),
                });
            }
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.route(parent.0) {
            Route::Live if self.reserved(parent.0, link_name) => reply.error(Errno::EEXIST),
            Route::Live => self.live.symlink(req, parent, link_name, target, reply),
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
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
        match (self.route(parent.0), self.route(newparent.0)) {
            (Route::Live, Route::Live)
                if self.reserved(parent.0, name) || self.reserved(newparent.0, newname) =>
            {
                reply.error(Errno::EPERM)
            }
            (Route::Live, Route::Live) => self
                .live
                .rename(req, parent, name, newparent, newname, flags, reply),
            (Route::Live, _) | (_, Route::Live) => reply.error(Errno::EXDEV),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match (self.route(ino.0), self.route(newparent.0)) {
            (Route::Live, Route::Live) if self.reserved(newparent.0, newname) => {
                reply.error(Errno::EEXIST)
            }
            (Route::Live, Route::Live) => self.live.link(req, ino, newparent, newname, reply),
            (Route::Live, _) | (_, Route::Live) => reply.error(Errno::EXDEV),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.route(ino.0) {
            Route::Live => self.live.open(req, ino, flags, reply),
            Route::Control => {
                let contents = if flags.0 & libc::O_ACCMODE == libc::O_WRONLY {
                    Ok(Vec::new())
                } else {
                    self.control.contents(ino.0)
                };
                match contents {
                    Ok(c) => {
                        let fh = self.fh();
                        self.control_files.lock().insert(fh, Arc::new(c));
                        // Direct I/O: every open reads what is true now, and
                        // each write reaches the daemon as written.
                        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                    }
                    Err(e) => reply.error(errno(e)),
                }
            }
            // Not the standalone view's ENOSYS (no opens at all): that
            // would stop the kernel sending opens for the live tree too.
            Route::View => match self.view.open(ino.0, flags.0) {
                Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
                Err(e) => reply.error(errno(e)),
            },

            Route::Pit => {
                let r = match self.pit_route(ino.0) {
                    PitRoute::Pending(p) => p.open(ino.0, flags.0),
                    PitRoute::Sealed(v) => self.view.open(v, flags.0).map(|()| 0),
                    PitRoute::Gone => Err(nix::errno::Errno::ESTALE),
                };
                match r {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(e) => reply.error(errno(e)),
                }
            }
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.route(ino.0) {
            Route::Live => self
                .live
                .read(req, ino, fh, offset, size, flags, lock_owner, reply),
            Route::Control => {
                let c = self.control_files.lock().get(&fh.0).cloned();
                match c {
                    Some(c) => {
                        let start = (offset as usize).min(c.len());
                        let end = (start + size as usize).min(c.len());
                        reply.data(&c[start..end])
                    }
                    None => {
                        tracing::warn!("read of control file {ino:?} with unknown handle {fh:?}");
                        reply.error(Errno::EBADF)
                    }
                }
            }
            Route::View => self
                .snapfs
                .read(req, ino, fh, offset, size, flags, lock_owner, reply),
            Route::Pit => match self.pit_route(ino.0) {
                PitRoute::Pending(p) => reply_read(reply, size, |buf| p.read(fh.0, offset, buf)),
                PitRoute::Sealed(v) => {
                    reply_read(reply, size, |buf| self.view.read(v, offset, buf))
                }
                PitRoute::Gone => reply.error(Errno::ESTALE),
            },
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.route(ino.0) {
            Route::Live => self.live.write(
                req,
                ino,
                fh,
                offset,
                data,
                write_flags,
                flags,
                lock_owner,
                reply,
            ),
            Route::Control => {
                let (control, data) = (self.control.clone(), data.to_vec());
                off_worker("control", move || match control.write(ino.0, &data) {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(errno(e)),
                });
            }
            _ => reply.error(Errno::EROFS),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.route(ino.0) {
            Route::Live => self
                .live
                .release(req, ino, fh, flags, lock_owner, flush, reply),
            Route::Control => {
                self.control_files.lock().remove(&fh.0);
                reply.ok()
            }
            Route::View => self
                .snapfs
                .release(req, ino, fh, flags, lock_owner, flush, reply),
            Route::Pit => {
                if let Some(p) = self.pit_of(ino.0) {
                    p.release(fh.0);
                }
                reply.ok()
            }
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // No tree needs it: one answer for the whole connection.
        self.live.flush(req, ino, fh, lock_owner, reply)
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.route(ino.0) {
            Route::Live => self.live.fsync(req, ino, fh, datasync, reply),
            _ => reply.ok(),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.route(ino.0) {
            Route::Live => self.live.opendir(req, ino, flags, reply),
            Route::Control => match self.control.list(ino.0) {
                Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
                Err(e) => reply.error(errno(e)),
            },
            Route::View => self.snapfs.opendir(req, ino, flags, reply),
            Route::Pit => {
                let r = match self.pit_route(ino.0) {
                    PitRoute::Pending(p) => p.opendir(ino.0),
                    PitRoute::Sealed(v) => self.view.opendir(v).map(|fh| fh | FORWARD_FH),
                    PitRoute::Gone => Err(nix::errno::Errno::ESTALE),
                };
                match r {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(e) => reply.error(errno(e)),
                }
            }
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = match self.route(ino.0) {
            Route::Live if ino.0 == ROOT_ID && self.names.visible => {
                self.root_listing(fh.0, offset, false, |name, id, kind, _, _, next| {
                    !reply.add(INodeNo(id), next, virt_type(kind), name)
                })
            }
            Route::Live => return self.live.readdir(req, ino, fh, offset, reply),
            Route::Control => self.control.list(ino.0).map(|entries| {
                for (i, (id, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(id), i as u64 + 1, virt_type(kind), name) {
                        break;
                    }
                }
            }),
            Route::View if ino.0 == SNAPSHOTS_DIR_ID => {
                self.snapshots_listing(fh.0, offset, false, |name, id, kind, _, next| {
                    !reply.add(INodeNo(id), next, virt_type(kind), name)
                })
            }
            Route::View => return self.snapfs.readdir(req, ino, fh, offset, reply),
            Route::Pit => match self.pit_listing(ino.0, fh.0) {
                Ok(Listing::Pending(p)) => p.readdir(ino.0, fh.0, offset, false, |e, next| {
                    !reply.add(
                        INodeNo(e.id),
                        next,
                        virt_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    )
                }),
                Ok(Listing::Sealed(vfh)) => self.view.readdir(vfh, offset, false, |e| {
                    !reply.add(INodeNo(e.ino), e.next_offset, virt_type(e.kind), e.name)
                }),
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dot = |id: u64, kind: u32| Attr::synthetic(id, kind, 0o555, (0, 0), Default::default());
        let r = match self.route(ino.0) {
            Route::Live if ino.0 == ROOT_ID && self.names.visible => {
                let ttl = self.live.ttl();
                self.root_listing(fh.0, offset, true, |name, id, kind, vattr, lattr, next| {
                    let attr = match (vattr, lattr) {
                        (Some(v), _) => file_attr(&v),
                        (None, Some(l)) => {
                            let mut a = super::file_attr(&l);
                            a.ino = INodeNo(id);
                            a
                        }
                        (None, None) => file_attr(&dot(id, kind)),
                    };
                    !reply.add(INodeNo(id), next, name, &ttl, &attr, Generation(0))
                })
            }
            Route::Live => return self.live.readdirplus(req, ino, fh, offset, reply),
            Route::Control => self.control.list(ino.0).map(|entries| {
                for (i, (id, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    let attr = if name == "." || name == ".." {
                        dot(id, kind)
                    } else {
                        match self.control.getattr(id) {
                            Ok(a) => a,
                            Err(_) => continue,
                        }
                    };
                    if reply.add(
                        INodeNo(id),
                        i as u64 + 1,
                        name,
                        &VIRT_TTL,
                        &file_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                }
            }),
            Route::View if ino.0 == SNAPSHOTS_DIR_ID => {
                self.snapshots_listing(fh.0, offset, true, |name, id, kind, attr, next| {
                    let attr = attr.unwrap_or_else(|| dot(id, kind));
                    !reply.add(
                        INodeNo(id),
                        next,
                        name,
                        &VIRT_TTL,
                        &file_attr(&attr),
                        Generation(0),
                    )
                })
            }
            Route::View => return self.snapfs.readdirplus(req, ino, fh, offset, reply),
            Route::Pit => match self.pit_listing(ino.0, fh.0) {
                Ok(Listing::Pending(p)) => p.readdir(ino.0, fh.0, offset, true, |e, next| {
                    let attr = e.attr.unwrap_or_else(|| dot(e.id, e.kind));
                    !reply.add(
                        INodeNo(e.id),
                        next,
                        OsStr::from_bytes(&e.name),
                        &VIRT_TTL,
                        &file_attr(&attr),
                        Generation(0),
                    )
                }),
                Ok(Listing::Sealed(vfh)) => self.view.readdir(vfh, offset, true, |e| {
                    let attr = e.attr.unwrap_or_else(|| dot(e.ino, e.kind));
                    !reply.add(
                        INodeNo(e.ino),
                        e.next_offset,
                        e.name,
                        &VIRT_TTL,
                        &file_attr(&attr),
                        Generation(0),
                    )
                }),
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        match self.route(ino.0) {
            Route::Live => self.live.releasedir(req, ino, fh, flags, reply),
            Route::View => self.snapfs.releasedir(req, ino, fh, flags, reply),
            Route::Pit => {
                if fh.0 & FORWARD_FH != 0 {
                    self.view.releasedir(fh.0 & !FORWARD_FH);
                } else if let Some(p) = self.pit_of(ino.0) {
                    p.releasedir(fh.0);
                }
                if let Some(vfh) = self.forwarded_dirs.lock().remove(&(ino.0, fh.0)) {
                    self.view.releasedir(vfh);
                }
                reply.ok()
            }
            Route::Control => reply.ok(),
        }
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.route(ino.0) {
            Route::Live => self.live.fsyncdir(req, ino, fh, datasync, reply),
            _ => reply.ok(),
        }
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.live.statfs(req, INodeNo(ROOT_ID), reply)
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        match self.route(ino.0) {
            Route::Live => self
                .live
                .setxattr(req, ino, name, value, flags, position, reply),
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.route(ino.0) {
            Route::Live => self.live.getxattr(req, ino, name, size, reply),
            Route::View => self.snapfs.getxattr(req, ino, name, size, reply),
            Route::Pit => reply_xattr(
                reply,
                match self.pit_route(ino.0) {
                    PitRoute::Pending(p) => p.getxattr(ino.0, name, size),
                    PitRoute::Sealed(v) => self.view.getxattr(v, name, size),
                    PitRoute::Gone => Err(nix::errno::Errno::ESTALE),
                },
            ),
            Route::Control => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.route(ino.0) {
            Route::Live => self.live.listxattr(req, ino, size, reply),
            Route::View => self.snapfs.listxattr(req, ino, size, reply),
            Route::Pit => reply_xattr(
                reply,
                match self.pit_route(ino.0) {
                    PitRoute::Pending(p) => p.listxattr(ino.0, size),
                    PitRoute::Sealed(v) => self.view.listxattr(v, size),
                    PitRoute::Gone => Err(nix::errno::Errno::ESTALE),
                },
            ),
            Route::Control => reply_xattr(reply, Ok(crate::live::Xattr::Size(0))),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.route(ino.0) {
            Route::Live => self.live.removexattr(req, ino, name, reply),
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
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
        match self.route(parent.0) {
            Route::Live if self.reserved(parent.0, name) => reply.error(Errno::EEXIST),
            Route::Live => self
                .live
                .create(req, parent, name, mode, umask, flags, reply),
            Route::Control => reply.error(Errno::EPERM),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.route(ino.0) {
            Route::Live => self
                .live
                .fallocate(req, ino, fh, offset, length, mode, reply),
            _ => reply.error(Errno::EROFS),
        }
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.route(ino.0) {
            Route::Live => self.live.lseek(req, ino, fh, offset, whence, reply),
            _ => reply.error(Errno::ENOSYS),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
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
        match (self.route(ino_in.0), self.route(ino_out.0)) {
            (Route::Live, Route::Live) => self.live.copy_file_range(
                req, ino_in, fh_in, offset_in, ino_out, fh_out, offset_out, len, flags, reply,
            ),
            // The kernel falls back to reading and writing.
            _ => reply.error(Errno::EXDEV),
        }
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<crate::live::Xattr, nix::errno::Errno>) {
    match r {
        Ok(crate::live::Xattr::Size(n)) => reply.size(n as u32),
        Ok(crate::live::Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(e)),
    }
}

/// Where the listing of an unsealed view's directory continues.
enum Listing {
    Pending(Arc<PitView<PointInTime>>),
    /// In the sealed view, under this handle of its.
    Sealed(u64),
}

impl MountFs {
    /// The listing behind handle `fh` of node `ino` of an unsealed view.
    /// Offsets mean the same in both views (entries sorted by name, after
    /// `.` and `..`), so a listing begun before the seal goes on after it.
    fn pit_listing(&self, ino: u64, fh: u64) -> Result<Listing, nix::errno::Errno> {
        if fh & FORWARD_FH != 0 {
            return Ok(Listing::Sealed(fh & !FORWARD_FH));
        }
        match self.pit_route(ino) {
            PitRoute::Pending(p) => Ok(Listing::Pending(p)),
            PitRoute::Sealed(v) => {
                let mut dirs = self.forwarded_dirs.lock();
                if let Some(vfh) = dirs.get(&(ino, fh)) {
                    return Ok(Listing::Sealed(*vfh));
                }
                let vfh = self.view.opendir(v)?;
                dirs.insert((ino, fh), vfh);
                Ok(Listing::Sealed(vfh))
            }
            PitRoute::Gone => Err(nix::errno::Errno::ESTALE),
        }
    }

    /// A virtual directory's name in the root: the live tree may not make
    /// one there (the source may have one: it is then shadowed, and the
    /// mount warned at start).
    fn reserved(&self, parent: u64, name: &OsStr) -> bool {
        parent == ROOT_ID
            && (name.as_bytes() == self.names.control.as_bytes()
                || name.as_bytes() == self.names.snapshots.as_bytes()
                || name.as_bytes() == self.names.quiesce.as_bytes())
    }

    /// Lists `.snapshots`: the store's snapshots and `latest`, then the
    /// pending snapshot (not sealed yet) if there is one.
    fn snapshots_listing(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&OsStr, u64, u32, Option<Attr>, u64) -> bool,
    ) -> Result<(), nix::errno::Errno> {
        let mut full = false;
        if offset < PENDING_OFF {
            self.view.readdir(fh, offset, plus, |e| {
                let taken = add(e.name, e.ino, e.kind, e.attr, e.next_offset);
                full = !taken;
                taken
            })?;
        }
        if full || offset >= PENDING_OFF {
            return Ok(());
        }
        let Some((name, _)) = self.snapshotter.pending() else {
            return Ok(());
        };
        if let Some(pit) = self.pit_named(name.as_bytes()) {
            let attr = if plus {
                pit.lookup_root().ok()
            } else {
                pit.getattr(pit.root_id()).ok()
            };
            if let Some(a) = attr {
                if !add(
                    OsStr::new(&name),
                    a.ino,
                    a.kind,
                    plus.then_some(a),
                    PENDING_OFF,
                ) && plus
                {
                    pit.forget(pit.root_id(), 1);
                }
            }
        }
        Ok(())
    }
}
