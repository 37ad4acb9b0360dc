//! `POST /events` and the live stream `GET /events/stream` (server-sent events).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json as ResponseJson;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_stream::wrappers::BroadcastStream;

use super::{Envelope, from_stream_entry, read_stream};
use crate::app::AppState;
use crate::auth::AuthError;
use crate::auth::principal::{
    Authorized, Principal, PublishEvents, ReadCases, ReadTasks, holds, recheck,
};
use crate::http::error::ApiError;
use crate::http::extract::Json;
use crate::with_pool;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    /// Topic name, e.g. `orders.created`.
    pub topic: String,
    /// Any JSON value; `null` when left out.
    #[serde(default)]
    pub payload: Value,
    /// Publishing again with the same key returns the first event (the `Idempotency-Key` header works too).
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Published {
    pub event: Envelope,
    /// Jobs created for event-triggered tasks on this topic.
    pub job_ids: Vec<String>,
    /// True when the idempotency key matched an earlier event, which is returned instead.
    pub duplicate: bool,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: String,
    tenant_id: String,
    topic: String,
    payload: String,
    source: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

fn validate_topic(topic: &str) -> Result<(), ApiError> {
    if docket_rules::topic::is_valid_topic(topic) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "topic",
            "must be 1-200 letters, digits or . _ - : /",
        ))
    }
}

/// Publish an event; tasks scheduled on its topic get a job each.
#[utoipa::path(post, path = "/events", operation_id = "publish_event", tag = "events",
    description = "Requires: supervisor or admin (`PublishEvents`), or an API key with `events:write`.",
    request_body = PublishEvent,
    responses((status = 202, body = Published), (status = 200, description = "duplicate idempotency key", body = Published), (status = 422, body = crate::http::error::ErrorBody), (status = 429, description = "queue quota exceeded; nothing was stored", body = crate::http::error::ErrorBody)))]
pub async fn publish(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<PublishEvents>,
    headers: HeaderMap,
    Json(body): Json<PublishEvent>,
) -> Result<(StatusCode, ResponseJson<Published>), ApiError> {
    validate_topic(&body.topic)?;
    if body.payload.to_string().len() > 256 * 1024 {
        return Err(ApiError::invalid_field(
            "payload",
            "must be at most 256 KiB of JSON",
        ));
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(body.idempotency_key.clone())
        .filter(|k| !k.is_empty());
    if key.as_ref().is_some_and(|k| k.chars().count() > 200) {
        return Err(ApiError::invalid_field(
            "idempotency_key",
            "must be at most 200 characters",
        ));
    }
    let now = crate::clock::now();
    let mut event = Envelope::internal(&principal.tenant_id, &body.topic, body.payload.clone());
    event.source = "api".to_owned();
    event.occurred_at = now;

    let mut tx = state.store.begin().await?;
    let Some(jobs) =
        super::record(&mut tx, &state.queue.settings, &event, key.as_deref(), 0).await?
    else {
        drop(tx);
        return duplicate(
            &state,
            &principal.tenant_id,
            key.as_deref().unwrap_or_default(),
        )
        .await;
    };
    if !jobs.is_empty() {
        let quotas = crate::queue::quota::Quotas::from_config(&state.config);
        if let Some(refused) =
            crate::queue::quota::check(&mut tx, quotas, &principal.tenant_id, 0, now).await?
        {
            return Err(refused.into());
        }
    }
    tx.commit().await?;
    state.events.publish(event.clone());
    state.queue.enqueued(&jobs);
    let job_ids = jobs.into_iter().map(|job| job.id).collect();
    Ok((
        StatusCode::ACCEPTED,
        ResponseJson(Published {
            event,
            job_ids,
            duplicate: false,
        }),
    ))
}

async fn duplicate(
    state: &AppState,
    tenant_id: &str,
    key: &str,
) -> Result<(StatusCode, ResponseJson<Published>), ApiError> {
    let row: EventRow = with_pool!(&state.store, pool => {
        sqlx::query_as("SELECT id, tenant_id, topic, payload, source, created_at FROM events WHERE tenant_id = $1 AND idempotency_key = $2")
            .bind(tenant_id)
            .bind(key)
            .fetch_one(pool)
            .await
    })?;
    let job_ids: Vec<String> = with_pool!(&state.store, pool => {
        sqlx::query_scalar("SELECT id FROM jobs WHERE tenant_id = $1 AND unique_key LIKE $2 ORDER BY id")
            .bind(tenant_id)
            .bind(format!("task:%:event:{}", row.id))
            .fetch_all(pool)
            .await
    })?;
    let event = Envelope {
        id: row.id,
        tenant_id: row.tenant_id,
        topic: row.topic,
        payload: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
        source: row.source,
        occurred_at: row.created_at,
    };
    Ok((
        StatusCode::OK,
        ResponseJson(Published {
            event,
            job_ids,
            duplicate: true,
        }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct StreamFilter {
    /// Only topics starting with this prefix (e.g. `job.`).
    pub topic: Option<String>,
}

/// Live events of your tenant as server-sent events. A reconnecting client's `Last-Event-ID` resumes
/// after that event: from the Redis Stream when `REDIS_URL` is set, otherwise from the last 10,000
/// events this process published.
#[utoipa::path(get, path = "/events/stream", operation_id = "stream_events", tag = "events",
    description = "Requires: any role (`ReadTasks`), or an API key with `tasks:read`. `case.*` events \
                   come only to callers who may read cases (`cases:read` for keys). The stream ends when \
                   the session or key behind it ends (re-checked every `EVENT_STREAM_RECHECK_SECONDS`); \
                   each user or key may hold `EVENT_STREAMS_PER_PRINCIPAL` streams open per process (429).",
    params(StreamFilter),
    responses((status = 200, description = "Server-sent events: `id` is the event id, `event` its topic and \
                                             `data` the event as JSON (an `Envelope`); a comment every 15 s \
                                             keeps the connection open",
               content_type = "text/event-stream", body = String),
              (status = 429, body = crate::http::error::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadTasks>,
    headers: HeaderMap,
    Query(filter): Query<StreamFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let holder = principal.actor.to_string();
    let Some(slot) = state
        .events
        .streams
        .acquire(&holder, state.config.event_streams_per_principal)
    else {
        let limit = state.config.event_streams_per_principal;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("You have {limit} event streams open already; close one first."),
        )
        .with_details(serde_json::json!({ "limit": limit }))
        .with_header(axum::http::header::RETRY_AFTER, 5));
    };
    let tenant = principal.tenant_id.clone();
    let prefix = filter.topic.unwrap_or_default();
    // What the caller may see, refreshed by every re-check (a role can change while a stream is open).
    let (access, may_see) = tokio::sync::watch::channel(principal.clone());
    let wanted = move |e: &Envelope| {
        e.tenant_id == tenant
            && e.topic.starts_with(&prefix)
            && may_read(&may_see.borrow(), &e.topic)
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty());
    let events: std::pin::Pin<Box<dyn Stream<Item = (String, Envelope)> + Send>> =
        match (state.events.redis(), last_event_id) {
            (Some(client), last) => {
                Box::pin(redis_stream(client.clone(), last.unwrap_or("$").to_owned()))
            }
            (None, None) => Box::pin(local_stream(Vec::new(), state.events.subscribe_local())),
            (None, Some(last)) => {
                let (backlog, receiver) = state.events.subscribe_after(last);
                Box::pin(local_stream(backlog, receiver))
            }
        };
    let shutdown = state.shutdown.clone();
    let ended = ends_with_its_credentials(state, principal, access);
    let stream = events
        .filter(move |(_, e)| std::future::ready(wanted(e)))
        .map(move |(id, e)| {
            // The slot lives as long as the stream; dropping the stream frees it.
            let _held = &slot;
            Ok(SseEvent::default()
                .id(id)
                .event(e.topic.clone())
                .json_data(&e)
                .unwrap_or_default())
        })
        .take_until(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = ended => {}
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Whether `principal` may see events on `topic`: `case.*` events carry case amounts and
/// references, so they need the right to read cases; the rest needs what the stream needs.
fn may_read(principal: &Principal, topic: &str) -> bool {
    !topic.starts_with("case.") || holds::<ReadCases>(principal)
}

/// Resolves when the session or API key behind the stream has ended (logout, revocation, a
/// disabled user or key, a suspended tenant); until then refreshes what the caller may see.
async fn ends_with_its_credentials(
    state: AppState,
    principal: Principal,
    access: tokio::sync::watch::Sender<Principal>,
) {
    let mut ticker = tokio::time::interval(state.config.event_stream_recheck);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match recheck(&state, &principal).await {
            Ok(now) => {
                access.send_replace(now);
            }
            // A database hiccup is not a reason to cut a stream; the next check decides.
            Err(AuthError::Database(e)) => {
                tracing::debug!(error = %e, "event stream: cannot re-check the caller");
            }
            Err(_) => return,
        }
    }
}

/// Buffered events, then live ones from this process, as (event id, event).
fn local_stream(
    backlog: Vec<std::sync::Arc<Envelope>>,
    receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<Envelope>>,
) -> impl Stream<Item = (String, Envelope)> + Send {
    let live = BroadcastStream::new(receiver).filter_map(|item| async move { item.ok() });
    stream::iter(backlog)
        .chain(live)
        .map(|e| (e.id.clone(), (*e).clone()))
}

/// Entries of the Redis Stream after `last_id`, as (stream id, event), reconnecting on errors.
fn redis_stream(
    client: redis::Client,
    last_id: String,
) -> impl Stream<Item = (String, Envelope)> + Send {
    stream::unfold((None, last_id), move |(conn, last_id)| {
        let client = client.clone();
        async move {
            let mut conn: Option<redis::aio::MultiplexedConnection> = conn;
            let mut last_id = last_id;
            loop {
                if conn.is_none() {
                    match client.get_multiplexed_async_connection().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::debug!(error = %e, "event stream: Redis unavailable; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                match read_stream(c, &last_id, 5000).await {
                    Ok(reply) => {
                        let batch: Vec<(String, Envelope)> = reply
                            .keys
                            .into_iter()
                            .flat_map(|k| k.ids)
                            .filter_map(|entry| from_stream_entry(&entry.map).map(|e| (entry.id, e)))
                            .collect();
                        if let Some((id, _)) = batch.last() {
                            last_id = id.clone();
                        }
                        if !batch.is_empty() {
                            return Some((stream::iter(batch), (conn, last_id)));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "event stream read failed; reconnecting");
                        conn = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    })
    .flatten()
}
