//! Trees: one blob per directory, listing its entries with full metadata.
//!
//! A tree is MessagePack with named fields (docs/FORMAT.md), so later versions
//! can add fields that older readers skip. Entries are sorted by name bytes,
//! which makes the encoding (and so the tree's id) depend only on the content.

use serde::{Deserialize, Serialize};

use super::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chr,
    Blk,
}

pub use crate::types::{Time, Xattr};

/// A piece of a file's content: a chunk, or a hole of `len` zero bytes that
/// occupies no space (sparse files come back sparse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Time,
    pub atime: Time,
    /// Recorded to detect changes on the next backup; not restorable.
    pub ctime: Time,
    /// Source inode and device: change detection, and hard links (entries
    /// with nlink > 1 and the same (dev, ino) are one inode).
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    #[serde(default)]
    pub rdev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub target: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Piece>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

impl Node {
    pub fn is_hardlinked(&self) -> bool {
        self.kind != Kind::Dir && self.nlink > 1
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&mut self) -> Vec<u8> {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        rmp_serde::to_vec_named(self).expect("trees always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Tree, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let v: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        Ok(v.map(|b| b.into_vec()))
    }
}
