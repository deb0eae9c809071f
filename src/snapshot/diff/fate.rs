//! Whether a pending snapshot still holds its point in time, and what its
//! pre-images take in the diff area against the bound `diff_max`.
//!
//! The rule (docs/SNAPSHOTS.md, "When a pre-image cannot be kept"): a
//! pre-image that cannot be kept (the diff area's disk is full or failing,
//! or the bound is reached) fails the snapshot, never the change that
//! needed it. The change then goes on whole, so the live tree loses no
//! write because of the diff area; the snapshot, whose point in time is no
//! longer known, is reported failed with the reason and its pre-images are
//! freed. With the kernel's writeback cache the change is a write-back the
//! application was already told succeeded: failing it would drop data.

use parking_lot::Mutex;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// The diff area's bound was reached: what failing the snapshot says.
#[derive(Debug)]
pub struct DiffFull {
    pub name: String,
    /// What the snapshot's pre-images would take with the one asked for.
    pub need: u64,
    pub limit: u64,
}

impl std::fmt::Display for DiffFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "diff area full: the pre-images of snapshot {} would take {} bytes, over \
             diff_max {} bytes",
            self.name, self.need, self.limit
        )
    }
}

impl std::error::Error for DiffFull {}

/// See the module comment.
pub(super) struct Fate {
    /// `Some(reason)` once failed; never cleared.
    failed: Mutex<Option<String>>,
    /// Bytes the snapshot's diff dir holds: records, preserved blocks and
    /// their log (not the inodes its links keep alive).
    used: AtomicU64,
    /// `diff_max` for this snapshot.
    limit: u64,
}

impl Fate {
    pub(super) fn new(used: u64, limit: u64, failed: Option<String>) -> Fate {
        Fate {
            failed: Mutex::new(failed),
            used: AtomicU64::new(used),
            limit,
        }
    }

    /// Counts `n` more bytes about to be written to the diff dir of
    /// snapshot `name`; [`DiffFull`] (nothing counted) past the bound.
    pub(super) fn reserve(&self, name: &str, n: u64) -> io::Result<()> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let need = cur.saturating_add(n);
            if need > self.limit {
                return Err(io::Error::other(DiffFull {
                    name: name.to_owned(),
                    need,
                    limit: self.limit,
                }));
            }
            match self
                .used
                .compare_exchange_weak(cur, need, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Records the failure; false if it had failed already (the first
    /// reason stays).
    pub(super) fn fail(&self, why: String) -> bool {
        let mut f = self.failed.lock();
        if f.is_some() {
            return false;
        }
        *f = Some(why);
        true
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }
}

/// The reason a snapshot fails for pre-image error `e`.
pub(super) fn reason(e: &io::Error) -> String {
    match e.get_ref().and_then(|r| r.downcast_ref::<DiffFull>()) {
        Some(full) => full.to_string(),
        None => format!("a pre-image could not be kept in the diff area: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_counts_up_to_the_limit_and_says_why_past_it() {
        let f = Fate::new(10, 100, None);
        f.reserve("s", 90).unwrap();
        assert_eq!(f.used(), 100);
        let e = f.reserve("s", 1).unwrap_err();
        assert_eq!(f.used(), 100, "a refused reservation counts nothing");
        let why = reason(&e);
        assert!(why.starts_with("diff area full"), "{why}");
        assert!(why.contains("101") && why.contains("100"), "{why}");
    }

    #[test]
    fn the_first_failure_stays() {
        let f = Fate::new(0, 1, None);
        assert!(f.failure().is_none());
        assert!(f.fail("first".into()));
        assert!(!f.fail("second".into()));
        assert_eq!(f.failure().as_deref(), Some("first"));
        let other = reason(&io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(other.contains("could not be kept"), "{other}");
    }
}
