//! The metadata listing two trees are compared by: nanosecond times, xattrs, hard links.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size for regular files and symlinks (directory sizes are filesystem-specific).
    pub size: Option<u64>,
    /// Device number of character and block devices.
    pub rdev: Option<(u32, u32)>,
    pub mtime: (i64, i64),
    /// None when the listing is taken without atimes.
    pub atime: Option<(i64, i64)>,
    pub nlink: u64,
    /// For a file with several names in the tree: all of them (the hard-link group).
    pub links: Option<Vec<Vec<u8>>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub hash: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Path relative to the root ("" is the root itself) → entry.
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

#[derive(Clone, Copy)]
pub struct ListOpts {
    pub atime: bool,
    /// Include the root directory's own metadata.
    pub root: bool,
    /// Hash file contents.
    pub contents: bool,
}

impl Default for ListOpts {
    fn default() -> Self {
        ListOpts {
            atime: true,
            root: true,
            contents: true,
        }
    }
}

fn kind_of(m: &fs::Metadata) -> &'static str {
    match m.mode() & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

/// Walks a tree with lstat and records everything a metadata-exact restore must reproduce.
/// Sockets are left out (bkfs skips them). Nothing it does changes an atime.
pub fn listing(root: &Path) -> Listing {
    listing_with(root, ListOpts::default())
}

pub fn listing_with(root: &Path, opts: ListOpts) -> Listing {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"));
        // readlink(2) updates a symlink's atime (relatime: when atime <= mtime or ctime, or is a
        // day old) and O_NOATIME cannot prevent it; the times are taken before. Tests that care
        // give symlinks an atime in the near future, which relatime then leaves alone.
        let target = m
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(&p).unwrap().into_os_string().into_vec());
        let kind = kind_of(&m);
        if kind == "socket" {
            continue;
        }
        if kind == "dir" {
            for name in read_dir_noatime(&p) {
                let mut c = rel.clone();
                if !c.is_empty() {
                    c.push(b'/');
                }
                c.extend_from_slice(name.as_bytes());
                stack.push(c);
            }
        } else if m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        if rel.is_empty() && !opts.root {
            continue;
        }
        let e = Entry {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: (kind == "file" || kind == "symlink").then(|| m.size()),
            rdev: (kind == "chardev" || kind == "blockdev")
                .then(|| (libc::major(m.rdev()), libc::minor(m.rdev()))),
            mtime: (m.mtime(), m.mtime_nsec()),
            atime: opts.atime.then(|| (m.atime(), m.atime_nsec())),
            nlink: m.nlink(),
            links: None,
            xattrs: xattrs(&p),
            target,
            hash: (kind == "file" && opts.contents).then(|| hash_file(&p)),
        };
        entries.insert(rel, e);
    }
    for (_, mut names) in inodes {
        if names.len() > 1 {
            names.sort();
            for n in &names {
                if let Some(e) = entries.get_mut(n) {
                    e.links = Some(names.clone());
                }
            }
        }
    }
    Listing { entries }
}

impl Listing {
    /// A readable account of every difference (`self` is the expected side), or None.
    pub fn diff(&self, got: &Listing) -> Option<String> {
        let mut lines = Vec::new();
        for (p, e) in &self.entries {
            match got.entries.get(p) {
                None => lines.push(format!("missing:    {} ({})", show(p), e.kind)),
                Some(g) if g != e => {
                    let mut d = Vec::new();
                    macro_rules! f {
                        ($field:ident, $fmt:expr) => {
                            if e.$field != g.$field {
                                d.push(format!(
                                    "{} expected {} got {}",
                                    stringify!($field),
                                    $fmt(&e.$field),
                                    $fmt(&g.$field)
                                ));
                            }
                        };
                    }
                    f!(kind, |v: &&str| v.to_string());
                    f!(mode, |v: &u32| format!("{v:04o}"));
                    f!(uid, |v: &u32| v.to_string());
                    f!(gid, |v: &u32| v.to_string());
                    f!(size, |v: &Option<u64>| format!("{v:?}"));
                    f!(rdev, |v: &Option<(u32, u32)>| format!("{v:?}"));
                    f!(mtime, |v: &(i64, i64)| format!("{}.{:09}", v.0, v.1));
                    f!(atime, |v: &Option<(i64, i64)>| v
                        .map_or("-".into(), |v| format!("{}.{:09}", v.0, v.1)));
                    f!(nlink, |v: &u64| v.to_string());
                    f!(links, |v: &Option<Vec<Vec<u8>>>| v.as_ref().map_or(
                        "-".into(),
                        |v| format!(
                            "[{}]",
                            v.iter().map(|x| show(x)).collect::<Vec<_>>().join(", ")
                        )
                    ));
                    f!(xattrs, |v: &BTreeMap<Vec<u8>, Vec<u8>>| format!(
                        "{{{}}}",
                        v.iter()
                            .map(|(k, x)| format!("{}=0x{}", show(k), hex(x)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    f!(target, |v: &Option<Vec<u8>>| v
                        .as_ref()
                        .map_or("-".into(), |v| show(v)));
                    f!(hash, |v: &Option<String>| v.clone().unwrap_or("-".into()));
                    lines.push(format!(
                        "different:  {} ({}): {}",
                        show(p),
                        e.kind,
                        d.join("; ")
                    ));
                }
                Some(_) => {}
            }
        }
        for (p, g) in &got.entries {
            if !self.entries.contains_key(p) {
                lines.push(format!("unexpected: {} ({})", show(p), g.kind));
            }
        }
        if lines.is_empty() {
            return None;
        }
        let n = lines.len();
        lines.truncate(60);
        let mut s = lines.join("\n");
        if n > 60 {
            let _ = write!(s, "\n... {} more differences", n - 60);
        }
        Some(s)
    }

    /// Leaves out the given paths (and everything under them).
    pub fn without(&self, paths: &[&[u8]]) -> Listing {
        let mut l = self.clone();
        l.entries.retain(|p, _| {
            !paths
                .iter()
                .any(|x| p.as_slice() == *x || (p.starts_with(x) && p.get(x.len()) == Some(&b'/')))
        });
        l
    }

    /// The sub-tree under `sub` (a relative path), re-rooted there.
    pub fn subtree(&self, sub: &[u8]) -> Listing {
        let mut entries = BTreeMap::new();
        for (p, e) in &self.entries {
            let rel: Option<Vec<u8>> = if p.as_slice() == sub {
                Some(Vec::new())
            } else if p.starts_with(sub) && p.get(sub.len()) == Some(&b'/') {
                Some(p[sub.len() + 1..].to_vec())
            } else {
                None
            };
            if let Some(r) = rel {
                entries.insert(r, e.clone());
            }
        }
        // Hard-link groups are relative to the new root too; names outside it are gone, and
        // so is their share of the link count.
        let mut out = Listing { entries };
        for e in out.entries.values_mut() {
            if let Some(l) = &e.links {
                let v: Vec<Vec<u8>> = l
                    .iter()
                    .filter(|p| p.starts_with(sub) && p.get(sub.len()) == Some(&b'/'))
                    .map(|p| p[sub.len() + 1..].to_vec())
                    .collect();
                e.nlink = v.len().max(1) as u64;
                e.links = (v.len() > 1).then_some(v);
            }
        }
        out
    }

    /// Drops atimes (for comparisons after the tree has been read by tools that touch them).
    pub fn no_atime(&self) -> Listing {
        let mut l = self.clone();
        for e in l.entries.values_mut() {
            e.atime = None;
        }
        l
    }

    pub fn paths_of_kind(&self, kind: &str) -> Vec<Vec<u8>> {
        self.entries
            .iter()
            .filter(|(_, e)| e.kind == kind)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

pub fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rsync -aHAXn --checksum --itemize-changes --delete SRC/ DEST/`: what rsync would change
/// (empty when the trees are identical for rsync). `excludes` are rsync patterns.
pub fn rsync_diff(src: &Path, dest: &Path, excludes: &[&str]) -> String {
    let mut c = Command::new("rsync");
    c.arg("-aHAXn")
        .arg("--checksum")
        .arg("--itemize-changes")
        .arg("--delete");
    for x in excludes {
        c.arg(format!("--exclude={x}"));
    }
    let mut s = src.as_os_str().to_os_string();
    s.push("/");
    let mut d = dest.as_os_str().to_os_string();
    d.push("/");
    c.arg(s).arg(d);
    let o = run_cmd(c, TIMEOUT);
    if o.code != Some(0) {
        return format!("rsync failed:\n{}", o.describe());
    }
    o.stdout_str()
}
