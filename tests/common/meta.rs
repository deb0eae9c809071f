//! Low-level metadata operations (libc, no following of symlinks).

use super::*;

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

#[track_caller]
pub fn lchown(p: &Path, uid: u32, gid: u32) {
    let r = unsafe { libc::lchown(cstr(p).as_ptr(), uid, gid) };
    assert_eq!(r, 0, "lchown {p:?}: {}", std::io::Error::last_os_error());
}

#[track_caller]
pub fn chmod(p: &Path, mode: u32) {
    let r = unsafe { libc::chmod(cstr(p).as_ptr(), mode) };
    assert_eq!(r, 0, "chmod {p:?}: {}", std::io::Error::last_os_error());
}

#[track_caller]
pub fn mknod(p: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) {
    let dev = libc::makedev(major, minor);
    let r = unsafe { libc::mknod(cstr(p).as_ptr(), kind | mode, dev) };
    assert_eq!(r, 0, "mknod {p:?}: {}", std::io::Error::last_os_error());
}

#[track_caller]
pub fn mkfifo(p: &Path, mode: u32) {
    let r = unsafe { libc::mkfifo(cstr(p).as_ptr(), mode) };
    assert_eq!(r, 0, "mkfifo {p:?}: {}", std::io::Error::last_os_error());
}

/// Sets atime and mtime (seconds, nanoseconds) without following a symlink.
#[track_caller]
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cstr(p).as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {p:?}: {}", std::io::Error::last_os_error());
}

#[track_caller]
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    set_xattr_bytes(p, name.as_bytes(), value)
}

/// An xattr whose name may be any bytes (not UTF-8, say).
#[track_caller]
pub fn set_xattr_bytes(p: &Path, name: &[u8], value: &[u8]) {
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {p:?} {}: {}",
        name.escape_ascii(),
        std::io::Error::last_os_error()
    );
}

/// All xattrs of a path (any namespace the caller can see, ACLs included), not following links.
pub fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = cstr(p);
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let n = loop {
        let r = unsafe {
            libc::llistxattr(
                c.as_ptr(),
                names.as_mut_ptr() as *mut libc::c_char,
                names.len(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) {
            names.resize(names.len() * 4, 0);
            continue;
        }
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return out;
        }
        panic!("llistxattr {p:?}: {e}");
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 65536];
        let r = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cn.as_ptr(),
                val.as_mut_ptr() as *mut libc::c_void,
                val.len(),
            )
        };
        if r < 0 {
            panic!(
                "lgetxattr {p:?} {}: {}",
                name.escape_ascii(),
                std::io::Error::last_os_error()
            );
        }
        val.truncate(r as usize);
        out.insert(name.to_vec(), val);
    }
    out
}

/// Opens for reading without touching atime (O_NOATIME; falls back where not permitted).
fn open_noatime(p: &Path, dir: bool) -> std::io::Result<fs::File> {
    let extra = if dir { libc::O_DIRECTORY } else { 0 };
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW | extra)
        .open(p)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | extra)
            .open(p),
        r => r,
    }
}

/// Names in a directory, read without touching its atime.
pub fn read_dir_noatime(p: &Path) -> Vec<OsString> {
    use std::os::fd::IntoRawFd;
    let f = open_noatime(p, true).unwrap_or_else(|e| panic!("open dir {p:?}: {e}"));
    let fd = f.into_raw_fd();
    let dirp = unsafe { libc::fdopendir(fd) };
    assert!(!dirp.is_null(), "fdopendir {p:?}");
    let mut names = Vec::new();
    loop {
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            break;
        }
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    unsafe { libc::closedir(dirp) };
    names.sort();
    names
}

/// blake3 of a file's contents, read without touching atime.
pub fn hash_file(p: &Path) -> String {
    let mut f = open_noatime(p, false).unwrap_or_else(|e| panic!("open {p:?}: {e}"));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {p:?}: {e}"));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

pub fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "<root>".into()
    } else {
        p.escape_ascii().to_string()
    }
}
