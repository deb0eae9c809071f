//! Open files and directories, by the handle number the kernel passes back.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::nodes::Node;
use crate::os::dir::DirStream;
use crate::os::{Errno, Result};

/// An open regular file (or other non-directory opened through the mount).
#[derive(Debug)]
pub struct FileHandle {
    pub node: Arc<Node>,
    /// The open flags the backing file was opened with.
    pub flags: i32,
    file: OwnedFd,
}

impl FileHandle {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }
}

/// An open directory: its stream position is per handle, so concurrent
/// listings of one directory do not disturb each other.
pub struct DirHandle {
    pub node: Arc<Node>,
    pub stream: Mutex<DirStream>,
}

/// Handle numbers are never reused within a mount (a u64 does not wrap).
pub struct Handles<T> {
    next: AtomicU64,
    map: RwLock<HashMap<u64, Arc<T>>>,
}

impl<T> Handles<T> {
    pub fn new() -> Handles<T> {
        Handles {
            next: AtomicU64::new(1),
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn insert(&self, value: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.write().insert(fh, Arc::new(value));
        fh
    }

    /// The handle `fh`, or `EBADF` for a number we never gave out.
    pub fn get(&self, fh: u64) -> Result<Arc<T>> {
        self.map.read().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        self.map.write().remove(&fh)
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl FileHandle {
    pub fn new(node: Arc<Node>, flags: i32, file: OwnedFd) -> FileHandle {
        FileHandle { node, flags, file }
    }
}
