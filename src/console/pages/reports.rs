//! The reports page for supervisors and admins: decisions per reviewer and action, and SLA
//! compliance per queue and priority, over a range of days, with the API's CSV as downloads.

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{Duration, NaiveDate};
use maud::{Markup, html};
use serde::Deserialize;

use super::review::People;
use crate::app::AppState;
use crate::console::layout::{self, badge};
use crate::console::session::{self, Console};

const PATH: &str = "/console/reports";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(page))
        .route("/console/reports/decisions.csv", get(decisions_csv))
        .route("/console/reports/sla.csv", get(sla_csv))
}

/// The days shown when the form names none: the last seven, today included.
const DEFAULT_DAYS: i64 = 7;

/// `from` and `to` as the form sends them: calendar days (UTC), both included.
#[derive(Debug, Default, Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

/// A range of whole UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Days {
    first: NaiveDate,
    last: NaiveDate,
}

impl Days {
    /// The range the form asks for, or why it cannot be used. Empty fields take the defaults.
    fn parse(query: &RangeQuery, today: NaiveDate) -> Result<Self, String> {
        let day = |value: &Option<String>, label: &str| -> Result<Option<NaiveDate>, String> {
            match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(Some)
                    .map_err(|_| format!("The {label} day must be a date such as 2026-01-31.")),
            }
        };
        let last = day(&query.to, "last")?.unwrap_or(today);
        let first = day(&query.from, "first")?.unwrap_or(last - Duration::days(DEFAULT_DAYS - 1));
        if first > last {
            return Err("The first day must not be after the last.".to_owned());
        }
        Ok(Self { first, last })
    }

    /// The API's window: from the start of the first day to the start of the day after the last.
    fn api_query(self) -> String {
        let start = |day: NaiveDate| -> String {
            day.and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default()
        };
        format!(
            "from={}&to={}",
            start(self.first),
            start(self.last + Duration::days(1))
        )
    }

    /// The form's own query, for links.
    fn form_query(self) -> String {
        format!("from={}&to={}", self.first, self.last)
    }
}

/// `GET /reports/decisions` grouped by reviewer and action.
#[derive(Debug, Deserialize)]
struct Decisions {
    rows: Vec<DecisionRow>,
    total: i64,
}

#[derive(Debug, Deserialize)]
struct DecisionRow {
    reviewer: String,
    action: String,
    count: i64,
}

/// `GET /reports/sla`.
#[derive(Debug, Deserialize)]
struct Sla {
    rows: Vec<SlaRow>,
    totals: SlaCounts,
}

#[derive(Debug, Deserialize)]
struct SlaRow {
    queue: String,
    priority: String,
    #[serde(flatten)]
    counts: SlaCounts,
}

#[derive(Debug, Deserialize)]
struct SlaCounts {
    decided: i64,
    met: i64,
    compliance_pct: Option<f64>,
    breaches: i64,
    open_breached: i64,
}

async fn page(console: Console, Query(query): Query<RangeQuery>) -> Response {
    let days = match Days::parse(&query, crate::clock::now().date_naive()) {
        Ok(days) => days,
        Err(message) => return session::error(PATH, message),
    };
    let window = days.api_query();
    let decisions_path = format!("/reports/decisions?{window}&group_by=reviewer,action");
    let sla_path = format!("/reports/sla?{window}");
    // The reports need a supervisor: the API's refusal is the page's answer for anyone else.
    let (decisions, sla, people) = tokio::join!(
        console.api.get::<Decisions>(&decisions_path),
        console.api.get::<Sla>(&sla_path),
        People::load(&console)
    );
    let (decisions, sla) = match (decisions, sla) {
        (Ok(decisions), Ok(sla)) => (decisions, sla),
        (Err(failure), _) | (_, Err(failure)) => return console.fail(&failure),
    };
    let links = days.form_query();
    let content = html! {
        h1 { "Reports" }
        form.filters method="get" action=(PATH) {
            div {
                label for="from" { "First day (UTC)" }
                input #from type="date" name="from" value=(days.first) required;
            }
            div {
                label for="to" { "Last day (UTC)" }
                input #to type="date" name="to" value=(days.last) required;
            }
            button.secondary type="submit" { "Show" }
        }
        section #decision-report aria-labelledby="decisions-heading" {
            h2 #decisions-heading { "Decisions by reviewer and action" }
            p {
                a #decisions-csv .button.secondary href={ "/console/reports/decisions.csv?" (links) } download {
                    "Download CSV"
                }
                " " span.muted { "by reviewer, action, reason code and day" }
            }
            (decision_table(&decisions, &people))
        }
        section #sla-report aria-labelledby="sla-heading" {
            h2 #sla-heading { "SLA by queue and priority" }
            p {
                a #sla-csv .button.secondary href={ "/console/reports/sla.csv?" (links) } download {
                    "Download CSV"
                }
            }
            (sla_table(&sla))
        }
    };
    layout::page(&console, "Reports", PATH, content)
}

fn decision_table(report: &Decisions, people: &People) -> Markup {
    html! {
        @if report.rows.is_empty() {
            p.muted { "No decisions in these days." }
        } @else {
            table #decisions {
                thead { tr {
                    th scope="col" { "Reviewer" } th scope="col" { "Action" } th scope="col" { "Decisions" }
                } }
                tbody {
                    @for row in &report.rows {
                        tr {
                            td { (people.actor(&row.reviewer)) }
                            td { (badge(&row.action)) }
                            td { (row.count) }
                        }
                    }
                }
                tfoot { tr {
                    th scope="row" colspan="2" { "All decisions" }
                    td { (report.total) }
                } }
            }
        }
    }
}

fn sla_cells(counts: &SlaCounts) -> Markup {
    html! {
        td { (counts.decided) }
        td { (counts.met) }
        td {
            @match counts.compliance_pct {
                Some(pct) => { (format!("{pct:.1}")) " %" },
                None => span.muted { "—" },
            }
        }
        td { @if counts.breaches > 0 { span.sla-breached { (counts.breaches) } } @else { "0" } }
        td { @if counts.open_breached > 0 { span.sla-breached { (counts.open_breached) } } @else { "0" } }
    }
}

fn sla_table(report: &Sla) -> Markup {
    html! {
        @if report.rows.is_empty() {
            p.muted { "No case was decided or breached its SLA in these days, and no open case is breached." }
        } @else {
            table #sla {
                thead { tr {
                    th scope="col" { "Queue" } th scope="col" { "Priority" } th scope="col" { "Decided" }
                    th scope="col" { "Met" } th scope="col" { "Compliance" } th scope="col" { "Breaches" }
                    th scope="col" { "Open and breached" }
                } }
                tbody {
                    @for row in &report.rows {
                        tr {
                            th scope="row" { (row.queue) }
                            td { (badge(&row.priority)) }
                            (sla_cells(&row.counts))
                        }
                    }
                }
                tfoot { tr {
                    th scope="row" colspan="2" { "All queues" }
                    (sla_cells(&report.totals))
                } }
            }
            p.muted {
                "Decided: approved, rejected or returned by a person in these days; met: by the SLA deadline. \
                 Breaches: recorded in these days. Open and breached: now. Priority is the case's priority now."
            }
        }
    }
}

async fn decisions_csv(console: Console, Query(query): Query<RangeQuery>) -> Response {
    download(console, query, "decisions").await
}

async fn sla_csv(console: Console, Query(query): Query<RangeQuery>) -> Response {
    download(console, query, "sla").await
}

/// The API's CSV of `report` for the form's days, as a download.
async fn download(console: Console, query: RangeQuery, report: &str) -> Response {
    let days = match Days::parse(&query, crate::clock::now().date_naive()) {
        Ok(days) => days,
        Err(message) => return session::error(PATH, message),
    };
    let path = format!("/reports/{report}?{}&format=csv", days.api_query());
    let response = match console.api.raw(&path).await {
        Ok(response) => response,
        Err(failure) => return console.fail(&failure),
    };
    let filename = format!("docket-{report}-{}-{}.csv", days.first, days.last);
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        response.into_body(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn query(from: &str, to: &str) -> RangeQuery {
        RangeQuery {
            from: Some(from.to_owned()),
            to: Some(to.to_owned()),
        }
    }

    #[test]
    fn the_days_default_to_the_last_week_and_become_a_half_open_window() {
        let today = day("2026-03-10");
        let days = Days::parse(&RangeQuery::default(), today).unwrap();
        assert_eq!((days.first, days.last), (day("2026-03-04"), today));
        assert_eq!(
            days.api_query(),
            "from=2026-03-04T00:00:00Z&to=2026-03-11T00:00:00Z"
        );
        assert_eq!(days.form_query(), "from=2026-03-04&to=2026-03-10");
        let days = Days::parse(&query("", "2026-02-28"), today).unwrap();
        assert_eq!(days.first, day("2026-02-22"));
        let one = Days::parse(&query("2026-01-05", "2026-01-05"), today).unwrap();
        assert_eq!(
            one.api_query(),
            "from=2026-01-05T00:00:00Z&to=2026-01-06T00:00:00Z"
        );
        assert!(Days::parse(&query("2026-01-06", "2026-01-05"), today).is_err());
        assert!(Days::parse(&query("05/01/2026", ""), today).is_err());
    }
}
