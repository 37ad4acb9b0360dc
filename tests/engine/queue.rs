use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use docket::app::AppState;
use docket::queue::worker::{Registry, Worker};
use docket::queue::{self, NewJob, Outcome, Queue, Settings, Settled};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::on_both_backends;
use crate::support::{Backend, TestDatabase, test_config};

/// A migrated database and a queue with test-friendly timings.
struct Harness {
    queue: Queue,
    _db: TestDatabase,
}

async fn harness(backend: Backend) -> Option<Harness> {
    let db = TestDatabase::new(backend).await?;
    let state = AppState::initialise(test_config(&db, &[])).await.unwrap();
    let settings = Settings {
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        backoff_max_delay: Duration::from_millis(20),
        max_retries: 2,
        concurrency: 4,
        default_timeout: Duration::from_secs(30),
    };
    Some(Harness {
        queue: Queue::new(state.store.clone(), settings, state.events.clone()),
        _db: db,
    })
}

fn job(kind: &str, payload: serde_json::Value) -> NewJob {
    NewJob {
        tenant_id: "t1".to_owned(),
        kind: kind.to_owned(),
        payload,
        ..NewJob::default()
    }
}

/// Starts a worker; cancel the token to stop it.
fn start_worker(
    queue: &Queue,
    registry: Registry,
    id: &str,
    grace: Duration,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let worker = Worker::new(queue.clone(), Arc::new(registry), id);
    let handle = tokio::spawn(worker.run(stop.clone(), grace));
    (stop, handle)
}

/// Polls until every listed job is in `status` (bounded, so a bug fails instead of hanging).
async fn wait_for(queue: &Queue, ids: &[String], status: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut pending = 0;
        for id in ids {
            if queue::get(&queue.store, "t1", id)
                .await
                .unwrap()
                .unwrap()
                .status
                != status
            {
                pending += 1;
            }
        }
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} jobs never reached {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_backends! {
    async fn a_job_runs_and_its_run_is_recorded(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut registry = Registry::builtin();
        registry.register("double", |ctx| async move { Ok(json!({ "result": ctx.payload["n"].as_i64().unwrap_or(0) * 2 })) });
        let (stop, worker) = start_worker(&h.queue, registry, "w1", Duration::from_secs(5));
        let job = h.queue.enqueue(job("double", json!({ "n": 21 }))).await.unwrap();
        wait_for(&h.queue, std::slice::from_ref(&job.id), "succeeded").await;
        let runs = queue::runs_of(&h.queue.store, "t1", &job.id).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "succeeded");
        assert_eq!(runs[0].worker_id, "w1");
        assert_eq!(runs[0].attempt, 1);
        assert_eq!(serde_json::from_str::<serde_json::Value>(runs[0].output.as_deref().unwrap()).unwrap(), json!({ "result": 42 }));
        assert!(runs[0].finished_at.unwrap() >= runs[0].started_at);
        stop.cancel();
        worker.await.unwrap();
    }

    async fn racing_workers_run_each_job_exactly_once(backend) {
        let Some(h) = harness(backend).await else { return };
        // All jobs are waiting before the workers start, so the four of them race for the same rows.
        let jobs: Vec<NewJob> = (0..300).map(|i| job("count", json!({ "i": i }))).collect();
        let mut tx = h.queue.store.begin().await.unwrap();
        queue::enqueue_many(&mut tx, &h.queue.settings, jobs, Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<String> = docket::with_pool!(&h.queue.store, pool => {
            sqlx::query_scalar("SELECT id FROM jobs WHERE tenant_id = 't1' ORDER BY id").fetch_all(pool).await
        })
        .unwrap();
        let counts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let mut workers = Vec::new();
        for w in 0..4 {
            let counts = counts.clone();
            let mut registry = Registry::default();
            registry.register("count", move |ctx| {
                let counts = counts.clone();
                async move {
                    *counts.lock().unwrap().entry(ctx.job_id).or_default() += 1;
                    // Long enough that no single worker drains the queue before the others start.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(json!({}))
                }
            });
            workers.push(start_worker(&h.queue, registry, &format!("w{w}"), Duration::from_secs(5)));
        }
        wait_for(&h.queue, &ids, "succeeded").await;
        let counts = counts.lock().unwrap().clone();
        assert_eq!(counts.len(), 300);
        assert!(counts.values().all(|c| *c == 1), "a job ran twice: {:?}", counts.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>());
        for id in ids.iter().step_by(37) {
            assert_eq!(queue::runs_of(&h.queue.store, "t1", id).await.unwrap().len(), 1);
        }
        let mut used = std::collections::HashSet::new();
        for id in &ids {
            used.insert(queue::runs_of(&h.queue.store, "t1", id).await.unwrap()[0].worker_id.clone());
        }
        assert!(used.len() > 1, "the work was shared: {used:?}");
        for (stop, handle) in workers {
            stop.cancel();
            handle.await.unwrap();
        }
    }

    async fn failures_are_retried_with_backoff_then_dead(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut registry = Registry::default();
        registry.register("flaky", |ctx| async move {
            if ctx.payload["succeed_on"].as_i64() == Some(i64::from(ctx.attempt)) { Ok(json!({ "attempt": ctx.attempt })) } else { Err(format!("boom on attempt {}", ctx.attempt)) }
        });
        let (stop, worker) = start_worker(&h.queue, registry, "w1", Duration::from_secs(5));
        let doomed = h.queue.enqueue(job("flaky", json!({}))).await.unwrap();
        let recovers = h.queue.enqueue(job("flaky", json!({ "succeed_on": 2 }))).await.unwrap();
        wait_for(&h.queue, std::slice::from_ref(&doomed.id), "dead").await;
        wait_for(&h.queue, std::slice::from_ref(&recovers.id), "succeeded").await;

        let dead = queue::get(&h.queue.store, "t1", &doomed.id).await.unwrap().unwrap();
        assert_eq!(dead.attempts, 3, "max_retries 2 means three attempts");
        assert_eq!(dead.last_error.as_deref(), Some("boom on attempt 3"));
        let runs = queue::runs_of(&h.queue.store, "t1", &doomed.id).await.unwrap();
        assert_eq!(runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["failed", "failed", "failed"]);
        assert_eq!(runs.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
        let runs = queue::runs_of(&h.queue.store, "t1", &recovers.id).await.unwrap();
        assert_eq!(runs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(), ["failed", "succeeded"]);
        stop.cancel();
        worker.await.unwrap();
    }

    async fn a_dead_workers_job_is_taken_over_after_its_lease_expires(backend) {
        let Some(h) = harness(backend).await else { return };
        let job = h.queue.enqueue(job("noop", json!({}))).await.unwrap();
        let lease = Duration::from_secs(30);
        let now = Utc::now();
        let ghost = queue::claim(&h.queue.store, "ghost", 10, lease, now).await.unwrap();
        assert_eq!(ghost.len(), 1);
        assert!(queue::claim(&h.queue.store, "alive", 10, lease, now + chrono::Duration::seconds(5)).await.unwrap().is_empty(), "leased");

        // The ghost never renews; 31 s later its lease has expired.
        let later = now + chrono::Duration::seconds(31);
        let taken = queue::claim(&h.queue.store, "alive", 10, lease, later).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].job.attempts, 2);
        let settled = queue::finish(&h.queue.store, &ghost[0], "ghost", Outcome::Succeeded(json!({})), Duration::from_secs(1), later).await.unwrap();
        assert_eq!(settled, Settled::Stale, "the late ghost cannot overwrite the new attempt");
        let settled = queue::finish(&h.queue.store, &taken[0], "alive", Outcome::Succeeded(json!({})), Duration::from_secs(1), later).await.unwrap();
        assert_eq!(settled, Settled::Succeeded);
        let runs = queue::runs_of(&h.queue.store, "t1", &job.id).await.unwrap();
        assert_eq!(runs.iter().map(|r| (r.worker_id.as_str(), r.status.as_str())).collect::<Vec<_>>(), [("ghost", "lost"), ("alive", "succeeded")]);
    }

    async fn a_lease_lost_on_the_last_attempt_makes_the_job_dead(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut new = job("noop", json!({}));
        new.max_attempts = Some(1);
        let job = h.queue.enqueue(new).await.unwrap();
        let now = Utc::now();
        assert_eq!(queue::claim(&h.queue.store, "ghost", 1, Duration::from_secs(30), now).await.unwrap().len(), 1);
        let later = now + chrono::Duration::seconds(31);
        assert!(queue::claim(&h.queue.store, "alive", 1, Duration::from_secs(30), later).await.unwrap().is_empty());
        let dead = queue::get(&h.queue.store, "t1", &job.id).await.unwrap().unwrap();
        assert_eq!(dead.status, "dead");
        assert!(dead.last_error.unwrap().contains("lease"));
    }

    async fn heartbeats_keep_the_lease(backend) {
        let Some(h) = harness(backend).await else { return };
        h.queue.enqueue(job("noop", json!({}))).await.unwrap();
        let lease = Duration::from_secs(30);
        let now = Utc::now();
        let claimed = queue::claim(&h.queue.store, "w1", 1, lease, now).await.unwrap();
        assert!(queue::heartbeat(&h.queue.store, &claimed[0], "w1", lease, now + chrono::Duration::seconds(20)).await.unwrap());
        assert!(queue::claim(&h.queue.store, "w2", 1, lease, now + chrono::Duration::seconds(40)).await.unwrap().is_empty(), "renewed until 50 s");
        assert!(!queue::heartbeat(&h.queue.store, &claimed[0], "someone-else", lease, now).await.unwrap());
    }

    async fn unknown_kinds_fail_for_good(backend) {
        let Some(h) = harness(backend).await else { return };
        let (stop, worker) = start_worker(&h.queue, Registry::builtin(), "w1", Duration::from_secs(5));
        let job = h.queue.enqueue(job("no.such.kind", json!({}))).await.unwrap();
        wait_for(&h.queue, std::slice::from_ref(&job.id), "dead").await;
        let dead = queue::get(&h.queue.store, "t1", &job.id).await.unwrap().unwrap();
        assert_eq!(dead.attempts, 1, "not retried");
        assert!(dead.last_error.unwrap().contains("no handler is registered for job kind \"no.such.kind\""));
        stop.cancel();
        worker.await.unwrap();
    }

    async fn unique_keys_make_enqueue_idempotent(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut first = job("noop", json!({ "n": 1 }));
        first.unique_key = Some("order-42".to_owned());
        let mut second = job("noop", json!({ "n": 2 }));
        second.unique_key = Some("order-42".to_owned());
        let a = h.queue.enqueue(first).await.unwrap();
        let b = h.queue.enqueue(second).await.unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(b.payload, json!({ "n": 1 }), "the first job stands");
        let mut other_tenant = job("noop", json!({}));
        other_tenant.tenant_id = "t2".to_owned();
        other_tenant.unique_key = Some("order-42".to_owned());
        assert_ne!(h.queue.enqueue(other_tenant).await.unwrap().id, a.id, "keys are per tenant");
    }

    async fn slow_jobs_time_out(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut registry = Registry::default();
        registry.register("slow", |_| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(json!({}))
        });
        let (stop, worker) = start_worker(&h.queue, registry, "w1", Duration::from_secs(5));
        let mut new = job("slow", json!({}));
        new.timeout = Some(Duration::from_secs(1));
        new.max_attempts = Some(1);
        let job = h.queue.enqueue(new).await.unwrap();
        wait_for(&h.queue, std::slice::from_ref(&job.id), "dead").await;
        let dead = queue::get(&h.queue.store, "t1", &job.id).await.unwrap().unwrap();
        assert_eq!(dead.last_error.as_deref(), Some("timed out after 1 s"));
        stop.cancel();
        worker.await.unwrap();
    }

    async fn shutdown_finishes_short_jobs_and_releases_long_ones(backend) {
        let Some(h) = harness(backend).await else { return };
        let started = Arc::new(tokio::sync::Semaphore::new(0));
        let mut registry = Registry::default();
        let signal = started.clone();
        registry.register("sleep", move |ctx| {
            let signal = signal.clone();
            async move {
                signal.add_permits(1);
                tokio::time::sleep(Duration::from_millis(ctx.payload["ms"].as_u64().unwrap_or(0))).await;
                Ok(json!({}))
            }
        });
        let short = h.queue.enqueue(job("sleep", json!({ "ms": 300 }))).await.unwrap();
        let long = h.queue.enqueue(job("sleep", json!({ "ms": 600_000 }))).await.unwrap();
        let (stop, worker) = start_worker(&h.queue, registry, "w1", Duration::from_secs(2));
        let _both = started.acquire_many(2).await.unwrap();
        stop.cancel();
        worker.await.unwrap();

        assert_eq!(queue::get(&h.queue.store, "t1", &short.id).await.unwrap().unwrap().status, "succeeded");
        let released = queue::get(&h.queue.store, "t1", &long.id).await.unwrap().unwrap();
        assert_eq!(released.status, "queued", "handed back for another worker");
        assert_eq!(released.attempts, 0, "a released attempt does not count");
        let runs = queue::runs_of(&h.queue.store, "t1", &long.id).await.unwrap();
        assert_eq!(runs[0].status, "released");
        let taken = queue::claim(&h.queue.store, "w2", 10, Duration::from_secs(30), Utc::now()).await.unwrap();
        assert_eq!(taken.iter().map(|c| c.job.id.clone()).collect::<Vec<_>>(), [long.id], "another worker takes it at once");
    }

    async fn bulk_enqueue_and_batched_outcomes(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut jobs: Vec<NewJob> = (0..5).map(|i| job("noop", json!({ "i": i }))).collect();
        jobs[0].unique_key = Some("dup".to_owned());
        let mut tx = h.queue.store.begin().await.unwrap();
        assert_eq!(queue::enqueue_many(&mut tx, &h.queue.settings, jobs, Utc::now()).await.unwrap(), 5);
        let mut again = job("noop", json!({}));
        again.unique_key = Some("dup".to_owned());
        assert_eq!(queue::enqueue_many(&mut tx, &h.queue.settings, vec![again], Utc::now()).await.unwrap(), 0, "unique keys hold in bulk too");
        tx.commit().await.unwrap();

        let now = Utc::now();
        let claimed = queue::claim(&h.queue.store, "w1", 10, Duration::from_secs(30), now).await.unwrap();
        assert_eq!(claimed.len(), 5);
        // One attempt was taken over by another worker meanwhile: its outcome must be discarded.
        let mut stale = claimed[4].clone();
        stale.job.attempts = 99;
        let items = vec![
            (claimed[0].clone(), Outcome::Succeeded(json!({ "ok": true }))),
            (claimed[1].clone(), Outcome::Failed("transient".to_owned())),
            (claimed[2].clone(), Outcome::FailedPermanently("fatal".to_owned())),
            (claimed[3].clone(), Outcome::Released),
            (stale, Outcome::Succeeded(json!({}))),
        ];
        let settled = queue::finish_many(&h.queue.store, "w1", items, Duration::from_millis(10), now).await.unwrap();
        assert_eq!(settled, [Settled::Succeeded, Settled::WillRetry, Settled::Dead, Settled::Requeued, Settled::Stale]);
        let status = |i: usize| {
            let store = h.queue.store.clone();
            let id = claimed[i].job.id.clone();
            async move { queue::get(&store, "t1", &id).await.unwrap().unwrap().status }
        };
        assert_eq!(status(0).await, "succeeded");
        let done = queue::get(&h.queue.store, "t1", &claimed[0].job.id).await.unwrap().unwrap();
        assert_eq!(done.run_at, claimed[0].job.run_at, "a finished job keeps the time it was due");
        assert_eq!(status(1).await, "failed");
        assert_eq!(status(2).await, "dead");
        assert_eq!(status(3).await, "queued");
        assert_eq!(status(4).await, "running", "the stale outcome changed nothing");
        let runs = queue::runs_of(&h.queue.store, "t1", &claimed[0].job.id).await.unwrap();
        assert_eq!(runs[0].output.as_deref(), Some(r#"{"ok":true}"#));
    }

    async fn a_tasks_concurrency_limits_its_running_jobs(backend) {
        let Some(h) = harness(backend).await else { return };
        let now = Utc::now();
        let mut tx = h.queue.store.begin().await.unwrap();
        docket::with_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO tasks (id, tenant_id, title, description, schedule_kind, schedule_expr, timezone, payload, \
                 priority, max_retries, timeout_seconds, misfire_grace_seconds, concurrency, status, next_run_at, \
                 created_by, created_at, updated_at) \
                 VALUES ('limited', 't1', 'limited', '', 'manual', '', 'UTC', '{}', 0, 0, 60, 30, 1, 'active', NULL, 'test', $1, $1)",
            )
            .bind(now)
            .execute(conn)
            .await
            .map(|_| ())
        })
        .unwrap();
        tx.commit().await.unwrap();
        for i in 0..6 {
            let mut new = job("noop", json!({ "i": i }));
            new.task_id = Some("limited".to_owned());
            h.queue.enqueue(new).await.unwrap();
        }
        h.queue.enqueue(job("noop", json!({ "free": true }))).await.unwrap();

        // Several workers claim at once: only one of the task's jobs may run.
        let lease = Duration::from_secs(30);
        let now = Utc::now() + chrono::Duration::seconds(1);
        let claims = futures_util::future::join_all((0..4).map(|w| {
            let store = h.queue.store.clone();
            async move { queue::claim(&store, &format!("w{w}"), 10, lease, now).await.unwrap() }
        }))
        .await;
        let claimed: Vec<_> = claims.into_iter().flatten().collect();
        let of_task: Vec<_> = claimed.iter().filter(|c| c.job.task_id.is_some()).collect();
        assert_eq!(of_task.len(), 1, "concurrency 1: {} of the task's jobs were claimed", of_task.len());
        assert_eq!(claimed.len(), 2, "the job without a task is not held back");

        let running = of_task[0].clone();
        let owner: String = docket::with_pool!(&h.queue.store, pool => {
            sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = $1").bind(&running.job.id).fetch_one(pool).await
        })
        .unwrap();
        assert!(queue::claim(&h.queue.store, "late", 10, lease, now).await.unwrap().is_empty(), "still at its limit");
        queue::finish(&h.queue.store, &running, &owner, Outcome::Succeeded(json!({})), Duration::from_secs(1), now).await.unwrap();
        let next = queue::claim(&h.queue.store, "late", 10, lease, now).await.unwrap();
        assert_eq!(next.len(), 1, "the next one may start once the first finished");
    }

    async fn a_killed_workers_job_is_retried_after_its_lease_expires(backend) {
        let Some(mut h) = harness(backend).await else { return };
        h.queue.settings.lease = Duration::from_secs(1);
        let mut stuck = Registry::default();
        stuck.register("slow", |_| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(json!({}))
        });
        let (_, doomed) = start_worker(&h.queue, stuck, "doomed", Duration::from_secs(5));
        let job = h.queue.enqueue(job("slow", json!({}))).await.unwrap();
        wait_for(&h.queue, std::slice::from_ref(&job.id), "running").await;
        // The worker dies without draining: no release, no more heartbeats.
        doomed.abort();
        let _ = doomed.await;

        let mut quick = Registry::default();
        quick.register("slow", |_| async { Ok(json!({ "done": true })) });
        let (stop, rescuer) = start_worker(&h.queue, quick, "rescuer", Duration::from_secs(5));
        wait_for(&h.queue, std::slice::from_ref(&job.id), "succeeded").await;
        let runs = queue::runs_of(&h.queue.store, "t1", &job.id).await.unwrap();
        let seen: Vec<(&str, &str, i32)> = runs.iter().map(|r| (r.worker_id.as_str(), r.status.as_str(), r.attempt)).collect();
        assert_eq!(seen, [("doomed", "lost", 1), ("rescuer", "succeeded", 2)]);
        stop.cancel();
        rescuer.await.unwrap();
    }
}
