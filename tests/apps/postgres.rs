//! PostgreSQL with its data directory on a bkfs mount, under pgbench, with a
//! snapshot every ~2 s; every snapshot restored, started, and checked with
//! pg_amcheck and pgbench's own invariants.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::tree::*;
use crate::util::*;

fn postgres_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .max()
}

/// A PostgreSQL server on `data`, its socket in `sock`; stopped on drop.
struct Pg {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
}

impl Pg {
    fn initdb(bin: &Path, data: &Path) {
        run(as_user(
            Command::new(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(data),
            "postgres",
        ));
    }

    /// Starts the cluster in `data` (waits until it accepts connections,
    /// recovery included).
    fn start(bin: &Path, data: &Path, sock: &Path, port: u16) -> Pg {
        let pg = Pg {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            sock: sock.to_path_buf(),
            port,
        };
        let st = as_user(
            Command::new(pg.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&pg.data)
                .arg("-l")
                .arg(pg.log_path())
                .args([
                    "-w",
                    "-t",
                    "90",
                    "-o",
                    &format!(
                        "-p {} -k {} -c listen_addresses='' -c fsync=off -c max_wal_size=64MB",
                        pg.port,
                        pg.sock.display()
                    ),
                    "start",
                ]),
            "postgres",
        )
        .stdout(Stdio::null())
        .status()
        .unwrap();
        assert!(st.success(), "pg_ctl start failed: {}", pg.log());
        pg
    }

    fn log_path(&self) -> PathBuf {
        self.sock.join(format!("pg-{}.log", self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn connect(&self) -> String {
        format!(
            "host={} port={} dbname=postgres user=postgres",
            self.sock.display(),
            self.port
        )
    }

    fn psql(&self, sql: &str) -> String {
        run(as_user(
            Command::new(self.bin.join("psql")).args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.connect(),
                "-c",
                sql,
            ]),
            "postgres",
        ))
        .trim()
        .to_string()
    }

    fn pgbench(&self) -> Command {
        let mut c = Command::new(self.bin.join("pgbench"));
        as_user(&mut c, "postgres").arg("-h").arg(&self.sock).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        c
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_user(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"]),
            "postgres",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }
}

/// pgbench's tables in a restored copy: the row counts of scale 1 and the
/// TPC-B invariant (every transaction moves the same delta in accounts,
/// tellers, branches and history, atomically). Returns history's row count.
fn check_pgbench_tables(pg: &Pg, what: &str) -> u64 {
    let counts = pg.psql(
        "SELECT (SELECT count(*) FROM pgbench_branches) || ' ' || \
                (SELECT count(*) FROM pgbench_tellers) || ' ' || \
                (SELECT count(*) FROM pgbench_accounts)",
    );
    assert_eq!(counts, "1 10 100000", "{what}: row counts");
    let sums = pg.psql(
        "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts) || ' ' || \
                (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers) || ' ' || \
                (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches) || ' ' || \
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
    );
    let v: Vec<&str> = sums.split(' ').collect();
    assert!(
        v.iter().all(|s| *s == v[0]),
        "{what}: balances disagree (accounts tellers branches history): {sums}"
    );
    pg.psql("SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap()
}

fn amcheck(pg: &Pg, what: &str) {
    let o = as_user(
        Command::new(pg.bin.join("pg_amcheck"))
            .args(["--all", "--install-missing", "--heapallindexed", "-h"])
            .arg(&pg.sock)
            .args(["-p", &pg.port.to_string(), "-U", "postgres"]),
        "postgres",
    )
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "{what}: pg_amcheck: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn pgbench_run(mode: &str, snapshots: usize) {
    if !can_mount() {
        return;
    }
    let Some(bin) = postgres_bin() else {
        assert!(!ci(), "PostgreSQL is missing, and CI=true requires it");
        eprintln!("skipped: no PostgreSQL server");
        return;
    };
    if !have_user("postgres")
        || !have(&[
            bin.join("pgbench").to_str().unwrap(),
            bin.join("pg_amcheck").to_str().unwrap(),
        ])
    {
        return;
    }
    // Outside the mount: the profile, the live server's socket, the restores.
    let conf = tmp();
    let sock = dir_of("postgres");
    let live_port = free_port();
    let text = format!(
        "require = \"app\"\n[[app]]\nname = \"pg\"\nplugin = \"postgresql\"\nuser = \"postgres\"\nmode = \"{mode}\"\n\
         connect = \"host={} port={live_port} dbname=postgres\"\npsql = \"{}\"\ntimeout = {{ prepare = \"60s\" }}\n",
        sock.path().display(),
        bin.join("psql").display()
    );
    let prof = profile(conf.path(), "pg.toml", &text);
    let m = Mount::new(&format!("profile={}", prof.display()));
    let data = m.path("pgdata");
    std::fs::create_dir(&data).unwrap();
    chown(&data, "postgres"); // through the mount
    Pg::initdb(&bin, &data);
    let live = Pg::start(&bin, &data, sock.path(), live_port);
    run(live.pgbench().args(["-i", "-s", "1", "-q", "postgres"]));

    // Runs until the snapshots are taken (stopped then), at most 2 minutes.
    let mut bench = Proc::spawn(
        live.pgbench()
            .args(["-c", "4", "-j", "2", "-T", "120", "-n", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut names = Vec::new();
    let mut histories = Vec::new();
    while names.len() < snapshots {
        let t = Instant::now();
        let name = format!("{mode}-{}", names.len() + 1);
        let before: u64 = live
            .psql("SELECT count(*) FROM pgbench_history")
            .parse()
            .unwrap();
        let s = snapshot_sealed(&m.mnt, &name);
        assert_eq!(s["consistency"], "app_consistent", "{name}: {s:?}");
        assert!(!s["frozen_ms"].is_empty(), "{name}: {s:?}");
        let apps = app_lines(&m.mnt);
        assert!(
            apps.len() == 1
                && apps[0].contains("plugin=postgresql")
                && apps[0].contains("state=thawed"),
            "{name}: {apps:?}"
        );
        eprintln!(
            "{name}: frozen_ms {} barrier_ms {}",
            s["frozen_ms"], s["barrier_ms"]
        );
        names.push(name);
        histories.push(before);
        if names.len() < snapshots {
            if let Some(rest) = Duration::from_secs(2).checked_sub(t.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    // Every snapshot was taken under load.
    assert!(
        bench.0.try_wait().unwrap().is_none(),
        "pgbench stopped early: {:?}",
        bench.0.try_wait()
    );
    drop(bench);
    let after: u64 = live
        .psql("SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    assert!(after > 0, "pgbench did nothing");
    drop(live);

    // Each snapshot, restored and started on a port of its own.
    let store = m.backing(".bkfs");
    let mut last = 0;
    for (name, before) in names.iter().zip(&histories) {
        let dir = dir_of("postgres");
        let copy = dir.path().join("data");
        restore(&store, &format!("{name}:pgdata"), &copy);
        let _ = std::fs::remove_file(copy.join("postmaster.pid"));
        let pg = Pg::start(&bin, &copy, dir.path(), free_port());
        let log = pg.log();
        assert!(
            log.contains("database system was not properly shut down") || log.contains("redo"),
            "{name}: no crash recovery in the log:\n{log}"
        );
        let n = check_pgbench_tables(&pg, name);
        // The snapshot was taken after `before` rows, and later ones have more.
        assert!(
            n >= *before && n >= last && n <= after,
            "{name}: history {n}, before {before}, previous {last}, end {after}"
        );
        last = n;
        amcheck(&pg, name);
        eprintln!("{name}: restored, {n} transactions, amcheck ok");
    }
    assert!(last > histories[0], "no progress between snapshots");
    check_store(&store);
}

#[test]
fn postgresql_under_pgbench_checkpoint_mode() {
    pgbench_run("checkpoint", 4);
}

#[test]
fn postgresql_under_pgbench_backup_api_mode() {
    pgbench_run("backup_api", 3);
}
