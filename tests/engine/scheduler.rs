use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use docket::app::AppState;
use docket::queue::{self, Settings};
use docket::scheduler::{self, tasks::TaskRow};
use docket::store::Store;
use docket::{with_pool, with_tx};

use crate::on_both_backends;
use crate::support::{Backend, TestDatabase, test_config};

struct Harness {
    store: Store,
    settings: Settings,
    _db: TestDatabase,
}

async fn harness(backend: Backend) -> Option<Harness> {
    let db = TestDatabase::new(backend).await?;
    let state = AppState::initialise(test_config(&db, &[])).await.unwrap();
    Some(Harness {
        settings: state.queue.settings,
        store: state.store.clone(),
        _db: db,
    })
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, h, m, s).unwrap()
}

/// Inserts an active task whose next occurrence is `next_run_at` (as the API would after create).
async fn insert_task(
    store: &Store,
    id: &str,
    kind: &str,
    expr: &str,
    next_run_at: DateTime<Utc>,
    grace: i32,
) {
    let mut tx = store.begin().await.unwrap();
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO tasks (id, tenant_id, title, description, schedule_kind, schedule_expr, timezone, payload, \
             priority, max_retries, timeout_seconds, misfire_grace_seconds, concurrency, status, next_run_at, \
             created_by, created_at, updated_at) \
             VALUES ($1, 't1', $1, '', $2, $3, 'UTC', '{}', 0, 0, 60, $4, 1, 'active', $5, 'test', $5, $5)",
        )
        .bind(id)
        .bind(kind)
        .bind(expr)
        .bind(grace)
        .bind(next_run_at)
        .execute(conn)
        .await
        .map(|_| ())
    })
    .unwrap();
    tx.commit().await.unwrap();
}

async fn task(store: &Store, id: &str) -> TaskRow {
    scheduler::tasks::find(store, "t1", id)
        .await
        .unwrap()
        .unwrap()
}

/// (status, run_at) of the task's jobs, oldest first.
async fn jobs_of(store: &Store, task_id: &str) -> Vec<(String, DateTime<Utc>)> {
    with_pool!(store, pool => {
        sqlx::query_as("SELECT status, run_at FROM jobs WHERE task_id = $1 ORDER BY run_at, id").bind(task_id).fetch_all(pool).await
    })
    .unwrap()
}

on_both_backends! {
    async fn due_occurrences_are_enqueued_once(backend) {
        let Some(h) = harness(backend).await else { return };
        insert_task(&h.store, "every-minute", "cron", "* * * * *", at(8, 0, 0), 30).await;
        let report = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(8, 0, 1)).await.unwrap();
        assert_eq!((report.enqueued, report.missed), (1, 0));
        assert_eq!(jobs_of(&h.store, "every-minute").await, [("queued".to_owned(), at(8, 0, 0))]);
        assert_eq!(task(&h.store, "every-minute").await.next_run_at, Some(at(8, 1, 0)));
        let again = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(8, 0, 2)).await.unwrap();
        assert_eq!(again.enqueued, 0, "not due again until 08:01");
        let later = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(8, 1, 0)).await.unwrap();
        assert_eq!(later.enqueued, 1);
        assert_eq!(jobs_of(&h.store, "every-minute").await.len(), 2);
    }

    async fn racing_schedulers_enqueue_every_occurrence_exactly_once(backend) {
        let Some(h) = harness(backend).await else { return };
        for i in 0..10 {
            insert_task(&h.store, &format!("task-{i}"), "cron", "* * * * * *", at(9, 0, 0), 30).await;
        }
        for second in 0..20 {
            let now = at(9, 0, second);
            let (a, b) = tokio::join!(
                scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, now),
                scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, now)
            );
            a.unwrap();
            b.unwrap();
        }
        for i in 0..10 {
            let jobs = jobs_of(&h.store, &format!("task-{i}")).await;
            let times: Vec<DateTime<Utc>> = jobs.iter().map(|(_, t)| *t).collect();
            let expected: Vec<DateTime<Utc>> = (0..20).map(|s| at(9, 0, s)).collect();
            assert_eq!(times, expected, "task-{i}: each second once, none lost");
        }
    }

    async fn occurrences_inside_a_dedupe_window_are_not_counted_as_enqueued(backend) {
        let Some(h) = harness(backend).await else { return };
        insert_task(&h.store, "sync", "cron", "* * * * *", at(8, 0, 0), 30).await;
        with_pool!(&h.store, pool => {
            sqlx::query("UPDATE tasks SET dedupe_key = 'sync-all', dedupe_window_seconds = 3600 WHERE id = 'sync'").execute(pool).await.map(|_| ())
        })
        .unwrap();
        let first = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(8, 0, 1)).await.unwrap();
        assert_eq!((first.enqueued, first.deduplicated, first.jobs.len()), (1, 0, 1));
        let second = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(8, 1, 1)).await.unwrap();
        assert_eq!((second.enqueued, second.deduplicated), (0, 1), "08:01 is answered by the 08:00 job");
        assert!(second.jobs.is_empty(), "nothing new to announce");
        assert_eq!(jobs_of(&h.store, "sync").await, [("queued".to_owned(), at(8, 0, 0))]);
        assert_eq!(task(&h.store, "sync").await.next_run_at, Some(at(8, 2, 0)), "the schedule moves on");
    }

    async fn downtime_beyond_the_grace_is_one_missed_record(backend) {
        let Some(h) = harness(backend).await else { return };
        insert_task(&h.store, "minutely", "cron", "* * * * *", at(10, 0, 0), 30).await;
        // The scheduler was down for an hour; it comes back at 11:00:10.
        let report = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(11, 0, 10)).await.unwrap();
        assert_eq!(report.missed, 60, "10:00 … 10:59");
        assert_eq!(report.enqueued, 1, "11:00 is within the 30 s grace");
        let jobs = jobs_of(&h.store, "minutely").await;
        assert_eq!(jobs, [("missed".to_owned(), at(10, 0, 0)), ("queued".to_owned(), at(11, 0, 0))]);
        let missed_id: String = with_pool!(&h.store, pool => {
            sqlx::query_scalar("SELECT id FROM jobs WHERE task_id = 'minutely' AND status = 'missed'").fetch_one(pool).await
        })
        .unwrap();
        let runs = queue::runs_of(&h.store, "t1", &missed_id).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "missed");
        assert!(runs[0].error.as_deref().unwrap().starts_with("60 occurrence(s) from 2030-01-01T10:00:00+00:00 to 2030-01-01T10:59:00+00:00"));
        assert_eq!(task(&h.store, "minutely").await.next_run_at, Some(at(11, 1, 0)));
    }

    async fn a_long_outage_skips_once_to_the_occurrences_within_the_grace(backend) {
        let Some(h) = harness(backend).await else { return };
        insert_task(&h.store, "minutely", "cron", "* * * * *", at(10, 0, 0), 30).await;
        // Down for two days: 2,880 occurrences, more than one tick walks.
        let back = at(10, 0, 10) + chrono::Duration::days(2);
        // Before, the walk jumped to the same occurrence again and again and the tick never ended.
        let tick = scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, back);
        let report = tokio::time::timeout(Duration::from_secs(120), tick).await.expect("the tick ends").unwrap();
        assert_eq!((report.missed, report.enqueued), (1000, 1), "the first 1000 missed, then straight to now");
        let jobs = jobs_of(&h.store, "minutely").await;
        assert_eq!(jobs, [("missed".to_owned(), at(10, 0, 0)), ("queued".to_owned(), at(10, 0, 0) + chrono::Duration::days(2))]);
        assert_eq!(task(&h.store, "minutely").await.next_run_at, Some(at(10, 1, 0) + chrono::Duration::days(2)));
    }

    async fn one_shot_tasks_complete(backend) {
        let Some(h) = harness(backend).await else { return };
        insert_task(&h.store, "once", "once", "2030-01-01T12:00:00Z", at(12, 0, 0), 30).await;
        insert_task(&h.store, "too-late", "once", "2030-01-01T12:00:00Z", at(12, 0, 0), 5).await;
        scheduler::tick(&h.store, &h.settings, docket::queue::quota::Quotas::NONE, at(12, 0, 10)).await.unwrap();
        let once = task(&h.store, "once").await;
        assert_eq!((once.status.as_str(), once.next_run_at), ("completed", None));
        assert_eq!(jobs_of(&h.store, "once").await, [("queued".to_owned(), at(12, 0, 0))]);
        assert_eq!(jobs_of(&h.store, "too-late").await, [("missed".to_owned(), at(12, 0, 0))]);
    }

    async fn the_scheduler_loop_wakes_for_due_tasks(backend) {
        let Some(db) = TestDatabase::new(backend).await else { return };
        let state = AppState::initialise(test_config(&db, &[])).await.unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let loop_handle = tokio::spawn(docket::scheduler::Scheduler::new(state.clone()).run(shutdown.clone()));
        let due = Utc::now() + chrono::Duration::milliseconds(300);
        insert_task(&state.store, "soon", "once", &due.to_rfc3339(), due, 30).await;
        // A task inserted behind the scheduler's back is found by the wake-up the API would send.
        docket::scheduler::wake(&state).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while jobs_of(&state.store, "soon").await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the due task was never enqueued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        loop_handle.await.unwrap();
    }
}

on_both_backends! {
    async fn an_occurrence_over_the_tenants_queue_quota_is_skipped(backend) {
        let Some(h) = harness(backend).await else { return };
        insert_task(&h.store, "every-minute", "cron", "* * * * *", at(8, 0, 0), 30).await;
        let quotas = docket::queue::quota::Quotas { queued_max: 1, per_minute: 0 };
        let first = scheduler::tick(&h.store, &h.settings, quotas, at(8, 0, 1)).await.unwrap();
        assert_eq!((first.enqueued, first.refused), (1, 0));
        let second = scheduler::tick(&h.store, &h.settings, quotas, at(8, 1, 1)).await.unwrap();
        assert_eq!((second.enqueued, second.refused), (0, 1), "the first job is still queued");
        assert_eq!(jobs_of(&h.store, "every-minute").await.len(), 1);
        assert_eq!(task(&h.store, "every-minute").await.next_run_at, Some(at(8, 2, 0)), "skipped, not replayed");
    }
}
