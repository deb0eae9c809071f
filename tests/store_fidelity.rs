//! Store issue: full metadata fidelity through `bkfs backup` and `bkfs restore`.
//!
//! One source tree with every kind of object and attribute a demanding user has; backed up and
//! restored by the real binary; compared by rsync -aHAXn --checksum and by our own listing with
//! nanosecond times, xattrs, ACLs and hard-link groups.
//!
//! Over 700 lines: the one source tree with every kind of object, built
//! here, and the tests that check each part of it.

mod common;

use common::*;
use std::ffi::CString;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

const SOCKET: &str = "the_socket";
const GIB: u64 = 1 << 30;

/// Builds the source tree. Returns nothing: the listing is the truth.
fn build_tree(src: &Path) {
    let mut rng = Rng::new(0xf1de_1177);
    let p = |s: &str| src.join(s);

    // Regular files of several sizes.
    fs::write(p("empty"), b"").unwrap();
    fs::write(p("one"), b"x").unwrap();
    write_random(&p("k100"), 100 * 1024, &mut rng);
    write_random(&p("m20"), 20 << 20, &mut rng);
    write_text(&p("text"), 300_000, &mut rng);

    // Sparse: 1 GiB apparent, data at three places.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(p("sparse")).unwrap();
        f.write_all(&rng.bytes(4096)).unwrap();
        f.seek(SeekFrom::Start(GIB / 2 + 12345)).unwrap();
        f.write_all(&rng.bytes(65536)).unwrap();
        f.seek(SeekFrom::Start(GIB - 4096)).unwrap();
        f.write_all(&rng.bytes(4096)).unwrap();
        f.set_len(GIB).unwrap();
    }

    // Nested directories, an empty one.
    fs::create_dir_all(p("d1/d2/d3")).unwrap();
    fs::write(p("d1/d2/d3/deep.txt"), b"deep\n").unwrap();
    fs::create_dir(p("emptydir")).unwrap();

    // Symlinks: relative, absolute, dangling, and one to a directory.
    fs::create_dir(p("links")).unwrap();
    symlink("../one", p("links/rel")).unwrap();
    symlink("/etc/hostname", p("links/abs")).unwrap();
    symlink("no/such/target", p("links/dangling")).unwrap();
    symlink("../d1/d2", p("links/todir")).unwrap();

    // Hard links: three names, one inode, across directories.
    fs::create_dir(p("hl")).unwrap();
    fs::write(p("hl/a"), b"hard linked contents\n").unwrap();
    fs::hard_link(p("hl/a"), p("d1/hl_b")).unwrap();
    fs::hard_link(p("hl/a"), p("d1/d2/hl_c")).unwrap();
    // And a second group of two with big random data (chunks shared, restored once).
    write_random(&p("hl/big1"), 3 << 20, &mut rng);
    fs::hard_link(p("hl/big1"), p("d1/big2")).unwrap();

    // FIFO and devices.
    mkfifo(&p("fifo"), 0o640);
    mknod(&p("chr"), libc::S_IFCHR, 0o620, 240, 7);
    mknod(&p("blk"), libc::S_IFBLK, 0o660, 7, 200);

    // Modes.
    fs::write(p("suid"), b"#!/bin/sh\n").unwrap();
    fs::write(p("sgid_file"), b"sgid\n").unwrap();
    fs::write(p("mode0000"), b"nobody reads me\n").unwrap();
    fs::write(p("mode0707"), b"odd\n").unwrap();
    fs::create_dir(p("sgid_dir")).unwrap();
    fs::create_dir(p("sticky_dir")).unwrap();
    fs::create_dir(p("dir0500")).unwrap();
    fs::write(p("dir0500/inside"), b"inside a read-only dir\n").unwrap();

    // Owners other than root (chown before chmod: chown clears setuid).
    for (name, uid, gid) in [
        ("suid", 1234, 5678),
        ("sgid_file", 1234, 5678),
        ("mode0707", 4321, 8765),
        ("sgid_dir", 1234, 5678),
        ("d1", 1234, 5678),
        ("links/rel", 1234, 5678),
        ("fifo", 4321, 8765),
        ("chr", 4321, 0),
        ("k100", 65534, 65534),
        ("hl/a", 2000, 3000),
    ] {
        lchown(&p(name), uid, gid);
    }
    chmod(&p("suid"), 0o4755);
    chmod(&p("sgid_file"), 0o2710);
    chmod(&p("mode0000"), 0o000);
    chmod(&p("mode0707"), 0o707);
    chmod(&p("sgid_dir"), 0o2775);
    chmod(&p("sticky_dir"), 0o1777);
    chmod(&p("k100"), 0o6750);
    chmod(&p("dir0500"), 0o500);

    // Names: 255 bytes, 255 bytes of UTF-8, not UTF-8, spaces, newlines, tabs, backslashes.
    let long = "L".repeat(255);
    fs::write(p(&long), b"long name\n").unwrap();
    let long_utf8 = format!("{}x", "\u{df}".repeat(127));
    assert_eq!(long_utf8.len(), 255);
    fs::write(p(&long_utf8), b"long utf-8 name\n").unwrap();
    fs::write(join_bytes(src, b"bad\xff\xfename"), b"not utf-8\n").unwrap();
    fs::create_dir(join_bytes(src, b"dir\xfe")).unwrap();
    fs::write(join_bytes(src, b"dir\xfe/inner\xff"), b"inner\n").unwrap();
    fs::write(p("with space"), b"s\n").unwrap();
    fs::write(p("new\nline"), b"n\n").unwrap();
    fs::write(p("tab\there"), b"t\n").unwrap();
    fs::write(p("back\\slash"), b"b\n").unwrap();
    fs::write(p("-dash"), b"d\n").unwrap();
    fs::write(p("colon:name"), b"c\n").unwrap();
    fs::write(p("quote\"'*?[x]"), b"q\n").unwrap();
    fs::write(p("\u{1f600}emoji"), b"e\n").unwrap();

    // xattrs in user., trusted., security. with binary values; on a directory and a symlink.
    set_xattr(&p("k100"), "user.bin", &[0, 1, 2, 255, 0]);
    set_xattr(&p("k100"), "user.empty", b"");
    set_xattr(&p("k100"), "trusted.t", b"tr\0usted\xff");
    set_xattr(&p("k100"), "security.s", b"x\0y");
    set_xattr(&p("k100"), "user.big", &rng.bytes(3000));
    set_xattr(&p("d1"), "user.dirattr", b"on a directory");
    set_xattr(&p("d1"), "trusted.dir", &[0xde, 0xad]);
    set_xattr(&p("links/abs"), "trusted.onlink", b"xattr on a symlink");
    set_xattr(&p("hl/a"), "user.shared", b"one inode, three names");
    set_xattr(&p("fifo"), "trusted.fifo", b"f");
    set_xattr(&p("emptydir"), "user.e", b"empty dir attr");
    set_xattr_bytes(&p("one"), b"user.not-utf8-\xff\xfe", b"\xff");

    // POSIX ACLs: access ACL on a file, access + default ACL on a directory, and a file
    // created inside after the default ACL (inherits).
    fs::write(p("acl_file"), b"acl\n").unwrap();
    sh(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:1234:rwx,g:5678:r-x,u:65534:r--,m:rwx"),
            p("acl_file").as_os_str(),
        ],
    );
    fs::create_dir(p("acl_dir")).unwrap();
    sh(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:1234:rwx,g:5678:rx"),
            p("acl_dir").as_os_str(),
        ],
    );
    sh(
        "setfacl",
        &[
            OsStr::new("-d"),
            OsStr::new("-m"),
            OsStr::new("u:1234:rwx,g:5678:r-x,o::---"),
            p("acl_dir").as_os_str(),
        ],
    );
    fs::write(p("acl_dir/inherited"), b"inherits the default ACL\n").unwrap();
    fs::create_dir(p("acl_dir/subdir")).unwrap();
    // Children of a default-ACL directory that had their inherited ACLs taken away: a restore
    // that sets the parent's default ACL first must not let them inherit it again.
    fs::write(p("acl_dir/no_acl"), b"no ACL of its own\n").unwrap();
    fs::create_dir(p("acl_dir/no_acl_dir")).unwrap();
    sh(
        "setfacl",
        &[OsStr::new("-b"), p("acl_dir/no_acl").as_os_str()],
    );
    sh(
        "setfacl",
        &[
            OsStr::new("-b"),
            OsStr::new("-k"),
            p("acl_dir/no_acl_dir").as_os_str(),
        ],
    );

    // A UNIX socket: must be skipped with a warning.
    let l = std::os::unix::net::UnixListener::bind(p(SOCKET)).unwrap();
    drop(l);

    // Times last, children before parents, each entry its own nanosecond values; a few
    // extremes: before 1970, after 2038, and nanoseconds 0 and 999999999.
    let mut all = Vec::new();
    collect(src, &mut all);
    all.sort_by_key(|q| std::cmp::Reverse(q.components().count()));
    all.push(src.to_path_buf());
    for (i, q) in all.iter().enumerate() {
        let i = i as i64;
        let m = (
            1_000_000_000 + i * 86_401,
            (i * 7_919 + 123_456_789) % 1_000_000_000,
        );
        let mut a = (
            1_100_000_000 + i * 3_607,
            (i * 104_729 + 987_654_321) % 1_000_000_000,
        );
        if q.symlink_metadata().unwrap().file_type().is_symlink() {
            // Reading a link's target touches its atime unless the atime is ahead of its
            // ctime and mtime and less than a day old (relatime): give links such atimes.
            a.0 = future_secs() + i;
        }
        set_times(q, a, m);
    }
    set_times(&p("one"), (-86_400 * 365 * 10, 1), (-1, 999_999_999));
    set_times(
        &p("empty"),
        (4_102_444_800, 0),
        (4_102_444_800 + 17, 500_000_000),
    );
    set_times(&p("links/dangling"), (future_secs(), 999_999_999), (7, 0));
    set_times(src, (1_200_000_000, 111), (1_300_000_000, 222));
}

fn collect(d: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(d).unwrap().flatten() {
        let q = e.path();
        if e.file_type().unwrap().is_dir() {
            collect(&q, out);
        }
        out.push(q);
    }
}

#[test]
fn metadata_round_trip() {
    if !require(true, &["rsync", "setfacl", "getfattr"]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let before = listing(&src);
    let mut f = Failures::new();

    // Sanity of the test itself: the listing saw what we built.
    assert!(before.entries.contains_key(b"bad\xff\xfename".as_slice()));
    assert_eq!(
        before.entries[b"hl/a".as_slice()]
            .links
            .as_ref()
            .unwrap()
            .len(),
        3
    );
    assert!(before.entries[b"acl_dir".as_slice()]
        .xattrs
        .contains_key(b"system.posix_acl_default".as_slice()));

    let store = Store::new();
    let b = store.backup(&src, "one");
    f.code(
        &b,
        0,
        "backup of a tree with a socket (a skipped socket is a warning: exit 0)",
    );
    f.check(b.stderr_str().contains(SOCKET), || {
        format!(
            "backup should warn on stderr that it skipped the socket `{SOCKET}`\n{}",
            b.describe()
        )
    });

    // Reading the source must not change it, atimes included (O_NOATIME, also on directories).
    let after = listing(&src);
    f.same(
        "source changed by `bkfs backup` (expected: nothing, atimes included)",
        &before,
        &after,
    );

    let dest = work.path().join("dest");
    let r = store.restore("one", &dest);
    if f.code(&r, 0, "restore of the whole snapshot into a new directory") {
        let got = listing(&dest);
        f.same(
            "restored tree differs from the source (expected side = source)",
            &before,
            &got,
        );
        f.check(fs::symlink_metadata(dest.join(SOCKET)).is_err(), || {
            "the socket was skipped at backup, so restore must not create it".into()
        });
        // Sparse files come back sparse.
        let sb = fs::metadata(src.join("sparse")).unwrap().blocks();
        if let Ok(m) = fs::metadata(dest.join("sparse")) {
            f.check(m.blocks() <= sb * 2 + 2048, || {
                format!(
                    "restored sparse file is not sparse: st_blocks {} (source {}), apparent size {}",
                    m.blocks(),
                    sb,
                    m.len()
                )
            });
        }
        let rs = rsync_diff(&src, &dest, &[&format!("/{SOCKET}")]);
        f.check(rs.trim().is_empty(), || {
            format!("rsync -aHAXn --checksum --itemize-changes --delete SRC/ DEST/ reports differences:\n{rs}")
        });
    }

    let c = store.check();
    f.code(&c, 0, "check after backup and restore");
    f.finish();
}

/// `bkfs ls -l` of the snapshot shows the nanosecond mtime (the contract says it does).
#[test]
fn ls_long_shows_nanoseconds() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    set_times(
        &src.join("f"),
        (1_000_000_000, 0),
        (1_500_000_000, 123_456_789),
    );
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let o = store.run(["ls", "s", "-l"]);
    o.ok("ls -l");
    let line = o
        .stdout_str()
        .lines()
        .find(|l| l.split_whitespace().last() == Some("f"))
        .map(String::from);
    let line = line.unwrap_or_else(|| panic!("`ls -l` has no line for `f`\n{}", o.describe()));
    assert!(
        line.contains("123456789"),
        "`ls -l` should show the mtime with nanoseconds (…123456789): {line:?}"
    );
}

/// Less common shapes: holes at the head and tail, a file that is one hole, long and non-UTF-8
/// symlink targets, large device numbers, control characters in names, a wide directory, deep
/// nesting, hard links whose names sort apart, and a restore into an existing empty directory.
#[test]
fn odd_shapes_round_trip() {
    if !require(true, &["rsync"]) {
        return;
    }
    use std::io::{Seek, SeekFrom, Write};
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x0dd);
    let p = |s: &str| src.join(s);

    let mut fh = fs::File::create(p("hole_head")).unwrap();
    fh.seek(SeekFrom::Start(64 << 20)).unwrap();
    fh.write_all(&rng.bytes(4096)).unwrap();
    let mut fh = fs::File::create(p("hole_tail")).unwrap();
    fh.write_all(&rng.bytes(4096)).unwrap();
    fh.set_len(256 << 20).unwrap();
    fs::File::create(p("all_hole"))
        .unwrap()
        .set_len(GIB / 4)
        .unwrap();
    // Zeros written out (not a hole): content is what matters; restoring it sparse is allowed.
    fs::write(p("zeros"), vec![0u8; 3 << 20]).unwrap();

    symlink("t/".repeat(2000), p("long_target")).unwrap();
    symlink(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad\xff\xfetarget"),
        p("bad_target"),
    )
    .unwrap();
    mknod(&p("bigdev"), libc::S_IFCHR, 0o600, 4095, 1_048_575);
    mknod(&p("zerodev"), libc::S_IFBLK, 0o600, 0, 0);
    fs::write(p("ctl\u{1}\u{7f}\u{1b}[31mred"), b"c").unwrap();
    fs::create_dir(p("wide")).unwrap();
    for i in 0..3000 {
        fs::write(p(&format!("wide/entry-{i:05}")), format!("{i}")).unwrap();
    }
    let mut deep = src.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("level{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), b"bottom").unwrap();
    fs::write(p("zzz_first_name"), b"linked").unwrap();
    fs::hard_link(p("zzz_first_name"), p("aaa_second_name")).unwrap();
    fs::hard_link(p("zzz_first_name"), deep.join("third")).unwrap();
    // A directory without write permission for its owner, with contents.
    fs::create_dir(p("ro_dir")).unwrap();
    fs::write(p("ro_dir/f"), b"f").unwrap();
    chmod(&p("ro_dir"), 0o555);

    settle_symlink_atimes(&src);
    let opts = ListOpts {
        root: false,
        ..Default::default()
    };
    let before = listing_with(&src, opts);
    let store = Store::new();
    let mut f = Failures::new();
    store.backup(&src, "odd").ok("backup");
    // Into an existing empty directory this time.
    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    if f.code(
        &store.restore("odd", &dest),
        0,
        "restore into an existing empty directory",
    ) {
        f.same(
            "odd shapes restored (expected = source)",
            &before,
            &listing_with(&dest, opts),
        );
        for (name, max_blocks) in [("hole_head", 64), ("hole_tail", 64), ("all_hole", 8)] {
            let b = fs::metadata(dest.join(name)).unwrap().blocks();
            f.check(b <= max_blocks, || {
                format!("{name} was restored with {b} blocks of 512 bytes: not sparse")
            });
        }
        // Modes do not depend on the umask of the restoring process.
        let dest2 = work.path().join("dest_umask");
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg("umask 0777; exec \"$0\" restore odd \"$1\" --store \"$2\"")
            .arg(bkfs_bin())
            .arg(&dest2)
            .arg(&store.path);
        let o = run_cmd(c, TIMEOUT);
        if f.code(&o, 0, "restore with umask 0777") {
            f.same(
                "restore with umask 0777 (expected = source)",
                &before,
                &listing_with(&dest2, opts),
            );
        }
        let rs = rsync_diff(&src, &dest, &[]);
        let rs: Vec<&str> = rs
            .lines()
            .filter(|l| !l.starts_with(".d") || !l.ends_with("./"))
            .collect();
        f.check(rs.is_empty(), || {
            format!("rsync -aHAXn --checksum reports:\n{}", rs.join("\n"))
        });
    }
    f.finish();
}

/// Many hard-link groups spread over many directories (restored in parallel, the second name
/// may come before the first), some in directories without any permission bits.
#[test]
fn many_hard_links_across_directories() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    let mut rng = Rng::new(0x11);
    let mut files = Vec::new();
    for d in 0..24 {
        let dir = src.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..12 {
            let p = dir.join(format!("f{i}"));
            let size = if rng.chance(10) {
                1 << 20
            } else {
                rng.range(0, 5000)
            };
            write_random(&p, size, &mut rng);
            files.push(p);
        }
    }
    for n in 0..120 {
        let t = rng.pick(&files).clone();
        let d = src.join(format!("dir{:02}", rng.range(0, 24)));
        let name = d.join(format!("link{n}"));
        fs::hard_link(&t, &name).unwrap();
    }
    for d in [3, 7, 11] {
        chmod(&src.join(format!("dir{d:02}")), 0o000);
    }
    let want = listing(&src);
    let store = Store::new();
    store.backup(&src, "links").ok("backup");
    let dest = work.path().join("dest");
    let mut f = Failures::new();
    if f.code(&store.restore("links", &dest), 0, "restore") {
        f.same("hard links across directories", &want, &listing(&dest));
    }
    f.finish();
}

/// A sparse file larger than 4 GiB with data beyond 4 GiB and across the 4 GiB boundary
/// (offsets and lengths must not be 32-bit anywhere).
#[test]
fn sparse_file_beyond_4_gib() {
    if !require(true, &[]) {
        return;
    }
    use std::io::{Read, Seek, SeekFrom, Write};
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x4);
    let regions: [(u64, usize); 3] = [
        (0, 4096),
        ((4 << 30) - 2048, 8192),
        ((9 << 30) + 5, 1 << 20),
    ];
    let total = 10u64 << 30;
    let mut fh = fs::File::create(src.join("huge")).unwrap();
    let mut datas = Vec::new();
    for (off, len) in regions {
        let d = rng.bytes(len);
        fh.seek(SeekFrom::Start(off)).unwrap();
        fh.write_all(&d).unwrap();
        datas.push(d);
    }
    fh.set_len(total).unwrap();
    drop(fh);
    let store = Store::new();
    store
        .backup(&src, "huge")
        .ok("backup of a 10 GiB sparse file");
    let dest = work.path().join("dest");
    let mut f = Failures::new();
    if f.code(&store.restore("huge", &dest), 0, "restore") {
        let p = dest.join("huge");
        let m = fs::metadata(&p).unwrap();
        f.check(m.len() == total, || {
            format!("size {} instead of {total}", m.len())
        });
        f.check(m.blocks() < 8192, || {
            format!(
                "restored with {} blocks of 512 bytes: holes were written out",
                m.blocks()
            )
        });
        let mut fh = fs::File::open(&p).unwrap();
        for ((off, len), want) in regions.iter().zip(&datas) {
            let mut got = vec![0u8; *len];
            fh.seek(SeekFrom::Start(*off)).unwrap();
            fh.read_exact(&mut got).unwrap();
            f.check(&got == want, || {
                format!("data at offset {off} ({len} bytes) differs")
            });
        }
        // And zeros around them (spot checks).
        for off in [
            8192u64,
            (4 << 30) + 8192,
            (9 << 30) + (2 << 20),
            total - 4096,
        ] {
            let mut got = vec![1u8; 4096];
            fh.seek(SeekFrom::Start(off)).unwrap();
            fh.read_exact(&mut got).unwrap();
            f.check(got.iter().all(|b| *b == 0), || {
                format!("hole at {off} is not zeros")
            });
        }
    }
    f.code(&store.check_data(), 0, "check --read-data");
    f.finish();
}

/// A tree deeper than PATH_MAX (4096 bytes of path): backup and restore work level by level
/// (*at calls), so every directory comes back with its metadata and the bottom file with its
/// contents.
#[test]
fn deeper_than_path_max() {
    if !require(true, &[]) {
        return;
    }
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const LEVELS: usize = 200;
    fn name(i: usize) -> CString {
        CString::new(format!("level{i:03}_{}", "x".repeat(20))).unwrap()
    }
    fn open_at(dir: &OwnedFd, n: &CString) -> OwnedFd {
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                n.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0, "openat: {}", std::io::Error::last_os_error());
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
    fn open_root(p: &Path) -> OwnedFd {
        let c = cstr(p);
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0, "open {p:?}: {}", std::io::Error::last_os_error());
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
    fn stat_at(dir: &OwnedFd, n: &CString) -> Option<libc::stat> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                n.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st)
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    // Build with *at calls: mkdirat, set a mode and nanosecond times on each level (deepest
    // last so parents keep theirs), and a file at the bottom.
    let mut fds = vec![open_root(&src)];
    for i in 0..LEVELS {
        let n = name(i);
        let r = unsafe { libc::mkdirat(fds[i].as_raw_fd(), n.as_ptr(), 0o755) };
        assert_eq!(
            r,
            0,
            "mkdirat level {i}: {}",
            std::io::Error::last_os_error()
        );
        fds.push(open_at(&fds[i], &n));
    }
    let bottom = CString::new("bottom").unwrap();
    let fd = unsafe {
        libc::openat(
            fds[LEVELS].as_raw_fd(),
            bottom.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
            0o640,
        )
    };
    assert!(fd >= 0);
    let data = b"at the bottom of a very deep tree\n";
    assert_eq!(
        unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) },
        data.len() as isize
    );
    unsafe { libc::close(fd) };
    for i in (0..LEVELS).rev() {
        let n = name(i);
        let ts = [
            libc::timespec {
                tv_sec: 1_000_000_000 + i as i64,
                tv_nsec: 7,
            },
            libc::timespec {
                tv_sec: 1_200_000_000 + i as i64,
                tv_nsec: 123_456_000 + i as i64,
            },
        ];
        let mode = if i % 2 == 0 { 0o750 } else { 0o705 };
        let r = unsafe { libc::fchmodat(fds[i].as_raw_fd(), n.as_ptr(), mode, 0) };
        assert_eq!(r, 0);
        let r = unsafe {
            libc::utimensat(
                fds[i].as_raw_fd(),
                n.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0);
    }
    drop(fds);

    let store = Store::new();
    let mut f = Failures::new();
    let b = store.backup(&src, "deep");
    f.code(&b, 0, "backup of a tree deeper than PATH_MAX");
    let dest = work.path().join("dest");
    let r = store.restore("deep", &dest);
    f.code(&r, 0, "restore of a tree deeper than PATH_MAX");
    if dest.is_dir() {
        let (mut s, mut d) = (open_root(&src), open_root(&dest));
        let mut mismatch_reported = false;
        for i in 0..LEVELS {
            let n = name(i);
            let (ss, ds) = (stat_at(&s, &n).unwrap(), stat_at(&d, &n));
            let Some(ds) = ds else {
                f.fail(format!("level {i} is missing in the restored tree"));
                break;
            };
            let same = ss.st_mode == ds.st_mode
                && ss.st_mtime == ds.st_mtime
                && ss.st_mtime_nsec == ds.st_mtime_nsec
                && ss.st_atime == ds.st_atime
                && ss.st_atime_nsec == ds.st_atime_nsec;
            if !same && !mismatch_reported {
                mismatch_reported = true;
                f.fail(format!(
                    "level {i} (path of {} bytes) restored with mode {:o} mtime {}.{:09} atime {}.{:09}, source has mode {:o} mtime {}.{:09} atime {}.{:09}",
                    (i + 1) * 27,
                    ds.st_mode, ds.st_mtime, ds.st_mtime_nsec, ds.st_atime, ds.st_atime_nsec,
                    ss.st_mode, ss.st_mtime, ss.st_mtime_nsec, ss.st_atime, ss.st_atime_nsec
                ));
            }
            s = open_at(&s, &n);
            d = open_at(&d, &n);
        }
        let ds = stat_at(&d, &bottom);
        f.check(ds.map(|st| st.st_size as usize) == Some(data.len()), || {
            "the bottom file is missing or has the wrong size".into()
        });
    }
    f.finish();
}
