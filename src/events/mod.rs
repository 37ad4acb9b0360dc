//! Events: published through the API (stored, and turned into jobs for event-triggered tasks) and
//! emitted by Docket itself for every task, job and run state change. They fan out to live
//! subscribers (`GET /events/stream`, SSE) and, with `REDIS_URL`, to the Redis Stream
//! `docket:events` for consumer groups. Without Redis an in-process channel and a replay buffer of
//! recent events stand in, which is all one process needs; with several processes the Redis Stream
//! carries events between them.

pub mod http;
pub mod streams;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OnceCell, broadcast, mpsc};
use uuid::Uuid;

use crate::queue;
use crate::scheduler::tasks::{COLUMNS, TaskRow};
use crate::store::Tx;
use crate::with_tx;

/// The Redis Stream every event is appended to.
pub const STREAM_KEY: &str = "docket:events";
/// Approximate length the stream is trimmed to.
const STREAM_MAXLEN: usize = 100_000;
/// Events a slow in-process subscriber may lag before it skips ahead.
const BROADCAST_CAPACITY: usize = 4096;
/// Recent events kept in process so an SSE client without Redis can resume with `Last-Event-ID`.
const REPLAY_CAPACITY: usize = 10_000;
/// Events buffered for Redis before publishing blocks callers.
const OUTBOX_CAPACITY: usize = 65_536;

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::publish))
        .routes(routes!(http::stream))
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Envelope {
    pub id: String,
    pub tenant_id: String,
    /// E.g. `orders.created` (from the API) or `job.succeeded` (from Docket).
    pub topic: String,
    /// Any JSON value (`null` when the publisher sent none).
    pub payload: Value,
    /// `api` or `docket`.
    pub source: String,
    pub occurred_at: DateTime<Utc>,
}

impl Envelope {
    /// An event Docket emits about its own state.
    pub fn internal(tenant_id: &str, topic: &str, payload: Value) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant_id.to_owned(),
            topic: topic.to_owned(),
            payload,
            source: "docket".to_owned(),
            occurred_at: crate::clock::now(),
        }
    }
}

/// Fans events out to local subscribers and (when configured) the Redis Stream.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<Envelope>>,
    /// The latest events, oldest first. Sending on `local` happens under this lock so a subscriber
    /// taking a backlog and a receiver together sees every event exactly once.
    recent: Arc<Mutex<VecDeque<Arc<Envelope>>>>,
    outbox: Option<mpsc::Sender<Arc<Envelope>>>,
    redis: Option<redis::Client>,
    /// Open `GET /events/stream` responses of this process, per caller.
    pub streams: streams::StreamSlots,
}

impl EventBus {
    /// A bus; with a Redis client, a background task appends events to the stream in batches.
    pub fn new(redis: Option<redis::Client>) -> Self {
        let (local, _) = broadcast::channel(BROADCAST_CAPACITY);
        let outbox = redis.clone().map(|client| {
            let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
            tokio::spawn(relay_to_redis(client, rx));
            tx
        });
        Self {
            local,
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(1024))),
            outbox,
            redis,
            streams: streams::StreamSlots::default(),
        }
    }

    /// Publishes after the change it describes has committed. Never fails the caller: events are
    /// notifications, the database holds the truth.
    pub fn publish(&self, event: Envelope) {
        let event = Arc::new(event);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == REPLAY_CAPACITY {
                recent.pop_front();
            }
            recent.push_back(event.clone());
            // No receivers is normal (nobody is watching).
            let _ = self.local.send(event.clone());
        }
        if let Some(outbox) = &self.outbox
            && outbox.try_send(event).is_err()
        {
            tracing::warn!("event outbox to Redis is full; dropping an event notification");
        }
    }

    pub fn subscribe_local(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }

    /// Events published in this process after `last_id`, plus a receiver for everything after them.
    /// An id no longer buffered replays what is left that is newer (ids are time-ordered UUIDv7).
    pub fn subscribe_after(
        &self,
        last_id: &str,
    ) -> (Vec<Arc<Envelope>>, broadcast::Receiver<Arc<Envelope>>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = self.local.subscribe();
        let backlog = match recent.iter().position(|e| e.id == last_id) {
            Some(at) => recent.iter().skip(at + 1).cloned().collect(),
            None => recent
                .iter()
                .filter(|e| e.id.as_str() > last_id)
                .cloned()
                .collect(),
        };
        (backlog, receiver)
    }

    pub fn redis(&self) -> Option<&redis::Client> {
        self.redis.as_ref()
    }
}

/// Stores `event` inside `tx` and enqueues a job for every active task listening on its topic, so
/// the event exists, and its jobs with it, exactly when the change it describes commits. `None` when
/// `idempotency_key` was used before (nothing is written). The jobs get `depth`, the call depth of
/// whatever published the event (0 unless a pipeline did). Publish the event and announce the jobs
/// after the commit.
pub async fn record(
    tx: &mut Tx,
    settings: &queue::Settings,
    event: &Envelope,
    idempotency_key: Option<&str>,
    depth: u32,
) -> Result<Option<Vec<queue::Job>>, sqlx::Error> {
    let inserted = with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO events (id, tenant_id, topic, payload, idempotency_key, source, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.tenant_id)
        .bind(&event.topic)
        .bind(event.payload.to_string())
        .bind(idempotency_key)
        .bind(&event.source)
        .bind(event.occurred_at)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if inserted == 0 {
        return Ok(None);
    }
    let tasks: Vec<TaskRow> = with_tx!(tx, conn => {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND schedule_kind = 'event' AND status = 'active' AND schedule_expr = $2"
        )))
        .bind(&event.tenant_id)
        .bind(&event.topic)
        .fetch_all(conn)
        .await
    })?;
    let mut jobs = Vec::with_capacity(tasks.len());
    for task in &tasks {
        let mut job = task.job_for(event.occurred_at);
        job.payload["event"] = serde_json::json!(event);
        TaskRow::set_call_depth(&mut job, depth);
        task.render_keys(&mut job);
        job.unique_key = Some(format!("task:{}:event:{}", task.id, event.id));
        jobs.push(queue::enqueue(tx, settings, job, event.occurred_at).await?);
    }
    Ok(Some(jobs))
}

/// Appends queued events to the Redis Stream, pipelining whatever has accumulated.
async fn relay_to_redis(client: redis::Client, mut rx: mpsc::Receiver<Arc<Envelope>>) {
    let connection: OnceCell<redis::aio::ConnectionManager> = OnceCell::new();
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let conn = match connection
            .get_or_try_init(|| redis::aio::ConnectionManager::new(client.clone()))
            .await
        {
            Ok(conn) => conn.clone(),
            Err(e) => {
                tracing::warn!(error = %e, dropped = batch.len(), "Redis unavailable; event notifications dropped");
                batch.clear();
                continue;
            }
        };
        let mut pipe = redis::pipe();
        for event in &batch {
            let fields = [
                ("id", event.id.clone()),
                ("tenant_id", event.tenant_id.clone()),
                ("topic", event.topic.clone()),
                ("source", event.source.clone()),
                ("occurred_at", event.occurred_at.to_rfc3339()),
                ("payload", event.payload.to_string()),
            ];
            pipe.xadd_maxlen(
                STREAM_KEY,
                redis::streams::StreamMaxlen::Approx(STREAM_MAXLEN),
                "*",
                &fields,
            )
            .ignore();
        }
        let mut conn = conn;
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, dropped = batch.len(), "appending events to Redis failed");
        }
        batch.clear();
    }
}

/// Reads events back from a Redis Stream entry.
pub fn from_stream_entry(
    map: &std::collections::HashMap<String, redis::Value>,
) -> Option<Envelope> {
    let field = |name: &str| {
        map.get(name)
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
    };
    Some(Envelope {
        id: field("id")?,
        tenant_id: field("tenant_id")?,
        topic: field("topic")?,
        source: field("source")?,
        occurred_at: DateTime::parse_from_rfc3339(&field("occurred_at")?)
            .ok()?
            .with_timezone(&Utc),
        payload: serde_json::from_str(&field("payload")?).ok()?,
    })
}

/// One blocking read of the event stream after `last_id` (`$` for only new entries).
pub(crate) async fn read_stream(
    conn: &mut redis::aio::MultiplexedConnection,
    last_id: &str,
    block_ms: usize,
) -> redis::RedisResult<redis::streams::StreamReadReply> {
    let options = redis::streams::StreamReadOptions::default()
        .block(block_ms)
        .count(100);
    conn.xread_options(&[STREAM_KEY], &[last_id], &options)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str) -> Envelope {
        Envelope::internal("t1", topic, Value::Null)
    }

    #[tokio::test]
    async fn resuming_replays_only_what_came_after_and_then_goes_live() {
        let bus = EventBus::new(None);
        let first = event("a");
        let first_id = first.id.clone();
        bus.publish(first);
        bus.publish(event("b"));
        let (backlog, mut live) = bus.subscribe_after(&first_id);
        assert_eq!(
            backlog.iter().map(|e| e.topic.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        bus.publish(event("c"));
        assert_eq!(
            live.recv().await.map(|e| e.topic.clone()).ok(),
            Some("c".into())
        );
    }

    #[tokio::test]
    async fn an_evicted_id_replays_the_newer_events_still_buffered() {
        let bus = EventBus::new(None);
        let oldest = event("evicted");
        let oldest_id = oldest.id.clone();
        bus.publish(oldest);
        for _ in 0..REPLAY_CAPACITY {
            bus.publish(event("kept"));
        }
        let (backlog, _) = bus.subscribe_after(&oldest_id);
        assert_eq!(backlog.len(), REPLAY_CAPACITY);
        assert!(backlog.iter().all(|e| e.topic == "kept"));
    }
}
