//! Integration tests of the live tree: each test mounts a real bkfs over a
//! temporary directory (as root, with /dev/fuse) and unmounts it at the end.

#[path = "../common/mod.rs"]
mod helpers;
/// The mount tests' helpers (with the rest of the one library behind them).
use helpers::mount as common;
mod conformance;
mod model;
mod mounting;
mod permissions;
mod programs;
