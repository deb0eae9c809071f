//! Plain data shared by every part: times, extended attributes and inode
//! identities. Nothing here depends on another module of the crate, so the
//! OS layer ([`crate::os`]), the store and the trees can all use them (the
//! store re-exports [`Time`] and [`Xattr`] as part of its format).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A timestamp with nanoseconds, as `struct timespec`: `nsec` is always in
/// `0..1_000_000_000`, also before 1970 (−0.25 s is `sec: -1, nsec: 750_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl From<SystemTime> for Time {
    fn from(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                // Before 1970: a negative second count with a positive nanosecond part.
                let d = e.duration();
                let mut sec = -(d.as_secs() as i64);
                let mut nsec = d.subsec_nanos();
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Time { sec, nsec }
            }
        }
    }
}

impl From<Time> for SystemTime {
    fn from(t: Time) -> SystemTime {
        if t.sec >= 0 {
            UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
                + Duration::from_nanos(t.nsec.into())
        }
    }
}

/// One extended attribute: its full name (`user.x`, `system.posix_acl_access`...)
/// and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// An inode's identity on the backing filesystems: `(st_dev, st_ino)`.
pub type InodeKey = (u64, u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways_also_before_1970() {
        for (sec, nsec) in [
            (0, 0),
            (1, 5),
            (1_700_000_000, 999_999_999),
            (-1, 0),
            (-1, 750_000_000),
            (-5, 1),
        ] {
            let t = Time { sec, nsec };
            let st = SystemTime::from(t);
            assert_eq!(Time::from(st), t, "{sec}.{nsec:09}");
        }
        let quarter_before = UNIX_EPOCH - Duration::from_millis(250);
        assert_eq!(
            Time::from(quarter_before),
            Time {
                sec: -1,
                nsec: 750_000_000
            }
        );
    }
}
