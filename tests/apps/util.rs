//! What the application tests share: tools that must be there, processes
//! killed on drop, profiles, restores.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::BKFS;

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether every program of `tools` is on PATH (or an absolute path that
/// exists). Missing ones skip the test with a message, except under
/// `CI=true`, where the test fails (`.ci/packages.txt` installs them).
pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            if t.starts_with('/') {
                return !Path::new(t).exists();
            }
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!ci(), "missing {missing:?}, and CI=true requires them");
    eprintln!("skipped: missing {missing:?}");
    false
}

/// Whether system user `name` exists (the server packages create them); like
/// [`have`], a failure under `CI=true`.
pub fn have_user(name: &str) -> bool {
    if nix::unistd::User::from_name(name).ok().flatten().is_some() {
        return true;
    }
    assert!(!ci(), "no user {name}, and CI=true requires it");
    eprintln!("skipped: no user {name}");
    false
}

/// A directory everyone can enter, owned by root (profiles live here).
pub fn tmp() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("bkfs-apps-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A temporary directory owned by `user`.
pub fn dir_of(user: &str) -> tempfile::TempDir {
    let d = tmp();
    chown(d.path(), user);
    d
}

pub fn chown(p: &Path, user: &str) {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    nix::unistd::chown(p, Some(u.uid), Some(u.gid)).unwrap();
}

/// Sets a command to run as `user` (uid, gid; std drops supplementary groups).
pub fn as_user<'a>(cmd: &'a mut Command, user: &str) -> &'a mut Command {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw())
}

/// Writes a root-owned profile `name` (mode 644) in `dir`; returns its path.
pub fn profile(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// Asks the mount to re-read its profile.
pub fn reload(mnt: &Path) {
    std::fs::write(mnt.join(".control/profile"), "reload\n").unwrap();
}

/// A child in its own process group, killed with the group on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn sh(script: &str) -> Proc {
        Proc::spawn(Command::new("/bin/sh").arg("-c").arg(script))
    }
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc(
            cmd.stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        )
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pg = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command; panics with its output unless it succeeds; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `bkfs restore SNAP --store STORE DEST` (DEST must not exist or be empty).
pub fn restore(store: &Path, snap: &str, dest: &Path) {
    run(Command::new(BKFS)
        .arg("restore")
        .arg(snap)
        .arg(dest)
        .arg("--store")
        .arg(store));
}

/// Takes snapshot `name` and waits until it is sealed; returns its status.
pub fn snapshot_sealed(mnt: &Path, name: &str) -> std::collections::BTreeMap<String, String> {
    crate::tree::take(mnt, name);
    let s = crate::tree::wait_settled(mnt);
    assert_eq!(s["state"], "sealed", "{name}: {s:?}");
    assert_eq!(s["name"], name, "{s:?}");
    s
}

/// The `app:` lines of a `.control/snapshot` read.
pub fn app_lines(mnt: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(mnt.join(".control/snapshot")).unwrap();
    bkfs::control::text::decode(&text)
        .all("app")
        .into_iter()
        .map(String::from)
        .collect()
}

/// The frozen marker of a mount of `source` (as the daemon names it).
pub fn marker_of(mountpoint: &Path) -> PathBuf {
    // As `systemd-escape -p`: components joined by '-', other bytes \xNN.
    let mut name = String::new();
    for comp in mountpoint
        .to_str()
        .unwrap()
        .split('/')
        .filter(|c| !c.is_empty())
    {
        if !name.is_empty() {
            name.push('-');
        }
        for (i, b) in comp.bytes().enumerate() {
            if b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && i > 0) {
                name.push(b as char);
            } else {
                name.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    Path::new("/run/bkfs/quiesce").join(format!("{name}.json"))
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
