//! The chunk index: id → (pack, offset, lengths).
//!
//! On disk it is a set of immutable files `index/<name>.idx`, each a sorted
//! table of 48-byte records read through memmap2, so opening a store costs no
//! parsing and a look-up touches a few pages. A writer adds one file per
//! session; when there are many, they are merged into one. Every record can
//! be rebuilt from the pack footers (`bkfs check --rebuild-index`, and
//! automatically for packs no index file covers).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{Error, IoContext, Result};
use super::id::Id;
use super::pack::Location;
use crate::os;

const MAGIC: &[u8; 8] = b"BKFSIX01";
const HEADER_LEN: usize = 16;
const RECORD_LEN: usize = 48;
const TRAILER_LEN: usize = 32;
/// Above this many index files, a writer merges them into one.
pub const MERGE_ABOVE: usize = 8;

struct IndexFile {
    path: PathBuf,
    map: Mmap,
    count: usize,
}

impl IndexFile {
    fn open(path: &Path) -> Result<IndexFile> {
        let bad = |why: &str| Error::Corrupt(format!("index {}: {why}", path.display()));
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let map = map_immutable(&file).ctx(|| format!("mapping {}", path.display()))?;
        if map.len() < HEADER_LEN + TRAILER_LEN || &map[..8] != MAGIC {
            return Err(bad("not an index file"));
        }
        let count = u64::from_le_bytes(map[8..16].try_into().unwrap()) as usize;
        if HEADER_LEN + count * RECORD_LEN + TRAILER_LEN != map.len() {
            return Err(bad("wrong length"));
        }
        let body = &map[..map.len() - TRAILER_LEN];
        if blake3::hash(body).as_bytes() != &map[map.len() - TRAILER_LEN..] {
            return Err(bad("checksum mismatch"));
        }
        Ok(IndexFile {
            path: path.to_path_buf(),
            map,
            count,
        })
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = HEADER_LEN + i * RECORD_LEN;
        &self.map[start..start + RECORD_LEN]
    }

    fn decode(rec: &[u8]) -> (Id, Location) {
        let u = |i: usize| u32::from_le_bytes(rec[i..i + 4].try_into().unwrap());
        (
            Id(rec[..32].try_into().unwrap()),
            Location {
                pack: u(32),
                offset: u(36),
                stored_len: u(40),
                raw_len: u(44),
            },
        )
    }

    fn get(&self, id: &Id) -> Option<Location> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let rec = self.record(mid);
            match rec[..32].cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(Self::decode(rec).1),
            }
        }
        None
    }

    fn iter(&self) -> impl Iterator<Item = (Id, Location)> + '_ {
        (0..self.count).map(|i| Self::decode(self.record(i)))
    }
}

/// All index files of a store, as of the moment they were loaded.
#[derive(Default)]
pub struct Index {
    files: Vec<IndexFile>,
}

impl Index {
    pub fn load(dir: &Path) -> Result<Index> {
        // A writer merging index files may delete one between our listing and
        // its opening; its content is then in the merged file, so list again.
        let mut attempts = 0;
        'listing: loop {
            let mut files = Vec::new();
            for path in index_files(dir)? {
                match IndexFile::open(&path) {
                    Ok(f) => files.push(f),
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound && attempts < 10 =>
                    {
                        attempts += 1;
                        continue 'listing;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(Index { files });
        }
    }

    pub fn get(&self, id: &Id) -> Option<Location> {
        self.files.iter().find_map(|f| f.get(id))
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id, Location)> + '_ {
        self.files.iter().flat_map(|f| f.iter())
    }

    pub fn len(&self) -> usize {
        self.files.iter().map(|f| f.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packs that some index file refers to.
    pub fn packs(&self) -> BTreeSet<u32> {
        self.iter().map(|(_, l)| l.pack).collect()
    }

    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

pub fn index_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let e = e.ctx(|| format!("reading {}", dir.display()))?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "idx") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Write a new index file holding `entries` (any order; duplicates of one id
/// keep the first). The file is complete and durable before it gets its name.
pub fn write_index_file(
    dir: &Path,
    tmp_dir: &Path,
    mut entries: Vec<(Id, Location)>,
) -> Result<PathBuf> {
    entries.sort_by_key(|e| e.0);
    entries.dedup_by(|a, b| a.0 == b.0);
    let mut buf = Vec::with_capacity(HEADER_LEN + entries.len() * RECORD_LEN + TRAILER_LEN);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (id, loc) in &entries {
        buf.extend_from_slice(&id.0);
        for v in [loc.pack, loc.offset, loc.stored_len, loc.raw_len] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum = blake3::hash(&buf);
    buf.extend_from_slice(sum.as_bytes());
    let name = format!("{}.idx", &sum.to_hex()[..24]);
    let tmp = tmp_dir.join(&name);
    let path = dir.join(&name);
    let ctx = || format!("writing {}", tmp.display());
    let f = os::file::create(&tmp).ctx(ctx)?;
    os::io::write_all(f.as_fd(), &buf, "index.write").ctx(ctx)?;
    os::file::sync(&f, "index.fsync").ctx(ctx)?;
    os::dir::rename(&tmp, &path, "index.rename").ctx(ctx)?;
    super::fsync_dir(dir)?;
    Ok(path)
}

/// Maps an index file for reading.
#[allow(unsafe_code)]
fn map_immutable(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: index files are never modified after their rename into place
    // (writers create new files and delete old ones), so the mapping cannot
    // change under us; a deleted file stays mapped until we drop it. The one
    // `unsafe` outside src/os/: its soundness rests on this rule of the
    // store, which an OS-layer wrapper could not check.
    unsafe { Mmap::map(file) }
}
