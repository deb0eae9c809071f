//! Shared helpers for the store integration tests: running the real `bkfs` binary against a
//! store, building source trees, a metadata listing with nanosecond times and xattrs that two
//! trees can be compared by, and guards for mounts.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Default time limit for one `bkfs` command.
pub const TIMEOUT: Duration = Duration::from_secs(180);

pub fn bkfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bkfs")
}

// ---------------------------------------------------------------------------------------------
// Environment checks: root and tools. With CI=true a missing requirement fails the test; on a
// developer's machine the test is skipped with a printed reason.

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Returns true if the test can run; otherwise skips (prints why) or, under CI, panics.
pub fn require(root: bool, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if root && !is_root() {
        missing.push("root".to_string());
    }
    for t in tools {
        if !have_tool(t) {
            missing.push(format!("the tool `{t}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("this test needs {}", missing.join(", "));
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{msg} (CI=true, so this is a failure; see .ci/packages.txt)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

// ---------------------------------------------------------------------------------------------
// Running commands.

/// The result of one command: exit code (None if killed by a signal), output, and how long it took.
pub struct Out {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.code.unwrap_or(-1)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// stdout and stderr together, lossily decoded.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout_str(), self.stderr_str())
    }
    pub fn describe(&self) -> String {
        let cut = |s: String| {
            if s.len() > 3000 {
                let mut i = 3000;
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                format!("{}... [{} bytes in all]", &s[..i], s.len())
            } else {
                s
            }
        };
        format!(
            "`{}` -> exit {}{} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code.map_or("<signal>".to_string(), |c| c.to_string()),
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed,
            cut(self.stdout_str()),
            cut(self.stderr_str())
        )
    }
    /// Panics with the whole picture unless the exit code is `code`.
    #[track_caller]
    pub fn expect(&self, code: i32, what: &str) -> &Self {
        if self.code != Some(code) {
            panic!("{what}: expected exit {code}\n{}", self.describe());
        }
        self
    }
    #[track_caller]
    pub fn ok(&self, what: &str) -> &Self {
        self.expect(0, what)
    }
}

pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if s == bkfs_bin() {
        s = "bkfs".into();
    }
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            let _ = write!(s, " '{a}'");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Runs a command to completion with a time limit, capturing its output.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> Out {
    let line = cmdline(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out {
        cmdline: line,
        code: status.code(),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// Runs a shell tool (not bkfs) and panics if it fails.
#[track_caller]
pub fn sh(prog: &str, args: &[&OsStr]) -> Out {
    let mut c = Command::new(prog);
    c.args(args);
    let o = run_cmd(c, TIMEOUT);
    if o.code != Some(0) {
        panic!("helper command failed\n{}", o.describe());
    }
    o
}

/// `bkfs ARGS` without a store.
pub fn bkfs<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(bkfs_bin());
    c.args(args).env_remove("BKFS_STORE");
    run_cmd(c, TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// A store.

pub struct Store {
    _dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
}

impl Store {
    /// A store path inside a fresh temporary directory; the store itself does not exist yet
    /// (the first backup creates it).
    pub fn new() -> Store {
        let dir = tempdir();
        let path = dir.path().join("store");
        Store {
            _dir: Some(dir),
            path,
        }
    }
    pub fn at(path: impl Into<PathBuf>) -> Store {
        Store {
            _dir: None,
            path: path.into(),
        }
    }
    /// `bkfs ARGS --store S` as a Command, to spawn or to adjust.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(bkfs_bin());
        c.args(args)
            .arg("--store")
            .arg(&self.path)
            .env_remove("BKFS_STORE");
        c
    }
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd(self.cmd(args), TIMEOUT)
    }
    pub fn backup(&self, src: &Path, name: &str) -> Out {
        self.run([
            OsStr::new("backup"),
            src.as_os_str(),
            OsStr::new("--name"),
            OsStr::new(name),
        ])
    }
    pub fn restore(&self, snap: &str, dest: &Path) -> Out {
        self.run([OsStr::new("restore"), OsStr::new(snap), dest.as_os_str()])
    }
    pub fn check(&self) -> Out {
        self.run(["check"])
    }
    pub fn check_data(&self) -> Out {
        self.run(["check", "--read-data"])
    }
    pub fn list(&self) -> Out {
        self.run(["list"])
    }
    /// Snapshot names that `bkfs list --json` reports (falls back to words of `bkfs list`).
    pub fn snapshot_names(&self) -> Vec<String> {
        let o = self.run(["list", "--json"]);
        o.ok("bkfs list --json");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("bkfs list --json is not JSON ({e})\n{}", o.describe()));
        let arr = match &v {
            serde_json::Value::Array(a) => a.clone(),
            serde_json::Value::Object(m) => m
                .get("snapshots")
                .and_then(|s| s.as_array().cloned())
                .unwrap_or_default(),
            _ => vec![],
        };
        arr.iter()
            .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(String::from))
            .collect()
    }
    /// Total bytes of the store's files (as `du -sb` counts them: apparent sizes).
    pub fn du(&self) -> u64 {
        walk_files(&self.path)
            .iter()
            .map(|p| fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
    /// The pack files: every regular file under STORE/packs.
    pub fn packs(&self) -> Vec<PathBuf> {
        walk_files(&self.path.join("packs"))
    }
    /// Every regular file of the store, relative.
    pub fn files(&self) -> BTreeSet<PathBuf> {
        walk_files(&self.path)
            .into_iter()
            .map(|p| p.strip_prefix(&self.path).unwrap().to_path_buf())
            .collect()
    }
}

/// Regular files under a directory, recursively (no symlink following).
pub fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A temporary directory on the root filesystem (so xattrs, ACLs and devices work).
pub fn tempdir() -> tempfile::TempDir {
    let base = std::env::var_os("BKFS_TEST_TMP").unwrap_or_else(|| OsString::from("/var/tmp"));
    let _ = fs::create_dir_all(&base);
    tempfile::Builder::new()
        .prefix("bkfs-storetest-")
        .tempdir_in(&base)
        .expect("tempdir")
}

// ---------------------------------------------------------------------------------------------
// Collecting several failures before panicking, so one run tells the whole story.

#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.0.push(msg());
        }
        ok
    }
    pub fn fail(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
    /// Records a failure unless the command exited with `code`; returns whether it did.
    pub fn code(&mut self, out: &Out, code: i32, what: &str) -> bool {
        self.check(out.code == Some(code), || {
            format!("{what}: expected exit {code}\n{}", out.describe())
        })
    }
    pub fn same(&mut self, what: &str, a: &Listing, b: &Listing) -> bool {
        match a.diff(b) {
            None => true,
            Some(d) => {
                self.0.push(format!("{what}:\n{d}"));
                false
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    #[track_caller]
    pub fn finish(self) {
        if !self.0.is_empty() {
            let mut s = format!("{} failure(s):\n", self.0.len());
            for (i, f) in self.0.iter().enumerate() {
                let _ = writeln!(s, "\n[{}] {}", i + 1, f);
            }
            panic!("{s}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness (SplitMix64), so every failure can be replayed by its seed.

#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.range(0, v.len() as u64) as usize]
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Writes `size` random bytes (from `rng`) to a new file.
pub fn write_random(path: &Path, size: u64, rng: &mut Rng) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Writes compressible text-like data: random words from a small vocabulary.
pub fn write_text(path: &Path, size: u64, rng: &mut Rng) {
    const WORDS: &[&str] = &[
        "the ",
        "store ",
        "chunk ",
        "snapshot ",
        "fn ",
        "let ",
        "mut ",
        "{\n",
        "}\n",
        "0x1f, ",
        "return ",
        "barrier ",
        "epoch ",
        "    ",
        "// ",
        "pack ",
    ];
    let mut v = Vec::with_capacity(size as usize + 16);
    while (v.len() as u64) < size {
        v.extend_from_slice(rng.pick(WORDS).as_bytes());
    }
    v.truncate(size as usize);
    fs::write(path, v).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Low-level metadata operations (libc, no following of symlinks).

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

// ---------------------------------------------------------------------------------------------
// The metadata listing.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size for regular files and symlinks (directory sizes are filesystem-specific).
    pub size: Option<u64>,
    /// Device number of character and block devices.
    pub rdev: Option<(u32, u32)>,
    pub mtime: (i64, i64),
    /// None when the listing is taken without atimes.
    pub atime: Option<(i64, i64)>,
    pub nlink: u64,
    /// For a file with several names in the tree: all of them (the hard-link group).
    pub links: Option<Vec<Vec<u8>>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub hash: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Path relative to the root ("" is the root itself) → entry.
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

#[derive(Clone, Copy)]
pub struct ListOpts {
    pub atime: bool,
    /// Include the root directory's own metadata.
    pub root: bool,
    /// Hash file contents.
    pub contents: bool,
}

impl Default for ListOpts {
    fn default() -> Self {
        ListOpts {
            atime: true,
            root: true,
            contents: true,
        }
    }
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    match m.mode() & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

/// Walks a tree with lstat and records everything a metadata-exact restore must reproduce.
/// Sockets are left out (bkfs skips them). Nothing it does changes an atime.
pub fn listing(root: &Path) -> Listing {
    listing_with(root, ListOpts::default())
}

pub fn listing_with(root: &Path, opts: ListOpts) -> Listing {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"));
        // readlink(2) updates a symlink's atime (relatime: when atime <= mtime or ctime, or is a
        // day old) and O_NOATIME cannot prevent it; the times are taken before. Tests that care
        // give symlinks an atime in the near future, which relatime then leaves alone.
        let target = m
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(&p).unwrap().into_os_string().into_vec());
        let kind = kind_of(&m);
        if kind == "socket" {
            continue;
        }
        if kind == "dir" {
            for name in read_dir_noatime(&p) {
                let mut c = rel.clone();
                if !c.is_empty() {
                    c.push(b'/');
                }
                c.extend_from_slice(name.as_bytes());
                stack.push(c);
            }
        } else if m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        if rel.is_empty() && !opts.root {
            continue;
        }
        let e = Entry {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: (kind == "file" || kind == "symlink").then(|| m.size()),
            rdev: (kind == "chardev" || kind == "blockdev")
                .then(|| (libc::major(m.rdev()), libc::minor(m.rdev()))),
            mtime: (m.mtime(), m.mtime_nsec()),
            atime: opts.atime.then(|| (m.atime(), m.atime_nsec())),
            nlink: m.nlink(),
            links: None,
            xattrs: xattrs(&p),
            target,
            hash: (kind == "file" && opts.contents).then(|| hash_file(&p)),
        };
        entries.insert(rel, e);
    }
    for (_, mut names) in inodes {
        if names.len() > 1 {
            names.sort();
            for n in &names {
                if let Some(e) = entries.get_mut(n) {
                    e.links = Some(names.clone());
                }
            }
        }
    }
    Listing { entries }
}

impl Listing {
    /// A readable account of every difference (`self` is the expected side), or None.
    pub fn diff(&self, got: &Listing) -> Option<String> {
        let mut lines = Vec::new();
        for (p, e) in &self.entries {
            match got.entries.get(p) {
                None => lines.push(format!("missing:    {} ({})", show(p), e.kind)),
                Some(g) if g != e => {
                    let mut d = Vec::new();
                    macro_rules! f {
                        ($field:ident, $fmt:expr) => {
                            if e.$field != g.$field {
                                d.push(format!(
                                    "{} expected {} got {}",
                                    stringify!($field),
                                    $fmt(&e.$field),
                                    $fmt(&g.$field)
                                ));
                            }
                        };
                    }
                    f!(kind, |v: &&str| v.to_string());
                    f!(mode, |v: &u32| format!("{v:04o}"));
                    f!(uid, |v: &u32| v.to_string());
                    f!(gid, |v: &u32| v.to_string());
                    f!(size, |v: &Option<u64>| format!("{v:?}"));
                    f!(rdev, |v: &Option<(u32, u32)>| format!("{v:?}"));
                    f!(mtime, |v: &(i64, i64)| format!("{}.{:09}", v.0, v.1));
                    f!(atime, |v: &Option<(i64, i64)>| v
                        .map_or("-".into(), |v| format!("{}.{:09}", v.0, v.1)));
                    f!(nlink, |v: &u64| v.to_string());
                    f!(links, |v: &Option<Vec<Vec<u8>>>| v.as_ref().map_or(
                        "-".into(),
                        |v| format!(
                            "[{}]",
                            v.iter().map(|x| show(x)).collect::<Vec<_>>().join(", ")
                        )
                    ));
                    f!(xattrs, |v: &BTreeMap<Vec<u8>, Vec<u8>>| format!(
                        "{{{}}}",
                        v.iter()
                            .map(|(k, x)| format!("{}=0x{}", show(k), hex(x)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    f!(target, |v: &Option<Vec<u8>>| v
                        .as_ref()
                        .map_or("-".into(), |v| show(v)));
                    f!(hash, |v: &Option<String>| v.clone().unwrap_or("-".into()));
                    lines.push(format!(
                        "different:  {} ({}): {}",
                        show(p),
                        e.kind,
                        d.join("; ")
                    ));
                }
                Some(_) => {}
            }
        }
        for (p, g) in &got.entries {
            if !self.entries.contains_key(p) {
                lines.push(format!("unexpected: {} ({})", show(p), g.kind));
            }
        }
        if lines.is_empty() {
            return None;
        }
        let n = lines.len();
        lines.truncate(60);
        let mut s = lines.join("\n");
        if n > 60 {
            let _ = write!(s, "\n... {} more differences", n - 60);
        }
        Some(s)
    }

    /// Leaves out the given paths (and everything under them).
    pub fn without(&self, paths: &[&[u8]]) -> Listing {
        let mut l = self.clone();
        l.entries.retain(|p, _| {
            !paths
                .iter()
                .any(|x| p.as_slice() == *x || (p.starts_with(x) && p.get(x.len()) == Some(&b'/')))
        });
        l
    }

    /// The sub-tree under `sub` (a relative path), re-rooted there.
    pub fn subtree(&self, sub: &[u8]) -> Listing {
        let mut entries = BTreeMap::new();
        for (p, e) in &self.entries {
            let rel: Option<Vec<u8>> = if p.as_slice() == sub {
                Some(Vec::new())
            } else if p.starts_with(sub) && p.get(sub.len()) == Some(&b'/') {
                Some(p[sub.len() + 1..].to_vec())
            } else {
                None
            };
            if let Some(r) = rel {
                entries.insert(r, e.clone());
            }
        }
        // Hard-link groups are relative to the new root too; names outside it are gone, and
        // so is their share of the link count.
        let mut out = Listing { entries };
        for e in out.entries.values_mut() {
            if let Some(l) = &e.links {
                let v: Vec<Vec<u8>> = l
                    .iter()
                    .filter(|p| p.starts_with(sub) && p.get(sub.len()) == Some(&b'/'))
                    .map(|p| p[sub.len() + 1..].to_vec())
                    .collect();
                e.nlink = v.len().max(1) as u64;
                e.links = (v.len() > 1).then_some(v);
            }
        }
        out
    }

    /// Drops atimes (for comparisons after the tree has been read by tools that touch them).
    pub fn no_atime(&self) -> Listing {
        let mut l = self.clone();
        for e in l.entries.values_mut() {
            e.atime = None;
        }
        l
    }

    pub fn paths_of_kind(&self, kind: &str) -> Vec<Vec<u8>> {
        self.entries
            .iter()
            .filter(|(_, e)| e.kind == kind)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

pub fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rsync -aHAXn --checksum --itemize-changes --delete SRC/ DEST/`: what rsync would change
/// (empty when the trees are identical for rsync). `excludes` are rsync patterns.
pub fn rsync_diff(src: &Path, dest: &Path, excludes: &[&str]) -> String {
    let mut c = Command::new("rsync");
    c.arg("-aHAXn")
        .arg("--checksum")
        .arg("--itemize-changes")
        .arg("--delete");
    for x in excludes {
        c.arg(format!("--exclude={x}"));
    }
    let mut s = src.as_os_str().to_os_string();
    s.push("/");
    let mut d = dest.as_os_str().to_os_string();
    d.push("/");
    c.arg(s).arg(d);
    let o = run_cmd(c, TIMEOUT);
    if o.code != Some(0) {
        return format!("rsync failed:\n{}", o.describe());
    }
    o.stdout_str()
}

// ---------------------------------------------------------------------------------------------
// Random trees for the model tests and for bulk data.

pub struct TreeSpec {
    pub files: usize,
    pub max_depth: usize,
    pub max_size: u64,
    /// Percent of files that copy another file's contents (dedup).
    pub dup_percent: u64,
    pub specials: bool,
}

/// Builds a random tree under `root` (which must exist). Returns the paths of the regular files.
pub fn random_tree(root: &Path, rng: &mut Rng, spec: &TreeSpec) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut contents: Vec<Vec<u8>> = Vec::new();
    let mut n = 0;
    while files.len() < spec.files {
        n += 1;
        let parent = rng.pick(&dirs).clone();
        let depth = parent.strip_prefix(root).unwrap().components().count();
        let name = random_name(rng, n);
        let p = parent.join(&name);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        let roll = rng.range(0, 100);
        if roll < 15 && depth < spec.max_depth {
            fs::create_dir(&p).unwrap();
            dirs.push(p);
        } else if spec.specials && roll < 20 && !files.is_empty() {
            let t = rng.pick(&files).clone();
            std::os::unix::fs::symlink(t.strip_prefix(root).unwrap(), &p).unwrap();
        } else if spec.specials && roll < 24 && !files.is_empty() {
            let t = rng.pick(&files).clone();
            fs::hard_link(&t, &p).unwrap();
        } else {
            let data = if !contents.is_empty() && rng.chance(spec.dup_percent) {
                rng.pick(&contents).clone()
            } else {
                let size = match rng.range(0, 10) {
                    0 => 0,
                    1..=5 => rng.range(1, 4096),
                    6..=8 => rng.range(4096, spec.max_size / 4 + 4097),
                    _ => rng.range(0, spec.max_size + 1),
                };
                if rng.chance(50) {
                    rng.bytes(size as usize)
                } else {
                    let mut v = Vec::new();
                    let wl = rng.range(1, 12) as usize;
                    let word = rng.bytes(wl);
                    while (v.len() as u64) < size {
                        v.extend_from_slice(&word);
                        v.push(b'\n');
                    }
                    v.truncate(size as usize);
                    v
                }
            };
            fs::write(&p, &data).unwrap();
            if spec.specials {
                chmod(&p, *rng.pick(&[0o644, 0o600, 0o755, 0o400, 0o4755, 0o640]));
                if rng.chance(20) {
                    let (u, g) = (rng.range(1000, 1010) as u32, rng.range(1000, 1010) as u32);
                    lchown(&p, u, g);
                }
                if rng.chance(15) {
                    let n = rng.range(0, 40) as usize;
                    set_xattr(&p, "user.model", &rng.bytes(n));
                }
            }
            contents.push(data);
            files.push(p);
        }
    }
    if spec.specials {
        // Nanosecond times on everything, children before parents.
        let mut all = Vec::new();
        collect_paths(root, &mut all);
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in all {
            let t = |rng: &mut Rng| {
                (
                    rng.range(0, 2_000_000_000) as i64,
                    rng.range(0, 1_000_000_000) as i64,
                )
            };
            let (mut a, mut m) = (t(rng), t(rng));
            if p.symlink_metadata().unwrap().file_type().is_symlink() {
                // atime ahead of now, mtime and ctime: readlink(2) leaves it (see `listing`).
                a.0 = future_secs() + rng.range(0, 3600) as i64;
                m.0 = m.0.min(1_700_000_000);
            }
            set_times(&p, a, m);
        }
    }
    files
}

/// A time an hour from now: a symlink atime there survives readlink(2) under relatime.
pub fn future_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600
}

/// Gives every symlink under `root` an atime an hour ahead (mtime kept), so that reading link
/// targets (ours or bkfs's) does not move it: see `listing`.
pub fn settle_symlink_atimes(root: &Path) {
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    for (i, p) in all.iter().enumerate() {
        let m = fs::symlink_metadata(p).unwrap();
        if m.file_type().is_symlink() {
            set_times(p, (future_secs(), i as i64), (m.mtime(), m.mtime_nsec()));
        }
    }
}

fn collect_paths(d: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            collect_paths(&p, out);
        }
        out.push(p);
    }
}

/// A random file name: mostly plain, sometimes with spaces, unicode or non-UTF-8 bytes.
pub fn random_name(rng: &mut Rng, n: usize) -> OsString {
    let mut v: Vec<u8> = match rng.range(0, 10) {
        0 => b"with space ".to_vec(),
        1 => "uni-\u{e9}\u{4e2d}-".as_bytes().to_vec(),
        2 => vec![b'x', 0xff, 0xfe, b'-'],
        3 => b"-dash.".to_vec(),
        _ => b"f".to_vec(),
    };
    let len = rng.range(1, 12);
    for _ in 0..len {
        v.push(*rng.pick(b"abcdefghijklmnopqrstuvwxyz0123456789_."));
    }
    v.extend_from_slice(format!("{n}").as_bytes());
    OsString::from_vec(v)
}

/// A bulk tree of about `total` bytes: many small files and a few large ones, random data.
pub fn bulk_tree(root: &Path, total: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let large = total / 2;
    let big_files = 3u64;
    fs::create_dir_all(root).unwrap();
    for i in 0..big_files {
        write_random(
            &root.join(format!("big{i}.bin")),
            large / big_files,
            &mut rng,
        );
    }
    let mut left = total - large;
    let mut i = 0;
    while left > 0 {
        let d = root
            .join(format!("d{}", i % 16))
            .join(format!("e{}", i % 5));
        fs::create_dir_all(&d).unwrap();
        let sz = rng.range(1, 400_000).min(left);
        if i % 3 == 0 {
            write_text(&d.join(format!("t{i}.txt")), sz, &mut rng);
        } else {
            write_random(&d.join(format!("r{i}.bin")), sz, &mut rng);
        }
        left -= sz;
        i += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing the backup summary line.

/// Parses a size like "0", "12345", "1.5 MiB", "20MB", "3 KiB", "7 bytes".
pub fn parse_size(num: &str, unit: &str) -> Option<u64> {
    let x: f64 = num.parse().ok()?;
    let u = unit.trim().to_ascii_lowercase();
    let mult: f64 = match u.as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1048576.0,
        "g" | "gb" => 1e9,
        "gib" => 1073741824.0,
        "t" | "tb" => 1e12,
        "tib" => 1099511627776.0,
        _ => return None,
    };
    Some((x * mult).round() as u64)
}

/// Finds the "bytes read" figure of the backup summary: within one comma-separated part of a
/// line that has the word "read", the size right after it (`read 1.5 MiB`, `read: 1572864`,
/// `bytes read: 0 B`, `read=12`), or else the size before it (`1.5 MiB read`).
pub fn bytes_read(text: &str) -> Option<u64> {
    for line in text.lines().rev() {
        let low = line.to_ascii_lowercase();
        for seg in low.split([',', ';', '|', '(', ')']) {
            let toks: Vec<&str> = seg
                .split(|c: char| c.is_whitespace() || c == ':' || c == '=')
                .filter(|t| !t.is_empty())
                .collect();
            let Some(i) = toks
                .iter()
                .position(|t| *t == "read" || t.ends_with("_read") || t.starts_with("read_"))
            else {
                continue;
            };
            if let Some(v) = (i + 1..toks.len()).find_map(|j| size_at(&toks, j)) {
                return Some(v);
            }
            if let Some(v) = (0..i).rev().find_map(|j| size_at(&toks, j)) {
                return Some(v);
            }
        }
    }
    None
}

/// A size starting at token i: "12", "1.5" + "mib", or "1.5mib".
fn size_at(toks: &[&str], i: usize) -> Option<u64> {
    let t = toks.get(i)?;
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if !unit.is_empty() {
        return parse_size(num, unit);
    }
    let next = toks.get(i + 1).copied().unwrap_or("");
    parse_size(num, next).or_else(|| parse_size(num, ""))
}

// ---------------------------------------------------------------------------------------------
// Guards.

/// A tmpfs mounted on a fresh directory, unmounted on drop (also when the test panics).
pub struct Tmpfs {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempdir();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        sh(
            "mount",
            &[
                OsStr::new("-t"),
                OsStr::new("tmpfs"),
                OsStr::new("-o"),
                OsStr::new(&format!("size={size}")),
                OsStr::new("tmpfs"),
                path.as_os_str(),
            ],
        );
        Tmpfs { _dir: dir, path }
    }
    pub fn used(&self) -> u64 {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statvfs(cstr(&self.path).as_ptr(), &mut s) };
        assert_eq!(r, 0);
        (s.f_blocks - s.f_bfree) * s.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut c = Command::new("umount");
        c.arg(&self.path);
        let o = run_cmd(c, Duration::from_secs(30));
        if o.code != Some(0) {
            let mut c = Command::new("umount");
            c.arg("-l").arg(&self.path);
            let _ = run_cmd(c, Duration::from_secs(30));
        }
    }
}

/// A read-only bind mount of a directory, unmounted on drop.
pub struct BindRo {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl BindRo {
    pub fn new(of: &Path) -> BindRo {
        let dir = tempdir();
        let path = dir.path().join("ro");
        fs::create_dir(&path).unwrap();
        sh(
            "mount",
            &[OsStr::new("--bind"), of.as_os_str(), path.as_os_str()],
        );
        let g = BindRo { _dir: dir, path };
        sh(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new("remount,bind,ro"),
                g.path.as_os_str(),
            ],
        );
        g
    }
}

impl Drop for BindRo {
    fn drop(&mut self) {
        let mut c = Command::new("umount");
        c.arg(&self.path);
        if run_cmd(c, Duration::from_secs(30)).code != Some(0) {
            let mut c = Command::new("umount");
            c.arg("-l").arg(&self.path);
            let _ = run_cmd(c, Duration::from_secs(30));
        }
    }
}

/// A spawned bkfs process, killed (SIGKILL) and reaped on drop if still running.
pub struct Bg {
    pub child: Child,
    pub cmdline: String,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bg {
    pub fn spawn(mut cmd: Command) -> Bg {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr");
        let f = fs::File::create(&stderr_path).unwrap();
        let line = cmdline(&cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(f);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {line}: {e}"));
        Bg {
            child,
            cmdline: line,
            stderr_path,
            _dir: dir,
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    pub fn kill9(&mut self) -> Option<i32> {
        let _ = self.child.kill();
        self.child.wait().unwrap().code()
    }
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
    /// Waits for the process to exit by itself (kills it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if start.elapsed() > timeout {
                self.signal(libc::SIGCONT);
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("`{}` did not finish within {timeout:?}", self.cmdline);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGCONT);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether process `pid` holds a lock (flock/fcntl/OFD) per /proc/locks, or has a file of the
/// store open for writing, or a file appeared in the store since `before`.
pub fn writer_active(store: &Store, pid: u32, before: &BTreeSet<PathBuf>) -> bool {
    if let Ok(locks) = fs::read_to_string("/proc/locks") {
        for l in locks.lines() {
            if l.split_whitespace().nth(4) == Some(&pid.to_string()) {
                return true;
            }
        }
    }
    store.files().iter().any(|f| !before.contains(f))
}

/// Temporary directory path helper: `dir/name` with a byte name.
pub fn join_bytes(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}
