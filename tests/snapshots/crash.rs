//! Crashes and restarts during a copy: a kill -9 of the daemon, a clean
//! unmount. The snapshot is resumed or reported failed with its reason; a
//! snapshot shown as sealed always equals its point in time; the store
//! passes `bkfs check`.

use std::fs;

use crate::common::*;
use crate::tree::*;

fn fill(src: &std::path::Path) {
    for d in 0..4 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}\n").repeat(50)).unwrap();
        }
        // Large and incompressible, so the copy lasts a while.
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ d;
        let data: Vec<u8> = (0..40_000_000u64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(dir.join("big"), data).unwrap();
    }
}

/// Changes that need pre-images of everything `fill` made.
fn mutate(mnt: &std::path::Path) {
    sh(&format!(
        "cd {} && for d in d0 d1 d2 d3; do echo x >> $d/f1; rm $d/f2; mv $d/f3 $d/f3-moved; \
         dd if=/dev/zero of=$d/big bs=64k count=4 seek=20 conv=notrunc status=none; done; \
         mv d3 d3-moved; truncate -s 1000 d0/big",
        mnt.display()
    ));
}

#[test]
fn kill_9_during_a_copy_resumes_or_reports_and_never_shows_a_wrong_snapshot() {
    if !can_mount() {
        return;
    }
    for (i, delay_ms) in [0u64, 40, 150, 400].into_iter().enumerate() {
        let mut m = Mount::with_source("", fill);
        let want = digest(&m.mnt);
        let name = format!("k{i}");
        take(&m.mnt, &name);
        mutate(&m.mnt);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        m.kill_and_remount("");
        let s = wait_settled(&m.mnt);
        let snap = m.path(".snapshots").join(&name);
        // Sealed before the kill: the new daemon has no operation to show.
        let state = if s["state"] == "none" && snap.is_dir() {
            "sealed"
        } else {
            s["state"].as_str()
        };
        match state {
            "sealed" => {
                assert!(s["name"] == name || s["state"] == "none", "{s:?}");
                assert_same(&format!("{name} after kill -9"), &want, &digest(&snap));
            }
            "failed" => {
                assert!(!s["error"].is_empty(), "failed without a reason: {s:?}");
                assert!(!snap.exists(), "a failed snapshot is shown");
            }
            other => panic!("after kill -9: state {other}: {s:?}"),
        }
        // The mount works on, and takes new snapshots.
        fs::write(m.path("after"), "ok").unwrap();
        take(&m.mnt, &format!("{name}-next"));
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        check_store(&m.backing(".bkfs"));
        m.unmount();
    }
}

#[test]
fn a_clean_unmount_during_a_copy_resumes_it_at_the_next_mount() {
    if !can_mount() {
        return;
    }
    let mut m = Mount::with_source("", fill);
    let want = digest(&m.mnt);
    take(&m.mnt, "resumed");
    // Unmount at once, while the copy of 160 MB runs.
    let s = status(&m.mnt);
    assert!(
        matches!(s["state"].as_str(), "committed" | "copying"),
        "{s:?}"
    );
    m.remount("");
    // The point in time is kept across the restart: changes made through
    // the new mount preserve their pre-images for the resumed copy.
    mutate(&m.mnt);
    let changed = digest(&m.mnt);
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    assert_eq!(s["name"], "resumed");
    assert!(s["why"].contains("resumed"), "{s:?}");
    assert_same("resumed", &want, &digest(&m.path(".snapshots/resumed")));
    assert_same("live after remount", &changed, &digest(&m.mnt));
    check_store(&m.backing(".bkfs"));
    m.unmount();
}

/// Changes made while the copy runs, against the copy's reads.
#[test]
fn a_snapshot_changed_during_its_copy_is_the_tree_of_its_moment() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", fill);
    let want = digest_with(&m.mnt, true);
    take(&m.mnt, "t");
    mutate(&m.mnt);
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}\n{}", m.log());
    let got = digest_with(&m.path(".snapshots/t"), true);
    if want != got {
        eprintln!("daemon log:\n{}", m.log());
    }
    assert_same("the snapshot after changes during its copy", &want, &got);
}

#[test]
fn tar_and_rsync_of_a_snapshot_give_back_the_tree_of_its_moment() {
    if !can_mount() {
        return;
    }
    // The copy is held until the changes are made, so that every one of
    // them needs its pre-image, whatever the machine's speed.
    let hold = crate::faults::Hold::new();
    let m = Mount::with_command(
        "",
        |src| {
            fill(src);
            fs::hard_link(src.join("d0/f5"), src.join("d1/f5-link")).unwrap();
            sh(&format!(
                "setfattr -n user.tag -v x {}",
                src.join("d0/f6").display()
            ));
        },
        |cmd| hold.env(cmd),
    );
    let want = digest_with(&m.mnt, true);
    take(&m.mnt, "t");
    mutate(&m.mnt);
    hold.release();
    assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
    let out = m.scratch("rsync");
    sh(&format!(
        "rsync -aHAX {}/ {}/",
        m.path(".snapshots/t").display(),
        out.display()
    ));
    assert_same(
        "rsync -aHAX of the snapshot",
        &want,
        &digest_with(&out, true),
    );
    let out = m.scratch("tar");
    sh(&format!(
        "cd {} && tar --xattrs -cf - . | (cd {} && tar --xattrs -xpf -)",
        m.path(".snapshots/t").display(),
        out.display()
    ));
    assert_same("tar of the snapshot", &want, &digest_with(&out, true));
}
