//! Events: published through the API (stored, and turned into jobs for event-triggered tasks) and
//! emitted by Docket itself for every task, job and run state change. They fan out to live
//! subscribers (`GET /events/stream`, SSE) and, with `REDIS_URL`, to the Redis Stream
//! `docket:events` for consumer groups. Without Redis an in-process channel stands in, which is all
//! one process needs; with several processes the Redis Stream carries events between them.

pub mod http;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OnceCell, broadcast, mpsc};
use uuid::Uuid;

/// The Redis Stream every event is appended to.
pub const STREAM_KEY: &str = "docket:events";
/// Approximate length the stream is trimmed to.
const STREAM_MAXLEN: usize = 100_000;
/// Events a slow in-process subscriber may lag before it skips ahead.
const BROADCAST_CAPACITY: usize = 4096;
/// Events buffered for Redis before publishing blocks callers.
const OUTBOX_CAPACITY: usize = 65_536;

pub fn routes() -> OpenApiRouter<crate::app::AppState> {
    OpenApiRouter::new()
        .routes(routes!(http::publish))
        .routes(routes!(http::stream))
}

/// Topic names: 1-200 letters, digits and `. _ - : /`.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 200
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Envelope {
    pub id: String,
    pub tenant_id: String,
    /// E.g. `orders.created` (from the API) or `job.succeeded` (from Docket).
    pub topic: String,
    #[schema(value_type = Object)]
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
    outbox: Option<mpsc::Sender<Arc<Envelope>>>,
    redis: Option<redis::Client>,
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
            outbox,
            redis,
        }
    }

    /// Publishes after the change it describes has committed. Never fails the caller: events are
    /// notifications, the database holds the truth.
    pub fn publish(&self, event: Envelope) {
        let event = Arc::new(event);
        // No receivers is normal (nobody is watching).
        let _ = self.local.send(event.clone());
        if let Some(outbox) = &self.outbox
            && outbox.try_send(event).is_err()
        {
            tracing::warn!("event outbox to Redis is full; dropping an event notification");
        }
    }

    pub fn subscribe_local(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }

    pub fn redis(&self) -> Option<&redis::Client> {
        self.redis.as_ref()
    }
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
