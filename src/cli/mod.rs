//! The command line: argument parsing and presentation only.

pub mod exit;
mod mount_ops;
mod progress;
mod quiesce;
mod show;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::ingest::{self, Progress};
use crate::restore;
use crate::store::{self, Error, Store};

#[derive(Parser)]
#[command(
    name = "bkfs",
    version,
    about = "Point-in-time snapshots of any directory, stored as deduplicated, compressed chunks"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct StoreArg {
    /// The store directory.
    #[arg(long, short = 's', env = "BKFS_STORE", value_name = "S")]
    store: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount SOURCE on MOUNTPOINT with its live tree (see docs/MOUNT.md).
    Mount(crate::mount_cmd::MountArgs),
    /// Take a snapshot through a mount (as `echo NAME > M/.control/snapshot`).
    Snapshot {
        /// Snapshot name (default: the UTC time, YYYY-MM-DDTHHMMSSZ).
        name: Option<String>,
        /// The mount (default: the one the current directory is in).
        #[arg(long, short)]
        mount: Option<PathBuf>,
        /// Wait until the copy is sealed, with a progress bar on a terminal.
        #[arg(long)]
        wait: bool,
    },
    /// Show a mount's state: store figures and the latest snapshot operation.
    Status {
        #[arg(long, short)]
        mount: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Hold a mount's write barrier (released by `bkfs thaw`, or after 10 s).
    Freeze {
        #[arg(long, short)]
        mount: Option<PathBuf>,
    },
    /// Run a quiesce profile's plug-ins without a snapshot (docs/PROFILES.md).
    Quiesce(quiesce::QuiesceArgs),
    /// Release a mount's barrier; with --force, thaw what frozen markers name.
    Thaw(quiesce::ThawArgs),
    /// Create an empty store.
    Init {
        #[command(flatten)]
        s: StoreArg,
    },
    /// Copy a directory into the store as a new snapshot.
    Backup {
        dir: PathBuf,
        #[command(flatten)]
        s: StoreArg,
        /// Snapshot name (default: the UTC time, YYYY-MM-DDTHHMMSSZ).
        #[arg(long, short)]
        name: Option<String>,
        /// Snapshot to compare with for unchanged files (default: the newest of the same source).
        #[arg(long)]
        parent: Option<String>,
        /// Worker threads (default: one per core).
        #[arg(long, short = 'j')]
        threads: Option<usize>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the snapshots, oldest first.
    List {
        #[command(flatten)]
        s: StoreArg,
        #[arg(long)]
        json: bool,
    },
    /// List a directory of a snapshot.
    Ls {
        /// SNAP or SNAP:PATH (PATH may be any bytes)
        target: std::ffi::OsString,
        #[command(flatten)]
        s: StoreArg,
        /// Long listing: mode, owner, size, mtime (ns).
        #[arg(short = 'l')]
        long: bool,
        /// Recurse into directories.
        #[arg(short = 'R')]
        recursive: bool,
    },
    /// Restore a snapshot, or a path in it, to a directory.
    Restore {
        /// SNAP or SNAP:PATH (PATH may be any bytes)
        target: std::ffi::OsString,
        dest: PathBuf,
        #[command(flatten)]
        s: StoreArg,
        /// Restore into a non-empty directory, replacing what is in the way.
        #[arg(long)]
        overwrite: bool,
        #[arg(long, short = 'j')]
        threads: Option<usize>,
        #[arg(long)]
        no_progress: bool,
    },
    /// Show what changed between two snapshots.
    Diff {
        a: String,
        b: String,
        #[command(flatten)]
        s: StoreArg,
    },
    /// Remove a snapshot (its space comes back with gc).
    Forget {
        name: String,
        #[command(flatten)]
        s: StoreArg,
    },
    /// Delete data no snapshot uses, repacking partly used packs.
    Gc {
        #[command(flatten)]
        s: StoreArg,
    },
    /// Verify the store.
    Check {
        #[command(flatten)]
        s: StoreArg,
        /// Also read and verify every chunk.
        #[arg(long)]
        read_data: bool,
        /// Rebuild the index from the pack footers first.
        #[arg(long)]
        rebuild_index: bool,
    },
}

pub fn main() -> i32 {
    raise_fd_limit();
    let cli = Cli::parse();
    if let Cmd::Mount(args) = &cli.cmd {
        // The daemon sets up its own logging (syslog, or a file).
        return match crate::mount_cmd::run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bkfs mount: {e}");
                e.exit_code()
            }
        };
    }
    init_logging();
    match &cli.cmd {
        Cmd::Quiesce(a) => return quiesce::quiesce(a),
        Cmd::Thaw(a) => return quiesce::thaw(a),
        _ => {}
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bkfs: {e}");
            exit::of_store(&e)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BKFS_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
}

/// Backup and restore hold a directory fd per level per thread; lift the soft
/// limit to the hard one so deep trees never run out.
fn raise_fd_limit() {
    if let Ok((soft, hard)) = crate::os::proc::nofile_limit() {
        if soft < hard {
            let _ = crate::os::proc::set_nofile_limit(hard, hard);
        }
    }
}

fn with_threads<T: Send>(n: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
    match n {
        Some(n) if n > 0 => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .stack_size(8 << 20)
            .build()
            .map(|p| p.install(f))
            .unwrap_or_else(|_| panic!("cannot start {n} threads")),
        _ => f(),
    }
}

/// Open the store for reading and find the snapshot of a `SNAP[:PATH]` argument.
fn open_target(
    s: &StoreArg,
    target: &std::ffi::OsStr,
) -> Result<(store::StoreReader, store::Snapshot, Vec<u8>), Error> {
    let store = Store::open(&s.store)?;
    let reader = store.reader()?;
    let (name, path) = split_target(target)?;
    let snap = store.snapshot(&name)?;
    Ok((reader, snap, path))
}

/// Split `SNAP:PATH` (snapshot names never contain ':'); the path is bytes,
/// since file names need not be UTF-8.
fn split_target(t: &std::ffi::OsStr) -> Result<(String, Vec<u8>), Error> {
    use std::os::unix::ffi::OsStrExt;
    let b = t.as_bytes();
    let (name, path) = match b.iter().position(|&c| c == b':') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    let name = std::str::from_utf8(name)
        .map_err(|_| Error::NoSnapshot(String::from_utf8_lossy(name).into_owned()))?;
    Ok((name.to_string(), path.to_vec()))
}

fn run(cli: Cli) -> Result<i32, Error> {
    match cli.cmd {
        Cmd::Mount(_) | Cmd::Quiesce(_) | Cmd::Thaw(_) => unreachable!("handled in main"),
        Cmd::Snapshot { name, mount, wait } => {
            mount_ops::snapshot(&mount_ops::find_mount(mount)?, name.as_deref(), wait)
        }
        Cmd::Status { mount, json } => mount_ops::status(&mount_ops::find_mount(mount)?, json),
        Cmd::Freeze { mount } => mount_ops::barrier(&mount_ops::find_mount(mount)?, true),

        Cmd::Init { s } => {
            Store::init(&s.store)?;
            println!("created store {}", s.store.display());
            Ok(0)
        }
        Cmd::Backup {
            dir,
            s,
            name,
            parent,
            threads,
            no_progress,
            json,
        } => {
            if !dir.is_dir() {
                return Err(Error::Other(format!("{}: not a directory", dir.display())));
            }
            let store = Store::open_or_init(&s.store)?;
            let progress = Arc::new(Progress::default());
            let show = !no_progress && !json && std::io::stderr().is_terminal();
            let bar = show.then(|| progress::start_backup(progress.clone(), dir.clone()));
            let opts = ingest::Options { name, parent };
            let r = with_threads(threads, || ingest::backup(&store, &dir, &opts, &progress));
            if let Some(b) = bar {
                b.finish();
            }
            let r = r?;
            for w in &r.warnings {
                eprintln!("bkfs: warning: {w}");
            }
            for e in &r.errors {
                eprintln!("bkfs: error: {e}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r.snapshot).unwrap());
            } else {
                println!("{}", show::backup_summary(&r.snapshot));
            }
            if !r.errors.is_empty() {
                eprintln!(
                    "bkfs: {} entries could not be read and are missing from snapshot {}",
                    r.errors.len(),
                    r.snapshot.name
                );
                return Ok(3);
            }
            Ok(0)
        }
        Cmd::List { s, json } => {
            let store = Store::open(&s.store)?;
            let snaps = store.snapshots()?;
            for bad in store::snapshot::damaged(&store.snapshots_dir())? {
                eprintln!("bkfs: warning: {bad} (`bkfs forget` removes it)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&snaps).unwrap());
            } else {
                print!("{}", show::snapshot_table(&snaps));
            }
            Ok(0)
        }
        Cmd::Ls {
            target,
            s,
            long,
            recursive,
        } => {
            let (reader, snap, path) = open_target(&s, &target)?;
            let node = restore::resolve(&reader, &snap, &path)?;
            show::ls(&reader, &node, &show::escape(&path), long, recursive)?;
            Ok(0)
        }
        Cmd::Restore {
            target,
            dest,
            s,
            overwrite,
            threads,
            no_progress,
        } => {
            let (reader, snap, path) = open_target(&s, &target)?;
            let progress = Arc::new(Progress::default());
            progress
                .total_bytes
                .store(snap.stats.bytes, std::sync::atomic::Ordering::Relaxed);
            progress
                .total_files
                .store(snap.stats.files, std::sync::atomic::Ordering::Relaxed);
            let show = !no_progress && std::io::stderr().is_terminal();
            let bar = show.then(|| progress::start_restore(progress.clone()));
            let opts = restore::Options { overwrite };
            // Restore waits on file creation more than on the CPU: twice as
            // many threads as cores kept both busy in tools/bench-store.sh.
            let threads = threads.or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| 2 * n.get())
            });
            let r = with_threads(threads, || {
                restore::restore(&reader, &snap, &path, &dest, &opts, &progress)
            });
            if let Some(b) = bar {
                b.finish();
            }
            let r = r?;
            for e in &r.errors {
                eprintln!("bkfs: error: {e}");
            }
            if !r.errors.is_empty() {
                eprintln!("bkfs: {} entries could not be restored", r.errors.len());
                return Ok(if r.damaged { 9 } else { 1 });
            }
            Ok(0)
        }
        Cmd::Diff { a, b, s } => {
            let store = Store::open(&s.store)?;
            let reader = store.reader()?;
            let (sa, sb) = (store.snapshot(&a)?, store.snapshot(&b)?);
            show::diff(&reader, &sa, &sb)?;
            Ok(0)
        }
        Cmd::Forget { name, s } => {
            let store = Store::open(&s.store)?;
            let w = store.writer("forget")?;
            // By name without reading the record, so a damaged one can go too.
            let name = if name == "latest" {
                store.snapshot(&name)?.name
            } else {
                name
            };
            w.forget(&name)?;
            println!("forgot snapshot {name} (run `bkfs gc` to reclaim its space)");
            Ok(0)
        }
        Cmd::Gc { s } => {
            let store = Store::open(&s.store)?;
            let r = store::gc::gc(&store)?;
            println!("{}", show::gc_summary(&r));
            Ok(0)
        }
        Cmd::Check {
            s,
            read_data,
            rebuild_index,
        } => {
            let store = Store::open(&s.store)?;
            if rebuild_index {
                let n = store::check::rebuild_index(&store)?;
                println!("index rebuilt from {n} packs");
            }
            let r = store::check::check(&store, read_data)?;
            print!("{}", show::check_report(&r));
            Ok(if r.ok() { 0 } else { 9 })
        }
    }
}
