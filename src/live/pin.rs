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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::sys::{Errno, Result};

/// `MAX_HANDLE_SZ` of the kernel.
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
#[derive(Clone)]
pub struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

impl PartialEq for RawHandle {
    fn eq(&self, other: &Self) -> bool {
        let n = self.handle_bytes as usize;
        self.handle_type == other.handle_type
            && self.handle_bytes == other.handle_bytes
            && self.f_handle[..n] == other.f_handle[..n]
    }
}

impl RawHandle {
    /// The handle of the inode `fd` refers to.
    pub fn of(fd: BorrowedFd<'_>) -> Result<RawHandle> {
        let mut h = RawHandle {
            handle_bytes: MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `h` is a file_handle with room for MAX_HANDLE_SZ bytes as
        // announced in handle_bytes; the path is an empty C string.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                fd.as_raw_fd(),
                c"".as_ptr(),
                &mut h as *mut RawHandle,
                &mut mount_id as *mut libc::c_int,
                libc::AT_EMPTY_PATH,
            )
        };
        if ret == -1 {
            return Err(Errno::last());
        }
        Ok(h)
    }

    /// The handle the kernel's FUSE client gives node `id` of a FUSE mount
    /// (`fuse_encode_fh`: type `FILEID_INO64_GEN`, the node id's high and
    /// low 32 bits, then the generation, which bkfs always answers 0). The
    /// kernel finds an inode it has cached from it without asking the
    /// daemon, so it reaches any inode a process holds open.
    pub fn fuse_node(id: u64) -> RawHandle {
        let mut h = RawHandle {
            handle_bytes: 12,
            handle_type: 0x81,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let words = [(id >> 32) as u32, id as u32, 0u32];
        for (i, w) in words.iter().enumerate() {
            h.f_handle[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        h
    }

    /// Opens the inode (`O_PATH`) through `mount`, any descriptor on its filesystem.
    pub fn open(&self, mount: BorrowedFd<'_>) -> Result<OwnedFd> {
        self.open_with(mount, libc::O_PATH)
    }

    /// Opens the inode with open flags `flags` through `mount`.
    pub fn open_with(&self, mount: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
        // SAFETY: `self` is a valid file_handle; the result is a new descriptor we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                self as *const RawHandle,
                flags | libc::O_CLOEXEC,
            )
        };
        if fd == -1 {
            return Err(Errno::last());
        }
        // SAFETY: open_by_handle_at returned a new descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// What keeps a node reachable.
pub enum Pin {
    Fd(OwnedFd),
    Handle {
        handle: Box<RawHandle>,
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
            Pin::Handle { handle, mount } => Ok(NodeFd::Opened(handle.open(mount.as_fd())?)),
        }
    }

    pub fn is_fd(&self) -> bool {
        matches!(self, Pin::Fd(_))
    }
}
