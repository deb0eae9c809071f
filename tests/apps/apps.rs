//! SQLite, Redis and MariaDB with their data on a bkfs mount, written to
//! while snapshots are taken with their plug-ins; each snapshot's copy is
//! opened by the application and holds whole transactions, up to the
//! snapshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::tree::*;
use crate::util::*;

/// A mount whose profile is `text(&mount)` (written once the mount point is
/// known, then reloaded). The profile lives in `conf`.
fn mount_with_profile(conf: &Path, text: impl FnOnce(&Mount) -> String) -> Mount {
    let prof = profile(
        conf,
        "profile.toml",
        "[[app]]\nname = \"placeholder\"\nplugin = \"exec\"\nfreeze = \"true\"\nthaw = \"true\"\n",
    );
    let m = Mount::new(&format!("profile={}", prof.display()));
    profile(conf, "profile.toml", &text(&m));
    reload(&m.mnt);
    m
}

/// Asserts the latest snapshot is application-consistent with one app of `plugin`.
fn assert_app_consistent(m: &Mount, name: &str, plugin: &str) {
    let s = status(&m.mnt);
    assert_eq!(s["consistency"], "app_consistent", "{name}: {s:?}");
    let apps = app_lines(&m.mnt);
    assert!(
        apps.len() == 1
            && apps[0].contains(&format!("plugin={plugin}"))
            && apps[0].contains("state=thawed"),
        "{name}: {apps:?}"
    );
}

fn sqlite(db: &Path, sql: &str) -> String {
    run(Command::new("sqlite3")
        .args(["-cmd", ".timeout 20000"])
        .arg(db)
        .arg(sql))
    .trim()
    .to_string()
}

/// Transactions of the SQLite writer: batch i inserts 10 rows and bumps
/// the counter, atomically. Returns the counter after checking the rest.
fn sqlite_check(db: &Path, what: &str) -> u64 {
    assert_eq!(sqlite(db, "PRAGMA integrity_check;"), "ok", "{what}");
    let r = sqlite(
        db,
        "SELECT (SELECT n FROM c) || ' ' || (SELECT count(*) FROM t) || ' ' || \
         (SELECT coalesce(max(batch), 0) FROM t) || ' ' || \
         (SELECT count(*) FROM (SELECT batch FROM t GROUP BY batch HAVING count(*) != 10));",
    );
    let v: Vec<u64> = r.split(' ').map(|x| x.parse().unwrap()).collect();
    let (n, rows, max, partial) = (v[0], v[1], v[2], v[3]);
    assert!(
        rows == 10 * n && max == n && partial == 0,
        "{what}: counter {n}, rows {rows}, last batch {max}, partial batches {partial}"
    );
    n
}

#[test]
fn sqlite_with_a_concurrent_writer() {
    if !can_mount() || !have(&["sqlite3"]) {
        return;
    }
    let conf = tmp();
    let m = mount_with_profile(conf.path(), |m| {
        format!(
            "require = \"app\"\n[[app]]\nname = \"db\"\nplugin = \"sqlite\"\ndatabase = \"{}\"\nhold = true\nbusy_timeout_ms = 20000\n",
            m.path("app.db").display()
        )
    });
    let db = m.path("app.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(batch INTEGER, k INTEGER, pad TEXT); \
         CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0);",
    );
    let rows: Vec<String> = (1..=10)
        .map(|k| format!("($i,{k},hex(randomblob(50)))"))
        .collect();
    let _writer = Proc::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "i=0; while :; do i=$((i+1)); echo \"BEGIN IMMEDIATE; INSERT INTO t VALUES {}; UPDATE c SET n = n + 1; COMMIT;\"; sleep 0.003; done | sqlite3 -cmd '.timeout 30000' {}",
                rows.join(","),
                db.display()
            ))
            .stdout(Stdio::null()),
    );
    let live = || sqlite(&db, "SELECT n FROM c;").parse::<u64>().unwrap();
    wait_for("the writer", Duration::from_secs(20), || live() > 20);
    let mut last = 0;
    for i in 1..=5 {
        let name = format!("sqlite-{i}");
        let before = live();
        snapshot_sealed(&m.mnt, &name);
        let after = live();
        assert_app_consistent(&m, &name, "sqlite");
        // The snapshot's files, copied out as a restore would.
        let copy = m.scratch(&name);
        for f in ["app.db", "app.db-wal"] {
            let p = m.path(&format!(".snapshots/{name}/{f}"));
            if p.exists() {
                std::fs::copy(&p, copy.join(f)).unwrap();
            }
        }
        let n = sqlite_check(&copy.join("app.db"), &name);
        assert!(
            before <= n && n <= after && n >= last,
            "{name}: {n} transactions, live {before}..{after}, previous {last}"
        );
        last = n;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(last > 20);
    // The last one through `bkfs restore` too.
    let dest = m.scratch("restored");
    restore(&m.backing(".bkfs"), "sqlite-5", &dest);
    assert_eq!(sqlite_check(&dest.join("app.db"), "restored"), last);
}

fn redis_cli(sock: &Path, args: &[&str]) -> String {
    let o = Command::new("redis-cli")
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn redis_server(dir: &Path, sock: &Path) -> Proc {
    let p = Proc::spawn(
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(sock)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null()),
    );
    wait_for("redis", Duration::from_secs(20), || {
        redis_cli(sock, &["PING"]) == "PONG"
    });
    p
}

#[test]
fn redis_bgsave_on_a_mount() {
    if !can_mount() || !have(&["redis-server", "redis-cli"]) {
        return;
    }
    let conf = tmp();
    let sock = conf.path().join("redis.sock");
    let prof = profile(
        conf.path(),
        "redis.toml",
        &format!(
            "require = \"app\"\n[[app]]\nname = \"cache\"\nplugin = \"redis\"\nsocket = \"{}\"\n",
            sock.display()
        ),
    );
    let m = Mount::new(&format!("profile={}", prof.display()));
    let dir = m.path("redis");
    std::fs::create_dir(&dir).unwrap();
    let _server = redis_server(&dir, &sock);
    // A writer appending 1, 2, 3... to a list, one command at a time.
    let _writer = Proc::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "i=0; while :; do i=$((i+1)); echo \"RPUSH log $i\"; sleep 0.002; done | redis-cli -s {}",
                sock.display()
            ))
            .stdout(Stdio::null()),
    );
    let len = |s: &Path| redis_cli(s, &["LLEN", "log"]).parse::<u64>().unwrap();
    wait_for("the writer", Duration::from_secs(10), || len(&sock) > 20);
    let mut last = 0;
    for i in 1..=3 {
        let name = format!("redis-{i}");
        let before = len(&sock);
        snapshot_sealed(&m.mnt, &name);
        let after = len(&sock);
        assert_app_consistent(&m, &name, "redis");
        let copy = m.scratch(&name);
        restore(&m.backing(".bkfs"), &format!("{name}:redis"), &copy);
        let sock2 = copy.join("restored.sock");
        let restored = redis_server(&copy, &sock2);
        let n = len(&sock2);
        assert!(
            before <= n && n <= after && n > last,
            "{name}: {n} entries, live {before}..{after}, previous {last}"
        );
        // Whole: 1..n in order.
        assert_eq!(redis_cli(&sock2, &["LINDEX", "log", "0"]), "1", "{name}");
        assert_eq!(
            redis_cli(&sock2, &["LINDEX", "log", "-1"]),
            n.to_string(),
            "{name}"
        );
        drop(restored);
        last = n;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A MariaDB server on `data`, socket and log in `run_dir`; killed on drop.
struct Maria {
    sock: PathBuf,
    _server: Proc,
}

impl Maria {
    fn start(data: &Path, run_dir: &Path, name: &str) -> Maria {
        let sock = run_dir.join(format!("{name}.sock"));
        let log = run_dir.join(format!("{name}.err"));
        let server = Proc::spawn(
            Command::new("mariadbd")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", sock.display()))
                .arg(format!("--log-error={}", log.display()))
                .arg(format!(
                    "--pid-file={}",
                    run_dir.join(format!("{name}.pid")).display()
                ))
                .args(maria_args())
                .stderr(Stdio::null()),
        );
        let m = Maria {
            sock,
            _server: server,
        };
        let t = std::time::Instant::now();
        while !m
            .client()
            .arg("-e")
            .arg("SELECT 1")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "mariadbd {name} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.arg(format!("--socket={}", self.sock.display()))
            .args(["--batch", "--skip-column-names"]);
        c
    }

    fn sql(&self, sql: &str) -> String {
        run(self.client().arg("-e").arg(sql)).trim().to_string()
    }
}

/// Server options for a data directory on FUSE: no O_DIRECT, no native AIO.
fn maria_args() -> [&'static str; 5] {
    [
        "--skip-networking",
        "--user=mysql",
        "--innodb-flush-method=fsync",
        "--innodb-use-native-aio=0",
        "--innodb-buffer-pool-size=32M",
    ]
}

/// Rows of the writer's transactions: t and u get row i in one transaction.
fn maria_check(db: &Maria, what: &str) -> u64 {
    let r = db.sql(
        "SELECT (SELECT count(*) FROM app.t), (SELECT count(*) FROM app.u), \
         (SELECT coalesce(max(x), 0) FROM app.t), (SELECT coalesce(max(x), 0) FROM app.u)",
    );
    let v: Vec<u64> = r.split('\t').map(|x| x.parse().unwrap()).collect();
    assert!(
        v.iter().all(|x| *x == v[0]),
        "{what}: count t, count u, max t, max u: {v:?}"
    );
    assert_eq!(
        db.sql("CHECK TABLE app.t, app.u").matches("OK").count(),
        2,
        "{what}"
    );
    v[0]
}

#[test]
fn mariadb_backup_stage_on_a_mount() {
    if !can_mount() || !have_user("mysql") || !have(&["mariadbd", "mariadb", "mariadb-install-db"])
    {
        return;
    }
    let conf = tmp();
    let run_dir = dir_of("mysql");
    let sock = run_dir.path().join("live.sock");
    let prof = profile(
        conf.path(),
        "maria.toml",
        &format!(
            "require = \"app\"\n[[app]]\nname = \"maria\"\nplugin = \"mariadb\"\nclient = \"mariadb\"\nsocket = \"{}\"\ntimeout = {{ prepare = \"60s\" }}\n",
            sock.display()
        ),
    );
    let m = Mount::new(&format!("profile={}", prof.display()));
    let data = m.path("mysql");
    std::fs::create_dir(&data).unwrap();
    chown(&data, "mysql"); // through the mount
    run(Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--user=mysql",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            "--innodb-flush-method=fsync",
            "--innodb-use-native-aio=0",
        ]));
    let live = Maria::start(&data, run_dir.path(), "live");
    live.sql("CREATE DATABASE app; CREATE TABLE app.t (x INT PRIMARY KEY) ENGINE=InnoDB; CREATE TABLE app.u (x INT PRIMARY KEY) ENGINE=InnoDB;");
    let _writer = Proc::spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "i=0; while :; do i=$((i+1)); echo \"BEGIN; INSERT INTO app.t VALUES ($i); INSERT INTO app.u VALUES ($i); COMMIT;\"; sleep 0.005; done | mariadb --socket={}",
                sock.display()
            ))
            .stdout(Stdio::null()),
    );
    let count = || {
        live.sql("SELECT count(*) FROM app.u")
            .parse::<u64>()
            .unwrap()
    };
    wait_for("the writer", Duration::from_secs(20), || count() > 20);
    let mut last = 0;
    for i in 1..=2 {
        let name = format!("maria-{i}");
        let before = count();
        snapshot_sealed(&m.mnt, &name);
        let after = count();
        assert_app_consistent(&m, &name, "mysql"); // mariadb is its alias
        let dir = dir_of("mysql");
        let copy = dir.path().join("data");
        restore(&m.backing(".bkfs"), &format!("{name}:mysql"), &copy);
        let restored = Maria::start(&copy, dir.path(), &name);
        let n = maria_check(&restored, &name);
        assert!(
            before <= n && n <= after && n > last,
            "{name}: {n} transactions, live {before}..{after}, previous {last}"
        );
        drop(restored);
        last = n;
    }
}
