//! The supervisor's page: the open queue by priority and SLA, the cases reviewers hold (with a
//! form to give each to someone else), escalations waiting for a supervisor, cases parked out of
//! the queue, and decisions per reviewer.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Form, Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::review::{
    Case, OPEN_STATES, PARKED_STATES, People, Sla, TenantUser, case_cells, case_columns, cases_in,
    duration_text, not_found, post_failed, sla_cell, valid_id,
};
use crate::app::AppState;
use crate::auth::Role;
use crate::console::layout::{self, badge, csrf_input};
use crate::console::session::{self, Console, safe_next};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/supervise", get(overview))
        .route("/console/cases/{id}/reassign", post(reassign))
}

/// `GET /reviews/stats`.
#[derive(Debug, Deserialize)]
struct Stats {
    window_hours: i64,
    depth_by_priority: BTreeMap<String, i64>,
    open_cases: i64,
    oldest_open_age_seconds: Option<i64>,
    breaches: i64,
    decisions_per_reviewer: Vec<ReviewerStats>,
    median_time_to_decision_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ReviewerStats {
    reviewer: String,
    decisions: i64,
}

/// The look-back windows offered for the statistics, in hours.
const WINDOWS: [(i64, &str); 4] = [
    (1, "last hour"),
    (24, "last 24 hours"),
    (168, "last 7 days"),
    (720, "last 30 days"),
];
const DEFAULT_WINDOW: i64 = 24;

const PRIORITIES: [&str; 4] = ["urgent", "high", "normal", "low"];

#[derive(Deserialize)]
struct OverviewQuery {
    window_hours: Option<String>,
}

/// Open cases of one priority, by SLA standing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Depth {
    breached: usize,
    due_soon: usize,
    on_track: usize,
    held: usize,
}

fn depth_by_priority(cases: &[Case], now: DateTime<Utc>) -> BTreeMap<&str, Depth> {
    let mut depth: BTreeMap<&str, Depth> = BTreeMap::new();
    for case in cases {
        let row = depth.entry(case.priority.as_str()).or_default();
        match case.sla(now) {
            Sla::Breached => row.breached += 1,
            Sla::DueSoon => row.due_soon += 1,
            Sla::OnTrack | Sla::Met => row.on_track += 1,
        }
        if case.assignee_id.is_some() {
            row.held += 1;
        }
    }
    depth
}

async fn overview(console: Console, Query(query): Query<OverviewQuery>) -> Response {
    let window = query
        .window_hours
        .and_then(|w| w.parse::<i64>().ok())
        .filter(|w| WINDOWS.iter().any(|(hours, _)| hours == w))
        .unwrap_or(DEFAULT_WINDOW);
    // The statistics need a supervisor: the API's refusal is the page's answer for anyone else.
    let stats = match console
        .api
        .get::<Stats>(&format!("/reviews/stats?window_hours={window}"))
        .await
    {
        Ok(stats) => stats,
        Err(failure) => return console.fail(&failure),
    };
    let (open, parked, people, getting_started) = tokio::join!(
        cases_in(&console, &OPEN_STATES, false),
        cases_in(&console, &PARKED_STATES, false),
        People::load(&console),
        super::admin::getting_started::panel(&console)
    );
    let ((open, more), (mut parked, more_parked)) = match (open, parked) {
        (Ok(open), Ok(parked)) => (open, parked),
        (Err(failure), _) | (_, Err(failure)) => return console.fail(&failure),
    };
    parked.sort_by_key(|c| c.parked_at);
    let now = crate::clock::now();
    let held: Vec<&Case> = open.iter().filter(|c| c.assignee_id.is_some()).collect();
    let escalated: Vec<&Case> = open.iter().filter(|c| c.state == "escalated").collect();
    let content = html! {
        h1 { "Supervision" }
        @if let Some(panel) = getting_started { (panel) }
        form.filters method="get" action="/console/supervise" {
            div {
                label for="window_hours" { "Statistics for the" }
                select #window_hours name="window_hours" {
                    @for (hours, label) in WINDOWS {
                        option value=(hours) selected[hours == window] { (label) }
                    }
                }
            }
            button.secondary type="submit" { "Show" }
        }
        (queue_overview(&stats, &open, more, &people, now))
        section aria-labelledby="claimed-heading" {
            h2 #claimed-heading { "Cases reviewers hold" }
            (claimed(&console, &held, &people, now))
        }
        section #escalations aria-labelledby="escalations-heading" {
            h2 #escalations-heading { "Escalations to decide" }
            (escalations(&escalated, &people, now))
        }
        section #parked-cases aria-labelledby="parked-heading" {
            h2 #parked-heading { "Parked cases" }
            (parked_cases(&parked, more_parked))
        }
        section #reviewer-stats aria-labelledby="stats-heading" {
            h2 #stats-heading { "Decisions per reviewer, " (window_label(stats.window_hours)) }
            (reviewer_stats(&stats, &people))
        }
    };
    layout::page(&console, "Supervision", "/console/supervise", content)
}

fn window_label(hours: i64) -> String {
    WINDOWS.iter().find(|(h, _)| *h == hours).map_or_else(
        || format!("last {hours} hours"),
        |(_, label)| (*label).to_owned(),
    )
}

fn queue_overview(
    stats: &Stats,
    open: &[Case],
    more: bool,
    people: &People,
    now: DateTime<Utc>,
) -> Markup {
    let depth = depth_by_priority(open, now);
    let count = |priority: &str| stats.depth_by_priority.get(priority).copied().unwrap_or(0);
    html! {
        section #queue-overview aria-labelledby="overview-heading" {
            h2 #overview-heading { "Queue overview" }
            p {
                (stats.open_cases) " open cases"
                @if let Some(age) = stats.oldest_open_age_seconds {
                    "; the oldest has waited " (duration_text(age))
                }
                ". Amber: due within " (super::review::DUE_SOON_MINUTES) " minutes; red: SLA breached."
            }
            table #queue-depth {
                caption { "Open cases by priority and SLA" }
                thead { tr {
                    th scope="col" { "Priority" } th scope="col" { "Open" } th scope="col" { "Breached" }
                    th scope="col" { "Due soon" } th scope="col" { "On track" } th scope="col" { "Held" }
                } }
                tbody {
                    @for priority in PRIORITIES {
                        @let row = depth.get(priority);
                        tr {
                            th scope="row" { (badge(priority)) }
                            td { (count(priority)) }
                            td { @let n = row.map_or(0, |r| r.breached); @if n > 0 { span.sla-breached { (n) } } @else { "0" } }
                            td { @let n = row.map_or(0, |r| r.due_soon); @if n > 0 { span.sla-due-soon { (n) } } @else { "0" } }
                            td { (row.map_or(0, |r| r.on_track)) }
                            td { (row.map_or(0, |r| r.held)) }
                        }
                    }
                }
            }
            @if more {
                p.muted { "More cases are open than listed here; the counts by priority above are complete." }
            }
            table {
                caption { "Open cases, most urgent first" }
                thead { tr {
                    (case_columns())
                    th scope="col" { "Held by" }
                } }
                tbody {
                    @for case in open {
                        tr class=[case.sla(now).row_class()] data-case-id=(case.id) {
                            (case_cells(case, now))
                            td { (holder(case, people)) }
                        }
                    }
                    @if open.is_empty() {
                        tr { td colspan="8" { span.muted { "No open cases." } } }
                    }
                }
            }
        }
    }
}

fn holder(case: &Case, people: &People) -> Markup {
    html! {
        @match &case.assignee_id {
            Some(id) => (people.user(id)),
            None => span.muted { "nobody" },
        }
    }
}

fn claimed(console: &Console, held: &[&Case], people: &People, now: DateTime<Utc>) -> Markup {
    html! {
        @if held.is_empty() {
            p.muted { "Nobody holds a case right now." }
        } @else {
            table #claimed {
                thead { tr {
                    th scope="col" { "Case" } th scope="col" { "State" } th scope="col" { "Held by" }
                    th scope="col" { "Until" } th scope="col" { "SLA due" } th scope="col" { "Reassign" }
                } }
                tbody {
                    @for case in held {
                        tr class=[case.sla(now).row_class()] data-case-id=(case.id) {
                            td { a href=(case.href()) { (case.reference) } " " span.muted { (case.amount_text()) } }
                            td { (badge(&case.state)) }
                            td { (holder(case, people)) }
                            td { (layout::optional_time(case.lease_expires_at.as_ref())) }
                            td { (sla_cell(case, now)) }
                            td { (reassign_form(&console.csrf, case, people, "/console/supervise")) }
                        }
                    }
                }
            }
        }
    }
}

fn escalations(escalated: &[&Case], people: &People, now: DateTime<Utc>) -> Markup {
    html! {
        @if escalated.is_empty() {
            p.muted { "No escalated cases are waiting." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Case" } th scope="col" { "Priority" } th scope="col" { "Amount" }
                    th scope="col" { "SLA due" } th scope="col" { "Held by" } th scope="col" { "Action" }
                } }
                tbody {
                    @for case in escalated {
                        tr class=[case.sla(now).row_class()] data-case-id=(case.id) {
                            td { a href=(case.href()) { (case.reference) } " " span.muted { (case.case_type) } }
                            td { (badge(&case.priority)) }
                            td { (case.amount_text()) }
                            td { (sla_cell(case, now)) }
                            td { (holder(case, people)) }
                            td { a href=(case.href()) { "Decide" } }
                        }
                    }
                }
            }
        }
    }
}

/// Cases out of the queue (their SLA clock stopped), longest parked first: on hold until a time, or
/// waiting for the submitter's information.
fn parked_cases(parked: &[Case], more: bool) -> Markup {
    html! {
        @if parked.is_empty() {
            p.muted { "No case is on hold or waiting for information." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Case" } th scope="col" { "Priority" } th scope="col" { "Amount" }
                    th scope="col" { "Parked since" } th scope="col" { "Waiting for" }
                } }
                tbody {
                    @for case in parked {
                        tr data-case-id=(case.id) {
                            td { a href=(case.href()) { (case.reference) } " " span.muted { (case.case_type) } }
                            td { (badge(&case.priority)) }
                            td { (case.amount_text()) }
                            td { (layout::optional_time(case.parked_at.as_ref())) }
                            td {
                                @if case.state == "on_hold" {
                                    "Hold until " (layout::optional_time(case.hold_until.as_ref()))
                                } @else {
                                    "Information from the submitter"
                                }
                            }
                        }
                    }
                }
            }
            @if more {
                p.muted { "More cases are parked than this page lists." }
            }
        }
    }
}

fn reviewer_stats(stats: &Stats, people: &People) -> Markup {
    html! {
        dl.facts {
            dt { "Decisions" } dd { (stats.decisions_per_reviewer.iter().map(|r| r.decisions).sum::<i64>()) }
            dt { "SLA breaches" } dd { (stats.breaches) }
            dt { "Median time to decision" }
            dd {
                @match stats.median_time_to_decision_seconds {
                    Some(seconds) => (duration_text(seconds)),
                    None => span.muted { "no decisions" },
                }
            }
        }
        @if stats.decisions_per_reviewer.is_empty() {
            p.muted { "No decisions in this window." }
        } @else {
            table {
                thead { tr { th scope="col" { "Reviewer" } th scope="col" { "Decisions" } } }
                tbody {
                    @for row in &stats.decisions_per_reviewer {
                        tr { td { (people.actor(&row.reviewer)) } td { (row.decisions) } }
                    }
                }
            }
        }
    }
}

/// The reassignment choice that hands a case back to the queue rather than to a person.
const BACK_TO_QUEUE: &str = "queue";

/// Whether `user` may be given `case`, by the rules the API applies to a reassignment (the API
/// decides; this only keeps impossible choices out of the list).
fn may_take(case: &Case, user: &TenantUser) -> bool {
    user.status == "active"
        && user.role >= Role::Reviewer
        && user.role >= case.required()
        && case.assignee_id.as_deref() != Some(user.id.as_str())
        && !case.submitted_by_user(&user.id)
        && !case.proposed_by(&user.id)
}

/// A form giving `case` to someone else, or back to the queue; `back` is where to return.
pub(super) fn reassign_form(csrf: &str, case: &Case, people: &People, back: &str) -> Markup {
    let mut candidates: Vec<&TenantUser> =
        people.users.iter().filter(|u| may_take(case, u)).collect();
    candidates.sort_by_key(|u| u.name.to_lowercase());
    let field = format!("reassign-{}", case.id);
    html! {
        @if candidates.is_empty() && case.assignee_id.is_none() {
            p.muted { "Nobody else may take this case." }
        } @else {
            form.inline.reassign method="post" action=(format!("{}/reassign", case.href())) {
                (csrf_input(csrf))
                input type="hidden" name="back" value=(back);
                label for=(field) { "Give to" }
                select id=(field) name="assignee_id" required {
                    option value="" disabled selected { "Choose…" }
                    @for user in &candidates {
                        option value=(user.id) { (people.user(&user.id)) " · " (user.role.as_str()) }
                    }
                    @if case.assignee_id.is_some() {
                        option value=(BACK_TO_QUEUE) { "Nobody: back to the queue" }
                    }
                }
                button.secondary type="submit" { "Reassign" }
            }
        }
    }
}

#[derive(Deserialize)]
struct ReassignForm {
    #[serde(default)]
    assignee_id: String,
    #[serde(default)]
    back: String,
}

async fn reassign(
    console: Console,
    Path(id): Path<String>,
    Form(form): Form<ReassignForm>,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let back = if safe_next(&form.back) {
        form.back.as_str()
    } else {
        "/console/supervise"
    };
    let assignee = match form.assignee_id.trim() {
        "" => return session::error(back, "Choose who is to hold the case."),
        BACK_TO_QUEUE => None,
        user_id => Some(user_id),
    };
    let case = match console
        .api
        .post::<Case>(
            &format!("/cases/{id}/reassign"),
            &json!({ "assignee_id": assignee }),
        )
        .await
    {
        Ok(case) => case,
        Err(failure) => return post_failed(back, &failure),
    };
    let message = match assignee {
        None => format!("Case {} is back in the queue.", case.reference),
        Some(user_id) => {
            // The name makes the message clearer; the reassignment is done either way.
            let user = if valid_id(user_id) {
                let path = format!("/users/{user_id}");
                console.api.get::<TenantUser>(&path).await.ok()
            } else {
                None
            };
            let name = match user {
                Some(user) if !user.name.is_empty() => user.name,
                Some(user) => user.email,
                None => user_id.to_owned(),
            };
            format!("Case {} reassigned to {name}.", case.reference)
        }
    };
    session::success(back, message)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn case(fields: Value) -> Case {
        let mut base = json!({
            "id": "c1", "type": "cheque", "reference": "CHQ-1", "amount": "10.00", "currency": "USD",
            "ai_assessment": null, "state": "in_review", "priority": "normal", "queue": "default",
            "required_role": "reviewer", "dual_control": false, "sla_hours": 4,
            "sla_due_at": "2030-01-01T12:00:00Z", "sla_breached_at": null, "sla_status": "on_track",
            "policy_version": 0, "submitted_by": "user:carl", "risk_level": "low", "flags": [],
            "require_reason": false, "proposal": null, "hold_until": null,
            "assignee_id": "rita", "lease_expires_at": "2030-01-01T10:30:00Z", "decision": null,
            "reason_codes": [], "decided_at": null, "created_at": "2030-01-01T08:00:00Z"
        });
        if let (Some(base), Some(fields)) = (base.as_object_mut(), fields.as_object()) {
            base.extend(fields.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn user(id: &str, role: &str, status: &str) -> TenantUser {
        serde_json::from_value(json!({
            "id": id, "email": format!("{id}@acme.test"), "name": id, "role": role, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn only_people_who_may_decide_are_offered() {
        let held = case(json!({}));
        assert!(may_take(&held, &user("bob", "reviewer", "active")));
        assert!(
            !may_take(&held, &user("rita", "reviewer", "active")),
            "already holds it"
        );
        assert!(
            !may_take(&held, &user("carl", "reviewer", "active")),
            "submitted it"
        );
        assert!(!may_take(&held, &user("vic", "viewer", "active")));
        assert!(!may_take(&held, &user("dan", "reviewer", "disabled")));
        let proposed = case(json!({
            "state": "pending_dual_control", "assignee_id": null, "lease_expires_at": null,
            "proposal": { "action": "approve", "proposed_by": "user:ann", "proposed_at": "2030-01-01T09:00:00Z",
                          "reason_codes": [], "reason": null, "notes": null }
        }));
        assert!(
            !may_take(&proposed, &user("ann", "reviewer", "active")),
            "the maker does not check their own proposal"
        );
        assert!(may_take(&proposed, &user("bob", "reviewer", "active")));
        let escalated = case(json!({ "state": "escalated", "required_role": "supervisor" }));
        assert!(!may_take(&escalated, &user("bob", "reviewer", "active")));
        assert!(may_take(&escalated, &user("sue", "supervisor", "active")));
        assert!(may_take(&escalated, &user("ada", "admin", "active")));
    }

    #[test]
    fn depth_counts_each_priority_by_sla() {
        let now: DateTime<Utc> = "2030-01-01T11:30:00Z".parse().unwrap();
        let cases = [
            case(json!({ "id": "a", "priority": "high", "sla_status": "breached" })),
            case(json!({ "id": "b", "priority": "high" })),
            case(
                json!({ "id": "c", "priority": "normal", "sla_due_at": "2030-01-01T18:00:00Z", "assignee_id": null }),
            ),
        ];
        let depth = depth_by_priority(&cases, now);
        assert_eq!(
            depth["high"],
            Depth {
                breached: 1,
                due_soon: 1,
                on_track: 0,
                held: 2
            }
        );
        assert_eq!(
            depth["normal"],
            Depth {
                breached: 0,
                due_soon: 0,
                on_track: 1,
                held: 0
            }
        );
        assert!(!depth.contains_key("low"));
        assert_eq!(window_label(168), "last 7 days");
        assert_eq!(window_label(5), "last 5 hours");
    }
}
