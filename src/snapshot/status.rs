//! What a mount shows of its snapshots: the latest operation (typed: its
//! [`OpState`], its consistency, its timings), how far its copy got, and
//! the mount's figures. [`crate::control::render`] makes the text of
//! `.control/snapshot` and `.control/status` from them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::requester::Snapshotter;
use crate::store::Consistency;

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

/// How far the copy of the latest operation got (`files:`, `bytes:`,
/// `rate_mb_s:`, `seconds:`).
#[derive(Debug, Clone, Default)]
pub struct CopyFigures {
    pub files: u64,
    pub bytes: u64,
    pub total_files: u64,
    pub total_bytes: u64,
    /// Whether the totals are known yet (the scan beside a full copy ended).
    pub totals_known: bool,
    /// How long the copy ran, or has run so far.
    pub seconds: f64,
}

/// The mount's figures for `.control/status`.
#[derive(Debug, Clone)]
pub struct MountStatus {
    pub source: PathBuf,
    pub store: PathBuf,
    pub mounted: SystemTime,
    /// The store's snapshots, oldest first: how many, and the newest.
    pub snapshots: usize,
    pub latest: Option<String>,
    /// What the store's packs take on disk.
    pub store_bytes: u64,
    /// File content of every snapshot, and what new content and trees took.
    pub content_bytes: u64,
    pub new_bytes_stored: u64,
    pub pending: Option<String>,
    /// The latest operation's name and state.
    pub operation: Option<(String, OpState)>,
    /// For how long the barrier has been held, if it is.
    pub barrier_held: Option<Duration>,
    pub deferred_ops: usize,
    pub waiting_opens: usize,
    pub notes: Vec<String>,
}

/// The latest operation and the notes, as the requester and the provider
/// update them.
#[derive(Default)]
pub(super) struct Board {
    last: Mutex<Option<OpStatus>>,
    /// Notes for `.control/status` (a forced thaw, a failed resume), the
    /// newest last.
    notes: Mutex<Vec<String>>,
}

/// How many notes `.control/status` keeps.
const NOTES: usize = 20;

impl Board {
    pub(super) fn set(&self, op: OpStatus) {
        *self.last.lock() = Some(op);
    }

    pub(super) fn last(&self) -> Option<OpStatus> {
        self.last.lock().clone()
    }

    pub(super) fn note(&self, msg: String) {
        tracing::warn!("{msg}");
        let mut notes = self.notes.lock();
        notes.push(format!("{} {msg}", rfc3339(SystemTime::now())));
        let n = notes.len();
        if n > NOTES {
            notes.drain(..n - NOTES);
        }
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().clone()
    }
}

impl Snapshotter {
    /// The latest snapshot operation and how far its copy got (`cat
    /// .control/snapshot`); None before the first.
    pub fn snapshot_status(&self) -> Option<(OpStatus, CopyFigures)> {
        let mut op = self.board.last()?;
        // A pending snapshot that failed in a hook is shown failed at once,
        // while its copy winds down.
        if op.state.is_pending() {
            if let Some(pit) = self.snaps.point_in_time().filter(|p| p.name() == op.name) {
                if let Some(why) = pit.failure() {
                    op.state = OpState::Failed;
                    op.error = why;
                }
            }
        }
        let figures = self.provider.figures(op.state);
        Some((op, figures))
    }

    /// The mount's figures (`cat .control/status`).
    pub fn mount_status(&self) -> MountStatus {
        let snaps = self.store.snapshots().unwrap_or_default();
        let (content, stored): (u64, u64) = snaps.iter().fold((0, 0), |(c, st), s| {
            (
                c + s.stats.bytes,
                st + s.stats.bytes_stored + s.stats.tree_bytes_stored,
            )
        });
        MountStatus {
            source: self.source.clone(),
            store: self.store.root().to_path_buf(),
            mounted: self.mounted_at,
            snapshots: snaps.len(),
            latest: snaps.last().map(|s| s.name.clone()),
            store_bytes: self.store.packs_bytes(),
            content_bytes: content,
            new_bytes_stored: stored,
            pending: self.snaps.pending().map(|(n, _)| n),
            operation: self.board.last().map(|o| (o.name, o.state)),
            barrier_held: self.barrier.closed_since().map(|t| t.elapsed()),
            deferred_ops: self.barrier.waiting(),
            waiting_opens: self.fences.waiting_opens(),
            notes: self.board.notes(),
        }
    }

    /// A note for `.control/status` (and the log).
    pub(super) fn note(&self, msg: String) {
        self.board.note(msg);
    }
}

/// RFC 3339 UTC with microseconds, as the control files show times.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
