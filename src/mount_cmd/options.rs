//! The `-o` mount options of `bkfs mount` and `mount -t bkfs`.

use std::path::PathBuf;
use std::time::Duration;

/// Where the virtual directories (`.snapshots`, `.control`, `.quiesce`) show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapDir {
    /// Reachable by name, not listed by readdir of the root (the default).
    Hidden,
    /// Also listed.
    Visible,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// The store (`store=`); `SOURCE/.bkfs` when not given.
    pub store: Option<PathBuf>,
    /// The quiesce profile (`profile=`).
    pub profile: Option<PathBuf>,
    /// FUSE worker threads (`threads=`).
    pub threads: usize,
    pub read_only: bool,
    /// `allow_other`/`noallow_other`; unset means "yes when mounted by root".
    pub allow_other: Option<bool>,
    pub snapdir: SnapDir,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    pub noatime: bool,
    pub sync: bool,
    pub dirsync: bool,
    /// The kernel's writeback cache (`writeback`); turns passthrough off.
    pub writeback: bool,
    /// Kernel passthrough (`nopassthrough` turns it off).
    pub passthrough: bool,
    /// Passthrough also for opens that write (`passthrough=ro` limits it
    /// to read-only opens).
    pub passthrough_writes: bool,
    /// Log to this file instead of syslog (`log=`).
    pub log: Option<PathBuf>,
    /// Entry and attribute cache lifetime (`cache_timeout=SECONDS`).
    pub cache_timeout: Duration,
    /// Nodes held by descriptors before file handles are used (`fd_budget=N`).
    pub fd_budget: Option<usize>,
    /// Snapshots through the mount (`snapshots=off`: a plain passthrough
    /// mount, with kernel passthrough for writes too).
    pub snapshots: bool,
    /// `passthrough` was given (it is ignored when snapshots are on).
    pub passthrough_explicit: bool,
}

/// Default entry/attribute lifetime. Every change to the source is expected
/// to come through the mount (the kernel then updates or drops what it
/// cached), so a long lifetime is safe; see docs/MOUNT.md.
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            store: None,
            profile: None,
            threads: default_threads(),
            read_only: false,
            allow_other: None,
            snapdir: SnapDir::Hidden,
            dev: false,
            suid: false,
            exec: true,
            noatime: false,
            sync: false,
            dirsync: false,
            writeback: false,
            passthrough: true,
            passthrough_writes: true,
            log: None,
            cache_timeout: DEFAULT_CACHE_TIMEOUT,
            fd_budget: None,
            snapshots: true,
            passthrough_explicit: false,
        }
    }
}

/// One worker per two CPUs, 1 to 8. On this 2-CPU machine one worker had
/// the better metadata figures in a 3-run median of tools/bench-live.sh
/// (create 0.32 of native against 0.12, tar x 0.14 against 0.10): the
/// program using the mount needs the other CPU, and every request costs two
/// context switches. A later single run put two workers ahead for tar x;
/// the machine was shared and noisy. Reads and writes of passthrough files
/// do not involve the workers at all.
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cpus / 2).clamp(1, 8)
}

/// Options mount(8) passes to helpers or keeps for itself; accepted, ignored.
fn ignored(name: &str) -> bool {
    matches!(
        name,
        "defaults"
            | "auto"
            | "noauto"
            | "_netdev"
            | "nofail"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "relatime"
            | "strictatime"
            | "lazytime"
            | "nolazytime"
            | "default_permissions"
            | "async"
            | "nodiratime"
            | "diratime"
    ) || name.starts_with("x-")
        || name.starts_with("comment=")
}

impl MountOptions {
    /// Parses `-o` arguments; each may hold several options separated by commas.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, String> {
        let mut o = MountOptions::default();
        for arg in args {
            for opt in arg.as_ref().split(',').filter(|s| !s.is_empty()) {
                o.apply(opt)?;
            }
        }
        if o.writeback && o.passthrough {
            // The writeback cache and passthrough exclude each other.
            o.passthrough = false;
        }
        Ok(o)
    }

    fn apply(&mut self, opt: &str) -> Result<(), String> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let need = |v: Option<&str>| -> Result<String, String> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(format!("mount option '{name}' needs a value ({name}=...)")),
            }
        };
        match name {
            "store" => self.store = Some(PathBuf::from(need(value)?)),
            "profile" => self.profile = Some(PathBuf::from(need(value)?)),
            "log" => self.log = Some(PathBuf::from(need(value)?)),
            "threads" => {
                let v = need(value)?;
                self.threads = match v.parse::<usize>() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return Err(format!("threads={v}: expected a number from 1 to 64")),
                };
            }
            "fd_budget" => {
                let v = need(value)?;
                self.fd_budget = Some(
                    v.parse()
                        .map_err(|_| format!("fd_budget={v}: expected a number"))?,
                );
            }
            "cache_timeout" => {
                let v = need(value)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s <= 86400.0)
                    .ok_or_else(|| format!("cache_timeout={v}: expected seconds (0 to 86400)"))?;
                self.cache_timeout = Duration::from_secs_f64(secs);
            }
            "passthrough" => {
                self.passthrough = true;
                self.passthrough_explicit = true;
                self.passthrough_writes = match value {
                    Some("ro") => false,
                    None | Some("rw") => true,
                    _ => return Err("passthrough= takes 'ro' or 'rw'".to_string()),
                }
            }
            "snapshots" => {
                self.snapshots = match value {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err("snapshots= takes 'on' or 'off'".to_string()),
                }
            }
            "snapdir" => {
                self.snapdir = match value {
                    Some("hidden") => SnapDir::Hidden,
                    Some("visible") => SnapDir::Visible,
                    _ => return Err("snapdir= takes 'hidden' or 'visible'".to_string()),
                }
            }
            _ if value.is_some() && !ignored(opt) => {
                return Err(format!("unknown mount option '{opt}'"));
            }
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" => self.allow_other = Some(true),
            "noallow_other" => self.allow_other = Some(false),
            "dev" => self.dev = true,
            "nodev" => self.dev = false,
            "suid" => self.suid = true,
            "nosuid" => self.suid = false,
            "exec" => self.exec = true,
            "noexec" => self.exec = false,
            "atime" => self.noatime = false,
            "noatime" => self.noatime = true,
            "sync" => self.sync = true,
            "dirsync" => self.dirsync = true,
            "writeback" => self.writeback = true,
            "nowriteback" => self.writeback = false,
            "nopassthrough" => self.passthrough = false,
            _ if ignored(opt) => {}
            _ => return Err(format!("unknown mount option '{opt}'")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let o =
            MountOptions::parse(&["store=/b/s.bkfs,profile=/etc/p.toml", "threads=3,ro"]).unwrap();
        assert_eq!(o.store, Some(PathBuf::from("/b/s.bkfs")));
        assert_eq!(o.profile, Some(PathBuf::from("/etc/p.toml")));
        assert_eq!(o.threads, 3);
        assert!(o.read_only);
        assert!(o.passthrough && !o.writeback);
        assert_eq!(o.snapdir, SnapDir::Hidden);
        assert_eq!(
            MountOptions::parse::<&str>(&[]).unwrap(),
            MountOptions::default()
        );
    }

    #[test]
    fn mount8_options_are_accepted_and_ignored() {
        let o = MountOptions::parse(&[
            "defaults,noauto,_netdev,nofail,user,auto,x-systemd.automount,x-gvfs-show,relatime",
        ])
        .unwrap();
        assert_eq!(o, MountOptions::default());
    }

    #[test]
    fn switches() {
        let o = MountOptions::parse(&[
            "dev,suid,allow_other,snapdir=visible,writeback,log=/tmp/l,cache_timeout=0.5",
        ])
        .unwrap();
        assert!(o.dev && o.suid && o.writeback && !o.passthrough);
        assert_eq!(o.allow_other, Some(true));
        assert_eq!(o.snapdir, SnapDir::Visible);
        assert_eq!(o.log, Some(PathBuf::from("/tmp/l")));
        assert_eq!(o.cache_timeout, Duration::from_millis(500));
        let o = MountOptions::parse(&["passthrough=ro"]).unwrap();
        assert!(o.passthrough && !o.passthrough_writes);
        let o = MountOptions::parse(&["nopassthrough"]).unwrap();
        assert!(!o.passthrough);
        let o = MountOptions::parse(&["nopassthrough,passthrough"]).unwrap();
        assert!(o.passthrough && o.passthrough_writes);
    }

    #[test]
    fn bad_options_give_clear_errors() {
        for (bad, msg) in [
            ("frobnicate", "unknown mount option 'frobnicate'"),
            ("store=", "needs a value"),
            ("threads=0", "threads=0"),
            ("threads=x", "threads=x"),
            ("snapdir=maybe", "snapdir="),
            ("ro=1", "unknown mount option 'ro=1'"),
            ("cache_timeout=-1", "cache_timeout=-1"),
        ] {
            let err = MountOptions::parse(&[bad]).unwrap_err();
            assert!(err.contains(msg), "{bad}: {err}");
        }
    }
}
