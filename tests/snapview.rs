//! Integration tests of `bkfs mount --store`: a store's sealed snapshots
//! mounted read-only and compared with the tree they were taken from.
//! Each test backs up its own source into its own store and mounts it; the
//! mount is unmounted when the test ends, also when it panics.

#[path = "common/mod.rs"]
mod helpers;
/// The mount tests' helpers (with the rest of the one library behind them).
use helpers::mount as common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{as_nobody, can_mount, errno_of, is_mounted, nobody_fails, sh, wait_timeout, BKFS};

/// A source directory, a store holding a backup of it, and a mountpoint.
struct Fixture {
    tmp: PathBuf,
    src: PathBuf,
    store: PathBuf,
    mnt: PathBuf,
}

impl Fixture {
    /// A source with every kind of object the store records.
    fn new() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("bkfs-snapview-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let fx = Fixture {
            src: tmp.join("src"),
            store: tmp.join("store"),
            mnt: tmp.join("mnt"),
            tmp,
        };
        fs::create_dir(&fx.mnt).unwrap();
        fs::create_dir(&fx.src).unwrap();
        // Pseudo-random (xorshift), so the chunker finds several cut points.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let big: Vec<u8> = (0..5_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        fs::write(fx.src.join("big"), &big).unwrap();
        let sparse = fs::File::create(fx.src.join("sparse")).unwrap();
        sparse.write_all_at(b"start", 0).unwrap();
        sparse.write_all_at(&big[..700_000], 3 << 20).unwrap();
        sparse.set_len(9 << 20).unwrap();
        // Everything else from the shell, as an administrator would make it.
        sh(&format!(
            r#"set -e
            cd {src}
            chmod 755 {tmp}
            echo hello > small
            : > empty
            printf 'root only\n' > secret && chmod 600 secret
            printf 'acl grants nobody\n' > acl_file && chmod 600 acl_file
            setfacl -m u:65534:r acl_file
            mkdir -m 700 private && echo hidden > private/inside
            mkdir -m 2775 setgid_dir && mkdir -m 1777 sticky
            setfacl -d -m g:65534:rx setgid_dir
            echo suid > suid && chmod 4755 suid && chown 1234:5678 suid
            mkdir -p a/b/c && echo deep > a/b/c/file
            ln small a/hardlink && ln small a/b/hardlink2
            ln -s ../small a/rel_link && ln -s /etc/hostname abs_link && ln -s nowhere dangling
            mkfifo fifo && mknod chr c 1 3 && mknod blk b 7 200
            printf 'x' > 'name with spaces' && printf 'y' > "$(printf 'bytes\377\001')"
            setfattr -n user.colour -v blue small
            setfattr -n trusted.secret -v 42 a
            touch -h -m -d '2021-03-04 05:06:07.123456789' small big a/b/c/file a/rel_link
            find . -exec touch -h -a -d '+2 hours' {{}} +
            "#,
            src = fx.src.display(),
            tmp = fx.tmp.display(),
        ));
        fx.backup("first");
        fx
    }

    fn backup(&self, name: &str) {
        let out = Command::new(BKFS)
            .args(["backup", "--no-progress", "--name", name, "--store"])
            .arg(&self.store)
            .arg(&self.src)
            .output()
            .unwrap();
        assert!(out.status.success(), "backup: {out:?}");
    }

    fn mount(&self) -> ViewMount {
        ViewMount::new(&self.store, &self.mnt, &self.tmp.join("daemon.log"))
    }

    /// Path of `rel` in snapshot `snap` of the mount.
    fn view(&self, snap: &str, rel: &str) -> PathBuf {
        self.mnt.join(snap).join(rel)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !is_mounted(&self.mnt) {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// `bkfs mount --store S MNT --foreground`; Drop unmounts (lazily if busy)
/// and waits for the daemon, also when a test panics.
struct ViewMount {
    mnt: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
}

impl ViewMount {
    fn new(store: &Path, mnt: &Path, log: &Path) -> ViewMount {
        let daemon = Command::new(BKFS)
            .arg("mount")
            .arg("--store")
            .arg(store)
            .arg(mnt)
            .arg("--foreground")
            .env("BKFS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .expect("start bkfs mount --store");
        let mut m = ViewMount {
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Some(status) = m.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("bkfs mount exited with {status}: {}", m.log());
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
        m
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts and checks the daemon stops by itself, successfully.
    fn unmount(mut self) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        assert!(out.status.success(), "umount: {out:?}");
        let status = wait_timeout(self.daemon.as_mut().unwrap(), Duration::from_secs(10))
            .expect("daemon did not exit after umount");
        assert!(status.success(), "daemon: {status}: {}", self.log());
        self.daemon = None;
    }
}

impl Drop for ViewMount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
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
    }
}

/// Every entry's metadata below `dir`, one sorted line each, with
/// nanosecond times (GNU find's `%T@` prints them all). Directory sizes
/// depend on the filesystem and are not recorded, so they are left out.
fn listing(dir: &Path) -> String {
    let fields = "%p %y %m %U %G %n %T@ %A@ %C@ %l";
    let out = sh(&format!(
        "cd '{}' && {{ find . -type d -printf '{fields}\\n'; \
         find . ! -type d -printf '{fields} %s\\n'; }} | sort",
        dir.display()
    ));
    assert!(out.lines().count() > 20, "{out}");
    out
}

/// `path inode` of every entry below `dir`.
fn inodes(dir: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -printf '%p %i\\n' | sort",
        dir.display()
    ))
}

#[test]
fn the_view_is_the_source_exactly() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let before = listing(&fx.src);
    let m = fx.mount();
    let rsync = sh(&format!(
        "rsync -aHAXn --checksum --itemize-changes '{}/' '{}/'",
        fx.src.display(),
        fx.view("first", "").display()
    ));
    assert_eq!(rsync, "", "rsync sees differences");
    assert_eq!(listing(&fx.view("first", "")), before);
    // `latest` is the newest snapshot.
    assert_eq!(
        fs::read_link(fx.mnt.join("latest")).unwrap(),
        Path::new("first")
    );
    assert_eq!(
        fs::read(fx.view("latest", "a/b/c/file")).unwrap(),
        b"deep\n"
    );
    let names = sh(&format!("ls -a '{}'", fx.mnt.display()));
    assert_eq!(names, ".\n..\nfirst\nlatest\n");
    m.unmount();
}

#[test]
fn inode_numbers_are_shared_by_links_and_stable_across_remounts() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mount();
    let ino = |rel: &str| fs::symlink_metadata(fx.view("first", rel)).unwrap().ino();
    assert_eq!(ino("small"), ino("a/hardlink"));
    assert_eq!(ino("small"), ino("a/b/hardlink2"));
    assert_ne!(ino("small"), ino("big"));
    // tar stores the second and third names as links of the first.
    let tar = sh(&format!(
        "cd '{}' && tar cf - . | tar tvf - | grep -c 'link to'",
        fx.view("first", "").display()
    ));
    assert_eq!(tar.trim(), "2");
    let first = inodes(&fx.mnt);
    m.unmount();
    let m = fx.mount();
    assert_eq!(inodes(&fx.mnt), first);
    m.unmount();
}

#[test]
fn reads_at_any_offset_and_holes_are_zeros() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mount();
    for rel in ["big", "sparse", "small", "empty"] {
        let want = fs::read(fx.src.join(rel)).unwrap();
        let f = fs::File::open(fx.view("first", rel)).unwrap();
        assert_eq!(fs::read(fx.view("first", rel)).unwrap(), want, "{rel}");
        let (mut off, mut size) = (0usize, 1usize);
        while off <= want.len() + 3 {
            let mut buf = vec![0x5au8; size];
            let n = f.read_at(&mut buf, off as u64).unwrap();
            let end = (off + size).min(want.len());
            let expect = want.get(off..end).unwrap_or(&[]);
            assert_eq!(&buf[..n], expect, "{rel}: {size} bytes at {off}");
            off += 333_331;
            size = (size * 7 + 4095) % 2_000_000;
        }
    }
    // The hole of the sparse file reads as zeros, and takes no blocks.
    let sparse = fs::read(fx.view("first", "sparse")).unwrap();
    assert!(sparse[5..3 << 20].iter().all(|&b| b == 0));
    assert!(sparse[(3 << 20) + 700_000..].iter().all(|&b| b == 0));
    let md = fs::metadata(fx.view("first", "sparse")).unwrap();
    assert_eq!(md.len(), 9 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "{} blocks", md.blocks());
    m.unmount();
}

#[test]
fn every_write_is_refused_with_erofs() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mount();
    let p = |rel: &str| fx.view("first", rel);
    let erofs = libc::EROFS;
    assert_eq!(errno_of(fs::write(p("new"), b"x")), erofs);
    assert_eq!(
        errno_of(fs::OpenOptions::new().append(true).open(p("small"))),
        erofs
    );
    assert_eq!(errno_of(fs::create_dir(p("dir"))), erofs);
    assert_eq!(errno_of(fs::remove_file(p("small"))), erofs);
    assert_eq!(errno_of(fs::rename(p("small"), p("moved"))), erofs);
    assert_eq!(errno_of(fs::hard_link(p("small"), p("l2"))), erofs);
    assert_eq!(errno_of(std::os::unix::fs::symlink("x", p("s2"))), erofs);
    assert_eq!(errno_of(fs::remove_dir(p("sticky"))), erofs);
    assert_eq!(errno_of(fs::create_dir(fx.mnt.join("newsnap"))), erofs);
    assert_eq!(
        nix::unistd::truncate(&p("small"), 0),
        Err(nix::errno::Errno::EROFS)
    );
    let status = |cmd: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    for cmd in [
        "chmod 777 {}/small",
        "chown 1:1 {}/small",
        "touch {}/small",
        "setfattr -n user.x -v y {}/small",
        "setfattr -x user.colour {}/small",
    ] {
        let out = status(&cmd.replace("{}", &p("").display().to_string()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Read-only file system"),
            "{cmd}: {err}"
        );
    }
    // Nothing changed in the store's view.
    assert_eq!(fs::read(p("small")).unwrap(), b"hello\n");
    m.unmount();
}

#[test]
fn nobody_reads_through_the_view_only_what_nobody_could_read_live() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mount();
    let snap = fx.view("first", "").display().to_string();
    // What nobody may read in the source, nobody may read in the view.
    for (script, needle) in [
        (
            format!("cat {}/secret", fx.src.display()),
            "Permission denied",
        ),
        (format!("cat {snap}/secret"), "Permission denied"),
        (format!("ls {snap}/private"), "Permission denied"),
        (format!("cat {snap}/private/inside"), "Permission denied"),
    ] {
        nobody_fails(&script, needle);
    }
    // And what they may, they may: world-readable files, and a 0600 file
    // whose recorded ACL grants them read (the kernel enforces the ACL).
    let out = as_nobody(&format!("cat {snap}/small {snap}/acl_file"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello\nacl grants nobody\n");
    // Root still reads the secret: ownership and mode, not a blanket refusal.
    assert_eq!(
        fs::read(fx.view("first", "secret")).unwrap(),
        b"root only\n"
    );
    m.unmount();
}

#[test]
fn a_damaged_chunk_fails_its_file_only_and_is_logged() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    // Garbage over the stored bytes of the second chunk of `big`.
    {
        let store = bkfs::store::Store::open(&fx.store).unwrap();
        let reader = store.reader().unwrap();
        let snap = store.snapshot("first").unwrap();
        let node = bkfs::restore::resolve(&reader, &snap, b"big").unwrap();
        assert!(node.content.len() > 2, "{} pieces", node.content.len());
        let loc = reader.locate(&node.content[1].id.unwrap()).unwrap();
        let pack = bkfs::store::pack::pack_path(&store.packs_dir(), loc.pack);
        let f = fs::OpenOptions::new().write(true).open(pack).unwrap();
        f.write_all_at(b"this is not the chunk", u64::from(loc.offset) + 10)
            .unwrap();
    }
    let m = fx.mount();
    // The first chunk reads; the second fails.
    let f = fs::File::open(fx.view("first", "big")).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 4096);
    drop(f);
    let err = fs::read(fx.view("first", "big")).map(drop).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fs::read(fx.view("first", "small")).unwrap(), b"hello\n");
    assert_eq!(fs::read(fx.view("first", "a/b/c/file")).unwrap(), b"deep\n");
    let log = m.log();
    assert!(
        log.contains("snapshot first: file big") && log.contains("damaged"),
        "{log}"
    );
    m.unmount();
}

#[test]
fn gc_refuses_while_mounted_and_the_cli_explains_mistakes() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let m = fx.mount();
    let gc = Command::new(BKFS)
        .args(["gc", "--store"])
        .arg(&fx.store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&gc.stderr);
    assert!(!gc.status.success() && err.contains("mount"), "{err}");
    // A snapshot taken while mounted shows up (the root is re-read).
    fs::write(fx.src.join("later"), b"later\n").unwrap();
    fx.backup("second");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fs::read(fx.view("second", "later")).unwrap(), b"later\n");
    assert_eq!(
        fs::read_link(fx.mnt.join("latest")).unwrap(),
        Path::new("second")
    );
    m.unmount();
    let gc = Command::new(BKFS)
        .args(["gc", "--store"])
        .arg(&fx.store)
        .output()
        .unwrap();
    assert!(gc.status.success(), "{gc:?}");

    let bkfs = |args: &[&str]| Command::new(BKFS).args(args).output().unwrap();
    let mnt = fx.mnt.to_str().unwrap();
    let out = bkfs(&["mount", "--store", "/nonexistent/store", mnt]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/store"), "{err}");
    let store = fx.store.to_str().unwrap();
    let out = bkfs(&["mount", "--store", store, "/tmp", mnt]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("only MOUNTPOINT"), "{err}");
}

#[test]
fn daemon_mode_returns_once_mounted_and_stops_on_umount() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let out = Command::new(BKFS)
        .arg("mount")
        .arg("--store")
        .arg(&fx.store)
        .arg(&fx.mnt)
        .arg("-o")
        .arg(format!("log={}", fx.tmp.join("daemon.log").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if is_mounted(self.0) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
    }
    let guard = Unmount(&fx.mnt);
    assert!(is_mounted(&fx.mnt));
    assert_eq!(fs::read(fx.view("first", "small")).unwrap(), b"hello\n");
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == fx.mnt.to_str())
        .unwrap();
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], fx.store.to_str().unwrap(), "{line}");
    assert_eq!(f[2], "fuse.bkfs", "{line}");
    // Snapshots keep set-id programs and device files as they were: the
    // view honours neither unless asked.
    let opts: Vec<&str> = f[3].split(',').collect();
    for flag in ["ro", "nodev", "nosuid"] {
        assert!(opts.contains(&flag), "{flag}: {line}");
    }
    sh(&format!("umount '{}'", fx.mnt.display()));
    assert!(!is_mounted(&fx.mnt));
    drop(guard);
}
