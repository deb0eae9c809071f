//! The offline provider: copy a directory tree into the store as a snapshot.
//!
//! Directories are walked in parallel (rayon, fork-join: a directory's tree
//! blob is written once all its entries are done), files in parallel, and the
//! chunks of large files in parallel. A file whose inode, size, mtime and
//! ctime match the parent snapshot's entry is not read again: its chunk list
//! is reused.

mod file;

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rayon::prelude::*;

use crate::store::pack::BlobKind;
use crate::store::snapshot::{self, Snapshot, Stats};
use crate::store::{Error, Id, Kind, Node, Piece, Result, Store, StoreReader, StoreWriter, Tree};
use crate::sys::{self, XattrOf};

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
}

impl Progress {
    /// Data read from the source: counts at once, so the bar moves within a large file.
    fn add_read(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }
}

pub struct Options {
    pub name: Option<String>,
    /// Parent snapshot for change detection; default: the newest snapshot of the same source.
    pub parent: Option<String>,
}

pub struct Report {
    pub snapshot: Snapshot,
    /// Source entries that could not be read (the snapshot lacks them).
    pub errors: Vec<String>,
    /// Entries skipped on purpose (sockets, the store itself).
    pub warnings: Vec<String>,
}

/// Why an entry could not be backed up: a problem of the source (reported,
/// the backup goes on) or of the store (the backup stops).
pub enum Failure {
    Source(std::io::Error),
    Store(Error),
}

/// A hard-linked file already read: its content and the stat it had then.
type LinkSeen = (Vec<Piece>, libc::stat);

struct Walk<'a> {
    w: &'a StoreWriter,
    parent: Option<&'a StoreReader>,
    progress: &'a Progress,
    /// (dev, ino) of directories never to enter: the store, if it lies inside the source.
    skip: Vec<(u64, u64)>,
    /// Content of hard-linked files already read, so other names reuse it.
    links: Mutex<HashMap<(u64, u64), LinkSeen>>,
    errors: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    stop: AtomicBool,
    fatal: Mutex<Option<Error>>,
}

pub fn backup(store: &Store, src: &Path, opts: &Options, progress: &Progress) -> Result<Report> {
    let started = Instant::now();
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
    let root_fd =
        sys::open_dir(&src).map_err(|e| Error::io(format!("source {}", src.display()), e))?;
    let mut w = store.writer("backup")?;
    let reader = w.reader()?;
    let parent_tree = parent_root(store, &reader, &src, opts.parent.as_deref())?;

    let mut skip = Vec::new();
    if let Ok(st) = sys::fstat(
        sys::open_dir(store.root())
            .map_err(|e| Error::io("store", e))?
            .as_fd(),
    ) {
        skip.push((st.st_dev, st.st_ino));
    }
    let walk = Walk {
        w: &w,
        parent: parent_tree.is_some().then_some(&reader),
        progress,
        skip,
        links: Mutex::new(HashMap::new()),
        errors: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
    };
    let root_st = sys::fstat(root_fd.as_fd())
        .map_err(|e| Error::io(format!("source {}", src.display()), e))?;
    let parent_sub = parent_tree.as_ref().and_then(|n| n.subtree);
    let root_node = match walk.dir_node(root_fd, &src, Vec::new(), root_st, parent_sub) {
        Ok(n) => n,
        Err(Failure::Store(e)) => return Err(e),
        Err(Failure::Source(e)) => return Err(Error::io(format!("source {}", src.display()), e)),
    };
    if let Some(e) = walk.fatal.lock().unwrap().take() {
        return Err(e);
    }
    let top = put_tree(&w, vec![root_node])?;
    tracing::debug!("walk done after {:.3} s", started.elapsed().as_secs_f64());
    let errors = std::mem::take(&mut *walk.errors.lock().unwrap());
    let warnings = std::mem::take(&mut *walk.warnings.lock().unwrap());
    let s = &w.stats;
    let snap = Snapshot {
        name,
        time: humantime::format_rfc3339_nanos(time).to_string(),
        tree: top,
        source: src.to_string_lossy().into_owned(),
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
        capture: None,
    };
    let mut snap = snap;
    snap.stats.seconds = started.elapsed().as_secs_f64();
    w.commit(Some(&snap))?;
    tracing::debug!("committed after {:.3} s", started.elapsed().as_secs_f64());

    Ok(Report {
        snapshot: snap,
        errors,
        warnings,
    })
}

/// The root node of the parent snapshot, if there is one to compare with.
fn parent_root(
    store: &Store,
    reader: &StoreReader,
    src: &Path,
    parent: Option<&str>,
) -> Result<Option<Node>> {
    let snap = match parent {
        Some(p) => Some(store.snapshot(p)?),
        None => {
            let src = src.to_string_lossy();
            store
                .snapshots()?
                .into_iter()
                .rev()
                .find(|s| s.source == src)
        }
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
    let (mtime, atime, ctime) = sys::stat_times(st);
    Node {
        name,
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: if kind == Kind::File || kind == Kind::Symlink {
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

impl Walk<'_> {
    fn source_error(&self, path: &Path, e: &std::io::Error) {
        self.errors
            .lock()
            .unwrap()
            .push(format!("{}: {e}", path.display()));
    }

    fn store_error(&self, e: Error) {
        self.stop.store(true, Ordering::Relaxed);
        let mut f = self.fatal.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
    }

    /// Back up a directory whose fd is open; returns its node with the subtree id.
    fn dir_node(
        &self,
        fd: OwnedFd,
        path: &Path,
        name: Vec<u8>,
        st: libc::stat,
        parent: Option<Id>,
    ) -> Result<Node, Failure> {
        let mut node = node_from_stat(name, Kind::Dir, &st);
        node.xattrs = sys::list_xattrs(XattrOf::Fd(fd.as_fd())).map_err(Failure::Source)?;
        let names = sys::read_dir_names(fd.as_fd()).map_err(Failure::Source)?;
        let old = match (parent, self.parent) {
            (Some(id), Some(r)) => r.tree(&id).ok(),
            _ => None,
        };
        let nodes: Vec<Node> = names
            .into_par_iter()
            .filter_map(|n| {
                if self.stop.load(Ordering::Relaxed) {
                    return None;
                }
                let old = old.as_ref().and_then(|t| t.find(&n));
                match self.entry(fd.as_fd(), path, n, old) {
                    Ok(node) => node,
                    Err(Failure::Store(e)) => {
                        self.store_error(e);
                        None
                    }
                    Err(Failure::Source(_)) => None,
                }
            })
            .collect();
        if self.stop.load(Ordering::Relaxed) {
            return Err(Failure::Store(
                self.fatal
                    .lock()
                    .unwrap()
                    .take()
                    .unwrap_or_else(|| Error::Other("stopped".into())),
            ));
        }
        node.subtree = Some(put_tree(self.w, nodes).map_err(Failure::Store)?);
        self.progress.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(node)
    }

    /// One directory entry. Source errors are reported here and give `Ok(None)`.
    fn entry(
        &self,
        dir: BorrowedFd,
        dir_path: &Path,
        name: Vec<u8>,
        old: Option<&Node>,
    ) -> Result<Option<Node>, Failure> {
        let path = path_of(dir_path, &name);
        let report = |e: std::io::Error| {
            // Vanished since readdir: a live tree changes; it is simply not in the snapshot.
            if e.raw_os_error() != Some(libc::ENOENT) {
                self.source_error(&path, &e);
            }
            Failure::Source(e)
        };
        let cname = sys::cstr(&name).map_err(report)?;
        let st = sys::fstatat(dir, &cname).map_err(report)?;
        let Some(kind) = kind_of(st.st_mode) else {
            self.warnings
                .lock()
                .unwrap()
                .push(format!("{}: socket skipped", path.display()));
            return Ok(None);
        };
        if kind == Kind::Dir {
            if self.skip.contains(&(st.st_dev, st.st_ino)) {
                return Ok(None);
            }
            let fd = sys::open_noatime(dir, &cname, libc::O_DIRECTORY).map_err(report)?;
            let old_sub = old.filter(|o| o.kind == Kind::Dir).and_then(|o| o.subtree);
            return match self.dir_node(fd, &path, name, st, old_sub) {
                Err(Failure::Source(e)) => Err(report(e)),
                r => r.map(Some),
            };
        }
        let mut node = node_from_stat(name, kind, &st);
        if kind != Kind::File {
            node.xattrs = sys::list_xattrs(XattrOf::Path(
                &sys::proc_path(dir, &node.name).map_err(report)?,
            ))
            .map_err(report)?;
        }
        match kind {
            Kind::Symlink => node.target = Some(sys::readlinkat(dir, &cname).map_err(report)?),
            Kind::File => self
                .file(dir, &cname, &mut node, &st, old)
                .map_err(|f| match f {
                    Failure::Source(e) => report(e),
                    f => f,
                })?,
            _ => {}
        }
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(Some(node))
    }

    fn file(
        &self,
        dir: BorrowedFd,
        cname: &CStr,
        node: &mut Node,
        st: &libc::stat,
        old: Option<&Node>,
    ) -> Result<(), Failure> {
        let unchanged = old.is_some_and(|o| {
            o.kind == Kind::File
                && o.ino == node.ino
                && o.size == node.size
                && o.mtime == node.mtime
                && o.ctime == node.ctime
                && o.content.iter().map(|p| p.len).sum::<u64>() == o.size
        });
        let key = (st.st_dev, st.st_ino);
        if unchanged {
            node.content = old.unwrap().content.clone();
            node.xattrs = sys::list_xattrs(XattrOf::Path(
                &sys::proc_path(dir, &node.name).map_err(Failure::Source)?,
            ))
            .map_err(Failure::Source)?;
            self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
            return Ok(());
        }
        if node.nlink > 1 {
            if let Some((content, seen)) = self.links.lock().unwrap().get(&key) {
                if seen.st_mtime == st.st_mtime
                    && seen.st_mtime_nsec == st.st_mtime_nsec
                    && seen.st_size == st.st_size
                {
                    node.content = content.clone();
                    node.xattrs = sys::list_xattrs(XattrOf::Path(
                        &sys::proc_path(dir, &node.name).map_err(Failure::Source)?,
                    ))
                    .map_err(Failure::Source)?;
                    self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        let fd = sys::open_noatime(dir, cname, 0).map_err(Failure::Source)?;
        node.xattrs = sys::list_xattrs(XattrOf::Fd(fd.as_fd())).map_err(Failure::Source)?;
        node.content = file::store_file(fd, node.size, st.st_blocks as u64, self.w, self.progress)?;
        node.size = node.content.iter().map(|p| p.len).sum();
        let holes: u64 = node
            .content
            .iter()
            .filter(|p| p.id.is_none())
            .map(|p| p.len)
            .sum();
        self.progress.bytes.fetch_add(holes, Ordering::Relaxed);
        if node.nlink > 1 {
            self.links
                .lock()
                .unwrap()
                .insert(key, (node.content.clone(), *st));
        }
        Ok(())
    }
}

/// Count files and bytes under `src` (for a progress display's totals).
pub fn scan(src: &Path, progress: &Progress) {
    fn walk(dir: BorrowedFd, progress: &Progress) {
        let Ok(names) = sys::read_dir_names(dir) else {
            return;
        };
        names.par_iter().for_each(|n| {
            let Ok(c) = sys::cstr(n) else { return };
            let Ok(st) = sys::fstatat(dir, &c) else {
                return;
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                if let Ok(fd) = sys::open_noatime(dir, &c, libc::O_DIRECTORY) {
                    walk(fd.as_fd(), progress);
                }
            } else {
                progress.total_files.fetch_add(1, Ordering::Relaxed);
                if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                    progress
                        .total_bytes
                        .fetch_add(st.st_size as u64, Ordering::Relaxed);
                }
            }
        });
    }
    if let Ok(fd) = sys::open_dir(src) {
        walk(fd.as_fd(), progress);
    }
    progress.scan_done.store(true, Ordering::Relaxed);
}

pub type SharedProgress = Arc<Progress>;
