//! `docket bench scheduler`: N tasks firing every second for S seconds, with the scheduler and
//! workers of this process; reports how late occurrences start and checks none was enqueued twice.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Scheduler;
use super::tasks::{self, TaskRow};
use crate::app::AppState;
use crate::queue::worker::Worker;
use crate::with_pool;

#[derive(Debug)]
pub struct Report {
    pub tasks: usize,
    pub seconds: u64,
    pub occurrences: i64,
    pub distinct_occurrences: i64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "tasks (every second)      {}", self.tasks)?;
        writeln!(f, "duration                  {} s", self.seconds)?;
        writeln!(f, "occurrences run           {}", self.occurrences)?;
        writeln!(
            f,
            "enqueued twice            {}",
            self.occurrences - self.distinct_occurrences
        )?;
        writeln!(
            f,
            "start lateness p50        {:.1} ms",
            self.lateness_p50_ms
        )?;
        writeln!(
            f,
            "start lateness p99        {:.1} ms",
            self.lateness_p99_ms
        )?;
        write!(
            f,
            "start lateness max        {:.1} ms",
            self.lateness_max_ms
        )
    }
}

pub async fn run(state: &AppState, task_count: usize, seconds: u64) -> Result<Report, sqlx::Error> {
    let tenant = format!("bench-{}", Uuid::now_v7());
    let now = crate::clock::now();
    let mut tx = state.store.begin().await?;
    for i in 0..task_count {
        let task = TaskRow {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.clone(),
            title: format!("bench {i}"),
            description: String::new(),
            schedule_kind: "cron".to_owned(),
            schedule_expr: "* * * * * *".to_owned(),
            timezone: "UTC".to_owned(),
            payload: "{}".to_owned(),
            priority: 0,
            max_retries: 0,
            timeout_seconds: 60,
            misfire_grace_seconds: 30,
            concurrency: 1,
            concurrency_key: None,
            concurrency_limit: None,
            rate_count: None,
            rate_per_seconds: None,
            dedupe_key: None,
            dedupe_window_seconds: None,
            status: "active".to_owned(),
            next_run_at: Some(
                chrono::DurationRound::duration_trunc(now, chrono::Duration::seconds(1))
                    .unwrap_or(now)
                    + chrono::Duration::seconds(2),
            ),
            created_by: "bench".to_owned(),
            created_at: now,
            updated_at: now,
        };
        tasks::insert(&mut tx, &task).await?;
    }
    tx.commit().await?;

    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(Scheduler::new(state.clone()).run(shutdown.clone()));
    let worker = Worker::new(
        state.queue.clone(),
        Arc::clone(&state.job_handlers),
        format!("{tenant}-worker"),
    );
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn(worker.run(stop_worker.clone(), Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(seconds + 2)).await;
    shutdown.cancel();
    let _ = scheduler.await;
    // Let the last occurrences finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_worker.cancel();
    let _ = worker.await;

    let (occurrences, distinct): (i64, i64) = with_pool!(&state.store, pool => {
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT unique_key) FROM jobs WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(pool)
            .await
    })?;
    let mut lateness: Vec<f64> = with_pool!(&state.store, pool => {
        sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>(
            "SELECT j.run_at, r.started_at FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.tenant_id = $1",
        )
        .bind(&tenant)
        .fetch_all(pool)
        .await
    })?
    .into_iter()
    .map(|(due, started)| (started - due).num_microseconds().unwrap_or(0) as f64 / 1000.0)
    .collect();
    lateness.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        lateness
            .get(((lateness.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    with_pool!(&state.store, pool => {
        sqlx::query("UPDATE tasks SET status = 'deleted', next_run_at = NULL WHERE tenant_id = $1").bind(&tenant).execute(pool).await.map(|_| ())
    })?;
    Ok(Report {
        tasks: task_count,
        seconds,
        occurrences,
        distinct_occurrences: distinct,
        lateness_p50_ms: percentile(0.5),
        lateness_p99_ms: percentile(0.99),
        lateness_max_ms: lateness.last().copied().unwrap_or(0.0),
    })
}
