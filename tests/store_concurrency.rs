//! Store issue: one writer per store at a time, with a lock a crashed holder does not leave
//! blocking forever; readers (list, ls, restore, check) work beside a writer.
//!
//! The running writer is held still with SIGSTOP once it has taken the store (it holds a lock
//! per /proc/locks, or has created a file in the store), so the test does not race its speed.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Spawns a backup of `src` as `name` and returns once it has started writing to the store.
fn start_writer(store: &Store, src: &Path, name: &str) -> Bg {
    let before = store.files();
    let mut bg = Bg::spawn(store.cmd([
        "backup".as_ref(),
        src.as_os_str(),
        "--name".as_ref(),
        std::ffi::OsStr::new(name),
    ]));
    let start = Instant::now();
    loop {
        if writer_active(store, bg.pid(), &before) {
            return bg;
        }
        if !bg.running() {
            panic!(
                "the backup ended before it could be caught writing (tree too small?)\n{}",
                bg.stderr()
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "the backup did not start writing within 60 s\n{}",
                bg.stderr()
            );
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn second_writer_is_refused_readers_work() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let small = work.path().join("small");
    fs::create_dir(&small).unwrap();
    let mut rng = Rng::new(77);
    random_tree(
        &small,
        &mut rng,
        &TreeSpec {
            files: 30,
            max_depth: 3,
            max_size: 50_000,
            dup_percent: 10,
            specials: false,
        },
    );
    let small_l = listing(&small);
    let big = work.path().join("big");
    bulk_tree(&big, 150 << 20, 78);
    let big_l = listing(&big);

    let store = Store::new();
    store.backup(&small, "base").ok("first backup");
    let mut f = Failures::new();

    let mut writer = start_writer(&store, &big, "bigone");
    writer.signal(libc::SIGSTOP);
    let pid = writer.pid();

    // A second writer is refused at once, naming the holder.
    let o = store.backup(&small, "second");
    f.code(&o, 7, "a second backup while another one runs");
    f.check(o.stderr_str().contains(&pid.to_string()), || {
        format!(
            "the message should name the lock holder (pid {pid})\n{}",
            o.describe()
        )
    });
    f.check(o.elapsed < Duration::from_secs(20), || {
        format!(
            "the refused writer waited {:?} instead of failing at once",
            o.elapsed
        )
    });
    let o = store.run(["gc"]);
    f.code(&o, 7, "gc while a backup runs");
    let o = store.run(["forget", "base"]);
    f.code(&o, 7, "forget while a backup runs");

    // Readers work beside it.
    let o = store.list();
    f.code(&o, 0, "list while a backup runs");
    f.check(o.stdout_str().contains("base"), || {
        format!("list lacks base\n{}", o.describe())
    });
    f.check(!o.stdout_str().contains("bigone"), || {
        format!(
            "the running backup's snapshot is listed before it is complete\n{}",
            o.describe()
        )
    });
    f.code(&store.run(["ls", "base"]), 0, "ls while a backup runs");
    let dest = work.path().join("dest");
    if f.code(
        &store.restore("base", &dest),
        0,
        "restore while a backup runs",
    ) {
        f.same(
            "restore of base while a backup runs",
            &small_l.no_atime(),
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.check(), 0, "check while a backup runs");
    f.check(writer.running(), || {
        "the held writer exited while stopped?".into()
    });

    writer.signal(libc::SIGCONT);
    let code = writer.wait(Duration::from_secs(300));
    f.check(code == Some(0), || {
        format!(
            "the held backup, once continued, exited {code:?}\n{}",
            writer.stderr()
        )
    });
    let dest2 = work.path().join("dest2");
    if f.code(
        &store.restore("bigone", &dest2),
        0,
        "restore of the held backup",
    ) {
        f.same(
            "the held backup",
            &big_l.no_atime(),
            &listing(&dest2).no_atime(),
        );
    }
    f.code(
        &store.backup(&small, "third"),
        0,
        "a backup once the lock is free",
    );
    f.code(&store.check(), 0, "check at the end");
    f.finish();
}

#[test]
fn lock_of_a_killed_writer_does_not_block() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let big = work.path().join("big");
    bulk_tree(&big, 60 << 20, 79);
    let small = work.path().join("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("x"), b"x").unwrap();
    let store = Store::new();
    store.backup(&small, "base").ok("first backup");
    let mut f = Failures::new();

    let mut writer = start_writer(&store, &big, "killed");
    // Give it a moment inside its work, then kill -9.
    std::thread::sleep(Duration::from_millis(100));
    writer.kill9();

    let o = store.backup(&small, "next");
    f.code(
        &o,
        0,
        "a backup after the previous writer was killed with SIGKILL",
    );
    f.check(o.elapsed < Duration::from_secs(30), || {
        format!(
            "the next writer took {:?}: the stale lock blocked it",
            o.elapsed
        )
    });
    f.code(&store.check(), 0, "check after the killed writer");
    let names = store.snapshot_names();
    f.check(names.contains(&"next".to_string()), || {
        format!("list: {names:?}")
    });
    f.finish();
}
