//! Operations on inodes and open files: attributes, open, I/O, sync, space.

use std::os::fd::{AsFd, OwnedFd};

use super::attr::{timespec, Attr, SetAttr};
use super::handles::FileHandle;
use super::nodes::Node;
use super::Live;
use crate::os::io::{self as oio, Sync};
use crate::os::xattr::XattrOf;
use crate::os::{attr, errno_of, fd, Errno, Result};

impl Live {
    /// The flags the backing file is opened with for open flags `flags` from
    /// the kernel.
    ///
    /// - `O_CREAT`/`O_EXCL`/`O_NOCTTY` belong to the create step, done already;
    /// - `O_NOFOLLOW` would make the reopen through `/proc/self/fd/N` (a
    ///   symlink) fail, and the kernel resolved the name already;
    /// - `O_DIRECT` is dropped: FUSE hands us write data at unaligned buffer
    ///   offsets, which a direct backing descriptor refuses; the kernel still
    ///   bypasses its own page cache for the caller's `O_DIRECT` descriptor;
    /// - with the writeback cache, the kernel reads pages of files opened
    ///   write-only and positions appends itself.
    pub(super) fn backing_open_flags(&self, flags: i32) -> i32 {
        let mut f = flags
            & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_DIRECT);
        if self.opts.writeback {
            if f & libc::O_ACCMODE == libc::O_WRONLY {
                f = (f & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            f &= !libc::O_APPEND;
        }
        f
    }

    pub fn open(&self, id: u64, flags: i32) -> Result<u64> {
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        if !node.is_reg() {
            // The kernel opens FIFOs and devices itself; nothing else is openable.
            return Err(Errno::ENXIO);
        }
        let flags = self.backing_open_flags(flags);
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.before_truncate(&node, 0)?;
        }
        let file = self.reopen(&node, flags)?;
        Ok(self.add_file(FileHandle::new(node, flags, file)))
    }

    /// A descriptor of open file `fh`'s inode to register as its kernel
    /// passthrough backing file, and whether it is open for writing.
    ///
    /// Every open of an inode in passthrough mode shares one backing file,
    /// writers included, so it is opened read-write when possible (not when
    /// the file is being executed from the source, or is immutable, or the
    /// backing filesystem is read-only). The price: while the mount holds it,
    /// executing that file directly from the source (not through the mount)
    /// fails with ETXTBSY.
    pub fn passthrough_file(&self, fh: u64) -> Result<(OwnedFd, bool)> {
        let file = self.files.get(fh)?;
        if let Ok(fd) = self.reopen(&file.node, libc::O_RDWR) {
            return Ok((fd, true));
        }
        let fd = file.fd().try_clone_to_owned().map_err(|e| errno_of(&e))?;
        Ok((fd, file.writable()))
    }

    /// Whether the file has privileges a write by an unprivileged process
    /// must remove: set-user-id, set-group-id, or file capabilities.
    pub fn has_privs(&self, id: u64) -> Result<bool> {
        let node = self.node(id)?;
        if !node.is_reg() {
            return Ok(false);
        }
        let fd = node.fd()?;
        let st = fd::fstat(fd.as_fd())?;
        if st.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
            return Ok(true);
        }
        Ok(XattrOf::ProcFd(fd.as_fd())
            .get(c"security.capability", &mut [])
            .is_ok())
    }

    /// Removes set-user-id, set-group-id (if group-executable) and file
    /// capabilities, as the kernel does natively when a process without
    /// CAP_FSETID writes or truncates a file. The mount hands this job to
    /// the daemon (`FUSE_HANDLE_KILLPRIV_V2`, which spares a getxattr round
    /// trip on every write), and the daemon's own writes, as root, would not.
    ///
    /// The kernel asks it of every write by such a process; a file found
    /// without privileges is not looked at again until its mode, owner or
    /// xattrs change through the mount (a change made to the source
    /// directly, behind the mount, is not seen).
    pub fn kill_privs(&self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        if !node.is_reg() || node.has_no_privs() {
            return Ok(());
        }
        let gen = node.privs_gen();
        let fd = node.fd()?;
        let st = fd::fstat(fd.as_fd())?;
        let mode = st.st_mode & 0o7777;
        let mut kill = libc::S_ISUID;
        if mode & libc::S_IXGRP != 0 {
            kill |= libc::S_ISGID;
        }
        let xattrs = XattrOf::ProcFd(fd.as_fd());
        let has_caps = xattrs.get(c"security.capability", &mut []).is_ok();
        if mode & kill != 0 || has_caps {
            self.before_attrs(&node)?;
        }
        if mode & kill != 0 {
            attr::chmod_inode(fd.as_fd(), mode & !kill)?;
        }
        if has_caps {
            match xattrs.remove(c"security.capability") {
                Ok(()) | Err(Errno::ENODATA) | Err(Errno::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        // A set-group-id bit without group execute stays (mandatory
        // locking), and is nothing to kill at the next write either.
        node.found_no_privs(gen);
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `off`; short only at end of file.
    pub fn read(&self, fh: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        oio::read_full_at(self.files.get(fh)?.fd(), buf, off)
    }

    /// Writes all of `data` at `off` (an `O_APPEND` file appends instead);
    /// returns the bytes written, fewer only if an error cut the write short.
    /// Writes `data` at `off`. A short count means the rest failed, as for
    /// write(2), except for pages written back from the kernel's cache
    /// (`from_cache`): nobody retries their rest, so the kernel must get
    /// the error (it reports it at fsync and close), not a count it ignores.
    pub fn write(&self, fh: u64, off: u64, data: &[u8], from_cache: bool) -> Result<usize> {
        let file = self.files.get(fh)?;
        if self.changes().active() {
            let at = if file.flags & libc::O_APPEND != 0 {
                fd::fstat(file.fd())?.st_size as u64
            } else {
                off
            };
            self.before_data(&file.node, at, data.len() as u64)?;
        }
        let keep = if from_cache {
            self.mtime_to_keep(file.fd())?
        } else {
            None
        };
        let mut done = 0;
        while done < data.len() {
            match oio::pwrite(file.fd(), &data[done..], off + done as u64, "live.write") {
                Ok(0) if from_cache => return Err(Errno::EIO),
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if done == 0 || from_cache => return Err(e),
                Err(_) => break,
            }
        }
        self.keep_mtime(file.fd(), keep);
        Ok(done)
    }

    /// With the kernel's writeback cache the kernel keeps a file's mtime
    /// itself, and sends it in a SETATTR when it writes the inode back
    /// (at fsync, at close, and so before a snapshot's fence returns). A
    /// data operation of the daemon must then leave the source's mtime as
    /// it was: otherwise the source, and so a snapshot, would show the
    /// time the daemon wrote, not the one `stat` shows through the mount
    /// (the kernel changes its own only if a clock tick passed). The mtime
    /// to put back after the operation, read before it.
    fn mtime_to_keep(&self, fd: std::os::fd::BorrowedFd) -> Result<Option<libc::timespec>> {
        if !self.opts.writeback {
            return Ok(None);
        }
        let st = fd::fstat(fd)?;
        Ok(Some(libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        }))
    }

    /// Puts back the mtime [`Self::mtime_to_keep`] read. The data is
    /// written whatever happens here, so a failure is logged, not returned.
    fn keep_mtime(&self, fd: std::os::fd::BorrowedFd, keep: Option<libc::timespec>) {
        let Some(mtime) = keep else { return };
        if let Err(e) = attr::futimens(fd, &[crate::os::time::OMIT, mtime]) {
            tracing::warn!("cannot keep the mtime the kernel shows after a write-back: {e}");
        }
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        oio::fsync(
            self.files.get(fh)?.fd(),
            Sync::from_datasync(datasync),
            "live.fsync",
        )
    }

    pub fn fallocate(&self, fh: u64, mode: i32, off: u64, len: u64) -> Result<()> {
        let file = self.files.get(fh)?;
        // Collapsing or inserting a range moves everything after it.
        let shifts = mode & (libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE) != 0;
        let len_changed = if shifts { u64::MAX - off } else { len };
        self.before_data(&file.node, off, len_changed)?;
        let keep = self.mtime_to_keep(file.fd())?;
        oio::fallocate(file.fd(), mode, off, len)?;
        self.keep_mtime(file.fd(), keep);
        Ok(())
    }

    /// lseek(2) for `SEEK_DATA`/`SEEK_HOLE` (and the plain whences).
    ///
    /// With the writeback cache the kernel may hold data not yet written
    /// back, where the source has a hole, and it asks without writing it
    /// back first: the source's answer could hide data. `ENOSYS` makes the
    /// kernel answer for the mount from then on, as for a filesystem that
    /// knows no holes (data up to its size, then the end of the file).
    pub fn lseek(&self, fh: u64, off: i64, whence: i32) -> Result<i64> {
        if self.opts.writeback && matches!(whence, libc::SEEK_DATA | libc::SEEK_HOLE) {
            return Err(Errno::ENOSYS);
        }
        oio::lseek(self.files.get(fh)?.fd(), off, whence)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u32,
    ) -> Result<usize> {
        let src = self.files.get(fh_in)?;
        let dst = self.files.get(fh_out)?;
        self.before_data(&dst.node, off_out, len)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let keep = self.mtime_to_keep(dst.fd())?;
        let n = oio::copy_file_range(src.fd(), off_in, dst.fd(), off_out, len, flags, "live.copy")?;
        self.keep_mtime(dst.fd(), keep);
        Ok(n)
    }

    /// Applies `set` in the order chmod, chown, truncate, times, and returns
    /// the resulting attributes. `fh` is the open file for ftruncate.
    pub fn setattr(&self, id: u64, fh: Option<u64>, set: &SetAttr) -> Result<Attr> {
        let node = self.node(id)?;
        if set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some()
        {
            self.before_attrs(&node)?;
        }
        // Counted after the change (also a failed one): a check of the
        // privileges that began before it then finds its count outdated.
        let _changed = (set.mode.is_some() || set.uid.is_some() || set.gid.is_some())
            .then(|| PrivsChanged(&node));
        if let Some(mode) = set.mode {
            if node.kind == libc::S_IFLNK {
                return Err(Errno::EOPNOTSUPP);
            }
            attr::chmod_inode(node.fd()?.as_fd(), mode & 0o7777)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            attr::fchown(
                node.fd()?.as_fd(),
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(size) = set.size {
            if node.is_reg() {
                self.before_truncate(&node, size)?;
            }
            let file = fh.and_then(|fh| self.files.get(fh).ok());

            match file {
                Some(file) if file.writable() => oio::ftruncate(file.fd(), size)?,
                _ => {
                    if node.is_dir() {
                        return Err(Errno::EISDIR);
                    }
                    if !node.is_reg() {
                        return Err(Errno::EINVAL);
                    }
                    let fd = self.reopen(&node, libc::O_WRONLY)?;
                    oio::ftruncate(fd.as_fd(), size)?;
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            attr::futimens(
                node.fd()?.as_fd(),
                &[timespec(set.atime), timespec(set.mtime)],
            )?;
        }
        Ok(self.attr(fd::fstat(node.fd()?.as_fd())?, id))
    }
}

/// Counts a change of privileges on the node when dropped, once the change
/// is made (or failed).
struct PrivsChanged<'a>(&'a Node);

impl Drop for PrivsChanged<'_> {
    fn drop(&mut self) {
        self.0.privs_changed();
    }
}
