//! Unit tests of the live core, on a temporary directory, without mounting.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use super::*;

fn setup() -> (tempfile::TempDir, Live) {
    let dir = tempfile::tempdir().unwrap();
    let live = Live::new(dir.path(), LiveOptions::default()).unwrap();
    (dir, live)
}

fn names(live: &Live, dir: u64, plus: bool) -> BTreeSet<OsString> {
    let fh = live.opendir(dir).unwrap();
    let mut out = BTreeSet::new();
    live.readdir(fh, 0, plus, |e| {
        out.insert(e.name.to_owned());
        true
    })
    .unwrap();
    live.releasedir(fh);
    out
}

#[test]
fn root_is_id_one_and_ids_are_backing_inode_numbers() {
    let (dir, live) = setup();
    fs::write(dir.path().join("f"), b"x").unwrap();
    let e = live.lookup(ROOT_ID, OsStr::new("f")).unwrap();
    let ino = fs::metadata(dir.path().join("f")).unwrap().ino();
    assert_eq!(e.id(), ino);
    assert_eq!(live.getattr(ROOT_ID).unwrap().id(), ROOT_ID);
}

#[test]
fn lookup_counts_pin_nodes_until_forgotten() {
    let (dir, live) = setup();
    fs::write(dir.path().join("f"), b"x").unwrap();
    fs::hard_link(dir.path().join("f"), dir.path().join("g")).unwrap();
    let a = live.lookup(ROOT_ID, OsStr::new("f")).unwrap();
    let b = live.lookup(ROOT_ID, OsStr::new("g")).unwrap();
    assert_eq!(a.id(), b.id(), "hard links are one node");
    assert_eq!(live.nodes().lookups(a.id()), 2);
    live.forget(a.id(), 1);
    assert!(live.getattr(a.id()).is_ok());
    live.forget(a.id(), 1);
    assert_eq!(live.getattr(a.id()).unwrap_err(), Errno::ESTALE);
    assert_eq!(live.nodes().len(), 1, "only the root is left");
    live.forget(ROOT_ID, 100);
    assert!(live.getattr(ROOT_ID).is_ok(), "the root is never forgotten");
}

#[test]
fn missing_names_and_bad_names_fail_cleanly() {
    let (_dir, live) = setup();
    assert_eq!(
        live.lookup(ROOT_ID, OsStr::new("nope")).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(
        live.lookup(ROOT_ID, OsStr::new("..")).unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        live.lookup(ROOT_ID, OsStr::new("a/b")).unwrap_err(),
        Errno::EINVAL
    );
    let long = "x".repeat(256);
    assert_eq!(
        live.lookup(ROOT_ID, OsStr::new(&long)).unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(live.getattr(999_999).unwrap_err(), Errno::ESTALE);
}

#[test]
fn the_store_folder_is_invisible_and_untouchable() {
    let (dir, live) = setup();
    fs::create_dir(dir.path().join(".bkfs")).unwrap();
    fs::write(dir.path().join("file"), b"x").unwrap();
    let store = OsStr::new(".bkfs");
    assert_eq!(live.lookup(ROOT_ID, store).unwrap_err(), Errno::ENOENT);
    assert!(!names(&live, ROOT_ID, false).contains(store));
    assert!(!names(&live, ROOT_ID, true).contains(store));
    let c = Caller::ROOT;
    assert_eq!(
        live.mkdir(&c, ROOT_ID, store, 0o755, 0).unwrap_err(),
        Errno::EPERM
    );
    assert_eq!(
        live.create(&c, ROOT_ID, store, 0o644, 0, libc::O_RDWR)
            .unwrap_err(),
        Errno::EPERM
    );
    assert_eq!(live.rmdir(ROOT_ID, store).unwrap_err(), Errno::ENOENT);
    assert_eq!(
        live.rename(ROOT_ID, OsStr::new("file"), ROOT_ID, store, 0)
            .unwrap_err(),
        Errno::EPERM
    );
    let f = live.lookup(ROOT_ID, OsStr::new("file")).unwrap();
    assert_eq!(live.link(f.id(), ROOT_ID, store).unwrap_err(), Errno::EPERM);
    // Deeper down the name is an ordinary one.
    let sub = live
        .mkdir(&c, ROOT_ID, OsStr::new("sub"), 0o755, 0)
        .unwrap();
    assert!(live.mkdir(&c, sub.id(), store, 0o755, 0).is_ok());
    assert!(dir.path().join(".bkfs").is_dir());
}

#[test]
fn create_write_read_truncate() {
    let (dir, live) = setup();
    let (e, fh) = live
        .create(
            &Caller::ROOT,
            ROOT_ID,
            OsStr::new("f"),
            0o640,
            0o022,
            libc::O_RDWR,
        )
        .unwrap();
    assert_eq!(e.attr.st.st_mode & 0o7777, 0o640);
    assert_eq!(live.write(fh, 0, b"hello world", false).unwrap(), 11);
    let mut buf = [0u8; 64];
    assert_eq!(live.read(fh, 6, &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");
    let set = SetAttr {
        size: Some(5),
        ..SetAttr::default()
    };
    assert_eq!(live.setattr(e.id(), Some(fh), &set).unwrap().st.st_size, 5);
    live.release(fh);
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"hello");
    // Truncate without an open handle.
    let set = SetAttr {
        size: Some(2),
        ..SetAttr::default()
    };
    live.setattr(e.id(), None, &set).unwrap();
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"he");
    assert_eq!(live.open_handles(), 0);
}

#[test]
fn umask_applies_per_request() {
    let (dir, live) = setup();
    let c = Caller::ROOT;
    live.mkdir(&c, ROOT_ID, OsStr::new("d"), 0o777, 0o027)
        .unwrap();
    let mode = fs::metadata(dir.path().join("d"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    live.mkdir(&c, ROOT_ID, OsStr::new("e"), 0o777, 0o000)
        .unwrap();
    let mode = fs::metadata(dir.path().join("e"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o777);
}

#[test]
fn new_objects_belong_to_the_caller_and_setgid_dirs_give_their_group() {
    let (dir, live) = setup();
    let user = Caller {
        uid: 1234,
        gid: 5678,
        umask: 0o022,
    };
    let e = live
        .mkdir(&user, ROOT_ID, OsStr::new("d"), 0o755, 0o022)
        .unwrap();
    assert_eq!((e.attr.st.st_uid, e.attr.st.st_gid), (1234, 5678));
    let s = live
        .symlink(&user, ROOT_ID, OsStr::new("l"), OsStr::new("target"))
        .unwrap();
    assert_eq!((s.attr.st.st_uid, s.attr.st.st_gid), (1234, 5678));
    assert_eq!(live.readlink(s.id()).unwrap(), b"target");

    fs::create_dir(dir.path().join("g")).unwrap();
    std::os::unix::fs::chown(dir.path().join("g"), Some(0), Some(4242)).unwrap();
    fs::set_permissions(dir.path().join("g"), fs::Permissions::from_mode(0o2777)).unwrap();
    let g = live.lookup(ROOT_ID, OsStr::new("g")).unwrap();
    let (f, fh) = live
        .create(&user, g.id(), OsStr::new("f"), 0o644, 0o022, libc::O_WRONLY)
        .unwrap();
    live.release(fh);
    assert_eq!((f.attr.st.st_uid, f.attr.st.st_gid), (1234, 4242));
    let sub = live
        .mkdir(&user, g.id(), OsStr::new("sub"), 0o755, 0o022)
        .unwrap();
    assert_eq!(sub.attr.st.st_gid, 4242);
    assert_ne!(
        sub.attr.st.st_mode & libc::S_ISGID,
        0,
        "subdirectories inherit setgid"
    );
}

#[test]
fn rename_flags_and_links() {
    let (dir, live) = setup();
    fs::write(dir.path().join("a"), b"A").unwrap();
    fs::write(dir.path().join("b"), b"B").unwrap();
    assert_eq!(
        live.rename(
            ROOT_ID,
            OsStr::new("a"),
            ROOT_ID,
            OsStr::new("b"),
            libc::RENAME_NOREPLACE
        )
        .unwrap_err(),
        Errno::EEXIST
    );
    live.rename(
        ROOT_ID,
        OsStr::new("a"),
        ROOT_ID,
        OsStr::new("b"),
        libc::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"B");
    assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"A");
    let a = live.lookup(ROOT_ID, OsStr::new("a")).unwrap();
    let l = live.link(a.id(), ROOT_ID, OsStr::new("c")).unwrap();
    assert_eq!(l.id(), a.id());
    assert_eq!(l.attr.st.st_nlink, 2);
    assert_eq!(live.nodes().lookups(a.id()), 2);
    live.unlink(ROOT_ID, OsStr::new("c")).unwrap();
    assert_eq!(live.getattr(a.id()).unwrap().st.st_nlink, 1);
    assert_eq!(
        live.rmdir(ROOT_ID, OsStr::new("a")).unwrap_err(),
        Errno::ENOTDIR
    );
}

#[test]
fn setattr_times_with_omit_and_now() {
    let (dir, live) = setup();
    fs::write(dir.path().join("f"), b"x").unwrap();
    let f = live.lookup(ROOT_ID, OsStr::new("f")).unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_000_000, 123_456_789);
    let set = SetAttr {
        atime: Some(SetTime::At(t)),
        mtime: Some(SetTime::At(t)),
        ..SetAttr::default()
    };
    let attr = live.setattr(f.id(), None, &set).unwrap();
    assert_eq!(
        (attr.st.st_mtime, attr.st.st_mtime_nsec),
        (1_000_000, 123_456_789)
    );
    let set = SetAttr {
        atime: Some(SetTime::Now),
        ..SetAttr::default()
    };
    let attr = live.setattr(f.id(), None, &set).unwrap();
    assert_eq!(attr.st.st_mtime, 1_000_000, "mtime omitted");
    assert!(attr.st.st_atime > 1_000_000);
    let set = SetAttr {
        mode: Some(0o600),
        uid: Some(77),
        gid: Some(88),
        ..SetAttr::default()
    };
    let attr = live.setattr(f.id(), None, &set).unwrap();
    assert_eq!(attr.st.st_mode & 0o7777, 0o600);
    assert_eq!((attr.st.st_uid, attr.st.st_gid), (77, 88));
}

#[test]
fn xattrs_get_list_set_remove() {
    let (dir, live) = setup();
    fs::write(dir.path().join("f"), b"x").unwrap();
    let f = live.lookup(ROOT_ID, OsStr::new("f")).unwrap();
    let name = OsStr::new("user.test");
    live.setxattr(f.id(), name, b"value", 0).unwrap();
    assert_eq!(live.getxattr(f.id(), name, 0).unwrap(), Xattr::Size(5));
    assert_eq!(
        live.getxattr(f.id(), name, 64).unwrap(),
        Xattr::Data(b"value".to_vec())
    );
    assert_eq!(live.getxattr(f.id(), name, 2).unwrap_err(), Errno::ERANGE);
    assert_eq!(
        live.setxattr(f.id(), name, b"v", libc::XATTR_CREATE)
            .unwrap_err(),
        Errno::EEXIST
    );
    match live.listxattr(f.id(), 1024).unwrap() {
        Xattr::Data(list) => assert!(list.split(|&b| b == 0).any(|n| n == b"user.test")),
        other => panic!("{other:?}"),
    }
    live.removexattr(f.id(), name).unwrap();
    assert_eq!(live.getxattr(f.id(), name, 0).unwrap_err(), Errno::ENODATA);
}

#[test]
fn readdir_resumes_at_offsets_while_the_directory_changes() {
    let (dir, live) = setup();
    for i in 0..500 {
        fs::write(dir.path().join(format!("f{i:03}")), b"").unwrap();
    }
    let fh = live.opendir(ROOT_ID).unwrap();
    let mut seen = BTreeSet::new();
    let mut offset = 0;
    let mut round = 0;
    loop {
        let mut got = 0;
        live.readdir(fh, offset, round % 2 == 0, |e| {
            if got == 37 {
                return false; // "reply full"
            }
            got += 1;
            assert!(seen.insert(e.name.to_owned()), "{:?} listed twice", e.name);
            offset = e.next_offset;
            true
        })
        .unwrap();
        if got == 0 {
            break;
        }
        // Churn: add and remove other names between the calls.
        fs::write(dir.path().join(format!("new{round}")), b"").unwrap();
        let _ = fs::remove_file(dir.path().join(format!("new{}", round.max(1) - 1)));
        round += 1;
    }
    live.releasedir(fh);
    for i in 0..500 {
        assert!(
            seen.contains(OsStr::new(&format!("f{i:03}"))),
            "f{i:03} missing"
        );
    }
    assert!(seen.contains(OsStr::new(".")) && seen.contains(OsStr::new("..")));
    // Lookups taken by the plus rounds were either kept or given back.
    let kept: u64 = seen
        .iter()
        .filter_map(|n| live.lookup(ROOT_ID, n).ok())
        .map(|e| live.nodes().lookups(e.id()) - 1)
        .sum();
    assert!(
        kept <= 500,
        "no lookups leaked beyond one per listed entry: {kept}"
    );
}

#[test]
fn fifo_is_allowed_devices_need_the_dev_option() {
    let (_dir, live) = setup();
    let c = Caller::ROOT;
    let f = live
        .mknod(&c, ROOT_ID, OsStr::new("fifo"), libc::S_IFIFO | 0o644, 0, 0)
        .unwrap();
    assert_eq!(f.attr.kind(), libc::S_IFIFO);
    assert_eq!(
        live.mknod(
            &c,
            ROOT_ID,
            OsStr::new("null"),
            libc::S_IFCHR | 0o666,
            0,
            (1 << 8) | 3
        )
        .unwrap_err(),
        Errno::EPERM
    );
    let (dir2, _) = setup();
    let with_dev = Live::new(
        dir2.path(),
        LiveOptions {
            allow_devices: true,
            ..LiveOptions::default()
        },
    )
    .unwrap();
    let d = with_dev
        .mknod(
            &c,
            ROOT_ID,
            OsStr::new("null"),
            libc::S_IFCHR | 0o666,
            0,
            (1 << 8) | 3,
        )
        .unwrap();
    assert_eq!(d.attr.st.st_rdev, libc::makedev(1, 3));
    assert_eq!(crate::fuse::encode_dev(d.attr.st.st_rdev), (1 << 8) | 3);
}

#[test]
fn seek_data_and_holes_and_punching() {
    let (_dir, live) = setup();
    let (_e, fh) = live
        .create(
            &Caller::ROOT,
            ROOT_ID,
            OsStr::new("sparse"),
            0o644,
            0,
            libc::O_RDWR,
        )
        .unwrap();
    live.write(fh, 1 << 20, b"data", false).unwrap();
    assert_eq!(live.lseek(fh, 0, libc::SEEK_DATA).unwrap(), 1 << 20);
    assert_eq!(live.lseek(fh, 0, libc::SEEK_HOLE).unwrap(), 0);
    live.fallocate(
        fh,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        0,
        (1 << 20) + 4096,
    )
    .unwrap();
    assert_eq!(
        live.lseek(fh, 0, libc::SEEK_DATA).unwrap_err(),
        Errno::ENXIO
    );
    live.release(fh);
}

#[test]
fn nodes_past_the_descriptor_budget_are_held_by_file_handles() {
    let dir = tempfile::tempdir().unwrap();
    let live = Live::new(
        dir.path(),
        LiveOptions {
            fd_budget: Some(0),
            ..LiveOptions::default()
        },
    )
    .unwrap();
    let c = Caller::ROOT;
    let d = live.mkdir(&c, ROOT_ID, OsStr::new("d"), 0o755, 0).unwrap();
    let (f, fh) = live
        .create(&c, d.id(), OsStr::new("f"), 0o644, 0, libc::O_RDWR)
        .unwrap();
    live.write(fh, 0, b"handle-held", false).unwrap();
    live.release(fh);
    assert_eq!(live.nodes().pinned(), 1, "only the root holds a descriptor");
    // Every kind of operation works through the handle.
    let fh = live.open(f.id(), libc::O_RDONLY).unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(live.read(fh, 0, &mut buf).unwrap(), 11);
    live.release(fh);
    let set = SetAttr {
        mode: Some(0o600),
        size: Some(6),
        ..SetAttr::default()
    };
    assert_eq!(live.setattr(f.id(), None, &set).unwrap().st.st_size, 6);
    live.setxattr(f.id(), OsStr::new("user.k"), b"v", 0)
        .unwrap();
    assert_eq!(
        live.getxattr(f.id(), OsStr::new("user.k"), 8).unwrap(),
        Xattr::Data(b"v".to_vec())
    );
    let l = live.link(f.id(), ROOT_ID, OsStr::new("hard")).unwrap();
    assert_eq!(l.id(), f.id());
    assert_eq!(live.nodes().lookups(f.id()), 2);
    let s = live
        .symlink(&c, ROOT_ID, OsStr::new("s"), OsStr::new("d/f"))
        .unwrap();
    assert_eq!(live.readlink(s.id()).unwrap(), b"d/f");
    // A lookup finds the handle-held node again by its handle.
    let again = live.lookup(d.id(), OsStr::new("f")).unwrap();
    assert_eq!(again.id(), f.id());
    assert_eq!(live.nodes().lookups(f.id()), 3);
    // Delete the file while the kernel still names it: the handle is stale,
    // not another file's.
    live.unlink(d.id(), OsStr::new("f")).unwrap();
    live.unlink(ROOT_ID, OsStr::new("hard")).unwrap();
    assert!(matches!(
        live.getattr(f.id()),
        Err(Errno::ESTALE) | Err(Errno::ENOENT)
    ));
    // A new file (perhaps reusing the inode number) is looked up afresh.
    fs::write(dir.path().join("d/g"), b"new").unwrap();
    let g = live.lookup(d.id(), OsStr::new("g")).unwrap();
    assert_eq!(live.getattr(g.id()).unwrap().st.st_size, 3);
}

#[test]
fn kill_privs_removes_setuid_setgid_if_group_executable_and_capabilities() {
    let (dir, live) = setup();
    let p = dir.path().join("prog");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o6755)).unwrap();
    let f = live.lookup(ROOT_ID, OsStr::new("prog")).unwrap();
    assert!(live.has_privs(f.id()).unwrap());
    live.kill_privs(f.id()).unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert!(!live.has_privs(f.id()).unwrap());
    // Without group execute, set-group-id means mandatory locking: it stays.
    // (The mode changes through the tree: a file found without privileges
    // is looked at again only after a change through the mount.)
    let chmod = |mode| SetAttr {
        mode: Some(mode),
        ..SetAttr::default()
    };
    live.setattr(f.id(), None, &chmod(0o6740)).unwrap();
    live.kill_privs(f.id()).unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o2740
    );
    // Found without privileges to kill, then given set-user-id again.
    live.setattr(f.id(), None, &chmod(0o4755)).unwrap();
    live.kill_privs(f.id()).unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o755
    );
}
