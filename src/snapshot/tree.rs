//! `.snapshots/` of a live mount as a [`Tree`]: sealed snapshots from the
//! store's view ([`crate::snapview`]), the pending one from its point in
//! time ([`PitView`]), and `mkdir`/`rmdir` to take and forget one.
//!
//! Seal forwarding: a node of the pending view that the kernel still holds
//! once its snapshot is sealed is found again by path in the store's view
//! (and remembered), so a `tar` or `rsync` started during the copy reads
//! on across the seal. Both views give an object the same id, so the
//! kernel sees one inode throughout; a directory listing begun in the
//! pending view goes on in the sealed one at the same offset (both list
//! entries sorted by name after `.` and `..`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::Duration;

use super::diff::PointInTime;
use super::pitview::PitView;
use super::requester::Snapshotter;
use crate::live::nodes::FdBudget;
use crate::snapview::ids::SNAPSHOTS_DIR_ID;
use crate::snapview::tree::ViewTree;
use crate::snapview::{SnapView, LATEST};
use crate::vfs::{
    AddEntry, Attr, AttrOut, Class, Ctx, DirEntry, Entry, Errno, Namespace, NodeId, Opened, Result,
    Statfs, Tree, Xattr,
};

/// Lifetime of what the kernel learns of `.snapshots/` itself and of a
/// pending snapshot (they change with every snapshot and every write).
pub const SNAPSHOTS_TTL: Duration = Duration::from_secs(1);

/// Offset after the pending snapshot's entry in `.snapshots`.
const PENDING_OFF: u64 = 1 << 40;

/// Marks a directory handle of the sealed view given out for a node of the
/// pending one.
const FORWARD_FH: u64 = 1 << 62;

type Pit = PitView<PointInTime>;

/// Where a request for a node of a pending view goes.
enum PitRoute {
    /// Its snapshot is still being copied.
    Pending(Arc<Pit>),
    /// Sealed since: the store's view, this node of it.
    Sealed(u64),
    /// The view or its snapshot is gone (a failed copy).
    Gone,
}

/// Where the listing of a pending view's directory continues.
enum Listing {
    Pending(Arc<Pit>),
    /// In the sealed view, under this handle of its.
    Sealed(u64),
}

/// The views of unsealed snapshots the kernel may still hold, by name.
struct Pits {
    snapshotter: Arc<Snapshotter>,
    map: RwLock<HashMap<String, Arc<Pit>>>,
    /// The daemon's descriptor budget, shared with the live tree's nodes.
    budget: Arc<FdBudget>,
}

impl Pits {
    /// The view of the pending snapshot `name`, made on first use; views
    /// of snapshots sealed since are dropped once the kernel holds nothing
    /// of them.
    fn named(&self, name: &[u8]) -> Option<Arc<Pit>> {
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

    /// The pending view that knows id `ino`.
    fn of(&self, ino: u64) -> Option<Arc<Pit>> {
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

pub struct SnapshotsTree {
    view: Arc<SnapView>,
    /// The sealed snapshots, served as a standalone view serves them.
    sealed: ViewTree,
    snapshotter: Arc<Snapshotter>,
    pits: Arc<Pits>,
    /// Nodes of pending views whose snapshot has been sealed since: the
    /// sealed view's node each stands for (holding one lookup on it).
    forwarded: Mutex<HashMap<u64, u64>>,
    /// Listings of such nodes opened before the seal: the sealed view's.
    forwarded_dirs: Mutex<HashMap<(u64, u64), u64>>,
}

/// What a node of `.snapshots/` is.
enum Route {
    /// `.snapshots` itself.
    Dir,
    /// A node of a sealed snapshot.
    Sealed,
    /// A node of a pending snapshot (or one sealed since).
    Pending,
}

impl SnapshotsTree {
    pub fn new(view: Arc<SnapView>, snapshotter: Arc<Snapshotter>, budget: Arc<FdBudget>) -> Self {
        SnapshotsTree {
            sealed: ViewTree::new(view.clone()),
            view,
            pits: Arc::new(Pits {
                snapshotter: snapshotter.clone(),
                map: RwLock::new(HashMap::new()),
                budget,
            }),
            snapshotter,
            forwarded: Mutex::new(HashMap::new()),
            forwarded_dirs: Mutex::new(HashMap::new()),
        }
    }

    /// The id of `.snapshots` itself.
    pub fn root_id(&self) -> NodeId {
        NodeId(SNAPSHOTS_DIR_ID)
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

    /// An id of the snapshots' namespace may be a node of the pending
    /// snapshot's view, which gives out the ids the sealed view will.
    fn route(&self, id: NodeId) -> Route {
        if id.0 == SNAPSHOTS_DIR_ID {
            Route::Dir
        } else if Namespace::Pending.owns(id.0) || self.pits.of(id.0).is_some() {
            Route::Pending
        } else {
            Route::Sealed
        }
    }

    /// Where a request for node `ino` of a pending view goes. Once its
    /// snapshot is sealed, its nodes are found again by path in the
    /// store's view, so tools walking it across the seal read on.
    fn pit_route(&self, ino: u64) -> PitRoute {
        let Some(p) = self.pits.of(ino) else {
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

    /// The listing behind handle `fh` of node `ino` of a pending view.
    fn pit_listing(&self, ino: u64, fh: u64) -> Result<Listing> {
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
            PitRoute::Gone => Err(Errno::ESTALE),
        }
    }

    /// Runs `pending` or `sealed` for node `id` of a pending view.
    fn on_pit<T>(
        &self,
        id: NodeId,
        pending: impl FnOnce(&Pit) -> Result<T>,
        sealed: impl FnOnce(u64) -> Result<T>,
    ) -> Result<T> {
        match self.pit_route(id.0) {
            PitRoute::Pending(p) => pending(&p),
            PitRoute::Sealed(v) => sealed(v),
            PitRoute::Gone => Err(Errno::ESTALE),
        }
    }

    fn entry(attr: Attr) -> Entry {
        Entry {
            attr,
            ttl: SNAPSHOTS_TTL,
        }
    }

    /// Lists `.snapshots`: the store's snapshots and `latest`, then the
    /// pending snapshot (not sealed yet) if there is one.
    fn list_dir(&self, fh: u64, offset: u64, plus: bool, add: &mut AddEntry<'_>) -> Result<()> {
        let mut full = false;
        if offset < PENDING_OFF {
            self.view.readdir(fh, offset, plus, |e| {
                let taken = add(&DirEntry {
                    name: e.name,
                    ino: e.ino,
                    kind: e.kind,
                    next: e.next_offset,
                    attr: e.attr,
                    ttl: SNAPSHOTS_TTL,
                });
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
        if let Some(pit) = self.pits.named(name.as_bytes()) {
            let attr = if plus {
                pit.lookup_root().ok()
            } else {
                pit.getattr(pit.root_id()).ok()
            };
            if let Some(a) = attr {
                let e = DirEntry {
                    name: OsStr::new(&name),
                    ino: a.ino,
                    kind: a.kind,
                    next: PENDING_OFF,
                    attr: plus.then_some(a),
                    ttl: SNAPSHOTS_TTL,
                };
                if !add(&e) && plus {
                    pit.forget(pit.root_id(), 1);
                }
            }
        }
        Ok(())
    }

    /// `mkdir .snapshots/NAME` takes snapshot NAME (on a thread of its
    /// own: it may quiesce applications that use the mount).
    fn take(&self, name: &OsStr) -> Result<Entry> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        let name = self.snapshotter.take(Some(name)).map_err(|r| r.errno)?;
        let attr = match self.pits.named(name.as_bytes()) {
            Some(pit) => pit.lookup_root()?,
            None => {
                // Sealed already (an empty tree copies fast).
                self.view.refresh();
                self.view.lookup(SNAPSHOTS_DIR_ID, OsStr::new(&name))?.attr
            }
        };
        Ok(Self::entry(attr))
    }

    /// `rmdir .snapshots/NAME` forgets snapshot NAME.
    fn forget_snapshot(&self, name: &OsStr) -> Result<()> {
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        if name == LATEST {
            return Err(Errno::ENOTDIR);
        }
        self.snapshotter.forget(name).map_err(|r| r.errno)
    }
}

impl Tree for SnapshotsTree {
    fn class(&self, id: NodeId) -> Class {
        match self.route(id) {
            Route::Dir => Class::Slow,
            _ => Class::Virtual,
        }
    }

    fn lookup(&self, ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<Entry> {
        match self.route(parent) {
            Route::Dir => {
                if let Some(pit) = self.pits.named(name.as_bytes()) {
                    return pit.lookup_root().map(Self::entry);
                }
                let r = self.view.lookup(parent.0, name).or_else(|e| {
                    // Sealed a moment ago: the view's list may not know it yet.
                    self.view.refresh();
                    self.view.lookup(parent.0, name).map_err(|_| e)
                });
                // The root of `.snapshots` changes with every snapshot: no
                // long-lived negative entries there.
                r.map(|e| Self::entry(e.attr))
            }
            Route::Sealed => self.sealed.lookup(ctx, parent, name),
            Route::Pending => self
                .on_pit(
                    parent,
                    |p| p.lookup(parent.0, name),
                    |v| self.view.lookup(v, name).map(|e| e.attr),
                )
                .map(Self::entry),
        }
    }

    fn forget(&self, id: NodeId, n: u64) {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.forget(id, n),
            Route::Pending => {
                let mut rest = n;
                if let Some(p) = self.pits.of(id.0) {
                    rest = p.forget(id.0, n);
                    if !p.knows(id.0) {
                        if let Some(v) = self.forwarded.lock().remove(&id.0) {
                            self.view.forget(v, 1);
                        }
                    }
                }
                // The same id handed out by the store's view since the
                // seal (a lookup under a node forwarded to it).
                if rest > 0 && Namespace::Snapshots.owns(id.0) {
                    self.view.forget(id.0, rest);
                }
            }
        }
    }

    fn getattr(&self, id: NodeId, fh: Option<u64>) -> Result<AttrOut> {
        let out = |attr| AttrOut {
            attr,
            ttl: SNAPSHOTS_TTL,
        };
        match self.route(id) {
            Route::Dir => self.view.getattr(id.0).map(out),
            Route::Sealed => self.sealed.getattr(id, fh),
            Route::Pending => self
                .on_pit(
                    id,
                    |p| p.getattr(id.0),
                    |v| self.view.getattr(v).map(|a| Attr { ino: id.0, ..a }),
                )
                .map(out),
        }
    }

    fn readlink(&self, id: NodeId) -> Result<Vec<u8>> {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.readlink(id),
            Route::Pending => self.on_pit(id, |p| p.readlink(id.0), |v| self.view.readlink(v)),
        }
    }

    fn mkdir(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr, _mode: u32) -> Result<Entry> {
        match self.route(parent) {
            Route::Dir => self.take(name),
            _ => Err(Errno::EROFS),
        }
    }

    fn rmdir(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<()> {
        match self.route(parent) {
            Route::Dir => self.forget_snapshot(name),
            _ => Err(Errno::EROFS),
        }
    }

    fn open(&self, ctx: &Ctx, id: NodeId, flags: i32) -> Result<Opened> {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.open(ctx, id, flags),
            Route::Pending => self
                .on_pit(
                    id,
                    |p| p.open(id.0, flags),
                    |v| self.view.open(v, flags).map(|()| 0),
                )
                .map(Opened::plain),
        }
    }

    fn read(&self, id: NodeId, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.read(id, fh, offset, buf),
            Route::Pending => match self.pit_route(id.0) {
                PitRoute::Pending(p) => p.read(fh, offset, buf),
                PitRoute::Sealed(v) => self.view.read(v, offset, buf),
                PitRoute::Gone => Err(Errno::ESTALE),
            },
        }
    }

    fn release(&self, id: NodeId, fh: u64) {
        if let Route::Pending = self.route(id) {
            if let Some(p) = self.pits.of(id.0) {
                p.release(fh);
            }
        }
    }

    fn opendir(&self, id: NodeId) -> Result<Opened> {
        match self.route(id) {
            Route::Dir => self.view.opendir(id.0).map(Opened::plain),
            Route::Sealed => self.sealed.opendir(id),
            Route::Pending => self
                .on_pit(
                    id,
                    |p| p.opendir(id.0),
                    |v| self.view.opendir(v).map(|fh| fh | FORWARD_FH),
                )
                .map(Opened::plain),
        }
    }

    fn readdir(
        &self,
        id: NodeId,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> Result<()> {
        match self.route(id) {
            Route::Dir => self.list_dir(fh, offset, plus, add),
            Route::Sealed => self.sealed.readdir(id, fh, offset, plus, add),
            Route::Pending => match self.pit_listing(id.0, fh)? {
                Listing::Pending(p) => p.readdir(id.0, fh, offset, plus, |e, next| {
                    add(&DirEntry {
                        name: OsStr::from_bytes(&e.name),
                        ino: e.id,
                        kind: e.kind,
                        next,
                        attr: e.attr,
                        ttl: SNAPSHOTS_TTL,
                    })
                }),
                Listing::Sealed(vfh) => self.view.readdir(vfh, offset, plus, |e| {
                    add(&DirEntry {
                        name: e.name,
                        ino: e.ino,
                        kind: e.kind,
                        next: e.next_offset,
                        attr: e.attr,
                        ttl: SNAPSHOTS_TTL,
                    })
                }),
            },
        }
    }

    fn releasedir(&self, id: NodeId, fh: u64) {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.releasedir(id, fh),
            Route::Pending => {
                if fh & FORWARD_FH != 0 {
                    self.view.releasedir(fh & !FORWARD_FH);
                } else if let Some(p) = self.pits.of(id.0) {
                    p.releasedir(fh);
                }
                if let Some(vfh) = self.forwarded_dirs.lock().remove(&(id.0, fh)) {
                    self.view.releasedir(vfh);
                }
            }
        }
    }

    /// Answered for the whole mount by the live tree (see [`crate::vfs::mux`]).
    fn statfs(&self, id: NodeId) -> Result<Statfs> {
        self.sealed.statfs(id)
    }

    fn getxattr(&self, id: NodeId, name: &OsStr, size: u32) -> Result<Xattr> {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.getxattr(id, name, size),
            Route::Pending => self.on_pit(
                id,
                |p| p.getxattr(id.0, name, size),
                |v| self.view.getxattr(v, name, size),
            ),
        }
    }

    fn listxattr(&self, id: NodeId, size: u32) -> Result<Xattr> {
        match self.route(id) {
            Route::Dir | Route::Sealed => self.sealed.listxattr(id, size),
            Route::Pending => self.on_pit(
                id,
                |p| p.listxattr(id.0, size),
                |v| self.view.listxattr(v, size),
            ),
        }
    }

    /// The mount goes away: a copy running stops (it resumes at the next mount).
    fn destroy(&self) {
        self.snapshotter.shutdown();
    }
}
