//! Decompressed chunks, shared by every open file of the view, in a cache
//! bounded by bytes with least-recently-used eviction.
//!
//! A chunk is loaded once even when several threads ask for it at the same
//! time (a reader and the read-ahead, say): the first creates a slot and
//! loads it, the others wait on the same slot. A failed load is not kept,
//! so the next read tries again (and fails again, if the pack is damaged).
//!
//! Read-ahead runs on threads of its own, never on rayon's: loading a chunk
//! hashes it with rayon, and a rayon worker blocked in that join may steal
//! another job; were that job a load waiting on a slot (even its own slot,
//! `OnceLock` is not re-entrant), the pool would deadlock. Rayon workers here
//! only ever run pure computation.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Sender, TrySendError};

use crate::store::Id;

/// A chunk's plaintext (the decoder's own buffer: `Arc<[u8]>` would copy
/// it), or why it could not be read.
pub type Loaded = Result<Arc<Vec<u8>>, Arc<String>>;

type Slot = Arc<OnceLock<Loaded>>;

struct Entry {
    slot: Slot,
    /// Position in the recency order.
    stamp: u64,
    /// Bytes charged to the cache (0 until loaded).
    charge: u64,
}

#[derive(Default)]
struct Lru {
    map: HashMap<Id, Entry>,
    /// stamp → id, oldest first.
    order: BTreeMap<u64, Id>,
    clock: u64,
    bytes: u64,
}

impl Lru {
    fn touch(&mut self, id: &Id) -> Option<Slot> {
        self.clock += 1;
        let clock = self.clock;
        let e = self.map.get_mut(id)?;
        self.order.remove(&e.stamp);
        e.stamp = clock;
        self.order.insert(clock, *id);
        Some(e.slot.clone())
    }

    fn insert(&mut self, id: Id) -> Slot {
        self.clock += 1;
        let slot = Slot::default();
        self.map.insert(
            id,
            Entry {
                slot: slot.clone(),
                stamp: self.clock,
                charge: 0,
            },
        );
        self.order.insert(self.clock, id);
        slot
    }

    fn remove(&mut self, id: &Id) {
        if let Some(e) = self.map.remove(id) {
            self.order.remove(&e.stamp);
            self.bytes -= e.charge;
        }
    }

    /// Drops the oldest entries until the cache fits in `capacity` (always
    /// keeping the newest, so a chunk larger than the cache is still served).
    fn evict(&mut self, capacity: u64) {
        while self.bytes > capacity && self.map.len() > 1 {
            let Some((_, id)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&id) {
                self.bytes -= e.charge;
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

pub struct ChunkCache {
    capacity: u64,
    lru: Mutex<Lru>,
    /// Read-ahead jobs for the read-ahead threads. The queue is short, so
    /// read-ahead never piles up more work than can be done before the
    /// reader gets there; what does not fit is dropped.
    read_ahead: Sender<Job>,
}

/// Read-ahead threads, and jobs that may wait for them.
const READ_AHEAD_THREADS: usize = 2;
const READ_AHEAD_QUEUE: usize = 32;

impl ChunkCache {
    pub fn new(capacity: u64) -> ChunkCache {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(READ_AHEAD_QUEUE);
        for i in 0..READ_AHEAD_THREADS {
            let rx = rx.clone();
            // The threads end when the cache (the only sender) is dropped.
            let spawned = std::thread::Builder::new()
                .name(format!("bkfs-readahead-{i}"))
                .spawn(move || rx.iter().for_each(|job| job()));
            if let Err(e) = spawned {
                tracing::warn!("no read-ahead thread: {e}");
            }
        }
        ChunkCache {
            capacity,
            lru: Mutex::new(Lru::default()),
            read_ahead: tx,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Lru> {
        self.lru.lock()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.lock().map.contains_key(id)
    }

    /// The chunk `id` if it is loaded (not loading, not failed).
    pub fn peek(&self, id: &Id) -> Option<Arc<Vec<u8>>> {
        let lru = self.lock();
        match lru.map.get(id)?.slot.get()? {
            Ok(data) => Some(data.clone()),
            Err(_) => None,
        }
    }

    /// The chunk `id`, from the cache or from `load`.
    pub fn get(&self, id: &Id, load: impl FnOnce() -> Result<Vec<u8>, String>) -> Loaded {
        let slot = {
            let mut lru = self.lock();
            match lru.touch(id) {
                Some(slot) => slot,
                None => lru.insert(*id),
            }
        };
        let loaded = slot
            .get_or_init(|| load().map(Arc::new).map_err(Arc::new))
            .clone();
        let mut lru = self.lock();
        // Only the entry holding this very slot is settled: it may have been
        // evicted, or replaced after a failure, meanwhile.
        let ours = lru.map.get(id).is_some_and(|e| Arc::ptr_eq(&e.slot, &slot));
        if ours {
            match &loaded {
                Ok(data) => {
                    let e = lru.map.get_mut(id).expect("entry checked above");
                    if e.charge == 0 {
                        e.charge = data.len() as u64;
                        lru.bytes += data.len() as u64;
                        lru.evict(self.capacity);
                    }
                }
                Err(_) => lru.remove(id),
            }
        }
        loaded
    }

    /// Starts loading `id` in the background unless it is cached, being
    /// loaded, or the read-ahead queue is full; `then` gets the chunk once
    /// it is loaded by this call. Returns whether a load was queued.
    pub fn prefetch(
        self: &Arc<Self>,
        id: Id,
        load: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
        then: impl FnOnce(&[u8]) + Send + 'static,
    ) -> bool {
        // The slot goes in at once, so a chunk is queued once however many
        // readers ask for it before a read-ahead thread gets to it.
        let slot = {
            let mut lru = self.lock();
            if lru.map.contains_key(&id) {
                return false;
            }
            lru.insert(id)
        };
        // A weak reference: a queued job must not keep a dropped view's
        // cache (and so the read-ahead threads) alive.
        let cache = Arc::downgrade(self);
        let job: Job = Box::new(move || {
            if let Some(cache) = cache.upgrade() {
                // Errors are reported to the reader that needs the chunk.
                if let Ok(data) = cache.get(&id, load) {
                    then(&data);
                }
            }
        });
        if let Err(e) = self.read_ahead.try_send(job) {
            if let TrySendError::Disconnected(_) = e {
                tracing::warn!("read-ahead threads are gone");
            }
            // Not queued: take the empty slot out again (unless a reader
            // has started loading it meanwhile).
            let mut lru = self.lock();
            let ours = lru
                .map
                .get(&id)
                .is_some_and(|e| Arc::ptr_eq(&e.slot, &slot));
            if ours && slot.get().is_none() && Arc::strong_count(&slot) == 2 {
                lru.remove(&id);
            }
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn id(n: u8) -> Id {
        Id::of(&[n])
    }

    #[test]
    fn keeps_recent_chunks_within_its_capacity() {
        let cache = ChunkCache::new(250);
        let loads = AtomicU32::new(0);
        let get = |n: u8| {
            cache
                .get(&id(n), || {
                    loads.fetch_add(1, Ordering::Relaxed);
                    Ok(vec![n; 100])
                })
                .unwrap()
        };
        assert_eq!(&get(1)[..], &[1; 100][..]);
        get(2);
        get(1); // 1 is now more recent than 2
        assert_eq!(loads.load(Ordering::Relaxed), 2);
        get(3); // 300 bytes > 250: the oldest (2) goes
        assert!(cache.contains(&id(1)) && cache.contains(&id(3)));
        assert!(!cache.contains(&id(2)));
        assert_eq!(cache.bytes(), 200);
        get(2);
        assert_eq!(loads.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn failures_are_not_cached_and_a_huge_chunk_is_still_served() {
        let cache = ChunkCache::new(10);
        let r = cache.get(&id(1), || Err("damaged".into()));
        assert_eq!(r.unwrap_err().as_str(), "damaged");
        assert!(!cache.contains(&id(1)));
        let r = cache.get(&id(1), || Ok(vec![0; 100]));
        assert_eq!(r.unwrap().len(), 100);
        assert!(cache.contains(&id(1)));
    }

    #[test]
    fn concurrent_readers_load_a_chunk_once() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let loads = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                std::thread::spawn(move || {
                    cache
                        .get(&id(9), || {
                            loads.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(vec![9; 10])
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().len(), 10);
        }
        assert_eq!(loads.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn prefetch_fills_the_cache() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(cache.prefetch(
            id(4),
            || Ok(vec![4; 10]),
            move |d| tx.send(d.len()).unwrap()
        ));
        assert_eq!(rx.recv().unwrap(), 10);
        assert!(!cache.prefetch(id(4), || panic!("cached"), |_| {}));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cache.contains(&id(4)) || cache.bytes() == 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        let r = cache.get(&id(4), || panic!("must come from the cache"));
        assert_eq!(r.unwrap().len(), 10);
    }
}
