//! Reports over the review desk's record: how many decisions who made, of what kind and why (per
//! calendar day in a chosen time zone), and how each queue and priority kept its SLA.
//!
//! Decisions are the `case_history` rows with a `decision` (one per reviewer action: approve,
//! reject, return, hold, escalate, needs_more_info; under maker-checker the maker's row). Decisions
//! the policy makes itself carry the actor `system` and are reported as the reviewer `system`.
//! The SLA figures come from the `cases` rows. Reports only read; they change nothing.

pub mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use futures_util::TryStreamExt;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::store::Store;
use crate::with_pool;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::decisions))
        .routes(routes!(http::sla))
}

/// The look-back when the caller names no `from`.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest window a report covers: grouped by day, a report runs one query per day of the
/// window, so their number must stay bounded.
pub const MAX_DAYS: i64 = 366;

/// Final states a person's decision leads to (the SLA report's "decided"). Automatic decisions
/// and cancellations are not reviewers' work and have no SLA to meet.
const DECIDED_BY_PEOPLE: &str = "('approved', 'rejected', 'returned')";
/// States in which a case still waits for someone: open, or parked (on hold, waiting for
/// information).
const UNFINISHED: &str =
    "('queued', 'in_review', 'pending_dual_control', 'escalated', 'on_hold', 'needs_more_info')";

/// Why a report could not be made. Mapped to HTTP once, below.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ReportError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Invalid { field, message } => ApiError::invalid_field(field, message),
            ReportError::Database(e) => ApiError::internal(e),
        }
    }
}

/// The half-open time range `[from, to)` a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// Parses the `from` and `to` parameters (RFC 3339). Without `to` the window ends now; without
    /// `from` it starts [`DEFAULT_DAYS`] before its end.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, ReportError> {
        let to = time_param("to", to)?.unwrap_or(now);
        let from = time_param("from", from)?.unwrap_or(to - Duration::days(DEFAULT_DAYS));
        if from >= to {
            return Err(ReportError::invalid("to", "must be later than from"));
        }
        if to - from > Duration::days(MAX_DAYS) {
            return Err(ReportError::invalid(
                "from",
                format!("the window may span at most {MAX_DAYS} days; narrow from or to"),
            ));
        }
        Ok(Self { from, to })
    }
}

fn time_param(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ReportError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ReportError::invalid(
                    field,
                    "must be an RFC 3339 time such as 2026-01-31T00:00:00Z (send + as %2B)",
                )
            }),
    }
}

/// What the decisions report can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The actor who decided: `user:<id>`, `api_key:<id>` or `system`.
    Reviewer,
    /// The decision: approve, reject, return, hold, escalate or needs_more_info.
    Action,
    /// One of the decision's reason codes.
    ReasonCode,
    /// The calendar day of the decision in the report's time zone.
    Day,
}

impl Dimension {
    pub const ALL: [Self; 4] = [Self::Reviewer, Self::Action, Self::ReasonCode, Self::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reviewer => "reviewer",
            Self::Action => "action",
            Self::ReasonCode => "reason_code",
            Self::Day => "day",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Parses `group_by`: a comma-separated list of distinct dimensions, in the order the rows are
    /// to be sorted by. Absent means all four.
    pub fn parse_list(value: Option<&str>) -> Result<Vec<Self>, ReportError> {
        let Some(value) = value else {
            return Ok(Self::ALL.to_vec());
        };
        let known = || {
            Self::ALL
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut dimensions = Vec::new();
        for name in value.split(',').map(str::trim) {
            let dimension = Self::parse(name).ok_or_else(|| {
                ReportError::invalid(
                    "group_by",
                    format!("unknown dimension {name:?}; choose from {}", known()),
                )
            })?;
            if dimensions.contains(&dimension) {
                return Err(ReportError::invalid(
                    "group_by",
                    format!("names {name} twice"),
                ));
            }
            dimensions.push(dimension);
        }
        Ok(dimensions)
    }
}

/// Parses an IANA time zone name; absent means UTC.
pub fn parse_tz(value: Option<&str>) -> Result<Tz, ReportError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(Tz::UTC),
        Some(name) => Tz::from_str(name).map_err(|_| {
            ReportError::invalid(
                "tz",
                format!("{name:?} is not an IANA time zone such as Europe/Paris"),
            )
        }),
    }
}

/// One group of the decisions report. A dimension the report is not grouped by is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DecisionRow {
    /// `user:<id>`, `api_key:<id>` or `system` (decisions the policy made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// The reviewer's name (the user's, the API key's, or "Docket (policy)" for `system`), for
    /// people reading the report; with `reviewer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer_name: Option<String>,
    /// approve, reject, return, hold, escalate or needs_more_info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The reason code; `null` for decisions given without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason_code: Option<Option<String>>,
    /// `YYYY-MM-DD` in the report's time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// Decisions in the group. With `reason_code` grouping, a decision with several codes counts
    /// once under each.
    pub count: i64,
}

impl DecisionReport {
    /// Names the reviewers of the rows from the tenant's directory; an actor it does not know
    /// keeps its id as its name.
    pub fn name_reviewers(&mut self, directory: &crate::auth::people::Directory) {
        let names: std::collections::HashMap<&str, &str> = directory
            .users
            .iter()
            .chain(&directory.api_keys)
            .map(|p| (p.actor.as_str(), p.name.as_str()))
            .collect();
        for row in &mut self.rows {
            row.reviewer_name = row.reviewer.as_deref().map(|actor| match names.get(actor) {
                Some(name) => (*name).to_owned(),
                None if actor == "system" => "Docket (policy)".to_owned(),
                None => actor.to_owned(),
            });
        }
    }
}

impl DecisionRow {
    /// The value of one dimension, as text (an empty string for "no reason code").
    pub fn value(&self, dimension: Dimension) -> &str {
        let text = match dimension {
            Dimension::Reviewer => self.reviewer.as_deref(),
            Dimension::Action => self.action.as_deref(),
            Dimension::ReasonCode => self.reason_code.as_ref().and_then(Option::as_deref),
            Dimension::Day => self.day.as_deref(),
        };
        text.unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The dimensions of the rows, in the order they are sorted by.
    #[schema(value_type = Vec<String>)]
    pub group_by: Vec<&'static str>,
    /// The IANA time zone the days are in.
    pub tz: String,
    pub rows: Vec<DecisionRow>,
    /// Decisions in the window, each counted once (also when it has several reason codes).
    pub total: i64,
}

/// The grouped decision counts the database returns, merged into the report's groups: reason
/// codes are split (and the same set written in another order merged) here.
struct Tally<'a> {
    group_by: &'a [Dimension],
    /// Keyed by the group's values in `group_by` order, so the map's order is the report's.
    counts: BTreeMap<Vec<Option<String>>, i64>,
    total: i64,
}

/// One group as the database returns it: actor, decision and reason codes (JSON array text),
/// each `None` unless grouped by, and the count.
type Group = (Option<String>, Option<String>, Option<String>, i64);

impl<'a> Tally<'a> {
    fn new(group_by: &'a [Dimension]) -> Self {
        Self {
            group_by,
            counts: BTreeMap::new(),
            total: 0,
        }
    }

    /// Adds a group of decisions; `day` is the day they were made on, when grouped by day.
    fn add(&mut self, day: Option<&str>, (actor, decision, reason_codes, count): Group) {
        if count == 0 {
            // A day without decisions (the query has nothing else to group by).
            return;
        }
        self.total += count;
        let codes: Vec<Option<String>> = if self.group_by.contains(&Dimension::ReasonCode) {
            let codes = parse_codes(reason_codes.as_deref());
            if codes.is_empty() {
                vec![None]
            } else {
                codes.into_iter().map(Some).collect()
            }
        } else {
            vec![None]
        };
        for code in codes {
            let key = self
                .group_by
                .iter()
                .map(|dimension| match dimension {
                    Dimension::Reviewer => actor.clone(),
                    Dimension::Action => decision.clone(),
                    Dimension::ReasonCode => code.clone(),
                    Dimension::Day => day.map(str::to_owned),
                })
                .collect();
            *self.counts.entry(key).or_insert(0) += count;
        }
    }

    fn rows(self) -> Vec<DecisionRow> {
        self.counts
            .into_iter()
            .map(|(key, count)| {
                let mut row = DecisionRow {
                    reviewer: None,
                    reviewer_name: None,
                    action: None,
                    reason_code: None,
                    day: None,
                    count,
                };
                for (dimension, value) in self.group_by.iter().zip(key) {
                    match dimension {
                        Dimension::Reviewer => row.reviewer = value,
                        Dimension::Action => row.action = value,
                        Dimension::ReasonCode => row.reason_code = Some(value),
                        Dimension::Day => row.day = value,
                    }
                }
                row
            })
            .collect()
    }
}

/// A calendar day of the report's time zone: its name and the part of the window it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Day {
    name: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The days of `tz` that overlap `window`, in order and contiguous. A day in a time zone is no
/// portable SQL expression, but its bounds are: the database groups by these ranges.
fn days_in(window: Window, tz: Tz) -> Vec<Day> {
    let mut days = Vec::new();
    let mut date = window.from.with_timezone(&tz).date_naive();
    loop {
        let start = start_of_day(date, tz).max(window.from);
        let Some(next) = date.succ_opt() else { break };
        if start >= window.to {
            break;
        }
        days.push(Day {
            name: date.format("%Y-%m-%d").to_string(),
            start,
            end: start_of_day(next, tz).min(window.to),
        });
        date = next;
    }
    days
}

/// When `date` begins in `tz`: midnight, or where a clock change skips midnight, the first hour
/// that exists.
fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    (0..24)
        .find_map(|hour| {
            let local = date.and_hms_opt(hour, 0, 0)?;
            tz.from_local_datetime(&local).earliest()
        })
        .map_or_else(
            || date.and_time(NaiveTime::MIN).and_utc(),
            |t| t.with_timezone(&Utc),
        )
}

/// The query counting the tenant's (`$1`) decisions in `[$2, $3)` by the grouped columns (days
/// aside); columns not grouped by are `NULL`.
fn decisions_sql(group_by: &[Dimension]) -> String {
    const COLUMNS: [(Dimension, &str); 3] = [
        (Dimension::Reviewer, "actor"),
        (Dimension::Action, "decision"),
        (Dimension::ReasonCode, "reason_codes"),
    ];
    let grouped = |dimension: &Dimension| group_by.contains(dimension);
    let select: Vec<&str> = COLUMNS
        .iter()
        .map(|(d, column)| {
            if grouped(d) {
                column
            } else {
                "CAST(NULL AS TEXT)"
            }
        })
        .collect();
    let keys: Vec<&str> = COLUMNS
        .iter()
        .filter(|(d, _)| grouped(d))
        .map(|(_, column)| *column)
        .collect();
    let group = if keys.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", keys.join(", "))
    };
    format!(
        "SELECT {}, COUNT(*) FROM case_history \
         WHERE tenant_id = $1 AND decision IS NOT NULL AND created_at >= $2 AND created_at < $3{group}",
        select.join(", ")
    )
}

/// The distinct codes of a `reason_codes` JSON array. Text that is not such an array counts as no
/// code: a report should not fail over one damaged row.
fn parse_codes(text: Option<&str>) -> BTreeSet<String> {
    text.and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|code| code.trim().to_owned())
        .filter(|code| !code.is_empty())
        .collect()
}

/// Counts the tenant's decisions in `window`, grouped by `group_by`, days in `tz`.
pub async fn decisions(
    store: &Store,
    tenant_id: &str,
    window: Window,
    group_by: &[Dimension],
    tz: Tz,
) -> Result<DecisionReport, ReportError> {
    // Grouped by day, each day of the zone is counted over its own range of the
    // `case_history_decisions` index: a plan both databases run alike, whatever their statistics
    // (a join against the list of days can turn into every decision compared with every day).
    let ranges: Vec<(Option<String>, DateTime<Utc>, DateTime<Utc>)> =
        if group_by.contains(&Dimension::Day) {
            days_in(window, tz)
                .into_iter()
                .map(|day| (Some(day.name), day.start, day.end))
                .collect()
        } else {
            vec![(None, window.from, window.to)]
        };
    let sql = decisions_sql(group_by);
    let mut tally = Tally::new(group_by);
    for (day, start, end) in &ranges {
        with_pool!(store, pool => {
            let mut rows = sqlx::query_as::<_, Group>(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(tenant_id)
                .bind(start)
                .bind(end)
                .fetch(pool);
            while let Some(group) = rows.try_next().await? {
                tally.add(day.as_deref(), group);
            }
        });
    }
    let total = tally.total;
    Ok(DecisionReport {
        from: window.from,
        to: window.to,
        group_by: group_by.iter().map(|d| d.as_str()).collect(),
        tz: tz.name().to_owned(),
        rows: tally.rows(),
        total,
    })
}

/// SLA figures of a set of cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SlaCounts {
    /// Cases a person brought to a final state (approved, rejected, returned) in the window.
    pub decided: i64,
    /// Of those, decided by their SLA deadline.
    pub met: i64,
    /// `met / decided` in percent, one decimal; `null` when nothing was decided.
    pub compliance_pct: Option<f64>,
    /// Cases whose SLA breach was recorded in the window, whatever their state now.
    pub breaches: i64,
    /// Cases open or parked now whose SLA is breached (not limited to the window).
    pub open_breached: i64,
}

impl SlaCounts {
    fn new(decided: i64, met: i64, breaches: i64, open_breached: i64) -> Self {
        Self {
            decided,
            met,
            compliance_pct: compliance_pct(met, decided),
            breaches,
            open_breached,
        }
    }
}

/// `met / decided` in percent, rounded half up to one decimal.
fn compliance_pct(met: i64, decided: i64) -> Option<f64> {
    (decided > 0).then(|| ((met * 1000 + decided / 2) / decided) as f64 / 10.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SlaRow {
    pub queue: String,
    /// The case's priority now (the SLA sweep raises it on a breach).
    pub priority: String,
    #[serde(flatten)]
    pub counts: SlaCounts,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlaReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// By queue, then priority from most to least urgent.
    pub rows: Vec<SlaRow>,
    /// All queues and priorities together.
    pub totals: SlaCounts,
}

/// SLA compliance of the tenant's cases per queue and priority.
pub async fn sla(store: &Store, tenant_id: &str, window: Window) -> Result<SlaReport, ReportError> {
    // `decided_at` and `sla_breached_at` have indexes; the unfinished cases are the review queue.
    let sql = format!(
        "SELECT queue, priority, \
           SUM(CASE WHEN state IN {DECIDED_BY_PEOPLE} AND decided_at >= $2 AND decided_at < $3 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state IN {DECIDED_BY_PEOPLE} AND decided_at >= $2 AND decided_at < $3 \
                     AND decided_at <= sla_due_at THEN 1 ELSE 0 END), \
           SUM(CASE WHEN sla_breached_at >= $2 AND sla_breached_at < $3 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state IN {UNFINISHED} AND sla_breached_at IS NOT NULL THEN 1 ELSE 0 END) \
         FROM cases WHERE tenant_id = $1 AND ( \
           (decided_at >= $2 AND decided_at < $3) OR (sla_breached_at >= $2 AND sla_breached_at < $3) \
           OR (state IN {UNFINISHED} AND sla_breached_at IS NOT NULL)) \
         GROUP BY queue, priority, priority_rank ORDER BY queue, priority_rank DESC, priority"
    );
    let groups: Vec<(String, String, i64, i64, i64, i64)> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(window.from)
            .bind(window.to)
            .fetch_all(pool)
            .await
    })?;
    let mut sums = [0_i64; 4];
    let rows = groups
        .into_iter()
        .filter(|(.., decided, _, breaches, open_breached)| {
            // A decided case outside `DECIDED_BY_PEOPLE` (automatic, cancelled) matches the filter
            // but counts nowhere.
            *decided + *breaches + *open_breached > 0
        })
        .map(|(queue, priority, decided, met, breaches, open_breached)| {
            for (sum, n) in sums.iter_mut().zip([decided, met, breaches, open_breached]) {
                *sum += n;
            }
            SlaRow {
                queue,
                priority,
                counts: SlaCounts::new(decided, met, breaches, open_breached),
            }
        })
        .collect();
    let [decided, met, breaches, open_breached] = sums;
    Ok(SlaReport {
        from: window.from,
        to: window.to,
        rows,
        totals: SlaCounts::new(decided, met, breaches, open_breached),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_window_defaults_to_the_last_30_days_and_is_bounded() {
        let now = at("2026-03-01T12:00:00Z");
        let window = Window::parse(None, None, now).unwrap();
        assert_eq!(window.to, now);
        assert_eq!(window.from, at("2026-01-30T12:00:00Z"));
        let window = Window::parse(None, Some("2026-02-01T00:00:00+01:00"), now).unwrap();
        assert_eq!(
            window.to,
            at("2026-01-31T23:00:00Z"),
            "offsets are honoured"
        );
        assert_eq!(window.from, at("2026-01-01T23:00:00Z"));
        let year = Window::parse(
            Some("2025-01-01T00:00:00Z"),
            Some("2026-01-02T00:00:00Z"),
            now,
        );
        assert!(year.is_ok(), "366 days are allowed");

        let field = |r: Result<Window, ReportError>| match r {
            Err(ReportError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(Window::parse(Some("yesterday"), None, now)), "from");
        assert_eq!(field(Window::parse(None, Some("2026-02-01"), now)), "to");
        assert_eq!(
            field(Window::parse(
                Some("2026-02-01T00:00:00Z"),
                Some("2026-02-01T00:00:00Z"),
                now
            )),
            "to"
        );
        assert_eq!(
            field(Window::parse(
                Some("2025-01-01T00:00:00Z"),
                Some("2026-01-02T00:00:01Z"),
                now
            )),
            "from"
        );
    }

    #[test]
    fn group_by_names_distinct_known_dimensions() {
        assert_eq!(Dimension::parse_list(None).unwrap(), Dimension::ALL);
        assert_eq!(
            Dimension::parse_list(Some("day, reviewer")).unwrap(),
            [Dimension::Day, Dimension::Reviewer]
        );
        for bad in ["", "reviewer,", "reviewer,reviewer", "queue", "Reviewer"] {
            assert!(
                matches!(
                    Dimension::parse_list(Some(bad)),
                    Err(ReportError::Invalid {
                        field: "group_by",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(parse_tz(None).unwrap(), Tz::UTC);
        assert_eq!(parse_tz(Some("Europe/Paris")).unwrap(), Tz::Europe__Paris);
        assert!(parse_tz(Some("Mars/Olympus")).is_err());
    }

    fn group(actor: &str, decision: &str, codes: Option<&str>, count: i64) -> Group {
        (
            Some(actor.to_owned()),
            Some(decision.to_owned()),
            codes.map(str::to_owned),
            count,
        )
    }

    #[test]
    fn codes_split_a_decision_only_when_grouped_by_them() {
        let group_by = [Dimension::ReasonCode, Dimension::Action];
        let mut tally = Tally::new(&group_by);
        tally.add(
            None,
            group("user:a", "reject", Some(r#"["NSF","SIG","NSF"]"#), 2),
        );
        tally.add(None, group("user:a", "reject", Some(r#"["SIG","NSF"]"#), 1));
        tally.add(None, group("user:b", "approve", None, 1));
        tally.add(None, group("user:b", "reject", Some("not json"), 1));
        assert_eq!(tally.total, 5, "each decision once");
        let rows: Vec<(Option<Option<String>>, Option<String>, i64)> = tally
            .rows()
            .into_iter()
            .map(|r| (r.reason_code, r.action, r.count))
            .collect();
        let code = |c: Option<&str>| Some(c.map(str::to_owned));
        assert_eq!(
            rows,
            [
                (code(None), Some("approve".into()), 1),
                (code(None), Some("reject".into()), 1),
                (code(Some("NSF")), Some("reject".into()), 3),
                (code(Some("SIG")), Some("reject".into()), 3),
            ]
        );

        let group_by = [Dimension::Reviewer];
        let mut tally = Tally::new(&group_by);
        tally.add(None, group("user:a", "reject", Some(r#"["NSF","SIG"]"#), 1));
        let rows = tally.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 1);
        assert_eq!(rows[0].reason_code, None, "not grouped: absent");
    }

    #[test]
    fn days_are_calendar_days_in_the_time_zone() {
        let window = |from: &str, to: &str| Window {
            from: at(from),
            to: at(to),
        };
        let named = |days: &[Day]| {
            days.iter()
                .map(|d| (d.name.clone(), d.start, d.end))
                .collect::<Vec<_>>()
        };
        // Paris moves to summer time on 29 March 2026: that day has 23 hours.
        let days = days_in(
            window("2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
            Tz::Europe__Paris,
        );
        assert_eq!(
            named(&days),
            [
                (
                    "2026-03-28".to_owned(),
                    at("2026-03-28T00:00:00Z"),
                    at("2026-03-28T23:00:00Z")
                ),
                (
                    "2026-03-29".to_owned(),
                    at("2026-03-28T23:00:00Z"),
                    at("2026-03-29T22:00:00Z")
                ),
                (
                    "2026-03-30".to_owned(),
                    at("2026-03-29T22:00:00Z"),
                    at("2026-03-30T22:00:00Z")
                ),
                (
                    "2026-03-31".to_owned(),
                    at("2026-03-30T22:00:00Z"),
                    at("2026-03-31T00:00:00Z")
                ),
            ]
        );
        // 23:30 UTC in winter is the next day in Paris.
        let days = days_in(
            window("2026-01-10T00:00:00Z", "2026-01-12T00:00:00Z"),
            Tz::Europe__Paris,
        );
        let late = at("2026-01-10T23:30:00Z");
        let day = days
            .iter()
            .find(|d| d.start <= late && late < d.end)
            .unwrap();
        assert_eq!(day.name, "2026-01-11");
        let utc = days_in(
            window("2026-01-10T00:00:00Z", "2026-01-12T00:00:00Z"),
            Tz::UTC,
        );
        assert_eq!(
            utc.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["2026-01-10", "2026-01-11"]
        );
        // Santiago skips midnight on 6 September 2026: that day starts at 01:00 local time.
        let days = days_in(
            window("2026-09-05T12:00:00Z", "2026-09-07T12:00:00Z"),
            Tz::America__Santiago,
        );
        assert_eq!(days[1].name, "2026-09-06");
        assert_eq!(days[1].start, at("2026-09-06T04:00:00Z"));
        // A year: contiguous days, covering the window exactly.
        let year = window("2025-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        let days = days_in(year, Tz::Asia__Kathmandu);
        assert_eq!(days.len(), 367);
        assert_eq!(
            (days[0].start, days[days.len() - 1].end),
            (year.from, year.to)
        );
        assert!(
            days.windows(2)
                .all(|w| w[0].end == w[1].start && w[0].start < w[0].end)
        );
    }

    #[test]
    fn the_query_groups_only_by_what_is_asked() {
        let sql = decisions_sql(&[Dimension::Action, Dimension::Day]);
        assert!(sql.starts_with("SELECT CAST(NULL AS TEXT), decision, CAST(NULL AS TEXT), COUNT(*) FROM case_history "), "{sql}");
        assert!(sql.ends_with("created_at < $3 GROUP BY decision"), "{sql}");
        let sql = decisions_sql(&[Dimension::Day]);
        assert!(sql.ends_with("created_at < $3"), "no GROUP BY: {sql}");
        let mut tally = Tally::new(&[Dimension::Day]);
        tally.add(Some("2026-01-01"), (None, None, None, 0));
        tally.add(Some("2026-01-02"), (None, None, None, 3));
        let rows = tally.rows();
        assert_eq!(rows.len(), 1, "days without decisions have no row");
        assert_eq!(
            (rows[0].day.as_deref(), rows[0].count),
            (Some("2026-01-02"), 3)
        );
    }

    #[test]
    fn compliance_is_rounded_to_one_decimal() {
        assert_eq!(compliance_pct(0, 0), None);
        assert_eq!(compliance_pct(2, 3), Some(66.7));
        assert_eq!(compliance_pct(1, 3), Some(33.3));
        assert_eq!(compliance_pct(1, 8), Some(12.5));
        assert_eq!(compliance_pct(1, 16), Some(6.3), "6.25 rounds half up");
        assert_eq!(compliance_pct(5, 5), Some(100.0));
        assert_eq!(compliance_pct(0, 5), Some(0.0));
    }
}
