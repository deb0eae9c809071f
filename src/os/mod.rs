//! The OS layer: the one home of libc calls and `unsafe` in bkfs (the crate
//! root denies `unsafe_code`; this module alone allows it). Everything else
//! calls these safe wrappers. docs/ARCHITECTURE.md ("The OS layer") gives
//! the map; the conventions, which every function here keeps:
//!
//! - **One error type.** Every wrapper returns [`Result<T>`], whose error is
//!   [`Errno`] (nix's: `Copy`, one `i32`, named constants, `Errno::last()`).
//!   Code that works in `io::Error` uses `?`: `From<Errno> for io::Error`
//!   keeps the raw errno, so messages and `raw_os_error()` are what the
//!   system call gave. [`errno_of`] goes the other way (`EIO` for an
//!   `io::Error` that carries no errno).
//! - **Names** are `&CStr`: [`cstr`] makes one from bytes (`EINVAL` for a NUL),
//!   [`with_name`] checks a single component from the kernel and keeps it on
//!   the stack.
//! - **Descriptors** come in as `BorrowedFd` and go out as `OwnedFd`; every
//!   descriptor opened here is `O_CLOEXEC`.
//! - **Symlinks.** A call that resolves a name says whether it follows a
//!   final symlink with [`Follow`], never with a flag hidden in `flags`.
//! - **Write-class calls** (write, fsync, rename, link, copy) take a
//!   [`Site`]: the name of the call site, which [`fail`] can make fail in
//!   builds with the `failpoints` feature (tests only; a release build
//!   compiles the check away).
//! - **`unsafe`**: each block says why it is sound in a `SAFETY:` comment;
//!   the public functions are safe for any argument.

#![allow(unsafe_code)]

pub mod attr;
pub mod dir;
pub mod fail;
pub mod fd;
pub mod file;
pub mod handle;
pub mod io;
pub mod proc;
pub mod time;
pub mod xattr;

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;

pub use fd::Follow;
pub use nix::errno::Errno;

/// What every wrapper of this layer returns.
pub type Result<T> = std::result::Result<T, Errno>;

/// The name of a write-class call site (`"pack.fsync"`, `"area.data"`...),
/// by which a failpoint arms it (see [`fail`]).
pub type Site = &'static str;

/// The empty path: with `AT_EMPTY_PATH`, an `*at()` call acts on the
/// descriptor itself.
pub const EMPTY: &CStr = c"";

/// Longest name one directory entry can have (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The return value of a system call: `-1` means the thread's errno.
trait Ret: Copy {
    fn failed(self) -> bool;
}

impl Ret for i32 {
    fn failed(self) -> bool {
        self == -1
    }
}

impl Ret for i64 {
    fn failed(self) -> bool {
        self == -1
    }
}

impl Ret for isize {
    fn failed(self) -> bool {
        self == -1
    }
}

/// Turns a `-1` return value into the thread's errno.
fn check<T: Ret>(ret: T) -> Result<T> {
    if ret.failed() {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// [`check`] for calls that return a byte count.
fn check_size(ret: isize) -> Result<usize> {
    check(ret).map(|n| n as usize)
}

/// `bytes` as a C string; `EINVAL` if they hold a NUL.
pub fn cstr(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// `path` as a C string; `EINVAL` if it holds a NUL.
pub fn path_cstr(path: &std::path::Path) -> Result<CString> {
    cstr(path.as_os_str().as_bytes())
}

/// The errno an `io::Error` carries; `EIO` for one that carries none.
pub fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Calls `f` with `name` as a NUL-terminated C string held on the stack.
///
/// A name containing `/` or NUL could escape the directory it is resolved in,
/// so it is refused with `EINVAL`, as are `.` and `..` (which would step out
/// of the source from its root); the kernel never sends those. A name longer
/// than `NAME_MAX` is `ENAMETOOLONG`.
pub fn with_name<T>(name: &OsStr, f: impl FnOnce(&CStr) -> Result<T>) -> Result<T> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(Errno::EINVAL);
    }
    let mut buf = [0u8; NAME_MAX + 1];
    buf[..bytes.len()].copy_from_slice(bytes);
    let cstr = CStr::from_bytes_until_nul(&buf).map_err(|_| Errno::EINVAL)?;
    f(cstr)
}

/// An all-zero `struct stat`, for attributes made up rather than read (a
/// negative lookup's entry, a record read back from the diff area).
pub fn zeroed_stat() -> libc::stat {
    // SAFETY: `struct stat` is plain old data; all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// An all-zero `struct statvfs`, for statistics made up rather than read.
pub fn zeroed_statvfs() -> libc::statvfs {
    // SAFETY: `struct statvfs` is plain old data; all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// For the tests of this layer: a temporary directory holding file `f`
/// with `data`, and the directory opened.
#[cfg(test)]
fn test_dir(data: &[u8]) -> (tempfile::TempDir, std::os::fd::OwnedFd) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("f"), data).unwrap();
    let d = fd::open_dir(tmp.path()).unwrap();
    (tmp, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            let r = with_name(OsStr::from_bytes(bad), |_| Ok(()));
            assert_eq!(r, Err(Errno::EINVAL), "{bad:?}");
        }
        let long = vec![b'x'; NAME_MAX + 1];
        assert_eq!(
            with_name(OsStr::from_bytes(&long), |_| Ok(())),
            Err(Errno::ENAMETOOLONG)
        );
        let ok = vec![b'x'; NAME_MAX];
        let len = with_name(OsStr::from_bytes(&ok), |c| Ok(c.to_bytes().len()));
        assert_eq!(len, Ok(NAME_MAX));
    }

    #[test]
    fn an_io_error_gives_its_errno_or_eio() {
        let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(errno_of(&e), Errno::ENOSPC);
        assert_eq!(errno_of(&std::io::Error::other("x")), Errno::EIO);
        let back: std::io::Error = Errno::ENOSPC.into();
        assert_eq!(back.raw_os_error(), Some(libc::ENOSPC));
    }
}
