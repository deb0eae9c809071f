//! A store made for a test, and the `bkfs` commands on it.

use super::*;

pub struct Store {
    _dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
}

impl Store {
    /// A store path inside a fresh temporary directory; the store itself does not exist yet
    /// (the first backup creates it).
    pub fn new() -> Store {
        let dir = tempdir();
        let path = dir.path().join("store");
        Store {
            _dir: Some(dir),
            path,
        }
    }
    pub fn at(path: impl Into<PathBuf>) -> Store {
        Store {
            _dir: None,
            path: path.into(),
        }
    }
    /// `bkfs ARGS --store S` as a Command, to spawn or to adjust.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(bkfs_bin());
        c.args(args)
            .arg("--store")
            .arg(&self.path)
            .env_remove("BKFS_STORE");
        c
    }
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd(self.cmd(args), TIMEOUT)
    }
    pub fn backup(&self, src: &Path, name: &str) -> Out {
        self.run([
            OsStr::new("backup"),
            src.as_os_str(),
            OsStr::new("--name"),
            OsStr::new(name),
        ])
    }
    pub fn restore(&self, snap: &str, dest: &Path) -> Out {
        self.run([OsStr::new("restore"), OsStr::new(snap), dest.as_os_str()])
    }
    pub fn check(&self) -> Out {
        self.run(["check"])
    }
    pub fn check_data(&self) -> Out {
        self.run(["check", "--read-data"])
    }
    pub fn list(&self) -> Out {
        self.run(["list"])
    }
    /// Snapshot names that `bkfs list --json` reports (falls back to words of `bkfs list`).
    pub fn snapshot_names(&self) -> Vec<String> {
        let o = self.run(["list", "--json"]);
        o.ok("bkfs list --json");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("bkfs list --json is not JSON ({e})\n{}", o.describe()));
        let arr = match &v {
            serde_json::Value::Array(a) => a.clone(),
            serde_json::Value::Object(m) => m
                .get("snapshots")
                .and_then(|s| s.as_array().cloned())
                .unwrap_or_default(),
            _ => vec![],
        };
        arr.iter()
            .filter_map(|s| s.get("name").and_then(|n| n.as_str()).map(String::from))
            .collect()
    }
    /// Total bytes of the store's files (as `du -sb` counts them: apparent sizes).
    pub fn du(&self) -> u64 {
        walk_files(&self.path)
            .iter()
            .map(|p| fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
    /// The pack files: every regular file under STORE/packs.
    pub fn packs(&self) -> Vec<PathBuf> {
        walk_files(&self.path.join("packs"))
    }
    /// Every regular file of the store, relative.
    pub fn files(&self) -> BTreeSet<PathBuf> {
        walk_files(&self.path)
            .into_iter()
            .map(|p| p.strip_prefix(&self.path).unwrap().to_path_buf())
            .collect()
    }
}

/// Regular files under a directory, recursively (no symlink following).
pub fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A temporary directory on the root filesystem (so xattrs, ACLs and devices work).
pub fn tempdir() -> tempfile::TempDir {
    let base = std::env::var_os("BKFS_TEST_TMP").unwrap_or_else(|| OsString::from("/var/tmp"));
    let _ = fs::create_dir_all(&base);
    tempfile::Builder::new()
        .prefix("bkfs-storetest-")
        .tempdir_in(&base)
        .expect("tempdir")
}
