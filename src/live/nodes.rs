//! The inodes the kernel currently knows.
//!
//! Invariants:
//! - one `Node` per backing inode `(st_dev, st_ino)`; hard links share it;
//! - a node lives while the kernel holds lookups on it: every reply that hands
//!   the kernel an entry adds one, `forget(n)` removes n, and the node leaves
//!   the table at zero (the root never does);
//! - a node held by a descriptor ([`Pin::Fd`]) keeps its backing inode alive,
//!   so its `st_ino` cannot be reused by another file while the kernel may
//!   still name it. Past the descriptor budget, nodes are held by file
//!   handles instead (see [`super::pin`]); those are looked up
//!   again, not trusted by inode number, when a lookup finds them.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::ids::{IdMap, InodeKey, ROOT_ID};
use super::pin::{NodeFd, Pin};
use crate::os::handle::FileHandle;
use crate::os::{fd, proc, Errno, Result};

pub struct Node {
    pub id: u64,
    pub key: InodeKey,
    /// `st_mode & S_IFMT`; the type of an inode never changes.
    pub kind: u32,
    pin: Pin,
    /// The budget's share a descriptor pin takes, given back when the node
    /// (and so its descriptor) goes.
    _share: Option<FdShare>,
    /// Id of the directory the kernel last found it in (0: unknown). Exact
    /// for directories (one parent, renames update it); for a file with
    /// several names, only one of them (see [`super::changes::Obj::lineage`]).
    parent: AtomicU64,
    /// What a write by an unprivileged process must check (set-id bits,
    /// file capabilities; [`super::Live::kill_privs`]) is cached:
    /// `privs_gen` counts the changes of mode, owner and xattrs made through
    /// the mount, and `no_privs_at` is the count at which the inode was
    /// found to have none of them (0: not known). A change made meanwhile
    /// leaves them unequal, so a check never outlives one.
    privs_gen: AtomicU64,
    no_privs_at: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("fd_pinned", &self.pin.is_fd())
            .finish()
    }
}

impl Node {
    /// A descriptor (`O_PATH`) of the node's inode for one operation.
    pub fn fd(&self) -> Result<NodeFd<'_>> {
        self.pin.fd()
    }

    /// Whether the node holds its inode by a descriptor (which proves any
    /// stat of the same key is this inode).
    pub fn is_fd_pinned(&self) -> bool {
        self.pin.is_fd()
    }

    /// The node's own descriptor, when it holds one.
    pub fn pinned_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.pin {
            Pin::Fd(fd) => Some(fd.as_fd()),
            Pin::Handle { .. } => None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    pub fn is_reg(&self) -> bool {
        self.kind == libc::S_IFREG
    }

    /// The count of privilege-relevant changes, read before a check.
    pub fn privs_gen(&self) -> u64 {
        self.privs_gen.load(Ordering::Acquire)
    }

    /// Whether the inode is known to have no privileges to kill.
    pub fn has_no_privs(&self) -> bool {
        self.no_privs_at.load(Ordering::Acquire) == self.privs_gen()
    }

    /// The check that read `gen` before it began found no privileges.
    pub fn found_no_privs(&self, gen: u64) {
        self.no_privs_at.store(gen, Ordering::Release);
    }

    /// Mode, owner or xattrs change: what was known of privileges is not.
    pub fn privs_changed(&self) {
        self.privs_gen.fetch_add(1, Ordering::AcqRel);
    }

    pub fn parent(&self) -> u64 {
        self.parent.load(Ordering::Relaxed)
    }

    pub fn set_parent(&self, id: u64) {
        self.parent.store(id, Ordering::Relaxed);
    }
}

struct Slot {
    node: Arc<Node>,
    lookups: u64,
}

pub struct NodeTable {
    ids: IdMap,
    slots: RwLock<HashMap<u64, Slot>>,
    /// The source root opened for reading, to open handles through.
    mount: Arc<OwnedFd>,
    /// How many nodes may be held by descriptors, shared with the other
    /// node tables of the daemon (the pending snapshot's view).
    budget: Arc<FdBudget>,
}

/// The descriptors the daemon's nodes may hold at once, shared by every
/// table of nodes the kernel may keep (the live tree's, the pending
/// snapshot's view): the kernel caches as many inodes as memory allows,
/// the process has only so many descriptors. Past the budget, nodes are
/// held by file handles (or found again by name) instead.
#[derive(Debug)]
pub struct FdBudget {
    limit: usize,
    used: AtomicUsize,
}

/// One descriptor of an [`FdBudget`], given back when dropped.
#[derive(Debug)]
pub struct FdShare(Arc<FdBudget>);

impl Drop for FdShare {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FdBudget {
    pub fn new(limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// One descriptor more, if the budget has one left.
    pub fn take(self: &Arc<Self>) -> Option<FdShare> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if cur >= self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(FdShare(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// One descriptor counted whatever is left: one that nothing else can
    /// stand for (the root; an inode of another filesystem, which the
    /// source's handles do not reach).
    pub fn force(self: &Arc<Self>) -> FdShare {
        self.used.fetch_add(1, Ordering::Relaxed);
        FdShare(self.clone())
    }

    /// Descriptors held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Default share of the open-file limit given to node descriptors; the
/// rest is left for open files and temporary descriptors.
pub fn default_budget() -> usize {
    match proc::nofile_limit() {
        Ok((soft, _)) => (soft as usize / 5 * 3).clamp(64, 1 << 22),
        Err(_) => 512,
    }
}

impl NodeTable {
    /// A table holding only the root, pinned by `root_fd` (`O_PATH|O_DIRECTORY`).
    /// `mount` is the root opened for reading: open_by_handle_at refuses
    /// `O_PATH` descriptors.
    pub fn new(root_fd: OwnedFd, mount: OwnedFd, budget: usize) -> Result<NodeTable> {
        let st = fd::fstat(root_fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let mount = Arc::new(mount);
        let budget = FdBudget::new(budget);
        let root = Arc::new(Node {
            id: ROOT_ID,
            key,
            kind: st.st_mode & libc::S_IFMT,
            pin: Pin::Fd(root_fd),
            _share: Some(budget.force()),
            parent: AtomicU64::new(0),
            privs_gen: AtomicU64::new(1),
            no_privs_at: AtomicU64::new(0),
        });
        let mut slots = HashMap::new();
        slots.insert(
            ROOT_ID,
            Slot {
                node: root,
                lookups: 1,
            },
        );
        Ok(NodeTable {
            ids: IdMap::new(key),
            slots: RwLock::new(slots),
            mount,
            budget,
        })
    }

    /// The descriptor budget of the nodes, for other tables to share.
    pub fn budget(&self) -> &Arc<FdBudget> {
        &self.budget
    }

    /// The node with this id, or `ESTALE` if the kernel names one it forgot.
    pub fn get(&self, id: u64) -> Result<Arc<Node>> {
        let slots = self.slots.read();
        slots
            .get(&id)
            .map(|slot| slot.node.clone())
            .ok_or(Errno::ESTALE)
    }

    /// The id `key` has or would have (for entries listed without a lookup).
    pub fn id_of(&self, key: InodeKey) -> u64 {
        self.ids.id_of(key)
    }

    /// Adds one lookup to the node of `key` if the table has one held by a
    /// descriptor (which proves it is the same inode).
    pub fn acquire_existing(&self, key: InodeKey) -> Option<Arc<Node>> {
        let id = self.ids.id_of(key);
        let mut slots = self.slots.write();
        let slot = slots.get_mut(&id)?;
        if !slot.node.pin.is_fd() {
            return None;
        }
        slot.lookups += 1;
        Some(slot.node.clone())
    }

    /// Adds one lookup to node `id`, which the kernel holds (for link).
    pub fn acquire_id(&self, id: u64) -> Option<Arc<Node>> {
        let mut slots = self.slots.write();
        let slot = slots.get_mut(&id)?;
        slot.lookups += 1;
        Some(slot.node.clone())
    }

    /// How the inode of `fd` is to be held: by `fd`, or by its handle once
    /// the descriptor budget is spent (never for inodes of another
    /// filesystem than the source root's: handles are opened through it).
    fn pin_for(&self, fd: OwnedFd, st: &libc::stat) -> (Pin, Option<FdShare>) {
        if let Some(share) = self.budget.take() {
            return (Pin::Fd(fd), Some(share));
        }
        if st.st_dev == self.ids.root_dev() {
            if let Ok(handle) = FileHandle::of(fd.as_fd()) {
                let pin = Pin::Handle {
                    handle: Box::new(handle),
                    mount: self.mount.clone(),
                };
                return (pin, None);
            }
        }
        (Pin::Fd(fd), Some(self.budget.force()))
    }

    /// Adds one lookup to the node of the inode `fd` refers to (`st` is its
    /// stat), inserting a node for it if the table has none. A node held by
    /// a handle is re-pinned from `fd`: if the file it named was deleted and
    /// its inode number reused, the node now names the new file, which is
    /// the one the kernel is looking up (it has dropped the old one).
    pub fn acquire(&self, fd: OwnedFd, st: &libc::stat) -> Arc<Node> {
        let key = (st.st_dev, st.st_ino);
        let id = self.ids.id_of(key);
        let kind = st.st_mode & libc::S_IFMT;
        let mut slots = self.slots.write();
        if let Some(slot) = slots.get_mut(&id) {
            if !slot.node.pin.is_fd() {
                let (pin, share) = self.pin_for(fd, st);
                let old = &slot.node;
                let parent = AtomicU64::new(old.parent());
                let privs_gen = AtomicU64::new(old.privs_gen.load(Ordering::Acquire));
                let no_privs_at = AtomicU64::new(old.no_privs_at.load(Ordering::Acquire));
                slot.node = Arc::new(Node {
                    id,
                    key,
                    kind,
                    pin,
                    _share: share,
                    parent,
                    privs_gen,
                    no_privs_at,
                });
            }
            slot.lookups += 1;
            return slot.node.clone();
        }
        let (pin, share) = self.pin_for(fd, st);
        let node = Arc::new(Node {
            id,
            key,
            kind,
            pin,
            _share: share,
            parent: AtomicU64::new(0),
            privs_gen: AtomicU64::new(1),
            no_privs_at: AtomicU64::new(0),
        });
        slots.insert(
            id,
            Slot {
                node: node.clone(),
                lookups: 1,
            },
        );
        node
    }

    /// Removes `n` lookups; the node leaves the table when none remain.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut slots = self.slots.write();
        if let Some(slot) = slots.get_mut(&id) {
            slot.lookups = slot.lookups.saturating_sub(n);
            if slot.lookups == 0 {
                // Its descriptor (and budget share) goes with the last
                // reference to the node.
                slots.remove(&id);
            }
        }
    }

    /// How many lookups the kernel holds on `id` (0 if unknown); for tests.
    pub fn lookups(&self, id: u64) -> u64 {
        let slots = self.slots.read();
        slots.get(&id).map_or(0, |s| s.lookups)
    }

    /// Number of nodes in the table, the root included.
    pub fn len(&self) -> usize {
        self.slots.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of nodes held by descriptors (in every table sharing the
    /// budget).
    pub fn pinned(&self) -> usize {
        self.budget.used()
    }
}
