//! One application of the profile at run time: its plug-in, its status,
//! and how a phase of it runs (timed, with the phase's timeout).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::plugins::{self, Handshake, PhaseCx, Plugin, PluginError};
use super::run::Creds;
use super::{AppSpec, AppState, AppStatus, Phase, PluginKind, Profile};

#[derive(Default)]
pub(super) struct St {
    pub(super) state: Option<AppState>,
    pub(super) result: String,
    pub(super) description: String,
    pub(super) timings: BTreeMap<String, f64>,
    pub(super) positions: Map<String, Value>,
    pub(super) recovery: Value,
    /// Something may be frozen or held (from prepare until a successful thaw/abort).
    pub(super) held: bool,
    /// Frozen by hand through freeze_app (not part of a cycle).
    pub(super) by_hand: bool,
    pub(super) frozen_since: Option<Instant>,
    pub(super) watchdog: Option<String>,
    /// Thawed during the current cycle before the requester's thaw (by the
    /// watchdog, by hand, by a forced thaw): how.
    pub(super) thawed_early: Option<String>,
}

pub(super) struct AppRt {
    pub(super) spec: AppSpec,
    pub(super) creds: Result<Creds, String>,
    pub(super) plugin: Mutex<Box<dyn Plugin>>,
    pub(super) st: Mutex<St>,
    pub(super) hs: Arc<Handshake>,
}

impl AppRt {
    pub(super) fn new(spec: AppSpec) -> Result<AppRt, String> {
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

    pub(super) fn status(&self) -> AppStatus {
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

    pub(super) fn set(&self, f: impl FnOnce(&mut St)) {
        f(&mut self.st.lock())
    }

    /// Its freeze succeeded: frozen from now.
    pub(super) fn set_frozen(&self) {
        self.set(|st| {
            st.state = Some(AppState::Frozen);
            st.frozen_since = Some(Instant::now());
            st.result = "ok".into();
        });
    }

    /// Runs one phase with the plug-in locked, timing it and keeping what the
    /// plug-in reports.
    pub(super) fn phase<T>(
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

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub(super) fn build_apps(profile: &Profile) -> Vec<Arc<AppRt>> {
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
