//! The inodes the kernel currently knows, each pinned by an `O_PATH` descriptor.
//!
//! Invariants:
//! - one `Node` per backing inode `(st_dev, st_ino)`; hard links share it;
//! - a node lives while the kernel holds lookups on it: every reply that hands
//!   the kernel an entry adds one, `forget(n)` removes n, and the node leaves
//!   the table at zero (the root never does);
//! - the node's descriptor keeps the backing inode alive, so its `st_ino`
//!   cannot be reused by another file while the kernel may still name it.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, RwLock};

use super::ids::{IdMap, InodeKey, ROOT_ID};
use super::sys::{self, Errno, Result};

#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub key: InodeKey,
    /// `st_mode & S_IFMT`; the type of an inode never changes.
    pub kind: u32,
    fd: OwnedFd,
}

impl Node {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    pub fn is_reg(&self) -> bool {
        self.kind == libc::S_IFREG
    }
}

struct Slot {
    node: Arc<Node>,
    lookups: u64,
}

pub struct NodeTable {
    ids: IdMap,
    slots: RwLock<HashMap<u64, Slot>>,
}

impl NodeTable {
    /// A table holding only the root, pinned by `root_fd` (`O_PATH|O_DIRECTORY`).
    pub fn new(root_fd: OwnedFd) -> Result<NodeTable> {
        let st = sys::fstat(root_fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let root = Arc::new(Node {
            id: ROOT_ID,
            key,
            kind: st.st_mode & libc::S_IFMT,
            fd: root_fd,
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
        })
    }

    pub fn root_key(&self) -> InodeKey {
        self.get(ROOT_ID)
            .map(|n| n.key)
            .expect("root is never forgotten")
    }

    /// The node with this id, or `ESTALE` if the kernel names one it forgot.
    pub fn get(&self, id: u64) -> Result<Arc<Node>> {
        let slots = self.slots.read().expect("node table lock");
        slots
            .get(&id)
            .map(|slot| slot.node.clone())
            .ok_or(Errno::ESTALE)
    }

    /// The id `key` has or would have (for entries listed without a lookup).
    pub fn id_of(&self, key: InodeKey) -> u64 {
        self.ids.id_of(key)
    }

    /// Adds one lookup to the node of `key` if the table has it.
    pub fn acquire_existing(&self, key: InodeKey) -> Option<Arc<Node>> {
        let id = self.ids.id_of(key);
        let mut slots = self.slots.write().expect("node table lock");
        let slot = slots.get_mut(&id)?;
        slot.lookups += 1;
        Some(slot.node.clone())
    }

    /// Adds one lookup to the node of the inode `fd` pins (`st` is its stat),
    /// inserting a node that owns `fd` if the table has none; otherwise `fd`
    /// is closed, the existing node already pins the same inode.
    pub fn acquire(&self, fd: OwnedFd, st: &libc::stat) -> Arc<Node> {
        let key = (st.st_dev, st.st_ino);
        let id = self.ids.id_of(key);
        let mut slots = self.slots.write().expect("node table lock");
        let slot = slots.entry(id).or_insert_with(|| Slot {
            node: Arc::new(Node {
                id,
                key,
                kind: st.st_mode & libc::S_IFMT,
                fd,
            }),
            lookups: 0,
        });
        slot.lookups += 1;
        slot.node.clone()
    }

    /// Removes `n` lookups; the node leaves the table when none remain.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut slots = self.slots.write().expect("node table lock");
        if let Some(slot) = slots.get_mut(&id) {
            slot.lookups = slot.lookups.saturating_sub(n);
            if slot.lookups == 0 {
                slots.remove(&id);
            }
        }
    }

    /// How many lookups the kernel holds on `id` (0 if unknown); for tests.
    pub fn lookups(&self, id: u64) -> u64 {
        let slots = self.slots.read().expect("node table lock");
        slots.get(&id).map_or(0, |s| s.lookups)
    }

    /// Number of nodes in the table, the root included.
    pub fn len(&self) -> usize {
        self.slots.read().expect("node table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
