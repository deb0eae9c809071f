//! The frozen marker: a file naming every application that may be frozen
//! or held, with what its plug-in needs to thaw it, so that a restarted
//! daemon (or `bkfs thaw --force`) thaws what a dead one left frozen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plugins::{self, PluginError};
use super::{AppSpec, AppState, Inner};

/// One entry of the frozen marker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MarkerEntry {
    pub spec: AppSpec,
    pub recovery: Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MarkerFile {
    pub(super) pid: u32,
    pub(super) written_unix: u64,
    pub(super) profile: PathBuf,
    pub(super) apps: Vec<MarkerEntry>,
}

impl Inner {
    /// Writes the marker naming what is held, or removes it when nothing is.
    pub(super) fn update_marker(&self) {
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

    /// At start: thaws what a previous daemon's marker names (it died
    /// with applications frozen), and keeps what could not be thawed.
    pub(super) fn recover_at_start(&self) {
        if !self.marker.exists() {
            return;
        }
        match read_marker(&self.marker) {
            Ok(m) => {
                let failed = recover_entries(&m.apps, |name, r| {
                    if let Some(a) = self.app(name) {
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
                *self.orphans.lock() = failed;
            }
            Err(e) => tracing::error!("quiesce: frozen marker {}: {e}", self.marker.display()),
        }
        self.update_marker();
    }
}

pub(super) fn write_marker(path: &Path, m: &MarkerFile) -> std::io::Result<()> {
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

pub(super) fn read_marker(path: &Path) -> Result<MarkerFile, String> {
    let b = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&b).map_err(|e| format!("not a frozen marker: {e}"))
}

/// Thaws marker entries (reverse order); returns those that failed.
pub(super) fn recover_entries(
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
