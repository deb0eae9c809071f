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
