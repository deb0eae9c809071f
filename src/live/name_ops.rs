//! Operations on names: lookup, creation, removal, rename, link, listing.

use parking_lot::Mutex;
use std::ffi::{CStr, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::attr::{Attr, Entry};
use super::caller::{set_thread_umask, Caller};
use super::handles::{DirHandle, FileHandle};
use super::nodes::Node;
use super::Live;
use crate::os::dir::{self, is_dot_or_dotdot, DirStream};
use crate::os::io::{fsync, Sync};
use crate::os::{attr, fd, with_name, Errno, Follow, Result};

/// One entry of a directory listing, as handed to the adapter.
#[derive(Debug)]
pub struct ListedEntry<'a> {
    pub name: &'a OsStr,
    /// Offset to resume the listing after this entry.
    pub next_offset: i64,
    /// Node id (`st_ino` as users see it).
    pub ino: u64,
    /// `S_IF*` type bits.
    pub kind: u32,
    /// With `plus`, the entry's attributes; its id then carries one lookup
    /// (except for `.` and `..`, which the kernel never links).
    pub attr: Option<Attr>,
}

impl Live {
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        if self.is_hidden(parent, name) {
            return Err(Errno::ENOENT);
        }
        let dir = self.dir_node(parent)?;
        with_name(name, |c| self.lookup_at(&dir, c))
    }

    /// Looks `name` up in `dir` and takes one lookup on its node.
    fn lookup_at(&self, dir: &Node, name: &CStr) -> Result<Entry> {
        let st = fd::fstatat(dir.fd()?.as_fd(), name, Follow::No)?;
        // A known inode is pinned by its node, so the key names the same inode.
        if let Some(node) = self.nodes.acquire_existing((st.st_dev, st.st_ino)) {
            node.set_parent(dir.id);
            return Ok(Entry {
                attr: self.attr(st, node.id),
            });
        }
        let fd = fd::openat(dir.fd()?.as_fd(), name, Follow::No, libc::O_PATH, 0)?;
        let st = fd::fstat(fd.as_fd())?;
        let node = self.nodes.acquire(fd, &st);
        node.set_parent(dir.id);
        Ok(Entry {
            attr: self.attr(st, node.id),
        })
    }

    /// Takes one lookup on the object just created as `name` in `dir`.
    /// Unlike [`Self::lookup_at`] it does not stat the name first to find a
    /// node the kernel knows: a new inode has none (and should the name
    /// have existed, `acquire` still finds its node by the key).
    fn lookup_created(&self, dir: &Node, name: &CStr) -> Result<(Entry, Arc<Node>)> {
        let fd = fd::openat(dir.fd()?.as_fd(), name, Follow::No, libc::O_PATH, 0)?;
        let st = fd::fstat(fd.as_fd())?;
        let node = self.nodes.acquire(fd, &st);
        node.set_parent(dir.id);
        let entry = Entry {
            attr: self.attr(st, node.id),
        };
        Ok((entry, node))
    }

    /// Creates `name` in `parent` with `make` as the caller would (see
    /// [`super::caller`]), and returns its entry.
    fn create_entry(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        umask: u32,
        make: impl FnOnce(&Node, &CStr) -> Result<()>,
    ) -> Result<Entry> {
        if self.is_hidden(parent, name) {
            return Err(Errno::EPERM);
        }
        let dir = self.dir_node(parent)?;
        with_name(name, |c| {
            set_thread_umask(umask);
            self.before_entries(&dir)?;
            make(&dir, c)?;
            let (mut entry, node) = self.lookup_created(&dir, c)?;
            self.after_create(&dir, &node, entry.attr.st.st_nlink);
            if self.give_to_caller(caller, &dir, &node)? {
                entry.attr = self.attr(fd::fstat(node.fd()?.as_fd())?, node.id);
            }
            Ok(entry)
        })
    }

    /// Makes a node the daemon just created belong to `caller`; returns
    /// whether its owner changed.
    fn give_to_caller(&self, caller: &Caller, dir: &Node, node: &Node) -> Result<bool> {
        if caller.uid == 0 && caller.gid == 0 {
            return Ok(false);
        }
        let dir_st = fd::fstat(dir.fd()?.as_fd())?;
        let gid = if dir_st.st_mode & libc::S_ISGID != 0 {
            u32::MAX // keep the group the setgid directory gave it
        } else {
            caller.gid
        };
        if let Err(e) = attr::fchown(node.fd()?.as_fd(), caller.uid, gid) {
            tracing::warn!(
                "cannot give new inode {} to uid {}: {e}",
                node.id,
                caller.uid
            );
            return Ok(false);
        }
        Ok(true)
    }

    pub fn mknod(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        dev: libc::dev_t,
    ) -> Result<Entry> {
        let kind = mode & libc::S_IFMT;
        if (kind == libc::S_IFCHR || kind == libc::S_IFBLK) && !self.opts.allow_devices {
            return Err(Errno::EPERM);
        }
        self.create_entry(caller, parent, name, umask, |dir, c| {
            dir::mknodat(dir.fd()?.as_fd(), c, mode, dev)
        })
    }

    pub fn mkdir(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<Entry> {
        self.create_entry(caller, parent, name, umask, |dir, c| {
            dir::mkdirat(dir.fd()?.as_fd(), c, mode & 0o7777)
        })
    }

    pub fn symlink(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<Entry> {
        let target = std::ffi::CString::new(target.as_bytes()).map_err(|_| Errno::EINVAL)?;
        self.create_entry(caller, parent, name, 0, |dir, c| {
            dir::symlinkat(&target, dir.fd()?.as_fd(), c)
        })
    }

    /// Creates and opens a regular file; returns its entry and file handle.
    pub fn create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Entry, u64)> {
        let open_flags = self.backing_open_flags(flags);
        let mut file = None;
        let entry = self.create_entry(caller, parent, name, umask, |dir, c| {
            let flags = open_flags | libc::O_CREAT | (flags & libc::O_EXCL);
            file = Some(fd::openat(
                dir.fd()?.as_fd(),
                c,
                Follow::No,
                flags,
                mode & 0o7777,
            )?);
            Ok(())
        })?;
        let file = file.expect("create_entry ran the closure");
        let node = self.nodes.get(entry.id())?;
        let fh = self.add_file(FileHandle::new(node, open_flags, file));
        Ok((entry, fh))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, 0)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, libc::AT_REMOVEDIR)
    }

    fn remove(&self, parent: u64, name: &OsStr, flags: i32) -> Result<()> {
        if self.is_hidden(parent, name) {
            return Err(Errno::ENOENT);
        }
        let dir = self.dir_node(parent)?;
        with_name(name, |c| {
            self.before_entries(&dir)?;
            let victim = self.find(&dir, c)?;
            if let Some(v) = &victim {
                self.before_unlinking(&dir, c, v)?;
            }
            dir::unlinkat(dir.fd()?.as_fd(), c, flags)?;
            if let Some(v) = victim {
                self.name_removed(&v);
            }
            Ok(())
        })
    }

    /// rename(2) with renameat2 flags (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        if self.is_hidden(parent, name) {
            return Err(Errno::ENOENT);
        }
        if self.is_hidden(new_parent, new_name) {
            return Err(Errno::EPERM);
        }
        let old_dir = self.dir_node(parent)?;
        let new_dir = self.dir_node(new_parent)?;
        with_name(name, |old| {
            with_name(new_name, |new| {
                self.before_entries(&old_dir)?;
                if new_dir.id != old_dir.id {
                    self.before_entries(&new_dir)?;
                }
                let moved = self.find(&old_dir, old)?;
                let victim = self.find(&new_dir, new)?;
                let victim = victim.filter(|v| moved.as_ref().map(|m| m.key()) != Some(v.key()));
                if let Some(m) = &moved {
                    self.before_attrs_found(&old_dir, m)?;
                }
                if let Some(v) = &victim {
                    if flags & libc::RENAME_EXCHANGE != 0 {
                        self.before_attrs_found(&new_dir, v)?;
                    } else if flags & libc::RENAME_NOREPLACE == 0 {
                        self.before_unlinking(&new_dir, new, v)?;
                    }
                }
                dir::renameat2(
                    old_dir.fd()?.as_fd(),
                    old,
                    new_dir.fd()?.as_fd(),
                    new,
                    flags,
                    "live.rename",
                )?;
                if let Some(m) = &moved {
                    self.moved(m, new_dir.id);
                }
                if let Some(v) = &victim {
                    if flags & libc::RENAME_EXCHANGE != 0 {
                        self.moved(v, old_dir.id);
                    } else {
                        self.name_removed(v);
                    }
                }
                Ok(())
            })
        })
    }

    pub fn link(&self, id: u64, new_parent: u64, new_name: &OsStr) -> Result<Entry> {
        if self.is_hidden(new_parent, new_name) {
            return Err(Errno::EPERM);
        }
        let node = self.node(id)?;
        let dir = self.dir_node(new_parent)?;
        with_name(new_name, |c| {
            self.before_entries(&dir)?;
            self.before_attrs(&node)?;
            dir::link_fd(node.fd()?.as_fd(), dir.fd()?.as_fd(), c, "live.link")
        })?;
        // With two names, which directory holds it is no longer one answer.
        node.set_parent(0);

        let node = self.nodes.acquire_id(node.id).ok_or(Errno::ESTALE)?;
        Ok(Entry {
            attr: self.attr(fd::fstat(node.fd()?.as_fd())?, node.id),
        })
    }

    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        if node.kind != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        dir::readlink_fd(node.fd()?.as_fd())
    }

    pub fn opendir(&self, id: u64) -> Result<u64> {
        let node = self.dir_node(id)?;
        let fd = self.reopen(&node, libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(self.dirs.insert(DirHandle {
            node,
            stream: Mutex::new(DirStream::new(fd)),
        }))
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }

    pub fn fsyncdir(&self, fh: u64, datasync: bool) -> Result<()> {
        let dir = self.dirs.get(fh)?;
        let stream = dir.stream.lock();
        fsync(stream.fd(), Sync::from_datasync(datasync), "live.fsync")
    }

    /// Lists directory `fh` from `offset`, calling `add` for each entry until
    /// it returns `false` (reply full). With `plus`, entries come with their
    /// attributes and a lookup; an entry `add` refuses gives its lookup back.
    pub fn readdir(
        &self,
        fh: u64,
        offset: i64,
        plus: bool,
        mut add: impl FnMut(&ListedEntry<'_>) -> bool,
    ) -> Result<()> {
        let handle = self.dirs.get(fh)?;
        let dir: &Arc<Node> = &handle.node;
        let mut stream = handle.stream.lock();
        stream.list(offset, |raw| {
            if self.is_hidden(dir.id, raw.name) {
                return Ok(true);
            }
            let dot = is_dot_or_dotdot(raw.name);
            let mut kind = u32::from(raw.d_type) << 12;
            let mut ino = if raw.name.as_bytes() == b"." {
                dir.id
            } else {
                self.nodes.id_of((dir.key.0, raw.ino))
            };
            let mut attr = None;
            if plus && !dot {
                match with_name(raw.name, |c| self.lookup_at(dir, c)) {
                    Ok(entry) => {
                        ino = entry.id();
                        kind = entry.attr.kind();
                        attr = Some(entry.attr);
                    }
                    // Removed since the backing directory was read: not listed.
                    Err(Errno::ENOENT) => return Ok(true),
                    Err(e) => return Err(e),
                }
            } else if kind == 0 && !dot {
                // DT_UNKNOWN: the backing filesystem does not store types.
                let st = with_name(raw.name, |c| fd::fstatat(dir.fd()?.as_fd(), c, Follow::No));
                match st {
                    Ok(st) => kind = st.st_mode & libc::S_IFMT,
                    Err(Errno::ENOENT) => return Ok(true),
                    Err(e) => return Err(e),
                }
            } else if dot && plus {
                let st = fd::fstat(dir.fd()?.as_fd())?;
                attr = Some(self.attr(st, ino));
            }
            let listed = ListedEntry {
                name: raw.name,
                next_offset: raw.next_off,
                ino,
                kind,
                attr,
            };
            let taken = add(&listed);
            if !taken && plus && !dot {
                self.nodes.forget(ino, 1);
            }
            Ok(taken)
        })
    }
}
