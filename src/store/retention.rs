//! Retention: which snapshots a set of `keep` rules keeps. A policy over
//! a store's snapshots, so it lives with the store; a mount applies it
//! after each sealed snapshot ([`crate::snapshot::retention`]), and a
//! profile's `[keep]` table is parsed into it ([`crate::quiesce::profile`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Retention rules: the `[keep]` table of a profile (docs/PROFILES.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Which snapshots the rules keep, given (name, time in Unix seconds).
    /// Each rule walks the snapshots newest first and keeps the newest of each
    /// distinct period (UTC hour, day, ISO week from Monday, month) until it has
    /// N; `last` keeps the N newest. A snapshot is kept if any rule keeps it;
    /// with no rule at all, every snapshot is kept.
    pub fn select(&self, snaps: &[(String, i64)]) -> BTreeSet<String> {
        let mut order: Vec<&(String, i64)> = snaps.iter().collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        if self.is_empty() {
            return order.iter().map(|s| s.0.clone()).collect();
        }
        let mut keep = BTreeSet::new();
        if let Some(n) = self.last {
            keep.extend(order.iter().take(n as usize).map(|s| s.0.clone()));
        }
        fn day(t: i64) -> i64 {
            t.div_euclid(86_400)
        }
        let rules: [(Option<u32>, &Period); 4] = [
            (self.hourly, &|t| t.div_euclid(3600)),
            (self.daily, &day),
            // 1970-01-01 was a Thursday: Monday-based weeks start 3 days earlier.
            (self.weekly, &|t| (day(t) + 3).div_euclid(7)),
            (self.monthly, &|t| {
                let (y, m, _) = civil_from_days(day(t));
                y * 12 + m as i64
            }),
        ];
        for (n, period) in rules {
            let Some(n) = n else { continue };
            let mut seen = BTreeSet::new();
            for s in &order {
                if seen.len() >= n as usize {
                    break;
                }
                if seen.insert(period(s.1)) {
                    keep.insert(s.0.clone());
                }
            }
        }
        keep
    }
}

/// A retention period of a time: its index (hour, day, week or month number).
type Period = dyn Fn(i64) -> i64;

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_selects_per_period() {
        let h = 3600;
        let d = 86_400;
        // 2026-11-22 is a Sunday; t0 = 2026-11-22T12:00:00Z.
        let t0 = 1_795_348_800;
        assert_eq!(civil_from_days(t0 / d), (2026, 11, 22));
        let snaps: Vec<(String, i64)> = [
            ("a", t0),
            ("b", t0 + 600),        // same hour as a, newer
            ("c", t0 - h),          // previous hour
            ("d", t0 - d),          // Saturday
            ("e", t0 - 6 * d),      // Monday 16th: same week as a
            ("f", t0 - 7 * d),      // Sunday 15th: previous week
            ("g", t0 - 30 * d),     // October 23rd
            ("h", t0 - 60 * d - h), // September
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), *t))
        .collect();
        let names = |k: Keep| k.select(&snaps).into_iter().collect::<Vec<_>>().join(",");
        assert_eq!(names(Keep::default()), "a,b,c,d,e,f,g,h");
        assert_eq!(
            names(Keep {
                last: Some(2),
                ..Keep::default()
            }),
            "a,b"
        );
        assert_eq!(
            names(Keep {
                hourly: Some(2),
                ..Keep::default()
            }),
            "b,c"
        );
        assert_eq!(
            names(Keep {
                daily: Some(3),
                ..Keep::default()
            }),
            "b,d,e"
        );
        assert_eq!(
            names(Keep {
                weekly: Some(2),
                ..Keep::default()
            }),
            "b,f"
        );
        assert_eq!(
            names(Keep {
                monthly: Some(3),
                ..Keep::default()
            }),
            "b,g,h"
        );
        assert_eq!(
            names(Keep {
                last: Some(1),
                monthly: Some(2),
                ..Keep::default()
            }),
            "b,g"
        );
    }
}
