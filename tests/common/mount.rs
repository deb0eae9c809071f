//! The mount half of the one test helper library: a mounted bkfs that is
//! always unmounted again, and ways to run commands as root or as nobody.
//! The mount tests name it `common` (`use crate::common::*`); it brings the
//! rest of the library ([`super::Rng`], [`super::cstr`]...) with it.

pub use super::{cstr, Rng};

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BKFS: &str = env!("CARGO_BIN_EXE_bkfs");

/// The uid/gid of the unprivileged user the tests act as.
pub const NOBODY: u32 = 65534;

/// Whether this machine can run mount tests. Without /dev/fuse or root the
/// tests skip with a message, except on CI (`CI=true`), where that fails.
pub fn can_mount() -> bool {
    let problem = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else {
        None
    };
    match problem {
        None => true,
        Some(p) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("live mount tests cannot run on CI: {p}")
        }
        Some(p) => {
            eprintln!("skipping live mount test: {p}");
            false
        }
    }
}

/// Whether `path` is currently a mount point.
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

/// A temporary source directory and a bkfs mount of it. Drop unmounts (lazily
/// if busy) and stops the daemon, also when the test panics.
pub struct Mount {
    pub src: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    daemon: Option<Child>,
    tmp: PathBuf,
}

impl Mount {
    /// Mounts a fresh empty source with `-o options` (may be empty).
    pub fn new(options: &str) -> Mount {
        Mount::with_source(options, |_| {})
    }

    /// Like [`Mount::new`], after `fill` has prepared the source.
    pub fn with_source(options: &str, fill: impl FnOnce(&Path)) -> Mount {
        Mount::with_command(options, fill, |_| {})
    }

    /// Like [`Mount::with_source`]; `tweak` adjusts the daemon's command
    /// (environment, resource limits) before it starts.
    pub fn with_command(
        options: &str,
        fill: impl FnOnce(&Path),
        tweak: impl FnOnce(&mut Command),
    ) -> Mount {
        let tmp = tempfile::Builder::new()
            .prefix("bkfs-live-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        // nobody must be able to reach the mount for the unprivileged tests.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        let src = tmp.join("src");
        let mnt = tmp.join("mnt");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        fill(&src);
        let log = tmp.join("daemon.log");
        let mut cmd = Command::new(BKFS);
        cmd.arg("mount").arg(&src).arg(&mnt).arg("--foreground");
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        cmd.env(
            "BKFS_LOG",
            std::env::var("BKFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        tweak(&mut cmd);
        let daemon = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start bkfs mount");
        let mut m = Mount {
            src,
            mnt,
            log,
            daemon: Some(daemon),
            tmp,
        };
        m.wait_mounted();
        m
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.mnt) {
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "bkfs mount exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Path of `rel` inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Path of `rel` inside the source (the backing directory).
    pub fn backing(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }

    /// A scratch directory next to the mount (not inside it).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.tmp.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Unmounts and waits for the daemon to exit by itself (a clean stop).
    pub fn unmount(mut self) -> std::process::ExitStatus {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {out:?}");
        let status = wait_timeout(self.daemon.as_mut().unwrap(), Duration::from_secs(10))
            .expect("daemon did not exit after umount");
        self.daemon = None;
        status
    }

    /// Daemon log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().unwrap().id()
    }

    /// Kills the daemon with SIGKILL (nothing of it runs after), detaches
    /// the dead mount, and mounts the same source again with `options`.
    pub fn kill_and_remount(&mut self, options: &str) {
        let mut child = self.daemon.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        self.start(options);
    }

    /// Unmounts cleanly and mounts the same source again with `options`.
    pub fn remount(&mut self, options: &str) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {out:?}");
        let mut child = self.daemon.take().unwrap();
        wait_timeout(&mut child, Duration::from_secs(30))
            .expect("daemon did not exit after umount");
        self.start(options);
    }

    fn start(&mut self, options: &str) {
        let mut cmd = Command::new(BKFS);
        cmd.arg("mount")
            .arg(&self.src)
            .arg(&self.mnt)
            .arg("--foreground");
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        self.daemon = Some(
            cmd.env(
                "BKFS_LOG",
                std::env::var("BKFS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bkfs mount"),
        );
        self.wait_mounted();
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(mut child) = self.daemon.take() {
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // BKFS_TEST_KEEP=1 keeps the source, the mount point and the daemon's log.
        if !is_mounted(&self.mnt) && std::env::var_os("BKFS_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A command that runs `program` as root in a mount namespace of its own, in which a
/// read-only overlay lays this worktree's mount(8) helper over /sbin, as `mount.bkfs` and
/// `mount.fuse.bkfs` (what tools/install.sh installs), without installing it: mount(8)
/// looks for helpers only in /sbin. It passes them its environment, and BKFS_BIN names the
/// binary under test. The overlay's layer is made in `work/mount-helper`. The mount that
/// holds /sbin turns slave first, so the overlay cannot propagate out even where / is
/// shared; a mount made in the namespace shows outside only under a shared mount (a peer of
/// the namespace's copy). Remounts change the namespace's copy of a mount, and the flags of
/// its filesystem (ro/rw) for every namespace.
pub fn with_mount_helper(work: &Path, program: impl AsRef<OsStr>) -> Command {
    let helper = work.join("mount-helper");
    if !helper.join("mount.fuse.bkfs").exists() {
        std::fs::create_dir_all(&helper).unwrap();
        let h = helper.join("mount.bkfs");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/mount.bkfs"),
            &h,
        )
        .unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("mount.bkfs", helper.join("mount.fuse.bkfs")).unwrap();
    }
    let script = "set -e; helper=$1; shift; sbin=$(readlink -f /sbin); \
                  mount --make-slave \"$(findmnt -n -o TARGET -T \"$sbin\")\"; \
                  mount -t overlay bkfs-test-helper -o \"lowerdir=$helper:$sbin\" \"$sbin\"; \
                  exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "unchanged",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&helper)
    .arg(program)
    .env("BKFS_BIN", BKFS);
    cmd
}

/// Runs `script` with sh as root; panics with its output if it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "sh -c {script:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` with sh as nobody (no supplementary groups).
pub fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

/// Like [`as_nobody`], panicking unless the script succeeds.
pub fn nobody_ok(script: &str) -> String {
    let out = as_nobody(script);
    assert!(
        out.status.success(),
        "as nobody: {script:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`as_nobody`], asserting that it fails with `needle` in its stderr.
pub fn nobody_fails(script: &str, needle: &str) {
    let out = as_nobody(script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(needle),
        "as nobody: {script:?} should fail with {needle:?}: status {}, stderr {err}",
        out.status
    );
}

/// The errno of a failed std::io call.
pub fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error().unwrap()
}
