//! How each open file does its I/O, so that the kernel accepts every open.
//!
//! The kernel keeps an inode in one I/O mode at a time: either files opened
//! with kernel passthrough (their reads and mmaps go straight to the backing
//! file) or files using the FUSE page cache; a page-cached open of an inode
//! that has passthrough opens fails, and the reverse too. Direct-I/O opens
//! (`FOPEN_DIRECT_IO`) belong to neither mode and can sit beside either.
//!
//! The policy, per inode:
//! - a read-only open uses passthrough (one backing id shared by all of the
//!   inode's passthrough opens), unless page-cached opens exist; then it is
//!   page-cached too;
//! - a writable open is page-cached, unless passthrough opens exist; then it
//!   is direct I/O: its writes reach the backing file at once, where the
//!   passthrough readers see them, since they read that file's page cache.
//!
//! The backing id is released (`FUSE_DEV_IOC_BACKING_CLOSE`) when the last
//! passthrough open of the inode is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use fuser::BackingId;

/// The I/O mode chosen for one open.
#[derive(Debug, Clone)]
pub enum Mode {
    Passthrough(Arc<BackingId>),
    Cached,
    Direct,
}

#[derive(Default)]
struct InodeIo {
    backing: Weak<BackingId>,
    passthrough: u32,
    cached: u32,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, InodeIo>,
    handles: HashMap<u64, (u64, Mode)>,
}

#[derive(Default)]
pub struct IoModes {
    state: Mutex<State>,
}

impl IoModes {
    /// Chooses the mode of open `fh` of inode `ino` and records it.
    /// `make_backing` registers the file for passthrough when the inode has no
    /// backing id yet; if it fails, the open is page-cached and the error is
    /// returned beside the mode so the caller can stop trying passthrough.
    pub fn open(
        &self,
        fh: u64,
        ino: u64,
        read_only: bool,
        passthrough: bool,
        make_backing: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> (Mode, Option<std::io::Error>) {
        let mut state = self.state.lock().expect("io mode lock");
        let inode = state.inodes.entry(ino).or_default();
        let mut error = None;
        let mode = if read_only && passthrough && inode.cached == 0 {
            let backing = match inode.backing.upgrade() {
                Some(b) => Ok(b),
                None => make_backing().map(Arc::new),
            };
            match backing {
                Ok(b) => {
                    inode.backing = Arc::downgrade(&b);
                    Mode::Passthrough(b)
                }
                Err(e) => {
                    error = Some(e);
                    Mode::Cached
                }
            }
        } else if inode.passthrough > 0 {
            Mode::Direct
        } else {
            Mode::Cached
        };
        match mode {
            Mode::Passthrough(_) => inode.passthrough += 1,
            Mode::Cached => inode.cached += 1,
            Mode::Direct => {}
        }
        state.handles.insert(fh, (ino, mode.clone()));
        (mode, error)
    }

    /// Forgets open `fh`; drops the inode's backing id with its last passthrough open.
    pub fn release(&self, fh: u64) {
        let mut state = self.state.lock().expect("io mode lock");
        let Some((ino, mode)) = state.handles.remove(&fh) else {
            return;
        };
        if let Some(inode) = state.inodes.get_mut(&ino) {
            match mode {
                Mode::Passthrough(_) => inode.passthrough -= 1,
                Mode::Cached => inode.cached -= 1,
                Mode::Direct => {}
            }
            if inode.passthrough == 0 && inode.cached == 0 {
                state.inodes.remove(&ino);
            }
        }
        // `mode` (and with it this open's share of the backing id) drops here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_backing() -> std::io::Result<BackingId> {
        Err(std::io::Error::other("no fuse device in unit tests"))
    }

    #[test]
    fn writers_beside_cached_readers_are_cached_and_beside_passthrough_direct() {
        let io = IoModes::default();
        // Without passthrough everything is page-cached.
        let (m, _) = io.open(1, 10, true, false, no_backing);
        assert!(matches!(m, Mode::Cached));
        let (m, _) = io.open(2, 10, false, false, no_backing);
        assert!(matches!(m, Mode::Cached));
        io.release(1);
        io.release(2);
        // A failed backing registration falls back to the page cache.
        let (m, err) = io.open(3, 11, true, true, no_backing);
        assert!(matches!(m, Mode::Cached) && err.is_some());
        // A writer after that cached reader is cached as well.
        let (m, _) = io.open(4, 11, false, true, no_backing);
        assert!(matches!(m, Mode::Cached));
        io.release(3);
        io.release(4);
        assert!(io.state.lock().unwrap().inodes.is_empty());
    }
}
