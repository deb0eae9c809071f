//! Node ids and the one registry of their namespaces.
//!
//! In fuser the node id a tree replies with is also the `st_ino` users see,
//! and one mount serves several trees, so an id says which tree it belongs
//! to in its top byte:
//!
//! ```text
//!  63      56 55                                       0
//! +----------+------------------------------------------+
//! | namespace|  the tree's own id                       |
//! +----------+------------------------------------------+
//! ```
//!
//! | namespace | tree |
//! |---|---|
//! | 0 | the live tree ([`crate::live::ids`] says how its ids are made) |
//! | 1 | the control files and `.quiesce/` ([`crate::control`]) |
//! | 2 | snapshots: `.snapshots/` and every node of every snapshot shown, sealed or pending (both views give an object the same id, [`crate::snapview::ids`]) |
//! | 3 | a pending snapshot's nodes that the sealed view would not number alike (hash collisions, [`crate::snapshot::pitview`]) |
//!
//! An id in any other namespace was never handed out: `ESTALE`.

use super::{Errno, Result};

/// Bits below the namespace byte.
pub const NAMESPACE_SHIFT: u32 = 56;

/// The root directory of every mount (`FUSE_ROOT_ID`).
pub const ROOT_ID: u64 = 1;

/// A node id: the `st_ino` users see; its top byte is its [`Namespace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    pub const ROOT: NodeId = NodeId(ROOT_ID);

    /// The tree this id belongs to; `ESTALE` for a namespace no tree has.
    pub fn namespace(self) -> Result<Namespace> {
        Namespace::of(self.0)
    }

    pub fn is_root(self) -> bool {
        self.0 == ROOT_ID
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Which tree of a mount an id belongs to (the table above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    Live = 0,
    Control = 1,
    Snapshots = 2,
    Pending = 3,
}

impl Namespace {
    pub const ALL: [Namespace; 4] = [
        Namespace::Live,
        Namespace::Control,
        Namespace::Snapshots,
        Namespace::Pending,
    ];

    /// The namespace of id `id`; `ESTALE` for one no tree has.
    pub fn of(id: u64) -> Result<Namespace> {
        let byte = (id >> NAMESPACE_SHIFT) as u8;
        Namespace::ALL
            .into_iter()
            .find(|n| *n as u8 == byte)
            .ok_or(Errno::ESTALE)
    }

    /// The bits every id of this namespace has.
    pub const fn bits(self) -> u64 {
        (self as u64) << NAMESPACE_SHIFT
    }

    /// Whether `id` is in this namespace.
    pub fn owns(self, id: u64) -> bool {
        id >> NAMESPACE_SHIFT == self as u64
    }

    /// The largest local part an id of a namespace may have.
    pub const LOCAL_MASK: u64 = (1 << NAMESPACE_SHIFT) - 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_round_trips_and_unknown_ones_are_stale() {
        for ns in Namespace::ALL {
            let id = ns.bits() | 42;
            assert_eq!(Namespace::of(id), Ok(ns));
            assert!(ns.owns(id));
            assert_eq!(NodeId(id).namespace(), Ok(ns));
        }
        assert_eq!(NodeId::ROOT.namespace(), Ok(Namespace::Live));
        for byte in [4u64, 0x80, 0xff] {
            assert_eq!(Namespace::of(byte << NAMESPACE_SHIFT), Err(Errno::ESTALE));
        }
    }
}
