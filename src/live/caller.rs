//! Who asked: the credentials new objects are created for.
//!
//! The daemon runs as root and creates each object itself, then gives it to
//! the caller with `fchownat` ("create, then chown"), rather than switching the
//! thread's fsuid/fsgid. The reason is supplementary groups: the kernel sends
//! only the caller's uid and gid, so a thread running as the caller would be
//! refused a directory the caller may write only through a supplementary
//! group. With `default_permissions` the kernel has already checked the
//! request against the caller's full credentials (groups and ACLs included)
//! before we see it, so acting as root afterwards grants nothing more.
//!
//! What ownership comes out as, as on a native filesystem:
//! - owner: the caller's uid;
//! - group: the parent directory's group if it has the setgid bit (and new
//!   directories inherit that bit from the backing filesystem), else the
//!   caller's gid.
//!
//! Known difference: a non-member creating a file with mode `S_ISGID` in a
//! setgid directory keeps that bit (the kernel clears it natively).
//!
//! The umask: the mount asks for `FUSE_DONT_MASK`, so the mode arrives
//! unmasked with the caller's umask beside it, and each worker thread has its
//! own umask (`unshare(CLONE_FS)`), set to the caller's before creating. The
//! backing filesystem then applies either the umask or the parent's default
//! ACL, exactly as for a native create.

use std::cell::Cell;

use crate::os::proc;

/// The caller of a create-class request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        umask: 0o022,
    };
}

thread_local! {
    static OWN_FS_ATTRS: Cell<bool> = const { Cell::new(false) };
    /// The umask this thread last set (`u32::MAX`: none yet). Only this
    /// thread changes its own umask once detached, so when the next caller
    /// has the same one the umask(2) call is skipped.
    static THREAD_UMASK: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// Sets the calling thread's umask to `mask`, detaching the thread's umask from
/// the other threads' on first use.
pub fn set_thread_umask(mask: u32) {
    let detached = OWN_FS_ATTRS.with(|own| {
        if !own.get() {
            match proc::unshare_fs() {
                Ok(()) => own.set(true),
                Err(e) => {
                    tracing::warn!("unshare(CLONE_FS) failed: {e}; the umask is process-wide");
                    return false;
                }
            }
        }
        true
    });
    let mask = mask & 0o777;
    if !detached {
        // Shared with the other threads: set it every time.
        proc::umask(mask);
        return;
    }
    THREAD_UMASK.with(|cur| {
        if cur.get() != mask {
            proc::umask(mask);
            cur.set(mask);
        }
    });
}
