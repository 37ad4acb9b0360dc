//! Schedules: when a task fires. Cron (croner), RFC 5545 RRULE (rrule), one-shot instants, event
//! topics and manual tasks, all evaluated in the task's IANA time zone (chrono-tz). DST gaps and
//! overlaps follow the crates' rules, pinned by the tests below.

use std::str::FromStr;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use rrule::RRuleSet;

/// A schedule field that does not parse, with the field to name in the 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field,
        message: message.into(),
    }
}

/// Cron as documented: 5 fields, or 6 with seconds first; no year field.
fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

const CRON_FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// Parses a cron expression; a refusal names the cron field at fault and its value. croner says
/// only what is wrong ("out of range"), so the field is found by asking croner again with each
/// field in turn replaced by `*`: the one whose replacement parses is the culprit.
fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let parser = cron_parser();
    let error = match parser.parse(expr) {
        Ok(cron) => return Ok(cron),
        Err(error) => error,
    };
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if !(5..=6).contains(&parts.len()) && !expr.starts_with('@') {
        return Err(invalid(
            "schedule_expr",
            format!(
                "{expr:?} has {} fields; a cron expression has 5 (minute hour day-of-month month \
                 day-of-week) or 6 (second first)",
                parts.len()
            ),
        ));
    }
    let names = &CRON_FIELDS[CRON_FIELDS.len() - parts.len()..];
    let culprit = (0..parts.len()).find(|&i| {
        let mut replaced = parts.clone();
        replaced[i] = "*";
        parser.parse(&replaced.join(" ")).is_ok()
    });
    Err(invalid(
        "schedule_expr",
        match culprit {
            Some(i) => format!(
                "{expr:?} is not a valid cron expression: the {} field {:?} is invalid ({error})",
                names[i], parts[i]
            ),
            None => format!("{expr:?} is not a valid cron expression: {error}"),
        },
    ))
}

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron { cron: Box<Cron>, tz: Tz },
    RRule { set: Box<RRuleSet> },
    Once(DateTime<Utc>),
    Event(String),
    Manual,
}

pub const KINDS: &[&str] = &["cron", "rrule", "once", "event", "manual"];

pub fn parse_timezone(timezone: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(timezone).map_err(|_| {
        invalid(
            "timezone",
            format!("{timezone:?} is not an IANA time zone such as Europe/Chisinau"),
        )
    })
}

impl Schedule {
    /// Parses a stored (normalised) schedule.
    pub fn parse(kind: &str, expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        match kind {
            "cron" => {
                let cron = parse_cron(expr.trim())?;
                Ok(Self::Cron {
                    cron: Box::new(cron),
                    tz,
                })
            }
            "rrule" => {
                let set: RRuleSet = expr
                    .parse()
                    .map_err(|e| invalid("schedule_expr", format!("not a valid RRULE: {e}")))?;
                Ok(Self::RRule { set: Box::new(set) })
            }
            "once" => DateTime::parse_from_rfc3339(expr.trim())
                .map(|t| Self::Once(t.with_timezone(&Utc)))
                .map_err(|_| {
                    invalid(
                        "schedule_expr",
                        "must be an RFC 3339 instant such as 2030-01-01T08:00:00Z",
                    )
                }),
            "event" => {
                let topic = expr.trim();
                if crate::events::is_valid_topic(topic) {
                    Ok(Self::Event(topic.to_owned()))
                } else {
                    Err(invalid(
                        "schedule_expr",
                        "must be a topic name (letters, digits and . _ - : /)",
                    ))
                }
            }
            "manual" => Ok(Self::Manual),
            other => Err(invalid(
                "schedule_kind",
                format!("{other:?} is not one of {}", KINDS.join(", ")),
            )),
        }
    }

    /// Refuses an RRULE whose next occurrence after `now` cannot be found within the walk's
    /// bounds: such a rule would otherwise never fire, silently.
    pub fn check_bounded(&self, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        if let Self::RRule { set } = self
            && rrule_walk(set, now, 1).exhausted
        {
            return Err(invalid(
                "schedule_expr",
                format!(
                    "the rule's next occurrence cannot be found within {RRULE_MAX_STEPS} \
                     occurrences from DTSTART: move DTSTART closer, or lower COUNT"
                ),
            ));
        }
        Ok(())
    }

    /// Normalises user input for storage: an RRULE without `DTSTART` starts now (whole minute, in the
    /// task's zone), so intervals and counts stay anchored; a `once` instant must be in the future.
    pub fn normalise(
        kind: &str,
        expr: &str,
        timezone: &str,
        now: DateTime<Utc>,
    ) -> Result<String, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        let expr = expr.trim();
        let normalised = match kind {
            "rrule" if !expr.to_ascii_uppercase().contains("DTSTART") => {
                let start = now
                    .with_timezone(&tz)
                    .with_second(0)
                    .and_then(|t| t.with_nanosecond(0))
                    .unwrap_or(now.with_timezone(&tz));
                let rule = expr.strip_prefix("RRULE:").unwrap_or(expr);
                format!(
                    "DTSTART;TZID={}:{}\nRRULE:{rule}",
                    tz.name(),
                    start.format("%Y%m%dT%H%M%S")
                )
            }
            "manual" => String::new(),
            _ => expr.to_owned(),
        };
        let schedule = Self::parse(kind, &normalised, timezone)?;
        schedule.check_bounded(now)?;
        if let Self::Once(at) = schedule
            && at <= now
        {
            return Err(invalid("schedule_expr", "the instant is in the past"));
        }
        Ok(normalised)
    }

    /// The first occurrence strictly after `after`; `None` when the schedule has no more (or is
    /// driven by events or by hand).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, tz } => cron
                .find_next_occurrence(&after.with_timezone(tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Self::RRule { set } => rrule_walk(set, after, 1).times.first().copied(),
            Self::Once(at) => (*at > after).then_some(*at),
            Self::Event(_) | Self::Manual => None,
        }
    }

    /// Up to `n` occurrences after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        if let Self::RRule { set } = self {
            return rrule_walk(set, after, n).times;
        }
        let mut times = Vec::with_capacity(n);
        let mut cursor = after;
        while times.len() < n {
            match self.next_after(cursor) {
                Some(next) => {
                    times.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        times
    }
}

/// Occurrences an RRULE walk may pass before it gives up. The rrule crate walks from DTSTART
/// every time: `FREQ=SECONDLY` with a DTSTART a year back took 35 s for one preview. Rules without
/// COUNT are moved forward first ([`fast_forward`]), so only COUNT rules walk far, and they end
/// after COUNT occurrences.
const RRULE_MAX_STEPS: usize = 200_000;
/// Wall-clock bound on one walk, for rules whose periods are mostly empty (the crate itself stops
/// after 100,000 empty periods in a row).
const RRULE_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

struct Walk {
    times: Vec<DateTime<Utc>>,
    /// The walk stopped at [`RRULE_MAX_STEPS`] or [`RRULE_MAX_TIME`] before finding `n` times or
    /// the end of the rule.
    exhausted: bool,
}

/// Up to `n` occurrences of `set` strictly after `after`, within bounded work.
fn rrule_walk(set: &RRuleSet, after: DateTime<Utc>, n: usize) -> Walk {
    let deadline = std::time::Instant::now() + RRULE_MAX_TIME;
    let shifted = fast_forward(set, after);
    let set = shifted.as_ref().unwrap_or(set).clone().limit();
    let mut times = Vec::with_capacity(n.min(1024));
    for (step, occurrence) in (&set).into_iter().enumerate() {
        if times.len() >= n {
            break;
        }
        if step >= RRULE_MAX_STEPS || std::time::Instant::now() > deadline {
            return Walk {
                times,
                exhausted: true,
            };
        }
        let occurrence = occurrence.with_timezone(&Utc);
        if occurrence > after {
            times.push(occurrence);
        }
    }
    Walk {
        times,
        exhausted: false,
    }
}

/// The same rule with its DTSTART moved forward by whole periods (`INTERVAL` × `FREQ`) to just
/// before `after`, so the walk starts near it instead of at DTSTART. The new DTSTART is the start
/// of a period, and the rrule crate has already filled in the parts the rule took from the old
/// one (the day of the month, the hour, …), so every period from there on holds the same
/// occurrences. Only for one rule without COUNT: a count runs from the first DTSTART.
fn fast_forward(set: &RRuleSet, after: DateTime<Utc>) -> Option<RRuleSet> {
    use chrono::{Datelike, Duration, Months, NaiveDateTime, NaiveTime, TimeZone};
    use rrule::Frequency;

    let [rule] = set.get_rrule().as_slice() else {
        return None;
    };
    if rule.get_count().is_some() || !set.get_exrule().is_empty() {
        return None;
    }
    let start = *set.get_dt_start();
    let tz = start.timezone();
    let start_local = start.naive_local();
    let after_local = after.with_timezone(&tz).naive_local();
    if after_local <= start_local {
        return None;
    }
    let interval = i64::from(rule.get_interval().max(1));
    // Whole periods between the start of DTSTART's period and `after`, less one for safety.
    let periods = |elapsed: i64, unit: i64| (elapsed / (unit * interval) - 1).max(0) * interval;
    let midnight = |date: chrono::NaiveDate| date.and_time(NaiveTime::MIN);
    let by_seconds = |period_start: NaiveDateTime, unit: i64| {
        let k = periods((after_local - period_start).num_seconds(), unit);
        (k > 0).then(|| period_start + Duration::seconds(k * unit))
    };
    let shifted: NaiveDateTime = match rule.get_freq() {
        Frequency::Secondly => by_seconds(start_local, 1)?,
        Frequency::Minutely => by_seconds(start_local.with_second(0)?, 60)?,
        Frequency::Hourly => by_seconds(start_local.with_second(0)?.with_minute(0)?, 3600)?,
        Frequency::Daily | Frequency::Weekly => {
            let (first, unit) = if matches!(rule.get_freq(), Frequency::Daily) {
                (start_local.date(), 1)
            } else {
                let back = (7 + start_local.weekday().num_days_from_monday()
                    - rule.get_week_start().num_days_from_monday())
                    % 7;
                (start_local.date() - Duration::days(i64::from(back)), 7)
            };
            let k = periods((after_local.date() - first).num_days(), unit);
            (k > 0).then(|| midnight(first + Duration::days(k * unit)))?
        }
        Frequency::Monthly | Frequency::Yearly => {
            let month_index = |t: NaiveDateTime| i64::from(t.year()) * 12 + i64::from(t.month0());
            let unit = if matches!(rule.get_freq(), Frequency::Monthly) {
                1
            } else {
                12
            };
            let first = if unit == 1 {
                start_local.date().with_day(1)?
            } else {
                start_local.date().with_day(1)?.with_month(1)?
            };
            let k = periods(
                month_index(after_local) - month_index(midnight(first)),
                unit,
            );
            let months = u32::try_from(k * unit).ok().filter(|&m| m > 0)?;
            midnight(first.checked_add_months(Months::new(months))?)
        }
    };
    // A period that starts in a DST gap starts at the first instant after it.
    let new_start = (0..4).find_map(|hours| {
        tz.from_local_datetime(&(shifted + Duration::hours(hours)))
            .earliest()
    })?;
    let mut moved = RRuleSet::new(new_start).rrule(rule.clone());
    for date in set.get_rdate() {
        moved = moved.rdate(*date);
    }
    for date in set.get_exdate() {
        moved = moved.exdate(*date);
    }
    Some(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn times(schedule: &Schedule, after: &str, n: usize) -> Vec<String> {
        schedule
            .upcoming(utc(after), n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn cron_refusals_name_the_field_and_the_value() {
        let message = |expr: &str| {
            Schedule::parse("cron", expr, "UTC")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message("61 * * * *"),
            format!(
                "schedule_expr: \"61 * * * *\" is not a valid cron expression: the minute field \
                 \"61\" is invalid ({})",
                cron_parser().parse("61 * * * *").unwrap_err()
            ),
        );
        assert!(message("0 0 25 * * *").contains("the hour field \"25\""));
        assert!(message("0 9 * * MON-XYZ").contains("the day-of-week field \"MON-XYZ\""));
        assert!(message("0 9 32 * *").contains("the day-of-month field \"32\""));
        for (expr, count) in [("* * * *", 4), ("0 0 0 1 1 * 2030", 7)] {
            assert_eq!(
                message(expr),
                format!(
                    "schedule_expr: {expr:?} has {count} fields; a cron expression has 5 (minute hour \
                     day-of-month month day-of-week) or 6 (second first)"
                )
            );
        }
        assert!(Schedule::parse("cron", "@daily", "UTC").is_ok());
    }

    #[test]
    fn five_and_six_field_cron_in_a_time_zone() {
        let weekdays = Schedule::parse("cron", "0 8 * * 1-5", "Europe/Chisinau").unwrap();
        // Friday 2026-11-27 → next Monday; Chisinau is UTC+2 in winter.
        assert_eq!(
            times(&weekdays, "2026-11-27T07:00:00Z", 2),
            ["2026-11-30T06:00:00+00:00", "2026-12-01T06:00:00+00:00"]
        );
        let every_ten_seconds = Schedule::parse("cron", "*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            times(&every_ten_seconds, "2026-01-01T00:00:05Z", 2),
            ["2026-01-01T00:00:10+00:00", "2026-01-01T00:00:20+00:00"]
        );
    }

    #[test]
    fn cron_across_dst_changes() {
        let nightly = Schedule::parse("cron", "30 2 * * *", "America/New_York").unwrap();
        // 2026-03-08: clocks jump from 02:00 to 03:00, so 02:30 does not exist that night; croner
        // fires at the end of the gap (03:00 EDT = 07:00 UTC) instead of skipping the day.
        assert_eq!(
            times(&nightly, "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]
        );
        let early = Schedule::parse("cron", "30 1 * * *", "America/New_York").unwrap();
        // 2026-11-01: 01:30 happens twice (05:30 UTC in EDT, 06:30 UTC in EST); it fires once, at the first.
        assert_eq!(
            times(&early, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
    }

    /// The crate's own walk from DTSTART, without the fast-forward or the bounds.
    fn walked_from_dtstart(set: &RRuleSet, after: &str, n: u16) -> Vec<DateTime<Utc>> {
        let tz = set.get_dt_start().timezone();
        let from = utc(after) + chrono::Duration::seconds(1);
        let result = set.clone().after(from.with_timezone(&tz)).all(n);
        result.dates.iter().map(|t| t.with_timezone(&Utc)).collect()
    }

    #[test]
    fn a_fast_forwarded_walk_finds_what_the_walk_from_dtstart_finds() {
        let starts = [
            "DTSTART;TZID=Europe/Chisinau:20250131T103045",
            "DTSTART;TZID=America/Santiago:20240229T001500",
            "DTSTART;TZID=America/New_York:20230312T013000",
            "DTSTART:20220101T000000Z",
        ];
        let rules = [
            "FREQ=SECONDLY;INTERVAL=3607",
            "FREQ=MINUTELY;INTERVAL=1301;BYSECOND=5,50",
            "FREQ=HOURLY;INTERVAL=5",
            "FREQ=HOURLY;BYMINUTE=0,30;BYDAY=MO,FR",
            "FREQ=DAILY",
            "FREQ=DAILY;INTERVAL=3;BYHOUR=0,12",
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,SU;WKST=SU",
            "FREQ=WEEKLY;BYDAY=TU,TH;BYHOUR=8;BYMINUTE=30",
            "FREQ=MONTHLY",
            "FREQ=MONTHLY;INTERVAL=5;BYDAY=-1FR",
            "FREQ=MONTHLY;BYMONTHDAY=31",
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
            "FREQ=YEARLY;INTERVAL=2;BYWEEKNO=20;BYDAY=MO",
            "FREQ=DAILY;UNTIL=20270101T000000Z",
        ];
        let afters = [
            "2026-03-08T06:59:59Z",
            "2026-10-25T00:30:00Z",
            "2026-12-31T23:59:59Z",
        ];
        let mut moved = 0;
        for start in starts {
            for rule in rules {
                let expr = format!("{start}\nRRULE:{rule}");
                let set: RRuleSet = expr.parse().unwrap();
                for after in afters {
                    moved += usize::from(fast_forward(&set, utc(after)).is_some());
                    let walk = rrule_walk(&set, utc(after), 5);
                    assert!(!walk.exhausted, "{expr}");
                    assert_eq!(
                        walk.times,
                        walked_from_dtstart(&set, after, 5),
                        "{expr} after {after}"
                    );
                }
            }
        }
        // Rules less than two periods past their DTSTART (some yearly ones here) stay put.
        assert!(
            moved > starts.len() * rules.len() * afters.len() * 3 / 4,
            "{moved} moved"
        );
    }

    #[test]
    fn rrule_walks_are_bounded() {
        let now = utc("2026-12-07T12:00:00Z");
        // The review's preview: a second-by-second rule from 380 days back walked 33 million
        // occurrences for every time it showed.
        let secondly = Schedule::parse(
            "rrule",
            "DTSTART:20251122T120000Z\nRRULE:FREQ=SECONDLY",
            "UTC",
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            secondly.upcoming(now, 3),
            [1, 2, 3].map(|s| now + chrono::Duration::seconds(s))
        );
        assert!(secondly.check_bounded(now).is_ok());
        println!("secondly from 380 days back: {:?}", started.elapsed());
        // A count runs from DTSTART, so that rule cannot move forward: beyond the bound it is refused.
        let counted = Schedule::parse(
            "rrule",
            "DTSTART:20251122T120000Z\nRRULE:FREQ=SECONDLY;COUNT=100000000",
            "UTC",
        )
        .unwrap();
        let refused = counted.check_bounded(now).unwrap_err();
        assert!(
            refused.message.contains("cannot be found within"),
            "{refused}"
        );
        assert!(counted.upcoming(now, 3).is_empty());
        let refused = Schedule::normalise(
            "rrule",
            "DTSTART:20251122T120000Z\nRRULE:FREQ=SECONDLY;COUNT=100000000",
            "UTC",
            now,
        )
        .unwrap_err();
        assert_eq!(refused.field, "schedule_expr");
        // Within the bound, a count is walked and honoured.
        let near = Schedule::parse(
            "rrule",
            "DTSTART:20261207T000000Z\nRRULE:FREQ=SECONDLY;COUNT=50000",
            "UTC",
        )
        .unwrap();
        assert_eq!(
            near.upcoming(now, 2),
            [
                now + chrono::Duration::seconds(1),
                now + chrono::Duration::seconds(2)
            ]
        );
        assert!(near.check_bounded(now).is_ok());
    }

    #[test]
    fn rrule_with_and_without_dtstart() {
        let now = utc("2026-11-25T10:17:42Z");
        let expr = Schedule::normalise(
            "rrule",
            "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=30",
            "Europe/Chisinau",
            now,
        )
        .unwrap();
        assert!(
            expr.starts_with("DTSTART;TZID=Europe/Chisinau:20261125T121700\nRRULE:"),
            "{expr}"
        );
        let schedule = Schedule::parse("rrule", &expr, "Europe/Chisinau").unwrap();
        assert_eq!(
            times(&schedule, "2026-11-25T10:17:42Z", 3),
            [
                "2026-11-26T06:30:00+00:00",
                "2026-11-27T06:30:00+00:00",
                "2026-11-30T06:30:00+00:00"
            ]
        );
        let counted = Schedule::parse(
            "rrule",
            "DTSTART:20300101T090000Z\nRRULE:FREQ=DAILY;COUNT=2",
            "UTC",
        )
        .unwrap();
        assert_eq!(
            times(&counted, "2029-12-31T00:00:00Z", 5),
            ["2030-01-01T09:00:00+00:00", "2030-01-02T09:00:00+00:00"]
        );
        assert_eq!(
            times(&counted, "2030-01-01T09:00:00Z", 5),
            ["2030-01-02T09:00:00+00:00"],
            "strictly after"
        );
    }

    #[test]
    fn rrule_across_dst() {
        let schedule = Schedule::parse(
            "rrule",
            "DTSTART;TZID=Europe/Berlin:20260328T090000\nRRULE:FREQ=DAILY",
            "Europe/Berlin",
        )
        .unwrap();
        // Wall-clock 09:00 is kept across the switch to summer time on 2026-03-29.
        assert_eq!(
            times(&schedule, "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T08:00:00+00:00",
                "2026-03-29T07:00:00+00:00",
                "2026-03-30T07:00:00+00:00"
            ]
        );
    }

    #[test]
    fn once_event_and_manual() {
        let now = utc("2026-11-25T10:00:00Z");
        let once = Schedule::parse("once", "2030-01-01T08:00:00+02:00", "UTC").unwrap();
        assert_eq!(
            times(&once, "2026-11-25T10:00:00Z", 3),
            ["2030-01-01T06:00:00+00:00"]
        );
        assert!(Schedule::normalise("once", "2020-01-01T00:00:00Z", "UTC", now).is_err());
        assert!(
            Schedule::parse("event", "orders.created", "UTC")
                .unwrap()
                .next_after(now)
                .is_none()
        );
        assert!(
            Schedule::parse("manual", "", "UTC")
                .unwrap()
                .next_after(now)
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let now = utc("2026-11-25T10:00:00Z");
        let cases = [
            ("cron", "61 * * * *", "UTC", "schedule_expr"),
            ("cron", "0 8 * * 1-5", "Mars/Olympus", "timezone"),
            ("rrule", "FREQ=SOMETIMES", "UTC", "schedule_expr"),
            ("once", "tomorrow", "UTC", "schedule_expr"),
            ("once", "2001-01-01T00:00:00Z", "UTC", "schedule_expr"),
            ("event", "has spaces", "UTC", "schedule_expr"),
            ("hourly", "", "UTC", "schedule_kind"),
        ];
        for (kind, expr, tz, field) in cases {
            let err = Schedule::normalise(kind, expr, tz, now).unwrap_err();
            assert_eq!(err.field, field, "{kind} {expr} {tz}: {err}");
        }
    }
}
