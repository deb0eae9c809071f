//! The control files of a live mount: `.control/` (docs/CONTROL.md).
//!
//! | file | mode | read | write |
//! |---|---|---|---|
//! | `snapshot` | 0644 | the latest snapshot operation | a name, or an empty line: take a snapshot |
//! | `status` | 0444 | mount, store and provider figures | — |
//! | `freeze` | 0600 | whether the barrier is held by hand | anything: hold the barrier (capped) |
//! | `thaw` | 0200 | — | anything: release it |
//!
//! Only root may write them (the kernel checks the modes, the mount uses
//! `default_permissions`). A write returns when its work is done: for
//! `snapshot`, once the point in time is fixed; a refused request returns
//! the errno of [`crate::snapshot::requester::Refusal`] and leaves the
//! reason in `snapshot`'s `error:` line.
//!
//! Like the other cores, this one knows nothing of FUSE: ids in, `Result`
//! out. Ids live in namespace [`Namespace::Control`].

pub mod render;
pub mod text;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;

pub mod tree;

use crate::snapshot::requester::{Snapshotter, FREEZE_CAP};
use crate::snapview::catalog::time_of;
use crate::snapview::Attr;
use crate::vfs::Namespace;

pub type Result<T> = std::result::Result<T, Errno>;

const NS: u64 = Namespace::Control.bits();

pub const CONTROL_DIR_ID: u64 = NS | 1;
const SNAPSHOT_ID: u64 = NS | 2;
const STATUS_ID: u64 = NS | 3;
const FREEZE_ID: u64 = NS | 4;
const THAW_ID: u64 = NS | 5;
const PROFILE_ID: u64 = NS | 6;
/// `.quiesce/`: one directory per application of the profile.
pub const QUIESCE_DIR_ID: u64 = NS | 8;
/// Application k's directory is `APP_BASE + k * APP_STRIDE`; its files follow.
const APP_BASE: u64 = NS | 0x1000;
const APP_STRIDE: u64 = 16;

/// Longest write accepted by a control file.
const MAX_WRITE: usize = 4096;

struct File {
    id: u64,
    name: &'static str,
    perm: u16,
}

const FILES: [File; 5] = [
    File {
        id: SNAPSHOT_ID,
        name: "snapshot",
        perm: 0o644,
    },
    File {
        id: STATUS_ID,
        name: "status",
        perm: 0o444,
    },
    File {
        id: FREEZE_ID,
        name: "freeze",
        perm: 0o600,
    },
    File {
        id: THAW_ID,
        name: "thaw",
        perm: 0o200,
    },
    File {
        id: PROFILE_ID,
        name: "profile",
        perm: 0o644,
    },
];

/// The files of an application's directory in `.quiesce/`, by offset from
/// the directory's id.
/// (`state`, `result`, `status`, `status.json`, `request` are
/// [`crate::quiesce::AppStatus::FILES`]; `freeze`, `thaw` and `ack` act.)
const APP_FILES: [(u64, &str, u16); 8] = [
    (1, "state", 0o444),
    (2, "result", 0o444),
    (3, "status", 0o444),
    (4, "status.json", 0o444),
    (5, "request", 0o444),
    (6, "freeze", 0o200),
    (7, "thaw", 0o200),
    (8, "ack", 0o200),
];

/// What an id of the quiesce tree names.
enum QuiesceNode {
    Dir,
    App(usize),
    AppFile(usize, &'static str, u16),
}

fn quiesce_node(id: u64) -> Option<QuiesceNode> {
    if id == QUIESCE_DIR_ID {
        return Some(QuiesceNode::Dir);
    }
    let rel = id.checked_sub(APP_BASE)?;
    if !Namespace::Control.owns(id) {
        return None;
    }
    let (k, off) = ((rel / APP_STRIDE) as usize, rel % APP_STRIDE);
    if off == 0 {
        return Some(QuiesceNode::App(k));
    }
    APP_FILES
        .iter()
        .find(|(o, _, _)| *o == off)
        .map(|(_, name, perm)| QuiesceNode::AppFile(k, name, *perm))
}

fn app_id(k: usize) -> u64 {
    APP_BASE + k as u64 * APP_STRIDE
}

pub struct Control {
    snapshotter: Arc<Snapshotter>,
    /// The parent of `.control` (the live root's id).
    parent: u64,
    mounted: SystemTime,
}

impl Control {
    pub fn new(snapshotter: Arc<Snapshotter>, parent: u64) -> Control {
        Control {
            snapshotter,
            parent,
            mounted: SystemTime::now(),
        }
    }

    fn file(id: u64) -> Result<&'static File> {
        FILES.iter().find(|f| f.id == id).ok_or(Errno::ENOENT)
    }

    /// The profile's application names, in order (none without a profile).
    fn apps(&self) -> Vec<String> {
        self.snapshotter
            .quiescer()
            .map(|q| q.apps().into_iter().map(|a| a.name).collect())
            .unwrap_or_default()
    }

    fn app_name(&self, k: usize) -> Result<String> {
        self.apps().into_iter().nth(k).ok_or(Errno::ENOENT)
    }

    pub fn getattr(&self, id: u64) -> Result<Attr> {
        let t = time_of(self.mounted);
        if id == CONTROL_DIR_ID {
            return Ok(Attr::synthetic(id, libc::S_IFDIR, 0o755, (0, 0), t));
        }
        if let Some(q) = quiesce_node(id) {
            return match q {
                QuiesceNode::Dir => Ok(Attr::synthetic(id, libc::S_IFDIR, 0o755, (0, 0), t)),
                QuiesceNode::App(k) => {
                    self.app_name(k)?;
                    Ok(Attr::synthetic(id, libc::S_IFDIR, 0o755, (0, 0), t))
                }
                QuiesceNode::AppFile(k, _, perm) => {
                    self.app_name(k)?;
                    let mut a = Attr::synthetic(id, libc::S_IFREG, perm, (0, 0), t);
                    a.size = if perm & 0o444 != 0 { 4096 } else { 0 };
                    a.mtime = time_of(SystemTime::now());
                    Ok(a)
                }
            };
        }
        let f = Self::file(id)?;
        let mut a = Attr::synthetic(id, libc::S_IFREG, f.perm, (0, 0), t);
        // Contents are made when read; a size lets tools that trust it
        // (not `cat`, which reads to the end) read the whole of it.
        a.size = if f.perm & 0o444 != 0 { 4096 } else { 0 };
        a.mtime = time_of(SystemTime::now());
        Ok(a)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        match quiesce_node(parent) {
            Some(QuiesceNode::Dir) => {
                let k = self
                    .apps()
                    .iter()
                    .position(|a| a.as_bytes() == name.as_bytes())
                    .ok_or(Errno::ENOENT)?;
                return self.getattr(app_id(k));
            }
            Some(QuiesceNode::App(k)) => {
                let (off, _, _) = APP_FILES
                    .iter()
                    .find(|(_, n, _)| n.as_bytes() == name.as_bytes())
                    .ok_or(Errno::ENOENT)?;
                return self.getattr(app_id(k) + off);
            }
            Some(QuiesceNode::AppFile(..)) => return Err(Errno::ENOTDIR),
            None => {}
        }
        if parent != CONTROL_DIR_ID {
            return Err(Errno::ENOENT);
        }
        let f = FILES
            .iter()
            .find(|f| f.name.as_bytes() == name.as_bytes())
            .ok_or(Errno::ENOENT)?;
        self.getattr(f.id)
    }

    /// The entries of a directory: (id, type, name), `.` and `..` first.
    pub fn list(&self, id: u64) -> Result<Vec<(u64, u32, String)>> {
        let dots = |parent: u64| {
            vec![
                (id, libc::S_IFDIR, ".".to_string()),
                (parent, libc::S_IFDIR, "..".to_string()),
            ]
        };
        match quiesce_node(id) {
            Some(QuiesceNode::Dir) => {
                let mut v = dots(self.parent);
                v.extend(
                    self.apps()
                        .into_iter()
                        .enumerate()
                        .map(|(k, name)| (app_id(k), libc::S_IFDIR, name)),
                );
                return Ok(v);
            }
            Some(QuiesceNode::App(k)) => {
                self.app_name(k)?;
                let mut v = dots(QUIESCE_DIR_ID);
                v.extend(
                    APP_FILES
                        .iter()
                        .map(|(off, name, _)| (app_id(k) + off, libc::S_IFREG, name.to_string())),
                );
                return Ok(v);
            }
            Some(QuiesceNode::AppFile(..)) => return Err(Errno::ENOTDIR),
            None => {}
        }
        if id != CONTROL_DIR_ID {
            return Err(Errno::ENOTDIR);
        }
        let mut v = dots(self.parent);
        v.extend(
            FILES
                .iter()
                .map(|f| (f.id, libc::S_IFREG, f.name.to_string())),
        );
        Ok(v)
    }

    /// Reading a file of `.quiesce/APP/`.
    fn app_contents(&self, k: usize, file: &str) -> Result<String> {
        let name = self.app_name(k)?;
        let q = self.snapshotter.quiescer().ok_or(Errno::ENOENT)?;
        let st = q.app(&name).ok_or(Errno::ENOENT)?;
        // `request` of an application that does not hand-shake reads empty.
        Ok(render::app_file(&st, file).unwrap_or_default())
    }

    /// A write to a file of `.quiesce/APP/`.
    fn app_write(&self, k: usize, file: &str, data: &[u8]) -> Result<()> {
        let name = self.app_name(k)?;
        let q = self.snapshotter.quiescer().ok_or(Errno::ENOENT)?;
        let word = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?.trim();
        let r = match file {
            "freeze" => q.freeze_app(&name),
            "thaw" => q.thaw_app(&name),
            "ack" => q.ack(&name, (!word.is_empty()).then_some(word)),
            _ => return Err(Errno::EACCES),
        };
        r.map_err(|e| {
            tracing::warn!(".quiesce/{name}/{file}: {e}");
            Errno::from_raw(e.errno())
        })
    }

    /// What reading file `id` gives, made once per open.
    pub fn contents(&self, id: u64) -> Result<Vec<u8>> {
        let s = &self.snapshotter;
        if let Some(q) = quiesce_node(id) {
            return match q {
                QuiesceNode::AppFile(k, name, _) => Ok(self.app_contents(k, name)?.into_bytes()),
                _ => Err(Errno::EISDIR),
            };
        }
        Ok(match id {
            SNAPSHOT_ID => render::snapshot(s.snapshot_status()),
            PROFILE_ID => render::profile(&s.profile_status()),
            STATUS_ID => render::status(&s.mount_status()),
            FREEZE_ID => render::freeze(s.frozen_for(), FREEZE_CAP),
            THAW_ID => String::new(),
            CONTROL_DIR_ID => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENOENT),
        }
        .into_bytes())
    }

    /// A write to file `id`; returns the bytes taken.
    pub fn write(&self, id: u64, data: &[u8]) -> Result<usize> {
        if data.len() > MAX_WRITE {
            return Err(Errno::EINVAL);
        }
        let s = &self.snapshotter;
        if let Some(q) = quiesce_node(id) {
            return match q {
                QuiesceNode::AppFile(k, name, _) => {
                    self.app_write(k, name, data).map(|()| data.len())
                }
                _ => Err(Errno::EISDIR),
            };
        }
        match id {
            PROFILE_ID => {
                let word = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?.trim();
                if word != "reload" {
                    return Err(Errno::EINVAL);
                }
                s.reload_profile().map_err(|r| r.errno)?;
            }
            SNAPSHOT_ID => {
                let name = parse_name(data)?;
                s.take(name.as_deref()).map_err(|r| r.errno)?;
            }
            FREEZE_ID => s.freeze().map_err(|r| r.errno)?,
            THAW_ID => {
                s.thaw();
            }
            STATUS_ID => return Err(Errno::EACCES),
            CONTROL_DIR_ID => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENOENT),
        }
        Ok(data.len())
    }
}

/// The name written to `snapshot`: one line; an empty one (or only
/// blanks) asks for an automatic name. Anything that is not one line of
/// UTF-8 is `EINVAL`.
fn parse_name(data: &[u8]) -> Result<Option<String>> {
    let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains('\n') {
        return Err(Errno::EINVAL);
    }
    let name = line.trim();
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_written_to_the_snapshot_file() {
        assert_eq!(
            parse_name(b"nightly\n").unwrap().as_deref(),
            Some("nightly")
        );
        assert_eq!(parse_name(b"nightly").unwrap().as_deref(), Some("nightly"));
        assert_eq!(parse_name(b"  x  \r\n").unwrap().as_deref(), Some("x"));
        assert_eq!(parse_name(b"\n").unwrap(), None);
        assert_eq!(parse_name(b"").unwrap(), None);
        assert_eq!(parse_name(b"a\nb\n"), Err(Errno::EINVAL));
        assert_eq!(parse_name(b"\xff\n"), Err(Errno::EINVAL));
    }
}
