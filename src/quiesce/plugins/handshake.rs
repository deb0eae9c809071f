//! `handshake`: an application that cooperates. bkfs posts a request
//! (`freeze` or `thaw`) that the mount shows in `.quiesce/APP/request`; the
//! application does what it asks and acknowledges by writing the request's
//! word to `.quiesce/APP/ack`, which the mount passes to [`Handshake::ack`].
//!
//! States: idle → freeze requested → frozen (acked) → thaw requested → idle (acked).
//! A request not acknowledged within the phase's timeout fails the phase; a
//! freeze that timed out is turned into a thaw request so a late application
//! does not stay paused.

use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsState {
    Idle,
    FreezeRequested,
    Frozen,
    ThawRequested,
}

/// The shared cell between the plug-in and the mount's control files.
#[derive(Debug)]
pub struct Handshake {
    state: Mutex<(HsState, u64)>,
    cv: Condvar,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake {
            state: Mutex::new((HsState::Idle, 0)),
            cv: Condvar::new(),
        }
    }
}

impl Handshake {
    /// What `.quiesce/APP/request` shows: "freeze", "thaw", or "" (nothing asked).
    pub fn request(&self) -> &'static str {
        match self.state.lock().0 {
            HsState::FreezeRequested => "freeze",
            HsState::ThawRequested => "thaw",
            HsState::Idle | HsState::Frozen => "",
        }
    }

    pub fn state(&self) -> HsState {
        self.state.lock().0
    }

    /// The application acknowledges the pending request. `word`, if given,
    /// must name it ("freeze"/"frozen" or "thaw"/"thawed"), so a stale ack does
    /// not acknowledge the next request. Err when nothing is pending.
    pub fn ack(&self, word: Option<&str>) -> Result<(), String> {
        let mut g = self.state.lock();
        let w = word.map(|w| w.trim());
        let next = match (g.0, w) {
            (HsState::FreezeRequested, None | Some("freeze" | "frozen" | "")) => HsState::Frozen,
            (HsState::ThawRequested, None | Some("thaw" | "thawed" | "")) => HsState::Idle,
            (s, w) => {
                return Err(format!(
                    "no matching request to acknowledge (state {s:?}, ack {w:?})"
                ))
            }
        };
        g.0 = next;
        g.1 += 1;
        self.cv.notify_all();
        Ok(())
    }

    fn ask(&self, req: HsState, done: HsState, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.state.lock();
        if g.0 == done {
            return Ok(());
        }
        g.0 = req;
        g.1 += 1;
        self.cv.notify_all();
        while g.0 == req {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "not acknowledged within {:.1}s",
                    timeout.as_secs_f64()
                ));
            }
            let _ = self.cv.wait_for(&mut g, left);
        }
        Ok(())
    }

    /// Blocks until the request changes or `timeout` passes (for tests and
    /// for a mount that wants to wake a reader); returns the request.
    pub fn wait_request(&self, timeout: Duration) -> &'static str {
        let deadline = Instant::now() + timeout;
        let mut g = self.state.lock();
        while !matches!(g.0, HsState::FreezeRequested | HsState::ThawRequested) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = self.cv.wait_for(&mut g, left);
        }
        drop(g);
        self.request()
    }
}

pub struct HandshakePlugin {
    cell: std::sync::Arc<Handshake>,
    acked_ms: Option<f64>,
}

impl HandshakePlugin {
    pub fn new(p: &Params, cell: std::sync::Arc<Handshake>) -> Result<Self, ParamError> {
        p.known(&[])?;
        Ok(HandshakePlugin {
            cell,
            acked_ms: None,
        })
    }
}

impl Plugin for HandshakePlugin {
    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let t = Instant::now();
        match self
            .cell
            .ask(HsState::FreezeRequested, HsState::Frozen, cx.timeout)
        {
            Ok(()) => {
                self.acked_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                Ok(())
            }
            Err(e) => Err(format!("freeze {e}").into()),
        }
    }

    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if self.cell.state() == HsState::Idle {
            return Ok(());
        }
        self.cell
            .ask(HsState::ThawRequested, HsState::Idle, cx.timeout)
            .map_err(|e| PluginError::Failed(format!("thaw {e}")))
    }

    fn abort(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        // After a failure: post a thaw request and do not wait for it, so an
        // application that answers late still resumes.
        let mut g = self.cell.state.lock();
        if g.0 != HsState::Idle {
            g.0 = HsState::ThawRequested;
            g.1 += 1;
            self.cell.cv.notify_all();
        }
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(ms) = self.acked_ms {
            m.insert("ack_ms".into(), json!(ms));
        }
        m
    }
}
