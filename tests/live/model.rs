//! Model-based test: long random sequences of operations applied both to the
//! mount and to a plain directory; results and the whole trees must agree
//! after every step.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::*;

/// Random bytes, up to `max` of them.
trait UpTo {
    fn up_to(&mut self, max: u64) -> Vec<u8>;
}

impl UpTo for Rng {
    fn up_to(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max + 1) as usize;
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

const DIRS: &[&str] = &["", "x", "x/y", "z"];
const NAMES: &[&str] = &["a", "b", "x", "y", "z"];

fn random_path(rng: &mut Rng) -> String {
    let dir = rng.pick(DIRS);
    let name = rng.pick(NAMES);
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

#[derive(Debug)]
enum Op {
    Write(String, Vec<u8>),
    Append(String, Vec<u8>),
    WriteAt(String, u64, Vec<u8>),
    Truncate(String, u64),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
    Link(String, String),
    Symlink(&'static str, String),
    Chmod(String, u32),
    Read(String),
    List(String),
    SetXattr(String, Vec<u8>),
}

fn random_op(rng: &mut Rng) -> Op {
    let p = random_path(rng);
    match rng.below(14) {
        0 => Op::Write(p, rng.up_to(3000)),
        1 => Op::Append(p, rng.up_to(500)),
        2 => Op::WriteAt(p, rng.below(6000), rng.up_to(2000)),
        3 => Op::Truncate(p, rng.below(5000)),
        4 => Op::Unlink(p),
        5 => Op::Mkdir(p),
        6 => Op::Rmdir(p),
        7 => Op::Rename(p, random_path(rng)),
        8 => Op::Link(p, random_path(rng)),
        9 => Op::Symlink(rng.pick::<&str>(&["a", "../b", "x/y", "/nonexistent"]), p),
        10 => Op::Chmod(
            p,
            [0o644, 0o600, 0o755, 0o700, 0o4755][rng.below(5) as usize],
        ),
        11 => Op::Read(p),
        12 => Op::List(rng.pick(DIRS).to_string()),
        _ => Op::SetXattr(p, rng.up_to(40)),
    }
}

/// What an operation returned: data read, or the errno it failed with.
type Outcome = Result<Vec<u8>, i32>;

fn apply(root: &Path, op: &Op) -> Outcome {
    let at = |p: &str| root.join(p);
    let r: std::io::Result<Vec<u8>> = (|| {
        match op {
            Op::Write(p, data) => fs::write(at(p), data).map(|_| vec![]),
            Op::Append(p, data) => {
                let mut f = OpenOptions::new().append(true).open(at(p))?;
                f.write_all(data).map(|_| vec![])
            }
            Op::WriteAt(p, off, data) => {
                let mut f = OpenOptions::new().write(true).open(at(p))?;
                f.seek(SeekFrom::Start(*off))?;
                f.write_all(data).map(|_| vec![])
            }
            Op::Truncate(p, len) => OpenOptions::new()
                .write(true)
                .open(at(p))?
                .set_len(*len)
                .map(|_| vec![]),
            Op::Unlink(p) => fs::remove_file(at(p)).map(|_| vec![]),
            Op::Mkdir(p) => fs::create_dir(at(p)).map(|_| vec![]),
            Op::Rmdir(p) => fs::remove_dir(at(p)).map(|_| vec![]),
            Op::Rename(a, b) => fs::rename(at(a), at(b)).map(|_| vec![]),
            Op::Link(a, b) => fs::hard_link(at(a), at(b)).map(|_| vec![]),
            Op::Symlink(t, p) => std::os::unix::fs::symlink(t, at(p)).map(|_| vec![]),
            Op::Chmod(p, mode) => {
                fs::set_permissions(at(p), fs::Permissions::from_mode(*mode)).map(|_| vec![])
            }
            Op::Read(p) => {
                let mut v = Vec::new();
                fs::File::open(at(p))?.read_to_end(&mut v)?;
                Ok(v)
            }
            Op::List(d) => {
                let mut names: Vec<String> = fs::read_dir(at(d))?
                    .map(|e| e.map(|e| e.file_name().into_string().unwrap()))
                    .collect::<Result<_, _>>()?;
                names.sort();
                Ok(names.join("/").into_bytes())
            }
            Op::SetXattr(p, v) => {
                let c = cstr(&at(p));
                // SAFETY: valid C strings; the value is readable for its length.
                let r = unsafe {
                    libc::lsetxattr(
                        c.as_ptr(),
                        c"user.m".as_ptr(),
                        v.as_ptr().cast(),
                        v.len(),
                        0,
                    )
                };
                if r == 0 {
                    Ok(vec![])
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        }
    })();
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Everything observable about a tree except timestamps and inode numbers.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            // The backing directory holds the store (hidden by the mount).
            if rel.as_os_str().is_empty() && e.file_name() == ".bkfs" {
                continue;
            }
            let rel = rel.join(e.file_name());

            let p = root.join(&rel);
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let detail = if ft.is_dir() {
                stack.push(rel.clone());
                String::new()
            } else if ft.is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                let data = fs::read(&p).unwrap();
                format!(
                    "{:x}",
                    data.iter()
                        .fold(0u64, |h, &b| h.wrapping_mul(131) ^ u64::from(b))
                )
            };
            let xattr = xattr_of(&p);
            let desc = format!(
                "mode={:o} size={} nlink={} uid={} {detail} xattr={xattr:?}",
                md.mode(),
                if ft.is_dir() { 0 } else { md.size() },
                md.nlink(),
                md.uid(),
            );
            out.insert(rel, desc);
        }
    }
    out
}

fn xattr_of(p: &Path) -> Option<Vec<u8>> {
    let c = cstr(p);
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings; buf is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.m".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

fn run_model(seed: u64, steps: usize, options: &str) {
    let m = Mount::new(options);
    let plain = m.scratch("plain");
    let mut rng = Rng::new(seed);
    for step in 0..steps {
        let op = random_op(&mut rng);
        let on_mount = apply(&m.mnt, &op);
        let on_plain = apply(&plain, &op);
        assert_eq!(on_mount, on_plain, "seed {seed} step {step}: {op:?}");
        let (a, b) = (snapshot(&m.mnt), snapshot(&plain));
        assert_eq!(a, b, "seed {seed} step {step} after {op:?}");
    }
    // The backing directory agrees as well.
    assert_eq!(
        snapshot(&m.src),
        snapshot(&plain),
        "seed {seed}: backing tree"
    );
}

#[test]
fn random_operations_match_a_plain_directory() {
    if !can_mount() {
        return;
    }
    for seed in [0x5eed_0001, 0xdead_beef, 42] {
        run_model(seed, 600, "");
    }
}

#[test]
fn random_operations_match_write_through() {
    if !can_mount() {
        return;
    }
    run_model(0xcafe_f00d, 600, "nowriteback");
}

#[test]
fn random_operations_match_with_other_io_modes() {
    if !can_mount() {
        return;
    }
    run_model(0x0bad_cafe, 400, "passthrough=ro");
    run_model(0x1234_5678, 400, "nopassthrough,threads=1");
    // Nearly every node held by a file handle instead of a descriptor.
    run_model(0x7777_0001, 400, "fd_budget=2");
}
