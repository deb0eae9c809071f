use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::control::render::app_file;
use serde_json::Value;

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::parse(text, Path::new("/etc/bkfs/p.toml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn quiesce_profile_smallest_form_from_design() {
    let p = parse(
        r#"
require = "app"

[[app]]
name = "web"
plugin = "exec"
freeze = ["/usr/local/bin/web-ctl", "pause"]
thaw = ["/usr/local/bin/web-ctl", "resume"]
user = "root"
timeout = { prepare = "120s", freeze = "15s", thaw = "30s" }
on_error = "fail"

[[app]]
name = "db"
plugin = "postgresql"
mode = "checkpoint"
connect = "host=/var/run/postgresql user=postgres"

[keep]
last = 3
daily = 7

[watchdog]
freeze = "20s"
"#,
    )
    .unwrap();
    assert_eq!(p.require, Require::App);
    assert_eq!(p.apps.len(), 2);
    assert_eq!(p.apps[0].timeouts.freeze, Duration::from_secs(15));
    assert_eq!(p.apps[0].timeouts.identify, Duration::from_secs(10));
    assert_eq!(p.apps[1].params["mode"].line, 16);
    assert_eq!(p.keep.last, Some(3));
    assert_eq!(p.keep.daily, Some(7));
    assert_eq!(p.keep.hourly, None);
    assert_eq!(p.watchdog.freeze, Duration::from_secs(20));
    assert_eq!(p.watchdog.barrier, Duration::from_secs(10));
}

#[test]
fn quiesce_profile_errors_name_file_line_and_key() {
    let e = err("require = \"app\"\nfoo = 1\n");
    assert!(e.starts_with("/etc/bkfs/p.toml:2: foo: unknown key"), "{e}");
    let e = err("\nrequire = \"always\"\n");
    assert!(
        e.starts_with("/etc/bkfs/p.toml:2: require: unknown value"),
        "{e}"
    );
    let e = err("[[app]]\nname = \"a\"\nplugin = \"exec\"\nfreeze = [\"/bin/true\"]\nthaw = [\"/bin/true\"]\ntimeout = { freeze = \"15 parsecs\" }\n");
    assert!(
        e.starts_with("/etc/bkfs/p.toml:6: timeout.freeze: bad duration"),
        "{e}"
    );
    let e = err("[[app]]\nname = \"a\"\nplugin = \"zfs\"\n");
    assert!(
        e.starts_with("/etc/bkfs/p.toml:3: plugin: unknown plug-in"),
        "{e}"
    );
    let e = err("[[app]]\nplugin = \"exec\"\n");
    assert!(e.contains(":2: app[1].name: missing"), "{e}");
    let e = err("[[app]]\nname = \"a\"\nplugin = \"exec\"\nfreeze = [\"/bin/true\"]\n");
    assert!(e.contains(":4: app \"a\": freeze: missing key thaw"), "{e}");
    let e = err("[[app]]\nname = \"a\"\nplugin = \"sqlite\"\ndatabase = \"/x.db\"\nholdd = true\n");
    assert!(
        e.contains(":5: app \"a\": holdd: unknown key for plug-in sqlite"),
        "{e}"
    );
    let e = err("[[app]]\nname = \"a\"\nplugin = \"signal\"\npid = 5\n[[app]]\nname = \"a\"\nplugin = \"signal\"\npid = 6\n");
    assert!(
        e.contains(":6: name: \"a\" is already the name of the app on line 2"),
        "{e}"
    );
    let e = err("[[app]]\nname = \"a\"\nplugin = \"exec\"\nuser = \"no-such-user-bkfs\"\n");
    assert!(e.contains(":4: user: no such user"), "{e}");
    let e = err("[keep]\ndaily = -1\n");
    assert!(
        e.contains(":2: keep.daily: expected a non-negative integer"),
        "{e}"
    );
    let e = err("[watchdog]\nfreeze = \"0s\"\n");
    assert!(e.contains(":2: watchdog.freeze"), "{e}");
    let e = err("[[app]]\nname = \"../x\"\nplugin = \"exec\"\n");
    assert!(e.contains(":2: name: must be"), "{e}");
    let e = err("require = [\n");
    assert!(e.starts_with("/etc/bkfs/p.toml:"), "{e}");
    let e = err("[[app]]\nname = \"pg\"\nplugin = \"postgresql\"\nmode = \"snapshot\"\n");
    assert!(e.contains(":4: app \"pg\": mode: unknown mode"), "{e}");
}

#[test]
fn quiesce_profile_defaults_and_levels() {
    let p = parse("").unwrap();
    assert_eq!(p.require, Require::Crash);
    let p = parse(
        "[[app]]\nname = \"db\"\nplugin = \"signal\"\npid = 5\nlevel = 2\n[[app]]\nname = \"web\"\nplugin = \"signal\"\npid = 6\nlevel = 1\n[[app]]\nname = \"cache\"\nplugin = \"signal\"\npid = 7\nlevel = 1\ntimeout = \"3s\"\non_error = \"continue\"\n",
    )
    .unwrap();
    assert_eq!(p.require, Require::App);
    let names: Vec<&str> = p.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["web", "cache", "db"]);
    assert_eq!(p.apps[1].timeouts.thaw, Duration::from_secs(3));
    assert_eq!(p.apps[1].on_error, OnError::Continue);
}

#[test]
fn quiesce_profile_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(&f, "require = \"crash\"\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    if nix::unistd::geteuid().is_root() {
        Profile::load(&f).unwrap();
    }
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
    let e = Profile::load(&f).unwrap_err().to_string();
    assert!(
        e.contains("refused") && e.contains("writable by group or others"),
        "{e}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).unwrap();
    assert!(Profile::load(&f).is_err());
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let e = Profile::load(&f).unwrap_err().to_string();
    assert!(
        e.contains("refused") && e.contains(&dir.path().display().to_string()),
        "{e}"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = Profile::load(&f).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}

/// A profile of exec apps that log "freeze NAME" / "thaw NAME" to a file.
struct Log {
    dir: tempfile::TempDir,
}

impl Log {
    fn new() -> Log {
        Log {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("log")
    }
    fn marker(&self) -> std::path::PathBuf {
        self.dir.path().join("frozen.json")
    }
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    /// An exec app; `freeze_extra` is shell run after logging the freeze.
    fn app(&self, name: &str, extra: &str, freeze_extra: &str) -> String {
        let log = self.path().display().to_string();
        format!(
            "[[app]]\nname = \"{name}\"\nplugin = \"exec\"\nfreeze = \"echo freeze {name} >> {log}; {freeze_extra}\"\nthaw = \"echo thaw {name} >> {log}\"\n{extra}\n"
        )
    }
    fn quiescer(&self, text: &str) -> Quiescer {
        Quiescer::new(parse(text).unwrap(), self.marker())
    }
}

#[test]
fn quiesce_order_freeze_by_level_thaw_reverse() {
    let l = Log::new();
    let text = format!(
        "require = \"app\"\n{}{}{}",
        l.app("db", "level = 2", "true"),
        l.app("web", "level = 1", "true"),
        l.app("worker", "level = 1", "true")
    );
    let q = l.quiescer(&text);
    let f = q.freeze().unwrap();
    assert_eq!(f.consistency(), Consistency::AppConsistent);
    assert_eq!(f.frozen_apps(), ["web", "worker", "db"]);
    assert!(l.marker().exists());
    let marker = std::fs::read_to_string(l.marker()).unwrap();
    assert!(marker.contains("\"worker\"") && marker.contains("\"db\""));
    assert!(q.apps().iter().all(|a| a.state == AppState::Frozen));
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent);
    assert!(o.frozen_ms.unwrap() > 0.0);
    assert_eq!(o.apps.len(), 3);
    assert!(o.apps[0]["timings_ms"]["freeze"].as_f64().is_some());
    let c = o.capture("2026-11-22T03:04:05.123456Z".into(), 0.8);
    assert_eq!(c.consistency, Consistency::AppConsistent);
    assert_eq!(c.frozen_ms, o.frozen_ms);
    assert_eq!(c.apps.len(), 3);
    assert_eq!(
        l.lines(),
        [
            "freeze web",
            "freeze worker",
            "freeze db",
            "thaw db",
            "thaw worker",
            "thaw web"
        ]
    );
    assert!(!l.marker().exists());
    assert!(q.apps().iter().all(|a| a.state == AppState::Thawed));
}

#[test]
fn quiesce_require_app_failure_thaws_and_errs() {
    let l = Log::new();
    let text = format!(
        "require = \"app\"\n{}{}{}",
        l.app("a", "", "true"),
        l.app("b", "", "echo cannot >&2; exit 3"),
        l.app("c", "", "true")
    );
    let q = l.quiescer(&text);
    let e = q.freeze().err().unwrap();
    match &e {
        QuiesceError::Failed { app, phase, reason } => {
            assert_eq!(app, "b");
            assert_eq!(*phase, Phase::Freeze);
            assert!(
                reason.to_string().contains("exit 3") && reason.to_string().contains("cannot"),
                "{reason}"
            );
        }
        e => panic!("{e}"),
    }
    assert_eq!(e.errno(), libc::ECANCELED);
    // b's freeze may have done something: it gets its thaw too; c never ran.
    assert_eq!(l.lines(), ["freeze a", "freeze b", "thaw b", "thaw a"]);
    assert!(!l.marker().exists());
    let st = q.apps();
    assert_eq!(st[1].state, AppState::Failed);
    assert!(st[1].result.contains("exit 3"));
    assert_eq!(st[0].state, AppState::Failed);
    assert!(st[0].result.contains("aborted"));
    // The next cycle can run.
    std::fs::remove_file(l.path()).unwrap();
    assert!(q.freeze().is_err());
}

#[test]
fn quiesce_best_effort_falls_back_to_crash_consistent() {
    let l = Log::new();
    let text = format!(
        "require = \"best-effort\"\n{}{}",
        l.app("a", "", "true"),
        l.app("b", "", "exit 1")
    );
    let q = l.quiescer(&text);
    let f = q.freeze().unwrap();
    assert_eq!(f.consistency(), Consistency::CrashConsistent);
    assert!(f.why().contains("b freeze failed"), "{}", f.why());
    assert!(f.frozen_apps().is_empty());
    assert_eq!(l.lines(), ["freeze a", "freeze b", "thaw b", "thaw a"]);
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::CrashConsistent);
    assert!(!l.marker().exists());
}

#[test]
fn quiesce_on_error_continue_keeps_the_others() {
    let l = Log::new();
    let text = format!(
        "require = \"app\"\n{}{}{}",
        l.app("a", "", "true"),
        l.app("b", "on_error = \"continue\"", "exit 1"),
        l.app("c", "", "true")
    );
    let q = l.quiescer(&text);
    let f = q.freeze().unwrap();
    assert_eq!(f.frozen_apps(), ["a", "c"]);
    assert_eq!(f.consistency(), Consistency::CrashConsistent);
    assert!(f.why().contains("b (on_error = continue) freeze failed"));
    let o = f.thaw();
    assert_eq!(
        l.lines(),
        ["freeze a", "freeze b", "thaw b", "freeze c", "thaw c", "thaw a"]
    );
    assert_eq!(o.consistency, Consistency::CrashConsistent);
}

#[test]
fn quiesce_thaw_on_every_error_path() {
    // identify fails (missing program), prepare fails, freeze times out.
    let l = Log::new();
    let log = l.path().display().to_string();
    let text = format!(
        "{}[[app]]\nname = \"gone\"\nplugin = \"exec\"\nfreeze = [\"/nonexistent/bin\"]\nthaw = [\"/bin/true\"]\n",
        l.app("a", "", "true")
    );
    let q = l.quiescer(&text);
    let e = q.freeze().err().unwrap();
    assert!(
        matches!(
            &e,
            QuiesceError::Failed {
                phase: Phase::Identify,
                ..
            }
        ),
        "{e}"
    );
    assert!(l.lines().is_empty()); // nothing was frozen: identify and prepare come first

    let text = format!(
        "{}[[app]]\nname = \"p\"\nplugin = \"exec\"\nprepare = \"exit 4\"\nfreeze = \"true\"\nthaw = \"echo thaw p >> {log}\"\n",
        l.app("a", "", "true")
    );
    q.reload(parse(&text).unwrap()).unwrap();
    let e = q.freeze().err().unwrap();
    assert!(
        matches!(
            &e,
            QuiesceError::Failed {
                phase: Phase::Prepare,
                ..
            }
        ),
        "{e}"
    );
    assert!(l.lines().is_empty());

    let text = format!(
        "{}{}",
        l.app("a", "", "true"),
        l.app("slow", "timeout = { freeze = \"300ms\" }", "sleep 30")
    );
    q.reload(parse(&text).unwrap()).unwrap();
    let t = std::time::Instant::now();
    let e = q.freeze().err().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(
        l.lines(),
        ["freeze a", "freeze slow", "thaw slow", "thaw a"]
    );
    assert!(!l.marker().exists());

    // Dropping a Frozen thaws.
    std::fs::remove_file(l.path()).unwrap();
    let text = l.app("a", "", "true");
    q.reload(parse(&text).unwrap()).unwrap();
    {
        let f = q.freeze().unwrap();
        assert!(q.reload(parse(&text).unwrap()).is_err());
        assert!(matches!(q.freeze(), Err(QuiesceError::Busy(_))));
        drop(f);
    }
    assert_eq!(l.lines(), ["freeze a", "thaw a"]);
    assert!(!l.marker().exists());
}

#[test]
fn quiesce_failing_thaw_is_retried_and_kept_in_marker() {
    let l = Log::new();
    let log = l.path().display().to_string();
    let flag = l.dir.path().join("thaw-ok");
    // The thaw fails until the flag file exists.
    let text = format!(
        "[watchdog]\nthaw_attempts = 2\n[[app]]\nname = \"a\"\nplugin = \"exec\"\nfreeze = \"true\"\nthaw = \"echo thaw >> {log}; test -e {}\"\n",
        flag.display()
    );
    let q = l.quiescer(&text);
    let o = q.freeze().unwrap().thaw();
    assert_eq!(l.lines(), ["thaw", "thaw"]);
    assert!(o.why.contains("a thaw failed"), "{}", o.why);
    assert_eq!(q.apps()[0].state, AppState::Failed);
    assert!(l.marker().exists());
    std::fs::write(&flag, "").unwrap();
    q.thaw_all_force();
    assert_eq!(q.apps()[0].state, AppState::Thawed);
    assert!(!l.marker().exists());
    q.thaw_all_force(); // idempotent: nothing held, nothing run
    assert_eq!(l.lines().len(), 3);
}

#[test]
fn quiesce_watchdog_force_thaws_after_cap() {
    let l = Log::new();
    let text = format!("[watchdog]\nfreeze = \"300ms\"\n{}", l.app("a", "", "true"));
    let q = l.quiescer(&text);
    let f = q.freeze().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(l.lines(), ["freeze a", "thaw a"]);
    let st = &q.apps()[0];
    assert_eq!(st.state, AppState::Thawed);
    assert!(
        st.watchdog.as_deref().unwrap_or("").contains("watchdog"),
        "{st:?}"
    );
    assert!(!l.marker().exists());
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::CrashConsistent);
    assert!(o.why.contains("watchdog"));
    assert_eq!(l.lines().len(), 2);

    // By hand too.
    q.freeze_app("a").unwrap();
    assert_eq!(q.apps()[0].state, AppState::Frozen);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(q.apps()[0].state, AppState::Thawed);
    assert_eq!(l.lines().len(), 4);
}

#[test]
fn quiesce_by_hand() {
    let l = Log::new();
    let text = format!("{}{}", l.app("a", "", "true"), l.app("b", "", "true"));
    let q = l.quiescer(&text);
    q.freeze_app("b").unwrap();
    assert!(matches!(q.freeze(), Err(QuiesceError::Busy(_))));
    assert!(matches!(q.freeze_app("x"), Err(QuiesceError::NoSuchApp(_))));
    assert_eq!(q.app("b").unwrap().state, AppState::Frozen);
    assert!(l.marker().exists());
    q.thaw_app("b").unwrap();
    q.thaw_app("b").unwrap();
    assert_eq!(l.lines(), ["freeze b", "thaw b"]);
    assert!(!l.marker().exists());
}

#[test]
fn quiesce_marker_recovery_thaws_first() {
    let l = Log::new();
    let text = l.app("a", "", "true");
    {
        let q = l.quiescer(&text);
        let f = q.freeze().unwrap();
        // The daemon "dies": neither the Frozen nor the quiescer get to thaw.
        std::mem::forget(f);
        std::mem::forget(q);
    }
    assert!(l.marker().exists());
    assert_eq!(l.lines(), ["freeze a"]);
    let q = l.quiescer(&text);
    assert_eq!(l.lines(), ["freeze a", "thaw a"]);
    assert!(!l.marker().exists());
    assert!(q.apps()[0].result.contains("previous daemon"));

    // The CLI's path: thaw_marker.
    let q2 = l.quiescer(&text);
    let f = q2.freeze().unwrap();
    std::mem::forget(f);
    let r = thaw_marker(&l.marker()).unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].1.is_ok());
    assert!(!l.marker().exists());
    assert_eq!(l.lines().last().unwrap(), "thaw a");
    assert!(thaw_marker(&l.marker()).unwrap().is_empty());
}

#[test]
fn quiesce_crash_profile_runs_nothing() {
    let l = Log::new();
    let text = format!("require = \"crash\"\n{}", l.app("a", "", "true"));
    let q = l.quiescer(&text);
    let f = q.freeze().unwrap();
    assert_eq!(f.consistency(), Consistency::FsConsistent);
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::FsConsistent);
    assert!(l.lines().is_empty());
}

#[test]
fn quiesce_handshake_state_machine() {
    let l = Log::new();
    let text = "[[app]]\nname = \"hs\"\nplugin = \"handshake\"\ntimeout = { freeze = \"5s\", thaw = \"5s\" }\n";
    let q = Arc::new(l.quiescer(text));
    assert_eq!(q.app("hs").unwrap().request, Some(""));
    assert!(q.ack("hs", None).is_err()); // nothing asked
    let hs = q.handshake("hs").unwrap();
    let q2 = q.clone();
    let app = std::thread::spawn(move || {
        assert_eq!(hs.wait_request(Duration::from_secs(5)), "freeze");
        assert!(q2.ack("hs", Some("thaw")).is_err()); // wrong word
        q2.ack("hs", Some("freeze")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(hs.wait_request(Duration::from_secs(5)), "thaw");
        q2.ack("hs", Some("thawed")).unwrap();
    });
    let f = q.freeze().unwrap();
    assert_eq!(f.consistency(), Consistency::AppConsistent);
    assert_eq!(q.app("hs").unwrap().state, AppState::Frozen);
    let o = f.thaw();
    app.join().unwrap();
    assert_eq!(o.consistency, Consistency::AppConsistent);
    assert_eq!(q.app("hs").unwrap().state, AppState::Thawed);

    // An application that never answers: the freeze fails within its timeout.
    let text = "[[app]]\nname = \"hs\"\nplugin = \"handshake\"\ntimeout = { freeze = \"200ms\", thaw = \"200ms\" }\n";
    q.reload(parse(text).unwrap()).unwrap();
    let e = q.freeze().err().unwrap();
    assert!(e.to_string().contains("not acknowledged"), "{e}");
    assert_eq!(q.app("hs").unwrap().request, Some("thaw"));
}

#[test]
fn quiesce_status_files() {
    let l = Log::new();
    let q = l.quiescer(&l.app("a", "", "true"));
    let s = q.app("a").unwrap();
    assert_eq!(app_file(&s, "state").unwrap(), "thawed\n");
    assert!(app_file(&s, "request").is_none());
    assert!(app_file(&s, "nope").is_none());
    q.freeze().unwrap().thaw();
    let s = q.app("a").unwrap();
    let st = app_file(&s, "status").unwrap();
    assert!(
        st.starts_with("name: a\nplugin: exec\nstate: thawed\nresult: ok\n"),
        "{st}"
    );
    assert!(
        st.contains("\nfreeze_ms: ") && st.contains("\nthaw_ms: "),
        "{st}"
    );
    let v: Value = serde_json::from_str(&app_file(&s, "status.json").unwrap()).unwrap();
    assert_eq!(v["state"], "thawed");
    for f in AppStatus::FILES.iter().filter(|f| **f != "request") {
        assert!(app_file(&s, f).unwrap().ends_with('\n'));
    }
}

#[test]
fn quiesce_early_thaws_downgrade_and_drop_thaws() {
    let l = Log::new();
    let text = format!("{}{}", l.app("a", "", "true"), l.app("b", "", "true"));
    let q = l.quiescer(&text);
    let f = q.freeze().unwrap();
    q.thaw_app("b").unwrap();
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::CrashConsistent);
    assert!(o.why.contains("b was thawed by hand"), "{}", o.why);
    let f = q.freeze().unwrap();
    q.thaw_all_force();
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::CrashConsistent);
    assert!(o.why.contains("by a forced thaw"), "{}", o.why);
    let o = q.freeze().unwrap().thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent, "{}", o.why);
    // Dropping the quiescer (unmount) thaws what was frozen by hand.
    q.freeze_app("a").unwrap();
    let n = l.lines().len();
    drop(q);
    assert_eq!(l.lines().len(), n + 1);
    assert_eq!(l.lines().last().unwrap(), "thaw a");
    assert!(!l.marker().exists());
}
