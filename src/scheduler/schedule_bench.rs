//! `docket bench schedules`: the worst schedules a caller can send to `POST /tasks/preview`, each
//! validated and previewed as the handler does (normalise, parse, five fire times), timed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use docket_rules::schedule::{Schedule, Zone};

/// The cases: what each stresses, kind, expression, zone. DTSTARTs are relative to now.
fn cases(now: DateTime<Utc>) -> Vec<(&'static str, &'static str, String, &'static str)> {
    let stamp = |days_back: i64| {
        (now - chrono::Duration::days(days_back))
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    vec![
        (
            "RRULE every second from 380 days back",
            "rrule",
            format!("DTSTART:{}\nRRULE:FREQ=SECONDLY", stamp(380)),
            "UTC",
        ),
        (
            "RRULE every second, COUNT=100000, from 1 day back",
            "rrule",
            format!("DTSTART:{}\nRRULE:FREQ=SECONDLY;COUNT=100000", stamp(1)),
            "UTC",
        ),
        (
            "RRULE every second on 29 February only",
            "rrule",
            format!(
                "DTSTART:{}\nRRULE:FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=29",
                stamp(30)
            ),
            "UTC",
        ),
        (
            "RRULE every minute, as two RRULEs, from 60 days back",
            "rrule",
            format!(
                "DTSTART:{}\nRRULE:FREQ=MINUTELY\nRRULE:FREQ=MINUTELY;BYSECOND=30",
                stamp(60)
            ),
            "Europe/Berlin",
        ),
        (
            "RRULE two counted rules every second, from 1 day back",
            "rrule",
            format!(
                "DTSTART:{}\nRRULE:FREQ=SECONDLY;COUNT=100000\nRRULE:FREQ=SECONDLY;COUNT=100000;BYSECOND=0,30",
                stamp(1)
            ),
            "UTC",
        ),
        (
            "cron every second",
            "cron",
            "* * * * * *".to_owned(),
            "America/Santiago",
        ),
        (
            "cron that never matches (refused)",
            "cron",
            "0 0 30 2 *".to_owned(),
            "UTC",
        ),
        (
            "cron on 29 February only",
            "cron",
            "0 0 29 2 *".to_owned(),
            "UTC",
        ),
    ]
}

pub struct Figure {
    pub case: &'static str,
    pub outcome: String,
    pub median: Duration,
    pub max: Duration,
}

pub fn run(iterations: usize) -> Vec<Figure> {
    let now = crate::clock::now();
    cases(now)
        .into_iter()
        .map(|(case, kind, expr, zone)| {
            let mut took = Vec::with_capacity(iterations);
            let mut outcome = String::new();
            for _ in 0..iterations.max(1) {
                let started = Instant::now();
                let previewed = Schedule::normalise(kind, &expr, Zone::Given(zone), now).and_then(
                    |normalised| {
                        let schedule =
                            Schedule::parse(kind, &normalised.expr, &normalised.timezone)?;
                        Ok(schedule.upcoming(now, 5))
                    },
                );
                took.push(started.elapsed());
                outcome = match previewed {
                    Ok(times) => format!("{} fire times", times.len()),
                    Err(refused) => format!("422: {}", refused.message),
                };
            }
            took.sort();
            Figure {
                case,
                outcome,
                median: took[took.len() / 2],
                max: took[took.len() - 1],
            }
        })
        .collect()
}
