//! The process and its threads: fork, the open-file limit, priority, the
//! umask and `unshare(CLONE_FS)`, credentials of a child, the standard
//! descriptors, randomness, syslog.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::{check, Errno, Result};

pub use nix::unistd::ForkResult;

/// Forks the process, which must have a single thread: in a child of a
/// process with several, another thread may have held a lock (malloc's, say)
/// that nobody will ever release, so only async-signal-safe calls would be
/// allowed in it. The thread count is checked first (`/proc/self/task`).
///
/// # Errors
/// `EBUSY` if the process has more than one thread; the errno of fork(2).
pub fn fork() -> Result<ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|e| super::errno_of(&e))?
        .count();
    if threads != 1 {
        return Err(Errno::EBUSY);
    }
    // SAFETY: the process has one thread (checked just above, and only this
    // thread could start another), so the child may run any code.
    unsafe { nix::unistd::fork() }
}

/// The open-file limit, `(soft, hard)`: safe wrapper for getrlimit(2).
pub fn nofile_limit() -> Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets the open-file limit: safe wrapper for setrlimit(2).
pub fn set_nofile_limit(soft: u64, hard: u64) -> Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }).map(drop)
}

/// Sets the calling thread's nice value (setpriority(2) with `who` 0, which
/// on Linux is the calling thread); errors are ignored: a priority is a hint.
pub fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority has no memory effects.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
}

/// The calling thread's id: safe wrapper for gettid(2).
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Sets the umask (the calling thread's, after [`unshare_fs`]) and returns
/// the one it replaces: safe wrapper for umask(2).
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Gives the calling thread its own umask, cwd and root (`unshare(CLONE_FS)`),
/// so that setting the umask per request does not race with other threads.
pub fn unshare_fs() -> Result<()> {
    // SAFETY: unshare(CLONE_FS) only detaches filesystem attributes of this thread.
    check(unsafe { libc::unshare(libc::CLONE_FS) }).map(drop)
}

/// Makes `cmd`'s child take the credentials `uid`, `gid` and supplementary
/// `groups` before it executes (setgroups, setgid, setuid, in that order:
/// each later call needs the privileges the earlier keep).
pub fn run_as(cmd: &mut Command, uid: u32, gid: u32, groups: Vec<u32>) {
    let gids: Vec<libc::gid_t> = groups;
    // SAFETY: between fork and exec the closure makes only async-signal-safe
    // calls, and allocates nothing (`gids` was made before the fork).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(gids.len() as _, gids.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgid(gid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Points stdin, stdout and stderr at `to` (dup2(2) onto descriptors 0, 1
/// and 2, which belong to the process's standard streams); errors ignored.
pub fn redirect_stdio(to: BorrowedFd<'_>) {
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which nothing in the
        // process owns as an OwnedFd; `to` stays open meanwhile.
        unsafe { libc::dup2(to.as_raw_fd(), fd) };
    }
}

/// Makes the process leave no core dump if it crashes (prctl(2)
/// `PR_SET_DUMPABLE` 0: no core file, none handed to a core-dump program),
/// before a crash on purpose.
pub fn forbid_core_dump() {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; no memory is involved.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Fills `buf` from the kernel's random source: safe wrapper for getrandom(2).
///
/// # Errors
/// The errno of getrandom(2), or `EIO` for a short read.
pub fn getrandom(buf: &mut [u8]) -> Result<()> {
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if check(n)? as usize != buf.len() {
        return Err(Errno::EIO);
    }
    Ok(())
}

/// Opens the connection to syslog as `bkfs[PID]`, facility `LOG_DAEMON`:
/// safe wrapper for openlog(3).
pub fn openlog_daemon() {
    // SAFETY: the identity is a static C string, valid for the process's life.
    unsafe { libc::openlog(c"bkfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

/// One syslog record at `priority`: safe wrapper for syslog(3).
pub fn syslog(priority: libc::c_int, msg: &CStr) {
    // SAFETY: the format and the message are valid C strings; "%s" makes
    // syslog read exactly one string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}
