//! The store's `config` file: format version and the parameters fixed at init.

use serde::{Deserialize, Serialize};

/// The store format this bkfs writes and reads (docs/FORMAT.md).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random identity of the store, so tools can tell two stores apart.
    pub id: String,
    pub chunker: ChunkerParams,
    /// zstd level used for new blobs.
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        // The anchors (restic, borg) use 512 KiB / 1 MiB / 8 MiB; see docs/FORMAT.md
        // for why bkfs keeps these. Smaller chunks dedup in-place database page
        // updates better but cost index memory per byte stored.
        ChunkerParams {
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 8 * 1024 * 1024,
        }
    }
}

impl Config {
    pub fn new() -> Config {
        let mut id = [0u8; 16];
        getrandom(&mut id);
        Config {
            version: FORMAT_VERSION,
            id: hex::encode(id),
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_size: 16 * 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

fn getrandom(buf: &mut [u8]) {
    if crate::os::proc::getrandom(buf).is_err() {
        // Fall back to something unique enough for an identity (not a secret).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let h = blake3::hash(format!("{t}-{}", std::process::id()).as_bytes());
        buf.copy_from_slice(&h.as_bytes()[..buf.len()]);
    }
}
