//! The requester: takes a snapshot through a mount, from the request to
//! the committed point in time; forgets one; holds the barrier by hand.
//! [`Snapshotter`] is the mount's snapshot machinery, and its parts live
//! beside this file: [`super::provider`] (the copy and its resumption),
//! [`super::retention`], [`super::status`] (what the control files show,
//! typed) and [`super::forward`] (telling the views of a seal).
//!
//! Taking one: validate the name → (quiesce applications) → hold the
//! barrier → commit the epoch ([`Snapshots::commit`], O(1)) → release →
//! (thaw) → return to the requester; then a provider thread copies the
//! point in time into the store ([`crate::ingest::copy`]) and seals it. One
//! snapshot is pending at a time: a request while a copy runs is refused
//! with `EBUSY` and the name of the running one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use parking_lot::{Mutex, RwLock};

use super::barrier::{Barrier, Hold};
use super::diff::{PointInTime, Snapshots};
use super::fence::{FenceError, Fences, Fixed};
use super::forward::Forward;
use super::provider::Provider;
use super::status::{ms, Board, OpState, OpStatus};
use crate::ingest::ChangeSet;
use crate::quiesce::{Quiescer, Require};
use crate::store::{self, Consistency, Store};

/// How long a commit waits for write-class operations in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a hand-held barrier (`.control/freeze`) stays closed.
pub const FREEZE_CAP: Duration = Duration::from_secs(10);

/// A request refused: the errno the writer gets, and the reason shown in
/// `.control/snapshot`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub errno: Errno,
    pub reason: String,
    /// Refused because another operation runs (a copy, a commit): the
    /// status keeps showing that one, and the refusal goes to the notes.
    pub other_runs: bool,
}

impl Refusal {
    fn new(errno: Errno, reason: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            reason: reason.into(),
            other_runs: false,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.errno.desc())
    }
}

/// A mount's snapshot machinery.
pub struct Snapshotter {
    pub(super) barrier: Arc<Barrier>,
    pub(super) fences: Arc<Fences>,
    pub(super) snaps: Arc<Snapshots>,
    pub(super) store: Store,
    pub(super) source: PathBuf,
    pub(super) mounted_at: SystemTime,
    /// Serializes requests: one commits at a time.
    requesting: Mutex<()>,
    /// A hold taken by hand (`.control/freeze`), its fences, and when.
    manual: Mutex<Option<(Hold, Fixed, Instant)>>,
    /// The profile's applications, if the mount has a profile.
    quiescer: RwLock<Option<Arc<Quiescer>>>,
    /// The profile file (`profile=`), re-read on `reload`.
    profile: Mutex<Option<PathBuf>>,
    /// The latest operation and the notes.
    pub(super) board: Board,
    /// The copy thread.
    pub(super) provider: Provider,
    /// Who is told of seals and forgets.
    pub(super) forward: Forward,
}

/// What `.control/profile` shows.
#[derive(Debug, Clone, Default)]
pub struct ProfileStatus {
    pub path: Option<PathBuf>,
    /// The profile's `require` and its applications, in freeze order.
    pub loaded: Option<(Require, Vec<String>)>,
}

impl Snapshotter {
    pub fn new(
        barrier: Arc<Barrier>,
        fences: Arc<Fences>,
        snaps: Arc<Snapshots>,
        store: Store,
        source: PathBuf,
    ) -> Arc<Snapshotter> {
        let me = Arc::new(Snapshotter {
            barrier,
            fences,
            snaps,
            store,
            source,
            mounted_at: SystemTime::now(),
            requesting: Mutex::new(()),
            manual: Mutex::new(None),
            quiescer: RwLock::new(None),
            profile: Mutex::new(None),
            board: Board::default(),
            provider: Provider::default(),
            forward: Forward::default(),
        });
        Self::start_watchdog(&me);
        me
    }

    /// Quiesce `q`'s applications around every commit from now on.
    pub fn set_quiescer(&self, q: Option<Arc<Quiescer>>) {
        *self.quiescer.write() = q;
    }

    /// Remembers the profile file `path` the quiescer was made from.
    pub fn set_profile(&self, path: PathBuf, q: Arc<Quiescer>) {
        *self.profile.lock() = Some(path);
        self.set_quiescer(Some(q));
    }

    /// Re-reads the profile file (`echo reload > .control/profile`).
    pub fn reload_profile(&self) -> Result<(), Refusal> {
        let path = self.profile.lock().clone().ok_or_else(|| {
            Refusal::new(
                Errno::ENOENT,
                "the mount has no profile (mount with -o profile=FILE)",
            )
        })?;
        let q = self
            .quiescer()
            .ok_or_else(|| Refusal::new(Errno::ENOENT, "no profile"))?;
        let refuse = |errno, why: String| {
            self.note(format!("profile reload refused: {why}"));
            Refusal::new(errno, why)
        };
        let profile = crate::quiesce::Profile::load(&path)
            .map_err(|e| refuse(Errno::EINVAL, e.to_string()))?;
        q.reload(profile)
            .map_err(|e| refuse(Errno::from_raw(e.errno()), e.to_string()))?;
        self.note(format!("profile {} reloaded", path.display()));
        Ok(())
    }

    /// `cat .control/profile`.
    pub fn profile_status(&self) -> ProfileStatus {
        ProfileStatus {
            path: self.profile.lock().clone(),
            loaded: self
                .quiescer()
                .map(|q| (q.require(), q.apps().into_iter().map(|a| a.name).collect())),
        }
    }

    pub fn quiescer(&self) -> Option<Arc<Quiescer>> {
        self.quiescer.read().clone()
    }

    /// `f(name)` runs after a snapshot is sealed or forgotten.
    pub fn set_on_change(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.forward.set(f);
    }

    /// The pending snapshot and its point-in-time view, if a copy is not
    /// sealed yet.
    pub fn pending(&self) -> Option<(String, Arc<PointInTime>)> {
        let (name, _) = self.snaps.pending()?;
        Some((name, self.snaps.point_in_time()?))
    }

    /// Takes snapshot `name` (`None`: an automatic name); returns once its
    /// point in time is fixed, with the name.
    pub fn take(self: &Arc<Self>, name: Option<&str>) -> Result<String, Refusal> {
        let Some(_one) = self.requesting.try_lock() else {
            let e = Refusal {
                other_runs: true,
                ..Refusal::new(Errno::EBUSY, "another snapshot request is being committed")
            };
            self.note(format!("snapshot request refused: {e}"));
            return Err(e);
        };
        let requested = SystemTime::now();
        let name = match name {
            Some(n) => n.to_string(),
            None => store::snapshot::auto_name(requested),
        };
        let mut op = OpStatus {
            name: name.clone(),
            state: OpState::Committing,
            requested: Some(requested),
            ..OpStatus::default()
        };
        let r = self.commit(&name, &mut op);
        if let Err(e) = &r {
            // A request refused because another operation runs does not
            // replace that one's status (it may have ended since the check:
            // a refusal never reads as a failure of the copy): `cat` keeps
            // showing it, and the refusal is in the notes.
            if e.other_runs {
                self.note(format!("snapshot {name} refused: {e}"));
            } else {
                op.state = OpState::Failed;
                op.error = e.reason.clone();
                self.board.set(op);
            }
            return Err(e.clone());
        }
        let cs = r.unwrap();
        self.start_copy(name.clone(), op, cs);
        Ok(name)
    }

    /// Validate, hold the barrier, commit, release.
    fn commit(&self, name: &str, op: &mut OpStatus) -> Result<Option<Arc<ChangeSet>>, Refusal> {
        if let Err(e) = store::snapshot::validate_name(name) {
            return Err(Refusal::new(Errno::EINVAL, e.to_string()));
        }
        if name == crate::snapview::LATEST {
            return Err(Refusal::new(Errno::EINVAL, "'latest' is reserved"));
        }
        if let Some((p, _)) = self.snaps.pending() {
            let why = if p == name {
                format!("snapshot {p} is being copied")
            } else {
                format!("the copy of snapshot {p} is still running; try again when it is sealed")
            };
            return Err(Refusal {
                other_runs: true,
                ..Refusal::new(Errno::EBUSY, why)
            });
        }
        if store::snapshot::path(&self.store.snapshots_dir(), name).exists() {
            return Err(Refusal::new(
                Errno::EEXIST,
                format!("a snapshot named {name} exists"),
            ));
        }
        let quiescer = self.quiescer();
        let frozen = match &quiescer {
            Some(q) => {
                op.state = OpState::Quiescing;
                self.board.set(op.clone());
                let f = q.freeze().map_err(|e| {
                    Refusal::new(Errno::from_raw(e.errno()), format!("quiescing: {e}"))
                })?;
                op.state = OpState::Committing;
                Some(f)
            }
            None => None,
        };
        self.board.set(op.clone());
        // On every error below, dropping `frozen` thaws the applications.
        let (hold, fixed) = self.fix()?;
        let time = SystemTime::now();
        let r = self.snaps.commit(name, time);
        let held = hold.held_for();
        hold.release();
        op.fence_ms = Some(ms(fixed.took));
        op.fenced_files = Some(fixed.files);
        fixed.release();
        let cs = r.map_err(|e| {
            let errno = match e.raw_os_error() {
                Some(libc::EBUSY) => Errno::EBUSY,
                Some(libc::ENOSPC) => Errno::ENOSPC,
                Some(libc::EEXIST) => Errno::EEXIST,
                _ => Errno::EIO,
            };
            Refusal::new(errno, format!("commit: {e}"))
        })?;
        op.committed = Some(time);
        op.barrier_ms = Some(ms(held));
        match frozen.map(|f| f.thaw()) {
            Some(outcome) => {
                op.consistency = Some(outcome.consistency);
                op.why = outcome.why;
                op.frozen_ms = outcome.frozen_ms;
                op.apps = outcome.apps;
            }
            None => {
                op.consistency = Some(Consistency::FsConsistent);
                op.why = "write barrier; no applications to quiesce".into();
            }
        }
        op.state = OpState::Committed;
        self.board.set(op.clone());
        Ok(cs)
    }

    /// Forgets sealed snapshot `name` (`rmdir .snapshots/NAME`).
    pub fn forget(&self, name: &str) -> Result<(), Refusal> {
        if self.snaps.pending().is_some_and(|(p, _)| p == name) {
            return Err(Refusal::new(
                Errno::EBUSY,
                format!("snapshot {name} is being copied"),
            ));
        }
        let w = self.store.writer("forget").map_err(|e| match e {
            store::Error::Locked(..) => Refusal::new(Errno::EBUSY, e.to_string()),
            e => Refusal::new(Errno::EIO, e.to_string()),
        })?;
        w.forget(name).map_err(|e| match e {
            store::Error::NoSnapshot(..) => Refusal::new(Errno::ENOENT, e.to_string()),
            e => Refusal::new(Errno::EIO, e.to_string()),
        })?;
        drop(w);
        self.snaps.forgotten(name);
        self.forward.changed(name);
        Ok(())
    }

    /// Fixes a point in time: fences the writes to files open for writing
    /// (no write(2) in progress, see [`super::fence`]), then holds the
    /// barrier (no write-class operation in flight). In this order: a
    /// fence waits for a truncate holding its inode's lock, which must
    /// pass the barrier to finish.
    fn fix(&self) -> Result<(Hold, Fixed), Refusal> {
        let fixed = self.fences.fix(DRAIN_TIMEOUT).map_err(|e| {
            let errno = match e {
                FenceError::OpensBusy(_) | FenceError::Busy { .. } => Errno::EBUSY,
                FenceError::NoMount(_) | FenceError::Open { .. } => Errno::EIO,
            };
            Refusal::new(
                errno,
                format!("fencing writes: {e} within {} s", DRAIN_TIMEOUT.as_secs()),
            )
        })?;
        let hold = self.barrier.hold(DRAIN_TIMEOUT).map_err(|b| {
            Refusal::new(
                Errno::EBUSY,
                format!(
                    "{} write operations did not finish within {} s",
                    b.in_flight,
                    DRAIN_TIMEOUT.as_secs()
                ),
            )
        })?;
        Ok((hold, fixed))
    }

    /// Holds the barrier by hand (`.control/freeze`) until [`Self::thaw`] or
    /// [`FREEZE_CAP`].
    pub fn freeze(&self) -> Result<(), Refusal> {
        let mut manual = self.manual.lock();
        if manual.is_some() {
            return Ok(());
        }
        let (hold, fixed) = self.fix()?;
        *manual = Some((hold, fixed, Instant::now()));
        Ok(())
    }

    /// Releases a hand-held barrier; true if one was held.
    pub fn thaw(&self) -> bool {
        match self.manual.lock().take() {
            Some((hold, fixed, _)) => {
                hold.release();
                fixed.release();
                true
            }
            None => false,
        }
    }

    /// For how long the barrier has been held by hand, if it is (`cat
    /// .control/freeze`).
    pub fn frozen_for(&self) -> Option<Duration> {
        self.manual.lock().as_ref().map(|(_, _, t)| t.elapsed())
    }

    /// Releases a hand-held barrier past its cap, whatever holds it up.
    fn start_watchdog(me: &Arc<Snapshotter>) {
        let weak = Arc::downgrade(me);
        let _ = std::thread::Builder::new()
            .name("bkfs-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(100));
                let Some(me) = weak.upgrade() else { return };
                let expired = me
                    .manual
                    .lock()
                    .as_ref()
                    .is_some_and(|(_, _, t)| t.elapsed() >= FREEZE_CAP);
                if expired && me.thaw() {
                    me.note(format!(
                        "barrier held by hand released by the watchdog after {} s",
                        FREEZE_CAP.as_secs()
                    ));
                }
            });
    }

    /// Stops a running copy (unmount): it resumes at the next mount.
    pub fn shutdown(&self) {
        self.provider.cancel();
        self.thaw();
        self.provider.join();
    }
}
