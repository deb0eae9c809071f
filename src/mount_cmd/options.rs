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
    /// `dev`/`nodev`, `suid`/`nosuid`, `exec`/`noexec` as given (`None`:
    /// not given); what the mount gets is [`MountOptions::live_flags`] or
    /// [`MountOptions::view_flags`].
    pub dev: Option<bool>,
    pub suid: Option<bool>,
    pub exec: Option<bool>,
    pub noatime: bool,
    pub sync: bool,
    pub dirsync: bool,
    /// The kernel's writeback cache; turns passthrough off. On by default
    /// with snapshots, off with `snapshots=off` (where passthrough is
    /// faster still); `writeback` and `nowriteback` choose it:
    /// docs/MOUNT.md, "The writeback cache".
    pub writeback: bool,
    /// `writeback` or `nowriteback` as given, before the default applies.
    pub writeback_asked: Option<bool>,
    /// The kernel's readahead for the mount, in bytes (`readahead=SIZE`).
    pub readahead: u64,
    /// The most dirty page-cache data of the mount not yet written to the
    /// daemon (`dirty_max=SIZE`; `None`: the kernel's bound, 1 % of the
    /// dirtyable memory): with the writeback cache, what a daemon killed
    /// with unflushed writes can lose, and what a burst of writes gathers.
    pub dirty_max: Option<u64>,
    /// The most a pending snapshot's pre-images may take in the diff area
    /// (`diff_max=SIZE`; `None`: half the space free on its filesystem at
    /// the commit); past it the snapshot fails, not the writes.
    pub diff_max: Option<u64>,
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

/// Default readahead: 4 MiB (the kernel gives a FUSE mount 128 KiB; 4 MiB
/// took cold sequential reads from 323 MB/s to 2.4 GB/s here).
pub const DEFAULT_READAHEAD: u64 = 4 << 20;

/// Default entry/attribute lifetime. Every change to the source is expected
/// to come through the mount (the kernel then updates or drops what it
/// cached), so a long lifetime is safe; see docs/MOUNT.md.
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for MountOptions {
    /// What a mount with no `-o` gets (the defaults resolved as `parse` does).
    fn default() -> Self {
        let mut o = MountOptions::unresolved();
        o.resolve();
        o
    }
}

impl MountOptions {
    /// The defaults before the options that depend on others are resolved.
    fn unresolved() -> Self {
        MountOptions {
            store: None,
            profile: None,
            threads: default_threads(),
            read_only: false,
            allow_other: None,
            snapdir: SnapDir::Hidden,
            dev: None,
            suid: None,
            exec: None,
            noatime: false,
            sync: false,
            dirsync: false,
            writeback: false,
            writeback_asked: None,
            readahead: DEFAULT_READAHEAD,
            dirty_max: None,
            diff_max: None,
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

/// Options of mount(8), fstab and systemd that mean nothing to bkfs: accepted
/// and ignored, so that one fstab line works through mount(8) and with
/// `bkfs mount` alike. mount(8) keeps most of them from the helper
/// (`defaults`, `auto`, `noauto`, `nouser`, `async`, `x-*`, `comment=`) and
/// passes `nofail`, `_netdev` and the atime options on (checked with
/// util-linux 2.38; docs/MOUNT.md).
fn ignored(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "auto"
            | "noauto"
            | "_netdev"
            | "nofail"
            | "nouser"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "nostrictatime"
            | "lazytime"
            | "nolazytime"
            | "diratime"
            | "nodiratime"
            | "silent"
            | "loud"
            | "default_permissions"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

/// Whether the mount honours device files, set-user-id and set-group-id
/// bits, and execution: its `nodev`, `nosuid` and `noexec` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
}

/// The mounts under a source that withhold devices, set-id bits or
/// execution: the first mount point found for each, or `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Withheld {
    pub dev: Option<PathBuf>,
    pub suid: Option<PathBuf>,
    pub exec: Option<PathBuf>,
}

impl MountOptions {
    /// Parses `-o` arguments; each may hold several options separated by commas.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, String> {
        let mut o = MountOptions::unresolved();
        for arg in args {
            for opt in arg.as_ref().split(',').filter(|s| !s.is_empty()) {
                o.apply(opt)?;
            }
        }
        o.resolve();
        Ok(o)
    }

    /// Settles the options whose default depends on others.
    fn resolve(&mut self) {
        // The writeback cache is what makes writes fast with snapshots on;
        // with snapshots off, passthrough is faster still (and the two
        // exclude each other).
        self.writeback = self.writeback_asked.unwrap_or(self.snapshots);
        if self.writeback {
            self.passthrough = false;
        }
    }

    /// The flags of a mount of a live tree. Each is on, as for any
    /// filesystem that root mounts with mount(8), unless an option turns it
    /// off (`nodev`, `nosuid`, `noexec`, or `user` and the others that imply
    /// them), or a mount under the source withholds it: like a bind mount,
    /// bkfs never honours in the source what the source's own filesystems do
    /// not. An option asking for what such a mount withholds gets a note.
    pub fn live_flags(&self, withheld: &Withheld) -> (Flags, Vec<String>) {
        let mut notes = Vec::new();
        let mut flag = |asked: Option<bool>, by: &Option<PathBuf>, name: &str| match by {
            None => asked.unwrap_or(true),
            Some(mp) => {
                if asked == Some(true) {
                    notes.push(format!(
                        "{name} ignored: {} is mounted no{name}, and what the source's \
                         filesystems withhold the mount withholds too",
                        mp.display()
                    ));
                }
                false
            }
        };
        let flags = Flags {
            dev: flag(self.dev, &withheld.dev, "dev"),
            suid: flag(self.suid, &withheld.suid, "suid"),
            exec: flag(self.exec, &withheld.exec, "exec"),
        };
        (flags, notes)
    }

    /// The flags of a store's snapshot view: `nodev` and `nosuid` unless
    /// `dev` and `suid` are given (snapshots keep device files and set-id
    /// programs as they were, old vulnerable versions included), `exec`
    /// unless `noexec`.
    pub fn view_flags(&self) -> Flags {
        Flags {
            dev: self.dev.unwrap_or(false),
            suid: self.suid.unwrap_or(false),
            exec: self.exec.unwrap_or(true),
        }
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
            "readahead" => self.readahead = size(opt, &need(value)?)?,
            "dirty_max" => self.dirty_max = Some(size(opt, &need(value)?)?),
            "diff_max" => self.diff_max = Some(size(opt, &need(value)?)?),
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
            "dev" => self.dev = Some(true),
            "nodev" => self.dev = Some(false),
            "suid" => self.suid = Some(true),
            "nosuid" => self.suid = Some(false),
            "exec" => self.exec = Some(true),
            "noexec" => self.exec = Some(false),
            // As mount(8) has them: a mount users may make is noexec,
            // nosuid, nodev unless later options say otherwise; one the
            // device's owner or group may make, nosuid, nodev.
            "user" | "users" => {
                self.exec = Some(false);
                self.suid = Some(false);
                self.dev = Some(false);
            }
            "owner" | "group" => {
                self.suid = Some(false);
                self.dev = Some(false);
            }
            "atime" => self.noatime = false,
            "noatime" => self.noatime = true,
            "sync" => self.sync = true,
            "async" => self.sync = false,
            "dirsync" => self.dirsync = true,
            "remount" => {
                return Err(
                    "remount is not supported by bkfs mount: `mount -o remount,ro \
                     MOUNTPOINT` (mount(8), through mount.fuse.bkfs) changes the kernel's \
                     flags (ro/rw, nodev, nosuid, noexec, atime...); for bkfs's own options, \
                     unmount, then mount with the new ones"
                        .to_string(),
                )
            }
            "writeback" => self.writeback_asked = Some(true),
            "nowriteback" => self.writeback_asked = Some(false),
            "nopassthrough" => self.passthrough = false,
            _ if ignored(opt) => {}
            _ => return Err(format!("unknown mount option '{opt}'")),
        }
        Ok(())
    }
}

/// A size: a number of bytes, or with K, M or G (powers of 1024).
fn size(opt: &str, v: &str) -> Result<u64, String> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(format!("{opt}: expected a size (4096, 512K, 4M, 1G)")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{opt}: expected a size (4096, 512K, 4M, 1G)"))
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
        // With snapshots the writeback cache is on by default; without
        // them, passthrough; either can be asked for.
        assert!(o.writeback && !o.passthrough);
        let off = MountOptions::parse(&["snapshots=off"]).unwrap();
        assert!(!off.writeback && off.passthrough);
        let wb = MountOptions::parse(&["writeback,nowriteback"]).unwrap();
        assert!(!wb.writeback);
        let off_wb = MountOptions::parse(&["snapshots=off,writeback"]).unwrap();
        assert!(off_wb.writeback && !off_wb.passthrough);
        assert_eq!((o.readahead, o.dirty_max), (4 << 20, None));
        let t = MountOptions::parse(&["readahead=512K,dirty_max=1G"]).unwrap();
        assert_eq!((t.readahead, t.dirty_max), (512 << 10, Some(1 << 30)));
        assert_eq!(o.diff_max, None);
        let d = MountOptions::parse(&["diff_max=64M"]).unwrap();
        assert_eq!(d.diff_max, Some(64 << 20));
        assert!(MountOptions::parse(&["diff_max=0"]).is_err());
        assert!(MountOptions::parse(&["diff_max"]).is_err());
        for bad in ["readahead=", "readahead=x", "dirty_max=0", "dirty_max=4T"] {
            assert!(MountOptions::parse(&[bad]).is_err(), "{bad}");
        }
        assert_eq!(o.snapdir, SnapDir::Hidden);
        assert_eq!(
            MountOptions::parse::<&str>(&[]).unwrap(),
            MountOptions::default()
        );
    }

    #[test]
    fn mount8_options_are_accepted_and_ignored() {
        let o = MountOptions::parse(&[
            "defaults,noauto,_netdev,nofail,auto,nouser,x-systemd.automount,x-systemd.requires=a.service",
            "x-gvfs-show,comment=x,relatime,strictatime,lazytime,nodiratime,silent,default_permissions",
        ])
        .unwrap();
        assert_eq!(o, MountOptions::default());
    }

    #[test]
    fn every_line_of_the_fstab_example_parses() {
        let example = include_str!("../../mount/fstab.example");
        let lines: Vec<&str> = example
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .collect();
        assert!(lines.len() >= 3);
        for line in lines {
            let opts = line.split_whitespace().nth(3).unwrap();
            MountOptions::parse(&[opts]).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn user_mounts_imply_what_mount8_implies() {
        // mount(8) passes `user` as "noexec,nosuid,nodev,user", and the
        // positive options of an fstab line after them ("users,dev").
        let o = MountOptions::parse(&["user"]).unwrap();
        assert_eq!(
            (o.dev, o.suid, o.exec),
            (Some(false), Some(false), Some(false))
        );
        let o = MountOptions::parse(&["users,exec,suid,dev"]).unwrap();
        assert_eq!(
            (o.dev, o.suid, o.exec),
            (Some(true), Some(true), Some(true))
        );
        let o = MountOptions::parse(&["owner"]).unwrap();
        assert_eq!((o.dev, o.suid, o.exec), (Some(false), Some(false), None));
        let o = MountOptions::parse(&["sync,async"]).unwrap();
        assert!(!o.sync);
    }

    #[test]
    fn flags_default_to_what_the_source_allows() {
        let all = Flags {
            dev: true,
            suid: true,
            exec: true,
        };
        let none = Withheld::default();
        let o = MountOptions::default();
        assert_eq!(o.live_flags(&none), (all, vec![]));
        let o = MountOptions::parse(&["nodev,noexec"]).unwrap();
        let (f, notes) = o.live_flags(&none);
        assert!(!f.dev && f.suid && !f.exec && notes.is_empty());
        // What a mount under the source withholds stays withheld; asking for
        // it gets a note.
        let tmp = Withheld {
            dev: Some(PathBuf::from("/tmp")),
            suid: Some(PathBuf::from("/tmp")),
            exec: None,
        };
        let (f, notes) = MountOptions::default().live_flags(&tmp);
        assert!(!f.dev && !f.suid && f.exec && notes.is_empty());
        let o = MountOptions::parse(&["dev,suid"]).unwrap();
        let (f, notes) = o.live_flags(&tmp);
        assert!(!f.dev && !f.suid && f.exec);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("dev ignored: /tmp is mounted nodev"),
            "{notes:?}"
        );
        // A store's view: nodev, nosuid unless asked.
        let f = MountOptions::default().view_flags();
        assert!(!f.dev && !f.suid && f.exec);
        let f = MountOptions::parse(&["dev,suid,noexec"])
            .unwrap()
            .view_flags();
        assert!(f.dev && f.suid && !f.exec);
    }

    #[test]
    fn switches() {
        let o = MountOptions::parse(&[
            "dev,suid,allow_other,snapdir=visible,writeback,log=/tmp/l,cache_timeout=0.5",
        ])
        .unwrap();
        assert_eq!((o.dev, o.suid), (Some(true), Some(true)));
        assert!(o.writeback && !o.passthrough);
        assert_eq!(o.allow_other, Some(true));
        assert_eq!(o.snapdir, SnapDir::Visible);
        assert_eq!(o.log, Some(PathBuf::from("/tmp/l")));
        assert_eq!(o.cache_timeout, Duration::from_millis(500));
        // Passthrough is for mounts without snapshots (which default to the
        // writeback cache instead).
        let o = MountOptions::parse(&["snapshots=off,passthrough=ro"]).unwrap();
        assert!(o.passthrough && !o.passthrough_writes);
        let o = MountOptions::parse(&["snapshots=off,nopassthrough"]).unwrap();
        assert!(!o.passthrough);
        let o = MountOptions::parse(&["snapshots=off,nopassthrough,passthrough"]).unwrap();
        assert!(o.passthrough && o.passthrough_writes);
        let o = MountOptions::parse(&["passthrough=ro"]).unwrap();
        assert!(o.writeback && !o.passthrough);
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
            ("user=nobody", "unknown mount option 'user=nobody'"),
            ("remount,ro", "remount is not supported"),
        ] {
            let err = MountOptions::parse(&[bad]).unwrap_err();
            assert!(err.contains(msg), "{bad}: {err}");
        }
    }
}
