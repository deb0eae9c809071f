//! Extended attributes, over an open descriptor, a path, or an `O_PATH`
//! descriptor through `/proc/self/fd/N` ([`XattrOf`]), with the one loop
//! that reads them all ([`list_all`]).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::fd::ProcPath;
use super::{check, check_size, cstr, Errno, Result};
use crate::types::Xattr;

/// What an xattr call works on.
#[derive(Clone, Copy)]
pub enum XattrOf<'a> {
    /// A descriptor open for I/O (the f*xattr calls).
    Fd(BorrowedFd<'a>),
    /// A path whose last component is not followed (the l*xattr calls).
    Path(&'a CStr),
    /// The inode any descriptor refers to, `O_PATH` ones and symlinks
    /// included: the following calls on `/proc/self/fd/N`, whose magic link
    /// resolves to the inode itself.
    ProcFd(BorrowedFd<'a>),
}

impl XattrOf<'_> {
    /// Safe wrapper for getxattr(2) and its f/l forms: the value's length;
    /// with an empty `buf`, only the length it needs.
    pub fn get(&self, name: &CStr, buf: &mut [u8]) -> Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: `buf` is writable for `len` bytes (none are written for a
        // length of 0); the strings are valid C strings.
        check_size(unsafe {
            match self {
                XattrOf::Fd(fd) => libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len),
                XattrOf::Path(p) => libc::lgetxattr(p.as_ptr(), name.as_ptr(), ptr, len),
                XattrOf::ProcFd(fd) => {
                    let p = ProcPath::of(*fd);
                    libc::getxattr(p.as_cstr().as_ptr(), name.as_ptr(), ptr, len)
                }
            }
        })
    }

    /// Safe wrapper for listxattr(2) and its f/l forms: the length of the
    /// NUL-separated names; with an empty `buf`, only the length it needs.
    pub fn list(&self, buf: &mut [u8]) -> Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: as for `get`.
        check_size(unsafe {
            match self {
                XattrOf::Fd(fd) => libc::flistxattr(fd.as_raw_fd(), ptr, len),
                XattrOf::Path(p) => libc::llistxattr(p.as_ptr(), ptr, len),
                XattrOf::ProcFd(fd) => {
                    let p = ProcPath::of(*fd);
                    libc::listxattr(p.as_cstr().as_ptr(), ptr, len)
                }
            }
        })
    }

    /// Safe wrapper for setxattr(2) and its f/l forms; `flags` 0,
    /// `XATTR_CREATE` or `XATTR_REPLACE`.
    pub fn set(&self, name: &CStr, value: &[u8], flags: i32) -> Result<()> {
        let (ptr, len) = (value.as_ptr().cast(), value.len());
        // SAFETY: `value` is readable for `len` bytes; the strings are valid C strings.
        check(unsafe {
            match self {
                XattrOf::Fd(fd) => libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len, flags),
                XattrOf::Path(p) => libc::lsetxattr(p.as_ptr(), name.as_ptr(), ptr, len, flags),
                XattrOf::ProcFd(fd) => {
                    let p = ProcPath::of(*fd);
                    libc::setxattr(p.as_cstr().as_ptr(), name.as_ptr(), ptr, len, flags)
                }
            }
        })
        .map(drop)
    }

    /// Safe wrapper for removexattr(2) and its f/l forms.
    pub fn remove(&self, name: &CStr) -> Result<()> {
        // SAFETY: the strings are valid C strings.
        check(unsafe {
            match self {
                XattrOf::Fd(fd) => libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()),
                XattrOf::Path(p) => libc::lremovexattr(p.as_ptr(), name.as_ptr()),
                XattrOf::ProcFd(fd) => {
                    let p = ProcPath::of(*fd);
                    libc::removexattr(p.as_cstr().as_ptr(), name.as_ptr())
                }
            }
        })
        .map(drop)
    }
}

/// Calls `call` with a buffer that grows until the answer fits (`ERANGE`:
/// the value grew since its size was asked).
fn grow(start: usize, mut call: impl FnMut(&mut [u8]) -> Result<usize>) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; start];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => {
                let want = call(&mut [])?;
                let len = want.max(buf.len() * 2);
                buf.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every extended attribute, sorted by name. A filesystem without xattrs
/// gives none; one removed between the listing and its read is left out.
pub fn list_all(of: XattrOf<'_>) -> Result<Vec<Xattr>> {
    let names = match grow(1024, |b| of.list(b)) {
        Ok(n) => n,
        Err(Errno::ENOTSUP | Errno::ENODATA) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        match grow(256, |b| of.get(&cname, b)) {
            Ok(value) => out.push(Xattr {
                name: name.to_vec(),
                value,
            }),
            Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Sets one extended attribute (creating or replacing it).
pub fn set(of: XattrOf<'_>, x: &Xattr) -> Result<()> {
    of.set(&cstr(&x.name)?, &x.value, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fd::{openat, Follow};
    use std::os::fd::AsFd;

    #[test]
    fn every_form_reads_what_another_wrote() {
        let (_tmp, d) = crate::os::test_dir(b"x");
        let f = openat(d.as_fd(), c"f", Follow::No, libc::O_RDONLY, 0).unwrap();
        let big = vec![b'v'; 3000];
        let x = Xattr {
            name: b"user.big".to_vec(),
            value: big.clone(),
        };
        match set(XattrOf::Fd(f.as_fd()), &x) {
            Err(Errno::ENOTSUP) => return, // tmpfs without user xattrs
            r => r.unwrap(),
        }
        let p = openat(d.as_fd(), c"f", Follow::No, libc::O_PATH, 0).unwrap();
        let path = ProcPath::child(d.as_fd(), b"f").unwrap();
        for of in [
            XattrOf::Fd(f.as_fd()),
            XattrOf::ProcFd(p.as_fd()),
            XattrOf::Path(path.as_cstr()),
        ] {
            assert_eq!(list_all(of).unwrap(), vec![x.clone()]);
            assert_eq!(of.get(c"user.big", &mut []).unwrap(), big.len());
        }
        XattrOf::ProcFd(p.as_fd()).remove(c"user.big").unwrap();
        assert!(list_all(XattrOf::Fd(f.as_fd())).unwrap().is_empty());
    }
}
