//! Snapshot views: sealed snapshots read from the store, read-only.
//!
//! The view's root lists the store's snapshots by name, plus `latest`, a
//! symlink to the newest. Below each name is the snapshot's tree with every
//! attribute as recorded (modes with setuid/setgid/sticky, owners,
//! nanosecond times, the recorded ctime, link counts, device numbers,
//! xattrs and POSIX ACLs), hard links as one inode, sparse files with their
//! holes. `bkfs mount --store S MOUNTPOINT` serves a view as the whole
//! mount; a live mount can serve one as `.snapshots/` (the root then gets
//! [`ids::SNAPSHOTS_DIR_ID`] instead of the FUSE root id).
//!
//! Like [`crate::live`], this core knows nothing of FUSE: it takes node ids
//! and handle numbers and returns `Result<_, Errno>`; [`fuse`] adapts it to
//! fuser. Every write-class request gets `EROFS` ([`SnapView::modify`]).
//! Permissions are the kernel's to check (`default_permissions`) against the
//! recorded owners, modes and ACLs, so nobody reads through a view what they
//! could not read live.
//!
//! Speed (docs/SNAPVIEW.md): trees are decoded once and shared by the nodes
//! that refer into them; chunks are decompressed into a bounded LRU cache
//! ([`chunks`]) shared by all files; a reader moving forward through a file
//! has its next chunks loaded in the background; a read finds its pieces by
//! binary search in the file's [`layout`]. Contents never change, so the
//! adapter lets the kernel cache pages, entries and attributes for long.

pub mod attr;
pub mod catalog;
pub mod chunks;
pub mod ids;
pub mod layout;
pub mod nodes;
mod read;
pub mod tree;

#[cfg(test)]
mod tests;

use parking_lot::{Mutex, RwLock};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use attr::Attr;
pub use nix::errno::Errno;

use crate::live::handles::Handles;
use crate::live::Xattr;
use crate::store::{Id, Kind, Store, StoreReader, Tree};
use catalog::{Catalog, Listing, Snap};
use chunks::ChunkCache;
use nodes::{NodeTable, ViewNode, What};

pub type Result<T> = std::result::Result<T, Errno>;

/// Puts a file's bytes into the kernel's page cache before they are asked
/// for (the adapter's `FUSE_NOTIFY_STORE`): node id, offset, bytes.
pub type Push = Box<dyn Fn(u64, u64, &[u8]) + Send + Sync>;

/// Largest file whose content read-ahead pushes into the page cache.
const PUSH_MAX: u64 = 1 << 20;

/// Name of the symlink to the newest snapshot.
pub const LATEST: &str = "latest";

/// Settings of a view.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// The id of the view's root directory.
    pub root_id: u64,
    /// Bytes of decompressed chunks kept in memory.
    pub chunk_cache_bytes: u64,
    /// Chunks loaded ahead of a sequential reader.
    pub read_ahead_chunks: usize,
    /// When a file is read from its start, the first chunks of this many
    /// files after it in its directory are loaded too: tar, cp, rsync and
    /// friends read a directory's files in listing order.
    pub read_ahead_files: usize,
    /// ... as long as those chunks add up to no more than this.
    pub read_ahead_file_bytes: u64,
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            root_id: crate::live::ROOT_ID,
            chunk_cache_bytes: 256 << 20,
            read_ahead_chunks: 2,
            read_ahead_files: 16,
            read_ahead_file_bytes: 8 << 20,
        }
    }
}

/// An entry handed to the kernel: its id carries one lookup.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
}

/// One entry of a directory listing, as handed to the adapter.
#[derive(Debug)]
pub struct DirEntry<'a> {
    pub name: &'a OsStr,
    /// Offset to resume the listing after this entry.
    pub next_offset: u64,
    pub ino: u64,
    /// `S_IF*` type bits.
    pub kind: u32,
    /// With `plus`, the attributes; the id then carries one lookup (except
    /// for `.` and `..`).
    pub attr: Option<Attr>,
}

/// An open directory: what it lists is fixed at opendir, so offsets stay
/// meaningful however the catalog changes meanwhile.
enum OpenDir {
    Root(Arc<Listing>),
    Tree { dir: Arc<ViewNode>, tree: Arc<Tree> },
}

pub struct SnapView {
    store: Store,
    /// Swapped for a fresh reader when a new snapshot's trees are not in
    /// its index (a backup ran since it was opened). Each reader holds the
    /// store's read lock, so `gc` cannot delete packs under the view.
    reader: RwLock<Arc<StoreReader>>,
    last_reopen: Mutex<Option<Instant>>,
    catalog: Catalog,
    nodes: NodeTable,
    chunks: Arc<ChunkCache>,
    dirs: Handles<OpenDir>,
    /// Owner of the view's own nodes (root, `latest`): the daemon's.
    owner: (u32, u32),
    cfg: ViewConfig,
    push: Arc<OnceLock<Push>>,
}

/// Logs a store error and turns it into the errno readers see.
fn eio(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Errno {
    tracing::error!("{what}: {e}");
    Errno::EIO
}

/// A reader is reopened at most this often (a name that is not a snapshot
/// must not make every lookup reload the index).
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

impl SnapView {
    /// Opens the store for reading (taking its read lock) and reads its
    /// snapshot list.
    pub fn new(store: Store, cfg: ViewConfig) -> crate::store::Result<SnapView> {
        let reader = store.reader()?;
        let catalog = Catalog::new(store.clone())?;
        Ok(SnapView {
            store,
            reader: RwLock::new(Arc::new(reader)),
            last_reopen: Mutex::new(None),
            catalog,
            nodes: NodeTable::default(),
            chunks: Arc::new(ChunkCache::new(cfg.chunk_cache_bytes)),
            dirs: Handles::new(),
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            cfg,
            push: Arc::default(),
        })
    }

    /// Lets read-ahead put whole small files into the kernel's page cache:
    /// a reader going through a directory then finds most files there and
    /// waits for no round trip at all.
    pub fn set_push(&self, push: Push) {
        if self.push.set(push).is_err() {
            tracing::warn!("page cache push set twice; keeping the first");
        }
    }

    /// Re-read the store's snapshot list (one was sealed or forgotten).
    pub fn refresh(&self) {
        self.catalog.refresh();
    }

    pub fn root_id(&self) -> u64 {
        self.cfg.root_id
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node table (lookup counts are visible to tests).
    pub fn nodes(&self) -> &NodeTable {
        &self.nodes
    }

    /// Bytes of decompressed chunks held in the cache.
    pub fn cached_bytes(&self) -> u64 {
        self.chunks.bytes()
    }

    /// Number of open directory handles (files need none).
    pub fn open_handles(&self) -> usize {
        self.dirs.len()
    }

    fn reader(&self) -> Arc<StoreReader> {
        self.reader.read().clone()
    }

    /// A tree, reopening the reader first when its index does not know the
    /// tree (written by a backup that ran after the view was opened).
    fn tree(&self, id: &Id, what: impl std::fmt::Display) -> Result<Arc<Tree>> {
        let mut reader = self.reader();
        if !reader.index().contains(id) && self.reopen_reader() {
            reader = self.reader();
        }
        reader.tree(id).map_err(|e| eio(what, e))
    }

    fn reopen_reader(&self) -> bool {
        let mut last = self.last_reopen.lock();
        if last.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match self.store.reader() {
            Ok(r) => {
                *self.reader.write() = Arc::new(r);
                true
            }
            Err(e) => {
                tracing::error!("reopening the store: {e}");
                false
            }
        }
    }

    fn node(&self, id: u64) -> Result<Arc<ViewNode>> {
        self.nodes.get(id).ok_or(Errno::ENOENT)
    }

    fn root_attr(&self, listing: &Listing) -> Attr {
        let mut a = Attr::synthetic(
            self.cfg.root_id,
            libc::S_IFDIR,
            0o555,
            self.owner,
            listing.mtime,
        );
        a.nlink = 2 + listing.by_name.len() as u32;
        a
    }

    /// The top tree of `snap`: one node, the snapshot's root directory.
    fn top(&self, snap: &Snap) -> Result<Arc<Tree>> {
        if let Some(t) = snap.top.get() {
            return Ok(t.clone());
        }
        let what = format!("snapshot {}: top tree", snap.name());
        let tree = self.tree(&snap.record.tree, &what)?;
        if tree.nodes.len() != 1 || tree.nodes[0].kind != Kind::Dir {
            return Err(eio(what, "not a single directory"));
        }
        Ok(snap.top.get_or_init(|| tree).clone())
    }

    /// A directory node's own listing.
    fn children(&self, dir: &ViewNode) -> Result<Arc<Tree>> {
        if let Some(t) = dir.children.get() {
            return Ok(t.clone());
        }
        let node = dir.node().ok_or(Errno::ENOTDIR)?;
        let sub = match (node.kind, node.subtree) {
            (Kind::Dir, Some(sub)) => sub,
            (Kind::Dir, None) => return Ok(dir.children.get_or_init(Default::default).clone()),
            _ => return Err(Errno::ENOTDIR),
        };
        let what = format!(
            "snapshot {}: directory {}",
            dir.snap.name(),
            String::from_utf8_lossy(&node.name)
        );
        let tree = self.tree(&sub, what)?;
        Ok(dir.children.get_or_init(|| tree).clone())
    }

    /// The root's entry `name`: a snapshot's root directory, or `latest`.
    fn root_child(&self, listing: &Listing, name: &[u8]) -> Result<ViewNode> {
        if name == LATEST.as_bytes() {
            let snap = listing.newest.clone().ok_or(Errno::ENOENT)?;
            return Ok(ViewNode::new(snap, What::Latest, self.cfg.root_id));
        }
        let name = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
        let snap = listing.by_name.get(name).ok_or(Errno::ENOENT)?.clone();
        let top = self.top(&snap)?;
        Ok(ViewNode::new(
            snap,
            What::Entry {
                listing: top,
                index: 0,
            },
            self.cfg.root_id,
        ))
    }

    fn enter(&self, node: ViewNode) -> Entry {
        let node = self.nodes.enter(node);
        Entry {
            attr: node.attr(self.owner),
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        let name = name.as_bytes();
        if parent == self.cfg.root_id {
            let listing = self.catalog.listing();
            return Ok(self.enter(self.root_child(&listing, name)?));
        }
        let dir = self.node(parent)?;
        let tree = self.children(&dir)?;
        let index = tree
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .map_err(|_| Errno::ENOENT)?;
        Ok(self.enter(ViewNode::new(
            dir.snap.clone(),
            What::Entry {
                listing: tree,
                index,
            },
            dir.id,
        )))
    }

    pub fn forget(&self, id: u64, n: u64) {
        self.nodes.forget(id, n);
    }

    pub fn getattr(&self, id: u64) -> Result<Attr> {
        if id == self.cfg.root_id {
            return Ok(self.root_attr(&self.catalog.listing()));
        }
        Ok(self.node(id)?.attr(self.owner))
    }

    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        match node.node() {
            None => Ok(node.snap.name().as_bytes().to_vec()),
            Some(n) => match (&n.kind, &n.target) {
                (Kind::Symlink, Some(t)) => Ok(t.clone()),
                _ => Err(Errno::EINVAL),
            },
        }
    }

    /// Every write-class request (setattr, create, mknod, mkdir, unlink,
    /// rmdir, symlink, link, rename, write, fallocate, set/removexattr,
    /// copy_file_range into the view) on node `id`: `ENOENT` for an unknown
    /// node, else `EROFS`.
    pub fn modify(&self, id: u64) -> Result<std::convert::Infallible> {
        if id != self.cfg.root_id {
            self.node(id)?;
        }
        Err(Errno::EROFS)
    }

    /// Checks that `id` may be opened with `flags`. Files need no handle:
    /// [`SnapView::read`] takes the node id, so an adapter may let the
    /// kernel skip opens altogether (`ENOSYS` to open: no round trip per
    /// file, and the kernel then keeps cached pages, as it should here).
    pub fn open(&self, id: u64, flags: i32) -> Result<()> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        if id == self.cfg.root_id {
            return Err(Errno::EISDIR);
        }
        self.layout(&*self.node(id)?).map(drop)
    }

    pub fn opendir(&self, id: u64) -> Result<u64> {
        let dir = if id == self.cfg.root_id {
            OpenDir::Root(self.catalog.listing())
        } else {
            let dir = self.node(id)?;
            let tree = self.children(&dir)?;
            OpenDir::Tree { dir, tree }
        };
        Ok(self.dirs.insert(dir))
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }

    /// Lists directory `fh` from `offset` (0 at the start; else a
    /// `next_offset` given earlier), calling `add` per entry until it
    /// returns false (the reply is full; that entry was not taken).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let handle = self.dirs.get(fh)?;
        let (own, parent) = match &*handle {
            OpenDir::Root(_) => (self.cfg.root_id, self.cfg.root_id),
            OpenDir::Tree { dir, .. } => (dir.id, dir.parent),
        };
        let dots = [(".", own), ("..", parent)];
        let mut pos = offset;
        while (pos as usize) < dots.len() {
            let (name, ino) = dots[pos as usize];
            let e = DirEntry {
                name: OsStr::new(name),
                next_offset: pos + 1,
                ino,
                kind: libc::S_IFDIR,
                attr: None,
            };
            if !add(&e) {
                return Ok(());
            }
            pos += 1;
        }
        let first = pos as usize - dots.len();
        match &*handle {
            OpenDir::Root(listing) => {
                let names = listing
                    .by_name
                    .keys()
                    .map(String::as_str)
                    .chain(listing.newest.as_ref().map(|_| LATEST));
                for (i, name) in names.enumerate().skip(first) {
                    // A snapshot whose top tree cannot be read (logged) is
                    // left out rather than failing the whole listing.
                    let Ok(node) = self.root_child(listing, name.as_bytes()) else {
                        continue;
                    };
                    if !self.add_entry(
                        node,
                        name.as_bytes(),
                        (dots.len() + i + 1) as u64,
                        plus,
                        &mut add,
                    ) {
                        break;
                    }
                }
            }
            OpenDir::Tree { dir, tree } => {
                for index in first..tree.nodes.len() {
                    let node = ViewNode::new(
                        dir.snap.clone(),
                        What::Entry {
                            listing: tree.clone(),
                            index,
                        },
                        dir.id,
                    );
                    let name = &tree.nodes[index].name;
                    if !self.add_entry(node, name, (dots.len() + index + 1) as u64, plus, &mut add)
                    {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Offers one listed node to `add`; with `plus` it is entered first (one
    /// lookup), and the lookup taken back if `add` refuses it.
    fn add_entry(
        &self,
        node: ViewNode,
        name: &[u8],
        next_offset: u64,
        plus: bool,
        add: &mut impl FnMut(&DirEntry<'_>) -> bool,
    ) -> bool {
        let (ino, kind, attr) = if plus {
            let entry = self.enter(node);
            (entry.attr.ino, entry.attr.kind, Some(entry.attr))
        } else {
            (self.nodes.peek_id(&node), node_kind(&node), None)
        };
        let e = DirEntry {
            name: OsStr::from_bytes(name),
            next_offset,
            ino,
            kind,
            attr,
        };
        let taken = add(&e);
        if !taken && plus {
            self.nodes.forget(ino, 1);
        }
        taken
    }

    pub fn listxattr(&self, id: u64, size: u32) -> Result<Xattr> {
        let mut list = Vec::new();
        if id != self.cfg.root_id {
            if let Some(n) = self.node(id)?.node() {
                for x in &n.xattrs {
                    list.extend_from_slice(&x.name);
                    list.push(0);
                }
            }
        }
        Xattr::answer(list, size)
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        if id == self.cfg.root_id {
            return Err(Errno::ENODATA);
        }
        let node = self.node(id)?;
        let value = node
            .node()
            .and_then(|n| n.xattrs.iter().find(|x| x.name == name.as_bytes()))
            .ok_or(Errno::ENODATA)?;
        Xattr::answer(value.value.clone(), size)
    }

    /// Figures of the store's filesystem, with nothing free: the view is
    /// read-only.
    pub fn statfs(&self) -> Result<libc::statvfs> {
        let mut st = crate::os::fd::statvfs(self.store.root())?;
        st.f_bfree = 0;
        st.f_bavail = 0;
        st.f_ffree = 0;
        st.f_favail = 0;
        Ok(st)
    }
}

fn node_kind(node: &ViewNode) -> u32 {
    match node.node() {
        Some(n) => attr::kind_bits(n.kind),
        None => libc::S_IFLNK,
    }
}
