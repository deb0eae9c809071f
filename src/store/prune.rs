//! Retention: which snapshots a `keep` policy keeps (restic's `forget
//! --keep-*` rules). The newest snapshot of each of the N most recent hours,
//! days, ISO weeks and months is kept, and the N newest overall; a snapshot
//! kept by any rule stays. Times are UTC.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many of each to keep; `None`: that rule keeps nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        *self == Keep::default()
    }
}

/// Year and month of a day counted from 1970-01-01 (proleptic Gregorian).
fn year_month(days: i64) -> (i64, u32) {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The names to forget among `snaps` (name, time), which `keep` does not
/// keep. An empty policy forgets nothing.
pub fn to_forget(snaps: &[(String, SystemTime)], keep: &Keep) -> Vec<String> {
    if keep.is_empty() {
        return Vec::new();
    }
    let mut sorted: Vec<&(String, SystemTime)> = snaps.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.1)); // newest first
    let secs = |t: SystemTime| -> i64 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    };
    let mut kept: HashSet<&str> = HashSet::new();
    // `last` counts snapshots, not buckets.
    if let Some(n) = keep.last {
        for (name, _) in sorted.iter().take(n as usize) {
            kept.insert(name.as_str());
        }
    }
    let mut rule = |n: Option<u32>, bucket: &dyn Fn(i64) -> i64| {
        let Some(n) = n else { return };
        let mut seen = HashSet::new();
        for (name, t) in &sorted {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(bucket(secs(*t))) {
                kept.insert(name.as_str());
            }
        }
    };
    rule(keep.hourly, &|s| s.div_euclid(3600));
    rule(keep.daily, &|s| s.div_euclid(86_400));
    // ISO weeks start on Monday; 1970-01-01 was a Thursday.
    rule(keep.weekly, &|s| (s.div_euclid(86_400) + 3).div_euclid(7));
    rule(keep.monthly, &|s| {
        let (y, m) = year_month(s.div_euclid(86_400));
        y * 12 + i64::from(m)
    });
    sorted
        .iter()
        .filter(|(name, _)| !kept.contains(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn calendar() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(31), (1970, 2));
        // 2026-11-22 is day 20414.
        assert_eq!(year_month(20_414), (2026, 11));
        assert_eq!(year_month(-1), (1969, 12));
    }

    #[test]
    fn rules_keep_the_newest_of_each_bucket() {
        let day = 86_400;
        // Four snapshots a day for 10 days, from day 20_000 on.
        let snaps: Vec<(String, SystemTime)> = (0..40)
            .map(|i| {
                (
                    format!("s{i:02}"),
                    at(20_000 * day + (i / 4) * day + (i % 4) * 3600),
                )
            })
            .collect();
        assert!(to_forget(&snaps, &Keep::default()).is_empty());
        let keep = Keep {
            last: Some(2),
            daily: Some(3),
            ..Keep::default()
        };
        let forget = to_forget(&snaps, &keep);
        let kept: Vec<_> = snaps
            .iter()
            .map(|s| s.0.clone())
            .filter(|n| !forget.contains(n))
            .collect();
        // Last two (s38, s39); newest of the three latest days: s39, s35, s31.
        assert_eq!(kept, vec!["s31", "s35", "s38", "s39"]);
        let keep = Keep {
            hourly: Some(100),
            ..Keep::default()
        };
        assert!(to_forget(&snaps, &keep).is_empty());
        let keep = Keep {
            monthly: Some(1),
            ..Keep::default()
        };
        assert_eq!(to_forget(&snaps, &keep).len(), 39);
    }
}
