//! Attributes as the live tree reports them, and the changes setattr asks for.

use crate::os;

/// A backing inode's `stat`, with `st_ino` replaced by its node id.
#[derive(Clone, Copy)]
pub struct Attr {
    pub st: libc::stat,
}

impl Attr {
    pub fn new(mut st: libc::stat, id: u64) -> Attr {
        st.st_ino = id;
        Attr { st }
    }

    pub fn id(&self) -> u64 {
        self.st.st_ino
    }

    pub fn kind(&self) -> u32 {
        self.st.st_mode & libc::S_IFMT
    }
}

impl std::fmt::Debug for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attr")
            .field("ino", &self.st.st_ino)
            .field("mode", &format_args!("{:o}", self.st.st_mode))
            .field("size", &self.st.st_size)
            .field("uid", &self.st.st_uid)
            .field("gid", &self.st.st_gid)
            .finish()
    }
}

/// An entry handed to the kernel: its id carries one lookup.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
}

impl Entry {
    pub fn id(&self) -> u64 {
        self.attr.id()
    }
}

pub use crate::vfs::{SetAttr, SetTime};

/// The `timespec` utimensat(2) wants for an optional time.
pub fn timespec(time: Option<SetTime>) -> libc::timespec {
    match time {
        None => os::time::OMIT,
        Some(SetTime::Now) => os::time::NOW,
        Some(SetTime::At(t)) => os::time::timespec(t.into()),
    }
}
