//! The snapshot load of the fourth configuration: one thread asks for a snapshot every half
//! second through `.control/snapshot` while another rewrites a large file in the mount, so
//! that the copy of a snapshot into the store is pending most of the time (one copy runs at
//! a time: a request during a copy is refused with EBUSY, and tried again every 20 ms until
//! it is taken). Before each request it changes one of two marker files; once the load
//! stops, every snapshot taken must show the markers as they were at its point in time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The large file's size (`BKFS_LOAD_MIB` changes it).
pub const BIG_MIB: u64 = 128;
/// How fast it is rewritten, at most (`BKFS_LOAD_MIB_S` changes it): enough for every copy
/// to have changes to read, without flooding a shared disk.
pub const MIB_PER_S: u64 = 64;
/// How often a snapshot is asked for.
pub const PERIOD: Duration = Duration::from_millis(500);
/// How soon a request refused with EBUSY (a copy still running) is tried again
/// (`BKFS_LOAD_RETRY_MS` changes it): the next snapshot follows each copy closely, also in
/// the moment the copy is being sealed.
const RETRY: Duration = Duration::from_millis(20);
/// How often the state is sampled in between.
const SAMPLE: Duration = Duration::from_millis(50);
/// The rewriter writes this much per open (it closes the file between units, so the load
/// can be paused for a read-only remount, which a file open for writing would prevent).
const UNIT: u64 = 4 << 20;
const BLOCK: usize = 1 << 20;

/// Where the large file lives in the mount.
pub const BIG: &str = "conformance-load/big";
/// Two small files the snapshot thread changes in turn before each request: every snapshot
/// taken must show the contents they had at its point in time (checked once it is sealed).
const MARKERS: [&str; 2] = ["conformance-load/m0", "conformance-load/m1"];

/// What the load did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Snapshots taken (the write to `.control/snapshot` succeeded).
    pub taken: u64,
    /// Requests refused with EBUSY (a copy was running).
    pub busy: u64,
    /// Other errors of the requests, by message, with their count.
    pub request_errors: BTreeMap<String, u64>,
    /// Samples of `.control/snapshot` (every 50 ms), and how many showed a copy pending.
    pub samples: u64,
    pub pending: u64,
    /// The names of the snapshots taken.
    pub names: BTreeSet<String>,
    /// What the markers held when each snapshot was taken.
    pub expected: BTreeMap<String, [String; 2]>,
    /// Sealed snapshots whose markers differ from their point in time.
    pub wrong: Vec<String>,
    /// Snapshots taken and then seen in state `failed` or `interrupted`, with their `error:`.
    pub failed: BTreeMap<String, String>,
    /// Refused requests that `.control/snapshot` showed as the latest operation (`failed`,
    /// with the refusal as its error): a request refused because a copy ran, when that copy
    /// sealed before the refusal was recorded. Not a failure of a snapshot.
    pub refusals_shown: BTreeSet<String>,
    /// Whole rewrites of the large file, and bytes written.
    pub passes: u64,
    pub bytes: u64,
    /// Errors of the rewriter, by message, with their count.
    pub write_errors: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl Stats {
    /// What went wrong, if anything (EBUSY is expected and not in it).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (e, n) in &self.request_errors {
            p.push(format!("a snapshot request failed {n} times: {e}"));
        }
        for (e, n) in &self.write_errors {
            p.push(format!("rewriting the large file failed {n} times: {e}"));
        }
        for (name, e) in &self.failed {
            p.push(format!("snapshot {name} failed: {e}"));
        }
        if self.taken == 0 {
            p.push("no snapshot was taken".into());
        }
        if !self.wrong.is_empty() {
            p.push(format!(
                "{} of {} sealed snapshots do not show their point in time:\n    {}",
                self.wrong.len(),
                self.expected.len(),
                self.wrong
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
        p
    }
}

impl Stats {
    /// A note when the copy was pending less than half the time (the load is then lighter
    /// than this configuration means it to be: a faster machine or a release build).
    pub fn note(&self) -> Option<String> {
        (self.pending * 2 < self.samples).then(|| {
            "note: a copy was pending less than half the time; BKFS_LOAD_MIB (size) and \
             BKFS_LOAD_MIB_S (rate) make the load heavier"
                .to_string()
        })
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} snapshots taken and {} refused with EBUSY in {:.1} s; a copy pending in {} of {} \
             samples ({:.0}%); the large file rewritten {} times ({} MiB)",
            self.taken,
            self.busy,
            self.seconds,
            self.pending,
            self.samples,
            100.0 * self.pending as f64 / self.samples.max(1) as f64,
            self.passes,
            self.bytes >> 20
        )?;
        if !self.refusals_shown.is_empty() {
            write!(
                f,
                "; {} refused request(s) shown as the latest operation ({})",
                self.refusals_shown.len(),
                self.refusals_shown
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        Ok(())
    }
}

/// The running load. Dropping it (also when a test panics) stops both threads.
pub struct Load {
    mnt: PathBuf,
    stop: Arc<AtomicBool>,
    gate: Arc<RwLock<()>>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

/// Fills `buf` with the content of block `block` in version `version` of the large file:
/// incompressible, and the same for the same version, so the store dedups the rewrites.
fn fill(buf: &mut [u8], version: u64, block: u64) {
    let mut x = (version + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((block + 1) << 20);
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// Creates the large file in the source, before the mount (faster than through it).
pub fn prepare(src: &Path) {
    let path = src.join(BIG);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    for m in MARKERS {
        std::fs::write(src.join(m), "tick 00000000").unwrap();
    }
    let f = File::create(&path).unwrap();
    let mut buf = vec![0u8; BLOCK];
    for block in 0..big_bytes() / BLOCK as u64 {
        fill(&mut buf, 0, block);
        f.write_all_at(&buf, block * BLOCK as u64).unwrap();
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn big_bytes() -> u64 {
    env_u64("BKFS_LOAD_MIB", BIG_MIB) << 20
}

fn count(map: &mut BTreeMap<String, u64>, e: impl std::fmt::Display) {
    *map.entry(e.to_string()).or_default() += 1;
}

/// `key: value` of `.control/snapshot`.
fn state(mnt: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(mnt.join(".control/snapshot"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .or_else(|| l.strip_suffix(':').map(|k| (k, "")))
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn is_pending(state: &str) -> bool {
    matches!(state, "quiescing" | "committing" | "committed" | "copying")
}

/// Notes a snapshot seen failed (or a refused request shown as the latest operation).
fn note_failure(stats: &Mutex<Stats>, s: &BTreeMap<String, String>) {
    let st = s.get("state").map(String::as_str).unwrap_or("");
    if matches!(st, "failed" | "interrupted") {
        let name = s.get("name").cloned().unwrap_or_default();
        let err = format!("{st}: {}", s.get("error").cloned().unwrap_or_default());
        let mut stats = stats.lock();
        if stats.names.contains(&name) {
            stats.failed.entry(name).or_insert(err);
        } else {
            stats.refusals_shown.insert(name);
        }
    }
}

impl Load {
    /// Starts both threads on the mount `mnt`, whose source went through [`prepare`].
    pub fn start(mnt: &Path) -> Load {
        let mut load = Load {
            mnt: mnt.to_path_buf(),
            stop: Arc::new(AtomicBool::new(false)),
            gate: Arc::new(RwLock::new(())),
            stats: Arc::new(Mutex::new(Stats::default())),
            threads: Vec::new(),
            started: Instant::now(),
        };
        let (m, stop, gate, stats) = load.parts();
        load.threads.push(std::thread::spawn(move || {
            snapshotter(&m, &stop, &gate, &stats)
        }));
        let (m, stop, gate, stats) = load.parts();
        load.threads.push(std::thread::spawn(move || {
            rewriter(&m, &stop, &gate, &stats)
        }));
        load
    }

    #[allow(clippy::type_complexity)]
    fn parts(&self) -> (PathBuf, Arc<AtomicBool>, Arc<RwLock<()>>, Arc<Mutex<Stats>>) {
        (
            self.mnt.clone(),
            self.stop.clone(),
            self.gate.clone(),
            self.stats.clone(),
        )
    }

    /// Holds both threads between two of their steps (no file of theirs open) until the
    /// guard is dropped.
    pub fn pause(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write()
    }

    /// Stops both threads; waits for the last copy to end (so a failure of it is seen), and
    /// checks that every snapshot taken shows the markers as they were at its point in time.
    pub fn stop(mut self) -> Stats {
        self.halt();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let s = state(&self.mnt);
            note_failure(&self.stats, &s);
            let st = s.get("state").cloned().unwrap_or_default();
            if !is_pending(&st) || Instant::now() > deadline {
                if is_pending(&st) {
                    count(
                        &mut self.stats.lock().request_errors,
                        "the last copy did not end within 300 s of the load stopping",
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut stats = self.stats.lock().clone();
        for (name, want) in &stats.expected {
            for (m, want) in MARKERS.iter().zip(want) {
                let p = self.mnt.join(".snapshots").join(name).join(m);
                match std::fs::read_to_string(&p) {
                    Ok(got) if &got == want => {}
                    Ok(got) => stats
                        .wrong
                        .push(format!("{name}: {m} is {got:?}, was {want:?}")),
                    Err(e) => stats.wrong.push(format!("{name}: {m}: {e}")),
                }
            }
        }
        stats
    }

    /// Stops the threads; gives up on them after 60 s (a hung mount: the mount's own guard
    /// then detaches it and kills the daemon, which ends their calls).
    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in std::mem::take(&mut self.threads) {
            if t.is_finished() {
                let _ = t.join();
            } else {
                eprintln!("conformance: a load thread did not stop within 60 s; leaving it");
            }
        }
        self.stats.lock().seconds = self.started.elapsed().as_secs_f64();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.halt();
        }
    }
}

fn snapshotter(mnt: &Path, stop: &AtomicBool, gate: &RwLock<()>, stats: &Mutex<Stats>) {
    let control = mnt.join(".control/snapshot");
    let mut next = Instant::now();
    let retry = Duration::from_millis(env_u64("BKFS_LOAD_RETRY_MS", RETRY.as_millis() as u64));
    let mut tick = 0u64;
    let mut marks = [0, 1].map(|_| "tick 00000000".to_string());
    while !stop.load(Ordering::SeqCst) {
        let mut refused = false;
        {
            let _step = gate.read();
            tick += 1;
            let i = (tick % 2) as usize;
            let mark = format!("tick {tick:08}");
            match std::fs::write(mnt.join(MARKERS[i]), &mark) {
                Ok(()) => marks[i] = mark,
                Err(e) => count(
                    &mut stats.lock().write_errors,
                    format!("{}: {e}", MARKERS[i]),
                ),
            }
            let name = format!("conf-{:05}", stats.lock().taken + 1);
            let r = OpenOptions::new()
                .write(true)
                .open(&control)
                .and_then(|mut f| f.write_all(format!("{name}\n").as_bytes()));
            {
                let mut s = stats.lock();
                match r {
                    Ok(()) => {
                        s.taken += 1;
                        s.expected.insert(name.clone(), marks.clone());
                        s.names.insert(name);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        s.busy += 1;
                        refused = true;
                    }
                    Err(e) => count(&mut s.request_errors, e),
                }
            }
        }
        next = if refused {
            Instant::now() + retry
        } else {
            (next + PERIOD).max(Instant::now())
        };
        // Until the next request, sample the state every 50 ms: how much of the time a copy
        // is pending.
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            let st = state(mnt);
            note_failure(stats, &st);
            {
                let mut s = stats.lock();
                s.samples += 1;
                if is_pending(st.get("state").map(String::as_str).unwrap_or("")) {
                    s.pending += 1;
                }
            }
            let now = Instant::now();
            if next > now {
                std::thread::sleep((next - now).min(SAMPLE));
            }
        }
    }
}

fn rewriter(mnt: &Path, stop: &AtomicBool, gate: &RwLock<()>, stats: &Mutex<Stats>) {
    let path = mnt.join(BIG);
    let size = big_bytes();
    let mut buf = vec![0u8; BLOCK];
    let mut version = 0u64;
    let rate = env_u64("BKFS_LOAD_MIB_S", MIB_PER_S).max(1) << 20;
    let started = Instant::now();
    let mut total = 0u64;
    'passes: while !stop.load(Ordering::SeqCst) {
        // Four versions in turn: every pass changes every byte, and the store keeps four.
        version = (version + 1) % 4;
        let mut offset = 0;
        while offset < size {
            if stop.load(Ordering::SeqCst) {
                break 'passes;
            }
            let _step = gate.read();
            let r = (|| -> std::io::Result<u64> {
                let f = OpenOptions::new().write(true).open(&path)?;
                let mut written = 0;
                while written < UNIT && offset + written < size {
                    let at = offset + written;
                    fill(&mut buf, version, at / BLOCK as u64);
                    f.write_all_at(&buf, at)?;
                    written += BLOCK as u64;
                }
                Ok(written)
            })();
            match r {
                Ok(n) => {
                    stats.lock().bytes += n;
                    offset += n;
                    total += n;
                }
                Err(e) => {
                    count(&mut stats.lock().write_errors, e);
                    // A broken mount: do not spin.
                    std::thread::sleep(Duration::from_millis(200));
                    offset += UNIT;
                }
            }
            drop(_step);
            // Keep to the rate, in short sleeps so that a stop is not kept waiting.
            let due = started + Duration::from_secs_f64(total as f64 / rate as f64);
            while Instant::now() < due && !stop.load(Ordering::SeqCst) {
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        stats.lock().passes += 1;
    }
}
