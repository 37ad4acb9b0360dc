//! Per-key limits: concurrency keys, rate limits and dedupe keys, enforced by the claim itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use docket::app::AppState;
use docket::queue::{self, Claimed, NewJob, Outcome, Queue, RateLimit, Settings};
use docket::store::Store;
use serde_json::json;

use crate::on_both_backends;
use crate::support::{Backend, TestDatabase, test_config};

const LEASE: Duration = Duration::from_secs(30);

struct Harness {
    queue: Queue,
    _db: TestDatabase,
}

async fn harness(backend: Backend) -> Option<Harness> {
    let db = TestDatabase::new(backend).await?;
    let state = AppState::initialise(test_config(&db, &[("DB_POOL_SIZE", "10")]))
        .await
        .unwrap();
    let settings = Settings {
        lease: LEASE,
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

/// A job of `key` limited to `limit` running at once, due at `run_at`.
fn keyed(key: &str, limit: Option<u32>, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        tenant_id: "t1".to_owned(),
        kind: "noop".to_owned(),
        payload: json!({}),
        run_at: Some(run_at),
        concurrency_key: Some(key.to_owned()),
        concurrency_limit: limit,
        ..NewJob::default()
    }
}

async fn enqueue_all(queue: &Queue, jobs: Vec<NewJob>, now: DateTime<Utc>) {
    let mut tx = queue.store.begin().await.unwrap();
    queue::enqueue_many(&mut tx, &queue.settings, jobs, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn claim(queue: &Queue, worker: &str, limit: u32, now: DateTime<Utc>) -> Vec<Claimed> {
    queue::claim(&queue.store, worker, limit, LEASE, now)
        .await
        .unwrap()
}

async fn succeed(queue: &Queue, worker: &str, claimed: Vec<Claimed>, now: DateTime<Utc>) {
    let items = claimed
        .into_iter()
        .map(|c| (c, Outcome::Succeeded(json!({}))))
        .collect();
    queue::finish_many(&queue.store, worker, items, Duration::from_secs(1), now)
        .await
        .unwrap();
}

fn keys_of(claimed: &[Claimed]) -> Vec<Option<String>> {
    claimed
        .iter()
        .map(|c| c.job.concurrency_key.clone())
        .collect()
}

/// Running jobs per key, as the database has them.
async fn running_per_key(store: &Store) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = docket::with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT concurrency_key, COUNT(*) FROM jobs WHERE status = 'running' AND concurrency_key IS NOT NULL \
             GROUP BY concurrency_key",
        )
        .fetch_all(pool)
        .await
    })
    .unwrap();
    rows.into_iter().collect()
}

async fn count_jobs(store: &Store, condition: &str) -> i64 {
    docket::with_pool!(store, pool => {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM jobs WHERE {condition}")))
            .fetch_one(pool)
            .await
    })
    .unwrap()
}

on_both_backends! {
    async fn a_concurrency_key_holds_its_limit_under_concurrent_claimers(backend) {
        let Some(h) = harness(backend).await else { return };
        let now = Utc::now() - chrono::Duration::seconds(1);
        let limits = HashMap::from([("a".to_owned(), 3_i64), ("b".to_owned(), 2)]);
        let jobs = (0..80)
            .map(|i| {
                let key = if i % 2 == 0 { "a" } else { "b" };
                keyed(key, Some(u32::try_from(limits[key]).unwrap()), now)
            })
            .collect();
        enqueue_all(&h.queue, jobs, now).await;

        // Held between a claim's commit and the finish's: never more than the database says runs,
        // so a count above the limit here is a count above it in the database.
        let held: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let most_held: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let most_running: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let mut claimers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let queue = h.queue.clone();
            let (held, most_held, most_running) = (held.clone(), most_held.clone(), most_running.clone());
            claimers.spawn(async move {
                let worker = format!("w{w}");
                loop {
                    let claimed = claim(&queue, &worker, 4, Utc::now()).await;
                    if claimed.is_empty() {
                        if count_jobs(&queue.store, "status IN ('queued', 'running')").await == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                    for (key, n) in running_per_key(&queue.store).await {
                        let mut most = most_running.lock().unwrap();
                        let most = most.entry(key).or_default();
                        *most = (*most).max(n);
                    }
                    for key in keys_of(&claimed).into_iter().flatten() {
                        let mut held = held.lock().unwrap();
                        let now_held = held.entry(key.clone()).or_default();
                        *now_held += 1;
                        let mut most = most_held.lock().unwrap();
                        let most = most.entry(key).or_default();
                        *most = (*most).max(*now_held);
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    for key in keys_of(&claimed).into_iter().flatten() {
                        *held.lock().unwrap().entry(key).or_default() -= 1;
                    }
                    succeed(&queue, &worker, claimed, Utc::now()).await;
                }
            });
        }
        while let Some(done) = claimers.join_next().await {
            done.unwrap();
        }
        assert_eq!(count_jobs(&h.queue.store, "status = 'succeeded'").await, 80);
        let most_running = most_running.lock().unwrap().clone();
        let most_held = most_held.lock().unwrap().clone();
        for (key, limit) in &limits {
            assert!(most_running[key] <= *limit, "{key}: {} running at once in the database, limit {limit}", most_running[key]);
            assert!(most_held[key] <= *limit, "{key}: {} held at once, limit {limit}", most_held[key]);
        }
        assert_eq!(most_running["a"], 3, "the claimers did run key a at its limit: {most_running:?}");
    }

    async fn a_key_at_its_limit_does_not_hold_back_other_jobs(backend) {
        let Some(h) = harness(backend).await else { return };
        let now = Utc::now();
        let older = now - chrono::Duration::seconds(10);
        let newer = now - chrono::Duration::seconds(5);
        // Ten jobs of a key limited to one are first in line; other keys' jobs and plain jobs follow.
        let mut jobs: Vec<NewJob> = (0..10).map(|_| keyed("hot", Some(1), older)).collect();
        jobs.extend((0..3).map(|_| keyed("cold", Some(5), newer)));
        jobs.extend((0..2).map(|_| NewJob { concurrency_key: None, ..keyed("", None, newer) }));
        enqueue_all(&h.queue, jobs, now).await;

        let first = claim(&h.queue, "w1", 4, now).await;
        let hot = |c: &[Claimed]| keys_of(c).iter().filter(|k| k.as_deref() == Some("hot")).count();
        assert_eq!(first.len(), 4, "one hot job and three others in the same claim: {:?}", keys_of(&first));
        assert_eq!(hot(&first), 1);
        let second = claim(&h.queue, "w2", 4, now).await;
        assert_eq!(second.len(), 2, "the two jobs left behind the hot key: {:?}", keys_of(&second));
        assert_eq!(hot(&second), 0);
        assert!(claim(&h.queue, "w3", 4, now).await.is_empty(), "hot is at its limit");

        let finished = first.into_iter().filter(|c| c.job.concurrency_key.as_deref() == Some("hot")).collect();
        succeed(&h.queue, "w1", finished, now).await;
        let third = claim(&h.queue, "w3", 4, now).await;
        assert_eq!(keys_of(&third), [Some("hot".to_owned())], "room again for exactly one");
    }

    async fn a_rate_limit_counts_starts_in_a_sliding_window(backend) {
        let Some(h) = harness(backend).await else { return };
        let t = Utc::now();
        let rate = RateLimit { count: 3, per: Duration::from_secs(60) };
        let jobs = (0..20)
            .map(|_| NewJob { rate_limit: Some(rate), ..keyed("api", None, t - chrono::Duration::seconds(1)) })
            .collect();
        enqueue_all(&h.queue, jobs, t).await;
        let at = |s: i64| t + chrono::Duration::seconds(s);

        let claimed = claim(&h.queue, "w1", 10, at(0)).await;
        assert_eq!(claimed.len(), 3, "three starts per minute");
        succeed(&h.queue, "w1", claimed, at(0)).await;
        assert!(claim(&h.queue, "w1", 10, at(1)).await.is_empty(), "the window is full although nothing runs");
        assert!(claim(&h.queue, "w1", 10, at(59)).await.is_empty());
        let claimed = claim(&h.queue, "w1", 10, at(61)).await;
        assert_eq!(claimed.len(), 3, "the first starts left the window");
        succeed(&h.queue, "w1", claimed, at(61)).await;

        // Sliding, not fixed: one start at 130 s and two at 150 s leave room for one at 191 s.
        assert_eq!(claim(&h.queue, "w1", 1, at(130)).await.len(), 1);
        assert_eq!(claim(&h.queue, "w1", 10, at(150)).await.len(), 2);
        assert!(claim(&h.queue, "w1", 10, at(189)).await.is_empty());
        assert_eq!(claim(&h.queue, "w1", 10, at(191)).await.len(), 1, "only the start at 130 s left the window");
        let stored: i64 = docket::with_pool!(&h.queue.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM job_key_starts").fetch_one(pool).await
        })
        .unwrap();
        assert!(stored <= 3, "starts outside the window are dropped: {stored} kept");
    }

    async fn a_rate_limit_and_a_concurrency_limit_both_apply(backend) {
        let Some(h) = harness(backend).await else { return };
        let t = Utc::now();
        let rate = RateLimit { count: 5, per: Duration::from_secs(60) };
        let jobs = (0..10)
            .map(|_| NewJob { rate_limit: Some(rate), ..keyed("both", Some(2), t) })
            .collect();
        enqueue_all(&h.queue, jobs, t).await;
        let at = |s: i64| t + chrono::Duration::seconds(s);
        let mut started = 0;
        for s in 0..5 {
            let claimed = claim(&h.queue, "w1", 10, at(s)).await;
            assert!(claimed.len() <= 2, "concurrency 2");
            started += claimed.len();
            succeed(&h.queue, "w1", claimed, at(s)).await;
        }
        assert_eq!(started, 5, "then the rate limit: 5 per minute");
    }

    async fn a_dedupe_key_returns_the_first_job_within_its_window(backend) {
        let Some(h) = harness(backend).await else { return };
        let t = Utc::now();
        let at = |s: i64| t + chrono::Duration::seconds(s);
        let enqueue = |n: i64, now: DateTime<Utc>| {
            let queue = h.queue.clone();
            async move {
                let new = NewJob {
                    tenant_id: "t1".to_owned(),
                    kind: "noop".to_owned(),
                    payload: json!({ "n": n }),
                    dedupe_key: Some("order-7".to_owned()),
                    dedupe_window: Some(Duration::from_secs(60)),
                    ..NewJob::default()
                };
                let mut tx = queue.store.begin().await.unwrap();
                let job = queue::enqueue(&mut tx, &queue.settings, new, now).await.unwrap();
                tx.commit().await.unwrap();
                job
            }
        };
        let first = enqueue(1, at(0)).await;
        let again = enqueue(2, at(10)).await;
        assert_eq!(again.id, first.id);
        assert_eq!(again.payload, json!({ "n": 1 }), "the first job stands");
        // Whatever became of the first job: it ran, and the window still holds.
        let claimed = claim(&h.queue, "w1", 1, at(20)).await;
        succeed(&h.queue, "w1", claimed, at(20)).await;
        assert_eq!(enqueue(3, at(59)).await.id, first.id);
        let after = enqueue(4, at(61)).await;
        assert_ne!(after.id, first.id, "a new job once the window ended");
        assert_eq!(after.payload, json!({ "n": 4 }));
        assert_eq!(enqueue(5, at(100)).await.id, after.id, "and a new window from it");
        assert_eq!(count_jobs(&h.queue.store, "dedupe_key = 'order-7'").await, 2);

        // Maintenance drops keys whose window ended, and only those.
        assert_eq!(queue::purge_expired_dedupe_keys(&h.queue.store, at(120)).await.unwrap(), 0, "the window runs to 121 s");
        assert_eq!(enqueue(6, at(120)).await.id, after.id);
        assert_eq!(queue::purge_expired_dedupe_keys(&h.queue.store, at(122)).await.unwrap(), 1);
        let renewed = enqueue(7, at(123)).await;
        assert_ne!(renewed.id, after.id, "a purged key is taken afresh");
        assert_eq!(enqueue(8, at(124)).await.id, renewed.id);

        let mut other = NewJob { tenant_id: "t2".to_owned(), kind: "noop".to_owned(), payload: json!({}), ..NewJob::default() };
        other.dedupe_key = Some("order-7".to_owned());
        assert_ne!(h.queue.enqueue(other).await.unwrap().id, after.id, "keys are per tenant");
    }

    async fn racing_enqueues_with_one_dedupe_key_create_one_job(backend) {
        let Some(h) = harness(backend).await else { return };
        let mut enqueues = tokio::task::JoinSet::new();
        for n in 0..16 {
            let queue = h.queue.clone();
            enqueues.spawn(async move {
                let new = NewJob {
                    tenant_id: "t1".to_owned(),
                    kind: "noop".to_owned(),
                    payload: json!({ "n": n }),
                    dedupe_key: Some("burst".to_owned()),
                    dedupe_window: Some(Duration::from_secs(600)),
                    ..NewJob::default()
                };
                queue.enqueue(new).await.unwrap().id
            });
        }
        let mut ids = std::collections::HashSet::new();
        while let Some(id) = enqueues.join_next().await {
            ids.insert(id.unwrap());
        }
        assert_eq!(ids.len(), 1, "every enqueue got the same job: {ids:?}");
        assert_eq!(count_jobs(&h.queue.store, "dedupe_key = 'burst'").await, 1);
    }

    async fn bulk_enqueues_keep_dedupe_and_unique_keys(backend) {
        let Some(h) = harness(backend).await else { return };
        let now = Utc::now();
        let job = |dedupe: Option<&str>, unique: Option<&str>| NewJob {
            tenant_id: "t1".to_owned(),
            kind: "noop".to_owned(),
            payload: json!({}),
            dedupe_key: dedupe.map(str::to_owned),
            unique_key: unique.map(str::to_owned),
            ..NewJob::default()
        };
        let mut tx = h.queue.store.begin().await.unwrap();
        let inserted = queue::enqueue_many(
            &mut tx,
            &h.queue.settings,
            vec![job(Some("d"), None), job(Some("d"), None), job(None, Some("u")), job(None, Some("u")), job(None, None)],
            now,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(inserted, 3);
        assert_eq!(count_jobs(&h.queue.store, "tenant_id = 't1'").await, 3);
    }
}
