//! The snapshots a view shows: the store's snapshot records, re-read when
//! the root is looked at and the last reading is older than [`REFRESH`], so
//! a backup or `forget` made while the view is mounted shows up.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::store::{self, Snapshot, Store, Time, Tree};

/// How long a reading of `snapshots/` is trusted.
pub const REFRESH: Duration = Duration::from_secs(1);

/// One sealed snapshot. Kept (with its decoded top tree) across readings
/// as long as its record is unchanged.
pub struct Snap {
    pub record: Snapshot,
    /// The snapshot's time, for the `latest` symlink's attributes.
    pub time: Time,
    /// The top tree, decoded on first use.
    pub top: OnceLock<Arc<Tree>>,
}

impl Snap {
    pub(crate) fn new(record: Snapshot) -> Snap {
        let time = humantime::parse_rfc3339_weak(&record.time)
            .map(time_of)
            .unwrap_or_default();
        Snap {
            record,
            time,
            top: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Same record: same name, same tree, same time.
    pub fn same(&self, other: &Snap) -> bool {
        self.record.name == other.record.name
            && self.record.tree == other.record.tree
            && self.record.time == other.record.time
    }
}

pub fn time_of(t: SystemTime) -> Time {
    t.into()
}

/// One reading of the store's snapshots.
pub struct Listing {
    pub by_name: BTreeMap<String, Arc<Snap>>,
    /// The newest (what `latest` points at), as `Store::snapshot("latest")`.
    pub newest: Option<Arc<Snap>>,
    /// `snapshots/`'s modification time: the view root's times.
    pub mtime: Time,
}

pub struct Catalog {
    store: Store,
    current: RwLock<(Instant, Arc<Listing>)>,
}

impl Catalog {
    pub fn new(store: Store) -> store::Result<Catalog> {
        let listing = read(&store, None)?;
        Ok(Catalog {
            store,
            current: RwLock::new((Instant::now(), Arc::new(listing))),
        })
    }

    /// Re-read the store's snapshots at the next [`Catalog::listing`] (one
    /// was added or removed).
    pub fn refresh(&self) {
        let mut cur = self.current.write();
        if let Some(past) = Instant::now().checked_sub(REFRESH) {
            cur.0 = past;
        }
    }

    /// The current listing, re-read if stale. A failed re-reading is logged
    /// and the previous listing kept.
    pub fn listing(&self) -> Arc<Listing> {
        {
            let cur = self.current.read();
            if cur.0.elapsed() < REFRESH {
                return cur.1.clone();
            }
        }
        let mut cur = self.current.write();
        if cur.0.elapsed() >= REFRESH {
            match read(&self.store, Some(&cur.1)) {
                Ok(l) => cur.1 = Arc::new(l),
                Err(e) => tracing::error!("re-reading the snapshot list: {e}"),
            }
            cur.0 = Instant::now();
        }
        cur.1.clone()
    }
}

fn read(store: &Store, old: Option<&Listing>) -> store::Result<Listing> {
    let records = store.snapshots()?;
    let mtime = std::fs::metadata(store.snapshots_dir())
        .ok()
        .and_then(|m| {
            Some(Time {
                sec: m.mtime(),
                nsec: u32::try_from(m.mtime_nsec()).ok()?,
            })
        })
        .unwrap_or_default();
    let mut by_name = BTreeMap::new();
    let mut newest = None;
    // Oldest first, so the last one is the newest.
    for record in records {
        let fresh = Snap::new(record);
        let snap = match old.and_then(|o| o.by_name.get(fresh.name())) {
            Some(kept) if kept.same(&fresh) => kept.clone(),
            _ => Arc::new(fresh),
        };
        newest = Some(snap.clone());
        by_name.insert(snap.name().to_string(), snap);
    }
    Ok(Listing {
        by_name,
        newest,
        mtime,
    })
}
