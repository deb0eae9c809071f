//! A tree as of one point in time: what a provider copies into the store and
//! what `.snapshots/NAME/` shows before the copy is sealed.
//!
//! Two implementations: a plain directory read as it is (`bkfs backup`,
//! where "as of" means "as read"), and a mount's point in time (live objects
//! plus the pre-images preserved since its barrier, see [`crate::snapshot::diff`]).

use std::io;

use crate::store::Xattr;

/// An inode's identity: `(st_dev, st_ino)`.
pub use crate::types::InodeKey as Key;

/// What an [`AsOf`] error carries when the tree can no longer be read as
/// of its point in time (an object changed, or went, without a pre-image):
/// a copy then fails rather than seal a snapshot without the object.
#[derive(Debug)]
pub struct Inconsistent(pub String);

impl std::fmt::Display for Inconsistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Inconsistent {}

impl Inconsistent {
    pub fn error(msg: String) -> io::Error {
        io::Error::other(Inconsistent(msg))
    }

    /// Whether `e` is such an error.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|r| r.is::<Inconsistent>())
    }
}

/// A tree as of a point in time, read-only. All methods may be called from
/// many threads at once.
pub trait AsOf: Send + Sync {
    /// A handle on one object of the tree, cheap to clone.
    type Obj: Clone + Send + Sync;
    /// An open regular file.
    type File: AsOfFile;

    /// The root directory.
    fn root(&self) -> io::Result<Self::Obj>;
    /// The object's `(st_dev, st_ino)` as of the point in time.
    fn key(&self, obj: &Self::Obj) -> Key;
    /// Its attributes as of the point in time (`st_size` is the size then).
    fn stat(&self, obj: &Self::Obj) -> io::Result<libc::stat>;
    /// The names in directory `dir`, without `.` and `..`, in no set order.
    fn list(&self, dir: &Self::Obj) -> io::Result<Vec<Vec<u8>>>;
    /// Entry `name` of directory `dir`; `ENOENT` if it has none.
    fn child(&self, dir: &Self::Obj, name: &[u8]) -> io::Result<Self::Obj>;
    /// Its extended attributes, every namespace.
    fn xattrs(&self, obj: &Self::Obj) -> io::Result<Vec<Xattr>>;
    /// A symlink's target.
    fn readlink(&self, obj: &Self::Obj) -> io::Result<Vec<u8>>;
    /// Opens a regular file for reading its content as of the point in time.
    fn open(&self, obj: &Self::Obj) -> io::Result<Self::File>;

    /// Whether `obj` holds a descriptor of its own: a view keeping objects
    /// for as long as the kernel caches them counts those in the daemon's
    /// descriptor budget.
    fn holds_fd(&self, _obj: &Self::Obj) -> bool {
        false
    }

    /// `obj` in a form that holds no descriptor (a file handle), to keep
    /// for long; [`AsOf::unpark`] makes it usable again. `None` where there
    /// is none (the keeper then finds it again by name).
    fn park(&self, obj: &Self::Obj) -> Option<Self::Obj> {
        Some(obj.clone())
    }

    /// A parked object made usable (the others as they are).
    fn unpark(&self, obj: &Self::Obj) -> io::Result<Self::Obj> {
        Ok(obj.clone())
    }
}

/// The content of a regular file as of a point in time.
pub trait AsOfFile: Send + Sync {
    /// The ranges `(offset, len)` that hold data, ascending, within the first
    /// `size` bytes; everything else reads as zeros and may be stored as a
    /// hole.
    fn extents(&self, size: u64) -> io::Result<Vec<(u64, u64)>>;
    /// Reads at `off`; fewer bytes than asked only at the end of the file.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
}
