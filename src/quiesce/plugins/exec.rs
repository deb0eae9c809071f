//! `exec`: freeze and thaw commands, or a directory of hook scripts with the
//! qemu guest-agent (`fsfreeze-hook.d`) or VMware (`backupScripts.d`) conventions.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};
use crate::quiesce::run::{run, Ran};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Style {
    /// qemu-guest-agent: `freeze`, `thaw`.
    Qemu,
    /// VMware Tools: `freeze`, `thaw`, `freezeFail`.
    Vmware,
}

enum Mode {
    Commands {
        prepare: Option<Vec<OsString>>,
        freeze: Vec<OsString>,
        thaw: Vec<OsString>,
        post: Option<Vec<OsString>>,
    },
    Dir {
        dir: PathBuf,
        style: Style,
    },
}

pub struct Exec {
    mode: Mode,
    /// Dir mode: scripts whose freeze succeeded, in the order run. Command
    /// mode: the freeze command once it has been started.
    frozen: Vec<PathBuf>,
    results: Vec<Value>,
}

impl Exec {
    pub fn new(p: &Params) -> Result<Exec, ParamError> {
        p.known(&[
            "freeze",
            "thaw",
            "prepare",
            "post",
            "fsfreeze_hook_dir",
            "vmware_scripts_dir",
        ])?;
        let qemu = p.str("fsfreeze_hook_dir")?;
        let vmw = p.str("vmware_scripts_dir")?;
        let freeze = p.argv("freeze")?;
        let thaw = p.argv("thaw")?;
        let dirs = qemu.is_some() as u8 + vmw.is_some() as u8;
        let mode = if dirs > 0 {
            if dirs > 1 || freeze.is_some() || thaw.is_some() {
                let k = if freeze.is_some() {
                    "freeze"
                } else {
                    "vmware_scripts_dir"
                };
                return Err(ParamError::new(
                    k,
                    "give either freeze and thaw commands, or one of fsfreeze_hook_dir and vmware_scripts_dir",
                ));
            }
            let (dir, style, key) = match (qemu, vmw) {
                (Some(d), _) => (d, Style::Qemu, "fsfreeze_hook_dir"),
                (None, Some(d)) => (d, Style::Vmware, "vmware_scripts_dir"),
                _ => unreachable!(),
            };
            if !Path::new(&dir).is_absolute() {
                return Err(ParamError::new(key, "must be an absolute path"));
            }
            Mode::Dir {
                dir: dir.into(),
                style,
            }
        } else {
            let freeze = freeze.ok_or_else(|| ParamError {
                key: None,
                msg: "missing key freeze (the exec plug-in needs freeze and thaw, or a hook directory)".into(),
            })?;
            let thaw = thaw.ok_or_else(|| {
                ParamError::new("freeze", "missing key thaw (a freeze needs its thaw)")
            })?;
            Mode::Commands {
                prepare: p.argv("prepare")?,
                freeze,
                thaw,
                post: p.argv("post")?,
            }
        };
        Ok(Exec {
            mode,
            frozen: Vec::new(),
            results: Vec::new(),
        })
    }

    fn note(&mut self, phase: &str, what: &str, r: &Ran) {
        self.results.push(json!({
            "phase": phase,
            "command": what,
            "exit": r.code(),
            "timed_out": r.timed_out,
            "ms": (r.elapsed.as_secs_f64() * 1e6).round() / 1000.0,
            "output": tail(&r.output),
        }));
    }

    fn run_cmd(&mut self, cx: &PhaseCx, phase: &str, argv: &[OsString]) -> Result<(), String> {
        let env = [
            ("BKFS_APP", cx.app.name.clone()),
            ("BKFS_PHASE", phase.to_string()),
        ];
        let r = run(argv, cx.creds, cx.timeout, &env);
        let what = argv[0].to_string_lossy().into_owned();
        self.note(phase, &what, &r);
        if r.ok() {
            Ok(())
        } else {
            Err(r.describe(&format!("{phase} command {what}")))
        }
    }

    fn run_script(&mut self, cx: &PhaseCx, script: &Path, arg: &str) -> Result<(), String> {
        let argv = [script.as_os_str().to_owned(), OsString::from(arg)];
        let env = [
            ("BKFS_APP", cx.app.name.clone()),
            ("BKFS_PHASE", arg.to_string()),
        ];
        let r = run(&argv, cx.creds, cx.timeout, &env);
        self.note(arg, &script.to_string_lossy(), &r);
        if r.ok() {
            Ok(())
        } else {
            Err(r.describe(&format!("{} {arg}", script.display())))
        }
    }

    fn thaw_scripts(&mut self, cx: &PhaseCx, arg: &str) -> Result<(), String> {
        let mut first_err = None;
        while let Some(s) = self.frozen.pop() {
            if let Err(e) = self.run_script(cx, &s, arg) {
                // Keep going: every script gets its thaw; remember it failed.
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The last 500 bytes of a command's output, for the record.
fn tail(s: &str) -> &str {
    let s = s.trim_end();
    let mut i = s.len().saturating_sub(500);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The hook scripts of a directory, sorted by name: executable regular files,
/// skipping editor and package-manager leftovers as qemu's fsfreeze-hook does.
pub fn hook_scripts(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let skip = name.starts_with('.')
            || name.ends_with('~')
            || [
                ".dpkg-old",
                ".dpkg-new",
                ".dpkg-dist",
                ".dpkg-tmp",
                ".rpmsave",
                ".rpmorig",
                ".rpmnew",
                ".swp",
            ]
            .iter()
            .any(|s| name.ends_with(s));
        if skip {
            continue;
        }
        let path = e.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => v.push(path),
            _ => {}
        }
    }
    v.sort();
    Ok(v)
}

impl Plugin for Exec {
    fn identify(&mut self, _cx: &PhaseCx) -> Result<String, PluginError> {
        self.results.clear();
        match &self.mode {
            Mode::Commands { freeze, .. } => {
                let prog = Path::new(&freeze[0]);
                if prog.is_absolute() && !prog.exists() {
                    return Err(format!("{} does not exist", prog.display()).into());
                }
                Ok(format!("freeze command {}", prog.display()))
            }
            Mode::Dir { dir, style } => {
                let n = hook_scripts(dir)?.len();
                Ok(format!("{n} {style:?} hook scripts in {}", dir.display()))
            }
        }
    }

    fn prepare(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if let Mode::Commands {
            prepare: Some(argv),
            ..
        } = &self.mode
        {
            let argv = argv.clone();
            return self
                .run_cmd(cx, "prepare", &argv)
                .map_err(PluginError::from);
        }
        Ok(())
    }

    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        match &self.mode {
            Mode::Commands { freeze, .. } => {
                let argv = freeze.clone();
                // From the moment it starts, the command may have frozen something.
                self.frozen = vec![PathBuf::from(&argv[0])];
                self.run_cmd(cx, "freeze", &argv).map_err(PluginError::from)
            }
            Mode::Dir { dir, style } => {
                let (dir, style) = (dir.clone(), *style);
                for s in hook_scripts(&dir)? {
                    match self.run_script(cx, &s, "freeze") {
                        Ok(()) => self.frozen.push(s),
                        Err(e) => {
                            // VMware: the scripts already frozen get freezeFail (reverse);
                            // qemu: they get thaw. The failed one is not called again.
                            let arg = if style == Style::Vmware {
                                "freezeFail"
                            } else {
                                "thaw"
                            };
                            let _ = self.thaw_scripts(cx, arg);
                            return Err(e.into());
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        match &self.mode {
            Mode::Commands { thaw, .. } => {
                if self.frozen.is_empty() {
                    return Ok(());
                }
                let argv = thaw.clone();
                self.run_cmd(cx, "thaw", &argv)?;
                self.frozen.clear();
                Ok(())
            }
            Mode::Dir { .. } => self.thaw_scripts(cx, "thaw").map_err(PluginError::from),
        }
    }

    fn abort(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        match &self.mode {
            Mode::Dir {
                style: Style::Vmware,
                ..
            } => self
                .thaw_scripts(cx, "freezeFail")
                .map_err(PluginError::from),
            _ => self.thaw(cx),
        }
    }

    fn post(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if let Mode::Commands {
            post: Some(argv), ..
        } = &self.mode
        {
            let argv = argv.clone();
            return self.run_cmd(cx, "post", &argv).map_err(PluginError::from);
        }
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.results.is_empty() {
            m.insert("commands".into(), Value::Array(self.results.clone()));
        }
        m
    }

    fn recovery(&self) -> Value {
        json!({ "frozen": self.frozen.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>() })
    }
}

/// After a crash: the marker names this app, so its freeze may have begun.
/// Commands: run thaw. Hook directories: thaw every script, in reverse (a
/// script frozen when the daemon died is not yet in the recorded list).
pub fn recover(cx: &PhaseCx, _data: &Value) -> Result<(), PluginError> {
    let mut e = Exec::new(&Params(cx.app)).map_err(PluginError::Param)?;
    e.frozen = match &e.mode {
        Mode::Commands { freeze, .. } => vec![PathBuf::from(&freeze[0])],
        Mode::Dir { dir, .. } => hook_scripts(dir)?,
    };
    e.thaw(cx)
}
