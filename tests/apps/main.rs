//! Applications on real bkfs mounts: PostgreSQL under pgbench, SQLite with a
//! concurrent writer, Redis and MariaDB under a small load, and exec hooks
//! that fail, hang or exit early, and a daemon killed while an application is
//! frozen. Every snapshot is restored and the application started on the
//! copy. Each test mounts a real bkfs (root, /dev/fuse); every server and
//! process a test starts is stopped by a Drop guard, also on panic.

#[path = "../live/common.rs"]
mod common;
#[path = "../snapshots/tree.rs"]
mod tree;

mod apps;
mod hooks;
mod postgres;
mod util;
