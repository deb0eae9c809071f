//! The point-in-time checker: writers that log what they did and when,
//! many snapshots taken while they run, and every snapshot (pending and
//! sealed) checked against the logs. A snapshot must be a state that the
//! writers' operations define: for each writer, the state after some prefix
//! of its operations that holds every operation completed before the
//! request and none started after it returned. A write(2) is wholly in or
//! wholly out, however the kernel splits it into FUSE requests: writes that
//! cross a page boundary into a page not in the page cache, and writes
//! larger than a FUSE request, are the ones a barrier that only drains
//! requests cuts in two.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::tree::*;

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
/// Names a writer's file may have (in the writer's own directory).
const NAMES: &[&str] = &["a", "b", "c", "d"];

/// One operation of a writer on its file.
#[derive(Clone, Debug)]
enum Op {
    /// pwrite(2) of `len` bytes at `off`; `cold` drops the file's pages
    /// from the page cache first (`posix_fadvise(DONTNEED)`).
    Write { off: u64, len: u64, cold: bool },
    /// One write(2) through a descriptor opened with O_APPEND.
    Append { len: u64 },
    /// ftruncate(2).
    Truncate { size: u64 },
    /// open(2) with O_TRUNC of the file's first name.
    OpenTrunc,
    /// rename(2) of one name to a name not in use.
    Rename { from: String, to: String },
    /// link(2) of the first name to a name not in use.
    Link { to: String },
    /// unlink(2) of a name, while another is left.
    Unlink { name: String },
    /// Closes the writer's descriptor and opens the file again (no change).
    Reopen,
}

/// An operation that returned, with when it was issued and when it returned.
#[derive(Clone, Debug)]
struct Done {
    op: Op,
    start: Instant,
    end: Instant,
}

/// What a writer's directory holds: the names of its one file, and the data.
#[derive(Clone, Debug, PartialEq)]
struct State {
    names: BTreeSet<String>,
    data: Vec<u8>,
}

/// What write `seq` of writer `w` puts at file offsets `off..off + len`:
/// each aligned 8-byte word says which write last wrote it.
fn tagged(w: u64, seq: u64, off: u64, len: u64) -> Vec<u8> {
    let word = ((seq << 8) | (w & 0xff)).to_le_bytes();
    let start = (off % 8) as usize;
    let mut v = word.repeat((start + len as usize).div_ceil(8));
    v.drain(..start);
    v.truncate(len as usize);
    v
}

/// The write that a tagged word at `at` of `data` says wrote it.
fn tag_at(data: &[u8], at: usize) -> Option<(u64, u64)> {
    let start = at & !7;
    let word = data.get(start..start + 8)?;
    let v = u64::from_le_bytes(word.try_into().unwrap());
    (v != 0).then_some((v & 0xff, v >> 8))
}

impl State {
    fn new() -> State {
        State {
            names: [NAMES[0].to_string()].into(),
            data: Vec::new(),
        }
    }

    fn first(&self) -> &str {
        self.names.iter().next().unwrap()
    }

    /// The state after operation number `seq` (counting from 1) of writer `w`.
    fn apply(&mut self, w: u64, seq: u64, op: &Op) {
        match op {
            Op::Write { off, len, .. } => {
                let end = (off + len) as usize;
                if self.data.len() < end {
                    self.data.resize(end, 0);
                }
                self.data[*off as usize..end].copy_from_slice(&tagged(w, seq, *off, *len));
            }
            Op::Append { len } => {
                let off = self.data.len() as u64;
                self.data.extend_from_slice(&tagged(w, seq, off, *len));
            }
            Op::Truncate { size } => self.data.resize(*size as usize, 0),
            Op::OpenTrunc => self.data.clear(),
            Op::Rename { from, to } => {
                self.names.remove(from);
                self.names.insert(to.clone());
            }
            Op::Link { to } => {
                self.names.insert(to.clone());
            }
            Op::Unlink { name } => {
                self.names.remove(name);
            }
            Op::Reopen => {}
        }
    }
}

/// Which kinds of operation a writer does, by weight.
#[derive(Clone, Copy)]
struct Mix {
    cold_crossing: u64,
    large: u64,
    small: u64,
    append: u64,
    truncate: u64,
    names: u64,
    reopen: u64,
    open_trunc: u64,
}

impl Mix {
    const ALL: Mix = Mix {
        cold_crossing: 30,
        large: 12,
        small: 15,
        append: 10,
        truncate: 5,
        names: 18,
        reopen: 5,
        open_trunc: 1,
    };
    /// Only what splits a write(2) into several requests.
    const SPLIT: Mix = Mix {
        cold_crossing: 50,
        large: 50,
        small: 0,
        append: 0,
        truncate: 0,
        names: 0,
        reopen: 0,
        open_trunc: 0,
    };

    fn pick(&self, rng: &mut Rng, st: &State) -> Op {
        let total = self.cold_crossing
            + self.large
            + self.small
            + self.append
            + self.truncate
            + self.names
            + self.reopen
            + self.open_trunc;
        let mut r = rng.below(total);
        let mut take = |weight: u64| {
            if r < weight {
                true
            } else {
                r -= weight;
                false
            }
        };
        let size = st.data.len() as u64;
        if take(self.cold_crossing) {
            // Ends of the first page just before a page boundary, so the
            // write starts in one page and goes on into the next.
            let page = rng.below(8 * MIB / PAGE);
            let off = page * PAGE + PAGE - 1 - rng.below(2000);
            return Op::Write {
                off,
                len: 2 + rng.below(3 * PAGE),
                cold: true,
            };
        }
        if take(self.large) {
            // Larger than a FUSE request (1 MiB here): several WRITEs.
            return Op::Write {
                off: rng.below(4 * MIB),
                len: MIB + 1 + rng.below(8 * MIB),
                cold: rng.below(2) == 0,
            };
        }
        if take(self.small) {
            return Op::Write {
                off: rng.below(size.max(1) + 4096),
                len: 1 + rng.below(3000),
                cold: false,
            };
        }
        if take(self.append) {
            return Op::Append {
                len: 1 + rng.below(3 * PAGE),
            };
        }
        if take(self.truncate) {
            return Op::Truncate {
                size: rng.below(size + MIB),
            };
        }
        if take(self.names) {
            let unused: Vec<&str> = NAMES
                .iter()
                .copied()
                .filter(|n| !st.names.contains(*n))
                .collect();
            let names: Vec<&String> = st.names.iter().collect();
            let one = names[rng.below(names.len() as u64) as usize].clone();
            return match rng.below(3) {
                0 if names.len() > 1 => Op::Unlink { name: one },
                1 if !unused.is_empty() => Op::Link {
                    to: unused[rng.below(unused.len() as u64) as usize].to_string(),
                },
                _ if !unused.is_empty() => Op::Rename {
                    from: one,
                    to: unused[rng.below(unused.len() as u64) as usize].to_string(),
                },
                _ => Op::Unlink { name: one },
            };
        }
        if take(self.reopen) {
            return Op::Reopen;
        }
        Op::OpenTrunc
    }
}

fn open(path: &Path, flags: i32) -> OwnedFd {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; the descriptor returned is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    assert!(
        fd >= 0,
        "open {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just opened and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One write(2)/pwrite(2) of the whole buffer: the checker is about single
/// calls, so a short write is a failure, not something to loop over.
fn write_once(fd: &OwnedFd, buf: &[u8], off: Option<u64>) {
    // SAFETY: buf is valid for buf.len() bytes; fd is open.
    let n = unsafe {
        match off {
            Some(off) => libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as i64),
            None => libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()),
        }
    };
    assert_eq!(
        n,
        buf.len() as isize,
        "write of {} bytes: {}",
        buf.len(),
        std::io::Error::last_os_error()
    );
}

/// A writer: a thread that does random operations on the one file of its
/// directory `dir` and logs each.
struct Writer {
    id: u64,
    dir: PathBuf,
    log: Arc<Mutex<Vec<Done>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The state after the first `.0` operations: where the next check
    /// starts replaying (every later snapshot holds at least those).
    replayed: (usize, State),
}

impl Writer {
    fn start(id: u64, dir: PathBuf, mix: Mix, seed: u64, stop: Arc<AtomicBool>) -> Writer {
        fs::create_dir(&dir).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (dir, log) = (dir.clone(), log.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                let mut st = State::new();
                let mut fd = open(&dir.join(st.first()), libc::O_WRONLY | libc::O_CREAT);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let op = mix.pick(&mut rng, &st);
                    seq += 1;
                    // The file's cache is dropped before the clock starts:
                    // the write itself is what is timed.
                    if let Op::Write { cold: true, .. } = op {
                        // SAFETY: fd is open; advice has no memory effects.
                        unsafe {
                            libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
                        };
                    }
                    let buf = match &op {
                        Op::Write { off, len, .. } => tagged(id, seq, *off, *len),
                        Op::Append { len } => tagged(id, seq, st.data.len() as u64, *len),
                        _ => Vec::new(),
                    };
                    let start = Instant::now();
                    match &op {
                        Op::Write { off, .. } => write_once(&fd, &buf, Some(*off)),
                        Op::Append { .. } => {
                            let a = open(&dir.join(st.first()), libc::O_WRONLY | libc::O_APPEND);
                            write_once(&a, &buf, None);
                        }
                        Op::Truncate { size } => {
                            // SAFETY: fd is open.
                            let r = unsafe { libc::ftruncate(fd.as_raw_fd(), *size as i64) };
                            assert_eq!(r, 0, "ftruncate: {}", std::io::Error::last_os_error());
                        }
                        Op::OpenTrunc => {
                            drop(open(&dir.join(st.first()), libc::O_WRONLY | libc::O_TRUNC));
                        }
                        Op::Rename { from, to } => {
                            fs::rename(dir.join(from), dir.join(to)).unwrap()
                        }
                        Op::Link { to } => {
                            fs::hard_link(dir.join(st.first()), dir.join(to)).unwrap()
                        }
                        Op::Unlink { name } => fs::remove_file(dir.join(name)).unwrap(),
                        Op::Reopen => {
                            fd = open(&dir.join(st.first()), libc::O_WRONLY);
                        }
                    }
                    let end = Instant::now();
                    st.apply(id, seq, &op);
                    log.lock().push(Done { op, start, end });
                }
            })
        };
        Writer {
            id,
            dir,
            log,
            thread: Some(thread),
            replayed: (0, State::new()),
        }
    }

    /// The log once it holds every operation issued before `t`: the first
    /// operation issued after `t` has returned (or the writer stopped).
    fn log_past(&self, t: Instant) -> Vec<Done> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let log = self.log.lock();
                let done = self.thread.as_ref().is_none_or(|t| t.is_finished());
                if done || log.last().is_some_and(|d| d.start > t) {
                    return log.clone();
                }
            }
            assert!(Instant::now() < deadline, "writer {} stalled", self.id);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
    }
}

/// What one writer's directory holds in a snapshot.
fn read_state(dir: &Path) -> Result<State, String> {
    let mut names = BTreeSet::new();
    let mut inos = BTreeSet::new();
    let rd = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd {
        let e = e.map_err(|e| e.to_string())?;
        let md = fs::symlink_metadata(e.path()).map_err(|e| e.to_string())?;
        inos.insert(md.ino());
        names.insert(e.file_name().to_string_lossy().into_owned());
    }
    if inos.len() > 1 {
        return Err(format!(
            "names {names:?} of one file have inode numbers {inos:?}"
        ));
    }
    let first = names.iter().next().ok_or("no file")?;
    let data = fs::read(dir.join(first)).map_err(|e| format!("{first}: {e}"))?;
    Ok(State { names, data })
}

/// Why `got` is not `want`, in the words of the writes that made them.
fn explain(w: u64, want: &State, got: &State, log: &[Done]) -> String {
    if want.names != got.names {
        return format!("names {:?}, expected {:?}", got.names, want.names);
    }
    let n = want.data.len().min(got.data.len());
    let at = (0..n).find(|&i| want.data[i] != got.data[i]).unwrap_or(n);
    let describe = |data: &[u8]| match tag_at(data, at) {
        Some((tw, seq)) if tw == w => format!(
            "write #{seq} {:?}",
            (seq as usize)
                .checked_sub(1)
                .and_then(|i| log.get(i))
                .map(|d| &d.op)
        ),
        Some(other) => format!("a word of {other:?}"),
        None => "zeros".into(),
    };
    format!(
        "sizes {} (expected {}); first difference at offset {at}: holds {}, expected {}",
        got.data.len(),
        want.data.len(),
        describe(&got.data),
        describe(&want.data)
    )
}

/// Checks writer `w`'s directory in the snapshot at `snap`, taken by a
/// request issued at `t0` that returned at `t1`.
fn check_writer(w: &mut Writer, snap: &Path, t0: Instant, t1: Instant) -> Result<usize, String> {
    let log = w.log_past(t1);
    // Every operation that returned before the request is in; none issued
    // after it returned is. The ones between may be, as a prefix.
    let lo = log.iter().take_while(|d| d.end < t0).count();
    let hi = log.iter().take_while(|d| d.start < t1).count();
    let got = read_state(&snap.join(w.dir.file_name().unwrap()))?;
    let (done, st) = &mut w.replayed;
    for (i, d) in log.iter().enumerate().take(lo).skip(*done) {
        st.apply(w.id, i as u64 + 1, &d.op);
    }
    *done = (*done).max(lo);
    let mut st = st.clone();
    let mut closest = None;
    for k in lo..=hi {
        if k > lo {
            st.apply(w.id, k as u64, &log[k - 1].op);
        }
        if st == got {
            return Ok(k);
        }
        if closest.is_none() {
            closest = Some(explain(w.id, &st, &got, &log));
        }
    }
    Err(format!(
        "writer {}: the snapshot is no state after operations {lo}..={hi} (of {}); \
         against the state after {lo}: {}; operations in the window: {:?}",
        w.id,
        log.len(),
        closest.unwrap_or_default(),
        log[lo..hi].iter().map(|d| &d.op).collect::<Vec<_>>()
    ))
}

/// Runs `writers` writers with operations of `mix` on a mount with
/// `options` and checks `snapshots` snapshots taken while they run, each
/// while it is pending and once sealed.
fn run(options: &str, mix: Mix, writers: u64, snapshots: usize, seed: u64) {
    let m = Mount::new(options);
    let stop = Arc::new(AtomicBool::new(false));
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop.clone());
    let mut ws: Vec<Writer> = (0..writers)
        .map(|i| {
            Writer::start(
                i + 1,
                m.path(&format!("w{}", i + 1)),
                mix,
                seed * 1000 + i,
                stop.clone(),
            )
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let mut in_window = 0;
    for s in 0..snapshots {
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        let name = format!("p{s}");
        let t0 = Instant::now();
        take(&m.mnt, &name);
        let t1 = Instant::now();
        let snap = m.path(&format!(".snapshots/{name}"));
        for phase in ["pending", "sealed"] {
            if phase == "sealed" {
                let st = wait_settled(&m.mnt);
                assert_eq!(st["state"], "sealed", "{name}: {st:?}");
            }
            for w in &mut ws {
                match check_writer(w, &snap, t0, t1) {
                    Ok(k) => in_window += usize::from(k > 0),
                    Err(e) => failures.push(format!("{name} ({phase}): {e}")),
                }
            }
        }
        assert!(
            failures.is_empty(),
            "options {options:?}, seed {seed}: {} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in &mut ws {
        w.join();
    }
    let ops: usize = ws.iter().map(|w| w.log.lock().len()).sum();
    eprintln!("options {options:?}: {ops} operations, {snapshots} snapshots checked twice");
    assert!(in_window > 0, "no snapshot held any operation");
    check_store(&m.backing(".bkfs"));
}

#[test]
fn no_write_is_split_by_a_snapshot() {
    if !can_mount() {
        return;
    }
    run("", Mix::SPLIT, 3, 12, 1);
}

#[test]
fn snapshots_are_points_in_time_of_concurrent_writers() {
    if !can_mount() {
        return;
    }
    run("", Mix::ALL, 4, 12, 2);
}

#[test]
fn snapshots_are_points_in_time_write_through() {
    if !can_mount() {
        return;
    }
    run("nowriteback", Mix::ALL, 4, 10, 3);
}
