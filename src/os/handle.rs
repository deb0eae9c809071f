//! File handles (`name_to_handle_at`/`open_by_handle_at`): a name for an
//! inode that survives renames and holds no descriptor. The live tree pins
//! nodes past its descriptor budget with them, the diff area records where
//! each entry of a preserved listing went, the fence opens FUSE nodes by id.
//!
//! A handle does not pin its inode: once the file is deleted, opening the
//! handle fails with `ESTALE` rather than reaching another file.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{check, Errno, Result, EMPTY};

/// `MAX_HANDLE_SZ` of the kernel.
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
#[derive(Clone)]
pub struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

impl PartialEq for FileHandle {
    fn eq(&self, other: &Self) -> bool {
        self.handle_type == other.handle_type && self.bytes() == other.bytes()
    }
}

impl Eq for FileHandle {}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileHandle({:#x}, {})",
            self.handle_type,
            hex::encode(self.bytes())
        )
    }
}

impl FileHandle {
    fn empty() -> FileHandle {
        FileHandle {
            handle_bytes: MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.f_handle[..(self.handle_bytes as usize).min(MAX_HANDLE_SZ)]
    }

    /// Safe wrapper for name_to_handle_at(2).
    fn name_to_handle(dir: BorrowedFd<'_>, name: &std::ffi::CStr, flags: i32) -> Result<Self> {
        let mut h = FileHandle::empty();
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `h` is a file_handle with room for MAX_HANDLE_SZ bytes, as
        // announced in handle_bytes; `name` is a valid C string.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut h as *mut FileHandle,
                &mut mount_id as *mut libc::c_int,
                flags,
            )
        };
        check(ret)?;
        Ok(h)
    }

    /// The handle of the inode `fd` refers to.
    ///
    /// # Errors
    /// `EOPNOTSUPP` where the filesystem gives no handles, `EOVERFLOW` for
    /// one too large.
    pub fn of(fd: BorrowedFd<'_>) -> Result<FileHandle> {
        Self::name_to_handle(fd, EMPTY, libc::AT_EMPTY_PATH)
    }

    /// The handle of `name` in `dir`, not following a final symlink.
    pub fn at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> Result<FileHandle> {
        Self::name_to_handle(dir, name, 0)
    }

    /// Whether an error of [`FileHandle::of`] or [`FileHandle::at`] means
    /// only that this filesystem (or this inode) has no handle to give.
    pub fn unsupported(e: Errno) -> bool {
        matches!(e, Errno::EOPNOTSUPP | Errno::EOVERFLOW)
    }

    /// The handle the kernel's FUSE client gives node `id` of a FUSE mount
    /// (`fuse_encode_fh`: type `FILEID_INO64_GEN`, the node id's high and
    /// low 32 bits, then the generation, which bkfs always answers 0). The
    /// kernel finds an inode it has cached from it without asking the
    /// daemon, so it reaches any inode a process holds open.
    pub fn fuse_node(id: u64) -> FileHandle {
        let mut h = FileHandle::empty();
        h.handle_bytes = 12;
        h.handle_type = 0x81;
        let words = [(id >> 32) as u32, id as u32, 0u32];
        for (i, w) in words.iter().enumerate() {
            h.f_handle[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        h
    }

    /// Safe wrapper for open_by_handle_at(2): opens the inode with `flags`
    /// (`O_CLOEXEC` added) through `mount`, any descriptor on its filesystem
    /// but an `O_PATH` one.
    ///
    /// # Errors
    /// `ESTALE` once the inode is gone.
    pub fn open(&self, mount: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
        // SAFETY: `self` is a valid file_handle.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                self as *const FileHandle,
                flags | libc::O_CLOEXEC,
            )
        };
        let fd = check(fd)?;
        // SAFETY: open_by_handle_at returned a new descriptor, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// The handle as bytes: `handle_type` (4 bytes, little endian), then
    /// `f_handle` (the diff area's record format, docs/SNAPSHOTS.md).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.handle_type.to_le_bytes().to_vec();
        out.extend_from_slice(self.bytes());
        out
    }

    /// A handle from [`FileHandle::to_bytes`]; `EINVAL` for bytes that cannot be one.
    pub fn from_bytes(b: &[u8]) -> Result<FileHandle> {
        if b.len() < 4 || b.len() - 4 > MAX_HANDLE_SZ {
            return Err(Errno::EINVAL);
        }
        let mut h = FileHandle::empty();
        h.handle_bytes = (b.len() - 4) as u32;
        h.handle_type = i32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        h.f_handle[..b.len() - 4].copy_from_slice(&b[4..]);
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fd::{fstat, Follow};
    use std::os::fd::AsFd;

    #[test]
    fn a_handle_reopens_its_inode_and_survives_encoding() {
        let (_tmp, d) = crate::os::test_dir(b"x");
        let h = match FileHandle::at(d.as_fd(), c"f") {
            Ok(h) => h,
            Err(e) if FileHandle::unsupported(e) => return,
            Err(e) => panic!("{e}"),
        };
        let f = crate::os::fd::openat(d.as_fd(), c"f", Follow::No, libc::O_PATH, 0).unwrap();
        assert_eq!(FileHandle::of(f.as_fd()).unwrap(), h);
        let back = FileHandle::from_bytes(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        let g = back.open(d.as_fd(), libc::O_PATH).unwrap();
        let (a, b) = (fstat(f.as_fd()).unwrap(), fstat(g.as_fd()).unwrap());
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        assert_eq!(FileHandle::from_bytes(&[1, 2]), Err(Errno::EINVAL));
        assert_eq!(FileHandle::fuse_node(1).to_bytes().len(), 16);
    }
}
