//! Conformance: pjdfstest (the POSIX suite, 0.2.x) and fsx (the File System eXerciser,
//! fsx-rs), run as real processes on a native directory under /tmp (the baseline, in the
//! same run) and on bkfs mounts: the default mount, `-o snapshots=off`, and a default mount
//! that takes a snapshot every half second while a large file is rewritten. A bkfs mount
//! passes when no pjdfstest case fails on it that passes natively, it skips no case that ran
//! natively unless that case cannot apply to FUSE (listed with the reason in
//! `pjdfs::CANNOT_APPLY_TO_FUSE` and docs/CONFORMANCE.md), and fsx completes its operations.
//!
//! Needs root, /dev/fuse, `pjdfstest` and `fsx` (PATH or ~/.cargo/bin) and pjdfstest's dummy
//! users; tools/test.sh installs them. Without them the tests skip with a message, except
//! under CI=true, where that is a failure. Runs one at a time; `--nocapture` shows figures.

#[path = "../common/mod.rs"]
mod helpers;
/// The mount tests' helpers (with the rest of the one library behind them).
use helpers::mount as common;
mod fsx;
mod load;
mod pjdfs;
mod setup;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::Mount;
use load::Load;
use pjdfs::{Counts, Results};
use setup::{Scratch, Tmpfs};

/// The default mount: `bkfs mount SRC MNT` with no option.
const DEFAULT: &str = "";
/// The `snapshots=off` mount.
const SNAPSHOTS_OFF: &str = "snapshots=off";
/// Snapshots without the kernel's writeback cache (the default has it):
/// every write(2) a round trip to the daemon.
const WRITE_THROUGH: &str = "nowriteback";

/// `bkfs mount SRC MNT` with `options`, for messages.
fn mount_command(options: &str) -> String {
    if options.is_empty() {
        "bkfs mount SRC MNT".into()
    } else {
        format!("bkfs mount SRC MNT -o {options}")
    }
}

/// How many times pjdfstest runs under the snapshot load.
const LOAD_ROUNDS: usize = 3;

fn pjdfstest_bin() -> Option<PathBuf> {
    setup::tool("pjdfstest", "BKFS_PJDFSTEST")
}

fn fsx_bin() -> Option<PathBuf> {
    setup::tool("fsx", "BKFS_FSX")
}

/// pjdfstest's outcomes on the native filesystem, run once per test process.
fn native_baseline(bin: &Path) -> &'static Results {
    static NATIVE: OnceLock<Results> = OnceLock::new();
    NATIVE.get_or_init(|| {
        let scratch = Scratch::new("bkfs-conformance-native-");
        let dir = scratch.path.join("native");
        std::fs::create_dir(&dir).unwrap();
        // A tmpfs of our own: the other filesystem of the EXDEV cases, and where the erofs
        // cases run (they remount their filesystem read-only: not the machine's root).
        let tmpfs = Tmpfs::mount(&scratch.path.join("tmpfs"));
        let secondary = tmpfs.path.join("secondary");
        let erofs = tmpfs.path.join("erofs");
        std::fs::create_dir(&secondary).unwrap();
        std::fs::create_dir(&erofs).unwrap();
        let (results, elapsed) =
            pjdfs::run_suite(bin, &scratch.path, &dir, &secondary, &erofs, 1, || ());
        println!(
            "pjdfstest native ({} at {}, the erofs cases on tmpfs): {} in {:.1} s\n{}",
            setup::fs_type(&dir),
            dir.display(),
            Counts::of(&results),
            elapsed.as_secs_f64(),
            pjdfs::report(&results)
        );
        results
    })
}

#[test]
fn pjdfstest_native_baseline() {
    let _one = setup::one_at_a_time();
    if !setup::can_run() {
        return;
    }
    let Some(bin) = pjdfstest_bin() else { return };
    let native = native_baseline(&bin);
    // Failures here are the baseline (not bkfs's fault); an empty run is not.
    assert!(
        native.len() > 300,
        "pjdfstest ran only {} cases",
        native.len()
    );
}

/// pjdfstest on a fresh bkfs mount with `options`, under the snapshot load if `with_load`.
fn pjdfstest_on(what: &str, options: &str, with_load: bool) {
    let _one = setup::one_at_a_time();
    if !setup::can_run() {
        return;
    }
    let Some(bin) = pjdfstest_bin() else { return };
    let native = native_baseline(&bin);
    let m = Mount::with_source(options, |src| {
        if with_load {
            load::prepare(src)
        }
    });
    let load = with_load.then(|| Load::start(&m.mnt));
    let dir = m.path("pjdfstest");
    let erofs = m.path("pjdfstest-erofs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&erofs).unwrap();
    // The EXDEV cases need another filesystem: the ext4 beside the mount.
    let secondary = m.scratch("secondary");
    // Under the load, the suite runs several times: it takes seconds, and races need chances.
    let rounds = if with_load { LOAD_ROUNDS } else { 1 };
    // The load is paused during the erofs cases: a file it holds open for writing would
    // make the kernel refuse the read-only remount (EBUSY).
    let (results, elapsed) = pjdfs::run_suite(
        &bin,
        &m.scratch("config"),
        &dir,
        &secondary,
        &erofs,
        rounds,
        || load.as_ref().map(|l| l.pause()),
    );
    // A read-only remount and back the way a user makes them, checked apart from pjdfstest's.
    let remount = {
        let _held = load.as_ref().map(|l| l.pause());
        pjdfs::remount_through_mount8(&m.scratch("config"), &m.mnt)
    };
    let stats = load.map(Load::stop);
    println!(
        "pjdfstest on {what} ({}): {} in {:.1} s\n{}",
        mount_command(options),
        Counts::of(&results),
        elapsed.as_secs_f64(),
        pjdfs::report(&results)
    );
    let mut problems = pjdfs::regressions(native, &results);
    problems.extend(remount);
    if let Some(stats) = &stats {
        println!("snapshot load: {stats}");
        if let Some(note) = stats.note() {
            println!("{note}");
        }
        problems.extend(stats.problems());
    }
    let log = m.log();
    drop(m);
    if !problems.is_empty() {
        let first = problems[0].split(": ").next().unwrap_or_default();
        panic!(
            "pjdfstest on {what} ({}): {} problem(s), cases that fail or skip on \
             bkfs but not natively or failures of the load:\n  - {}\n\
             one case by hand: {}; pjdfstest -c {} -p MNT -s /tmp \
             -e {first}\n--- daemon log (end) ---\n{}",
            mount_command(options),
            problems.len(),
            problems.join("\n  - "),
            mount_command(options),
            setup::here().join("pjdfstest.toml").display(),
            setup::log_tail(&log, 30)
        );
    }
}

#[test]
fn pjdfstest_default_mount() {
    pjdfstest_on("the default mount", DEFAULT, false);
}

#[test]
fn pjdfstest_snapshots_off_mount() {
    pjdfstest_on("a snapshots=off mount", SNAPSHOTS_OFF, false);
}

#[test]
fn pjdfstest_write_through_mount() {
    pjdfstest_on("a nowriteback mount", WRITE_THROUGH, false);
}

#[test]
fn pjdfstest_while_snapshots_are_taken() {
    pjdfstest_on(
        "the default mount taking a snapshot every 0.5 s",
        DEFAULT,
        true,
    );
}

/// fsx on a fresh bkfs mount with `options` (natively, in /tmp, if None).
fn fsx_on(what: &str, options: Option<&str>, with_load: bool) {
    let _one = setup::one_at_a_time();
    if !setup::can_run() {
        return;
    }
    let Some(bin) = fsx_bin() else { return };
    let Some(options) = options else {
        let scratch = Scratch::new("bkfs-conformance-fsx-native-");
        println!(
            "fsx natively: {} at {}",
            setup::fs_type(&scratch.path),
            scratch.path.display()
        );
        if let Err(e) = fsx::run(&bin, &scratch.path.join("fsx.file"), what) {
            panic!("{e}");
        }
        return;
    };
    let m = Mount::with_source(options, |src| {
        if with_load {
            load::prepare(src)
        }
    });
    let load = with_load.then(|| Load::start(&m.mnt));
    let result = fsx::run(&bin, &m.path("fsx/fsx.file"), what);
    let stats = load.map(Load::stop);
    let mut problems: Vec<String> = result.err().into_iter().collect();
    if let Some(stats) = &stats {
        println!("snapshot load: {stats}");
        if let Some(note) = stats.note() {
            println!("{note}");
        }
        problems.extend(stats.problems());
    }
    let log = m.log();
    drop(m);
    if !problems.is_empty() {
        panic!(
            "fsx on {what} ({}):\n{}\n--- daemon log (end) ---\n{}",
            mount_command(options),
            problems.join("\n"),
            setup::log_tail(&log, 30)
        );
    }
}

#[test]
fn fsx_native() {
    fsx_on("the native filesystem", None, false);
}

#[test]
fn fsx_default_mount() {
    fsx_on("the default mount", Some(DEFAULT), false);
}

#[test]
fn fsx_snapshots_off_mount() {
    fsx_on("a snapshots=off mount", Some(SNAPSHOTS_OFF), false);
}

#[test]
fn fsx_write_through_mount() {
    fsx_on("a nowriteback mount", Some(WRITE_THROUGH), false);
}

#[test]
fn fsx_write_through_mount_while_snapshots_are_taken() {
    fsx_on(
        "a nowriteback mount taking a snapshot every 0.5 s",
        Some(WRITE_THROUGH),
        true,
    );
}

#[test]
fn fsx_while_snapshots_are_taken() {
    fsx_on(
        "the default mount taking a snapshot every 0.5 s",
        Some(DEFAULT),
        true,
    );
}
