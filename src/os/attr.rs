//! Owner, mode and times of an inode, by descriptor (`O_PATH` ones
//! included) or by name in a directory, never following a final symlink.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::fd::{cwd, ProcPath};
use super::{check, Result, EMPTY};

/// Safe wrapper for fchownat(2) on the inode `fd` refers to (`AT_EMPTY_PATH`:
/// any descriptor, `O_PATH` ones and symlinks included). `u32::MAX` leaves
/// that id unchanged (as `-1` does for chown(2)).
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: EMPTY is a valid C string.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Safe wrapper for fchownat(2) on `name` in `dir`, not following a symlink.
pub fn fchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Safe wrapper for fchmod(2): a descriptor open for I/O (not `O_PATH`).
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    // SAFETY: plain call on a borrowed descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Changes the mode of the inode any descriptor refers to, `O_PATH` ones
/// included (fchmod(2) refuses those): fchmodat(2) through
/// `/proc/self/fd/N`. Not for symlinks, whose mode Linux cannot change.
pub fn chmod_inode(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    fchmodat(cwd(), ProcPath::of(fd).as_cstr(), mode)
}

/// Safe wrapper for fchmodat(2) on `name` in `dir`. It follows a final
/// symlink (Linux before 6.6 cannot do otherwise): callers never pass one.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// Safe wrapper for utimensat(2) on the inode `fd` refers to (`AT_EMPTY_PATH`),
/// `[atime, mtime]`; `UTIME_NOW` and `UTIME_OMIT` pass through.
pub fn futimens(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> Result<()> {
    // SAFETY: `times` points to two timespecs, EMPTY is a valid C string.
    check(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Safe wrapper for utimensat(2) on `name` in `dir` (or a path, with
/// [`cwd`]), not following a final symlink; `[atime, mtime]`.
pub fn utimensat(dir: BorrowedFd<'_>, name: &CStr, times: &[libc::timespec; 2]) -> Result<()> {
    // SAFETY: `times` points to two timespecs; `name` is a valid C string.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Sets atime and mtime of `name` in `dir` (or of a path, with [`cwd`]),
/// not following a final symlink.
pub fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: crate::types::Time,
    mtime: crate::types::Time,
) -> Result<()> {
    use super::time::timespec;
    utimensat(dir, name, &[timespec(atime), timespec(mtime)])
}
