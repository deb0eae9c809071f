//! Writing blobs into a store: deduplicated, compressed, packed, crash-safe.
//!
//! Many threads call [`StoreWriter::put`] at once. Compression runs on the
//! calling thread; the append into the current pack is a short critical
//! section; a full pack is handed to a finisher thread that writes its footer,
//! fsyncs and renames it while the others go on filling the next one.
//! [`StoreWriter::commit`] makes everything durable and writes the index file;
//! only after that may a snapshot record refer to the blobs.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::blob;
use super::error::{Error, IoContext, Result};
use super::id::Id;
use super::index::{self, Index};
use super::lock::{self, Lock};
use super::pack::{self, BlobKind, Location, PackWriter};
use super::reader::StoreReader;
use super::snapshot::{self, Snapshot};
use super::Store;

const SHARDS: usize = 32;

#[derive(Debug, Default)]
pub struct WriteStats {
    pub data_blobs_new: AtomicU64,
    /// Plaintext bytes of data chunks new to the store.
    pub data_bytes_new: AtomicU64,
    /// Bytes those chunks take in packs.
    pub data_bytes_stored: AtomicU64,
    pub tree_blobs_new: AtomicU64,
    pub tree_bytes_stored: AtomicU64,
}

#[derive(Default)]
struct Finished {
    entries: Vec<(Id, Location)>,
    packs: Vec<u32>,
    error: Option<Error>,
}

pub struct StoreWriter {
    store: Store,
    index: Index,
    seen: Vec<Mutex<HashSet<Id>>>,
    current: Mutex<Option<PackWriter>>,
    next_pack: AtomicU32,
    to_finish: Option<Sender<PackWriter>>,
    finisher: Option<JoinHandle<()>>,
    finished: Arc<Mutex<Finished>>,
    committed: bool,
    pub stats: WriteStats,
    _lock: Lock,
}

impl StoreWriter {
    pub fn open(store: Store, what: &str) -> Result<StoreWriter> {
        let lock = lock::writer(&store.locks_dir(), what)?;
        clean_tmp(&store)?;
        recover_orphan_packs(&store)?;
        let index = Index::load(&store.index_dir())?;
        let max_pack = store
            .pack_numbers()?
            .into_iter()
            .chain(index.packs())
            .max()
            .unwrap_or(0);
        let finished = Arc::new(Mutex::new(Finished::default()));
        let (tx, rx) = crossbeam_channel::unbounded();
        let fin = finished.clone();
        let finisher = std::thread::Builder::new()
            .name("bkfs-pack-finisher".into())
            .spawn(move || finish_packs(rx, fin))
            .ctx(|| "starting the pack finisher thread".into())?;
        Ok(StoreWriter {
            store,
            index,
            seen: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            current: Mutex::new(None),
            next_pack: AtomicU32::new(max_pack + 1),
            to_finish: Some(tx),
            finisher: Some(finisher),
            finished,
            committed: false,
            stats: WriteStats::default(),
            _lock: lock,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A reader over what the store held when this writer opened (for the
    /// previous snapshot's trees). The writer lock keeps gc away from it.
    pub fn reader(&self) -> Result<StoreReader> {
        StoreReader::unlocked(self.store.clone())
    }

    /// Store `data` unless the store already has it. Returns its id.
    pub fn put(&self, kind: BlobKind, data: &[u8]) -> Result<Id> {
        let id = Id::of_large(data);
        self.put_with_id(id, kind, data)?;
        Ok(id)
    }

    /// As [`put`](Self::put), for a caller that already hashed `data`.
    /// Returns whether the blob was new.
    pub fn put_with_id(&self, id: Id, kind: BlobKind, data: &[u8]) -> Result<bool> {
        if self.index.contains(&id) {
            return Ok(false);
        }
        let shard = &self.seen[(id.0[0] as usize) % SHARDS];
        if !shard.lock().insert(id) {
            return Ok(false);
        }
        if let Some(e) = self.finished.lock().error.take() {
            return Err(e);
        }
        let compressed = blob::compress(data, self.store.config().compression_level)?;
        let stored: &[u8] = compressed.as_deref().unwrap_or(data);
        self.append(id, kind, stored, data.len() as u32)?;
        let s = &self.stats;
        match kind {
            BlobKind::Data => {
                s.data_blobs_new.fetch_add(1, Ordering::Relaxed);
                s.data_bytes_new
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                s.data_bytes_stored
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
            }
            BlobKind::Tree => {
                s.tree_blobs_new.fetch_add(1, Ordering::Relaxed);
                s.tree_bytes_stored
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(true)
    }

    /// Copy a blob's stored bytes as they are into a new pack (gc's repacking),
    /// whether or not the index already lists it.
    pub(crate) fn put_stored(
        &self,
        id: Id,
        kind: BlobKind,
        stored: &[u8],
        raw_len: u32,
    ) -> Result<()> {
        if !self.seen[(id.0[0] as usize) % SHARDS].lock().insert(id) {
            return Ok(());
        }
        self.append(id, kind, stored, raw_len)
    }

    fn append(&self, id: Id, kind: BlobKind, stored: &[u8], raw_len: u32) -> Result<()> {
        let full = {
            let mut cur = self.current.lock();
            if cur.is_none() {
                let num = self.next_pack.fetch_add(1, Ordering::Relaxed);
                *cur = Some(PackWriter::create(
                    &self.store.tmp_dir(),
                    &self.store.packs_dir(),
                    num,
                )?);
            }
            let p = cur.as_mut().unwrap();
            p.add(id, kind, stored, raw_len)?;
            if p.len() >= self.store.config().pack_size.min(pack::MAX_PACK_LEN) {
                cur.take()
            } else {
                None
            }
        };
        if let Some(p) = full {
            self.to_finish
                .as_ref()
                .expect("sender lives until commit")
                .send(p)
                .map_err(|_| Error::Other("pack finisher thread has stopped".into()))?;
        }
        Ok(())
    }

    /// Make every blob written so far durable and indexed, then (if given)
    /// record the snapshot. Until this returns, nothing refers to the new blobs.
    pub fn commit(&mut self, snap: Option<&Snapshot>) -> Result<()> {
        self.flush()?;
        let entries = std::mem::take(&mut self.finished.lock().entries);
        let dir = self.store.index_dir();
        let tmp = self.store.tmp_dir();
        if !entries.is_empty() {
            super::fsync_dir(&self.store.packs_dir())?;
            let files = self.index.file_paths();
            if files.len() >= index::MERGE_ABOVE {
                // Merge: one file with everything, then the old ones go.
                let mut all: Vec<_> = self.index.iter().collect();
                all.extend(entries);
                index::write_index_file(&dir, &tmp, all)?;
                for f in files {
                    let _ = fs::remove_file(f);
                }
            } else {
                index::write_index_file(&dir, &tmp, entries)?;
            }
        }
        self.finished.lock().packs.clear();
        self.committed = true;
        if let Some(s) = snap {
            snapshot::save(&self.store.snapshots_dir(), &tmp, s)?;
        }
        Ok(())
    }

    /// Finish the current pack and wait for the finisher.
    fn flush(&mut self) -> Result<()> {
        let last = self.current.lock().take();
        if let Some(p) = last {
            if !p.is_empty() {
                self.to_finish.as_ref().unwrap().send(p).ok();
            } else {
                p.abandon();
            }
        }
        drop(self.to_finish.take());
        if let Some(h) = self.finisher.take() {
            h.join()
                .map_err(|_| Error::Other("pack finisher thread panicked".into()))?;
        }
        match self.finished.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn forget(&self, name: &str) -> Result<()> {
        snapshot::remove(&self.store.snapshots_dir(), name)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // A failed or abandoned write: drop the pack being filled, and delete
        // the packs this session finished, which nothing refers to (they would
        // otherwise hold the space a full disk needs back).
        if let Some(p) = self.current.lock().take() {
            p.abandon();
        }
        let _ = self.flush();
        let packs = std::mem::take(&mut self.finished.lock().packs);
        for n in packs {
            let _ = fs::remove_file(pack::pack_path(&self.store.packs_dir(), n));
        }
        let _ = clean_tmp(&self.store);
    }
}

fn finish_packs(rx: Receiver<PackWriter>, finished: Arc<Mutex<Finished>>) {
    for p in rx {
        let num = p.num();
        match p.finish() {
            Ok(entries) => {
                let mut f = finished.lock();
                f.packs.push(num);
                f.entries.extend(entries.into_iter().map(|e| (e.id, e.loc)));
            }
            Err(e) => {
                let mut f = finished.lock();
                if f.error.is_none() {
                    f.error = Some(e);
                }
            }
        }
    }
}

/// Anything in tmp/ is a leftover of a writer that died; we hold the lock.
fn clean_tmp(store: &Store) -> Result<()> {
    let dir = store.tmp_dir();
    for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
        let e = e.ctx(|| format!("reading {}", dir.display()))?;
        let _ = fs::remove_file(e.path());
    }
    Ok(())
}

/// Packs that no index file lists: a writer died after finishing them but
/// before writing its index. Their blobs are sound (a pack gets its name only
/// once complete and synced), so index them rather than lose the work.
fn recover_orphan_packs(store: &Store) -> Result<()> {
    let index = Index::load(&store.index_dir())?;
    let known = index.packs();
    let mut entries = Vec::new();
    for n in store.pack_numbers()? {
        if known.contains(&n) {
            continue;
        }
        let path = pack::pack_path(&store.packs_dir(), n);
        match pack::read_footer(&path, n) {
            Ok(es) => entries.extend(es.into_iter().map(|e| (e.id, e.loc))),
            Err(e) => tracing::warn!("leaving unreadable pack alone: {e}"),
        }
    }
    if !entries.is_empty() {
        index::write_index_file(&store.index_dir(), &store.tmp_dir(), entries)?;
    }
    Ok(())
}
