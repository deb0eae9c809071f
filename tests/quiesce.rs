//! Quiescing with real programs: exec hooks (failing, hanging, exiting
//! early, hook directories), a cgroup v2 freeze of a process tree, SIGSTOP of
//! a tree, SQLite with a concurrent writer, a throwaway PostgreSQL cluster,
//! and the CLI (dry run, a daemon killed while frozen, thaw --force).
//!
//! Every process a test starts is ended by a Drop guard, also on panic.
//!
//! Over 700 lines: one test per plug-in or failure with the real program it
//! quiesces; each is self-contained.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bkfs::quiesce::{AppState, Consistency, Phase, Profile, QuiesceError, Quiescer};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A directory everyone can enter (plug-ins run as other users).
fn tmp() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn quiescer(dir: &Path, text: &str) -> Quiescer {
    let p = Profile::parse(text, &dir.join("profile.toml")).unwrap_or_else(|e| panic!("{e}"));
    Quiescer::new(p, dir.join("frozen.json"))
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// A child in its own process group, killed with the group on drop.
struct Proc(Child);

impl Proc {
    fn sh(script: &str) -> Proc {
        Proc(
            Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pg = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

fn alive(pid: i32) -> bool {
    !matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn exec_runs_as_user_and_honours_exit_codes_and_timeouts() {
    let d = tmp();
    let out = d.path().join("out");
    let shared = d.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let user = if is_root() { "user = \"nobody\"\n" } else { "" };
    let text = format!(
        "[[app]]\nname = \"who\"\nplugin = \"exec\"\n{user}freeze = \"id -u > {s}/uid; id -G > {s}/groups\"\nthaw = [\"/bin/true\"]\n",
        s = shared.display()
    );
    let q = quiescer(d.path(), &text);
    let o = q.freeze().unwrap().thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent);
    if is_root() {
        assert_eq!(lines(&shared.join("uid")), ["65534"]);
        assert!(
            !lines(&shared.join("groups"))[0]
                .split(' ')
                .any(|g| g == "0"),
            "root group kept"
        );
    }

    // A hook that hangs past its timeout: failed, and its whole process group killed.
    let pidfile = d.path().join("bg.pid");
    let text = format!(
        "[[app]]\nname = \"hang\"\nplugin = \"exec\"\nfreeze = \"sleep 60 & echo $! > {}; sleep 60\"\nthaw = \"echo thawed >> {}\"\ntimeout = {{ freeze = \"500ms\" }}\n",
        pidfile.display(),
        out.display()
    );
    q.reload(Profile::parse(&text, Path::new("p")).unwrap())
        .unwrap();
    let t = Instant::now();
    let e = q.freeze().err().expect("a hung freeze fails");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        matches!(&e, QuiesceError::Failed { phase: Phase::Freeze, reason, .. } if reason.to_string().contains("timed out")),
        "{e}"
    );
    let bg: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the background sleep to die",
        Duration::from_secs(5),
        || !alive(bg),
    );
    assert_eq!(lines(&out), ["thawed"]); // thaw ran after the failed freeze
    assert_eq!(q.apps()[0].state, AppState::Failed);
    assert!(!d.path().join("frozen.json").exists());

    // A hook that exits early, leaving a child holding its output: not waited for.
    let text = format!(
        "[[app]]\nname = \"early\"\nplugin = \"exec\"\nfreeze = \"sleep 3 & echo frozen\"\nthaw = \"echo thawed >> {}\"\n",
        out.display()
    );
    q.reload(Profile::parse(&text, Path::new("p")).unwrap())
        .unwrap();
    let t = Instant::now();
    let f = q.freeze().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent);
    assert_eq!(o.apps[0]["positions"]["commands"][0]["output"], "frozen");

    // Exit codes: 0 is success, anything else a failure with its output.
    let text = "[[app]]\nname = \"code\"\nplugin = \"exec\"\nfreeze = \"echo disk busy; exit 75\"\nthaw = \"true\"\n";
    q.reload(Profile::parse(text, Path::new("p")).unwrap())
        .unwrap();
    let e = q.freeze().err().unwrap().to_string();
    assert!(e.contains("exit 75") && e.contains("disk busy"), "{e}");
}

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn exec_hook_directories_qemu_and_vmware() {
    for style in ["fsfreeze_hook_dir", "vmware_scripts_dir"] {
        let d = tmp();
        let hooks = d.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        let log = d.path().join("log");
        let l = log.display();
        script(&hooks, "10-a", &format!("echo \"a $1\" >> {l}"));
        script(
            &hooks,
            "20-b",
            &format!("echo \"b $1\" >> {l}; test \"$1\" != freeze || test ! -e {l}.fail"),
        );
        script(&hooks, "30-c", &format!("echo \"c $1\" >> {l}"));
        script(&hooks, "20-b.dpkg-old", &format!("echo old >> {l}"));
        std::fs::write(hooks.join("15-not-executable"), format!("echo nx >> {l}")).unwrap();
        let text = format!(
            "[[app]]\nname = \"hooks\"\nplugin = \"exec\"\n{style} = \"{}\"\n",
            hooks.display()
        );
        let q = quiescer(d.path(), &text);
        let o = q.freeze().unwrap().thaw();
        assert_eq!(o.consistency, Consistency::AppConsistent, "{style}");
        assert_eq!(
            lines(&log),
            ["a freeze", "b freeze", "c freeze", "c thaw", "b thaw", "a thaw"],
            "{style}"
        );

        std::fs::remove_file(&log).unwrap();
        std::fs::write(format!("{l}.fail"), "").unwrap();
        let e = q.freeze().err().unwrap().to_string();
        assert!(e.contains("20-b freeze"), "{e}");
        let undo = if style == "vmware_scripts_dir" {
            "a freezeFail"
        } else {
            "a thaw"
        };
        assert_eq!(lines(&log), ["a freeze", "b freeze", undo], "{style}");
        assert!(!d.path().join("frozen.json").exists());
    }
}

/// A cgroup made for a test; thawed, killed and removed on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..200 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn cgroup2_root() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
    })
}

#[test]
fn cgroup_freezes_a_real_process_tree() {
    let made = cgroup2_root().and_then(|root| {
        let cg = root.join(format!("bkfs-test-{}", std::process::id()));
        std::fs::create_dir(&cg).ok()?;
        let g = TestCgroup(cg);
        g.0.join("cgroup.freeze").exists().then_some(g)
    });
    let Some(cg) = made else {
        assert!(
            !ci(),
            "cgroup v2 is not writable here, and CI=true requires it"
        );
        eprintln!("skipped: cgroup v2 is not writable");
        return;
    };
    let d = tmp();
    let out = d.path().join("ticks");
    // A parent and a child both writing.
    let p = Proc::sh(&format!(
        "echo $$ > {cg}/cgroup.procs; (while :; do echo c >> {o}; sleep 0.01; done) & while :; do echo p >> {o}; sleep 0.01; done",
        cg = cg.0.display(),
        o = out.display()
    ));
    wait_for("ticks", Duration::from_secs(5), || file_len(&out) > 20);
    let text = format!(
        "[[app]]\nname = \"tree\"\nplugin = \"cgroup\"\npath = \"{}\"\ntimeout = {{ freeze = \"5s\" }}\n",
        cg.0.display()
    );
    let q = quiescer(d.path(), &text);
    let f = q.freeze().unwrap();
    let events = std::fs::read_to_string(cg.0.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    let n = file_len(&out);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(file_len(&out), n, "the tree wrote while frozen");
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent);
    wait_for("ticks after the thaw", Duration::from_secs(5), || {
        file_len(&out) > n
    });
    drop(p);

    // bkfs's own cgroup (or an ancestor) is refused.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string();
    let text = format!("[[app]]\nname = \"own\"\nplugin = \"cgroup\"\npath = \"{own}\"\n");
    let q = quiescer(d.path(), &text);
    let e = q.freeze().err().unwrap().to_string();
    assert!(e.contains("own cgroup"), "{e}");
}

#[test]
fn signal_stops_and_continues_a_process_tree() {
    let d = tmp();
    // The ticks go to memory: a process waiting on a busy disk (state D)
    // takes SIGSTOP only when the I/O ends, which is not what is tested.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let out = shm.path().join("ticks");
    let p = Proc::sh(&format!(
        "(while :; do echo c >> {o}; sleep 0.01; done) & (while :; do echo d >> {o}; sleep 0.01; done) & wait",
        o = out.display()
    ));
    wait_for("ticks", Duration::from_secs(5), || file_len(&out) > 20);
    let pidfile = d.path().join("app.pid");
    std::fs::write(&pidfile, format!("{}\n", p.pid())).unwrap();
    let text = format!(
        "[[app]]\nname = \"tree\"\nplugin = \"signal\"\npidfile = \"{}\"\n",
        pidfile.display()
    );
    let q = quiescer(d.path(), &text);
    let f = q.freeze().unwrap();
    assert_eq!(proc_state(p.pid()), Some('T'));
    let n = file_len(&out);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(file_len(&out), n, "the tree wrote while stopped");
    let st = q.apps();
    assert!(
        st[0].positions["processes"].as_u64().unwrap() >= 3,
        "{:?}",
        st[0].positions
    );
    f.thaw();
    wait_for("ticks after the thaw", Duration::from_secs(5), || {
        file_len(&out) > n
    });
    assert_ne!(proc_state(p.pid()), Some('T'));

    // Refused: bkfs itself.
    let text = format!(
        "[[app]]\nname = \"me\"\nplugin = \"signal\"\npid = {}\n",
        std::process::id()
    );
    let q = quiescer(d.path(), &text);
    assert!(q.freeze().err().unwrap().to_string().contains("refused"));
}

fn sqlite(db: &Path, sql: &str) -> String {
    let o = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn sqlite_checkpoint_and_held_lock_with_a_concurrent_writer() {
    let d = tmp();
    let db = d.path().join("app.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x INTEGER, pad TEXT);",
    );
    let count = || {
        sqlite(&db, "SELECT count(*) FROM t;")
            .parse::<u64>()
            .unwrap()
    };
    let _writer = Proc::sh(&format!(
        "while :; do echo \"INSERT INTO t VALUES(1, hex(randomblob(100)));\"; sleep 0.005; done | sqlite3 -cmd '.timeout 30000' {}",
        db.display()
    ));
    wait_for("rows", Duration::from_secs(10), || count() > 20);
    let text = format!(
        "[[app]]\nname = \"db\"\nplugin = \"sqlite\"\ndatabase = \"{}\"\nhold = true\n",
        db.display()
    );
    let q = quiescer(d.path(), &text);
    let f = q.freeze().unwrap();
    let wal = d.path().join("app.db-wal");
    let n = count();
    let wal_len = file_len(&wal);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(count(), n, "a write went through the held BEGIN IMMEDIATE");
    // The WAL was truncated at the freeze; at most the writes between the
    // checkpoint and the lock are in it, and nothing since.
    assert_eq!(file_len(&wal), wal_len);
    assert!(wal_len < 200_000, "WAL not checkpointed: {wal_len}");
    // What a snapshot would hold: the file and its WAL.
    let copy = d.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    if wal_len > 0 {
        std::fs::copy(&wal, d.path().join("copy.db-wal")).unwrap();
    }
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent);
    assert_eq!(o.apps[0]["positions"]["wal_checkpoint"]["busy"], 0);
    wait_for("rows after the thaw", Duration::from_secs(10), || {
        count() > n
    });
    assert_eq!(sqlite(&copy, "PRAGMA integrity_check;"), "ok");
    assert_eq!(sqlite(&copy, "SELECT count(*) FROM t;"), n.to_string());
    assert_eq!(sqlite(&db, "PRAGMA integrity_check;"), "ok");
}

/// A throwaway PostgreSQL cluster, stopped on drop.
struct Pg {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    let u = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw())
}

fn postgres_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .max()
}

/// A directory owned by postgres.
fn pg_dir() -> tempfile::TempDir {
    let dir = tmp();
    let u = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid)).unwrap();
    dir
}

impl Pg {
    fn start() -> Option<Pg> {
        let bin = postgres_bin()?;
        if !is_root() || nix::unistd::User::from_name("postgres").ok()?.is_none() {
            return None;
        }
        let dir = pg_dir();
        let data = dir.path().join("data");
        let st = as_postgres(
            Command::new(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        )
        .stdout(Stdio::null())
        .status()
        .unwrap();
        assert!(st.success(), "initdb failed");
        Some(Pg::launch(bin, dir, data))
    }

    /// Starts the cluster in `data` with its socket in `dir`, on a port of its own.
    fn launch(bin: PathBuf, dir: tempfile::TempDir, data: PathBuf) -> Pg {
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let port = 20000
            + (std::process::id() % 5000) as u16 * 4
            + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 4;
        let pg = Pg {
            bin,
            data,
            sock: dir.path().to_path_buf(),
            port,
            _dir: dir,
        };
        let st = as_postgres(
            Command::new(pg.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&pg.data)
                .arg("-l")
                .arg(pg.sock.join("log"))
                .args([
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &format!(
                        "-p {} -k {} -c listen_addresses='' -c fsync=off",
                        pg.port,
                        pg.sock.display()
                    ),
                    "start",
                ]),
        )
        .stdout(Stdio::null())
        .status()
        .unwrap();
        assert!(
            st.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(pg.sock.join("log")).unwrap_or_default()
        );
        pg
    }

    fn connect(&self) -> String {
        format!(
            "host={} port={} dbname=postgres user=postgres",
            self.sock.display(),
            self.port
        )
    }

    fn psql(&self, sql: &str) -> String {
        let o = as_postgres(Command::new(self.bin.join("psql")).args([
            "-X",
            "-A",
            "-t",
            "-d",
            &self.connect(),
            "-c",
            sql,
        ]))
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"]),
        )
        .stdout(Stdio::null())
        .status();
    }
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[test]
fn postgresql_checkpoint_and_backup_api() {
    let Some(pg) = Pg::start() else {
        assert!(
            !ci(),
            "PostgreSQL (initdb) is missing, and CI=true requires it"
        );
        eprintln!("skipped: no PostgreSQL server binaries, or not root");
        return;
    };
    pg.psql("CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 1000);");
    let d = tmp();
    let psql = pg.bin.join("psql");
    for mode in ["checkpoint", "backup_api"] {
        let text = format!(
            "[[app]]\nname = \"db\"\nplugin = \"postgresql\"\nuser = \"postgres\"\nmode = \"{mode}\"\nconnect = \"{}\"\npsql = \"{}\"\n",
            pg.connect(),
            psql.display()
        );
        let q = quiescer(d.path(), &text);
        let before = lsn(&pg.psql("SELECT pg_current_wal_lsn();"));
        let f = q.freeze().unwrap_or_else(|e| panic!("{mode}: {e}"));
        if mode == "backup_api" {
            let n = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = 'bkfs';");
            assert_eq!(n, "1", "the backup session is held");
        }
        pg.psql("INSERT INTO t VALUES (1);");
        let o = f.thaw();
        assert_eq!(
            o.consistency,
            Consistency::AppConsistent,
            "{mode}: {}",
            o.why
        );
        let pos = &o.apps[0]["positions"];
        let at = lsn(pos["lsn"].as_str().unwrap());
        assert!(at >= before, "{mode}: {pos}");
        assert!(pos["server_version_num"].as_i64().unwrap() >= 90600);
        if mode == "backup_api" {
            let label = pos["backup_label"].as_str().unwrap();
            assert!(
                label.contains("START WAL LOCATION") && label.contains("LABEL: bkfs"),
                "{label}"
            );
            let start = lsn(pos["start_lsn"].as_str().unwrap());
            let stop = lsn(pos["stop_lsn"].as_str().unwrap());
            assert!(before <= start && start <= stop, "{pos}");
        }
        let st = q.apps();
        assert!(st[0].timings_ms["prepare"] > 0.0);
        assert_eq!(st[0].state, AppState::Thawed);
    }
    // A backup left unfinished by a failure is aborted with its session.
    let text = format!(
        "require = \"app\"\n[[app]]\nname = \"db\"\nplugin = \"postgresql\"\nuser = \"postgres\"\nmode = \"backup_api\"\nconnect = \"{}\"\npsql = \"{}\"\n[[app]]\nname = \"bad\"\nplugin = \"exec\"\nfreeze = \"exit 1\"\nthaw = \"true\"\n",
        pg.connect(),
        psql.display()
    );
    let q = quiescer(d.path(), &text);
    assert!(q.freeze().is_err());
    wait_for("the backup session to end", Duration::from_secs(5), || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bkfs';") == "0"
    });
    // A wrong connection fails at identify, naming the reason.
    let text = format!(
        "[[app]]\nname = \"db\"\nplugin = \"postgresql\"\nuser = \"postgres\"\nconnect = \"host={} port=1 dbname=postgres\"\npsql = \"{}\"\ntimeout = \"5s\"\n",
        pg.sock.display(),
        psql.display()
    );
    let q = quiescer(d.path(), &text);
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
}

fn bkfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bkfs"))
}

#[test]
fn cli_dry_run_and_thaw_force_after_a_killed_daemon() {
    let d = tmp();
    let log = d.path().join("log");
    let l = log.display();
    let profile = d.path().join("profile.toml");
    let marker = d.path().join("frozen.json");
    std::fs::write(
        &profile,
        format!("[[app]]\nname = \"a\"\nplugin = \"exec\"\nfreeze = \"echo freeze a >> {l}\"\nthaw = \"echo thaw a >> {l}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o644)).unwrap();
    if !is_root() {
        eprintln!("skipped: profiles must be owned by root");
        return;
    }
    let o = bkfs()
        .arg("quiesce")
        .arg("--profile")
        .arg(&profile)
        .arg("--dry-run")
        .arg("--marker")
        .arg(&marker)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("freeze ")
            && out.contains(" ms")
            && out.contains("consistency: app_consistent"),
        "{out}"
    );
    assert_eq!(lines(&log), ["freeze a", "thaw a"]);

    // A failing app: non-zero exit.
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[app]]\nname = \"b\"\nplugin = \"exec\"\nfreeze = \"exit 2\"\nthaw = \"true\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = bkfs()
        .arg("quiesce")
        .arg("--profile")
        .arg(&bad)
        .arg("--dry-run")
        .arg("--marker")
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    // A group-writable profile: refused.
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o664)).unwrap();
    let o = bkfs()
        .arg("quiesce")
        .arg("--profile")
        .arg(&bad)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused"));

    // The daemon dies while a and a stopped process tree are frozen.
    std::fs::remove_file(&log).unwrap();
    let tree = Proc::sh("sleep 600 & wait");
    std::fs::write(
        &profile,
        format!(
            "[[app]]\nname = \"a\"\nplugin = \"exec\"\nfreeze = \"echo freeze a >> {l}\"\nthaw = \"echo thaw a >> {l}\"\n\
             [[app]]\nname = \"tree\"\nplugin = \"signal\"\npid = {}\n\
             [[app]]\nname = \"killer\"\nplugin = \"exec\"\nfreeze = \"kill -9 $PPID; sleep 1\"\nthaw = \"echo thaw killer >> {l}\"\n",
            tree.pid()
        ),
    )
    .unwrap();
    let o = bkfs()
        .arg("quiesce")
        .arg("--profile")
        .arg(&profile)
        .arg("--dry-run")
        .arg("--marker")
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None, "bkfs was to be killed");
    assert!(marker.exists());
    assert_eq!(proc_state(tree.pid()), Some('T'));
    assert_eq!(lines(&log), ["freeze a"]);
    let o = bkfs()
        .args(["thaw", "--force", "--marker"])
        .arg(&marker)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("a: thawed") && out.contains("tree: thawed"),
        "{out}"
    );
    assert_eq!(lines(&log), ["freeze a", "thaw killer", "thaw a"]);
    wait_for("the tree to run again", Duration::from_secs(5), || {
        proc_state(tree.pid()) != Some('T')
    });
    assert!(!marker.exists());
    // Always safe: again, with nothing frozen.
    let o = bkfs()
        .args(["thaw", "--force", "--marker"])
        .arg(&marker)
        .output()
        .unwrap();
    assert!(o.status.success());
}

#[test]
fn hypervisor_hooks_write_the_control_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount");
    let d = tmp();
    let b = d.path().join("b");
    std::fs::create_dir_all(b.join(".control")).unwrap();
    let run = |script: &str, arg: &str, mounts: &str| {
        Command::new("/bin/sh")
            .arg(root.join(script))
            .arg(arg)
            .env("BKFS_MOUNTS", mounts)
            .output()
            .unwrap()
            .status
            .success()
    };
    let read =
        |m: &Path, f: &str| std::fs::read_to_string(m.join(".control").join(f)).unwrap_or_default();
    for script in ["fsfreeze-hook.d/bkfs", "backupScripts.d/bkfs"] {
        let _ = std::fs::remove_file(b.join(".control/freeze"));
        let _ = std::fs::remove_file(b.join(".control/thaw"));
        assert!(run(script, "freeze", &b.display().to_string()));
        assert_eq!(read(&b, "freeze"), "freeze\n");
        assert!(run(script, "thaw", &b.display().to_string()));
        assert_eq!(read(&b, "thaw"), "thaw\n");
        // A mount that cannot be frozen: failure, and the others released.
        std::fs::remove_file(b.join(".control/thaw")).unwrap();
        let missing = d.path().join("gone");
        assert!(!run(
            script,
            "freeze",
            &format!("{} {}", b.display(), missing.display())
        ));
        assert_eq!(read(&b, "thaw"), "thaw\n", "{script}");
        assert!(!run(script, "bogus", ""));
    }
    std::fs::remove_file(b.join(".control/thaw")).unwrap();
    assert!(run(
        "backupScripts.d/bkfs",
        "freezeFail",
        &b.display().to_string()
    ));
    assert_eq!(read(&b, "thaw"), "thaw\n");
}

/// A throwaway MariaDB server, killed on drop.
struct Maria {
    sock: PathBuf,
    _server: Proc,
    _dir: tempfile::TempDir,
}

impl Maria {
    fn start() -> Option<Maria> {
        let install = ["mariadb-install-db", "mysql_install_db"]
            .into_iter()
            .find(|p| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {p}"))
                    .output()
                    .is_ok_and(|o| o.status.success())
            })?;
        if !is_root() || nix::unistd::User::from_name("mysql").ok()?.is_none() {
            return None;
        }
        let dir = tmp();
        let u = nix::unistd::User::from_name("mysql").unwrap().unwrap();
        nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid)).unwrap();
        let data = dir.path().join("data");
        let o = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sock = dir.path().join("sock");
        let server = Proc(
            Command::new("mariadbd")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", sock.display()))
                .arg(format!("--log-bin={}", data.join("binlog").display()))
                .arg(format!(
                    "--log-error={}",
                    dir.path().join("err.log").display()
                ))
                .args(["--skip-networking", "--user=mysql", "--server-id=1"])
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let m = Maria {
            sock,
            _server: server,
            _dir: dir,
        };
        wait_for("mariadbd", Duration::from_secs(30), || {
            m.client()
                .arg("-e")
                .arg("SELECT 1")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        Some(m)
    }

    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg(format!("--socket={}", self.sock.display()))
            .args(["--batch", "--skip-column-names"]);
        c
    }

    fn sql(&self, sql: &str) -> String {
        let o = self.client().arg("-e").arg(sql).output().unwrap();
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

#[test]
fn mariadb_backup_stages_block_commits_and_record_positions() {
    let Some(m) = Maria::start() else {
        assert!(!ci(), "MariaDB is missing, and CI=true requires it");
        eprintln!("skipped: no MariaDB server, or not root");
        return;
    };
    m.sql("CREATE DATABASE app; CREATE TABLE app.t (x INT) ENGINE=InnoDB; INSERT INTO app.t VALUES (1);");
    let d = tmp();
    let text = format!(
        "[[app]]\nname = \"db\"\nplugin = \"mariadb\"\nclient = \"mariadb\"\nsocket = \"{}\"\n",
        m.sock.display()
    );
    let q = quiescer(d.path(), &text);
    let f = q.freeze().unwrap_or_else(|e| panic!("{e}"));
    // A commit waits while the lock is held; reads go on.
    let sock = m.sock.display().to_string();
    let writer = Proc::sh(&format!(
        "mariadb --socket={sock} -e 'INSERT INTO app.t VALUES (2)'"
    ));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        m.sql("SELECT count(*) FROM app.t"),
        "1",
        "a commit went through BLOCK_COMMIT"
    );
    let o = f.thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent, "{}", o.why);
    let pos = &o.apps[0]["positions"];
    assert_eq!(pos["lock"], "BackupStage", "{pos}");
    assert!(
        pos["binlog_file"].as_str().unwrap().starts_with("binlog."),
        "{pos}"
    );
    assert!(pos["binlog_position"].as_u64().unwrap() > 0, "{pos}");
    assert!(pos["gtid"].as_str().unwrap().starts_with("0-1-"), "{pos}");
    wait_for("the insert after the thaw", Duration::from_secs(10), || {
        m.sql("SELECT count(*) FROM app.t") == "2"
    });
    drop(writer);
    // The lock is gone with the session.
    assert_eq!(
        m.sql("SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'BACKUP%'"),
        "0"
    );
}

#[test]
fn redis_bgsave_waits_for_lastsave() {
    let have = Command::new("sh")
        .arg("-c")
        .arg("command -v redis-server && command -v redis-cli")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(!ci(), "Redis is missing, and CI=true requires it");
        eprintln!("skipped: no redis-server");
        return;
    }
    let d = tmp();
    let sock = d.path().join("redis.sock");
    let _server = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&sock)
            .arg("--dir")
            .arg(d.path())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let cli = |args: &[&str]| {
        let o = Command::new("redis-cli")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    wait_for("redis", Duration::from_secs(10), || {
        cli(&["PING"]) == "PONG"
    });
    cli(&["SET", "k", "v"]);
    let before: i64 = cli(&["LASTSAVE"]).parse().unwrap();
    let text = format!(
        "[[app]]\nname = \"cache\"\nplugin = \"redis\"\nsocket = \"{}\"\n",
        sock.display()
    );
    let q = quiescer(d.path(), &text);
    let o = q.freeze().unwrap_or_else(|e| panic!("{e}")).thaw();
    assert_eq!(o.consistency, Consistency::AppConsistent, "{}", o.why);
    let lastsave = o.apps[0]["positions"]["lastsave"].as_i64().unwrap();
    assert!(lastsave > before, "{lastsave} <= {before}");
    assert!(d.path().join("dump.rdb").exists());
    // Not there: fails at identify.
    let text = "[[app]]\nname = \"cache\"\nplugin = \"redis\"\nsocket = \"/nonexistent.sock\"\ntimeout = \"2s\"\n";
    let q = quiescer(d.path(), text);
    assert!(matches!(
        q.freeze(),
        Err(QuiesceError::Failed {
            phase: Phase::Identify,
            ..
        })
    ));
}

/// docs/PLUGINS.md's procedure for the backup_label: a copy of the data
/// directory made while bkfs holds the backup (here a plain `cp -a` under a
/// concurrent writer, not atomic), plus the backup_label bkfs recorded, plus
/// the WAL up to stop_lsn, starts and passes pg_amcheck.
#[test]
fn postgresql_backup_label_restores_a_copy() {
    let Some(pg) = Pg::start() else {
        assert!(
            !ci(),
            "PostgreSQL (initdb) is missing, and CI=true requires it"
        );
        eprintln!("skipped: no PostgreSQL server binaries, or not root");
        return;
    };
    pg.psql("CREATE TABLE t(x int primary key, pad text); INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;");
    let writer = Proc::sh(&format!(
        "i=100000; while :; do i=$((i+1)); {} -X -q -d '{}' -c \"INSERT INTO t VALUES ($i, 'w'); UPDATE t SET pad = 'u' WHERE x = $i - 99990\" >/dev/null 2>&1; done",
        pg.bin.join("psql").display(),
        pg.connect()
    ));
    wait_for("the writer", Duration::from_secs(10), || {
        pg.psql("SELECT count(*) FROM t WHERE x > 100000")
            .parse::<u32>()
            .unwrap()
            > 5
    });
    let d = tmp();
    let text = format!(
        "[[app]]\nname = \"db\"\nplugin = \"postgresql\"\nuser = \"postgres\"\nmode = \"backup_api\"\nconnect = \"{}\"\npsql = \"{}\"\n",
        pg.connect(),
        pg.bin.join("psql").display()
    );
    let q = quiescer(d.path(), &text);
    let f = q.freeze().unwrap_or_else(|e| panic!("{e}"));
    let copy_dir = pg_dir();
    let copy = copy_dir.path().join("data");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&pg.data)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let o = f.thaw();
    drop(writer);
    let label = o.apps[0]["positions"]["backup_label"]
        .as_str()
        .unwrap()
        .to_string();
    // The restore: backup_label in, the server's leftovers out, WAL through stop_lsn.
    let u = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    std::fs::write(copy.join("backup_label"), label).unwrap();
    nix::unistd::chown(&copy.join("backup_label"), Some(u.uid), Some(u.gid)).unwrap();
    let _ = std::fs::remove_file(copy.join("postmaster.pid"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/pg_wal/.", pg.data.display()))
        .arg(copy.join("pg_wal"))
        .status()
        .unwrap();
    assert!(st.success());
    let restored = Pg::launch(pg.bin.clone(), copy_dir, copy);
    let n: u32 = restored.psql("SELECT count(*) FROM t").parse().unwrap();
    assert!(n >= 20000, "{n}");
    let o = Command::new(restored.bin.join("pg_amcheck"))
        .args(["--install-missing", "--heapallindexed", "-h"])
        .arg(&restored.sock)
        .args([
            "-p",
            &restored.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
