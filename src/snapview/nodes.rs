//! The view nodes the kernel knows, by id, with their lookup counts.
//!
//! Each node refers into a decoded tree (shared, never copied) and keeps the
//! things worth computing once per inode: a directory's own listing and a
//! file's [`Layout`]. A node is dropped when the kernel forgets it.
//!
//! Ids come from [`super::ids`]: hashed from (snapshot, source dev, source
//! ino). Before an id is handed out, the object already holding it (if any)
//! is compared with the newcomer; a different object means a hash collision,
//! and the newcomer gets a table id, kept for the life of the mount.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

use super::attr::Attr;
use super::catalog::Snap;
use super::ids;
use super::layout::Layout;
use crate::store::{Node, Tree};

/// What a view node is.
pub enum What {
    /// An entry of a snapshot: `listing.nodes[index]`. A snapshot's root
    /// directory is the only node of its top tree.
    Entry { listing: Arc<Tree>, index: usize },
    /// The `latest` symlink, pointing at `snap`.
    Latest,
}

pub struct ViewNode {
    pub id: u64,
    /// The directory it was first found in (for `..` in listings).
    pub parent: u64,
    pub snap: Arc<Snap>,
    pub what: What,
    /// A directory's own listing, once loaded.
    pub children: OnceLock<Arc<Tree>>,
    /// A file's piece offsets, once read.
    pub layout: OnceLock<Arc<Layout>>,
    /// Where the last read of the file ended: a read starting there is
    /// sequential (and earns read-ahead).
    pub next_read: AtomicU64,
    /// The file's content was offered to the kernel's page cache.
    pub pushed: AtomicBool,
}

impl ViewNode {
    pub fn new(snap: Arc<Snap>, what: What, parent: u64) -> ViewNode {
        ViewNode {
            id: 0,
            parent,
            snap,
            what,
            children: OnceLock::new(),
            layout: OnceLock::new(),
            next_read: AtomicU64::new(0),
            pushed: AtomicBool::new(false),
        }
    }

    /// The recorded node (`None` for `latest`).
    pub fn node(&self) -> Option<&Node> {
        match &self.what {
            What::Entry { listing, index } => Some(&listing.nodes[*index]),
            What::Latest => None,
        }
    }

    /// Attributes; `owner` and the snapshot time serve `latest`.
    pub fn attr(&self, owner: (u32, u32)) -> Attr {
        match self.node() {
            Some(n) => Attr::of_node(self.id, n),
            None => {
                let mut a = Attr::synthetic(self.id, libc::S_IFLNK, 0o777, owner, self.snap.time);
                a.size = self.snap.name().len() as u64;
                a
            }
        }
    }

    /// Its identity as an object: what its hashed id is derived from, and
    /// a fingerprint of what [`ViewNode::same_object`] compares, so that two
    /// objects sharing a source inode number are told apart.
    fn key(&self) -> Key {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let (dev, ino) = match self.node() {
            Some(n) => {
                (n.kind as u8, n.size, n.mtime.sec, n.mtime.nsec).hash(&mut h);
                (n.ctime.sec, n.ctime.nsec, &n.subtree, &n.target).hash(&mut h);
                for p in &n.content {
                    (p.id, p.len).hash(&mut h);
                }
                (n.dev, n.ino)
            }
            None => (u64::MAX, u64::MAX),
        };
        (self.snap.name().to_string(), dev, ino, h.finish())
    }

    fn hashed_id(&self) -> u64 {
        match self.node() {
            Some(n) => ids::hashed(self.snap.name(), n.dev, n.ino),
            None => ids::latest(self.snap.name()),
        }
    }

    /// Whether `self` and `other` are one object: the same inode of the same
    /// snapshot (two names of a hard link), not two objects whose ids collide.
    fn same_object(&self, other: &ViewNode) -> bool {
        if !self.snap.same(&other.snap) {
            return false;
        }
        match (self.node(), other.node()) {
            (Some(a), Some(b)) => {
                a.dev == b.dev
                    && a.ino == b.ino
                    && a.kind == b.kind
                    && a.size == b.size
                    && a.mtime == b.mtime
                    && a.ctime == b.ctime
                    && a.content == b.content
                    && a.subtree == b.subtree
                    && a.target == b.target
            }
            (None, None) => true,
            _ => false,
        }
    }
}

/// Snapshot name, source dev and ino, fingerprint.
type Key = (String, u64, u64, u64);

struct Known {
    node: Arc<ViewNode>,
    lookups: u64,
}

#[derive(Default)]
struct Inner {
    known: HashMap<u64, Known>,
    /// Objects moved to table ids by a collision, for the life of the mount.
    moved: HashMap<Key, u64>,
    table_ids: u64,
}

#[derive(Default)]
pub struct NodeTable {
    inner: RwLock<Inner>,
}

impl NodeTable {
    pub fn get(&self, id: u64) -> Option<Arc<ViewNode>> {
        let inner = self.inner.read();
        inner.known.get(&id).map(|k| k.node.clone())
    }

    /// Hands `node` to the kernel: returns the node known under its id (an
    /// earlier name of the same inode, or `node` itself with its id set), with
    /// one more lookup.
    pub fn enter(&self, mut node: ViewNode) -> Arc<ViewNode> {
        let mut inner = self.inner.write();
        // Collisions are rare: most mounts never compute a key.
        let moved = (!inner.moved.is_empty())
            .then(|| inner.moved.get(&node.key()).copied())
            .flatten();
        let mut id = moved.unwrap_or_else(|| node.hashed_id());
        let collides = |inner: &Inner, id: u64| {
            !ids::usable_hash(id)
                || inner
                    .known
                    .get(&id)
                    .is_some_and(|k| !k.node.same_object(&node))
        };
        if id & ids::TABLE_BIT == 0 && collides(&inner, id) {
            inner.table_ids += 1;
            id = ids::table(inner.table_ids);
            tracing::debug!(
                "inode id collision in snapshot {}: table id {id:#x}",
                node.snap.name()
            );
            inner.moved.insert(node.key(), id);
        }
        if let Some(k) = inner.known.get_mut(&id) {
            k.lookups += 1;
            return k.node.clone();
        }
        node.id = id;
        let node = Arc::new(node);
        inner.known.insert(
            id,
            Known {
                node: node.clone(),
                lookups: 1,
            },
        );
        node
    }

    /// The kernel dropped `n` references to `id`.
    pub fn forget(&self, id: u64, n: u64) {
        let mut inner = self.inner.write();
        if let Some(k) = inner.known.get_mut(&id) {
            k.lookups = k.lookups.saturating_sub(n);
            if k.lookups == 0 {
                inner.known.remove(&id);
            }
        }
    }

    /// The known node that is entry `index` of `listing` in `snap`, if the
    /// kernel holds it under its hashed id.
    pub fn known_entry(
        &self,
        snap: &Snap,
        listing: &Arc<Tree>,
        index: usize,
    ) -> Option<Arc<ViewNode>> {
        let n = &listing.nodes[index];
        let node = self.get(ids::hashed(snap.name(), n.dev, n.ino))?;
        match &node.what {
            What::Entry {
                listing: l,
                index: i,
            } if Arc::ptr_eq(l, listing) && *i == index => Some(node),
            _ => None,
        }
    }

    /// Number of nodes the kernel holds.
    pub fn len(&self) -> usize {
        self.inner.read().known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id `node` has or would get, without handing it out (plain
    /// `readdir`, which passes no reference to the kernel).
    pub fn peek_id(&self, node: &ViewNode) -> u64 {
        let inner = self.inner.read();
        (!inner.moved.is_empty())
            .then(|| inner.moved.get(&node.key()).copied())
            .flatten()
            .unwrap_or_else(|| node.hashed_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Id, Kind, Snapshot, Time};

    fn snap(name: &str) -> Arc<Snap> {
        Arc::new(Snap::new(Snapshot {
            name: name.into(),
            time: "2026-11-22T03:04:05Z".into(),
            tree: Id::of(name.as_bytes()),
            source: "/src".into(),
            hostname: "h".into(),
            stats: Default::default(),
            capture: None,
        }))
    }

    fn node(name: &[u8], ino: u64, mtime: i64) -> Node {
        Node {
            name: name.to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: Time {
                sec: mtime,
                nsec: 0,
            },
            atime: Time::default(),
            ctime: Time::default(),
            ino,
            dev: 1,
            nlink: 2,
            rdev: 0,
            target: None,
            xattrs: vec![],
            content: vec![],
            subtree: None,
        }
    }

    fn entry(snap: &Arc<Snap>, tree: &Arc<Tree>, index: usize) -> ViewNode {
        let listing = tree.clone();
        ViewNode::new(snap.clone(), What::Entry { listing, index }, 1)
    }

    #[test]
    fn links_share_a_node_and_a_reused_inode_number_gets_a_table_id() {
        let s = snap("one");
        // a and b: two names of one inode; c: another object that the
        // source gave the same inode number (reused during the backup).
        let tree = Arc::new(Tree {
            nodes: vec![node(b"a", 7, 100), node(b"b", 7, 100), node(b"c", 7, 200)],
        });
        let table = NodeTable::default();
        let a = table.enter(entry(&s, &tree, 0));
        let b = table.enter(entry(&s, &tree, 1));
        assert_eq!(a.id, ids::hashed("one", 1, 7));
        assert!(Arc::ptr_eq(&a, &b));
        let c = table.enter(entry(&s, &tree, 2));
        assert_eq!(c.id, ids::table(1));
        assert_eq!(c.node().unwrap().name, b"c");
        // The links keep their id; c is known under its table id from now
        // on, also after being forgotten.
        assert!(Arc::ptr_eq(&table.enter(entry(&s, &tree, 1)), &a));
        table.forget(a.id, 1);
        table.forget(c.id, 1);
        assert!(table.get(c.id).is_none());
        assert_eq!(table.enter(entry(&s, &tree, 2)).id, ids::table(1));
        assert_eq!(table.peek_id(&entry(&s, &tree, 2)), ids::table(1));
        // Two lookups of a/b: gone after both are forgotten.
        table.forget(a.id, 1);
        assert!(table.get(a.id).is_some());
        table.forget(a.id, 1);
        assert!(table.get(a.id).is_none());
        assert_eq!(table.len(), 1);
    }
}
