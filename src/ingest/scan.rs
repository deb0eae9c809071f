//! Counting what a copy will read, ahead of it, for a progress display's
//! totals: [`scan`] walks the source; [`scan_changes`] counts what a change
//! set says is unchanged from the parent snapshot, as the copy reuses it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{count_tree, reusable, AsOf, ChangeSet, Counts, Progress};
use crate::store::{Id, Kind, Node, Store, StoreReader};

/// Count files and bytes under `src` into `progress.total_*` (for a progress
/// display's totals), then set `scan_done`. Unreadable entries are skipped;
/// `scan_stop` ends it early.
pub fn scan<A: AsOf>(src: &A, progress: &Progress) {
    if let Ok(root) = src.root() {
        scan_obj(src, root, None, None, progress);
    }
    done(progress);
}

/// As [`scan`], for a [`copy`](super::copy) given `changes`: what the change set says is
/// unchanged is counted from the parent snapshot `changes.since`, as the
/// copy will, without looking at the source.
pub fn scan_changes<A: AsOf>(store: &Store, src: &A, changes: &ChangeSet, progress: &Progress) {
    let parent = store.reader().ok().and_then(|r| {
        let snap = store.snapshot(&changes.since).ok()?;
        let root = r.tree(&snap.tree).ok()?.nodes.first().cloned()?;
        Some((r, root))
    });
    if let Ok(root) = src.root() {
        match &parent {
            Some((r, old)) => {
                let ctx = ScanReuse {
                    reader: r,
                    changes,
                    memo: Mutex::new(HashMap::new()),
                };
                scan_obj(src, root, Some(old), Some(&ctx), progress);
            }
            None => scan_obj(src, root, None, None, progress),
        }
    }
    done(progress);
}

/// The totals are known, unless the scan was stopped before its end.
fn done(progress: &Progress) {
    if !progress.scan_stop.load(Ordering::Relaxed) {
        progress.scan_done.store(true, Ordering::Relaxed);
    }
}

struct ScanReuse<'a> {
    reader: &'a StoreReader,
    changes: &'a ChangeSet,
    memo: Mutex<HashMap<Id, Counts>>,
}

fn scan_obj<A: AsOf>(
    src: &A,
    obj: A::Obj,
    old: Option<&Node>,
    reuse: Option<&ScanReuse>,
    progress: &Progress,
) {
    if progress.scan_stop.load(Ordering::Relaxed) {
        return;
    }
    let add = |files: u64, bytes: u64| {
        progress.total_files.fetch_add(files, Ordering::Relaxed);
        progress.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    };
    if let (Some(ctx), Some(o)) = (reuse, old) {
        if let Some(o) = reusable(ctx.changes, src.key(&obj), o) {
            match o.subtree {
                Some(id) => {
                    if let Ok(c) = count_tree(ctx.reader, &ctx.memo, id) {
                        return add(c.files, c.bytes);
                    }
                }
                None if o.kind == Kind::File => return add(1, o.size),
                None => return add(1, 0),
            }
        }
    }
    let Ok(st) = src.stat(&obj) else { return };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let Ok(names) = src.list(&obj) else { return };
            let old_tree = reuse.zip(old).and_then(|(ctx, o)| {
                let id = o.subtree.filter(|_| o.kind == Kind::Dir)?;
                ctx.reader.tree(&id).ok()
            });
            names.par_iter().for_each(|n| {
                let Ok(child) = src.child(&obj, n) else {
                    return;
                };
                let o = old_tree.as_ref().and_then(|t| t.find(n));
                scan_obj(src, child, o, reuse, progress);
            });
        }
        libc::S_IFSOCK => {}
        libc::S_IFREG => add(1, st.st_size as u64),
        _ => add(1, 0),
    }
}
