//! `bkfs check`: is every snapshot restorable whole, is every byte intact?

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;

use rayon::prelude::*;

use super::error::Result;
use super::id::Id;
use super::index::{self, Index};
use super::lock;
use super::pack::{self, Location};
use super::reader::{self, StoreReader};
use super::walk::walk;
use super::Store;

#[derive(Debug, Default)]
pub struct Damage {
    pub pack: String,
    pub id: Id,
    pub reason: String,
    /// `snapshot:path` of every file that uses the chunk.
    pub files: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub bytes_verified: u64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub damaged: Vec<Damage>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.damaged.is_empty()
    }
}

pub fn check(store: &Store, read_data: bool) -> Result<Report> {
    let _lock = lock::reader(&store.locks_dir())?;
    let mut r = Report::default();
    // Snapshots first, then the index: a record is written only after the
    // index file of its blobs, so a writer committing meanwhile cannot make a
    // complete snapshot look broken.
    let snaps = store.snapshots()?;
    r.snapshots = snaps.len();
    r.errors
        .extend(super::snapshot::damaged(&store.snapshots_dir())?);
    let reader = match StoreReader::unlocked(store.clone()) {
        Ok(rd) => rd,
        Err(e) => {
            r.errors
                .push(format!("index: {e} (try `bkfs check --rebuild-index`)"));
            return Ok(r);
        }
    };
    let idx = reader.index();
    r.blobs = idx.len();
    check_packs(store, &idx, &mut r)?;

    // Every snapshot's trees and chunks must be reachable through the index.
    let mut seen_trees = HashSet::new();
    for s in &snaps {
        if idx.get(&s.tree).is_none() {
            r.errors.push(format!(
                "snapshot {}: its tree {} is missing",
                s.name, s.tree
            ));
            continue;
        }
        let mut missing = Vec::new();
        let mut errs = Vec::new();
        walk(
            &reader,
            &s.tree,
            &mut Vec::new(),
            Some(&mut seen_trees),
            &mut |path, n| {
                for p in n.content.iter().filter_map(|p| p.id) {
                    if idx.get(&p).is_none() {
                        missing.push(format!(
                            "{}: chunk {p} is missing",
                            String::from_utf8_lossy(path)
                        ));
                    }
                }
            },
            &mut |path, e| errs.push(format!("{}: {e}", String::from_utf8_lossy(path))),
        );
        for m in missing.into_iter().chain(errs) {
            r.errors.push(format!("snapshot {}: {m}", s.name));
        }
    }

    if read_data {
        read_all(&reader, &mut r);
        if !r.damaged.is_empty() {
            name_affected_files(&reader, &snaps, &mut r.damaged);
        }
    }
    Ok(r)
}

/// Footers against the index: each pack complete, each index entry backed.
fn check_packs(store: &Store, idx: &Index, r: &mut Report) -> Result<()> {
    let mut by_pack: BTreeMap<u32, HashMap<Id, Location>> = BTreeMap::new();
    for (id, loc) in idx.iter() {
        by_pack.entry(loc.pack).or_default().insert(id, loc);
    }
    let on_disk: HashSet<u32> = store.pack_numbers()?.into_iter().collect();
    r.packs = on_disk.len();
    for (num, entries) in &by_pack {
        if !on_disk.contains(num) {
            r.errors.push(format!(
                "pack {} is missing; {} blobs in it are lost",
                pack::pack_name(*num),
                entries.len()
            ));
        }
    }
    let nums: Vec<u32> = on_disk.iter().copied().collect();
    let results: Vec<_> = nums
        .par_iter()
        .map(|&n| {
            (
                n,
                pack::read_footer(&pack::pack_path(&store.packs_dir(), n), n),
            )
        })
        .collect();
    for (n, res) in results {
        let name = pack::pack_name(n);
        match (res, by_pack.get(&n)) {
            (Err(e), _) => r.errors.push(format!("pack {name}: {e}")),
            (Ok(_), None) => r.warnings.push(format!(
                "pack {name} is in no index (left by an interrupted write; the next backup indexes it)"
            )),
            (Ok(footer), Some(indexed)) => {
                let mut listed = 0;
                for e in &footer {
                    match indexed.get(&e.id) {
                        Some(loc) if *loc == e.loc => listed += 1,
                        Some(_) => r.errors.push(format!("pack {name}: index and footer disagree on blob {}", e.id)),
                        None => {}
                    }
                }
                if listed < indexed.len() {
                    r.errors.push(format!(
                        "pack {name}: {} indexed blobs are not in its footer",
                        indexed.len() - listed
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Read every indexed blob and verify it against its id.
fn read_all(reader: &StoreReader, r: &mut Report) {
    let mut by_pack: BTreeMap<u32, Vec<(Id, Location)>> = BTreeMap::new();
    for (id, loc) in reader.index().iter() {
        by_pack.entry(loc.pack).or_default().push((id, loc));
    }
    let packs_dir = reader.store().packs_dir();
    let results: Vec<(u64, Vec<Damage>)> = by_pack
        .into_par_iter()
        .map(|(num, blobs)| {
            let name = pack::pack_name(num);
            let data = match fs::read(pack::pack_path(&packs_dir, num)) {
                Ok(d) => d,
                Err(e) => {
                    let reason = format!("cannot read pack: {e}");
                    return (
                        0,
                        blobs
                            .iter()
                            .map(|(id, _)| Damage {
                                pack: name.clone(),
                                id: *id,
                                reason: reason.clone(),
                                files: vec![],
                            })
                            .collect(),
                    );
                }
            };
            let mut bytes = 0;
            let mut bad = Vec::new();
            for (id, loc) in blobs {
                let end = loc.offset as usize + loc.stored_len as usize;
                let res = match data.get(loc.offset as usize..end) {
                    Some(stored) => reader::decode_blob(&id, &loc, stored).map(|_| ()),
                    None => Err(super::Error::Corrupt("pack is truncated".into())),
                };
                match res {
                    Ok(()) => bytes += loc.raw_len as u64,
                    Err(e) => bad.push(Damage {
                        pack: name.clone(),
                        id,
                        reason: e.to_string(),
                        files: vec![],
                    }),
                }
            }
            (bytes, bad)
        })
        .collect();
    for (b, d) in results {
        r.bytes_verified += b;
        r.damaged.extend(d);
    }
}

fn name_affected_files(reader: &StoreReader, snaps: &[super::Snapshot], damaged: &mut [Damage]) {
    let pos: HashMap<Id, usize> = damaged.iter().enumerate().map(|(i, d)| (d.id, i)).collect();
    for s in snaps {
        if let Some(&i) = pos.get(&s.tree) {
            damaged[i]
                .files
                .push(format!("{}: (the snapshot's top tree)", s.name));
        }
        walk(
            reader,
            &s.tree,
            &mut Vec::new(),
            None,
            &mut |path, n| {
                let ids = n.content.iter().filter_map(|p| p.id).chain(n.subtree);
                for id in ids {
                    if let Some(&i) = pos.get(&id) {
                        let what = if n.subtree == Some(id) {
                            " (directory listing)"
                        } else {
                            ""
                        };
                        damaged[i].files.push(format!(
                            "{}:{}{what}",
                            s.name,
                            String::from_utf8_lossy(path)
                        ));
                    }
                }
            },
            &mut |_, _| {},
        );
    }
}

/// Rebuild the index from the pack footers alone (the packs are the truth).
pub fn rebuild_index(store: &Store) -> Result<usize> {
    let _w = lock::writer(&store.locks_dir(), "check --rebuild-index")?;
    let nums = store.pack_numbers()?;
    let mut entries = Vec::new();
    for &n in &nums {
        match pack::read_footer(&pack::pack_path(&store.packs_dir(), n), n) {
            Ok(es) => entries.extend(es.into_iter().map(|e| (e.id, e.loc))),
            Err(e) => eprintln!("bkfs: warning: skipping pack: {e}"),
        }
    }
    let old = index::index_files(&store.index_dir())?;
    let new = index::write_index_file(&store.index_dir(), &store.tmp_dir(), entries)?;
    for f in old.into_iter().filter(|f| *f != new) {
        let _ = fs::remove_file(f);
    }
    Ok(nums.len())
}
