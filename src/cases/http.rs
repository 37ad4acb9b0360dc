//! `POST/GET /cases`, `GET /cases/{id}` and `POST /cases/{id}/cancel`.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Case, CaseError, CaseRow, Change, HistoryEntry, OPEN_STATES, PARKED_STATES, SlaStatus,
    parse_amount,
};
use crate::app::AppState;
use crate::auth::principal::{Authorized, Principal, ReadCases, WriteCases};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::pagination::{Page, PageParams};
use crate::with_pool;
use docket_rules::policy::engine::{AiAssessment, Priority};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    /// What kind of item this is, e.g. `cheque` or `payment` (letters, digits, `_ . -`).
    #[serde(rename = "type")]
    #[schema(pattern = r"^[A-Za-z0-9_.\-]{1,50}$", example = "cheque")]
    pub case_type: String,
    /// Your reference; unique per tenant and type (no control characters).
    #[schema(min_length = 1, max_length = 200, example = "CHQ-000123")]
    pub reference: String,
    /// Decimal string, e.g. `"1250.00"`; never a JSON number, so nothing is lost to floating point.
    /// Not negative, with at most the currency's decimal places.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", max_length = 40, example = "1250.00")]
    pub amount: Value,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    pub currency: String,
    /// Attributes the policy may look at (`subject.account_age_days`, …).
    #[serde(default)]
    #[schema(value_type = Object, required = false)]
    pub subject: Value,
    pub ai_assessment: Option<AiAssessment>,
}

/// A case with everything that happened to it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CaseDetail {
    #[serde(flatten)]
    pub case: Case,
    pub history: Vec<HistoryEntry>,
}

pub(crate) fn validate_name(field: &str, value: &str, max: usize) -> Result<(), CaseError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CaseError::invalid(
            field,
            format!("must be 1-{max} letters, digits, '_', '.' or '-'"),
        ))
    }
}

/// Submits a case: it is routed by the tenant's policy at once, either decided automatically or
/// queued for review, unless its type has an assessment pipeline: then it waits in `assessing`
/// for the pipeline's job, enqueued in the same transaction. Also used by pipelines
/// (`review.request`).
/// Creates a case. `call_depth` is that of the pipeline step raising it (0 for people and the API).
pub async fn submit(
    state: &AppState,
    principal: &Principal,
    body: NewCase,
    idempotency_key: Option<String>,
    call_depth: u32,
) -> Result<(Case, bool), CaseError> {
    validate_name("type", &body.case_type, 50)?;
    let reference = body.reference.trim();
    if reference.is_empty()
        || reference.chars().count() > 200
        || reference.chars().any(char::is_control)
    {
        return Err(CaseError::invalid(
            "reference",
            "must be 1-200 characters without control characters",
        ));
    }
    let Value::String(amount_text) = &body.amount else {
        return Err(CaseError::invalid(
            "amount",
            "must be a decimal string such as \"1250.00\", not a JSON number",
        ));
    };
    let (amount, amount_e4) = parse_amount(amount_text, &body.currency)?;
    let subject = match &body.subject {
        Value::Null => json!({}),
        Value::Object(_) => body.subject.clone(),
        _ => return Err(CaseError::invalid("subject", "must be a JSON object")),
    };
    if subject.to_string().len() > 64 * 1024 {
        return Err(CaseError::invalid(
            "subject",
            "must be at most 64 KiB of JSON",
        ));
    }
    if let Some(ai) = &body.ai_assessment {
        ai.validate()
            .map_err(|message| CaseError::invalid("ai_assessment", message))?;
    }
    if idempotency_key
        .as_ref()
        .is_some_and(|k| k.chars().count() > 200)
    {
        return Err(CaseError::invalid(
            "Idempotency-Key",
            "must be at most 200 characters",
        ));
    }
    let request_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&body).unwrap_or_default(),
    ));

    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    if let Some(key) = &idempotency_key {
        let earlier: Option<CaseRow> = crate::with_tx!(&mut tx, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM cases WHERE tenant_id = $1 AND idempotency_key = $2",
                super::COLUMNS
            )))
            .bind(&principal.tenant_id)
            .bind(key)
            .fetch_optional(conn)
            .await
        })?;
        if let Some(earlier) = earlier {
            if earlier.request_hash == request_hash {
                return Ok((Case::from_row(earlier, now), false));
            }
            return Err(CaseError::Conflict {
                code: "idempotency_conflict",
                message: "This Idempotency-Key was used for a different case.".to_owned(),
                details: json!({ "case_id": earlier.id }),
            });
        }
    }
    let existing: Option<String> = crate::with_tx!(&mut tx, conn => {
        sqlx::query_scalar("SELECT id FROM cases WHERE tenant_id = $1 AND type = $2 AND reference = $3")
            .bind(&principal.tenant_id)
            .bind(&body.case_type)
            .bind(reference)
            .fetch_optional(conn)
            .await
    })?;
    if let Some(id) = existing {
        return Err(CaseError::Conflict {
            code: "duplicate_reference",
            message: format!(
                "A {} case with reference {reference:?} exists already.",
                body.case_type
            ),
            details: json!({ "case_id": id }),
        });
    }

    let policy = crate::policy::current(&mut tx, &state.config, &principal.tenant_id).await?;
    let mut row = CaseRow {
        id: Uuid::now_v7().to_string(),
        tenant_id: principal.tenant_id.clone(),
        case_type: body.case_type.clone(),
        reference: reference.to_owned(),
        amount: amount.to_string(),
        amount_e4,
        currency: body.currency.clone(),
        subject: subject.to_string(),
        ai_assessment: body.ai_assessment.as_ref().map(|a| json!(a).to_string()),
        ai_assessment_source: body
            .ai_assessment
            .as_ref()
            .map(|_| super::AssessmentSource::Submitted.as_str().to_owned()),
        state: "new".to_owned(),
        priority: String::new(),
        priority_rank: 0,
        queue: String::new(),
        required_role: String::new(),
        required_rank: 0,
        dual_control: false,
        sla_hours: 0,
        sla_due_at: now,
        sla_breached_at: None,
        policy_version: policy.version,
        policy_trace: String::new(),
        submitted_by: principal.actor.to_string(),
        submitter_user_id: principal.accountable_user().map(str::to_owned),
        first_decision: None,
        first_decider: None,
        assignee_id: None,
        lease_expires_at: None,
        decision: None,
        decided_at: None,
        idempotency_key,
        request_hash,
        created_at: now,
        updated_at: now,
        risk_level: "low".to_owned(),
        flags: "[]".to_owned(),
        require_reason: false,
        reason_codes: "[]".to_owned(),
        proposal: None,
        hold_until: None,
        resume_state: None,
        parked_at: None,
        assessment_job_id: None,
        call_depth: i32::try_from(call_depth).unwrap_or(i32::MAX),
    };
    let created_state = row.state.clone();
    // Routed at once even when an assessment follows, so the waiting case has a priority, queue
    // and deadline to show; the assessment routes it again.
    let details = route(&mut row, &policy, now);
    let assessor =
        super::assessment::pipeline_for(&mut tx, &principal.tenant_id, &row.case_type).await?;
    let (next, assessment_job) = match assessor {
        Some(task) => {
            let job = super::assessment::request(&mut tx, state, &task, &row, now).await?;
            row.state = super::assessment::ASSESSING.to_owned();
            row.decision = None;
            row.decided_at = None;
            row.assessment_job_id = Some(job.id.clone());
            row.policy_trace =
                json!({ "fired": [], "reason": "Waiting for the assessment pipeline." })
                    .to_string();
            let mut requested = Change::new("assessment_requested", Some(&created_state), "system");
            requested.details = json!({ "task_id": task.id, "job_id": job.id });
            (requested, Some(job))
        }
        None => {
            let mut routed = Change::new("routed", Some(&created_state), "system");
            routed.details = details;
            // An automatic decision is recorded as the system's, so reports count it.
            routed.decision = row.decision.as_deref();
            (routed, None)
        }
    };
    super::insert(&mut tx, &row).await.map_err(|e| {
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            CaseError::Conflict {
                code: "duplicate_reference",
                message:
                    "A case with this reference or Idempotency-Key was created at the same time."
                        .to_owned(),
                details: Value::Null,
            }
        } else {
            CaseError::Database(e)
        }
    })?;
    let mut snapshot = row.clone();
    snapshot.state.clone_from(&created_state);
    let mut created = Change::new("created", None, &principal.actor);
    created.details = json!({ "amount": row.amount, "currency": row.currency });
    let first = super::record(&mut tx, state, Some(principal), &snapshot, created, now).await?;
    let mut second = super::record(&mut tx, state, Some(principal), &row, next, now).await?;
    second.1.extend(assessment_job);
    tx.commit().await?;
    super::announce(state, vec![first, second]);
    Ok((Case::from_row(row, now), true))
}

/// Applies the policy in force to a case that is arriving or has just been assessed: priority,
/// queue, required role, dual control, the SLA deadline (counted from its arrival) and, where the
/// policy allows, an automatic decision; otherwise the case is queued for people. Returns the
/// details of the `routed` history entry.
pub fn route(row: &mut CaseRow, policy: &crate::policy::Versioned, now: DateTime<Utc>) -> Value {
    let outcome = row.evaluate(&policy.policy);
    row.policy_version = policy.version;
    row.priority = outcome.priority.as_str().to_owned();
    row.priority_rank = outcome.priority.rank();
    row.queue = outcome.queue.clone();
    row.required_role = outcome.required_role.clone();
    row.required_rank = role_rank(&outcome.required_role);
    row.dual_control = outcome.dual_control;
    row.risk_level = outcome.risk_level.as_str().to_owned();
    row.flags = json!(outcome.flags).to_string();
    row.require_reason = outcome.require_reason;
    row.sla_hours = i32::try_from(outcome.sla_hours).unwrap_or(i32::MAX);
    row.sla_due_at = row.created_at + Duration::hours(i64::from(outcome.sla_hours));
    row.policy_trace = json!({ "fired": outcome.fired, "reason": outcome.reason }).to_string();
    match outcome.auto_decision {
        Some(recommendation) => {
            let decision = recommendation.as_str();
            row.state = format!("auto_{decision}d");
            row.decision = Some(decision.to_owned());
            row.decided_at = Some(now);
        }
        None => row.state = "queued".to_owned(),
    }
    json!({
        "policy_version": policy.version,
        "fired": outcome.fired.iter().map(|r| &r.name).collect::<Vec<_>>(),
        "reason": outcome.reason,
        "risk_level": outcome.risk_level,
        "flags": outcome.flags,
    })
}

/// Rank of a role name as stored on cases: reviewer 1, supervisor 2, admin 3.
pub fn role_rank(role: &str) -> i32 {
    match role {
        "admin" => 3,
        "supervisor" => 2,
        _ => 1,
    }
}

/// Submit a case for a decision.
#[utoipa::path(post, path = "/cases", tag = "cases",
    description = "Requires: reviewer or above (`WriteCases`), or an API key with `cases:write`. \
                   Repeating a request with the same `Idempotency-Key` returns the first case (200). \
                   A case whose type has an assessment pipeline is answered with 202 in state `assessing`; \
                   poll `GET /cases/{id}` or subscribe to `case.queued` / `case.auto_approved` / \
                   `case.auto_rejected` events for the outcome.",
    request_body = NewCase,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Case), (status = 200, description = "idempotent repeat", body = Case),
               (status = 202, description = "waiting for its assessment pipeline", body = Case),
               (status = 409, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_case(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteCases>,
    headers: HeaderMap,
    Json(body): Json<NewCase>,
) -> Result<(StatusCode, ResponseJson<Case>), ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid_field("Idempotency-Key", "must be ASCII"))
        })
        .transpose()?
        .filter(|k| !k.is_empty());
    let (case, created) = submit(&state, &principal, body, key, 0).await?;
    let status = if case.state == super::assessment::ASSESSING {
        StatusCode::ACCEPTED
    } else if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ResponseJson(case)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CaseFilter {
    pub state: Option<String>,
    /// low, normal, high or urgent.
    pub priority: Option<String>,
    /// A user id; `none` for cases nobody holds.
    pub assignee: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub case_type: Option<String>,
    pub queue: Option<String>,
    /// Decimal string; inclusive.
    pub amount_min: Option<String>,
    /// Decimal string; inclusive.
    pub amount_max: Option<String>,
    /// on_track, breached or met.
    pub sla: Option<String>,
    /// Matches the reference or subject text.
    pub q: Option<String>,
}

const STATES: [&str; 13] = [
    "assessing",
    "queued",
    "in_review",
    "pending_dual_control",
    "escalated",
    "on_hold",
    "needs_more_info",
    "approved",
    "rejected",
    "returned",
    "auto_approved",
    "auto_rejected",
    "cancelled",
];

fn amount_bound(field: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            v.trim()
                .parse::<rust_decimal::Decimal>()
                .ok()
                .and_then(|d| d.checked_mul(rust_decimal::Decimal::from(10_000)))
                .and_then(|d| i64::try_from(d.trunc()).ok())
                .ok_or_else(|| ApiError::invalid_field(field, "must be a decimal number"))
        })
        .transpose()
}

/// List cases, newest first.
#[utoipa::path(get, path = "/cases", tag = "cases",
    description = "Requires: any role (`ReadCases`), or an API key with `cases:read`.",
    params(CaseFilter, PageParams),
    responses((status = 200, body = Page<Case>), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn list_cases(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadCases>,
    Query(filter): Query<CaseFilter>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<Case>>, ApiError> {
    let limit = page.limit()?;
    if let Some(s) = &filter.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::invalid_field(
            "state",
            format!("must be one of {}", STATES.join(", ")),
        ));
    }
    if let Some(p) = &filter.priority
        && Priority::parse(p).is_none()
    {
        return Err(ApiError::invalid_field(
            "priority",
            "must be low, normal, high or urgent",
        ));
    }
    let sla = filter
        .sla
        .as_deref()
        .map(|s| {
            SlaStatus::parse(s)
                .ok_or_else(|| ApiError::invalid_field("sla", "must be on_track, breached or met"))
        })
        .transpose()?;
    let amount_min = amount_bound("amount_min", &filter.amount_min)?;
    let amount_max = amount_bound("amount_max", &filter.amount_max)?;
    let now = crate::clock::now();
    let sla_clause = match sla {
        None => String::new(),
        Some(SlaStatus::OnTrack) => {
            format!(
                " AND sla_breached_at IS NULL AND (state IN {PARKED_STATES} OR (state IN {OPEN_STATES} AND sla_due_at > $12))"
            )
        }
        Some(SlaStatus::Breached) => format!(
            " AND (sla_breached_at IS NOT NULL OR (state IN {OPEN_STATES} AND sla_due_at <= $12) OR decided_at > sla_due_at)"
        ),
        Some(SlaStatus::Met) => format!(
            " AND state NOT IN {OPEN_STATES} AND state NOT IN {PARKED_STATES} AND sla_breached_at IS NULL \
             AND (decided_at IS NULL OR decided_at <= sla_due_at)"
        ),
    };
    let (assignee, unassigned) = match filter.assignee.as_deref() {
        Some("none") => (None, true),
        other => (other.map(str::to_owned), false),
    };
    let pattern = filter
        .q
        .as_ref()
        .map(|q| format!("%{}%", q.to_lowercase().replace(['%', '_', '\\'], "")));
    let sql = format!(
        "SELECT {} FROM cases WHERE tenant_id = $1 AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR priority = $3) \
         AND ($4 IS NULL OR (assignee_id = $4 AND lease_expires_at > $12)) \
         AND ($5 = FALSE OR assignee_id IS NULL OR lease_expires_at <= $12) \
         AND ($6 IS NULL OR type = $6) AND ($7 IS NULL OR queue = $7) \
         AND ($8 IS NULL OR amount_e4 >= $8) AND ($9 IS NULL OR amount_e4 <= $9) \
         AND ($10 IS NULL OR LOWER(reference) LIKE $10 OR LOWER(subject) LIKE $10) \
         AND ($11 IS NULL OR id < $11){sla_clause} ORDER BY id DESC LIMIT $13",
        super::COLUMNS
    );
    let rows: Vec<CaseRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&principal.tenant_id)
            .bind(&filter.state)
            .bind(&filter.priority)
            .bind(&assignee)
            .bind(unassigned)
            .bind(&filter.case_type)
            .bind(&filter.queue)
            .bind(amount_min)
            .bind(amount_max)
            .bind(&pattern)
            .bind(&page.cursor)
            .bind(now)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
    })?;
    let cases = rows.into_iter().map(|r| Case::from_row(r, now)).collect();
    Ok(ResponseJson(Page::from_overfetch(
        cases,
        limit,
        |c: &Case| c.id.clone(),
    )))
}

/// A case with its full history. Each call is recorded as a view of the case (`GET /cases/{id}/views`).
#[utoipa::path(get, path = "/cases/{id}", tag = "cases",
    description = "Requires: any role (`ReadCases`), or an API key with `cases:read`.",
    params(("id" = String, Path)),
    responses((status = 200, body = CaseDetail), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_case(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadCases>,
    Path(id): Path<String>,
) -> Result<ResponseJson<CaseDetail>, ApiError> {
    let row = super::find(&state.store, &principal.tenant_id, &id).await?;
    let history = super::history(&state.store, &principal.tenant_id, &id).await?;
    // Recorded before answering: a view that cannot be recorded is not shown.
    super::views::record(
        &state.store,
        &principal.tenant_id,
        &id,
        &principal.actor.to_string(),
        None,
    )
    .await?;
    Ok(ResponseJson(CaseDetail {
        case: Case::from_row(row, crate::clock::now()),
        history,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelCase {
    #[schema(min_length = 1, max_length = 2000)]
    pub reason: String,
}

/// Withdraw a case that is not decided yet (open, parked, or waiting for its assessment).
#[utoipa::path(post, path = "/cases/{id}/cancel", tag = "cases",
    description = "Requires: the submitter (`WriteCases`, or an API key with `cases:write`), or a supervisor or admin.",
    params(("id" = String, Path)), request_body = CancelCase,
    responses((status = 200, body = Case), (status = 403, body = crate::http::error::ErrorBody),
               (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn cancel_case(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteCases>,
    Path(id): Path<String>,
    Json(body): Json<CancelCase>,
) -> Result<ResponseJson<Case>, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(ApiError::invalid_field(
            "reason",
            "must be 1-2000 characters",
        ));
    }
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let mut row = super::lock(&mut tx, &state.store, &principal.tenant_id, &id).await?;
    let refusal = if !row.answers_to(&principal) {
        Some(CaseError::forbidden(
            "not_submitter",
            "Only the submitter or a supervisor may cancel a case.",
        ))
    } else if !row.is_open() && !row.is_parked() && row.state != super::assessment::ASSESSING {
        Some(CaseError::IllegalTransition {
            current: row.state.clone(),
            attempted: "cancelled",
        })
    } else {
        None
    };
    if let Some(refusal) = refusal {
        tx.rollback().await?;
        return Err(refusal.into());
    }
    let from = row.state.clone();
    // The assessment is no longer wanted: its job stops unless a worker is already running it (its
    // `cases.assess` step is then refused).
    let assessment_cancelled = match (&row.assessment_job_id, from == super::assessment::ASSESSING)
    {
        (Some(job_id), true) => {
            crate::queue::cancel_pending(&mut tx, &principal.tenant_id, job_id, now).await?
        }
        _ => false,
    };
    row.state = "cancelled".to_owned();
    row.proposal = None;
    row.assignee_id = None;
    row.lease_expires_at = None;
    row.hold_until = None;
    row.resume_state = None;
    row.parked_at = None;
    row.updated_at = now;
    super::save(&mut tx, &row).await?;
    let mut change = Change::new("cancelled", Some(&from), &principal.actor);
    change.reason = Some(reason);
    if assessment_cancelled {
        change.details = json!({ "assessment_job_cancelled": row.assessment_job_id });
    }
    let recorded = super::record(&mut tx, &state, Some(&principal), &row, change, now).await?;
    tx.commit().await?;
    super::announce(&state, vec![recorded]);
    Ok(ResponseJson(Case::from_row(row, now)))
}
