//! Unit tests of the store on its own: no mount, no CLI.

use std::collections::HashSet;
use std::fs;

use super::pack::{self, BlobKind};
use super::testdata::pseudo_random;
use super::*;

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("s")).unwrap();
    (dir, store)
}

fn small_packs(store: &Store) -> Store {
    // Packs of 64 KiB so a few blobs make several packs.
    let mut cfg = store.config().clone();
    cfg.pack_size = 64 * 1024;
    fs::write(
        store.root().join("config"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    Store::open(store.root()).unwrap()
}

#[test]
fn blobs_round_trip_deduplicated() {
    let (_d, store) = new_store();
    let store = small_packs(&store);
    let text = b"hello hello hello hello hello hello hello hello hello hello hello".repeat(100);
    let noise = pseudo_random(200_000, 5);
    let mut w = store.writer("test").unwrap();
    let a = w.put(BlobKind::Data, &text).unwrap();
    let b = w.put(BlobKind::Data, &noise).unwrap();
    assert_eq!(
        w.put(BlobKind::Data, &text).unwrap(),
        a,
        "same content, same id"
    );
    assert_eq!(
        w.stats
            .data_blobs_new
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    w.commit(None).unwrap();
    drop(w);

    let r = store.reader().unwrap();
    assert_eq!(r.read_blob(&a).unwrap(), text);
    assert_eq!(r.read_blob(&b).unwrap(), noise);
    assert!(r.locate(&a).unwrap().compressed(), "text compresses");
    assert!(!r.locate(&b).unwrap().compressed(), "noise is stored as is");

    // A second writer sees both blobs and stores nothing new.
    let mut w = store.writer("test").unwrap();
    w.put(BlobKind::Data, &noise).unwrap();
    assert_eq!(
        w.stats
            .data_blobs_new
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    w.commit(None).unwrap();
}

#[test]
fn an_abandoned_writer_leaves_nothing_behind() {
    let (_d, store) = new_store();
    let store = small_packs(&store);
    {
        let w = store.writer("test").unwrap();
        for i in 0..10 {
            w.put(BlobKind::Data, &pseudo_random(50_000, i + 1))
                .unwrap();
        }
        // dropped without commit: as a failed backup
    }
    assert!(store.pack_numbers().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    let r = check::check(&store, true).unwrap();
    assert!(r.ok(), "{r:?}");
}

#[test]
fn unindexed_packs_are_indexed_by_the_next_writer() {
    let (_d, store) = new_store();
    let store = small_packs(&store);
    let blobs: Vec<Vec<u8>> = (0..8).map(|i| pseudo_random(40_000, i + 1)).collect();
    let mut w = store.writer("test").unwrap();
    let ids: Vec<Id> = blobs
        .iter()
        .map(|b| w.put(BlobKind::Data, b).unwrap())
        .collect();
    w.commit(None).unwrap();
    drop(w);
    // As if the writer died between its packs and its index file.
    for f in index::index_files(&store.index_dir()).unwrap() {
        fs::remove_file(f).unwrap();
    }
    let r = check::check(&store, false).unwrap();
    assert!(
        r.ok() && !r.warnings.is_empty(),
        "unindexed packs are a warning: {r:?}"
    );
    drop(store.writer("test").unwrap());
    let r = store.reader().unwrap();
    for (id, b) in ids.iter().zip(&blobs) {
        assert_eq!(&r.read_blob(id).unwrap(), b);
    }
}

#[test]
fn a_flipped_byte_is_found_and_named() {
    let (_d, store) = new_store();
    let data = b"important data ".repeat(10_000);
    let mut w = store.writer("test").unwrap();
    let id = w.put(BlobKind::Data, &data).unwrap();
    w.commit(None).unwrap();
    drop(w);
    let num = store.pack_numbers().unwrap()[0];
    let path = pack::pack_path(&store.packs_dir(), num);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    fs::write(&path, bytes).unwrap();

    let r = store.reader().unwrap();
    match r.read_blob(&id) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains(&pack::pack_name(num)), "{msg}"),
        other => panic!("expected damage, got {other:?}"),
    }
    let report = check::check(&store, true).unwrap();
    assert!(!report.ok());
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].id, id);
}

#[test]
fn index_finds_every_entry_across_many_files_and_merges() {
    let (_d, store) = new_store();
    let mut all = Vec::new();
    for round in 0..(index::MERGE_ABOVE as u64 + 2) {
        let mut w = store.writer("test").unwrap();
        for i in 0..50 {
            let b = pseudo_random(100, round * 1000 + i + 1);
            all.push((w.put(BlobKind::Data, &b).unwrap(), b));
        }
        w.commit(None).unwrap();
    }
    let files = index::index_files(&store.index_dir()).unwrap().len();
    assert!(
        files <= index::MERGE_ABOVE,
        "{files} index files: merging did not happen"
    );
    let r = store.reader().unwrap();
    assert_eq!(r.index().len(), all.len());
    for (id, b) in &all {
        assert_eq!(&r.read_blob(id).unwrap(), b);
    }
    assert!(r.index().get(&Id::of(b"absent")).is_none());
}

#[test]
fn one_writer_at_a_time_and_readers_beside_it() {
    let (_d, store) = new_store();
    let w = store.writer("backup").unwrap();
    match store.writer("backup") {
        Err(Error::Locked(who)) => assert!(who.contains(&std::process::id().to_string()), "{who}"),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got a second writer"),
    }
    let _reader = store.reader().unwrap();
    drop(w);
    drop(store.writer("backup").unwrap());
}

#[test]
fn gc_keeps_what_snapshots_use_and_frees_the_rest() {
    let (_d, store) = new_store();
    let store = small_packs(&store);
    let keep: Vec<Vec<u8>> = (0..6).map(|i| pseudo_random(30_000, i + 1)).collect();
    let drop_: Vec<Vec<u8>> = (0..6).map(|i| pseudo_random(30_000, i + 100)).collect();
    let mut w = store.writer("test").unwrap();
    let mut tree = Tree::default();
    let mut dead = Vec::new();
    // Interleave, so packs hold live and dead blobs both.
    for (k, d) in keep.iter().zip(&drop_) {
        let id = w.put(BlobKind::Data, k).unwrap();
        tree.nodes.push(Node {
            name: id.to_hex().into_bytes(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: k.len() as u64,
            mtime: Time::default(),
            atime: Time::default(),
            ctime: Time::default(),
            ino: 1,
            dev: 1,
            nlink: 1,
            rdev: 0,
            target: None,
            xattrs: vec![],
            content: vec![Piece {
                id: Some(id),
                len: k.len() as u64,
            }],
            subtree: None,
        });
        dead.push(w.put(BlobKind::Data, d).unwrap());
    }
    let top = w.put(BlobKind::Tree, &tree.encode()).unwrap();
    let snap = Snapshot {
        name: "s".into(),
        time: "2026-01-01T00:00:00.000000000Z".into(),
        tree: top,
        source: "/x".into(),
        hostname: "h".into(),
        stats: Default::default(),
        capture: None,
    };
    w.commit(Some(&snap)).unwrap();
    drop(w);
    let before: u64 = store.pack_numbers().unwrap().len() as u64;
    let report = gc::gc(&store).unwrap();
    assert_eq!(report.blobs_deleted, dead.len());
    let r = store.reader().unwrap();
    for k in &keep {
        assert_eq!(&r.read_blob(&Id::of(k)).unwrap(), k);
    }
    let indexed: HashSet<Id> = r.index().iter().map(|(id, _)| id).collect();
    assert!(
        dead.iter().all(|d| !indexed.contains(d)),
        "dead blobs are gone"
    );
    assert!(check::check(&store, true).unwrap().ok());
    assert!(store.pack_numbers().unwrap().len() as u64 <= before);
}

#[test]
fn snapshot_names_that_tools_and_paths_cannot_take_are_refused() {
    for bad in [
        "",
        ".hidden",
        "a/b",
        "a:b",
        "..",
        "latest",
        "x\ny",
        &"n".repeat(201),
    ] {
        assert!(snapshot::validate_name(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["nightly", "2026-11-22T030405Z", "weekly 1", "ünïcode"] {
        snapshot::validate_name(good).unwrap();
    }
    let auto =
        snapshot::auto_name(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000));
    assert_eq!(auto, "2001-09-09T014640Z");
    snapshot::validate_name(&auto).unwrap();
}

#[test]
fn newer_format_and_non_stores_are_refused_clearly() {
    let (d, store) = new_store();
    let cfg = store.root().join("config");
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 999");
    fs::write(&cfg, text).unwrap();
    assert!(matches!(
        Store::open(store.root()),
        Err(Error::NewerVersion { found: 999, .. })
    ));
    let file = d.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(Store::open(&file), Err(Error::NotAStore(..))));
    assert!(matches!(
        Store::open_or_init(&file),
        Err(Error::NotAStore(..))
    ));
}
