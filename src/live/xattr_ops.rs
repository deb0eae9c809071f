//! Extended attributes in every namespace (user, trusted, security, system —
//! POSIX ACLs are `system.posix_acl_access`/`_default`).
//!
//! The kernel checks namespace permissions (trusted needs CAP_SYS_ADMIN,
//! user.* only on files and directories) with the caller's credentials before
//! forwarding; the daemon then acts as root on `/proc/self/fd/N`.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use super::Live;
use crate::os::xattr::XattrOf;
use crate::os::{Errno, Result};

pub use crate::vfs::Xattr;

fn xattr_name(name: &OsStr) -> Result<std::ffi::CString> {
    std::ffi::CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

impl Live {
    /// Calls `f` with the xattrs of node `id` (through `/proc/self/fd/N`,
    /// its descriptor held open meanwhile).
    fn with_node_xattrs<T>(&self, id: u64, f: impl FnOnce(XattrOf<'_>) -> Result<T>) -> Result<T> {
        let node = self.node(id)?;
        let fd = node.fd()?;
        f(XattrOf::ProcFd(fd.as_fd()))
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        let name = xattr_name(name)?;
        self.with_node_xattrs(id, |of| {
            if size == 0 {
                return Ok(Xattr::Size(of.get(&name, &mut [])?));
            }
            let mut buf = vec![0u8; size as usize];
            let n = of.get(&name, &mut buf)?;
            buf.truncate(n);
            Ok(Xattr::Data(buf))
        })
    }

    pub fn listxattr(&self, id: u64, size: u32) -> Result<Xattr> {
        self.with_node_xattrs(id, |of| {
            if size == 0 {
                return Ok(Xattr::Size(of.list(&mut [])?));
            }
            let mut buf = vec![0u8; size as usize];
            let n = of.list(&mut buf)?;
            buf.truncate(n);
            Ok(Xattr::Data(buf))
        })
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let name = xattr_name(name)?;
        let node = self.node(id)?;
        self.before_attrs(&node)?;
        let r = self.with_node_xattrs(id, |of| of.set(&name, value, flags));
        node.privs_changed();
        r
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> Result<()> {
        let name = xattr_name(name)?;
        let node = self.node(id)?;
        self.before_attrs(&node)?;
        let r = self.with_node_xattrs(id, |of| of.remove(&name));
        node.privs_changed();
        r
    }
}
