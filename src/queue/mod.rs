//! The durable job queue: jobs live in the database and are claimed by workers under a lease.
//!
//! States: `queued` → `running` → `succeeded` | `failed` (will retry at `run_at`) | `dead` (attempts
//! exhausted) | `cancelled`, and `waiting` (suspended without a worker until `run_at` or a wake-up). Claiming is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED
//! LIMIT n) RETURNING …` on PostgreSQL, the same statement in SQLite's single-writer transaction.
//! Every completion is fenced by lease owner and attempt number, so a worker whose lease expired
//! cannot overwrite the outcome of the attempt that replaced it. Every attempt is recorded as a run.

pub mod bench;
pub mod http;
pub mod quota;
pub mod worker;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::Config;
use crate::events::EventBus;
use crate::store::{Store, Tx};
use crate::{with_pool, with_tx};

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::list_workers))
        .routes(routes!(http::list_queues))
}

/// PostgreSQL channel on which enqueues wake idle workers in every process.
pub const NOTIFY_CHANNEL: &str = "docket_jobs";

/// How long a dedupe key holds when a job gives none.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(3600);

/// First retry delay; each further attempt doubles it (before jitter and the cap).
const BACKOFF_BASE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    pub tenant_id: String,
    /// The task whose occurrence this job is, if any.
    pub task_id: Option<String>,
    pub kind: String,
    pub payload: Value,
    pub status: String,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub unique_key: Option<String>,
    /// Jobs sharing this key (per tenant) are limited together; see [`NewJob::concurrency_key`].
    pub concurrency_key: Option<String>,
    pub dedupe_key: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    tenant_id: String,
    task_id: Option<String>,
    kind: String,
    payload: String,
    status: String,
    priority: i32,
    run_at: DateTime<Utc>,
    attempts: i32,
    max_attempts: i32,
    timeout_seconds: i32,
    unique_key: Option<String>,
    concurrency_key: Option<String>,
    dedupe_key: Option<String>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    /// A queued job as it will be inserted, with the configured defaults filled in.
    fn new(new: NewJob, settings: &Settings, now: DateTime<Utc>) -> Self {
        // Only the key goes into the row; its limits and the dedupe window are applied by the caller.
        let max_attempts = new.max_attempts.unwrap_or(settings.max_retries + 1).max(1);
        let timeout = new.timeout.unwrap_or(settings.default_timeout);
        Self {
            id: Uuid::now_v7().to_string(),
            tenant_id: new.tenant_id,
            task_id: new.task_id,
            kind: new.kind,
            payload: new.payload.to_string(),
            status: "queued".to_owned(),
            priority: new.priority,
            // Stored with PostgreSQL's precision on both backends, so what is returned is what is kept.
            run_at: chrono::SubsecRound::trunc_subsecs(new.run_at.unwrap_or(now), 6),
            attempts: 0,
            max_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
            timeout_seconds: i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX),
            unique_key: new.unique_key,
            concurrency_key: new.concurrency_key,
            dedupe_key: new.dedupe_key,
            last_error: None,
            created_at: now,
            finished_at: None,
        }
    }
}

impl From<JobRow> for Job {
    fn from(row: JobRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            task_id: row.task_id,
            kind: row.kind,
            payload: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
            status: row.status,
            priority: row.priority,
            run_at: row.run_at,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            timeout_seconds: row.timeout_seconds,
            unique_key: row.unique_key,
            concurrency_key: row.concurrency_key,
            dedupe_key: row.dedupe_key,
            last_error: row.last_error,
            created_at: row.created_at,
            finished_at: row.finished_at,
        }
    }
}

const JOB_COLUMNS: &str = "id, tenant_id, task_id, kind, payload, status, priority, run_at, attempts, max_attempts, \
                           timeout_seconds, unique_key, concurrency_key, dedupe_key, last_error, created_at, finished_at";

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    pub id: String,
    pub tenant_id: String,
    pub job_id: String,
    pub attempt: i32,
    /// `running`, `succeeded`, `failed`, `lost` (lease expired), `released` (handed back at shutdown).
    pub status: String,
    pub worker_id: String,
    pub queued_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub output: Option<String>,
    pub error: Option<String>,
}

/// A job to enqueue. Unset fields take the worker defaults from the configuration.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub tenant_id: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub payload: Value,
    pub priority: i32,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Duration>,
    /// Enqueueing again with the same key (per tenant) returns the first job instead.
    pub unique_key: Option<String>,
    /// Jobs sharing a concurrency key (per tenant) are limited together across all workers and
    /// processes: at most `concurrency_limit` of them running and at most `rate_limit` starts
    /// per interval. The limits given most recently with a key are the key's limits; a job that
    /// gives none joins the key under the limits it already has.
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<u32>,
    pub rate_limit: Option<RateLimit>,
    /// Enqueueing again with the same dedupe key (per tenant) within `dedupe_window` of the
    /// first enqueue returns that first job instead. Unlike `unique_key`, the key is free again
    /// once the window ends, whatever became of the job.
    pub dedupe_key: Option<String>,
    pub dedupe_window: Option<Duration>,
}

/// At most `count` starts per `per` (a sliding window) for the jobs of a concurrency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

/// A concurrency key's limits as stored in `job_keys`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct KeyLimits {
    tenant_id: String,
    key: String,
    concurrency_limit: Option<i32>,
    rate_count: Option<i32>,
    rate_per_seconds: Option<i32>,
}

impl KeyLimits {
    /// The limits a new job sets for its key, if it has a key and gives any.
    fn of(new: &NewJob) -> Option<Self> {
        let key = new.concurrency_key.clone()?;
        if new.concurrency_limit.is_none() && new.rate_limit.is_none() {
            return None;
        }
        let int = |n: u64| i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        Some(Self {
            tenant_id: new.tenant_id.clone(),
            key,
            concurrency_limit: new.concurrency_limit.map(|n| int(n.into())),
            rate_count: new.rate_limit.map(|r| int(r.count.into())),
            rate_per_seconds: new.rate_limit.map(|r| int(r.per.as_secs())),
        })
    }
}

/// Queue defaults and tuning, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lease: Duration,
    pub poll_interval: Duration,
    pub backoff_max_delay: Duration,
    pub max_retries: u32,
    pub concurrency: u32,
    pub default_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            lease: config.worker_lease,
            poll_interval: config.worker_poll_interval,
            backoff_max_delay: config.worker_backoff_max_delay,
            max_retries: config.worker_max_retries,
            concurrency: config.worker_concurrency,
            default_timeout: Duration::from_secs(300),
        }
    }
}

/// The queue as the rest of Docket uses it: the store plus the in-process wake-up signal.
#[derive(Clone)]
pub struct Queue {
    pub store: Store,
    pub settings: Settings,
    /// Where job state changes are announced.
    pub events: EventBus,
    ready: Arc<Notify>,
}

impl Queue {
    pub fn new(store: Store, settings: Settings, events: EventBus) -> Self {
        Self {
            store,
            settings,
            events,
            ready: Arc::new(Notify::new()),
        }
    }

    /// Enqueues in a transaction of its own and wakes local workers.
    pub async fn enqueue(&self, job: NewJob) -> Result<Job, sqlx::Error> {
        let mut tx = self.store.begin().await?;
        let job = enqueue(&mut tx, &self.settings, job, crate::clock::now()).await?;
        tx.commit().await?;
        self.enqueued(std::slice::from_ref(&job));
        Ok(job)
    }

    /// After the enqueueing transaction committed: wake local workers and announce the jobs.
    pub fn enqueued(&self, jobs: &[Job]) {
        if jobs.is_empty() {
            return;
        }
        self.wake();
        for job in jobs {
            self.events.publish(crate::events::Envelope::internal(
                &job.tenant_id,
                "job.queued",
                serde_json::json!({ "job_id": job.id, "kind": job.kind, "task_id": job.task_id, "run_at": job.run_at }),
            ));
        }
    }

    /// Wakes idle workers of this process (after a caller committed its own enqueue).
    pub fn wake(&self) {
        self.ready.notify_waiters();
    }

    pub fn ready(&self) -> Arc<Notify> {
        self.ready.clone()
    }
}

/// Enqueues inside the caller's transaction (so a job exists exactly when the change that causes it
/// commits). On PostgreSQL the commit also wakes workers in every process. With a unique key that
/// exists, or a dedupe key taken within its window, the first job is returned instead.
pub async fn enqueue(
    tx: &mut Tx,
    settings: &Settings,
    new: NewJob,
    now: DateTime<Utc>,
) -> Result<Job, sqlx::Error> {
    Ok(enqueue_or_existing(tx, settings, new, now).await?.0)
}

/// [`enqueue`], saying whether this call created the job (`false`: the earlier job with the same
/// unique or dedupe key is returned).
pub async fn enqueue_or_existing(
    tx: &mut Tx,
    settings: &Settings,
    new: NewJob,
    now: DateTime<Utc>,
) -> Result<(Job, bool), sqlx::Error> {
    let (job, inserted) = enqueue_one(tx, settings, new, now).await?;
    if inserted {
        notify_workers(tx).await?;
    }
    Ok((job, inserted))
}

/// On PostgreSQL, wakes the workers of every process once the caller's transaction commits.
async fn notify_workers(tx: &mut Tx) -> Result<(), sqlx::Error> {
    if let Tx::Postgres(tx) = tx {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Inserts one job unless its unique or dedupe key returns an earlier one; says which happened.
async fn enqueue_one(
    tx: &mut Tx,
    settings: &Settings,
    new: NewJob,
    now: DateTime<Utc>,
) -> Result<(Job, bool), sqlx::Error> {
    let limits = KeyLimits::of(&new);
    let dedupe_until = new.dedupe_window.unwrap_or(DEFAULT_DEDUPE_WINDOW);
    let row = JobRow::new(new, settings, now);
    if let Some(key) = &row.dedupe_key {
        let until = now + chrono::Duration::from_std(dedupe_until).unwrap_or(chrono::Duration::MAX);
        if let Some(first) = take_dedupe_key(tx, &row.tenant_id, key, &row.id, until, now).await? {
            return Ok((first, false));
        }
    }
    let inserted = with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, kind, payload, status, priority, run_at, attempts, max_attempts, \
             timeout_seconds, unique_key, created_at, updated_at, task_id, finished_at, last_error, concurrency_key, dedupe_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.kind)
        .bind(&row.payload)
        .bind(&row.status)
        .bind(row.priority)
        .bind(row.run_at)
        .bind(row.max_attempts)
        .bind(row.timeout_seconds)
        .bind(&row.unique_key)
        .bind(row.created_at)
        .bind(&row.task_id)
        .bind(row.finished_at)
        .bind(&row.last_error)
        .bind(&row.concurrency_key)
        .bind(&row.dedupe_key)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        let existing: JobRow = with_tx!(tx, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND unique_key = $2"
            )))
            .bind(&row.tenant_id)
            .bind(&row.unique_key)
            .fetch_one(conn)
            .await
        })?;
        if let Some(key) = &row.dedupe_key {
            // The dedupe key was just taken for the job that was not created: the job that exists
            // is the one later enqueues within the window get.
            point_dedupe_key(tx, &row.tenant_id, key, &existing.id).await?;
        }
        return Ok((existing.into(), false));
    }
    if let Some(limits) = limits {
        set_key_limits(tx, std::slice::from_ref(&limits), now).await?;
    }
    Ok((row.into(), true))
}

/// Takes `key` for `job_id` until `until`, unless a job took it and its window has not ended:
/// then that job is returned. Concurrent enqueues with one key serialise on its row, so exactly
/// one of them creates a job.
async fn take_dedupe_key(
    tx: &mut Tx,
    tenant_id: &str,
    key: &str,
    job_id: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Job>, sqlx::Error> {
    let taken: Option<String> = with_tx!(tx, conn => {
        sqlx::query_scalar(
            "INSERT INTO job_dedupe (tenant_id, key, job_id, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET job_id = excluded.job_id, expires_at = excluded.expires_at \
             WHERE job_dedupe.expires_at <= $5 RETURNING job_id",
        )
        .bind(tenant_id)
        .bind(key)
        .bind(job_id)
        .bind(until)
        .bind(now)
        .fetch_optional(conn)
        .await
    })?;
    if taken.is_some() {
        return Ok(None);
    }
    let first: Option<JobRow> = with_tx!(tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 \
             AND id = (SELECT job_id FROM job_dedupe WHERE tenant_id = $1 AND key = $2)"
        )))
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(conn)
        .await
    })?;
    match first {
        Some(row) => Ok(Some(row.into())),
        // Only if the first job's row is gone: the key is this job's from now on.
        None => {
            with_tx!(tx, conn => {
                sqlx::query("UPDATE job_dedupe SET job_id = $3, expires_at = $4 WHERE tenant_id = $1 AND key = $2")
                    .bind(tenant_id)
                    .bind(key)
                    .bind(job_id)
                    .bind(until)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })?;
            Ok(None)
        }
    }
}

/// Removes dedupe keys whose window ended before `now` (they answer no enqueue any more); returns
/// how many. Safe alongside enqueues: one taking such a key replaces the row or inserts it again.
pub async fn purge_expired_dedupe_keys(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    crate::with_writer!(store, conn => {
        sqlx::query("DELETE FROM job_dedupe WHERE expires_at <= $1")
            .bind(now)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })
}

async fn point_dedupe_key(
    tx: &mut Tx,
    tenant_id: &str,
    key: &str,
    job_id: &str,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query("UPDATE job_dedupe SET job_id = $3 WHERE tenant_id = $1 AND key = $2")
            .bind(tenant_id)
            .bind(key)
            .bind(job_id)
            .execute(conn)
            .await
            .map(|_| ())
    })
}

/// Stores keys' limits (given in key order, one per key). Reads first, in one statement, and
/// writes only the changed ones: a write locks the key's row, which claimers of that key hold
/// while they claim, so writing on every enqueue would make enqueues wait for claims.
async fn set_key_limits(
    tx: &mut Tx,
    limits: &[KeyLimits],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if limits.is_empty() {
        return Ok(());
    }
    let current: Vec<KeyLimits> = with_tx!(tx, conn => {
        let mut select = sqlx::QueryBuilder::new(
            "SELECT tenant_id, key, concurrency_limit, rate_count, rate_per_seconds FROM job_keys WHERE (tenant_id, key) IN (VALUES ",
        );
        for (i, KeyLimits { tenant_id, key, .. }) in limits.iter().enumerate() {
            select.push(if i == 0 { "(" } else { ", (" });
            select.push_bind(tenant_id).push(", ").push_bind(key).push(")");
        }
        select.push(")");
        select.build_query_as().fetch_all(conn).await
    })?;
    for wanted in limits.iter().filter(|l| !current.contains(l)) {
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO job_keys (tenant_id, key, concurrency_limit, rate_count, rate_per_seconds, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, key) DO UPDATE SET \
                 concurrency_limit = excluded.concurrency_limit, rate_count = excluded.rate_count, \
                 rate_per_seconds = excluded.rate_per_seconds, updated_at = excluded.updated_at",
            )
            .bind(&wanted.tenant_id)
            .bind(&wanted.key)
            .bind(wanted.concurrency_limit)
            .bind(wanted.rate_count)
            .bind(wanted.rate_per_seconds)
            .bind(now)
            .execute(conn)
            .await
            .map(|_| ())
        })?;
    }
    Ok(())
}

/// Enqueues many jobs with one multi-row insert per call (bulk loads, benchmarks). Jobs whose
/// unique key already exists are skipped, as are those whose dedupe key is taken (jobs with a
/// dedupe key are enqueued one by one); returns how many were inserted.
pub async fn enqueue_many(
    tx: &mut Tx,
    settings: &Settings,
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let (deduped, jobs): (Vec<NewJob>, Vec<NewJob>) =
        jobs.into_iter().partition(|job| job.dedupe_key.is_some());
    let mut inserted = 0;
    // In key order, so that concurrent bulk enqueues take dedupe keys in the same order.
    let mut deduped = deduped;
    deduped.sort_by(|a, b| (&a.tenant_id, &a.dedupe_key).cmp(&(&b.tenant_id, &b.dedupe_key)));
    for new in deduped {
        inserted += u64::from(enqueue_one(tx, settings, new, now).await?.1);
    }
    // The last limits given for a key win, written in key order like claimers lock them.
    let limits: std::collections::BTreeMap<(String, String), KeyLimits> = jobs
        .iter()
        .filter_map(KeyLimits::of)
        .map(|l| ((l.tenant_id.clone(), l.key.clone()), l))
        .collect();
    let rows: Vec<JobRow> = jobs
        .into_iter()
        .map(|new| JobRow::new(new, settings, now))
        .collect();
    if !rows.is_empty() {
        inserted += with_tx!(tx, conn => {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO jobs (id, tenant_id, task_id, kind, payload, status, priority, run_at, attempts, max_attempts, \
                 timeout_seconds, unique_key, created_at, updated_at, concurrency_key, dedupe_key) ",
            );
            insert.push_values(&rows, |mut row, job| {
                row.push_bind(&job.id)
                    .push_bind(&job.tenant_id)
                    .push_bind(&job.task_id)
                    .push_bind(&job.kind)
                    .push_bind(&job.payload)
                    .push_bind("queued")
                    .push_bind(job.priority)
                    .push_bind(job.run_at)
                    .push_bind(0_i32)
                    .push_bind(job.max_attempts)
                    .push_bind(job.timeout_seconds)
                    .push_bind(&job.unique_key)
                    .push_bind(job.created_at)
                    .push_bind(job.created_at)
                    .push_bind(&job.concurrency_key)
                    .push_bind(&job.dedupe_key);
            });
            insert.push(" ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING");
            insert.build().execute(conn).await.map(|done| done.rows_affected())
        })?;
    }
    let limits: Vec<KeyLimits> = limits.into_values().collect();
    set_key_limits(tx, &limits, now).await?;
    notify_workers(tx).await?;
    Ok(inserted)
}

/// Records a task occurrence that was found too late to run (beyond its misfire grace) as a job in
/// state `missed` with one `missed` run, never executed. The unique key makes it happen once even
/// when schedulers race. Returns false when the occurrence was already recorded.
pub async fn record_missed(
    tx: &mut Tx,
    new: NewJob,
    occurred_at: DateTime<Utc>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let id = Uuid::now_v7().to_string();
    let inserted = with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, kind, payload, status, priority, run_at, attempts, max_attempts, \
             timeout_seconds, unique_key, created_at, updated_at, task_id, finished_at, last_error) \
             VALUES ($1, $2, $3, $4, 'missed', $5, $6, 0, 0, 1, $7, $8, $8, $9, $8, $10) \
             ON CONFLICT (tenant_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING",
        )
        .bind(&id)
        .bind(&new.tenant_id)
        .bind(&new.kind)
        .bind(new.payload.to_string())
        .bind(new.priority)
        .bind(occurred_at)
        .bind(&new.unique_key)
        .bind(now)
        .bind(&new.task_id)
        .bind(reason)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        return Ok(false);
    }
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO runs (id, tenant_id, job_id, attempt, status, worker_id, queued_at, started_at, finished_at, error) \
             VALUES ($1, $2, $3, 0, 'missed', 'scheduler', $4, $5, $5, $6)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&new.tenant_id)
        .bind(&id)
        .bind(occurred_at)
        .bind(now)
        .bind(reason)
        .execute(conn)
        .await
        .map(|_| ())
    })?;
    Ok(true)
}

/// Cancels a task's jobs that have not started (queued, or waiting to retry).
pub async fn cancel_pending_for_task(
    tx: &mut Tx,
    tenant_id: &str,
    task_id: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    cancel_pending_where(tx, "task_id", tenant_id, task_id, now).await
}

/// Cancels job `job_id` unless it is running or has ended (a running job is left to finish); says
/// whether it was cancelled.
pub async fn cancel_pending(
    tx: &mut Tx,
    tenant_id: &str,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(cancel_pending_where(tx, "id", tenant_id, job_id, now).await? > 0)
}

async fn cancel_pending_where(
    tx: &mut Tx,
    column: &'static str,
    tenant_id: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $1 \
         WHERE tenant_id = $2 AND {column} = $3 AND status IN ('queued', 'failed', 'waiting')"
    );
    with_tx!(tx, conn => {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(now)
            .bind(tenant_id)
            .bind(value)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })
}

/// A job claimed by a worker, with the run that records this attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub run_id: String,
}

/// Most candidate selections per claim (see [`claim`]).
const CLAIM_ROUNDS: usize = 4;

/// A due job that may be claimed if its task and its concurrency key have room.
#[derive(Debug, sqlx::FromRow)]
struct Candidate {
    id: String,
    tenant_id: String,
    task_id: Option<String>,
    concurrency_key: Option<String>,
}

/// The keys at their concurrency or rate limit (`$1` is now), computed once per candidate
/// selection from the running jobs and the recent starts (few: bounded by the workers' slots and
/// the rate counts), so that each queued job behind a full key costs one lookup instead of two
/// counts. Read without locks, so it can be stale: it keeps saturated keys from taking the places
/// of other keys' jobs in the batch, and [`key_room`] then counts exactly under the keys' locks.
const FULL_KEYS: &str = "full_keys AS MATERIALIZED (\
     SELECT r.tenant_id, r.concurrency_key AS key FROM jobs r \
     JOIN job_keys k ON k.tenant_id = r.tenant_id AND k.key = r.concurrency_key \
     WHERE r.status = 'running' AND r.concurrency_key IS NOT NULL AND k.concurrency_limit IS NOT NULL \
     GROUP BY r.tenant_id, r.concurrency_key, k.concurrency_limit HAVING COUNT(*) >= k.concurrency_limit \
     UNION SELECT s.tenant_id, s.key FROM job_key_starts s \
     JOIN job_keys k ON k.tenant_id = s.tenant_id AND k.key = s.key \
     WHERE s.expires_at > $1 AND k.rate_count IS NOT NULL \
     GROUP BY s.tenant_id, s.key, k.rate_count HAVING COUNT(*) >= k.rate_count)";

/// The tasks running as many jobs as their `concurrency` allows (a task whose row is gone allows
/// one), computed once per candidate selection like [`FULL_KEYS`]; [`task_room`] then counts
/// exactly under the tasks' locks.
const FULL_TASKS: &str = "full_tasks AS MATERIALIZED (\
     SELECT r.task_id FROM jobs r LEFT JOIN tasks t ON t.id = r.task_id \
     WHERE r.status = 'running' AND r.task_id IS NOT NULL \
     GROUP BY r.task_id, t.concurrency HAVING COUNT(*) >= COALESCE(t.concurrency, 1))";

/// Excludes a keyed job whose key is in [`FULL_KEYS`]; a job without a key stops at the first test.
const KEY_HAS_ROOM: &str = "(j.concurrency_key IS NULL OR NOT EXISTS (SELECT 1 FROM full_keys f \
     WHERE f.tenant_id = j.tenant_id AND f.key = j.concurrency_key))";

/// Claims up to `limit` due jobs for `worker_id` under a lease until `now + lease`. Jobs whose lease
/// expired count as due again (their worker died); those without attempts left become dead.
/// A job whose task or concurrency key is at its limit is not a candidate: jobs behind it are
/// claimed instead.
pub async fn claim(
    store: &Store,
    worker_id: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease_until =
        now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    let mut tx = store.begin().await?;
    recover_expired_leases(&mut tx, store, now).await?;
    // Due jobs, skipping tasks that already run as many jobs as their `concurrency` allows and
    // keys at their limits.
    let sql = format!(
        "WITH {FULL_KEYS}, {FULL_TASKS} \
         SELECT id, tenant_id, task_id, concurrency_key FROM jobs j WHERE status IN ('queued', 'failed', 'waiting') AND run_at <= $1 \
         AND (task_id IS NULL OR NOT EXISTS (SELECT 1 FROM full_tasks f WHERE f.task_id = j.task_id)) \
         AND {KEY_HAS_ROOM} \
         ORDER BY priority DESC, run_at, id LIMIT $2 {}",
        store.skip_locked()
    );
    let mut rows: Vec<JobRow> = Vec::new();
    // A batch can fill a task or key that had room when it was selected; the jobs beyond its room
    // are dropped, and another round (which sees this transaction's claims in the counts) takes
    // other jobs in their places.
    for round in 0..CLAIM_ROUNDS {
        // Later rounds never wait for a lock: that would take locks out of the first round's order.
        let skip_locked = round > 0 && matches!(store, Store::Postgres(_));
        let wanted = i64::from(limit) - rows.len() as i64;
        let candidates: Vec<Candidate> = with_tx!(&mut tx, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(now).bind(wanted).fetch_all(conn).await
        })?;
        let selected = candidates.len();
        let tasks = task_room(&mut tx, store, skip_locked, &candidates).await?;
        let keys = key_room(&mut tx, store, skip_locked, &candidates, now).await?;
        let (ids, starts) = admit(candidates, tasks, keys, now);
        if !ids.is_empty() {
            rows.extend(with_tx!(&mut tx, conn => {
                let mut update = sqlx::QueryBuilder::new("UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ");
                update.push_bind(worker_id).push(", lease_expires_at = ").push_bind(lease_until);
                update.push(", updated_at = ").push_bind(now).push(" WHERE id IN (");
                let mut list = update.separated(", ");
                for id in &ids {
                    list.push_bind(id);
                }
                update.push(format!(") RETURNING {JOB_COLUMNS}"));
                update.build_query_as::<JobRow>().fetch_all(conn).await
            })?);
            record_starts(&mut tx, &starts, now).await?;
        }
        if ids.len() == selected || rows.len() as i64 >= i64::from(limit) {
            break;
        }
    }
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let claimed: Vec<Claimed> = rows
        .into_iter()
        .map(|row| Claimed {
            job: Job::from(row),
            run_id: Uuid::now_v7().to_string(),
        })
        .collect();
    with_tx!(&mut tx, conn => {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO runs (id, tenant_id, job_id, attempt, status, worker_id, queued_at, started_at) ",
        );
        insert.push_values(&claimed, |mut row, c| {
            row.push_bind(&c.run_id)
                .push_bind(&c.job.tenant_id)
                .push_bind(&c.job.id)
                .push_bind(c.job.attempts)
                .push_bind("running")
                .push_bind(worker_id)
                .push_bind(c.job.run_at)
                .push_bind(now);
        });
        insert.build().execute(conn).await.map(|_| ())
    })?;
    tx.commit().await?;
    Ok(claimed)
}

/// Room left per task among the candidates, from its `concurrency`. The tasks' rows are locked
/// first, in one statement and in bytewise id order (claimers cannot deadlock); the running counts
/// come from a later statement, which on PostgreSQL (read committed) sees every claim committed
/// before the locks were granted, so they are exact even when several workers claim jobs of the
/// same task at once. A task whose row is gone allows one job; with `skip_locked`, a task whose
/// row another claimer holds (or that is gone) has no room this time.
async fn task_room(
    tx: &mut Tx,
    store: &Store,
    skip_locked: bool,
    candidates: &[Candidate],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut tasks: Vec<&String> = candidates
        .iter()
        .filter_map(|c| c.task_id.as_ref())
        .collect();
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    tasks.sort();
    tasks.dedup();
    let limits: HashMap<String, i32> = with_tx!(tx, conn => {
        let mut lock = sqlx::QueryBuilder::new("SELECT id, concurrency FROM tasks WHERE id IN (");
        let mut ids = lock.separated(", ");
        for task_id in &tasks {
            ids.push_bind(*task_id);
        }
        let bytes = store.byte_order();
        lock.push(format!(") ORDER BY id{bytes} "))
            .push(lock_clause(store, skip_locked));
        lock.build_query_as::<(String, i32)>().fetch_all(conn).await
    })?
    .into_iter()
    .collect();
    let running: HashMap<String, i64> = with_tx!(tx, conn => {
        let mut count = sqlx::QueryBuilder::new(
            "SELECT task_id, COUNT(*) FROM jobs WHERE status = 'running' AND task_id IN (",
        );
        let mut ids = count.separated(", ");
        for task_id in &tasks {
            ids.push_bind(*task_id);
        }
        count.push(") GROUP BY task_id");
        count.build_query_as::<(String, i64)>().fetch_all(conn).await
    })?
    .into_iter()
    .collect();
    let gone = if skip_locked { 0 } else { 1 };
    Ok(tasks
        .into_iter()
        .map(|task_id| {
            let limit = i64::from(limits.get(task_id).copied().unwrap_or(gone));
            let left = limit - running.get(task_id).copied().unwrap_or(0);
            (task_id.clone(), left.max(0))
        })
        .collect())
}

fn lock_clause(store: &Store, skip_locked: bool) -> &'static str {
    if skip_locked {
        store.skip_locked()
    } else {
        store.lock_rows()
    }
}

/// What a concurrency key allows this claim.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KeyRoom {
    /// Jobs that may start now: the smaller of the concurrency and the rate room.
    left: i64,
    /// For a rate-limited key, how long a start counts against it.
    rate_window: Option<chrono::Duration>,
}

/// Room left per concurrency key (tenant, key) among the candidates. The keys' `job_keys` rows are
/// locked in key order in one statement (claimers cannot deadlock); the counts come from a later
/// statement, which on PostgreSQL (read committed) sees every claim committed before the locks
/// were granted, so they are exact. A key without a row has no limits and is not listed; with
/// `skip_locked`, a key whose row another claimer holds is listed without room.
async fn key_room(
    tx: &mut Tx,
    store: &Store,
    skip_locked: bool,
    candidates: &[Candidate],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, String), KeyRoom>, sqlx::Error> {
    let mut keys: Vec<(String, String)> = candidates
        .iter()
        .filter_map(|c| Some((c.tenant_id.clone(), c.concurrency_key.clone()?)))
        .collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    keys.sort();
    keys.dedup();
    let limits: Vec<KeyLimits> = with_tx!(tx, conn => {
        let mut lock = sqlx::QueryBuilder::new(
            "SELECT tenant_id, key, concurrency_limit, rate_count, rate_per_seconds FROM job_keys WHERE (tenant_id, key) IN (VALUES ",
        );
        for (i, (tenant_id, key)) in keys.iter().enumerate() {
            lock.push(if i == 0 { "(" } else { ", (" });
            lock.push_bind(tenant_id).push(", ").push_bind(key).push(")");
        }
        // Bytewise, the order in which enqueues write keys' rows (sorted in Rust).
        let bytes = store.byte_order();
        lock.push(format!(") ORDER BY tenant_id{bytes}, key{bytes} "))
            .push(lock_clause(store, skip_locked));
        lock.build_query_as().fetch_all(conn).await
    })?;
    let mut room = HashMap::new();
    if skip_locked {
        // Not returned: locked elsewhere, or without limits. A key without limits then waits for
        // the next claim too, which is cheaper than asking which of the two it is.
        let closed = KeyRoom {
            left: 0,
            rate_window: None,
        };
        room.extend(keys.into_iter().map(|key| (key, closed)));
    }
    if limits.is_empty() {
        return Ok(room);
    }
    let counts: Vec<(String, String, String, i64)> = with_tx!(tx, conn => {
        let mut count = sqlx::QueryBuilder::new(
            "SELECT 'running', tenant_id, concurrency_key, COUNT(*) FROM jobs \
             WHERE status = 'running' AND concurrency_key IS NOT NULL AND (tenant_id, concurrency_key) IN (VALUES ",
        );
        for (i, KeyLimits { tenant_id, key, .. }) in limits.iter().enumerate() {
            count.push(if i == 0 { "(" } else { ", (" });
            count.push_bind(tenant_id).push(", ").push_bind(key).push(")");
        }
        count.push(") GROUP BY tenant_id, concurrency_key");
        let rated: Vec<_> = limits.iter().filter(|l| l.rate_count.is_some()).collect();
        if !rated.is_empty() {
            count.push(" UNION ALL SELECT 'started', tenant_id, key, COUNT(*) FROM job_key_starts WHERE expires_at > ");
            count.push_bind(now).push(" AND (tenant_id, key) IN (VALUES ");
            for (i, KeyLimits { tenant_id, key, .. }) in rated.into_iter().enumerate() {
                count.push(if i == 0 { "(" } else { ", (" });
                count.push_bind(tenant_id).push(", ").push_bind(key).push(")");
            }
            count.push(") GROUP BY tenant_id, key");
        }
        count.build_query_as().fetch_all(conn).await
    })?;
    let mut running = HashMap::new();
    let mut started = HashMap::new();
    for (what, tenant_id, key, n) in counts {
        let counted = if what == "running" {
            &mut running
        } else {
            &mut started
        };
        counted.insert((tenant_id, key), n);
    }
    for KeyLimits {
        tenant_id,
        key,
        concurrency_limit,
        rate_count,
        rate_per_seconds,
    } in limits
    {
        let id = (tenant_id, key);
        let left_of = |limit: Option<i32>, used: &HashMap<(String, String), i64>| {
            limit.map_or(i64::MAX, |l| {
                i64::from(l) - used.get(&id).copied().unwrap_or(0)
            })
        };
        let left = left_of(concurrency_limit, &running)
            .min(left_of(rate_count, &started))
            .max(0);
        let rate_window = rate_count
            .and(rate_per_seconds)
            .map(|s| chrono::Duration::seconds(i64::from(s)));
        room.insert(id, KeyRoom { left, rate_window });
    }
    Ok(room)
}

/// A start of a rate-limited key: (tenant, key, when it leaves the window).
type Start = (String, String, DateTime<Utc>);

/// The candidates that fit both their task's and their key's room, in claim order, and the starts
/// to record for rate-limited keys.
fn admit(
    candidates: Vec<Candidate>,
    mut tasks: HashMap<String, i64>,
    mut keys: HashMap<(String, String), KeyRoom>,
    now: DateTime<Utc>,
) -> (Vec<String>, Vec<Start>) {
    let mut ids = Vec::with_capacity(candidates.len());
    let mut starts = Vec::new();
    for candidate in candidates {
        let task = candidate
            .task_id
            .as_ref()
            .map(|task_id| tasks.entry(task_id.clone()).or_insert(0));
        let key = candidate
            .concurrency_key
            .map(|key| (candidate.tenant_id, key));
        let room = key.as_ref().and_then(|key| keys.get_mut(key));
        if task.as_deref().is_some_and(|left| *left <= 0)
            || room.as_deref().is_some_and(|room| room.left <= 0)
        {
            continue;
        }
        if let Some(left) = task {
            *left -= 1;
        }
        if let Some(room) = room {
            room.left -= 1;
            if let (Some(window), Some((tenant_id, key))) = (room.rate_window, key) {
                starts.push((tenant_id, key, now + window));
            }
        }
        ids.push(candidate.id);
    }
    (ids, starts)
}

/// Records the starts of rate-limited keys and drops those that left their window (the claim
/// holds these keys' locks).
async fn record_starts(
    tx: &mut Tx,
    starts: &[Start],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if starts.is_empty() {
        return Ok(());
    }
    with_tx!(tx, conn => {
        let mut prune = sqlx::QueryBuilder::new("DELETE FROM job_key_starts WHERE expires_at <= ");
        prune.push_bind(now).push(" AND (tenant_id, key) IN (VALUES ");
        for (i, (tenant_id, key, _)) in starts.iter().enumerate() {
            prune.push(if i == 0 { "(" } else { ", (" });
            prune.push_bind(tenant_id).push(", ").push_bind(key).push(")");
        }
        prune.push(")");
        prune.build().execute(&mut *conn).await?;
        let mut insert = sqlx::QueryBuilder::new("INSERT INTO job_key_starts (tenant_id, key, expires_at) ");
        insert.push_values(starts, |mut row, (tenant_id, key, expires_at)| {
            row.push_bind(tenant_id).push_bind(key).push_bind(*expires_at);
        });
        insert.build().execute(conn).await.map(|_| ())
    })
}

/// Jobs whose worker stopped renewing the lease: their run is marked lost, and the job goes back to
/// the queue (or is dead when that was its last attempt). Cheap when there are none (partial index).
async fn recover_expired_leases(
    tx: &mut Tx,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
         finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
         last_error = CASE WHEN attempts >= max_attempts THEN 'the worker stopped renewing its lease on the last attempt' \
         ELSE 'the worker stopped renewing its lease' END, \
         run_at = $1, updated_at = $1, lease_owner = NULL, lease_expires_at = NULL \
         WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < $1 LIMIT 100 {}) \
         RETURNING id",
        store.skip_locked()
    );
    let expired: Vec<String> = with_tx!(tx, conn => {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).bind(now).fetch_all(conn).await
    })?;
    for job_id in expired {
        with_tx!(tx, conn => {
            sqlx::query(
                "UPDATE runs SET status = 'lost', finished_at = $1, error = 'the worker stopped renewing its lease' \
                 WHERE job_id = $2 AND status = 'running'",
            )
            .bind(now)
            .bind(&job_id)
            .execute(conn)
            .await
            .map(|_| ())
        })?;
    }
    Ok(())
}

/// Extends the lease of a running job. False when the lease was lost (another worker has the job).
pub async fn heartbeat(
    store: &Store,
    claimed: &Claimed,
    worker_id: &str,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    let updated = crate::with_writer!(store, pool => {
        sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND attempts = $4 AND status = 'running'",
        )
        .bind(until)
        .bind(&claimed.job.id)
        .bind(worker_id)
        .bind(claimed.job.attempts)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(updated == 1)
}

/// How an attempt ended, for the job and its run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// Retried later if attempts remain.
    Failed(String),
    /// Not retried, whatever the attempts left (e.g. no handler for the kind).
    FailedPermanently(String),
    /// Handed back unfinished (shutdown): the attempt does not count.
    Released,
    /// Parked without holding a worker: due again at `until`, or when [`wake_waiting`] is called
    /// with `wait_key` (then `until` is only a safety net that re-checks). The attempt does not count.
    Suspended {
        until: DateTime<Utc>,
        wait_key: Option<String>,
        output: Value,
    },
}

/// The job's state after [`finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Succeeded,
    WillRetry,
    Dead,
    Requeued,
    Suspended,
    /// The lease had been lost: another attempt owns the job, this result was discarded.
    Stale,
}

/// Records the end of an attempt. Fenced by lease owner and attempt number.
pub async fn finish(
    store: &Store,
    claimed: &Claimed,
    worker_id: &str,
    outcome: Outcome,
    backoff_max_delay: Duration,
    now: DateTime<Utc>,
) -> Result<Settled, sqlx::Error> {
    let settled = finish_many(
        store,
        worker_id,
        vec![(claimed.clone(), outcome)],
        backoff_max_delay,
        now,
    )
    .await?;
    Ok(settled.into_iter().next().unwrap_or(Settled::Stale))
}

/// The row changes one outcome makes.
struct Completion {
    job_id: String,
    run_id: String,
    expected_attempts: i32,
    job_status: &'static str,
    run_status: &'static str,
    settled: Settled,
    run_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    attempts: i32,
    error: Option<String>,
    output: Option<String>,
    wait_key: Option<String>,
}

impl Completion {
    fn new(
        claimed: Claimed,
        outcome: Outcome,
        backoff_max_delay: Duration,
        now: DateTime<Utc>,
    ) -> Self {
        let job = claimed.job;
        let retry = matches!(outcome, Outcome::Failed(_)) && job.attempts < job.max_attempts;
        let (wait_key, until) = match &outcome {
            Outcome::Suspended {
                until, wait_key, ..
            } => (wait_key.clone(), Some(*until)),
            _ => (None, None),
        };
        let (job_status, run_status, settled, error, output) = match outcome {
            Outcome::Succeeded(value) => (
                "succeeded",
                "succeeded",
                Settled::Succeeded,
                None,
                Some(value.to_string()),
            ),
            Outcome::Failed(e) if retry => ("failed", "failed", Settled::WillRetry, Some(e), None),
            Outcome::Failed(e) | Outcome::FailedPermanently(e) => {
                ("dead", "failed", Settled::Dead, Some(e), None)
            }
            Outcome::Released => ("queued", "released", Settled::Requeued, None, None),
            Outcome::Suspended { output, .. } => (
                "waiting",
                "suspended",
                Settled::Suspended,
                None,
                Some(output.to_string()),
            ),
        };
        Self {
            // A retry waits out its backoff and a released job is due at once; a finished job keeps
            // the time it was due, which runs and metrics measure lateness against.
            run_at: match settled {
                Settled::WillRetry => now + backoff_delay(job.attempts, backoff_max_delay),
                Settled::Requeued => now,
                Settled::Suspended => until.unwrap_or(now),
                _ => job.run_at,
            },
            finished_at: matches!(settled, Settled::Succeeded | Settled::Dead).then_some(now),
            attempts: if matches!(settled, Settled::Requeued | Settled::Suspended) {
                job.attempts - 1
            } else {
                job.attempts
            },
            expected_attempts: job.attempts,
            job_id: job.id,
            run_id: claimed.run_id,
            job_status,
            run_status,
            settled,
            error,
            output,
            wait_key,
        }
    }
}

/// Records many outcomes in one transaction (one commit for the batch is what lets a worker go
/// beyond the database's commit rate). Each is fenced like [`finish`]; the result says per item.
pub async fn finish_many(
    store: &Store,
    worker_id: &str,
    items: Vec<(Claimed, Outcome)>,
    backoff_max_delay: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Settled>, sqlx::Error> {
    let completions: Vec<Completion> = items
        .into_iter()
        .map(|(claimed, outcome)| Completion::new(claimed, outcome, backoff_max_delay, now))
        .collect();
    let mut tx = store.begin().await?;
    let applied: Vec<bool> = match &mut tx {
        // One set-based statement per table for the whole batch.
        Tx::Postgres(tx) => {
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE jobs SET status = v.status, run_at = v.run_at, finished_at = v.finished_at, updated_at = $8, \
                 last_error = COALESCE(v.error, jobs.last_error), attempts = v.attempts, lease_owner = NULL, lease_expires_at = NULL, \
                 wait_key = v.wait_key \
                 FROM UNNEST($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::int[], $10::text[]) \
                 AS v(id, expected, status, run_at, finished_at, error, attempts, wait_key) \
                 WHERE jobs.id = v.id AND jobs.attempts = v.expected AND jobs.lease_owner = $9 AND jobs.status = 'running' \
                 RETURNING jobs.id",
            )
            .bind(completions.iter().map(|c| c.job_id.clone()).collect::<Vec<_>>())
            .bind(completions.iter().map(|c| c.expected_attempts).collect::<Vec<_>>())
            .bind(completions.iter().map(|c| c.job_status).collect::<Vec<_>>())
            .bind(completions.iter().map(|c| c.run_at).collect::<Vec<_>>())
            .bind(completions.iter().map(|c| c.finished_at).collect::<Vec<_>>())
            .bind(completions.iter().map(|c| c.error.clone()).collect::<Vec<_>>())
            .bind(completions.iter().map(|c| c.attempts).collect::<Vec<_>>())
            .bind(now)
            .bind(worker_id)
            .bind(completions.iter().map(|c| c.wait_key.clone()).collect::<Vec<_>>())
            .fetch_all(&mut **tx)
            .await?;
            let applied: Vec<bool> = completions
                .iter()
                .map(|c| ids.contains(&c.job_id))
                .collect();
            let runs: Vec<&Completion> = completions
                .iter()
                .zip(&applied)
                .filter(|(_, ok)| **ok)
                .map(|(c, _)| c)
                .collect();
            sqlx::query(
                "UPDATE runs SET status = v.status, finished_at = $5, output = v.output, error = v.error \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS v(id, status, output, error) \
                 WHERE runs.id = v.id",
            )
            .bind(runs.iter().map(|c| c.run_id.clone()).collect::<Vec<_>>())
            .bind(runs.iter().map(|c| c.run_status).collect::<Vec<_>>())
            .bind(runs.iter().map(|c| c.output.clone()).collect::<Vec<_>>())
            .bind(runs.iter().map(|c| c.error.clone()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut **tx)
            .await?;
            applied
        }
        // In-process statements are cheap; the single commit is what matters.
        Tx::Sqlite(tx, _) => {
            let mut applied = Vec::with_capacity(completions.len());
            for c in &completions {
                let updated = sqlx::query(
                    "UPDATE jobs SET status = $1, run_at = $2, finished_at = $3, updated_at = $4, last_error = COALESCE($5, last_error), \
                     attempts = $6, lease_owner = NULL, lease_expires_at = NULL, wait_key = $10 \
                     WHERE id = $7 AND lease_owner = $8 AND attempts = $9 AND status = 'running'",
                )
                .bind(c.job_status)
                .bind(c.run_at)
                .bind(c.finished_at)
                .bind(now)
                .bind(&c.error)
                .bind(c.attempts)
                .bind(&c.job_id)
                .bind(worker_id)
                .bind(c.expected_attempts)
                .bind(&c.wait_key)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if updated == 1 {
                    sqlx::query("UPDATE runs SET status = $1, finished_at = $2, output = $3, error = $4 WHERE id = $5")
                        .bind(c.run_status)
                        .bind(now)
                        .bind(&c.output)
                        .bind(&c.error)
                        .bind(&c.run_id)
                        .execute(&mut **tx)
                        .await?;
                }
                applied.push(updated == 1);
            }
            applied
        }
    };
    tx.commit().await?;
    Ok(completions
        .iter()
        .zip(applied)
        .map(|(c, ok)| if ok { c.settled } else { Settled::Stale })
        .collect())
}

/// Makes jobs suspended on `wait_key` due now (e.g. a pipeline waiting for a case's decision),
/// inside the caller's transaction. Announce the returned jobs after the commit.
pub async fn wake_waiting(
    tx: &mut Tx,
    tenant_id: &str,
    wait_key: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Job>, sqlx::Error> {
    let rows: Vec<JobRow> = with_tx!(tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'queued', run_at = $1, wait_key = NULL, updated_at = $1 \
             WHERE tenant_id = $2 AND wait_key = $3 AND status = 'waiting' RETURNING {JOB_COLUMNS}"
        )))
        .bind(now)
        .bind(tenant_id)
        .bind(wait_key)
        .fetch_all(conn)
        .await
    })?;
    Ok(rows.into_iter().map(Job::from).collect())
}

/// Exponential backoff with full jitter: uniformly random in `[0, min(cap, base · 2^(attempt-1))]`.
pub fn backoff_delay(attempt: i32, cap: Duration) -> chrono::Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let ceiling = BACKOFF_BASE.saturating_mul(1 << exponent).min(cap);
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    chrono::Duration::from_std(jittered).unwrap_or(chrono::Duration::zero())
}

pub async fn get(store: &Store, tenant_id: &str, job_id: &str) -> Result<Option<Job>, sqlx::Error> {
    let row: Option<JobRow> = with_pool!(store, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2")))
            .bind(tenant_id)
            .bind(job_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(Job::from))
}

/// The runs of a job, oldest first.
pub async fn runs_of(
    store: &Store,
    tenant_id: &str,
    job_id: &str,
) -> Result<Vec<Run>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT id, tenant_id, job_id, attempt, status, worker_id, queued_at, started_at, finished_at, output, error \
             FROM runs WHERE tenant_id = $1 AND job_id = $2 ORDER BY attempt, id",
        )
        .bind(tenant_id)
        .bind(job_id)
        .fetch_all(pool)
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, task: Option<&str>, key: Option<&str>) -> Candidate {
        Candidate {
            id: id.to_owned(),
            tenant_id: "t".to_owned(),
            task_id: task.map(str::to_owned),
            concurrency_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn candidates_are_admitted_within_task_and_key_room() {
        let now = Utc::now();
        let candidates = vec![
            candidate("1", None, Some("a")),
            candidate("2", None, Some("a")),
            candidate("3", Some("task"), Some("b")),
            candidate("4", Some("task"), Some("b")),
            candidate("5", None, Some("free")),
            candidate("6", None, None),
        ];
        let tasks = HashMap::from([("task".to_owned(), 5)]);
        let keys = HashMap::from([
            (
                ("t".to_owned(), "a".to_owned()),
                KeyRoom {
                    left: 1,
                    rate_window: None,
                },
            ),
            (
                ("t".to_owned(), "b".to_owned()),
                KeyRoom {
                    left: 1,
                    rate_window: Some(chrono::Duration::seconds(60)),
                },
            ),
        ]);
        let (ids, starts) = admit(candidates, tasks, keys, now);
        assert_eq!(
            ids,
            ["1", "3", "5", "6"],
            "one of each limited key; unlisted keys are unlimited"
        );
        assert_eq!(
            starts,
            [(
                "t".to_owned(),
                "b".to_owned(),
                now + chrono::Duration::seconds(60)
            )],
            "only rate-limited keys record starts"
        );
    }

    #[test]
    fn a_job_needs_room_in_both_its_task_and_its_key() {
        let now = Utc::now();
        let candidates = vec![
            candidate("1", Some("full"), Some("k")),
            candidate("2", Some("open"), Some("k")),
        ];
        let tasks = HashMap::from([("full".to_owned(), 0), ("open".to_owned(), 1)]);
        let keys = HashMap::from([(
            ("t".to_owned(), "k".to_owned()),
            KeyRoom {
                left: 1,
                rate_window: None,
            },
        )]);
        let (ids, _) = admit(candidates, tasks, keys, now);
        assert_eq!(
            ids,
            ["2"],
            "the key's room is not spent on a job its task refuses"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(60);
        for _ in 0..100 {
            assert!(backoff_delay(1, cap) <= chrono::Duration::seconds(1));
            assert!(backoff_delay(3, cap) <= chrono::Duration::seconds(4));
            assert!(backoff_delay(30, cap) <= chrono::Duration::seconds(60));
        }
        let samples: Vec<_> = (0..50).map(|_| backoff_delay(10, cap)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "jittered");
    }
}
