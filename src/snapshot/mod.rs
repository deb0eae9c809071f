//! Point-in-time snapshots of a mounted tree (docs/SNAPSHOTS.md). The tree
//! as of a point in time is an [`crate::ingest::AsOf`], the interface the
//! provider copies from and the views read through.
//!
//! - [`diff`]: a mount's pending snapshot (pre-images in the diff area, the
//!   tree as of its point in time) and change tracking;
//! - [`barrier`] and [`fence`]: fixing a point in time;
//! - [`requester`]: [`requester::Snapshotter`], taking, forgetting, freezing
//!   by hand; [`provider`]: the copy into the store and its resumption;
//!   [`retention`]: the profile's `[keep]` applied after each seal;
//!   [`status`]: what the control files show, typed; [`forward`]: the views
//!   told of each seal;
//! - [`pitview`]: a pending snapshot's tree as the mount shows it.

pub mod barrier;
pub mod diff;
pub mod fence;
pub mod forward;
pub mod pitview;
pub mod provider;
pub mod requester;
pub mod retention;
pub mod status;
pub mod tree;

#[cfg(test)]
mod tests;

pub use diff::{PointInTime, Snapshots};
