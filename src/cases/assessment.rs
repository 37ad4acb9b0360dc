//! Case assessment: a tenant attaches a task's pipeline to a case type
//! (`PUT /case-types/{type}/assessment`). Every case of that type then waits in `assessing` while
//! the pipeline runs, as a job enqueued in the transaction that creates the case, with the case in
//! its params (`${params.case.id}`, `${params.case.amount}`, …). The pipeline writes its
//! `ai_assessment` with the `cases.assess` tool ([`assess`]), which routes the case by the policy in
//! force, exactly as if it had arrived with that assessment.
//!
//! A pipeline that fails, is cancelled, ends without assessing or takes longer than
//! `ASSESSMENT_TIMEOUT_SECONDS` never loses the case: the review sweep ([`sweep`]) routes it
//! without an AI assessment (so it goes to people), with an `assessment_failed` history entry
//! saying why.

use axum::Json as ResponseJson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CaseError, CaseRow, Change};
use crate::app::AppState;
use crate::auth::principal::{Authorized, ManagePolicy};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::queue::Job;
use crate::scheduler::tasks::TaskRow;
use crate::store::Tx;
use crate::{with_pool, with_tx};
use docket_rules::policy::engine::AiAssessment;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_assessment, put_assessment, delete_assessment))
}

/// The state of a case waiting for its assessment pipeline.
pub const ASSESSING: &str = "assessing";

/// A case type's assessment pipeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Assessment {
    pub case_type: String,
    /// The task whose pipeline assesses each new case of this type.
    pub task_id: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachAssessment {
    /// A task of this tenant whose payload holds a pipeline.
    pub task_id: String,
}

async fn find(
    store: &crate::store::Store,
    tenant_id: &str,
    case_type: &str,
) -> Result<Option<Assessment>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT case_type, task_id, created_by, created_at, updated_at FROM case_assessments \
             WHERE tenant_id = $1 AND case_type = $2",
        )
        .bind(tenant_id)
        .bind(case_type)
        .fetch_optional(pool)
        .await
    })
}

/// The assessment pipeline of a case type.
#[utoipa::path(get, path = "/case-types/{type}/assessment", tag = "cases",
    description = "Requires: admin (`ManagePolicy`).",
    params(("type" = String, Path)),
    responses((status = 200, body = Assessment), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_assessment(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Path(case_type): Path<String>,
) -> Result<ResponseJson<Assessment>, ApiError> {
    find(&state.store, &principal.tenant_id, &case_type)
        .await?
        .map(ResponseJson)
        .ok_or_else(|| ApiError::not_found("This case type has no assessment pipeline."))
}

/// Attach (or replace) the assessment pipeline of a case type: every case of the type submitted
/// from now on waits in `assessing` until the task's pipeline assesses it with `cases.assess`.
#[utoipa::path(put, path = "/case-types/{type}/assessment", tag = "cases",
    description = "Requires: admin (`ManagePolicy`). The task must exist in the tenant and hold a pipeline.",
    params(("type" = String, Path)), request_body = AttachAssessment,
    responses((status = 200, body = Assessment), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn put_assessment(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Path(case_type): Path<String>,
    Json(body): Json<AttachAssessment>,
) -> Result<ResponseJson<Assessment>, ApiError> {
    super::http::validate_name("type", &case_type, 50)?;
    let task = crate::scheduler::tasks::find(&state.store, &principal.tenant_id, &body.task_id)
        .await?
        .ok_or_else(|| ApiError::invalid_field("task_id", "is not a task of this tenant"))?;
    if task.payload().get("pipeline").is_none() {
        return Err(ApiError::invalid_field(
            "task_id",
            "is a task without a pipeline; an assessment runs the task's pipeline",
        ));
    }
    let now = crate::clock::now();
    let created_by = principal.actor.to_string();
    let before = find(&state.store, &principal.tenant_id, &case_type).await?;
    let mut tx = state.store.begin().await?;
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO case_assessments (tenant_id, case_type, task_id, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, case_type) DO UPDATE SET \
             task_id = excluded.task_id, created_by = excluded.created_by, updated_at = excluded.updated_at",
        )
        .bind(&principal.tenant_id)
        .bind(&case_type)
        .bind(&task.id)
        .bind(&created_by)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    principal
        .audit(
            &mut tx,
            "case_assessment.attach",
            "case_type",
            &case_type,
            json!({ "from_task_id": before.as_ref().map(|b| &b.task_id), "to_task_id": task.id }),
        )
        .await?;
    tx.commit().await?;
    Ok(ResponseJson(Assessment {
        case_type,
        task_id: task.id,
        created_by,
        created_at: before.map_or(now, |b| b.created_at),
        updated_at: now,
    }))
}

/// Detach the assessment pipeline: new cases of the type are routed at once again. Cases already
/// `assessing` keep waiting for their job (or the sweep).
#[utoipa::path(delete, path = "/case-types/{type}/assessment", tag = "cases",
    description = "Requires: admin (`ManagePolicy`).",
    params(("type" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_assessment(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ManagePolicy>,
    Path(case_type): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.store.begin().await?;
    let removed: Option<String> = with_tx!(&mut tx, conn => {
        sqlx::query_scalar(
            "DELETE FROM case_assessments WHERE tenant_id = $1 AND case_type = $2 RETURNING task_id",
        )
        .bind(&principal.tenant_id)
        .bind(&case_type)
        .fetch_optional(conn)
        .await
    })?;
    let Some(task_id) = removed else {
        tx.rollback().await?;
        return Err(ApiError::not_found(
            "This case type has no assessment pipeline.",
        ));
    };
    principal
        .audit(
            &mut tx,
            "case_assessment.detach",
            "case_type",
            &case_type,
            json!({ "task_id": task_id }),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The task whose pipeline assesses new cases of `case_type`, if one is attached and still holds a
/// pipeline. An attachment to a task deleted since (or emptied of its pipeline) is ignored, so
/// cases keep being routed.
pub async fn pipeline_for(
    tx: &mut Tx,
    tenant_id: &str,
    case_type: &str,
) -> Result<Option<TaskRow>, sqlx::Error> {
    let task: Option<TaskRow> = with_tx!(tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM tasks WHERE tenant_id = $1 AND status <> 'deleted' AND id = \
             (SELECT task_id FROM case_assessments WHERE tenant_id = $1 AND case_type = $2)",
            crate::scheduler::tasks::COLUMNS
        )))
        .bind(tenant_id)
        .bind(case_type)
        .fetch_optional(conn)
        .await
    })?;
    Ok(task.filter(|t| t.payload().get("pipeline").is_some()))
}

/// What the pipeline sees of the case, as `params.case`.
fn case_params(row: &CaseRow) -> Value {
    json!({
        "id": row.id,
        "type": row.case_type,
        "reference": row.reference,
        "amount": row.amount,
        "currency": row.currency,
        "subject": row.subject(),
        "ai_assessment": row.ai(),
    })
}

/// Enqueues `task`'s pipeline for the new case `row`, inside the transaction that creates it.
pub async fn request(
    tx: &mut Tx,
    state: &AppState,
    task: &TaskRow,
    row: &CaseRow,
    now: DateTime<Utc>,
) -> Result<Job, sqlx::Error> {
    let mut job = task.job_for(now);
    job.unique_key = Some(format!("case-assessment:{}", row.id));
    let params = &mut job.payload["payload"]["params"];
    if !params.is_object() {
        *params = json!({});
    }
    params["case"] = case_params(row);
    TaskRow::set_call_depth(&mut job, row.depth());
    crate::queue::enqueue(tx, &state.queue.settings, job, now).await
}

/// What `cases.assess` reports: where the case went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routed {
    pub case_id: String,
    pub state: String,
    pub decision: Option<String>,
    pub priority: String,
    pub queue: String,
    /// The policy's reason for the routing.
    pub reason: Value,
}

impl Routed {
    fn of(row: &CaseRow) -> Self {
        let trace: Value = serde_json::from_str(&row.policy_trace).unwrap_or(Value::Null);
        Self {
            case_id: row.id.clone(),
            state: row.state.clone(),
            decision: row.decision.clone(),
            priority: row.priority.clone(),
            queue: row.queue.clone(),
            reason: trace.get("reason").cloned().unwrap_or(Value::Null),
        }
    }
}

/// Records the assessment that job `job_id` made of an `assessing` case and routes the case by the
/// policy in force, in one transaction (history `assessed` then `routed`). Repeating it for a case
/// this job already assessed returns where the case went; any other case not `assessing` is a
/// conflict.
pub async fn assess(
    state: &AppState,
    tenant_id: &str,
    job_id: &str,
    case_id: &str,
    ai: AiAssessment,
) -> Result<Routed, CaseError> {
    ai.validate()
        .map_err(|message| CaseError::invalid("ai_assessment", message))?;
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    let mut row = super::lock(&mut tx, &state.store, tenant_id, case_id).await?;
    if row.assessment_job_id.as_deref() != Some(job_id) {
        // Any other pipeline could otherwise decide any waiting case of its tenant.
        tx.rollback().await?;
        return Err(CaseError::forbidden(
            "not_assessment_job",
            "Only the assessment pipeline's job enqueued for this case may assess it.",
        ));
    }
    if row.state != ASSESSING {
        tx.rollback().await?;
        let history = super::history(&state.store, tenant_id, case_id).await?;
        let mine = history.iter().any(|h| {
            h.action == "assessed"
                && h.details.0.get("job_id").and_then(Value::as_str) == Some(job_id)
        });
        return if mine {
            Ok(Routed::of(&row))
        } else {
            Err(CaseError::IllegalTransition {
                current: row.state,
                attempted: "assessed (it is not waiting for an assessment)",
            })
        };
    }
    let policy = crate::policy::current(&mut tx, &state.config, tenant_id).await?;
    row.ai_assessment = Some(json!(ai).to_string());
    row.ai_assessment_source = Some(super::AssessmentSource::Pipeline.as_str().to_owned());
    row.updated_at = now;
    let assessed_snapshot = row.clone();
    let details = super::http::route(&mut row, &policy, now);
    super::save(&mut tx, &row).await?;
    let mut assessed = Change::new("assessed", Some(ASSESSING), "system");
    assessed.details = json!({
        "job_id": job_id,
        "recommendation": ai.recommendation.as_str(),
        "confidence": ai.confidence,
    });
    let mut routed = Change::new("routed", Some(ASSESSING), "system");
    routed.details = details;
    routed.decision = row.decision.as_deref();
    let first = super::record(&mut tx, state, None, &assessed_snapshot, assessed, now).await?;
    let second = super::record(&mut tx, state, None, &row, routed, now).await?;
    tx.commit().await?;
    count_outcome("assessed");
    super::announce(state, vec![first, second]);
    Ok(Routed::of(&row))
}

/// Counts how assessments end: `assessed`, or why a case went to people without one.
fn count_outcome(outcome: &'static str) {
    metrics::counter!("docket_case_assessments_total", "outcome" => outcome).increment(1);
}

/// Why a waiting case's assessment will not come, if it will not: the metric's outcome label and
/// the reason recorded on the case.
fn failure(
    row: &CaseRow,
    job: Option<&Job>,
    deadline: DateTime<Utc>,
    timeout_seconds: f64,
) -> Option<(&'static str, String)> {
    let Some(job) = job else {
        return Some((
            "job_missing",
            "the assessment job no longer exists".to_owned(),
        ));
    };
    match job.status.as_str() {
        "dead" => Some((
            "pipeline_failed",
            format!(
                "the assessment pipeline failed: {}",
                job.last_error.as_deref().unwrap_or("no error recorded")
            ),
        )),
        "cancelled" => Some((
            "job_cancelled",
            "the assessment job was cancelled".to_owned(),
        )),
        "succeeded" => Some((
            "not_assessed",
            "the assessment pipeline finished without assessing the case".to_owned(),
        )),
        status if row.created_at <= deadline => Some((
            "timed_out",
            format!("no assessment within {timeout_seconds} s (the job is {status})"),
        )),
        _ => None,
    }
}

/// Routes `assessing` cases whose assessment will not come (job dead, cancelled, finished without
/// assessing, or over `ASSESSMENT_TIMEOUT_SECONDS`) without an AI assessment, so they reach
/// people; returns how many. Safe in several schedulers at once: each case is re-checked under
/// its row lock.
pub async fn sweep(state: &AppState, now: DateTime<Utc>) -> Result<usize, sqlx::Error> {
    let timeout = state.config.assessment_timeout;
    let deadline = now - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let mut routed = 0;
    loop {
        // Read-only look at the queue's table: one statement finds the candidates among all waiting
        // cases, instead of one job lookup per case every sweep.
        let candidates: Vec<(String, String)> = with_pool!(&state.store, pool => {
            sqlx::query_as(
                "SELECT c.tenant_id, c.id FROM cases c \
                 LEFT JOIN jobs j ON j.tenant_id = c.tenant_id AND j.id = c.assessment_job_id \
                 WHERE c.state = 'assessing' \
                 AND (j.id IS NULL OR j.status IN ('dead', 'cancelled', 'succeeded') OR c.created_at <= $1) \
                 ORDER BY c.created_at LIMIT 200",
            )
            .bind(deadline)
            .fetch_all(pool)
            .await
        })?;
        if candidates.is_empty() {
            return Ok(routed);
        }
        let mut recorded = Vec::with_capacity(candidates.len() * 2);
        let mut outcomes = Vec::with_capacity(candidates.len());
        let mut tx = state.store.begin().await?;
        for (tenant_id, case_id) in &candidates {
            let mut row = match super::lock(&mut tx, &state.store, tenant_id, case_id).await {
                Ok(row) if row.state == ASSESSING => row,
                Ok(_) | Err(CaseError::NotFound) => continue,
                Err(CaseError::Database(e)) => return Err(e),
                Err(other) => return Err(sqlx::Error::Protocol(other.to_string())),
            };
            let job = match &row.assessment_job_id {
                Some(id) => crate::queue::get(&state.store, tenant_id, id).await?,
                None => None,
            };
            let Some((outcome, reason)) =
                failure(&row, job.as_ref(), deadline, timeout.as_secs_f64())
            else {
                continue;
            };
            let policy = crate::policy::current(&mut tx, &state.config, tenant_id).await?;
            let failed_snapshot = row.clone();
            // Routed as if no AI had spoken: rules that need an assessment do not fire. One the
            // submitter gave stays on the case for reviewers to read.
            let submitted = row.ai_assessment.take();
            let details = super::http::route(&mut row, &policy, now);
            row.ai_assessment = submitted;
            row.updated_at = now;
            super::save(&mut tx, &row).await?;
            let mut failed = Change::new("assessment_failed", Some(ASSESSING), "system");
            failed.details = json!({
                "job_id": row.assessment_job_id,
                "job_status": job.as_ref().map(|j| &j.status),
                "error": job.as_ref().and_then(|j| j.last_error.as_ref()),
                "reason": reason,
            });
            failed.reason = Some(&reason);
            let mut routed_change = Change::new("routed", Some(ASSESSING), "system");
            routed_change.details = details;
            routed_change.decision = row.decision.as_deref();
            recorded
                .push(super::record(&mut tx, state, None, &failed_snapshot, failed, now).await?);
            recorded.push(super::record(&mut tx, state, None, &row, routed_change, now).await?);
            outcomes.push(outcome);
        }
        tx.commit().await?;
        routed += outcomes.len();
        outcomes.into_iter().for_each(count_outcome);
        let progressed = !recorded.is_empty();
        super::announce(state, recorded);
        // Candidates that turned out healthy (assessed meanwhile) are not selected again; stop if a
        // whole batch was such.
        if !progressed {
            return Ok(routed);
        }
    }
}
