//! Snapshot records: `snapshots/NAME.json`, written last, after every blob
//! they reference is durable in a pack and listed in an index file.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::{Error, IoContext, Result};
use super::id::Id;
use crate::os;

/// What a snapshot's point in time guarantees; stored and shown as
/// `app_consistent`, `fs_consistent` or `crash_consistent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Every application of the profile was quiesced.
    AppConsistent,
    /// The write barrier alone: every write completed before the point in
    /// time is in, none after.
    #[default]
    FsConsistent,
    /// Quiescing failed (or was cut short) and the profile allowed going on.
    CrashConsistent,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::AppConsistent => "app_consistent",
            Consistency::FsConsistent => "fs_consistent",
            Consistency::CrashConsistent => "crash_consistent",
        }
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    /// RFC 3339 UTC, nanoseconds.
    pub time: String,
    pub tree: Id,
    pub source: String,
    pub hostname: String,
    #[serde(default)]
    pub stats: Stats,
    /// How the point in time was taken, for snapshots taken through a mount
    /// (absent for `bkfs backup`, whose snapshot is "as read").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
}

/// How a mount fixed a snapshot's point in time (docs/FORMAT.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Capture {
    /// When the snapshot was asked for, RFC 3339 UTC.
    pub requested: String,
    pub consistency: Consistency,
    /// Why that consistency (which applications were quiesced, or why not).
    #[serde(default)]
    pub why: String,
    /// How long write-class operations were held, milliseconds.
    pub barrier_ms: f64,
    /// From the first application frozen to the last thawed, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<f64>,
    /// Each quiesced application's result, timings and positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Bytes read from the source (files that changed since the parent).
    pub bytes_read: u64,
    /// Bytes of content not in the store before.
    pub bytes_new: u64,
    /// What those new bytes took in packs.
    pub bytes_stored: u64,
    /// What the new directory listings (trees) took in packs.
    #[serde(default)]
    pub tree_bytes_stored: u64,
    pub seconds: f64,
    /// Source entries that could not be read and are missing from the snapshot.
    pub errors: u64,
}

/// Snapshot names become directory names under `.snapshots/` and appear in
/// `SNAP:PATH` arguments, hence the rules.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why| Err(Error::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if name.contains('/') || name.contains(':') || name.contains('\0') {
        return bad("contains '/', ':' or NUL");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if name == "latest" {
        return bad("'latest' always means the newest snapshot");
    }
    Ok(())
}

/// An automatic name: the UTC time, sortable, without ':' (which tools such as
/// rsync and scp read as a host separator).
pub fn auto_name(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-22T03:04:05Z
    s.replace(':', "")
}

pub fn path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.json"))
}

pub fn save(dir: &Path, tmp_dir: &Path, snap: &Snapshot) -> Result<()> {
    let target = path(dir, &snap.name);
    if target.exists() {
        return Err(Error::SnapshotExists(snap.name.clone()));
    }
    let tmp = tmp_dir.join(format!("{}.json.tmp", snap.name));
    let json = serde_json::to_vec_pretty(snap).expect("snapshots always serialize");
    let ctx = || format!("writing {}", tmp.display());
    os::file::write_file(&tmp, &json, "snapshot.write").ctx(ctx)?;
    os::file::sync_path(&tmp, "snapshot.fsync").ctx(ctx)?;
    // A hard link, not a rename: it fails if a snapshot of that name appeared meanwhile.
    os::dir::hard_link(&tmp, &target, "snapshot.link").map_err(|e| {
        if e == os::Errno::EEXIST {
            Error::SnapshotExists(snap.name.clone())
        } else {
            Error::io(format!("writing {}", target.display()), e)
        }
    })?;
    let _ = fs::remove_file(&tmp);
    super::fsync_dir(dir)
}

pub fn load(dir: &Path, name: &str) -> Result<Snapshot> {
    let p = path(dir, name);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSnapshot(name.to_string()))
        }
        Err(e) => return Err(Error::io(format!("reading {}", p.display()), e)),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("snapshot record {}: {e}", p.display())))
}

/// All readable snapshots, oldest first. A damaged record is left out (and
/// named by [`damaged`], which `check` reports) rather than making every
/// other snapshot unreachable.
pub fn list(dir: &Path) -> Result<Vec<Snapshot>> {
    Ok(list_all(dir)?.0)
}

/// Names of the snapshot records that cannot be read, with the reason.
pub fn damaged(dir: &Path) -> Result<Vec<String>> {
    Ok(list_all(dir)?.1)
}

fn list_all(dir: &Path) -> Result<(Vec<Snapshot>, Vec<String>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let e = e.ctx(|| format!("reading {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        match load(dir, name) {
            Ok(s) => out.push(s),
            Err(e @ Error::Corrupt(_)) => bad.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then(a.name.cmp(&b.name)));
    Ok((out, bad))
}

pub fn remove(dir: &Path, name: &str) -> Result<()> {
    if validate_name(name).is_err() {
        return Err(Error::NoSnapshot(name.into()));
    }

    let p = path(dir, name);
    match fs::remove_file(&p) {
        Ok(()) => super::fsync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NoSnapshot(name.into())),
        Err(e) => Err(Error::io(format!("removing {}", p.display()), e)),
    }
}
