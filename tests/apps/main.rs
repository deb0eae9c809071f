//! Applications on real bkfs mounts: PostgreSQL under pgbench, SQLite with a
//! concurrent writer, Redis and MariaDB under a small load, and exec hooks
//! that fail, hang or exit early, and a daemon killed while an application is
//! frozen. Every snapshot is restored and the application started on the
//! copy. Each test mounts a real bkfs (root, /dev/fuse); every server and
//! process a test starts is stopped by a Drop guard, also on panic.

#[path = "../common/mod.rs"]
mod helpers;
/// The mount tests' helpers (with the rest of the one library behind them).
use helpers::mount as common;
#[path = "../snapshots/tree.rs"]
mod tree;

mod apps;
mod hooks;
mod postgres;
mod util;
