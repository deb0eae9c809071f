//! Guards that undo what a test set up (tmpfs and read-only bind mounts, background processes), also when it panics.

use super::*;

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
