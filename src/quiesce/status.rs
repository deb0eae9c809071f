//! What `.quiesce/APP/` shows of one application: its state and its
//! last results, typed ([`crate::control`] renders them as files).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

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
}
