//! Telling the [`Changes`] listener before each change (see
//! [`super::changes`]): the objects a change touches, as [`Obj`]s.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::attr::Attr;
use super::changes::{Changes, Obj};
use super::ids::{InodeKey, ROOT_ID};
use super::nodes::Node;
use super::Live;
use crate::os::{fd, Errno, Follow, Result};

/// Longest chain of directories followed to the root before giving up.
const MAX_DEPTH: usize = 4096;

/// An object found by name, not known to the node table: the victim of an
/// unlink or of a rename that replaces it.
pub(super) struct Found {
    fd: FoundFd,
    st: libc::stat,
}

/// A descriptor of a [`Found`] object: the node's own when the kernel
/// knows the inode and the node holds it by a descriptor (no system call
/// to find it), else one opened for the change.
enum FoundFd {
    Node(Arc<Node>),
    Opened(OwnedFd),
}

impl Found {
    pub(super) fn key(&self) -> InodeKey {
        (self.st.st_dev, self.st.st_ino)
    }

    fn is_dir(&self) -> bool {
        self.st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    fn borrow_fd(&self) -> Result<BorrowedFd<'_>> {
        match &self.fd {
            FoundFd::Node(node) => node.pinned_fd().ok_or(Errno::ESTALE),
            FoundFd::Opened(fd) => Ok(fd.as_fd()),
        }
    }
}

impl Live {
    pub(super) fn changes(&self) -> &dyn Changes {
        &*self.changes
    }

    /// The keys of the directories above `node`, nearest first, root last;
    /// `None` if a link is unknown, or `node` is a file with several names.
    /// `nlink`: the link count, when the caller has just read it (else it
    /// is read here, for a file).
    fn lineage(&self, node: &Node, nlink: Option<u64>) -> Option<Vec<InodeKey>> {
        if node.id == ROOT_ID {
            return Some(Vec::new());
        }
        if !node.is_dir() {
            let nlink = match nlink {
                Some(n) => n,
                None => fd::fstat(node.fd().ok()?.as_fd()).ok()?.st_nlink as u64,
            };
            if nlink > 1 {
                return None;
            }
        }
        let mut out = Vec::new();
        let mut id = node.parent();
        while out.len() < MAX_DEPTH {
            if id == 0 {
                return None;
            }
            let dir = self.nodes.get(id).ok()?;
            out.push(dir.key);
            if id == ROOT_ID {
                return Some(out);
            }
            id = dir.parent();
        }
        None
    }

    /// Calls `f` with `node` as an [`Obj`].
    pub(super) fn with_obj<T>(&self, node: &Node, f: impl FnOnce(&Obj) -> Result<T>) -> Result<T> {
        self.with_obj_nlink(node, None, f)
    }

    /// [`Self::with_obj`] for a node whose link count was just read.
    fn with_obj_nlink<T>(
        &self,
        node: &Node,
        nlink: Option<u64>,
        f: impl FnOnce(&Obj) -> Result<T>,
    ) -> Result<T> {
        let fd = node.fd()?;
        let lineage = || self.lineage(node, nlink);
        f(&Obj {
            key: node.key,
            kind: node.kind,
            fd: fd.as_fd(),
            lineage: &lineage,
        })
    }

    /// The attributes the kernel gets for stat `st` of node `id`: the link
    /// count without the listener's own links. It may be 0, as natively: a
    /// file still open whose last name is gone (kept alive by the diff
    /// area's link or not) has no links.
    pub(super) fn attr(&self, mut st: libc::stat, id: u64) -> Attr {
        if self.changes.active() && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            let hidden = self.changes.hidden_links((st.st_dev, st.st_ino));
            st.st_nlink = st.st_nlink.saturating_sub(hidden as libc::nlink_t);
        }
        Attr::new(st, id)
    }

    /// Before a change to `node`'s attributes or xattrs.
    pub(super) fn before_attrs(&self, node: &Node) -> Result<()> {
        if !self.changes.active() {
            return Ok(());
        }
        self.with_obj(node, |o| self.changes.attrs(o))
    }

    /// Before a write of `[off, off + len)` to regular file `node`.
    pub(super) fn before_data(&self, node: &Node, off: u64, len: u64) -> Result<()> {
        if !self.changes.active() {
            return Ok(());
        }
        self.with_obj(node, |o| self.changes.data(o, off, len))
    }

    /// Before regular file `node` is truncated or extended to `size`.
    pub(super) fn before_truncate(&self, node: &Node, size: u64) -> Result<()> {
        if !self.changes.active() {
            return Ok(());
        }
        self.with_obj(node, |o| self.changes.truncate(o, size))
    }

    /// Before the entries of directory `dir` change.
    pub(super) fn before_entries(&self, dir: &Node) -> Result<()> {
        if !self.changes.active() {
            return Ok(());
        }
        self.with_obj(dir, |o| self.changes.entries(o))
    }

    /// The object named `name` in `dir`, if there is one and anyone wants
    /// to know (the victim of an unlink or a replacing rename).
    pub(super) fn find(&self, dir: &Node, name: &CStr) -> Result<Option<Found>> {
        if !self.changes.active() {
            return Ok(None);
        }
        // The kernel has usually looked the name up before changing it:
        // its node then stands for it, and one stat is all it costs. The
        // name cannot change meanwhile through the mount (the kernel holds
        // the directory's lock for the change), as with the descriptor
        // opened otherwise.
        let st = match fd::fstatat(dir.fd()?.as_fd(), name, Follow::No) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = (st.st_dev, st.st_ino);
        if let Ok(node) = self.nodes.get(self.nodes.id_of(key)) {
            // Held by a descriptor, the node is that very inode.
            if node.key == key && node.is_fd_pinned() {
                return Ok(Some(Found {
                    fd: FoundFd::Node(node),
                    st,
                }));
            }
        }
        let fd = match fd::openat(dir.fd()?.as_fd(), name, Follow::No, libc::O_PATH, 0) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        // What the descriptor reaches, should the name have changed since.
        let st = fd::fstat(fd.as_fd())?;
        Ok(Some(Found {
            fd: FoundFd::Opened(fd),
            st,
        }))
    }

    /// The node the kernel knows for `found`, if any.
    fn known(&self, found: &Found) -> Option<Arc<Node>> {
        if let FoundFd::Node(node) = &found.fd {
            return Some(node.clone());
        }
        let key = found.key();
        let node = self.nodes.get(self.nodes.id_of(key)).ok()?;
        (node.key == key).then_some(node)
    }

    /// `found` (named in `dir`) as an [`Obj`] for `f`. A node the kernel
    /// knows follows its parent; one it never looked up has just this one.
    fn with_found<T>(
        &self,
        dir: &Node,
        found: &Found,
        f: impl FnOnce(&Obj) -> Result<T>,
    ) -> Result<T> {
        let lineage = || match self.known(found) {
            Some(node) => self.lineage(&node, Some(found.st.st_nlink)),
            None if found.is_dir() || found.st.st_nlink == 1 => {
                let mut l = vec![dir.key];
                l.extend(self.lineage(dir, None)?);
                Some(l)
            }
            None => None,
        };
        f(&Obj {
            key: found.key(),
            kind: found.st.st_mode & libc::S_IFMT,
            fd: found.borrow_fd()?,
            lineage: &lineage,
        })
    }

    /// Before `victim`, named `name` in `dir`, loses that name.
    pub(super) fn before_unlinking(&self, dir: &Node, name: &CStr, victim: &Found) -> Result<()> {
        self.with_found(dir, victim, |v| {
            self.with_obj(dir, |d| self.changes.unlinking(d, name, v))
        })
    }

    /// Before the attributes of `found` (named in `dir`) change: it is moved.
    pub(super) fn before_attrs_found(&self, dir: &Node, found: &Found) -> Result<()> {
        self.with_found(dir, found, |o| self.changes.attrs(o))
    }

    /// `found` now lives in directory `dir`.
    pub(super) fn moved(&self, found: &Found, dir: u64) {
        if let Some(node) = self.known(found) {
            node.set_parent(dir);
        }
    }

    /// `found` lost a name: if others remain, which directory holds it is
    /// not known any more.
    pub(super) fn name_removed(&self, found: &Found) {
        if let Some(node) = self.known(found) {
            if !found.is_dir() {
                node.set_parent(0);
            }
        }
    }

    /// After `node` was created in `dir`.
    /// `nlink`: its link count as just read.
    pub(super) fn after_create(&self, dir: &Node, node: &Node, nlink: u64) {
        node.set_parent(dir.id);
        if self.changes.active() {
            let _ = self.with_obj_nlink(node, Some(nlink), |o| {
                self.changes.created(o);
                Ok(())
            });
        }
    }
}
