//! A pending snapshot, the read side: the tree as of its point in time
//! ([`PointInTime`], an [`AsOf`]), preserved pre-images where the diff dir
//! has them, live objects otherwise (checked by their ctime). The locking
//! is described in `pit.rs`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::SystemTime;

use super::area::{self, EntryRec, BLOCK};
use super::pit::Pit;
use crate::ingest::asof::{AsOf, AsOfFile, Inconsistent, Key};
use crate::os::xattr::{self, XattrOf};
use crate::os::{self, fd, Errno, Follow};
use crate::store::Xattr;

/// A pending snapshot as of its point in time. Shared (`Arc`) by the
/// provider copying it and the view showing it.
pub struct PointInTime {
    pit: Arc<Pit>,
}

fn gone(key: Key) -> io::Error {
    Inconsistent::error(format!(
        "object {}:{} of the pending snapshot is gone from the source and has no pre-image",
        key.0, key.1
    ))
}

impl Pit {
    /// Finds the object of a preserved entry of `dir`: by its handle, by
    /// its link in the diff dir, or still at its name (an object on another
    /// filesystem mounted inside the source, which the source's handles do
    /// not reach); always checking it is the same inode.
    fn resolve(&self, dir: Option<BorrowedFd>, e: &EntryRec) -> Option<Arc<OwnedFd>> {
        let key = e.key();
        let ok = |found: OwnedFd| -> Option<Arc<OwnedFd>> {
            let st = fd::fstat(found.as_fd()).ok()?;
            ((st.st_dev, st.st_ino) == key).then(|| Arc::new(found))
        };
        if let Some(h) = &e.handle {
            if let Some(fd) = area::open_handle(self.source.mount.as_fd(), h)
                .ok()
                .and_then(ok)
            {
                return Some(fd);
            }
        }
        if let Some(fd) = fd::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "link"),
            Follow::No,
            libc::O_PATH,
            0,
        )
        .ok()
        .and_then(ok)
        {
            return Some(fd);
        }
        let name = os::cstr(&e.name).ok()?;
        fd::openat(dir?, &name, Follow::No, libc::O_PATH, 0)
            .ok()
            .and_then(ok)
    }
}

/// An object of the tree as of the point in time.
#[derive(Clone)]
pub struct PitObj {
    key: Key,
    kind: u32,
    /// `O_PATH` descriptor of the live inode; `None` when it is gone and only
    /// its pre-image is left, or while it is parked.
    fd: Option<Arc<OwnedFd>>,
    /// Parked ([`AsOf::park`]): the live inode's file handle, in place of
    /// its descriptor.
    handle: Option<Arc<Vec<u8>>>,
}

impl PitObj {
    pub fn kind(&self) -> u32 {
        self.kind
    }

    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or_else(|| gone(self.key))
    }
}

impl std::fmt::Debug for PitObj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PitObj")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .field("live", &self.fd.is_some())
            .finish()
    }
}

impl PointInTime {
    pub(crate) fn new(pit: Arc<Pit>) -> PointInTime {
        PointInTime { pit }
    }

    pub(crate) fn pit(&self) -> &Arc<Pit> {
        &self.pit
    }

    /// The snapshot's name.
    pub fn name(&self) -> &str {
        &self.pit.name
    }

    /// The time given at commit.
    pub fn time(&self) -> SystemTime {
        self.pit.time
    }

    /// Why the snapshot failed (a pre-image that could not be kept), if it
    /// did: its point in time is lost, and every read of it fails.
    pub fn failure(&self) -> Option<String> {
        self.pit.failure()
    }

    /// What its pre-images take in the diff area, and the most they may.
    pub fn diff_usage(&self) -> (u64, u64) {
        self.pit.diff_usage()
    }
}

impl AsOf for PointInTime {
    type Obj = PitObj;
    type File = PitFile;

    fn root(&self) -> io::Result<PitObj> {
        Ok(PitObj {
            key: self.pit.source.root_key,
            kind: libc::S_IFDIR,
            fd: Some(self.pit.source.root.clone()),
            handle: None,
        })
    }

    fn holds_fd(&self, obj: &PitObj) -> bool {
        obj.fd
            .as_ref()
            .is_some_and(|f| !Arc::ptr_eq(f, &self.pit.source.root))
    }

    fn park(&self, obj: &PitObj) -> Option<PitObj> {
        let Some(fd) = obj.fd.as_ref().filter(|_| self.holds_fd(obj)) else {
            return Some(obj.clone());
        };
        // Handles are opened through the source root: they reach its own
        // filesystem only.
        if obj.key.0 != self.pit.source.root_key.0 {
            return None;
        }
        let handle = area::handle_of(fd.as_fd()).ok()??;
        Some(PitObj {
            key: obj.key,
            kind: obj.kind,
            fd: None,
            handle: Some(Arc::new(handle)),
        })
    }

    fn unpark(&self, obj: &PitObj) -> io::Result<PitObj> {
        let Some(handle) = &obj.handle else {
            return Ok(obj.clone());
        };
        let fd = area::open_handle(self.pit.source.mount.as_fd(), handle)?;
        let st = fd::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != obj.key {
            return Err(Errno::ESTALE.into());
        }
        Ok(PitObj {
            key: obj.key,
            kind: obj.kind,
            fd: Some(Arc::new(fd)),
            handle: None,
        })
    }

    fn key(&self, obj: &PitObj) -> Key {
        obj.key
    }

    fn stat(&self, obj: &PitObj) -> io::Result<libc::stat> {
        let p = &self.pit;
        let g = p.read(obj.key)?;
        if let Some(a) = g.get(&obj.key).and_then(|r| r.attrs.as_ref()) {
            return Ok(a.to_stat());
        }
        let st = fd::fstat(obj.fd()?)?;
        p.check_live(&st)?;
        Ok(st)
    }

    fn list(&self, dir: &PitObj) -> io::Result<Vec<Vec<u8>>> {
        let p = &self.pit;
        let g = p.read(dir.key)?;
        let rec = g.get(&dir.key);
        if let Some(e) = rec.and_then(|r| r.entries.as_ref()) {
            return Ok(e
                .iter()
                .filter(|e| !p.source.hides(dir.key, &e.name))
                .map(|e| e.name.to_vec())
                .collect());
        }
        let fd = dir.fd()?;
        if rec.and_then(|r| r.attrs.as_ref()).is_none() {
            p.check_live(&fd::fstat(fd)?)?;
        }
        let d = fd::reopen_noatime(fd, libc::O_DIRECTORY)?;
        let mut names = os::dir::read_dir_names(d.as_fd())?;
        names.retain(|n| !p.source.hides(dir.key, n));
        Ok(names)
    }

    fn child(&self, dir: &PitObj, name: &[u8]) -> io::Result<PitObj> {
        let p = &self.pit;
        if p.source.hides(dir.key, name) {
            return Err(Errno::ENOENT.into());
        }
        let c = os::cstr(name)?;
        let entry = {
            let g = p.read(dir.key)?;
            match g.get(&dir.key).and_then(|r| r.entries.as_ref()) {
                Some(list) => {
                    let i = list
                        .binary_search_by(|e| e.name.as_slice().cmp(name))
                        .map_err(|_| io::Error::from(Errno::ENOENT))?;
                    list[i].clone()
                }
                None => {
                    // Unchanged entries: the live name is the name then.
                    let fd = fd::openat(dir.fd()?, &c, Follow::No, libc::O_PATH, 0)?;
                    let st = fd::fstat(fd.as_fd())?;
                    return Ok(PitObj {
                        key: (st.st_dev, st.st_ino),
                        kind: st.st_mode & libc::S_IFMT,
                        fd: Some(Arc::new(fd)),
                        handle: None,
                    });
                }
            }
        };
        Ok(PitObj {
            key: entry.key(),
            kind: entry.kind,
            fd: p.resolve(dir.fd.as_ref().map(|f| f.as_fd()), &entry),
            handle: None,
        })
    }

    fn xattrs(&self, obj: &PitObj) -> io::Result<Vec<Xattr>> {
        let p = &self.pit;
        let g = p.read(obj.key)?;
        if let Some(a) = g.get(&obj.key).and_then(|r| r.attrs.as_ref()) {
            return Ok(a.xattrs.clone());
        }
        let fd = obj.fd()?;
        p.check_live(&fd::fstat(fd)?)?;
        Ok(xattr::list_all(XattrOf::ProcFd(fd))?)
    }

    fn readlink(&self, obj: &PitObj) -> io::Result<Vec<u8>> {
        let p = &self.pit;
        {
            let g = p.read(obj.key)?;
            if let Some(t) = g
                .get(&obj.key)
                .and_then(|r| r.attrs.as_ref())
                .and_then(|a| a.target.as_ref())
            {
                return Ok(t.to_vec());
            }
        }
        // A symlink's target never changes.
        Ok(os::dir::readlink_fd(obj.fd()?)?)
    }

    fn open(&self, obj: &PitObj) -> io::Result<PitFile> {
        let p = &self.pit;
        let (size, all) = {
            let g = p.read(obj.key)?;
            let rec = g.get(&obj.key);
            match rec.and_then(|r| r.attrs.as_ref()) {
                Some(a) => (a.size, rec.is_some_and(|r| r.all)),
                None => {
                    let st = fd::fstat(obj.fd()?)?;
                    p.check_live(&st)?;
                    (st.st_size as u64, false)
                }
            }
        };
        let live = if all {
            None
        } else {
            Some(File::from(fd::reopen_noatime(obj.fd()?, 0)?))
        };
        Ok(PitFile {
            pit: p.clone(),
            key: obj.key,
            size,
            live,
            data: Mutex::new(None),
        })
    }
}

/// A regular file as of the point in time: preserved blocks from the diff
/// area, the others from the live file.
pub struct PitFile {
    pit: Arc<Pit>,
    key: Key,
    /// The size at the point in time.
    size: u64,
    live: Option<File>,
    /// `.data`, opened at the first preserved block read.
    data: Mutex<Option<Arc<File>>>,
}

impl PitFile {
    fn live(&self) -> io::Result<&File> {
        self.live.as_ref().ok_or_else(|| gone(self.key))
    }

    /// The object's `.data`; call it only once a block is known preserved
    /// (so the file exists: it is written before the block is logged).
    fn data(&self) -> io::Result<Arc<File>> {
        let mut d = self.data.lock();
        if let Some(f) = d.as_ref() {
            return Ok(f.clone());
        }
        let f = Arc::new(self.pit.open_data(self.key)?);
        *d = Some(f.clone());
        Ok(f)
    }
}

/// Removes `cut` from `ranges` (both sorted, non-overlapping `(off, len)`).
fn subtract(ranges: &[(u64, u64)], cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(off, len) in ranges {
        let mut s = off;
        let e = off + len;
        for &(co, cl) in cut {
            let ce = co + cl;
            if ce <= s || co >= e {
                continue;
            }
            if co > s {
                out.push((s, co - s));
            }
            s = s.max(ce);
            if s >= e {
                break;
            }
        }
        if s < e {
            out.push((s, e - s));
        }
    }
    out
}

fn coalesce(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (off, len) in v {
        if len == 0 {
            continue;
        }
        match out.last_mut() {
            Some((lo, ll)) if *lo + *ll >= off => *ll = (*ll).max(off + len - *lo),
            _ => out.push((off, len)),
        }
    }
    out
}

impl AsOfFile for PitFile {
    fn extents(&self, size: u64) -> io::Result<Vec<(u64, u64)>> {
        let limit = size.min(self.size);
        let p = &self.pit;
        let g = p.read(self.key)?;
        let rec = g.get(&self.key);
        let with_attrs = rec.is_some_and(|r| r.attrs.is_some());
        let (all, blocks) = match rec {
            Some(r) if with_attrs => (r.all, Some(&r.blocks)),
            _ => (false, None),
        };
        // Preserved ranges.
        let mut kept: Vec<(u64, u64)> = Vec::new();
        if all {
            kept.push((0, limit));
        } else if let Some(blocks) = blocks {
            for &b in blocks {
                let s = b * BLOCK;
                if s >= limit {
                    break;
                }
                let e = (s + BLOCK).min(limit);
                match kept.last_mut() {
                    Some((ko, kl)) if *ko + *kl == s => *kl = e - *ko,
                    _ => kept.push((s, e - s)),
                }
            }
        }
        let mut out = Vec::new();
        if !all {
            let live = self.live()?;
            if !with_attrs {
                p.check_live(&fd::fstat(live.as_fd())?)?;
            }
            let l = os::io::data_segments(live.as_fd(), 0, limit)?;
            out.extend(subtract(&l, &kept));
        }
        if !kept.is_empty() {
            let data = self.data()?;
            for &(s, l) in &kept {
                out.extend(os::io::data_segments(data.as_fd(), s, s + l)?);
            }
        }
        Ok(coalesce(out))
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - off) as usize;
        let buf = &mut buf[..n];
        let p = &self.pit;
        let g = p.read(self.key)?;
        let rec = g.get(&self.key).filter(|r| r.attrs.is_some());
        if rec.is_none() {
            p.check_live(&fd::fstat(self.live()?.as_fd())?)?;
        }
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let b = pos / BLOCK;
            let seg = (((b + 1) * BLOCK - pos) as usize).min(n - done);
            let out = &mut buf[done..done + seg];
            let kept = rec.is_some_and(|r| r.all || r.blocks.contains(&b));
            if kept {
                area::read_full(&*self.data()?, out, pos)?;
            } else {
                area::read_full(self.live()?, out, pos)?;
            }
            done += seg;
        }
        Ok(n)
    }
}
