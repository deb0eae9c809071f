//! The provider: the thread that copies a committed point in time into the
//! store ([`crate::ingest::copy`]) and seals it, the resumption at mount
//! of a copy an earlier daemon left pending, and the figures of the copy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::diff::PointInTime;
use super::requester::Snapshotter;
use super::status::{rfc3339, CopyFigures, OpState, OpStatus};
use crate::ingest::ChangeSet;
use crate::ingest::{self, CopyOptions, Progress};
use crate::store::{self, Capture, Consistency};

/// The environment variable of the copy's failpoint (see `hold_for_tests`).
pub const HOLD_COPY_ENV: &str = "BKFS_HOLD_COPY";

/// The state of the copy thread.
#[derive(Default)]
pub(super) struct Provider {
    /// The running (or last) copy's progress.
    progress: Mutex<Arc<Progress>>,
    started: Mutex<Option<Instant>>,
    /// How long the last copy took, once it ended.
    took: Mutex<Option<f64>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    cancel: Arc<AtomicBool>,
    /// What each directory tree copied so far holds: an incremental copy
    /// counts the subtrees it reuses without reading them back.
    counts: ingest::CountCache,
}

impl Provider {
    /// How far the copy of an operation in `state` got.
    pub(super) fn figures(&self, state: OpState) -> CopyFigures {
        let p = self.progress.lock().clone();
        let seconds = match *self.took.lock() {
            Some(took) if state != OpState::Copying => took,
            _ => self
                .started
                .lock()
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0),
        };
        CopyFigures {
            files: p.files.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
            total_files: p.total_files.load(Ordering::Relaxed),
            total_bytes: p.total_bytes.load(Ordering::Relaxed),
            totals_known: p.scan_done.load(Ordering::Relaxed),
            seconds,
        }
    }

    /// Asks a running copy to stop: it resumes at the next mount.
    pub(super) fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the copy thread to end.
    pub(super) fn join(&self) {
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Snapshotter {
    /// At mount: a snapshot left pending by an earlier daemon is copied again.
    pub fn resume(self: &Arc<Self>) {
        // A snapshot that had failed before the restart (a pre-image that
        // could not be kept) is not copied again: its point in time is lost.
        for (name, committed, why) in self.snaps.take_failed_earlier() {
            tracing::error!("snapshot {name} had failed before the restart: {why}");
            self.board.set(OpStatus {
                name,
                state: OpState::Failed,
                committed: Some(committed),
                error: format!("{why} (before the daemon restarted)"),
                ..OpStatus::default()
            });
        }
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
        self.board.set(op.clone());
        self.start_copy(name, op, None);
    }

    pub(super) fn start_copy(
        self: &Arc<Self>,
        name: String,
        mut op: OpStatus,
        changes: Option<Arc<ChangeSet>>,
    ) {
        let Some(pit) = self.snaps.point_in_time() else {
            // Committed, yet nothing to copy: the request returned success,
            // so the failure must be told.
            return self.copy_failed(&name, op, "the point in time is gone before its copy");
        };
        let progress = Arc::new(Progress::default());
        *self.provider.progress.lock() = progress.clone();
        *self.provider.started.lock() = Some(Instant::now());
        *self.provider.took.lock() = None;
        op.state = OpState::Copying;
        op.incremental = match &changes {
            Some(cs) => format!("changes since {}", cs.since),
            None => "metadata compared with the parent".into(),
        };
        self.board.set(op.clone());
        self.provider.cancel.store(false, Ordering::Relaxed);
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
        let old = self.provider.thread.lock().replace(handle);
        if let Some(old) = old {
            let _ = old.join();
        }
    }

    fn copy(
        &self,
        name: String,
        mut op: OpStatus,
        pit: Arc<PointInTime>,
        changes: Option<Arc<ChangeSet>>,
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
            cancel: Some(&self.provider.cancel),
            counts: Some(&self.provider.counts),
        };
        // Totals for `files: N/TOTAL`, counted beside a full copy (an
        // incremental one is over before a count would be).
        let scan = if changes.is_none() {
            let (pit, progress) = (pit.clone(), progress.clone());
            std::thread::Builder::new()
                .name("bkfs-scan".into())
                .spawn(move || {
                    crate::os::proc::set_thread_nice(15);
                    ingest::scan(&*pit, &progress)
                })
                .ok()
        } else {
            None
        };
        // Providers yield to the applications writing live: their threads
        // run at a lower priority.

        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("bkfs-copy-{i}"))
            .start_handler(|_| {
                crate::os::proc::set_thread_nice(10);
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
        // The scan ends before the seal releases the point in time it walks
        // (it would count the live tree's files next).
        progress.scan_stop.store(true, Ordering::Relaxed);
        if let Some(scan) = scan {
            let _ = scan.join();
        }
        // A copy that ended well read every object before any change the
        // diff area failed to guard (readers check the failure under the
        // lock the failing hook holds): it is sealed even if the snapshot
        // failed since. One that ended in error says the failure's reason.
        let failure = pit.failure();
        drop(pit);
        *self.provider.took.lock() = self
            .provider
            .started
            .lock()
            .map(|t| t.elapsed().as_secs_f64());
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
                self.forward.changed(&name);
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
                self.board.set(op);
                self.forward.changed(&name);
                self.apply_retention();
            }
            Err(store::Error::Cancelled) => {
                tracing::info!(
                    "the copy of snapshot {name} stops with the mount; it resumes at the next"
                );
                op.state = OpState::Interrupted;
                op.error = "the mount is going away; the copy resumes at the next mount".into();
                self.board.set(op);
            }
            Err(e) => match failure {
                Some(why) => self.copy_failed(&name, op, &why),
                None => self.copy_failed(&name, op, &e.to_string()),
            },
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
        self.board.set(op);
        self.forward.changed(name);
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
        while path.exists() && !self.provider.cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
