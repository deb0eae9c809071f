//! Integration tests of the live tree: each test mounts a real bkfs over a
//! temporary directory (as root, with /dev/fuse) and unmounts it at the end.

mod common;
mod conformance;
mod model;
mod mounting;
mod permissions;
mod programs;
