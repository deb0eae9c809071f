//! The provider through a test double of [`AsOf`]: a [`PlainDir`] over a
//! temporary directory that counts what is asked of it, with change sets
//! made by hand (what the mount's daemon would have recorded).

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use super::*;
use super::{AsOf, ChangeSet, Key};
use crate::store::{Capture, Store, Xattr};

/// A [`PlainDir`] that records which objects were listed, stat'ed, opened and
/// had their xattrs read, and can set a cancel flag after some look-ups.
struct Counting {
    inner: PlainDir,
    listed: Mutex<Vec<Key>>,
    stated: Mutex<Vec<Key>>,
    opened: Mutex<Vec<Key>>,
    xattrs: Mutex<Vec<Key>>,
    children: AtomicUsize,
    cancel_after: Option<(usize, &'static AtomicBool)>,
}

impl Counting {
    fn new(path: &Path) -> Counting {
        Counting {
            inner: PlainDir::open(path, Vec::new()).unwrap(),
            listed: Mutex::default(),
            stated: Mutex::default(),
            opened: Mutex::default(),
            xattrs: Mutex::default(),
            children: AtomicUsize::new(0),
            cancel_after: None,
        }
    }
}

impl AsOf for Counting {
    type Obj = <PlainDir as AsOf>::Obj;
    type File = <PlainDir as AsOf>::File;

    fn root(&self) -> std::io::Result<Self::Obj> {
        self.inner.root()
    }
    fn key(&self, obj: &Self::Obj) -> Key {
        self.inner.key(obj)
    }
    fn stat(&self, obj: &Self::Obj) -> std::io::Result<libc::stat> {
        self.stated.lock().push(self.key(obj));
        self.inner.stat(obj)
    }
    fn list(&self, dir: &Self::Obj) -> std::io::Result<Vec<Vec<u8>>> {
        self.listed.lock().push(self.key(dir));
        self.inner.list(dir)
    }
    fn child(&self, dir: &Self::Obj, name: &[u8]) -> std::io::Result<Self::Obj> {
        let n = self.children.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((after, flag)) = self.cancel_after {
            if n >= after {
                flag.store(true, Ordering::SeqCst);
            }
        }
        self.inner.child(dir, name)
    }
    fn xattrs(&self, obj: &Self::Obj) -> std::io::Result<Vec<Xattr>> {
        self.xattrs.lock().push(self.key(obj));
        self.inner.xattrs(obj)
    }
    fn readlink(&self, obj: &Self::Obj) -> std::io::Result<Vec<u8>> {
        self.inner.readlink(obj)
    }
    fn open(&self, obj: &Self::Obj) -> std::io::Result<Self::File> {
        self.opened.lock().push(self.key(obj));
        self.inner.open(obj)
    }
}

fn key_of(p: &Path) -> Key {
    let m = fs::symlink_metadata(p).unwrap();
    (m.dev(), m.ino())
}

fn opts<'a>(name: &str, source: &Path) -> CopyOptions<'a> {
    CopyOptions::new(
        name.into(),
        SystemTime::now(),
        source.to_string_lossy().into_owned(),
    )
}

fn copy_ok<A: AsOf>(store: &Store, src: &A, o: &CopyOptions) -> Report {
    let r = copy(store, src, o, &Progress::default()).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r
}

/// Every node below tree `id`, by path, subtree ids left out (they follow
/// from the rest).
fn dump(r: &StoreReader, id: &Id, prefix: &str, out: &mut BTreeMap<String, String>) {
    for n in &r.tree(id).unwrap().nodes {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&n.name));
        let mut plain = n.clone();
        plain.subtree = None;
        out.insert(path.clone(), format!("{plain:?}"));
        if let Some(sub) = &n.subtree {
            dump(r, sub, &path, out);
        }
    }
}

fn differences(store: &Store, a: &Id, b: &Id) -> String {
    let r = store.reader().unwrap();
    let (mut da, mut db) = (BTreeMap::new(), BTreeMap::new());
    dump(&r, a, "", &mut da);
    dump(&r, b, "", &mut db);
    let mut out = String::new();
    for k in da.keys().chain(db.keys()).collect::<HashSet<_>>() {
        if da.get(k) != db.get(k) {
            out += &format!("{k}:\n  {:?}\n  {:?}\n", da.get(k), db.get(k));
        }
    }
    out
}

/// xorshift64*: a small seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn size(&mut self) -> usize {
        match self.below(10) {
            0 => 0,
            1 => 600_000 + self.below(900_000), // more than one chunk
            _ => self.below(20_000),
        }
    }
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = os::cstr(p.as_os_str().as_encoded_bytes()).unwrap();
    os::xattr::set(
        os::xattr::XattrOf::Path(&c),
        &Xattr {
            name: name.as_bytes().to_vec(),
            value: value.to_vec(),
        },
    )
    .unwrap();
}

/// A source tree changed at random, and the change set a daemon watching it
/// would have recorded. Nothing here reads a file or lists a directory of
/// the source (which could move an atime): the model knows its paths.
struct Model {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    changes: ChangeSet,
    rng: Rng,
    n: usize,
}

impl Model {
    fn new(root: &Path, seed: u64) -> Model {
        fs::create_dir(root).unwrap();
        let mut m = Model {
            root: root.into(),
            dirs: vec![PathBuf::new()],
            files: Vec::new(),
            changes: ChangeSet::default(),
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            n: 0,
        };
        for _ in 0..6 {
            m.new_dir();
        }
        for _ in 0..30 {
            m.new_file();
        }
        for _ in 0..3 {
            m.hard_link();
        }
        m.special();
        m.changes = ChangeSet::default();
        m
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn fresh_name(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }

    fn pick_dir(&mut self) -> PathBuf {
        self.dirs[self.rng.below(self.dirs.len())].clone()
    }

    /// The object at `rel` changed (its attributes, xattrs, content or
    /// entries): it, and every directory above any of its names.
    fn touched(&mut self, rel: &Path) {
        let key = key_of(&self.abs(rel));
        self.changes.objects.insert(key);
        if self.dirs.iter().any(|d| d == rel) {
            self.changes.dirs.insert(key);
        }
        let names: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| key_of(&self.abs(f)) == key)
            .cloned()
            .chain(std::iter::once(rel.to_path_buf()))
            .collect();
        for name in names {
            for a in name.ancestors().skip(1) {
                let k = key_of(&self.abs(a));
                self.changes.dirs.insert(k);
            }
        }
    }

    fn new_file(&mut self) {
        let d = self.pick_dir();
        let rel = d.join(self.fresh_name("f"));
        let size = self.rng.size();
        let data = self.rng.bytes(size);
        fs::write(self.abs(&rel), data).unwrap();
        self.files.push(rel.clone());
        self.touched(&d);
        self.touched(&rel);
    }

    fn new_dir(&mut self) {
        let d = self.pick_dir();
        let rel = d.join(self.fresh_name("d"));
        fs::create_dir(self.abs(&rel)).unwrap();
        self.dirs.push(rel.clone());
        self.touched(&d);
        self.touched(&rel);
    }

    fn special(&mut self) {
        let d = self.pick_dir();
        let link = d.join(self.fresh_name("l"));
        std::os::unix::fs::symlink("some/target", self.abs(&link)).unwrap();
        // Reading a symlink moves its atime (under relatime, while the atime
        // is not after its ctime): a plain directory has no O_NOATIME for
        // readlink. An atime ahead of now keeps the copies from moving it.
        let m = fs::symlink_metadata(self.abs(&link)).unwrap();
        let c = os::cstr(self.abs(&link).as_os_str().as_encoded_bytes()).unwrap();
        let t = |sec, nsec| crate::store::Time { sec, nsec };
        os::attr::set_times_at(
            os::fd::cwd(),
            &c,
            t(m.ctime() + 3600, 0),
            t(m.mtime(), m.mtime_nsec() as u32),
        )
        .unwrap();
        let fifo = d.join(self.fresh_name("p"));
        let c = os::cstr(self.abs(&fifo).as_os_str().as_encoded_bytes()).unwrap();
        os::dir::mknodat(os::fd::cwd(), &c, libc::S_IFIFO | 0o644, 0).unwrap();
        let sparse = d.join(self.fresh_name("s"));
        let f = fs::File::create(self.abs(&sparse)).unwrap();
        f.write_all_at(b"data", 3 << 20).unwrap();
        f.set_len(5 << 20).unwrap();
        self.files.push(sparse);
        self.touched(&d);
    }

    fn hard_link(&mut self) {
        if self.files.is_empty() {
            return;
        }
        let f = self.files[self.rng.below(self.files.len())].clone();
        let d = self.pick_dir();
        let rel = d.join(self.fresh_name("h"));
        fs::hard_link(self.abs(&f), self.abs(&rel)).unwrap();
        self.files.push(rel.clone());
        self.touched(&d);
        self.touched(&rel);
    }

    /// One random change.
    fn change(&mut self) {
        let nf = self.files.len();
        let f = (nf > 0).then(|| self.files[self.rng.below(nf)].clone());
        match (self.rng.below(10), f) {
            (0, Some(f)) => {
                let size = self.rng.size();
                let data = self.rng.bytes(size);
                fs::write(self.abs(&f), data).unwrap();
                self.touched(&f);
            }
            (1, Some(f)) => {
                let n = 1 + self.rng.below(5000);
                let data = self.rng.bytes(n);
                let file = fs::OpenOptions::new()
                    .append(true)
                    .open(self.abs(&f))
                    .unwrap();
                std::io::Write::write_all(&mut &file, &data).unwrap();
                self.touched(&f);
            }
            (2, Some(f)) => {
                let mode = 0o600 | self.rng.below(0o100) as u32;
                fs::set_permissions(self.abs(&f), fs::Permissions::from_mode(mode)).unwrap();
                self.touched(&f);
            }
            (3, _) => {
                let target = if self.rng.below(2) == 0 && nf > 0 {
                    self.files[self.rng.below(nf)].clone()
                } else {
                    self.pick_dir()
                };
                let v = self.rng.bytes(8);
                set_xattr(&self.abs(&target), "user.test", &v);
                self.touched(&target);
            }
            (4, Some(f)) => {
                let i = self.files.iter().position(|x| *x == f).unwrap();
                let key = key_of(&self.abs(&f));
                fs::remove_file(self.abs(&f)).unwrap();
                self.files.swap_remove(i);
                self.touched(f.parent().unwrap());
                if let Some(other) = self
                    .files
                    .iter()
                    .find(|x| key_of(&self.abs(x)) == key)
                    .cloned()
                {
                    self.touched(&other); // its link count went down
                }
            }
            (5, Some(f)) => {
                let d = self.pick_dir();
                let to = d.join(self.fresh_name("r"));
                fs::rename(self.abs(&f), self.abs(&to)).unwrap();
                let i = self.files.iter().position(|x| *x == f).unwrap();
                self.files[i] = to.clone();
                self.touched(f.parent().unwrap());
                self.touched(&d);
                self.touched(&to);
            }
            (6, _) => {
                // Move a directory (not the root, not into itself).
                let d = self.pick_dir();
                let to_parent = self.pick_dir();
                if d.as_os_str().is_empty() || to_parent.starts_with(&d) {
                    return;
                }
                let to = to_parent.join(self.fresh_name("m"));
                fs::rename(self.abs(&d), self.abs(&to)).unwrap();
                let moved = |p: &PathBuf| match p.strip_prefix(&d) {
                    Ok(rest) => to.join(rest),
                    Err(_) => p.clone(),
                };
                self.dirs = self.dirs.iter().map(moved).collect();
                self.files = self.files.iter().map(moved).collect();
                self.touched(d.parent().unwrap());
                self.touched(&to_parent);
                self.touched(&to);
            }
            (7, _) => self.new_dir(),
            (8, _) => self.hard_link(),
            _ => self.new_file(),
        }
    }
}

/// (a) An incremental copy given the true change set gives the very tree a
/// copy from scratch gives (trees are content-addressed: same top id means
/// same nodes everywhere), round after round, and the same counts.
#[test]
fn incremental_copy_equals_a_full_copy() {
    for seed in 1..=6u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("store")).unwrap();
        let src = dir.path().join("src");
        let mut m = Model::new(&src, seed);
        let plain = PlainDir::open(&src, Vec::new()).unwrap();
        let mut since = "base".to_string();
        copy_ok(&store, &plain, &opts(&since, &src));
        for round in 0..3 {
            m.changes = ChangeSet::default();
            for _ in 0..12 {
                m.change();
            }
            let changes = ChangeSet {
                since: since.clone(),
                ..m.changes.clone()
            };
            let name = format!("incr{round}");
            let mut o = opts(&name, &src);
            o.changes = Some(&changes);
            let plain = PlainDir::open(&src, Vec::new()).unwrap();
            let incr = copy_ok(&store, &plain, &o);
            let p = Progress::default();
            scan_changes(&store, &plain, &changes, &p);
            let totals = (
                p.total_files.load(Ordering::Relaxed),
                p.total_bytes.load(Ordering::Relaxed),
            );
            let s = &incr.snapshot.stats;
            assert_eq!(
                totals,
                (s.files, s.bytes),
                "seed {seed} round {round}: scan"
            );
            // A source nothing was copied from before: no parent at all.
            let scratch = copy_ok(
                &store,
                &plain,
                &opts(
                    &format!("scratch{round}"),
                    Path::new(&format!("elsewhere{round}")),
                ),
            );
            assert_eq!(
                incr.snapshot.tree,
                scratch.snapshot.tree,
                "seed {seed} round {round}:\n{}",
                differences(&store, &incr.snapshot.tree, &scratch.snapshot.tree)
            );
            let (a, b) = (&incr.snapshot.stats, &scratch.snapshot.stats);
            assert_eq!(
                (a.files, a.dirs, a.bytes),
                (b.files, b.dirs, b.bytes),
                "seed {seed} round {round}: counts"
            );
            assert!(
                a.bytes_read < b.bytes_read,
                "seed {seed} round {round}: reads"
            );
            since = name;
        }
    }
}

/// A tree with an untouched directory `a` and a changed directory `b`.
fn two_dirs(root: &Path) {
    fs::create_dir_all(root.join("a/deep")).unwrap();
    fs::create_dir_all(root.join("b")).unwrap();
    fs::write(root.join("a/one"), b"one").unwrap();
    fs::write(root.join("a/deep/two"), vec![7u8; 100_000]).unwrap();
    fs::write(root.join("b/old"), b"old").unwrap();
    fs::write(root.join("top"), b"top").unwrap();
}

/// (b) A directory the change set does not list is neither listed nor
/// stat'ed, nor is anything below it; an unchanged file next to a changed one
/// is not stat'ed, opened or asked for xattrs.
#[test]
fn unchanged_directories_are_not_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    let src = dir.path().join("src");
    two_dirs(&src);
    copy_ok(&store, &Counting::new(&src), &opts("base", &src));

    fs::write(src.join("b/new"), b"new").unwrap();
    let changes = ChangeSet {
        since: "base".into(),
        objects: [&src, &src.join("b"), &src.join("b/new")]
            .iter()
            .map(|p| key_of(p))
            .collect(),
        dirs: [&src, &src.join("b")].iter().map(|p| key_of(p)).collect(),
    };
    let c = Counting::new(&src);
    let mut o = opts("next", &src);
    o.changes = Some(&changes);
    let r = copy_ok(&store, &c, &o);

    let listed: HashSet<Key> = c.listed.lock().iter().copied().collect();
    let want: HashSet<Key> = [key_of(&src), key_of(&src.join("b"))].into();
    assert_eq!(listed, want, "only the root and b/ are listed");
    let stated = c.stated.lock().clone();
    for p in ["a", "a/one", "a/deep", "a/deep/two", "b/old", "top"] {
        let k = key_of(&src.join(p));
        assert!(!stated.contains(&k), "{p} was stat'ed");
        assert!(!c.xattrs.lock().contains(&k), "{p}: xattrs read");
    }
    assert_eq!(*c.opened.lock(), vec![key_of(&src.join("b/new"))]);
    assert_eq!(r.snapshot.stats.bytes_read, 3);

    // The scan for the totals looks at no more than the copy.
    let c = Counting::new(&src);
    let p = Progress::default();
    scan_changes(&store, &c, &changes, &p);
    let listed: HashSet<Key> = c.listed.lock().iter().copied().collect();
    assert_eq!(listed, want, "the scan lists only the root and b/");
    assert_eq!(
        p.total_files.load(Ordering::Relaxed),
        r.snapshot.stats.files
    );
    assert_eq!(
        p.total_bytes.load(Ordering::Relaxed),
        r.snapshot.stats.bytes
    );

    // Same result as a full copy, and the same counts.
    let full = copy_ok(&store, &Counting::new(&src), &opts("full", Path::new("x")));
    assert_eq!(r.snapshot.tree, full.snapshot.tree);
    let (a, b) = (&r.snapshot.stats, &full.snapshot.stats);
    assert_eq!((a.files, a.dirs, a.bytes), (b.files, b.dirs, b.bytes));
    assert_eq!((a.files, a.dirs), (5, 4));

    // Nothing changed at all: not even the root is listed.
    let empty = ChangeSet {
        since: "next".into(),
        ..ChangeSet::default()
    };
    let c = Counting::new(&src);
    let mut o = opts("same", &src);
    o.changes = Some(&empty);
    let same = copy_ok(&store, &c, &o);
    assert!(c.listed.lock().is_empty());
    assert!(c.stated.lock().is_empty());
    assert_eq!(same.snapshot.tree, r.snapshot.tree);
    assert_eq!(same.snapshot.stats.files, 5);
}

/// (c) A cancelled copy writes no record, returns `Cancelled`, and leaves
/// the store sound (and usable by the next copy).
#[test]
fn cancel_leaves_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    let src = dir.path().join("src");
    two_dirs(&src);
    for i in 0..40 {
        fs::write(src.join(format!("b/f{i}")), vec![i as u8; 50_000 + i]).unwrap();
    }
    copy_ok(&store, &Counting::new(&src), &opts("base", &src));
    fs::write(src.join("b/changed"), vec![1u8; 1_000_000]).unwrap();

    static FLAG: AtomicBool = AtomicBool::new(false);
    for after in [0, 1, 5, 30] {
        FLAG.store(after == 0, Ordering::SeqCst);
        let mut c = Counting::new(&src);
        c.cancel_after = (after > 0).then_some((after, &FLAG));
        let mut o = opts("cancelled", Path::new("other")); // no parent: reads everything
        o.cancel = Some(&FLAG);
        let e = copy(&store, &c, &o, &Progress::default()).err();
        assert!(matches!(e, Some(Error::Cancelled)), "after {after}: {e:?}");
        assert!(store.snapshot("cancelled").is_err());
        let rep = crate::store::check::check(&store, true).unwrap();
        assert!(rep.ok(), "{:?}", rep.errors);
        assert_eq!(rep.snapshots, 1);
    }
    FLAG.store(false, Ordering::SeqCst);
    let mut o = opts("after", &src);
    o.cancel = Some(&FLAG);
    o.capture = Some(Capture {
        consistency: crate::store::Consistency::FsConsistent,
        ..Capture::default()
    });
    let r = copy_ok(&store, &Counting::new(&src), &o);
    assert_eq!(
        store
            .snapshot("after")
            .unwrap()
            .capture
            .unwrap()
            .consistency,
        crate::store::Consistency::FsConsistent
    );
    assert_eq!(r.snapshot.name, "after");
    assert!(crate::store::check::check(&store, true).unwrap().ok());
}

#[test]
fn changes_and_parent_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    let src = dir.path().join("src");
    two_dirs(&src);
    let plain = PlainDir::open(&src, Vec::new()).unwrap();
    copy_ok(&store, &plain, &opts("base", &src));
    let changes = ChangeSet {
        since: "base".into(),
        ..ChangeSet::default()
    };
    let mut o = opts("x", &src);
    o.changes = Some(&changes);
    o.parent = Some("other".into());
    assert!(copy(&store, &plain, &o, &Progress::default()).is_err());
    // Changes counted from a snapshot forgotten since say nothing of what
    // changed before it: metadata is compared with the newest snapshot.
    let missing = ChangeSet {
        since: "nope".into(),
        ..ChangeSet::default()
    };
    o.parent = None;
    o.changes = Some(&missing);
    let r = copy_ok(&store, &plain, &o);
    assert!(r.changes_dropped);
    let full = copy_ok(&store, &plain, &opts("full", &src));
    assert!(!full.changes_dropped);
    let reader = store.reader().unwrap();
    let tree = |r: &Report| reader.tree(&r.snapshot.tree).unwrap().nodes[0].subtree;
    assert_eq!(tree(&r), tree(&full));
    // A parent named by the caller must exist.
    let mut o = opts("y", &src);
    o.parent = Some("nope".into());
    assert!(matches!(
        copy(&store, &plain, &o, &Progress::default()),
        Err(Error::NoSnapshot(_))
    ));
}

/// The scan's totals are what the copy then counts.
#[test]
fn scan_totals_match_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    let src = dir.path().join("src");
    let _m = Model::new(&src, 42);
    let plain = PlainDir::open(&src, Vec::new()).unwrap();
    let p = Progress::default();
    scan(&plain, &p);
    assert!(p.scan_done.load(Ordering::Relaxed));
    let r = copy_ok(&store, &plain, &opts("s", &src));
    assert_eq!(
        p.total_files.load(Ordering::Relaxed),
        r.snapshot.stats.files
    );
    assert_eq!(
        p.total_bytes.load(Ordering::Relaxed),
        r.snapshot.stats.bytes
    );
}
