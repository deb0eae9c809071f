//! Store issue: bad input, each with a clear message and the exit status docs/CLI.md gives:
//! a store path that is a file (4), a store of a newer format (5), a missing snapshot (6), an
//! unreadable source file (3), a full disk (8), bad snapshot names (2).

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn small_src(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"aaa\n").unwrap();
    fs::write(src.join("sub/b.txt"), b"bbb\n").unwrap();
    src
}

#[test]
fn store_path_is_a_file_or_not_a_store() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = small_src(work.path());
    let mut f = Failures::new();

    let file = work.path().join("plainfile");
    fs::write(&file, b"not a store").unwrap();
    let st = Store::at(&file);
    for args in [vec!["list"], vec!["check"], vec!["init"]] {
        let o = st.run(&args);
        f.code(
            &o,
            4,
            &format!(
                "`bkfs {}` with a store path that is a regular file",
                args[0]
            ),
        );
        f.check(o.stderr_str().contains("plainfile"), || {
            format!("the message should name the store path\n{}", o.describe())
        });
    }
    let o = st.backup(&src, "x");
    f.code(&o, 4, "backup into a store path that is a regular file");
    f.check(fs::read(&file).unwrap() == b"not a store", || {
        "the regular file given as store was changed".into()
    });

    // Missing store for a reading command.
    let o = Store::at(work.path().join("nonexistent")).list();
    f.code(&o, 4, "`bkfs list` on a store path that does not exist");
    // A non-empty directory that is not a store: not initialised over, not written into.
    let other = work.path().join("otherdir");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("precious"), b"user data").unwrap();
    let st = Store::at(&other);
    f.code(
        &st.run(["init"]),
        4,
        "`bkfs init` on a non-empty directory that is not a store",
    );
    f.code(
        &st.backup(&src, "x"),
        4,
        "backup into a non-empty directory that is not a store",
    );
    f.code(
        &st.list(),
        4,
        "`bkfs list` on a directory that is not a store",
    );
    let names: Vec<_> = fs::read_dir(&other)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    f.check(names == vec![std::ffi::OsString::from("precious")], || {
        format!("bkfs wrote into a directory that is not a store: it now holds {names:?}")
    });
    // No store given at all: usage error.
    let o = bkfs(["list"]);
    f.check(o.code == Some(2) || o.code == Some(4), || {
        format!(
            "`bkfs list` with neither --store nor BKFS_STORE: expected 2 (usage) or 4\n{}",
            o.describe()
        )
    });
    // BKFS_STORE works like --store.
    let store = Store::new();
    store.backup(&src, "one").ok("backup");
    let mut c = Command::new(bkfs_bin());
    c.arg("list").env("BKFS_STORE", &store.path);
    let o = run_cmd(c, TIMEOUT);
    f.code(&o, 0, "`bkfs list` with BKFS_STORE set");
    f.check(o.stdout_str().contains("one"), || {
        format!("BKFS_STORE ignored?\n{}", o.describe())
    });
    f.finish();
}

#[test]
fn newer_store_version_is_refused() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = small_src(work.path());
    let store = Store::new();
    store.backup(&src, "one").ok("backup");
    let cfg_path = store.path.join("config");
    let text = fs::read_to_string(&cfg_path).expect("the store has a file `config`");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("config is JSON");
    assert!(
        cfg.get("version").is_some(),
        "config has no \"version\": {text}"
    );
    cfg["version"] = serde_json::json!(999);
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let files_before = store.files();
    let mut f = Failures::new();
    let dest = work.path().join("dest");
    for (what, o) in [
        ("list", store.list()),
        ("check", store.check()),
        ("ls", store.run(["ls", "one"])),
        ("restore", store.restore("one", &dest)),
        ("backup", store.backup(&src, "two")),
        ("gc", store.run(["gc"])),
        ("forget", store.run(["forget", "one"])),
    ] {
        f.code(
            &o,
            5,
            &format!("`bkfs {what}` on a store of format version 999"),
        );
        f.check(o.stderr_str().to_lowercase().contains("version"), || {
            format!(
                "the message should say the store's format version is newer\n{}",
                o.describe()
            )
        });
    }
    f.check(store.files() == files_before, || {
        "commands on a store of a newer version changed its files".into()
    });
    f.check(
        !dest.exists() || fs::read_dir(&dest).unwrap().next().is_none(),
        || "restore from a store of a newer version wrote files".into(),
    );
    f.finish();
}

#[test]
fn missing_snapshot_or_path() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = small_src(work.path());
    let store = Store::new();
    store.run(["init"]).ok("init");
    let mut f = Failures::new();
    let dest = work.path().join("dest");
    f.code(
        &store.restore("latest", &dest),
        6,
        "restore latest from an empty store",
    );
    store.backup(&src, "one").ok("backup");
    for (what, o) in [
        ("restore nosuch", store.restore("nosuch", &dest)),
        (
            "restore one:no/such/path",
            store.restore("one:no/such/path", &dest),
        ),
        ("ls nosuch", store.run(["ls", "nosuch"])),
        ("ls one:nope", store.run(["ls", "one:nope"])),
        ("forget nosuch", store.run(["forget", "nosuch"])),
        ("diff one nosuch", store.run(["diff", "one", "nosuch"])),
        ("diff nosuch one", store.run(["diff", "nosuch", "one"])),
    ] {
        f.code(&o, 6, &format!("`bkfs {what}`"));
        f.check(
            o.stderr_str().contains("nosuch")
                || o.stderr_str().contains("no/such")
                || o.stderr_str().contains("nope"),
            || format!("the message should name what is missing\n{}", o.describe()),
        );
    }
    f.check(!dest.exists(), || {
        "a failed restore created its destination".into()
    });
    f.code(&store.restore("latest", &dest), 0, "restore latest");
    f.finish();
}

#[test]
fn bad_snapshot_names_are_usage_errors() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = small_src(work.path());
    let store = Store::new();
    store.backup(&src, "good").ok("backup");
    let mut f = Failures::new();
    let n300 = "n".repeat(300);
    let n201 = "n".repeat(201);
    // docs/FORMAT.md also rules out control characters and `latest` (SNAP's alias).
    for bad in [
        "a/b", "/abs", "..", ".", ".hidden", "a:b", "", &n201, &n300, "latest", "a\nb", "tab\tx",
    ] {
        let o = store.backup(&src, bad);
        f.code(
            &o,
            2,
            &format!("backup --name {:?} ({} bytes)", bad, bad.len()),
        );
        f.check(!o.stderr.is_empty(), || "no message for a bad name".into());
    }
    let names = store.snapshot_names();
    f.check(names == vec!["good".to_string()], || {
        format!("bad names must not create snapshots; list shows {names:?}")
    });
    // The limits themselves are fine: 200 bytes, dots and dashes inside.
    let n200 = "n".repeat(200);
    for ok in [n200.as_str(), "a.b-c_d", "a..b", "2026-11-22T030405Z"] {
        f.code(
            &store.backup(&src, ok),
            0,
            &format!("backup --name {ok:?} ({} bytes)", ok.len()),
        );
    }
    f.finish();
}

#[test]
fn unreadable_source_file_is_reported_and_the_rest_backed_up() {
    if !require(true, &["setpriv"]) {
        return;
    }
    let work = tempdir();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("readable.txt"), b"ok\n").unwrap();
    fs::write(src.join("sub/also.txt"), b"ok too\n").unwrap();
    fs::write(src.join("secret.txt"), b"root only\n").unwrap();
    fs::create_dir(src.join("closed_dir")).unwrap();
    fs::write(src.join("closed_dir/hidden.txt"), b"x\n").unwrap();
    chmod(&src.join("secret.txt"), 0o000);
    chmod(&src.join("closed_dir"), 0o700);
    for p in [src.clone(), src.join("sub")] {
        chmod(&p, 0o755);
    }
    for p in [src.join("readable.txt"), src.join("sub/also.txt")] {
        chmod(&p, 0o644);
    }
    let store_path = work.path().join("store");
    fs::create_dir(&store_path).unwrap();
    lchown(&store_path, 65534, 65534);
    let store = Store::at(&store_path);

    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        bkfs_bin(),
    ])
    .arg("backup")
    .arg(&src)
    .args(["--name", "partial", "--store"])
    .arg(&store_path)
    .env_remove("BKFS_STORE");
    let o = run_cmd(c, TIMEOUT);
    let mut f = Failures::new();
    f.code(
        &o,
        3,
        "backup as an unprivileged user of a tree with a mode-000 root-owned file",
    );
    f.check(o.stderr_str().contains("secret.txt"), || {
        format!(
            "the unreadable file secret.txt must be reported by name\n{}",
            o.describe()
        )
    });
    f.check(o.stderr_str().contains("closed_dir"), || {
        format!(
            "the unreadable directory closed_dir must be reported by name\n{}",
            o.describe()
        )
    });
    let dest = work.path().join("dest");
    if f.code(
        &store.restore("partial", &dest),
        0,
        "restore of the partial snapshot",
    ) {
        for (p, want) in [
            ("readable.txt", &b"ok\n"[..]),
            ("sub/also.txt", b"ok too\n"),
        ] {
            let got = fs::read(dest.join(p)).ok();
            f.check(got.as_deref() == Some(want), || {
                format!("{p} was readable and must be in the snapshot; restored: {got:?}")
            });
        }
    }
    f.code(&store.check(), 0, "check after a partial backup");
    f.finish();
}

#[test]
fn full_disk_fails_cleanly() {
    if !require(true, &["mount", "umount"]) {
        return;
    }
    let work = tempdir();
    let tmpfs = Tmpfs::mount("30m");
    let store = Store::at(tmpfs.path.join("store"));
    let mut f = Failures::new();
    let mut rng = Rng::new(8);

    // A first small snapshot that must survive.
    let small = work.path().join("small");
    fs::create_dir(&small).unwrap();
    write_random(&small.join("s.bin"), 1 << 20, &mut rng);
    store
        .backup(&small, "before")
        .ok("small backup onto the tmpfs");
    let small_l = listing(&small);
    let used_before = tmpfs.used();

    let big = work.path().join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..10 {
        write_random(&big.join(format!("r{i}.bin")), 10 << 20, &mut rng);
    }
    let o = store.backup(&big, "toobig");
    f.code(
        &o,
        8,
        "backup of 100 MB of random data into a store on a 30 MB tmpfs",
    );
    let e = o.stderr_str().to_lowercase();
    f.check(
        e.contains("space") || e.contains("enospc") || e.contains("full"),
        || {
            format!(
                "the message should say the device is out of space\n{}",
                o.describe()
            )
        },
    );
    f.code(&store.check(), 0, "check after the failed backup");
    let names = store.snapshot_names();
    f.check(names == vec!["before".to_string()], || {
        format!("after a failed backup the snapshots should be just `before`: {names:?}")
    });
    // Nothing half-written left behind (the contract says so for exit 8).
    let used_after = tmpfs.used();
    f.check(used_after <= used_before + (2 << 20), || {
        format!(
            "the failed backup left {} bytes behind on the tmpfs (used {used_before} before, {used_after} after)",
            used_after.saturating_sub(used_before)
        )
    });
    // The store still works: a small backup and restores.
    let small2 = work.path().join("small2");
    fs::create_dir(&small2).unwrap();
    write_random(&small2.join("t.bin"), 1 << 20, &mut rng);
    f.code(
        &store.backup(&small2, "after"),
        0,
        "small backup after the failed one",
    );
    let dest = work.path().join("dest");
    if f.code(
        &store.restore("before", &dest),
        0,
        "restore of the earlier snapshot",
    ) {
        f.same(
            "the earlier snapshot after a full disk",
            &small_l.no_atime(),
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.check_data(), 0, "check --read-data at the end");
    drop(tmpfs);
    f.finish();
}

/// gc on a nearly full disk: repacking needs room for new packs before the old ones go. It
/// succeeds or fails with 8; either way check passes and the kept snapshot restores.
#[test]
fn gc_on_a_full_disk() {
    if !require(true, &["mount", "umount"]) {
        return;
    }
    let work = tempdir();
    let tmpfs = Tmpfs::mount("40m");
    let store = Store::at(tmpfs.path.join("store"));
    let mut rng = Rng::new(81);
    let a = work.path().join("a");
    fs::create_dir(&a).unwrap();
    for i in 0..40 {
        write_random(&a.join(format!("f{i}")), 400_000, &mut rng);
    }
    store.backup(&a, "a").ok("backup a");
    // b keeps every other file of a: after forgetting a, packs are half used.
    for i in (0..40).step_by(2) {
        fs::remove_file(a.join(format!("f{i}"))).unwrap();
    }
    let b_l = listing(&a).no_atime();
    store.backup(&a, "b").ok("backup b");
    store.run(["forget", "a"]).ok("forget a");
    // Fill the disk, leaving about 1 MiB.
    let free = {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        unsafe { libc::statvfs(cstr(&tmpfs.path).as_ptr(), &mut s) };
        s.f_bavail * s.f_frsize
    };
    write_random(
        &tmpfs.path.join("filler"),
        free.saturating_sub(1 << 20),
        &mut rng,
    );
    let mut f = Failures::new();
    let g = store.run(["gc"]);
    f.check(matches!(g.code, Some(0) | Some(8)), || {
        format!(
            "gc on a full disk: expected 0, or 8 with a message\n{}",
            g.describe()
        )
    });
    f.code(&store.check(), 0, "check after gc on a full disk");
    fs::remove_file(tmpfs.path.join("filler")).unwrap();
    let dest = work.path().join("dest");
    if f.code(
        &store.restore("b", &dest),
        0,
        "restore b after gc on a full disk",
    ) {
        f.same(
            "b after gc on a full disk",
            &b_l,
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.run(["gc"]), 0, "gc once there is room again");
    f.code(&store.check_data(), 0, "check --read-data at the end");
    drop(tmpfs);
    f.finish();
}

/// A restore whose destination runs out of space fails (not 0) with a message, and does not
/// take the store with it.
#[test]
fn restore_to_a_full_destination_fails_clearly() {
    if !require(true, &["mount", "umount"]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(82);
    for i in 0..4 {
        write_random(&src.join(format!("f{i}")), 5 << 20, &mut rng);
    }
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let tmpfs = Tmpfs::mount("8m");
    let o = store.restore("s", &tmpfs.path.join("dest"));
    let mut f = Failures::new();
    f.check(o.code.is_some() && o.code != Some(0), || {
        format!("restore of 20 MiB into 8 MiB must fail\n{}", o.describe())
    });
    let e = o.stderr_str().to_lowercase();
    f.check(e.contains("space") || e.contains("enospc"), || {
        format!(
            "the message should say the destination is out of space\n{}",
            o.describe()
        )
    });
    f.code(&store.check(), 0, "check after the failed restore");
    drop(tmpfs);
    f.finish();
}

/// A second backup under a name in use is refused with a message naming it; the first
/// snapshot stays as it was.
#[test]
fn name_in_use_is_refused() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = small_src(work.path());
    let want = listing(&src).no_atime();
    let store = Store::new();
    store.backup(&src, "taken").ok("first backup");
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let mut f = Failures::new();
    let o = store.backup(&src, "taken");
    f.check(o.code.is_some() && o.code != Some(0), || {
        format!("a backup under a name in use must fail\n{}", o.describe())
    });
    f.check(o.stderr_str().contains("taken"), || {
        format!(
            "the message should name the snapshot in use\n{}",
            o.describe()
        )
    });
    let dest = work.path().join("dest");
    if f.code(
        &store.restore("taken", &dest),
        0,
        "restore of the first snapshot",
    ) {
        f.same(
            "the first snapshot after a refused reuse of its name",
            &want,
            &listing(&dest).no_atime(),
        );
    }
    f.code(&store.check(), 0, "check");
    f.finish();
}

/// `bkfs init` on an existing store is refused and leaves it intact; on an empty directory it
/// makes a store there.
#[test]
fn init_on_existing_store_or_empty_dir() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = small_src(work.path());
    let store = Store::new();
    store.backup(&src, "one").ok("backup");
    let mut f = Failures::new();
    let files = store.files();
    let o = store.run(["init"]);
    f.check(
        o.code.is_some() && o.code != Some(0) && !o.stderr.is_empty(),
        || {
            format!(
                "init on an existing store must fail with a message\n{}",
                o.describe()
            )
        },
    );
    f.check(store.files() == files, || {
        "init on an existing store changed its files".into()
    });
    f.check(store.snapshot_names() == vec!["one".to_string()], || {
        "init on an existing store lost its snapshots".into()
    });
    let empty = work.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let st = Store::at(&empty);
    f.code(&st.run(["init"]), 0, "init on an empty directory");
    f.code(
        &st.backup(&src, "x"),
        0,
        "backup into the store made by init",
    );
    f.finish();
}

/// A restore by an unprivileged user cannot set owners or trusted.* xattrs; it must still
/// bring back every file's contents (reporting what it could not apply), not drop the files.
#[test]
fn unprivileged_restore_keeps_the_data() {
    if !require(true, &["setpriv"]) {
        return;
    }
    let work = tempdir();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/plain"), b"plain\n").unwrap();
    fs::write(src.join("d/owned"), b"owned by someone else\n").unwrap();
    lchown(&src.join("d/owned"), 1234, 5678);
    fs::write(src.join("d/trusted"), b"has a trusted xattr\n").unwrap();
    set_xattr(&src.join("d/trusted"), "trusted.t", b"1");
    set_xattr(&src.join("d/trusted"), "user.u", b"2");
    let store = Store::at(work.path().join("store"));
    store.backup(&src, "s").ok("backup");
    // Let the unprivileged user use the store fully (a read-only store is another test).
    sh(
        "chmod",
        &[
            OsStr::new("-R"),
            OsStr::new("a+rwX"),
            store.path.as_os_str(),
        ],
    );
    let out = work.path().join("out");
    fs::create_dir(&out).unwrap();
    lchown(&out, 65534, 65534);
    let dest = out.join("r");
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        bkfs_bin(),
    ])
    .arg("restore")
    .arg("s")
    .arg(&dest)
    .arg("--store")
    .arg(&store.path)
    .env_remove("BKFS_STORE");
    let o = run_cmd(c, TIMEOUT);
    let mut f = Failures::new();
    f.check(o.code.is_some() && !o.timed_out, || {
        format!("restore as nobody crashed\n{}", o.describe())
    });
    for (name, want) in [
        ("plain", &b"plain\n"[..]),
        ("owned", b"owned by someone else\n"),
        ("trusted", b"has a trusted xattr\n"),
    ] {
        let got = fs::read(dest.join("d").join(name)).ok();
        f.check(got.as_deref() == Some(want), || {
            format!(
                "restore as an unprivileged user lost d/{name} (contents {got:?})\n{}",
                o.describe()
            )
        });
    }
    let ux = xattrs(&dest.join("d/trusted"));
    f.check(
        ux.get(b"user.u".as_slice()).map(|v| v.as_slice()) == Some(b"2"),
        || format!("the user.* xattr it could set is missing: {ux:?}"),
    );
    f.finish();
}
