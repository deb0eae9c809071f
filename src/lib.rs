//! bkfs: point-in-time snapshots of any directory, stored as deduplicated,
//! compressed chunks.
//!
//! The crate is split along the parts of the design (docs/ and README):
//! - [`store`]: the content-addressed store (no FUSE in it);
//! - [`ingest`]: the provider that copies a tree as of a point in time into the
//!   store ([`ingest::copy`]; `bkfs backup` through [`ingest::PlainDir`]);
//! - [`restore`]: reading a snapshot back out to a directory;
//! - [`live`]: the passthrough core over the source directory, `Result<_, Errno>`;
//! - [`fs`]: the thin fuser adapter over [`live`];
//! - [`snapview`]: sealed snapshots read from the store, read-only, `Result<_, Errno>`,
//!   with its own fuser adapter (`bkfs mount --store`);
//! - [`mount_cmd`]: `bkfs mount`, the daemon and its options;
//! - [`quiesce`]: application quiescing: profiles, plug-ins, the watchdog (no FUSE);
//! - [`cli`]: argument parsing and presentation only.
//!
//! # Locks
//!
//! Every mutex, read-write lock and condition variable is `parking_lot`'s
//! (`clippy.toml` refuses the std ones): they do not poison, so taking one
//! is `.lock()`, never `.lock().unwrap()`. A panic is a bug, and the
//! daemon's threads that catch one (the copy, the FUSE workers) go on: a
//! lock held across it is released as it unwinds, and what it guarded is
//! whatever the panicking code left. Code under a lock therefore keeps its
//! data consistent at every point that can panic (update, then publish;
//! no half-done multi-step change), and never calls out (plug-ins, the
//! store, syscalls that may block for long) while holding a lock that a
//! request path needs, unless the lock exists to serialize that call.

pub mod cli;
pub mod control;
pub mod fs;
pub mod ingest;
pub mod live;
pub mod mount_cmd;
pub mod quiesce;
pub mod restore;
pub mod snapshot;
pub mod snapview;
pub mod store;
pub mod sys;
