//! The control files and `.snapshots/` as a user meets them.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::common::*;
use crate::tree::*;

fn fill(src: &std::path::Path) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("a.txt"), "hello\n").unwrap();
    fs::write(src.join("d/b.bin"), vec![7u8; 300_000]).unwrap();
    fs::write(src.join("d/e/c"), "c").unwrap();
    fs::hard_link(src.join("d/e/c"), src.join("c-link")).unwrap();
    std::os::unix::fs::symlink("d/e/c", src.join("sym")).unwrap();
    fs::write(src.join("secret"), "root only").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    sh(&format!(
        "setfattr -n user.k -v v1 {}",
        src.join("a.txt").display()
    ));
    // A sparse file: 8 MiB with one written block in the middle.
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(src.join("sparse"))
        .unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"middle", 4 << 20).unwrap();
}

#[test]
fn a_snapshot_taken_through_the_control_file_is_its_point_in_time() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    let s = status(&m.mnt);
    assert_eq!(s.get("state").map(String::as_str), Some("none"));

    let before = digest_with(&m.mnt, true);
    take(&m.mnt, "first");
    // Change everything the snapshot holds, at once, while it is copied.
    sh(&format!(
        "cd {} && echo changed > a.txt && setfattr -n user.k -v v2 a.txt && \
         truncate -s 10 d/b.bin && rm d/e/c && mv d d2 && chmod 700 d2 && \
         echo more >> c-link && ln -sf elsewhere sym && mkdir newdir",
        m.mnt.display()
    ));
    let after = digest_with(&m.mnt, true);
    assert_ne!(before, after);
    let snap = m.path(".snapshots/first");
    // Readable at once, whether the copy is done or not.
    assert_same("first (while copying)", &before, &digest_with(&snap, true));
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    assert_eq!(s["name"], "first");
    assert!(
        !s["committed"].is_empty() && !s["barrier_ms"].is_empty(),
        "{s:?}"
    );
    assert_same("first (sealed)", &before, &digest_with(&snap, true));
    // The live tree kept every change.
    assert_same("live", &after, &digest_with(&m.mnt, true));

    // A second snapshot sees the changes; the first is unchanged.
    take(&m.mnt, "second");
    wait_settled(&m.mnt);
    assert_same(
        "second",
        &after,
        &digest_with(&m.path(".snapshots/second"), true),
    );
    assert_same("first again", &before, &digest_with(&snap, true));
    assert_eq!(
        fs::read_link(m.path(".snapshots/latest")).unwrap(),
        std::path::PathBuf::from("second")
    );
    // Hard links inside a snapshot share an inode number.
    let a = fs::metadata(m.path(".snapshots/first/c-link")).unwrap();
    let b = fs::metadata(m.path(".snapshots/first/d/e/c")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    // Sparse files stay sparse.
    let sp = fs::metadata(m.path(".snapshots/first/sparse")).unwrap();
    assert_eq!(sp.size(), 8 << 20);
    assert!(
        sp.blocks() * 512 < 1 << 20,
        "sparse file takes {} blocks",
        sp.blocks()
    );
    check_store(&m.backing(".bkfs"));
}

#[test]
fn control_files_refuse_bad_requests_with_clear_errors() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    for bad in ["a/b\n", "..\n", ".hidden\n", "latest\n", "x\ny\n"] {
        assert_eq!(take_errno(&m.mnt, bad), libc::EINVAL, "{bad:?}");
        let s = status(&m.mnt);
        assert!(!s["error"].is_empty(), "{bad:?}: no reason given: {s:?}");
    }
    let long = format!("{}\n", "n".repeat(300));
    assert_eq!(take_errno(&m.mnt, &long), libc::EINVAL);
    assert_eq!(take_errno(&m.mnt, b"\xff\n"), libc::EINVAL);
    take(&m.mnt, "once");
    wait_settled(&m.mnt);
    assert_eq!(take_errno(&m.mnt, "once\n"), libc::EEXIST);
    // An empty line picks a name that sorts by time.
    assert_eq!(take_errno(&m.mnt, "\n"), 0);
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    assert!(s["name"].starts_with("20"), "{s:?}");
    assert!(m.path(".snapshots").join(&s["name"]).is_dir());
    // Writes inside a snapshot are refused.
    let e = fs::write(m.path(".snapshots/once/a.txt"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = fs::create_dir(m.path(".snapshots/once/new")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // status reads as key: value lines.
    let st = fs::read_to_string(m.path(".control/status")).unwrap();
    assert!(
        st.lines().all(|l| l.contains(": ") || l.ends_with(':')),
        "{st}"
    );
    assert!(st.contains("snapshots: 2"), "{st}");
}

#[test]
fn mkdir_and_rmdir_in_snapshots_take_and_forget() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    fs::create_dir(m.path(".snapshots/bymkdir")).unwrap();
    wait_settled(&m.mnt);
    assert!(m.path(".snapshots/bymkdir/d/e/c").is_file());
    let names: Vec<_> = fs::read_dir(m.path(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&"bymkdir".to_string()), "{names:?}");
    assert!(names.contains(&"latest".to_string()), "{names:?}");
    fs::remove_dir(m.path(".snapshots/bymkdir")).unwrap();
    assert!(!m.path(".snapshots/bymkdir").exists());
    let e = fs::remove_dir(m.path(".snapshots/nonesuch")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn virtual_directories_are_hidden_unless_asked_for() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".snap") || n.starts_with(".control") || n == ".bkfs"),
        "{names:?}"
    );
    assert!(m.path(".control/snapshot").is_file());
    assert!(m.path(".snapshots").is_dir());
    let e = fs::write(m.path(".snapshots"), "x").unwrap_err();
    assert!(e.raw_os_error().is_some());
    drop(m);
    let m = Mount::with_source("snapdir=visible", fill);
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&".snapshots".to_string()) && names.contains(&".control".to_string()),
        "{names:?}"
    );
    // `ls -la` gets attributes for every entry.
    sh(&format!("ls -la {} >/dev/null", m.mnt.display()));
}

#[test]
fn an_unprivileged_user_reads_no_more_than_live_and_cannot_snapshot() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    take(&m.mnt, "p");
    let s = m.path(".snapshots/p");
    // Before sealing (served from the point in time) and after (from the store).
    for _ in 0..2 {
        nobody_fails(
            &format!("cat {}", s.join("secret").display()),
            "Permission denied",
        );
        nobody_ok(&format!("cat {}", s.join("a.txt").display()));
        wait_settled(&m.mnt);
    }
    nobody_fails(
        &format!("echo x > {}", m.path(".control/snapshot").display()),
        "Permission denied",
    );
    nobody_fails(
        &format!("mkdir {}", m.path(".snapshots/q").display()),
        "denied",
    );
    nobody_fails(
        &format!("rmdir {}", m.path(".snapshots/p").display()),
        "denied",
    );
    nobody_fails(
        &format!("echo > {}", m.path(".control/freeze").display()),
        "denied",
    );
    // Reading the state is allowed.
    nobody_ok(&format!("cat {}", m.path(".control/snapshot").display()));
}

#[test]
fn freeze_holds_writes_until_thaw_and_reads_go_on() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    fs::write(m.path("log"), "before\n").unwrap();
    fs::create_dir(m.path("sub")).unwrap();
    fs::write(m.path(".control/freeze"), "\n").unwrap();
    assert!(fs::read_to_string(m.path(".control/freeze"))
        .unwrap()
        .contains("frozen: yes"));
    let (log, sub) = (m.path("log"), m.path("sub/new"));
    let writer = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, b"during\n").unwrap();
        fs::write(&sub, "x").unwrap();
        t.elapsed()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Reads are served while writes wait (outside the directory of a
    // pending create, which the kernel itself keeps locked).
    assert_eq!(fs::read_to_string(m.path("a.txt")).unwrap(), "hello\n");
    assert_eq!(
        fs::read_to_string(m.backing("log")).unwrap(),
        "before\n",
        "a write passed the barrier"
    );
    fs::write(m.path(".control/thaw"), "\n").unwrap();
    let waited = writer.join().unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(250),
        "{waited:?}"
    );
    assert_eq!(
        fs::read_to_string(m.backing("log")).unwrap(),
        "before\nduring\n"
    );
    assert!(m.backing("sub/new").exists());
    assert!(fs::read_to_string(m.path(".control/freeze"))
        .unwrap()
        .contains("frozen: no"));
}

#[test]
fn a_snapshot_taken_while_frozen_by_hand_is_the_frozen_state() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    // A file open for writing across the freeze: it is fenced.
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.path("open"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"before\n").unwrap();
    fs::write(m.path(".control/freeze"), "\n").unwrap();
    let writer = std::thread::spawn(move || {
        std::io::Write::write_all(&mut f, b"during\n").unwrap();
        f
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    take(&m.mnt, "frozen");
    let st = status(&m.mnt);
    assert_eq!(st["fenced_files"], "1", "{st:?}");
    fs::write(m.path(".control/thaw"), "\n").unwrap();
    drop(writer.join().unwrap());
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    assert_eq!(
        fs::read_to_string(m.path(".snapshots/frozen/open")).unwrap(),
        "before\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("open")).unwrap(),
        "before\nduring\n"
    );
}

#[test]
fn a_barrier_held_by_hand_is_released_at_its_cap() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    fs::write(m.path(".control/freeze"), "\n").unwrap();
    let t = std::time::Instant::now();
    fs::write(m.path("a.txt"), "after the cap\n").unwrap();
    let waited = t.elapsed();
    assert!(waited >= std::time::Duration::from_secs(9), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(30), "{waited:?}");
    let st = fs::read_to_string(m.path(".control/status")).unwrap();
    assert!(st.contains("released by the watchdog"), "{st}");
}

#[test]
fn a_new_snapshot_while_a_copy_runs_is_refused_with_ebusy() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fill(src);
        // Enough data that the copy takes a moment.
        for i in 0..8 {
            let data: Vec<u8> = (0..4_000_000u32)
                .map(|x| (x.wrapping_mul(2654435761) >> (i + 7)) as u8)
                .collect();
            fs::write(src.join(format!("big{i}")), data).unwrap();
        }
    });
    take(&m.mnt, "slow");
    let r = take_errno(&m.mnt, "next\n");
    let s = status(&m.mnt);
    if s["state"] != "sealed" {
        assert_eq!(r, libc::EBUSY, "{s:?}");
        assert_eq!(s["name"], "slow", "the running copy stays shown: {s:?}");
    }
    wait_settled(&m.mnt);
    let st = fs::read_to_string(m.path(".control/status")).unwrap();
    if r == libc::EBUSY {
        assert!(st.contains("refused"), "{st}");
    }
}

#[test]
fn a_source_whose_store_folder_is_not_a_store_is_refused_clearly() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, mnt) = (tmp.path().join("src"), tmp.path().join("mnt"));
    fs::create_dir_all(src.join(".bkfs")).unwrap();
    fs::create_dir(&mnt).unwrap();
    fs::write(src.join(".bkfs/mine"), "not a store").unwrap();
    let out = std::process::Command::new(BKFS)
        .arg("mount")
        .arg(&src)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".bkfs") && err.contains("not a bkfs store"),
        "{err}"
    );
    assert!(!is_mounted(&mnt));
    assert_eq!(
        fs::read_to_string(src.join(".bkfs/mine")).unwrap(),
        "not a store"
    );
}

#[test]
fn the_command_line_takes_and_shows_snapshots_of_a_mount() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BKFS)
            .args(args)
            .current_dir(m.path("d"))
            .output()
            .unwrap();
        assert!(out.status.success(), "bkfs {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The mount is found from the current directory.
    let out = run(&["snapshot", "cli", "--wait"]);
    assert!(out.contains("sealed"), "{out}");
    assert!(m.path(".snapshots/cli/a.txt").is_file());
    let json: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    assert_eq!(json["snapshot"]["name"], "cli");
    assert_eq!(json["snapshot"]["state"], "sealed");
    assert_eq!(json["snapshot"]["consistency"], "fs_consistent");
    assert_eq!(json["status"]["snapshots"], "1");
    let store = m.backing(".bkfs");
    let list = run(&["list", "--store", store.to_str().unwrap()]);
    assert!(
        list.contains("cli") && list.contains("fs_consistent"),
        "{list}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "list",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ]))
    .unwrap();
    assert!(
        json[0]["capture"]["barrier_ms"].as_f64().is_some(),
        "{json}"
    );
    // A refusal names its reason.
    let out = std::process::Command::new(BKFS)
        .args(["snapshot", "cli", "--mount"])
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{out:?}"
    );
}

#[test]
fn a_writer_beside_an_open_reader_still_keeps_the_pre_image() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    let want = digest(&m.mnt);
    // A reader holds the file open across the snapshot and the writes.
    let reader = fs::File::open(m.path("d/b.bin")).unwrap();
    take(&m.mnt, "held");
    {
        let mut w = fs::OpenOptions::new()
            .write(true)
            .open(m.path("d/b.bin"))
            .unwrap();
        std::io::Write::write_all(&mut w, &[1u8; 100_000]).unwrap();
        w.sync_all().unwrap();
    }
    let mut buf = vec![0u8; 10];
    std::os::unix::fs::FileExt::read_at(&reader, &mut buf, 0).unwrap();
    assert_eq!(buf, vec![1u8; 10], "the reader sees the live change");
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    assert_same("held", &want, &digest(&m.path(".snapshots/held")));
}
