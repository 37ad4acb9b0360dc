//! Operating views of the queue: live workers and queue depth.

use axum::Json as ResponseJson;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::app::AppState;
use crate::auth::principal::{Authorized, ReadOperations};
use crate::http::error::ApiError;
use crate::{nodes, with_pool};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub role: String,
    /// Platform admins only: where the processes run is about the whole installation, not a tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Platform admins only, like `hostname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// This tenant's jobs the worker is running now.
    pub jobs_in_hand: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct QueueDepth {
    pub kind: String,
    /// `queued`, `failed` (waiting to retry) or `running`.
    pub status: String,
    pub jobs: i64,
    /// Due time of the oldest job in this group.
    pub oldest_run_at: Option<DateTime<Utc>>,
}

/// Live worker processes (heartbeat within the last 30 seconds).
#[utoipa::path(get, path = "/workers", tag = "runs",
    description = "Requires: supervisor or admin (`ReadOperations`), or an API key with `tasks:read`. \
                   Host names and process ids are shown to platform admins only.",
    responses((status = 200, body = Vec<WorkerInfo>)))]
pub async fn list_workers(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadOperations>,
) -> Result<ResponseJson<Vec<WorkerInfo>>, ApiError> {
    let since = crate::clock::now()
        - chrono::Duration::seconds(3 * nodes::HEARTBEAT_INTERVAL.as_secs() as i64);
    let alive = nodes::list_alive(&state.store, since).await?;
    let in_hand: Vec<(String, i64)> = with_pool!(&state.store, pool => {
        sqlx::query_as("SELECT lease_owner, COUNT(*) FROM jobs WHERE tenant_id = $1 AND status = 'running' GROUP BY lease_owner")
            .bind(&principal.tenant_id)
            .fetch_all(pool)
            .await
    })?;
    let show_hosts = principal.platform_admin;
    let workers = alive
        .into_iter()
        .filter(|n| n.role == "worker" || n.role == "all")
        .map(|n| WorkerInfo {
            jobs_in_hand: in_hand
                .iter()
                .find(|(owner, _)| *owner == n.id)
                .map_or(0, |(_, c)| *c),
            id: n.id,
            role: n.role,
            hostname: show_hosts.then_some(n.hostname),
            pid: show_hosts.then_some(n.pid),
            version: n.version,
            started_at: n.started_at,
            heartbeat_at: n.heartbeat_at,
        })
        .collect();
    Ok(ResponseJson(workers))
}

/// The tenant's unfinished jobs by kind and state.
#[utoipa::path(get, path = "/queues", tag = "runs",
    description = "Requires: supervisor or admin (`ReadOperations`), or an API key with `tasks:read`.",
    responses((status = 200, body = Vec<QueueDepth>)))]
pub async fn list_queues(
    State(state): State<AppState>,
    Authorized(principal, ..): Authorized<ReadOperations>,
) -> Result<ResponseJson<Vec<QueueDepth>>, ApiError> {
    Ok(ResponseJson(
        depth(&state.store, Some(&principal.tenant_id)).await?,
    ))
}

/// Unfinished jobs by kind and state, for one tenant or (for metrics) all.
pub async fn depth(
    store: &crate::store::Store,
    tenant_id: Option<&str>,
) -> Result<Vec<QueueDepth>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as(
            "SELECT kind, status, COUNT(*) AS jobs, MIN(run_at) AS oldest_run_at FROM jobs \
             WHERE status IN ('queued', 'failed', 'running') AND ($1 IS NULL OR tenant_id = $1) \
             GROUP BY kind, status ORDER BY kind, status",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })
}
