//! The plug-in trait and the built-in plug-ins (docs/PLUGINS.md).

mod cgroup;
mod exec;
mod handshake;
mod mysql;
mod postgresql;
mod redis;
mod signal;
mod sqlite;

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use handshake::Handshake;

use super::profile::{AppSpec, PluginKind, ProfileError};
use super::run::Creds;

/// What a phase gets to work with.
pub struct PhaseCx<'a> {
    pub app: &'a AppSpec,
    pub creds: &'a Creds,
    /// This phase's timeout.
    pub timeout: Duration,
}

/// One application's plug-in. Every method may be called when the plug-in is
/// not in the state the method expects (after a crash, a watchdog thaw, a
/// forced thaw): `thaw` and `abort` must then do nothing and succeed.
pub trait Plugin: Send {
    /// Checks the application is there; returns a description for its status.
    fn identify(&mut self, _cx: &PhaseCx) -> Result<String, PluginError> {
        Ok(String::new())
    }
    /// Slow work before the freeze (a checkpoint).
    fn prepare(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        Ok(())
    }
    /// Fast: stop the application's writes.
    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError>;
    /// Let it run again.
    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError>;
    /// Undo whatever prepare and freeze did, after a failure before the
    /// snapshot (default: thaw).
    fn abort(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        self.thaw(cx)
    }
    /// After the thaw: record positions (LSN, GTID, LASTSAVE...).
    fn post(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        Ok(())
    }
    /// Positions and facts recorded so far in this cycle (shown in the outcome).
    fn positions(&self) -> Map<String, Value> {
        Map::new()
    }
    /// What a restarted daemon needs to thaw this application (in the frozen marker).
    fn recovery(&self) -> Value {
        Value::Null
    }
}

/// Why a phase of a plug-in failed (shown as the application's result,
/// in `why:` and in `bkfs quiesce` output: the text is the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// A parameter of the application is wrong (found when the plug-in is
    /// built, or rebuilt from a frozen marker).
    #[error("{}", .0.msg)]
    Param(ParamError),
    /// The user the application's commands run as cannot be used.
    #[error("{0}")]
    User(String),
    /// The application, a command or a session did not do what the phase
    /// needs, or not in time.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for PluginError {
    fn from(msg: String) -> Self {
        PluginError::Failed(msg)
    }
}

impl From<&str> for PluginError {
    fn from(msg: &str) -> Self {
        PluginError::Failed(msg.to_string())
    }
}

/// A parameter error: the key (if one) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: Option<String>,
    pub msg: String,
}

impl ParamError {
    pub fn new(key: &str, msg: impl Into<String>) -> Self {
        ParamError {
            key: Some(key.to_string()),
            msg: msg.into(),
        }
    }
    pub fn into_profile_error(self, file: &Path, app: &AppSpec) -> ProfileError {
        let line = self
            .key
            .as_ref()
            .and_then(|k| app.params.get(k))
            .map(|p| p.line)
            .filter(|&l| l > 0)
            .or(Some(app.line).filter(|&l| l > 0));
        ProfileError {
            file: file.to_path_buf(),
            line,
            key: Some(match &self.key {
                Some(k) => format!("app {:?}: {k}", app.name),
                None => format!("app {:?}", app.name),
            }),
            msg: self.msg,
        }
    }
}

/// Builds the plug-in of an application (also validates its parameters).
pub fn build(app: &AppSpec, hs: Option<Arc<Handshake>>) -> Result<Box<dyn Plugin>, ParamError> {
    let p = Params(app);
    Ok(match app.plugin {
        PluginKind::Exec => Box::new(exec::Exec::new(&p)?),
        PluginKind::Cgroup => Box::new(cgroup::Cgroup::new(&p)?),
        PluginKind::Signal => Box::new(signal::SignalTree::new(&p)?),
        PluginKind::Sqlite => Box::new(sqlite::Sqlite::new(&p)?),
        PluginKind::Postgresql => Box::new(postgresql::Postgres::new(&p)?),
        PluginKind::Mysql => Box::new(mysql::Mysql::new(&p)?),
        PluginKind::Redis => Box::new(redis::Redis::new(&p)?),
        PluginKind::Handshake => {
            Box::new(handshake::HandshakePlugin::new(&p, hs.unwrap_or_default())?)
        }
    })
}

/// Thaws an application named in a frozen marker, from what its plug-in
/// recorded there (a restarted daemon, or `bkfs thaw --force`).
pub fn recover(app: &AppSpec, data: &Value) -> Result<(), PluginError> {
    let creds = Creds::of(app.user.as_deref()).map_err(PluginError::User)?;
    let cx = PhaseCx {
        app,
        creds: &creds,
        timeout: app.timeouts.thaw,
    };
    match app.plugin {
        PluginKind::Signal => signal::recover(data),
        PluginKind::Cgroup => cgroup::recover(data),
        // Session plug-ins released their locks when the daemon's pipes closed.
        PluginKind::Sqlite
        | PluginKind::Postgresql
        | PluginKind::Mysql
        | PluginKind::Redis
        | PluginKind::Handshake => Ok(()),
        PluginKind::Exec => exec::recover(&cx, data),
    }
}

/// Typed access to an app's parameters.
pub struct Params<'a>(pub &'a AppSpec);

impl Params<'_> {
    pub fn known(&self, keys: &[&str]) -> Result<(), ParamError> {
        for k in self.0.params.keys() {
            if !keys.contains(&k.as_str()) {
                return Err(ParamError::new(
                    k,
                    format!(
                        "unknown key for plug-in {} (known: {})",
                        self.0.plugin.as_str(),
                        keys.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
    pub fn str(&self, key: &str) -> Result<Option<String>, ParamError> {
        match self.0.params.get(key).map(|p| &p.value) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(ParamError::new(
                key,
                format!("expected a string, found {}", v.type_str()),
            )),
        }
    }
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ParamError> {
        match self.0.params.get(key).map(|p| &p.value) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(ParamError::new(
                key,
                format!("expected true or false, found {}", v.type_str()),
            )),
        }
    }
    pub fn int(&self, key: &str) -> Result<Option<i64>, ParamError> {
        match self.0.params.get(key).map(|p| &p.value) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => Ok(Some(*n)),
            Some(v) => Err(ParamError::new(
                key,
                format!("expected an integer, found {}", v.type_str()),
            )),
        }
    }
    /// A command: an array of strings (argv), or one string run by `/bin/sh -c`.
    pub fn argv(&self, key: &str) -> Result<Option<Vec<OsString>>, ParamError> {
        match self.0.params.get(key).map(|p| &p.value) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec!["/bin/sh".into(), "-c".into(), s.into()])),
            Some(toml::Value::Array(a)) => {
                let mut v = Vec::new();
                for x in a {
                    match x {
                        toml::Value::String(s) => v.push(OsString::from(s)),
                        _ => return Err(ParamError::new(key, "expected an array of strings")),
                    }
                }
                if v.is_empty() {
                    return Err(ParamError::new(key, "empty command"));
                }
                Ok(Some(v))
            }
            Some(v) => Err(ParamError::new(
                key,
                format!(
                    "expected a command (array of strings), found {}",
                    v.type_str()
                ),
            )),
        }
    }
}
