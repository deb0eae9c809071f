//! Unit tests of pending snapshots, without FUSE: a harness plays the live
//! core's part on a temporary directory (calls the hooks with `O_PATH`
//! descriptors and a lineage, then makes the change), and the tree as of the
//! point in time is compared with what was captured at the commit.
//!
//! Over 700 lines: one harness and the tests that drive it; they share its
//! model of the tree, and each test is short.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::diff::{PointInTime, Snapshots};
use crate::ingest::asof::{AsOf, AsOfFile, Key};
use crate::live::changes::{Changes, Obj};
use crate::os::xattr::XattrOf;
use crate::os::{self, Follow};
use crate::store::Xattr;

struct H {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    snaps: Snapshots,
    diff_max: Option<u64>,
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn key_of(p: &Path) -> Key {
    let m = fs::symlink_metadata(p).unwrap();
    (m.dev(), m.ino())
}

impl H {
    fn new() -> H {
        Self::with_diff_max(None)
    }

    fn with_diff_max(diff_max: Option<u64>) -> H {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let snaps = Self::open_snaps(&src, diff_max);
        H {
            _tmp: tmp,
            src,
            snaps,
            diff_max,
        }
    }

    fn open_snaps(src: &Path, diff_max: Option<u64>) -> Snapshots {
        Snapshots::open(
            src,
            &src.join(".bkfs/pit"),
            vec![OsString::from(".bkfs")],
            diff_max,
        )
        .unwrap()
    }

    /// Drops the `Snapshots` as a killed daemon would (no cleanup) and opens
    /// the diff area again.
    fn restart(&mut self) {
        self.snaps = Self::open_snaps(&self.src, self.diff_max);
    }

    fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.src.clone()
        } else {
            self.src.join(rel)
        }
    }

    fn diff_dir(&self, name: &str) -> PathBuf {
        self.src.join(".bkfs/pit").join(name)
    }

    /// Keys of the directories above `rel`, nearest first, up to the root.
    fn lineage(&self, rel: &str) -> Vec<Key> {
        let mut out = Vec::new();
        let mut p = Path::new(rel).parent();
        while let Some(d) = p {
            out.push(key_of(&self.p(d.to_str().unwrap())));
            if d.as_os_str().is_empty() {
                break;
            }
            p = d.parent();
        }
        if rel.is_empty() {
            out.clear();
        }
        out
    }

    fn with_obj<T>(&self, rel: &str, lineage_known: bool, f: impl FnOnce(&Obj) -> T) -> T {
        let path = cpath(&self.p(rel));
        let fd = os::fd::openat(os::fd::cwd(), &path, Follow::No, libc::O_PATH, 0).unwrap();
        let st = os::fd::fstat(fd.as_fd()).unwrap();
        let lin = self.lineage(rel);
        let lineage = move || lineage_known.then(|| lin.clone());
        let obj = Obj {
            key: (st.st_dev, st.st_ino),
            kind: st.st_mode & libc::S_IFMT,
            fd: fd.as_fd(),
            lineage: &lineage,
        };
        f(&obj)
    }

    fn parent_name(rel: &str) -> (String, CString) {
        let p = Path::new(rel);
        let parent = p.parent().unwrap().to_str().unwrap().to_owned();
        let name = CString::new(p.file_name().unwrap().as_bytes()).unwrap();
        (parent, name)
    }

    // ---- operations, as the live core does them: hooks, then the change ----

    fn write(&self, rel: &str, off: u64, data: &[u8]) {
        self.with_obj(rel, true, |o| self.snaps.data(o, off, data.len() as u64))
            .unwrap();
        let f = OpenOptions::new().write(true).open(self.p(rel)).unwrap();
        f.write_all_at(data, off).unwrap();
    }

    fn truncate(&self, rel: &str, size: u64) {
        self.with_obj(rel, true, |o| self.snaps.truncate(o, size))
            .unwrap();
        let f = OpenOptions::new().write(true).open(self.p(rel)).unwrap();
        f.set_len(size).unwrap();
    }

    fn attrs(&self, rel: &str) {
        self.with_obj(rel, true, |o| self.snaps.attrs(o)).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        self.attrs(rel);
        fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(&self, rel: &str, uid: u32, gid: u32) {
        self.attrs(rel);
        std::os::unix::fs::lchown(self.p(rel), Some(uid), Some(gid)).unwrap();
    }

    fn utimes(&self, rel: &str, sec: i64) {
        self.attrs(rel);
        let ts = [
            libc::timespec {
                tv_sec: sec,
                tv_nsec: 5,
            },
            libc::timespec {
                tv_sec: sec,
                tv_nsec: 7,
            },
        ];
        let c = cpath(&self.p(rel));
        os::attr::utimensat(os::fd::cwd(), &c, &ts).unwrap();
    }

    fn setxattr(&self, rel: &str, name: &str, value: &[u8]) {
        self.attrs(rel);
        let c = cpath(&self.p(rel));
        let n = CString::new(name).unwrap();
        XattrOf::Path(&c).set(&n, value, 0).unwrap();
    }

    fn removexattr(&self, rel: &str, name: &str) {
        self.attrs(rel);
        let c = cpath(&self.p(rel));
        let n = CString::new(name).unwrap();
        XattrOf::Path(&c).remove(&n).unwrap();
    }

    fn entries(&self, dir: &str) {
        self.with_obj(dir, true, |o| self.snaps.entries(o)).unwrap();
    }

    fn created(&self, rel: &str) {
        self.with_obj(rel, true, |o| self.snaps.created(o));
    }

    fn create(&self, rel: &str, data: &[u8]) {
        let (parent, _) = Self::parent_name(rel);
        self.entries(&parent);
        File::create(self.p(rel)).unwrap();
        self.created(rel);
        if !data.is_empty() {
            self.write(rel, 0, data);
        }
    }

    fn mkdir(&self, rel: &str) {
        let (parent, _) = Self::parent_name(rel);
        self.entries(&parent);
        fs::create_dir(self.p(rel)).unwrap();
        self.created(rel);
    }

    fn symlink(&self, target: &str, rel: &str) {
        let (parent, _) = Self::parent_name(rel);
        self.entries(&parent);
        std::os::unix::fs::symlink(target, self.p(rel)).unwrap();
        self.created(rel);
    }

    fn mkfifo(&self, rel: &str) {
        let (parent, _) = Self::parent_name(rel);
        self.entries(&parent);
        let c = cpath(&self.p(rel));
        os::dir::mknodat(os::fd::cwd(), &c, libc::S_IFIFO | 0o640, 0).unwrap();
        self.created(rel);
    }

    fn link(&self, existing: &str, rel: &str) {
        self.attrs(existing);
        let (parent, _) = Self::parent_name(rel);
        self.entries(&parent);
        fs::hard_link(self.p(existing), self.p(rel)).unwrap();
    }

    fn unlinking(&self, rel: &str) {
        let (parent, name) = Self::parent_name(rel);
        self.entries(&parent);
        self.with_obj(&parent, true, |d| {
            self.with_obj(rel, true, |v| self.snaps.unlinking(d, &name, v))
        })
        .unwrap();
    }

    fn unlink(&self, rel: &str) {
        self.unlinking(rel);
        fs::remove_file(self.p(rel)).unwrap();
    }

    fn rmdir(&self, rel: &str) {
        self.unlinking(rel);
        fs::remove_dir(self.p(rel)).unwrap();
    }

    fn rename(&self, from: &str, to: &str) {
        self.unlinking(from);
        let (p2, _) = Self::parent_name(to);
        self.entries(&p2);
        if fs::symlink_metadata(self.p(to)).is_ok() {
            self.unlinking(to);
        }
        fs::rename(self.p(from), self.p(to)).unwrap();
    }

    fn commit(&self, name: &str) -> Option<Arc<crate::ingest::ChangeSet>> {
        self.snaps.commit(name, SystemTime::now()).unwrap()
    }

    fn pit(&self) -> Arc<PointInTime> {
        self.snaps.point_in_time().expect("a pending snapshot")
    }

    fn capture(&self) -> Model {
        capture_live(&self.src)
    }
}

// ---- what a copy holds: names, types, modes, owners, times, sizes, xattrs,
// ---- content, holes, link targets, inode identity

#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    key: Key,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    xattrs: Vec<Xattr>,
    content: Option<Vec<u8>>,
    extents: Option<Vec<(u64, u64)>>,
    target: Option<Vec<u8>>,
}

type Model = BTreeMap<String, Info>;

fn info_of(st: &libc::stat) -> Info {
    Info {
        key: (st.st_dev, st.st_ino),
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink,
        size: st.st_size as u64,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
        xattrs: Vec::new(),
        content: None,
        extents: None,
        target: None,
    }
}

fn coalesce(v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in v {
        match out.last_mut() {
            Some((lo, ll)) if *lo + *ll == o => *ll += l,
            _ => out.push((o, l)),
        }
    }
    out
}

fn capture_live(src: &Path) -> Model {
    let mut m = Model::new();
    fn walk(m: &mut Model, root: &Path, rel: &str) {
        let path = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        let c = cpath(&path);
        let fd: OwnedFd = os::fd::openat(os::fd::cwd(), &c, Follow::No, libc::O_PATH, 0).unwrap();
        let st = os::fd::fstat(fd.as_fd()).unwrap();
        let mut info = info_of(&st);
        info.xattrs = os::xattr::list_all(XattrOf::ProcFd(fd.as_fd())).unwrap();
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let f = File::open(&path).unwrap();
                info.content = Some(fs::read(&path).unwrap());
                info.extents = Some(coalesce(
                    os::io::data_segments(f.as_fd(), 0, st.st_size as u64).unwrap(),
                ));
            }
            libc::S_IFLNK => {
                info.target = Some(
                    fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            }
            libc::S_IFDIR => {
                for e in fs::read_dir(&path).unwrap() {
                    let name = e.unwrap().file_name().into_string().unwrap();
                    if rel.is_empty() && name == ".bkfs" {
                        continue;
                    }
                    let child = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    walk(m, root, &child);
                }
            }
            _ => {}
        }
        m.insert(rel.to_owned(), info);
    }
    walk(&mut m, src, "");
    m
}

fn capture_pit(pit: &PointInTime) -> io::Result<Model> {
    let mut m = Model::new();
    fn walk(
        m: &mut Model,
        pit: &PointInTime,
        obj: <PointInTime as AsOf>::Obj,
        rel: &str,
    ) -> io::Result<()> {
        let st = pit.stat(&obj)?;
        assert_eq!(pit.key(&obj), (st.st_dev, st.st_ino), "key of {rel:?}");
        let mut info = info_of(&st);
        info.xattrs = pit.xattrs(&obj)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let f = pit.open(&obj)?;
                let mut buf = vec![0u8; st.st_size as usize + 10];
                let mut n = 0;
                // Odd-sized reads across block boundaries.
                while n < buf.len() {
                    let end = (n + 50_000).min(buf.len());
                    let got = f.read_at(&mut buf[n..end], n as u64)?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                buf.truncate(n);
                info.content = Some(buf);
                info.extents = Some(coalesce(f.extents(st.st_size as u64)?));
            }
            libc::S_IFLNK => info.target = Some(pit.readlink(&obj)?),
            libc::S_IFDIR => {
                for name in pit.list(&obj)? {
                    let name = String::from_utf8(name).unwrap();
                    let child = pit.child(&obj, name.as_bytes())?;
                    let crel = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    walk(m, pit, child, &crel)?;
                }
            }
            _ => {}
        }
        m.insert(rel.to_owned(), info);
        Ok(())
    }
    walk(&mut m, pit, pit.root()?, "")?;
    Ok(m)
}

fn assert_same(want: &Model, got: &Model) {
    let wk: Vec<_> = want.keys().collect();
    let gk: Vec<_> = got.keys().collect();
    assert_eq!(wk, gk, "names differ");
    for (k, w) in want {
        let g = &got[k];
        if w != g {
            let mut w = w.clone();
            let mut g = g.clone();
            let wc = w.content.take();
            let gc = g.content.take();
            assert_eq!(w, g, "{k:?} differs");
            assert!(wc == gc, "content of {k:?} differs");
        }
    }
}

/// Builds a tree with `setup`, commits, changes it with `change`: the point
/// in time must show the tree as it was at the commit.
fn scenario(setup: impl FnOnce(&H), change: impl FnOnce(&H)) -> H {
    let h = H::new();
    setup(&h);
    let want = h.capture();
    assert!(h.commit("s1").is_none(), "no baseline yet");
    change(&h);
    let got = capture_pit(&h.pit()).unwrap();
    assert_same(&want, &got);
    assert_ne!(want, h.capture(), "the change changed nothing");
    h
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn base(h: &H) {
    fs::create_dir_all(h.p("d/e")).unwrap();
    fs::write(h.p("f"), pattern(200_000, 1)).unwrap();
    fs::write(h.p("d/g"), pattern(1000, 2)).unwrap();
    fs::write(h.p("d/e/h"), pattern(70_000, 3)).unwrap();
    fs::write(h.p("empty"), b"").unwrap();
    std::os::unix::fs::symlink("d/g", h.p("sl")).unwrap();
}

fn sparse(h: &H) {
    let f = File::create(h.p("sp")).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(&pattern(5000, 9), 300_000).unwrap();
    f.write_all_at(&pattern(4096, 7), 0).unwrap();
    f.write_all_at(&pattern(100, 8), (1 << 20) - 100).unwrap();
}

#[test]
fn write_over_a_range() {
    scenario(base, |h| h.write("f", 100_000, &[0xff; 70_000]));
}

#[test]
fn write_tiny_ranges_and_the_last_partial_block() {
    scenario(base, |h| {
        h.write("f", 0, b"x");
        h.write("f", 199_999, b"yz");
        h.write("d/e/h", 65_535, b"ab");
    });
}

#[test]
fn truncate_down_up_and_append() {
    scenario(base, |h| {
        h.truncate("f", 10);
        h.truncate("f", 300_000);
        h.write("d/g", 1000, &[1; 100_000]);
        h.truncate("d/e/h", 0);
        h.write("d/e/h", 0, b"new");
        h.write("empty", 0, b"not empty");
    });
}

#[test]
fn attributes_and_xattrs() {
    scenario(
        |h| {
            base(h);
            h.setxattr("f", "user.a", b"1");
            h.setxattr("d", "user.b", b"2");
        },
        |h| {
            h.chmod("f", 0o600);
            h.chown("d/g", 1234, 5678);
            h.utimes("d/e", 1_000_000);
            h.utimes("sl", 2_000_000);
            h.setxattr("f", "user.a", b"changed");
            h.setxattr("d/g", "user.new", b"v");
            h.removexattr("d", "user.b");
            h.setxattr("", "user.root", b"r");
        },
    );
}

#[test]
fn names_created_and_removed() {
    scenario(base, |h| {
        h.create("d/new", b"fresh");
        h.write("d/new", 10, b"more");
        h.mkdir("d/nd");
        h.create("d/nd/x", b"x");
        h.symlink("nowhere", "d/e/s2");
        h.mkfifo("fifo");
        h.unlink("d/g");
        h.unlink("sl");
        h.unlink("empty");
        h.unlink("d/nd/x");
        h.rmdir("d/nd");
    });
}

#[test]
fn unlinked_file_keeps_content_written_after() {
    scenario(base, |h| {
        // An open file is written after its last name is gone.
        let f = OpenOptions::new().write(true).open(h.p("f")).unwrap();
        h.unlink("f");
        // Reach it as the live core would, through its descriptor.
        let fd = os::fd::reopen(f.as_fd(), libc::O_PATH).unwrap();
        let st = os::fd::fstat(fd.as_fd()).unwrap();
        let lineage = || None;
        let obj = Obj {
            key: (st.st_dev, st.st_ino),
            kind: libc::S_IFREG,
            fd: fd.as_fd(),
            lineage: &lineage,
        };
        h.snaps.data(&obj, 0, 10).unwrap();
        f.write_all_at(&[0; 10], 0).unwrap();
        h.snaps.truncate(&obj, 5).unwrap();
        f.set_len(5).unwrap();
    });
}

#[test]
fn rmdir_of_a_directory_emptied_after() {
    scenario(base, |h| {
        h.unlink("d/e/h");
        h.rmdir("d/e");
        h.mkdir("d/e");
        h.create("d/e/h", b"impostor");
    });
}

#[test]
fn renames() {
    scenario(base, |h| {
        h.rename("f", "d/f2");
        h.rename("d/g", "d/e/h"); // over an existing file
        h.write("d/e/h", 0, b"written after the rename");
        h.create("f", b"another f");
        h.rename("sl", "sl2");
    });
}

#[test]
fn rename_of_a_directory_subtree() {
    scenario(base, |h| {
        h.mkdir("z");
        h.rename("d", "z/moved");
        h.write("z/moved/e/h", 5, b"changed deep down");
        h.create("z/moved/e/new", b"n");
        h.mkdir("d");
        h.create("d/g", b"impostor");
        h.mkdir("x");
        h.rename("x", "z/moved/e/emptydir");
        h.mkdir("y");
        h.rename("y", "z/moved/e/emptydir"); // over an empty directory
    });
}

#[test]
fn hard_links_with_one_name_removed() {
    scenario(
        |h| {
            base(h);
            fs::hard_link(h.p("f"), h.p("d/f-link")).unwrap();
        },
        |h| {
            h.unlink("f");
            h.write("d/f-link", 1, b"through the other name");
            h.link("d/g", "d/g2");
            h.unlink("d/g");
            h.unlink("d/g2");
        },
    );
}

#[test]
fn sparse_files_stay_sparse() {
    let h = scenario(
        |h| {
            base(h);
            sparse(h);
        },
        |h| {
            h.write("sp", 300_000, &[1; 10]); // a block with data and holes
            h.write("sp", 600_000, &[2; 10]); // a block that was all hole
            h.truncate("sp", 200_000);
            h.truncate("sp", 2 << 20);
        },
    );
    // The preserved blocks are sparse on disk too.
    let pit = h.pit();
    let f = pit
        .open(&pit.child(&pit.root().unwrap(), b"sp").unwrap())
        .unwrap();
    let ext = coalesce(f.extents(1 << 20).unwrap());
    assert_eq!(ext.len(), 3, "{ext:?}");
}

#[test]
fn everything_at_once() {
    scenario(
        |h| {
            base(h);
            sparse(h);
            fs::hard_link(h.p("d/g"), h.p("hl")).unwrap();
        },
        |h| {
            h.write("sp", 4000, &[3; 200_000]);
            h.rename("d/e", "e2");
            h.unlink("e2/h");
            h.rmdir("e2");
            h.chmod("d", 0o700);
            h.unlink("hl");
            h.rename("f", "d/g");
            h.write("d/g", 0, b"!");
        },
    );
}

#[test]
fn live_changes_outside_the_mount_are_refused() {
    let h = H::new();
    base(&h);
    h.commit("s1");
    // Same clock tick: ctime can only tell if it moved on.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(h.p("d/g"), b"behind our back").unwrap();
    let pit = h.pit();
    let root = pit.root().unwrap();
    let d = pit.child(&root, b"d").unwrap();
    let g = pit.child(&d, b"g").unwrap();
    let e = pit.stat(&g).unwrap_err();
    assert!(
        e.to_string().contains("changed after the point in time"),
        "{e}"
    );
    assert!(pit.open(&g).is_err());
    // The rest is still readable.
    pit.stat(&pit.child(&root, b"f").unwrap()).unwrap();
}

#[test]
fn one_pending_snapshot_at_a_time_and_release() {
    let h = H::new();
    base(&h);
    h.commit("s1");
    assert_eq!(h.snaps.pending().unwrap().0, "s1");
    let e = h.snaps.commit("s2", SystemTime::now()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
    h.write("f", 0, b"x");
    assert!(h.diff_dir("s1").join("state.json").exists());
    h.snaps.sealed("s1");
    assert!(h.snaps.pending().is_none());
    assert!(h.snaps.point_in_time().is_none());
    assert!(!h.diff_dir("s1").exists(), "moved to the trash at once");
    // Changes need no pre-image now.
    h.write("f", 0, b"y");
    h.commit("s2");
    h.snaps.failed("s2");
    assert!(h.snaps.pending().is_none());
    for _ in 0..100 {
        if fs::read_dir(h.src.join(".bkfs/pit")).unwrap().count() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the trash was not emptied");
}

#[test]
fn reopen_after_a_kill() {
    let mut h = H::new();
    base(&h);
    sparse(&h);
    let want = h.capture();
    h.commit("s1");
    h.write("f", 1000, &[9; 100_000]);
    h.rename("d/e", "e2");
    h.unlink("d/g");
    h.setxattr("sl", "trusted.t", b"x");
    h.truncate("sp", 100);
    h.create("d/new", b"new");
    // Leftovers of a half-written record.
    fs::write(h.diff_dir("s1").join("1-2.attrs.tmp"), b"garbage").unwrap();
    h.restart();
    assert_eq!(h.snaps.pending().unwrap().0, "s1");
    assert_same(&want, &capture_pit(&h.pit()).unwrap());
    // Changes after the restart, including to the objects created before.
    h.write("d/new", 0, b"again");
    h.write("f", 0, &[8; 300_000]);
    h.unlink("e2/h");
    h.rmdir("e2");
    h.unlink("sp");
    assert_same(&want, &capture_pit(&h.pit()).unwrap());
    h.restart();
    assert_same(&want, &capture_pit(&h.pit()).unwrap());
    assert!(!h.diff_dir("s1").join("1-2.attrs.tmp").exists());
    // After a restart, tracking is not known complete.
    h.snaps.sealed("s1");
    h.write("f", 0, b"z");
    assert!(h.commit("s2").is_none());
}

#[test]
fn readers_never_see_data_written_after() {
    let h = Arc::new(H::new());
    fs::write(h.p("big"), pattern(1 << 20, 5)).unwrap();
    let want = pattern(1 << 20, 5);
    h.commit("s1");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (h, stop, want) = (h.clone(), stop.clone(), want.clone());
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) || rounds == 0 {
                    let pit = h.pit();
                    let f = pit.open(&pit.child(&pit.root().unwrap(), b"big").unwrap());
                    let f = f.unwrap();
                    let mut buf = vec![0u8; 1 << 20];
                    for off in (0..1 << 20).step_by(10_000) {
                        let end = (off + 10_000).min(1 << 20);
                        f.read_at(&mut buf[off..end], off as u64).unwrap();
                    }
                    assert!(buf == want, "a reader saw data written after the commit");
                    rounds += 1;
                }
            })
        })
        .collect();
    for i in 0..16u64 {
        for b in 0..16u64 {
            h.write("big", ((b * 7 + i) % 16) * 65536 + i * 100, &[0xee; 1000]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

// ---- tracking ----

#[test]
fn tracking_lists_changed_objects_and_their_ancestors() {
    let h = H::new();
    base(&h);
    fs::create_dir(h.p("other")).unwrap();
    assert!(h.commit("s1").is_none(), "first snapshot: no baseline");
    h.write("d/e/h", 0, b"x"); // counted for s2 (after s1's barrier)
    h.snaps.sealed("s1");
    h.chmod("f", 0o600);
    let cs = h.commit("s2").expect("complete since s1");
    assert_eq!(cs.since, "s1");
    let k = |r: &str| key_of(&h.p(r));
    let objects: std::collections::HashSet<Key> = [k("d/e/h"), k("f")].into();
    assert_eq!(cs.objects, objects);
    let dirs: std::collections::HashSet<Key> = [k("d/e"), k("d"), k("")].into();
    assert_eq!(cs.dirs, dirs);
    assert!(!cs.subtree_changed(k("other")));
    h.snaps.sealed("s2");

    // Entries and creations.
    h.create("other/n", b"");
    h.rename("d/g", "other/g");
    let cs = h.commit("s3").unwrap();
    assert_eq!(cs.since, "s2");
    let objects: std::collections::HashSet<Key> =
        [k("other"), k("other/n"), k("other/g"), k("d")].into();
    assert_eq!(cs.objects, objects);
    let dirs: std::collections::HashSet<Key> = [k("other"), k("d"), k("")].into();
    assert_eq!(cs.dirs, dirs);

    // A failed copy gives its changes to the next.
    h.snaps.failed("s3");
    h.write("d/e/h", 0, b"y");
    let cs = h.commit("s4").unwrap();
    assert_eq!(cs.since, "s2");
    assert!(cs.object_changed(k("other/n")) && cs.object_changed(k("d/e/h")));
    assert!(cs.subtree_changed(k("d/e")));
    h.snaps.sealed("s4");

    // An unknown lineage: tracking is incomplete for the next one.
    h.with_obj("f", false, |o| h.snaps.attrs(o)).unwrap();
    assert!(h.commit("s5").is_none());
    h.snaps.sealed("s5");
    h.chmod("f", 0o644);
    assert!(h.commit("s6").is_some(), "complete again after a seal");
}

// ---- a seeded random model ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

fn list_tree(src: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let m = capture_live(src);
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut others = Vec::new();
    for (k, i) in m {
        match i.mode & libc::S_IFMT {
            libc::S_IFDIR => dirs.push(k),
            libc::S_IFREG => files.push(k),
            _ => others.push(k),
        }
    }
    (dirs, files, others)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn random_op(h: &H, rng: &mut Rng, n: usize) {
    let (dirs, files, others) = list_tree(&h.src);
    let dir = rng.pick(&dirs).unwrap().clone();
    let fresh = join(&dir, &format!("n{n}"));
    match rng.below(13) {
        0 => {
            let len = rng.below(200_000);
            h.create(&fresh, &pattern(len, n as u8));
            if rng.below(2) == 0 {
                h.truncate(&fresh, len as u64 + rng.below(300_000) as u64);
            }
        }
        1 | 2 => {
            if let Some(f) = rng.pick(&files) {
                let off = rng.below(400_000) as u64;
                let len = rng.below(150_000);
                h.write(f, off, &pattern(len, n as u8));
            }
        }
        3 => {
            if let Some(f) = rng.pick(&files) {
                h.truncate(f, rng.below(300_000) as u64);
            }
        }
        4 => {
            let all: Vec<_> = dirs.iter().chain(&files).cloned().collect();
            let o = rng.pick(&all).unwrap();
            match rng.below(4) {
                0 => h.chmod(o, 0o600 + rng.below(0o100) as u32),
                1 => h.utimes(o, rng.below(1 << 30) as i64),
                2 => h.setxattr(
                    o,
                    &format!("user.x{}", rng.below(3)),
                    &pattern(rng.below(50), 1),
                ),
                _ => h.chown(o, rng.below(3) as u32, rng.below(3) as u32),
            }
        }
        5 | 6 => {
            let all: Vec<_> = files.iter().chain(&others).cloned().collect();
            if let Some(f) = rng.pick(&all) {
                h.unlink(f);
            }
        }
        7 => {
            if let Some(d) = rng.pick(&dirs) {
                if !d.is_empty() && fs::read_dir(h.p(d)).unwrap().next().is_none() {
                    h.rmdir(d);
                }
            }
        }
        8 => h.mkdir(&fresh),
        9 => {
            // Rename anything anywhere: fresh name or over a compatible one.
            let all: Vec<_> = dirs
                .iter()
                .chain(&files)
                .chain(&others)
                .filter(|p| !p.is_empty())
                .cloned()
                .collect();
            if let Some(from) = rng.pick(&all) {
                let to = if rng.below(2) == 0 {
                    fresh.clone()
                } else {
                    rng.pick(&all).unwrap().clone()
                };
                let to_dir = Path::new(&to).parent().unwrap().to_str().unwrap();
                let into_itself = to_dir == from || to_dir.starts_with(&format!("{from}/"));
                let ok = !into_itself
                    && to != *from
                    && match fs::symlink_metadata(h.p(&to)) {
                        Err(_) => true,
                        Ok(m) => {
                            let from_dir = fs::symlink_metadata(h.p(from)).unwrap().is_dir();
                            m.is_dir() == from_dir
                                && (!m.is_dir() || fs::read_dir(h.p(&to)).unwrap().next().is_none())
                                && !from.starts_with(&format!("{to}/"))
                        }
                    };
                if ok {
                    h.rename(from, &to);
                }
            }
        }
        10 => {
            if let Some(f) = rng.pick(&files) {
                h.link(f, &fresh);
            }
        }
        11 => h.symlink(&format!("t{n}"), &fresh),
        _ => h.mkfifo(&fresh),
    }
}

/// Every object that differs from the last sealed snapshot (by key) is in
/// the change set, with the directories above it.
fn check_tracking(old: &Model, new: &Model, cs: &crate::ingest::ChangeSet) {
    let old: std::collections::HashMap<Key, &Info> = old.values().map(|i| (i.key, i)).collect();
    for (path, info) in new {
        if old.get(&info.key) == Some(&info) {
            continue;
        }
        assert!(cs.object_changed(info.key), "{path:?} changed, not tracked");
        if info.mode & libc::S_IFMT == libc::S_IFDIR {
            assert!(
                cs.subtree_changed(info.key),
                "{path:?} changed, not in dirs"
            );
        }
        let mut up = Path::new(path).parent();
        while let Some(d) = up {
            let k = new[d.to_str().unwrap()].key;
            assert!(cs.subtree_changed(k), "{d:?} above changed {path:?}");
            up = d.parent();
        }
    }
}

/// Epochs of random changes: commit (with readers comparing the point in
/// time with the tree captured at the commit while changes go on), then
/// seal, fail, seal; the change sets are checked against the trees.
fn random_run(seed: u64, readers: bool) {
    let mut h = Arc::new(H::new());
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    base(&h);
    sparse(&h);
    let mut n = 0;
    let mut restarted = false;
    let mut sealed: Option<Model> = None;
    for epoch in 0..3 {
        for _ in 0..25 {
            random_op(&h, &mut rng, n);
            n += 1;
        }
        let name = format!("s{epoch}");
        let want = Arc::new(h.capture());
        let cs = h.commit(&name);
        match (&sealed, cs) {
            (None, cs) => assert!(cs.is_none()),
            (Some(_), Some(_)) if restarted => panic!("tracking since a restart"),
            (Some(old), Some(cs)) => check_tracking(old, &want, &cs),
            (Some(_), None) => assert!(restarted, "tracking should be complete"),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..if readers { 2 } else { 0 })
            .map(|_| {
                let (h, stop, want) = (h.clone(), stop.clone(), want.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        assert_same(&want, &capture_pit(&h.pit()).unwrap());
                    }
                })
            })
            .collect();
        for i in 0..40 {
            random_op(&h, &mut rng, n);
            n += 1;
            if i == 20 && !readers && epoch == 0 {
                // A daemon killed and started again, mid-way.
                Arc::get_mut(&mut h).expect("no reader").restart();
                assert_same(&want, &capture_pit(&h.pit()).unwrap());
                restarted = true;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        assert_same(&want, &capture_pit(&h.pit()).unwrap());
        if epoch == 1 {
            h.snaps.failed(&name);
        } else {
            h.snaps.sealed(&name);
            sealed = Some(Arc::try_unwrap(want).unwrap());
        }
    }
}

#[test]
fn random_changes_after_the_commit() {
    // BKFS_PIT_SEEDS=N runs more seeds.
    let seeds: u64 = std::env::var("BKFS_PIT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 1..=seeds {
        random_run(seed, false);
    }
}

#[test]
fn random_changes_with_concurrent_readers() {
    let seeds: u64 = std::env::var("BKFS_PIT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seed in 100..100 + seeds {
        random_run(seed, true);
    }
}

#[test]
fn xattrs_of_a_symlink_are_its_own() {
    let h = H::new();
    fs::write(h.p("t"), b"").unwrap();
    std::os::unix::fs::symlink("t", h.p("s")).unwrap();
    h.setxattr("s", "trusted.on-link", b"1");
    h.setxattr("t", "trusted.on-target", b"2");
    h.with_obj("s", true, |o| {
        let x = os::xattr::list_all(XattrOf::ProcFd(o.fd)).unwrap();
        assert_eq!(x.len(), 1, "{x:?}");
        assert_eq!(x[0].name, b"trusted.on-link");
    });
}

#[test]
fn two_names_of_one_inode_removed_at_once() {
    scenario(
        |h| {
            base(h);
            fs::hard_link(h.p("f"), h.p("d/f2")).unwrap();
        },
        |h| {
            // Both hooks run before either unlink, as for two unlinks in two
            // directories at the same time: each sees nlink 2.
            h.unlinking("f");
            h.unlinking("d/f2");
            fs::remove_file(h.p("f")).unwrap();
            fs::remove_file(h.p("d/f2")).unwrap();
        },
    );
}

#[test]
fn an_inode_reused_after_the_barrier_keeps_the_old_pre_image() {
    scenario(base, |h| {
        let old = key_of(&h.p("d/e"));
        h.unlink("d/e/h");
        h.rmdir("d/e");
        // A new file that (as the kernel may) took the old directory's inode
        // number: its hooks must not touch the directory's pre-image.
        h.create("d/x", b"");
        let fd = os::fd::openat(
            os::fd::cwd(),
            &cpath(&h.p("d/x")),
            Follow::No,
            libc::O_PATH,
            0,
        )
        .unwrap();
        let lineage = || None;
        let obj = Obj {
            key: old,
            kind: libc::S_IFREG,
            fd: fd.as_fd(),
            lineage: &lineage,
        };
        h.snaps.created(&obj);
        h.snaps.attrs(&obj).unwrap();
        h.snaps.data(&obj, 0, 100).unwrap();
        h.snaps.entries(&obj).unwrap();
        h.write("d/x", 0, &[1; 100]);
    });
}

#[test]
fn the_diff_area_is_never_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let snaps = Snapshots::open(&src, &src.join("sub/area"), Vec::new(), None).unwrap();
    snaps.commit("s1", SystemTime::now()).unwrap();
    let pit = snaps.point_in_time().unwrap();
    let sub = pit.child(&pit.root().unwrap(), b"sub").unwrap();
    assert!(pit.list(&sub).unwrap().is_empty());
    assert_eq!(
        pit.child(&sub, b"area").unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
}

#[test]
fn a_failed_snapshot_can_be_committed_again() {
    let h = H::new();
    base(&h);
    h.commit("s1");
    h.write("f", 0, b"x");
    h.snaps.failed("s1");
    let want = h.capture();
    h.commit("s1");
    h.write("f", 0, b"y");
    assert_same(&want, &capture_pit(&h.pit()).unwrap());
    // Sealing a name that is not pending changes nothing.
    h.snaps.sealed("other");
    assert_eq!(h.snaps.pending().unwrap().0, "s1");
}

#[test]
fn objects_that_cannot_be_linked_are_copied() {
    // A diff area on another filesystem: no hard link reaches it.
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let h = H {
        snaps: Snapshots::open(&src, &shm.path().join("pit"), Vec::new(), None).unwrap(),
        _tmp: tmp,
        src,
        diff_max: None,
    };
    base(&h);
    sparse(&h);
    h.mkfifo("fifo");
    let want = h.capture();
    h.commit("s1");
    h.write("sp", 300_000, b"changed first");
    h.unlink("sp");
    h.unlink("sl");
    h.unlink("fifo");
    h.rename("d/g", "d/e/h");
    assert_same(&want, &capture_pit(&h.pit()).unwrap());
    drop(shm);
}

#[test]
fn links_of_a_released_snapshot_are_gone_before_the_next() {
    let h = H::new();
    base(&h);
    fs::hard_link(h.p("d/g"), h.p("g2")).unwrap();
    h.commit("s1");
    h.rename("f", "f2"); // linked into the diff area, still live
    h.unlink("g2"); // likewise
    h.snaps.sealed("s1");
    assert_eq!(fs::metadata(h.p("f2")).unwrap().nlink(), 1);
    assert_eq!(fs::metadata(h.p("d/g")).unwrap().nlink(), 1);
    std::thread::sleep(Duration::from_millis(20));
    let want = h.capture();
    h.commit("s2");
    // Whenever the trash is emptied, the second point in time is intact.
    for _ in 0..5 {
        assert_same(&want, &capture_pit(&h.pit()).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_write_just_past_the_end_keeps_the_hole_before_it() {
    scenario(
        |h| {
            let f = File::create(h.p("tail")).unwrap();
            f.write_all_at(&[1; 4096], 0).unwrap();
            f.set_len(10_000).unwrap(); // the filesystem block of byte 9999 is a hole
        },
        |h| {
            h.write("tail", 10_010, b"past the end, same filesystem block");
            assert_eq!(
                {
                    let f = File::open(h.p("tail")).unwrap();
                    coalesce(os::io::data_segments(f.as_fd(), 0, 10_000).unwrap())
                },
                vec![(0, 4096), (8192, 1808)],
                "the write allocated the block below the old end"
            );
        },
    );
}

#[test]
fn past_diff_max_the_snapshot_fails_and_the_change_goes_on() {
    // Room for the records and one block of f (64 KiB), not two.
    let mut h = H::with_diff_max(Some(100_000));
    base(&h);
    h.commit("s1");
    h.write("d/g", 0, b"small: within the bound");
    assert!(h.pit().failure().is_none());
    assert!(h.pit().diff_usage().0 > 0, "nothing counted");
    h.write("f", 0, &pattern(140_000, 5));
    let why = h
        .pit()
        .failure()
        .expect("the bound did not fail the snapshot");
    assert!(why.starts_with("diff area full"), "{why}");
    assert!(why.contains("diff_max 100000"), "{why}");
    // The change itself went on whole.
    let mut want = pattern(200_000, 1);
    want[..140_000].copy_from_slice(&pattern(140_000, 5));
    assert_eq!(fs::read(h.p("f")).unwrap(), want);
    // Its point in time is lost: every read of it fails, none returns data
    // of another time.
    let e = capture_pit(&h.pit()).expect_err("a failed point in time was read");
    assert!(crate::ingest::asof::Inconsistent::is(&e), "{e}");
    // Later changes need nothing and fail nothing.
    h.write("d/e/h", 0, b"after the failure");
    h.unlink("d/g");
    // A daemon killed now does not copy it again: it tells why it failed.
    h.restart();
    assert!(
        h.snaps.pending().is_none(),
        "a failed snapshot is pending again"
    );
    let earlier = h.snaps.take_failed_earlier();
    assert_eq!(earlier.len(), 1);
    assert_eq!(
        (earlier[0].0.as_str(), earlier[0].2.as_str()),
        ("s1", why.as_str())
    );
    // And the next one holds its own point in time.
    let want = h.capture();
    h.commit("s2");
    h.write("f", 0, b"y");
    assert_same(&want, &capture_pit(&h.pit()).unwrap());
}

#[test]
fn a_failed_snapshot_frees_its_pre_images_when_released() {
    let h = H::with_diff_max(Some(10_000));
    base(&h);
    h.commit("s1");
    h.write("f", 0, b"x");
    assert!(h.pit().failure().is_some());
    assert!(h.diff_dir("s1").join("failed").exists());
    h.snaps.failed("s1");
    assert!(h.snaps.pending().is_none());
    assert!(!h.diff_dir("s1").exists());
}
