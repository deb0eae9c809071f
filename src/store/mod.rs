//! The content-addressed store: chunks, packs, index, trees and snapshot records.
//!
//! Knows nothing of FUSE. Layout of a store directory (docs/FORMAT.md):
//!
//! ```text
//! config              JSON: format version, chunker parameters, compression level
//! packs/NNNNNNNN.pack blobs (data chunks and trees), append-only, immutable once named
//! index/*.idx         sorted (id → pack, offset, lengths) tables, rebuildable from packs
//! snapshots/NAME.json snapshot records, written last
//! locks/              flock files (write, read)
//! tmp/                files being written; anything here after a crash is garbage
//! ```

mod blob;
pub mod check;
pub mod chunker;
pub mod config;
pub mod error;
pub mod gc;
pub mod id;
pub mod index;
pub mod lock;
pub mod pack;
pub mod reader;
pub mod retention;
pub mod snapshot;
#[doc(hidden)]
pub mod testdata;

pub mod tree;
pub mod walk;
pub mod writer;

use std::fs;
use std::path::{Path, PathBuf};

use crate::os;

pub use config::{Config, FORMAT_VERSION};
pub use error::{Error, IoContext, Result};
pub use id::Id;
pub use reader::StoreReader;
pub use snapshot::{Capture, Consistency, Snapshot};
pub use tree::{Kind, Node, Piece, Time, Tree, Xattr};
pub use writer::StoreWriter;

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    config: Config,
}

const SUBDIRS: [&str; 5] = ["packs", "index", "snapshots", "locks", "tmp"];

impl Store {
    /// Create a new, empty store at `path` (which must not exist or be an empty directory).
    pub fn init(path: &Path) -> Result<Store> {
        Store::try_init(path)?
            .ok_or_else(|| Error::NotAStore(path.into(), "it already holds a bkfs store".into()))
    }

    /// Create a store; `None` if another process completed one at `path`
    /// first. Safe against concurrent inits: subdirectories are created
    /// idempotently and the config, which makes a directory a store, appears
    /// last and only once (a hard link fails if it exists).
    fn try_init(path: &Path) -> Result<Option<Store>> {
        match fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::NotAStore(
                    path.into(),
                    "exists and is not a directory".into(),
                ))
            }
            Ok(_) => {
                // Empty, or holding only what a concurrent init creates.
                for e in fs::read_dir(path).ctx(|| format!("reading {}", path.display()))? {
                    let e = e.ctx(|| format!("reading {}", path.display()))?;
                    let name = e.file_name();
                    if name == "config" {
                        return Ok(None);
                    }
                    // `pit`: a mount's diff area (`SOURCE/.bkfs/pit`) may be
                    // there before the default store is.
                    if !SUBDIRS.iter().any(|d| name == *d) && name != "pit" {
                        return Err(Error::NotAStore(
                            path.into(),
                            "directory is not empty and holds no store".into(),
                        ));
                    }
                }
            }
            Err(_) => fs::create_dir_all(path).ctx(|| format!("creating {}", path.display()))?,
        }
        for d in SUBDIRS {
            let p = path.join(d);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        let config = Config::new();
        let tmp = path.join(format!("tmp/config.{}", config.id));
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        os::file::write_file(&tmp, &json, "config.write")
            .ctx(|| format!("writing {}", tmp.display()))?;
        os::file::sync_path(&tmp, "config.fsync").ctx(|| format!("syncing {}", tmp.display()))?;
        let linked = os::dir::hard_link(&tmp, &path.join("config"), "config.link");
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(os::Errno::EEXIST) => return Ok(None),
            // Another process finished first and its writer cleaned tmp/ under us.
            Err(_) if path.join("config").exists() => return Ok(None),
            Err(e) => return Err(Error::io(format!("writing {}/config", path.display()), e)),
        }
        fsync_dir(path)?;
        Ok(Some(Store {
            root: path.into(),
            config,
        }))
    }

    pub fn open(path: &Path) -> Result<Store> {
        let meta = fs::metadata(path).map_err(|e| Error::NotAStore(path.into(), e.to_string()))?;
        if !meta.is_dir() {
            return Err(Error::NotAStore(path.into(), "not a directory".into()));
        }
        let cpath = path.join("config");
        let bytes = fs::read(&cpath)
            .map_err(|e| Error::NotAStore(path.into(), format!("no readable config: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes)
            .map_err(|e| Error::NotAStore(path.into(), format!("config: {e}")))?;
        if v.version > FORMAT_VERSION {
            return Err(Error::NewerVersion {
                path: path.into(),
                found: v.version,
                supported: FORMAT_VERSION,
            });
        }
        let config: Config = serde_json::from_slice(&bytes)
            .map_err(|e| Error::NotAStore(path.into(), format!("config: {e}")))?;
        for d in SUBDIRS {
            let p = path.join(d);
            if !p.is_dir() {
                return Err(Error::NotAStore(path.into(), format!("{d}/ is missing")));
            }
        }
        Ok(Store {
            root: path.into(),
            config,
        })
    }

    /// Open the store, creating it if `path` does not exist or is an empty directory.
    pub fn open_or_init(path: &Path) -> Result<Store> {
        match Store::try_init(path)? {
            Some(store) => Ok(store),
            None => Store::open(path),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }
    /// What the pack files take, in bytes (0 if they cannot be listed).
    pub fn packs_bytes(&self) -> u64 {
        fn dir_bytes(dir: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        dir_bytes(&self.packs_dir())
    }
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        snapshot::list(&self.snapshots_dir())
    }

    /// A snapshot by name; `latest` is the newest one.
    pub fn snapshot(&self, name: &str) -> Result<Snapshot> {
        if name == "latest" {
            return self
                .snapshots()?
                .pop()
                .ok_or_else(|| Error::NoSnapshot("latest".into()));
        }
        if snapshot::validate_name(name).is_err() {
            return Err(Error::NoSnapshot(name.into()));
        }
        snapshot::load(&self.snapshots_dir(), name)
    }

    /// The pack numbers present in `packs/`.
    pub fn pack_numbers(&self) -> Result<Vec<u32>> {
        let dir = self.packs_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| format!("reading {}", dir.display()))?;
            if let Some(n) = e.file_name().to_str().and_then(pack::parse_pack_name) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub fn reader(&self) -> Result<StoreReader> {
        StoreReader::open(self.clone())
    }

    pub fn writer(&self, what: &str) -> Result<StoreWriter> {
        StoreWriter::open(self.clone(), what)
    }
}

/// Makes the entries of store directory `dir` durable (what was renamed,
/// linked or removed in it).
pub fn fsync_dir(dir: &Path) -> Result<()> {
    os::file::sync_path(dir, "store.dirsync").ctx(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests;
