//! Digests of whole trees, to compare a snapshot with the tree it was
//! taken of: everything `tar`/`rsync -aHAX` would carry, and hard links.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One line per entry below `root` (not `root` itself): type, mode, owner,
/// size, mtime (not for directories: see `with_dir_times`), content digest
/// or symlink target, xattrs, and for files with several names the first
/// path of their inode (hard links).
pub fn digest(root: &Path) -> BTreeMap<PathBuf, String> {
    digest_with(root, false)
}

/// Like [`digest`], with directory mtimes too.
pub fn digest_with(root: &Path, dir_times: bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut first_name: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut all = Vec::new();
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(&rel).display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            if rel.as_os_str().is_empty() && name == ".bkfs" {
                continue;
            }
            let rel = rel.join(&name);
            let md = fs::symlink_metadata(root.join(&rel)).unwrap();
            if md.is_dir() {
                stack.push(rel.clone());
            }
            all.push((rel, md));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, md) in all {
        let p = root.join(&rel);
        let ft = md.file_type();
        let detail = if ft.is_dir() {
            if dir_times {
                format!("mtime={}.{:09}", md.mtime(), md.mtime_nsec())
            } else {
                String::new()
            }
        } else if ft.is_symlink() {
            format!("-> {}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            let data = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            format!(
                "mtime={}.{:09} {}",
                md.mtime(),
                md.mtime_nsec(),
                blake3::hash(&data).to_hex()
            )
        } else {
            format!("rdev={}", md.rdev())
        };
        let link = if !ft.is_dir() && md.nlink() > 1 {
            let first = first_name
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            format!(" link={}", first.display())
        } else {
            String::new()
        };
        let desc = format!(
            "type={:o} mode={:o} uid={} gid={} size={} nlink={} {detail}{link} xattrs={}",
            md.mode() & libc::S_IFMT,
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            if ft.is_dir() { 0 } else { md.size() },
            if ft.is_dir() { 0 } else { md.nlink() },
            xattrs(&p)
        );
        out.insert(rel, desc);
    }
    out
}

/// `name=value` of every user.* xattr, sorted.
pub fn xattrs(p: &Path) -> String {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string; buf is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return String::new();
    }
    let mut names: Vec<&[u8]> = buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        // SAFETY: valid C strings; v is writable for its length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m >= 0 {
            out.push(format!(
                "{}={}",
                String::from_utf8_lossy(name),
                blake3::hash(&v[..m as usize]).to_hex()
            ));
        }
    }
    out.join(",")
}

/// Asserts two digests are equal, naming the first differences.
pub fn assert_same(what: &str, want: &BTreeMap<PathBuf, String>, got: &BTreeMap<PathBuf, String>) {
    if want == got {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {}: {v}", k.display())),
            Some(g) if g != v => diffs.push(format!("{}:\n  want {v}\n  got  {g}", k.display())),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            diffs.push(format!("extra {}: {v}", k.display()));
        }
    }
    diffs.truncate(12);
    panic!(
        "{what}: snapshot differs from its point in time:\n{}",
        diffs.join("\n")
    );
}

/// The `key: value` lines of `.control/snapshot`.
pub fn status(mnt: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(mnt.join(".control/snapshot")).unwrap();
    bkfs::control::text::decode(&text).into_map()
}

/// Waits until the latest operation is no longer being copied; returns its status.
pub fn wait_settled(mnt: &Path) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(mnt);
        let state = s.get("state").cloned().unwrap_or_default();
        if !matches!(
            state.as_str(),
            "committing" | "committed" | "copying" | "quiescing"
        ) {
            return s;
        }
        assert!(Instant::now() < deadline, "copy did not end: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Takes snapshot `name` by writing to the control file; panics on failure.
pub fn take(mnt: &Path, name: &str) {
    fs::write(mnt.join(".control/snapshot"), format!("{name}\n"))
        .unwrap_or_else(|e| panic!("snapshot {name}: {e}; status {:?}", status(mnt)));
}

/// The errno a write of `text` to `.control/snapshot` fails with (0 if it succeeds).
pub fn take_errno(mnt: &Path, text: impl AsRef<[u8]>) -> i32 {
    match fs::write(mnt.join(".control/snapshot"), text) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Runs `bkfs check` on a store and asserts it passes.
pub fn check_store(store: &Path) {
    let out = Command::new(crate::common::BKFS)
        .args(["check", "--read-data", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bkfs check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
