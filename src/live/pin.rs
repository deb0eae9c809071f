//! How a node holds on to its inode: an `O_PATH` descriptor, or, past a
//! budget of descriptors, a file handle (`name_to_handle_at`).
//!
//! The process may have only so many open files (on this machine the hard
//! limit is 20,000 and cannot be raised), while the kernel may cache far
//! more inodes (a kernel source tree has 80,000). So descriptors pin the
//! first nodes; the others keep a file handle, from which a descriptor is opened
//! (`open_by_handle_at`) for the duration of one operation.
//!
//! A handle does not pin the inode: once the file is deleted its inode
//! number may be reused. A handle then fails with `ESTALE` instead of
//! reaching another file, and a lookup that finds a handle-held node
//! re-resolves it (see `NodeTable::acquire`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::os::handle::FileHandle;
use crate::os::Result;

/// What keeps a node reachable.
pub enum Pin {
    Fd(OwnedFd),
    Handle {
        handle: Box<FileHandle>,
        /// A descriptor on the inode's filesystem (the source root).
        mount: Arc<OwnedFd>,
    },
}

/// A descriptor for one operation on a node: borrowed from the node, or
/// opened from its handle and closed when dropped.
pub enum NodeFd<'a> {
    Pinned(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for NodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            NodeFd::Pinned(fd) => *fd,
            NodeFd::Opened(fd) => fd.as_fd(),
        }
    }
}

impl AsRawFd for NodeFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Pin {
    pub fn fd(&self) -> Result<NodeFd<'_>> {
        match self {
            Pin::Fd(fd) => Ok(NodeFd::Pinned(fd.as_fd())),
            Pin::Handle { handle, mount } => {
                Ok(NodeFd::Opened(handle.open(mount.as_fd(), libc::O_PATH)?))
            }
        }
    }

    pub fn is_fd(&self) -> bool {
        matches!(self, Pin::Fd(_))
    }
}
