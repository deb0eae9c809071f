//! Attributes of view nodes: exactly what the store recorded.

use crate::store::{Kind, Node, Piece};

/// Preferred I/O size reported in `st_blksize`: large, so that `cp` and
/// friends read whole chunks' worth per call.
pub use crate::vfs::BLKSIZE;

/// Allocation unit assumed for `st_blocks` (that of ext4 and most others).
const ALLOC_UNIT: u64 = 4096;

pub use crate::vfs::Attr;

pub fn kind_bits(kind: Kind) -> u32 {
    match kind {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
        Kind::Symlink => libc::S_IFLNK,
        Kind::Fifo => libc::S_IFIFO,
        Kind::Chr => libc::S_IFCHR,
        Kind::Blk => libc::S_IFBLK,
    }
}

fn round_up(n: u64, unit: u64) -> u64 {
    n.div_ceil(unit) * unit
}

/// 512-byte blocks a node would occupy: a file's data pieces (not its
/// holes, so `du` of a sparse file shows what it really takes), a
/// directory's size; symlinks and special files none.
pub fn blocks(node: &Node) -> u64 {
    let bytes = match node.kind {
        Kind::File => node
            .content
            .iter()
            .filter(|p: &&Piece| p.id.is_some())
            .map(|p| round_up(p.len, ALLOC_UNIT))
            .sum(),
        Kind::Dir => round_up(node.size, ALLOC_UNIT),
        _ => 0,
    };
    bytes / 512
}

impl Attr {
    /// The recorded attributes of `node`, shown with id `ino`.
    pub fn of_node(ino: u64, node: &Node) -> Attr {
        Attr {
            blksize: BLKSIZE,
            ino,
            kind: kind_bits(node.kind),
            perm: (node.mode & 0o7777) as u16,
            nlink: node.nlink.min(u64::from(u32::MAX)) as u32,
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            size: node.size,
            blocks: blocks(node),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Id, Time};

    fn file(content: Vec<Piece>) -> Node {
        Node {
            name: b"f".to_vec(),
            kind: Kind::File,
            mode: 0o4755,
            uid: 7,
            gid: 8,
            size: content.iter().map(|p| p.len).sum(),
            mtime: Time { sec: 5, nsec: 6 },
            atime: Time { sec: 3, nsec: 4 },
            ctime: Time { sec: 9, nsec: 10 },
            ino: 11,
            dev: 12,
            nlink: 2,
            rdev: 0,
            target: None,
            xattrs: vec![],
            content,
            subtree: None,
        }
    }

    #[test]
    fn attributes_are_the_recorded_ones_and_holes_take_no_blocks() {
        let data = |len| Piece {
            id: Some(Id::of(b"x")),
            len,
        };
        let hole = |len| Piece { id: None, len };
        let n = file(vec![data(100), hole(1 << 20), data(5000)]);
        let a = Attr::of_node(42, &n);
        assert_eq!(a.ino, 42);
        assert_eq!(a.kind, libc::S_IFREG);
        assert_eq!(a.perm, 0o4755);
        assert_eq!((a.uid, a.gid, a.nlink), (7, 8, 2));
        assert_eq!(a.size, 100 + (1 << 20) + 5000);
        assert_eq!(a.blocks, (4096 + 8192) / 512);
        assert_eq!((a.atime, a.mtime, a.ctime), (n.atime, n.mtime, n.ctime));
        assert_eq!(Attr::of_node(1, &file(vec![hole(1 << 30)])).blocks, 0);
    }
}
