//! How each open file does its I/O, so that the kernel accepts every open.
//!
//! The kernel keeps an inode in one I/O mode at a time. While any open of an
//! inode uses kernel passthrough, *every* open of it must use passthrough
//! with the same backing file (anything else, direct I/O included, fails
//! with EIO); while page-cached opens exist, passthrough opens fail.
//!
//! The policy, per inode:
//! - an open that may use passthrough (any open by default; only read-only
//!   ones with `passthrough=ro`) does, unless page-cached opens of the inode
//!   exist: then it is page-cached too, and its I/O goes through the daemon;
//! - any other open is page-cached, unless passthrough opens exist: then it
//!   must join them, and its I/O goes from the kernel to the backing file
//!   without the daemon;
//! - writers share the backing file with readers, so it is opened read-write
//!   when the daemon can (see `Live::passthrough_file`); when it could only
//!   open it read-only (a file being executed from the source, an immutable
//!   file), a writer beside its passthrough readers is refused with
//!   `ETXTBSY`, as for a busy executable.
//!
//! One backing id per inode, shared by all its passthrough opens, released
//! (`FUSE_DEV_IOC_BACKING_CLOSE`) with the last of them.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use fuser::BackingId;

/// The I/O mode chosen for one open.
#[derive(Debug, Clone)]
pub enum Mode {
    Passthrough(Arc<BackingId>),
    Cached,
}

/// Why an open cannot be given a mode.
#[derive(Debug)]
pub enum Refusal {
    /// A writer beside passthrough readers whose backing file is read-only.
    ReadOnlyBacking,
}

/// A registered backing file, and whether it was opened for writing.
pub struct Backing {
    pub id: BackingId,
    pub writable: bool,
}

#[derive(Default)]
struct InodeIo {
    backing: Weak<BackingId>,
    backing_writable: bool,
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
    /// Chooses the mode of open `fh` of inode `ino` and records it;
    /// `passthrough` says whether this open may start passthrough.
    /// `make_backing` registers the inode's backing file when a passthrough
    /// open needs one and none exists; if that fails, the open is
    /// page-cached and the error is returned so the caller stops trying.
    pub fn open(
        &self,
        fh: u64,
        ino: u64,
        read_only: bool,
        passthrough: bool,
        make_backing: impl FnOnce() -> std::io::Result<Backing>,
    ) -> Result<(Mode, Option<std::io::Error>), Refusal> {
        let mut state = self.state.lock();
        let inode = state.inodes.entry(ino).or_default();
        let mut error = None;
        let mode = if inode.passthrough > 0 {
            if !read_only && !inode.backing_writable {
                return Err(Refusal::ReadOnlyBacking);
            }
            let backing = inode
                .backing
                .upgrade()
                .expect("live while passthrough opens exist");
            Mode::Passthrough(backing)
        } else if passthrough && inode.cached == 0 {
            match make_backing() {
                Ok(b) => {
                    let backing = Arc::new(b.id);
                    inode.backing = Arc::downgrade(&backing);
                    inode.backing_writable = b.writable;
                    Mode::Passthrough(backing)
                }
                Err(e) => {
                    error = Some(e);
                    Mode::Cached
                }
            }
        } else {
            Mode::Cached
        };
        match mode {
            Mode::Passthrough(_) => inode.passthrough += 1,
            Mode::Cached => inode.cached += 1,
        }
        state.handles.insert(fh, (ino, mode.clone()));
        Ok((mode, error))
    }

    /// Forgets open `fh`; drops the inode's backing id with its last passthrough open.
    pub fn release(&self, fh: u64) {
        let mut state = self.state.lock();
        let Some((ino, mode)) = state.handles.remove(&fh) else {
            return;
        };
        if let Some(inode) = state.inodes.get_mut(&ino) {
            match mode {
                Mode::Passthrough(_) => inode.passthrough -= 1,
                Mode::Cached => inode.cached -= 1,
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

    fn no_backing() -> std::io::Result<Backing> {
        Err(std::io::Error::other("no fuse device in unit tests"))
    }

    #[test]
    fn without_passthrough_everything_is_page_cached_and_counted() {
        let io = IoModes::default();
        let (m, _) = io.open(1, 10, true, false, no_backing).unwrap();
        assert!(matches!(m, Mode::Cached));
        let (m, _) = io.open(2, 10, false, false, no_backing).unwrap();
        assert!(matches!(m, Mode::Cached));
        io.release(1);
        io.release(2);
        // A failed backing registration falls back to the page cache.
        let (m, err) = io.open(3, 11, true, true, no_backing).unwrap();
        assert!(matches!(m, Mode::Cached) && err.is_some());
        // A reader after a page-cached open does not even try passthrough.
        let (m, err) = io
            .open(4, 11, true, true, || panic!("must not register"))
            .unwrap();
        assert!(matches!(m, Mode::Cached) && err.is_none());
        io.release(3);
        io.release(4);
        assert!(io.state.lock().inodes.is_empty());
        assert!(io.state.lock().handles.is_empty());
    }
}
