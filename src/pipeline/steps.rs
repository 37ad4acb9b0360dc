//! The stored progress of a pipeline job: one row per step, written as each step settles.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::definition::Step;
use crate::queue::worker::JobContext;
use crate::store::Store;
use crate::with_pool;

/// A step as stored, and as `GET /runs/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepRecord {
    #[serde(skip)]
    pub job_id: String,
    #[serde(skip)]
    pub tenant_id: String,
    #[serde(rename = "id")]
    pub step_id: String,
    pub position: i32,
    pub tool: String,
    /// `succeeded`, `skipped`, `waiting`, `failed` or `failed_continued` (`on_error: continue`).
    pub status: String,
    pub attempts: u32,
    /// The rendered input, secrets redacted.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
    #[serde(skip)]
    pub resume_state: Option<Value>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
}

impl StepRecord {
    pub fn new(job: &JobContext, step: &Step, position: usize, now: DateTime<Utc>) -> Self {
        Self {
            job_id: job.job_id.clone(),
            tenant_id: job.tenant_id.clone(),
            step_id: step.id.clone(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
            tool: step.uses.clone(),
            status: "running".to_owned(),
            attempts: 0,
            input: None,
            output: None,
            error: None,
            resume_state: None,
            started_at: now,
            finished_at: None,
            duration_seconds: None,
        }
    }

    /// Finished for good: a resumed job goes past it.
    pub fn is_settled(&self) -> bool {
        matches!(
            self.status.as_str(),
            "succeeded" | "skipped" | "failed_continued"
        )
    }

    /// What later steps see as `steps.<save_as>`.
    pub fn result(&self) -> Value {
        match self.status.as_str() {
            "succeeded" => self.output.clone().unwrap_or(Value::Null),
            "failed_continued" => json!({ "error": self.error }),
            _ => Value::Null,
        }
    }
}

#[derive(sqlx::FromRow)]
struct StepRow {
    job_id: String,
    tenant_id: String,
    step_id: String,
    position: i32,
    tool: String,
    status: String,
    attempts: i32,
    input: Option<String>,
    output: Option<String>,
    error: Option<String>,
    resume_state: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<StepRow> for StepRecord {
    fn from(row: StepRow) -> Self {
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        Self {
            duration_seconds: row
                .finished_at
                .map(|end| (end - row.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6),
            job_id: row.job_id,
            tenant_id: row.tenant_id,
            step_id: row.step_id,
            position: row.position,
            tool: row.tool,
            status: row.status,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            input: json(row.input),
            output: json(row.output),
            error: row.error,
            resume_state: json(row.resume_state),
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

const COLUMNS: &str = "job_id, tenant_id, step_id, position, tool, status, attempts, input, output, error, resume_state, started_at, finished_at";

/// The steps of a job, in pipeline order.
pub async fn load(store: &Store, job_id: &str) -> Result<Vec<StepRecord>, sqlx::Error> {
    let rows: Vec<StepRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM pipeline_steps WHERE job_id = $1 ORDER BY position"
        )))
        .bind(job_id)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows.into_iter().map(StepRecord::from).collect())
}

/// The steps of a tenant's job, for the runs API.
pub async fn of_job(
    store: &Store,
    tenant_id: &str,
    job_id: &str,
) -> Result<Vec<StepRecord>, sqlx::Error> {
    let rows: Vec<StepRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM pipeline_steps WHERE tenant_id = $1 AND job_id = $2 ORDER BY position"
        )))
        .bind(tenant_id)
        .bind(job_id)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows.into_iter().map(StepRecord::from).collect())
}

/// Stores the step's current state (insert or replace).
pub async fn save(store: &Store, step: &StepRecord) -> Result<(), sqlx::Error> {
    let text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    crate::with_writer!(store, pool => {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO pipeline_steps ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (job_id, step_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, \
             input = excluded.input, output = excluded.output, error = excluded.error, resume_state = excluded.resume_state, \
             started_at = excluded.started_at, finished_at = excluded.finished_at"
        )))
        .bind(&step.job_id)
        .bind(&step.tenant_id)
        .bind(&step.step_id)
        .bind(step.position)
        .bind(&step.tool)
        .bind(&step.status)
        .bind(i32::try_from(step.attempts).unwrap_or(i32::MAX))
        .bind(text(&step.input))
        .bind(text(&step.output))
        .bind(&step.error)
        .bind(text(&step.resume_state))
        .bind(step.started_at)
        .bind(step.finished_at)
        .execute(pool)
        .await
        .map(|_| ())
    })
}
