//! Cron / RRULE / once / event schedule parsing, plus computing the next few occurrences of
//! whatever parses (that is where the schedule crates do their arithmetic).
#![no_main]

use chrono::{DateTime, Utc};
use docket_rules::schedule::{Schedule, Zone};
use libfuzzer_sys::fuzz_target;

const KINDS: &[&str] = &["cron", "rrule", "once", "event", "manual"];
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Chisinau",
    "America/New_York",
    "Australia/Lord_Howe",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(expr) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let zone = ZONES[usize::from(selector >> 4) % ZONES.len()];
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("fixed instant");
    if let Ok(schedule) = Schedule::parse(kind, expr, zone) {
        let _ = schedule.upcoming(now, 3);
    }
    if let Ok(normalised) = Schedule::normalise(kind, expr, Zone::Given(zone), now) {
        // What normalise stores must parse again.
        let again = Schedule::parse(kind, &normalised.expr, &normalised.timezone);
        assert!(
            again.is_ok(),
            "normalised {normalised:?} does not parse: {again:?}"
        );
    }
});
