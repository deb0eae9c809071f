//! Model-based: random operations interleaved with snapshots; every
//! snapshot must equal the tree as it was at its point in time, while it is
//! copied, after it is sealed, and after later changes.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::tree::*;

/// Random bytes, up to `max` of them.
trait UpTo {
    fn up_to(&mut self, max: u64) -> Vec<u8>;
}

impl UpTo for Rng {
    fn up_to(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max + 1) as usize;
        let seed = self.next_u64();
        (0..len)
            .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
            .collect()
    }
}

const DIRS: &[&str] = &["", "x", "x/y", "z"];
const NAMES: &[&str] = &["a", "b", "x", "y", "z", "big"];

fn random_path(rng: &mut Rng) -> String {
    let dir = rng.pick(DIRS);
    let name = rng.pick(NAMES);
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Applies one random operation under `root`; failures (a missing path,
/// a non-empty directory) are part of the game.
fn random_op(rng: &mut Rng, root: &Path) {
    let p = random_path(rng);
    let at = |p: &str| root.join(p);
    let _ = (|| -> std::io::Result<()> {
        match rng.below(13) {
            0 => fs::write(at(&p), rng.up_to(3000)),
            1 => OpenOptions::new()
                .append(true)
                .open(at(&p))?
                .write_all(&rng.up_to(500)),
            2 => {
                let mut f = OpenOptions::new().write(true).open(at(&p))?;
                f.seek(SeekFrom::Start(rng.below(300_000)))?;
                f.write_all(&rng.up_to(70_000))
            }
            3 => OpenOptions::new()
                .write(true)
                .open(at(&p))?
                .set_len(rng.below(200_000)),
            4 => fs::remove_file(at(&p)),
            5 => fs::create_dir(at(&p)),
            6 => fs::remove_dir(at(&p)),
            7 => fs::rename(at(&p), at(&random_path(rng))),
            8 => fs::hard_link(at(&p), at(&random_path(rng))),
            9 => std::os::unix::fs::symlink(rng.pick(&["a", "../b", "x/y"]), at(&p)),
            10 => fs::set_permissions(
                at(&p),
                fs::Permissions::from_mode([0o644, 0o600, 0o755, 0o700][rng.below(4) as usize]),
            ),
            11 => {
                let v = format!("v{}", rng.below(1000));
                let ok = std::process::Command::new("setfattr")
                    .args(["-h", "-n", "user.m", "-v", &v])
                    .arg(at(&p))
                    .stderr(std::process::Stdio::null())
                    .status()?
                    .success();
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::other("setfattr"))
                }
            }
            _ => {
                // A larger file: its copy takes long enough to change things under it.
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(at(&p))?;
                f.seek(SeekFrom::Start(rng.below(1 << 20)))?;
                f.write_all(&rng.up_to(1 << 20))
            }
        }
    })();
}

fn run(seed: u64, rounds: usize, ops_per_round: usize) {
    let m = Mount::new("");
    let mut rng = Rng::new(seed);
    let mut expected: BTreeMap<String, BTreeMap<PathBuf, String>> = BTreeMap::new();
    for round in 0..rounds {
        for _ in 0..ops_per_round {
            random_op(&mut rng, &m.mnt);
        }
        let name = format!("s{round}");
        let want = digest(&m.mnt);
        take(&m.mnt, &name);
        // Change things while the copy may still run, then look at it.
        for _ in 0..ops_per_round {
            random_op(&mut rng, &m.mnt);
        }
        let snap = m.path(".snapshots").join(&name);
        assert_same(
            &format!("seed {seed} {name} during copy"),
            &want,
            &digest(&snap),
        );
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "seed {seed} {name}: {s:?}");
        // The record counts what the snapshot holds, reused subtrees included.
        let files = want
            .values()
            .filter(|d| !d.starts_with("type=40000"))
            .count();
        assert_eq!(
            s["files"],
            format!("{files}/{files}"),
            "seed {seed} {name}: {s:?}"
        );
        assert_same(&format!("seed {seed} {name} sealed"), &want, &digest(&snap));
        expected.insert(name, want);
    }
    // Every snapshot still shows its own point in time.
    for (name, want) in &expected {
        let snap = m.path(".snapshots").join(name);
        assert_same(
            &format!("seed {seed} {name} at the end"),
            want,
            &digest(&snap),
        );
    }
    check_store(&m.backing(".bkfs"));
}

#[test]
fn random_operations_interleaved_with_snapshots() {
    if !can_mount() {
        return;
    }
    for seed in [1, 2, 3] {
        run(seed, 6, 25);
    }
}

#[test]
fn concurrent_writers_never_leave_torn_records_in_a_snapshot() {
    if !can_mount() {
        return;
    }
    const RECORD: usize = 4096;
    let m = Mount::new("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = m.path(&format!("log{w}"));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // One write per record: a snapshot holds whole ones.
                    let rec = vec![(n % 251) as u8; RECORD];
                    f.write_all(&rec).unwrap();
                    n += 1;
                    // At most about 16 MB/s each: with the writeback cache a
                    // log would otherwise grow by GB between snapshots.
                    if n % 4 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                n
            })
        })
        .collect();
    let mut lens: Vec<Vec<u64>> = Vec::new();
    for i in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let name = format!("c{i}");
        take(&m.mnt, &name);
        let s = wait_settled(&m.mnt);
        assert_eq!(s["state"], "sealed", "{s:?}");
        let mut these = Vec::new();
        for w in 0..4 {
            let data = fs::read(m.path(&format!(".snapshots/{name}/log{w}"))).unwrap_or_default();
            assert_eq!(data.len() % RECORD, 0, "{name}/log{w}: torn record");
            for (k, rec) in data.chunks(RECORD).enumerate() {
                assert!(
                    rec.iter().all(|&b| b == (k % 251) as u8),
                    "{name}/log{w}: record {k} mixed"
                );
            }
            these.push(data.len() as u64);
        }
        lens.push(these);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        assert!(w.join().unwrap() > 0);
    }
    // Later snapshots hold at least as much of each log.
    for pair in lens.windows(2) {
        for (before, after) in pair[0].iter().zip(&pair[1]) {
            assert!(after >= before, "{lens:?}");
        }
    }
}
