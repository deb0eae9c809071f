//! Integration tests of snapshots through a live mount: the control files,
//! `.snapshots/`, the point in time under concurrent change, crashes.
//! Each test mounts a real bkfs (root, /dev/fuse) and unmounts it at the end.

#[path = "../common/mod.rs"]
mod helpers;
/// The mount tests' helpers (with the rest of the one library behind them).
use helpers::mount as common;
mod tree;

mod control;
mod crash;
mod failpoints;
mod faults;
mod model;
mod pit;
