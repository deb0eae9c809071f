//! Application quiescing (docs/PROFILES.md, docs/PLUGINS.md, docs/ARCHITECTURE.md).
//!
//! A [`Quiescer`] per mount runs the applications of a [`Profile`] through
//! identify → prepare → freeze (in order) and, once the snapshot's point in
//! time is fixed, thaw (reverse order, retried) → post. No FUSE here: the
//! mount shows [`Quiescer::apps`] under `.quiesce/APP/` and calls
//! [`Quiescer::freeze_app`], [`Quiescer::thaw_app`] and [`Quiescer::ack`].
//!
//! Nothing is left frozen: every error path thaws; [`Frozen`] thaws on drop;
//! a watchdog thread of its own thaws any application frozen longer than the
//! profile's cap; a marker file names what is frozen, so a restarted daemon
//! (or `bkfs thaw --force`) thaws it first.
//!
//! - this file: the [`Quiescer`] API and the state the parts share;
//! - [`cycle`]: the freeze/thaw cycle, by hand or for a snapshot, and its
//!   [`Outcome`] ([`Phase`], [`Consistency`]);
//! - [`marker`]: the frozen marker, written as applications freeze, read at start;
//! - `watchdog`: the thread that thaws past the cap;
//! - [`status`]: what `.quiesce/APP/` shows, typed ([`AppStatus`]);
//! - `app`: one application at run time (its plug-in, its state, a phase run);
//! - [`profile`]: parsing; [`plugins`]: the [`plugins::Plugin`] trait and the
//!   built-in plug-ins; [`run`]: running their commands.
//!
//! A mount's snapshot request, in outline:
//!
//! ```no_run
//! # use bkfs::quiesce::{Profile, Quiescer};
//! # fn barrier() -> f64 { 0.0 }
//! let profile = Profile::load("/etc/bkfs/data.toml".as_ref())?; // refused if not root's alone
//! let q = Quiescer::new(profile, "/run/bkfs/quiesce/mnt-data.json".into()); // thaws a dead daemon's leftovers
//! match q.freeze() {
//!     Err(e) => { /* require = "app" and one failed: ECANCELED (e.errno()), reason e.to_string() */ }
//!     Ok(frozen) => {
//!         let barrier_ms = barrier(); // raise the barrier, fix the point in time, release it
//!         let outcome = frozen.thaw(); // reverse order, retried; then post (positions)
//!         let _capture = outcome.capture("2026-11-22T03:04:05Z".into(), barrier_ms);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod app;
pub mod cycle;
pub mod marker;
pub mod plugins;
pub mod profile;
pub mod run;
pub mod status;
mod watchdog;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use crate::store::Consistency;
use app::{build_apps, AppRt};
pub use cycle::{Frozen, Outcome, Phase};
use marker::recover_entries;
pub use marker::{thaw_marker, AppResult, MarkerEntry};
pub use plugins::{Handshake, PluginError};
pub use profile::{
    AppSpec, Keep, OnError, PluginKind, Profile, ProfileError, Require, Timeouts, Watchdog,
};
pub use status::{AppState, AppStatus};

/// Where frozen markers live: gone at reboot, as are the applications frozen.
pub const MARKER_DIR: &str = "/run/bkfs/quiesce";

/// Why a quiesce operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuiesceError {
    /// An application failed and the profile requires consistency: no snapshot.
    Failed {
        app: String,
        phase: Phase,
        reason: PluginError,
    },
    /// Another cycle is running, or an application is frozen by hand.
    Busy(String),
    NoSuchApp(String),
    /// Refused (reload while frozen, ...).
    Refused(String),
}

impl QuiesceError {
    /// The errno a control file returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            QuiesceError::Failed { .. } => libc::ECANCELED,
            QuiesceError::Busy(_) => libc::EBUSY,
            QuiesceError::NoSuchApp(_) => libc::ENOENT,
            QuiesceError::Refused(_) => libc::EINVAL,
        }
    }
}

impl fmt::Display for QuiesceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuiesceError::Failed { app, phase, reason } => {
                write!(f, "{app}: {phase} failed: {reason}")
            }
            QuiesceError::Busy(s) => write!(f, "busy: {s}"),
            QuiesceError::NoSuchApp(s) => write!(f, "no application {s:?} in the profile"),
            QuiesceError::Refused(s) => write!(f, "refused: {s}"),
        }
    }
}

impl std::error::Error for QuiesceError {}

struct Inner {
    profile: RwLock<Profile>,
    apps: RwLock<Vec<Arc<AppRt>>>,
    marker: PathBuf,
    /// Serializes cycles, manual freezes and thaws, reloads.
    op: Mutex<()>,
    cycle: AtomicBool,
    /// Marker entries of a previous daemon that could not be thawed yet.
    orphans: Mutex<Vec<MarkerEntry>>,
    marker_lock: Mutex<()>,
}

/// One per mount.
pub struct Quiescer {
    inner: Arc<Inner>,
}

impl Quiescer {
    /// Starts the quiescer. If `marker` exists, a previous daemon died with
    /// applications frozen: they are thawed first.
    pub fn new(profile: Profile, marker: PathBuf) -> Quiescer {
        let apps = build_apps(&profile);
        let inner = Arc::new(Inner {
            profile: RwLock::new(profile),
            apps: RwLock::new(apps),
            marker,
            op: Mutex::new(()),
            cycle: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            marker_lock: Mutex::new(()),
        });
        inner.recover_at_start();
        watchdog::start(&inner);
        Quiescer { inner }
    }

    pub fn apps(&self) -> Vec<AppStatus> {
        self.inner.apps.read().iter().map(|a| a.status()).collect()
    }

    pub fn app(&self, name: &str) -> Option<AppStatus> {
        self.inner.app(name).map(|a| a.status())
    }

    pub fn require(&self) -> Require {
        self.inner.profile.read().require
    }

    /// Retention of the profile (applied by the mount after each sealed snapshot).
    pub fn keep(&self) -> Keep {
        self.inner.profile.read().keep.clone()
    }

    /// The caps (the mount applies `barrier` to its write barrier).
    pub fn watchdog_caps(&self) -> Watchdog {
        self.inner.profile.read().watchdog.clone()
    }

    pub fn marker_path(&self) -> &Path {
        &self.inner.marker
    }

    /// The handshake cell of a `handshake` application (for `.quiesce/APP/request`).
    pub fn handshake(&self, name: &str) -> Option<Arc<Handshake>> {
        self.inner
            .app(name)
            .filter(|a| a.spec.plugin == PluginKind::Handshake)
            .map(|a| a.hs.clone())
    }

    /// The application acknowledged its pending request (`.quiesce/APP/ack`).
    pub fn ack(&self, name: &str, word: Option<&str>) -> Result<(), QuiesceError> {
        let hs = self
            .handshake(name)
            .ok_or_else(|| QuiesceError::NoSuchApp(name.into()))?;
        hs.ack(word).map_err(QuiesceError::Refused)
    }

    /// Thaws everything this quiescer may hold, and what a previous daemon's
    /// marker names. Always safe; idempotent.
    pub fn thaw_all_force(&self) {
        let apps: Vec<Arc<AppRt>> = self.inner.apps.read().clone();
        for a in apps.iter().rev() {
            let _ = self.inner.thaw_one(a, Some("by a forced thaw"));
        }
        let orphans = std::mem::take(&mut *self.inner.orphans.lock());
        let failed = recover_entries(&orphans, |_, _| {});
        *self.inner.orphans.lock() = failed;
        self.inner.update_marker();
    }

    /// Replaces the profile; refused while anything is frozen.
    pub fn reload(&self, profile: Profile) -> Result<(), QuiesceError> {
        let inner = &self.inner;
        let _op = inner.op.lock();
        if inner.cycle.load(Ordering::SeqCst) {
            return Err(QuiesceError::Refused("a quiesce cycle is running".into()));
        }
        if let Some(a) = inner.apps.read().iter().find(|a| a.st.lock().held) {
            return Err(QuiesceError::Refused(format!(
                "{} is frozen; thaw it first",
                a.spec.name
            )));
        }
        let apps = build_apps(&profile);
        *inner.apps.write() = apps;
        *inner.profile.write() = profile;
        Ok(())
    }
}

impl Drop for Quiescer {
    /// The mount is going away: nothing may stay frozen.
    fn drop(&mut self) {
        self.thaw_all_force();
    }
}

impl Inner {
    fn app(&self, name: &str) -> Option<Arc<AppRt>> {
        self.apps
            .read()
            .iter()
            .find(|a| a.spec.name == name)
            .cloned()
    }
}

#[cfg(test)]
mod tests;
