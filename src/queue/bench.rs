//! `docket bench queue`: enqueue N no-op jobs while W workers drain them (or, with
//! `--enqueue-first`, all of them before the workers start), and report enqueue rate, processing
//! rate and enqueue-to-start latency. Runs against whatever `DATABASE_URL` points at.
//! With `--keys K` the jobs take turns over K concurrency keys limited to [`KEY_LIMIT`] each, and
//! with `--tasks T` over T tasks of that `concurrency`, which measures what the claim's per-key and
//! per-task checks cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::worker::{Registry, Worker};
use super::{NewJob, Queue, enqueue_many};
use crate::with_pool;

/// Jobs per enqueue transaction.
const ENQUEUE_BATCH: usize = 500;
/// Running jobs allowed per concurrency key with `--keys`.
pub const KEY_LIMIT: u32 = 4;

#[derive(Debug)]
pub struct Report {
    pub jobs: usize,
    pub workers: usize,
    pub concurrency: u32,
    pub keys: usize,
    pub tasks: usize,
    pub enqueue_first: bool,
    pub enqueue_per_second: f64,
    pub processed_per_second: f64,
    pub start_latency_p50_ms: f64,
    pub start_latency_p99_ms: f64,
    pub wall_seconds: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "jobs                      {}", self.jobs)?;
        writeln!(
            f,
            "workers × concurrency     {} × {}",
            self.workers, self.concurrency
        )?;
        if self.keys > 0 {
            writeln!(
                f,
                "concurrency keys          {} (limit {KEY_LIMIT} each)",
                self.keys
            )?;
        }
        if self.tasks > 0 {
            writeln!(
                f,
                "tasks                     {} (concurrency {KEY_LIMIT} each)",
                self.tasks
            )?;
        }
        writeln!(
            f,
            "mode                      {}",
            if self.enqueue_first {
                "backlog (all enqueued, then the workers start; rate from the first start)"
            } else {
                "concurrent (enqueued while the workers drain)"
            }
        )?;
        writeln!(
            f,
            "enqueue rate              {:.0} jobs/s",
            self.enqueue_per_second
        )?;
        writeln!(
            f,
            "processing rate           {:.0} jobs/s",
            self.processed_per_second
        )?;
        writeln!(
            f,
            "enqueue-to-start p50      {:.1} ms",
            self.start_latency_p50_ms
        )?;
        writeln!(
            f,
            "enqueue-to-start p99      {:.1} ms",
            self.start_latency_p99_ms
        )?;
        write!(f, "wall time                 {:.1} s", self.wall_seconds)
    }
}

/// Runs the benchmark in its own tenant namespace (left in the database for inspection).
pub async fn run(
    queue: &Queue,
    jobs: usize,
    workers: usize,
    keys: usize,
    tasks: usize,
    enqueue_first: bool,
) -> Result<Report, sqlx::Error> {
    let tenant = format!("bench-{}", uuid::Uuid::now_v7());
    let task_ids = create_tasks(queue, &tenant, tasks).await?;
    let shutdown = CancellationToken::new();
    // A no-op handler that counts, so waiting for the end costs the database nothing until the
    // last job has run; the end time then comes from the jobs themselves.
    let executed = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::default();
    let counter = executed.clone();
    registry.register("noop", move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Ok(json!({})) }
    });
    let registry = Arc::new(registry);
    let spawn_workers = || -> Vec<_> {
        (0..workers)
            .map(|i| {
                let worker = Worker::new(queue.clone(), registry.clone(), format!("{tenant}-w{i}"));
                tokio::spawn(worker.run(shutdown.clone(), Duration::from_secs(30)))
            })
            .collect()
    };
    let mut handles = if enqueue_first {
        Vec::new()
    } else {
        spawn_workers()
    };

    let started = Instant::now();
    let started_at = crate::clock::now();
    let mut enqueued = 0;
    while enqueued < jobs {
        let batch = ENQUEUE_BATCH.min(jobs - enqueued);
        let jobs = (enqueued..enqueued + batch)
            .map(|i| NewJob {
                tenant_id: tenant.clone(),
                kind: "noop".to_owned(),
                payload: json!({}),
                task_id: (tasks > 0).then(|| task_ids[i % tasks].clone()),
                concurrency_key: (keys > 0).then(|| format!("key-{}", i % keys)),
                concurrency_limit: (keys > 0).then_some(KEY_LIMIT),
                ..NewJob::default()
            })
            .collect();
        let mut tx = queue.store.begin().await?;
        enqueue_many(&mut tx, &queue.settings, jobs, crate::clock::now()).await?;
        tx.commit().await?;
        queue.wake();
        enqueued += batch;
    }
    let enqueue_seconds = started.elapsed().as_secs_f64();
    if enqueue_first {
        handles = spawn_workers();
    }

    while executed.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last completions may still be committing.
    loop {
        let unfinished: bool = with_pool!(&queue.store, pool => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE tenant_id = $1 AND status IN ('queued', 'failed', 'running'))",
            )
            .bind(&tenant)
            .fetch_one(pool)
            .await
        })?;
        if !unfinished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    for handle in handles {
        let _ = handle.await;
    }
    let finished_at: Option<chrono::DateTime<chrono::Utc>> = with_pool!(&queue.store, pool => {
        sqlx::query_scalar("SELECT MAX(finished_at) FROM jobs WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(pool)
            .await
    })?;
    // With a backlog the rate counts from the first job's start, as peers' benchmarks do.
    let first_started: Option<chrono::DateTime<chrono::Utc>> = with_pool!(&queue.store, pool => {
        sqlx::query_scalar("SELECT MIN(started_at) FROM runs WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(pool)
            .await
    })?;
    let from = if enqueue_first {
        first_started.unwrap_or(started_at)
    } else {
        started_at
    };
    let wall_seconds = finished_at
        .map(|end| (end - from).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .unwrap_or_else(|| started.elapsed().as_secs_f64());

    let mut delays: Vec<f64> = with_pool!(&queue.store, pool => {
        sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>(
            "SELECT queued_at, started_at FROM runs WHERE tenant_id = $1",
        )
        .bind(&tenant)
        .fetch_all(pool)
        .await
    })?
    .into_iter()
    .map(|(queued, started)| (started - queued).num_microseconds().unwrap_or(0) as f64 / 1000.0)
    .collect();
    delays.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Report {
        jobs,
        workers,
        concurrency: queue.settings.concurrency,
        keys,
        tasks,
        enqueue_first,
        enqueue_per_second: jobs as f64 / enqueue_seconds,
        processed_per_second: jobs as f64 / wall_seconds,
        start_latency_p50_ms: percentile(0.5),
        start_latency_p99_ms: percentile(0.99),
        wall_seconds,
    })
}

/// `count` manual tasks of the bench tenant, each allowing [`KEY_LIMIT`] running jobs.
async fn create_tasks(
    queue: &Queue,
    tenant: &str,
    count: usize,
) -> Result<Vec<String>, sqlx::Error> {
    let now = crate::clock::now();
    let mut tx = queue.store.begin().await?;
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let task = crate::scheduler::tasks::TaskRow {
            id: format!("{tenant}-task-{i}"),
            tenant_id: tenant.to_owned(),
            title: format!("bench task {i}"),
            description: String::new(),
            schedule_kind: "manual".to_owned(),
            schedule_expr: String::new(),
            timezone: "UTC".to_owned(),
            payload: "{}".to_owned(),
            priority: 0,
            max_retries: 0,
            timeout_seconds: 60,
            misfire_grace_seconds: 60,
            concurrency: KEY_LIMIT as i32,
            concurrency_key: None,
            concurrency_limit: None,
            rate_count: None,
            rate_per_seconds: None,
            dedupe_key: None,
            dedupe_window_seconds: None,
            status: "active".to_owned(),
            next_run_at: None,
            created_by: "bench".to_owned(),
            created_at: now,
            updated_at: now,
        };
        crate::scheduler::tasks::insert(&mut tx, &task).await?;
        ids.push(task.id);
    }
    tx.commit().await?;
    Ok(ids)
}
