//! What the conformance runs need around them: the pjdfstest and fsx binaries, pjdfstest's
//! dummy users, one run at a time, child processes with a time limit, and a private tmpfs.

use parking_lot::{Mutex, MutexGuard};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The version of `tool` that tools/install-conformance-tools.sh installs (its
/// `PJDFSTEST_VERSION=` or `FSX_VERSION=` line).
pub fn pinned(tool: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/install-conformance-tools.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let key = format!("{}_VERSION=", tool.to_uppercase());
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} line in {}", script.display()))
        .trim()
        .to_string()
}

/// The dummy users (each with a group of the same name) named in pjdfstest.toml.
pub const DUMMY_USERS: [&str; 2] = ["tests", "pjdfstest"];

/// This folder: the configuration files of pjdfstest and fsx live here.
pub fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn on_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns false, with a message) or, under CI=true, fails.
fn missing(what: &str) -> bool {
    let msg = format!(
        "conformance: {what}; tools/test.sh installs what these tests need (docs/CONFORMANCE.md)"
    );
    if on_ci() {
        panic!("{msg} (CI=true, so this is a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Where `name` is: `$ENV` if set, else PATH, else `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The binary `name` (its `--version` is checked against the pinned one), or None after a
/// skip message.
pub fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let version = pinned(name);
    let Some(bin) = find(name, env) else {
        missing(&format!(
            "`{name}` is not installed (cargo install --locked {name} --version {version})"
        ));
        return None;
    };
    let out = Command::new(&bin).arg("--version").output();
    let shown = out
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !shown.ends_with(&version) {
        eprintln!(
            "conformance: warning: {} reports {shown:?}, these tests are written for {name} {version}",
            bin.display()
        );
    }
    Some(bin)
}

/// Root, /dev/fuse (through the live tests' `can_mount`) and pjdfstest's dummy users.
pub fn can_run() -> bool {
    if !crate::common::can_mount() {
        return false;
    }
    for u in DUMMY_USERS {
        let user = nix::unistd::User::from_name(u).ok().flatten();
        let group = nix::unistd::Group::from_name(u).ok().flatten();
        match (user, group) {
            (Some(user), Some(group)) if user.gid == group.gid => {}
            _ => {
                return missing(&format!(
                    "pjdfstest's dummy user `{u}` (in a group `{u}`) does not exist"
                ))
            }
        }
    }
    true
}

/// The conformance runs take one at a time, whatever `--test-threads` says: they time
/// themselves, and the snapshot load of one would slow the others down.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
}

/// What a child process did.
pub struct Ran {
    pub line: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    pub fn status(&self) -> String {
        match (self.timed_out, self.code) {
            (true, _) => format!("killed after the time limit of {:.0?}", self.elapsed),
            (false, Some(c)) => format!("exit status {c}"),
            (false, None) => "killed by a signal".into(),
        }
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured), killing it after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Ran {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        line,
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// The last `n` lines of `text`, without terminal colours.
pub fn tail(text: &str, n: usize) -> String {
    let text = crate::pjdfs::strip_ansi(text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a daemon log, without the lines the load makes expected (requests
/// refused while a copy runs) and fuser's notes that FLUSH is not implemented.
pub fn log_tail(log: &str, n: usize) -> String {
    let log = crate::pjdfs::strip_ansi(log);
    let mut kept = Vec::new();
    let mut in_flush = false;
    for l in log.lines() {
        if in_flush || l.contains("[Not Implemented] flush(") {
            // A multi-line entry that ends with its lock owner.
            in_flush = !l.contains("lock_owner");
        } else if !l.contains("try again when it is sealed") {
            kept.push(l);
        }
    }
    if kept.is_empty() {
        return "(nothing but the expected notes)".into();
    }
    kept[kept.len().saturating_sub(n)..].join("\n")
}

/// The type of the filesystem `path` is on, as the mount table names it (ext4, tmpfs, fuse).
pub fn fs_type(path: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--target"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A scratch directory, removed on drop unless `keep` was called (to leave evidence).
pub struct Scratch {
    pub path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let path = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Scratch { path, keep: false }
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep && std::env::var_os("BKFS_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A private tmpfs, unmounted on drop (also when the test panics).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=256m,mode=0755",
                "bkfs-conformance",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if crate::common::is_mounted(&self.path) {
            let ok = Command::new("umount")
                .arg(&self.path)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
    }
}
