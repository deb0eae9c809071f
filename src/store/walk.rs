//! Walking the trees of a snapshot: for check, gc, diff and path look-ups.

use std::collections::HashSet;

use super::error::Result;
use super::id::Id;
use super::reader::StoreReader;
use super::tree::Node;

/// Visit every node under tree `id`, with its path ('/'-separated bytes).
/// Subtrees whose id is in `skip` are not entered (each tree once per walk, for
/// callers that only need the set of blobs); errors are handed to `on_error`
/// with the path of the directory that could not be read, and the walk goes on.
pub fn walk(
    reader: &StoreReader,
    id: &Id,
    path: &mut Vec<u8>,
    skip: Option<&mut HashSet<Id>>,
    visit: &mut dyn FnMut(&[u8], &Node),
    on_error: &mut dyn FnMut(&[u8], super::Error),
) {
    let mut skip = skip;
    if let Some(s) = skip.as_deref_mut() {
        if !s.insert(*id) {
            return;
        }
    }
    let tree = match reader.tree(id) {
        Ok(t) => t,
        Err(e) => return on_error(path, e),
    };
    for n in &tree.nodes {
        let len = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&n.name);
        visit(path, n);
        if let Some(sub) = &n.subtree {
            walk(reader, sub, path, skip.as_deref_mut(), visit, on_error);
        }
        path.truncate(len);
    }
}

/// Every blob id (trees and data) a snapshot's top tree reaches, added to `live`.
pub fn mark(reader: &StoreReader, top: &Id, live: &mut HashSet<Id>) -> Result<()> {
    let mut err = None;
    let mut data = Vec::new();
    walk(
        reader,
        top,
        &mut Vec::new(),
        Some(live),
        &mut |_, n| data.extend(n.content.iter().filter_map(|p| p.id)),
        &mut |_, e| {
            if err.is_none() {
                err = Some(e)
            }
        },
    );
    if let Some(e) = err {
        return Err(e);
    }
    live.extend(data);
    Ok(())
}
