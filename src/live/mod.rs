//! The live tree: passthrough of every operation to the backing directory.
//!
//! This is the core [`tree::LiveTree`] serves as a [`crate::vfs::Tree`]. It
//! knows nothing of FUSE: it takes node ids and handle numbers, returns
//! `Result<_, Errno>`, and can be exercised without mounting anything.
//!
//! Rules it keeps (docs/ARCHITECTURE.md shows where it sits):
//! - the source is opened (`O_PATH|O_DIRECTORY`) before the mount exists, and
//!   every path is resolved from a node's descriptor with `*at()` calls and
//!   `O_NOFOLLOW`, one component at a time: nothing ever walks through the
//!   mountpoint, and a symlink in the source cannot redirect an operation;
//! - one `O_PATH` descriptor per inode the kernel knows, or past a budget a
//!   file handle ([`nodes`], [`pin`]);
//! - files and directories are reopened for I/O through `/proc/self/fd/N`;
//!   special files are never opened by the daemon (the kernel serves FIFOs
//!   and devices itself);
//! - permissions are checked by the kernel (`default_permissions`) and
//!   ownership is given to the caller ([`caller`]);
//! - the store folder (`SOURCE/.bkfs` by default) is hidden: not listed,
//!   not found, not creatable, not a rename or link target.

pub mod attr;
pub mod caller;
pub mod changes;
pub mod handles;
pub mod ids;
pub mod nodes;
pub mod pin;
pub mod tree;

mod file_ops;
mod name_ops;
mod notify;
mod xattr_ops;

#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

pub use crate::os::{Errno, Result};
pub use attr::{Attr, Entry, SetAttr, SetTime};
pub use caller::Caller;
pub use ids::ROOT_ID;
pub use name_ops::ListedEntry;
pub use xattr_ops::Xattr;

use crate::os::{fd, Follow};
use handles::{DirHandle, FileHandle, Handles};
use nodes::{Node, NodeTable};

/// Default name of the store folder inside the source, hidden from the mount.
pub const DEFAULT_STORE_NAME: &str = ".bkfs";

/// Behaviour switches of the live tree.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Names in the source's root that the mount hides and protects.
    pub hidden_names: Vec<OsString>,
    /// Allow creating character and block devices (the `dev` mount option).
    pub allow_devices: bool,
    /// The kernel's writeback cache is on: it may read pages of files opened
    /// write-only and handles `O_APPEND` itself.
    pub writeback: bool,
    /// How many nodes may be held by descriptors before file handles are
    /// used (`None`: a share of the open-file limit).
    pub fd_budget: Option<usize>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            hidden_names: vec![OsString::from(DEFAULT_STORE_NAME)],
            allow_devices: false,
            writeback: false,
            fd_budget: None,
        }
    }
}

pub struct Live {
    nodes: NodeTable,
    files: Handles<FileHandle>,
    /// How many handles of each node are open for writing.
    writers: parking_lot::Mutex<std::collections::HashMap<u64, usize>>,
    dirs: Handles<DirHandle>,
    opts: LiveOptions,
    /// Told before every change (the snapshot machinery, when there is one).
    changes: Arc<dyn changes::Changes>,
}

impl Live {
    /// Opens the source directory. Call this before mounting over it.
    pub fn new(source: &Path, opts: LiveOptions) -> std::io::Result<Live> {
        let open_dir = |path: &Path, flags: i32| -> std::io::Result<OwnedFd> {
            Ok(fd::open(path, Follow::Yes, flags | libc::O_DIRECTORY)?)
        };
        let root = open_dir(source, libc::O_PATH)?;
        let mount = open_dir(source, libc::O_RDONLY)?;
        // Nodes are reopened through /proc/self/fd: refuse to start without it.
        open_dir(Path::new("/proc/self/fd"), libc::O_PATH)?;
        Ok(Live {
            nodes: NodeTable::new(
                root,
                mount,
                opts.fd_budget.unwrap_or_else(nodes::default_budget),
            )?,
            files: Handles::new(),
            writers: Default::default(),
            dirs: Handles::new(),
            opts,
            changes: Arc::new(changes::NoChanges),
        })
    }

    /// Tell `changes` before every change from now on.
    pub fn set_changes(&mut self, changes: Arc<dyn changes::Changes>) {
        self.changes = changes;
    }

    pub fn options(&self) -> &LiveOptions {
        &self.opts
    }

    /// The node table (lookup counts are visible to tests).
    pub fn nodes(&self) -> &NodeTable {
        &self.nodes
    }

    /// The open file behind `fh` (the adapter registers its descriptor for
    /// kernel passthrough).
    pub fn file(&self, fh: u64) -> Result<Arc<FileHandle>> {
        self.files.get(fh)
    }

    /// The nodes open for writing now: the inodes a write(2) may be in
    /// progress on.
    pub fn open_for_writing(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.writers.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether node `id` has a handle open for writing.
    pub fn is_open_for_writing(&self, id: u64) -> bool {
        self.writers.lock().contains_key(&id)
    }

    /// Registers an open file; its handle number.
    fn add_file(&self, file: FileHandle) -> u64 {
        if file.writable() {
            *self.writers.lock().entry(file.node.id).or_default() += 1;
        }
        self.files.insert(file)
    }

    /// Forgets open file `fh`.
    pub fn release(&self, fh: u64) {
        let Some(file) = self.files.remove(fh) else {
            return;
        };
        if file.writable() {
            let mut w = self.writers.lock();
            if let Some(n) = w.get_mut(&file.node.id) {
                *n -= 1;
                if *n == 0 {
                    w.remove(&file.node.id);
                }
            }
        }
    }

    /// Number of open file and directory handles.
    pub fn open_handles(&self) -> usize {
        self.files.len() + self.dirs.len()
    }

    fn node(&self, id: u64) -> Result<Arc<Node>> {
        self.nodes.get(id)
    }

    fn dir_node(&self, id: u64) -> Result<Arc<Node>> {
        let node = self.nodes.get(id)?;
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(node)
    }

    /// Is `name` in directory `parent` the hidden store folder?
    fn is_hidden(&self, parent: u64, name: &OsStr) -> bool {
        parent == ROOT_ID && self.opts.hidden_names.iter().any(|h| h == name)
    }

    /// Reopens a node's inode for I/O through `/proc/self/fd/N`.
    fn reopen(&self, node: &Node, flags: i32) -> Result<OwnedFd> {
        fd::reopen(node.fd()?.as_fd(), flags)
    }

    pub fn getattr(&self, id: u64) -> Result<Attr> {
        let node = self.node(id)?;
        Ok(self.attr(fd::fstat(node.fd()?.as_fd())?, id))
    }

    pub fn forget(&self, id: u64, n: u64) {
        self.nodes.forget(id, n);
    }

    pub fn statfs(&self, id: u64) -> Result<libc::statvfs> {
        fd::fstatvfs(self.node(id)?.fd()?.as_fd())
    }
}
