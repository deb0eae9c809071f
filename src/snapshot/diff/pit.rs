//! A pending snapshot: its preserved pre-images (written by the hooks, see
//! [`super::Snapshots`]) and the tree as of its point in time ([`AsOf`]).
//!
//! Locking: the per-object records live in striped maps; a stripe's lock
//! covers "preserve → mark" in a hook (write lock, held across the
//! preservation I/O) and "is it preserved? → read live" in a reader (read
//! lock, held across the live read). Since the live core changes an object
//! only after its hook returned, a reader never sees a change made after the
//! point in time. No lock covers more than one stripe, and none is taken
//! twice by one thread.

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde_bytes::ByteBuf;

use super::area::{self, AttrsRec, EntryRec, State, ALL_BLOCKS, BLOCK};
use crate::live::changes::Obj;
use crate::snapshot::asof::{AsOf, AsOfFile, Inconsistent, Key};
use crate::store::{Time, Xattr};

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
struct Rec {
    /// Born after the barrier: the snapshot does not need it.
    created: bool,
    attrs: Option<Arc<AttrsRec>>,
    entries: Option<Arc<Vec<EntryRec>>>,
    /// Blocks (of [`BLOCK`] bytes) whose content is in `.data`.
    blocks: BTreeSet<u64>,
    /// Every block is in `.data`: the live object is not needed for content.
    all: bool,
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
    dir: OwnedFd,
    source: Arc<Source>,
    stripes: Box<[Stripe]>,
    /// Set once the snapshot is sealed or failed: hooks no longer preserve.
    released: AtomicBool,
}

/// A pending snapshot as of its point in time. Shared (`Arc`) by the
/// provider copying it and the view showing it.
pub struct PointInTime {
    pit: Arc<Pit>,
}

fn to_time(t: SystemTime) -> Time {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => Time {
            sec: -(e.duration().as_secs() as i64) - 1,
            nsec: 1_000_000_000 - e.duration().subsec_nanos().max(1),
        },
    }
}

fn from_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(t.sec as u64, t.nsec)
    } else {
        SystemTime::UNIX_EPOCH - std::time::Duration::from_secs((-t.sec) as u64)
            + std::time::Duration::from_nanos(t.nsec as u64)
    }
}

fn realtime_now() -> Time {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    Time {
        sec: ts.tv_sec,
        nsec: ts.tv_nsec as u32,
    }
}

fn gone(key: Key) -> io::Error {
    Inconsistent::error(format!(
        "object {}:{} of the pending snapshot is gone from the source and has no pre-image",
        key.0, key.1
    ))
}

impl Pit {
    /// Fixes the point in time: makes the diff dir and its `state.json`.
    pub fn create(
        source: Arc<Source>,
        diff_root: BorrowedFd,
        name: &str,
        time: SystemTime,
    ) -> io::Result<Pit> {
        let cname = crate::sys::cstr(name.as_bytes())?;
        // SAFETY: valid C string.
        if unsafe {
            libc::mkdirat(
                std::os::fd::AsRawFd::as_raw_fd(&diff_root),
                cname.as_ptr(),
                0o700,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        let made = (|| {
            let dir = area::openat(diff_root, &cname, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let state = State {
                version: area::VERSION,
                name: name.to_owned(),
                time: to_time(time),
                commit: realtime_now(),
                root: source.root_key,
            };
            let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
            area::write_atomic(dir.as_fd(), c"state.json", &json)?;
            Ok((dir, state))
        })();
        match made {
            Ok((dir, state)) => Ok(Pit::new(source, dir, state, Vec::new())),
            Err(e) => {
                // Leave no directory behind that would refuse the name.
                let at = std::os::fd::AsRawFd::as_raw_fd(&diff_root);
                let tmp = CString::new(format!("{name}/state.json.tmp")).expect("no NUL");
                // SAFETY: valid C strings; failures leave nothing worse.
                unsafe {
                    libc::unlinkat(at, tmp.as_ptr(), 0);
                    libc::unlinkat(at, cname.as_ptr(), libc::AT_REMOVEDIR);
                }
                Err(e)
            }
        }
    }

    /// Reads a diff dir back (`state.json` and every record).
    pub fn load(source: Arc<Source>, dir: OwnedFd) -> io::Result<Pit> {
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
        Ok(Pit::new(source, dir, state, recs))
    }

    fn new(source: Arc<Source>, dir: OwnedFd, state: State, recs: Vec<(Key, area::Loaded)>) -> Pit {
        let pit = Pit {
            name: state.name,
            time: from_time(state.time),
            commit: state.commit,
            dir,
            source,
            stripes: (0..STRIPES).map(|_| RwLock::new(HashMap::new())).collect(),
            released: AtomicBool::new(false),
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

    fn read(&self, key: Key) -> RwLockReadGuard<'_, HashMap<Key, Rec>> {
        self.stripe(key).read()
    }

    /// Stops preservation and waits for any in flight to finish.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        for s in self.stripes.iter() {
            drop(s.write());
        }
    }

    /// The ctime safety net for an object read live without a pre-image.
    fn check_live(&self, st: &libc::stat) -> io::Result<()> {
        let ctime = Time {
            sec: st.st_ctime,
            nsec: st.st_ctime_nsec as u32,
        };
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
    /// read lock: the hot path costs a hash lookup).
    fn update(
        &self,
        obj: &Obj,
        needs: impl Fn(&Rec) -> bool,
        work: impl FnOnce(&Pit, &mut Rec) -> io::Result<()>,
    ) -> io::Result<()> {
        let stripe = self.stripe(obj.key);
        {
            let g = stripe.read();
            match g.get(&obj.key) {
                Some(r) if r.created || !needs(r) => return Ok(()),
                _ => {}
            }
        }
        let mut g = stripe.write();
        if self.released.load(Ordering::SeqCst) {
            return Ok(());
        }
        let rec = g.entry(obj.key).or_default();
        if rec.created || !needs(rec) {
            return Ok(());
        }
        work(self, rec)
    }

    fn ensure_attrs(&self, obj: &Obj, rec: &mut Rec) -> io::Result<Arc<AttrsRec>> {
        if let Some(a) = &rec.attrs {
            return Ok(a.clone());
        }
        let st = area::fstat(obj.fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        let xattrs = area::xattrs_of(obj.fd)?;
        let target = if kind == libc::S_IFLNK {
            Some(area::read_link(obj.fd)?)
        } else {
            None
        };
        let a = Arc::new(AttrsRec::new(&st, xattrs, target));
        area::write_atomic(
            self.dir.as_fd(),
            &area::rec_name(obj.key, "attrs"),
            &area::encode(&*a),
        )?;
        rec.attrs = Some(a.clone());
        Ok(a)
    }

    fn ensure_entries(&self, dir: &Obj, rec: &mut Rec) -> io::Result<()> {
        if rec.entries.is_some() {
            return Ok(());
        }
        let list = self.list_live_entries(dir.fd, dir.key)?;
        area::write_atomic(
            self.dir.as_fd(),
            &area::rec_name(dir.key, "entries"),
            &area::encode(&list),
        )?;
        rec.entries = Some(Arc::new(list));
        Ok(())
    }

    /// The live listing of a directory with what finds each entry later.
    fn list_live_entries(&self, fd: BorrowedFd, key: Key) -> io::Result<Vec<EntryRec>> {
        let d = area::reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut out = Vec::new();
        for name in crate::sys::read_dir_names(d.as_fd())? {
            if self.source.hides(key, &name) {
                continue;
            }
            let c = crate::sys::cstr(&name)?;
            let st = match area::fstatat(d.as_fd(), &c) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e),
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
        let live = File::from(area::reopen(obj.fd, libc::O_RDONLY)?);
        let (data, log) = self.data_files(obj.key)?;
        for b in todo {
            let s = b * BLOCK;
            area::copy_range(&live, &data, s, (s + BLOCK).min(a.size))?;
            (&log).write_all(&b.to_le_bytes())?;
            rec.blocks.insert(b);
        }
        Ok(())
    }

    /// Opens `.data` and `.blocks` to add blocks. They are not kept open:
    /// a pending snapshot may have preserved more objects than the process
    /// may have descriptors.
    fn data_files(&self, key: Key) -> io::Result<(File, File)> {
        let data = area::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "data"),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )?;
        let log = area::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "blocks"),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
            0o600,
        )?;
        Ok((File::from(data), File::from(log)))
    }

    /// Opens `.data` to read preserved blocks.
    fn open_data(&self, key: Key) -> io::Result<File> {
        area::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "data"),
            libc::O_RDONLY,
            0,
        )
        .map(File::from)
    }

    pub fn attrs(&self, obj: &Obj) -> io::Result<()> {
        self.update(
            obj,
            |r| r.attrs.is_none(),
            |p, r| p.ensure_attrs(obj, r).map(drop),
        )
    }

    pub fn data(&self, obj: &Obj, off: u64, len: u64) -> io::Result<()> {
        let end = off.saturating_add(len);
        self.update(
            obj,
            |r| Self::missing_blocks(r, off, end),
            |p, r| p.preserve_blocks(obj, r, off, end),
        )
    }

    pub fn truncate(&self, obj: &Obj, size: u64) -> io::Result<()> {
        // The blocks cut off (or, extending a file truncated before, refilled
        // with zeros: those were preserved when it was cut).
        self.update(
            obj,
            |r| Self::missing_blocks(r, size, u64::MAX),
            |p, r| p.preserve_blocks(obj, r, size, u64::MAX),
        )
    }

    pub fn entries(&self, dir: &Obj) -> io::Result<()> {
        self.update(
            dir,
            |r| r.attrs.is_none() || r.entries.is_none(),
            |p, r| {
                p.ensure_attrs(dir, r)?;
                p.ensure_entries(dir, r)
            },
        )
    }

    pub fn unlinking(&self, dir: &Obj, victim: &Obj) -> io::Result<()> {
        self.entries(dir)?;
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
                    let d = area::reopen(victim.fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
                    if area::dir_is_empty(d)? {
                        p.ensure_entries(victim, r)?;
                    }
                    return Ok(());
                }
                // Linked whatever its link count: two names of one inode can
                // be removed at once (in two directories), each hook seeing
                // the other name still there. A link costs one call, once
                // per object.
                match area::link_into(
                    victim.fd,
                    p.dir.as_fd(),
                    &area::rec_name(victim.key, "link"),
                ) {
                    Ok(()) => r.linked = true,
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => r.linked = true,
                    Err(e) => {
                        tracing::debug!(
                            "cannot link {:?} into the diff area ({e}): copying",
                            victim.key
                        );
                        if victim.kind == libc::S_IFREG {
                            p.preserve_blocks(victim, r, 0, a.size)?;
                        }
                        let (_, log) = p.data_files(victim.key)?;
                        (&log).write_all(&ALL_BLOCKS.to_le_bytes())?;
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

    // ---- reading ----

    /// Finds the object of a preserved entry of `dir`: by its handle, by
    /// its link in the diff dir, or still at its name (an object on another
    /// filesystem mounted inside the source, which the source's handles do
    /// not reach); always checking it is the same inode.
    fn resolve(&self, dir: Option<BorrowedFd>, e: &EntryRec) -> Option<Arc<OwnedFd>> {
        let key = e.key();
        let ok = |fd: OwnedFd| -> Option<Arc<OwnedFd>> {
            let st = area::fstat(fd.as_fd()).ok()?;
            ((st.st_dev, st.st_ino) == key).then(|| Arc::new(fd))
        };
        if let Some(h) = &e.handle {
            if let Some(fd) = area::open_handle(self.source.mount.as_fd(), h)
                .ok()
                .and_then(ok)
            {
                return Some(fd);
            }
        }
        if let Some(fd) = area::openat(
            self.dir.as_fd(),
            &area::rec_name(key, "link"),
            libc::O_PATH,
            0,
        )
        .ok()
        .and_then(ok)
        {
            return Some(fd);
        }
        let name = crate::sys::cstr(&e.name).ok()?;
        area::openat(dir?, &name, libc::O_PATH, 0).ok().and_then(ok)
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
        let st = area::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != obj.key {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
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
        let g = p.read(obj.key);
        if let Some(a) = g.get(&obj.key).and_then(|r| r.attrs.as_ref()) {
            return Ok(a.to_stat());
        }
        let st = area::fstat(obj.fd()?)?;
        p.check_live(&st)?;
        Ok(st)
    }

    fn list(&self, dir: &PitObj) -> io::Result<Vec<Vec<u8>>> {
        let p = &self.pit;
        let g = p.read(dir.key);
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
            p.check_live(&area::fstat(fd)?)?;
        }
        let d = area::reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut names = crate::sys::read_dir_names(d.as_fd())?;
        names.retain(|n| !p.source.hides(dir.key, n));
        Ok(names)
    }

    fn child(&self, dir: &PitObj, name: &[u8]) -> io::Result<PitObj> {
        let p = &self.pit;
        if p.source.hides(dir.key, name) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let c = crate::sys::cstr(name)?;
        let entry = {
            let g = p.read(dir.key);
            match g.get(&dir.key).and_then(|r| r.entries.as_ref()) {
                Some(list) => {
                    let i = list
                        .binary_search_by(|e| e.name.as_slice().cmp(name))
                        .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
                    list[i].clone()
                }
                None => {
                    // Unchanged entries: the live name is the name then.
                    let fd = area::openat(dir.fd()?, &c, libc::O_PATH, 0)?;
                    let st = area::fstat(fd.as_fd())?;
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
        let g = p.read(obj.key);
        if let Some(a) = g.get(&obj.key).and_then(|r| r.attrs.as_ref()) {
            return Ok(a.xattrs.clone());
        }
        let fd = obj.fd()?;
        p.check_live(&area::fstat(fd)?)?;
        area::xattrs_of(fd)
    }

    fn readlink(&self, obj: &PitObj) -> io::Result<Vec<u8>> {
        let p = &self.pit;
        {
            let g = p.read(obj.key);
            if let Some(t) = g
                .get(&obj.key)
                .and_then(|r| r.attrs.as_ref())
                .and_then(|a| a.target.as_ref())
            {
                return Ok(t.to_vec());
            }
        }
        // A symlink's target never changes.
        area::read_link(obj.fd()?)
    }

    fn open(&self, obj: &PitObj) -> io::Result<PitFile> {
        let p = &self.pit;
        let (size, all) = {
            let g = p.read(obj.key);
            let rec = g.get(&obj.key);
            match rec.and_then(|r| r.attrs.as_ref()) {
                Some(a) => (a.size, rec.is_some_and(|r| r.all)),
                None => {
                    let st = area::fstat(obj.fd()?)?;
                    p.check_live(&st)?;
                    (st.st_size as u64, false)
                }
            }
        };
        let live = if all {
            None
        } else {
            Some(File::from(area::reopen(obj.fd()?, libc::O_RDONLY)?))
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
        let g = p.read(self.key);
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
                p.check_live(&area::fstat(live.as_fd())?)?;
            }
            let l = area::data_segments(live.as_fd(), 0, limit)?;
            out.extend(subtract(&l, &kept));
        }
        if !kept.is_empty() {
            let data = self.data()?;
            for &(s, l) in &kept {
                out.extend(area::data_segments(data.as_fd(), s, s + l)?);
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
        let g = p.read(self.key);
        let rec = g.get(&self.key).filter(|r| r.attrs.is_some());
        if rec.is_none() {
            p.check_live(&area::fstat(self.live()?.as_fd())?)?;
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
