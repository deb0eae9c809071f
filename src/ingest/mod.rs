//! The provider: copy a tree as of a point in time into the store as a
//! snapshot. One walker for both sources: a plain directory read as it is
//! (`bkfs backup`, [`PlainDir`]) and a mount's point in time, through
//! [`AsOf`].
//!
//! Directories are walked in parallel (rayon, fork-join: a directory's tree
//! blob is written once all its entries are done), files in parallel, and the
//! chunks of large files in parallel. A file whose inode, size, mtime and
//! ctime match the parent snapshot's entry is not read again: its chunk list
//! is reused. Given a [`ChangeSet`], whatever it does not list is reused from
//! the parent snapshot without being looked at at all.

pub mod asof;
pub mod changeset;
mod file;
pub mod plain;
mod scan;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use rayon::prelude::*;

use crate::os;
use crate::store::pack::BlobKind;
use crate::store::snapshot::{self, Capture, Snapshot, Stats};
use crate::store::{Error, Id, Kind, Node, Piece, Result, Store, StoreReader, StoreWriter, Tree};

pub use asof::{AsOf, AsOfFile, Key};
pub use changeset::ChangeSet;
pub use plain::PlainDir;
pub use scan::{scan, scan_changes};

/// Live counters, read by a progress display while the backup runs.
#[derive(Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    /// Bytes of file content accounted for (read, or reused unchanged).
    pub bytes: AtomicU64,
    /// Of those, bytes actually read from the source.
    pub bytes_read: AtomicU64,
    /// Totals found by a scan running beside the backup (0 until known).
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_done: AtomicBool,
    /// Set when the job is over: a scan still running stops at once and
    /// leaves `scan_done` unset. (A mount's copy sets it before the seal
    /// releases the point in time the scan walks: after that it would walk
    /// the live tree and count what the snapshot does not hold.)
    pub scan_stop: AtomicBool,
}

impl Progress {
    /// Data read from the source: counts at once, so the bar moves within a large file.
    fn add_read(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }
}

/// Options of `bkfs backup`.
pub struct Options {
    pub name: Option<String>,
    /// Parent snapshot for change detection; default: the newest snapshot of the same source.
    pub parent: Option<String>,
}

/// Options of [`copy`].
pub struct CopyOptions<'a> {
    /// The snapshot's name (validated, and must not exist yet).
    pub name: String,
    /// The point in time, recorded as [`Snapshot::time`].
    pub time: SystemTime,
    /// Recorded as [`Snapshot::source`]; also what the default parent is
    /// looked up by.
    pub source: String,
    /// Parent snapshot for change detection; default: the newest snapshot of
    /// the same source. Ignored when `changes` is given (must then be `None`
    /// or `changes.since`).
    pub parent: Option<String>,
    /// What changed since snapshot `changes.since`, which becomes the parent:
    /// what it does not list is reused from the parent without a look. An
    /// object it lists is compared with the parent by metadata as without it.
    /// The counters (and the record's stats) of a subtree reused whole are
    /// summed from the parent's trees, each tree read once: on a 78k-file
    /// tree with nothing changed, about 50 ms of a 60 ms copy.
    pub changes: Option<&'a ChangeSet>,
    /// Copied into the record.
    pub capture: Option<Capture>,
    /// Set (by an unmount) to stop soon: the copy then writes no record and
    /// returns [`Error::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Counts of directory trees kept across copies (a mount's); `None`: this
    /// copy's own.
    pub counts: Option<&'a CountCache>,
}

impl CopyOptions<'_> {
    /// A full copy with metadata comparison against the default parent.
    pub fn new(name: String, time: SystemTime, source: String) -> Self {
        CopyOptions {
            name,
            time,
            source,
            parent: None,
            changes: None,
            capture: None,
            cancel: None,
            counts: None,
        }
    }
}

pub struct Report {
    pub snapshot: Snapshot,
    /// Source entries that could not be read (the snapshot lacks them).
    pub errors: Vec<String>,
    /// Entries skipped on purpose (sockets, the store itself).
    pub warnings: Vec<String>,
    /// The change record given was not used: the snapshot it counts from
    /// is gone from the store (forgotten since); metadata was compared with
    /// the newest snapshot of the source instead.
    pub changes_dropped: bool,
}

/// Why an entry could not be backed up: a problem of the source (reported,
/// the backup goes on) or of the store (the backup stops).
pub enum Failure {
    Source(std::io::Error),
    Store(Error),
}

/// A hard-linked file already read: its content and the stat it had then.
type LinkSeen = (Vec<Piece>, libc::stat);

/// Files, directories and file bytes under a directory of the parent snapshot.
#[derive(Clone, Copy, Default)]
pub struct Counts {
    files: u64,
    dirs: u64,
    bytes: u64,
}

/// What each directory tree holds, by tree id: kept by a mount across its
/// snapshots ([`CopyOptions::counts`]) so that an incremental copy counts a
/// reused subtree without reading it back.
pub type CountCache = Mutex<HashMap<Id, Counts>>;

/// What a tree's own entries hold, its subdirectories' contents left out.
fn own_counts(nodes: &[Node]) -> Counts {
    nodes.iter().fold(
        Counts {
            dirs: 1,
            ..Counts::default()
        },
        |mut c, n| {
            match n.kind {
                Kind::Dir => {}
                Kind::File => {
                    c.files += 1;
                    c.bytes += n.size;
                }
                _ => c.files += 1,
            }
            c
        },
    )
}

struct Walk<'a, A: AsOf> {
    src: &'a A,
    w: &'a StoreWriter,
    parent: Option<&'a StoreReader>,
    changes: Option<&'a ChangeSet>,
    cancel: Option<&'a AtomicBool>,
    progress: &'a Progress,
    /// Content of hard-linked files already read, so other names reuse it.
    links: Mutex<HashMap<Key, LinkSeen>>,
    /// What the subtrees reused whole hold, by tree id.
    counted: CountCache,
    /// The mount's cache, when it keeps one across copies.
    shared_counts: Option<&'a CountCache>,
    errors: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    stop: AtomicBool,
    fatal: Mutex<Option<Error>>,
}

/// `bkfs backup`: copy the directory `src` as it is.
pub fn backup(store: &Store, src: &Path, opts: &Options, progress: &Progress) -> Result<Report> {
    let time = SystemTime::now();
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| snapshot::auto_name(time));
    snapshot::validate_name(&name)?;
    if snapshot::path(&store.snapshots_dir(), &name).exists() {
        return Err(Error::SnapshotExists(name));
    }
    let src = src
        .canonicalize()
        .map_err(|e| Error::io(format!("source {}", src.display()), e))?;
    let mut skip = Vec::new();
    let store_fd = os::fd::open_dir(store.root()).map_err(|e| Error::io("store", e))?;
    if let Ok(st) = os::fd::fstat(std::os::fd::AsFd::as_fd(&store_fd)) {
        skip.push((st.st_dev, st.st_ino));
    }
    drop(store_fd);
    let dir = PlainDir::open(&src, skip)
        .map_err(|e| Error::io(format!("source {}", src.display()), e))?;
    let mut copts = CopyOptions::new(name, time, src.to_string_lossy().into_owned());
    copts.parent = opts.parent.clone();
    copy(store, &dir, &copts, progress)
}

/// Copy `src` into the store as snapshot `opts.name`. Entries that cannot be
/// read are left out and listed in the report; a store error, or a cancel,
/// stops the copy and writes no record.
pub fn copy<A: AsOf>(
    store: &Store,
    src: &A,
    opts: &CopyOptions,
    progress: &Progress,
) -> Result<Report> {
    let started = Instant::now();
    let cancelled = || opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    snapshot::validate_name(&opts.name)?;
    if snapshot::path(&store.snapshots_dir(), &opts.name).exists() {
        return Err(Error::SnapshotExists(opts.name.clone()));
    }
    let parent = match (opts.changes, &opts.parent) {
        (Some(c), Some(p)) if *p != c.since => {
            return Err(Error::Other(format!(
                "parent {p:?} given with changes since {:?}",
                c.since
            )))
        }
        (Some(c), _) => Some(c.since.as_str()),
        (None, p) => p.as_deref(),
    };
    if cancelled() {
        return Err(Error::Cancelled);
    }
    let mut w = store.writer("backup")?;
    let reader = w.reader()?;
    // A change record counts from its snapshot. Forgotten since (through
    // the mount or behind its back: the writer lock now keeps it as it is),
    // the record says nothing of what changed since the snapshot before,
    // so the copy compares metadata with the newest snapshot of the source.
    let mut changes = opts.changes;
    let parent_root = match parent_root(store, &reader, &opts.source, parent) {
        Err(Error::NoSnapshot(gone)) if changes.is_some() => {
            tracing::info!(
                "snapshot {}: the change record counts from {gone:?}, which is gone; \
                 comparing metadata with the newest snapshot instead",
                opts.name
            );
            changes = None;
            parent_root(store, &reader, &opts.source, None)?
        }
        r => r?,
    };
    let changes_dropped = opts.changes.is_some() && changes.is_none();

    let walk = Walk {
        src,
        w: &w,
        parent: parent_root.is_some().then_some(&reader),
        changes: changes.filter(|_| parent_root.is_some()),
        cancel: opts.cancel,
        progress,
        links: Mutex::new(HashMap::new()),
        counted: Mutex::new(HashMap::new()),
        shared_counts: opts.counts,
        errors: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
    };
    let src_path = PathBuf::from(&opts.source);
    let root_node = src
        .root()
        .map_err(Failure::Source)
        .and_then(|root| walk.object(root, &src_path, Vec::new(), parent_root.as_ref()));
    if cancelled() {
        return Err(Error::Cancelled);
    }
    let root_node = match root_node {
        Ok(Some(n)) if n.kind == Kind::Dir => n,
        Ok(_) => {
            return Err(Error::Other(format!(
                "source {}: not a directory",
                opts.source
            )))
        }
        Err(Failure::Store(e)) => return Err(e),
        Err(Failure::Source(e)) => return Err(Error::io(format!("source {}", opts.source), e)),
    };
    if let Some(e) = walk.fatal.lock().take() {
        return Err(e);
    }
    let top = put_tree(&w, vec![root_node])?;
    tracing::debug!("walk done after {:.3} s", started.elapsed().as_secs_f64());
    let errors = std::mem::take(&mut *walk.errors.lock());
    let warnings = std::mem::take(&mut *walk.warnings.lock());
    let s = &w.stats;
    let mut snap = Snapshot {
        name: opts.name.clone(),
        time: humantime::format_rfc3339_nanos(opts.time).to_string(),
        tree: top,
        source: opts.source.clone(),
        hostname: crate::store::lock::hostname(),
        stats: Stats {
            files: progress.files.load(Ordering::Relaxed),
            dirs: progress.dirs.load(Ordering::Relaxed),
            bytes: progress.bytes.load(Ordering::Relaxed),
            bytes_read: progress.bytes_read.load(Ordering::Relaxed),
            bytes_new: s.data_bytes_new.load(Ordering::Relaxed),
            bytes_stored: s.data_bytes_stored.load(Ordering::Relaxed),
            tree_bytes_stored: s.tree_bytes_stored.load(Ordering::Relaxed),
            seconds: 0.0,
            errors: errors.len() as u64,
        },
        capture: opts.capture.clone(),
    };
    snap.stats.seconds = started.elapsed().as_secs_f64();
    if cancelled() {
        return Err(Error::Cancelled);
    }
    w.commit(Some(&snap))?;
    tracing::debug!("committed after {:.3} s", started.elapsed().as_secs_f64());

    Ok(Report {
        snapshot: snap,
        errors,
        warnings,
        changes_dropped,
    })
}

/// The root node of the parent snapshot, if there is one to compare with.
fn parent_root(
    store: &Store,
    reader: &StoreReader,
    source: &str,
    parent: Option<&str>,
) -> Result<Option<Node>> {
    let snap = match parent {
        Some(p) => Some(store.snapshot(p)?),
        None => store
            .snapshots()?
            .into_iter()
            .rev()
            .find(|s| s.source == source),
    };
    let Some(snap) = snap else { return Ok(None) };
    let top = reader.tree(&snap.tree)?;
    Ok(top.nodes.first().cloned())
}

fn put_tree(w: &StoreWriter, nodes: Vec<Node>) -> Result<Id> {
    let mut t = Tree { nodes };
    w.put(BlobKind::Tree, &t.encode())
}

fn kind_of(mode: u32) -> Option<Kind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFCHR => Kind::Chr,
        libc::S_IFBLK => Kind::Blk,
        _ => return None,
    })
}

fn node_from_stat(name: Vec<u8>, kind: Kind, st: &libc::stat) -> Node {
    let (mtime, atime, ctime) = os::time::stat_times(st);
    Node {
        name,
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        // A directory's size is its filesystem's (ext4: its blocks), shown
        // as such by the snapshot views.
        size: if matches!(kind, Kind::File | Kind::Symlink | Kind::Dir) {
            st.st_size as u64
        } else {
            0
        },
        mtime,
        atime,
        ctime,
        ino: st.st_ino,
        dev: st.st_dev,
        nlink: st.st_nlink,
        rdev: if matches!(kind, Kind::Chr | Kind::Blk) {
            st.st_rdev
        } else {
            0
        },
        target: None,
        xattrs: Vec::new(),
        content: Vec::new(),
        subtree: None,
    }
}

fn path_of(dir: &Path, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(std::ffi::OsStr::from_bytes(name))
}

/// The parent snapshot's node `o`, if `changes` says the object `key` is the
/// same as then (and for a directory, everything below it too).
fn reusable<'n>(changes: &ChangeSet, key: Key, o: &'n Node) -> Option<&'n Node> {
    if (o.dev, o.ino) != key || changes.object_changed(key) {
        return None;
    }
    match o.kind {
        Kind::Dir => (!changes.subtree_changed(key) && o.subtree.is_some()).then_some(o),
        Kind::File => complete(o).then_some(o),
        _ => Some(o),
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, b: Counts) -> Counts {
        Counts {
            files: self.files + b.files,
            dirs: self.dirs + b.dirs,
            bytes: self.bytes + b.bytes,
        }
    }
}

/// What directory tree `id` holds, itself included, counted once per tree id
/// (`memo`), subdirectories in parallel.
fn count_tree(r: &StoreReader, memo: &Mutex<HashMap<Id, Counts>>, id: Id) -> Result<Counts> {
    if let Some(c) = memo.lock().get(&id) {
        return Ok(*c);
    }
    let tree = r.tree(&id)?;
    let own = own_counts(&tree.nodes);
    let subs = tree
        .nodes
        .par_iter()
        .filter(|n| n.kind == Kind::Dir)
        .map(|n| {
            let sub = n
                .subtree
                .ok_or_else(|| Error::Corrupt(format!("directory tree {id} lacks a subtree")))?;
            count_tree(r, memo, sub)
        })
        .try_reduce(Counts::default, |a, b| Ok(a + b))?;
    let c = own + subs;
    memo.lock().insert(id, c);
    Ok(c)
}

/// A file node of the parent snapshot whose chunk list covers its size.
fn complete(o: &Node) -> bool {
    o.kind == Kind::File && o.content.iter().map(|p| p.len).sum::<u64>() == o.size
}

impl<A: AsOf> Walk<'_, A> {
    fn source_error(&self, path: &Path, e: &std::io::Error) {
        self.errors.lock().push(format!("{}: {e}", path.display()));
    }

    fn store_error(&self, e: Error) {
        self.stop.store(true, Ordering::Relaxed);
        let mut f = self.fatal.lock();
        if f.is_none() {
            *f = Some(e);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The parent snapshot's node, if the change set says the object `key`
    /// is the same as then (and for a directory, everything below it too).
    fn unchanged<'n>(&self, obj: &A::Obj, old: Option<&'n Node>) -> Option<&'n Node> {
        let (changes, old) = (self.changes?, old?);
        reusable(changes, self.src.key(obj), old)
    }

    /// What a directory of the parent snapshot holds.
    fn count(&self, id: Id) -> Result<Counts> {
        let r = self.parent.expect("reuse needs a parent");
        count_tree(r, self.counts_memo(), id)
    }

    fn counts_memo(&self) -> &CountCache {
        self.shared_counts.unwrap_or(&self.counted)
    }

    /// One object (the root, or an entry found in its directory) and, for a
    /// directory, everything below it. Source errors of the object itself are
    /// returned, not reported; those below it are reported and left out.
    fn object(
        &self,
        obj: A::Obj,
        path: &Path,
        name: Vec<u8>,
        old: Option<&Node>,
    ) -> Result<Option<Node>, Failure> {
        if let Some(o) = self.unchanged(&obj, old) {
            if let Some(id) = o.subtree {
                // Reading the old trees to count them also proves they are
                // readable; if not, walk the directory instead.
                match self.count(id) {
                    Ok(c) => {
                        let p = self.progress;
                        p.files.fetch_add(c.files, Ordering::Relaxed);
                        p.dirs.fetch_add(c.dirs, Ordering::Relaxed);
                        p.bytes.fetch_add(c.bytes, Ordering::Relaxed);
                        return Ok(Some(o.clone()));
                    }
                    Err(e) => tracing::warn!("{}: parent snapshot unreadable: {e}", path.display()),
                }
            } else {
                if o.kind == Kind::File {
                    self.progress.bytes.fetch_add(o.size, Ordering::Relaxed);
                }
                self.progress.files.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(o.clone()));
            }
        }
        let st = self.src.stat(&obj).map_err(Failure::Source)?;
        let Some(kind) = kind_of(st.st_mode) else {
            self.warnings
                .lock()
                .push(format!("{}: socket skipped", path.display()));
            return Ok(None);
        };
        if kind == Kind::Dir {
            let old_sub = old.filter(|o| o.kind == Kind::Dir).and_then(|o| o.subtree);
            return self.dir_node(&obj, path, name, &st, old_sub).map(Some);
        }
        let mut node = node_from_stat(name, kind, &st);
        match kind {
            Kind::Symlink => {
                node.xattrs = self.src.xattrs(&obj).map_err(Failure::Source)?;
                node.target = Some(self.src.readlink(&obj).map_err(Failure::Source)?);
            }
            Kind::File => self.file(&obj, &mut node, &st, old)?,
            _ => node.xattrs = self.src.xattrs(&obj).map_err(Failure::Source)?,
        }
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(Some(node))
    }

    /// A directory and everything below it; returns its node with the subtree id.
    fn dir_node(
        &self,
        obj: &A::Obj,
        path: &Path,
        name: Vec<u8>,
        st: &libc::stat,
        parent: Option<Id>,
    ) -> Result<Node, Failure> {
        let mut node = node_from_stat(name, Kind::Dir, st);
        node.xattrs = self.src.xattrs(obj).map_err(Failure::Source)?;
        let names = self.src.list(obj).map_err(Failure::Source)?;
        let old = match (parent, self.parent) {
            (Some(id), Some(r)) => r.tree(&id).ok(),
            _ => None,
        };
        let nodes: Vec<Node> = names
            .into_par_iter()
            .filter_map(|n| {
                if self.stopped() {
                    return None;
                }
                let old = old.as_ref().and_then(|t| t.find(&n));
                match self.entry(obj, path, n, old) {
                    Ok(node) => node,
                    Err(Failure::Store(e)) => {
                        self.store_error(e);
                        None
                    }
                    Err(Failure::Source(_)) => None,
                }
            })
            .collect();
        if self.stopped() {
            return Err(Failure::Store(
                self.fatal
                    .lock()
                    .take()
                    .unwrap_or_else(|| Error::Other("stopped".into())),
            ));
        }
        // What this tree holds, from its subdirectories' counts (known: each
        // was written or counted just now), for the next copy to reuse.
        let memo = self.counts_memo();
        let counts = {
            let m = memo.lock();
            nodes
                .iter()
                .filter(|n| n.kind == Kind::Dir)
                .try_fold(own_counts(&nodes), |c, n| Some(c + *m.get(&n.subtree?)?))
        };
        let id = put_tree(self.w, nodes).map_err(Failure::Store)?;
        if let Some(c) = counts {
            memo.lock().insert(id, c);
        }
        node.subtree = Some(id);
        self.progress.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(node)
    }

    /// One directory entry. Source errors are reported here and give `Err`
    /// (the caller leaves the entry out).
    fn entry(
        &self,
        dir: &A::Obj,
        dir_path: &Path,
        name: Vec<u8>,
        old: Option<&Node>,
    ) -> Result<Option<Node>, Failure> {
        let path = path_of(dir_path, &name);
        let report = |f: Failure| match f {
            // The point in time is lost for this entry: no snapshot rather
            // than one that lacks it.
            Failure::Source(e) if crate::ingest::asof::Inconsistent::is(&e) => {
                Failure::Store(Error::Other(format!("{}: {e}", path.display())))
            }
            Failure::Source(e) => {
                // Vanished since readdir: a live tree changes; it is simply not in the snapshot.
                if e.raw_os_error() != Some(libc::ENOENT) {
                    self.source_error(&path, &e);
                }
                Failure::Source(e)
            }
            f => f,
        };
        let obj = self
            .src
            .child(dir, &name)
            .map_err(|e| report(Failure::Source(e)))?;
        self.object(obj, &path, name, old).map_err(report)
    }

    fn file(
        &self,
        obj: &A::Obj,
        node: &mut Node,
        st: &libc::stat,
        old: Option<&Node>,
    ) -> Result<(), Failure> {
        let key = (st.st_dev, st.st_ino);
        // A file the change record names is read again whatever its
        // metadata says: a same-size rewrite within one tick of a coarse
        // clock leaves mtime and ctime as they were.
        let recorded = self.changes.is_some_and(|c| c.object_changed(key));
        let unchanged = !recorded
            && old.is_some_and(|o| {
                complete(o)
                    && o.ino == node.ino
                    && o.size == node.size
                    && o.mtime == node.mtime
                    && o.ctime == node.ctime
            });
        if unchanged {
            node.content = old.unwrap().content.clone();
            node.xattrs = self.src.xattrs(obj).map_err(Failure::Source)?;
            self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
            return Ok(());
        }
        if node.nlink > 1 {
            let seen = self.links.lock().get(&key).and_then(|(c, seen)| {
                (seen.st_mtime == st.st_mtime
                    && seen.st_mtime_nsec == st.st_mtime_nsec
                    && seen.st_size == st.st_size)
                    .then(|| c.clone())
            });
            if let Some(content) = seen {
                node.content = content;
                node.xattrs = self.src.xattrs(obj).map_err(Failure::Source)?;
                self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                return Ok(());
            }
        }
        let f = self.src.open(obj).map_err(Failure::Source)?;
        node.xattrs = self.src.xattrs(obj).map_err(Failure::Source)?;
        node.content = file::store_file(&f, node.size, self.w, self.progress, &|| self.stopped())?;
        drop(f);
        node.size = node.content.iter().map(|p| p.len).sum();
        let holes: u64 = node
            .content
            .iter()
            .filter(|p| p.id.is_none())
            .map(|p| p.len)
            .sum();
        self.progress.bytes.fetch_add(holes, Ordering::Relaxed);
        if node.nlink > 1 {
            self.links.lock().insert(key, (node.content.clone(), *st));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
