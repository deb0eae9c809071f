//! Random trees for the model tests, and bulk data.

use super::*;

pub struct TreeSpec {
    pub files: usize,
    pub max_depth: usize,
    pub max_size: u64,
    /// Percent of files that copy another file's contents (dedup).
    pub dup_percent: u64,
    pub specials: bool,
}

/// Builds a random tree under `root` (which must exist). Returns the paths of the regular files.
pub fn random_tree(root: &Path, rng: &mut Rng, spec: &TreeSpec) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut contents: Vec<Vec<u8>> = Vec::new();
    let mut n = 0;
    while files.len() < spec.files {
        n += 1;
        let parent = rng.pick(&dirs).clone();
        let depth = parent.strip_prefix(root).unwrap().components().count();
        let name = random_name(rng, n);
        let p = parent.join(&name);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        let roll = rng.range(0, 100);
        if roll < 15 && depth < spec.max_depth {
            fs::create_dir(&p).unwrap();
            dirs.push(p);
        } else if spec.specials && roll < 20 && !files.is_empty() {
            let t = rng.pick(&files).clone();
            std::os::unix::fs::symlink(t.strip_prefix(root).unwrap(), &p).unwrap();
        } else if spec.specials && roll < 24 && !files.is_empty() {
            let t = rng.pick(&files).clone();
            fs::hard_link(&t, &p).unwrap();
        } else {
            let data = if !contents.is_empty() && rng.chance(spec.dup_percent) {
                rng.pick(&contents).clone()
            } else {
                let size = match rng.range(0, 10) {
                    0 => 0,
                    1..=5 => rng.range(1, 4096),
                    6..=8 => rng.range(4096, spec.max_size / 4 + 4097),
                    _ => rng.range(0, spec.max_size + 1),
                };
                if rng.chance(50) {
                    rng.bytes(size as usize)
                } else {
                    let mut v = Vec::new();
                    let wl = rng.range(1, 12) as usize;
                    let word = rng.bytes(wl);
                    while (v.len() as u64) < size {
                        v.extend_from_slice(&word);
                        v.push(b'\n');
                    }
                    v.truncate(size as usize);
                    v
                }
            };
            fs::write(&p, &data).unwrap();
            if spec.specials {
                chmod(&p, *rng.pick(&[0o644, 0o600, 0o755, 0o400, 0o4755, 0o640]));
                if rng.chance(20) {
                    let (u, g) = (rng.range(1000, 1010) as u32, rng.range(1000, 1010) as u32);
                    lchown(&p, u, g);
                }
                if rng.chance(15) {
                    let n = rng.range(0, 40) as usize;
                    set_xattr(&p, "user.model", &rng.bytes(n));
                }
            }
            contents.push(data);
            files.push(p);
        }
    }
    if spec.specials {
        // Nanosecond times on everything, children before parents.
        let mut all = Vec::new();
        collect_paths(root, &mut all);
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in all {
            let t = |rng: &mut Rng| {
                (
                    rng.range(0, 2_000_000_000) as i64,
                    rng.range(0, 1_000_000_000) as i64,
                )
            };
            let (mut a, mut m) = (t(rng), t(rng));
            if p.symlink_metadata().unwrap().file_type().is_symlink() {
                // atime ahead of now, mtime and ctime: readlink(2) leaves it (see `listing`).
                a.0 = future_secs() + rng.range(0, 3600) as i64;
                m.0 = m.0.min(1_700_000_000);
            }
            set_times(&p, a, m);
        }
    }
    files
}

/// A time an hour from now: a symlink atime there survives readlink(2) under relatime.
pub fn future_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600
}

/// Gives every symlink under `root` an atime an hour ahead (mtime kept), so that reading link
/// targets (ours or bkfs's) does not move it: see `listing`.
pub fn settle_symlink_atimes(root: &Path) {
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    for (i, p) in all.iter().enumerate() {
        let m = fs::symlink_metadata(p).unwrap();
        if m.file_type().is_symlink() {
            set_times(p, (future_secs(), i as i64), (m.mtime(), m.mtime_nsec()));
        }
    }
}

fn collect_paths(d: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            collect_paths(&p, out);
        }
        out.push(p);
    }
}

/// A random file name: mostly plain, sometimes with spaces, unicode or non-UTF-8 bytes.
pub fn random_name(rng: &mut Rng, n: usize) -> OsString {
    let mut v: Vec<u8> = match rng.range(0, 10) {
        0 => b"with space ".to_vec(),
        1 => "uni-\u{e9}\u{4e2d}-".as_bytes().to_vec(),
        2 => vec![b'x', 0xff, 0xfe, b'-'],
        3 => b"-dash.".to_vec(),
        _ => b"f".to_vec(),
    };
    let len = rng.range(1, 12);
    for _ in 0..len {
        v.push(*rng.pick(b"abcdefghijklmnopqrstuvwxyz0123456789_."));
    }
    v.extend_from_slice(format!("{n}").as_bytes());
    OsString::from_vec(v)
}

/// A bulk tree of about `total` bytes: many small files and a few large ones, random data.
pub fn bulk_tree(root: &Path, total: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let large = total / 2;
    let big_files = 3u64;
    fs::create_dir_all(root).unwrap();
    for i in 0..big_files {
        write_random(
            &root.join(format!("big{i}.bin")),
            large / big_files,
            &mut rng,
        );
    }
    let mut left = total - large;
    let mut i = 0;
    while left > 0 {
        let d = root
            .join(format!("d{}", i % 16))
            .join(format!("e{}", i % 5));
        fs::create_dir_all(&d).unwrap();
        let sz = rng.range(1, 400_000).min(left);
        if i % 3 == 0 {
            write_text(&d.join(format!("t{i}.txt")), sz, &mut rng);
        } else {
            write_random(&d.join(format!("r{i}.bin")), sz, &mut rng);
        }
        left -= sz;
        i += 1;
    }
}
