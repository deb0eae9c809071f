//! Point-in-time snapshots of a mounted tree (docs/SNAPSHOTS.md).
//!
//! - [`asof`]: a tree as of one point in time, the interface providers and
//!   views read through;
//! - [`changeset`]: what changed since the last sealed snapshot;
//! - [`diff`]: a mount's pending snapshot (pre-images in the diff area, the
//!   tree as of its point in time) and change tracking.

pub mod asof;
pub mod barrier;
pub mod changeset;
pub mod diff;
pub mod fence;
pub mod pitview;
pub mod requester;
pub mod tree;

#[cfg(test)]
mod tests;

pub use asof::{AsOf, AsOfFile, Key};
pub use changeset::ChangeSet;
pub use diff::{PointInTime, Snapshots};
