//! Node ids of snapshot views: the `st_ino` users see inside snapshots.
//!
//! ```text
//!  63      56 55 54                                    0
//! +----------+--+---------------------------------------+
//! | namespace|T |  local id                             |
//! +----------+--+---------------------------------------+
//! ```
//!
//! - **namespace**: [`Namespace::Snapshots`] for every snapshot a mount shows,
//!   so view ids never meet live ids (namespace 0) and a request is routed by
//!   its id alone.
//! - **T = 0, hashed ids**: the local id is the first 55 bits of
//!   `blake3("bkfs snapview inode" ‖ snapshot name ‖ NUL ‖ source dev ‖ source ino)`.
//!   It depends only on what the store holds, so the same file has the same
//!   number after an unmount and remount (or on another machine mounting the
//!   same store), and hard links (entries of one snapshot with one source
//!   `(dev, ino)`) share one number, which is what `tar`, `rsync -H` and `du`
//!   look at. The same source inode in two snapshots gets two numbers: a
//!   tool walking two snapshots must not take them for links of each other.
//!   Local ids below [`FIRST_HASHED`] are reserved for the view's own nodes;
//!   a hash landing there is handled as a collision.
//! - **T = 1, table ids**: when a hashed id is already held (in the node
//!   table, [`super::nodes`]) by a *different* object, the newcomer gets the
//!   next number of a counter instead, remembered for the life of the mount.
//!   With 55 bits the chance of any collision among n inodes known at once is
//!   about n²/2^56 (10⁻⁵ for a million); only then can a number differ from
//!   one mount to the next.
//!
//! The root of a standalone view (`bkfs mount --store`) is the FUSE root,
//! id 1, which lies in namespace 0 but is never a live id in such a mount.

use crate::vfs::Namespace;

/// The namespace bits every view id carries.
pub const NAMESPACE_BITS: u64 = Namespace::Snapshots.bits();

/// Marks an id handed out by the collision table.
pub const TABLE_BIT: u64 = 1 << 55;

/// Local ids below this are the view's own (`.snapshots` inside a live mount).
pub const FIRST_HASHED: u64 = 1 << 16;

/// The id `.snapshots` gets when the view is embedded in a live mount.
pub const SNAPSHOTS_DIR_ID: u64 = NAMESPACE_BITS | 1;

/// The hashed id of source inode `(dev, ino)` in snapshot `snapshot`.
pub fn hashed(snapshot: &str, dev: u64, ino: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"bkfs snapview inode");
    h.update(snapshot.as_bytes());
    h.update(&[0]);
    h.update(&dev.to_le_bytes());
    h.update(&ino.to_le_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    NAMESPACE_BITS | (u64::from_le_bytes(bytes) & (TABLE_BIT - 1))
}

/// The id of the `latest` symlink while it points at `target`: a new target
/// is a new inode, so the kernel never serves a link text it cached for the
/// old one.
pub fn latest(target: &str) -> u64 {
    hashed(target, u64::MAX, u64::MAX)
}

/// Whether `id` may be handed out as a hashed id (not one of the reserved).
pub fn usable_hash(id: u64) -> bool {
    id & (TABLE_BIT - 1) >= FIRST_HASHED
}

/// The `n`th table id (`n` from 1).
pub fn table(n: u64) -> u64 {
    NAMESPACE_BITS | TABLE_BIT | n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_ids_are_deterministic_per_snapshot_and_in_the_namespace() {
        let a = hashed("nightly", 2049, 1234);
        assert_eq!(a, hashed("nightly", 2049, 1234));
        assert!(Namespace::Snapshots.owns(a));
        assert_eq!(a & TABLE_BIT, 0);
        assert_ne!(a, hashed("weekly", 2049, 1234));
        assert_ne!(a, hashed("nightly", 2050, 1234));
        assert_ne!(a, hashed("nightly", 2049, 1235));
        // The name is delimited: ("ab", …) and ("a", …) with a shifted dev differ.
        assert_ne!(hashed("ab", 0, 0), hashed("a", 0x62, 0));
        assert_ne!(latest("a"), latest("b"));
    }

    #[test]
    fn table_ids_are_apart_from_hashed_ones() {
        let t = table(1);
        assert!(Namespace::Snapshots.owns(t));
        assert_ne!(t & TABLE_BIT, 0);
        assert!(!usable_hash(NAMESPACE_BITS | 5));
        assert!(usable_hash(NAMESPACE_BITS | FIRST_HASHED));
        assert!(!usable_hash(SNAPSHOTS_DIR_ID));
    }
}
