//! `bkfs gc`: delete what no snapshot uses; repack packs that are partly used.
//!
//! Order, so that a crash at any point leaves a valid store:
//! 1. live blobs of partly used packs are copied into new packs (durable, indexed);
//! 2. one new index file lists every blob of the packs that stay;
//! 3. the old index files go;
//! 4. the dead packs go.
//!
//! Until 2 the old index is whole; after 3 a dead pack not yet deleted is only
//! an unindexed pack, which the next writer re-indexes and the next gc removes.

use std::collections::{BTreeMap, HashSet};
use std::fs;

use super::error::Result;
use super::index::{self, Index};
use super::lock;
use super::pack;
use super::walk::mark;
use super::Store;

/// A pack is repacked when more than this share of its bytes is dead.
const REPACK_DEAD_SHARE: f64 = 0.10;

#[derive(Debug, Default)]
pub struct Report {
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    pub bytes_repacked: u64,
}

pub fn gc(store: &Store) -> Result<Report> {
    let mut w = store.writer("gc")?;
    let _readers = lock::exclusive_readers(&store.locks_dir())?;
    let reader = w.reader()?;

    let mut live = HashSet::new();
    for s in store.snapshots()? {
        mark(&reader, &s.tree, &mut live)?;
    }

    #[derive(Default)]
    struct PackUse {
        live: u64,
        dead: u64,
        dead_blobs: usize,
    }
    let mut usage: BTreeMap<u32, PackUse> = BTreeMap::new();
    for (id, loc) in reader.index().iter() {
        let u = usage.entry(loc.pack).or_default();
        let len = loc.stored_len as u64;
        if live.contains(&id) {
            u.live += len;
        } else {
            u.dead += len;
            u.dead_blobs += 1;
        }
    }

    let mut report = Report::default();
    let mut doomed = Vec::new();
    for (&num, u) in &usage {
        if u.dead == 0 {
            continue;
        }
        let share = u.dead as f64 / (u.live + u.dead) as f64;
        if u.live == 0 || share > REPACK_DEAD_SHARE {
            doomed.push(num);
            report.blobs_deleted += u.dead_blobs;
            report.bytes_freed += u.dead;
            if u.live > 0 {
                report.packs_repacked += 1;
                report.bytes_repacked += u.live;
            } else {
                report.packs_deleted += 1;
            }
        }
    }
    if doomed.is_empty() {
        return Ok(report);
    }

    // 1. Copy the live blobs out of packs that go, as stored (no recompression);
    //    each is verified first so damage is not carried into a new pack.
    for &num in &doomed {
        let footer = pack::read_footer(&pack::pack_path(&store.packs_dir(), num), num)?;
        for e in footer.into_iter().filter(|e| live.contains(&e.id)) {
            let stored = reader.read_stored(&e.loc)?;
            super::reader::decode_blob(&e.id, &e.loc, &stored)?;
            w.put_stored(e.id, e.kind, &stored, e.loc.raw_len)?;
        }
    }
    w.commit(None)?;

    // 2. One index for everything that stays.
    let doomed_set: HashSet<u32> = doomed.iter().copied().collect();
    let now = Index::load(&store.index_dir())?;
    let keep: Vec<_> = now
        .iter()
        .filter(|(_, l)| !doomed_set.contains(&l.pack))
        .collect();
    let old_files = now.file_paths();
    drop(now);
    let new_file = index::write_index_file(&store.index_dir(), &store.tmp_dir(), keep)?;

    // 3. and 4.
    for f in old_files.into_iter().filter(|f| *f != new_file) {
        let _ = fs::remove_file(f);
    }
    super::fsync_dir(&store.index_dir())?;
    for num in doomed {
        let _ = fs::remove_file(pack::pack_path(&store.packs_dir(), num));
    }
    super::fsync_dir(&store.packs_dir())?;
    Ok(report)
}
