//! The view core against a real store, without mounting anything.

use parking_lot::Mutex;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::ingest::{self, Progress};
use crate::store::Store;

struct Fixture {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    store: Store,
}

/// A source tree with a bit of everything, backed up as snapshot `one`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("small"), b"hello snapshot").unwrap();
    // Several chunks (the chunker's minimum is 512 KiB), incompressible-ish.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(src.join("sub/big"), &big).unwrap();
    // Sparse: data, a hole, data, and a hole at the end.
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"middle", 5 << 20).unwrap();
    f.set_len(12 << 20).unwrap();
    fs::hard_link(src.join("small"), src.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("../small", src.join("sub/sym")).unwrap();
    fs::set_permissions(src.join("small"), fs::Permissions::from_mode(0o4750)).unwrap();
    xattr_set(&src.join("sub/big"), "user.note", b"kept");
    let store = Store::init(&dir.path().join("store")).unwrap();
    backup(&store, &src, "one");
    Fixture {
        _dir: dir,
        src,
        store,
    }
}

fn backup(store: &Store, src: &Path, name: &str) {
    let opts = ingest::Options {
        name: Some(name.into()),
        parent: None,
    };
    let r = ingest::backup(store, src, &opts, &Progress::default()).unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    crate::os::xattr::XattrOf::Path(&p)
        .set(&n, value, 0)
        .expect("setxattr");
}

fn view(store: &Store) -> SnapView {
    SnapView::new(store.clone(), ViewConfig::default()).unwrap()
}

/// The node id of `path` ("SNAP/a/b") below the view's root.
fn walk(v: &SnapView, path: &str) -> Result<Entry> {
    let mut id = v.root_id();
    let mut entry = None;
    for comp in path.split('/') {
        let e = v.lookup(id, OsStr::new(comp))?;
        id = e.attr.ino;
        entry = Some(e);
    }
    Ok(entry.expect("a non-empty path"))
}

fn read_all(v: &SnapView, id: u64) -> Result<Vec<u8>> {
    v.open(id, libc::O_RDONLY)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = v.read(id, out.len() as u64, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn attributes_are_the_sources() {
    let fx = fixture();
    let v = view(&fx.store);
    for rel in ["small", "sub", "sub/big", "sub/sym", "sparse", "sub/deeper"] {
        let a = walk(&v, &format!("one/{rel}")).unwrap().attr;
        let md = fs::symlink_metadata(fx.src.join(rel)).unwrap();
        assert_eq!(u32::from(a.perm) | a.kind, md.mode(), "{rel}");
        assert_eq!((a.uid, a.gid), (md.uid(), md.gid()), "{rel}");
        // Directory sizes depend on the filesystem and are not recorded.
        if !md.is_dir() {
            assert_eq!(a.size, md.size(), "{rel}");
        }
        assert_eq!(a.nlink as u64, md.nlink(), "{rel}");
        assert_eq!(
            (a.mtime.sec, a.mtime.nsec as i64),
            (md.mtime(), md.mtime_nsec()),
            "{rel}"
        );
        assert_eq!(
            (a.ctime.sec, a.ctime.nsec as i64),
            (md.ctime(), md.ctime_nsec()),
            "{rel}"
        );
        assert_eq!(v.getattr(a.ino).unwrap(), a, "{rel}");
    }
    let root = walk(&v, "one").unwrap().attr;
    let md = fs::metadata(&fx.src).unwrap();
    assert_eq!(u32::from(root.perm) | root.kind, md.mode());
    // Sparse files take only their data's blocks.
    let sparse = walk(&v, "one/sparse").unwrap().attr;
    assert!(sparse.blocks <= 16, "{} blocks", sparse.blocks);
    // Extended attributes as recorded.
    let big = walk(&v, "one/sub/big").unwrap().attr.ino;
    assert_eq!(
        v.listxattr(big, 0).unwrap(),
        Xattr::Size(b"user.note\0".len())
    );
    assert_eq!(
        v.getxattr(big, OsStr::new("user.note"), 100).unwrap(),
        Xattr::Data(b"kept".to_vec())
    );
    assert_eq!(
        v.getxattr(big, OsStr::new("user.note"), 2),
        Err(Errno::ERANGE)
    );
    assert_eq!(
        v.getxattr(big, OsStr::new("user.none"), 100),
        Err(Errno::ENODATA)
    );
}

#[test]
fn contents_read_back_at_any_offset() {
    let fx = fixture();
    let v = view(&fx.store);
    for rel in ["small", "sub/big", "sparse"] {
        let want = fs::read(fx.src.join(rel)).unwrap();
        let id = walk(&v, &format!("one/{rel}")).unwrap().attr.ino;
        assert_eq!(read_all(&v, id).unwrap(), want, "{rel}");
        let len = want.len() as u64;
        // Odd offsets and sizes, spanning pieces, and past the end.
        let mut off = 0u64;
        let mut size = 1usize;
        while off < len + 10 {
            let mut buf = vec![0xAAu8; size];
            let n = v.read(id, off, &mut buf).unwrap();
            let end = (off + size as u64).min(len).max(off.min(len));
            assert_eq!(n as u64, end - off.min(len), "{rel} at {off}+{size}");
            assert_eq!(
                &buf[..n],
                &want[off.min(len) as usize..end as usize],
                "{rel} at {off}+{size}"
            );
            off += 777_777;
            size = size * 3 + 4097;
            size %= 1_500_000;
        }
    }
    // The symlink's target, and `latest`.
    let sym = walk(&v, "one/sub/sym").unwrap().attr.ino;
    assert_eq!(v.readlink(sym).unwrap(), b"../small");
    let latest = walk(&v, "latest").unwrap().attr;
    assert_eq!(latest.kind, libc::S_IFLNK);
    assert_eq!(v.readlink(latest.ino).unwrap(), b"one");
}

#[test]
fn hard_links_share_an_id_and_ids_survive_a_remount() {
    let fx = fixture();
    let v = view(&fx.store);
    let a = walk(&v, "one/small").unwrap().attr.ino;
    let b = walk(&v, "one/sub/link").unwrap().attr.ino;
    assert_eq!(a, b);
    assert!(crate::vfs::Namespace::Snapshots.owns(a));
    let paths = ["one", "one/small", "one/sub", "one/sub/big", "one/sparse"];
    let first: Vec<u64> = paths
        .iter()
        .map(|p| walk(&v, p).unwrap().attr.ino)
        .collect();
    drop(v);
    let again = view(&fx.store);
    let second: Vec<u64> = paths
        .iter()
        .map(|p| walk(&again, p).unwrap().attr.ino)
        .collect();
    assert_eq!(first, second);
    // Another snapshot of the same files gets other numbers.
    backup(&fx.store, &fx.src, "two");
    let v = view(&fx.store);
    assert_ne!(
        walk(&v, "one/small").unwrap().attr.ino,
        walk(&v, "two/small").unwrap().attr.ino
    );
    assert_eq!(
        v.readlink(walk(&v, "latest").unwrap().attr.ino).unwrap(),
        b"two"
    );
}

#[test]
fn listings_count_lookups_and_forget_drops_nodes() {
    let fx = fixture();
    let v = view(&fx.store);
    let root = v.opendir(v.root_id()).unwrap();
    let mut names = Vec::new();
    v.readdir(root, 0, false, |e| {
        names.push(e.name.to_str().unwrap().to_string());
        true
    })
    .unwrap();
    assert_eq!(names, [".", "..", "one", "latest"]);
    v.releasedir(root);

    let sub = walk(&v, "one/sub").unwrap().attr.ino;
    assert_eq!(v.nodes().len(), 2); // one, one/sub
    let fh = v.opendir(sub).unwrap();
    let mut listed = Vec::new();
    v.readdir(fh, 0, true, |e| {
        listed.push((e.name.to_str().unwrap().to_string(), e.ino, e.next_offset));
        true
    })
    .unwrap();
    let names: Vec<&str> = listed.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(names, [".", "..", "big", "deeper", "link", "sym"]);
    assert_eq!(v.nodes().len(), 6);
    // Resuming at an offset given earlier, with a reply that fills up after one entry.
    let resume = listed[3].2;
    let mut got = Vec::new();
    v.readdir(fh, resume, true, |e| {
        got.push(e.name.to_str().unwrap().to_string());
        got.len() < 2
    })
    .unwrap();
    assert_eq!(got, ["link", "sym"]);
    v.releasedir(fh);
    // link was listed twice (2 lookups), sym refused by the full reply (0 more).
    let link = listed[4].1;
    let sym = listed[5].1;
    v.forget(link, 1);
    assert!(v.getattr(link).is_ok());
    v.forget(link, 1);
    assert_eq!(v.getattr(link), Err(Errno::ENOENT));
    v.forget(sym, 1);
    assert_eq!(v.getattr(sym), Err(Errno::ENOENT));
    assert_eq!(v.open_handles(), 0);
}

#[test]
fn every_write_is_refused_with_erofs() {
    let fx = fixture();
    let v = view(&fx.store);
    let f = walk(&v, "one/small").unwrap().attr.ino;
    assert_eq!(v.modify(f), Err(Errno::EROFS));
    assert_eq!(v.modify(v.root_id()), Err(Errno::EROFS));
    assert_eq!(v.modify(ids::NAMESPACE_BITS | 12345), Err(Errno::ENOENT));
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(v.open(f, flags), Err(Errno::EROFS));
    }
    let d = walk(&v, "one/sub").unwrap().attr.ino;
    assert_eq!(v.open(d, libc::O_RDONLY), Err(Errno::EISDIR));
    assert_eq!(v.read(d, 0, &mut [0; 10]), Err(Errno::EISDIR));
    let sym = walk(&v, "one/sub/sym").unwrap().attr.ino;
    assert_eq!(v.open(sym, libc::O_RDONLY), Err(Errno::ELOOP));
    assert_eq!(walk(&v, "one/nothing").err(), Some(Errno::ENOENT));
    assert_eq!(walk(&v, "nosuch").err(), Some(Errno::ENOENT));
}

#[test]
fn a_damaged_chunk_fails_that_file_only() {
    let fx = fixture();
    // Damage the stored bytes of the first chunk of sub/big.
    {
        let reader = fx.store.reader().unwrap();
        let snap = fx.store.snapshot("one").unwrap();
        let node = crate::restore::resolve(&reader, &snap, b"sub/big").unwrap();
        let id = node.content[0].id.unwrap();
        let loc = reader.locate(&id).unwrap();
        let pack = crate::store::pack::pack_path(&fx.store.packs_dir(), loc.pack);
        let f = fs::OpenOptions::new().write(true).open(pack).unwrap();
        f.write_all_at(b"garbage!", u64::from(loc.offset) + 100)
            .unwrap();
    }
    let v = view(&fx.store);
    let big = walk(&v, "one/sub/big").unwrap().attr.ino;
    v.open(big, libc::O_RDONLY).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(v.read(big, 0, &mut buf), Err(Errno::EIO));
    // Again: a failure is not cached as data.
    assert_eq!(v.read(big, 10, &mut buf), Err(Errno::EIO));
    let small = walk(&v, "one/small").unwrap().attr.ino;
    assert_eq!(
        read_all(&v, small).unwrap(),
        fs::read(fx.src.join("small")).unwrap()
    );
}

#[test]
fn a_snapshot_made_while_mounted_appears() {
    let fx = fixture();
    let v = view(&fx.store);
    assert_eq!(walk(&v, "later").err(), Some(Errno::ENOENT));
    fs::write(fx.src.join("new"), b"new file").unwrap();
    backup(&fx.store, &fx.src, "later");
    std::thread::sleep(catalog::REFRESH);
    let id = walk(&v, "later/new").unwrap().attr.ino;
    assert_eq!(read_all(&v, id).unwrap(), b"new file");
}

#[test]
fn read_ahead_pushes_the_next_small_files_into_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 1..=4 {
        fs::write(src.join(format!("f{i}")), format!("content of file {i}")).unwrap();
    }
    let store = Store::init(&dir.path().join("store")).unwrap();
    backup(&store, &src, "s");
    let v = view(&store);
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let sink = pushed.clone();
    v.set_push(Box::new(move |id, offset, data: &[u8]| {
        sink.lock().push((id, offset, data.to_vec()))
    }));
    // Only files the kernel knows (listed with attributes) are pushed.
    let root = walk(&v, "s").unwrap().attr.ino;
    let fh = v.opendir(root).unwrap();
    v.readdir(fh, 0, true, |_| true).unwrap();
    v.releasedir(fh);
    let f1 = walk(&v, "s/f1").unwrap().attr.ino;
    let mut buf = [0u8; 100];
    assert_eq!(v.read(f1, 0, &mut buf).unwrap(), 17);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pushed.lock().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "pushes: {pushed:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut got = pushed.lock().clone();
    got.sort();
    let mut want: Vec<_> = (2..=4)
        .map(|i| {
            let id = walk(&v, &format!("s/f{i}")).unwrap().attr.ino;
            (id, 0, format!("content of file {i}").into_bytes())
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Each file once: reading f2 offers f3 and f4 no more.
    let f2 = want.iter().find(|w| w.2.ends_with(b"2")).unwrap().0;
    v.read(f2, 0, &mut buf).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(pushed.lock().len(), 3);
}
