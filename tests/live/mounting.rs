//! Mounting and unmounting: the daemon, the mount(8) helper, errors, signals.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

struct Dirs {
    root: PathBuf,
    src: PathBuf,
    mnt: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::Builder::new()
            .prefix("bkfs-mnt-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let (src, mnt) = (root.join("src"), root.join("mnt"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&mnt).unwrap();
        fs::write(src.join("hello"), b"world").unwrap();
        Dirs { root, src, mnt }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        wait_gone(&self.mnt);
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The pid of the daemon serving `mnt`, found by its command line.
fn daemon_of(mnt: &Path) -> Option<i32> {
    let want = mnt.to_str().unwrap();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"bkfs")) && args.contains(&want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn wait_gone(mnt: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon_of(mnt).is_some() || is_mounted(mnt) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn bkfs_mount(src: &Path, mnt: &Path, opts: &[&str]) -> std::process::Output {
    Command::new(BKFS)
        .arg("mount")
        .arg(src)
        .arg(mnt)
        .args(opts)
        .output()
        .unwrap()
}

#[test]
fn the_daemon_detaches_and_umount_stops_it() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let log = d.root.join("log");
    let out = bkfs_mount(&d.src, &d.mnt, &["-o", &format!("log={}", log.display())]);
    assert!(out.status.success(), "{out:?}");
    // Live as soon as the command returns.
    assert!(is_mounted(&d.mnt));
    assert_eq!(fs::read(d.mnt.join("hello")).unwrap(), b"world");
    let pid = daemon_of(&d.mnt).expect("daemon running");
    assert_ne!(pid, std::process::id() as i32);
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    assert!(wait_gone(&d.mnt), "daemon must exit after umount");
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("mounted") && log.contains("unmounted"),
        "{log}"
    );
}

#[test]
fn sigterm_unmounts_cleanly() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let out = bkfs_mount(&d.src, &d.mnt, &[]);
    assert!(out.status.success(), "{out:?}");
    let pid = daemon_of(&d.mnt).expect("daemon running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    assert!(wait_gone(&d.mnt), "SIGTERM must unmount and exit");
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn sigterm_with_a_busy_mount_detaches_it() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    assert!(bkfs_mount(&d.src, &d.mnt, &[]).status.success());
    let open = fs::File::open(d.mnt.join("hello")).unwrap();
    let pid = daemon_of(&d.mnt).expect("daemon running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(&d.mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&d.mnt), "detached from the namespace");
    // The open file still reads, then the daemon goes.
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &open, &mut s).unwrap();
    assert_eq!(s, "world");
    drop(open);
    assert!(wait_gone(&d.mnt));
}

#[test]
fn clear_errors_for_bad_mounts() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let err = |out: std::process::Output| -> (i32, String) {
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, msg) = err(bkfs_mount(&d.root.join("missing"), &d.mnt, &[]));
    assert_eq!(code, 1);
    assert!(
        msg.contains("source") && msg.contains("No such file"),
        "{msg}"
    );
    let (code, msg) = err(bkfs_mount(&d.src, &d.root, &[]));
    assert_eq!(code, 1);
    assert!(msg.contains("not empty"), "{msg}");
    let (code, msg) = err(bkfs_mount(&d.src, &d.mnt, &["-o", "bogus"]));
    assert_eq!(code, 2);
    assert!(msg.contains("unknown mount option 'bogus'"), "{msg}");
    assert!(bkfs_mount(&d.src, &d.mnt, &[]).status.success());
    let (code, msg) = err(bkfs_mount(&d.src, &d.mnt, &[]));
    assert_eq!(code, 1);
    assert!(msg.contains("already mounted"), "{msg}");
    assert!(Command::new("umount")
        .arg(&d.mnt)
        .status()
        .unwrap()
        .success());
}

#[test]
fn the_mount_helper_accepts_mount8_arguments() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/mount.bkfs");
    let run = |args: &[&str]| {
        Command::new("sh")
            .arg(&helper)
            .arg(&d.src)
            .arg(&d.mnt)
            .args(args)
            .env("BKFS_BIN", BKFS)
            .output()
            .unwrap()
    };
    // -f (fake) checks and does nothing.
    assert!(run(&["-f", "-o", "noauto"]).status.success());
    assert!(!is_mounted(&d.mnt));
    let out = run(&[
        "-n",
        "-o",
        "rw,noauto,_netdev,nofail,x-systemd.requires=foo,defaults",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&d.mnt));
    assert_eq!(fs::read(d.mnt.join("hello")).unwrap(), b"world");
    assert!(Command::new("umount")
        .arg(&d.mnt)
        .status()
        .unwrap()
        .success());
    assert!(wait_gone(&d.mnt));
    let out = run(&["-o", "ro,nosuchoption"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchoption"));
    // Through mount(8) itself when the helper is installed.
    if Path::new("/sbin/mount.bkfs").exists() || Path::new("/usr/sbin/mount.bkfs").exists() {
        let st = Command::new("mount")
            .args(["-t", "bkfs"])
            .arg(&d.src)
            .arg(&d.mnt)
            .args(["-o", "noatime"])
            .env("BKFS_BIN", BKFS)
            .status()
            .unwrap();
        assert!(st.success());
        assert!(is_mounted(&d.mnt));
        assert!(Command::new("umount")
            .arg(&d.mnt)
            .status()
            .unwrap()
            .success());
        assert!(wait_gone(&d.mnt));
    }
}

#[test]
fn single_thread_and_nopassthrough_mounts_work() {
    if !can_mount() {
        return;
    }
    for opts in [
        "threads=1",
        "nopassthrough",
        "passthrough=ro",
        "writeback",
        "cache_timeout=0",
    ] {
        let m = Mount::with_source(opts, |src| fs::write(src.join("f"), b"data").unwrap());
        assert_eq!(fs::read(m.path("f")).unwrap(), b"data", "{opts}");
        fs::write(m.path("g"), b"more").unwrap();
        assert_eq!(fs::read(m.backing("g")).unwrap(), b"more", "{opts}");
        let status = m.unmount();
        assert!(status.success(), "{opts}: {status}");
    }
}
