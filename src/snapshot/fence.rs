//! The fence: no write(2) is split by a point in time.
//!
//! Draining FUSE requests at the barrier is not enough. The kernel sends one
//! write(2) as several WRITE requests when it is larger than a request, or
//! when it crosses into a page that is not in the page cache, and the
//! barrier could close between two of them: the snapshot would hold half of
//! the write. Native freezing cannot do that (the VFS holds the
//! superblock's write level for the whole call); bkfs uses what the kernel
//! gives a FUSE daemon instead:
//!
//! - the kernel holds an inode's lock for the whole of a write(2) to it
//!   (and of ftruncate, fallocate, an O_TRUNC open with the writeback
//!   cache), and fsync(2) takes the same lock, flushes the inode's dirty
//!   pages, waits for its writes in flight and only then sends FSYNC;
//! - so for every inode open for writing, a thread of the daemon (never a
//!   FUSE worker) opens the inode through the mount (`open_by_handle_at`
//!   with the FUSE client's handle of the node: no path, so it works for
//!   files renamed or unlinked meanwhile) and calls fsync; the adapter holds
//!   that FSYNC, unanswered, until the point in time is committed. While it
//!   is held no write(2) to that inode is in progress, and none can start;
//! - writable opens of any other inode wait at the *open gate* from before
//!   the list of inodes open for writing is made until the commit, so no
//!   inode becomes writable without a fence.
//!
//! The order matters: the gate closes, then the fences are acquired while
//! write-class requests still flow, and only then does the barrier close.
//! A truncate holding an inode lock in the kernel must reach the daemon and
//! finish, or its fence would wait for it forever; for the same reason a
//! writable open of an inode that is fenced already passes the gate (with
//! the writeback cache the kernel holds that inode's lock during the OPEN).

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::barrier::{Barrier, Hold};
use crate::live::{Errno, Live};
use crate::os::handle::FileHandle;
use crate::os::io::{fsync, Sync};
use crate::os::{fd, proc, Follow};

/// What answers a held FSYNC (the adapter's reply).
pub type Answer = Box<dyn FnOnce() + Send>;

/// Stack of a fence thread: it only opens a file and calls fsync.
const FENCE_STACK: usize = 64 * 1024;

/// Why the writes could not be fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceError {
    /// Writable opens still running when the wait ended.
    OpensBusy(u64),
    /// Files whose writes did not stop within the time allowed.
    Busy { files: usize },
    /// The mount's root could not be opened to reach its inodes.
    NoMount(String),
    /// A file open for writing could not be opened to fence it.
    Open { node: u64, errno: Errno },
}

impl std::fmt::Display for FenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceError::OpensBusy(n) => write!(f, "{n} opens for writing did not finish"),
            FenceError::Busy { files } => {
                write!(f, "writes to {files} open files did not pause")
            }
            FenceError::NoMount(why) => write!(f, "cannot reach the mount to fence writes: {why}"),
            FenceError::Open { node, errno } => write!(
                f,
                "cannot open inode {node} through the mount to fence its writes: {}",
                errno.desc()
            ),
        }
    }
}

enum Slot {
    /// Started; not at the daemon yet (opening, or waiting for the inode lock).
    Waiting,
    /// Its FSYNC reached the daemon and is held: the inode is fenced.
    Held(Answer),
    /// The inode could not be opened through the mount.
    Failed(u64, Errno),
}

#[derive(Default)]
struct State {
    /// Fixes in force ([`Fixed`] values alive); the first one fenced.
    fixes: u32,
    /// The gate's hold while fixes are in force.
    gate: Option<Hold>,
    /// FSYNCs of the current fix's fence threads are held.
    holding: bool,
    /// Counts the fixes that fenced: a fence thread of an earlier one (that
    /// gave up) never takes a slot of a later one.
    generation: u64,
    /// The current fix's fence threads by thread id: their slot.
    tids: HashMap<i32, usize>,
    slots: Vec<Slot>,
}

/// Fences writes around points in time (see the module docs).
pub struct Fences {
    live: Arc<Live>,
    /// Writable opens of inodes that are not fenced wait here during a fix.
    gate: Arc<Barrier>,
    /// The mount point; its root is opened for each fix, by a requester
    /// thread (never by a FUSE worker: the mount would wait for itself).
    mountpoint: Mutex<Option<PathBuf>>,
    /// One fix is set up at a time.
    fixing: Mutex<()>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Writes fenced: held until released (or dropped). A fix asked for while
/// another is in force (a snapshot during `.control/freeze`) is that one:
/// every inode open for writing is fenced, and no other can be opened.
pub struct Fixed {
    fences: Arc<Fences>,
    released: bool,
    /// How many inodes open for writing were fenced.
    pub files: usize,
    /// How long fencing took.
    pub took: Duration,
}

impl Fixed {
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if !std::mem::replace(&mut self.released, true) {
            self.fences.release_one();
        }
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.release_now();
    }
}

impl Fences {
    pub fn new(live: Arc<Live>) -> Arc<Fences> {
        Arc::new(Fences {
            live,
            gate: Barrier::new(),
            mountpoint: Mutex::new(None),
            fixing: Mutex::new(()),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// Where the mount is (its root is opened for each fix).
    pub fn set_mountpoint(&self, path: PathBuf) {
        *self.mountpoint.lock() = Some(path);
    }

    /// Runs writable open `op` of node `id` (`None`: a create) once the
    /// gate admits it: at once, unless a point in time is being fixed and
    /// the node is not open for writing already.
    ///
    /// A node open for writing is on the list of the fix, or will be (the
    /// list is made once the opens in flight have passed), so its new
    /// writers are fenced too; and its open must not wait, for the kernel
    /// may hold its inode lock during the OPEN (an O_TRUNC open with the
    /// writeback cache), which its fence needs.
    pub fn writable_open(&self, id: Option<u64>, op: impl FnOnce() + Send + 'static) {
        if id.is_some_and(|id| self.live.is_open_for_writing(id)) {
            let _pass = self.gate.enter_anyway();
            return op();
        }
        self.gate.defer(op);
    }

    /// Whether an FSYNC from thread `tid` is a fence's, to [`Self::hold`].
    pub fn is_fence(&self, tid: u32) -> bool {
        let st = self.state.lock();
        st.holding && st.tids.contains_key(&(tid as i32))
    }

    /// Holds the FSYNC of fence thread `tid` until the fix is released
    /// (answers it at once if the fix is over).
    pub fn hold(&self, tid: u32, answer: Answer) {
        let mut st = self.state.lock();
        let slot = st.tids.get(&(tid as i32)).copied();
        match slot {
            Some(i) if st.holding && matches!(st.slots[i], Slot::Waiting) => {
                st.slots[i] = Slot::Held(answer);
                self.changed.notify_all();
            }
            _ => {
                drop(st);
                answer();
            }
        }
    }

    /// A descriptor of the mount's root, for one fix: the daemon must not
    /// keep one between fixes, or its own mount would stay busy at umount.
    fn mount_fd(&self) -> Result<Arc<OwnedFd>, FenceError> {
        let path = self
            .mountpoint
            .lock()
            .clone()
            .ok_or_else(|| FenceError::NoMount("mount point unknown".into()))?;
        let no = |e: std::io::Error| FenceError::NoMount(format!("{}: {e}", path.display()));
        // Not O_PATH: open_by_handle_at refuses those.
        let fd = fd::open(&path, Follow::Yes, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| no(e.into()))?;
        // It must be this daemon's mount, not what covers its mount point.
        let st = nix::sys::statfs::fstatfs(&fd).map_err(|e| no(e.into()))?;
        let md = nix::sys::stat::fstat(&fd).map_err(|e| no(e.into()))?;
        const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
        if st.filesystem_type().0 as i64 != FUSE_SUPER_MAGIC || md.st_ino != crate::live::ROOT_ID {
            return Err(no(std::io::Error::other("not the root of this FUSE mount")));
        }
        Ok(Arc::new(fd))
    }

    /// Fences every inode open for writing: returns once no write(2) is in
    /// progress on any of them and none can start, and no other inode can
    /// be opened for writing, until the result is released. Gives up after
    /// `timeout`, releasing what it held.
    pub fn fix(self: &Arc<Self>, timeout: Duration) -> Result<Fixed, FenceError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let _one = self.fixing.lock();
        let mut fixed = Fixed {
            fences: self.clone(),
            released: true,
            files: 0,
            took: Duration::ZERO,
        };
        {
            let mut st = self.state.lock();
            if st.fixes > 0 {
                st.fixes += 1;
                fixed.released = false;
                fixed.files = st.slots.len();
                return Ok(fixed);
            }
        }
        let gate = self
            .gate
            .hold(timeout)
            .map_err(|b| FenceError::OpensBusy(b.in_flight))?;
        {
            let mut st = self.state.lock();
            st.fixes = 1;
            st.gate = Some(gate);
        }
        fixed.released = false;
        // Opens in flight have finished: the list is complete, and stays so.
        let nodes = self.live.open_for_writing();
        fixed.files = nodes.len();
        if nodes.is_empty() {
            fixed.took = start.elapsed();
            return Ok(fixed);
        }
        let mount = self.mount_fd()?;
        let generation = {
            let mut st = self.state.lock();
            st.holding = true;
            st.generation += 1;
            st.tids.clear();
            st.slots = nodes.iter().map(|_| Slot::Waiting).collect();
            st.generation
        };
        for (i, &id) in nodes.iter().enumerate() {
            let (me, mount) = (self.clone(), mount.clone());
            let spawned = std::thread::Builder::new()
                .name("bkfs-fence".into())
                .stack_size(FENCE_STACK)
                .spawn(move || me.fence_one(generation, i, id, &mount));
            if let Err(e) = spawned {
                let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
                self.state.lock().slots[i] = Slot::Failed(id, errno);
            }
        }
        let mut st = self.state.lock();
        loop {
            let waiting = st
                .slots
                .iter()
                .filter(|s| matches!(s, Slot::Waiting))
                .count();
            if waiting == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(st);
                return Err(FenceError::Busy { files: waiting });
            }
            let _ = self.changed.wait_for(&mut st, left);
        }
        // An inode no process holds open any more is not in the kernel's
        // cache (ESTALE): nothing can write to it without a new open, which
        // waits at the gate. Any other failure gives up.
        let mut gone = 0;
        for s in &st.slots {
            if let Slot::Failed(node, errno) = s {
                if *errno != Errno::ESTALE {
                    let e = FenceError::Open {
                        node: *node,
                        errno: *errno,
                    };
                    drop(st);
                    return Err(e);
                }
                gone += 1;
            }
        }
        drop(st);
        fixed.files -= gone;
        fixed.took = start.elapsed();
        Ok(fixed)
    }

    /// A fence thread: opens node `id` through the mount and calls fsync,
    /// which returns once the fix is released.
    fn fence_one(&self, generation: u64, slot: usize, id: u64, mount: &OwnedFd) {
        let tid = proc::gettid();
        {
            let mut st = self.state.lock();
            if !st.holding || st.generation != generation {
                return;
            }
            st.tids.insert(tid, slot);
        }
        let fd = match FileHandle::fuse_node(id).open(mount.as_fd(), libc::O_RDONLY) {
            Ok(fd) => fd,
            Err(errno) => {
                let mut st = self.state.lock();
                if st.holding
                    && st.generation == generation
                    && matches!(st.slots.get(slot), Some(Slot::Waiting))
                {
                    st.slots[slot] = Slot::Failed(id, errno);
                    self.changed.notify_all();
                }
                return;
            }
        };
        // Its result does not matter: it returns when the fix is released.
        let _ = fsync(fd.as_fd(), Sync::All, "fence.fsync");
    }

    /// Ends one fix; the last one answers every held FSYNC and opens the gate.
    fn release_one(&self) {
        let (answers, gate) = {
            let mut st = self.state.lock();
            st.fixes = st.fixes.saturating_sub(1);
            if st.fixes > 0 {
                return;
            }
            st.holding = false;
            st.tids.clear();
            let answers: Vec<Answer> = std::mem::take(&mut st.slots)
                .into_iter()
                .filter_map(|s| match s {
                    Slot::Held(a) => Some(a),
                    _ => None,
                })
                .collect();
            (answers, st.gate.take())
        };
        for a in answers {
            a();
        }
        if let Some(g) = gate {
            g.release();
        }
    }

    /// Writable opens waiting at the gate.
    pub fn waiting_opens(&self) -> usize {
        self.gate.waiting()
    }
}
