//! Extended attributes in every namespace (user, trusted, security, system —
//! POSIX ACLs are `system.posix_acl_access`/`_default`).
//!
//! The kernel checks namespace permissions (trusted needs CAP_SYS_ADMIN,
//! user.* only on files and directories) with the caller's credentials before
//! forwarding; the daemon then acts as root on `/proc/self/fd/N`.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use super::sys::{self, Errno, Result};
use super::Live;

pub use crate::vfs::Xattr;

fn xattr_name(name: &OsStr) -> Result<std::ffi::CString> {
    std::ffi::CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

impl Live {
    /// Calls `f` with `/proc/self/fd/N` for node `id`, N held open meanwhile.
    fn with_node_path<T>(
        &self,
        id: u64,
        f: impl FnOnce(&std::ffi::CStr) -> Result<T>,
    ) -> Result<T> {
        let node = self.node(id)?;
        let fd = node.fd()?;
        f(&sys::proc_fd_path(fd.as_raw_fd()))
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        let name = xattr_name(name)?;
        self.with_node_path(id, |path| {
            if size == 0 {
                return Ok(Xattr::Size(sys::getxattr(path, &name, &mut [])?));
            }
            let mut buf = vec![0u8; size as usize];
            let n = sys::getxattr(path, &name, &mut buf)?;
            buf.truncate(n);
            Ok(Xattr::Data(buf))
        })
    }

    pub fn listxattr(&self, id: u64, size: u32) -> Result<Xattr> {
        self.with_node_path(id, |path| {
            if size == 0 {
                return Ok(Xattr::Size(sys::listxattr(path, &mut [])?));
            }
            let mut buf = vec![0u8; size as usize];
            let n = sys::listxattr(path, &mut buf)?;
            buf.truncate(n);
            Ok(Xattr::Data(buf))
        })
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let name = xattr_name(name)?;
        self.before_attrs(&*self.node(id)?)?;
        self.with_node_path(id, |path| sys::setxattr(path, &name, value, flags))
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> Result<()> {
        let name = xattr_name(name)?;
        self.before_attrs(&*self.node(id)?)?;

        self.with_node_path(id, |path| sys::removexattr(path, &name))
    }
}
