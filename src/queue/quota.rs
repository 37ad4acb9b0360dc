//! Per-tenant queue quotas: how many jobs a tenant may have waiting or running, and how many it
//! may enqueue per minute. Every tenant shares the queue, so one tenant's flood (a runaway
//! integration or pipeline) must not starve the others. Checked by the paths that enqueue on a
//! tenant's behalf (API, pipeline steps, the scheduler), inside their transaction; the bulk
//! `enqueue_many` used by benchmarks and loads is not limited.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::store::Tx;
use crate::with_tx;

/// How long a caller refused for too many queued jobs is asked to wait before trying again.
const QUEUED_RETRY_AFTER_SECONDS: u64 = 30;
/// The rate window; a caller refused for the rate waits at most this long.
const RATE_WINDOW_SECONDS: u64 = 60;

/// The configured limits; 0 is no limit.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub queued_max: u64,
    pub per_minute: u64,
}

impl Quotas {
    /// No limits (tests and tools that drive the scheduler directly).
    pub const NONE: Self = Self {
        queued_max: 0,
        per_minute: 0,
    };

    pub fn from_config(config: &Config) -> Self {
        Self {
            queued_max: config.tenant_queued_jobs_max,
            per_minute: config.tenant_enqueues_per_minute,
        }
    }
}

/// Why an enqueue was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// `queued_jobs` or `enqueue_rate`, also the label of `docket_queue_refused_total`.
    pub reason: &'static str,
    pub limit: u64,
    pub retry_after_seconds: u64,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            "queued_jobs" => write!(
                f,
                "queue quota exceeded: the tenant already has {} jobs queued or running (TENANT_QUEUED_JOBS_MAX)",
                self.limit
            ),
            _ => write!(
                f,
                "queue quota exceeded: the tenant enqueued {} jobs in the last minute (TENANT_ENQUEUES_PER_MINUTE)",
                self.limit
            ),
        }
    }
}

impl QuotaExceeded {
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "reason": self.reason,
            "limit": self.limit,
            "retry_after_seconds": self.retry_after_seconds,
        })
    }
}

impl From<QuotaExceeded> for crate::http::error::ApiError {
    fn from(refused: QuotaExceeded) -> Self {
        Self::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "queue_quota_exceeded",
            format!("{refused}; try again later."),
        )
        .with_details(refused.details())
        .with_header(axum::http::header::RETRY_AFTER, refused.retry_after_seconds)
    }
}

/// Whether the tenant is over a quota once `adding` more jobs are enqueued (0 when the caller's
/// jobs are already inserted in `tx`). Each count stops at the limit, so a check costs at most
/// one index range of `limit` entries. A refusal is counted in `docket_queue_refused_total`.
pub async fn check(
    tx: &mut Tx,
    quotas: Quotas,
    tenant_id: &str,
    adding: u64,
    now: DateTime<Utc>,
) -> Result<Option<QuotaExceeded>, sqlx::Error> {
    let refused = over_quota(tx, quotas, tenant_id, adding, now).await?;
    if let Some(refused) = &refused {
        metrics::counter!("docket_queue_refused_total", "reason" => refused.reason).increment(1);
    }
    Ok(refused)
}

async fn over_quota(
    tx: &mut Tx,
    quotas: Quotas,
    tenant_id: &str,
    adding: u64,
    now: DateTime<Utc>,
) -> Result<Option<QuotaExceeded>, sqlx::Error> {
    if quotas.queued_max > 0 {
        let active = bounded_count(
            tx,
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE tenant_id = $1 \
             AND status IN ('queued', 'failed', 'running') LIMIT $2) AS active",
            tenant_id,
            None,
            quotas.queued_max,
        )
        .await?;
        if active + adding > quotas.queued_max {
            return Ok(Some(QuotaExceeded {
                reason: "queued_jobs",
                limit: quotas.queued_max,
                retry_after_seconds: QUEUED_RETRY_AFTER_SECONDS,
            }));
        }
    }
    if quotas.per_minute > 0 {
        let recent = bounded_count(
            tx,
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE tenant_id = $1 \
             AND id >= $3 LIMIT $2) AS recent",
            tenant_id,
            Some(first_id_since(
                now - chrono::Duration::seconds(RATE_WINDOW_SECONDS as i64),
            )),
            quotas.per_minute,
        )
        .await?;
        if recent + adding > quotas.per_minute {
            return Ok(Some(QuotaExceeded {
                reason: "enqueue_rate",
                limit: quotas.per_minute,
                retry_after_seconds: RATE_WINDOW_SECONDS,
            }));
        }
    }
    Ok(None)
}

/// The smallest job id created at or after `since`. Job ids are UUIDv7, whose text sorts by
/// creation time, so the rate is an index range of the existing `(tenant_id, id)` index rather
/// than of one more index that every enqueue would have to maintain.
fn first_id_since(since: DateTime<Utc>) -> String {
    let millis = u64::try_from(since.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10])
        .into_uuid()
        .to_string()
}

/// `sql` counting at most `limit + 1` rows (`$1` tenant, `$2` the row limit, `$3` `since`).
async fn bounded_count(
    tx: &mut Tx,
    sql: &'static str,
    tenant_id: &str,
    since: Option<String>,
    limit: u64,
) -> Result<u64, sqlx::Error> {
    let rows = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let count: i64 = with_tx!(tx, conn => {
        let query = sqlx::query_scalar(sql).bind(tenant_id).bind(rows);
        match since {
            Some(since) => query.bind(since).fetch_one(conn).await,
            None => query.fetch_one(conn).await,
        }
    })?;
    Ok(u64::try_from(count).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_since_a_time_sort_after_its_lower_bound() {
        let now = Utc::now();
        let bound = first_id_since(now - chrono::Duration::seconds(60));
        let recent = uuid::Uuid::now_v7().to_string();
        let old = first_id_since(now - chrono::Duration::seconds(61));
        assert!(recent >= bound, "{recent} < {bound}");
        assert!(old < bound, "{old} >= {bound}");
    }
}
