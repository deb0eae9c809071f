//! The one helper library of the integration tests: running the real `bkfs`
//! binary against a store, building source trees, a metadata listing with
//! nanosecond times and xattrs that two trees can be compared by, guards, and
//! ([`mount`]) a mounted bkfs that is always unmounted again. The store tests
//! `use common::*`; the mount tests name [`mount`] `common`.
// Each test binary uses a part of the library.
#![allow(dead_code, unused_imports)]

mod failures;
mod guards;
mod listing;
mod meta;
pub mod mount;
mod rng;
mod run;
mod store;
mod summary;
mod trees;

pub use failures::*;
pub use guards::*;
pub use listing::*;
pub use meta::*;
pub use rng::*;
pub use run::*;
pub use store::*;
pub use summary::*;
pub use trees::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
