//! A plain directory read as it is: the [`AsOf`] of `bkfs backup`, where "as
//! of" means "as read".
//!
//! Everything goes through `*at()` calls relative to the parent directory's
//! fd, never following a symlink in the last component; files and directories
//! are opened with `O_NOATIME` when allowed. An object carries the `fstatat`
//! result taken when it was looked up, so [`AsOf::stat`] and [`AsOf::key`]
//! cost nothing, and the fd it was opened with (directories on first use,
//! files by [`AsOf::open`]), so its xattrs are read through that fd.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{AsOf, AsOfFile, Key};
use crate::os::fd::{self, ProcPath};
use crate::os::xattr::{self, XattrOf};
use crate::os::{self, io as oio, Errno, Follow};
use crate::store::Xattr;

/// Files larger than this are read with a sequential-access hint.
const SEQUENTIAL_ABOVE: u64 = 64 << 20;

/// A directory tree read as it is.
pub struct PlainDir {
    path: PathBuf,
    root: Obj,
    /// Directories never to enter (the store, when it lies inside the source):
    /// looking them up gives `ENOENT`, as if they were not there.
    skip: Vec<Key>,
}

/// One object of a [`PlainDir`].
#[derive(Clone)]
pub struct Obj(Arc<Inner>);

struct Inner {
    /// The directory holding it (`None` for the root), kept open while any of
    /// its entries is in use.
    parent: Option<Obj>,
    name: CString,
    st: libc::stat,
    /// The object opened for reading: a directory's on first use, a file's by
    /// [`AsOf::open`].
    file: OnceLock<File>,
}

impl Obj {
    fn parent_fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        match &self.0.parent {
            Some(p) => p.dir_fd(),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn is_dir(&self) -> bool {
        self.0.st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// The directory's own fd, opened on first use.
    fn dir_fd(&self) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        if !self.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        self.opened(libc::O_DIRECTORY).map(|f| f.as_fd())
    }

    /// The object opened with `flags` (once; later calls get the same fd).
    fn opened(&self, flags: libc::c_int) -> io::Result<&File> {
        if let Some(f) = self.0.file.get() {
            return Ok(f);
        }
        let fd = fd::openat_noatime(self.parent_fd()?, &self.0.name, flags)?;
        // Another thread may have opened it meanwhile: keep the first fd.
        let _ = self.0.file.set(File::from(fd));
        Ok(self.0.file.get().expect("set just above"))
    }
}

impl PlainDir {
    /// Opens `path` (following symlinks up to and including it, as a command
    /// line argument does). `skip` lists directories never to enter, by
    /// `(st_dev, st_ino)`.
    pub fn open(path: &Path, skip: Vec<Key>) -> io::Result<PlainDir> {
        let fd = fd::open_dir(path)?;
        let st = fd::fstat(fd.as_fd())?;
        let root = Obj(Arc::new(Inner {
            parent: None,
            name: CString::default(),
            st,
            file: OnceLock::from(File::from(fd)),
        }));
        Ok(PlainDir {
            path: path.to_path_buf(),
            root,
            skip,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsOf for PlainDir {
    type Obj = Obj;
    type File = PlainFile;

    fn root(&self) -> io::Result<Obj> {
        Ok(self.root.clone())
    }

    fn key(&self, obj: &Obj) -> Key {
        (obj.0.st.st_dev, obj.0.st.st_ino)
    }

    fn stat(&self, obj: &Obj) -> io::Result<libc::stat> {
        Ok(obj.0.st)
    }

    fn list(&self, dir: &Obj) -> io::Result<Vec<Vec<u8>>> {
        Ok(os::dir::read_dir_names(dir.dir_fd()?)?)
    }

    fn child(&self, dir: &Obj, name: &[u8]) -> io::Result<Obj> {
        let name = os::cstr(name)?;
        let st = fd::fstatat(dir.dir_fd()?, &name, Follow::No)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR && self.skip.contains(&(st.st_dev, st.st_ino))
        {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(Obj(Arc::new(Inner {
            parent: Some(dir.clone()),
            name,
            st,
            file: OnceLock::new(),
        })))
    }

    fn xattrs(&self, obj: &Obj) -> io::Result<Vec<Xattr>> {
        if obj.is_dir() {
            return Ok(xattr::list_all(XattrOf::Fd(obj.dir_fd()?))?);
        }
        if let Some(f) = obj.0.file.get() {
            return Ok(xattr::list_all(XattrOf::Fd(f.as_fd()))?);
        }
        // Not opened (and special files cannot be): through procfs, without
        // following a symlink.
        let path = ProcPath::child(obj.parent_fd()?, obj.0.name.as_bytes())?;
        Ok(xattr::list_all(XattrOf::Path(path.as_cstr()))?)
    }

    fn readlink(&self, obj: &Obj) -> io::Result<Vec<u8>> {
        Ok(os::dir::readlinkat(obj.parent_fd()?, &obj.0.name)?)
    }

    fn open(&self, obj: &Obj) -> io::Result<PlainFile> {
        if obj.0.st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let f = obj.opened(0)?;
        if obj.0.st.st_size as u64 > SEQUENTIAL_ABOVE {
            oio::advise_sequential(f.as_fd());
        }
        Ok(PlainFile(obj.clone()))
    }
}

/// A regular file of a [`PlainDir`], open for reading.
pub struct PlainFile(Obj);

impl PlainFile {
    fn file(&self) -> &File {
        self.0 .0.file.get().expect("opened by PlainDir::open")
    }
}

impl AsOfFile for PlainFile {
    fn extents(&self, size: u64) -> io::Result<Vec<(u64, u64)>> {
        data_extents(self.file(), size, self.0 .0.st.st_blocks as u64)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        Ok(oio::read_full_at(self.file().as_fd(), buf, off)?)
    }
}

/// The data extents of a file: `(offset, len)`, ascending. A file whose blocks
/// cover its size has no holes and is one extent, without asking SEEK_DATA.
fn data_extents(file: &File, size: u64, blocks: u64) -> io::Result<Vec<(u64, u64)>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    if blocks * 512 >= size {
        return Ok(vec![(0, size)]);
    }
    match oio::data_segments(file.as_fd(), 0, size) {
        // A filesystem without SEEK_DATA.
        Err(Errno::EINVAL) => Ok(vec![(0, size)]),
        r => Ok(r?),
    }
}
