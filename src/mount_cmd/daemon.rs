//! Starting, detaching and stopping the mount daemon.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::Arc;

use fuser::{MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use super::logging::{self, Target};
use super::options::{Flags, MountOptions};
use super::{failed, MountError, Served};
use crate::control::tree::ControlTree;
use crate::control::{Control, CONTROL_DIR_ID, QUIESCE_DIR_ID};
use crate::fuse::{Adapter, Config};
use crate::live::tree::LiveTree;
use crate::live::{Live, LiveOptions};
use crate::os::proc::{self, ForkResult};
use crate::snapshot::barrier::Barrier;
use crate::snapshot::diff::Snapshots;
use crate::snapshot::fence::Fences;
use crate::snapshot::requester::Snapshotter;
use crate::snapshot::tree::SnapshotsTree;
use crate::snapview::ids::SNAPSHOTS_DIR_ID;
use crate::snapview::tree::ViewTree;
use crate::snapview::{SnapView, ViewConfig};
use crate::vfs::mux::{Mux, Virtual, VirtualNames};
use crate::vfs::{NodeId, ROOT_ID};

/// Forks the daemon and waits until it reports the mount live or failed.
pub fn spawn(
    served: &Served,
    mountpoint: &Path,
    opts: &MountOptions,
    flags: Flags,
) -> Result<(), MountError> {
    let (rx, tx) = nix::unistd::pipe().map_err(|e| failed(format!("pipe: {e}")))?;
    // No thread has been started yet (argument parsing and checks only):
    // proc::fork checks it.
    match proc::fork() {
        Err(e) => Err(failed(format!("fork: {e}"))),
        Ok(ForkResult::Parent { .. }) => {
            drop(tx);
            let mut msg = String::new();
            let _ = File::from(rx).read_to_string(&mut msg);
            match msg.trim() {
                "ok" => Ok(()),
                "" => Err(failed(
                    "the mount daemon exited before the mount was ready (see the system log)",
                )),
                err => Err(failed(err.to_string())),
            }
        }
        Ok(ForkResult::Child) => {
            drop(rx);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            detach_stdio();
            let code = match serve(served, mountpoint, opts, flags, Some(tx), false) {
                Ok(()) => 0,
                Err(e) => e.exit_code(),
            };
            std::process::exit(code);
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null, so that whoever ran
/// `mount` (and waits for its output to end) is not held by the daemon.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        proc::redirect_stdio(null.as_fd());
    }
}

/// Names in the source's root to hide: the default store name, and the
/// store's own name when `store=` points directly inside the source.
fn hidden_names(source: &Path, opts: &MountOptions) -> Vec<OsString> {
    let mut names = LiveOptions::default().hidden_names;
    if let Some(store) = &opts.store {
        let parent = store.parent().and_then(|p| p.canonicalize().ok());
        if parent.as_deref() == Some(source) {
            if let Some(name) = store.file_name() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_os_string());
                }
            }
        }
    }
    names
}

/// The kernel mount options. `fsname` shows as the source in /proc/mounts,
/// findmnt and df, and the type shows as `fuse.bkfs`.
fn mount_options(
    fsname: &Path,
    read_only: bool,
    flags: Flags,
    opts: &MountOptions,
) -> Vec<MountOption> {
    let flag = |on: bool, yes: MountOption, no: MountOption| if on { yes } else { no };
    let mut v = vec![
        MountOption::FSName(fsname.display().to_string()),
        // fuser hands `Subtype` to fusermount only; mounting by itself, it
        // would leave the type plain `fuse`. The kernel takes `subtype=` as
        // a mount option (and fusermount3 accepts it too).
        MountOption::CUSTOM("subtype=bkfs".to_string()),
        MountOption::DefaultPermissions,
        flag(flags.dev, MountOption::Dev, MountOption::NoDev),
        flag(flags.suid, MountOption::Suid, MountOption::NoSuid),
        flag(read_only, MountOption::RO, MountOption::RW),
        flag(flags.exec, MountOption::Exec, MountOption::NoExec),
    ];
    if opts.noatime {
        v.push(MountOption::NoAtime);
    }
    if opts.sync {
        v.push(MountOption::Sync);
    }
    if opts.dirsync {
        v.push(MountOption::DirSync);
    }
    v
}

/// Signals that end the daemon with a clean unmount.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Mounts and serves until unmounted. `notify` receives "ok" once the mount
/// is live, or the error that prevented it.
pub fn serve(
    served: &Served,
    mountpoint: &Path,
    opts: &MountOptions,
    flags: Flags,
    notify: Option<OwnedFd>,
    foreground: bool,
) -> Result<(), MountError> {
    let target = match (&opts.log, foreground) {
        (Some(path), _) => Target::File(path),
        (None, true) => Target::Stderr,
        (None, false) => Target::Syslog,
    };
    // Whoever started the mount prints the error that fails it: the
    // command waiting on `notify`, or `main` in the foreground. Where the
    // log is that same stderr, logging the error too would print it twice.
    let log_is_stderr = matches!(target, Target::Stderr);
    let mut notify = notify.map(File::from);
    let mut report = |msg: &str| {
        if let Some(mut pipe) = notify.take() {
            let _ = pipe.write_all(msg.as_bytes());
        }
    };
    if let Err(e) = logging::init(target) {
        let e = failed(format!("log file: {e}"));
        report(&e.to_string());
        return Err(e);
    }
    // The workers fuser starts inherit this mask; a dedicated thread takes
    // the signals with sigwait and unmounts.
    let signals = stop_signals();
    let _ = signals.thread_block();

    let session = match start(served, mountpoint, opts, flags) {
        Ok(s) => s,
        Err(e) => {
            if !log_is_stderr {
                tracing::error!("mount of {served} on {} failed: {e}", mountpoint.display());
            }
            report(&e.to_string());
            return Err(e);
        }
    };
    if let Err(e) = super::bdi::tune(mountpoint, opts.readahead, opts.dirty_max) {
        tracing::warn!("readahead and dirty-data bound left as the kernel set them: {e}");
    }
    tracing::info!(
        "mounted {served} on {} ({} threads)",
        mountpoint.display(),
        opts.threads
    );
    report("ok");

    let mp = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("bkfs-signals".into())
        .spawn(move || loop {
            let Ok(sig) = signals.wait() else { continue };
            tracing::info!("{sig:?}: unmounting {}", mp.display());
            unmount(&mp);
        })
        .map_err(|e| failed(format!("signal thread: {e}")))?;

    let result = session.run();
    tracing::info!("unmounted {}", mountpoint.display());
    result.map_err(|e| failed(format!("FUSE session: {e}")))
}

/// Raises the open-file limit as far as allowed: the daemon holds one
/// descriptor per inode the kernel caches (a kernel tree alone is 80,000).
fn raise_fd_limit() {
    let Ok((_, hard)) = proc::nofile_limit() else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    for max in [hard.max(nr_open), hard] {
        if proc::set_nofile_limit(max, max).is_ok() {
            tracing::debug!("open file limit: {max}");
            return;
        }
    }
}

/// A mounted session, of either kind.
enum Session {
    /// A live tree with snapshots.
    Mount(Box<fuser::Session<Adapter<Mux>>>, Arc<Snapshotter>),
    /// A live tree only (`snapshots=off`).
    Live(fuser::Session<Adapter<LiveTree>>),
    View(fuser::Session<Adapter<ViewTree>>),
}

impl Session {
    fn run(self) -> std::io::Result<()> {
        match self {
            Session::Mount(s, snapshotter) => {
                snapshotter.resume();
                let r = s.run();
                // A copy still running resumes at the next mount.
                snapshotter.shutdown();
                r
            }
            Session::Live(s) => s.run(),
            Session::View(s) => s.run(),
        }
    }
}

fn start(
    served: &Served,
    mountpoint: &Path,
    opts: &MountOptions,
    flags: Flags,
) -> Result<Session, MountError> {
    match served {
        Served::Live(source) if opts.snapshots => start_mount(source, mountpoint, opts, flags),
        Served::Live(source) => start_live(source, mountpoint, opts, flags).map(Session::Live),
        Served::Store(store) => start_view(store, mountpoint, opts, flags).map(Session::View),
    }
}

/// A read-only view of a store's snapshots. The view holds the store's
/// read lock for as long as it is mounted, so gc refuses to run under it.
fn start_view(
    store: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    flags: Flags,
) -> Result<fuser::Session<Adapter<ViewTree>>, MountError> {
    let view = crate::store::Store::open(store)
        .and_then(|s| SnapView::new(s, ViewConfig::default()))
        .map_err(|e| failed(format!("store {}: {e}", store.display())))?;
    let view = Arc::new(view);
    let fs = Adapter::new(
        Arc::new(ViewTree::new(view.clone())),
        Barrier::new(),
        None,
        Config::view(),
    );
    let session = session(
        fs,
        mountpoint,
        mount_options(store, true, flags, opts),
        opts,
    )?;
    view.set_push(crate::fuse::page_cache_push(session.notifier()));
    Ok(session)
}

fn start_live(
    source: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    flags: Flags,
) -> Result<fuser::Session<Adapter<LiveTree>>, MountError> {
    let live_opts = LiveOptions {
        hidden_names: hidden_names(source, opts),
        allow_devices: flags.dev,
        writeback: opts.writeback,
        fd_budget: opts.fd_budget,
    };
    raise_fd_limit();
    // The source is opened before the mount covers anything.
    let live = Live::new(source, live_opts)
        .map_err(|e| failed(format!("source {}: {e}", source.display())))?;
    // No points in time on this mount: the barrier stays open, and there
    // are no fences.
    let fs = Adapter::new(
        Arc::new(LiveTree::new(Arc::new(live), opts.cache_timeout)),
        Barrier::new(),
        None,
        Config {
            passthrough: opts.passthrough,
            passthrough_writes: opts.passthrough_writes,
            writeback: opts.writeback,
            ..Config::live()
        },
    );
    session(
        fs,
        mountpoint,
        mount_options(source, opts.read_only, flags, opts),
        opts,
    )
}

/// A live tree with snapshots: the store (`store=`, default
/// `SOURCE/.bkfs`), the diff area (`SOURCE/.bkfs/pit`), the barrier, the
/// requester and the virtual directories.
fn start_mount(
    source: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    flags: Flags,
) -> Result<Session, MountError> {
    let store_path = opts
        .store
        .clone()
        .unwrap_or_else(|| source.join(crate::live::DEFAULT_STORE_NAME));
    let store = crate::store::Store::open_or_init(&store_path)
        .map_err(|e| failed(format!("store {}: {e}", store_path.display())))?;
    let hidden = hidden_names(source, opts);
    let diff_root = source.join(crate::live::DEFAULT_STORE_NAME).join("pit");
    let snaps = Snapshots::open(source, &diff_root, hidden.clone(), opts.diff_max)
        .map_err(|e| failed(format!("diff area {}: {e}", diff_root.display())))?;
    let snaps = Arc::new(snaps);
    let live_opts = LiveOptions {
        hidden_names: hidden,
        allow_devices: flags.dev,
        writeback: opts.writeback,
        fd_budget: opts.fd_budget,
    };
    raise_fd_limit();
    let mut live = Live::new(source, live_opts)
        .map_err(|e| failed(format!("source {}: {e}", source.display())))?;
    live.set_changes(snaps.clone());
    let live = Arc::new(live);
    let names = VirtualNames {
        visible: opts.snapdir == super::options::SnapDir::Visible,
        ..VirtualNames::default()
    };
    for name in [&names.control, &names.snapshots] {
        if source.join(name).symlink_metadata().is_ok() {
            tracing::warn!(
                "{} has its own {name}: the mount shows bkfs's in its place",
                source.display()
            );
        }
    }
    let barrier = Barrier::new();
    let view = SnapView::new(
        store.clone(),
        ViewConfig {
            root_id: SNAPSHOTS_DIR_ID,
            ..ViewConfig::default()
        },
    )
    .map_err(|e| failed(format!("store {}: {e}", store_path.display())))?;
    let view = Arc::new(view);
    let fences = Fences::new(live.clone());
    // Absolute, and resolved before the mount covers it.
    fences.set_mountpoint(
        std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf()),
    );
    let snapshotter = Snapshotter::new(
        barrier.clone(),
        fences.clone(),
        snaps,
        store,
        source.to_path_buf(),
    );
    if let Some(path) = &opts.profile {
        let profile = crate::quiesce::Profile::load(path).map_err(|e| failed(e.to_string()))?;
        let marker = quiesce_marker(mountpoint);
        if let Some(d) = marker.parent() {
            std::fs::create_dir_all(d).map_err(|e| failed(format!("{}: {e}", d.display())))?;
        }
        // A marker left by a daemon that died with applications frozen is
        // acted on here: they are thawed before anything else.
        let q = Arc::new(crate::quiesce::Quiescer::new(profile, marker));
        snapshotter.set_profile(path.clone(), q);
    }
    // Every write must reach the daemon for its pre-image to be kept, so no
    // kernel passthrough: the kernel makes a writer join the passthrough of
    // an inode that readers hold open, and its writes would then bypass the
    // daemon.
    if opts.passthrough_explicit {
        tracing::warn!("kernel passthrough is off on a mount with snapshots (every write must reach the daemon)");
    }
    let snapshots = SnapshotsTree::new(
        view.clone(),
        snapshotter.clone(),
        live.nodes().budget().clone(),
    );
    // After each seal or failure: the store's view refreshed, the views of
    // snapshots no longer pending retired.
    snapshotter.set_on_change(snapshots.on_change());
    let virtuals = vec![
        Virtual {
            name: names.control.clone(),
            id: NodeId(CONTROL_DIR_ID),
        },
        Virtual {
            name: names.snapshots.clone(),
            id: snapshots.root_id(),
        },
        Virtual {
            name: names.quiesce.clone(),
            id: NodeId(QUIESCE_DIR_ID),
        },
    ];
    let mux = Mux::new(
        Arc::new(LiveTree::new(live, opts.cache_timeout)),
        Arc::new(ControlTree::new(Control::new(snapshotter.clone(), ROOT_ID))),
        Arc::new(snapshots),
        virtuals,
        names.visible,
    );
    let fs = Adapter::new(
        Arc::new(mux),
        barrier,
        Some(fences),
        Config {
            passthrough: false,
            passthrough_writes: false,
            writeback: opts.writeback,
            point_in_time: true,
            ..Config::live()
        },
    );
    let session = session(
        fs,
        mountpoint,
        mount_options(source, opts.read_only, flags, opts),
        opts,
    )?;
    view.set_push(crate::fuse::page_cache_push(session.notifier()));
    Ok(Session::Mount(Box::new(session), snapshotter))
}

/// The frozen marker of the mount on `mountpoint`: in /run (gone at
/// reboot, as are the frozen applications), named as systemd escapes the
/// path (`systemd-escape -p`, the instance name of `bkfs@.service`).
fn quiesce_marker(mountpoint: &Path) -> std::path::PathBuf {
    Path::new(crate::quiesce::MARKER_DIR).join(format!("{}.json", escape_path(mountpoint)))
}

/// `systemd-escape -p`: `/mnt/data` → `mnt-data`.
fn escape_path(p: &Path) -> String {
    let bytes = p.as_os_str().as_encoded_bytes();
    let trimmed: Vec<&[u8]> = bytes
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if trimmed.is_empty() {
        return "-".to_string();
    }
    let mut out = String::new();
    for (i, comp) in trimmed.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, &b) in comp.iter().enumerate() {
            let plain =
                b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && !(i == 0 && j == 0));
            if plain {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

/// Mounts `fs` with the session settings both kinds share.
fn session<FS: fuser::Filesystem>(
    fs: FS,
    mountpoint: &Path,
    mount_options: Vec<MountOption>,
    opts: &MountOptions,
) -> Result<fuser::Session<FS>, MountError> {
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    let allow_other = opts.allow_other.unwrap_or(nix::unistd::geteuid().is_root());
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads);
    config.clone_fd = opts.threads > 1;
    fuser::Session::new(fs, mountpoint, &config).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (is /dev/fuse present? try 'modprobe fuse')"
        } else {
            ""
        };
        failed(format!("mount on {}: {e}{hint}", mountpoint.display()))
    })
}

/// Unmounts `mp`; if files are still open there, detaches it lazily (the
/// daemon keeps serving them until the last one closes, then exits).
pub fn unmount(mp: &Path) {
    use nix::mount::{umount2, MntFlags};
    match umount2(mp, MntFlags::empty()) {
        Ok(()) => {}
        Err(nix::errno::Errno::EBUSY) => {
            tracing::warn!("{} busy: detaching lazily", mp.display());
            if let Err(e) = umount2(mp, MntFlags::MNT_DETACH) {
                tracing::error!("unmount {}: {e}", mp.display());
            }
        }
        Err(e) => tracing::error!("unmount {}: {e}", mp.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_named_as_systemd_escapes_the_mount_point() {
        assert_eq!(escape_path(Path::new("/mnt/data")), "mnt-data");
        assert_eq!(escape_path(Path::new("/srv/my-data/")), "srv-my\\x2ddata");
        assert_eq!(escape_path(Path::new("/")), "-");
        assert_eq!(escape_path(Path::new("/a/.b")), "a-.b");
    }

    #[test]
    fn a_store_directly_inside_the_source_is_hidden_too() {
        let src = tempfile::tempdir().unwrap();
        let src = src.path().canonicalize().unwrap();
        let opts = MountOptions {
            store: Some(src.join("backups")),
            ..MountOptions::default()
        };
        let names = hidden_names(&src, &opts);
        assert_eq!(
            names,
            vec![OsString::from(".bkfs"), OsString::from("backups")]
        );
        let opts = MountOptions {
            store: Some(PathBuf::from("/elsewhere/store")),
            ..MountOptions::default()
        };
        assert_eq!(hidden_names(&src, &opts), vec![OsString::from(".bkfs")]);
    }
}
