//! Faults at exact system calls of the diff area (failpoints, src/os/fail.rs): a pre-image the
//! disk has no room for or cannot write (the snapshot fails, not the write), the bound
//! `diff_max`, a daemon that crashes while it preserves one or while it commits a
//! snapshot. They need a bkfs built with `--features failpoints`, as `tools/test.sh` builds it.

#[cfg(feature = "failpoints")]
mod armed {
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    use crate::common::*;
    use crate::faults::Hold;
    use crate::tree::*;

    fn old() -> String {
        "old contents\n".repeat(20_000)
    }

    fn fill(src: &std::path::Path) {
        fs::create_dir(src.join("d")).unwrap();
        fs::write(src.join("f"), old()).unwrap();
        fs::write(src.join("d/g"), "g\n").unwrap();
    }

    /// A mount whose daemon runs with `BKFS_FAILPOINTS=rules` and copies nothing while `hold`
    /// is armed, so that a snapshot taken stays pending.
    fn mount_with(rules: &str, hold: &Hold) -> Mount {
        Mount::with_command("", fill, |cmd: &mut Command| {
            hold.env(cmd);
            cmd.env("BKFS_FAILPOINTS", rules);
        })
    }

    /// Overwrites 3 bytes of `f` and syncs them: with the writeback cache
    /// the daemon sees the write at the fsync, which then reports what the
    /// write(2) reports write-through.
    fn overwrite_f(m: &Mount) -> std::io::Result<()> {
        let f = OpenOptions::new().write(true).open(m.path("f"))?;
        f.write_all_at(b"new", 70_000)?;
        f.sync_data()
    }

    /// After a pre-image failed: the snapshot is failed with `needle` in its reason, the write
    /// that needed the pre-image is whole in the live tree, the failed snapshot is not shown,
    /// the store is sound and the next snapshot seals its own point in time.
    fn failed_not_the_write(m: &Mount, hold: &Hold, needle: &str) {
        // Shown failed at once, while its copy is still held back.
        let s = status(&m.mnt);
        assert_eq!(s["state"], "failed", "{s:?}");
        assert!(s["error"].contains(needle), "{s:?}");
        let mut want = old().into_bytes();
        want[70_000..70_003].copy_from_slice(b"new");
        assert_eq!(fs::read(m.path("f")).unwrap(), want);
        assert_eq!(fs::read(m.backing("f")).unwrap(), want);
        hold.release();
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "failed", "{s:?}");
        assert!(s["error"].contains(needle), "{s:?}");
        wait_released(&m.mnt);
        assert!(
            !m.path(".snapshots/s").exists(),
            "a failed snapshot is shown"
        );
        check_store(&m.backing(".bkfs"));
        let want = digest(&m.mnt);
        take(&m.mnt, "next");
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        assert_same(
            "the next snapshot",
            &want,
            &digest(&m.path(".snapshots/next")),
        );
    }

    /// Waits until no snapshot is pending (a failed one is shown failed at once, and released
    /// once its copy has wound down).
    fn wait_released(mnt: &std::path::Path) {
        for _ in 0..6000 {
            let text = fs::read_to_string(mnt.join(".control/status")).unwrap();
            let st = bkfs::control::text::decode(&text).into_map();
            if st.get("pending").is_none_or(|p| p.is_empty()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the failed snapshot was never released");
    }

    #[test]
    fn a_pre_image_the_disk_has_no_room_for_fails_the_snapshot_not_the_write() {
        if !can_mount() {
            return;
        }
        let hold = Hold::new();
        let m = mount_with("area.data=error:ENOSPC", &hold);
        take(&m.mnt, "s");
        // The first change of f since the point in time needs its old blocks in the diff area:
        // the disk has no room for them, and the write goes on.
        overwrite_f(&m).expect("a write failed because its pre-image could not be kept");
        fs::write(m.path("d/h"), "new\n").unwrap();
        failed_not_the_write(&m, &hold, "No space left on device");
        m.unmount();
    }

    #[test]
    fn a_diff_area_past_diff_max_fails_the_snapshot_not_the_write() {
        if !can_mount() {
            return;
        }
        let hold = Hold::new();
        // f's pre-image (its blocks around offset 70 000) takes 64 KiB and more.
        let m = Mount::with_command("diff_max=16K", fill, |cmd: &mut Command| hold.env(cmd));
        take(&m.mnt, "s");
        fs::write(m.path("d/g"), "within the bound\n").unwrap();
        assert_eq!(status(&m.mnt)["state"], "copying");
        overwrite_f(&m).expect("a write failed because the diff area is full");
        failed_not_the_write(&m, &hold, "diff area full");
        m.unmount();
    }

    #[test]
    fn a_daemon_killed_after_a_pre_image_failed_says_so_and_copies_nothing_again() {
        if !can_mount() {
            return;
        }
        let hold = Hold::new();
        let mut m = mount_with("area.data=error:EIO", &hold);
        take(&m.mnt, "s");
        overwrite_f(&m).unwrap();
        let after = digest(&m.mnt);
        m.kill_and_remount("");
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "failed", "{s:?}");
        assert!(s["error"].contains("Input/output error"), "{s:?}");
        assert!(s["error"].contains("before the daemon restarted"), "{s:?}");
        assert!(
            !m.path(".snapshots/s").exists(),
            "a failed snapshot is shown"
        );
        assert_same("the live tree after the kill", &after, &digest(&m.mnt));
        check_store(&m.backing(".bkfs"));
        take(&m.mnt, "next");
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        assert_same(
            "the next snapshot",
            &after,
            &digest(&m.path(".snapshots/next")),
        );
        m.unmount();
    }

    #[test]
    fn a_daemon_that_crashes_while_preserving_a_pre_image_loses_nothing_after_a_remount() {
        if !can_mount() {
            return;
        }
        let hold = Hold::new();
        // Abort once the old blocks are in `.data`, before their index reaches `.blocks`.
        let mut m = mount_with("area.log=abort", &hold);
        let want = digest(&m.mnt);
        take(&m.mnt, "s");
        let r = overwrite_f(&m);
        assert!(
            r.is_err(),
            "the write (or its fsync) that crashed the daemon returned {r:?}"
        );
        assert!(m.log().contains("failpoint area.log: abort"), "{}", m.log());
        // The new daemon, without failpoints or hold, copies the pending snapshot again.
        m.kill_and_remount("");
        assert_eq!(fs::read_to_string(m.path("f")).unwrap(), old());
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        assert_same(
            "after a crash in a pre-image",
            &want,
            &digest(&m.path(".snapshots/s")),
        );
        check_store(&m.backing(".bkfs"));
        overwrite_f(&m).unwrap();
        take(&m.mnt, "next");
        assert_eq!(wait_settled(&m.mnt)["state"], "sealed");
        m.unmount();
    }

    #[test]
    fn a_daemon_that_crashes_while_committing_leaves_no_snapshot_and_takes_the_next() {
        if !can_mount() {
            return;
        }
        let hold = Hold::new();
        // The commit writes the snapshot's state.json to a temporary name and renames it.
        let mut m = mount_with("area.record.rename=abort", &hold);
        let errno = take_errno(&m.mnt, "cut\n");
        assert_ne!(
            errno, 0,
            "a snapshot whose commit crashed the daemon was taken"
        );
        assert!(
            m.log().contains("failpoint area.record.rename: abort"),
            "{}",
            m.log()
        );
        hold.release();
        m.kill_and_remount("");
        assert!(
            !m.path(".snapshots/cut").exists(),
            "a half-committed snapshot is shown"
        );
        let want = digest(&m.mnt);
        take(&m.mnt, "cut");
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        assert_same(
            "the next snapshot",
            &want,
            &digest(&m.path(".snapshots/cut")),
        );
        check_store(&m.backing(".bkfs"));
        m.unmount();
    }
}

#[cfg(not(feature = "failpoints"))]
#[test]
fn failpoint_tests_need_the_failpoints_feature() {
    let msg =
        "the failpoint tests of the diff area need `--features failpoints` (tools/test.sh has it)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}
