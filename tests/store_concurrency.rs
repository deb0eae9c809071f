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
    // The holder writes who it is into the lock file just after taking the lock: let it.
    std::thread::sleep(Duration::from_millis(50));
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

/// Two first backups started together into a store that does not exist yet: the implicit
/// creation must not race. Each exits 0 or 7 (at least one 0); the store checks; every listed
/// snapshot restores to its own tree.
#[test]
fn simultaneous_first_backups_do_not_race() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let mut trees = Vec::new();
    for t in 0..2 {
        let d = work.path().join(format!("src{t}"));
        bulk_tree(&d, 6 << 20, 200 + t);
        trees.push((d.clone(), listing(&d).no_atime()));
    }
    let mut f = Failures::new();
    for round in 0..5 {
        let store = Store::at(work.path().join(format!("store{round}")));
        let mut bgs: Vec<Bg> = trees
            .iter()
            .enumerate()
            .map(|(t, (d, _))| {
                Bg::spawn(store.cmd([
                    "backup".as_ref(),
                    d.as_os_str(),
                    "--name".as_ref(),
                    std::ffi::OsStr::new(&format!("t{t}")),
                ]))
            })
            .collect();
        let codes: Vec<Option<i32>> = bgs
            .iter_mut()
            .map(|b| b.wait(Duration::from_secs(120)))
            .collect();
        let ok = codes.iter().filter(|c| **c == Some(0)).count();
        f.check(ok >= 1 && codes.iter().all(|c| matches!(c, Some(0) | Some(7))), || {
            format!(
                "round {round}: two first backups into a new store exited {codes:?} (expected 0 or 7, one 0 at least)\n{}\n{}",
                bgs[0].stderr(),
                bgs[1].stderr()
            )
        });
        f.code(&store.check(), 0, &format!("round {round}: check"));
        for (t, (_, want)) in trees.iter().enumerate() {
            let name = format!("t{t}");
            if codes[t] == Some(0) {
                let dest = work.path().join(format!("r{round}-{t}"));
                if f.code(
                    &store.restore(&name, &dest),
                    0,
                    &format!("round {round}: restore {name}"),
                ) {
                    f.same(
                        &format!("round {round}: {name}"),
                        want,
                        &listing(&dest).no_atime(),
                    );
                }
            }
        }
    }
    f.finish();
}

/// gc beside a reader: a restore paused in the middle, then a gc that deletes and repacks
/// data. gc may refuse (7) or go ahead, but the restore, once continued, must still produce
/// the snapshot exactly. And while a gc is in progress, `list` works and readers either work
/// or are refused with 7 and a message: never wrong data, never a hang.
#[test]
fn gc_and_readers() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let a = work.path().join("a");
    bulk_tree(&a, 80 << 20, 300);
    let a_l = listing(&a).no_atime();
    let store = Store::new();
    store.backup(&a, "a").ok("backup a");
    // b shares about half of a's files; forgetting a leaves packs partly used (repacked by gc).
    let b = work.path().join("b");
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success());
    for (i, p) in walk_files(&b).iter().enumerate() {
        if i % 2 == 0 {
            fs::remove_file(p).unwrap();
        }
    }
    let b_l = listing(&b).no_atime();
    store.backup(&b, "b").ok("backup b");
    let mut f = Failures::new();

    // 1. A paused restore of b, then forget a + gc.
    let dest = work.path().join("rb");
    let before = store.files();
    let mut reader = Bg::spawn(store.cmd(["restore".as_ref(), "b".as_ref(), dest.as_os_str()]));
    let start = Instant::now();
    while !writer_active(&store, reader.pid(), &before) && reader.running() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "restore did not start"
        );
        std::thread::sleep(Duration::from_micros(300));
    }
    reader.signal(libc::SIGSTOP);
    store
        .run(["forget", "a"])
        .ok("forget a while a restore of b is paused");
    let g = store.run(["gc"]);
    f.check(matches!(g.code, Some(0) | Some(7)), || {
        format!(
            "gc beside a paused restore: expected 0 or 7\n{}",
            g.describe()
        )
    });
    reader.signal(libc::SIGCONT);
    let code = reader.wait(Duration::from_secs(120));
    f.check(code == Some(0), || {
        format!(
            "the restore paused across a gc exited {code:?}\n{}",
            reader.stderr()
        )
    });
    if code == Some(0) {
        f.same(
            "restore of b paused across a gc",
            &b_l,
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.check(), 0, "check after gc beside a restore");

    // 2. Readers while a gc is in progress (held with SIGSTOP once it holds its locks).
    store.backup(&a, "a2").ok("backup a again");
    store.run(["forget", "a2"]).ok("forget a2");
    let before = store.files();
    let mut gc = Bg::spawn(store.cmd(["gc"]));
    let start = Instant::now();
    while !writer_active(&store, gc.pid(), &before) && gc.running() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gc did not start"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    if gc.running() {
        gc.signal(libc::SIGSTOP);
        let l = store.list();
        f.code(&l, 0, "list while a gc is in progress");
        for (what, o) in [
            ("ls b", store.run(["ls", "b"])),
            ("restore b", store.restore("b", &work.path().join("rb2"))),
            ("check", store.check()),
        ] {
            f.check(
                matches!(o.code, Some(0) | Some(7)) && o.elapsed < Duration::from_secs(20),
                || {
                    format!(
                        "`bkfs {what}` while a gc is in progress: expected 0, or 7 at once\n{}",
                        o.describe()
                    )
                },
            );
            if o.code == Some(7) {
                eprintln!(
                    "note: `bkfs {what}` is refused while gc runs: {}",
                    o.stderr_str().trim()
                );
            }
        }
        gc.signal(libc::SIGCONT);
        let code = gc.wait(Duration::from_secs(120));
        f.check(code == Some(0), || {
            format!("the held gc exited {code:?}\n{}", gc.stderr())
        });
        let rb2 = work.path().join("rb2");
        if rb2.exists() && fs::read_dir(&rb2).unwrap().next().is_some() {
            f.same(
                "restore of b done during a gc",
                &b_l,
                &listing(&rb2).no_atime(),
            );
        }
    } else {
        eprintln!("gc ended before it could be held; part 2 not exercised");
    }
    f.code(&store.check_data(), 0, "check --read-data at the end");
    let rb3 = work.path().join("rb3");
    if f.code(&store.restore("b", &rb3), 0, "restore b at the end") {
        f.same("b at the end", &b_l, &listing(&rb3).no_atime());
    }
    let _ = a_l;
    f.finish();
}

/// Readers in a loop beside a writer doing many short sessions (each adds an index file; at
/// 8 they are merged and the old ones deleted): no reader may fail or see a wrong tree.
#[test]
fn readers_beside_many_writer_sessions() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let base = work.path().join("base");
    bulk_tree(&base, 8 << 20, 400);
    let base_l = listing(&base).no_atime();
    let store = Store::new();
    store.backup(&base, "base").ok("backup base");
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let store_path = store.path.clone();
    let dir = work.path().to_path_buf();
    let readers = std::thread::spawn(move || {
        let store = Store::at(store_path);
        let mut failures = Vec::new();
        let mut rounds = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) || rounds < 3 {
            let dest = dir.join(format!("reader{rounds}"));
            let o = store.restore("base", &dest);
            if o.code != Some(0) {
                failures.push(format!("restore beside the writer:\n{}", o.describe()));
            } else if let Some(d) = base_l.diff(&listing(&dest).no_atime()) {
                failures.push(format!("restore beside the writer differs:\n{d}"));
            }
            let _ = fs::remove_dir_all(&dest);
            for args in [vec!["ls", "-R", "base"], vec!["list"], vec!["check"]] {
                let o = store.run(&args);
                if o.code != Some(0) {
                    failures.push(format!("{} beside the writer:\n{}", args[0], o.describe()));
                }
            }
            rounds += 1;
        }
        (rounds, failures)
    });
    let mut rng = Rng::new(401);
    let mut f = Failures::new();
    // A second reader thread doing only quick listings, to hit more moments.
    let stop3 = stop.clone();
    let store_path = store.path.clone();
    let lister = std::thread::spawn(move || {
        let store = Store::at(store_path);
        let mut failures = Vec::new();
        let mut rounds = 0;
        while !stop3.load(std::sync::atomic::Ordering::Relaxed) {
            let args = if rounds % 2 == 0 {
                vec!["ls", "-R", "latest"]
            } else {
                vec!["check"]
            };
            let o = store.run(&args);
            if o.code != Some(0) {
                failures.push(format!(
                    "{} beside the writer:\n{}",
                    args.join(" "),
                    o.describe()
                ));
            }
            rounds += 1;
        }
        (rounds, failures)
    });
    for i in 0..50 {
        write_random(
            &src.join(format!("f{i}")),
            rng.range(1000, 200_000),
            &mut rng,
        );
        f.code(
            &store.backup(&src, &format!("w{i}")),
            0,
            &format!("writer session {i}"),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (rounds, failures) = readers.join().unwrap();
    let (lrounds, lfailures) = lister.join().unwrap();
    eprintln!("{rounds} restore rounds and {lrounds} ls rounds beside 50 writer sessions");
    for x in failures.into_iter().chain(lfailures).take(5) {
        f.fail(x);
    }
    f.code(&store.check_data(), 0, "check --read-data at the end");
    f.finish();
}
