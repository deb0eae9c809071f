//! Store issue, model test: random small trees (seeded: nesting, odd names, sizes, duplicate
//! contents for dedup, hard links, symlinks, modes, owners, xattrs, nanosecond times) are backed
//! up several times into one store while they change; at the end every snapshot restores to
//! exactly the state it was taken of. Between backups, earlier snapshots are sometimes
//! forgotten and garbage collected.
//!
//! BKFS_MODEL_SEEDS=a,b,c replays given seeds; BKFS_MODEL_CASES=n runs n seeds from 1.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk_files(root);
    out.retain(|p| !fs::symlink_metadata(p).unwrap().file_type().is_symlink());
    out
}

fn all_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        for e in fs::read_dir(&out[i]).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

/// A few random changes of the kinds users make between backups.
fn mutate(root: &Path, rng: &mut Rng, step: usize) {
    for k in 0..rng.range(1, 8) {
        let files = all_files(root);
        let dirs = all_dirs(root);
        match rng.range(0, 9) {
            0 | 1 if !files.is_empty() => {
                // Rewrite a file, maybe with another file's contents (dedup across time).
                let p = rng.pick(&files).clone();
                let data = if rng.chance(30) {
                    fs::read(rng.pick(&files)).unwrap()
                } else {
                    let n = rng.range(0, 200_000) as usize;
                    rng.bytes(n)
                };
                fs::write(&p, data).unwrap();
            }
            2 if !files.is_empty() => {
                // Change a few bytes in place, keeping size (and resetting mtime).
                let p = rng.pick(&files).clone();
                let mut d = fs::read(&p).unwrap();
                if !d.is_empty() {
                    let i = rng.range(0, d.len() as u64) as usize;
                    d[i] ^= 0x5a;
                    let m = fs::symlink_metadata(&p).unwrap();
                    use std::os::unix::fs::MetadataExt;
                    let (a, mt) = ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()));
                    fs::write(&p, d).unwrap();
                    set_times(&p, a, mt);
                }
            }
            3 if !files.is_empty() => {
                let p = rng.pick(&files).clone();
                fs::remove_file(p).unwrap();
            }
            4 => {
                let d = rng.pick(&dirs).clone();
                let name = random_name(rng, 10_000 + step * 100 + k as usize);
                let n = rng.range(0, 100_000) as usize;
                fs::write(d.join(name), rng.bytes(n)).unwrap();
            }
            5 if !files.is_empty() => {
                // Metadata only: mode, owner or an xattr.
                let p = rng.pick(&files).clone();
                match rng.range(0, 3) {
                    0 => chmod(&p, *rng.pick(&[0o600, 0o644, 0o755, 0o2755, 0o000])),
                    1 => lchown(&p, rng.range(0, 3000) as u32, rng.range(0, 3000) as u32),
                    _ => {
                        let n = rng.range(0, 64) as usize;
                        set_xattr(&p, "user.changed", &rng.bytes(n));
                    }
                }
            }
            6 if !files.is_empty() => {
                // Rename across directories.
                let p = rng.pick(&files).clone();
                let d = rng.pick(&dirs).clone();
                let to = d.join(random_name(rng, 20_000 + step * 100 + k as usize));
                fs::rename(p, to).unwrap();
            }
            7 if dirs.len() > 1 => {
                let d = rng.pick(&dirs[1..]).clone();
                fs::remove_dir_all(d).unwrap();
            }
            _ => {
                let d = rng.pick(&dirs).clone();
                let sub = d.join(random_name(rng, 30_000 + step * 100 + k as usize));
                fs::create_dir(&sub).unwrap();
                if !files.is_empty() && rng.chance(50) {
                    let t = rng.pick(&files).clone();
                    if t.exists() {
                        fs::hard_link(t, sub.join("hardlink")).unwrap();
                    }
                }
            }
        }
    }
    // New times on a few entries, at nanosecond precision.
    for p in all_files(root).into_iter().take(3) {
        set_times(
            &p,
            (
                rng.range(0, 2_000_000_000) as i64,
                rng.range(0, 1_000_000_000) as i64,
            ),
            (
                rng.range(0, 2_000_000_000) as i64,
                rng.range(0, 1_000_000_000) as i64,
            ),
        );
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("BKFS_MODEL_SEEDS") {
        return s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let n = std::env::var("BKFS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    (1..=n).collect()
}

#[test]
fn random_trees_restore_as_they_were_at_each_backup() {
    if !require(true, &[]) {
        return;
    }
    let mut f = Failures::new();
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let work = tempdir();
        let src = work.path().join("src");
        fs::create_dir(&src).unwrap();
        let spec = TreeSpec {
            files: rng.range(10, 60) as usize,
            max_depth: rng.range(1, 5) as usize,
            max_size: *rng.pick(&[10_000, 300_000, 3_000_000]),
            dup_percent: 30,
            specials: true,
        };
        random_tree(&src, &mut rng, &spec);
        let store = Store::new();
        let steps = 4;
        let mut states: Vec<(String, Listing)> = Vec::new();
        for step in 0..steps {
            if step > 0 {
                mutate(&src, &mut rng, step);
            }
            // Sometimes forget an earlier snapshot (maybe the newest, the next backup's parent)
            // and collect garbage, so later backups reuse entries across a repack.
            if !states.is_empty() && rng.chance(50) {
                let i = rng.range(0, states.len() as u64) as usize;
                let (gone, _) = states.remove(i);
                f.code(
                    &store.run(["forget", &gone]),
                    0,
                    &format!("seed {seed}: forget {gone}"),
                );
                f.code(
                    &store.run(["gc"]),
                    0,
                    &format!("seed {seed}: gc after forgetting {gone}"),
                );
            }
            let l = listing(&src);
            let name = format!("s{step}");
            let o = store.backup(&src, &name);
            if !f.code(&o, 0, &format!("seed {seed}: backup {name}")) {
                break;
            }
            states.push((name, l));
        }
        for (name, l) in &states {
            let dest = work.path().join(format!("r-{name}"));
            let o = store.restore(name, &dest);
            if f.code(&o, 0, &format!("seed {seed}: restore {name}")) {
                f.same(
                    &format!(
                        "seed {seed}: snapshot {name} restored differs from the tree it was taken of \
                         (replay with BKFS_MODEL_SEEDS={seed})"
                    ),
                    l,
                    &listing(&dest),
                );
            }
        }
        f.code(
            &store.check_data(),
            0,
            &format!("seed {seed}: check --read-data"),
        );
    }
    f.finish();
}
