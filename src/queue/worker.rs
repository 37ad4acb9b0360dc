//! Workers: claim due jobs, run their handlers with a timeout while renewing the lease, record the
//! outcome, and on shutdown let running jobs finish within the grace period and hand back the rest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Claimed, Outcome, Queue, Settled};
use crate::store::Store;

/// What a handler gets: the job's tenant, payload and attempt number.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: String,
    pub tenant_id: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub payload: Value,
    pub attempt: i32,
    pub max_attempts: i32,
    /// The application, for handlers that reach into other modules (pipelines). `None` in
    /// workers started without it (benchmarks, queue tests).
    pub app: Option<crate::app::AppState>,
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Handler = Arc<dyn Fn(JobContext) -> HandlerFuture + Send + Sync>;

/// Job handlers by kind. Domain modules register theirs; an unknown kind fails the job for good.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Handler>,
}

impl Registry {
    /// The handlers every Docket process knows.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        // A job that does nothing: used by `docket bench` and to check a deployment end to end.
        registry.register("noop", |_| async { Ok(json!({})) });
        // Holds a worker slot for `{"seconds": n}` (the job's timeout still applies): for drills that
        // kill or stop workers mid-job, and to see a deployment's leases and heartbeats at work.
        registry.register("sleep", |ctx| async move {
            let seconds = ctx.payload["seconds"]
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or("payload.seconds must be a non-negative number")?;
            tokio::time::sleep(Duration::from_secs_f64(seconds.min(86_400.0))).await;
            Ok(json!({ "slept_seconds": seconds }))
        });
        registry
    }

    /// A handler whose error is retried while attempts remain.
    pub fn register<F, Fut>(&mut self, kind: &str, handler: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.register_outcome(kind, move |ctx| {
            let done = handler(ctx);
            async move {
                match done.await {
                    Ok(output) => Outcome::Succeeded(output),
                    Err(error) => Outcome::Failed(error),
                }
            }
        });
    }

    /// A handler that decides the outcome itself: permanent failures, or suspending the job until
    /// a time or a wake-up (pipelines waiting for a person or a timer).
    pub fn register_outcome<F, Fut>(&mut self, kind: &str, handler: F)
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_owned(), Arc::new(move |ctx| Box::pin(handler(ctx))));
    }

    fn get(&self, kind: &str) -> Option<Handler> {
        self.handlers.get(kind).cloned()
    }
}

pub struct Worker {
    queue: Queue,
    registry: Arc<Registry>,
    id: String,
    app: Option<crate::app::AppState>,
}

impl Worker {
    pub fn new(queue: Queue, registry: Arc<Registry>, id: impl Into<String>) -> Self {
        Self {
            queue,
            registry,
            id: id.into(),
            app: None,
        }
    }

    /// Gives handlers the application (see [`JobContext::app`]).
    pub fn with_app(mut self, app: crate::app::AppState) -> Self {
        self.app = Some(app);
        self
    }

    /// Runs until `shutdown` is cancelled, then drains: running jobs get `grace` to finish, the rest
    /// are released so another worker can take them at once.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let settings = self.queue.settings;
        let concurrency = usize::try_from(settings.concurrency).unwrap_or(1).max(1);
        let ready = self.queue.ready();
        let claim_threshold = (concurrency / 4).max(1);
        let abandon = CancellationToken::new();
        let (completions, pending) = mpsc::channel(COMPLETION_QUEUE);
        let completer = tokio::spawn(complete_in_batches(
            self.queue.store.clone(),
            self.id.clone(),
            settings.backoff_max_delay,
            pending,
        ));
        let _listener = spawn_pg_listener(&self.queue.store, ready.clone(), shutdown.clone());
        let mut running: JoinSet<()> = JoinSet::new();
        let mut claim_failed = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Register interest before claiming, so an enqueue between the claim and the wait is not missed.
            let notified = ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            while running.try_join_next().is_some() {}
            let free = concurrency.saturating_sub(running.len());
            let mut claimed_full_batch = false;
            // Claim in batches: one slot at a time would cost a transaction per job under load.
            let wants_claim = free > 0 && (free >= claim_threshold || running.is_empty());
            // After a failed claim (an outage), wait at most a poll interval for the database
            // before claiming: a claim would sit out the pool's whole acquire timeout on a
            // connection attempt made while the server was down. Healthy claims skip the check.
            let reachable = if wants_claim && claim_failed {
                self.queue
                    .store
                    .reachable_within(settings.poll_interval)
                    .await
            } else {
                Ok(())
            };
            if let Err(e) = reachable {
                tracing::debug!(error = %e, "database not reachable; claiming at the next poll");
            } else if wants_claim {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match super::claim(
                    &self.queue.store,
                    &self.id,
                    limit,
                    settings.lease,
                    crate::clock::now(),
                )
                .await
                {
                    Ok(jobs) => {
                        claim_failed = false;
                        claimed_full_batch = jobs.len() == free;
                        for claimed in jobs {
                            running.spawn(execute(
                                self.queue.clone(),
                                self.registry.clone(),
                                self.app.clone(),
                                self.id.clone(),
                                claimed,
                                abandon.clone(),
                                completions.clone(),
                            ));
                        }
                    }
                    Err(e) => {
                        claim_failed = true;
                        tracing::warn!(error = %e, "claiming jobs failed");
                    }
                }
            }
            if claimed_full_batch && running.len() < concurrency {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = &mut notified => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        let drained = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                jobs = running.len(),
                "jobs still running after the grace period; releasing them"
            );
            abandon.cancel();
            while running.join_next().await.is_some() {}
        }
        drop(completions);
        let _ = completer.await;
    }
}

/// An outcome on its way to the database, and where to report how it settled.
type Completion = (
    Claimed,
    Outcome,
    oneshot::Sender<Result<Settled, sqlx::Error>>,
);

/// Outcomes waiting to be written; running jobs wait for their slot when it is full.
const COMPLETION_QUEUE: usize = 4096;
/// Most outcomes written in one transaction.
const COMPLETION_BATCH: usize = 512;

/// Writes job outcomes in batches: whatever finished while the previous batch was being written
/// goes into the next transaction, so one commit covers many jobs under load and one job when idle.
async fn complete_in_batches(
    store: Store,
    worker_id: String,
    backoff_max_delay: Duration,
    mut pending: mpsc::Receiver<Completion>,
) {
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    while pending.recv_many(&mut batch, COMPLETION_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|(claimed, outcome, reply)| ((claimed, outcome), reply))
            .unzip();
        match super::finish_many(
            &store,
            &worker_id,
            items,
            backoff_max_delay,
            crate::clock::now(),
        )
        .await
        {
            Ok(settled) => {
                for (reply, settled) in replies.into_iter().zip(settled) {
                    let _ = reply.send(Ok(settled));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = replies.len(), "cannot record job outcomes; they will be retried after their leases expire");
                for reply in replies {
                    let _ = reply.send(Err(sqlx::Error::WorkerCrashed));
                }
            }
        }
    }
}

fn spawn_pg_listener(
    store: &Store,
    ready: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let Store::Postgres(pool) = store else {
        return None;
    };
    Some(crate::store::spawn_listener(
        pool.clone(),
        super::NOTIFY_CHANNEL,
        ready,
        shutdown,
    ))
}

/// Runs one claimed job to an outcome and records it.
async fn execute(
    queue: Queue,
    registry: Arc<Registry>,
    app: Option<crate::app::AppState>,
    worker_id: String,
    claimed: Claimed,
    abandon: CancellationToken,
    completions: mpsc::Sender<Completion>,
) {
    let settings = queue.settings;
    let job = &claimed.job;
    let started = std::time::Instant::now();
    let delay = (crate::clock::now() - job.run_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("docket_job_start_delay_seconds", "kind" => job.kind.clone())
        .record(delay.as_secs_f64());
    queue.events.publish(job_event(
        job,
        &claimed.run_id,
        "job.started",
        &worker_id,
        None,
    ));

    let outcome = match registry.get(&job.kind) {
        None => Outcome::FailedPermanently(format!(
            "no handler is registered for job kind {:?}",
            job.kind
        )),
        Some(handler) => {
            let context = JobContext {
                job_id: job.id.clone(),
                tenant_id: job.tenant_id.clone(),
                task_id: job.task_id.clone(),
                kind: job.kind.clone(),
                payload: job.payload.clone(),
                attempt: job.attempts,
                max_attempts: job.max_attempts,
                app,
            };
            // Spawned so a panic is contained and a timeout or shutdown can abort it.
            let mut task = tokio::spawn(handler(context));
            let timeout = Duration::from_secs(u64::try_from(job.timeout_seconds).unwrap_or(1));
            let lease_keeper = keep_lease(&queue.store, &claimed, &worker_id, settings.lease);
            tokio::select! {
                result = &mut task => match result {
                    Ok(outcome) => outcome,
                    Err(e) if e.is_panic() => Outcome::Failed("the handler panicked".to_owned()),
                    Err(e) => Outcome::Failed(format!("the handler was cancelled: {e}")),
                },
                () = tokio::time::sleep(timeout) => {
                    task.abort();
                    Outcome::Failed(format!("timed out after {} s", timeout.as_secs()))
                }
                () = abandon.cancelled() => {
                    task.abort();
                    Outcome::Released
                }
                () = lease_keeper => {
                    task.abort();
                    tracing::warn!(job_id = %job.id, "lease lost; another worker has the job");
                    return;
                }
            }
        }
    };
    let label = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed(_) | Outcome::FailedPermanently(_) => "failed",
        Outcome::Released => "released",
        Outcome::Suspended { .. } => "suspended",
    };
    metrics::histogram!("docket_job_duration_seconds", "kind" => job.kind.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("docket_jobs_total", "kind" => job.kind.clone(), "outcome" => label)
        .increment(1);
    let error = match &outcome {
        Outcome::Failed(e) | Outcome::FailedPermanently(e) => Some(e.clone()),
        Outcome::Succeeded(_) | Outcome::Released | Outcome::Suspended { .. } => None,
    };
    let (reply, settled) = oneshot::channel();
    if completions
        .send((claimed.clone(), outcome, reply))
        .await
        .is_err()
    {
        return;
    }
    let settled = settled.await.unwrap_or(Err(sqlx::Error::WorkerCrashed));
    let topic = match settled {
        Ok(Settled::Stale) => {
            tracing::warn!(job_id = %job.id, "result discarded: the lease had expired");
            return;
        }
        Ok(Settled::Dead) => {
            tracing::warn!(job_id = %job.id, kind = %job.kind, "job is dead (no attempts left)");
            "job.dead"
        }
        Ok(Settled::WillRetry) => {
            queue.wake();
            "job.failed"
        }
        Ok(Settled::Succeeded) => "job.succeeded",
        Ok(Settled::Requeued) => "job.released",
        Ok(Settled::Suspended) => "job.suspended",
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "cannot record the job's outcome; it will be retried after its lease expires");
            return;
        }
    };
    queue
        .events
        .publish(job_event(job, &claimed.run_id, topic, &worker_id, error));
}

/// The event announcing a job's state change.
fn job_event(
    job: &super::Job,
    run_id: &str,
    topic: &str,
    worker_id: &str,
    error: Option<String>,
) -> crate::events::Envelope {
    crate::events::Envelope::internal(
        &job.tenant_id,
        topic,
        json!({
            "job_id": job.id, "run_id": run_id, "kind": job.kind, "task_id": job.task_id,
            "attempt": job.attempts, "worker_id": worker_id, "error": error,
        }),
    )
}

/// Renews the lease at a third of its length; returns only when the lease was lost.
async fn keep_lease(store: &Store, claimed: &Claimed, worker_id: &str, lease: Duration) {
    let mut ticker = tokio::time::interval(lease / 3);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match super::heartbeat(store, claimed, worker_id, lease, crate::clock::now()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(job_id = %claimed.job.id, error = %e, "lease renewal failed; retrying")
            }
        }
    }
}
