//! The control files and `.quiesce/` as a [`Tree`].
//!
//! A file's contents are made when it is opened, so one `cat` reads one
//! consistent text; writes reach [`Control::write`] as written (direct
//! I/O), and the adapter runs them on a thread of their own ([`Class::Slow`]):
//! taking a snapshot quiesces applications, which may use the mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use super::Control;
use crate::vfs::{
    AddEntry, Attr, AttrOut, Class, Ctx, DirEntry, Entry, Errno, NodeId, Opened, Result, SetAttr,
    Statfs, Tree, WriteFlags, Xattr,
};

/// Lifetime of what the kernel learns of the control files (their
/// attributes change with every snapshot).
pub const CONTROL_TTL: Duration = Duration::from_secs(1);

pub struct ControlTree {
    control: Control,
    /// Contents of open files, made at open, by handle.
    open: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    next_fh: AtomicU64,
}

impl ControlTree {
    pub fn new(control: Control) -> ControlTree {
        ControlTree {
            control,
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    fn out(&self, a: Result<Attr>) -> Result<AttrOut> {
        a.map(|attr| AttrOut {
            attr,
            ttl: CONTROL_TTL,
        })
    }
}

#[allow(unused_variables)]
impl Tree for ControlTree {
    /// The control files are not a filesystem one may change: only their
    /// writes (and the truncate of `echo x >`) mean something.
    fn refusal(&self, _id: NodeId) -> Errno {
        Errno::EPERM
    }

    fn class(&self, _id: NodeId) -> Class {
        Class::Slow
    }

    fn lookup(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<Entry> {
        self.control.lookup(parent.0, name).map(|attr| Entry {
            attr,
            ttl: CONTROL_TTL,
        })
    }

    fn forget(&self, _id: NodeId, _n: u64) {}

    fn getattr(&self, id: NodeId, _fh: Option<u64>) -> Result<AttrOut> {
        self.out(self.control.getattr(id.0))
    }

    /// `echo x > .control/snapshot` truncates first: nothing to truncate.
    fn setattr(&self, ctx: &Ctx, id: NodeId, fh: Option<u64>, set: &SetAttr) -> Result<AttrOut> {
        if set.mode.is_some() || set.uid.is_some() || set.gid.is_some() {
            return Err(Errno::EPERM);
        }
        self.getattr(id, fh)
    }

    /// Direct I/O: every open reads what is true now, and each write
    /// reaches the daemon as written.
    fn open(&self, _ctx: &Ctx, id: NodeId, flags: i32) -> Result<Opened> {
        let contents = if flags & libc::O_ACCMODE == libc::O_WRONLY {
            Vec::new()
        } else {
            self.control.contents(id.0)?
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, Arc::new(contents));
        Ok(Opened {
            fh,
            direct_io: true,
            ..Opened::default()
        })
    }

    fn read(&self, id: NodeId, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Some(c) = self.open.lock().get(&fh).cloned() else {
            tracing::warn!("read of control file {id} with unknown handle {fh}");
            return Err(Errno::EBADF);
        };
        let start = (offset as usize).min(c.len());
        let end = (start + buf.len()).min(c.len());
        buf[..end - start].copy_from_slice(&c[start..end]);
        Ok(end - start)
    }

    fn write(
        &self,
        ctx: &Ctx,
        id: NodeId,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<usize> {
        self.control.write(id.0, data)
    }

    fn release(&self, _id: NodeId, fh: u64) {
        self.open.lock().remove(&fh);
    }

    fn opendir(&self, id: NodeId) -> Result<Opened> {
        self.control.list(id.0).map(|_| Opened::plain(0))
    }

    fn readdir(
        &self,
        id: NodeId,
        _fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> Result<()> {
        let entries = self.control.list(id.0)?;
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            let attr = if plus && name != "." && name != ".." {
                match self.control.getattr(ino) {
                    Ok(a) => Some(a),
                    Err(_) => continue,
                }
            } else {
                None
            };
            let e = DirEntry {
                name: OsStr::new(&name),
                ino,
                kind,
                next: i as u64 + 1,
                attr,
                ttl: CONTROL_TTL,
            };
            if !add(&e) {
                break;
            }
        }
        Ok(())
    }

    /// Answered for the whole mount by the live tree (see [`crate::vfs::mux`]).
    fn statfs(&self, _id: NodeId) -> Result<Statfs> {
        Err(Errno::ENOSYS)
    }

    fn getxattr(&self, _id: NodeId, _name: &OsStr, _size: u32) -> Result<Xattr> {
        Err(Errno::ENODATA)
    }

    fn listxattr(&self, _id: NodeId, _size: u32) -> Result<Xattr> {
        Ok(Xattr::Size(0))
    }
}
