//! exec hooks on a real mount: a freeze that fails, hangs past its timeout
//! or exits early leaving a child, under `require = "app"` and
//! `"best-effort"`; and a daemon killed with SIGKILL while an application is
//! frozen by hand, thawed at the next mount or by `bkfs thaw --force`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::tree::*;
use crate::util::*;

const APP: &str = "hookapp";

/// A profile with one exec app whose thaw appends `thawed` to `log`.
fn exec_profile(require: &str, freeze: &str, log: &Path) -> String {
    format!(
        "require = \"{require}\"\n[[app]]\nname = \"{APP}\"\nplugin = \"exec\"\n\
         freeze = '{freeze}'\nthaw = 'echo thawed >> {}'\ntimeout = {{ freeze = \"1s\", thaw = \"5s\" }}\n",
        log.display()
    )
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn app_file(m: &Mount, file: &str) -> String {
    std::fs::read_to_string(m.path(&format!(".quiesce/{APP}/{file}")))
        .unwrap()
        .trim()
        .to_string()
}

/// Nothing stays frozen: the thaw hook ran, the app is not frozen, no marker.
fn all_thawed(m: &Mount, log: &Path, what: &str) {
    assert_eq!(
        lines(log).last().map(String::as_str),
        Some("thawed"),
        "{what}: the thaw hook did not run last: {:?}",
        lines(log)
    );
    let state = app_file(m, "state");
    assert!(
        state == "thawed" || state == "failed",
        "{what}: state {state}; status:\n{}",
        app_file(m, "status")
    );
    assert!(
        !marker_of(&m.mnt).exists(),
        "{what}: the frozen marker is left"
    );
}

#[test]
fn exec_hooks_that_fail_hang_or_exit_early() {
    if !can_mount() {
        return;
    }
    let conf = tmp();
    let log = conf.path().join("hook.log");
    let l = log.display().to_string();
    let prof = profile(
        conf.path(),
        "hooks.toml",
        &exec_profile("app", "true", &log),
    );
    let m = Mount::new(&format!("profile={}", prof.display()));
    let use_profile = |text: String| {
        profile(conf.path(), "hooks.toml", &text);
        reload(&m.mnt);
        let _ = std::fs::remove_file(&log);
    };

    let fails = format!("echo frozen >> {l}; echo disk busy; exit 3");
    let hangs = format!("echo frozen >> {l}; sleep 60");
    for (kind, freeze, reason) in [("fails", &fails, "exit 3"), ("hangs", &hangs, "timed out")] {
        // require = "app": no snapshot, ECANCELED, the error names the app.
        use_profile(exec_profile("app", freeze, &log));
        let name = format!("{kind}-app");
        let t = Instant::now();
        assert_eq!(
            take_errno(&m.mnt, format!("{name}\n")),
            libc::ECANCELED,
            "{kind}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{kind}: {:?}",
            t.elapsed()
        );
        let s = status(&m.mnt);
        assert_eq!(s["state"], "failed", "{kind}: {s:?}");
        assert!(
            s["error"].contains(APP) && s["error"].contains(reason),
            "{kind}: {s:?}"
        );
        assert!(!m.path(&format!(".snapshots/{name}")).exists(), "{kind}");
        all_thawed(&m, &log, &name);
        assert!(
            app_file(&m, "result").contains(reason),
            "{kind}: {}",
            app_file(&m, "result")
        );

        // best-effort: the snapshot is taken anyway, crash-consistent, saying why.
        use_profile(exec_profile("best-effort", freeze, &log));
        let name = format!("{kind}-best-effort");
        let t = Instant::now();
        take(&m.mnt, &name);
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{kind}: {:?}",
            t.elapsed()
        );
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{kind}: {s:?}");
        assert_eq!(s["consistency"], "crash_consistent", "{kind}: {s:?}");
        assert!(s["why"].contains(APP), "{kind}: {s:?}");
        all_thawed(&m, &log, &name);
        assert!(m.path(&format!(".snapshots/{name}")).is_dir());
    }

    // A hook that exits early leaving a child that holds its output, and that
    // writes into the mount itself while freezing: not waited for; consistent.
    let freeze = format!(
        "echo frozen >> {l}; echo before > {}; sleep 20 & echo early",
        m.path("from-hook").display()
    );
    use_profile(exec_profile("app", &freeze, &log));
    let t = Instant::now();
    take(&m.mnt, "early");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let s = wait_settled(&m.mnt);
    assert_eq!(s["state"], "sealed", "{s:?}");
    assert_eq!(s["consistency"], "app_consistent", "{s:?}");
    assert_eq!(app_file(&m, "state"), "thawed");
    assert_eq!(lines(&log), ["frozen", "thawed"]);
    assert_eq!(
        std::fs::read_to_string(m.path(".snapshots/early/from-hook")).unwrap(),
        "before\n"
    );
    let apps = app_lines(&m.mnt);
    assert!(apps.len() == 1 && apps[0].starts_with(APP), "{apps:?}");
    // The same through `mkdir .snapshots/NAME` (it too must not hold the
    // FUSE worker the hook's write into the mount needs).
    std::fs::remove_file(m.path("from-hook")).unwrap();
    let t = Instant::now();
    std::fs::create_dir(m.path(".snapshots/early-mkdir")).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let s = wait_settled(&m.mnt);
    assert_eq!(s["consistency"], "app_consistent", "{s:?}");
    assert_eq!(
        std::fs::read_to_string(m.path(".snapshots/early-mkdir/from-hook")).unwrap(),
        "before\n"
    );
    check_store(&m.backing(".bkfs"));
}

#[test]
fn a_daemon_killed_while_an_app_is_frozen_thaws_it_at_the_next_mount() {
    if !can_mount() {
        return;
    }
    let conf = tmp();
    let log = conf.path().join("hook.log");
    let freeze = format!("echo frozen >> {}", log.display());
    let prof = profile(
        conf.path(),
        "hooks.toml",
        &exec_profile("app", &freeze, &log),
    );
    let options = format!("profile={}", prof.display());
    let mut m = Mount::new(&options);
    let marker = marker_of(&m.mnt);

    let freeze_by_hand = |m: &Mount| {
        std::fs::write(m.path(&format!(".quiesce/{APP}/freeze")), "\n").unwrap();
        assert_eq!(app_file(m, "state"), "frozen");
        assert!(marker.exists(), "no frozen marker at {}", marker.display());
        assert_eq!(lines(&log).last().map(String::as_str), Some("frozen"));
    };

    // Frozen by hand: snapshots are refused meanwhile; thaw by hand works.
    freeze_by_hand(&m);
    assert_eq!(take_errno(&m.mnt, "refused\n"), libc::EBUSY);
    std::fs::write(m.path(&format!(".quiesce/{APP}/thaw")), "\n").unwrap();
    all_thawed(&m, &log, "thaw by hand");

    // SIGKILL while frozen; the next mount acts on the marker first.
    freeze_by_hand(&m);
    m.kill_and_remount(&options);
    wait_for("the thaw at mount", Duration::from_secs(10), || {
        lines(&log).last().map(String::as_str) == Some("thawed")
    });
    all_thawed(&m, &log, "after the remount");
    take(&m.mnt, "after-remount");
    let s = wait_settled(&m.mnt);
    assert_eq!(s["consistency"], "app_consistent", "{s:?}");

    // SIGKILL while frozen, and `bkfs thaw --force` before any new mount.
    freeze_by_hand(&m);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.daemon_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = run(Command::new(BKFS)
        .args(["thaw", "--force", "--marker"])
        .arg(&marker));
    assert!(out.contains(&format!("{APP}: thawed")), "{out}");
    assert_eq!(lines(&log).last().map(String::as_str), Some("thawed"));
    assert!(!marker.exists());
    let n = lines(&log).len();
    m.kill_and_remount(&options);
    assert_eq!(app_file(&m, "state"), "thawed");
    // Nothing left to thaw: the new mount did not run the thaw hook again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&log).len(), n, "{:?}", lines(&log));
}
