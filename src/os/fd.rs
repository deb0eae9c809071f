//! Opening and looking at inodes: `openat` with an explicit [`Follow`],
//! reopening an `O_PATH` descriptor through `/proc/self/fd` ([`ProcPath`],
//! the one builder of such paths), `fstat(at)`, `statvfs`, `flock`, `poll`.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{check, path_cstr, Errno, Result, NAME_MAX};

/// Whether a call that resolves a name follows a symlink in its last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    Yes,
    No,
}

impl Follow {
    /// The open(2) flag that says it.
    pub(super) fn open_flag(self) -> libc::c_int {
        match self {
            Follow::Yes => 0,
            Follow::No => libc::O_NOFOLLOW,
        }
    }

    /// The `AT_*` flag of the other `*at()` calls that says it.
    pub(super) fn at_flag(self) -> libc::c_int {
        match self {
            Follow::Yes => 0,
            Follow::No => libc::AT_SYMLINK_NOFOLLOW,
        }
    }
}

/// `AT_FDCWD`: resolves relative names from the working directory, absolute
/// ones from the root.
pub fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is never closed; every *at() call accepts it as a
    // directory descriptor.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// Takes ownership of a descriptor a system call just returned.
fn owned(fd: libc::c_int) -> Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by a successful call that creates a
    // descriptor, so it is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Safe wrapper for openat(2), always with `O_CLOEXEC`.
///
/// # Errors
/// The errno of openat(2); `ELOOP` for a final symlink with [`Follow::No`]
/// (unless `flags` has `O_PATH`, which then opens the symlink itself).
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    follow: Follow,
    flags: libc::c_int,
    mode: u32,
) -> Result<OwnedFd> {
    // SAFETY: `name` is a valid C string; the result is checked by `owned`.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | follow.open_flag() | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
}

/// Opens `path` (relative to the working directory) with `flags`.
pub fn open(path: &Path, follow: Follow, flags: libc::c_int) -> Result<OwnedFd> {
    openat(cwd(), &path_cstr(path)?, follow, flags, 0)
}

/// Opens with `O_NOATIME` added when the caller may (it needs ownership of
/// the file or `CAP_FOWNER`), without it otherwise.
fn noatime(flags: libc::c_int, open: impl Fn(libc::c_int) -> Result<OwnedFd>) -> Result<OwnedFd> {
    match open(flags | libc::O_NOATIME) {
        Err(Errno::EPERM) => open(flags),
        r => r,
    }
}

/// Opens directory `path` for reading (following symlinks up to and
/// including it, as a command line argument does), without updating its
/// atime when allowed.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = path_cstr(path)?;
    noatime(libc::O_RDONLY | libc::O_DIRECTORY, |f| {
        openat(cwd(), &c, Follow::Yes, f, 0)
    })
}

/// Opens `name` in `dir` for reading (`O_RDONLY | flags`), never following
/// a final symlink, without updating its atime when allowed.
pub fn openat_noatime(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> Result<OwnedFd> {
    noatime(libc::O_RDONLY | flags, |f| {
        openat(dir, name, Follow::No, f, 0)
    })
}

/// Opens the inode `fd` refers to (an `O_PATH` descriptor, say) anew with
/// `flags`, through `/proc/self/fd/N`. The magic link resolves to the inode
/// itself, never through a path that may have changed.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> Result<OwnedFd> {
    openat(cwd(), ProcPath::of(fd).as_cstr(), Follow::Yes, flags, 0)
}

/// [`reopen`] for reading (`O_RDONLY | flags`), without updating the
/// inode's atime when allowed.
pub fn reopen_noatime(fd: BorrowedFd<'_>, flags: libc::c_int) -> Result<OwnedFd> {
    let path = ProcPath::of(fd);
    noatime(libc::O_RDONLY | flags, |f| {
        openat(cwd(), path.as_cstr(), Follow::Yes, f, 0)
    })
}

/// `/proc/self/fd/N`, or `/proc/self/fd/N/NAME`, as a C string on the
/// stack: the path through which calls with no `*at()` or descriptor form
/// (the xattr calls on an `O_PATH` descriptor, chmod of one, link of one)
/// reach an inode.
pub struct ProcPath {
    buf: [u8; ProcPath::CAP],
}

impl ProcPath {
    const PREFIX: &'static [u8] = b"/proc/self/fd/";
    /// The prefix, 10 digits, `/`, a name and the NUL.
    const CAP: usize = Self::PREFIX.len() + 10 + 1 + NAME_MAX + 1;

    /// `/proc/self/fd/N` for descriptor `fd`.
    pub fn of(fd: BorrowedFd<'_>) -> ProcPath {
        let mut buf = [0u8; Self::CAP];
        let len = Self::put_fd(&mut buf, fd);
        debug_assert!(len < Self::CAP);
        ProcPath { buf }
    }

    /// `/proc/self/fd/N/NAME`: entry `name` of directory `dir`.
    ///
    /// # Errors
    /// `EINVAL` for a name holding `/` or NUL, `ENAMETOOLONG` past `NAME_MAX`.
    pub fn child(dir: BorrowedFd<'_>, name: &[u8]) -> Result<ProcPath> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if name.contains(&b'/') || name.contains(&0) {
            return Err(Errno::EINVAL);
        }
        let mut buf = [0u8; Self::CAP];
        let mut len = Self::put_fd(&mut buf, dir);
        buf[len] = b'/';
        len += 1;
        buf[len..len + name.len()].copy_from_slice(name);
        Ok(ProcPath { buf })
    }

    fn put_fd(buf: &mut [u8; Self::CAP], fd: BorrowedFd<'_>) -> usize {
        let n = Self::PREFIX.len();
        buf[..n].copy_from_slice(Self::PREFIX);
        let digits = fd.as_raw_fd().to_string();
        buf[n..n + digits.len()].copy_from_slice(digits.as_bytes());
        n + digits.len()
    }

    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).expect("the buffer always ends in a NUL")
    }
}

/// Safe wrapper for fstat(2).
pub fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer of the right size.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `st` completely.
    Ok(unsafe { st.assume_init() })
}

/// Safe wrapper for fstatat(2).
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr, follow: Follow) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a valid C string and `st` a valid out-pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            follow.at_flag(),
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled `st` completely.
    Ok(unsafe { st.assume_init() })
}

/// Safe wrapper for fstatvfs(3).
pub fn fstatvfs(fd: BorrowedFd<'_>) -> Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is a valid out-pointer of the right size.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it filled `st` completely.
    Ok(unsafe { st.assume_init() })
}

/// Safe wrapper for statvfs(3).
pub fn statvfs(path: &Path) -> Result<libc::statvfs> {
    let c = path_cstr(path)?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded, so it filled `st` completely.
    Ok(unsafe { st.assume_init() })
}

/// Safe wrapper for a non-blocking flock(2): `Ok(false)` when another
/// holder has it (`EWOULDBLOCK`).
pub fn flock(fd: BorrowedFd<'_>, exclusive: bool) -> Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: plain call on a borrowed descriptor.
    match check(unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Safe wrapper for poll(2) on one descriptor for `POLLPRI` (a cgroup's
/// `cgroup.events` changing, say): returns whether it came within
/// `timeout_ms`.
pub fn poll_priority(fd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd, as the count says.
    let n = check(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn proc_paths() {
        let f = std::fs::File::open("/").unwrap();
        let n = f.as_raw_fd();
        assert_eq!(
            ProcPath::of(f.as_fd()).as_cstr().to_bytes(),
            format!("/proc/self/fd/{n}").as_bytes()
        );
        let long = vec![b'x'; NAME_MAX];
        let p = ProcPath::child(f.as_fd(), &long).unwrap();
        assert_eq!(
            p.as_cstr().to_bytes().len(),
            format!("/proc/self/fd/{n}/").len() + NAME_MAX
        );
        assert_eq!(
            ProcPath::child(f.as_fd(), b"a/b").err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            ProcPath::child(f.as_fd(), &[b'x'; NAME_MAX + 1]).err(),
            Some(Errno::ENAMETOOLONG)
        );
    }

    #[test]
    fn reopen_reaches_the_inode_of_an_o_path_descriptor() {
        let (_tmp, d) = crate::os::test_dir(b"data");
        let p = openat(d.as_fd(), c"f", Follow::No, libc::O_PATH, 0).unwrap();
        let r = reopen_noatime(p.as_fd(), 0).unwrap();
        assert_eq!(fstat(r.as_fd()).unwrap().st_size, 4);
        crate::os::dir::symlinkat(c"f", d.as_fd(), c"l").unwrap();
        assert_eq!(
            openat(d.as_fd(), c"l", Follow::No, libc::O_RDONLY, 0).err(),
            Some(Errno::ELOOP)
        );
        let st = fstatat(d.as_fd(), c"l", Follow::No).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let st = fstatat(d.as_fd(), c"l", Follow::Yes).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG);
    }
}
