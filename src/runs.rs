//! Runs: every execution attempt of a job (and every missed task occurrence), with its input,
//! output, error, timings and worker.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::principal::{Authorized, Principal, ReadCases, ReadRuns, holds};
use crate::http::error::ApiError;
use crate::http::pagination::{Page, PageParams};
use crate::with_pool;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    pub id: String,
    pub job_id: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub attempt: i32,
    /// `running`, `succeeded`, `failed`, `lost`, `released` or `missed`.
    pub status: String,
    pub worker_id: String,
    /// When the job became due.
    pub queued_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds from due to start.
    pub start_delay_seconds: f64,
    pub duration_seconds: Option<f64>,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// For pipeline jobs (single run view only): every step of the job so far, with input
    /// (secrets redacted), output, duration and error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::pipeline::steps::StepRecord>,
    /// True when the run worked on a case (an assessment pipeline) and the caller may not read
    /// cases: the case in `input`, the `output` and the steps' inputs and outputs are left out.
    pub case_data_withheld: bool,
}

impl RunDetail {
    /// Leaves out what came from a case, for callers without the right to read cases: an
    /// assessment pipeline's input holds the case, and its steps' inputs and outputs are made
    /// from it (a model prompt quoting the subject, say).
    fn withhold_case_data(&mut self, principal: &Principal) {
        let case = self.input.pointer("/payload/params/case");
        if case.is_none() || holds::<ReadCases>(principal) {
            return;
        }
        let id = case.and_then(|c| c.get("id")).cloned();
        if let Some(slot) = self.input.pointer_mut("/payload/params/case") {
            *slot = serde_json::json!({ "id": id });
        }
        self.output = None;
        for step in &mut self.steps {
            step.input = None;
            step.output = None;
        }
        self.case_data_withheld = true;
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    job_id: String,
    task_id: Option<String>,
    kind: String,
    attempt: i32,
    status: String,
    worker_id: String,
    queued_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    payload: String,
    output: Option<String>,
    error: Option<String>,
}

impl From<RunRow> for RunDetail {
    fn from(row: RunRow) -> Self {
        let seconds = |d: chrono::Duration| d.num_microseconds().map_or(0.0, |us| us as f64 / 1e6);
        Self {
            start_delay_seconds: seconds(row.started_at - row.queued_at).max(0.0),
            duration_seconds: row.finished_at.map(|f| seconds(f - row.started_at)),
            id: row.id,
            job_id: row.job_id,
            task_id: row.task_id,
            kind: row.kind,
            attempt: row.attempt,
            status: row.status,
            worker_id: row.worker_id,
            queued_at: row.queued_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            input: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
            output: row.output.and_then(|o| serde_json::from_str(&o).ok()),
            error: row.error,
            steps: Vec::new(),
            case_data_withheld: false,
        }
    }
}

const SELECT: &str = "SELECT r.id, r.job_id, j.task_id, j.kind, r.attempt, r.status, r.worker_id, r.queued_at, \
                      r.started_at, r.finished_at, j.payload, r.output, r.error FROM runs r JOIN jobs j ON j.id = r.job_id";

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct RunFilter {
    pub task_id: Option<String>,
    pub job_id: Option<String>,
    pub status: Option<String>,
    /// Runs started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Runs started before this time.
    pub until: Option<DateTime<Utc>>,
}

/// Runs, newest first.
#[utoipa::path(get, path = "/runs", tag = "runs",
    description = "Requires: any role (`ReadRuns`), or an API key with `runs:read`. Without the right to read \
                   cases, runs of assessment pipelines come without their case data (`case_data_withheld`).",
    params(RunFilter, PageParams),
    responses((status = 200, body = Page<RunDetail>)))]
pub async fn list_runs(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadRuns>,
    Query(filter): Query<RunFilter>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<RunDetail>>, ApiError> {
    let limit = page.limit()?;
    let sql = format!(
        "{SELECT} WHERE r.tenant_id = $1 AND ($2 IS NULL OR j.task_id = $2) AND ($3 IS NULL OR r.job_id = $3) \
         AND ($4 IS NULL OR r.status = $4) AND ($5 IS NULL OR r.started_at >= $5) AND ($6 IS NULL OR r.started_at < $6) \
         AND ($7 IS NULL OR r.id < $7) ORDER BY r.id DESC LIMIT $8"
    );
    let rows: Vec<RunRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(&principal.tenant_id)
            .bind(&filter.task_id)
            .bind(&filter.job_id)
            .bind(&filter.status)
            .bind(filter.since)
            .bind(filter.until)
            .bind(&page.cursor)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
    })?;
    let runs = rows
        .into_iter()
        .map(|row| {
            let mut run = RunDetail::from(row);
            run.withhold_case_data(&principal);
            run
        })
        .collect();
    Ok(ResponseJson(Page::from_overfetch(
        runs,
        limit,
        |r: &RunDetail| r.id.clone(),
    )))
}

/// One run with its input, output, error and timings.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    description = "Requires: any role (`ReadRuns`), or an API key with `runs:read`.",
    params(("id" = String, Path)),
    responses((status = 200, body = RunDetail), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_run(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadRuns>,
    Path(id): Path<String>,
) -> Result<ResponseJson<RunDetail>, ApiError> {
    let row: Option<RunRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE r.tenant_id = $1 AND r.id = $2")))
            .bind(&principal.tenant_id)
            .bind(&id)
            .fetch_optional(pool)
            .await
    })?;
    let mut run: RunDetail = row
        .ok_or_else(|| ApiError::not_found("No such run."))?
        .into();
    run.steps =
        crate::pipeline::steps::of_job(&state.store, &principal.tenant_id, &run.job_id).await?;
    run.withhold_case_data(&principal);
    Ok(ResponseJson(run))
}

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}
