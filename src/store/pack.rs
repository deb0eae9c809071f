//! Pack files: many blobs in one append-only file, with a footer listing them.
//!
//! Layout (docs/FORMAT.md): an 8-byte header, the stored bytes of each blob one
//! after another, then one 48-byte footer entry per blob and a 48-byte trailer
//! (entry count, blake3 of the entries, magic). A pack is written under a
//! temporary name, fsynced, and only then renamed to `packs/NNNNNNNN.pack`, so
//! a pack under its final name is always complete.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{Error, IoContext, Result};
use super::id::Id;
use crate::os;

pub const HEADER: &[u8; 8] = b"BKFSPK01";
const TRAILER_MAGIC: &[u8; 8] = b"BKFSPEND";
pub const ENTRY_LEN: usize = 48;
const TRAILER_LEN: usize = 48;
/// Packs address blobs with 32-bit offsets.
pub const MAX_PACK_LEN: u64 = u32::MAX as u64 - (64 << 20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// Where a blob lives: which pack, where in it, how long stored and in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
}

impl Location {
    /// Blobs are stored compressed only when that makes them smaller.
    pub fn compressed(&self) -> bool {
        self.stored_len < self.raw_len
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PackEntry {
    pub id: Id,
    pub kind: BlobKind,
    pub loc: Location,
}

impl PackEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.loc.offset.to_le_bytes());
        out.extend_from_slice(&self.loc.stored_len.to_le_bytes());
        out.extend_from_slice(&self.loc.raw_len.to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&[0, 0, 0]);
    }

    fn decode(pack: u32, b: &[u8]) -> Option<PackEntry> {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(PackEntry {
            id: Id(b[..32].try_into().unwrap()),
            loc: Location {
                pack,
                offset: u(32),
                stored_len: u(36),
                raw_len: u(40),
            },
            kind: BlobKind::from_u8(b[44])?,
        })
    }
}

pub fn pack_name(num: u32) -> String {
    format!("{num:08}.pack")
}

pub fn pack_path(packs_dir: &Path, num: u32) -> PathBuf {
    packs_dir.join(pack_name(num))
}

/// The pack number of a file name `NNNNNNNN.pack`.
pub fn parse_pack_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() == 8 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

pub struct PackWriter {
    num: u32,
    file: BufWriter<os::io::Writer<File>>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    len: u64,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    pub fn create(tmp_dir: &Path, packs_dir: &Path, num: u32) -> Result<PackWriter> {
        let tmp_path = tmp_dir.join(format!("{}.tmp", pack_name(num)));
        let file = File::create(&tmp_path).ctx(|| format!("creating {}", tmp_path.display()))?;
        let mut file = BufWriter::with_capacity(1 << 20, os::io::Writer::new(file, "pack.write"));
        file.write_all(HEADER)
            .ctx(|| format!("writing {}", tmp_path.display()))?;
        Ok(PackWriter {
            num,
            file,
            tmp_path,
            final_path: pack_path(packs_dir, num),
            len: HEADER.len() as u64,
            entries: Vec::new(),
        })
    }

    pub fn num(&self) -> u32 {
        self.num
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append one blob's stored bytes; returns where it went.
    pub fn add(&mut self, id: Id, kind: BlobKind, stored: &[u8], raw_len: u32) -> Result<Location> {
        let loc = Location {
            pack: self.num,
            offset: self.len as u32,
            stored_len: stored.len() as u32,
            raw_len,
        };
        self.file
            .write_all(stored)
            .ctx(|| format!("writing {}", self.tmp_path.display()))?;
        self.len += stored.len() as u64;
        self.entries.push(PackEntry { id, kind, loc });
        Ok(loc)
    }

    /// Write the footer, make the pack durable and give it its final name.
    pub fn finish(mut self) -> Result<Vec<PackEntry>> {
        let mut footer = Vec::with_capacity(self.entries.len() * ENTRY_LEN + TRAILER_LEN);
        for e in &self.entries {
            e.encode(&mut footer);
        }
        let sum = blake3::hash(&footer);
        footer.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        footer.extend_from_slice(&[0; 4]);
        footer.extend_from_slice(sum.as_bytes());
        footer.extend_from_slice(TRAILER_MAGIC);
        let ctx = || format!("writing {}", self.tmp_path.display());
        self.file.write_all(&footer).ctx(ctx)?;
        let file = self
            .file
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(ctx)?
            .into_inner();
        os::file::sync(&file, "pack.fsync").ctx(ctx)?;
        drop(file);
        os::dir::rename(&self.tmp_path, &self.final_path, "pack.rename").ctx(ctx)?;
        Ok(self.entries)
    }

    /// Give up on this pack (a failed backup): remove its temporary file.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp_path);
    }
}

/// Read and verify a pack's footer. Used to rebuild the index and by `check`.
pub fn read_footer(path: &Path, num: u32) -> Result<Vec<PackEntry>> {
    let bad = |why: &str| Error::Corrupt(format!("pack {}: {why}", path.display()));
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    if len < (HEADER.len() + TRAILER_LEN) as u64 {
        return Err(bad("too short to be a pack"));
    }
    let mut header = [0u8; 8];
    f.read_exact(&mut header)
        .ctx(|| format!("reading {}", path.display()))?;
    if &header != HEADER {
        return Err(bad("bad header"));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    f.seek(SeekFrom::End(-(TRAILER_LEN as i64)))
        .and_then(|_| f.read_exact(&mut trailer))
        .ctx(|| format!("reading {}", path.display()))?;
    if &trailer[40..48] != TRAILER_MAGIC {
        return Err(bad("bad trailer (incomplete or damaged pack)"));
    }
    let count = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
    let footer_len = count * ENTRY_LEN as u64;
    if footer_len + (HEADER.len() + TRAILER_LEN) as u64 > len {
        return Err(bad("footer longer than the pack"));
    }
    let mut footer = vec![0u8; footer_len as usize];
    f.seek(SeekFrom::Start(len - TRAILER_LEN as u64 - footer_len))
        .and_then(|_| f.read_exact(&mut footer))
        .ctx(|| format!("reading {}", path.display()))?;
    if blake3::hash(&footer).as_bytes() != &trailer[8..40] {
        return Err(bad("footer checksum mismatch"));
    }
    let data_end = len - TRAILER_LEN as u64 - footer_len;
    let mut out = Vec::with_capacity(count as usize);
    for chunk in footer.chunks_exact(ENTRY_LEN) {
        let e = PackEntry::decode(num, chunk).ok_or_else(|| bad("unknown blob kind"))?;
        if e.loc.offset as u64 + e.loc.stored_len as u64 > data_end
            || (e.loc.offset as usize) < HEADER.len()
        {
            return Err(bad("footer entry points outside the data"));
        }
        out.push(e);
    }
    Ok(out)
}
