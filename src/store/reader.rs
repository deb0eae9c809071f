//! Reading blobs and trees back out of a store.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::blob;
use super::error::{Error, IoContext, Result};
use super::id::Id;
use super::index::Index;
use super::lock::{self, Lock};
use super::pack::{self, Location};
use super::tree::Tree;
use super::Store;

/// Trees kept decoded in memory; beyond this the cache starts over.
const TREE_CACHE_ENTRIES: usize = 4096;

pub struct StoreReader {
    store: Store,
    /// Reloaded when a look-up misses and new index files have appeared: a
    /// snapshot record is written only after the index file of its blobs, so a
    /// reader that lists snapshots after loading the index finds them this way.
    index: RwLock<Arc<Index>>,
    // Packs are read with pread rather than mapped: a pack truncated by damage
    // must give an error, not a SIGBUS.
    packs: Mutex<HashMap<u32, Arc<File>>>,
    trees: Mutex<HashMap<Id, Arc<Tree>>>,
    _lock: Option<Lock>,
}

impl StoreReader {
    pub fn open(store: Store) -> Result<StoreReader> {
        let lock = lock::reader(&store.locks_dir())?;
        let mut r = StoreReader::unlocked(store)?;
        r._lock = Some(lock);
        Ok(r)
    }

    /// For a process that already holds the writer lock (which keeps gc away).
    pub(crate) fn unlocked(store: Store) -> Result<StoreReader> {
        let index = Index::load(&store.index_dir())?;
        Ok(StoreReader {
            store,
            index: RwLock::new(Arc::new(index)),
            packs: Mutex::new(HashMap::new()),
            trees: Mutex::new(HashMap::new()),
            _lock: None,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn index(&self) -> Arc<Index> {
        self.index.read().clone()
    }

    /// Load the index again if its files changed; true if it did.
    fn refresh_index(&self) -> Result<bool> {
        let mut cur = self.index.write();
        let files = super::index::index_files(&self.store.index_dir())?;
        if files == cur.file_paths() {
            return Ok(false);
        }
        *cur = Arc::new(Index::load(&self.store.index_dir())?);
        Ok(true)
    }

    fn pack_file(&self, num: u32) -> Result<Arc<File>> {
        let mut packs = self.packs.lock();
        if let Some(f) = packs.get(&num) {
            return Ok(f.clone());
        }
        let path = pack::pack_path(&self.store.packs_dir(), num);
        let f = Arc::new(File::open(&path).ctx(|| format!("opening {}", path.display()))?);
        packs.insert(num, f.clone());
        Ok(f)
    }

    pub fn locate(&self, id: &Id) -> Result<Location> {
        if let Some(loc) = self.index().get(id) {
            return Ok(loc);
        }
        if self.refresh_index()? {
            if let Some(loc) = self.index().get(id) {
                return Ok(loc);
            }
        }
        Err(Error::Corrupt(format!("blob {id} is not in the index")))
    }

    /// Read the stored bytes of a blob, unverified (check uses this to tell apart
    /// "unreadable" from "does not match").
    pub fn read_stored(&self, loc: &Location) -> Result<Vec<u8>> {
        let f = self.pack_file(loc.pack)?;
        let mut buf = vec![0u8; loc.stored_len as usize];
        f.read_exact_at(&mut buf, loc.offset as u64).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Corrupt(format!("pack {}: truncated", pack::pack_name(loc.pack)))
            } else {
                Error::io(format!("reading pack {}", pack::pack_name(loc.pack)), e)
            }
        })?;
        Ok(buf)
    }

    /// A blob's plaintext, verified against its id.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let stored = self.read_stored(&loc)?;
        blob::decode(id, &loc, &stored, || {
            format!("chunk {id} in pack {}", pack::pack_name(loc.pack))
        })
    }

    pub fn tree(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().get(id) {
            return Ok(t.clone());
        }
        let bytes = self.read_blob(id)?;
        let tree =
            Arc::new(Tree::decode(&bytes).map_err(|e| Error::Corrupt(format!("tree {id}: {e}")))?);
        let mut trees = self.trees.lock();
        if trees.len() >= TREE_CACHE_ENTRIES {
            trees.clear();
        }
        trees.insert(*id, tree.clone());
        Ok(tree)
    }
}

/// Decode a blob that was read by other means (check --read-data streams packs).
pub fn decode_blob(id: &Id, loc: &Location, stored: &[u8]) -> Result<Vec<u8>> {
    blob::decode(id, loc, stored, || {
        format!("chunk {id} in pack {}", pack::pack_name(loc.pack))
    })
}
