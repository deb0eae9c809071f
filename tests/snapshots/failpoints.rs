//! Faults at exact system calls of the diff area (failpoints, src/os/fail.rs): a pre-image the
//! disk has no room for, a daemon that crashes while it preserves one or while it commits a
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

    fn overwrite_f(m: &Mount) -> std::io::Result<()> {
        let f = OpenOptions::new().write(true).open(m.path("f"))?;
        f.write_all_at(b"new", 70_000)
    }

    #[test]
    fn a_pre_image_the_disk_has_no_room_for_fails_the_write_with_enospc_and_loses_nothing() {
        if !can_mount() {
            return;
        }
        let hold = Hold::new();
        let m = mount_with("area.data=error:ENOSPC", &hold);
        let want = digest(&m.mnt);
        take(&m.mnt, "s");
        // The first change of f since the point in time needs its old blocks in the diff area.
        let e = overwrite_f(&m).expect_err("a write whose pre-image could not be kept succeeded");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        // Nothing lost: the live file is as it was, through the mount and in the source.
        assert_eq!(fs::read_to_string(m.path("f")).unwrap(), old());
        assert_eq!(fs::read_to_string(m.backing("f")).unwrap(), old());
        // What needs no preserved file data still works.
        fs::write(m.path("d/h"), "new\n").unwrap();
        hold.release();
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        assert_same(
            "after a refused write",
            &want,
            &digest(&m.path(".snapshots/s")),
        );
        check_store(&m.backing(".bkfs"));
        // Sealed, f needs no pre-image any more: the same write goes through.
        overwrite_f(&m).unwrap();
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
            "the write that crashed the daemon returned {r:?}"
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
