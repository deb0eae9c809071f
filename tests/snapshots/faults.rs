//! Faults met in use, each reproduced: descriptors of the pending view,
//! forgetting the newest snapshot, link counts and inode numbers, sizes of
//! sealed directories.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::tree::*;

/// Holds the copies of a mount back while armed (the daemon's
/// `BKFS_HOLD_COPY` failpoint: a copy starts once the file is gone): the
/// snapshot stays pending for as long as a test needs, on a fast machine or
/// a slow one.
pub struct Hold {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Hold {
    /// Armed.
    pub fn new() -> Hold {
        let dir = tempfile::Builder::new()
            .prefix("bkfs-hold-")
            .tempdir_in("/tmp")
            .unwrap();
        let path = dir.path().join("hold");
        let h = Hold { _dir: dir, path };
        h.arm();
        h
    }

    pub fn env(&self, cmd: &mut Command) {
        cmd.env("BKFS_HOLD_COPY", &self.path);
    }

    fn arm(&self) {
        fs::write(&self.path, "").unwrap();
    }

    /// Lets the copies run.
    pub fn release(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

/// Starts the daemon with an open-file limit of `n` (soft and hard).
fn limit_nofile(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe; the closure touches no memory
    // of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How many descriptors process `pid` has open.
fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The open-file limit process `pid` runs with.
fn nofile(pid: u32) -> u64 {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn fstatat(dir: &fs::File, name: &str) -> libc::stat {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: `st` is a valid out-pointer, `c` a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "fstatat {name}: {}", std::io::Error::last_os_error());
    st
}

#[test]
fn walking_a_pending_snapshot_larger_than_the_fd_limit_keeps_the_daemon_within_it() {
    if !can_mount() {
        return;
    }
    const LIMIT: u64 = 200;
    let hold = Hold::new();
    let m = Mount::with_command(
        "",
        |src| {
            for d in 0..10 {
                let dir = src.join(format!("d{d}"));
                fs::create_dir(&dir).unwrap();
                for f in 0..150 {
                    fs::write(dir.join(format!("f{f}")), format!("{d}/{f}\n")).unwrap();
                }
            }
            fs::write(src.join("log"), "start\n").unwrap();
        },
        |cmd| {
            hold.env(cmd);
            limit_nofile(cmd, LIMIT);
        },
    );
    let pid = m.daemon_pid();
    let limit = nofile(pid).min(LIMIT) as usize;
    // The tree as the source has it (through the mount, the live tree's
    // nodes would take the descriptors first).
    let want = digest(&m.src);
    let base = fds(pid);
    take(&m.mnt, "big");
    let snap = m.path(".snapshots/big");
    // 1,500 names looked up and read in the pending view, three times the
    // daemon's descriptors; the kernel keeps them all cached.
    assert_same("pending, beyond the fd limit", &want, &digest(&snap));
    let during = fds(pid);
    assert!(
        during < limit,
        "the daemon holds {during} descriptors, its limit is {limit}"
    );
    // The live tree is unharmed.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("log"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"appended\n").unwrap();
    drop(f);
    assert!(
        during > base + 50,
        "the pending view held {during} descriptors, {base} before"
    );
    hold.release();
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    // The pending view's descriptors go with the seal, though the kernel
    // still caches its nodes.
    let after = fds(pid);
    assert!(
        after <= base + 10,
        "{after} descriptors after the seal, {base} before the snapshot"
    );
    assert_same("sealed", &want, &digest(&snap));
    // Later snapshots work.
    take(&m.mnt, "next");
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    assert!(fds(pid) < limit);
}

fn small(src: &Path) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("a"), "a\n").unwrap();
    fs::write(src.join("d/b"), "b\n").unwrap();
    fs::write(src.join("d/e/c"), "c\n").unwrap();
}

fn forget_cli(m: &Mount, name: &str) {
    let out = Command::new(BKFS)
        .arg("forget")
        .arg(name)
        .arg("--store")
        .arg(m.backing(".bkfs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "bkfs forget {name}: {out:?}");
}

#[test]
fn forgetting_the_newest_snapshot_leaves_later_snapshots_working() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", small);
    let mut n = 0;
    let mut change = || {
        n += 1;
        sh(&format!(
            "cd {} && echo {n} >> a && echo {n} > d/e/new{n} && rm -f d/e/new$(({n} - 1))",
            m.mnt.display()
        ));
    };
    let sealed = |name: &str| {
        let want = digest(&m.mnt);
        take(&m.mnt, name);
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{name}: {s:?}");
        assert_eq!(s["error"], "", "{name}: {s:?}");
        assert_same(name, &want, &digest(&m.path(".snapshots").join(name)));
        s
    };
    sealed("a");
    change();
    sealed("b");
    change();
    // Forgotten through the mount...
    fs::remove_dir(m.path(".snapshots/b")).unwrap();
    change();
    sealed("c");
    change();
    sealed("d");
    // ...and through the store, behind the daemon's back.
    forget_cli(&m, "d");
    change();
    sealed("e");
    change();
    let s = sealed("f");
    assert_eq!(s["copy"], "changes since e", "{s:?}");
    check_store(&m.backing(".bkfs"));
}

#[test]
fn a_copy_that_fails_after_the_request_says_so_in_the_control_file_status_and_log() {
    if !can_mount() {
        return;
    }
    let hold = Hold::new();
    let m = Mount::with_command("", small, |cmd| hold.env(cmd));
    take(&m.mnt, "doomed");
    // Changed behind the mount's back: the point in time cannot be kept.
    // (A kernel timestamp is of the clock's last tick: a change within the
    // tick of the barrier would not be told from one before it.)
    std::thread::sleep(std::time::Duration::from_millis(30));
    fs::write(m.backing("d/b"), "changed outside\n").unwrap();
    hold.release();
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "failed", "{s:?}");
    assert!(!s["error"].is_empty(), "{s:?}");
    let out = Command::new(BKFS)
        .args(["status", "--mount"])
        .arg(&m.mnt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failed") && text.contains(&s["error"]),
        "bkfs status: {text}"
    );
    assert!(m.log().contains("doomed"), "log: {}", m.log());
    assert!(!m.path(".snapshots/doomed").exists());
    // The next one works.
    take(&m.mnt, "fine");
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
}

#[test]
fn an_open_file_whose_last_name_is_gone_has_no_links() {
    if !can_mount() {
        return;
    }
    let hold = Hold::new();
    let m = Mount::with_command("", small, |cmd| hold.env(cmd));
    let check = |name: &str, what: &str| {
        let f = fs::File::open(m.path(name)).unwrap();
        fs::remove_file(m.path(name)).unwrap();
        assert_eq!(f.metadata().unwrap().nlink(), 0, "{what}");
    };
    // pjdfstest's unlink::open_file_not_freed, no snapshot pending.
    fs::write(m.path("x"), "x").unwrap();
    check("x", "no snapshot pending");
    // A file the pending snapshot holds, kept by a link in the diff area.
    take(&m.mnt, "s");
    check("a", "the pending snapshot's file");
    // Two names: one left.
    fs::hard_link(m.path("d/b"), m.path("b2")).unwrap();
    fs::remove_file(m.path("d/b")).unwrap();
    assert_eq!(fs::metadata(m.path("b2")).unwrap().nlink(), 1);
    check("b2", "the second name of a file of the snapshot");
    hold.release();
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    assert_eq!(fs::read_to_string(m.path(".snapshots/s/a")).unwrap(), "a\n");
}

#[test]
fn hard_links_share_one_inode_number_in_a_snapshot_read_across_its_seal() {
    if !can_mount() {
        return;
    }
    let hold = Hold::new();
    hold.release();
    let m = Mount::with_command("", small, |cmd| hold.env(cmd));
    take(&m.mnt, "before");
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    // Links made since the previous snapshot.
    fs::hard_link(m.path("d/b"), m.path("d/b-link")).unwrap();
    fs::hard_link(m.path("d/b"), m.path("d/e/b-link2")).unwrap();
    fs::hard_link(m.path("a"), m.path("d/a-link")).unwrap();
    hold.arm();
    take(&m.mnt, "s");
    let snap = m.path(".snapshots/s");
    // A reader inside the snapshot while it is pending (as `tar` or
    // `rsync -H` holding its working directory)...
    let d = fs::File::open(snap.join("d")).unwrap();
    let b = fstatat(&d, "b");
    let a = fs::symlink_metadata(snap.join("a")).unwrap();
    assert_eq!(b.st_nlink, 3);
    assert_eq!(fstatat(&d, "b-link").st_ino, b.st_ino, "pending");
    // ...reads on across the seal.
    hold.release();
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    for name in ["e/b-link2", "b-link", "b"] {
        let st = fstatat(&d, name);
        assert_eq!(st.st_ino, b.st_ino, "{name} after the seal");
        assert_eq!(st.st_nlink, 3, "{name} after the seal");
    }
    assert_eq!(
        fstatat(&d, "a-link").st_ino,
        a.ino(),
        "a-link after the seal"
    );
    // Whether the kernel asks again or not, one number per file.
    for p in ["d/b", "d/e/b-link2"] {
        assert_eq!(fs::metadata(snap.join(p)).unwrap().ino(), b.st_ino, "{p}");
    }
    assert_eq!(fs::metadata(snap.join("d/a-link")).unwrap().ino(), a.ino());
    drop(d);
}

#[test]
fn sealed_directories_show_their_recorded_size() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        small(src);
        for i in 0..300 {
            fs::write(src.join(format!("d/many-{i:04}-with-a-long-name")), "").unwrap();
        }
    });
    let want: Vec<(PathBuf, u64)> = ["", "d", "d/e"]
        .iter()
        .map(|p| (PathBuf::from(p), fs::metadata(m.path(p)).unwrap().size()))
        .collect();
    assert!(want.iter().any(|(_, s)| *s > 0), "{want:?}");
    take(&m.mnt, "sizes");
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    for (p, size) in &want {
        let got = fs::metadata(m.path(".snapshots/sizes").join(p)).unwrap();
        assert_eq!(got.size(), *size, "{}", p.display());
    }
}

/// Snapshots requested back to back, each as soon as the one before is
/// sealed: every one holds the state of its own moment. (The seal used to
/// clear the pending snapshot before it made itself the change record's
/// baseline; a commit in between counted its changes from the snapshot
/// before, and reused that one's old files.)
#[test]
fn snapshots_taken_back_to_back_each_hold_their_own_moment() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let request = |name: &str| loop {
        match take_errno(&m.mnt, format!("{name}\n")) {
            0 => return,
            libc::EBUSY => std::thread::yield_now(),
            e => panic!("snapshot {name}: errno {e}: {:?}", status(&m.mnt)),
        }
    };
    let rounds = 120;
    for k in 0..rounds {
        fs::write(m.path(&format!("f{}", k % 2)), format!("v{k}\n")).unwrap();
        request(&format!("r{k}"));
    }
    wait_settled(&m.mnt);
    let mut wrong = Vec::new();
    for k in 0..rounds {
        let snap = m.path(&format!(".snapshots/r{k}"));
        let mine = fs::read_to_string(snap.join(format!("f{}", k % 2))).unwrap_or_default();
        if mine != format!("v{k}\n") {
            wrong.push(format!("r{k}/f{}: {mine:?}", k % 2));
        }
        if k > 0 {
            let other =
                fs::read_to_string(snap.join(format!("f{}", (k - 1) % 2))).unwrap_or_default();
            if other != format!("v{}\n", k - 1) {
                wrong.push(format!("r{k}/f{}: {other:?}", (k - 1) % 2));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {rounds} snapshots hold another moment: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    check_store(&m.backing(".bkfs"));
}

/// An open that truncates changes the file however it is opened: the
/// pending snapshot keeps what was there (`open(O_RDONLY|O_TRUNC)` used to
/// skip the barrier and the pre-image), and a program running from the
/// mount is not truncated under it (`ETXTBSY`, as natively).
#[test]
fn opens_that_truncate_keep_the_pre_image_and_spare_running_programs() {
    if !can_mount() {
        return;
    }
    let hold = Hold::new();
    let m = Mount::with_command(
        "",
        |src| {
            for name in ["ro", "wo", "rw"] {
                fs::write(src.join(name), format!("{name} before\n")).unwrap();
            }
            fs::copy("/bin/sleep", src.join("sleep")).unwrap();
        },
        |cmd| hold.env(cmd),
    );
    take(&m.mnt, "t");
    for (name, flags) in [
        ("ro", libc::O_RDONLY),
        ("wo", libc::O_WRONLY),
        ("rw", libc::O_RDWR),
    ] {
        let c = cstr(&m.path(name));
        // SAFETY: a valid C string; the descriptor is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_TRUNC) };
        assert!(fd >= 0, "{name}: {}", std::io::Error::last_os_error());
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        assert_eq!(fs::metadata(m.path(name)).unwrap().len(), 0, "{name} live");
    }
    let check = |when: &str| {
        for name in ["ro", "wo", "rw"] {
            assert_eq!(
                fs::read_to_string(m.path(&format!(".snapshots/t/{name}"))).unwrap(),
                format!("{name} before\n"),
                "{name} in the snapshot, {when}"
            );
        }
    };
    check("pending");
    hold.release();
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    check("sealed");

    // A program running from the mount.
    let size = fs::metadata(m.path("sleep")).unwrap().len();
    let mut child = Command::new(m.path("sleep")).arg("30").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    for flags in [libc::O_RDONLY, libc::O_WRONLY] {
        let c = cstr(&m.path("sleep"));
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_TRUNC) };
        let err = std::io::Error::last_os_error();
        if fd >= 0 {
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
        }
        assert_eq!(
            (fd, err.raw_os_error()),
            (-1, Some(libc::ETXTBSY)),
            "open({flags:#o}|O_TRUNC) of a running program"
        );
        assert_eq!(fs::metadata(m.path("sleep")).unwrap().len(), size);
    }
    assert!(child.try_wait().unwrap().is_none(), "the program runs on");
    let _ = child.kill();
    let _ = child.wait();
}
