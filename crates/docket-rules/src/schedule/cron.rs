//! Cron, parsed by croner and expanded in local time ([`super::wall`]), with Vixie cron's
//! conventions: a day matches when day-of-month *or* day-of-week matches if both are restricted,
//! and both must match if either field starts with `*`; across DST changes a job at a fixed
//! time (minute and hour fields not starting with `*`) runs once when its time is skipped, at
//! the end of the gap, and once when its time repeats, at the first; other jobs follow the clock,
//! so they skip the times a gap removes and run again in a repeated hour.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::wall::{self, Earliest, Placement};
use super::{ScheduleError, invalid};

/// Cron as documented: 5 fields, or 6 with seconds first; no year field.
fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

const FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

#[derive(Debug, Clone)]
pub struct CronRule {
    cron: Cron,
    /// A job at fixed times in Vixie cron's sense: neither minute nor hour starts with `*`.
    fixed_time: bool,
}

fn expand_alias(expr: &str) -> &str {
    match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => expr,
    }
}

/// Parses a cron expression; a refusal names the cron field at fault and its value. croner says
/// only what is wrong ("out of range"), so the field is found by asking croner again with each
/// field in turn replaced by `*`: the one whose replacement parses is the culprit.
pub fn parse(expr: &str) -> Result<CronRule, ScheduleError> {
    let expr = expand_alias(expr.trim());
    let mut parts: Vec<&str> = expr.split_whitespace().collect();
    if !(5..=6).contains(&parts.len()) {
        return Err(invalid(
            "schedule_expr",
            format!(
                "{expr:?} has {} fields; a cron expression has 5 (minute hour day-of-month month \
                 day-of-week) or 6 (second first)",
                parts.len()
            ),
        ));
    }
    let names = &FIELDS[FIELDS.len() - parts.len()..];
    let parser = cron_parser();
    let (minute, hour, dom, dow) = (
        parts.len() - 5,
        parts.len() - 4,
        parts.len() - 3,
        parts.len() - 1,
    );
    let fixed_time = !parts[minute].starts_with('*') && !parts[hour].starts_with('*');
    // croner treats only a bare `*` as unrestricted; Vixie cron any field starting with `*`
    // (`*/2`), so such a day field asks croner for both to match (its `+` on day-of-week).
    let loose = |field: &str| field.starts_with('*') && field != "*";
    let both_days = format!("+{}", parts[dow]);
    if (loose(parts[dom]) || loose(parts[dow])) && parts[dom] != "*" && parts[dow] != "*" {
        parts[dow] = &both_days;
    }
    let error = match parser.parse(&parts.join(" ")) {
        Ok(cron) => return Ok(CronRule { cron, fixed_time }),
        Err(error) => error,
    };
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
                names[i],
                parts[i].trim_start_matches('+')
            ),
            None => format!("{expr:?} is not a valid cron expression: {error}"),
        },
    ))
}

/// Local times a cron walk may pass before it gives up (a second-by-second job passes 3,600 over
/// an hour-long DST change).
const MAX_STEPS: usize = 200_000;

/// Up to `n` fire times strictly after `after`, by the conventions in the module docs.
pub fn walk(rule: &CronRule, tz: Tz, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let start = wall::walk_start(tz, after);
    let mut earliest = Earliest::new(after, n);
    let mut cursor = start.and_utc();
    for _ in 0..MAX_STEPS {
        let Ok(next) = rule.cron.find_next_occurrence(&cursor, false) else {
            break;
        };
        cursor = next;
        let local = next.naive_utc();
        if local > wall::horizon_wall() {
            break;
        }
        let placement = wall::place(tz, local);
        if earliest.complete_before(placement.lower_bound()) {
            break;
        }
        match placement {
            Placement::Single(t) => earliest.offer(t),
            Placement::Fold { first, second } => {
                earliest.offer(first);
                if !rule.fixed_time {
                    earliest.offer(second);
                }
            }
            Placement::Gap { end, .. } => {
                if rule.fixed_time {
                    earliest.offer(end);
                }
            }
        }
    }
    earliest.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn times(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let rule = parse(expr).unwrap();
        walk(&rule, tz.parse().unwrap(), utc(after), n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn refusals_name_the_field_and_the_value() {
        let message = |expr: &str| parse(expr).unwrap_err().to_string();
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
        assert!(message("0 9 */2 * MON-XYZ").contains("the day-of-week field \"MON-XYZ\""));
        for (expr, count) in [("* * * *", 4), ("0 0 0 1 1 * 2030", 7), ("@often", 1)] {
            assert_eq!(
                message(expr),
                format!(
                    "schedule_expr: {expr:?} has {count} fields; a cron expression has 5 (minute hour \
                     day-of-month month day-of-week) or 6 (second first)"
                )
            );
        }
        assert!(parse("@daily").is_ok_and(|r| r.fixed_time));
        assert!(parse("@hourly").is_ok_and(|r| !r.fixed_time));
    }

    #[test]
    fn five_and_six_fields_in_a_time_zone() {
        // Friday 2026-11-27 → next Monday; Chisinau is UTC+2 in winter.
        assert_eq!(
            times("0 8 * * 1-5", "Europe/Chisinau", "2026-11-27T07:00:00Z", 2),
            ["2026-11-30T06:00:00+00:00", "2026-12-01T06:00:00+00:00"]
        );
        assert_eq!(
            times("*/10 * * * * *", "UTC", "2026-01-01T00:00:05Z", 2),
            ["2026-01-01T00:00:10+00:00", "2026-01-01T00:00:20+00:00"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: the 1st of the month or any Monday (2027-02-01 is a Monday).
        assert_eq!(
            times("0 9 1 * 1", "UTC", "2027-01-25T12:00:00Z", 3),
            [
                "2027-02-01T09:00:00+00:00",
                "2027-02-08T09:00:00+00:00",
                "2027-02-15T09:00:00+00:00"
            ]
        );
        // A day field starting with `*` makes it both: odd days that are Mondays.
        assert_eq!(
            times("0 9 */2 * 1", "UTC", "2027-01-25T12:00:00Z", 2),
            ["2027-02-01T09:00:00+00:00", "2027-02-15T09:00:00+00:00"]
        );
        assert_eq!(
            times("0 9 1 * */7", "UTC", "2027-01-25T12:00:00Z", 2),
            ["2027-08-01T09:00:00+00:00", "2028-10-01T09:00:00+00:00"]
        );
    }

    #[test]
    fn fixed_times_across_dst_changes_run_once() {
        // New York, 2026-03-08: 02:00 → 03:00. Every fixed time in the gap runs once, at 03:00.
        for expr in ["30 2 * * *", "15,45 2 8 3 *", "0-59/20 2 8 3 *"] {
            let first = times(expr, "America/New_York", "2026-03-08T05:00:00Z", 1);
            assert_eq!(first, ["2026-03-08T07:00:00+00:00"], "{expr}");
        }
        assert_eq!(
            times(
                "15,45 2 * * *",
                "America/New_York",
                "2026-03-07T12:00:00Z",
                4
            ),
            [
                "2026-03-08T07:00:00+00:00",
                "2026-03-09T06:15:00+00:00",
                "2026-03-09T06:45:00+00:00",
                "2026-03-10T06:15:00+00:00"
            ]
        );
        // 2026-11-01: 01:00-02:00 happens twice; a fixed 01:30 runs at the first only.
        assert_eq!(
            times("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
        assert_eq!(
            times("30 1 * * *", "America/New_York", "2026-11-01T05:45:00Z", 1),
            ["2026-11-02T06:30:00+00:00"]
        );
    }

    #[test]
    fn other_jobs_follow_the_clock_across_dst_changes() {
        // Every half hour: the gap's 02:00 and 02:30 do not happen…
        assert_eq!(
            times(
                "*/30 * * * *",
                "America/New_York",
                "2026-03-08T06:00:00Z",
                3
            ),
            [
                "2026-03-08T06:30:00+00:00",
                "2026-03-08T07:00:00+00:00",
                "2026-03-08T07:30:00+00:00"
            ]
        );
        // …and the repeated hour runs twice.
        assert_eq!(
            times(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T04:45:00Z",
                5
            ),
            [
                "2026-11-01T05:00:00+00:00",
                "2026-11-01T05:30:00+00:00",
                "2026-11-01T06:00:00+00:00",
                "2026-11-01T06:30:00+00:00",
                "2026-11-01T07:00:00+00:00"
            ]
        );
        // From inside the first pass, the second pass's earlier local times still come.
        assert_eq!(
            times("15 * * * *", "America/New_York", "2026-11-01T05:30:00Z", 2),
            ["2026-11-01T06:15:00+00:00", "2026-11-01T07:15:00+00:00"]
        );
    }

    #[test]
    fn midnight_changes_fire() {
        // Santiago, 2026-09-06: 00:00 → 01:00; a fixed 00:15 runs at 01:00 local (04:00 UTC).
        assert_eq!(
            times("15 0 * * *", "America/Santiago", "2026-09-05T12:00:00Z", 2),
            ["2026-09-06T04:00:00+00:00", "2026-09-07T03:15:00+00:00"]
        );
    }
}
