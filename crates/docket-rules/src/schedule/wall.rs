//! From wall-clock times to instants. Cron and RRULE are expanded in the zone's local time, with
//! UTC standing in for it so that the expansion never meets a DST change; each local time is then
//! placed on the time line here, by the convention of its kind: RFC 5545 §3.3.5 for RRULE (a time
//! in a gap is shifted by the gap, a repeated time is its first), Vixie cron's for cron.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// No fire time at or after this instant is computed. The zone data (chrono-tz) holds DST
/// transitions up to 2100 only, so later local times would be an hour off in DST zones; and
/// the horizon keeps every fire time a valid RFC 3339 timestamp.
pub fn horizon() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2100, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

/// Local times later than this cannot be placed before [`horizon`] in any zone (offsets are
/// within ±26 hours), so a walk stops there.
pub fn horizon_wall() -> NaiveDateTime {
    horizon().naive_utc() + Duration::hours(26)
}

/// Where a local time falls on the time line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Single(DateTime<Utc>),
    /// Clocks went back: the local time happened twice.
    Fold {
        first: DateTime<Utc>,
        second: DateTime<Utc>,
    },
    /// Clocks went forward over it: `end` is the first instant after the gap; `shifted` reads
    /// the time with the UTC offset from before the gap (so 02:30 in a 02:00-03:00 gap is 03:30).
    Gap {
        end: DateTime<Utc>,
        shifted: DateTime<Utc>,
    },
}

impl Placement {
    /// The earliest instant this local time can stand for under any convention; it never
    /// decreases as the local time grows, which lets a walk stop early.
    pub fn lower_bound(self) -> DateTime<Utc> {
        match self {
            Self::Single(t) | Self::Fold { first: t, .. } | Self::Gap { end: t, .. } => t,
        }
    }
}

/// Gaps longer than this do not exist (the longest, Samoa's skipped day in 2011, is 24 hours).
const LONGEST_GAP_MINUTES: i64 = 48 * 60;

pub fn place(tz: Tz, wall: NaiveDateTime) -> Placement {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => Placement::Single(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Placement::Fold {
            first: first.with_timezone(&Utc),
            second: second.with_timezone(&Utc),
        },
        LocalResult::None => {
            // Transitions fall on whole minutes: the first local minute that exists is the end.
            let minute = wall - Duration::seconds(i64::from(chrono::Timelike::second(&wall)));
            let end = (1..=LONGEST_GAP_MINUTES).find_map(|m| {
                tz.from_local_datetime(&(minute + Duration::minutes(m)))
                    .earliest()
            });
            match end {
                Some(end) => {
                    let end = end.with_timezone(&Utc);
                    let before = tz
                        .offset_from_utc_datetime(&(end - Duration::seconds(1)).naive_utc())
                        .fix();
                    let shifted =
                        (wall - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc();
                    Placement::Gap { end, shifted }
                }
                // Not a real zone's gap; read the time as UTC rather than lose it.
                None => Placement::Single(wall.and_utc()),
            }
        }
    }
}

/// The local time from which a walk must start to find every occurrence after `after`: the
/// local time of `after`, moved back over a nearby DST change, whose folded or shifted times
/// may land after `after` though their local times come before its own.
pub fn walk_start(tz: Tz, after: DateTime<Utc>) -> NaiveDateTime {
    let offset = |t: DateTime<Utc>| {
        i64::from(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    };
    let here = offset(after);
    let day = Duration::hours(26);
    let slack = [after - day, after + day]
        .into_iter()
        .map(|t| (offset(t) - here).abs())
        .max()
        .unwrap_or(0);
    after.with_timezone(&tz).naive_local() - Duration::seconds(slack)
}

/// The `n` earliest instants after `after` among those offered, in order and without repeats.
pub struct Earliest {
    after: DateTime<Utc>,
    n: usize,
    found: BTreeSet<DateTime<Utc>>,
}

impl Earliest {
    pub fn new(after: DateTime<Utc>, n: usize) -> Self {
        Self {
            after,
            n,
            found: BTreeSet::new(),
        }
    }

    /// Whether nothing at or after `lower_bound` can be among the `n` earliest any more.
    pub fn complete_before(&self, lower_bound: DateTime<Utc>) -> bool {
        self.found.len() >= self.n && self.found.last().is_some_and(|last| lower_bound > *last)
    }

    pub fn offer(&mut self, at: DateTime<Utc>) {
        if at > self.after && at < horizon() {
            self.found.insert(at);
            if self.found.len() > self.n {
                self.found.pop_last();
            }
        }
    }

    pub fn into_vec(self) -> Vec<DateTime<Utc>> {
        self.found.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn gaps_folds_and_plain_times() {
        let new_york: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            place(new_york, local("2026-03-08 02:30:00")),
            Placement::Gap {
                end: utc("2026-03-08T07:00:00Z"),
                shifted: utc("2026-03-08T07:30:00Z")
            }
        );
        assert_eq!(
            place(new_york, local("2026-11-01 01:30:00")),
            Placement::Fold {
                first: utc("2026-11-01T05:30:00Z"),
                second: utc("2026-11-01T06:30:00Z")
            }
        );
        // Santiago moves from 00:00 to 01:00 on 2026-09-06.
        let santiago: Tz = "America/Santiago".parse().unwrap();
        assert_eq!(
            place(santiago, local("2026-09-06 00:15:00")),
            Placement::Gap {
                end: utc("2026-09-06T04:00:00Z"),
                shifted: utc("2026-09-06T04:15:00Z")
            }
        );
        // Samoa skipped 2011-12-30 altogether.
        let apia: Tz = "Pacific/Apia".parse().unwrap();
        let Placement::Gap { end, shifted } = place(apia, local("2011-12-30 09:00:00")) else {
            panic!("a skipped day is a gap");
        };
        assert_eq!(end, utc("2011-12-30T10:00:00Z"));
        assert_eq!(shifted, utc("2011-12-30T19:00:00Z"));
        assert_eq!(
            place(new_york, local("2026-07-01 12:00:00")),
            Placement::Single(utc("2026-07-01T16:00:00Z"))
        );
    }

    #[test]
    fn walks_start_earlier_only_near_a_change() {
        let new_york: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            walk_start(new_york, utc("2026-07-01T16:00:00Z")),
            local("2026-07-01 12:00:00")
        );
        assert_eq!(
            walk_start(new_york, utc("2026-11-01T05:45:00Z")),
            local("2026-11-01 00:45:00")
        );
    }

    #[test]
    fn the_earliest_are_kept_in_order() {
        let after = utc("2026-01-01T00:00:00Z");
        let mut earliest = Earliest::new(after, 2);
        for t in [
            "2026-01-03T00:00:00Z",
            "2025-12-31T00:00:00Z",
            "2026-01-02T00:00:00Z",
        ] {
            earliest.offer(utc(t));
        }
        assert!(!earliest.complete_before(utc("2026-01-02T12:00:00Z")));
        earliest.offer(utc("2026-01-02T00:00:00Z"));
        earliest.offer(utc("2100-01-01T00:00:00Z"));
        assert!(earliest.complete_before(utc("2026-01-04T00:00:00Z")));
        assert_eq!(
            earliest.into_vec(),
            [utc("2026-01-02T00:00:00Z"), utc("2026-01-03T00:00:00Z")]
        );
    }
}
