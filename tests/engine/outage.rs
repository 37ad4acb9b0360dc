//! Recovery after a PostgreSQL outage: once the server is back, a job enqueued by another process
//! starts within about one poll interval (the worker neither backs off beyond it nor waits for a
//! notification its listener missed while disconnected). PostgreSQL only: SQLite is in-process and
//! has no outage to recover from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use docket::app::AppState;
use docket::queue::worker::{Registry, Worker};
use docket::queue::{self, NewJob, Queue, Settings};
use docket::store::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{PgServer, TestDatabase, test_config, unavailable};

const POLL_INTERVAL: Duration = Duration::from_millis(500);

fn noop() -> NewJob {
    NewJob {
        tenant_id: "t1".to_owned(),
        kind: "noop".to_owned(),
        payload: json!({}),
        ..NewJob::default()
    }
}

/// Enqueues through `store` (standing in for another process, so only NOTIFY or polling can wake
/// the worker), retrying while the server is still coming up; returns the job id and when its
/// enqueue committed.
async fn enqueue_elsewhere(store: &Store, settings: &Settings) -> (String, Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut tx = store.begin().await?;
            let job = queue::enqueue(&mut tx, settings, noop(), docket::clock::now()).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(job.id)
        };
        match attempt.await {
            Ok(id) => return (id, Instant::now()),
            Err(e) => assert!(Instant::now() < deadline, "cannot enqueue: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after `since` the job left `queued`.
async fn start_latency(store: &Store, id: &str, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(job)) = queue::get(store, "t1", id).await
            && job.status != "queued"
        {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "job {id} never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_after_a_postgres_restart_starts_within_the_poll_interval() {
    // A server of its own: stopping the shared one would break the tests running beside this one.
    let server = match PgServer::start() {
        Ok(server) => server,
        Err(why) => return unavailable("PostgreSQL", &why),
    };
    let db = TestDatabase {
        url: server.create_database().await,
        dir: tempfile::tempdir().unwrap(),
    };
    let state = AppState::initialise(test_config(&db, &[])).await.unwrap();
    let settings = Settings {
        poll_interval: POLL_INTERVAL,
        ..state.queue.settings
    };
    let queue = Queue::new(state.store.clone(), settings, state.events.clone());
    let other_process = AppState::initialise(test_config(&db, &[]))
        .await
        .unwrap()
        .store;
    let stop = CancellationToken::new();
    let worker = Worker::new(queue.clone(), Arc::new(Registry::builtin()), "survivor");
    let handle = tokio::spawn(worker.run(stop.clone(), Duration::from_secs(5)));

    let (id, at) = enqueue_elsewhere(&other_process, &settings).await;
    let warm = start_latency(&other_process, &id, at).await;
    let mut latencies = Vec::new();
    for outage in [
        Duration::from_secs(2),
        Duration::from_secs(4),
        Duration::from_secs(7),
    ] {
        server.stop();
        tokio::time::sleep(outage).await;
        server.resume().unwrap();
        let (id, at) = enqueue_elsewhere(&other_process, &settings).await;
        latencies.push(start_latency(&other_process, &id, at).await);
    }
    eprintln!(
        "start latency: before the outages {warm:?}, after each restart {latencies:?} (poll interval {POLL_INTERVAL:?})"
    );
    stop.cancel();
    handle.await.unwrap();
    // Generous for a busy 2-core machine; before the fix the worst case was about 5 s (a claim
    // waiting out the pool's acquire timeout) plus the poll interval.
    let bound = POLL_INTERVAL * 3 + Duration::from_millis(1500);
    for latency in &latencies {
        assert!(
            *latency < bound,
            "started {latency:?} after its enqueue, more than {bound:?}: {latencies:?}"
        );
    }
}
