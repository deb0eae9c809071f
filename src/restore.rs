//! Restoring a snapshot (or part of one) to a directory, metadata-exact.
//!
//! Order matters for exactness: a file's owner is set before its mode (chown
//! clears setuid/setgid), its xattrs after its owner (chown drops
//! security.capability), its times last. A directory gets its metadata once
//! everything inside it is restored (creating entries changes its mtime, and a
//! default ACL would leak into entries created after it). Hard links are made
//! once every first name is complete, and put their directory's times back.
//! Everything is done relative to directory descriptors, so depth is no limit
//! (paths are only used for messages and for the rare late hard link).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::ingest::Progress;
use crate::os::attr::{fchmod, fchmodat, fchown, fchownat, futimens, set_times_at};
use crate::os::dir::{mkdirat, mknodat, symlinkat, unlinkat};
use crate::os::fd::{self, cwd, ProcPath};
use crate::os::xattr::{self, XattrOf};
use crate::os::{self, time::timespec, Errno, Follow};
use crate::store::{Error, Kind, Node, Result, Snapshot, StoreReader};

pub struct Options {
    pub overwrite: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    /// Entries that could not be restored, with the reason.
    pub errors: Vec<String>,
    /// True when some of those errors are damaged data in the store.
    pub damaged: bool,
}

/// Find the node at `path` (components separated by '/') in a snapshot. The
/// empty path is the snapshot's root directory.
pub fn resolve(reader: &StoreReader, snap: &Snapshot, path: &[u8]) -> Result<Node> {
    let top = reader.tree(&snap.tree)?;
    let mut node = top
        .nodes
        .first()
        .cloned()
        .ok_or_else(|| Error::Corrupt(format!("snapshot {}: empty top tree", snap.name)))?;
    for comp in path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        let not_found = || Error::NoPath {
            snapshot: snap.name.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
        };
        let sub = node.subtree.ok_or_else(not_found)?;
        let tree = reader.tree(&sub)?;
        node = tree.find(comp).cloned().ok_or_else(not_found)?;
    }
    Ok(node)
}

/// A name of a hard-linked inode, made once the inode's first name is restored.
struct PendingLink {
    link: PathBuf,
    target: PathBuf,
    /// The directory holding `link`, whose times the link changes.
    parent: PathBuf,
    parent_times: (crate::store::Time, crate::store::Time),
}

struct Job<'a> {
    reader: &'a StoreReader,
    progress: &'a Progress,
    overwrite: bool,
    as_root: bool,
    /// Owner new files get without a chown: ours, unless the destination's
    /// setgid bit hands down its group (then every file is chowned).
    default_owner: Option<(u32, u32)>,
    umask: u32,
    /// Hard-linked inodes: (dev, ino) → path of the name restored first.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Names to link to their primary once all files are restored.
    pending_links: Mutex<Vec<PendingLink>>,
    errors: Mutex<Vec<String>>,
    damaged: std::sync::atomic::AtomicBool,
}

pub fn restore(
    reader: &StoreReader,
    snap: &Snapshot,
    path: &[u8],
    dest: &Path,
    opts: &Options,
    progress: &Progress,
) -> Result<Report> {
    let node = resolve(reader, snap, path)?;
    if let Ok(mut d) = std::fs::read_dir(dest) {
        if d.next().is_some() && !opts.overwrite {
            return Err(Error::DestNotEmpty(dest.into()));
        }
    } else if dest.exists() {
        return Err(Error::Other(format!(
            "{}: exists and is not a directory",
            dest.display()
        )));
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    let dest = &dest
        .canonicalize()
        .map_err(|e| Error::io(format!("{}", dest.display()), e))?;
    let mut job = Job {
        reader,
        progress,
        overwrite: opts.overwrite,
        as_root: nix::unistd::geteuid().is_root(),
        default_owner: None,
        umask: current_umask(),
        links: Mutex::new(HashMap::new()),
        pending_links: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        damaged: Default::default(),
    };
    let dest_fd =
        fd::open_dir(dest).map_err(|e| Error::io(format!("opening {}", dest.display()), e))?;
    let dest_st =
        fd::fstat(dest_fd.as_fd()).map_err(|e| Error::io(format!("{}", dest.display()), e))?;
    if dest_st.st_mode & libc::S_ISGID == 0 {
        job.default_owner = Some((
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ));
    }
    if node.kind == Kind::Dir {
        job.fill_dir(dest_fd.as_fd(), dest, &node)?;
    } else {
        job.entry(dest_fd.as_fd(), dest, &node, &node);
    }
    for l in std::mem::take(&mut *job.pending_links.lock()) {
        let linked = std::fs::hard_link(&l.target, &l.link).and_then(|()| {
            let parent = os::path_cstr(&l.parent)?;
            Ok(set_times_at(
                cwd(),
                &parent,
                l.parent_times.0,
                l.parent_times.1,
            )?)
        });
        if let Err(e) = linked {
            let msg = format!("hard link to {}: {e}", l.target.display());
            job.error(&l.link, &msg, false);
        }
    }
    // The destination itself last, once nothing more is created in it.
    if node.kind == Kind::Dir {
        if let Err(e) = job.dir_meta(dest, &node) {
            job.error(dest, &e.to_string(), false);
        }
    }
    let errors = std::mem::take(&mut *job.errors.lock());
    Ok(Report {
        errors,
        damaged: job.damaged.load(Ordering::Relaxed),
    })
}

/// Set every xattr of `n`. One that cannot be set (an unprivileged restore of
/// `trusted.*`, a filesystem without xattrs) does not stop the others, nor the
/// mode and times set after them; the failures are returned together.
fn set_xattrs(of: XattrOf, n: &Node) -> Result<()> {
    let failed: Vec<String> = n
        .xattrs
        .iter()
        .filter_map(|x| {
            xattr::set(of, x)
                .err()
                .map(|e| format!("{}: {e}", String::from_utf8_lossy(&x.name)))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "cannot set xattrs: {}",
            failed.join("; ")
        )))
    }
}

/// Remove whatever `name` is in `dir` (with `--overwrite`): a directory with
/// everything in it, anything else by unlinking it. Symlinks are removed,
/// never followed.
fn clear_in_the_way(dir: BorrowedFd, name: &CStr, path: &Path) -> Result<()> {
    match fd::fstatat(dir, name, Follow::No) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("stat", e)),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => std::fs::remove_dir_all(path)
            .map_err(|e| Error::io("remove the directory in the way", e)),
        Ok(_) => {
            unlinkat(dir, name, 0).map_err(|e| Error::io("remove", e))?;
            Ok(())
        }
    }
}

fn current_umask() -> u32 {
    // umask only swaps a process attribute; it is put back at once, before
    // any file is created.
    let m = os::proc::umask(0o022);
    os::proc::umask(m);
    m
}

fn join(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(std::ffi::OsStr::from_bytes(name))
}

impl Job<'_> {
    fn error(&self, path: &Path, msg: &str, damaged: bool) {
        self.errors
            .lock()
            .push(format!("{}: {msg}", path.display()));
        if damaged {
            self.damaged.store(true, Ordering::Relaxed);
        }
    }

    /// Restore the entries of directory `node` into the open directory `fd`.
    fn fill_dir(&self, fd: BorrowedFd, path: &Path, node: &Node) -> Result<()> {
        let Some(sub) = node.subtree else {
            return Ok(());
        };
        let tree = self.reader.tree(&sub)?;
        tree.nodes
            .par_iter()
            .for_each(|n| self.entry(fd, path, node, n));
        Ok(())
    }

    /// Restore one entry; errors are recorded, not returned, so the rest goes on.
    fn entry(&self, dir: BorrowedFd, dir_path: &Path, parent: &Node, n: &Node) {
        let path = join(dir_path, &n.name);
        if let Err(e) = self.entry_inner(dir, dir_path, parent, &path, n) {
            let damaged = matches!(e, Error::Corrupt(_));
            self.error(&path, &e.to_string(), damaged);
        }
    }

    fn entry_inner(
        &self,
        dir: BorrowedFd,
        dir_path: &Path,
        parent: &Node,
        path: &Path,
        n: &Node,
    ) -> Result<()> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: Errno| Error::io(what, e)
        };
        let name = os::cstr(&n.name).map_err(io("name"))?;
        if n.kind == Kind::Dir {
            if let Err(e) = mkdirat(dir, &name, 0o700) {
                if e != Errno::EEXIST || !self.overwrite {
                    return Err(Error::io("mkdir", e));
                }
                // A directory in the way is reused; anything else is replaced.
                let is_dir = fd::fstatat(dir, &name, Follow::No)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                if !is_dir {
                    clear_in_the_way(dir, &name, path)?;
                    mkdirat(dir, &name, 0o700).map_err(io("mkdir"))?;
                }
            }
            let fd = fd::openat(
                dir,
                &name,
                Follow::No,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .map_err(io("open"))?;
            self.fill_dir(fd.as_fd(), path, n)?;
            // Post-order: everything inside exists, so neither the times nor a
            // default ACL set now are disturbed by what follows (but hard
            // links, which put the times back themselves).
            self.meta_at(dir, &name, n, true)?;
            self.progress.dirs.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.overwrite {
            clear_in_the_way(dir, &name, path)?;
        }
        if n.is_hardlinked() {
            let mut links = self.links.lock();
            if let Some(first) = links.get(&(n.dev, n.ino)) {
                self.pending_links.lock().push(PendingLink {
                    link: path.to_path_buf(),
                    target: first.clone(),
                    parent: dir_path.to_path_buf(),
                    parent_times: (parent.atime, parent.mtime),
                });
                return Ok(());
            }
            links.insert((n.dev, n.ino), path.to_path_buf());
        }
        match n.kind {
            Kind::File => self.file(dir, &name, path, n)?,
            Kind::Symlink => {
                let target =
                    os::cstr(n.target.as_deref().unwrap_or_default()).map_err(io("symlink"))?;
                symlinkat(&target, dir, &name).map_err(io("symlink"))?;
                self.meta_at(dir, &name, n, false)?;
            }
            Kind::Fifo | Kind::Chr | Kind::Blk => {
                let t = match n.kind {
                    Kind::Fifo => libc::S_IFIFO,
                    Kind::Chr => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                mknodat(dir, &name, t | 0o600, n.rdev).map_err(io("mknod"))?;
                self.meta_at(dir, &name, n, true)?;
            }
            Kind::Dir => unreachable!(),
        }
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn file(&self, dir: BorrowedFd, name: &CStr, path: &Path, n: &Node) -> Result<()> {
        let fd = fd::openat(
            dir,
            name,
            Follow::No,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            n.mode & 0o777,
        )
        .map_err(|e| Error::io("create", e))?;
        let file = File::from(fd);
        if let Err(e) = self.write_content(&file, n) {
            drop(file);
            // Never leave a file with wrong content behind.
            let _ = unlinkat(dir, name, 0);
            return Err(e);
        }
        let fd: OwnedFd = file.into();
        self.meta_fd(fd.as_fd(), n)?;
        let _ = path;
        Ok(())
    }

    fn write_content(&self, file: &File, n: &Node) -> Result<()> {
        let mut offsets = Vec::with_capacity(n.content.len());
        let mut off = 0u64;
        for p in &n.content {
            offsets.push(off);
            off += p.len;
        }
        let write = |(p, off): (&crate::store::Piece, &u64)| -> Result<()> {
            let Some(id) = p.id else { return Ok(()) };
            let data = self.reader.read_blob(&id)?;
            os::io::write_all_at(file.as_fd(), &data, *off, "restore.write")
                .map_err(|e| Error::io("write", e))?;
            self.progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        };
        if n.content.len() > 2 {
            n.content
                .par_iter()
                .zip(offsets.par_iter())
                .try_for_each(write)?;
        } else {
            n.content.iter().zip(offsets.iter()).try_for_each(write)?;
        }
        // A trailing hole: set the size without writing it.
        if n.content.last().is_some_and(|p| p.id.is_none()) {
            file.set_len(n.size).map_err(|e| Error::io("truncate", e))?;
        }
        Ok(())
    }

    /// Owner, xattrs, mode, times of a regular file created with `n.mode & 0o777`.
    /// Calls that would change nothing are skipped: restore is syscall-bound.
    fn meta_fd(&self, fd: BorrowedFd, n: &Node) -> Result<()> {
        let chown = self.as_root && self.default_owner != Some((n.uid, n.gid));
        if chown {
            fchown(fd, n.uid, n.gid).map_err(|e| Error::io("chown", e))?;
        }
        let xattrs = set_xattrs(XattrOf::Fd(fd), n);
        let created_right = n.mode & 0o7000 == 0 && n.mode & self.umask == 0;
        if !created_right {
            fchmod(fd, n.mode).map_err(|e| Error::io("chmod", e))?;
        }
        futimens(fd, &[timespec(n.atime), timespec(n.mtime)])
            .map_err(|e| Error::io("set times", e))?;
        xattrs
    }

    /// Owner, xattrs, mode (unless a symlink), times of `name` in `dir`.
    fn meta_at(&self, dir: BorrowedFd, name: &CStr, n: &Node, chmod: bool) -> Result<()> {
        if self.as_root {
            fchownat(dir, name, n.uid, n.gid).map_err(|e| Error::io("chown", e))?;
        }
        let xattrs = match ProcPath::child(dir, &n.name) {
            Ok(p) => set_xattrs(XattrOf::Path(p.as_cstr()), n),
            Err(e) => Err(Error::io("xattr", e)),
        };
        if chmod {
            fchmodat(dir, name, n.mode).map_err(|e| Error::io("chmod", e))?;
        }
        set_times_at(dir, name, n.atime, n.mtime).map_err(|e| Error::io("set times", e))?;
        xattrs
    }

    fn dir_meta(&self, path: &Path, n: &Node) -> Result<()> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().map(|s| s.as_bytes()).unwrap_or(b".");
        let pfd = fd::open_dir(parent).map_err(|e| Error::io("open parent", e))?;
        let cname = os::cstr(name).map_err(|e| Error::io("name", e))?;
        let node = Node {
            name: name.to_vec(),
            ..n.clone()
        };
        self.meta_at(pfd.as_fd(), &cname, &node, true)?;
        self.progress.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
