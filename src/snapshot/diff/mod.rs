//! A mount's point-in-time snapshots: pre-images preserved in the diff area
//! before the first change to an object a pending snapshot needs, the tree
//! as of the point in time read from them ([`PointInTime`]), and the
//! tracking of what changed since the last sealed snapshot ([`ChangeSet`]).
//!
//! [`Snapshots`] is what the live core calls before every change (it
//! implements [`Changes`]); the daemon commits a snapshot inside its write
//! barrier, hands [`Snapshots::point_in_time`] to the provider and the view,
//! then reports [`Snapshots::sealed`] or [`Snapshots::failed`]. A
//! pre-image that cannot be kept fails the snapshot, not the change
//! (`fate.rs`). docs/SNAPSHOTS.md describes the diff area on disk.

pub(crate) mod area;
mod fate;
mod pit;
mod pit_read;

use parking_lot::{Mutex, RwLock};
use std::ffi::{CStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::ingest::changeset::ChangeSet;
use crate::live::changes::{Changes, Obj};
use crate::os::{self, fd, Errno, Follow, Result as LiveResult};

pub use area::BLOCK;
pub use fate::DiffFull;
pub use pit_read::{PitFile, PitObj, PointInTime};

use pit::{Pit, Source};

/// Prefix of a released diff dir being deleted in the background.
const TRASH_PREFIX: &str = ".trash-";

/// The change set of a snapshot in copy, kept to give its changes back if
/// the copy fails.
struct InFlight {
    name: String,
    changes: Arc<ChangeSet>,
    complete: bool,
}

#[derive(Default)]
struct Tracking {
    /// Changes since the barrier of the last snapshot committed (sealed or
    /// in copy); with `in_flight`, since `baseline`'s barrier.
    acc: ChangeSet,
    /// `acc` holds every change since that barrier.
    acc_complete: bool,
    /// The last snapshot sealed by this daemon.
    baseline: Option<String>,
    in_flight: Option<InFlight>,
}

/// One per mount; see the module comment.
pub struct Snapshots {
    source: Arc<Source>,
    diff_root: PathBuf,
    diff_root_fd: OwnedFd,
    pending: RwLock<Option<Arc<PointInTime>>>,
    tracking: Mutex<Tracking>,
    /// `diff_max` (`None`: [`DEFAULT_DIFF_SHARE`] of the free space).
    diff_max: Option<u64>,
    /// Pending snapshots an earlier daemon left failed (name, time, why),
    /// found by [`Self::open`], for the status to tell.
    failed_earlier: Mutex<Vec<(String, SystemTime, String)>>,
}

/// Without `diff_max`, a snapshot's pre-images may take this share of the
/// space free on the diff area's filesystem when it is committed: the
/// other half is left to the live tree.
pub const DEFAULT_DIFF_SHARE: (u64, u64) = (1, 2);

impl Snapshots {
    /// `source`: the backing directory; `diff_root`: where the diff area
    /// lives (`<source>/.bkfs/pit`, created if missing); `hidden`: names in
    /// the source root never shown; `diff_max`: the most each pending
    /// snapshot's pre-images may take (`-o diff_max=SIZE`; `None`:
    /// [`DEFAULT_DIFF_SHARE`] of the free space at its commit). Loads a
    /// pending snapshot left by an earlier daemon, so that its copy can be
    /// redone.
    pub fn open(
        source: &Path,
        diff_root: &Path,
        hidden: Vec<OsString>,
        diff_max: Option<u64>,
    ) -> io::Result<Snapshots> {
        std::fs::create_dir_all(diff_root)?;
        let root = fd::open(source, Follow::No, libc::O_PATH | libc::O_DIRECTORY)?;
        let mount = fd::open_dir(source)?;
        let st = fd::fstat(root.as_fd())?;
        let root_key = (st.st_dev, st.st_ino);
        let diff_root_fd = fd::open_dir(diff_root)?;
        let skip = Self::skip_entry(source, diff_root)?;
        let source = Arc::new(Source {
            root: Arc::new(root),
            mount,
            root_key,
            hidden,
            skip,
        });
        let snaps = Snapshots {
            source,
            diff_root: diff_root.to_owned(),
            diff_root_fd,
            pending: RwLock::new(None),
            tracking: Mutex::new(Tracking::default()),
            diff_max,
            failed_earlier: Mutex::new(Vec::new()),
        };
        snaps.load_pending()?;
        Ok(snaps)
    }

    /// The bound for a snapshot committed now.
    fn limit(&self) -> io::Result<u64> {
        if let Some(max) = self.diff_max {
            return Ok(max);
        }
        let vfs = fd::fstatvfs(self.diff_root_fd.as_fd())?;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize as u64);
        let (num, den) = DEFAULT_DIFF_SHARE;
        Ok(free / den * num)
    }

    /// Snapshots an earlier daemon left pending and failed (the reason is
    /// in their diff dir, which is gone now): name, time, reason. Taken
    /// once.
    pub fn take_failed_earlier(&self) -> Vec<(String, SystemTime, String)> {
        std::mem::take(&mut *self.failed_earlier.lock())
    }

    /// The diff area's entry in the source, if it lies inside it.
    fn skip_entry(
        source: &Path,
        diff_root: &Path,
    ) -> io::Result<Option<(crate::ingest::Key, Vec<u8>)>> {
        let src = std::fs::canonicalize(source)?;
        let diff = std::fs::canonicalize(diff_root)?;
        if !diff.starts_with(&src) || diff == src {
            return Ok(None);
        }
        let (Some(parent), Some(name)) = (diff.parent(), diff.file_name()) else {
            return Ok(None);
        };
        let st = std::fs::symlink_metadata(parent)?;
        use std::os::unix::fs::MetadataExt;
        Ok(Some(((st.dev(), st.ino()), name.as_bytes().to_vec())))
    }

    /// Finds the pending snapshot of an earlier daemon; cleans what is left
    /// of released or half-committed ones.
    fn load_pending(&self) -> io::Result<()> {
        let mut found: Vec<(pit::Pit, PathBuf)> = Vec::new();
        for ent in std::fs::read_dir(&self.diff_root)? {
            let ent = ent?;
            let name = ent.file_name();
            let path = ent.path();
            if name.as_bytes().starts_with(TRASH_PREFIX.as_bytes()) {
                remove_links(&path);
                remove_in_background(path);
                continue;
            }
            if !ent.file_type()?.is_dir() {
                continue;
            }
            if !path.join("state.json").exists() {
                // Committing was cut short: the commit never returned.
                self.trash(&path);
                continue;
            }
            let dir = fd::open_dir(&path)?;
            match Pit::load(self.source.clone(), dir, self.limit()?) {
                Ok(p) if p.failure().is_some() => {
                    let why = p.failure().unwrap_or_default();
                    tracing::warn!("pending snapshot {:?} had failed: {why}", p.name);
                    self.failed_earlier
                        .lock()
                        .push((p.name.clone(), p.time, why));
                    self.trash(&path);
                }
                Ok(p) => found.push((p, path)),
                Err(e) => {
                    tracing::warn!("dropping the diff area {}: {e}", path.display());
                    self.trash(&path);
                }
            }
        }
        // One snapshot is pending at a time; should several be found, keep
        // the latest.
        found.sort_by_key(|(p, _)| p.time);
        let Some((pit, _)) = found.pop() else {
            return Ok(());
        };
        for (p, path) in found {
            tracing::warn!("dropping stale pending snapshot {:?}", p.name);
            self.trash(&path);
        }
        self.tracking.lock().in_flight = Some(InFlight {
            name: pit.name.clone(),
            changes: Arc::new(ChangeSet::default()),
            complete: false,
        });
        *self.pending.write() = Some(Arc::new(PointInTime::new(Arc::new(pit))));
        Ok(())
    }

    /// Removes the hard links a diff dir holds to live objects (they count
    /// in the objects' nlink, and removing them changes their ctime: both
    /// must be done before the next point in time), renames it to a trash
    /// name and deletes the rest on a background thread.
    fn trash(&self, path: &Path) {
        remove_links(path);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = self.diff_root.join(format!("{TRASH_PREFIX}{base}-{nanos}"));
        match os::dir::rename(path, &to, "area.trash") {
            Ok(()) => remove_in_background(to),
            Err(e) => {
                tracing::warn!("cannot move {} to the trash: {e}", path.display());
                remove_in_background(path.to_owned());
            }
        }
    }

    /// Fixes the point in time of snapshot `name`. Call it while the write
    /// barrier is held. O(1): a directory and a small state file. `EBUSY` if
    /// a snapshot is pending. Returns the changes since the last snapshot
    /// sealed by this daemon, if they are known completely.
    pub fn commit(&self, name: &str, time: SystemTime) -> io::Result<Option<Arc<ChangeSet>>> {
        if name.is_empty()
            || name.starts_with('.')
            || name.contains('/')
            || name.contains('\0')
            || name.len() > 200
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} cannot name a pending snapshot"),
            ));
        }
        let mut pending = self.pending.write();
        if let Some(p) = pending.as_ref() {
            // Raw EBUSY (kind ResourceBusy), so that it maps to an errno.
            tracing::debug!("snapshot {:?} is still pending: one at a time", p.name());
            return Err(Errno::EBUSY.into());
        }
        let pit = Pit::create(
            self.source.clone(),
            self.diff_root_fd.as_fd(),
            name,
            time,
            self.limit()?,
        )?;
        *pending = Some(Arc::new(PointInTime::new(Arc::new(pit))));
        let mut t = self.tracking.lock();
        let mut taken = std::mem::take(&mut t.acc);
        let complete = std::mem::replace(&mut t.acc_complete, true);
        let give = complete && t.baseline.is_some();
        taken.since = t.baseline.clone().unwrap_or_default();
        let taken = Arc::new(taken);
        t.in_flight = Some(InFlight {
            name: name.to_owned(),
            changes: taken.clone(),
            complete,
        });
        Ok(give.then_some(taken))
    }

    /// The pending snapshot (name, time given at commit), if any.
    pub fn pending(&self) -> Option<(String, SystemTime)> {
        let p = self.pending.read();
        p.as_ref().map(|p| (p.name().to_owned(), p.time()))
    }

    /// A reader of the pending snapshot as of its point in time.
    pub fn point_in_time(&self) -> Option<Arc<PointInTime>> {
        self.pending.read().clone()
    }

    /// Snapshot `name` is copied and durable in the store: releases its
    /// pre-images and makes it the change-tracking baseline.
    pub fn sealed(&self, name: &str) {
        self.release(name, |t| {
            t.in_flight = None;
            t.baseline = Some(name.to_owned());
        });
    }

    /// Sealed snapshot `name` was forgotten. Should the change record count
    /// from it, the next copy cannot use the record (it would compare with a
    /// snapshot that is gone) and compares metadata with the newest
    /// snapshot left instead.
    pub fn forgotten(&self, name: &str) {
        let mut t = self.tracking.lock();
        if t.baseline.as_deref() == Some(name) {
            t.baseline = None;
        }
    }

    /// The copy of snapshot `name` failed or was abandoned: releases its
    /// pre-images; its changes count for the next snapshot.
    pub fn failed(&self, name: &str) {
        self.release(name, |t| {
            if let Some(inf) = t.in_flight.take() {
                let mut back = Arc::try_unwrap(inf.changes).unwrap_or_else(|a| (*a).clone());
                let since = std::mem::take(&mut back.since);
                back.merge(&t.acc);
                back.since = since;
                t.acc = back;
                t.acc_complete &= inf.complete;
            }
        });
    }

    /// Drops pending snapshot `name`, `settle`s the change record, and
    /// deletes its diff dir; false if it is not the pending one.
    ///
    /// Invariant: the change record is settled in the same critical
    /// section that clears the pending snapshot (locks taken in the order
    /// of [`Self::commit`]: pending, then tracking). Otherwise a commit in
    /// between would take its changes as counted from the baseline before
    /// this one, and its copy would reuse that snapshot's trees for
    /// objects changed since.
    fn release(&self, name: &str, settle: impl FnOnce(&mut Tracking)) -> bool {
        let pit = {
            let mut p = self.pending.write();
            if p.as_ref().is_none_or(|pit| pit.name() != name) {
                tracing::warn!("snapshot {name:?} is not pending: nothing to release");
                return false;
            }
            let mut t = self.tracking.lock();
            let in_flight = t.in_flight.as_ref().map(|i| i.name.clone());
            if in_flight.as_deref().is_some_and(|n| n != name) {
                tracing::warn!("snapshot {name:?} released while {in_flight:?} is in flight");
            }
            settle(&mut t);
            p.take().expect("checked")
        };
        pit.pit().release();
        self.trash(&self.diff_root.join(name));
        true
    }

    fn current(&self) -> Option<Arc<PointInTime>> {
        self.pending.read().clone()
    }

    /// Marks `obj` changed, with the directories above it.
    fn track(&self, obj: &Obj) {
        let is_dir = obj.kind == libc::S_IFDIR;
        {
            let mut t = self.tracking.lock();
            if is_dir {
                // Its ancestors were marked with it. (A directory is looked
                // up in `dirs`: its inode may have been a file's earlier in
                // the epoch.)
                if t.acc.dirs.contains(&obj.key) {
                    t.acc.objects.insert(obj.key);
                    return;
                }
            } else if t.acc.objects.contains(&obj.key) {
                return;
            }
        }
        let lineage = (obj.lineage)();
        let mut t = self.tracking.lock();
        t.acc.objects.insert(obj.key);
        if is_dir && !t.acc.dirs.insert(obj.key) {
            return;
        }
        match lineage {
            Some(up) => {
                for k in up {
                    if !t.acc.dirs.insert(k) {
                        break;
                    }
                }
            }
            None => t.acc_complete = false,
        }
    }
}

/// Removes the `*.link` files of a diff dir: one call per object that lost
/// a name while it was pending.
fn remove_links(dir: &Path) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in list.flatten() {
        if ent.file_name().as_bytes().ends_with(b".link") {
            if let Err(e) = std::fs::remove_file(ent.path()) {
                tracing::warn!("cannot remove {}: {e}", ent.path().display());
            }
        }
    }
}

fn remove_in_background(path: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("bkfs-pit-trash".into())
        .spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("cannot delete {}: {e}", path.display());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to delete a diff area: {e}");
    }
}

/// The hooks never fail a change: a pre-image that cannot be kept fails
/// the pending snapshot instead (`fate.rs`).
impl Changes for Snapshots {
    fn active(&self) -> bool {
        true
    }

    fn hidden_links(&self, key: crate::live::ids::InodeKey) -> u64 {
        match self.current() {
            Some(p) => u64::from(p.pit().linked(key)),
            None => 0,
        }
    }

    fn attrs(&self, obj: &Obj) -> LiveResult<()> {
        self.track(obj);
        if let Some(p) = self.current() {
            p.pit().attrs(obj);
        }
        Ok(())
    }

    fn data(&self, obj: &Obj, off: u64, len: u64) -> LiveResult<()> {
        self.track(obj);
        if let Some(p) = self.current() {
            p.pit().data(obj, off, len);
        }
        Ok(())
    }

    fn truncate(&self, obj: &Obj, size: u64) -> LiveResult<()> {
        self.track(obj);
        if let Some(p) = self.current() {
            p.pit().truncate(obj, size);
        }
        Ok(())
    }

    fn entries(&self, dir: &Obj) -> LiveResult<()> {
        self.track(dir);
        if let Some(p) = self.current() {
            p.pit().entries(dir);
        }
        Ok(())
    }

    fn unlinking(&self, dir: &Obj, _name: &CStr, victim: &Obj) -> LiveResult<()> {
        self.track(dir);
        self.track(victim);
        if let Some(p) = self.current() {
            p.pit().unlinking(dir, victim);
        }
        Ok(())
    }

    fn created(&self, obj: &Obj) {
        self.track(obj);
        if let Some(p) = self.current() {
            p.pit().created(obj);
        }
    }
}
