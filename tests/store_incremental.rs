//! Store issue: a second backup reuses the previous snapshot's entries for files whose inode,
//! size, mtime and ctime are unchanged, without reading them. Measured through the "bytes read"
//! figure of the summary line that `bkfs backup` prints at the end.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

const MIB: u64 = 1 << 20;

fn read_of(o: &Out, what: &str) -> u64 {
    o.ok(what);
    bytes_read(&o.all()).unwrap_or_else(|| {
        panic!(
            "{what}: the summary line has no \"bytes read\" figure that can be found \
             (looked for a size next to the word `read`)\n{}",
            o.describe()
        )
    })
}

#[test]
fn unchanged_files_are_not_read_again() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    let mut rng = Rng::new(3);
    for d in 0..4 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for i in 0..5 {
            write_random(&src.join(format!("d{d}/f{i}.bin")), MIB, &mut rng);
        }
    }
    write_random(&src.join("a.bin"), 2 * MIB, &mut rng);
    write_random(&src.join("b.bin"), MIB, &mut rng);
    write_random(&src.join("c.bin"), MIB, &mut rng);
    let total = 23 * MIB;
    let store = Store::new();
    let mut f = Failures::new();

    let r1 = read_of(&store.backup(&src, "one"), "first backup");
    f.check(r1 >= total * 95 / 100 && r1 <= total * 2, || {
        format!("first backup: bytes read {r1}, expected about {total} (the whole tree)")
    });

    let r2 = read_of(&store.backup(&src, "two"), "second backup, nothing changed");
    f.check(r2 <= 64 * 1024, || {
        format!("second backup of an unchanged tree read {r2} bytes; expected 0 (entries reused)")
    });

    // One file rewritten (new contents, new mtime): only it is read.
    write_random(&src.join("c.bin"), MIB, &mut rng);
    let r3 = read_of(
        &store.backup(&src, "three"),
        "third backup, c.bin rewritten",
    );
    f.check((MIB * 9 / 10..=2 * MIB).contains(&r3), || {
        format!("after rewriting the 1 MiB c.bin the backup read {r3} bytes; expected about 1 MiB")
    });

    // Same size, same mtime, different ctime (chmod back and forth): must be re-read.
    let a = src.join("a.bin");
    let mode = fs::metadata(&a).unwrap().mode() & 0o7777;
    let ctime0 = fs::metadata(&a).unwrap().ctime_nsec();
    std::thread::sleep(std::time::Duration::from_millis(20));
    chmod(&a, 0o600);
    chmod(&a, mode);
    assert_ne!(fs::metadata(&a).unwrap().ctime_nsec(), ctime0);
    let r4 = read_of(
        &store.backup(&src, "four"),
        "fourth backup, a.bin ctime changed",
    );
    f.check((2 * MIB * 9 / 10..=4 * MIB).contains(&r4), || {
        format!(
            "a.bin (2 MiB) kept size and mtime but its ctime changed: expected it re-read \
             (about 2 MiB), the backup read {r4} bytes"
        )
    });

    // Contents changed in place, size kept, mtime put back: ctime tells, and the snapshot must
    // hold the new contents.
    let b = src.join("b.bin");
    let m = fs::metadata(&b).unwrap();
    let (at, mt) = ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()));
    let mut data = fs::read(&b).unwrap();
    data[MIB as usize / 2] ^= 0x55;
    fs::write(&b, &data).unwrap();
    set_times(&b, at, mt);
    let l5 = listing(&src);
    let r5 = read_of(
        &store.backup(&src, "five"),
        "fifth backup, b.bin changed, mtime reset",
    );
    f.check(r5 >= MIB * 9 / 10, || {
        format!("b.bin changed with size and mtime kept (ctime changed) but was not re-read: {r5} bytes read")
    });
    let dest = work.path().join("r5");
    if f.code(&store.restore("five", &dest), 0, "restore five") {
        f.same(
            "snapshot five differs from the tree it was taken of (atimes not compared)",
            &l5.no_atime(),
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.check(), 0, "check after five backups");
    f.finish();
}

#[test]
fn summary_parser_understands_common_forms() {
    assert_eq!(bytes_read("files 3, read 0 B, new 0 B"), Some(0));
    assert_eq!(bytes_read("read: 1572864 bytes"), Some(1572864));
    assert_eq!(bytes_read("1.5 MiB read, 0 B new"), Some(1572864));
    assert_eq!(bytes_read("bytes read: 2.0 MiB"), Some(2 * MIB));
    assert_eq!(bytes_read("read=1024 new=0"), Some(1024));
    assert_eq!(bytes_read("no figure here"), None);
}
