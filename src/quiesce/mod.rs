//! Application quiescing (DESIGN §6; docs/PROFILES.md, docs/PLUGINS.md).
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

pub mod plugins;
pub mod profile;
pub mod run;

use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::control::text;
pub use crate::store::Consistency;

/// Where frozen markers live: gone at reboot, as are the applications frozen.
pub const MARKER_DIR: &str = "/run/bkfs/quiesce";

pub use plugins::Handshake;
pub use plugins::PluginError;
use plugins::{PhaseCx, Plugin};
pub use profile::{
    AppSpec, Keep, OnError, PluginKind, Profile, ProfileError, Require, Timeouts, Watchdog,
};
use run::Creds;

/// The state of one application, as `.quiesce/APP/state` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppState {
    Thawed,
    Freezing,
    Frozen,
    Thawing,
    Failed,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Thawed => "thawed",
            AppState::Freezing => "freezing",
            AppState::Frozen => "frozen",
            AppState::Thawing => "thawing",
            AppState::Failed => "failed",
        }
    }
}

/// The phases of a quiesce cycle, in the order they run (docs/PLUGINS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Identify,
    Prepare,
    Freeze,
    Thaw,
    Post,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Identify,
        Phase::Prepare,
        Phase::Freeze,
        Phase::Thaw,
        Phase::Post,
    ];

    /// Its name in timings (`freeze_ms`), results and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Identify => "identify",
            Phase::Prepare => "prepare",
            Phase::Freeze => "freeze",
            Phase::Thaw => "thaw",
            Phase::Post => "post",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One application's status for `.quiesce/APP/`.
#[derive(Clone, Debug, Serialize)]
pub struct AppStatus {
    pub name: String,
    pub plugin: &'static str,
    pub state: AppState,
    /// "ok", or the error of the last operation.
    pub result: String,
    /// What identify found ("PostgreSQL 150004 (checkpoint)").
    pub description: String,
    /// Milliseconds per phase of the last cycle.
    pub timings_ms: BTreeMap<String, f64>,
    /// Positions and facts of the last cycle (LSN, backup_label, ...).
    pub positions: Map<String, Value>,
    /// Milliseconds frozen so far, while frozen.
    pub frozen_for_ms: Option<f64>,
    /// What the watchdog last did to this application, if anything.
    pub watchdog: Option<String>,
    /// The pending handshake request ("freeze", "thaw" or ""), for `handshake` apps.
    pub request: Option<&'static str>,
}

impl AppStatus {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The read-only files of `.quiesce/APP/` (besides the `freeze`, `thaw`
    /// and, for handshake apps, `ack` control files).
    pub const FILES: &'static [&'static str] =
        &["state", "result", "status", "status.json", "request"];

    /// The content of one of [`AppStatus::FILES`], newline-terminated; None
    /// for a name that is not one (or `request` of a non-handshake app).
    /// `status` is `key: value` lines, stable: name, plugin, state, result,
    /// description, frozen_ms, watchdog, then `PHASE_ms` per phase run and
    /// `position.KEY` per recorded position (multi-line values on one line,
    /// newlines as `\n`).
    pub fn render(&self, file: &str) -> Option<String> {
        Some(match file {
            "state" => format!("{}\n", self.state.as_str()),
            "result" => format!("{}\n", self.result),
            "status.json" => format!("{}\n", self.to_json()),
            "request" => format!("{}\n", self.request?),
            "status" => {
                let mut e = text::Encoder::new();
                e.pair("name", &self.name)
                    .pair("plugin", self.plugin)
                    .pair("state", self.state.as_str())
                    .pair("result", &self.result)
                    .pair("description", &self.description)
                    .pair(
                        "frozen_ms",
                        self.frozen_for_ms
                            .map(|m| format!("{m:.1}"))
                            .unwrap_or_default(),
                    )
                    .pair("watchdog", self.watchdog.as_deref().unwrap_or(""));
                for p in Phase::ALL {
                    if let Some(ms) = self.timings_ms.get(p.as_str()) {
                        e.pair(&format!("{p}_ms"), format!("{ms:.1}"));
                    }
                }
                for (k, v) in &self.positions {
                    if k == "commands" {
                        continue;
                    }
                    let v = v
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string());
                    e.pair(&format!("position.{k}"), v);
                }
                e.finish()
            }
            _ => return None,
        })
    }
}

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

/// What a quiesce cycle achieved, for the snapshot's record.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub consistency: Consistency,
    pub why: String,
    /// From the first freeze started to the last thaw ended.
    pub frozen_ms: Option<f64>,
    /// Per application: name, plugin, state, result, timings_ms, positions, watchdog.
    pub apps: Vec<Value>,
}

impl Outcome {
    /// The snapshot record's capture: this outcome plus what the mount
    /// measured (when the snapshot was asked for, RFC 3339 UTC; the barrier).
    pub fn capture(&self, requested: String, barrier_ms: f64) -> crate::store::Capture {
        crate::store::Capture {
            requested,
            consistency: self.consistency,
            why: self.why.clone(),
            barrier_ms,
            frozen_ms: self.frozen_ms,
            apps: self.apps.clone(),
        }
    }
}

#[derive(Default)]
struct St {
    state: Option<AppState>,
    result: String,
    description: String,
    timings: BTreeMap<String, f64>,
    positions: Map<String, Value>,
    recovery: Value,
    /// Something may be frozen or held (from prepare until a successful thaw/abort).
    held: bool,
    /// Frozen by hand through freeze_app (not part of a cycle).
    by_hand: bool,
    frozen_since: Option<Instant>,
    watchdog: Option<String>,
    /// Thawed during the current cycle before the requester's thaw (by the
    /// watchdog, by hand, by a forced thaw): how.
    thawed_early: Option<String>,
}

struct AppRt {
    spec: AppSpec,
    creds: Result<Creds, String>,
    plugin: Mutex<Box<dyn Plugin>>,
    st: Mutex<St>,
    hs: Arc<Handshake>,
}

impl AppRt {
    fn new(spec: AppSpec) -> Result<AppRt, String> {
        let hs = Arc::new(Handshake::default());
        let plugin = plugins::build(&spec, Some(hs.clone())).map_err(|e| e.msg)?;
        Ok(AppRt {
            creds: Creds::of(spec.user.as_deref()),
            spec,
            plugin: Mutex::new(plugin),
            st: Mutex::new(St::default()),
            hs,
        })
    }

    fn status(&self) -> AppStatus {
        let st = self.st.lock();
        AppStatus {
            name: self.spec.name.clone(),
            plugin: self.spec.plugin.as_str(),
            state: st.state.unwrap_or(AppState::Thawed),
            result: if st.result.is_empty() {
                "none".into()
            } else {
                st.result.clone()
            },
            description: st.description.clone(),
            timings_ms: st.timings.clone(),
            positions: st.positions.clone(),
            frozen_for_ms: match (st.state, st.frozen_since) {
                (Some(AppState::Frozen), Some(t)) => Some(ms(t.elapsed())),
                _ => None,
            },
            watchdog: st.watchdog.clone(),
            request: (self.spec.plugin == PluginKind::Handshake).then(|| self.hs.request()),
        }
    }

    fn set(&self, f: impl FnOnce(&mut St)) {
        f(&mut self.st.lock())
    }

    /// Runs one phase with the plug-in locked, timing it and keeping what the
    /// plug-in reports.
    fn phase<T>(
        &self,
        plugin: &mut Box<dyn Plugin>,
        name: Phase,
        f: impl FnOnce(&mut dyn Plugin, &PhaseCx) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let creds = self.creds.clone().map_err(PluginError::User)?;
        let t = &self.spec.timeouts;
        let timeout = match name {
            Phase::Identify => t.identify,
            Phase::Prepare => t.prepare,
            Phase::Freeze => t.freeze,
            Phase::Post => t.post,
            Phase::Thaw => t.thaw,
        };
        let cx = PhaseCx {
            app: &self.spec,
            creds: &creds,
            timeout,
        };
        let start = Instant::now();
        let r = f(plugin.as_mut(), &cx);
        let el = ms(start.elapsed());
        let (pos, rec) = (plugin.positions(), plugin.recovery());
        self.set(|st| {
            *st.timings.entry(name.as_str().to_string()).or_insert(0.0) += el;
            st.positions = pos;
            st.recovery = rec;
        });
        r
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// One entry of the frozen marker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MarkerEntry {
    pub spec: AppSpec,
    pub recovery: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct MarkerFile {
    pid: u32,
    written_unix: u64,
    profile: PathBuf,
    apps: Vec<MarkerEntry>,
}

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

fn build_apps(profile: &Profile) -> Vec<Arc<AppRt>> {
    profile
        .apps
        .iter()
        .filter_map(|s| match AppRt::new(s.clone()) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                tracing::error!("quiesce: app {}: {e}", s.name);
                None
            }
        })
        .collect()
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
        if inner.marker.exists() {
            match read_marker(&inner.marker) {
                Ok(m) => {
                    let failed = recover_entries(&m.apps, |name, r| {
                        if let Some(a) = inner.app(name) {
                            a.set(|st| {
                                st.result = match r {
                                    Ok(()) => {
                                        "thawed at start: a previous daemon left it frozen".into()
                                    }
                                    Err(e) => format!("thaw at start failed: {e}"),
                                };
                                st.state = Some(if r.is_ok() {
                                    AppState::Thawed
                                } else {
                                    AppState::Failed
                                });
                            });
                        }
                    });
                    *inner.orphans.lock() = failed;
                }
                Err(e) => tracing::error!("quiesce: frozen marker {}: {e}", inner.marker.display()),
            }
            inner.update_marker();
        }
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("bkfs-watchdog".into())
            .spawn(move || watchdog(weak))
            .expect("spawn watchdog thread");
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

    /// identify → prepare → freeze every application, in profile order.
    pub fn freeze(&self) -> Result<Frozen, QuiesceError> {
        let inner = &self.inner;
        let _op = inner.op.lock();
        let (require, n_apps) = {
            let p = inner.profile.read();
            (p.require, p.apps.len())
        };
        let apps: Vec<Arc<AppRt>> = inner.apps.read().clone();
        if let Some(a) = apps.iter().find(|a| a.st.lock().by_hand) {
            return Err(QuiesceError::Busy(format!(
                "{} is frozen by hand; thaw it first",
                a.spec.name
            )));
        }
        if inner.cycle.swap(true, Ordering::SeqCst) {
            return Err(QuiesceError::Busy(
                "another quiesce cycle is running".into(),
            ));
        }
        let mut frozen = Frozen {
            inner: inner.clone(),
            apps: Vec::new(),
            consistency: Consistency::AppConsistent,
            why: String::new(),
            first_freeze: None,
            done: false,
        };
        if require == Require::Crash || n_apps == 0 {
            frozen.consistency = Consistency::FsConsistent;
            frozen.why = if n_apps == 0 {
                "the profile lists no applications".into()
            } else {
                "the profile requires crash consistency only (require = \"crash\"): no plug-in ran"
                    .into()
            };
            return Ok(frozen);
        }
        for a in &apps {
            a.set(|st| {
                st.timings.clear();
                st.positions.clear();
                st.thawed_early = None;
            });
        }
        let mut failures: Vec<String> = Vec::new();
        let mut active: Vec<Arc<AppRt>> = Vec::new();
        // identify and prepare every application before freezing any.
        for a in &apps {
            let r = {
                let mut p = a.plugin.lock();
                a.set(|st| {
                    st.state = Some(AppState::Freezing);
                    st.held = true;
                });
                inner.update_marker();
                a.phase(&mut p, Phase::Identify, |p, cx| p.identify(cx))
                    .map(|d| a.set(|st| st.description = d))
                    .map_err(|e| (Phase::Identify, e))
                    .and_then(|_| {
                        a.phase(&mut p, Phase::Prepare, |p, cx| p.prepare(cx))
                            .map_err(|e| (Phase::Prepare, e))
                    })
            };
            match r {
                Ok(()) => active.push(a.clone()),
                Err((phase, e)) => {
                    if let Some(err) = inner.fail(a, phase, &e, &mut active, &mut failures, require)
                    {
                        frozen.done = true;
                        inner.cycle.store(false, Ordering::SeqCst);
                        return err.map(|why| {
                            frozen.consistency = Consistency::CrashConsistent;
                            frozen.why = why;
                            frozen.done = false;
                            frozen
                        });
                    }
                }
            }
        }
        // freeze, in order.
        let order = active.clone();
        for a in &order {
            if !active.iter().any(|x| Arc::ptr_eq(x, a)) {
                continue;
            }
            frozen.first_freeze.get_or_insert_with(Instant::now);
            let r = {
                let mut p = a.plugin.lock();
                a.phase(&mut p, Phase::Freeze, |p, cx| p.freeze(cx))
            };
            match r {
                Ok(()) => {
                    a.set(|st| {
                        st.state = Some(AppState::Frozen);
                        st.frozen_since = Some(Instant::now());
                        st.result = "ok".into();
                    });
                    inner.update_marker();
                    frozen.apps.push(a.clone());
                }
                Err(e) => {
                    frozen.apps.retain(|x| !Arc::ptr_eq(x, a));
                    if let Some(err) =
                        inner.fail(a, Phase::Freeze, &e, &mut active, &mut failures, require)
                    {
                        frozen.apps.clear();
                        frozen.done = true;
                        inner.cycle.store(false, Ordering::SeqCst);
                        return err.map(|why| {
                            frozen.consistency = Consistency::CrashConsistent;
                            frozen.why = why;
                            frozen.done = false;
                            frozen
                        });
                    }
                }
            }
        }
        if failures.is_empty() {
            frozen.why = format!("{} application(s) frozen", frozen.apps.len());
        } else {
            frozen.consistency = Consistency::CrashConsistent;
            frozen.why = failures.join("; ");
        }
        Ok(frozen)
    }

    /// Freezes one application by hand (`.quiesce/APP/freeze`); the watchdog's cap applies.
    pub fn freeze_app(&self, name: &str) -> Result<(), QuiesceError> {
        let inner = &self.inner;
        let _op = inner.op.lock();
        let a = inner
            .app(name)
            .ok_or_else(|| QuiesceError::NoSuchApp(name.into()))?;
        if inner.cycle.load(Ordering::SeqCst) {
            return Err(QuiesceError::Busy(
                "a snapshot's quiesce cycle is running".into(),
            ));
        }
        if a.st.lock().held {
            return Ok(()); // already frozen
        }
        a.set(|st| {
            st.timings.clear();
            st.positions.clear();
            st.state = Some(AppState::Freezing);
            st.held = true;
            st.by_hand = true;
            st.thawed_early = None;
        });
        inner.update_marker();
        let r = {
            let mut p = a.plugin.lock();
            a.phase(&mut p, Phase::Identify, |p, cx| p.identify(cx))
                .map(|d| a.set(|st| st.description = d))
                .map_err(|e| (Phase::Identify, e))
                .and_then(|_| {
                    a.phase(&mut p, Phase::Prepare, |p, cx| p.prepare(cx))
                        .map_err(|e| (Phase::Prepare, e))
                })
                .and_then(|_| {
                    a.phase(&mut p, Phase::Freeze, |p, cx| p.freeze(cx))
                        .map_err(|e| (Phase::Freeze, e))
                })
        };
        match r {
            Ok(()) => {
                a.set(|st| {
                    st.state = Some(AppState::Frozen);
                    st.frozen_since = Some(Instant::now());
                    st.result = "ok".into();
                });
                inner.update_marker();
                Ok(())
            }
            Err((phase, e)) => {
                inner.abort_one(&a, &format!("{phase} failed: {e}"));
                Err(QuiesceError::Failed {
                    app: name.into(),
                    phase,
                    reason: e,
                })
            }
        }
    }

    /// Thaws one application by hand (`.quiesce/APP/thaw`), then runs its post phase.
    pub fn thaw_app(&self, name: &str) -> Result<(), QuiesceError> {
        let a = self
            .inner
            .app(name)
            .ok_or_else(|| QuiesceError::NoSuchApp(name.into()))?;
        let r = self.inner.thaw_one(&a, Some("by hand"));
        if r.is_ok() {
            self.inner.post_one(&a);
        }
        self.inner.update_marker();
        r.map_err(|e| QuiesceError::Failed {
            app: name.into(),
            phase: Phase::Thaw,
            reason: e,
        })
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

    /// A failure of `a` in `phase`. Returns None to go on (on_error =
    /// continue), or Some(result) to end the cycle: Err for require = app,
    /// Ok(why) for best-effort (everything thawed).
    fn fail(
        &self,
        a: &Arc<AppRt>,
        phase: Phase,
        e: &PluginError,
        active: &mut Vec<Arc<AppRt>>,
        failures: &mut Vec<String>,
        require: Require,
    ) -> Option<Result<String, QuiesceError>> {
        self.abort_one(a, &format!("{phase} failed: {e}"));
        active.retain(|x| !Arc::ptr_eq(x, a));
        if a.spec.on_error == OnError::Continue {
            failures.push(format!(
                "{} (on_error = continue) {phase} failed: {e}",
                a.spec.name
            ));
            return None;
        }
        for x in active.iter().rev() {
            self.abort_one(x, &format!("aborted: {} {phase} failed", a.spec.name));
        }
        active.clear();
        Some(match require {
            Require::App => Err(QuiesceError::Failed {
                app: a.spec.name.clone(),
                phase,
                reason: e.clone(),
            }),
            _ => Ok(format!(
                "best-effort: {} {phase} failed: {e}; every application thawed, snapshot crash-consistent",
                a.spec.name
            )),
        })
    }

    /// Undoes prepare/freeze of one application after a failure.
    fn abort_one(&self, a: &Arc<AppRt>, result: &str) {
        let r = {
            let mut p = a.plugin.lock();
            let attempts = self.profile.read().watchdog.thaw_attempts.max(1);
            let mut r = Err(PluginError::Failed(String::new()));
            for i in 0..attempts {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(100 * i as u64));
                }
                r = a.phase(&mut p, Phase::Thaw, |p, cx| p.abort(cx));
                if r.is_ok() {
                    break;
                }
            }
            r
        };
        a.set(|st| {
            st.state = Some(AppState::Failed);
            st.frozen_since = None;
            st.by_hand = false;
            st.result = match &r {
                Ok(()) => format!("{result} (thawed)"),
                Err(e) => format!("{result}; its thaw failed too: {e}"),
            };
            if r.is_ok() {
                st.held = false;
            }
        });
        self.update_marker();
    }

    /// Thaws one application if it holds anything (retried). Safe to call
    /// from the watchdog, the requester and by hand at once: the plug-in lock
    /// orders them and the second finds nothing held.
    fn thaw_one(&self, a: &Arc<AppRt>, why: Option<&str>) -> Result<(), PluginError> {
        let mut p = a.plugin.lock();
        {
            let mut st = a.st.lock();
            if !st.held {
                return Ok(());
            }
            st.state = Some(AppState::Thawing);
        }
        let attempts = self.profile.read().watchdog.thaw_attempts.max(1);
        let mut r = Err(PluginError::Failed(String::new()));
        for i in 0..attempts {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100 * i as u64));
            }
            r = a.phase(&mut p, Phase::Thaw, |p, cx| p.thaw(cx));
            if r.is_ok() {
                break;
            }
        }
        drop(p);
        a.set(|st| match &r {
            Ok(()) => {
                st.state = Some(AppState::Thawed);
                st.held = false;
                st.by_hand = false;
                st.frozen_since = None;
                if let Some(w) = why {
                    st.result = format!("ok (thawed {w})");
                    st.thawed_early = Some(w.to_string());
                }
            }
            Err(e) => {
                st.state = Some(AppState::Failed);
                st.result = format!("thaw failed after {attempts} attempt(s): {e}");
            }
        });
        self.update_marker();
        r
    }

    fn post_one(&self, a: &Arc<AppRt>) {
        let mut p = a.plugin.lock();
        if let Err(e) = a.phase(&mut p, Phase::Post, |p, cx| p.post(cx)) {
            a.set(|st| st.result = format!("post failed: {e}"));
        }
    }

    /// Writes the marker naming what is held, or removes it when nothing is.
    fn update_marker(&self) {
        let _g = self.marker_lock.lock();
        let mut entries: Vec<MarkerEntry> = self.orphans.lock().clone();
        for a in self.apps.read().iter() {
            let st = a.st.lock();
            if st.held {
                entries.push(MarkerEntry {
                    spec: a.spec.clone(),
                    recovery: st.recovery.clone(),
                });
            }
        }
        let r = if entries.is_empty() {
            match std::fs::remove_file(&self.marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let m = MarkerFile {
                pid: std::process::id(),
                written_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                profile: self.profile.read().path.clone(),
                apps: entries,
            };
            write_marker(&self.marker, &m)
        };
        if let Err(e) = r {
            tracing::error!("quiesce: frozen marker {}: {e}", self.marker.display());
        }
    }
}

fn write_marker(path: &Path, m: &MarkerFile) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        if let Ok(d) = std::fs::File::open(d) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn read_marker(path: &Path) -> Result<MarkerFile, String> {
    let b = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&b).map_err(|e| format!("not a frozen marker: {e}"))
}

/// Thaws marker entries (reverse order); returns those that failed.
fn recover_entries(
    entries: &[MarkerEntry],
    mut report: impl FnMut(&str, &Result<(), PluginError>),
) -> Vec<MarkerEntry> {
    let mut failed = Vec::new();
    for e in entries.iter().rev() {
        let r = plugins::recover(&e.spec, &e.recovery);
        report(&e.spec.name, &r);
        match &r {
            Ok(()) => tracing::warn!(
                "quiesce: thawed {} left frozen by a previous daemon",
                e.spec.name
            ),
            Err(err) => {
                tracing::error!(
                    "quiesce: cannot thaw {} from the frozen marker: {err}",
                    e.spec.name
                );
                failed.push(e.clone());
            }
        }
    }
    failed.reverse();
    failed
}

/// An application's name and how its thaw went.
pub type AppResult = (String, Result<(), PluginError>);

/// `bkfs thaw --force --marker FILE`: thaws what a marker names and removes
/// it if everything thawed. Returns (name, result) per application.
pub fn thaw_marker(path: &Path) -> Result<Vec<AppResult>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let m = read_marker(path)?;
    let mut results = Vec::new();
    let failed = recover_entries(&m.apps, |n, r| results.push((n.to_string(), r.clone())));
    if failed.is_empty() {
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    } else {
        let m = MarkerFile { apps: failed, ..m };
        write_marker(path, &m).map_err(|e| e.to_string())?;
    }
    results.reverse();
    Ok(results)
}

/// The watchdog: thaws any application frozen longer than the cap. Runs
/// until the quiescer is gone.
fn watchdog(inner: Weak<Inner>) {
    loop {
        let tick = {
            let Some(inner) = inner.upgrade() else { return };
            let cap = inner.profile.read().watchdog.freeze;
            let apps: Vec<Arc<AppRt>> = inner.apps.read().clone();
            for a in apps {
                let over = {
                    let st = a.st.lock();
                    st.state == Some(AppState::Frozen)
                        && st.frozen_since.is_some_and(|t| t.elapsed() >= cap)
                };
                if over {
                    let note = format!(
                        "force-thawed by the watchdog after {:.1}s frozen (cap {:?})",
                        cap.as_secs_f64(),
                        cap
                    );
                    tracing::error!("quiesce: {}: {note}", a.spec.name);
                    let r = inner.thaw_one(&a, Some("by the watchdog"));
                    a.set(|st| {
                        st.watchdog = Some(match &r {
                            Ok(()) => note.clone(),
                            Err(e) => format!("{note}; thaw failed: {e}"),
                        });
                    });
                }
            }
            (cap / 20).clamp(Duration::from_millis(5), Duration::from_millis(250))
        };
        std::thread::sleep(tick);
    }
}

/// Applications frozen for one snapshot. Dropping it thaws them.
pub struct Frozen {
    inner: Arc<Inner>,
    apps: Vec<Arc<AppRt>>,
    consistency: Consistency,
    why: String,
    first_freeze: Option<Instant>,
    done: bool,
}

impl Frozen {
    /// What the snapshot will be if thawed now.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    pub fn why(&self) -> &str {
        &self.why
    }

    /// Names of the frozen applications, in freeze order.
    pub fn frozen_apps(&self) -> Vec<String> {
        self.apps.iter().map(|a| a.spec.name.clone()).collect()
    }

    /// Thaws in reverse order (each retried), then runs post-snapshot.
    pub fn thaw(mut self) -> Outcome {
        self.finish()
    }

    fn finish(&mut self) -> Outcome {
        self.done = true;
        let mut consistency = self.consistency;
        let mut why = vec![self.why.clone()];
        for a in self.apps.iter().rev() {
            if let Err(e) = self.inner.thaw_one(a, None) {
                why.push(format!(
                    "{} thaw failed: {e} (left in the frozen marker)",
                    a.spec.name
                ));
            }
        }
        let frozen_ms = self.first_freeze.map(|t| ms(t.elapsed()));
        for a in &self.apps {
            let early = a.st.lock().thawed_early.clone();
            if let Some(how) = early {
                consistency = Consistency::CrashConsistent;
                why.push(format!(
                    "{} was thawed {how} before the snapshot was released",
                    a.spec.name
                ));
            }
            if a.st.lock().state == Some(AppState::Thawed) {
                self.inner.post_one(a);
            }
        }
        self.inner.cycle.store(false, Ordering::SeqCst);
        let apps = self
            .inner
            .apps
            .read()
            .iter()
            .map(|a| {
                let s = a.status();
                json!({
                    "name": s.name,
                    "plugin": s.plugin,
                    "state": s.state.as_str(),
                    "result": s.result,
                    "timings_ms": s.timings_ms,
                    "positions": s.positions,
                    "watchdog": s.watchdog,
                })
            })
            .collect();
        Outcome {
            consistency,
            why: why.join("; "),
            frozen_ms,
            apps,
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests;
