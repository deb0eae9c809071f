//! Times as the kernel gives and takes them: `struct timespec`, the three
//! times of a `struct stat`, `CLOCK_REALTIME`. One conversion each way;
//! [`Time`] ↔ `SystemTime` is in [`crate::types`].

use crate::types::Time;

/// `t` as a `struct timespec`.
pub fn timespec(t: Time) -> libc::timespec {
    libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec as libc::c_long,
    }
}

/// For utimensat(2): leave this time as it is.
pub const OMIT: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: libc::UTIME_OMIT,
};

/// For utimensat(2): set this time to the current time.
pub const NOW: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: libc::UTIME_NOW,
};

/// A time from the `(seconds, nanoseconds)` fields of a `struct stat`.
pub fn from_stat(sec: i64, nsec: i64) -> Time {
    Time {
        sec,
        nsec: nsec as u32,
    }
}

/// `(mtime, atime, ctime)` of a `struct stat`.
pub fn stat_times(st: &libc::stat) -> (Time, Time, Time) {
    (
        from_stat(st.st_mtime, st.st_mtime_nsec),
        from_stat(st.st_atime, st.st_atime_nsec),
        from_stat(st.st_ctime, st.st_ctime_nsec),
    )
}

/// Sets the three times of a `struct stat` (a record read back as one).
pub fn set_stat_times(st: &mut libc::stat, mtime: Time, atime: Time, ctime: Time) {
    st.st_mtime = mtime.sec;
    st.st_mtime_nsec = mtime.nsec as i64;
    st.st_atime = atime.sec;
    st.st_atime_nsec = atime.nsec as i64;
    st.st_ctime = ctime.sec;
    st.st_ctime_nsec = ctime.nsec as i64;
}

/// Safe wrapper for clock_gettime(2) of `CLOCK_REALTIME`: the clock the
/// kernel stamps ctimes with.
pub fn realtime_now() -> Time {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer (CLOCK_REALTIME always exists).
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    from_stat(ts.tv_sec, ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_round_trip() {
        let mut st = crate::os::zeroed_stat();
        let (m, a, c) = (
            Time { sec: 5, nsec: 6 },
            Time { sec: -3, nsec: 4 },
            Time { sec: 9, nsec: 10 },
        );
        set_stat_times(&mut st, m, a, c);
        assert_eq!(stat_times(&st), (m, a, c));
        let ts = timespec(a);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (-3, 4));
        assert!(realtime_now().sec > 1_600_000_000);
    }
}
