//! Store issue: the store is deduplicated (content-defined chunks: an insertion near the start
//! of a big file does not make the rest of it new) and compressed (zstd where it pays).
//! Measured by the size of the store directory, as a user would (`du -sb`).

mod common;

use common::*;
use std::fs;

const MIB: u64 = 1 << 20;

#[test]
fn duplicates_shifted_copies_and_text_take_little_room() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0xd0d0);
    write_random(&src.join("a.bin"), 20 * MIB, &mut rng);
    let store = Store::new();
    let mut f = Failures::new();
    store.backup(&src, "one").ok("first backup");
    let s1 = store.du();
    f.check((20 * MIB..=21 * MIB).contains(&s1), || {
        format!("20 MiB of random data made a store of {s1} bytes (expected 20-21 MiB)")
    });

    // An identical copy, and a copy with 100 bytes inserted near the start: content-defined
    // chunking keeps all but the first chunk or two.
    let a = fs::read(src.join("a.bin")).unwrap();
    fs::write(src.join("copy.bin"), &a).unwrap();
    let mut shifted = a[..1000].to_vec();
    shifted.extend_from_slice(&rng.bytes(100));
    shifted.extend_from_slice(&a[1000..]);
    fs::write(src.join("shifted.bin"), &shifted).unwrap();
    store.backup(&src, "two").ok("backup with copies");
    let s2 = store.du();
    f.check(s2 <= s1 + 10 * MIB, || {
        format!(
            "an identical copy and a copy shifted by 100 bytes of a 20 MiB file grew the store \
             by {} bytes (expected a few MiB at most: content-defined chunks)",
            s2 - s1
        )
    });

    // 20 MiB of compressible text takes a fraction of its size.
    write_text(&src.join("text.txt"), 20 * MIB, &mut rng);
    store.backup(&src, "three").ok("backup with text");
    let s3 = store.du();
    f.check(s3 <= s2 + 8 * MIB, || {
        format!(
            "20 MiB of highly compressible text grew the store by {} bytes (expected well under 8 MiB: zstd)",
            s3 - s2
        )
    });

    let dest = work.path().join("dest");
    if f.code(&store.restore("three", &dest), 0, "restore") {
        f.same(
            "restore of the deduplicated snapshot",
            &listing(&src).no_atime(),
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.check_data(), 0, "check --read-data");
    f.finish();
}

/// gc repacks packs that are partly used: after forgetting a snapshot whose data shares packs
/// with a kept one, the store shrinks to about the kept data.
#[test]
fn gc_repacks_partly_used_packs() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x9e);
    for i in 0..40 {
        write_random(&src.join(format!("f{i:02}")), 400_000, &mut rng);
    }
    let store = Store::new();
    store.backup(&src, "all").ok("backup all");
    for i in (0..40).step_by(2) {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    let want = listing(&src).no_atime();
    store.backup(&src, "half").ok("backup half");
    store.run(["forget", "all"]).ok("forget all");
    let before = store.du();
    let mut f = Failures::new();
    f.code(&store.run(["gc"]), 0, "gc");
    let after = store.du();
    let kept = 20 * 400_000u64;
    f.check(after <= kept + kept / 10 + (1 << 20), || {
        format!(
            "after forgetting half of the data, gc left {after} bytes (before gc {before}); the kept \
             data is {kept} bytes: partly used packs were not repacked"
        )
    });
    let dest = work.path().join("dest");
    if f.code(&store.restore("half", &dest), 0, "restore half after gc") {
        f.same("half after repacking gc", &want, &listing(&dest).no_atime());
    }
    f.code(&store.check_data(), 0, "check --read-data after gc");
    f.finish();
}

/// The thread count changes nothing in the result: backups with --threads 1 and --threads 8
/// of the same tree restore identically, `diff` between them is empty, and the second adds
/// no data.
#[test]
fn thread_count_does_not_change_the_snapshot() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x7d);
    random_tree(
        &src,
        &mut rng,
        &TreeSpec {
            files: 60,
            max_depth: 3,
            max_size: 3_000_000,
            dup_percent: 25,
            specials: true,
        },
    );
    let want = listing(&src);
    let store = Store::new();
    let mut f = Failures::new();
    let t1 = store.run([
        "backup".as_ref(),
        src.as_os_str(),
        "--name".as_ref(),
        "t1".as_ref(),
        "--threads".as_ref(),
        std::ffi::OsStr::new("1"),
    ]);
    f.code(&t1, 0, "backup --threads 1");
    let size1 = store.du();
    // A new source path, so the second backup has no parent to reuse and chunks everything.
    let src2 = work.path().join("src2");
    fs::rename(&src, &src2).unwrap();
    let t8 = store.run([
        "backup".as_ref(),
        src2.as_os_str(),
        "--name".as_ref(),
        "t8".as_ref(),
        "--threads".as_ref(),
        std::ffi::OsStr::new("8"),
    ]);
    f.code(&t8, 0, "backup --threads 8");
    let grown = store.du() - size1;
    f.check(grown < 256 * 1024, || {
        format!("the same data backed up with 8 threads after 1 added {grown} bytes (expected ~0: same chunks)")
    });
    let d = store.run(["diff", "t1", "t8"]);
    f.check(
        d.code == Some(0) && d.stdout_str().lines().all(|l| !l.starts_with(['+', '-'])),
        || {
            format!(
                "diff between the two should show no added or removed paths\n{}",
                d.describe()
            )
        },
    );
    for snap in ["t1", "t8"] {
        let dest = work.path().join(format!("r-{snap}"));
        if f.code(&store.restore(snap, &dest), 0, &format!("restore {snap}")) {
            f.same(&format!("{snap} restored"), &want, &listing(&dest));
        }
    }
    f.finish();
}
