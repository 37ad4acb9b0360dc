//! Tasks: scheduled work of a tenant. CRUD and the actions run now, pause, resume and snooze.

use axum::Json as ResponseJson;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::AppState;
use crate::audit;
use crate::auth::principal::{Authorized, Principal, ReadTasks, WriteTasks};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::http::pagination::{Page, PageParams};
use crate::queue::{self, Job, NewJob};
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};
use docket_rules::schedule::{Normalised, Schedule, ScheduleError, Zone, horizon};

/// The job kind of task occurrences.
pub const TASK_JOB_KIND: &str = "task";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskRow {
    pub id: String,
    pub tenant_id: String,
    pub title: String,
    pub description: String,
    pub schedule_kind: String,
    pub schedule_expr: String,
    pub timezone: String,
    #[serde(skip)]
    pub payload: String,
    pub priority: i32,
    pub max_retries: i32,
    pub timeout_seconds: i32,
    pub misfire_grace_seconds: i32,
    pub concurrency: i32,
    /// Jobs of this task are limited together with every job of the same key (across tasks):
    /// at most `concurrency_limit` running and at most `rate_limit` starts per interval. May use
    /// `${params.…}` and `${event.…}`, rendered when an occurrence is enqueued.
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<i32>,
    #[serde(skip)]
    pub rate_count: Option<i32>,
    #[serde(skip)]
    pub rate_per_seconds: Option<i32>,
    /// An occurrence enqueued within `dedupe_window_seconds` of an earlier one with the same
    /// rendered key (per tenant) is that earlier job. Templates as for `concurrency_key`.
    pub dedupe_key: Option<String>,
    pub dedupe_window_seconds: Option<i32>,
    /// `active`, `paused` or `completed` (a one-shot task that ran).
    pub status: String,
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TaskRow {
    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&self.schedule_kind, &self.schedule_expr, &self.timezone)
    }

    pub fn payload(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }

    /// The job for an occurrence at `at`; the unique key makes its enqueue idempotent.
    pub fn job_for(&self, at: DateTime<Utc>) -> NewJob {
        let mut job = NewJob {
            tenant_id: self.tenant_id.clone(),
            task_id: Some(self.id.clone()),
            kind: TASK_JOB_KIND.to_owned(),
            payload: json!({ "task_id": self.id, "scheduled_for": at, "payload": self.payload() }),
            priority: self.priority,
            run_at: Some(at),
            max_attempts: Some(u32::try_from(self.max_retries).unwrap_or(0) + 1),
            timeout: Some(std::time::Duration::from_secs(
                u64::try_from(self.timeout_seconds).unwrap_or(1),
            )),
            unique_key: Some(format!("task:{}:{}", self.id, at.to_rfc3339())),
            concurrency_limit: self.concurrency_limit.and_then(|n| u32::try_from(n).ok()),
            rate_limit: self
                .rate_count
                .zip(self.rate_per_seconds)
                .and_then(|(count, per)| {
                    Some(queue::RateLimit {
                        count: u32::try_from(count).ok()?,
                        per: std::time::Duration::from_secs(u64::try_from(per).ok()?),
                    })
                }),
            dedupe_window: self
                .dedupe_window_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(std::time::Duration::from_secs),
            ..NewJob::default()
        };
        self.render_keys(&mut job);
        job
    }

    /// Marks a job as started by a job at `depth - 1` (`tasks.run`, or an event a pipeline
    /// published); jobs started by a schedule, a person or the API are at depth 0 and carry none.
    pub fn set_call_depth(job: &mut NewJob, depth: u32) {
        if depth > 0 {
            job.payload[CALL_DEPTH_KEY] = json!(depth);
        }
    }

    /// Sets the job's keys from the task's templates, rendered against the job's payload (its
    /// `payload.params` and `event`). Callers that change those after [`TaskRow::job_for`] call
    /// this again.
    pub fn render_keys(&self, job: &mut NewJob) {
        let params = &job.payload["payload"]["params"];
        let event = &job.payload["event"];
        let render = |template: &Option<String>| {
            template
                .as_deref()
                .map(|t| bounded_key(render_key(t, params, event).unwrap_or_else(|_| t.to_owned())))
        };
        job.concurrency_key = render(&self.concurrency_key);
        job.dedupe_key = render(&self.dedupe_key);
    }
}

/// Where a task job's payload keeps its call depth (see [`TaskRow::set_call_depth`]).
pub const CALL_DEPTH_KEY: &str = "call_depth";

/// The call depth of a task job, from its payload.
pub fn call_depth(payload: &Value) -> u32 {
    payload[CALL_DEPTH_KEY]
        .as_u64()
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or(0)
}

/// Longest key as written in a task, and as stored after rendering.
const MAX_KEY_CHARS: usize = 200;
/// Longest dedupe window: a week.
const MAX_DEDUPE_WINDOW_SECONDS: i32 = 604_800;

/// Renders `${params.a.b}` (the occurrence's params) and `${event.a.b}` (the event that triggered
/// it) in a key. A value that is missing renders as empty text: such jobs share the key's literal
/// part, and its limits, rather than escaping them. Errors are syntax errors only, so stored keys
/// (validated when saved) always render.
fn render_key(template: &str, params: &Value, event: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed template in {template:?}"))?;
        let source = after[..end].trim();
        let unknown = || format!("${{{source}}}: use ${{params.name}} or ${{event.name}}");
        let (root, path) = source.split_once('.').ok_or_else(unknown)?;
        let mut value = match root {
            "params" => params,
            "event" => event,
            _ => return Err(unknown()),
        };
        for segment in path.split('.') {
            if segment.is_empty() {
                return Err(format!("${{{source}}}: empty path segment"));
            }
            value = match value {
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => value.get(segment),
            }
            .unwrap_or(&Value::Null);
        }
        match value {
            Value::Null => {}
            Value::String(text) => out.push_str(text),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A rendered key longer than [`MAX_KEY_CHARS`] (a long parameter) is replaced by its digest, so
/// stored keys stay small and distinct values stay distinct.
fn bounded_key(key: String) -> String {
    use sha2::{Digest, Sha256};
    if key.chars().count() <= MAX_KEY_CHARS {
        key
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// A task as the API shows it, with its next fire times.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Task {
    #[serde(flatten)]
    pub task: TaskRow,
    #[schema(schema_with = crate::pipeline::definition::payload_schema)]
    pub payload: Value,
    /// The next (up to) five occurrences, while the task is active.
    pub next_fire_times: Vec<DateTime<Utc>>,
    pub rate_limit: Option<RateLimit>,
}

/// At most `count` job starts per `per_seconds` (a sliding window) for a concurrency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// 1-100000.
    pub count: i32,
    /// 1-86400.
    pub per_seconds: i32,
}

impl Task {
    fn from_row(row: TaskRow, now: DateTime<Utc>) -> Self {
        let next_fire_times = match (row.status.as_str(), row.schedule(), row.next_run_at) {
            ("active", Ok(schedule), Some(next)) => {
                let mut times = vec![next];
                times.extend(schedule.upcoming(next.max(now), 4));
                times.dedup();
                times.truncate(5);
                times
            }
            _ => Vec::new(),
        };
        Self {
            payload: row.payload(),
            rate_limit: row
                .rate_count
                .zip(row.rate_per_seconds)
                .map(|(count, per_seconds)| RateLimit { count, per_seconds }),
            task: row,
            next_fire_times,
        }
    }
}

pub const COLUMNS: &str = "id, tenant_id, title, description, schedule_kind, schedule_expr, timezone, payload, priority, \
                           max_retries, timeout_seconds, misfire_grace_seconds, concurrency, concurrency_key, \
                           concurrency_limit, rate_count, rate_per_seconds, dedupe_key, dedupe_window_seconds, status, \
                           next_run_at, created_by, created_at, updated_at";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// `cron`, `rrule`, `once`, `event` or `manual`.
    pub schedule_kind: String,
    /// Cron (5 or 6 fields), RRULE (optionally with DTSTART), RFC 3339 instant, or event topic.
    #[serde(default)]
    pub schedule_expr: String,
    /// IANA time zone; default `UTC`.
    pub timezone: Option<String>,
    /// The pipeline to run (see docs/pipelines.md); default `{}`, a job without steps.
    #[schema(schema_with = crate::pipeline::definition::payload_schema, required = false)]
    pub payload: Option<Value>,
    pub priority: Option<i32>,
    pub max_retries: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub misfire_grace_seconds: Option<i32>,
    pub concurrency: Option<i32>,
    /// Limits shared by every job with this key (1-200 characters; `${params.…}` and
    /// `${event.…}` are rendered per occurrence). Needs `concurrency_limit` or `rate_limit`.
    pub concurrency_key: Option<String>,
    /// At most this many jobs of the key run at once (1-10000).
    pub concurrency_limit: Option<i32>,
    pub rate_limit: Option<RateLimit>,
    /// An occurrence with the same rendered key as one enqueued within the window is that job.
    pub dedupe_key: Option<String>,
    /// 1-604800; default 3600 when `dedupe_key` is given.
    pub dedupe_window_seconds: Option<i32>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    pub title: Option<String>,
    pub description: Option<String>,
    pub schedule_kind: Option<String>,
    pub schedule_expr: Option<String>,
    pub timezone: Option<String>,
    /// A new pipeline; without it the task keeps its own.
    #[schema(schema_with = crate::pipeline::definition::payload_schema, required = false)]
    pub payload: Option<Value>,
    pub priority: Option<i32>,
    pub max_retries: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub misfire_grace_seconds: Option<i32>,
    pub concurrency: Option<i32>,
    /// As when creating; `null` removes the key (and its limits).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub concurrency_key: Option<Option<String>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    pub concurrency_limit: Option<Option<i32>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimit>)]
    pub rate_limit: Option<Option<RateLimit>>,
    /// `null` removes the key.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub dedupe_key: Option<Option<String>>,
    pub dedupe_window_seconds: Option<i32>,
}

/// For fields that can be removed: absent is `None`, `null` is `Some(None)`.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Snooze {
    /// Postpone the next occurrence by this many seconds (the ones after it keep their schedule)…
    pub seconds: Option<u32>,
    /// …or move the next occurrence to this later instant…
    pub until: Option<DateTime<Utc>>,
    /// …or skip every occurrence before this instant (the next is the first one at or after it).
    pub skip_until: Option<DateTime<Utc>>,
}

/// What a snooze does to the next occurrence.
#[derive(Debug, Clone, Copy)]
enum Postponement {
    By(chrono::Duration),
    To(DateTime<Utc>),
    SkipUntil(DateTime<Utc>),
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct TaskFilter {
    /// `active`, `paused` or `completed`.
    pub status: Option<String>,
    /// Schedule kind.
    pub kind: Option<String>,
    /// Text contained in the title or description.
    pub q: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewSchedule {
    /// `cron`, `rrule`, `once`, `event` or `manual`.
    pub schedule_kind: String,
    #[serde(default)]
    pub schedule_expr: String,
    /// IANA time zone; default `UTC`.
    pub timezone: Option<String>,
    /// How many fire times to list (1-50, default 5).
    #[schema(minimum = 1, maximum = 50)]
    pub count: Option<u32>,
    /// List the fire times after this instant instead of from now (to look at a window, say
    /// around a DST change, without a DTSTART in the expression).
    pub after: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulePreview {
    /// The expression as a task would store it (an RRULE gains its `DTSTART`).
    pub schedule_expr: String,
    pub timezone: String,
    /// The next fire times from now (or from `after`); empty for `event` and `manual` tasks.
    pub next_fire_times: Vec<DateTime<Utc>>,
}

fn in_range(field: &str, value: i32, min: i32, max: i32) -> Result<i32, ApiError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(
            field,
            format!("must be between {min} and {max}"),
        ))
    }
}

fn validate_text(field: &str, value: &str, max: usize, required: bool) -> Result<String, ApiError> {
    let value = value.trim();
    if (required && value.is_empty()) || value.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be {}-{max} characters", usize::from(required)),
        ));
    }
    Ok(value.to_owned())
}

fn validate_payload(state: &AppState, payload: &Value) -> Result<(), ApiError> {
    crate::pipeline::Definition::from_payload(
        payload,
        &state.tools,
        &state.config.pipeline_env_allowlist,
    )
    .map_err(|e| ApiError::invalid_field(&e.field, e.message))?;
    if payload.to_string().len() > 256 * 1024 {
        return Err(ApiError::invalid_field(
            "payload",
            "must be at most 256 KiB of JSON",
        ));
    }
    Ok(())
}

/// A key as written: trimmed, 1-200 characters, templates well formed.
fn validate_key(field: &str, value: &str) -> Result<String, ApiError> {
    let key = validate_text(field, value, MAX_KEY_CHARS, true)?;
    render_key(&key, &Value::Null, &Value::Null).map_err(|e| ApiError::invalid_field(field, e))?;
    Ok(key)
}

/// The key settings of a task taken together: limits need a key, a key needs a limit, and a
/// dedupe key gets the default window.
fn validate_keys(task: &mut TaskRow) -> Result<(), ApiError> {
    if let Some(limit) = task.concurrency_limit {
        in_range("concurrency_limit", limit, 1, 10_000)?;
    }
    if let Some(count) = task.rate_count {
        in_range("rate_limit.count", count, 1, 100_000)?;
    }
    if let Some(per) = task.rate_per_seconds {
        in_range("rate_limit.per_seconds", per, 1, 86_400)?;
    }
    let limited = task.concurrency_limit.is_some() || task.rate_count.is_some();
    match (&task.concurrency_key, limited) {
        (Some(_), false) => {
            return Err(ApiError::invalid_field(
                "concurrency_key",
                "needs concurrency_limit or rate_limit",
            ));
        }
        (None, true) => {
            let field = if task.concurrency_limit.is_some() {
                "concurrency_limit"
            } else {
                "rate_limit"
            };
            return Err(ApiError::invalid_field(field, "needs a concurrency_key"));
        }
        _ => {}
    }
    match (&task.dedupe_key, task.dedupe_window_seconds) {
        (Some(_), None) => {
            task.dedupe_window_seconds = i32::try_from(queue::DEFAULT_DEDUPE_WINDOW.as_secs()).ok();
        }
        (Some(_), Some(window)) => {
            in_range(
                "dedupe_window_seconds",
                window,
                1,
                MAX_DEDUPE_WINDOW_SECONDS,
            )?;
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid_field(
                "dedupe_window_seconds",
                "needs a dedupe_key",
            ));
        }
        (None, None) => {}
    }
    Ok(())
}

fn schedule_error(e: ScheduleError) -> ApiError {
    ApiError::invalid_field(e.field, e.message)
}

/// Normalises and parses a schedule from a request, off the async runtime: checking a rule walks
/// it, within bounded but not negligible work.
async fn plan(
    kind: String,
    expr: String,
    timezone: Option<String>,
    default_timezone: String,
    now: DateTime<Utc>,
) -> Result<(Normalised, Schedule), ApiError> {
    off_the_runtime(move || {
        let zone = Zone::from_request(timezone.as_deref(), &default_timezone);
        let normalised = Schedule::normalise(&kind, &expr, zone, now)?;
        let schedule = Schedule::parse(&kind, &normalised.expr, &normalised.timezone)?;
        Ok::<_, ScheduleError>((normalised, schedule))
    })
    .await?
    .map_err(schedule_error)
}

/// A task as the API shows it, its fire times computed off the async runtime.
async fn shown(task: TaskRow, now: DateTime<Utc>) -> Result<ResponseJson<Task>, ApiError> {
    off_the_runtime(move || ResponseJson(Task::from_row(task, now))).await
}

/// Runs schedule computation on the blocking pool, so a long walk never holds up other requests.
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)
}

/// The first occurrence to enqueue for a schedule that starts (or restarts) at `now`.
fn first_run(kind: &str, schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match (kind, schedule) {
        ("once", Schedule::Once(at)) => Some(*at),
        _ => schedule.next_after(now),
    }
}

pub async fn find(
    store: &Store,
    tenant_id: &str,
    id: &str,
) -> Result<Option<TaskRow>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND id = $2 AND status <> 'deleted'"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await
    })
}

async fn find_or_404(store: &Store, principal: &Principal, id: &str) -> Result<TaskRow, ApiError> {
    find(store, &principal.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("No such task."))
}

async fn save(tx: &mut Tx, task: &TaskRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE tasks SET title = $1, description = $2, schedule_kind = $3, schedule_expr = $4, timezone = $5, \
             payload = $6, priority = $7, max_retries = $8, timeout_seconds = $9, misfire_grace_seconds = $10, \
             concurrency = $11, status = $12, next_run_at = $13, updated_at = $14, concurrency_key = $17, \
             concurrency_limit = $18, rate_count = $19, rate_per_seconds = $20, dedupe_key = $21, dedupe_window_seconds = $22 \
             WHERE tenant_id = $15 AND id = $16",
        )
        .bind(&task.title)
        .bind(&task.description)
        .bind(&task.schedule_kind)
        .bind(&task.schedule_expr)
        .bind(&task.timezone)
        .bind(&task.payload)
        .bind(task.priority)
        .bind(task.max_retries)
        .bind(task.timeout_seconds)
        .bind(task.misfire_grace_seconds)
        .bind(task.concurrency)
        .bind(&task.status)
        .bind(task.next_run_at)
        .bind(task.updated_at)
        .bind(&task.tenant_id)
        .bind(&task.id)
        .bind(&task.concurrency_key)
        .bind(task.concurrency_limit)
        .bind(task.rate_count)
        .bind(task.rate_per_seconds)
        .bind(&task.dedupe_key)
        .bind(task.dedupe_window_seconds)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

fn summary(task: &TaskRow) -> Value {
    json!({
        "title": task.title, "status": task.status, "schedule_kind": task.schedule_kind,
        "schedule_expr": task.schedule_expr, "timezone": task.timezone, "next_run_at": task.next_run_at,
        "concurrency_key": task.concurrency_key, "dedupe_key": task.dedupe_key,
    })
}

/// Commits a task change, wakes the schedulers so they re-plan, and announces the change.
async fn commit_and_wake(
    state: &AppState,
    tx: Tx,
    topic: &str,
    task: &TaskRow,
) -> Result<(), ApiError> {
    tx.commit().await?;
    super::wake(state).await;
    state.events.publish(crate::events::Envelope::internal(
        &task.tenant_id,
        topic,
        summary(task),
    ));
    Ok(())
}

/// Inserts a task row inside `tx` (the API validates first).
pub async fn insert(tx: &mut Tx, task: &TaskRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO tasks (id, tenant_id, title, description, schedule_kind, schedule_expr, timezone, payload, \
             priority, max_retries, timeout_seconds, misfire_grace_seconds, concurrency, status, next_run_at, \
             created_by, created_at, updated_at, concurrency_key, concurrency_limit, rate_count, rate_per_seconds, \
             dedupe_key, dedupe_window_seconds) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
        )
        .bind(&task.id)
        .bind(&task.tenant_id)
        .bind(&task.title)
        .bind(&task.description)
        .bind(&task.schedule_kind)
        .bind(&task.schedule_expr)
        .bind(&task.timezone)
        .bind(&task.payload)
        .bind(task.priority)
        .bind(task.max_retries)
        .bind(task.timeout_seconds)
        .bind(task.misfire_grace_seconds)
        .bind(task.concurrency)
        .bind(&task.status)
        .bind(task.next_run_at)
        .bind(&task.created_by)
        .bind(task.created_at)
        .bind(task.updated_at)
        .bind(&task.concurrency_key)
        .bind(task.concurrency_limit)
        .bind(task.rate_count)
        .bind(task.rate_per_seconds)
        .bind(&task.dedupe_key)
        .bind(task.dedupe_window_seconds)
        .execute(conn)
        .await
        .map(|_| ())
    })
}

/// Create a task.
#[utoipa::path(post, path = "/tasks", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    request_body = CreateTask,
    responses((status = 201, body = Task), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn create_task(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Json(body): Json<CreateTask>,
) -> Result<(StatusCode, ResponseJson<Task>), ApiError> {
    let now = crate::clock::now();
    let title = validate_text("title", &body.title, 200, true)?;
    let description = validate_text("description", &body.description, 10_000, false)?;
    let (Normalised { expr, timezone }, schedule) = plan(
        body.schedule_kind.clone(),
        body.schedule_expr.clone(),
        body.timezone.clone(),
        "UTC".to_owned(),
        now,
    )
    .await?;
    let payload = body.payload.unwrap_or_else(|| json!({}));
    validate_payload(&state, &payload)?;
    let mut task = TaskRow {
        id: Uuid::now_v7().to_string(),
        tenant_id: principal.tenant_id.clone(),
        title,
        description,
        next_run_at: first_run(&body.schedule_kind, &schedule, now),
        schedule_kind: body.schedule_kind,
        schedule_expr: expr,
        timezone,
        payload: payload.to_string(),
        priority: in_range("priority", body.priority.unwrap_or(0), -1000, 1000)?,
        max_retries: in_range("max_retries", body.max_retries.unwrap_or(3), 0, 100)?,
        timeout_seconds: in_range(
            "timeout_seconds",
            body.timeout_seconds.unwrap_or(300),
            1,
            86_400,
        )?,
        misfire_grace_seconds: in_range(
            "misfire_grace_seconds",
            body.misfire_grace_seconds.unwrap_or(
                i32::try_from(state.config.scheduler_misfire_grace.as_secs()).unwrap_or(30),
            ),
            0,
            86_400,
        )?,
        concurrency: in_range("concurrency", body.concurrency.unwrap_or(1), 1, 1000)?,
        concurrency_key: body
            .concurrency_key
            .as_deref()
            .map(|k| validate_key("concurrency_key", k))
            .transpose()?,
        concurrency_limit: body.concurrency_limit,
        rate_count: body.rate_limit.map(|r| r.count),
        rate_per_seconds: body.rate_limit.map(|r| r.per_seconds),
        dedupe_key: body
            .dedupe_key
            .as_deref()
            .map(|k| validate_key("dedupe_key", k))
            .transpose()?,
        dedupe_window_seconds: body.dedupe_window_seconds,
        status: "active".to_owned(),
        created_by: match &principal.actor {
            audit::Actor::User(id) | audit::Actor::ApiKey(id) => id.clone(),
            _ => String::new(),
        },
        created_at: now,
        updated_at: now,
    };
    validate_keys(&mut task)?;
    let mut tx = state.store.begin().await?;
    insert(&mut tx, &task).await?;
    principal
        .audit(
            &mut tx,
            "task.create",
            "task",
            &task.id,
            json!({ "after": summary(&task) }),
        )
        .await?;
    commit_and_wake(&state, tx, "task.created", &task).await?;
    Ok((StatusCode::CREATED, shown(task, now).await?))
}

/// The next fire times a schedule would have, validated exactly as when creating a task; nothing is stored.
#[utoipa::path(post, path = "/tasks/preview", tag = "tasks",
    description = "Requires: any role (`ReadTasks`), or an API key with `tasks:read`.",
    request_body = PreviewSchedule,
    responses((status = 200, body = SchedulePreview), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn preview_schedule(
    _: Authorized<ReadTasks>,
    Json(body): Json<PreviewSchedule>,
) -> Result<ResponseJson<SchedulePreview>, ApiError> {
    let now = crate::clock::now();
    let count = match body.count {
        None => 5,
        Some(n @ 1..=50) => n as usize,
        Some(_) => return Err(ApiError::invalid_field("count", "must be between 1 and 50")),
    };
    let kind = body.schedule_kind.clone();
    let (Normalised { expr, timezone }, schedule) = plan(
        body.schedule_kind,
        body.schedule_expr,
        body.timezone,
        "UTC".to_owned(),
        now,
    )
    .await?;
    let after = body.after;
    let next_fire_times = off_the_runtime(move || match after {
        Some(after) => schedule.upcoming(after, count),
        None => match first_run(&kind, &schedule, now) {
            Some(first) => {
                let mut times = vec![first];
                times.extend(schedule.upcoming(first, count - 1));
                times
            }
            None => Vec::new(),
        },
    })
    .await?;
    Ok(ResponseJson(SchedulePreview {
        schedule_expr: expr,
        timezone,
        next_fire_times,
    }))
}

/// List tasks.
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    description = "Requires: any role (`ReadTasks`), or an API key with `tasks:read`.",
    params(TaskFilter, PageParams),
    responses((status = 200, body = Page<Task>)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadTasks>,
    Query(filter): Query<TaskFilter>,
    Query(page): Query<PageParams>,
) -> Result<ResponseJson<Page<Task>>, ApiError> {
    let limit = page.limit()?;
    let pattern = filter
        .q
        .as_ref()
        .map(|q| format!("%{}%", q.to_lowercase().replace(['%', '_'], "")));
    let rows: Vec<TaskRow> = with_pool!(&state.store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND status <> 'deleted' \
             AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR schedule_kind = $3) \
             AND ($4 IS NULL OR LOWER(title) LIKE $4 OR LOWER(description) LIKE $4) \
             AND ($5 IS NULL OR id > $5) ORDER BY id LIMIT $6"
        )))
        .bind(&principal.tenant_id)
        .bind(&filter.status)
        .bind(&filter.kind)
        .bind(&pattern)
        .bind(&page.cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
    })?;
    let now = crate::clock::now();
    let tasks = off_the_runtime(move || {
        rows.into_iter()
            .map(|row| Task::from_row(row, now))
            .collect()
    })
    .await?;
    Ok(ResponseJson(Page::from_overfetch(
        tasks,
        limit,
        |t: &Task| t.task.id.clone(),
    )))
}

/// A task with its next five fire times.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    description = "Requires: any role (`ReadTasks`), or an API key with `tasks:read`.",
    params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_task(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadTasks>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Task>, ApiError> {
    let task = find_or_404(&state.store, &principal, &id).await?;
    shown(task, crate::clock::now()).await
}

/// Change a task; its schedule is validated and re-planned.
#[utoipa::path(patch, path = "/tasks/{id}", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    params(("id" = String, Path)), request_body = UpdateTask,
    responses((status = 200, body = Task), (status = 404, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn update_task(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Path(id): Path<String>,
    Json(body): Json<UpdateTask>,
) -> Result<ResponseJson<Task>, ApiError> {
    let now = crate::clock::now();
    let before = find_or_404(&state.store, &principal, &id).await?;
    let mut task = before.clone();
    if let Some(title) = &body.title {
        task.title = validate_text("title", title, 200, true)?;
    }
    if let Some(description) = &body.description {
        task.description = validate_text("description", description, 10_000, false)?;
    }
    let schedule_changed =
        body.schedule_kind.is_some() || body.schedule_expr.is_some() || body.timezone.is_some();
    if schedule_changed {
        let kind = body
            .schedule_kind
            .clone()
            .unwrap_or(task.schedule_kind.clone());
        let expr = match &body.schedule_expr {
            Some(expr) => expr.clone(),
            None if body.timezone.is_some() => {
                Schedule::restate_for_new_zone(&kind, &task.schedule_expr)
            }
            None => task.schedule_expr.clone(),
        };
        let (normalised, schedule) = plan(
            kind.clone(),
            expr,
            body.timezone.clone(),
            task.timezone.clone(),
            now,
        )
        .await?;
        task.schedule_expr = normalised.expr;
        task.schedule_kind = kind;
        task.timezone = normalised.timezone;
        task.next_run_at = first_run(&task.schedule_kind, &schedule, now);
        if task.status == "completed" {
            task.status = "active".to_owned();
        }
    }
    if let Some(payload) = &body.payload {
        validate_payload(&state, payload)?;
        task.payload = payload.to_string();
    }
    if let Some(v) = body.priority {
        task.priority = in_range("priority", v, -1000, 1000)?;
    }
    if let Some(v) = body.max_retries {
        task.max_retries = in_range("max_retries", v, 0, 100)?;
    }
    if let Some(v) = body.timeout_seconds {
        task.timeout_seconds = in_range("timeout_seconds", v, 1, 86_400)?;
    }
    if let Some(v) = body.misfire_grace_seconds {
        task.misfire_grace_seconds = in_range("misfire_grace_seconds", v, 0, 86_400)?;
    }
    if let Some(v) = body.concurrency {
        task.concurrency = in_range("concurrency", v, 1, 1000)?;
    }
    if let Some(key) = &body.concurrency_key {
        task.concurrency_key = key
            .as_deref()
            .map(|k| validate_key("concurrency_key", k))
            .transpose()?;
        if key.is_none() && body.concurrency_limit.is_none() && body.rate_limit.is_none() {
            // Removing the key removes what only it gave meaning to.
            task.concurrency_limit = None;
            task.rate_count = None;
            task.rate_per_seconds = None;
        }
    }
    if let Some(limit) = body.concurrency_limit {
        task.concurrency_limit = limit;
    }
    if let Some(rate) = body.rate_limit {
        task.rate_count = rate.map(|r| r.count);
        task.rate_per_seconds = rate.map(|r| r.per_seconds);
    }
    if let Some(key) = &body.dedupe_key {
        task.dedupe_key = key
            .as_deref()
            .map(|k| validate_key("dedupe_key", k))
            .transpose()?;
        if key.is_none() && body.dedupe_window_seconds.is_none() {
            task.dedupe_window_seconds = None;
        }
    }
    if let Some(window) = body.dedupe_window_seconds {
        task.dedupe_window_seconds = Some(window);
    }
    validate_keys(&mut task)?;
    task.updated_at = now;
    let mut tx = state.store.begin().await?;
    save(&mut tx, &task).await?;
    principal
        .audit(
            &mut tx,
            "task.update",
            "task",
            &id,
            json!({ "before": summary(&before), "after": summary(&task) }),
        )
        .await?;
    commit_and_wake(&state, tx, "task.updated", &task).await?;
    shown(task, now).await
}

/// Delete a task; its queued jobs are cancelled, its history stays.
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_task(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = crate::clock::now();
    let mut task = find_or_404(&state.store, &principal, &id).await?;
    let before = summary(&task);
    task.status = "deleted".to_owned();
    task.next_run_at = None;
    task.updated_at = now;
    let mut tx = state.store.begin().await?;
    save(&mut tx, &task).await?;
    let cancelled = queue::cancel_pending_for_task(&mut tx, &principal.tenant_id, &id, now).await?;
    principal
        .audit(
            &mut tx,
            "task.delete",
            "task",
            &id,
            json!({ "before": before, "cancelled_jobs": cancelled }),
        )
        .await?;
    commit_and_wake(&state, tx, "task.deleted", &task).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enqueue an occurrence now, whatever the schedule says.
#[utoipa::path(post, path = "/tasks/{id}/run_now", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    params(("id" = String, Path)),
    responses((status = 202, body = Job), (status = 404, body = crate::http::error::ErrorBody), (status = 429, body = crate::http::error::ErrorBody)))]
pub async fn run_now(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Path(id): Path<String>,
) -> Result<(StatusCode, ResponseJson<Job>), ApiError> {
    let now = crate::clock::now();
    let task = find_or_404(&state.store, &principal, &id).await?;
    let mut job = task.job_for(now);
    job.unique_key = Some(format!("task:{}:manual:{}", task.id, Uuid::now_v7()));
    let mut tx = state.store.begin().await?;
    let job = queue::enqueue(&mut tx, &state.queue.settings, job, now).await?;
    let quotas = queue::quota::Quotas::from_config(&state.config);
    if let Some(refused) = queue::quota::check(&mut tx, quotas, &task.tenant_id, 0, now).await? {
        return Err(refused.into());
    }
    principal
        .audit(
            &mut tx,
            "task.run_now",
            "task",
            &id,
            json!({ "job_id": job.id }),
        )
        .await?;
    tx.commit().await?;
    state.queue.enqueued(std::slice::from_ref(&job));
    Ok((StatusCode::ACCEPTED, ResponseJson(job)))
}

async fn set_status(
    state: &AppState,
    principal: &Principal,
    id: &str,
    (action, topic): (&str, &str),
    change: impl FnOnce(&mut TaskRow, DateTime<Utc>) -> Result<(), ApiError>,
) -> Result<ResponseJson<Task>, ApiError> {
    let now = crate::clock::now();
    let before = find_or_404(&state.store, principal, id).await?;
    let mut task = before.clone();
    change(&mut task, now)?;
    task.updated_at = now;
    let mut tx = state.store.begin().await?;
    save(&mut tx, &task).await?;
    principal
        .audit(
            &mut tx,
            action,
            "task",
            id,
            json!({ "before": summary(&before), "after": summary(&task) }),
        )
        .await?;
    commit_and_wake(state, tx, topic, &task).await?;
    shown(task, now).await
}

/// A 409 naming the current state unless the task is in `expected`.
fn require_status(task: &TaskRow, expected: &str) -> Result<(), ApiError> {
    if task.status == expected {
        Ok(())
    } else {
        Err(
            ApiError::conflict(format!("The task is {}, not {expected}.", task.status))
                .with_details(json!({ "status": task.status })),
        )
    }
}

/// Stop scheduling the task until resumed.
#[utoipa::path(post, path = "/tasks/{id}/pause", operation_id = "pause_task", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    params(("id" = String, Path)), responses((status = 200, body = Task), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Task>, ApiError> {
    set_status(
        &state,
        &principal,
        &id,
        ("task.pause", "task.paused"),
        |task, _| {
            require_status(task, "active")?;
            task.status = "paused".to_owned();
            Ok(())
        },
    )
    .await
}

/// Resume a paused task from its next occurrence after now (missed ones are not replayed).
#[utoipa::path(post, path = "/tasks/{id}/resume", operation_id = "resume_task", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    params(("id" = String, Path)), responses((status = 200, body = Task), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Path(id): Path<String>,
) -> Result<ResponseJson<Task>, ApiError> {
    set_status(
        &state,
        &principal,
        &id,
        ("task.resume", "task.resumed"),
        |task, now| {
            require_status(task, "paused")?;
            let schedule = task.schedule().map_err(schedule_error)?;
            task.next_run_at = match (&schedule, task.next_run_at) {
                // A one-shot keeps its instant if it is still ahead.
                (Schedule::Once(at), _) => Some(*at).filter(|at| *at > now),
                (_, _) => schedule.next_after(now),
            };
            task.status = if task.next_run_at.is_none() && task.schedule_kind == "once" {
                "completed"
            } else {
                "active"
            }
            .to_owned();
            Ok(())
        },
    )
    .await
}

/// Postpone the next occurrence: `{"seconds": n}` moves it n seconds later, `{"until": t}` moves
/// it to t; `{"skip_until": t}` skips every occurrence before t. Later occurrences keep their schedule.
#[utoipa::path(post, path = "/tasks/{id}/snooze", operation_id = "snooze_task", tag = "tasks",
    description = "Requires: supervisor or admin (`WriteTasks`), or an API key with `tasks:write`.",
    params(("id" = String, Path)), request_body = Snooze,
    responses((status = 200, body = Task), (status = 409, body = crate::http::error::ErrorBody), (status = 422, body = crate::http::error::ErrorBody)))]
pub async fn snooze(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<WriteTasks>,
    Path(id): Path<String>,
    Json(body): Json<Snooze>,
) -> Result<ResponseJson<Task>, ApiError> {
    let now = crate::clock::now();
    let postponement = match (body.seconds, body.until, body.skip_until) {
        (Some(seconds), None, None) if seconds > 0 => {
            Postponement::By(chrono::Duration::seconds(i64::from(seconds)))
        }
        (None, Some(until), None) | (None, None, Some(until)) if until >= horizon() => {
            let field = if body.until.is_some() {
                "until"
            } else {
                "skip_until"
            };
            return Err(ApiError::invalid_field(field, beyond_the_horizon()));
        }
        (None, Some(until), None) if until > now => Postponement::To(until),
        (None, None, Some(until)) if until > now => Postponement::SkipUntil(until),
        (Some(_), None, None) => {
            return Err(ApiError::invalid_field("seconds", "must be at least 1"));
        }
        (None, Some(_), None) => {
            return Err(ApiError::invalid_field("until", "must be in the future"));
        }
        (None, None, Some(_)) => {
            return Err(ApiError::invalid_field(
                "skip_until",
                "must be in the future",
            ));
        }
        _ => {
            return Err(ApiError::invalid_field(
                "seconds",
                "give exactly one of seconds, until or skip_until",
            ));
        }
    };
    set_status(
        &state,
        &principal,
        &id,
        ("task.snooze", "task.snoozed"),
        move |task, _| {
            require_status(task, "active")?;
            let schedule = task.schedule().map_err(schedule_error)?;
            if matches!(schedule, Schedule::Event(_) | Schedule::Manual) {
                return Err(ApiError::conflict(
                    "Only time-scheduled tasks can be snoozed.",
                ));
            }
            let next = task.next_run_at.ok_or_else(|| {
                ApiError::conflict("The task has no next occurrence to postpone.")
            })?;
            task.next_run_at = match (postponement, schedule) {
                (Postponement::By(delay), _) if next + delay >= horizon() => {
                    return Err(ApiError::invalid_field("seconds", beyond_the_horizon()));
                }
                (Postponement::By(delay), _) => Some(next + delay),
                (Postponement::To(until), _) => Some(next.max(until)),
                (Postponement::SkipUntil(until), Schedule::Once(at)) => Some(at.max(until)),
                (Postponement::SkipUntil(until), schedule) => {
                    schedule.next_after(until - chrono::Duration::seconds(1))
                }
            };
            Ok(())
        },
    )
    .await
}

fn beyond_the_horizon() -> String {
    format!(
        "must lead to a time before {}, the last one fire times are computed for",
        horizon().format("%Y-%m-%d")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_render_params_and_event_values() {
        let params = json!({ "customer": "c-42", "ids": [7, 8] });
        let event = json!({ "topic": "order.paid", "payload": { "order": 99, "region": null } });
        let render = |t: &str| render_key(t, &params, &event).unwrap();
        assert_eq!(render("customer:${params.customer}"), "customer:c-42");
        assert_eq!(render("${ event.payload.order }/${params.ids.1}"), "99/8");
        assert_eq!(render("plain"), "plain");
        // Missing values render empty: those jobs share the literal part's limits.
        assert_eq!(
            render("r:${event.payload.region}:${params.nope.deeper}"),
            "r::"
        );
        for bad in [
            "${params.x",
            "${env.HOME}",
            "${params}",
            "${params..x}",
            "${steps.a}",
        ] {
            assert!(render_key(bad, &params, &event).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_rendered_keys_become_their_digest() {
        assert_eq!(bounded_key("short".to_owned()), "short");
        let long = bounded_key("x".repeat(MAX_KEY_CHARS + 1));
        assert!(long.starts_with("sha256:") && long.len() == 71, "{long}");
        assert_ne!(long, bounded_key("y".repeat(MAX_KEY_CHARS + 1)));
    }
}
