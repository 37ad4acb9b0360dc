//! The registry of running Docket processes: each registers with its role, heartbeats while alive and
//! deregisters when it shuts down gracefully. A crashed process is recognisable by a stale heartbeat.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::Store;
use crate::with_pool;

/// How often a live process refreshes its heartbeat.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Node {
    pub id: String,
    /// `all`, `api`, `worker` or `scheduler`.
    pub role: String,
    pub hostname: String,
    pub pid: i32,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

impl Node {
    /// Describes the current process.
    pub fn this_process(role: &str, now: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            role: role.to_owned(),
            hostname: hostname(),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            heartbeat_at: now,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub async fn register(store: &Store, node: &Node) -> Result<(), sqlx::Error> {
    crate::with_writer!(store, pool => {
        sqlx::query(
            "INSERT INTO nodes (id, role, hostname, pid, version, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&node.id)
        .bind(&node.role)
        .bind(&node.hostname)
        .bind(node.pid)
        .bind(&node.version)
        .bind(node.started_at)
        .bind(node.heartbeat_at)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// Refreshes the heartbeat; re-registers if the row vanished (e.g. pruned while the database was
/// unreachable for longer than the retention).
pub async fn heartbeat(store: &Store, node: &Node, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let updated = crate::with_writer!(store, pool => {
        sqlx::query("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&node.id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    if updated == 0 {
        let mut revived = node.clone();
        revived.heartbeat_at = now;
        register(store, &revived).await?;
    }
    Ok(())
}

pub async fn deregister(store: &Store, node_id: &str) -> Result<(), sqlx::Error> {
    crate::with_writer!(store, pool => {
        sqlx::query("DELETE FROM nodes WHERE id = $1").bind(node_id).execute(pool).await.map(|_| ())
    })?;
    Ok(())
}

/// Forgets processes whose last heartbeat is older than `before` (crashed without deregistering).
pub async fn prune(store: &Store, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    crate::with_writer!(store, pool => {
        sqlx::query("DELETE FROM nodes WHERE heartbeat_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
}

/// Processes with a heartbeat at or after `since`, oldest first.
pub async fn list_alive(store: &Store, since: DateTime<Utc>) -> Result<Vec<Node>, sqlx::Error> {
    with_pool!(store, pool => {
        sqlx::query_as::<_, Node>(
            "SELECT id, role, hostname, pid, version, started_at, heartbeat_at FROM nodes \
             WHERE heartbeat_at >= $1 ORDER BY started_at, id",
        )
        .bind(since)
        .fetch_all(pool)
        .await
    })
}
