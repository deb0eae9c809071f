//! bkfs: point-in-time snapshots of any directory, stored as deduplicated,
//! compressed chunks.
//!
//! The crate is split along the parts of docs/DESIGN (see README):
//! - [`store`]: the content-addressed store (no FUSE in it);
//! - [`ingest`]: the provider that copies a tree into the store (`bkfs backup`);
//! - [`restore`]: reading a snapshot back out to a directory;
//! - [`cli`]: argument parsing and presentation only.

pub mod cli;
pub mod ingest;
pub mod restore;
pub mod store;
pub mod sys;
