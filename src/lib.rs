//! bkfs: point-in-time snapshots of any directory, stored as deduplicated,
//! compressed chunks.
//!
//! The crate is split along the parts of the design (docs/ARCHITECTURE.md):
//! - [`store`]: the content-addressed store (no FUSE in it);
//! - [`ingest`]: the provider that copies a tree as of a point in time into the
//!   store ([`ingest::copy`]; `bkfs backup` through [`ingest::PlainDir`]);
//! - [`restore`]: reading a snapshot back out to a directory;
//! - [`vfs`]: the one FUSE-free interface of every tree a mount shows
//!   ([`vfs::Tree`]), the namespace registry of node ids, and the root
//!   multiplexer ([`vfs::mux`]);
//! - [`live`]: the passthrough core over the source directory, a tree;
//! - [`snapview`]: sealed snapshots read from the store, read-only, a tree
//!   (`bkfs mount --store`, and `.snapshots/`);
//! - [`snapshot`]: points in time through a mount: barrier, fences, diff
//!   area, requester, the pending view, `.snapshots/` as a tree;
//! - [`control`]: `.control/` and `.quiesce/`, a tree;
//! - [`fuse`]: the only fuser importer: one adapter for any tree;
//! - [`mount_cmd`]: `bkfs mount`, the daemon and its options;
//! - [`quiesce`]: application quiescing: profiles, plug-ins, the watchdog (no FUSE);
//! - [`cli`]: argument parsing and presentation only;
//! - [`os`]: the OS layer, the only home of libc calls and `unsafe` (the
//!   crate denies `unsafe_code` everywhere else), with failpoints for tests;
//! - [`types`]: plain data every part shares (times, xattrs, inode keys).
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

#![deny(
    unsafe_code,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

pub mod cli;
pub mod control;
pub mod fuse;
pub mod ingest;
pub mod live;
pub mod mount_cmd;
pub mod os;
pub mod quiesce;
pub mod restore;
pub mod snapshot;
pub mod snapview;
pub mod store;
pub mod types;
pub mod vfs;
