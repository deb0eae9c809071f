//! Node ids: the 64-bit numbers the kernel knows our inodes by.
//!
//! In fuser the node id we reply with is also the `st_ino` users see, so it
//! is chosen deliberately:
//!
//! ```text
//!  63      56 55 54                                   0
//! +----------+--+--------------------------------------+
//! | namespace|T |  local id                            |
//! +----------+--+--------------------------------------+
//! ```
//!
//! - **namespace** (top 8 bits): 0 is the live tree's; the others belong to
//!   the other trees of a mount (the registry is [`crate::vfs::ids`]), so
//!   their ids never collide with live ones and a request can be routed by
//!   its id alone.
//! - The FUSE root is always id 1 (`FUSE_ROOT_ID`), whatever the source
//!   directory's own `st_ino` is.
//! - **T = 0, direct ids**: an inode on the source's device whose `st_ino` is
//!   below 2^55 (and not 1) gets its own `st_ino` as id. Users see the same
//!   inode numbers as on the source, stable across forgets and remounts, and
//!   no table is needed: distinct inodes of one device have distinct `st_ino`.
//! - **T = 1, table ids**: any other inode (on another device mounted inside
//!   the source, or with an `st_ino` that does not fit) gets the next number of
//!   a counter, remembered by `(st_dev, st_ino)` for the life of the mount so
//!   it stays stable too. Such inodes are rare; the table grows only with them.

use parking_lot::Mutex;
use std::collections::HashMap;

pub use crate::vfs::ids::ROOT_ID;

/// Marks an id handed out from the table rather than taken from `st_ino`.
const TABLE_BIT: u64 = 1 << 55;

pub use crate::types::InodeKey;

/// Maps backing inodes to live node ids (see the module comment).
#[derive(Debug)]
pub struct IdMap {
    root_key: InodeKey,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    ids: HashMap<InodeKey, u64>,
    next: u64,
}

impl IdMap {
    pub fn new(root_key: InodeKey) -> IdMap {
        IdMap {
            root_key,
            table: Mutex::new(Table::default()),
        }
    }

    /// Device of the source root.
    pub fn root_dev(&self) -> u64 {
        self.root_key.0
    }

    /// The id of the inode `key`; allocates a table id on first sight if needed.
    pub fn id_of(&self, key: InodeKey) -> u64 {
        if key == self.root_key {
            return ROOT_ID;
        }
        let (dev, ino) = key;
        if dev == self.root_key.0 && ino < TABLE_BIT && ino != ROOT_ID && ino != 0 {
            return ino;
        }
        let mut table = self.table.lock();
        if let Some(&id) = table.ids.get(&key) {
            return id;
        }
        table.next += 1;
        let id = TABLE_BIT | table.next;
        table.ids.insert(key, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_one_and_direct_ids_are_st_ino() {
        let map = IdMap::new((8, 2));
        assert_eq!(map.id_of((8, 2)), ROOT_ID);
        assert_eq!(map.id_of((8, 12345)), 12345);
        assert!(crate::vfs::Namespace::Live.owns(map.id_of((8, 12345))));
    }

    #[test]
    fn other_devices_and_big_or_reserved_inos_use_the_table_stably() {
        let map = IdMap::new((8, 2));
        let a = map.id_of((9, 12345));
        let b = map.id_of((8, 1));
        let c = map.id_of((8, 1 << 60));
        for id in [a, b, c] {
            assert_ne!(id & TABLE_BIT, 0);
            assert!(crate::vfs::Namespace::Live.owns(id));
        }
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(map.id_of((9, 12345)), a);
        assert_ne!(a, 12345);
    }
}
