//! Operational endpoints: health probes and Prometheus metrics. Served by every role.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::app::{AppState, Role};
use crate::config::DatabaseKind;
use crate::http::error::ApiError;
use crate::nodes;

/// A dependency that does not answer within this time counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Processes whose heartbeat is older than this are not counted as alive.
const ALIVE_WINDOW: Duration = Duration::from_secs(3 * nodes::HEARTBEAT_INTERVAL.as_secs());

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// Names of the checks that failed.
    pub failing: Vec<&'static str>,
    pub checks: BTreeMap<&'static str, Check>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `up`, `down` or `skipped` (not configured).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    fn up(started: Instant, detail: Option<String>) -> Self {
        Self {
            status: "up",
            latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
            detail,
        }
    }

    fn down(detail: impl Into<String>) -> Self {
        Self {
            status: "down",
            latency_ms: None,
            detail: Some(detail.into()),
        }
    }

    fn skipped(detail: &str) -> Self {
        Self {
            status: "skipped",
            latency_ms: None,
            detail: Some(detail.to_owned()),
        }
    }
}

/// Liveness and version.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "get_health", security(()), responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Liveness and version, under the API prefix for clients that only know the API's base URL.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "get_api_health", security(()), responses((status = 200, body = Health)))]
pub async fn api_health() -> Json<Health> {
    health().await
}

/// The process is up (it does not look at dependencies; restart only if this fails).
#[utoipa::path(get, path = "/health/live", operation_id = "get_liveness", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn live() -> Json<Health> {
    health().await
}

/// Ready to take traffic: database reachable, Redis reachable (when configured), schema current and
/// not shutting down. `503` names the failing checks.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    operation_id = "get_readiness",
    security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness))
)]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (database, redis) = tokio::join!(check_database(&state), check_redis(&state));
    let mut checks = BTreeMap::new();
    checks.insert("database", database.0);
    checks.insert("migrations", database.1);
    checks.insert("redis", redis);
    checks.insert(
        "shutdown",
        if state.shutdown.is_cancelled() {
            Check::down("draining: the process is shutting down")
        } else {
            Check {
                status: "up",
                latency_ms: None,
                detail: None,
            }
        },
    );
    let failing: Vec<&'static str> = checks
        .iter()
        .filter(|(_, c)| c.status == "down")
        .map(|(name, _)| *name)
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if failing.is_empty() {
            "ready"
        } else {
            "unavailable"
        },
        failing,
        checks,
    };
    (status, Json(body)).into_response()
}

/// The database check and the migrations check (which needs the database).
async fn check_database(state: &AppState) -> (Check, Check) {
    let started = Instant::now();
    let backend = match state.store.kind() {
        DatabaseKind::Sqlite => "sqlite",
        DatabaseKind::Postgres => "postgres",
    };
    match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
        Err(_) => {
            return (
                Check::down(format!("{backend}: no answer within {CHECK_TIMEOUT:?}")),
                Check::skipped("database down"),
            );
        }
        Ok(Err(e)) => {
            return (
                Check::down(format!("{backend}: {e}")),
                Check::skipped("database down"),
            );
        }
        Ok(Ok(())) => {}
    }
    let database = Check::up(started, Some(backend.to_owned()));
    let migrations = match tokio::time::timeout(CHECK_TIMEOUT, state.store.schema_status()).await {
        Err(_) => Check::down("no answer within the check timeout"),
        Ok(Err(e)) => Check::down(e.to_string()),
        Ok(Ok(s)) if s.is_too_new() => Check::down(format!(
            "database schema {} is newer than this binary ({})",
            s.database_version.unwrap_or_default(),
            s.binary_version
        )),
        Ok(Ok(s)) if s.pending > 0 => Check::down(format!(
            "{} migration(s) pending; run `docket migrate`",
            s.pending
        )),
        Ok(Ok(s)) => Check {
            status: "up",
            latency_ms: None,
            detail: Some(format!("schema version {}", s.binary_version)),
        },
    };
    (database, migrations)
}

async fn check_redis(state: &AppState) -> Check {
    let Some(client) = &state.redis else {
        return Check::skipped("REDIS_URL not set");
    };
    let started = Instant::now();
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Err(_) => Check::down(format!("no answer within {CHECK_TIMEOUT:?}")),
        Ok(Err(e)) => Check::down(e.to_string()),
        Ok(Ok(_)) => Check::up(started, None),
    }
}

/// Prometheus metrics in the text exposition format. Requires `Authorization: Bearer $METRICS_TOKEN`
/// when that variable is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "get_metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 401, body = crate::http::error::ErrorBody))
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.config.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
            return Err(ApiError::unauthorized(
                "A valid METRICS_TOKEN bearer token is required.",
            ));
        }
    }
    record_gauges(&state).await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response())
}

/// Point-in-time values that are cheaper to read at scrape time than to track continuously.
async fn record_gauges(state: &AppState) {
    let pool = state.store.pool_stats();
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.size.saturating_sub(pool.idle)));
    metrics::gauge!("db_pool_max_connections").set(f64::from(pool.max));

    if let Ok(Ok(depth)) =
        tokio::time::timeout(CHECK_TIMEOUT, crate::queue::http::depth(&state.store, None)).await
    {
        // Groups that emptied since the last scrape must read 0, not their last value.
        static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
        let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (kind, status) in seen.iter() {
            let labels = [("kind", kind.clone()), ("status", status.clone())];
            metrics::gauge!("docket_queue_depth", &labels).set(0.0);
            metrics::gauge!("docket_queue_oldest_age_seconds", &labels).set(0.0);
        }
        let now = crate::clock::now();
        for group in depth {
            let labels = [
                ("kind", group.kind.clone()),
                ("status", group.status.clone()),
            ];
            metrics::gauge!("docket_queue_depth", &labels).set(group.jobs as f64);
            if let Some(oldest) = group.oldest_run_at {
                let age = (now - oldest).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::gauge!("docket_queue_oldest_age_seconds", &labels).set(age);
            }
            let key = (group.kind, group.status);
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
    }

    let since = crate::clock::now()
        - chrono::Duration::from_std(ALIVE_WINDOW).unwrap_or(chrono::Duration::seconds(30));
    if let Ok(Ok(alive)) =
        tokio::time::timeout(CHECK_TIMEOUT, nodes::list_alive(&state.store, since)).await
    {
        let mut by_role: BTreeMap<&str, f64> =
            Role::VARIANTS.iter().map(|r| (r.as_str(), 0.0)).collect();
        for node in &alive {
            if let Some(count) = by_role.get_mut(node.role.as_str()) {
                *count += 1.0;
            }
        }
        for (role, count) in by_role {
            metrics::gauge!("docket_processes_alive", "role" => role).set(count);
        }
    }
}
