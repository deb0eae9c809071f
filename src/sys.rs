//! Thin, safe wrappers over the `*at()` system calls that backup and restore
//! use. Everything is relative to a directory fd and never follows a symlink
//! in the last component, so a tree that changes while we walk it cannot lead
//! us outside it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::store::{Time, Xattr};

pub fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn fstatat(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: name is NUL-terminated, st points to writable memory of the right size.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled st.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st points to writable memory of the right size.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled st.
    Ok(unsafe { st.assume_init() })
}

pub fn openat(
    dir: BorrowedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned fd is new and ours.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open for reading without updating atime when we may (O_NOATIME needs
/// ownership or CAP_FOWNER; fall back without it).
pub fn open_noatime(dir: BorrowedFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    match openat(dir, name, flags | libc::O_RDONLY | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            openat(dir, name, flags | libc::O_RDONLY, 0)
        }
        r => r,
    }
}

pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstr(path.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: c is NUL-terminated; the fd returned is new and ours.
    let fd = match check(unsafe { libc::open(c.as_ptr(), flags | libc::O_NOATIME) }) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            check(unsafe { libc::open(c.as_ptr(), flags) })
        }
        r => r,
    }?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The names in a directory, without `.` and `..`.
pub fn read_dir_names(dir: BorrowedFd) -> io::Result<Vec<Vec<u8>>> {
    let dup = dir.try_clone_to_owned()?;
    // lseek to 0: a dup shares the file position with the original.
    // SAFETY: plain lseek on a valid fd.
    unsafe { libc::lseek(dup.as_raw_fd(), 0, libc::SEEK_SET) };
    let mut d = nix::dir::Dir::from_fd(dup).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

pub fn readlinkat(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is writable for buf.len() bytes.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// A path that reaches `name` in `dir` through procfs, for the calls that have
/// no `*at()` form (the l*xattr family). The last component is not followed.
pub fn proc_path(dir: BorrowedFd, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cstr(&p)
}

fn xattr_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// What an xattr call works on: an open fd (the f*xattr calls), or a path
/// whose last component is not followed (the l*xattr calls).
#[derive(Clone, Copy)]
pub enum XattrOf<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a CStr),
}

impl XattrOf<'_> {
    fn list(&self, buf: &mut [u8]) -> isize {
        // SAFETY: buf is writable for buf.len() bytes; the path is NUL-terminated.
        unsafe {
            match self {
                XattrOf::Fd(fd) => {
                    libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                }
                XattrOf::Path(p) => {
                    libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
            }
        }
    }

    fn get(&self, name: &CStr, buf: &mut [u8]) -> isize {
        // SAFETY: buf is writable for buf.len() bytes; the strings are NUL-terminated.
        unsafe {
            match self {
                XattrOf::Fd(fd) => libc::fgetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                ),
                XattrOf::Path(p) => libc::lgetxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                ),
            }
        }
    }

    fn set(&self, name: &CStr, value: &[u8]) -> libc::c_int {
        // SAFETY: value is readable for its length; the strings are NUL-terminated.
        unsafe {
            match self {
                XattrOf::Fd(fd) => libc::fsetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                ),
                XattrOf::Path(p) => libc::lsetxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                ),
            }
        }
    }
}

/// All extended attributes, sorted by name.
pub fn list_xattrs(of: XattrOf) -> io::Result<Vec<Xattr>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        let n = of.list(&mut names);
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            _ if xattr_unsupported(&e) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        let mut value = vec![0u8; 256];
        loop {
            let n = of.get(&cname, &mut value);
            if n >= 0 {
                value.truncate(n as usize);
                out.push(Xattr {
                    name: name.to_vec(),
                    value,
                });
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                // Removed between list and get: it is simply not there.
                Some(libc::ENODATA) => break,
                _ => return Err(e),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn set_xattr(of: XattrOf, x: &Xattr) -> io::Result<()> {
    let name = cstr(&x.name)?;
    check(of.set(&name, &x.value)).map(drop)
}

pub fn stat_times(st: &libc::stat) -> (Time, Time, Time) {
    let t = |s: i64, ns: i64| Time {
        sec: s,
        nsec: ns as u32,
    };
    (
        t(st.st_mtime, st.st_mtime_nsec),
        t(st.st_atime, st.st_atime_nsec),
        t(st.st_ctime, st.st_ctime_nsec),
    )
}

pub fn timespec(t: Time) -> libc::timespec {
    libc::timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec as i64,
    }
}

/// Set atime and mtime of `name` in `dir` (not following a final symlink).
pub fn set_times(dir: BorrowedFd, name: &CStr, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: ts is an array of two timespecs as utimensat expects.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Set atime and mtime of `path` (not following a final symlink).
pub fn set_times_path(path: &CStr, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: ts is an array of two timespecs; path is NUL-terminated.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn chown_at(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: name is NUL-terminated.
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

pub fn chmod_at(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // fchmodat cannot skip symlinks on Linux before 6.6; callers never pass one.
    // SAFETY: name is NUL-terminated.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}
