//! Point-in-time snapshots of a mounted tree (docs/SNAPSHOTS.md).
//!
//! - [`asof`]: a tree as of one point in time, the interface providers and
//!   views read through;
//! - [`changeset`]: what changed since the last sealed snapshot.

pub mod asof;
pub mod barrier;
pub mod pitview;
pub mod requester;
pub mod changeset;

pub use asof::{AsOf, AsOfFile, Key};
pub use changeset::ChangeSet;
