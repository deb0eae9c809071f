//! Store locks: one writer at a time; readers beside it; gc alone.
//!
//! Locks are `flock(2)` locks on files under `locks/`. The kernel drops a flock
//! when its holder dies, so a crashed writer never blocks the next one. The
//! writer also writes who it is into the lock file, so a refused writer can say
//! who holds the store.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::Path;

use super::error::{Error, IoContext, Result};

#[derive(Debug)]
pub struct Lock {
    _file: Option<File>,
}

#[derive(Clone, Copy)]
enum Mode {
    Shared,
    Exclusive,
}

fn flock(path: &Path, mode: Mode) -> Result<Option<File>> {
    let file = open_lock_file(path, matches!(mode, Mode::Exclusive))?;
    flock_file(file, path, mode)
}

fn open_lock_file(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .open(path)
        .ctx(|| format!("opening lock {}", path.display()))
}

fn flock_file(file: File, path: &Path, mode: Mode) -> Result<Option<File>> {
    match crate::os::fd::flock(file.as_fd(), matches!(mode, Mode::Exclusive)) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

fn holder(path: &Path) -> String {
    let mut s = String::new();
    // The holder writes its name just after taking the lock: give it a moment.
    for _ in 0..5 {
        s.clear();
        if let Ok(mut f) = File::open(path) {
            let _ = f.read_to_string(&mut s);
        }
        if !s.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = s.trim().to_string();
    if s.is_empty() {
        "another bkfs process".into()
    } else {
        s
    }
}

/// How long a writer waits for a lock that its own process released but a
/// child forked meanwhile still holds (below).
const FORKED_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The single writer's lock (backup, forget, gc).
///
/// A flock belongs to an open file description, which a child forked while
/// the lock was held shares until it execs (the descriptor is close-on-exec).
/// So a lock this process released may still be held for a moment by a
/// plug-in command or a hook on its way to exec: when the holder named is
/// this process, the writer tries again for a short while before it says
/// the store is locked.
pub fn writer(locks: &Path, what: &str) -> Result<Lock> {
    let path = locks.join("write");
    let start = std::time::Instant::now();
    let mine = format!("pid {} ", std::process::id());
    let mut file = loop {
        if let Some(file) = flock(&path, Mode::Exclusive)? {
            break file;
        }
        let who = holder(&path);
        if !who.starts_with(&mine) || start.elapsed() >= FORKED_HOLDER_WAIT {
            return Err(Error::Locked(who));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let host = hostname();
    let me = format!(
        "pid {} on {host}, `bkfs {what}`, since {}\n",
        std::process::id(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(me.as_bytes());
    Ok(Lock { _file: Some(file) })
}

/// Held by readers (ls, restore, check) so that gc does not delete packs under them.
/// A flock needs only a read-only descriptor, so a store on read-only media
/// (where no gc can run either) is readable; if even the lock file cannot be
/// opened there, readers go without.
pub fn reader(locks: &Path) -> Result<Lock> {
    let path = locks.join("read");
    let file = match open_lock_file(&path, false) {
        Ok(f) => f,
        Err(_) => match open_lock_file(&path, true) {
            Ok(f) => f,
            Err(Error::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EROFS) | Some(libc::EACCES)
                ) =>
            {
                return Ok(Lock { _file: None });
            }
            Err(e) => return Err(e),
        },
    };
    match flock_file(file, &path, Mode::Shared)? {
        Some(file) => Ok(Lock { _file: Some(file) }),
        None => Err(Error::Locked("gc is running".into())),
    }
}

/// Taken by gc on top of the writer lock: no reader may be active while packs go away.
pub fn exclusive_readers(locks: &Path) -> Result<Lock> {
    match flock(&locks.join("read"), Mode::Exclusive)? {
        Some(file) => Ok(Lock { _file: Some(file) }),
        None => Err(Error::Locked(
            "a reader (restore, ls, check or a mount) is using the store; gc needs it alone".into(),
        )),
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
