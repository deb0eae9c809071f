//! Store issue: a flipped byte in a pack is found by `check --read-data`, which names the pack,
//! the chunk and the files affected; restoring fails with an error naming the affected file,
//! and everything else restores.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[test]
fn flipped_byte_in_a_pack() {
    flipped_byte_in_a_pack_of(false);
}

/// The same with compressible files: the damaged blob is a zstd frame, so the damage may show
/// as a decompression error instead of a wrong id; it must be handled the same way.
#[test]
fn flipped_byte_in_a_compressed_blob() {
    flipped_byte_in_a_pack_of(true);
}

fn flipped_byte_in_a_pack_of(compressible: bool) {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    let mut rng = Rng::new(0xbad);
    // Small distinct files: each one is one chunk, whose id is blake3 of the file's contents,
    // so the test knows which chunk id belongs to which file.
    for d in 0..6 {
        let dir = src.join(format!("dir{d}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..50 {
            if compressible {
                write_text(&dir.join(format!("file{i}.bin")), 30_000, &mut rng);
            } else {
                write_random(&dir.join(format!("file{i}.bin")), 4096, &mut rng);
            }
        }
    }
    let want = listing(&src);
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    store.check_data().ok("check --read-data before any damage");

    // Flip one byte in the middle of the largest pack.
    let packs = store.packs();
    assert!(
        !packs.is_empty(),
        "no pack files under {:?}/packs",
        store.path
    );
    let pack: PathBuf = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut bytes = fs::read(&pack).unwrap();
    // Trees and data share packs, in the order the parallel backup wrote
    // them: the middle of a pack may be a directory's tree, which would cost
    // the whole directory. Stored as they are (random bytes do not
    // compress), a file's bytes can be found in the pack: the flip goes
    // into the middle of the first file found there.
    let stored = (!compressible)
        .then(|| {
            walk_files(&src).into_iter().find_map(|f| {
                let data = fs::read(&f).unwrap();
                bytes
                    .windows(data.len())
                    .position(|w| w == data.as_slice())
                    .map(|at| at + data.len() / 2)
            })
        })
        .flatten();
    let mid = stored.unwrap_or(bytes.len() / 2);
    bytes[mid] ^= 0x01;
    // Keep the file's identity (writes in place, like a disk error would).
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut fh = fs::OpenOptions::new().write(true).open(&pack).unwrap();
        fh.seek(SeekFrom::Start(mid as u64)).unwrap();
        fh.write_all(&bytes[mid..mid + 1]).unwrap();
    }
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let mut f = Failures::new();

    let c = store.check();
    f.check(matches!(c.code, Some(0) | Some(9)), || {
        format!(
            "check without --read-data after a flipped data byte: expected 0 or 9\n{}",
            c.describe()
        )
    });

    // Restore: exit 9, the damaged file(s) named, the rest identical.
    let dest = work.path().join("dest");
    let r = store.restore("s", &dest);
    f.code(&r, 9, "restore of a snapshot with a damaged chunk");
    let got = if dest.exists() {
        listing(&dest)
    } else {
        Listing::default()
    };
    let mut affected: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (p, e) in &want.entries {
        if e.kind == "file" && got.entries.get(p).map(|g| &g.hash) != Some(&e.hash) {
            affected.insert(p.clone());
        }
    }
    f.check(!affected.is_empty(), || {
        format!(
            "a byte was flipped at offset {mid} of pack {pack_name}, yet every file restored with \
             its original contents (is the byte in unused space?)\n{}",
            r.describe()
        )
    });
    f.check(affected.len() <= 3, || {
        format!(
            "one flipped byte cost {} files (each file is its own 4 KiB chunk): {:?}",
            affected.len(),
            affected.iter().map(|p| show(p)).collect::<Vec<_>>()
        )
    });
    let rerr = r.all();
    for p in &affected {
        let name = String::from_utf8_lossy(p).into_owned();
        f.check(rerr.contains(&name), || {
            format!(
                "restore does not name the damaged file {name} (which did not come back intact)\n{}",
                r.describe()
            )
        });
        // A damaged file must not be served as data: missing, or reported; never silently wrong.
    }
    let rest = want.without(&affected.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
    let got_rest = got.without(&affected.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
    f.same(
        "every file but the damaged one(s) must restore identically (atimes not compared)",
        &rest.no_atime(),
        &got_rest.no_atime(),
    );

    // check --read-data: exit 9, naming the pack, the chunk id and the affected file(s).
    let c = store.check_data();
    f.code(&c, 9, "check --read-data after flipping a byte in a pack");
    let out = c.all();
    f.check(out.contains(&pack_name), || {
        format!(
            "check --read-data does not name the damaged pack {pack_name}\n{}",
            c.describe()
        )
    });
    for p in &affected {
        let name = String::from_utf8_lossy(p).into_owned();
        f.check(out.contains(&name), || {
            format!(
                "check --read-data does not name the affected file {name}\n{}",
                c.describe()
            )
        });
        let data = fs::read(src.join(OsStr::from_bytes(p))).unwrap();
        let id = blake3::hash(&data).to_hex().to_string();
        f.check(out.to_ascii_lowercase().contains(&id[..12]), || {
            format!(
                "check --read-data does not name the damaged chunk {id} (blake3 of {name}, a \
                 one-chunk file; looked for its first 12 hex digits)\n{}",
                c.describe()
            )
        });
    }

    // An undamaged single file still restores fine on its own.
    let some_ok = want
        .entries
        .iter()
        .find(|(p, e)| e.kind == "file" && !affected.contains(*p))
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .unwrap();
    let one = work.path().join("one");
    let o = store.restore(&format!("s:{some_ok}"), &one);
    f.code(
        &o,
        0,
        "restore of an undamaged single file from the damaged snapshot",
    );
    f.finish();
}

/// Structural damage that `check` (without --read-data) must see: a pack cut short, a pack
/// gone. Each exits 9 and names the pack.
#[test]
fn truncated_or_missing_pack_is_found_by_check() {
    if !require(true, &[]) {
        return;
    }
    let mut f = Failures::new();
    for damage in ["truncate", "delete"] {
        let work = tempdir();
        let src = work.path().join("src");
        fs::create_dir(&src).unwrap();
        let mut rng = Rng::new(0x7);
        for i in 0..20 {
            write_random(&src.join(format!("f{i}")), 50_000, &mut rng);
        }
        let store = Store::new();
        store.backup(&src, "s").ok("backup");
        let pack = store
            .packs()
            .into_iter()
            .max_by_key(|p| fs::metadata(p).unwrap().len())
            .expect("a pack");
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        if damage == "truncate" {
            let len = fs::metadata(&pack).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&pack)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        } else {
            fs::remove_file(&pack).unwrap();
        }
        let c = store.check();
        f.code(&c, 9, &format!("check after a pack was {damage}d"));
        f.check(c.all().contains(&name), || {
            format!(
                "check after a pack was {damage}d should name it ({name})\n{}",
                c.describe()
            )
        });
        let r = store.restore("s", &work.path().join("dest"));
        f.check(r.code == Some(9) || r.code == Some(1), || {
            format!(
                "restore after a pack was {damage}d must fail (9)\n{}",
                r.describe()
            )
        });
    }
    f.finish();
}

/// The chunk index is rebuildable from the packs: with the index directory gone, the store
/// still restores (after `check --rebuild-index`, or without it), and check passes.
#[test]
fn lost_index_is_rebuilt_from_packs() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x8);
    for i in 0..20 {
        write_random(&src.join(format!("f{i}")), 70_000, &mut rng);
    }
    write_random(&src.join("big"), 5 << 20, &mut rng);
    let want = listing(&src).no_atime();
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let index = store.path.join("index");
    assert!(index.is_dir(), "expected the index under STORE/index");
    for p in walk_files(&index) {
        fs::remove_file(p).unwrap();
    }
    let mut f = Failures::new();
    let o = store.run(["check", "--rebuild-index"]);
    f.code(&o, 0, "check --rebuild-index with the index files deleted");
    f.code(
        &store.check_data(),
        0,
        "check --read-data after the rebuild",
    );
    let dest = work.path().join("dest");
    if f.code(&store.restore("s", &dest), 0, "restore after the rebuild") {
        f.same(
            "restore after the index was rebuilt",
            &want,
            &listing(&dest).no_atime(),
        );
    }
    // And the next backup still deduplicates against the rebuilt index.
    let before = store.du();
    store.backup(&src, "t").ok("backup after the rebuild");
    let grown = store.du() - before;
    f.check(grown < 1 << 20, || {
        format!("a backup of the same tree after the index rebuild added {grown} bytes (no dedup?)")
    });
    f.finish();
}

/// gc over a damaged pack must neither hide the damage (check --read-data still finds it) nor
/// lose anything undamaged that a kept snapshot needs.
#[test]
fn gc_over_a_damaged_pack() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x9c);
    for i in 0..120 {
        write_random(&src.join(format!("f{i:03}")), 4096, &mut rng);
    }
    let store = Store::new();
    store.backup(&src, "all").ok("backup all");
    // keep: every other file, in the same packs.
    for i in (0..120).step_by(2) {
        fs::remove_file(src.join(format!("f{i:03}"))).unwrap();
    }
    let want = listing(&src).no_atime();
    store.backup(&src, "keep").ok("backup keep");
    store.run(["forget", "all"]).ok("forget all");
    let pack = store
        .packs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x80;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut fh = fs::OpenOptions::new().write(true).open(&pack).unwrap();
        fh.seek(SeekFrom::Start(mid as u64)).unwrap();
        fh.write_all(&bytes[mid..mid + 1]).unwrap();
    }
    let mut f = Failures::new();
    let g = store.run(["gc"]);
    eprintln!("gc over a damaged pack: exit {:?}\n{}", g.code, g.all());
    f.check(g.code.is_some() && !g.timed_out, || {
        format!("gc crashed\n{}", g.describe())
    });
    let c = store.check_data();
    // The flipped byte may have been in a blob only `all` used (then gc may drop it: fine);
    // otherwise the damage must still be reported.
    let dest = work.path().join("dest");
    let r = store.restore("keep", &dest);
    let got = if dest.exists() {
        listing(&dest).no_atime()
    } else {
        Listing::default()
    };
    let damaged: Vec<Vec<u8>> = want
        .entries
        .iter()
        .filter(|(p, e)| e.kind == "file" && got.entries.get(*p).map(|g| &g.hash) != Some(&e.hash))
        .map(|(p, _)| p.clone())
        .collect();
    if damaged.is_empty() {
        f.code(&r, 0, "restore keep (no kept file was damaged)");
        f.code(
            &c,
            0,
            "check --read-data when gc dropped the only damaged blob",
        );
    } else {
        f.code(
            &c,
            9,
            "check --read-data after gc over a damaged pack (damage must stay visible)",
        );
        f.code(&r, 9, "restore keep with a damaged file");
        f.check(damaged.len() <= 2, || {
            format!(
                "gc over one flipped byte cost {} files: {:?}",
                damaged.len(),
                damaged.iter().map(|p| show(p)).collect::<Vec<_>>()
            )
        });
        let refs: Vec<&[u8]> = damaged.iter().map(|p| p.as_slice()).collect();
        f.same(
            "undamaged kept files after gc over a damaged pack",
            &want.without(&refs),
            &got.without(&refs),
        );
    }
    f.finish();
}

/// Tree blobs of every pack, from the pack footers (docs/FORMAT.md, version 1):
/// (pack path, offset, stored length).
fn tree_blobs(store: &Store) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    for p in store.packs() {
        let b = fs::read(&p).unwrap();
        if b.len() < 56 || &b[b.len() - 8..] != b"BKFSPEND" {
            continue;
        }
        let t = b.len() - 48;
        let count = u32::from_le_bytes(b[t..t + 4].try_into().unwrap()) as usize;
        let start = t - count * 48;
        for i in 0..count {
            let e = &b[start + i * 48..start + (i + 1) * 48];
            let off = u32::from_le_bytes(e[32..36].try_into().unwrap()) as u64;
            let len = u32::from_le_bytes(e[36..40].try_into().unwrap()) as u64;
            if e[44] == 1 {
                out.push((p.clone(), off, len));
            }
        }
    }
    out
}

/// A flipped byte in a directory's tree blob: `check` (structure) finds it, restore fails
/// with 9, and nothing it does restore is wrong.
#[test]
fn flipped_byte_in_a_tree() {
    if !require(true, &[]) {
        return;
    }
    let mut f = Failures::new();
    for seed in 0..3u64 {
        let work = tempdir();
        let src = work.path().join("src");
        let mut rng = Rng::new(0x7ee + seed);
        for d in 0..5 {
            let dir = src.join(format!("d{d}")).join("inner");
            fs::create_dir_all(&dir).unwrap();
            for i in 0..6 {
                write_random(&dir.join(format!("f{i}")), rng.range(10, 3000), &mut rng);
            }
        }
        let want = listing(&src).no_atime();
        let store = Store::new();
        store.backup(&src, "s").ok("backup");
        let trees = tree_blobs(&store);
        assert!(
            trees.len() >= 5,
            "expected tree blobs in the pack footers, found {}",
            trees.len()
        );
        let (pack, off, len) = rng.pick(&trees).clone();
        let at = off + len / 2;
        let mut b = fs::read(&pack).unwrap();
        b[at as usize] ^= 0x10;
        fs::write(&pack, &b).unwrap();
        let ctx = format!(
            "byte {at} of {} (in a tree blob at {off}+{len})",
            pack.display()
        );
        f.code(&store.check(), 9, &format!("{ctx}: check"));
        let dest = work.path().join("dest");
        let r = store.restore("s", &dest);
        f.code(&r, 9, &format!("{ctx}: restore"));
        if dest.exists() {
            let got = listing(&dest).no_atime();
            for (p, e) in &got.entries {
                if e.kind == "file" {
                    f.check(want.entries.get(p).map(|w| &w.hash) == Some(&e.hash), || {
                        format!("{ctx}: restore produced {} with contents that are not the source's", show(p))
                    });
                }
            }
        }
    }
    f.finish();
}

/// One damaged snapshot record (garbage in snapshots/NAME.json) is reported, but does not
/// take the store down with it: the other snapshots are still listed and restored, new
/// backups work, and `forget` removes the damaged record, after which check passes.
#[test]
fn damaged_snapshot_record_does_not_block_the_store() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let want = listing(&src).no_atime();
    let store = Store::new();
    store.backup(&src, "good").ok("backup good");
    fs::write(src.join("b"), b"b").unwrap();
    store.backup(&src, "bad").ok("backup bad");
    let rec = store.path.join("snapshots").join("bad.json");
    assert!(
        rec.is_file(),
        "docs/FORMAT.md: snapshot records are snapshots/NAME.json"
    );
    fs::write(&rec, b"garbage{").unwrap();
    let mut f = Failures::new();

    let c = store.check();
    f.code(&c, 9, "check with a damaged snapshot record");
    f.check(c.all().contains("bad"), || {
        format!("check should name the damaged record\n{}", c.describe())
    });
    let l = store.list();
    f.check(l.stdout_str().contains("good"), || {
        format!(
            "`bkfs list` should still show the good snapshot (and report the bad one)\n{}",
            l.describe()
        )
    });
    let dest = work.path().join("dest");
    if f.code(
        &store.restore("good", &dest),
        0,
        "restore of the good snapshot",
    ) {
        f.same("the good snapshot", &want, &listing(&dest).no_atime());
    }
    fs::write(src.join("c"), b"c").unwrap();
    let o = store.backup(&src, "new");
    f.code(&o, 0, "a new backup while one snapshot record is damaged");
    let o = store.run(["forget", "bad"]);
    f.code(&o, 0, "forget of the damaged snapshot record");
    f.code(
        &store.check(),
        0,
        "check after forgetting the damaged record",
    );
    f.code(
        &store.run(["gc"]),
        0,
        "gc after forgetting the damaged record",
    );
    f.finish();
}
