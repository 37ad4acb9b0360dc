//! `POST /reviews/next`, `GET /reviews/stats` and the per-case review actions (claim, release,
//! decide, check, reassign) and the submitter's answer to a request for information.

use std::collections::BTreeMap;

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{Action, CheckVerdict, Decision, Reviewer};
use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadReviewStats, ReviewCases, WriteCases};
use crate::cases::{Case, OPEN_STATES};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::with_pool;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextFilter {
    /// Only this review queue.
    pub queue: Option<String>,
    /// Only this case type.
    #[serde(rename = "type")]
    pub case_type: Option<String>,
}

/// Claim the most urgent case you may take (priority, then SLA deadline, then age).
#[utoipa::path(post, path = "/reviews/next", operation_id = "claim_next_case", tag = "reviews",
    description = "Requires: reviewer or above (`ReviewCases`); people only. 204 when nothing is waiting for you.",
    request_body(content = Option<NextFilter>),
    responses((status = 200, body = Case), (status = 204, description = "nothing to review")))]
pub async fn next(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReviewCases>,
    body: Option<Json<NextFilter>>,
) -> Result<Response, ApiError> {
    let filter = body.map(|Json(f)| f).unwrap_or_default();
    let reviewer = Reviewer::of(&principal)?;
    let claimed = super::next(
        &state,
        &reviewer,
        filter.queue.as_deref(),
        filter.case_type.as_deref(),
    )
    .await?;
    Ok(match claimed {
        Some(row) => ResponseJson(Case::from_row(row, crate::clock::now())).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Claim a case (or extend your lease on it).
#[utoipa::path(post, path = "/cases/{id}/claim", operation_id = "claim_case", tag = "reviews",
    description = "Requires: reviewer or above (`ReviewCases`) and the case's required role.",
    params(("id" = String, Path)),
    responses((status = 200, body = Case), (status = 403, body = crate::http::error::ErrorBody),
               (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn claim(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReviewCases>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Case>, ApiError> {
    let reviewer = Reviewer::of(&principal)?;
    let row = super::claim(&state, &reviewer, &id).await?;
    Ok(ResponseJson(Case::from_row(row, crate::clock::now())))
}

/// Hand a case you hold back to the queue.
#[utoipa::path(post, path = "/cases/{id}/release", operation_id = "release_case", tag = "reviews",
    description = "Requires: reviewer or above (`ReviewCases`), holding the case.",
    params(("id" = String, Path)),
    responses((status = 200, body = Case), (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn release(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReviewCases>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Case>, ApiError> {
    let reviewer = Reviewer::of(&principal)?;
    let row = super::release(&state, &reviewer, &id).await?;
    Ok(ResponseJson(Case::from_row(row, crate::clock::now())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Action,
    /// The tenant's reason codes (see `GET /reason-codes`) that apply to this action.
    #[serde(default)]
    pub reason_codes: Vec<String>,
    /// Free text; every action but `approve` needs a reason or a reason code.
    #[schema(max_length = 2000)]
    pub reason: Option<String>,
    #[schema(max_length = 10000)]
    pub notes: Option<String>,
    /// For `hold`: when the case comes back to the queue (at most 90 days ahead).
    pub hold_until: Option<DateTime<Utc>>,
}

fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) if text.chars().count() > max => Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(text) => Ok(Some(text.to_owned())),
    }
}

/// Act on a case you hold: approve, reject, return, hold (until a time), escalate, or ask the
/// submitter for more information. Under dual control approve/reject/return become a proposal
/// (`pending_dual_control`) that a different person checks.
#[utoipa::path(post, path = "/cases/{id}/decision", operation_id = "decide_case", tag = "reviews",
    description = "Requires: reviewer or above (`ReviewCases`), holding the case, with its required role; \
                   not the submitter, and not the maker of the proposal under dual control (403 with the reason). \
                   Resulting states: approve → approved, reject → rejected, return → returned (each \
                   pending_dual_control first under dual control), hold → on_hold, escalate → escalated, \
                   needs_more_info → needs_more_info. An action the case's state does not allow is 409; \
                   a reason code that does not exist, is inactive or does not apply to the action, a code \
                   that requires notes without notes, or no code where the policy requires one is 422.",
    params(("id" = String, Path)), request_body = DecisionRequest,
    responses((status = 200, body = Case), (status = 403, body = crate::http::error::ErrorBody),
               (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn decide(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReviewCases>,
    Path(id): Path<String>,
    Json(body): Json<DecisionRequest>,
) -> Result<ResponseJson<Case>, ApiError> {
    let reason = optional_text("reason", body.reason.as_deref(), 2000)?;
    let notes = optional_text("notes", body.notes.as_deref(), 10_000)?;
    let reason_codes = super::reason_codes::normalise(&body.reason_codes)?;
    let reviewer = Reviewer::of(&principal)?;
    let row = super::decide(
        &state,
        &reviewer,
        &id,
        Decision {
            action: body.decision,
            reason_codes: &reason_codes,
            reason: reason.as_deref(),
            notes: notes.as_deref(),
            hold_until: body.hold_until,
        },
    )
    .await?;
    Ok(ResponseJson(Case::from_row(row, crate::clock::now())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub verdict: CheckVerdict,
    /// Required to reject (send back) a proposal.
    #[schema(max_length = 10000)]
    pub notes: Option<String>,
}

/// Check a proposal under dual control (maker-checker): `approve` applies the proposed action,
/// `reject` sends the case back to review with your notes.
#[utoipa::path(post, path = "/cases/{id}/check", operation_id = "check_case_decision", tag = "reviews",
    description = "Requires: reviewer or above (`ReviewCases`), holding a `pending_dual_control` case, \
                   with its required role; not its maker or submitter (403). Any other state is 409.",
    params(("id" = String, Path)), request_body = CheckRequest,
    responses((status = 200, body = Case), (status = 403, body = crate::http::error::ErrorBody),
               (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReviewCases>,
    Path(id): Path<String>,
    Json(body): Json<CheckRequest>,
) -> Result<ResponseJson<Case>, ApiError> {
    let notes = optional_text("notes", body.notes.as_deref(), 10_000)?;
    let checker = Reviewer::of(&principal)?;
    let row = super::check(&state, &checker, &id, body.verdict, notes.as_deref()).await?;
    Ok(ResponseJson(Case::from_row(row, crate::clock::now())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InformationRequest {
    /// What you add, for the reviewer (1-10,000 characters). Attach files with
    /// `POST /cases/{id}/attachments` first.
    #[schema(min_length = 1, max_length = 10000)]
    pub notes: String,
    /// Keys to add to (or replace in) the case's subject, e.g. account context.
    #[schema(value_type = Option<Object>)]
    pub subject: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Answer a request for more information: the case returns to review.
#[utoipa::path(post, path = "/cases/{id}/information", tag = "cases",
    description = "Requires: the submitter (`WriteCases`, or an API key with `cases:write`), or a supervisor \
                   or admin. Only for `needs_more_info` cases (409 otherwise). The case goes back to the \
                   queue (or to supervisors if it was escalated), its SLA deadline moved on by the time it waited.",
    params(("id" = String, Path)), request_body = InformationRequest,
    responses((status = 200, body = Case), (status = 403, body = crate::http::error::ErrorBody),
               (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn add_information(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteCases>,
    Path(id): Path<String>,
    Json(body): Json<InformationRequest>,
) -> Result<ResponseJson<Case>, ApiError> {
    let notes = body.notes.trim();
    if notes.is_empty() || notes.chars().count() > 10_000 {
        return Err(ApiError::invalid_field(
            "notes",
            "must be 1-10000 characters",
        ));
    }
    let row = super::add_information(
        &state,
        &principal,
        &id,
        super::Information {
            notes,
            subject: body.subject.as_ref(),
        },
    )
    .await?;
    Ok(ResponseJson(Case::from_row(row, crate::clock::now())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignRequest {
    /// The user who is to hold the case; `null` returns it to the queue.
    pub assignee_id: Option<String>,
    pub reason: Option<String>,
}

/// Give an open case to another person, or back to the queue.
#[utoipa::path(post, path = "/cases/{id}/reassign", operation_id = "reassign_case", tag = "reviews",
    description = "Requires: supervisor or admin (`ReviewCases` with the supervisor role); people only. \
                   The new holder must be an active user of the tenant who may decide the case (its \
                   required role, not its submitter, not the first reviewer under dual control); they \
                   hold it under a fresh lease. `assignee_id: null` returns the case to the queue.",
    params(("id" = String, Path)), request_body = ReassignRequest,
    responses((status = 200, body = Case), (status = 403, body = crate::http::error::ErrorBody),
               (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody),
               (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn reassign(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReviewCases>,
    Path(id): Path<String>,
    Json(body): Json<ReassignRequest>,
) -> Result<ResponseJson<Case>, ApiError> {
    let reason = optional_text("reason", body.reason.as_deref(), 2000)?;
    let assignee = body
        .assignee_id
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let supervisor = Reviewer::of(&principal)?;
    let row = super::reassign(&state, &supervisor, &id, assignee, reason.as_deref()).await?;
    Ok(ResponseJson(Case::from_row(row, crate::clock::now())))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsWindow {
    /// Hours to look back for breaches and decisions (1-720, default 24).
    pub window_hours: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewerStats {
    /// `user:<id>`.
    pub reviewer: String,
    pub decisions: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewStats {
    pub window_hours: i64,
    /// Open cases by priority.
    pub depth_by_priority: BTreeMap<String, i64>,
    pub open_cases: i64,
    /// Age of the oldest open case; `null` when none is open.
    pub oldest_open_age_seconds: Option<i64>,
    /// Cases whose SLA was breached within the window.
    pub breaches: i64,
    /// Decisions (approve, reject, escalate) made within the window, by reviewer.
    pub decisions_per_reviewer: Vec<ReviewerStats>,
    /// Median time from submission to a person's final decision, for cases decided within the window.
    pub median_time_to_decision_seconds: Option<i64>,
}

/// Review queue statistics.
#[utoipa::path(get, path = "/reviews/stats", operation_id = "get_review_stats", tag = "reviews",
    description = "Requires: supervisor or admin (`ReadReviewStats`), or an API key with `cases:read`.",
    params(StatsWindow),
    responses((status = 200, body = ReviewStats), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadReviewStats>,
    Query(window): Query<StatsWindow>,
) -> Result<ResponseJson<ReviewStats>, ApiError> {
    let window_hours = window.window_hours.unwrap_or(24);
    if !(1..=720).contains(&window_hours) {
        return Err(ApiError::invalid_field(
            "window_hours",
            "must be between 1 and 720",
        ));
    }
    let now = crate::clock::now();
    let since = now - Duration::hours(window_hours);
    let tenant = &principal.tenant_id;
    let depth: Vec<(String, i64)> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT priority, COUNT(*) FROM cases WHERE tenant_id = $1 AND state IN {OPEN_STATES} GROUP BY priority"
        )))
        .bind(tenant)
        .fetch_all(pool)
        .await
    })?;
    let oldest: Option<DateTime<Utc>> = with_pool!(&state.store, pool => {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT MIN(created_at) FROM cases WHERE tenant_id = $1 AND state IN {OPEN_STATES}"
        )))
        .bind(tenant)
        .fetch_one(pool)
        .await
    })?;
    let breaches: i64 = with_pool!(&state.store, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM cases WHERE tenant_id = $1 AND sla_breached_at >= $2")
            .bind(tenant)
            .bind(since)
            .fetch_one(pool)
            .await
    })?;
    let per_reviewer: Vec<(String, i64)> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT actor, COUNT(*) FROM case_history WHERE tenant_id = $1 AND decision IS NOT NULL AND created_at >= $2 \
             GROUP BY actor ORDER BY COUNT(*) DESC, actor",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(pool)
        .await
    })?;
    let decided: Vec<(DateTime<Utc>, DateTime<Utc>)> = with_pool!(&state.store, pool => {
        sqlx::query_as(
            "SELECT created_at, decided_at FROM cases WHERE tenant_id = $1 AND state IN ('approved', 'rejected', 'returned') \
             AND decided_at >= $2",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(pool)
        .await
    })?;
    let mut durations: Vec<i64> = decided
        .into_iter()
        .map(|(created, decided)| (decided - created).num_seconds())
        .collect();
    durations.sort_unstable();
    let median = match durations.len() {
        0 => None,
        n if n % 2 == 1 => Some(durations[n / 2]),
        n => Some((durations[n / 2 - 1] + durations[n / 2]) / 2),
    };
    Ok(ResponseJson(ReviewStats {
        window_hours,
        open_cases: depth.iter().map(|(_, n)| n).sum(),
        depth_by_priority: depth.into_iter().collect(),
        oldest_open_age_seconds: oldest.map(|t| (now - t).num_seconds()),
        breaches,
        decisions_per_reviewer: per_reviewer
            .into_iter()
            .map(|(reviewer, decisions)| ReviewerStats {
                reviewer,
                decisions,
            })
            .collect(),
        median_time_to_decision_seconds: median,
    }))
}
