//! Reading a sealed file: its layout (where each byte lies), its chunks
//! from the shared cache or the store, and the read-ahead that warms the
//! cache for a reader that goes on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::layout::Layout;
use super::nodes::{ViewNode, What};
use super::{eio, Errno, Result, SnapView, PUSH_MAX};
use crate::store::{Id, Kind, StoreReader};

impl SnapView {
    /// A regular file's layout, computed on first use and checked against
    /// its size.
    pub(super) fn layout(&self, node: &ViewNode) -> Result<Arc<Layout>> {
        if let Some(l) = node.layout.get() {
            return Ok(l.clone());
        }
        let file = node.node().ok_or(Errno::ELOOP)?;
        match file.kind {
            Kind::File => {}
            Kind::Dir => return Err(Errno::EISDIR),
            Kind::Symlink => return Err(Errno::ELOOP),
            // The kernel serves FIFOs and devices itself; a request for one
            // here would have no data to give.
            _ => return Err(Errno::ENXIO),
        }
        let layout = Layout::new(&file.content);
        if layout.len() != file.size {
            return Err(self.damaged(
                node,
                format!(
                    "pieces cover {} bytes, the size is {}",
                    layout.len(),
                    file.size
                ),
            ));
        }
        Ok(node.layout.get_or_init(|| Arc::new(layout)).clone())
    }

    /// Reads file `id` into `buf` from `offset`; returns the bytes read
    /// (short only at the end of the file).
    pub fn read(&self, id: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let node = self.node(id)?;
        let layout = self.layout(&node)?;
        let reader = self.reader();
        let mut done = 0usize;
        let mut last_piece = None;
        for span in layout.spans(offset, buf.len() as u64) {
            let out = &mut buf[done..done + span.len as usize];
            match span.id {
                None => out.fill(0),
                Some(chunk) => {
                    let r = reader.clone();
                    let data = self
                        .chunks
                        .get(&chunk, move || {
                            r.read_blob(&chunk).map_err(|e| e.to_string())
                        })
                        .map_err(|e| self.damaged(&node, e))?;
                    if data.len() as u64 != span.piece_len {
                        return Err(self.damaged(
                            &node,
                            format!(
                                "chunk {chunk} has {} bytes, the file expects {}",
                                data.len(),
                                span.piece_len
                            ),
                        ));
                    }
                    let skip = span.skip as usize;
                    out.copy_from_slice(&data[skip..skip + out.len()]);
                }
            }
            done += span.len as usize;
            last_piece = Some(span.index);
        }
        // A read that starts where the previous one ended is sequential:
        // load the next chunks while the reader consumes this one.
        let end = offset + done as u64;
        let sequential = node.next_read.swap(end, Ordering::Relaxed) == offset;
        if let (true, Some(index)) = (sequential, last_piece) {
            for chunk in layout.next_chunks(index, self.cfg.read_ahead_chunks) {
                self.prefetch(&reader, chunk);
            }
        }
        if offset == 0 {
            self.read_ahead_siblings(&reader, &node);
        }
        Ok(done)
    }

    fn prefetch(&self, reader: &Arc<StoreReader>, chunk: Id) {
        let r = reader.clone();
        let load = move || r.read_blob(&chunk).map_err(|e| e.to_string());
        self.chunks.prefetch(chunk, load, |_| {});
    }

    /// Offers file `node` (one chunk, `chunk`, is all of it) to the kernel's
    /// page cache once: now if the chunk is loaded, else when read-ahead has
    /// loaded it.
    fn push_file(&self, reader: &Arc<StoreReader>, node: Arc<ViewNode>, chunk: Id) {
        if self.push.get().is_none() || node.pushed.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(data) = self.chunks.peek(&chunk) {
            if let Some(push) = self.push.get() {
                push(node.id, 0, &data);
            }
            return;
        }
        let r = reader.clone();
        let load = move || r.read_blob(&chunk).map_err(|e| e.to_string());
        let push = self.push.clone();
        let id = node.id;
        let queued = self.chunks.prefetch(chunk, load, move |data| {
            if let Some(push) = push.get() {
                push(id, 0, data);
            }
        });
        if !queued {
            // Loading elsewhere or no room: the file is read the usual way.
            node.pushed.store(false, Ordering::Relaxed);
        }
    }

    /// Loads the first chunks of the files listed after `node` (see
    /// [`ViewConfig::read_ahead_files`]).
    fn read_ahead_siblings(&self, reader: &Arc<StoreReader>, node: &ViewNode) {
        let What::Entry { listing, index } = &node.what else {
            return;
        };
        let mut budget = self.cfg.read_ahead_file_bytes;
        let firsts = listing
            .nodes
            .iter()
            .enumerate()
            .skip(index + 1)
            .filter(|(_, n)| n.kind == Kind::File)
            .filter_map(|(i, n)| Some((i, n, n.content.iter().find(|p| p.id.is_some())?)))
            .take(self.cfg.read_ahead_files);
        for (i, file, piece) in firsts {
            if piece.len > budget {
                break;
            }
            budget -= piece.len;
            let chunk = piece.id.expect("data pieces have ids");
            // A file that is one chunk, handed to the kernel already: the
            // reader will find it in the page cache.
            let whole = file.content.len() == 1 && file.size == piece.len && piece.len <= PUSH_MAX;
            let known = whole
                .then(|| self.nodes.known_entry(&node.snap, listing, i))
                .flatten();
            match known {
                Some(sibling) => self.push_file(reader, sibling, chunk),
                None => self.prefetch(reader, chunk),
            }
        }
    }

    /// A chunk of `node` could not be read: logged with the file it
    /// belongs to; the reader gets EIO.
    fn damaged(&self, node: &ViewNode, e: impl std::fmt::Display) -> Errno {
        let name = node
            .node()
            .map(|n| String::from_utf8_lossy(&n.name).into_owned())
            .unwrap_or_default();
        eio(
            format!(
                "snapshot {}: file {name} (inode {:#x})",
                node.snap.name(),
                node.id
            ),
            e,
        )
    }
}
