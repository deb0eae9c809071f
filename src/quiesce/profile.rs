//! Quiesce profiles: TOML, parsed and validated, with errors that name the
//! file, the line and the key (docs/PROFILES.md is the reference).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::store::retention::Keep;

/// What a snapshot requires of the profile's applications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Require {
    /// Every application (except `on_error = "continue"` ones) must freeze, or no snapshot.
    App,
    /// Try; on failure take the snapshot crash-consistent and say why.
    BestEffort,
    /// No plug-ins run.
    Crash,
}

/// What a failing application does to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Abort: thaw what is frozen (the profile's `require` decides about the snapshot).
    Fail,
    /// Record the failure and go on with the other applications.
    Continue,
}

/// The plug-ins bkfs knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Exec,
    Cgroup,
    Signal,
    Sqlite,
    Postgresql,
    Mysql,
    Redis,
    Handshake,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Exec => "exec",
            PluginKind::Cgroup => "cgroup",
            PluginKind::Signal => "signal",
            PluginKind::Sqlite => "sqlite",
            PluginKind::Postgresql => "postgresql",
            PluginKind::Mysql => "mysql",
            PluginKind::Redis => "redis",
            PluginKind::Handshake => "handshake",
        }
    }
    fn parse(s: &str) -> Option<PluginKind> {
        Some(match s {
            "exec" => PluginKind::Exec,
            "cgroup" => PluginKind::Cgroup,
            "signal" => PluginKind::Signal,
            "sqlite" => PluginKind::Sqlite,
            "postgresql" | "postgres" => PluginKind::Postgresql,
            "mysql" | "mariadb" => PluginKind::Mysql,
            "redis" => PluginKind::Redis,
            "handshake" => PluginKind::Handshake,
            _ => return None,
        })
    }
}

/// Timeouts per phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    pub identify: Duration,
    pub prepare: Duration,
    pub freeze: Duration,
    pub thaw: Duration,
    pub post: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            identify: Duration::from_secs(10),
            prepare: Duration::from_secs(120),
            freeze: Duration::from_secs(15),
            thaw: Duration::from_secs(30),
            post: Duration::from_secs(30),
        }
    }
}

/// One plug-in parameter: its value and the line it is on (0 when unknown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub value: toml::Value,
    #[serde(default)]
    pub line: usize,
}

/// One `[[app]]` of a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub plugin: PluginKind,
    /// Freeze order: lower levels first (front ends), thaw in reverse; ties keep file order.
    pub level: i64,
    /// The user plug-in commands run as (`None`: root).
    pub user: Option<String>,
    pub timeouts: Timeouts,
    pub on_error: OnError,
    /// Everything else in the table: the plug-in's parameters.
    pub params: BTreeMap<String, Param>,
    /// Line of the `[[app]]` table in the profile (0 when unknown).
    #[serde(default)]
    pub line: usize,
}

/// Caps enforced by the watchdog and the thaw retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watchdog {
    /// Longest an application may stay frozen before the watchdog thaws it.
    pub freeze: Duration,
    /// Longest the write barrier may be held (applied by the mount).
    pub barrier: Duration,
    /// Attempts at a thaw before it is declared failed.
    pub thaw_attempts: u32,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            freeze: Duration::from_secs(60),
            barrier: Duration::from_secs(10),
            thaw_attempts: 3,
        }
    }
}

/// A parsed and validated profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub path: PathBuf,
    pub require: Require,
    /// In freeze order (sorted by level, stable).
    pub apps: Vec<AppSpec>,
    pub keep: Keep,
    pub watchdog: Watchdog,
}

/// A profile error: `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub msg: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ": {k}")?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for ProfileError {}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            path: PathBuf::new(),
            require: Require::Crash,
            apps: Vec::new(),
            keep: Keep::default(),
            watchdog: Watchdog::default(),
        }
    }
}

const APP_KEYS: &[&str] = &["name", "plugin", "level", "user", "timeout", "on_error"];
const TOP_KEYS: &[&str] = &["require", "app", "keep", "watchdog"];

type SpannedMap = BTreeMap<String, Spanned<toml::Value>>;

#[derive(Deserialize)]
struct RawTop {
    #[serde(default)]
    app: Vec<SpannedMap>,
    #[serde(default)]
    keep: Option<SpannedMap>,
    #[serde(default)]
    watchdog: Option<SpannedMap>,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        msg: impl Into<String>,
    ) -> ProfileError {
        ProfileError {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            key: if key.is_empty() {
                None
            } else {
                Some(key.to_string())
            },
            msg: msg.into(),
        }
    }
    fn at(&self, v: &Spanned<toml::Value>, key: &str, msg: impl Into<String>) -> ProfileError {
        self.err(Some(v.span()), key, msg)
    }
    /// The line a key is written on: the value's line (a key and its value share a line in TOML).
    fn line(&self, v: &Spanned<toml::Value>) -> usize {
        self.line_of(v.span().start)
    }
}

/// Parses "15s", "500ms", "2m" (humantime) or a plain number of seconds.
fn duration(cx: &Ctx, v: &Spanned<toml::Value>, key: &str) -> Result<Duration, ProfileError> {
    match v.get_ref() {
        toml::Value::String(s) => humantime::parse_duration(s).map_err(|e| {
            cx.at(
                v,
                key,
                format!("bad duration {s:?} ({e}); write it as \"15s\", \"500ms\" or \"2m\""),
            )
        }),
        toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        toml::Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
        _ => Err(cx.at(v, key, "expected a duration such as \"15s\"")),
    }
}

fn string(cx: &Ctx, v: &Spanned<toml::Value>, key: &str) -> Result<String, ProfileError> {
    match v.get_ref() {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(cx.at(
            v,
            key,
            format!("expected a string, found {}", other.type_str()),
        )),
    }
}

fn count(cx: &Ctx, v: &Spanned<toml::Value>, key: &str) -> Result<u32, ProfileError> {
    match v.get_ref() {
        toml::Value::Integer(n) if (0..=u32::MAX as i64).contains(n) => Ok(*n as u32),
        _ => Err(cx.at(v, key, "expected a non-negative integer")),
    }
}

impl Profile {
    /// Reads a profile, refusing one that anyone but root can write (the file
    /// or its directory: owner other than root, or group/other-writable).
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        check_owner(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            msg: format!("cannot read: {e}"),
        })?;
        Profile::parse(&text, path)
    }

    /// Parses profile text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let cx = Ctx { file: path, text };
        let top: SpannedMap = toml::from_str(text).map_err(|e| {
            let span = e.span();
            cx.err(span, "", e.message().to_string())
        })?;
        let raw: RawTop =
            toml::from_str(text).map_err(|e| cx.err(e.span(), "", e.message().to_string()))?;
        for (k, v) in &top {
            if !TOP_KEYS.contains(&k.as_str()) {
                return Err(cx.at(
                    v,
                    k,
                    format!("unknown key (known: {})", TOP_KEYS.join(", ")),
                ));
            }
        }
        let require = match top.get("require") {
            None => {
                if raw.app.is_empty() {
                    Require::Crash
                } else {
                    Require::App
                }
            }
            Some(v) => match string(&cx, v, "require")?.as_str() {
                "app" => Require::App,
                "best-effort" | "best_effort" => Require::BestEffort,
                "crash" => Require::Crash,
                other => {
                    return Err(cx.at(
                        v,
                        "require",
                        format!("unknown value {other:?} (app, best-effort or crash)"),
                    ))
                }
            },
        };
        let mut keep = Keep::default();
        if let Some(t) = &raw.keep {
            for (k, v) in t {
                let key = format!("keep.{k}");
                let n = Some(count(&cx, v, &key)?);
                match k.as_str() {
                    "last" => keep.last = n,
                    "hourly" => keep.hourly = n,
                    "daily" => keep.daily = n,
                    "weekly" => keep.weekly = n,
                    "monthly" => keep.monthly = n,
                    _ => {
                        return Err(cx.at(
                            v,
                            &key,
                            "unknown key (last, hourly, daily, weekly, monthly)",
                        ))
                    }
                }
            }
        }
        let mut watchdog = Watchdog::default();
        if let Some(t) = &raw.watchdog {
            for (k, v) in t {
                let key = format!("watchdog.{k}");
                match k.as_str() {
                    "freeze" => watchdog.freeze = duration(&cx, v, &key)?,
                    "barrier" => watchdog.barrier = duration(&cx, v, &key)?,
                    "thaw_attempts" => {
                        watchdog.thaw_attempts = count(&cx, v, &key)?.max(1);
                    }
                    _ => {
                        return Err(cx.at(v, &key, "unknown key (freeze, barrier, thaw_attempts)"))
                    }
                }
                if k != "thaw_attempts" && (watchdog.freeze.is_zero() || watchdog.barrier.is_zero())
                {
                    return Err(cx.at(v, &key, "a cap of zero would thaw at once"));
                }
            }
        }
        let mut apps: Vec<AppSpec> = Vec::new();
        for (i, t) in raw.app.iter().enumerate() {
            let app = parse_app(&cx, i, t)?;
            if let Some(prev) = apps.iter().find(|a| a.name == app.name) {
                let v = &t["name"];
                return Err(cx.at(
                    v,
                    "name",
                    format!(
                        "{:?} is already the name of the app on line {}",
                        app.name, prev.line
                    ),
                ));
            }
            apps.push(app);
        }
        // Check each plug-in's parameters now, so a bad profile fails at load.
        for app in &apps {
            super::plugins::build(app, None).map_err(|e| e.into_profile_error(path, app))?;
        }
        apps.sort_by_key(|a| a.level);
        Ok(Profile {
            path: path.to_path_buf(),
            require,
            apps,
            keep,
            watchdog,
        })
    }
}

fn parse_app(cx: &Ctx, i: usize, t: &SpannedMap) -> Result<AppSpec, ProfileError> {
    let first_line = t.values().map(|v| cx.line(v)).min();
    let missing = |key: &str| ProfileError {
        file: cx.file.to_path_buf(),
        line: first_line,
        key: Some(format!("app[{}].{key}", i + 1)),
        msg: "missing (every [[app]] needs a name and a plugin)".into(),
    };
    let name_v = t.get("name").ok_or_else(|| missing("name"))?;
    let name = string(cx, name_v, "name")?;
    if name.is_empty()
        || name.len() > 64
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(cx.at(
            name_v,
            "name",
            "must be 1-64 of [A-Za-z0-9._-], not starting with a dot (it names .quiesce/NAME/)",
        ));
    }
    let plugin_v = t.get("plugin").ok_or_else(|| missing("plugin"))?;
    let plugin_s = string(cx, plugin_v, "plugin")?;
    let plugin = PluginKind::parse(&plugin_s).ok_or_else(|| {
        cx.at(plugin_v, "plugin", format!("unknown plug-in {plugin_s:?} (exec, cgroup, signal, sqlite, postgresql, mysql, mariadb, redis, handshake)"))
    })?;
    let level = match t.get("level") {
        None => 0,
        Some(v) => match v.get_ref() {
            toml::Value::Integer(n) => *n,
            _ => {
                return Err(cx.at(
                    v,
                    "level",
                    "expected an integer (lower levels freeze first)",
                ))
            }
        },
    };
    let user = match t.get("user") {
        None => None,
        Some(v) => {
            let u = string(cx, v, "user")?;
            if lookup_user(&u).is_none() {
                return Err(cx.at(v, "user", format!("no such user {u:?}")));
            }
            Some(u)
        }
    };
    let mut timeouts = Timeouts::default();
    if let Some(v) = t.get("timeout") {
        match v.get_ref() {
            toml::Value::Table(tab) => {
                for (k, val) in tab {
                    let key = format!("timeout.{k}");
                    // Inline tables keep no spans of their own; use the table's.
                    let sv = Spanned::new(v.span(), val.clone());
                    let d = duration(cx, &sv, &key)?;
                    match k.as_str() {
                        "identify" => timeouts.identify = d,
                        "prepare" => timeouts.prepare = d,
                        "freeze" => timeouts.freeze = d,
                        "thaw" => timeouts.thaw = d,
                        "post" => timeouts.post = d,
                        _ => {
                            return Err(cx.at(
                                v,
                                &key,
                                "unknown phase (identify, prepare, freeze, thaw, post)",
                            ))
                        }
                    }
                }
            }
            _ => {
                let d = duration(cx, v, "timeout")?;
                timeouts = Timeouts {
                    identify: d,
                    prepare: d,
                    freeze: d,
                    thaw: d,
                    post: d,
                };
            }
        }
    }
    let on_error = match t.get("on_error") {
        None => OnError::Fail,
        Some(v) => match string(cx, v, "on_error")?.as_str() {
            "fail" => OnError::Fail,
            "continue" => OnError::Continue,
            o => {
                return Err(cx.at(
                    v,
                    "on_error",
                    format!("unknown value {o:?} (fail or continue)"),
                ))
            }
        },
    };
    let params = t
        .iter()
        .filter(|(k, _)| !APP_KEYS.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                Param {
                    value: v.get_ref().clone(),
                    line: cx.line(v),
                },
            )
        })
        .collect();
    Ok(AppSpec {
        name,
        plugin,
        level,
        user,
        timeouts,
        on_error,
        params,
        line: first_line.unwrap_or(0),
    })
}

/// uid, gid and the supplementary groups of a user name (or numeric uid).
pub fn lookup_user(name: &str) -> Option<(u32, u32, Vec<u32>)> {
    use nix::unistd::{Uid, User};
    let user = match name.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)).ok().flatten(),
        Err(_) => User::from_name(name).ok().flatten(),
    }?;
    let cname = std::ffi::CString::new(user.name.as_bytes()).ok()?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()]);
    Some((user.uid.as_raw(), user.gid.as_raw(), groups))
}

fn check_owner(path: &Path) -> Result<(), ProfileError> {
    let refuse = |what: &Path, msg: String| {
        ProfileError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        msg: format!("refused: {} {msg}; a profile runs commands as root's choice of user, so only root may write it", what.display()),
    }
    };
    let md = std::fs::metadata(path).map_err(|e| ProfileError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        msg: format!("cannot read: {e}"),
    })?;
    let check = |p: &Path, md: &std::fs::Metadata| -> Result<(), ProfileError> {
        if md.uid() != 0 {
            return Err(refuse(p, format!("is owned by uid {}, not root", md.uid())));
        }
        let sticky_dir = md.is_dir() && md.mode() & 0o1000 != 0;
        if md.mode() & 0o022 != 0 && !sticky_dir {
            return Err(refuse(
                p,
                format!(
                    "is writable by group or others (mode {:o})",
                    md.mode() & 0o7777
                ),
            ));
        }
        Ok(())
    };
    check(path, &md)?;
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(dir) = abs.parent() {
        if let Ok(dmd) = std::fs::metadata(dir) {
            check(dir, &dmd)?;
        }
    }
    Ok(())
}
