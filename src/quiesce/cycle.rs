//! The quiesce cycle: identify → prepare → freeze every application (in
//! profile order), and once the point in time is fixed thaw (reverse order,
//! retried) → post; by hand, one application at a time. Every error path
//! thaws what it froze; [`Frozen`] thaws on drop.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::app::{ms, AppRt};
use super::plugins::PluginError;
use super::{AppState, Consistency, Inner, OnError, QuiesceError, Quiescer, Require};

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

impl Quiescer {
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
                    a.set_frozen();
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
                a.set_frozen();
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
}

/// Runs `f` up to `attempts` times (at least once) until it succeeds,
/// waiting 100 ms more before each new attempt; the last result.
fn retried<T>(
    attempts: u32,
    mut f: impl FnMut() -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let mut r = f();
    for i in 1..attempts.max(1) {
        if r.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100 * u64::from(i)));
        r = f();
    }
    r
}

impl Inner {
    /// How many times a thaw (or an abort) is tried before it is failed.
    fn thaw_attempts(&self) -> u32 {
        self.profile.read().watchdog.thaw_attempts.max(1)
    }

    /// A failure of `a` in `phase`. Returns None to go on (on_error =
    /// continue), or Some(result) to end the cycle: Err for require = app,
    /// Ok(why) for best-effort (everything thawed).
    pub(super) fn fail(
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
    pub(super) fn abort_one(&self, a: &Arc<AppRt>, result: &str) {
        let r = {
            let mut p = a.plugin.lock();
            retried(self.thaw_attempts(), || {
                a.phase(&mut p, Phase::Thaw, |p, cx| p.abort(cx))
            })
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
    pub(super) fn thaw_one(&self, a: &Arc<AppRt>, why: Option<&str>) -> Result<(), PluginError> {
        let mut p = a.plugin.lock();
        {
            let mut st = a.st.lock();
            if !st.held {
                return Ok(());
            }
            st.state = Some(AppState::Thawing);
        }
        let attempts = self.thaw_attempts();
        let r = retried(attempts, || {
            a.phase(&mut p, Phase::Thaw, |p, cx| p.thaw(cx))
        });
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

    pub(super) fn post_one(&self, a: &Arc<AppRt>) {
        let mut p = a.plugin.lock();
        if let Err(e) = a.phase(&mut p, Phase::Post, |p, cx| p.post(cx)) {
            a.set(|st| st.result = format!("post failed: {e}"));
        }
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
