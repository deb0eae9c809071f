//! `cgroup`: cgroup v2 freezer. Freeze writes 1 to `cgroup.freeze` and waits
//! for `frozen 1` in `cgroup.events` (poll(2) on the file, as the kernel
//! notifies it, with a short re-read interval as a fallback); thaw writes 0.
//! bkfs's own cgroup and its ancestors are refused.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};

pub struct Cgroup {
    path: PathBuf,
    frozen: bool,
    wait_ms: Option<f64>,
}

/// Where the cgroup v2 hierarchy is mounted (from /proc/self/mountinfo).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in mi.lines() {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next() == Some("cgroup2") {
            return pre.split_whitespace().nth(4).map(PathBuf::from);
        }
    }
    None
}

/// The cgroup v2 directory this process is in.
pub fn own_cgroup() -> Option<PathBuf> {
    let root = cgroup2_root()?;
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(rel.trim_start_matches('/')))
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

impl Cgroup {
    pub fn new(p: &Params) -> Result<Self, ParamError> {
        p.known(&["path"])?;
        let path = p.str("path")?.ok_or_else(|| ParamError {
            key: None,
            msg: "missing key path (the cgroup to freeze)".into(),
        })?;
        Ok(Cgroup {
            path: PathBuf::from(path),
            frozen: false,
            wait_ms: None,
        })
    }

    fn resolve(&self) -> Result<PathBuf, String> {
        let p = if self.path.is_absolute() && self.path.join("cgroup.freeze").exists() {
            self.path.clone()
        } else {
            let root = cgroup2_root().ok_or("no cgroup v2 hierarchy is mounted")?;
            let rel = self.path.strip_prefix(&root).unwrap_or(&self.path);
            root.join(rel.strip_prefix("/").unwrap_or(rel))
        };
        let p = normalize(&p);
        if let Some(own) = own_cgroup() {
            if normalize(&own).starts_with(&p) {
                return Err(format!(
                    "refused: {} is bkfs's own cgroup ({}) or an ancestor of it; freezing it would freeze bkfs",
                    p.display(),
                    own.display()
                ));
            }
        }
        if !p.join("cgroup.freeze").exists() {
            return Err(format!(
                "{} is not a cgroup v2 directory with a freezer (no cgroup.freeze)",
                p.display()
            ));
        }
        Ok(p)
    }
}

fn write_freeze(dir: &Path, v: &str) -> Result<(), String> {
    std::fs::write(dir.join("cgroup.freeze"), v)
        .map_err(|e| format!("{}/cgroup.freeze: {e}", dir.display()))
}

/// Waits until `cgroup.events` says `frozen <want>`.
fn wait_frozen(dir: &Path, want: bool, timeout: Duration) -> Result<(), String> {
    let path = dir.join("cgroup.events");
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let want_line = if want { "frozen 1" } else { "frozen 0" };
    let deadline = Instant::now() + timeout;
    loop {
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        f.read_to_string(&mut s)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if s.lines().any(|l| l.trim() == want_line) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{} did not say {want_line:?} within {:.1}s",
                path.display(),
                timeout.as_secs_f64()
            ));
        }
        let ms = left.as_millis().min(20) as i32;
        let _ = crate::os::fd::poll_priority(f.as_fd(), ms);
    }
}

impl Plugin for Cgroup {
    fn identify(&mut self, _cx: &PhaseCx) -> Result<String, PluginError> {
        let p = self.resolve()?;
        let procs = std::fs::read_to_string(p.join("cgroup.procs")).unwrap_or_default();
        Ok(format!(
            "{} ({} processes)",
            p.display(),
            procs.lines().count()
        ))
    }

    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let p = self.resolve()?;
        let t = Instant::now();
        self.frozen = true;
        write_freeze(&p, "1")?;
        wait_frozen(&p, true, cx.timeout)?;
        self.wait_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
        Ok(())
    }

    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if !self.frozen {
            return Ok(());
        }
        let p = self.resolve()?;
        write_freeze(&p, "0")?;
        wait_frozen(&p, false, cx.timeout)?;
        self.frozen = false;
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(ms) = self.wait_ms {
            m.insert("freeze_wait_ms".into(), json!(ms));
        }
        m
    }

    fn recovery(&self) -> Value {
        json!({ "path": self.resolve().unwrap_or_else(|_| self.path.clone()) })
    }
}

pub fn recover(data: &Value) -> Result<(), PluginError> {
    let Some(p) = data.get("path").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let p = Path::new(p);
    if !p.join("cgroup.freeze").exists() {
        return Ok(()); // gone: nothing frozen any more
    }
    write_freeze(p, "0").map_err(PluginError::from)
}
