//! The requester: takes a snapshot through a mount, from the request to the
//! sealed record, and keeps what `.control/snapshot` and `.control/status`
//! show (docs/CONTROL.md).
//!
//! Taking one: validate the name → (quiesce applications) → hold the
//! barrier → commit the epoch ([`Snapshots::commit`], O(1)) → release →
//! (thaw) → return to the requester; then a provider thread copies the
//! point in time into the store ([`crate::ingest::copy`]) and seals it. One
//! snapshot is pending at a time: a request while a copy runs is refused
//! with `EBUSY` and the name of the running one.

use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;

use super::barrier::{Barrier, Hold};
use super::diff::{PointInTime, Snapshots};
use super::fence::{FenceError, Fences, Fixed};
use crate::control::text;
use crate::ingest::{self, CopyOptions, Progress};
use crate::quiesce::Quiescer;
use crate::store::{self, Capture, Consistency, Store};

/// How long a commit waits for write-class operations in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a hand-held barrier (`.control/freeze`) stays closed.
pub const FREEZE_CAP: Duration = Duration::from_secs(10);

/// The environment variable of the copy's failpoint (see `hold_for_tests`).
pub const HOLD_COPY_ENV: &str = "BKFS_HOLD_COPY";

/// A request refused: the errno the writer gets, and the reason shown in
/// `.control/snapshot`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub errno: Errno,
    pub reason: String,
}

impl Refusal {
    fn new(errno: Errno, reason: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.errno.desc())
    }
}

/// The state of a snapshot operation, as `state:` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OpState {
    /// The profile's applications are being frozen.
    Quiescing,
    /// Fencing, holding the barrier, committing the epoch.
    #[default]
    Committing,
    /// The point in time is fixed; the copy has not started.
    Committed,
    Copying,
    Sealed,
    Failed,
    /// The mount went away during the copy; it resumes at the next mount.
    Interrupted,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Quiescing => "quiescing",
            OpState::Committing => "committing",
            OpState::Committed => "committed",
            OpState::Copying => "copying",
            OpState::Sealed => "sealed",
            OpState::Failed => "failed",
            OpState::Interrupted => "interrupted",
        }
    }

    /// A pending snapshot: its point in time is fixed, its copy not over.
    pub fn is_pending(self) -> bool {
        matches!(self, OpState::Committed | OpState::Copying)
    }
}

impl std::fmt::Display for OpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the latest snapshot operation stands.
#[derive(Debug, Clone, Default)]
pub struct OpStatus {
    pub name: String,
    pub state: OpState,
    /// Known once committed.
    pub consistency: Option<Consistency>,
    pub why: String,
    pub requested: Option<SystemTime>,
    pub committed: Option<SystemTime>,
    pub sealed: Option<SystemTime>,
    pub barrier_ms: Option<f64>,
    /// How long fencing the files open for writing took, and how many.
    pub fence_ms: Option<f64>,
    pub fenced_files: Option<usize>,
    pub frozen_ms: Option<f64>,
    /// Whether the copy compared with a change record, and against what.
    pub incremental: String,
    pub error: String,
    /// Each quiesced application's result, timings and positions.
    pub apps: Vec<serde_json::Value>,
}

pub struct Snapshotter {
    barrier: Arc<Barrier>,
    fences: Arc<Fences>,
    snaps: Arc<Snapshots>,
    store: Store,
    source: PathBuf,
    last: Mutex<Option<OpStatus>>,
    progress: Mutex<Arc<Progress>>,
    copy_started: Mutex<Option<Instant>>,
    copier: Mutex<Option<JoinHandle<()>>>,
    cancel: Arc<AtomicBool>,
    /// Serializes requests: one commits at a time.
    requesting: Mutex<()>,
    /// A hold taken by hand (`.control/freeze`), its fences, and when.
    manual: Mutex<Option<(Hold, Fixed, Instant)>>,
    /// Notes for `.control/status` (a forced thaw, a failed resume).
    notes: Mutex<Vec<String>>,
    /// Called after a snapshot is sealed or forgotten (refresh views).
    on_change: Mutex<Option<OnChange>>,
    mounted_at: SystemTime,
    /// The profile's applications, if the mount has a profile.
    quiescer: RwLock<Option<Arc<Quiescer>>>,
    /// The profile file (`profile=`), re-read on `reload`.
    profile: Mutex<Option<PathBuf>>,
    /// What each directory tree copied so far holds: an incremental copy
    /// counts the subtrees it reuses without reading them back.
    counts: ingest::CountCache,
    /// How long the last copy took, once it ended.
    copy_took: Mutex<Option<f64>>,
}

/// Told the name of a snapshot sealed or forgotten.
type OnChange = Box<dyn Fn(&str) + Send + Sync>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
            last: Mutex::new(None),
            progress: Mutex::new(Arc::new(Progress::default())),
            copy_started: Mutex::new(None),
            copier: Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
            requesting: Mutex::new(()),
            manual: Mutex::new(None),
            notes: Mutex::new(Vec::new()),
            on_change: Mutex::new(None),
            mounted_at: SystemTime::now(),
            quiescer: RwLock::new(None),
            profile: Mutex::new(None),
            counts: Default::default(),
            copy_took: Mutex::new(None),
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
    pub fn profile_text(&self) -> String {
        let path = self.profile.lock().clone();
        let q = self.quiescer();
        let mut e = text::Encoder::new();
        e.pair(
            "path",
            path.map(|p| p.display().to_string()).unwrap_or_default(),
        );
        if let Some(q) = q {
            e.pair("require", format!("{:?}", q.require()).to_lowercase());
            let apps: Vec<String> = q.apps().into_iter().map(|a| a.name).collect();
            e.pair("apps", apps.join(" "));
        } else {
            e.bare("require").bare("apps");
        }
        e.finish()
    }

    pub fn quiescer(&self) -> Option<Arc<Quiescer>> {
        self.quiescer.read().clone()
    }

    /// `f(name)` runs after a snapshot is sealed or forgotten.
    pub fn set_on_change(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        *self.on_change.lock() = Some(Box::new(f));
    }

    fn changed(&self, name: &str) {
        if let Some(f) = &*self.on_change.lock() {
            f(name);
        }
    }

    fn note(&self, msg: String) {
        tracing::warn!("{msg}");
        let mut notes = self.notes.lock();
        notes.push(format!("{} {msg}", rfc3339(SystemTime::now())));
        let n = notes.len();
        if n > 20 {
            notes.drain(..n - 20);
        }
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
            return Err(Refusal::new(
                Errno::EBUSY,
                "another snapshot request is being committed",
            ));
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
            // A refused request does not replace the status of a copy that
            // runs: the running one is what `cat` must keep showing... but the
            // refusal must be readable too.
            op.state = OpState::Failed;
            op.error = e.reason.clone();
            let mut last = self.last.lock();
            let running = last.as_ref().is_some_and(|l| l.state.is_pending());
            if running {
                drop(last);
                self.note(format!("snapshot {name} refused: {e}"));
            } else {
                *last = Some(op);
            }
            return Err(e.clone());
        }
        let cs = r.unwrap();
        self.start_copy(name.clone(), op, cs);
        Ok(name)
    }

    /// Validate, hold the barrier, commit, release.
    fn commit(
        &self,
        name: &str,
        op: &mut OpStatus,
    ) -> Result<Option<Arc<super::ChangeSet>>, Refusal> {
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
            return Err(Refusal::new(Errno::EBUSY, why));
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
                *self.last.lock() = Some(op.clone());
                let f = q.freeze().map_err(|e| {
                    Refusal::new(Errno::from_raw(e.errno()), format!("quiescing: {e}"))
                })?;
                op.state = OpState::Committing;
                Some(f)
            }
            None => None,
        };
        *self.last.lock() = Some(op.clone());
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
        *self.last.lock() = Some(op.clone());
        Ok(cs)
    }

    /// At mount: a snapshot left pending by an earlier daemon is copied again.
    pub fn resume(self: &Arc<Self>) {
        let Some((name, committed)) = self.snaps.pending() else {
            return;
        };
        // Killed after the record was written but before the pre-images
        // were released: the copy is complete.
        if store::snapshot::path(&self.store.snapshots_dir(), &name).exists() {
            tracing::info!("snapshot {name} was sealed before the restart");
            self.snaps.sealed(&name);
            return;
        }

        tracing::info!("resuming the copy of snapshot {name}");
        let op = OpStatus {
            name: name.clone(),
            state: OpState::Committed,
            committed: Some(committed),
            consistency: Some(Consistency::FsConsistent),
            why: "resumed after a restart of the daemon".into(),
            ..OpStatus::default()
        };
        *self.last.lock() = Some(op.clone());
        self.start_copy(name, op, None);
    }

    fn start_copy(
        self: &Arc<Self>,
        name: String,
        mut op: OpStatus,
        changes: Option<Arc<super::ChangeSet>>,
    ) {
        let Some(pit) = self.snaps.point_in_time() else {
            // Committed, yet nothing to copy: the request returned success,
            // so the failure must be told.
            return self.copy_failed(&name, op, "the point in time is gone before its copy");
        };
        let progress = Arc::new(Progress::default());
        *self.progress.lock() = progress.clone();
        *self.copy_started.lock() = Some(Instant::now());
        *self.copy_took.lock() = None;
        op.state = OpState::Copying;
        op.incremental = match &changes {
            Some(cs) => format!("changes since {}", cs.since),
            None => "metadata compared with the parent".into(),
        };
        *self.last.lock() = Some(op.clone());
        self.cancel.store(false, Ordering::Relaxed);
        let me = self.clone();
        let (name2, op2) = (name.clone(), op.clone());
        let spawned = std::thread::Builder::new()
            .name("bkfs-provider".into())
            .spawn(move || me.copy(name, op, pit, changes, progress));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                return self.copy_failed(&name2, op2, &format!("cannot start the copy: {e}"));
            }
        };
        let old = self.copier.lock().replace(handle);
        if let Some(old) = old {
            let _ = old.join();
        }
    }

    fn copy(
        &self,
        name: String,
        mut op: OpStatus,
        pit: Arc<PointInTime>,
        changes: Option<Arc<super::ChangeSet>>,
        progress: Arc<Progress>,
    ) {
        self.hold_for_tests();
        let capture = Capture {
            requested: op.requested.map(rfc3339).unwrap_or_default(),
            consistency: op.consistency.unwrap_or_default(),
            why: op.why.clone(),
            barrier_ms: op.barrier_ms.unwrap_or(0.0),
            frozen_ms: op.frozen_ms,
            apps: op.apps.clone(),
        };
        let opts = CopyOptions {
            name: name.clone(),
            time: op.committed.unwrap_or_else(SystemTime::now),
            source: self.source.to_string_lossy().into_owned(),
            parent: None,
            changes: changes.as_deref(),
            capture: Some(capture),
            cancel: Some(&self.cancel),
            counts: Some(&self.counts),
        };
        // Totals for `files: N/TOTAL`, counted beside a full copy (an
        // incremental one is over before a count would be).
        if changes.is_none() {
            let (pit, progress, store) = (pit.clone(), progress.clone(), self.store.clone());
            let changes = changes.clone();
            let _ = std::thread::Builder::new()
                .name("bkfs-scan".into())
                .spawn(move || {
                    // SAFETY: setpriority on the calling thread has no memory effects.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 15) };
                    match &changes {
                        Some(cs) => ingest::scan_changes(&store, &*pit, cs, &progress),
                        None => ingest::scan(&*pit, &progress),
                    }
                });
        }
        // Providers yield to the applications writing live: their threads
        // run at a lower priority.

        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("bkfs-copy-{i}"))
            .start_handler(|_| {
                // SAFETY: setpriority on the calling thread (who = 0) has no memory effects.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            })
            .build();
        // A panic in the copy (a bug) must not leave the snapshot pending
        // for ever, shown as copying, refusing every later one.
        let run = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ingest::copy(&self.store, &*pit, &opts, &progress)
            }))
            .unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(store::Error::Other(format!("the copy panicked: {what}")))
            })
        };
        let r = match pool {
            Ok(pool) => pool.install(run),
            Err(_) => run(),
        };
        drop(pit);
        *self.copy_took.lock() = self.copy_started.lock().map(|t| t.elapsed().as_secs_f64());
        if !progress.scan_done.load(Ordering::Relaxed) {
            // What was copied is the total.
            progress
                .total_files
                .store(progress.files.load(Ordering::Relaxed), Ordering::Relaxed);
            progress
                .total_bytes
                .store(progress.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
            progress.scan_done.store(true, Ordering::Relaxed);
        }
        match r {
            Ok(report) => {
                // The store's view learns of it before the pending view goes.
                self.changed(&name);
                self.snaps.sealed(&name);
                op.state = OpState::Sealed;
                op.sealed = Some(SystemTime::now());
                if report.changes_dropped {
                    op.incremental = format!(
                        "metadata compared with the parent ({} was forgotten)",
                        changes
                            .as_ref()
                            .map(|c| c.since.as_str())
                            .unwrap_or_default()
                    );
                }
                if !report.errors.is_empty() {
                    op.error = format!(
                        "{} entries could not be read: {}",
                        report.errors.len(),
                        report.errors.first().cloned().unwrap_or_default()
                    );
                    tracing::warn!("snapshot {name}: {}", op.error);
                }
                tracing::info!("snapshot {name} sealed");
                *self.last.lock() = Some(op);
                self.changed(&name);
                self.apply_retention();
            }
            Err(store::Error::Cancelled) => {
                tracing::info!(
                    "the copy of snapshot {name} stops with the mount; it resumes at the next"
                );
                op.state = OpState::Interrupted;
                op.error = "the mount is going away; the copy resumes at the next mount".into();
                *self.last.lock() = Some(op);
            }
            Err(e) => self.copy_failed(&name, op, &e.to_string()),
        }
    }

    /// The copy of snapshot `name`, whose request returned success, failed:
    /// told in `.control/snapshot` (and so `bkfs status`) and the log; its
    /// pre-images are released and its changes count for the next one.
    fn copy_failed(&self, name: &str, mut op: OpStatus, why: &str) {
        tracing::error!("snapshot {name} failed: {why}");
        self.snaps.failed(name);
        op.state = OpState::Failed;
        op.error = why.to_string();
        *self.last.lock() = Some(op);
        self.changed(name);
    }

    /// A failpoint for tests: while the file named by `BKFS_HOLD_COPY`
    /// exists, the copy does not start (the snapshot stays pending for as
    /// long as a test needs, whatever the machine's speed). Unset, it costs
    /// one look-up of the environment per copy.
    fn hold_for_tests(&self) {
        let Some(path) = std::env::var_os(HOLD_COPY_ENV) else {
            return;
        };
        let path = PathBuf::from(path);
        while path.exists() && !self.cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Forgets the snapshots of this source the profile's `keep` rules do
    /// not keep (after each sealed snapshot).
    fn apply_retention(&self) {
        let Some(q) = self.quiescer() else { return };
        let keep = q.keep();
        if keep.is_empty() {
            return;
        }
        let source = self.source.to_string_lossy();
        let snaps: Vec<(String, i64)> = match self.store.snapshots() {
            Ok(v) => v
                .into_iter()
                .filter(|s| s.source == source)
                .filter_map(|s| {
                    let t = humantime::parse_rfc3339(&s.time).ok()?;
                    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
                    Some((s.name.clone(), secs))
                })
                .collect(),
            Err(e) => {
                self.note(format!("retention: cannot list snapshots: {e}"));
                return;
            }
        };
        let kept = keep.select(&snaps);
        for (name, _) in snaps.iter().filter(|(n, _)| !kept.contains(n)) {
            match self.forget(name) {
                Ok(()) => tracing::info!("retention: forgot snapshot {name}"),
                Err(e) => self.note(format!("retention: cannot forget {name}: {e}")),
            }
        }
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
        self.changed(name);
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
        self.cancel.store(true, Ordering::Relaxed);
        self.thaw();
        if let Some(h) = self.copier.lock().take() {
            let _ = h.join();
        }
    }

    /// `cat .control/snapshot`: `key: value` lines (docs/CONTROL.md).
    pub fn snapshot_text(&self) -> String {
        let last = self.last.lock().clone();
        let Some(op) = last else {
            return text::Encoder::new()
                .bare("name")
                .pair("state", "none")
                .finish();
        };
        let p = self.progress.lock().clone();
        let files = p.files.load(Ordering::Relaxed);
        let bytes = p.bytes.load(Ordering::Relaxed);
        let total_files = p.total_files.load(Ordering::Relaxed);
        let total_bytes = p.total_bytes.load(Ordering::Relaxed);
        let known = p.scan_done.load(Ordering::Relaxed);
        let secs = match *self.copy_took.lock() {
            Some(took) if op.state != OpState::Copying => took,
            _ => self
                .copy_started
                .lock()
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0),
        };
        let copying = matches!(
            op.state,
            OpState::Copying | OpState::Sealed | OpState::Interrupted | OpState::Failed
        );
        let total = |n: u64| {
            if known {
                n.to_string()
            } else {
                "?".to_string()
            }
        };
        let opt_time = |t: Option<SystemTime>| t.map(rfc3339).unwrap_or_default();
        let opt_ms = |m: Option<f64>| m.map(|m| format!("{m:.3}")).unwrap_or_default();
        let mut e = text::Encoder::new();
        let mut kv = |k: &str, v: &str| {
            e.pair(k, v);
        };
        kv("name", &op.name);
        kv("state", op.state.as_str());
        kv(
            "consistency",
            op.consistency.map(Consistency::as_str).unwrap_or_default(),
        );
        kv("why", &op.why);
        kv("requested", &opt_time(op.requested));
        kv("committed", &opt_time(op.committed));
        kv("sealed", &opt_time(op.sealed));
        kv("barrier_ms", &opt_ms(op.barrier_ms));
        kv("fence_ms", &opt_ms(op.fence_ms));
        kv(
            "fenced_files",
            &op.fenced_files.map(|n| n.to_string()).unwrap_or_default(),
        );
        kv("frozen_ms", &opt_ms(op.frozen_ms));
        kv("copy", &op.incremental);
        if copying {
            kv("files", &format!("{files}/{}", total(total_files)));
            kv("bytes", &format!("{bytes}/{}", total(total_bytes)));
            let rate = if secs > 0.0 {
                bytes as f64 / secs / 1e6
            } else {
                0.0
            };
            kv("rate_mb_s", &format!("{rate:.1}"));
            kv("seconds", &format!("{secs:.3}"));
        } else {
            kv("files", "");
            kv("bytes", "");
            kv("rate_mb_s", "");
            kv("seconds", "");
        }
        kv("error", &op.error.replace('\n', " "));
        for app in &op.apps {
            let field = |k: &str| {
                app.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let mut line = format!(
                "{} plugin={} state={} result={}",
                field("name"),
                field("plugin"),
                field("state"),
                field("result").replace('\n', " ")
            );
            if let Some(t) = app.get("timings_ms").and_then(|v| v.as_object()) {
                for (phase, v) in t {
                    line.push_str(&format!(" {phase}_ms={:.1}", v.as_f64().unwrap_or(0.0)));
                }
            }
            kv("app", &line);
        }
        e.finish()
    }

    /// `cat .control/status`: mount, store and provider figures.
    pub fn status_text(&self) -> String {
        let mut e = text::Encoder::new();
        let mut kv = |k: &str, v: String| {
            e.pair(k, v);
        };
        kv("source", self.source.display().to_string());
        kv("store", self.store.root().display().to_string());
        kv("mounted", rfc3339(self.mounted_at));
        let snaps = self.store.snapshots().unwrap_or_default();
        kv("snapshots", snaps.len().to_string());
        kv(
            "latest",
            snaps.last().map(|s| s.name.clone()).unwrap_or_default(),
        );
        let (content, stored): (u64, u64) = snaps.iter().fold((0, 0), |(c, st), s| {
            (
                c + s.stats.bytes,
                st + s.stats.bytes_stored + s.stats.tree_bytes_stored,
            )
        });
        let store_bytes = dir_bytes(&self.store.root().join("packs"));
        kv("store_bytes", store_bytes.to_string());
        kv("content_bytes", content.to_string());
        kv(
            "dedup_ratio",
            if store_bytes > 0 {
                format!("{:.2}", content as f64 / store_bytes as f64)
            } else {
                String::new()
            },
        );
        kv("new_bytes_stored", stored.to_string());
        let pending = self.snaps.pending().map(|(n, _)| n).unwrap_or_default();
        kv("pending", pending);
        let last = self.last.lock().clone();
        kv(
            "operation",
            last.as_ref()
                .map(|o| format!("{} {}", o.name, o.state))
                .unwrap_or_default(),
        );
        let closed = self.barrier.closed_since();
        kv(
            "barrier",
            if closed.is_some() { "held" } else { "open" }.into(),
        );
        kv(
            "barrier_held_ms",
            closed
                .map(|t| format!("{:.1}", ms(t.elapsed())))
                .unwrap_or_default(),
        );
        kv("deferred_ops", self.barrier.waiting().to_string());
        kv("waiting_opens", self.fences.waiting_opens().to_string());
        let notes = self.notes.lock();
        kv("notes", notes.len().to_string());
        for n in notes.iter() {
            kv("note", n.clone());
        }
        e.finish()
    }

    /// `cat .control/freeze`.
    pub fn freeze_text(&self) -> String {
        let mut e = text::Encoder::new();
        match &*self.manual.lock() {
            Some((_, _, t)) => e
                .pair("frozen", "yes")
                .pair("held_ms", format!("{:.1}", ms(t.elapsed()))),
            None => e.pair("frozen", "no").bare("held_ms"),
        };
        e.pair("cap_s", FREEZE_CAP.as_secs()).finish()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
