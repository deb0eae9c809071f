//! Thin wrappers over the `*at()` system calls the live tree uses.
//!
//! Each wrapper returns `Result<_, Errno>` and takes names as `&OsStr`: a name
//! from the kernel is one path component (no `/`, at most `NAME_MAX` bytes), so
//! it is copied into a stack buffer to get its C string, with no allocation.

use std::ffi::{CStr, OsStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

pub use nix::errno::Errno;

pub type Result<T> = std::result::Result<T, Errno>;

/// Longest name one directory entry can have (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Calls `f` with `name` as a NUL-terminated C string held on the stack.
///
/// A name containing `/` or NUL could escape the directory it is resolved in,
/// so it is refused with `EINVAL`, as are `.` and `..` (which would step out
/// of the source from its root); the kernel never sends those.
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

/// Turns a `-1` return value into the thread's errno.
fn check(ret: libc::c_int) -> Result<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> Result<usize> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// The empty path, used with `AT_EMPTY_PATH` to act on a descriptor itself.
pub const EMPTY: &CStr = c"";

pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; the returned descriptor is new and
    // owned by nobody else, so wrapping it in an OwnedFd is sound.
    unsafe {
        let fd = check(libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer; fstat fills it completely on success.
    unsafe {
        check(libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
        Ok(st.assume_init())
    }
}

pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a valid C string and `st` a valid out-pointer that
    // fstatat fills completely on success.
    unsafe {
        check(libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            flags,
        ))?;
        Ok(st.assume_init())
    }
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: libc::dev_t) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: both strings are valid C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> Result<()> {
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Hard-links the inode `fd` refers to (an `O_PATH` descriptor) as `dir/name`.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: both names are valid C strings.
    check(unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Reads the target of the symlink `fd` refers to (an `O_PATH|O_NOFOLLOW` descriptor).
pub fn readlink_fd(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = check_size(unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// Changes the owner of the inode `fd` refers to, never following a symlink.
/// `u32::MAX` leaves that id unchanged (as `-1` does for chown(2)).
pub fn fchown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Result<()> {
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

/// Sets the times of the inode `fd` refers to; `UTIME_NOW`/`UTIME_OMIT` pass through.
pub fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> Result<()> {
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

pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: `name` is a valid C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> Result<()> {
    let size = i64::try_from(size).map_err(|_| Errno::EFBIG)?;
    // SAFETY: plain syscall on a borrowed descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }).map(drop)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    check_size(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> Result<usize> {
    // SAFETY: `buf` is readable for `buf.len()` bytes.
    check_size(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> Result<()> {
    // SAFETY: plain syscalls on a borrowed descriptor.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> Result<()> {
    // SAFETY: plain syscall on a borrowed descriptor.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) }).map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> Result<i64> {
    // SAFETY: plain syscall on a borrowed descriptor.
    let ret = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
    flags: u32,
) -> Result<usize> {
    let mut off_in = off_in as i64;
    let mut off_out = off_out as i64;
    // SAFETY: the offsets are valid in/out pointers for the duration of the call.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    })
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is a valid out-pointer filled on success.
    unsafe {
        check(libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()))?;
        Ok(st.assume_init())
    }
}

/// Reads directory entries (`struct linux_dirent64` records) into `buf`.
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes; getdents64 writes at most that.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// Sets this thread's umask (threads that called `unshare(CLONE_FS)` have their own).
pub fn umask(mask: u32) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Gives the calling thread its own umask, cwd and root (`unshare(CLONE_FS)`),
/// so that setting the umask per request does not race with other threads.
pub fn unshare_fs() -> Result<()> {
    // SAFETY: unshare(CLONE_FS) only detaches filesystem attributes of this thread.
    check(unsafe { libc::unshare(libc::CLONE_FS) }).map(drop)
}

/// Raw descriptor number as a decimal C string, for paths under /proc/self/fd.
pub struct FdName {
    buf: [u8; 12],
}

impl FdName {
    pub fn new(fd: RawFd) -> FdName {
        let mut buf = [0u8; 12];
        let digits = fd.to_string();
        buf[..digits.len()].copy_from_slice(digits.as_bytes());
        FdName { buf }
    }

    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).expect("buffer always holds a NUL")
    }
}

/// `/proc/self/fd/N` as a C string: the path through which xattr calls reach
/// an inode held only by an `O_PATH` descriptor (there are no `fgetxattr`
/// calls for those). The magic link resolves to the inode itself, also for a
/// symlink, and never to anything under the mountpoint.
pub fn proc_fd_path(fd: RawFd) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: strings are valid; `buf` is writable for its length (a zero
    // length asks only for the size and writes nothing).
    check_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

pub fn listxattr(path: &CStr, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: as for getxattr.
    check_size(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> Result<()> {
    // SAFETY: strings are valid; `value` is readable for its length.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn removexattr(path: &CStr, name: &CStr) -> Result<()> {
    // SAFETY: strings are valid.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}
