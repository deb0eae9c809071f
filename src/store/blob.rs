//! Blob encoding: zstd where it pays, the plaintext where it does not.

use std::cell::RefCell;

use super::error::{Error, Result};
use super::id::Id;
use super::pack::Location;

/// Keep the compressed form only if it saves at least 1/32 of the size:
/// below that, the decompression cost on every read is not worth the bytes.
fn pays(raw: usize, compressed: usize) -> bool {
    compressed < raw - raw / 32
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Returns the bytes to store: compressed, or `None` meaning "store `raw` as is".
pub fn compress(raw: &[u8], level: i32) -> Result<Option<Vec<u8>>> {
    if raw.len() < 64 {
        return Ok(None);
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            let comp = zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::Other(format!("zstd: {e}")))?;
            *c = Some((level, comp));
        }
        let comp = &mut c.as_mut().unwrap().1;
        let out = comp
            .compress(raw)
            .map_err(|e| Error::Other(format!("zstd: {e}")))?;
        Ok(pays(raw.len(), out.len()).then_some(out))
    })
}

/// Turn stored bytes back into the plaintext and check it against its id.
pub fn decode(
    id: &Id,
    loc: &Location,
    stored: &[u8],
    what: impl Fn() -> String,
) -> Result<Vec<u8>> {
    let raw = if loc.compressed() {
        DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| Error::Other(format!("zstd: {e}")))?,
                );
            }
            d.as_mut()
                .unwrap()
                .decompress(stored, loc.raw_len as usize)
                .map_err(|e| Error::Corrupt(format!("{}: cannot decompress: {e}", what())))
        })?
    } else {
        stored.to_vec()
    };
    if raw.len() != loc.raw_len as usize || Id::of_large(&raw) != *id {
        return Err(Error::Corrupt(format!(
            "{}: content does not match its id",
            what()
        )));
    }
    Ok(raw)
}
