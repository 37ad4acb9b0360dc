//! RFC 5545 recurrence rules. The stored text always has `DTSTART;TZID=<the task's zone>`; for
//! expansion it is rewritten into local (wall-clock) time with UTC standing in for the zone, so
//! the rrule crate never meets a DST change, and each local time is placed on the time line by
//! RFC 5545's rule ([`super::wall`]). Checks the crate does not make (INTERVAL=0, COUNT=0,
//! COUNT with UNTIL, numbered weekdays outside MONTHLY and YEARLY) refuse a rule at save time.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use rrule::{RRule, RRuleSet};

use super::wall::{self, Earliest, Placement};
use super::{ScheduleError, Zone, invalid, parse_timezone};

/// Occurrences an RRULE walk may pass before it gives up. The rrule crate walks from DTSTART:
/// `FREQ=SECONDLY` with a DTSTART a year back took 35 s for one preview. Rules without COUNT
/// are moved forward first ([`fast_forward`]), so only COUNT rules walk far, and COUNT is at
/// most [`MAX_COUNT`] (a set of several counted rules can reach the bound and is refused).
const MAX_STEPS: usize = 200_000;
/// The largest COUNT accepted: a counted rule is walked from DTSTART, so it must fit the walk.
pub const MAX_COUNT: u32 = 100_000;
/// RRULE and EXRULE lines in one rule: each is walked on its own.
const MAX_RULES: usize = 10;
/// Wall-clock bound on one walk, for rules whose periods are mostly empty (the crate itself stops
/// after 100,000 empty periods in a row).
const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

const STAMP: &str = "%Y%m%dT%H%M%S";

/// One content line: `NAME;PARAM=VALUE;…:VALUE`. A bare `FREQ=…` is an RRULE.
struct Line<'a> {
    name: String,
    params: Vec<(String, &'a str)>,
    value: &'a str,
}

impl<'a> Line<'a> {
    fn parse(line: &'a str) -> Self {
        let Some((head, value)) = line.split_once(':') else {
            return Self {
                name: "RRULE".to_owned(),
                params: Vec::new(),
                value: line,
            };
        };
        let mut parts = head.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_uppercase();
        let params = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim()))
            .collect();
        Self {
            name,
            params,
            value: value.trim(),
        }
    }

    fn param(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// `;K=V` for every parameter but those in `dropped`.
    fn params_text(&self, dropped: &[&str]) -> String {
        self.params
            .iter()
            .filter(|(k, _)| !dropped.contains(&k.as_str()))
            .map(|(k, v)| format!(";{k}={v}"))
            .collect()
    }

    /// The line written back, without the parameters in `dropped`.
    fn render(&self, dropped: &[&str]) -> String {
        format!("{}{}:{}", self.name, self.params_text(dropped), self.value)
    }
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Line::parse)
}

/// A DATE-TIME or DATE value.
#[derive(Debug, Clone, Copy)]
enum Stamp {
    Utc(NaiveDateTime),
    /// Floating, or in the zone its TZID names.
    Local(NaiveDateTime),
    Date(NaiveDate),
}

impl Stamp {
    fn parse(value: &str) -> Option<Self> {
        if let Some(utc) = value.strip_suffix('Z').or_else(|| value.strip_suffix('z')) {
            NaiveDateTime::parse_from_str(utc, STAMP)
                .ok()
                .map(Self::Utc)
        } else if value.contains(['T', 't']) {
            NaiveDateTime::parse_from_str(value, STAMP)
                .ok()
                .map(Self::Local)
        } else {
            NaiveDate::parse_from_str(value, "%Y%m%d")
                .ok()
                .map(Self::Date)
        }
    }

    /// The local time in `tz` this value stands for; `tzid` is the zone a local value is in.
    fn local_in(self, tz: Tz, tzid: Option<Tz>) -> NaiveDateTime {
        match self {
            Self::Utc(t) => t.and_utc().with_timezone(&tz).naive_local(),
            Self::Local(t) => match tzid {
                Some(zone) if zone != tz => wall::place(zone, t)
                    .lower_bound()
                    .with_timezone(&tz)
                    .naive_local(),
                _ => t,
            },
            Self::Date(d) => d.and_time(chrono::NaiveTime::MIN),
        }
    }
}

fn bad_value(name: &str, value: &str) -> ScheduleError {
    invalid(
        "schedule_expr",
        format!("{name}:{value} is not a date-time such as 20270101T090000 or 20270101T090000Z"),
    )
}

/// A rule as a task stores it, with the zone it is evaluated in.
pub struct Canonical {
    pub text: String,
    pub tz: Tz,
}

/// The stored form of a user's rule. One rule for the zone: a `DTSTART;TZID=…` names the
/// task's zone unless the request names another, which is refused; a floating DTSTART is local
/// time in the task's zone; a UTC one is that instant. Without DTSTART the rule starts at the
/// next whole minute, so that a COUNT is not spent before the task exists.
pub fn canonicalise(
    expr: &str,
    zone: Zone<'_>,
    now: DateTime<Utc>,
) -> Result<Canonical, ScheduleError> {
    let start_line = lines(expr).find(|l| l.name == "DTSTART");
    let tzid = start_line.as_ref().and_then(|l| l.param("TZID"));
    let tz = match (tzid, zone) {
        (Some(named), Zone::Given(given)) if named != given => {
            return Err(invalid(
                "timezone",
                format!(
                    "DTSTART has TZID={named} but timezone is {given:?}: name one zone, or the \
                     same in both"
                ),
            ));
        }
        (Some(named), _) => parse_timezone(named).map_err(|e| ScheduleError {
            field: "schedule_expr",
            message: format!("DTSTART;TZID: {}", e.message),
        })?,
        (None, Zone::Given(name) | Zone::Default(name)) => parse_timezone(name)?,
    };
    let start = match &start_line {
        Some(line) => Stamp::parse(line.value)
            .ok_or_else(|| bad_value("DTSTART", line.value))?
            .local_in(tz, Some(tz)),
        None => {
            let local = now.with_timezone(&tz).naive_local();
            let minute = local.with_second(0).and_then(|t| t.with_nanosecond(0));
            match minute {
                Some(m) if m == local => m,
                Some(m) => m + Duration::minutes(1),
                None => local,
            }
        }
    };
    let mut text = format!("DTSTART;TZID={}:{}", tz.name(), start.format(STAMP));
    let (mut rules, mut includes) = (0, 0);
    for line in lines(expr) {
        match line.name.as_str() {
            "DTSTART" => continue,
            "RRULE" | "EXRULE" => {
                check_rule(&line.name, line.value)?;
                rules += 1;
                if rules > MAX_RULES {
                    return Err(invalid(
                        "schedule_expr",
                        format!("at most {MAX_RULES} RRULE and EXRULE lines"),
                    ));
                }
                includes += usize::from(line.name == "RRULE");
                text.push_str(&format!("\n{}:{}", line.name, line.value));
            }
            "RDATE" | "EXDATE" => {
                let floating = line.param("TZID").is_none()
                    && line.param("VALUE").is_none()
                    && !line.value.ends_with(['Z', 'z']);
                let params = line.params_text(&[]);
                let zone = if floating {
                    format!(";TZID={}", tz.name())
                } else {
                    String::new()
                };
                text.push_str(&format!("\n{}{params}{zone}:{}", line.name, line.value));
            }
            other => {
                return Err(invalid(
                    "schedule_expr",
                    format!(
                        "{other} is not a recurrence property (DTSTART, RRULE, EXRULE, RDATE, \
                         EXDATE)"
                    ),
                ));
            }
        }
    }
    if includes == 0 {
        return Err(invalid(
            "schedule_expr",
            "an RRULE line (FREQ=…) is required",
        ));
    }
    Ok(Canonical { text, tz })
}

/// The rule with the TZID taken off its local times (see [`super::Schedule::restate_for_new_zone`]).
pub fn floating(expr: &str) -> String {
    lines(expr)
        .map(|line| line.render(&["TZID"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stored rule with each `COUNT` replaced by the `UNTIL` of its last occurrence, so that
/// every later walk can start near the time asked for instead of counting from DTSTART (a
/// second-by-second rule with a large COUNT would otherwise be walked from its start on every
/// tick). The same occurrences: RFC 5545 counts each rule's own occurrences, before EXDATE and
/// EXRULE remove any. The UNTIL is the last occurrence's instant, or, for one in a DST gap, its
/// local time (no instant has that local time).
pub fn count_as_until(text: &str, tz: Tz) -> Result<String, ScheduleError> {
    let start = lines(text)
        .find(|l| l.name == "DTSTART")
        .map(|l| l.render(&[]))
        .unwrap_or_default();
    let mut out = Vec::new();
    for line in lines(text) {
        let counted = matches!(line.name.as_str(), "RRULE" | "EXRULE")
            && line
                .value
                .split(';')
                .any(|p| p.trim().to_ascii_uppercase().starts_with("COUNT="));
        if !counted {
            out.push(line.render(&[]));
            continue;
        }
        let alone = parse(&format!("{start}\nRRULE:{}", line.value), tz)?.limit();
        let deadline = std::time::Instant::now() + MAX_TIME;
        let mut occurrences = (&alone).into_iter().take(MAX_COUNT as usize);
        let mut last = None;
        for occurrence in occurrences.by_ref() {
            if std::time::Instant::now() > deadline {
                return Err(invalid(
                    "schedule_expr",
                    format!("{}: its COUNT takes too long to count", line.name),
                ));
            }
            last = Some(occurrence.naive_utc());
        }
        let Some(last) = last else {
            out.push(format!("{}:{}", line.name, line.value));
            continue;
        };
        let until = match wall::place(tz, last) {
            Placement::Single(t) | Placement::Fold { first: t, .. } => {
                format!("{}Z", t.naive_utc().format(STAMP))
            }
            Placement::Gap { .. } => last.format(STAMP).to_string(),
        };
        let parts: Vec<String> = line
            .value
            .split(';')
            .map(|part| {
                if part.trim().to_ascii_uppercase().starts_with("COUNT=") {
                    format!("UNTIL={until}")
                } else {
                    part.to_owned()
                }
            })
            .collect();
        out.push(format!("{}:{}", line.name, parts.join(";")));
    }
    Ok(out.join("\n"))
}

/// Refuses what RFC 5545 §3.3.10 forbids and the rrule crate lets through, each with its reason.
fn check_rule(name: &str, value: &str) -> Result<(), ScheduleError> {
    let refuse = |message: String| Err(invalid("schedule_expr", format!("{name}: {message}")));
    let mut parts: Vec<(String, &str)> = Vec::new();
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return refuse(format!("{part:?} is not KEY=VALUE"));
        };
        let key = key.trim().to_ascii_uppercase();
        if parts.iter().any(|(k, _)| *k == key) {
            return refuse(format!("{key} is given twice"));
        }
        parts.push((key, val.trim()));
    }
    let get = |key: &str| parts.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    let freq = get("FREQ").unwrap_or_default().to_ascii_uppercase();
    if let Some(interval) = get("INTERVAL")
        && !interval.parse::<u16>().is_ok_and(|i| i >= 1)
    {
        return refuse(format!(
            "INTERVAL={interval}: must be a whole number from 1 to 65535"
        ));
    }
    if let Some(count) = get("COUNT")
        && !count
            .parse::<u32>()
            .is_ok_and(|c| (1..=MAX_COUNT).contains(&c))
    {
        return refuse(format!(
            "COUNT={count}: must be a whole number from 1 to {MAX_COUNT}"
        ));
    }
    if get("COUNT").is_some() && get("UNTIL").is_some() {
        return refuse("COUNT and UNTIL cannot both be given".to_owned());
    }
    for key in ["BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"] {
        if let Some(list) = get(key)
            && list.split(',').any(|v| v.trim().parse::<i32>() == Ok(0))
        {
            return refuse(format!(
                "{key}={list}: 0 is not a position (they count from 1 or -1)"
            ));
        }
    }
    if let Some(days) = get("BYDAY") {
        for day in days.split(',').map(str::trim) {
            let digits = day.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            if digits.is_empty() {
                continue;
            }
            let Ok(ordinal) = digits.parse::<i32>() else {
                return refuse(format!("BYDAY={day}: not a weekday such as MO or 2MO"));
            };
            let within_month = freq == "MONTHLY" || (freq == "YEARLY" && get("BYMONTH").is_some());
            let largest = if within_month { 5 } else { 53 };
            if freq != "MONTHLY" && freq != "YEARLY" {
                return refuse(format!(
                    "BYDAY={day}: a numbered weekday needs FREQ=MONTHLY or FREQ=YEARLY"
                ));
            }
            if freq == "YEARLY" && get("BYWEEKNO").is_some() {
                return refuse(format!(
                    "BYDAY={day}: a numbered weekday cannot be combined with BYWEEKNO"
                ));
            }
            if ordinal == 0 || ordinal.abs() > largest {
                return refuse(format!(
                    "BYDAY={day}: the number must be from 1 to {largest} or -1 to -{largest}"
                ));
            }
        }
    }
    Ok(())
}

/// Parses a stored rule into its wall-clock form.
pub fn parse(expr: &str, tz: Tz) -> Result<RRuleSet, ScheduleError> {
    wall_clock_text(expr, tz)?
        .parse()
        .map_err(|e| invalid("schedule_expr", format!("not a valid RRULE: {e}")))
}

/// The rule with every date-time as local time in `tz`, written as UTC (see the module docs).
fn wall_clock_text(expr: &str, tz: Tz) -> Result<String, ScheduleError> {
    let mut out = Vec::new();
    for line in lines(expr) {
        let tzid = line.param("TZID").and_then(|z| z.parse::<Tz>().ok());
        match line.name.as_str() {
            "DTSTART" => {
                let start = Stamp::parse(line.value)
                    .ok_or_else(|| bad_value("DTSTART", line.value))?
                    .local_in(tz, tzid.or(Some(tz)));
                out.push(format!("DTSTART:{}Z", start.format(STAMP)));
            }
            "RRULE" | "EXRULE" => {
                let parts: Vec<String> = line
                    .value
                    .split(';')
                    .map(|part| match part.split_once('=') {
                        Some((key, value)) if key.eq_ignore_ascii_case("UNTIL") => {
                            match Stamp::parse(value.trim()) {
                                Some(Stamp::Date(_)) | None => part.to_owned(),
                                Some(stamp) => {
                                    format!("UNTIL={}Z", stamp.local_in(tz, Some(tz)).format(STAMP))
                                }
                            }
                        }
                        _ => part.to_owned(),
                    })
                    .collect();
                out.push(format!(
                    "{}:{}",
                    line.name,
                    beyond_the_crate(&parts.join(";"))
                ));
            }
            "RDATE" | "EXDATE" if line.param("VALUE").is_none() => {
                let values = line
                    .value
                    .split(',')
                    .map(|v| {
                        Stamp::parse(v.trim())
                            .map(|s| {
                                format!("{}Z", s.local_in(tz, tzid.or(Some(tz))).format(STAMP))
                            })
                            .ok_or_else(|| bad_value(&line.name, v))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(format!("{}:{}", line.name, values.join(",")));
            }
            _ => out.push(line.render(&[])),
        }
    }
    Ok(out.join("\n"))
}

/// The rrule crate refuses two numbered weekdays RFC 5545 allows: the -5th of a month and the
/// -53rd of a year. The -5th Monday of a month is a Monday among its last 31st, 30th and 29th
/// days counted from the end, and the -53rd of a year one among its last 366th and 365th, so a
/// rule whose BYDAY entries all carry that number is rewritten that way.
fn beyond_the_crate(rule: &str) -> String {
    let parts: Vec<(String, String)> = rule
        .split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_owned()))
        .collect();
    let get = |key: &str| {
        parts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let freq = get("FREQ").unwrap_or_default().to_ascii_uppercase();
    let (ordinal, positions, taken) = match (freq.as_str(), get("BYMONTH")) {
        ("MONTHLY", _) | ("YEARLY", Some(_)) => ("-5", "-31,-30,-29", "BYMONTHDAY"),
        ("YEARLY", None) => ("-53", "-366,-365", "BYYEARDAY"),
        _ => return rule.to_owned(),
    };
    let Some(days) = get("BYDAY") else {
        return rule.to_owned();
    };
    let weekdays: Option<Vec<&str>> = days
        .split(',')
        .map(|d| d.trim().strip_prefix(ordinal))
        .collect();
    match weekdays {
        Some(weekdays) if get(taken).is_none() => parts
            .iter()
            .map(|(k, v)| match k.as_str() {
                "BYDAY" => format!("BYDAY={};{taken}={positions}", weekdays.join(",")),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(";"),
        _ => rule.to_owned(),
    }
}

pub struct Walk {
    pub times: Vec<DateTime<Utc>>,
    /// The walk stopped at [`MAX_STEPS`] or [`MAX_TIME`] before finding `n` times or the end of
    /// the rule.
    pub exhausted: bool,
}

/// An ordered stream of local times.
type Times<'a> = std::iter::Peekable<Box<dyn Iterator<Item = NaiveDateTime> + 'a>>;

/// Up to `n` occurrences of the wall-clock rule `set` strictly after `after`, within bounded
/// work; local times in a DST gap are shifted by the gap, repeated ones are their first. Each
/// RRULE and EXRULE is walked on its own, moved forward to near `after` where it has no COUNT,
/// and the streams are merged: the set's occurrences are those of its RRULEs and RDATEs, less
/// those of its EXRULEs and EXDATEs, as the rrule crate defines them.
pub fn walk(set: &RRuleSet, tz: Tz, after: DateTime<Utc>, n: usize) -> Walk {
    let deadline = std::time::Instant::now() + MAX_TIME;
    let start = wall::walk_start(tz, after);
    let dt_start = *set.get_dt_start();
    let alone = |rule: &RRule| {
        fast_forward(rule, dt_start.naive_utc(), start)
            .unwrap_or_else(|| RRuleSet::new(dt_start).rrule(rule.clone()))
            .limit()
    };
    let included: Vec<RRuleSet> = set.get_rrule().iter().map(alone).collect();
    let excluded: Vec<RRuleSet> = set.get_exrule().iter().map(alone).collect();
    let stream = |rules: &RRuleSet| -> Times<'_> {
        let times: Box<dyn Iterator<Item = NaiveDateTime> + '_> =
            Box::new(rules.into_iter().map(|t| t.naive_utc()));
        times.peekable()
    };
    let mut rdates: Vec<NaiveDateTime> = set
        .get_rdate()
        .iter()
        .map(|t| t.naive_utc())
        .filter(|t| *t >= start)
        .collect();
    rdates.sort_unstable();
    let exdates: std::collections::BTreeSet<NaiveDateTime> =
        set.get_exdate().iter().map(|t| t.naive_utc()).collect();
    let mut sources: Vec<Times<'_>> = included.iter().map(stream).collect();
    let rdates: Box<dyn Iterator<Item = NaiveDateTime>> = Box::new(rdates.into_iter());
    sources.push(rdates.peekable());
    let mut exclusions: Vec<Times<'_>> = excluded.iter().map(stream).collect();

    let mut earliest = Earliest::new(after, n);
    let mut steps = 0usize;
    let mut previous = None;
    let exhausted = loop {
        let next = sources
            .iter_mut()
            .enumerate()
            .filter_map(|(i, times)| times.peek().map(|t| (i, *t)))
            .min_by_key(|(_, t)| *t);
        let Some((source, local)) = next else {
            break false;
        };
        sources[source].next();
        steps += 1;
        if steps >= MAX_STEPS || std::time::Instant::now() > deadline {
            break true;
        }
        if previous == Some(local) || local < start {
            previous = Some(local);
            continue;
        }
        previous = Some(local);
        if local > wall::horizon_wall() {
            break false;
        }
        let mut is_excluded = exdates.contains(&local);
        for times in &mut exclusions {
            while times.next_if(|t| *t < local).is_some() {
                steps += 1;
                if steps >= MAX_STEPS {
                    break;
                }
            }
            is_excluded |= times.peek() == Some(&local);
        }
        if is_excluded {
            continue;
        }
        let placement = wall::place(tz, local);
        if earliest.complete_before(placement.lower_bound()) {
            break false;
        }
        earliest.offer(match placement {
            Placement::Single(t) | Placement::Fold { first: t, .. } => t,
            Placement::Gap { shifted, .. } => shifted,
        });
    };
    Walk {
        times: earliest.into_vec(),
        exhausted,
    }
}

/// The rule alone, with its DTSTART moved forward by whole periods (`INTERVAL` × `FREQ`) to
/// just before the local time `from`, so the walk starts near it instead of at DTSTART. The new
/// DTSTART is the start of a period, and the rrule crate has already filled in the parts the
/// rule took from the old one (the day of the month, the hour, …), so every period from there on
/// holds the same occurrences. Not for a rule with COUNT: a count runs from the first DTSTART.
fn fast_forward(rule: &RRule, start: NaiveDateTime, from: NaiveDateTime) -> Option<RRuleSet> {
    use chrono::{Datelike, Months, NaiveTime, TimeZone};
    use rrule::Frequency;

    if rule.get_count().is_some() || from <= start {
        return None;
    }
    let interval = i64::from(rule.get_interval().max(1));
    // Whole periods between the start of DTSTART's period and `from`, less one for safety.
    let periods = |elapsed: i64, unit: i64| (elapsed / (unit * interval) - 1).max(0) * interval;
    let midnight = |date: NaiveDate| date.and_time(NaiveTime::MIN);
    let by_seconds = |period_start: NaiveDateTime, unit: i64| {
        let k = periods((from - period_start).num_seconds(), unit);
        (k > 0).then(|| period_start + Duration::seconds(k * unit))
    };
    let moved: NaiveDateTime = match rule.get_freq() {
        Frequency::Secondly => by_seconds(start, 1)?,
        Frequency::Minutely => by_seconds(start.with_second(0)?, 60)?,
        Frequency::Hourly => by_seconds(start.with_second(0)?.with_minute(0)?, 3600)?,
        Frequency::Daily | Frequency::Weekly => {
            let (first, unit) = if matches!(rule.get_freq(), Frequency::Daily) {
                (start.date(), 1)
            } else {
                let back = (7 + start.weekday().num_days_from_monday()
                    - rule.get_week_start().num_days_from_monday())
                    % 7;
                (start.date() - Duration::days(i64::from(back)), 7)
            };
            let k = periods((from.date() - first).num_days(), unit);
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
                start.date().with_day(1)?
            } else {
                start.date().with_day(1)?.with_month(1)?
            };
            let k = periods(month_index(from) - month_index(midnight(first)), unit);
            let months = u32::try_from(k * unit).ok().filter(|&m| m > 0)?;
            midnight(first.checked_add_months(Months::new(months))?)
        }
    };
    Some(RRuleSet::new(rrule::Tz::UTC.from_utc_datetime(&moved)).rrule(rule.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The crate's own walk from DTSTART, without the fast-forward or the early stop, placed
    /// by the same rule.
    fn walked_from_dtstart(
        set: &RRuleSet,
        tz: Tz,
        after: DateTime<Utc>,
        n: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut times = Vec::new();
        // Past the n-th, a little further: a shifted time may sort before later ones.
        let mut stop = None;
        for occurrence in set {
            let local = occurrence.naive_utc();
            if stop.is_some_and(|stop| local > stop) {
                break;
            }
            let at = match wall::place(tz, local) {
                Placement::Single(t) | Placement::Fold { first: t, .. } => t,
                Placement::Gap { shifted, .. } => shifted,
            };
            if at > after {
                times.push(at);
                if times.len() == n {
                    stop = Some(local + Duration::days(2));
                }
            }
        }
        times.sort();
        times.dedup();
        times.truncate(n);
        times
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
            // Sets: each rule is walked on its own and the streams merged.
            "FREQ=MINUTELY;INTERVAL=97\nRRULE:FREQ=HOURLY;INTERVAL=5;BYMINUTE=3,30",
            "FREQ=DAILY;BYHOUR=9,17\nEXRULE:FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=9,17",
            "FREQ=HOURLY;INTERVAL=11\nRRULE:FREQ=DAILY;COUNT=900\nEXRULE:FREQ=DAILY;INTERVAL=3",
            "FREQ=DAILY\nRDATE:20261225T120000Z,20270101T120000Z\nEXDATE:20261231T000000Z",
        ];
        let afters = [
            "2026-03-08T06:59:59Z",
            "2026-10-25T00:30:00Z",
            "2026-11-01T05:45:00Z",
            "2026-12-31T23:59:59Z",
        ];
        let mut moved = 0;
        for start in starts {
            for rule in rules {
                let expr = format!("{start}\nRRULE:{rule}");
                let tz: Tz = start
                    .split_once("TZID=")
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .map_or(Tz::UTC, |(zone, _)| zone.parse().unwrap());
                let set = parse(&expr, tz).unwrap();
                for after in afters {
                    let after = utc(after);
                    let start = set.get_dt_start().naive_utc();
                    let moves =
                        fast_forward(&set.get_rrule()[0], start, wall::walk_start(tz, after));
                    moved += usize::from(moves.is_some());
                    let walk = walk(&set, tz, after, 5);
                    assert!(!walk.exhausted, "{expr}");
                    assert_eq!(
                        walk.times,
                        walked_from_dtstart(&set, tz, after, 5),
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
    fn stored_text_is_canonical_and_expands_in_local_time() {
        let now = utc("2026-12-07T12:00:00Z");
        let canonical = canonicalise(
            "DTSTART:20270104T090000\nRRULE:FREQ=DAILY;UNTIL=20270110T080000Z\nEXDATE:20270105T090000",
            Zone::Given("Europe/Berlin"),
            now,
        )
        .unwrap();
        assert_eq!(
            canonical.text,
            "DTSTART;TZID=Europe/Berlin:20270104T090000\nRRULE:FREQ=DAILY;UNTIL=20270110T080000Z\n\
             EXDATE;TZID=Europe/Berlin:20270105T090000"
        );
        assert_eq!(
            wall_clock_text(&canonical.text, canonical.tz).unwrap(),
            "DTSTART:20270104T090000Z\nRRULE:FREQ=DAILY;UNTIL=20270110T090000Z\nEXDATE:20270105T090000Z"
        );
        assert_eq!(
            beyond_the_crate("FREQ=YEARLY;BYDAY=-53SU;BYHOUR=9"),
            "FREQ=YEARLY;BYDAY=SU;BYYEARDAY=-366,-365;BYHOUR=9"
        );
        assert_eq!(
            beyond_the_crate("FREQ=MONTHLY;BYDAY=-5MO,-5FR"),
            "FREQ=MONTHLY;BYDAY=MO,FR;BYMONTHDAY=-31,-30,-29"
        );
        for untouched in [
            "FREQ=MONTHLY;BYDAY=-5MO,1FR",
            "FREQ=MONTHLY;BYDAY=-5MO;BYMONTHDAY=1",
            "FREQ=WEEKLY;BYDAY=MO",
        ] {
            assert_eq!(beyond_the_crate(untouched), untouched);
        }
    }
}
