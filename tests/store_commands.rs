//! Store issue: the everyday commands, used as a user would: restore of a sub-path, refusing to
//! overwrite, ls, list, diff, forget + gc (space comes back, the rest still restores), check.
//!
//! Over 700 lines: one test per command, as a user runs them; each is
//! self-contained.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;

fn base_tree(src: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(src.join("sub/inner")).unwrap();
    fs::write(src.join("top.txt"), b"top\n").unwrap();
    fs::write(src.join("sub/inner/file.txt"), b"inner file\n").unwrap();
    // A hard link with one name inside sub/ and one outside: restoring sub/ alone must still
    // give the file its contents.
    fs::write(
        src.join("linked_outside"),
        b"linked both in and out of sub\n",
    )
    .unwrap();
    fs::hard_link(src.join("linked_outside"), src.join("sub/linked_inside")).unwrap();
    write_random(&src.join("sub/x.bin"), 200_000, &mut rng);
    write_random(&src.join("big.bin"), 10 << 20, &mut rng);
    fs::write(join_bytes(src, b"odd\xff\xfename"), b"odd\n").unwrap();
    fs::write(src.join("new\nline"), b"nl\n").unwrap();
    fs::write(src.join("with space"), b"sp\n").unwrap();
    fs::create_dir(src.join("rand")).unwrap();
    random_tree(
        &src.join("rand"),
        &mut rng,
        &TreeSpec {
            files: 40,
            max_depth: 3,
            max_size: 100_000,
            dup_percent: 20,
            specials: true,
        },
    );
    set_times(
        &src.join("sub/x.bin"),
        (1_000_000_000, 5),
        (1_000_000_001, 6),
    );
}

/// Lines of `bkfs diff`, as (kind, path) without a leading "/" or "./" or a trailing "/".
fn diff_lines(out: &Out) -> BTreeSet<(char, String)> {
    out.stdout_str()
        .lines()
        .filter_map(|l| {
            let mut cs = l.chars();
            let k = cs.next()?;
            if !matches!(k, '+' | '-' | 'M') {
                return None;
            }
            let p = cs.as_str().trim_start();
            let p = p.strip_prefix("./").unwrap_or(p);
            let p = p.strip_prefix('/').unwrap_or(p);
            // Directories may be marked with a trailing "/".
            let p = p.strip_suffix('/').unwrap_or(p);
            Some((k, p.to_string()))
        })
        .collect()
}

#[test]
fn restore_sub_paths_ls_list_diff_forget_gc() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    base_tree(&src, 21);
    let l1 = listing(&src);
    let store = Store::new();
    let mut f = Failures::new();

    store.backup(&src, "first").ok("first backup");
    f.code(&store.check(), 0, "check after first backup");

    // list shows it.
    let o = store.list();
    f.code(&o, 0, "bkfs list");
    f.check(o.stdout_str().contains("first"), || {
        format!(
            "`bkfs list` does not show snapshot `first`\n{}",
            o.describe()
        )
    });

    // ls of the root and of a sub-directory.
    let o = store.run(["ls", "first"]);
    if f.code(&o, 0, "bkfs ls first") {
        for n in ["top.txt", "sub", "big.bin", "rand", "with space"] {
            f.check(o.stdout_str().lines().any(|l| l.contains(n)), || {
                format!("`bkfs ls first` does not list `{n}`\n{}", o.describe())
            });
        }
    }
    let o = store.run(["ls", "first:sub"]);
    if f.code(&o, 0, "bkfs ls first:sub") {
        for n in ["inner", "x.bin"] {
            f.check(o.stdout_str().contains(n), || {
                format!("`bkfs ls first:sub` does not list `{n}`\n{}", o.describe())
            });
        }
        f.check(!o.stdout_str().contains("top.txt"), || {
            format!(
                "`bkfs ls first:sub` lists the root's `top.txt`\n{}",
                o.describe()
            )
        });
    }
    let o = store.run(["ls", "-R", "first:sub"]);
    if f.code(&o, 0, "bkfs ls -R first:sub") {
        f.check(o.stdout_str().contains("file.txt"), || {
            format!(
                "`bkfs ls -R first:sub` does not reach sub/inner/file.txt\n{}",
                o.describe()
            )
        });
    }
    f.code(
        &store.run(["ls", "first:no/such/dir"]),
        6,
        "ls of a path not in the snapshot",
    );
    f.code(&store.run(["ls", "latest"]), 0, "ls latest");

    // Restore a sub-directory: its contents land in DEST, metadata-exact.
    let d_sub = work.path().join("r_sub");
    let o = store.restore("first:sub", &d_sub);
    if f.code(&o, 0, "restore first:sub DEST") {
        let want = l1.subtree(b"sub");
        let got = listing(&d_sub);
        f.same(
            "restore first:sub DEST: DEST should hold sub's contents (expected = source's sub/)",
            &want,
            &got,
        );
    }

    // Restore a single file to a new path: DEST becomes that file.
    let d_file = work.path().join("r_file");
    let o = store.restore("first:sub/x.bin", &d_file);
    if f.code(&o, 0, "restore first:sub/x.bin DEST (single file)") {
        let want = &l1.entries[b"sub/x.bin".as_slice()];
        let got = if d_file.is_dir() {
            // Also accepted: DEST is made a directory holding the file.
            listing(&d_file).entries.get(b"x.bin".as_slice()).cloned()
        } else {
            let mut l = listing(&d_file);
            l.entries.remove(b"".as_slice())
        };
        f.check(got.as_ref() == Some(want), || {
            format!("restored single file differs:\nexpected {want:?}\ngot      {got:?}")
        });
    }
    f.code(
        &store.restore("first:no/such", &work.path().join("r_none")),
        6,
        "restore of a path not in the snapshot",
    );

    // A non-empty destination is refused (exit 10) and left alone, unless --overwrite.
    let d_ne = work.path().join("r_nonempty");
    fs::create_dir(&d_ne).unwrap();
    fs::write(d_ne.join("stale"), b"keep me").unwrap();
    fs::write(d_ne.join("top.txt"), b"old contents, same name").unwrap();
    let o = store.restore("first", &d_ne);
    f.code(
        &o,
        10,
        "restore into a non-empty directory without --overwrite",
    );
    let names: Vec<_> = fs::read_dir(&d_ne)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    f.check(names.len() == 2, || {
        format!("a refused restore must not write into DEST; DEST now holds {names:?}")
    });
    f.check(
        fs::read(d_ne.join("top.txt")).unwrap() == b"old contents, same name",
        || "a refused restore changed DEST/top.txt".into(),
    );
    let o = store.run([
        OsStr::new("restore"),
        OsStr::new("first"),
        d_ne.as_os_str(),
        OsStr::new("--overwrite"),
    ]);
    if f.code(&o, 0, "restore --overwrite into a non-empty directory") {
        let got = listing_with(
            &d_ne,
            ListOpts {
                root: false,
                ..Default::default()
            },
        );
        let want = listing_with(
            &src,
            ListOpts {
                root: false,
                ..Default::default()
            },
        );
        f.same(
            "restore --overwrite: every snapshot entry must be restored exactly (`stale` may stay)",
            &want,
            &got.without(&[b"stale".as_slice()]),
        );
    }

    // Change the tree: add, remove, modify; second backup; diff.
    fs::write(src.join("added.txt"), b"new file\n").unwrap();
    fs::remove_file(src.join("top.txt")).unwrap();
    let mut x = fs::read(src.join("sub/x.bin")).unwrap();
    x[1000] ^= 0xff;
    fs::write(src.join("sub/x.bin"), &x).unwrap();
    fs::remove_dir_all(src.join("sub/inner")).unwrap();
    // A change of metadata only is a change too.
    chmod(&src.join("with space"), 0o600);
    let l2 = listing(&src);
    store.backup(&src, "second").ok("second backup");
    f.code(&store.check(), 0, "check after second backup");

    let o = store.run(["diff", "first", "second"]);
    if f.code(&o, 0, "bkfs diff first second") {
        let lines = diff_lines(&o);
        for want in [
            ('+', "added.txt"),
            ('-', "top.txt"),
            ('M', "sub/x.bin"),
            ('-', "sub/inner"),
            ('M', "with space"),
        ] {
            f.check(lines.contains(&(want.0, want.1.to_string())), || {
                format!(
                    "`bkfs diff first second` lacks the line `{} {}`\n{}",
                    want.0,
                    want.1,
                    o.describe()
                )
            });
        }
        // Nothing else added, removed or modified, apart from directories whose entries changed
        // and the removed directory's own children.
        for (k, p) in &lines {
            let expected = matches!(
                (k, p.as_str()),
                ('+', "added.txt")
                    | ('-', "top.txt")
                    | ('M', "sub/x.bin")
                    | ('M', "with space")
                    | ('-', "sub/inner")
                    | ('-', "sub/inner/file.txt")
                    | ('M', "")
                    | ('M', ".")
                    | ('M', "sub")
            );
            f.check(expected, || {
                format!(
                    "`bkfs diff first second` reports `{k} {p}`, which did not change\n{}",
                    o.describe()
                )
            });
        }
    }
    let o = store.run(["diff", "first", "first"]);
    if f.code(&o, 0, "bkfs diff first first") {
        f.check(diff_lines(&o).is_empty(), || {
            format!(
                "diff of a snapshot with itself must be empty\n{}",
                o.describe()
            )
        });
    }

    // Remove the big file; third backup. Forget first and second; gc gives the space back.
    fs::remove_file(src.join("big.bin")).unwrap();
    let l3 = listing(&src);
    store.backup(&src, "third").ok("third backup");
    let du_before = store.du();
    let o = store.run(["forget", "first"]);
    f.code(&o, 0, "forget first");
    f.code(&store.check(), 0, "check after forget first");
    let names = store.snapshot_names();
    f.check(!names.contains(&"first".to_string()), || {
        format!("`first` still listed after forget: {names:?}")
    });
    // `second` still restores whole (it shares data with the forgotten one).
    let o = store.run(["gc"]);
    f.code(&o, 0, "gc after forgetting first");
    f.code(&store.check(), 0, "check after gc");
    let d2 = work.path().join("r_second");
    if f.code(
        &store.restore("second", &d2),
        0,
        "restore second after forget first + gc",
    ) {
        f.same(
            "second after gc (expected = tree at second)",
            &l2,
            &listing(&d2),
        );
    }
    store.run(["forget", "second"]).ok("forget second");
    f.code(&store.run(["gc"]), 0, "gc after forgetting second");
    let du_after = store.du();
    f.check(du_after + (8 << 20) <= du_before, || {
        format!(
            "gc did not give back the 10 MiB only the forgotten snapshots used: store {du_before} bytes before, {du_after} after"
        )
    });
    f.code(&store.check(), 0, "check after second gc");
    f.code(&store.check_data(), 0, "check --read-data after second gc");
    let d3 = work.path().join("r_third");
    if f.code(&store.restore("third", &d3), 0, "restore third after gc") {
        f.same(
            "third after gc (expected = tree at third)",
            &l3,
            &listing(&d3),
        );
    }
    let names = store.snapshot_names();
    f.check(names == vec!["third".to_string()], || {
        format!("after forgetting first and second, list --json shows {names:?}")
    });
    f.finish();
}

/// `bkfs ls` lists every name once per line, the non-UTF-8 and newline ones in an escaped
/// (unambiguous) form, and never writes raw invalid UTF-8 to the terminal.
#[test]
fn ls_escapes_odd_names() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("plain"), b"").unwrap();
    fs::write(join_bytes(&src, b"a\xff\xfeb"), b"").unwrap();
    fs::write(src.join("new\nline"), b"").unwrap();
    fs::write(src.join("with space"), b"").unwrap();
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let o = store.run(["ls", "s"]);
    o.ok("ls s");
    let out = o.stdout.clone();
    let mut f = Failures::new();
    f.check(std::str::from_utf8(&out).is_ok(), || {
        format!(
            "`bkfs ls` wrote invalid UTF-8 (raw name bytes): {}",
            out.escape_ascii()
        )
    });
    let s = o.stdout_str();
    f.check(s.lines().any(|l| l.contains("plain")), || {
        format!("no `plain` in:\n{s}")
    });
    f.check(s.lines().any(|l| l.contains("with space")), || {
        format!("no `with space` in:\n{s}")
    });
    f.check(
        s.lines().any(|l| {
            l.contains('a')
                && l.contains('b')
                && (l.to_ascii_lowercase().contains("ff") || l.contains("377"))
        }),
        || format!("the name a\\xff\\xfeb is not listed in an escaped form (with ff or 377):\n{s}"),
    );
    f.check(
        !s.lines()
            .any(|l| l.trim() == "line" || l.trim_end().ends_with("new")),
        || format!("the name \"new\\nline\" is printed with a raw newline:\n{s}"),
    );
    f.finish();
}

/// `restore --overwrite` replaces what is in the way (a symlink, file or empty directory of
/// another type); it never follows a symlink found in DEST
/// (that would write outside DEST, wherever the link points).
#[test]
fn overwrite_replaces_what_is_in_the_way_never_following_links() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), b"snapshot data").unwrap();
    fs::write(src.join("top"), b"snapshot top").unwrap();
    fs::create_dir(src.join("was_file")).unwrap();
    fs::write(src.join("was_file/g"), b"g").unwrap();
    fs::write(src.join("was_dir"), b"snapshot file").unwrap();
    let store = Store::new();
    store.backup(&src, "s").ok("backup");

    let victim = work.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("f"), b"victim").unwrap();
    fs::write(work.path().join("victim_top"), b"victim top").unwrap();
    let dest = work.path().join("dest");
    fs::create_dir(&dest).unwrap();
    std::os::unix::fs::symlink(&victim, dest.join("sub")).unwrap();
    std::os::unix::fs::symlink(work.path().join("victim_top"), dest.join("top")).unwrap();
    fs::write(
        dest.join("was_file"),
        b"a file where the snapshot has a directory",
    )
    .unwrap();
    fs::create_dir(dest.join("was_dir")).unwrap();

    let o = store.run([
        OsStr::new("restore"),
        OsStr::new("s"),
        dest.as_os_str(),
        OsStr::new("--overwrite"),
    ]);
    let mut f = Failures::new();
    f.code(
        &o,
        0,
        "restore --overwrite over symlinks and a file in the way",
    );
    f.check(fs::read(victim.join("f")).unwrap() == b"victim", || {
        "restore --overwrite followed DEST/sub -> victim/ and overwrote victim/f".into()
    });
    let n = fs::read_dir(&victim).unwrap().count();
    f.check(n == 1, || {
        format!("restore --overwrite wrote into victim/ through a symlink ({n} entries)")
    });
    f.check(
        fs::read(work.path().join("victim_top")).unwrap() == b"victim top",
        || "restore --overwrite followed DEST/top -> victim_top and overwrote it".into(),
    );
    let m = fs::symlink_metadata(dest.join("sub"));
    f.check(m.map(|m| m.is_dir()).unwrap_or(false), || {
        "DEST/sub should now be the snapshot's directory, not the symlink".into()
    });
    f.check(
        fs::read(dest.join("sub/f")).ok().as_deref() == Some(&b"snapshot data"[..]),
        || "DEST/sub/f should hold the snapshot's data".into(),
    );
    f.check(
        fs::read(dest.join("top")).ok().as_deref() == Some(&b"snapshot top"[..]),
        || "DEST/top should hold the snapshot's data".into(),
    );
    f.check(
        fs::read(dest.join("was_file/g")).ok().as_deref() == Some(&b"g"[..]),
        || {
            "DEST/was_file (a file in the way of a directory) should be replaced by the directory"
                .into()
        },
    );
    f.check(
        fs::read(dest.join("was_dir")).ok().as_deref() == Some(&b"snapshot file"[..]),
        || {
            "DEST/was_dir (an empty directory in the way of a file) should be replaced by the file"
                .into()
        },
    );
    f.finish();
}

/// A store on read-only media (a mounted backup disk) can still be listed, browsed, checked and
/// restored from; a backup into it fails with a message.
#[test]
fn read_only_store_can_be_restored_from() {
    if !require(true, &["mount", "umount"]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(5);
    write_random(&src.join("a"), 300_000, &mut rng);
    fs::write(src.join("b"), b"b").unwrap();
    let want = listing(&src);
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let ro = BindRo::new(&store.path);
    let rs = Store::at(&ro.path);
    let mut f = Failures::new();
    f.code(&rs.list(), 0, "list on a read-only store");
    f.code(&rs.run(["ls", "s"]), 0, "ls on a read-only store");
    let dest = work.path().join("dest");
    if f.code(&rs.restore("s", &dest), 0, "restore from a read-only store") {
        f.same("restore from a read-only store", &want, &listing(&dest));
    }
    f.code(&rs.check(), 0, "check on a read-only store");
    f.code(
        &rs.check_data(),
        0,
        "check --read-data on a read-only store",
    );
    let o = rs.backup(&src, "t");
    f.check(o.code != Some(0) && !o.stderr.is_empty(), || {
        format!(
            "a backup into a read-only store must fail with a message\n{}",
            o.describe()
        )
    });
    drop(ro);
    f.finish();
}

/// The store inside the source (as the mount's default, SRC/.bkfs): the backup must not copy
/// the store into itself, and the snapshot restores to the source without it.
#[test]
fn store_inside_the_source_is_left_out() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let mut rng = Rng::new(9);
    write_random(&src.join("d/a"), 2 << 20, &mut rng);
    fs::write(src.join("b"), b"b").unwrap();
    let store = Store::at(src.join(".bkfs"));
    let mut f = Failures::new();
    store
        .backup(&src, "one")
        .ok("first backup with the store inside the source");
    let want = listing(&src).without(&[b".bkfs".as_slice()]).no_atime();
    store
        .backup(&src, "two")
        .ok("second backup with the store inside the source");
    let o = store.run(["ls", "two"]);
    f.check(!o.stdout_str().contains(".bkfs"), || {
        format!("the snapshot contains the store itself\n{}", o.describe())
    });
    let dest = work.path().join("dest");
    if f.code(&store.restore("two", &dest), 0, "restore") {
        let opts = ListOpts {
            root: false,
            atime: false,
            contents: true,
        };
        let got = listing_with(&dest, opts);
        let mut w = want.clone();
        w.entries.remove(b"".as_slice());
        f.same("restore of a source that holds the store", &w, &got);
    }
    let s2 = store.du();
    f.check(s2 < 4 << 20, || {
        format!("the store grew to {s2} bytes: did it back itself up?")
    });
    f.finish();
}

/// SNAP:PATH splits at the first colon only (snapshot names never contain one), so paths
/// with colons work.
#[test]
fn paths_with_colons() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("a:b/c:d")).unwrap();
    fs::write(src.join("a:b/c:d/e:f"), b"colons").unwrap();
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let mut f = Failures::new();
    let o = store.run(["ls", "s:a:b/c:d"]);
    f.code(&o, 0, "ls s:a:b/c:d");
    f.check(o.stdout_str().contains("e:f"), || {
        format!("no e:f\n{}", o.describe())
    });
    let dest = work.path().join("dest");
    if f.code(&store.restore("s:a:b", &dest), 0, "restore s:a:b") {
        f.check(
            fs::read(dest.join("c:d/e:f")).ok().as_deref() == Some(&b"colons"[..]),
            || "restore s:a:b did not bring back c:d/e:f".into(),
        );
    }
    f.finish();
}

/// A directory whose name is not UTF-8 can be listed and restored on its own: by its raw
/// bytes, or by the escaped form `bkfs ls` prints for it.
#[test]
fn non_utf8_sub_paths_can_be_addressed() {
    if !require(true, &[]) {
        return;
    }
    use std::os::unix::ffi::OsStringExt;
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(join_bytes(&src, b"bad\xfe")).unwrap();
    fs::write(join_bytes(&src, b"bad\xfe/z"), b"zzz").unwrap();
    fs::write(src.join("other"), b"o").unwrap();
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let printed = store.run(["ls", "s"]).stdout_str();
    let escaped = printed
        .lines()
        .find(|l| l.contains("bad"))
        .unwrap_or("bad")
        .trim()
        .to_string();
    let raw = std::ffi::OsString::from_vec(b"s:bad\xfe".to_vec());
    let esc = format!("s:{escaped}");
    let mut f = Failures::new();
    let ls_raw = store.run([OsStr::new("ls"), raw.as_os_str()]);
    let ls_esc = store.run(["ls", &esc]);
    f.check(ls_raw.code == Some(0) || ls_esc.code == Some(0), || {
        format!(
            "neither the raw name nor its printed form ({escaped:?}) addresses the directory:\n{}\n{}",
            ls_raw.describe(),
            ls_esc.describe()
        )
    });
    let d1 = work.path().join("d1");
    let d2 = work.path().join("d2");
    let r_raw = store.run([OsStr::new("restore"), raw.as_os_str(), d1.as_os_str()]);
    let r_esc = store.run([OsStr::new("restore"), OsStr::new(&esc), d2.as_os_str()]);
    let ok = [(&r_raw, &d1), (&r_esc, &d2)].iter().any(|(o, d)| {
        o.code == Some(0) && fs::read(d.join("z")).ok().as_deref() == Some(&b"zzz"[..])
    });
    f.check(ok, || {
        format!(
            "restore of the non-UTF-8 directory alone failed both ways:\n{}\n{}",
            r_raw.describe(),
            r_esc.describe()
        )
    });
    f.finish();
}

/// `restore --overwrite` over an earlier restore whose files were then changed (mode, owner,
/// xattrs added, contents of the same size, times, an ACL): afterwards DEST is exactly the
/// snapshot again, extra xattrs removed.
#[test]
fn overwrite_puts_back_every_attribute() {
    if !require(true, &["setfacl"]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let mut rng = Rng::new(0x0e);
    for i in 0..6 {
        write_random(&src.join(format!("d/f{i}")), 10_000, &mut rng);
        set_times(
            &src.join(format!("d/f{i}")),
            (1_000_000_000 + i, 1),
            (1_100_000_000 + i, 2),
        );
    }
    set_xattr(&src.join("d/f0"), "user.keep", b"k");
    lchown(&src.join("d/f1"), 1234, 5678);
    chmod(&src.join("d/f2"), 0o4750);
    let opts = ListOpts {
        root: false,
        ..Default::default()
    };
    let want = listing_with(&src, opts);
    let store = Store::new();
    store.backup(&src, "s").ok("backup");
    let dest = work.path().join("dest");
    store.restore("s", &dest).ok("first restore");

    let d = |s: &str| dest.join(s);
    set_xattr(&d("d/f0"), "user.extra", b"should go");
    set_xattr(&d("d/f0"), "user.keep", b"changed");
    lchown(&d("d/f1"), 0, 0);
    chmod(&d("d/f2"), 0o644);
    let mut data = fs::read(d("d/f3")).unwrap();
    data[0] ^= 1;
    fs::write(d("d/f3"), data).unwrap();
    set_times(&d("d/f4"), (5, 5), (6, 6));
    sh(
        "setfacl",
        &[
            OsStr::new("-m"),
            OsStr::new("u:4321:rwx"),
            d("d/f5").as_os_str(),
        ],
    );
    chmod(&d("d"), 0o700);

    let o = store.run([
        OsStr::new("restore"),
        OsStr::new("s"),
        dest.as_os_str(),
        OsStr::new("--overwrite"),
    ]);
    let mut f = Failures::new();
    if f.code(&o, 0, "restore --overwrite over a changed earlier restore") {
        f.same(
            "after restore --overwrite (expected = source)",
            &want,
            &listing_with(&dest, opts),
        );
    }
    f.finish();
}

/// Rolling a directory back in place: `restore SNAP SRC --overwrite` onto the very tree the
/// snapshot was taken of, after changes, gives back every entry of the snapshot exactly
/// (entries added since may stay).
#[test]
fn roll_back_in_place() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x4b);
    random_tree(
        &src,
        &mut rng,
        &TreeSpec {
            files: 40,
            max_depth: 3,
            max_size: 200_000,
            dup_percent: 20,
            specials: true,
        },
    );
    let opts = ListOpts {
        root: false,
        ..Default::default()
    };
    let want = listing_with(&src, opts);
    let store = Store::new();
    store.backup(&src, "before").ok("backup");
    // Change things: contents, modes, a removal, an addition, a rename.
    let files: Vec<_> = walk_files(&src);
    for (i, p) in files.iter().enumerate() {
        match i % 5 {
            0 => fs::write(p, b"changed").unwrap(),
            1 => chmod(p, 0o600),
            2 if i % 10 == 2 => fs::remove_file(p).unwrap(),
            3 if i % 10 == 3 => fs::rename(p, src.join(format!("renamed{i}"))).unwrap(),
            _ => {}
        }
    }
    fs::write(src.join("added_since"), b"new").unwrap();
    let o = store.run([
        OsStr::new("restore"),
        OsStr::new("before"),
        src.as_os_str(),
        OsStr::new("--overwrite"),
    ]);
    let mut f = Failures::new();
    if f.code(&o, 0, "restore --overwrite onto the source itself") {
        let got = listing_with(&src, opts);
        let extra: Vec<Vec<u8>> = got
            .entries
            .keys()
            .filter(|k| !want.entries.contains_key(*k))
            .cloned()
            .collect();
        let refs: Vec<&[u8]> = extra.iter().map(|p| p.as_slice()).collect();
        // Link counts of files that gained names since (renames are new names) are not the
        // snapshot's business; compare everything else.
        let mut w = want.clone();
        let mut g = got.without(&refs);
        for e in w.entries.values_mut().chain(g.entries.values_mut()) {
            e.nlink = 0;
            e.links = None;
        }
        f.same(
            "rolled back in place (expected = the tree at `before`)",
            &w,
            &g,
        );
    }
    f.finish();
}
