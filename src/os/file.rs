//! Whole files by path, made durable: what the store writes (packs, index
//! files, snapshot records, its config) and how it makes a directory's
//! entries durable. Renames and links by path are in [`super::dir`].

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use super::io::{fsync, Sync, Writer};
use super::{errno_of, fd, path_cstr, Follow, Result, Site};

/// Creates (or truncates) `path` for writing, as `File::create` (mode
/// 0666 less the umask).
pub fn create(path: &Path) -> Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let fd = fd::openat(fd::cwd(), &path_cstr(path)?, Follow::Yes, flags, 0o666)?;
    Ok(File::from(fd))
}

/// Creates `path` and writes `bytes` to it (as `std::fs::write`), each
/// write a call of `site`.
pub fn write_file(path: &Path, bytes: &[u8], site: Site) -> Result<()> {
    let mut w = Writer::new(create(path)?, site);
    w.write_all(bytes).map_err(|e| errno_of(&e))
}

/// fsync(2) of an open file.
pub fn sync(file: &impl AsFd, site: Site) -> Result<()> {
    fsync(file.as_fd(), Sync::All, site)
}

/// fsync(2) of `path`, a file or a directory (which makes its entries
/// durable: a file renamed or linked into it, one removed).
pub fn sync_path(path: &Path, site: Site) -> Result<()> {
    let f = fd::open(path, Follow::Yes, libc::O_RDONLY)?;
    fsync(f.as_fd(), Sync::All, site)
}
