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
//! out. Ids live in namespace [`NAMESPACE_CONTROL`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;

use crate::live::ids::NAMESPACE_SHIFT;
use crate::snapshot::requester::Snapshotter;
use crate::snapview::catalog::time_of;
use crate::snapview::Attr;

pub type Result<T> = std::result::Result<T, Errno>;

/// Namespace of the control tree's ids.
pub const NAMESPACE_CONTROL: u8 = 1;
const NS: u64 = (NAMESPACE_CONTROL as u64) << NAMESPACE_SHIFT;

pub const CONTROL_DIR_ID: u64 = NS | 1;
const SNAPSHOT_ID: u64 = NS | 2;
const STATUS_ID: u64 = NS | 3;
const FREEZE_ID: u64 = NS | 4;
const THAW_ID: u64 = NS | 5;

/// Longest write accepted by a control file.
const MAX_WRITE: usize = 4096;

struct File {
    id: u64,
    name: &'static str,
    perm: u16,
}

const FILES: [File; 4] = [
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
];

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

    pub fn owns(id: u64) -> bool {
        crate::live::ids::namespace(id) == NAMESPACE_CONTROL
    }

    fn file(id: u64) -> Result<&'static File> {
        FILES.iter().find(|f| f.id == id).ok_or(Errno::ENOENT)
    }

    pub fn getattr(&self, id: u64) -> Result<Attr> {
        let t = time_of(self.mounted);
        if id == CONTROL_DIR_ID {
            return Ok(Attr::synthetic(id, libc::S_IFDIR, 0o755, (0, 0), t));
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
        if parent != CONTROL_DIR_ID {
            return Err(Errno::ENOENT);
        }
        let f = FILES
            .iter()
            .find(|f| f.name.as_bytes() == name.as_bytes())
            .ok_or(Errno::ENOENT)?;
        self.getattr(f.id)
    }

    /// The entries of `.control`: (id, type, name), `.` and `..` first.
    pub fn list(&self, id: u64) -> Result<Vec<(u64, u32, &'static str)>> {
        if id != CONTROL_DIR_ID {
            return Err(Errno::ENOTDIR);
        }
        let mut v = vec![
            (CONTROL_DIR_ID, libc::S_IFDIR, "."),
            (self.parent, libc::S_IFDIR, ".."),
        ];
        v.extend(FILES.iter().map(|f| (f.id, libc::S_IFREG, f.name)));
        Ok(v)
    }

    /// What reading file `id` gives, made once per open.
    pub fn contents(&self, id: u64) -> Result<Vec<u8>> {
        let s = &self.snapshotter;
        Ok(match id {
            SNAPSHOT_ID => s.snapshot_text(),
            STATUS_ID => s.status_text(),
            FREEZE_ID => s.freeze_text(),
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
        match id {
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
        assert_eq!(parse_name(b"nightly\n").unwrap().as_deref(), Some("nightly"));
        assert_eq!(parse_name(b"nightly").unwrap().as_deref(), Some("nightly"));
        assert_eq!(parse_name(b"  x  \r\n").unwrap().as_deref(), Some("x"));
        assert_eq!(parse_name(b"\n").unwrap(), None);
        assert_eq!(parse_name(b"").unwrap(), None);
        assert_eq!(parse_name(b"a\nb\n"), Err(Errno::EINVAL));
        assert_eq!(parse_name(b"\xff\n"), Err(Errno::EINVAL));
    }
}
