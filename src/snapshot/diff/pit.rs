//! A pending snapshot, the write side: its diff dir and the pre-images the
//! hooks preserve in it (see [`super::Snapshots`]). The tree as of its point
//! in time, read from them, is in `pit_read.rs`.
//!
//! Locking: the per-object records live in striped maps; a stripe's lock
//! covers "preserve → mark" in a hook (write lock, held across the
//! preservation I/O) and "is it preserved? → read live" in a reader (read
//! lock, held across the live read). Since the live core changes an object
//! only after its hook returned, a reader never sees a change made after the
//! point in time. No lock covers more than one stripe, and none is taken
//! twice by one thread.
//!
//! A hook whose pre-image cannot be kept fails the snapshot (`fate.rs`)
//! under that same write lock, before the change it guards is made, and
//! every reader checks the failure under its read lock: a reader either
//! read before the change or is told the point in time is lost.

use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde_bytes::ByteBuf;

use super::area::{self, AttrsRec, EntryRec, State, ALL_BLOCKS, BLOCK};
use super::fate::{self, Fate};
use crate::ingest::asof::{Inconsistent, Key};
use crate::live::changes::Obj;
use crate::os::xattr::{self, XattrOf};
use crate::os::{self, fd, Errno, Follow};
use crate::store::Time;

const STRIPES: usize = 256;

/// The source tree a mount serves, as the snapshot code reaches it.
pub(crate) struct Source {
    /// `O_PATH` descriptor of the source root.
    pub root: Arc<OwnedFd>,
    /// The source root opened for reading: the mount descriptor
    /// `open_by_handle_at` needs.
    pub mount: OwnedFd,
    pub root_key: Key,
    /// Names in the root never shown.
    pub hidden: Vec<OsString>,
    /// The diff area's own entry, when it is not under a hidden name:
    /// (key of its parent directory, its name).
    pub skip: Option<(Key, Vec<u8>)>,
}

impl Source {
    /// Whether entry `name` of directory `dir` is never shown.
    pub fn hides(&self, dir: Key, name: &[u8]) -> bool {
        (dir == self.root_key && area::is_hidden(&self.hidden, name))
            || self
                .skip
                .as_ref()
                .is_some_and(|(k, n)| *k == dir && n.as_slice() == name)
    }
}

/// What the diff dir holds for one object.
#[derive(Default)]
pub(super) struct Rec {
    /// Born after the barrier: the snapshot does not need it.
    created: bool,
    pub(super) attrs: Option<Arc<AttrsRec>>,
    pub(super) entries: Option<Arc<Vec<EntryRec>>>,
    /// Blocks (of [`BLOCK`] bytes) whose content is in `.data`.
    pub(super) blocks: BTreeSet<u64>,
    /// Every block is in `.data`: the live object is not needed for content.
    pub(super) all: bool,
    /// Kept alive by a hard link in the diff dir.
    linked: bool,
}

type Stripe = RwLock<HashMap<Key, Rec>>;

pub(crate) struct Pit {
    pub name: String,
    pub time: SystemTime,
    /// The ctime bound: a live object with a later ctime changed after the
    /// point in time without a pre-image.
    commit: Time,
    /// The diff dir, `O_RDONLY|O_DIRECTORY`.
    pub(super) dir: OwnedFd,
    pub(super) source: Arc<Source>,
    stripes: Box<[Stripe]>,
    /// Set once the snapshot is sealed or failed: hooks no longer preserve.
    released: AtomicBool,
    /// Failed or not, and what its pre-images take against `diff_max`.
    fate: Fate,
}

impl Pit {
    /// Fixes the point in time: makes the diff dir and its `state.json`.
    /// `limit`: the most its pre-images may take (`diff_max`).
    pub fn create(
        source: Arc<Source>,
        diff_root: BorrowedFd,
        name: &str,
        time: SystemTime,
        limit: u64,
    ) -> io::Result<Pit> {
        let cname = os::cstr(name.as_bytes())?;
        os::dir::mkdirat(diff_root, &cname, 0o700)?;
        let made = (|| {
            let dir = fd::openat(
                diff_root,
                &cname,
                Follow::No,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?;
            let state = State {
                version: area::VERSION,
                name: name.to_owned(),
                time: time.into(),
                commit: os::time::realtime_now(),
                root: source.root_key,
            };
            let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
            area::write_atomic(dir.as_fd(), c"state.json", &json)?;
            Ok((dir, state))
        })();
        match made {
            Ok((dir, state)) => Ok(Pit::new(
                source,
                dir,
                state,
                Vec::new(),
                Fate::new(0, limit, None),
            )),
            Err(e) => {
                // Leave no directory behind that would refuse the name
                // (failures leave nothing worse).
                let tmp = CString::new(format!("{name}/state.json.tmp")).expect("no NUL");
                let _ = os::dir::unlinkat(diff_root, &tmp, 0);
                let _ = os::dir::unlinkat(diff_root, &cname, libc::AT_REMOVEDIR);
                Err(e)
            }
        }
    }

    /// Reads a diff dir back (`state.json`, every record, and the reason
    /// it failed, if it did).
    pub fn load(source: Arc<Source>, dir: OwnedFd, limit: u64) -> io::Result<Pit> {
        let state: State = serde_json::from_slice(&area::read_all(dir.as_fd(), c"state.json")?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if state.version != area::VERSION {
            return Err(io::Error::other(format!(
                "diff area version {} is not {}",
                state.version,
                area::VERSION
            )));
        }
        if state.root != source.root_key {
            return Err(io::Error::other(
                "the diff area was left for another source directory",
            ));
        }
        let recs = area::load(dir.as_fd())?;
        let failed = match area::read_all(dir.as_fd(), area::FAILED) {
            Ok(why) => Some(String::from_utf8_lossy(&why).into_owned()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(e),
        };
        let fate = Fate::new(area::used_bytes(dir.as_fd())?, limit, failed);
        Ok(Pit::new(source, dir, state, recs, fate))
    }

    fn new(
        source: Arc<Source>,
        dir: OwnedFd,
        state: State,
        recs: Vec<(Key, area::Loaded)>,
        fate: Fate,
    ) -> Pit {
        let pit = Pit {
            name: state.name,
            time: state.time.into(),
            commit: state.commit,
            dir,
            source,
            stripes: (0..STRIPES).map(|_| RwLock::new(HashMap::new())).collect(),
            released: AtomicBool::new(fate.failure().is_some()),
            fate,
        };
        for (key, l) in recs {
            let rec = Rec {
                created: false,
                attrs: l.attrs,
                entries: l.entries,
                blocks: l.blocks,
                all: l.all,
                linked: l.linked,
            };
            pit.stripe(key).write().insert(key, rec);
        }
        pit
    }

    fn stripe(&self, key: Key) -> &Stripe {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.stripes[(h.finish() as usize) % STRIPES]
    }

    /// The records of `key`'s stripe, for a reader; the error of a failed
    /// snapshot (checked under the lock: see the module comment).
    pub(super) fn read(&self, key: Key) -> io::Result<RwLockReadGuard<'_, HashMap<Key, Rec>>> {
        let g = self.stripe(key).read();
        match self.fate.failure() {
            Some(why) => Err(Inconsistent::error(format!(
                "snapshot {:?} failed: {why}",
                self.name
            ))),
            None => Ok(g),
        }
    }

    /// Why the snapshot failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.fate.failure()
    }

    /// What its pre-images take, and the most they may.
    pub fn diff_usage(&self) -> (u64, u64) {
        (self.fate.used(), self.fate.limit())
    }

    /// Fails the snapshot for pre-image error `e`. Called under the write
    /// lock of the stripe of the object being changed, before the change:
    /// preservation stops for every object, readers get the error, and the
    /// failure is on disk (the `failed` record, or else no `state.json`)
    /// before the change, so that a daemon killed after it never resumes
    /// the copy of a point in time it no longer has.
    fn fail(&self, e: &io::Error) {
        let why = fate::reason(e);
        if !self.fate.fail(why.clone()) {
            return;
        }
        self.released.store(true, Ordering::SeqCst);
        tracing::error!(
            "snapshot {:?} fails: {why}; the change that needed the pre-image goes on",
            self.name
        );
        if let Err(e) = area::write_atomic(self.dir.as_fd(), area::FAILED, why.as_bytes()) {
            tracing::warn!(
                "cannot record the failure of {:?} ({e}): dropping its state",
                self.name
            );
            if let Err(e) = os::dir::unlinkat(self.dir.as_fd(), c"state.json", 0) {
                tracing::error!(
                    "cannot drop the state of failed snapshot {:?}: {e}; a restart would \
                     copy it again",
                    self.name
                );
            }
        }
    }

    /// Stops preservation and waits for any in flight to finish.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        for s in self.stripes.iter() {
            drop(s.write());
        }
    }

    /// The ctime safety net for an object read live without a pre-image.
    pub(super) fn check_live(&self, st: &libc::stat) -> io::Result<()> {
        let ctime = os::time::from_stat(st.st_ctime, st.st_ctime_nsec);
        if ctime > self.commit {
            return Err(Inconsistent::error(format!(
                "object {}:{} changed after the point in time of snapshot {:?} without a \
                 pre-image (changed outside the mount?): ctime {}.{:09} > commit {}.{:09}",
                st.st_dev,
                st.st_ino,
                self.name,
                ctime.sec,
                ctime.nsec,
                self.commit.sec,
                self.commit.nsec
            )));
        }
        Ok(())
    }

    // ---- preservation (hooks) ----

    /// Runs `work` on the record of `obj` under its stripe's write lock if
    /// `needs` says there is something to preserve (checked first under the
    /// read lock: the hot path costs a hash lookup). Should `work` fail,
    /// the snapshot fails, under the same lock ([`Self::fail`]): the change
    /// goes on either way.
    fn update(
        &self,
        obj: &Obj,
        needs: impl Fn(&Rec) -> bool,
        work: impl FnOnce(&Pit, &mut Rec) -> io::Result<()>,
    ) {
        let stripe = self.stripe(obj.key);
        {
            let g = stripe.read();
            match g.get(&obj.key) {
                Some(r) if r.created || !needs(r) => return,
                _ => {}
            }
        }
        let mut g = stripe.write();
        if self.released.load(Ordering::SeqCst) {
            return;
        }
        let rec = g.entry(obj.key).or_default();
        if rec.created || !needs(rec) {
            return;
        }
        if let Err(e) = work(self, rec) {
            self.fail(&e);
        }
    }

    fn ensure_attrs(&self, obj: &Obj, rec: &mut Rec) -> io::Result<Arc<AttrsRec>> {
        if let Some(a) = &rec.attrs {
            return Ok(a.clone());
        }
        let st = fd::fstat(obj.fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        let xattrs = xattr::list_all(XattrOf::ProcFd(obj.fd))?;
        let target = if kind == libc::S_IFLNK {
            Some(os::dir::readlink_fd(obj.fd)?)
        } else {
            None
        };
        let a = Arc::new(AttrsRec::new(&st, xattrs, target));
        let bytes = area::encode(&*a);
        self.fate.reserve(&self.name, bytes.len() as u64)?;
        area::write_atomic(self.dir.as_fd(), &area::rec_name(obj.key, "attrs"), &bytes)?;
        rec.attrs = Some(a.clone());
        Ok(a)
    }

    fn ensure_entries(&self, dir: &Obj, rec: &mut Rec) -> io::Result<()> {
        if rec.entries.is_some() {
            return Ok(());
        }
        let list = self.list_live_entries(dir.fd, dir.key)?;
        let bytes = area::encode(&list);
        self.fate.reserve(&self.name, bytes.len() as u64)?;
        area::write_atomic(
            self.dir.as_fd(),
            &area::rec_name(dir.key, "entries"),
            &bytes,
        )?;
        rec.entries = Some(Arc::new(list));
        Ok(())
    }

    /// The live listing of a directory with what finds each entry later.
    fn list_live_entries(&self, fd: BorrowedFd, key: Key) -> io::Result<Vec<EntryRec>> {
        let d = fd::reopen_noatime(fd, libc::O_DIRECTORY)?;
        let mut out = Vec::new();
        for name in os::dir::read_dir_names(d.as_fd())? {
            if self.source.hides(key, &name) {
                continue;
            }
            let c = os::cstr(&name)?;
            let st = match fd::fstatat(d.as_fd(), &c, Follow::No) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let handle = area::handle_at(d.as_fd(), &c)?;
            out.push(EntryRec {
                name: ByteBuf::from(name),
                dev: st.st_dev,
                ino: st.st_ino,
                kind: st.st_mode & libc::S_IFMT,
                handle: handle.map(ByteBuf::from),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The blocks a change of `[start, end)` affects in a file whose size
    /// was `size`: those overlapping the range below `size`, and, for a
    /// change at or past `size`, the block holding the last byte: the
    /// filesystem block that holds it is allocated by a write just past it,
    /// and a hole there would turn into data (zeros, but not a hole).
    fn block_range(start: u64, end: u64, size: u64) -> std::ops::Range<u64> {
        let below = end.min(size);
        if start < below {
            return start / BLOCK..below.div_ceil(BLOCK);
        }
        if start < end && size > 0 && start / BLOCK == (size - 1) / BLOCK {
            return start / BLOCK..start / BLOCK + 1;
        }
        0..0
    }

    fn missing_blocks(rec: &Rec, start: u64, end: u64) -> bool {
        match &rec.attrs {
            None => true,
            Some(a) => {
                !rec.all && Self::block_range(start, end, a.size).any(|b| !rec.blocks.contains(&b))
            }
        }
    }

    fn preserve_blocks(&self, obj: &Obj, rec: &mut Rec, start: u64, end: u64) -> io::Result<()> {
        let a = self.ensure_attrs(obj, rec)?;
        if rec.all {
            return Ok(());
        }
        let todo: Vec<u64> = Self::block_range(start, end, a.size)
            .filter(|b| !rec.blocks.contains(b))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let live = fd::reopen_noatime(obj.fd, 0)?;
        let (data, log) = self.data_files(obj.key)?;
        for b in todo {
            let s = b * BLOCK;
            let end = (s + BLOCK).min(a.size);
            // The block (holes count, a bound is not an allocator) and its
            // log entry.
            self.fate.reserve(&self.name, end - s + 8)?;
            os::io::copy_segments(
                live.as_fd(),
                data.as_fd(),
                s,
                end,
                BLOCK as usize,
                "area.data",
            )?;
            os::io::write_all(log.as_fd(), &b.to_le_bytes(), "area.log")?;
            rec.blocks.insert(b);
        }
        Ok(())
    }

    /// Opens `.data` and `.blocks` to add blocks. They are not kept open:
    /// a pending snapshot may have preserved more objects than the process
    /// may have descriptors.
    fn data_files(&self, key: Key) -> io::Result<(File, File)> {
        let data = fd::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "data"),
            Follow::No,
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )?;
        let log = fd::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "blocks"),
            Follow::No,
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
            0o600,
        )?;
        Ok((File::from(data), File::from(log)))
    }

    /// Opens `.data` to read preserved blocks.
    pub(super) fn open_data(&self, key: Key) -> io::Result<File> {
        Ok(File::from(fd::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "data"),
            Follow::No,
            libc::O_RDONLY,
            0,
        )?))
    }

    pub fn attrs(&self, obj: &Obj) {
        self.update(
            obj,
            |r| r.attrs.is_none(),
            |p, r| p.ensure_attrs(obj, r).map(drop),
        )
    }

    pub fn data(&self, obj: &Obj, off: u64, len: u64) {
        let end = off.saturating_add(len);
        self.update(
            obj,
            |r| Self::missing_blocks(r, off, end),
            |p, r| p.preserve_blocks(obj, r, off, end),
        )
    }

    pub fn truncate(&self, obj: &Obj, size: u64) {
        // The blocks cut off (or, extending a file truncated before, refilled
        // with zeros: those were preserved when it was cut).
        self.update(
            obj,
            |r| Self::missing_blocks(r, size, u64::MAX),
            |p, r| p.preserve_blocks(obj, r, size, u64::MAX),
        )
    }

    pub fn entries(&self, dir: &Obj) {
        self.update(
            dir,
            |r| r.attrs.is_none() || r.entries.is_none(),
            |p, r| {
                p.ensure_attrs(dir, r)?;
                p.ensure_entries(dir, r)
            },
        )
    }

    pub fn unlinking(&self, dir: &Obj, victim: &Obj) {
        self.entries(dir);
        let is_dir = victim.kind == libc::S_IFDIR;
        self.update(
            victim,
            |r| {
                r.attrs.is_none()
                    || if is_dir {
                        r.entries.is_none()
                    } else {
                        !r.linked && !r.all
                    }
            },
            |p, r| {
                let a = p.ensure_attrs(victim, r)?;
                if is_dir {
                    // Removed or replaced, a directory is empty: its listing
                    // is then complete and cheap. A directory that is not
                    // empty is being renamed and stays reachable by handle.
                    let d = fd::reopen_noatime(victim.fd, libc::O_DIRECTORY)?;
                    if os::dir::dir_is_empty(d.as_fd())? {
                        p.ensure_entries(victim, r)?;
                    }
                    return Ok(());
                }
                // Linked whatever its link count: two names of one inode can
                // be removed at once (in two directories), each hook seeing
                // the other name still there. A link costs one call, once
                // per object.
                match os::dir::link_fd(
                    victim.fd,
                    p.dir.as_fd(),
                    &area::rec_name(victim.key, "link"),
                    "area.link",
                ) {
                    Ok(()) => r.linked = true,
                    Err(Errno::EEXIST) => r.linked = true,
                    Err(e) => {
                        tracing::debug!(
                            "cannot link {:?} into the diff area ({e}): copying",
                            victim.key
                        );
                        if victim.kind == libc::S_IFREG {
                            p.preserve_blocks(victim, r, 0, a.size)?;
                        }
                        let (_, log) = p.data_files(victim.key)?;
                        p.fate.reserve(&p.name, 8)?;
                        os::io::write_all(log.as_fd(), &ALL_BLOCKS.to_le_bytes(), "area.log")?;
                        r.all = true;
                    }
                }
                Ok(())
            },
        )
    }

    /// Whether the diff dir holds a link to inode `key`.
    pub fn linked(&self, key: Key) -> bool {
        let g = self.stripe(key).read();
        g.get(&key).is_some_and(|r| r.linked)
    }

    pub fn created(&self, obj: &Obj) {
        let mut g = self.stripe(obj.key).write();
        g.entry(obj.key).or_default().created = true;
    }
}
