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

/// Answer to a get/list request: the value's size when asked with size 0,
/// else the value itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Xattr {
    Size(usize),
    Data(Vec<u8>),
}

fn xattr_name(name: &OsStr) -> Result<std::ffi::CString> {
    std::ffi::CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

impl Live {
    fn node_path(
        &self,
        id: u64,
    ) -> Result<(std::sync::Arc<super::nodes::Node>, std::ffi::CString)> {
        let node = self.node(id)?;
        let path = sys::proc_fd_path(node.fd().as_raw_fd());
        Ok((node, path))
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        let (_node, path) = self.node_path(id)?;
        let name = xattr_name(name)?;
        if size == 0 {
            return Ok(Xattr::Size(sys::getxattr(&path, &name, &mut [])?));
        }
        let mut buf = vec![0u8; size as usize];
        let n = sys::getxattr(&path, &name, &mut buf)?;
        buf.truncate(n);
        Ok(Xattr::Data(buf))
    }

    pub fn listxattr(&self, id: u64, size: u32) -> Result<Xattr> {
        let (_node, path) = self.node_path(id)?;
        if size == 0 {
            return Ok(Xattr::Size(sys::listxattr(&path, &mut [])?));
        }
        let mut buf = vec![0u8; size as usize];
        let n = sys::listxattr(&path, &mut buf)?;
        buf.truncate(n);
        Ok(Xattr::Data(buf))
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let (_node, path) = self.node_path(id)?;
        sys::setxattr(&path, &xattr_name(name)?, value, flags)
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> Result<()> {
        let (_node, path) = self.node_path(id)?;
        sys::removexattr(&path, &xattr_name(name)?)
    }
}
