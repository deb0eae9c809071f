//! `signal`: SIGSTOP a process and its descendants (found through /proc),
//! parents first and again until no new child appears; SIGCONT in reverse.
//! Each process is remembered with its start time so a thaw after a crash
//! never signals a recycled pid.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};

pub struct SignalTree {
    pid: Option<i32>,
    pidfile: Option<PathBuf>,
    children: bool,
    /// (pid, start time) of what we stopped, in stop order.
    stopped: Vec<(i32, u64)>,
}

/// (ppid, state, start time) from /proc/PID/stat.
fn stat(pid: i32) -> Option<(i32, char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((ppid, state, start))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn is_ancestor_or_self(pid: i32, of: i32) -> bool {
    let mut p = of;
    for _ in 0..4096 {
        if p == pid {
            return true;
        }
        match stat(p) {
            Some((pp, _, _)) if pp > 0 => p = pp,
            _ => return false,
        }
    }
    false
}

impl SignalTree {
    pub fn new(p: &Params) -> Result<Self, ParamError> {
        p.known(&["pid", "pidfile", "children"])?;
        let pid = p.int("pid")?.map(|n| n as i32);
        let pidfile = p.str("pidfile")?.map(PathBuf::from);
        if pid.is_some() == pidfile.is_some() {
            return Err(ParamError {
                key: None,
                msg: "give exactly one of pid and pidfile".into(),
            });
        }
        if let Some(n) = pid {
            if n <= 1 {
                return Err(ParamError::new("pid", "must be a process other than init"));
            }
        }
        Ok(SignalTree {
            pid,
            pidfile,
            children: p.bool("children", true)?,
            stopped: Vec::new(),
        })
    }

    fn root(&self) -> Result<i32, String> {
        let pid = match (&self.pid, &self.pidfile) {
            (Some(p), _) => *p,
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .trim()
                .parse()
                .map_err(|_| format!("{}: not a pid", f.display()))?,
            _ => unreachable!(),
        };
        if pid <= 1 {
            return Err(format!("refused: pid {pid}"));
        }
        if stat(pid).is_none() {
            return Err(format!("no process {pid}"));
        }
        if is_ancestor_or_self(pid, std::process::id() as i32) {
            return Err(format!("refused: pid {pid} is bkfs or an ancestor of it"));
        }
        Ok(pid)
    }

    /// The root and, if wanted, its descendants not stopped yet.
    fn tree(&self, root: i32) -> Vec<i32> {
        let mut out = vec![root];
        if !self.children {
            return out;
        }
        let procs: Vec<(i32, i32)> = all_pids()
            .into_iter()
            .filter_map(|p| stat(p).map(|s| (p, s.0)))
            .collect();
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            for &(p, pp) in &procs {
                if pp == parent && !out.contains(&p) {
                    out.push(p);
                }
            }
            i += 1;
        }
        out
    }

    fn cont_all(&mut self) -> Result<(), String> {
        let mut err = None;
        while let Some((pid, start)) = self.stopped.pop() {
            if let Err(e) = cont(pid, start) {
                err.get_or_insert(e);
            }
        }
        err.map_or(Ok(()), Err)
    }
}

fn cont(pid: i32, start: u64) -> Result<(), String> {
    match stat(pid) {
        Some((_, _, s)) if s == start => {
            kill(Pid::from_raw(pid), Signal::SIGCONT).map_err(|e| format!("SIGCONT {pid}: {e}"))
        }
        _ => Ok(()), // gone, or a different process now
    }
}

impl Plugin for SignalTree {
    fn identify(&mut self, _cx: &PhaseCx) -> Result<String, PluginError> {
        let root = self.root()?;
        Ok(format!(
            "process {root} and {} descendants",
            self.tree(root).len() - 1
        ))
    }

    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let root = self.root()?;
        let deadline = Instant::now() + cx.timeout;
        // Stop parents first; a running parent may fork, so look again until
        // a pass finds nothing new.
        for _ in 0..16 {
            let mut new = false;
            for pid in self.tree(root) {
                if self.stopped.iter().any(|s| s.0 == pid) {
                    continue;
                }
                let Some((_, _, start)) = stat(pid) else {
                    continue;
                };
                if kill(Pid::from_raw(pid), Signal::SIGSTOP).is_ok() {
                    self.stopped.push((pid, start));
                    new = true;
                }
            }
            if !new {
                break;
            }
        }
        // Wait until each is really stopped.
        loop {
            let running: Vec<(i32, char)> = self
                .stopped
                .iter()
                // A process that exited and whose pid was reused has another start time: gone.
                .filter(|(p, start)| {
                    matches!(stat(*p), Some((_, st, s)) if s == *start && !matches!(st, 'T' | 't' | 'Z' | 'X'))
                })
                .map(|s| (s.0, stat(s.0).map(|x| x.1).unwrap_or('?')))
                .collect();
            if running.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "processes (pid, state) {running:?} did not stop within {:.1}s",
                    cx.timeout.as_secs_f64()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn thaw(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        self.cont_all().map_err(PluginError::from)
    }

    fn positions(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.stopped.is_empty() {
            m.insert("processes".into(), json!(self.stopped.len()));
        }
        m
    }

    fn recovery(&self) -> Value {
        json!({ "stopped": self.stopped })
    }
}

pub fn recover(data: &Value) -> Result<(), PluginError> {
    let list: Vec<(i32, u64)> = data
        .get("stopped")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut err = None;
    for (pid, start) in list.into_iter().rev() {
        if let Err(e) = cont(pid, start) {
            err.get_or_insert(e);
        }
    }
    err.map_or(Ok(()), |e| Err(e.into()))
}
