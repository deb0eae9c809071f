//! `bkfs mount SOURCE MOUNTPOINT [-o OPTIONS] [--foreground]`, and
//! `bkfs mount --store S MOUNTPOINT`, a read-only view of a store's
//! snapshots without a source ([`crate::snapview`]).
//!
//! The entry point is [`run`]; `main.rs` only parses [`MountArgs`] and calls it.
//! Without `--foreground` the command forks a daemon and returns once the
//! mount is live, or with the daemon's error if it could not mount.

mod bdi;
mod daemon;
mod logging;
pub mod options;

use std::path::{Path, PathBuf};

pub use options::MountOptions;
use options::Withheld;

/// Arguments of `bkfs mount` (and of the `mount.bkfs` helper).
#[derive(clap::Args, Debug, Clone)]
#[command(override_usage = "bkfs mount SOURCE MOUNTPOINT [OPTIONS]\n       \
                            bkfs mount --store S MOUNTPOINT [OPTIONS]")]
pub struct MountArgs {
    /// The directory whose live tree the mount shows (omitted with --store).
    #[arg(value_name = "SOURCE")]
    pub source: Option<PathBuf>,
    /// Where to mount it (an empty directory).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: Option<PathBuf>,
    /// Show the snapshots of store S read-only, without a source (see docs/SNAPVIEW.md).
    #[arg(long, short = 's', value_name = "S")]
    pub store: Option<PathBuf>,
    /// Mount options, comma-separated (may repeat); see docs/MOUNT.md.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Stay in the foreground and log to stderr (unless log= is given).
    #[arg(short = 'f', long)]
    pub foreground: bool,
}

/// What a mount serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The live tree of a source directory.
    Live(PathBuf),
    /// The sealed snapshots of a store, read-only.
    Store(PathBuf),
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Live(p) => write!(f, "{}", p.display()),
            Served::Store(p) => write!(f, "the snapshots of store {}", p.display()),
        }
    }
}

impl MountArgs {
    /// What to serve and where, from the positional arguments and --store.
    fn target(&self) -> Result<(Served, &Path), MountError> {
        let usage = |m: &str| Err(MountError::Usage(m.to_string()));
        match (&self.store, &self.source, &self.mountpoint) {
            (Some(_), _, Some(_)) => {
                usage("with --store, give only MOUNTPOINT (a store's snapshots need no source)")
            }
            (Some(store), Some(mp), None) => Ok((Served::Store(store.clone()), mp.as_path())),
            (None, Some(src), Some(mp)) => Ok((Served::Live(src.clone()), mp.as_path())),
            (_, None, _) => usage("missing MOUNTPOINT"),
            (None, Some(_), None) => usage("missing MOUNTPOINT (or use --store S MOUNTPOINT)"),
        }
    }
}

/// Why a mount failed. `Usage` errors (bad options) deserve exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl MountError {
    /// Process exit status for this error (see docs/CLI.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            MountError::Usage(_) => 2,
            MountError::Failed(_) => 1,
        }
    }
}

fn failed(msg: impl Into<String>) -> MountError {
    MountError::Failed(msg.into())
}

/// Mounts SOURCE on MOUNTPOINT; returns when the mount is live (daemon mode)
/// or when it is unmounted again (foreground).
pub fn run(args: &MountArgs) -> Result<(), MountError> {
    let mut opts = MountOptions::parse(&args.options).map_err(MountError::Usage)?;
    // The daemon works from `/`: a relative store=, profile= or log= means
    // the directory `bkfs mount` was run in, as SOURCE and MOUNTPOINT do.
    for path in [&mut opts.store, &mut opts.profile, &mut opts.log]
        .into_iter()
        .flatten()
    {
        *path =
            std::path::absolute(&*path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    }
    let (served, mountpoint) = args.target()?;
    let served = match served {
        Served::Live(source) => Served::Live(check_source(&source)?),
        Served::Store(store) => {
            if opts.store.is_some() {
                return Err(MountError::Usage(
                    "give the store once: --store S, not also -o store=".into(),
                ));
            }
            Served::Store(check_store(&store)?)
        }
    };
    let flags = match &served {
        Served::Live(source) => {
            let (flags, notes) = opts.live_flags(&withheld(source));
            for note in notes {
                eprintln!("bkfs mount: warning: {note}");
            }
            flags
        }
        Served::Store(_) => opts.view_flags(),
    };
    let mountpoint = check_mountpoint(mountpoint)?;
    if args.foreground {
        daemon::serve(&served, &mountpoint, &opts, flags, None, true)
    } else {
        daemon::spawn(&served, &mountpoint, &opts, flags)
    }
}

/// Which mounts under `source` (canonical) withhold devices, set-id bits or
/// execution: the one holding it, and those mounted below it now (a mount
/// made below it later is not seen).
fn withheld(source: &Path) -> Withheld {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut w = Withheld::default();
    let mounts = mountinfo();
    let mark = |on: bool, slot: &mut Option<PathBuf>, at: &Path| {
        if on && slot.is_none() {
            *slot = Some(at.to_path_buf());
        }
    };
    // The mount holding the source: its flags from statvfs, its mount point
    // (for messages) the deepest one above the source.
    if let Ok(st) = statvfs(source) {
        let f = st.flags();
        let at = mounts
            .iter()
            .filter(|m| source.starts_with(&m.point))
            .max_by_key(|m| m.point.components().count())
            .map_or(source, |m| m.point.as_path());
        mark(f.contains(FsFlags::ST_NODEV), &mut w.dev, at);
        mark(f.contains(FsFlags::ST_NOSUID), &mut w.suid, at);
        mark(f.contains(FsFlags::ST_NOEXEC), &mut w.exec, at);
    }
    for m in mounts
        .iter()
        .filter(|m| m.point != source && m.point.starts_with(source))
    {
        let has = |o: &str| m.options.split(',').any(|x| x == o);
        mark(has("nodev"), &mut w.dev, &m.point);
        mark(has("nosuid"), &mut w.suid, &m.point);
        mark(has("noexec"), &mut w.exec, &m.point);
    }
    w
}

/// One line of /proc/self/mountinfo: mount point and per-mount options.
struct MountEntry {
    point: PathBuf,
    options: String,
}

fn mountinfo() -> Vec<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').skip(4);
            let point = fields.next()?;
            let options = fields.next()?;
            Some(MountEntry {
                point: PathBuf::from(unescape_mountinfo(point)),
                options: options.to_string(),
            })
        })
        .collect()
}

/// The store must open (the daemon opens it again and takes its read lock).
fn check_store(store: &Path) -> Result<PathBuf, MountError> {
    let canon = store
        .canonicalize()
        .map_err(|e| failed(format!("store {}: {e}", store.display())))?;
    crate::store::Store::open(&canon).map_err(|e| failed(e.to_string()))?;
    Ok(canon)
}

fn check_source(source: &Path) -> Result<PathBuf, MountError> {
    let canon = source
        .canonicalize()
        .map_err(|e| failed(format!("source {}: {e}", source.display())))?;
    if !canon.is_dir() {
        return Err(failed(format!(
            "source {}: not a directory",
            source.display()
        )));
    }
    Ok(canon)
}

fn check_mountpoint(mp: &Path) -> Result<PathBuf, MountError> {
    let canon = mp
        .canonicalize()
        .map_err(|e| failed(format!("mountpoint {}: {e}", mp.display())))?;
    if !canon.is_dir() {
        return Err(failed(format!(
            "mountpoint {}: not a directory",
            mp.display()
        )));
    }
    if is_mountpoint(&canon) {
        return Err(failed(format!(
            "mountpoint {}: something is already mounted there",
            mp.display()
        )));
    }
    let mut entries = std::fs::read_dir(&canon)
        .map_err(|e| failed(format!("mountpoint {}: {e}", mp.display())))?;
    if entries.next().is_some() {
        return Err(failed(format!(
            "mountpoint {}: directory is not empty",
            mp.display()
        )));
    }
    Ok(canon)
}

/// Whether `path` (canonical) is the mount point of some mount.
pub fn is_mountpoint(path: &Path) -> bool {
    mountinfo().iter().any(|m| m.point == path)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn root_is_a_mountpoint_and_clear_errors_for_bad_paths() {
        assert!(is_mountpoint(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        let err = check_source(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        std::fs::write(dir.path().join("x"), b"").unwrap();
        let err = check_mountpoint(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let err = check_mountpoint(Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("already mounted"), "{err}");
    }
}
