//! Each operation of the live tree through a real mount, with its error
//! cases, compared with what the backing directory shows.
//!
//! Over 700 lines: one test per operation family, each self-contained;
//! they read best side by side.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::Duration;

use crate::common::*;

#[test]
fn stat_matches_the_backing_inode() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::write(src.join("f"), b"content").unwrap();
        fs::create_dir(src.join("d")).unwrap();
    });
    for name in ["f", "d"] {
        let a = fs::symlink_metadata(m.path(name)).unwrap();
        let b = fs::symlink_metadata(m.backing(name)).unwrap();
        assert_eq!(
            a.ino(),
            b.ino(),
            "{name}: inode numbers are the backing ones"
        );
        assert_eq!(
            (a.mode(), a.uid(), a.gid(), a.size(), a.nlink()),
            (b.mode(), b.uid(), b.gid(), b.size(), b.nlink())
        );
        assert_eq!((a.mtime(), a.mtime_nsec()), (b.mtime(), b.mtime_nsec()));
    }
    assert_eq!(fs::metadata(&m.mnt).unwrap().ino(), 1, "the root is node 1");
}

#[test]
fn create_write_read_append_truncate() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let p = m.path("file");
    fs::write(&p, b"hello").unwrap();
    assert_eq!(fs::read(m.backing("file")).unwrap(), b"hello");
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"hello world");
    // O_TRUNC
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"new").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"new");
    // Positional write beyond the end makes a hole of zeros.
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"X").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"new\0\0\0\0\0\0\0X");
    f.set_len(2).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(fs::read(m.backing("file")).unwrap(), b"ne");
    // A large file, several max-sized requests.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(m.path("big"), &big).unwrap();
    assert_eq!(fs::read(m.path("big")).unwrap(), big);
    assert_eq!(fs::read(m.backing("big")).unwrap(), big);
}

#[test]
fn open_flags_and_their_errors() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    // O_EXCL on an existing file.
    let e = OpenOptions::new().write(true).create_new(true).open(&p);
    assert_eq!(errno_of(e), libc::EEXIST);
    // O_NOFOLLOW on a symlink.
    std::os::unix::fs::symlink("f", m.path("link")).unwrap();
    let e = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(m.path("link"));
    assert_eq!(errno_of(e), libc::ELOOP);
    // Following the symlink works.
    assert_eq!(fs::read(m.path("link")).unwrap(), b"x");
    // Missing parent, missing file, directory opened for writing.
    assert_eq!(errno_of(File::create(m.path("no/such"))), libc::ENOENT);
    assert_eq!(errno_of(File::open(m.path("missing"))), libc::ENOENT);
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(
        errno_of(OpenOptions::new().write(true).open(m.path("d"))),
        libc::EISDIR
    );
    // O_DIRECTORY on a file.
    let e = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&p);
    assert_eq!(errno_of(e), libc::ENOTDIR);
    // O_DIRECT with aligned buffers.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.path("direct"))
        .unwrap();
    let layout = std::alloc::Layout::from_size_align(8192, 4096).unwrap();
    // SAFETY: the layout is non-zero sized; the buffer is freed below.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    // SAFETY: ptr points to 8192 initialised bytes owned here.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, 8192) };
    buf.fill(0xab);
    f.write_all(buf).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    buf.fill(0);
    f.read_exact(buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    drop(f);
    assert_eq!(fs::metadata(m.backing("direct")).unwrap().len(), 8192);
    // O_TMPFILE: either supported (and linkable) or refused with EOPNOTSUPP.
    let r = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&m.mnt);
    match r {
        Ok(mut f) => {
            f.write_all(b"tmp").unwrap();
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}"),
    }
}

#[test]
fn directories_and_their_errors() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    fs::create_dir(m.path("d")).unwrap();
    assert!(m.backing("d").is_dir());
    assert_eq!(errno_of(fs::create_dir(m.path("d"))), libc::EEXIST);
    fs::write(m.path("d/f"), b"").unwrap();
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::remove_file(m.path("d"))), libc::EISDIR);
    assert_eq!(errno_of(fs::remove_dir(m.path("d/f"))), libc::ENOTDIR);
    assert_eq!(errno_of(fs::create_dir(m.path("d/f/x"))), libc::ENOTDIR);
    fs::remove_file(m.path("d/f")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    assert!(!m.backing("d").exists());
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOENT);
    // fsyncdir
    fs::create_dir(m.path("e")).unwrap();
    File::open(m.path("e")).unwrap().sync_all().unwrap();
}

#[test]
fn readdir_is_complete_and_survives_concurrent_changes() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::create_dir(src.join("big")).unwrap();
        for i in 0..3000 {
            fs::write(src.join(format!("big/f{i:04}")), b"").unwrap();
        }
    });
    let listed = |p: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed(&m.path("big")), listed(&m.backing("big")));
    // Remove every other file while listing: each file that stays must be
    // listed exactly once.
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for e in fs::read_dir(m.path("big")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(seen.insert(name.clone()), "{name} listed twice");
        n += 1;
        if n % 2 == 0 {
            let victim = format!("f{:04}", (n * 7919) % 3000);
            let _ = fs::remove_file(m.path(&format!("big/{victim}")));
        }
        if n % 100 == 0 {
            fs::write(m.path(&format!("big/new{n}")), b"").unwrap();
        }
    }
    for name in listed(&m.backing("big")) {
        if name.starts_with('f') {
            assert!(seen.contains(&name), "{name} survived but was not listed");
        }
    }
    // ls -l (readdirplus) agrees with stat.
    let out = sh(&format!("ls -lai {} | wc -l", m.path("big").display()));
    assert!(out.trim().parse::<usize>().unwrap() > 1000);
}

#[test]
fn rename_including_noreplace_and_exchange() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("b"), b"B").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::rename(m.path("a"), m.path("d/a2")).unwrap();
    assert_eq!(fs::read(m.backing("d/a2")).unwrap(), b"A");
    fs::rename(m.path("d/a2"), m.path("b")).unwrap();
    assert_eq!(fs::read(m.path("b")).unwrap(), b"A");
    fs::write(m.path("c"), b"C").unwrap();
    let r = |from: &str, to: &str, flags: u32| -> i32 {
        let (f, t) = (cstr(&m.path(from)), cstr(&m.path(to)));
        // SAFETY: valid C strings.
        let ret = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                flags,
            )
        };
        if ret == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    assert_eq!(r("b", "c", libc::RENAME_NOREPLACE), libc::EEXIST);
    assert_eq!(r("b", "c", libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(m.path("b")).unwrap(), b"C");
    assert_eq!(fs::read(m.path("c")).unwrap(), b"A");
    assert_eq!(r("b", "nothere", libc::RENAME_EXCHANGE), libc::ENOENT);
    assert_eq!(r("b", "new", libc::RENAME_NOREPLACE), 0);
    // Directory into its own subdirectory, over a non-empty directory.
    fs::create_dir_all(m.path("p/q")).unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("p"), m.path("p/q/r"))),
        libc::EINVAL
    );
    fs::create_dir_all(m.path("full/x")).unwrap();
    assert_eq!(
        errno_of(fs::rename(m.path("p"), m.path("full"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::rename(m.path("p"), m.path("new"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::rename(m.path("new"), m.path("p"))),
        libc::EISDIR
    );
}

#[test]
fn hard_links_symlinks_and_readlink() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    fs::write(m.path("f"), b"data").unwrap();
    fs::hard_link(m.path("f"), m.path("g")).unwrap();
    let (a, b) = (
        fs::metadata(m.path("f")).unwrap(),
        fs::metadata(m.path("g")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        errno_of(fs::hard_link(m.path("f"), m.path("g"))),
        libc::EEXIST
    );
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(
        errno_of(fs::hard_link(m.path("d"), m.path("d2"))),
        libc::EPERM
    );
    fs::remove_file(m.path("f")).unwrap();
    assert_eq!(fs::metadata(m.path("g")).unwrap().nlink(), 1);
    std::os::unix::fs::symlink("g", m.path("s")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", m.path("dangling")).unwrap();
    assert_eq!(fs::read_link(m.path("s")).unwrap().to_str(), Some("g"));
    assert_eq!(
        fs::read_link(m.backing("dangling")).unwrap().to_str(),
        Some("/nowhere/at/all")
    );
    assert_eq!(errno_of(fs::read(m.path("dangling"))), libc::ENOENT);
    assert_eq!(errno_of(fs::read_link(m.path("g"))), libc::EINVAL);
    assert!(fs::symlink_metadata(m.path("s"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn setattr_chmod_chown_truncate_utimens() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let p = m.path("f");
    fs::write(&p, b"0123456789").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(
        fs::metadata(m.backing("f")).unwrap().mode() & 0o7777,
        0o4751
    );
    std::os::unix::fs::chown(&p, Some(1000), Some(2000)).unwrap();
    let md = fs::metadata(m.backing("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    // truncate(2) by path, larger and smaller.
    let c = cstr(&p);
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 4) }, 0);
    assert_eq!(fs::read(&p).unwrap(), b"0123");
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 6) }, 0);
    assert_eq!(fs::read(m.backing("f")).unwrap(), b"0123\0\0");
    // utimensat with a given time, UTIME_OMIT and UTIME_NOW.
    let set = |atime: libc::timespec, mtime: libc::timespec| {
        let times = [atime, mtime];
        // SAFETY: valid C string and two timespecs.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    };
    let at = |s, ns| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    set(at(1_000_000_000, 5), at(1_100_000_000, 123_456_789));
    let md = fs::metadata(m.backing("f")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 123_456_789));
    set(at(0, libc::UTIME_NOW), at(0, libc::UTIME_OMIT));
    let md = fs::metadata(m.backing("f")).unwrap();
    assert!(md.atime() > 1_700_000_000);
    assert_eq!(md.mtime(), 1_100_000_000);
    // And the mount reports what the backing file has.
    let mm = fs::metadata(&p).unwrap();
    assert_eq!((mm.mtime(), mm.mtime_nsec()), (md.mtime(), md.mtime_nsec()));
    // chmod of a symlink itself is not supported on Linux.
    std::os::unix::fs::symlink("f", m.path("l")).unwrap();
    let l = cstr(&m.path("l"));
    // SAFETY: valid C string.
    let r = unsafe { libc::fchmodat(libc::AT_FDCWD, l.as_ptr(), 0o600, libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, -1);
}

#[test]
fn fifos_and_devices_work_and_nodev_refuses_devices() {
    if !can_mount() {
        return;
    }
    // Devices by default, as on any filesystem root mounts (the source's,
    // here, honours them).
    let m = Mount::new("");
    sh(&format!("mkfifo {}", m.path("fifo").display()));
    assert!(fs::metadata(m.backing("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let p = m.path("fifo");
    let writer = std::thread::spawn(move || fs::write(p, b"through the pipe").unwrap());
    assert_eq!(fs::read(m.path("fifo")).unwrap(), b"through the pipe");
    writer.join().unwrap();
    sh(&format!("mknod {} c 1 3", m.path("null").display()));
    let md = fs::metadata(m.backing("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    assert_eq!(
        fs::metadata(m.path("null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    fs::write(m.path("null"), b"discarded").unwrap();
    drop(m);

    let m = Mount::with_source("nodev", |src| {
        sh(&format!("mknod {}/null c 1 3", src.display()));
    });
    let out = std::process::Command::new("mknod")
        .arg(m.path("zero"))
        .args(["c", "1", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not permitted"));
    let err = fs::OpenOptions::new().write(true).open(m.path("null"));
    assert_eq!(errno_of(err), libc::EACCES);
}

#[test]
fn xattrs_in_every_namespace() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let f = m.path("f");
    fs::write(&f, b"").unwrap();
    let fd = f.display();
    sh(&format!("setfattr -n user.color -v blue {fd}"));
    sh(&format!("setfattr -n trusted.secret -v t {fd}"));
    sh(&format!("setfattr -n security.label -v s {fd}"));
    let dump = sh(&format!("getfattr -d -m - {}", m.backing("f").display()));
    for want in [
        "user.color=\"blue\"",
        "trusted.secret=\"t\"",
        "security.label=\"s\"",
    ] {
        assert!(dump.contains(want), "{want} missing in {dump}");
    }
    let dump = sh(&format!("getfattr -d -m - {fd}"));
    assert!(dump.contains("user.color=\"blue\""), "{dump}");
    sh(&format!("setfattr -x user.color {fd}"));
    let out = std::process::Command::new("getfattr")
        .args(["-n", "user.color"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such attribute"));
    // user.* is refused on symlinks (EPERM), allowed on directories.
    std::os::unix::fs::symlink("f", m.path("l")).unwrap();
    let l = cstr(&m.path("l"));
    // SAFETY: valid C strings and a 1-byte value.
    let r = unsafe { libc::lsetxattr(l.as_ptr(), c"user.x".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    fs::create_dir(m.path("d")).unwrap();
    sh(&format!(
        "setfattr -n user.dir -v yes {}",
        m.path("d").display()
    ));
    // The trusted namespace is root's only.
    let out = as_nobody(&format!("getfattr -n trusted.secret {fd}"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret=\"t\""));
}

#[test]
fn statfs_is_the_backing_filesystems() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let a = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
    let b = nix::sys::statvfs::statvfs(&m.src).unwrap();
    assert_eq!(a.blocks(), b.blocks());
    assert_eq!(a.files(), b.files());
    assert_eq!(a.block_size(), b.block_size());
    assert_eq!(a.name_max(), b.name_max());
}

#[test]
fn fallocate_punch_hole_and_seek_data_hole() {
    if !can_mount() {
        return;
    }
    // Write-through, the source's holes are told; with the writeback cache
    // (the default with snapshots) the kernel answers as a filesystem
    // without holes, since data not yet written back may lie in one.
    for (opts, holes) in [("nowriteback", true), ("", false)] {
        let m = Mount::new(opts);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(m.path("sparse"))
            .unwrap();
        let fd = f.as_raw_fd();
        // SAFETY: plain syscalls on an open descriptor.
        unsafe {
            assert_eq!(libc::fallocate(fd, 0, 0, 1 << 20), 0);
        }
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        assert!(fs::metadata(m.backing("sparse")).unwrap().blocks() >= 2048);
        let (data0, hole0, hole_mid) = if holes {
            (512 * 1024, 0, 512 * 1024 + 4096)
        } else {
            (0, 1 << 20, 1 << 20)
        };
        // SAFETY: as above.
        unsafe {
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            assert_eq!(libc::fallocate(fd, punch, 0, 1 << 20), 0);
            assert_eq!(libc::pwrite(fd, b"x".as_ptr().cast(), 1, 512 * 1024), 1);
            assert_eq!(libc::lseek(fd, 0, libc::SEEK_DATA), data0, "{opts}");
            assert_eq!(libc::lseek(fd, 0, libc::SEEK_HOLE), hole0, "{opts}");
            assert_eq!(
                libc::lseek(fd, 512 * 1024, libc::SEEK_HOLE),
                hole_mid,
                "{opts}"
            );
            assert_eq!(libc::lseek(fd, 2 << 20, libc::SEEK_DATA), -1);
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENXIO)
        );
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        drop(f);
        // Written back at close, the punched range reads as zeros but the byte.
        let back = fs::read(m.backing("sparse")).unwrap();
        assert_eq!(back.len(), 1 << 20);
        assert!(back
            .iter()
            .enumerate()
            .all(|(i, &b)| b == if i == 512 * 1024 { b'x' } else { 0 }));
    }
}

#[test]
fn copy_file_range_copies_inside_the_mount() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.path("src"), &data).unwrap();
    let a = File::open(m.path("src")).unwrap();
    let b = File::create(m.path("dst")).unwrap();
    let mut copied = 0usize;
    while copied < data.len() {
        let (mut off_in, mut off_out) = (copied as i64, copied as i64);
        // SAFETY: open descriptors and valid offset pointers.
        let n = unsafe {
            libc::copy_file_range(
                a.as_raw_fd(),
                &mut off_in,
                b.as_raw_fd(),
                &mut off_out,
                data.len() - copied,
                0,
            )
        };
        assert!(n > 0, "{}", std::io::Error::last_os_error());
        copied += n as usize;
    }
    drop(b);
    assert_eq!(fs::read(m.backing("dst")).unwrap(), data);
}

#[test]
fn flock_and_posix_locks_exclude_other_processes() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let p = m.path("lock");
    fs::write(&p, b"").unwrap();
    let f = File::open(&p).unwrap();
    // SAFETY: flock on an open descriptor.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = std::process::Command::new("flock")
        .args(["-n", "-E", "42"])
        .arg(&p)
        .arg("true")
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(42), "flock must be held by us");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) }, 0);
    let out = std::process::Command::new("flock")
        .args(["-n", "-E", "42"])
        .arg(&p)
        .arg("true")
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(0));
    // A POSIX write lock held here blocks another process's F_SETLK.
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: F_SETLK with a valid struct flock.
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &lock) },
        0
    );
    let script = format!(
        "import fcntl,sys\nf=open('{}','r+')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n sys.exit(0)\nexcept OSError:\n sys.exit(42)\n",
        p.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .status();
    if let Ok(out) = out {
        assert_eq!(out.code(), Some(42), "the POSIX lock must exclude");
    }
}

#[test]
fn the_store_folder_is_invisible_through_the_mount() {
    if !can_mount() {
        return;
    }
    // Without snapshots, any folder of that name is hidden (with them, it
    // must be a store: see the next test).
    let m = Mount::with_source("snapshots=off", |src| {
        fs::create_dir(src.join(".bkfs")).unwrap();
        fs::write(src.join(".bkfs/pack"), b"secret").unwrap();
        fs::write(src.join("visible"), b"").unwrap();
    });
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("visible")]);
    assert_eq!(errno_of(fs::metadata(m.path(".bkfs"))), libc::ENOENT);
    assert_eq!(errno_of(fs::read(m.path(".bkfs/pack"))), libc::ENOENT);
    assert_eq!(errno_of(fs::create_dir(m.path(".bkfs"))), libc::EPERM);
    assert_eq!(errno_of(File::create(m.path(".bkfs"))), libc::EPERM);
    assert_eq!(
        errno_of(fs::rename(m.path("visible"), m.path(".bkfs"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("visible"), m.path(".bkfs"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", m.path(".bkfs"))),
        libc::EPERM
    );
    assert_eq!(errno_of(fs::remove_dir_all(m.path(".bkfs"))), libc::ENOENT);
    assert_eq!(fs::read(m.backing(".bkfs/pack")).unwrap(), b"secret");
}

#[test]
fn a_reader_and_a_writer_on_one_file_at_once() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let p = m.path("shared");
    fs::write(&p, vec![b'a'; 8192]).unwrap();
    // Reader first (passthrough), then a writer beside it.
    let mut reader = File::open(&p).unwrap();
    let mut writer = OpenOptions::new().write(true).open(&p).unwrap();
    writer.write_all(b"WRITTEN").unwrap();
    let mut buf = [0u8; 7];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"WRITTEN");
    // A second reader while both are open.
    assert_eq!(&fs::read(&p).unwrap()[..7], b"WRITTEN");
    drop(reader);
    drop(writer);
    // Writer first, then readers beside it.
    let mut writer = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut reader = File::open(&p).unwrap();
    writer.seek(SeekFrom::Start(100)).unwrap();
    writer.write_all(b"second").unwrap();
    reader.seek(SeekFrom::Start(100)).unwrap();
    let mut buf = [0u8; 6];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"second");
    // mmap of a read-only open sees the data.
    let out = sh(&format!("tail -c +101 {} | head -c 6", p.display()));
    assert_eq!(out, "second");
    drop((reader, writer));
    // Many opens and closes of one file from threads at once.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    if (i + t) % 3 == 0 {
                        let mut w = OpenOptions::new().write(true).open(&p).unwrap();
                        w.write_all(b"WRITTEN").unwrap();
                    } else {
                        let mut r = File::open(&p).unwrap();
                        let mut b = [0u8; 7];
                        r.read_exact(&mut b).unwrap();
                        assert_eq!(&b, b"WRITTEN");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(10));
}

/// A source on a tmpfs of `kib` KiB, mounted with `options` (store
/// elsewhere); the tmpfs goes when the mount does.
fn small_source(options: &str, kib: u64) -> (Mount, LazyUmount) {
    let store = tempfile::Builder::new()
        .prefix("bkfs-store-")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    let opts = format!("store={}/s", store.display());
    let opts = if options.is_empty() {
        opts
    } else {
        format!("{options},{opts}")
    };
    let m = Mount::with_source(&opts, |src| {
        sh(&format!(
            "mount -t tmpfs -o size={kib}k bkfs-test {}",
            src.display()
        ));
    });
    let guard = LazyUmount(vec![m.src.clone()], store);
    (m, guard)
}

/// Detaches the tmpfs under a test mount (lazily: the daemon still holds
/// it) and removes the store beside it.
struct LazyUmount(Vec<std::path::PathBuf>, std::path::PathBuf);

impl Drop for LazyUmount {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(p)
                .status();
        }
        let _ = fs::remove_dir_all(&self.1);
    }
}

/// Every byte that write(2) (or a store into a shared mapping) accepted is
/// in the backing file, or write, fsync or close reports the error: the
/// daemon must not turn a failed writeback into a short count the kernel
/// ignores.
#[test]
fn write_errors_are_reported_never_lost() {
    if !can_mount() {
        return;
    }
    for options in ["", "nowriteback", "snapshots=off"] {
        // 2500 KiB: a 1 MiB request fills it part way.
        let (m, _tmpfs) = small_source(options, 2500);
        let want: Vec<u8> = (0..2600 * 1024u32).map(|i| (i % 251) as u8).collect();

        // write(2): a short count, or an error now or at fsync or close.
        let mut f = File::create(m.path("w")).unwrap();
        let mut accepted = 0;
        let mut error = None;
        while accepted < want.len() {
            match f.write(&want[accepted..]) {
                Ok(0) => break,
                Ok(n) => accepted += n,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = error.or(f.sync_all().err());
        // SAFETY: the descriptor is ours; File's own close would hide the result.
        let closed = unsafe { libc::close(f.as_raw_fd()) };
        std::mem::forget(f);
        let error = error.or((closed != 0).then(std::io::Error::last_os_error));
        let stored = fs::read(m.backing("w")).unwrap();
        if error.is_none() {
            assert_eq!(
                stored.len(),
                accepted,
                "{options:?}: write(2) accepted {accepted} bytes and nothing reported an error, \
                 but {} reached the file",
                stored.len()
            );
        }
        assert_eq!(stored[..], want[..stored.len()], "{options:?}: data");
        fs::remove_file(m.path("w")).unwrap();

        if options == "snapshots=off" {
            // Kernel passthrough maps the tmpfs file itself: a store into a
            // page tmpfs cannot allocate is a SIGBUS, as natively.
            m.unmount();
            continue;
        }
        // A shared mapping: fsync reports what its writeback could not store.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.path("m"))
            .unwrap();
        let len = want.len();
        f.set_len(len as u64).unwrap();
        // SAFETY: a fresh shared mapping of `len` bytes of an open file,
        // written and unmapped here only.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::ptr::copy_nonoverlapping(want.as_ptr(), p.cast::<u8>(), len);
            libc::munmap(p, len);
        }
        let synced = f.sync_all();
        let stored = fs::read(m.backing("m")).unwrap_or_default();
        if synced.is_ok() {
            assert!(
                stored == want,
                "{options:?}: fsync of a mapping succeeded, but the file holds other data"
            );
        }
        drop(f);
        m.unmount();
    }
}
