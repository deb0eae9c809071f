//! What changed between two points in time, as the daemon saw it.

use std::collections::HashSet;

use super::asof::Key;

/// The objects changed through the mount since the barrier of snapshot
/// `since` (a sealed snapshot of the store). A provider uses it to skip what
/// did not change: a directory not in [`ChangeSet::subtree_changed`] is the
/// same as in `since`, all the way down, and an object not in
/// [`ChangeSet::object_changed`] has the same attributes, xattrs and content.
///
/// It is only ever a shortcut: a provider given none compares metadata with
/// the parent snapshot instead (inode, size, mtime, ctime).
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// Name of the snapshot the changes are counted from.
    pub since: String,
    /// Objects whose attributes, xattrs, content or entries changed.
    pub objects: HashSet<Key>,
    /// Directories with a changed object at or below them.
    pub dirs: HashSet<Key>,
}

impl ChangeSet {
    pub fn object_changed(&self, key: Key) -> bool {
        self.objects.contains(&key)
    }

    pub fn subtree_changed(&self, dir: Key) -> bool {
        self.dirs.contains(&dir)
    }

    /// Adds the changes of `other` (a copy that failed gives its changes to
    /// the next one).
    pub fn merge(&mut self, other: &ChangeSet) {
        self.objects.extend(other.objects.iter().copied());
        self.dirs.extend(other.dirs.iter().copied());
    }
}
