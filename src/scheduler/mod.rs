//! Scheduled work: tasks, their schedules, and the scheduler that turns due occurrences into jobs.
//!
//! Any number of schedulers may run. Each claims due tasks with `FOR UPDATE SKIP LOCKED` (SQLite:
//! one writer at a time) and enqueues every occurrence under the unique key task id + instant, so
//! an occurrence becomes a job exactly once. A scheduler sleeps until the next due instant and is
//! woken early by task changes (in-process, and through `LISTEN/NOTIFY` on PostgreSQL).

pub mod bench;
pub mod schedule_bench;
pub mod tasks;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::queue::worker::Registry;
use crate::queue::{self, Settings};
use crate::store::Store;
use crate::{with_pool, with_tx};
use tasks::{COLUMNS, TASK_JOB_KIND, TaskRow};

/// PostgreSQL channel on which task changes wake schedulers in every process.
pub const NOTIFY_CHANNEL: &str = "docket_tasks";
/// Due tasks handled per transaction.
const BATCH: i64 = 100;
/// Longest sleep without a check, in case a wake-up was lost.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Occurrences walked per task and tick before the rest of a long outage is skipped as missed.
const MAX_OCCURRENCES_PER_TICK: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tasks::create_task, tasks::list_tasks))
        .routes(routes!(
            tasks::get_task,
            tasks::update_task,
            tasks::delete_task
        ))
        .routes(routes!(tasks::preview_schedule))
        .routes(routes!(tasks::run_now))
        .routes(routes!(tasks::pause))
        .routes(routes!(tasks::resume))
        .routes(routes!(tasks::snooze))
}

/// Job handlers of this module: a task occurrence delivers the task's payload as its output.
pub fn register_handlers(registry: &mut Registry) {
    registry.register_outcome(TASK_JOB_KIND, crate::pipeline::run_task_job);
}

/// Wakes the schedulers of this process and, on PostgreSQL, of every other process.
pub async fn wake(state: &AppState) {
    state.scheduler_wake.notify_waiters();
    if let Store::Postgres(pool) = &state.store
        && let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(pool)
            .await
    {
        tracing::warn!(error = %e, "cannot notify other schedulers; they re-check within 30 s");
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tick {
    pub tasks: usize,
    pub enqueued: usize,
    /// Occurrences answered by an earlier job: the task's dedupe key was taken within its window.
    pub deduplicated: usize,
    pub missed: usize,
    /// Occurrences skipped because their tenant was over a queue quota.
    pub refused: usize,
    /// The jobs enqueued, to announce once the pass has committed.
    pub jobs: Vec<queue::Job>,
}

/// Enqueues the occurrences of due tasks as of `now`. Occurrences later than the task's misfire
/// grace are not run: all of them are coalesced into one `missed` record.
pub async fn tick(
    store: &Store,
    settings: &Settings,
    quotas: queue::quota::Quotas,
    now: DateTime<Utc>,
) -> Result<Tick, sqlx::Error> {
    let mut tx = store.begin().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE status = 'active' AND next_run_at <= $1 ORDER BY next_run_at, id LIMIT $2 {}",
        store.skip_locked()
    );
    let due: Vec<TaskRow> = with_tx!(&mut tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(now).bind(BATCH).fetch_all(conn).await
    })?;
    let mut report = Tick {
        tasks: due.len(),
        ..Tick::default()
    };
    for task in due {
        let schedule = match task.schedule() {
            Ok(schedule) => schedule,
            Err(e) => {
                // Stored schedules were validated; one that no longer parses (e.g. a time zone
                // removed from the database) is paused rather than retried forever.
                tracing::error!(task_id = %task.id, error = %e, "task schedule unreadable; pausing the task");
                with_tx!(&mut tx, conn => {
                    sqlx::query("UPDATE tasks SET status = 'paused', updated_at = $1 WHERE id = $2").bind(now).bind(&task.id).execute(conn).await.map(|_| ())
                })?;
                continue;
            }
        };
        let grace = chrono::Duration::seconds(i64::from(task.misfire_grace_seconds));
        let first = task.next_run_at;
        // Walking a schedule is bounded but not free: off the async runtime.
        let (due, next) = tokio::task::spawn_blocking(move || due_occurrences(&schedule, first, now, grace))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(task_id = %task.id, error = %e, "computing the task's occurrences failed");
                (Vec::new(), first)
            });
        let mut missed: Option<(DateTime<Utc>, DateTime<Utc>, usize)> = None;
        for at in due {
            if now - at > grace {
                let (first, _, count) = missed.unwrap_or((at, at, 0));
                missed = Some((first, at, count + 1));
            } else if let Some(refused) =
                queue::quota::check(&mut tx, quotas, &task.tenant_id, 1, now).await?
            {
                // Skipped, not postponed: replaying it later would add to the flood.
                tracing::warn!(task_id = %task.id, tenant_id = %task.tenant_id, occurrence = %at, reason = refused.reason, "{refused}; occurrence skipped");
                report.refused += 1;
            } else {
                let (job, created) =
                    queue::enqueue_or_existing(&mut tx, settings, task.job_for(at), now).await?;
                if created {
                    report.jobs.push(job);
                    let lag = (now - at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    metrics::histogram!("docket_scheduler_lag_seconds").record(lag);
                    report.enqueued += 1;
                } else {
                    report.deduplicated += 1;
                }
            }
        }
        if let Some((first, last, count)) = missed {
            let reason = format!(
                "{count} occurrence(s) from {} to {} were found more than {} s late and not run",
                first.to_rfc3339(),
                last.to_rfc3339(),
                task.misfire_grace_seconds
            );
            let mut record = task.job_for(first);
            record.payload =
                json!({ "task_id": task.id, "missed": count, "first": first, "last": last });
            if queue::record_missed(&mut tx, record, first, &reason, now).await? {
                report.missed += count;
            }
        }
        let status = if next.is_none() {
            "completed"
        } else {
            "active"
        };
        with_tx!(&mut tx, conn => {
            sqlx::query("UPDATE tasks SET next_run_at = $1, status = $2, updated_at = $3 WHERE id = $4")
                .bind(next)
                .bind(status)
                .bind(now)
                .bind(&task.id)
                .execute(conn)
                .await
                .map(|_| ())
        })?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The earliest pending occurrence of any active task.
/// The occurrences of a task due by `now`, from its `first` pending one, and the one after them.
/// After [`MAX_OCCURRENCES_PER_TICK`] (a long outage) it skips once, straight to the occurrences
/// still within `grace`.
fn due_occurrences(
    schedule: &docket_rules::schedule::Schedule,
    first: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut due = Vec::new();
    let mut next = first;
    while let Some(at) = next.filter(|at| *at <= now) {
        due.push(at);
        next = if due.len() == MAX_OCCURRENCES_PER_TICK {
            schedule.next_after((now - grace).max(at))
        } else {
            schedule.next_after(at)
        };
    }
    (due, next)
}

async fn next_due(store: &Store) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_scalar("SELECT MIN(next_run_at) FROM tasks WHERE status = 'active'").fetch_one(pool).await
    })
}

pub struct Scheduler {
    state: AppState,
}

impl Scheduler {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Runs until `shutdown`: a pass, then sleep until the next due instant or a wake-up.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.state.scheduler_wake.clone();
        let _listener = spawn_pg_listener(&self.state.store, wake.clone(), shutdown.clone());
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let full_batch = match tick(
                &self.state.store,
                &self.state.queue.settings,
                queue::quota::Quotas::from_config(&self.state.config),
                crate::clock::now(),
            )
            .await
            {
                Ok(report) => {
                    self.state.queue.enqueued(&report.jobs);
                    if report.missed > 0 {
                        tracing::warn!(
                            missed = report.missed,
                            "task occurrences missed (beyond their misfire grace)"
                        );
                    }
                    report.tasks as i64 == BATCH
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed");
                    false
                }
            };
            if full_batch {
                continue;
            }
            let sleep = match next_due(&self.state.store).await {
                Ok(Some(at)) => (at - crate::clock::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_SLEEP),
                Ok(None) => MAX_SLEEP,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the next due task");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut notified => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

fn spawn_pg_listener(
    store: &Store,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let Store::Postgres(pool) = store else {
        return None;
    };
    Some(crate::store::spawn_listener(
        pool.clone(),
        NOTIFY_CHANNEL,
        wake,
        shutdown,
    ))
}
