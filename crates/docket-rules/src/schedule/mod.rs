//! Schedules: when a task fires. Cron (croner), RFC 5545 RRULE (rrule), one-shot instants, event
//! topics and manual tasks. Cron and RRULE are expanded in the task's IANA time zone (chrono-tz)
//! as local time and placed across DST changes by each standard's own convention ([`wall`]):
//! docs/scheduling.md states them, and the tests pin them.

mod cron;
mod rrule;
mod wall;

use std::str::FromStr;

use ::rrule::RRuleSet;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use wall::horizon;

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

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        rule: Box<cron::CronRule>,
        tz: Tz,
    },
    /// The rule in local time of `tz`, written as UTC (see [`rrule`]).
    RRule {
        set: Box<RRuleSet>,
        tz: Tz,
    },
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

/// The zone a request gives for a schedule: named in the request, or the one it falls back to
/// (UTC, or the task's own when a change leaves it out), which a `DTSTART;TZID` overrides.
#[derive(Debug, Clone, Copy)]
pub enum Zone<'a> {
    Given(&'a str),
    Default(&'a str),
}

impl<'a> Zone<'a> {
    pub fn from_request(given: Option<&'a str>, default: &'a str) -> Self {
        given.map_or(Self::Default(default), Self::Given)
    }

    fn name(self) -> &'a str {
        match self {
            Self::Given(name) | Self::Default(name) => name,
        }
    }
}

/// A schedule as a task stores it: the expression and the zone it is evaluated in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub expr: String,
    pub timezone: String,
}

impl Schedule {
    /// Parses a stored (normalised) schedule.
    pub fn parse(kind: &str, expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        match kind {
            "cron" => Ok(Self::Cron {
                rule: Box::new(cron::parse(expr)?),
                tz,
            }),
            "rrule" => Ok(Self::RRule {
                set: Box::new(rrule::parse(expr, tz)?),
                tz,
            }),
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
                if crate::topic::is_valid_topic(topic) {
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
        if let Self::RRule { set, tz } = self
            && rrule::walk(set, *tz, now, 1).exhausted
        {
            return Err(invalid(
                "schedule_expr",
                "the rule's next occurrence cannot be found within 200000 occurrences from \
                 DTSTART: move DTSTART closer, or lower COUNT",
            ));
        }
        Ok(())
    }

    /// Normalises user input for storage and refuses a schedule that can never fire. An RRULE
    /// takes its zone from `DTSTART;TZID` unless the request names another (see
    /// [`rrule::canonicalise`]); everything else is evaluated in the zone.
    pub fn normalise(
        kind: &str,
        expr: &str,
        zone: Zone<'_>,
        now: DateTime<Utc>,
    ) -> Result<Normalised, ScheduleError> {
        let expr = expr.trim();
        let normalised = match kind {
            "rrule" => {
                let canonical = rrule::canonicalise(expr, zone, now)?;
                Normalised {
                    expr: rrule::count_as_until(&canonical.text, canonical.tz)?,
                    timezone: canonical.tz.name().to_owned(),
                }
            }
            _ => Normalised {
                expr: if kind == "manual" {
                    String::new()
                } else {
                    expr.to_owned()
                },
                timezone: parse_timezone(zone.name())?.name().to_owned(),
            },
        };
        let schedule = Self::parse(kind, &normalised.expr, &normalised.timezone)?;
        schedule.check_bounded(now)?;
        let horizon_day = horizon().format("%Y-%m-%d");
        let never = |what: String| {
            Err(invalid(
                "schedule_expr",
                format!("{what} (fire times are computed up to then)"),
            ))
        };
        match &schedule {
            Self::Once(at) if *at <= now => {
                return Err(invalid("schedule_expr", "the instant is in the past"));
            }
            Self::Once(at) if *at >= horizon() => {
                return never(format!("the instant must be before {horizon_day}"));
            }
            Self::Cron { .. } if schedule.next_after(now).is_none() => {
                return never(format!(
                    "the expression matches no date between now and {horizon_day}"
                ));
            }
            Self::RRule { .. } if schedule.next_after(now).is_none() => {
                return never(format!(
                    "the rule has no occurrence between now and {horizon_day}"
                ));
            }
            _ => {}
        }
        Ok(normalised)
    }

    /// A stored expression whose zone is about to change: an RRULE's local times lose their
    /// TZID, so that they are read in the new zone.
    pub fn restate_for_new_zone(kind: &str, expr: &str) -> String {
        match kind {
            "rrule" => rrule::floating(expr),
            _ => expr.to_owned(),
        }
    }

    /// The first occurrence strictly after `after`; `None` when the schedule has no more (or is
    /// driven by events or by hand).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.upcoming(after, 1).first().copied()
    }

    /// Up to `n` occurrences after `after`, all before [`horizon`].
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        match self {
            Self::Cron { rule, tz } => cron::walk(rule, *tz, after, n),
            Self::RRule { set, tz } => rrule::walk(set, *tz, after, n).times,
            Self::Once(at) => {
                if *at > after && *at < horizon() && n > 0 {
                    vec![*at]
                } else {
                    Vec::new()
                }
            }
            Self::Event(_) | Self::Manual => Vec::new(),
        }
    }
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

    fn rrule(expr: &str, tz: &str) -> Schedule {
        Schedule::parse("rrule", expr, tz).unwrap()
    }

    fn refusal(kind: &str, expr: &str, tz: Option<&str>) -> ScheduleError {
        Schedule::normalise(
            kind,
            expr,
            Zone::from_request(tz, "UTC"),
            utc("2026-12-07T12:00:00Z"),
        )
        .unwrap_err()
    }

    #[test]
    fn rrule_walks_are_bounded() {
        let now = utc("2026-12-07T12:00:00Z");
        // The review's preview: a second-by-second rule from 380 days back walked 33 million
        // occurrences for every time it showed.
        let secondly = rrule("DTSTART:20251122T120000Z\nRRULE:FREQ=SECONDLY", "UTC");
        let started = std::time::Instant::now();
        assert_eq!(
            secondly.upcoming(now, 3),
            [1, 2, 3].map(|s| now + chrono::Duration::seconds(s))
        );
        assert!(secondly.check_bounded(now).is_ok());
        println!("secondly from 380 days back: {:?}", started.elapsed());
        // A count runs from DTSTART, so that rule cannot move forward: beyond the bound it is
        // refused when parsed from an old row, and COUNT itself is bounded for new ones.
        let counted = rrule(
            "DTSTART:20251122T120000Z\nRRULE:FREQ=SECONDLY;COUNT=100000000",
            "UTC",
        );
        let refused = counted.check_bounded(now).unwrap_err();
        assert!(
            refused.message.contains("cannot be found within"),
            "{refused}"
        );
        assert!(counted.upcoming(now, 3).is_empty());
        let refused = refusal(
            "rrule",
            "DTSTART:20251122T120000Z\nRRULE:FREQ=SECONDLY;COUNT=100000000",
            None,
        );
        assert!(refused.message.contains("COUNT=100000000"), "{refused}");
        // Within the bound, a count is walked and honoured.
        let near = rrule(
            "DTSTART:20261207T000000Z\nRRULE:FREQ=SECONDLY;COUNT=50000",
            "UTC",
        );
        assert_eq!(
            near.upcoming(now, 2),
            [1, 2].map(|s| now + chrono::Duration::seconds(s))
        );
        assert!(near.check_bounded(now).is_ok());
    }

    #[test]
    fn rrule_without_dtstart_starts_at_the_next_minute() {
        let now = utc("2026-11-25T10:17:42Z");
        let normalised = Schedule::normalise(
            "rrule",
            "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=30",
            Zone::Given("Europe/Chisinau"),
            now,
        )
        .unwrap();
        assert_eq!(
            normalised.expr,
            "DTSTART;TZID=Europe/Chisinau:20261125T121800\nRRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=30"
        );
        let schedule = rrule(&normalised.expr, &normalised.timezone);
        assert_eq!(
            times(&schedule, "2026-11-25T10:17:42Z", 3),
            [
                "2026-11-26T06:30:00+00:00",
                "2026-11-27T06:30:00+00:00",
                "2026-11-30T06:30:00+00:00"
            ]
        );
        // A COUNT without DTSTART is not spent before the task exists: all three still come.
        let counted =
            Schedule::normalise("rrule", "FREQ=MINUTELY;COUNT=3", Zone::Default("UTC"), now)
                .unwrap();
        let counted = rrule(&counted.expr, &counted.timezone);
        assert_eq!(
            times(&counted, "2026-11-25T10:17:42Z", 5),
            [
                "2026-11-25T10:18:00+00:00",
                "2026-11-25T10:19:00+00:00",
                "2026-11-25T10:20:00+00:00"
            ]
        );
        let counted = rrule("DTSTART:20300101T090000Z\nRRULE:FREQ=DAILY;COUNT=2", "UTC");
        assert_eq!(
            times(&counted, "2030-01-01T09:00:00Z", 5),
            ["2030-01-02T09:00:00+00:00"],
            "strictly after"
        );
    }

    #[test]
    fn a_count_is_stored_as_the_until_of_its_last_occurrence() {
        let now = utc("2026-01-01T00:00:00Z");
        let zone = Zone::Given("America/New_York");
        let expr =
            "DTSTART:20260305T023000\nRRULE:FREQ=DAILY;COUNT=3\nRRULE:FREQ=DAILY;COUNT=2;BYHOUR=12";
        let stored = Schedule::normalise("rrule", expr, zone, now).unwrap();
        // The first rule's last occurrence, 02:30 on 2026-03-07, is an instant; the second's
        // 12:30 (the minute is DTSTART's) on 2026-03-06 too.
        assert_eq!(
            stored.expr,
            "DTSTART;TZID=America/New_York:20260305T023000\nRRULE:FREQ=DAILY;UNTIL=20260307T073000Z\n\
             RRULE:FREQ=DAILY;UNTIL=20260306T173000Z;BYHOUR=12"
        );
        let counted = rrule(
            "DTSTART;TZID=America/New_York:20260305T023000\nRRULE:FREQ=DAILY;COUNT=3\nRRULE:FREQ=DAILY;COUNT=2;BYHOUR=12",
            "America/New_York",
        );
        let until = rrule(&stored.expr, &stored.timezone);
        assert_eq!(
            times(&until, "2026-03-01T00:00:00Z", 9),
            times(&counted, "2026-03-01T00:00:00Z", 9)
        );
        assert_eq!(times(&until, "2026-03-01T00:00:00Z", 9).len(), 5);
        // A last occurrence in a DST gap has no instant of its own: its local time is kept.
        let gap = Schedule::normalise(
            "rrule",
            "DTSTART:20260306T023000\nRRULE:FREQ=DAILY;COUNT=3",
            zone,
            now,
        )
        .unwrap();
        assert!(
            gap.expr.ends_with("RRULE:FREQ=DAILY;UNTIL=20260308T023000"),
            "{}",
            gap.expr
        );
        assert_eq!(
            times(&rrule(&gap.expr, &gap.timezone), "2026-03-01T00:00:00Z", 5),
            [
                "2026-03-06T07:30:00+00:00",
                "2026-03-07T07:30:00+00:00",
                "2026-03-08T07:30:00+00:00"
            ]
        );
    }

    #[test]
    fn one_zone_for_a_rule() {
        let now = utc("2026-12-07T12:00:00Z");
        // A floating DTSTART is local time in the task's zone, whatever the server's TZ.
        let floating = Schedule::normalise(
            "rrule",
            "DTSTART:20270104T090000\nRRULE:FREQ=DAILY",
            Zone::Given("Asia/Tokyo"),
            now,
        )
        .unwrap();
        assert_eq!(
            floating,
            Normalised {
                expr: "DTSTART;TZID=Asia/Tokyo:20270104T090000\nRRULE:FREQ=DAILY".to_owned(),
                timezone: "Asia/Tokyo".to_owned()
            }
        );
        assert_eq!(
            times(
                &rrule(&floating.expr, "Asia/Tokyo"),
                "2027-01-01T00:00:00Z",
                1
            ),
            ["2027-01-04T00:00:00+00:00"]
        );
        // A TZID names the zone when `timezone` is not given…
        let named = Schedule::normalise(
            "rrule",
            "DTSTART;TZID=America/New_York:20270104T090000\nRRULE:FREQ=DAILY",
            Zone::Default("Europe/Berlin"),
            now,
        )
        .unwrap();
        assert_eq!(named.timezone, "America/New_York");
        // …and must agree with it when it is.
        let conflict = refusal(
            "rrule",
            "DTSTART;TZID=America/New_York:20270104T090000\nRRULE:FREQ=DAILY",
            Some("Europe/Berlin"),
        );
        assert_eq!(conflict.field, "timezone");
        assert!(
            conflict.message.contains("TZID=America/New_York"),
            "{conflict}"
        );
        // A UTC DTSTART is that instant, and the rule then follows the task's zone.
        let instant = Schedule::normalise(
            "rrule",
            "DTSTART:20270301T080000Z\nRRULE:FREQ=DAILY",
            Zone::Given("Europe/Berlin"),
            now,
        )
        .unwrap();
        assert_eq!(
            instant.expr,
            "DTSTART;TZID=Europe/Berlin:20270301T090000\nRRULE:FREQ=DAILY"
        );
        assert_eq!(
            times(
                &rrule(&instant.expr, "Europe/Berlin"),
                "2027-03-27T12:00:00Z",
                2
            ),
            ["2027-03-28T07:00:00+00:00", "2027-03-29T07:00:00+00:00"]
        );
    }

    #[test]
    fn rrule_across_dst() {
        let schedule = rrule(
            "DTSTART;TZID=Europe/Berlin:20260328T090000\nRRULE:FREQ=DAILY",
            "Europe/Berlin",
        );
        // Wall-clock 09:00 is kept across the switch to summer time on 2026-03-29.
        assert_eq!(
            times(&schedule, "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T08:00:00+00:00",
                "2026-03-29T07:00:00+00:00",
                "2026-03-30T07:00:00+00:00"
            ]
        );
        // RFC 5545 §3.3.5: a time in the gap is shifted by the gap (02:30 → 03:30 EDT), and a
        // repeated time is its first.
        let gap = rrule(
            "DTSTART;TZID=America/New_York:20260306T023000\nRRULE:FREQ=DAILY;COUNT=4",
            "America/New_York",
        );
        assert_eq!(
            times(&gap, "2026-03-01T00:00:00Z", 5),
            [
                "2026-03-06T07:30:00+00:00",
                "2026-03-07T07:30:00+00:00",
                "2026-03-08T07:30:00+00:00",
                "2026-03-09T06:30:00+00:00"
            ]
        );
        let fold = rrule(
            "DTSTART;TZID=America/New_York:20261031T013000\nRRULE:FREQ=DAILY",
            "America/New_York",
        );
        assert_eq!(
            times(&fold, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
    }

    #[test]
    fn midnight_dst_changes_keep_their_day() {
        // Each zone's clocks move at local midnight; a daily 00:15 fires on the change day too,
        // shifted by the gap, and the day counts toward COUNT.
        for (zone, day, shifted) in [
            ("America/Santiago", "20260906", "2026-09-06T04:15:00+00:00"),
            ("America/Havana", "20260308", "2026-03-08T05:15:00+00:00"),
            ("Asia/Beirut", "20260329", "2026-03-28T22:15:00+00:00"),
            ("Africa/Cairo", "20260424", "2026-04-23T22:15:00+00:00"),
        ] {
            let date = chrono::NaiveDate::parse_from_str(day, "%Y%m%d").unwrap();
            let start = (date - chrono::Duration::days(1)).format("%Y%m%d");
            let schedule = rrule(
                &format!("DTSTART;TZID={zone}:{start}T001500\nRRULE:FREQ=DAILY;COUNT=3"),
                zone,
            );
            let fired = times(&schedule, "2026-01-01T00:00:00Z", 5);
            assert_eq!(fired.len(), 3, "{zone}: {fired:?}");
            assert_eq!(fired[1], shifted, "{zone}: {fired:?}");
        }
    }

    #[test]
    fn rules_that_cannot_fire_or_break_the_rfc_are_refused() {
        for (expr, says) in [
            ("FREQ=WEEKLY;BYDAY=1MO", "needs FREQ=MONTHLY or FREQ=YEARLY"),
            ("FREQ=DAILY;BYDAY=-1FR", "needs FREQ=MONTHLY or FREQ=YEARLY"),
            ("FREQ=MONTHLY;BYDAY=6MO", "from 1 to 5"),
            ("FREQ=YEARLY;BYWEEKNO=20;BYDAY=1MO", "BYWEEKNO"),
            ("FREQ=DAILY;INTERVAL=0", "INTERVAL=0"),
            ("FREQ=DAILY;COUNT=0", "COUNT=0"),
            ("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY=0"),
            (
                "FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z",
                "COUNT and UNTIL",
            ),
            ("FREQ=DAILY;FREQ=WEEKLY", "twice"),
            (
                "DTSTART:20200101T000000Z\nRRULE:FREQ=DAILY;UNTIL=20200201T000000Z",
                "no occurrence",
            ),
            (
                "DTSTART:20270101T000000Z\nX-WHATEVER:1\nRRULE:FREQ=DAILY",
                "X-WHATEVER",
            ),
            ("DTSTART:20270101T000000Z", "RRULE line"),
        ] {
            let refused = refusal("rrule", expr, None);
            assert_eq!(refused.field, "schedule_expr", "{expr}");
            assert!(refused.message.contains(says), "{expr}: {refused}");
        }
        let eleven = ["RRULE:FREQ=DAILY"; 11].join("\n");
        assert!(
            refusal("rrule", &eleven, None)
                .message
                .contains("at most 10")
        );
        for (expr, says) in [
            ("0 0 30 2 *", "matches no date"),
            ("0 0 31 4,6,9,11 *", "matches no date"),
        ] {
            let refused = refusal("cron", expr, None);
            assert!(refused.message.contains(says), "{expr}: {refused}");
        }
        assert!(
            Schedule::normalise(
                "cron",
                "0 0 29 2 *",
                Zone::Default("UTC"),
                utc("2026-12-07T12:00:00Z")
            )
            .is_ok()
        );
        let late = refusal("once", "2100-01-01T00:00:00Z", None);
        assert!(late.message.contains("2100-01-01"), "{late}");
    }

    #[test]
    fn numbered_weekdays_the_rfc_allows() {
        // The -53rd Sunday of a year exists in years with 53 Sundays, those from 1 January
        // (2012, 2017, 2023) and leap years from 2 January (2028), and is their first Sunday.
        let last = rrule(
            "DTSTART;TZID=UTC:20100101T090000\nRRULE:FREQ=YEARLY;BYDAY=-53SU",
            "UTC",
        );
        assert_eq!(
            times(&last, "2010-01-01T00:00:00Z", 3),
            [
                "2012-01-01T09:00:00+00:00",
                "2017-01-01T09:00:00+00:00",
                "2023-01-01T09:00:00+00:00"
            ]
        );
        let leap = rrule(
            "DTSTART;TZID=UTC:20240101T090000\nRRULE:FREQ=YEARLY;BYDAY=-53SU",
            "UTC",
        );
        assert_eq!(
            times(&leap, "2024-01-01T00:00:00Z", 1),
            ["2028-01-02T09:00:00+00:00"]
        );
        // The -5th Friday of a month: the first Friday of months that have five.
        let fifth = rrule(
            "DTSTART;TZID=UTC:20270101T090000\nRRULE:FREQ=MONTHLY;BYDAY=-5FR",
            "UTC",
        );
        assert_eq!(
            times(&fifth, "2027-01-01T00:00:00Z", 3),
            [
                "2027-01-01T09:00:00+00:00",
                "2027-04-02T09:00:00+00:00",
                "2027-07-02T09:00:00+00:00"
            ]
        );
        assert!(
            Schedule::normalise(
                "rrule",
                "FREQ=YEARLY;BYDAY=-53SU",
                Zone::Default("UTC"),
                utc("2026-12-07T12:00:00Z")
            )
            .is_ok()
        );
    }

    #[test]
    fn nothing_is_computed_past_the_horizon() {
        let yearly = rrule("DTSTART;TZID=UTC:20950101T000000\nRRULE:FREQ=YEARLY", "UTC");
        let fired = times(&yearly, "2094-01-01T00:00:00Z", 10);
        assert_eq!(fired.len(), 5, "{fired:?}");
        assert_eq!(fired[4], "2099-01-01T00:00:00+00:00");
        let cron = Schedule::parse("cron", "0 0 1 1 *", "UTC").unwrap();
        assert_eq!(times(&cron, "2098-06-01T00:00:00Z", 5).len(), 1);
    }

    #[test]
    fn once_event_and_manual() {
        let now = utc("2026-11-25T10:00:00Z");
        let once = Schedule::parse("once", "2030-01-01T08:00:00+02:00", "UTC").unwrap();
        assert_eq!(
            times(&once, "2026-11-25T10:00:00Z", 3),
            ["2030-01-01T06:00:00+00:00"]
        );
        assert!(
            Schedule::normalise("once", "2020-01-01T00:00:00Z", Zone::Default("UTC"), now).is_err()
        );
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
            let err = refusal(kind, expr, Some(tz));
            assert_eq!(err.field, field, "{kind} {expr} {tz}: {err}");
        }
    }
}
